import Foundation

/// YOLO label files (`class cx cy w h` per line, normalised) parsed and validated against an
/// image size and a class count.
///
/// Rules, each problem naming the file and line:
/// - a line with other than 5 fields, a field that is not a finite number, a fractional class,
///   or a class outside `0..<classCount` makes the whole file unusable (`fatal`): dropping just
///   that line would leave an unlabelled object in the image;
/// - `w <= 0` or `h <= 0`: the box is dropped;
/// - a coordinate outside [-0.05, 1.05] (not normalised, e.g. pixel coordinates) is fatal too;
/// - a box reaching outside [0, 1] is clipped (silently when by at most 0.001), and dropped when
///   less than one pixel wide or high afterwards;
/// - exact duplicate rows are removed;
/// - boxes with an aspect ratio above 50:1 (in pixels) are kept with a warning: they destabilise
///   the box loss.
public enum LabelFile {
    /// Coordinates beyond [-tolerance, 1 + tolerance] mean the file is not normalised.
    public static let normalisedTolerance: Float = 0.05
    /// Overshoots up to this are clipped without a message (rounding in label tools).
    public static let silentClip: Float = 0.001
    /// Aspect ratio above which a box is warned about.
    public static let maxAspect: Float = 50

    /// The validated content of one label file.
    public struct Parsed: Sendable, Equatable {
        public var classes: [Int] = []
        /// `cx, cy, w, h` per box, normalised.
        public var boxes: [Float] = []
        public var issues: [ScanIssue] = []
        /// True when the file is unusable and its pair must be dropped.
        public var fatal = false
        public var clipped = 0
        public var degenerate = 0
        public var duplicates = 0
        public var extremeAspect = 0
    }

    /// Parses `text` (the content of `file`) for an image of `width` x `height` pixels.
    public static func parse(_ text: String, file: String, width: Int, height: Int, classCount: Int) -> Parsed {
        var out = Parsed()
        var body = Substring(text)
        if body.hasPrefix("\u{FEFF}") { body = body.dropFirst() }
        var seen: [[Float]: Int] = [:]
        let W = Float(max(width, 1)), H = Float(max(height, 1))
        var lineNumber = 0
        for rawLine in body.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" }) {
            lineNumber += 1
            let fields = rawLine.split(whereSeparator: { $0.isWhitespace })
            if fields.isEmpty { continue }
            func issue(_ kind: ScanIssue.Kind, _ severity: ScanIssue.Severity, _ message: String) {
                out.issues.append(ScanIssue(kind, severity, file: file, line: lineNumber, message))
                if severity == .error { out.fatal = true }
            }
            guard fields.count == 5 else {
                let hint = fields.count > 6 && fields.count % 2 == 1 ? " (a segmentation polygon?)" : fields.count == 6 ? " (a prediction with confidence?)" : ""
                issue(.malformedLine, .error, "expected 5 fields 'class cx cy w h', found \(fields.count)\(hint)")
                continue
            }
            var values = [Float](repeating: 0, count: 5)
            var numeric = true
            for (i, f) in fields.enumerated() {
                guard let v = Float(f), v.isFinite else {
                    issue(.malformedLine, .error, "field \(i + 1) '\(f)' is not a number")
                    numeric = false
                    break
                }
                values[i] = v
            }
            if !numeric { continue }
            let cls = values[0]
            guard cls == cls.rounded() else {
                issue(.malformedLine, .error, "class '\(fields[0])' is not an integer")
                continue
            }
            // Compared as Float: a huge class value must not reach Int(_:) (it would trap).
            guard cls >= 0 && cls < Float(classCount) else {
                issue(.classOutOfRange, .error, "class \(fields[0]) out of range: the dataset has \(classCount) classes (0-\(classCount - 1))")
                continue
            }
            let (cx, cy, w, h) = (values[1], values[2], values[3], values[4])
            guard w > 0 && h > 0 else {
                issue(.degenerateBox, .warning, "zero or negative size (w \(fields[3]), h \(fields[4])): box dropped")
                out.degenerate += 1
                continue
            }
            let lo = -normalisedTolerance, hi = 1 + normalisedTolerance
            guard [cx, cy, w, h].allSatisfy({ $0 >= lo && $0 <= hi }) else {
                issue(.notNormalised, .error, "coordinates \(fields[1...].joined(separator: " ")) are not normalised to [0, 1] (pixel coordinates?)")
                continue
            }
            var x1 = cx - w / 2, y1 = cy - h / 2, x2 = cx + w / 2, y2 = cy + h / 2
            let overshoot = max(0 - x1, 0 - y1, x2 - 1, y2 - 1)
            if overshoot > 0 {
                x1 = max(0, x1); y1 = max(0, y1); x2 = min(1, x2); y2 = min(1, y2)
                let wPx = (x2 - x1) * W, hPx = (y2 - y1) * H
                if wPx < 1 || hPx < 1 {
                    issue(.degenerateBox, .warning, String(format: "box outside the image (%.1f x %.1f px after clipping): dropped", wPx, hPx))
                    out.degenerate += 1
                    continue
                }
                if overshoot > silentClip {
                    issue(.clippedBox, .warning, String(format: "box reaches %.3f outside the image: clipped", overshoot))
                    out.clipped += 1
                }
            }
            let wPx = (x2 - x1) * W, hPx = (y2 - y1) * H
            if wPx < 1 || hPx < 1 {
                issue(.degenerateBox, .warning, String(format: "box smaller than a pixel (%.2f x %.2f px): dropped", wPx, hPx))
                out.degenerate += 1
                continue
            }
            let row = [cls, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
            if let first = seen[row] {
                issue(.duplicateLabel, .warning, "duplicate of line \(first): removed")
                out.duplicates += 1
                continue
            }
            seen[row] = lineNumber
            let aspect = max(wPx / hPx, hPx / wPx)
            if aspect > maxAspect {
                issue(.extremeAspect, .warning, String(format: "aspect ratio %.0f:1 (%.1f x %.1f px) above 50:1 destabilises the box loss", aspect, wPx, hPx))
                out.extremeAspect += 1
            }
            out.classes.append(Int(cls))
            out.boxes.append(contentsOf: row[1...])
        }
        if out.fatal {
            out.classes = []
            out.boxes = []
        }
        return out
    }
}
