import DataPipeline
import Detection
import Foundation

/// Drawing of detections onto images (boxes and a small "name 0.87" label) for `predict` and the
/// batch plots.
public enum Annotate {
    /// Draws each detection as a rectangle with a label above it (RGB output; grey input is expanded).
    /// `showLabels` / `showConfidence` / `lineWidth` as Ultralytics' predict options.
    public static func draw(_ detections: [Detection], on image: RasterImage, names: [String], lineWidth: Int? = nil,
                            showLabels: Bool = true, showConfidence: Bool = true) -> RasterImage {
        var canvas = Canvas(image)
        let thickness = lineWidth ?? max(1, min(canvas.width, canvas.height) / 320 + 1)
        for d in detections {
            let c = Canvas.palette[d.classIndex % Canvas.palette.count]
            let x1 = Int(d.box.x1.rounded()), y1 = Int(d.box.y1.rounded()), x2 = Int(d.box.x2.rounded()), y2 = Int(d.box.y2.rounded())
            canvas.box(x1, y1, x2, y2, c, thickness: thickness)
            guard showLabels || showConfidence else { continue }
            let name = d.classIndex < names.count ? names[d.classIndex] : "class\(d.classIndex)"
            let text = [showLabels ? name : nil, showConfidence ? String(format: "%.2f", d.confidence) : nil].compactMap { $0 }.joined(separator: " ")
            let scale = max(1, min(canvas.width, canvas.height) / 400)
            let tw = Canvas.textWidth(text, scale: scale) + 2, th = 9 * scale
            let ty = y1 - th >= 0 ? y1 - th : min(y1 + 1, canvas.height - th)
            canvas.fill(x1, ty, x1 + tw, ty + th - 1, c)
            canvas.text(text, x: x1 + 1, y: ty + 1, scale: scale, (255, 255, 255))
        }
        return canvas.image
    }
}
