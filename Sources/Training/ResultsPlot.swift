import DataPipeline
import Foundation

/// results.png: one small line chart per results.csv column of interest, redrawn every epoch.
public enum ResultsPlot {
    static let panels = ["train/box_loss", "train/cls_loss", "train/dfl_loss", "metrics/precision(B)", "metrics/recall(B)",
                         "val/box_loss", "val/cls_loss", "val/dfl_loss", "metrics/mAP50(B)", "metrics/mAP50-95(B)",
                         "train/grad_norm", "train/clip_frac", "train/grad_norm_rgb", "train/grad_norm_ir", "metrics/F1(B)"]

    /// Reads `csv` and writes the charts as a PNG to `png`.
    public static func write(csv: String, png: String) throws {
        let text = try String(contentsOfFile: csv, encoding: .utf8)
        let rows = text.split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        guard let header = rows.first, rows.count > 1 else { return }
        let cols = 5, pw = 220, ph = 150
        let chosen = panels.filter { header.contains($0) }
        let rowsOfPanels = (chosen.count + cols - 1) / cols
        var img = Canvas(width: cols * pw, height: rowsOfPanels * ph)
        for (k, name) in chosen.enumerated() {
            let j = header.firstIndex(of: name)!
            let ys = rows.dropFirst().compactMap { $0.count > j ? Double($0[j]) : nil }.filter { $0.isFinite }
            let x0 = (k % cols) * pw + 30, y0 = (k / cols) * ph + 22, w = pw - 40, h = ph - 40
            img.box(x0, y0, x0 + w, y0 + h, (170, 170, 170))
            img.text(name.replacingOccurrences(of: "metrics/", with: "").replacingOccurrences(of: "(B)", with: ""), x: x0, y: y0 - 14)
            guard let lo = ys.min(), let hi = ys.max(), ys.count >= 1 else { continue }
            let span = hi - lo > 1e-12 ? hi - lo : 1
            func px(_ i: Int) -> Int { x0 + (ys.count == 1 ? w / 2 : i * w / (ys.count - 1)) }
            func py(_ v: Double) -> Int { y0 + h - Int(Double(h) * (v - lo) / span) }
            for i in 0..<ys.count {
                if i > 0 { img.line(px(i - 1), py(ys[i - 1]), px(i), py(ys[i]), (31, 119, 180)) }
                img.fill(px(i) - 1, py(ys[i]) - 1, px(i) + 1, py(ys[i]) + 1, (31, 119, 180))
            }
            img.text(String(format: "%.3g", hi), x: x0 + 2, y: y0 + 2)
            img.text(String(format: "%.3g", lo), x: x0 + 2, y: y0 + h - 9)
        }
        try ImageIO.writePNG(img.image, to: png)
    }
}
