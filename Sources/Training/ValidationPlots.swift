import DataPipeline
import Detection
import Foundation
import TensorCore

/// What Ultralytics' `val` writes, from a `ValidationReport`: confusion matrices (counts and
/// normalised per true class), PR / F1 / P / R curves, a per-class CSV, COCO-style
/// predictions.json, and the first batches drawn with their labels and their predictions.
public enum ValidationPlots {
    /// Writes every plot and table of `report` into `directory`; returns the files written.
    @discardableResult
    public static func write(_ report: ValidationReport, to directory: String, saveJSON: Bool = false) throws -> [String] {
        var files: [String] = []
        func png(_ canvas: Canvas, _ name: String) throws {
            try ImageIO.writePNG(canvas.image, to: directory + "/" + name)
            files.append(name)
        }
        let names = report.names
        try png(confusion(report.confusion, names: names, normalised: false), "confusion_matrix.png")
        try png(confusion(report.confusion, names: names, normalised: true), "confusion_matrix_normalized.png")
        let m = report.metrics
        let grid = (0..<1000).map { Double($0) / 999 }
        func label(_ i: Int) -> String { let c = m.classes[i]; return c < names.count ? names[c] : "class\(c)" }
        try png(curves(grid, m.prCurve, x: "recall", y: "precision", legend: { i in String(format: "%@ %.3f", label(i), m.ap[i][0]) },
                       all: String(format: "all classes %.3f mAP50", m.map50)), "PR_curve.png")
        for (file, curve, y) in [("F1_curve.png", m.f1Curve, "F1"), ("P_curve.png", m.precisionCurve, "precision"), ("R_curve.png", m.recallCurve, "recall")] {
            let mean = meanCurve(curve)
            let best = mean.indices.max { mean[$0] < mean[$1] } ?? 0
            try png(curves(grid, curve, x: "confidence", y: y, legend: label,
                           all: String(format: "all classes %.2f at %.3f", mean.isEmpty ? 0 : mean[best], grid[best])), file)
        }
        // Per class: images, instances, P, R, F1, mAP50, mAP50-95 (as the console table).
        var csv = "class,images,instances,precision,recall,f1,mAP50,mAP50-95\n"
        csv += String(format: "all,%d,%d,%.5f,%.5f,%.5f,%.5f,%.5f\n", report.images, m.truthCounts.reduce(0, +), m.meanPrecision, m.meanRecall,
                      m.meanF1, m.map50, m.map)
        for i in m.classes.indices {
            csv += String(format: "%@,%d,%d,%.5f,%.5f,%.5f,%.5f,%.5f\n", label(i), report.images, m.truthCounts[i], m.precision[i], m.recall[i],
                          m.f1[i], m.ap[i][0], m.ap[i].reduce(0, +) / Double(m.ap[i].count))
        }
        try csv.write(toFile: directory + "/per_class.csv", atomically: true, encoding: .utf8)
        files.append("per_class.csv")
        for (k, b) in report.plottedBatches.enumerated() {
            try BatchPlot.write(b.batch, detections: nil, names: names, to: directory + "/val_batch\(k)_labels.jpg")
            try BatchPlot.write(b.batch, detections: b.detections, names: names, to: directory + "/val_batch\(k)_pred.jpg")
            files += ["val_batch\(k)_labels.jpg", "val_batch\(k)_pred.jpg"]
        }
        if saveJSON {
            let data = try JSONSerialization.data(withJSONObject: report.cocoPredictions.map(\.jsonObject), options: [.sortedKeys])
            try data.write(to: URL(fileURLWithPath: directory + "/predictions.json"))
            files.append("predictions.json")
        }
        return files
    }

    static func meanCurve(_ c: [[Double]]) -> [Double] {
        guard let n = c.first?.count else { return [] }
        return (0..<n).map { g in c.reduce(0) { $0 + $1[g] } / Double(c.count) }
    }

    /// One chart over [0, 1] x [0, 1]: a thin line per class, the mean thick, a legend.
    static func curves(_ x: [Double], _ ys: [[Double]], x xLabel: String, y yLabel: String, legend: (Int) -> String, all: String) -> Canvas {
        var c = Canvas(width: 720, height: 520)
        let (x0, y0, w, h) = (60, 30, 420, 420)
        func px(_ v: Double) -> Int { x0 + Int((v * Double(w)).rounded()) }
        func py(_ v: Double) -> Int { y0 + h - Int((min(max(v, 0), 1) * Double(h)).rounded()) }
        for t in 0...5 {
            let v = Double(t) / 5
            c.line(px(v), y0, px(v), y0 + h, (225, 225, 225))
            c.line(x0, py(v), x0 + w, py(v), (225, 225, 225))
            c.text(String(format: "%.1f", v), x: px(v) - 8, y: y0 + h + 6)
            c.text(String(format: "%.1f", v), x: x0 - 26, y: py(v) - 3)
        }
        c.box(x0, y0, x0 + w, y0 + h, (120, 120, 120))
        c.text(xLabel, x: x0 + w / 2 - Canvas.textWidth(xLabel) / 2, y: y0 + h + 20)
        c.text(yLabel, x: 4, y: y0 - 18)
        func plot(_ y: [Double], _ colour: Canvas.Colour, _ thickness: Int) {
            for i in stride(from: 1, to: y.count, by: 1) where px(x[i]) != px(x[i - 1]) || py(y[i]) != py(y[i - 1]) {
                c.line(px(x[i - 1]), py(y[i - 1]), px(x[i]), py(y[i]), colour, thickness: thickness)
            }
        }
        for (i, y) in ys.enumerated() { plot(y, Canvas.palette[i % Canvas.palette.count], 1) }
        let blue: Canvas.Colour = (31, 80, 200)
        if !ys.isEmpty { plot(meanCurve(ys), blue, 3) }
        var ly = y0
        for i in ys.indices.prefix(20) {
            c.fill(x0 + w + 14, ly + 2, x0 + w + 26, ly + 4, Canvas.palette[i % Canvas.palette.count])
            c.text(legend(i), x: x0 + w + 32, y: ly)
            ly += 14
        }
        c.fill(x0 + w + 14, ly + 1, x0 + w + 26, ly + 5, blue)
        c.text(all, x: x0 + w + 32, y: ly)
        return c
    }

    /// The confusion matrix: rows predicted class, columns true class, the last of each
    /// `background`; normalised divides each column by its sum.
    static func confusion(_ m: ConfusionMatrix, names: [String], normalised: Bool) -> Canvas {
        let n = m.nc + 1
        let labels = (0..<m.nc).map { $0 < names.count ? names[$0] : "class\($0)" } + ["background"]
        let cell = max(28, min(80, 560 / n)), margin = 12 + 6 * min(labels.map(\.count).max() ?? 8, 14)
        let title = normalised ? "confusion matrix (normalised per true class)" : "confusion matrix"
        var c = Canvas(width: max(margin + n * cell + 20, margin + Canvas.textWidth(title) + 10), height: margin + n * cell + 50)
        let sums = (0..<n).map { j in (0..<n).reduce(0) { $0 + m.matrix[$1][j] } }
        let values = (0..<n).map { i in (0..<n).map { j -> Double in
            normalised ? (sums[j] > 0 ? Double(m.matrix[i][j]) / Double(sums[j]) : 0) : Double(m.matrix[i][j])
        } }
        let top = values.flatMap { $0 }.max() ?? 1
        c.text(title, x: margin, y: 8)
        for i in 0..<n {
            for j in 0..<n {
                let v = values[i][j], t = top > 0 ? v / top : 0
                let colour: Canvas.Colour = (UInt8(255 - 200 * t), UInt8(255 - 150 * t), 255)
                let x = margin + j * cell, y = margin + 20 + i * cell
                c.fill(x, y, x + cell - 2, y + cell - 2, colour)
                let text = normalised ? String(format: "%.2f", v) : String(Int(v))
                c.text(text, x: x + cell / 2 - Canvas.textWidth(text) / 2, y: y + cell / 2 - 4, t > 0.6 ? (255, 255, 255) : (30, 30, 30))
            }
            c.text(String(labels[i].prefix(14)), x: 4, y: margin + 20 + i * cell + cell / 2 - 4)
        }
        for j in 0..<n {
            let l = String(labels[j].prefix(max(2, cell / 6)))
            c.text(l, x: margin + j * cell + cell / 2 - Canvas.textWidth(l) / 2, y: margin + 24 + n * cell)
        }
        c.text("true", x: margin + n * cell / 2 - 12, y: margin + 38 + n * cell)
        c.text("predicted", x: 4, y: margin + 4)
        return c
    }
}

/// A batch drawn as a grid: each image's RGB and IR side by side with boxes (labels or predictions)
/// and its file name: `train_batch0.jpg`, `val_batch0_labels.jpg`, `val_batch0_pred.jpg`.
public enum BatchPlot {
    /// `detections` nil draws the batch's labels; else one detection list per image (network frame).
    public static func write(_ batch: PairBatch, detections: [[Detection]]?, names: [String], to path: String, maxImages: Int = 16) throws {
        let count = min(batch.count, maxImages)
        let h = batch.rgb.shape[2], w = batch.rgb.shape[3]
        let scale = max(1, 256 / max(w, h))
        let tw = 2 * w * scale + 6, th = h * scale + 14
        let cols = Int(Double(count).squareRoot().rounded(.up))
        let rows = (count + cols - 1) / cols
        var c = Canvas(width: cols * tw + 6, height: rows * th + 6)
        let truths = BatchTargets(batchIndex: batch.batchIndex, classes: batch.classes, boxes: batch.boxes)
            .perImage(batch: batch.count, width: Float(w), height: Float(h))
        for i in 0..<count {
            let ox = 6 + (i % cols) * tw, oy = 6 + (i / cols) * th
            let dets = detections?[i] ?? truths[i].map { Detection(box: $0.box, confidence: 1, classIndex: $0.label) }
            var scaled = dets
            for k in scaled.indices {
                let b = scaled[k].box, s = Float(scale)
                scaled[k].box = Box(x1: b.x1 * s, y1: b.y1 * s, x2: b.x2 * s, y2: b.y2 * s)
            }
            for (k, t) in [batch.rgb, batch.ir].enumerated() {
                let img = raster(t, i).resized(width: w * scale, height: h * scale)
                let drawn = Annotate.draw(scaled, on: img, names: names, lineWidth: 1, showConfidence: detections != nil)
                c.paste(drawn, x: ox + k * (w * scale + 2), y: oy)
            }
            let file = URL(fileURLWithPath: batch.files[i]).lastPathComponent
            c.text(String(file.prefix(tw / 6 - 1)), x: ox, y: oy + h * scale + 3)
        }
        try ImageIO.writeJPEG(c.image, to: path)
    }

    /// Image `i` of an NCHW 0-1 tensor as 8-bit HWC.
    static func raster(_ t: Tensor, _ i: Int) -> RasterImage {
        let ch = t.shape[1], h = t.shape[2], w = t.shape[3]
        var img = RasterImage(width: w, height: h, channels: ch)
        let base = t.data + i * ch * h * w
        for c in 0..<ch {
            for y in 0..<h {
                for x in 0..<w { img.pixels[(y * w + x) * ch + c] = UInt8(max(0, min(255, (base[(c * h + y) * w + x] * 255).rounded()))) }
            }
        }
        return img
    }
}
