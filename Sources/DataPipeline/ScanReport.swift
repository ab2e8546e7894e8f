import Foundation

/// One problem found while scanning a split. `description` reads `file:line: severity: message`.
public struct ScanIssue: Sendable, Codable, Equatable, CustomStringConvertible {
    /// How much the problem costs.
    public enum Severity: String, Sendable, Codable, Comparable {
        /// Informational (for example a missing label file: the pair is used as a background).
        case note
        /// Something was repaired or looks risky; the pair is still used.
        case warning
        /// The pair (or listed file) is excluded from training.
        case error

        private var rank: Int { self == .note ? 0 : self == .warning ? 1 : 2 }
        public static func < (a: Severity, b: Severity) -> Bool { a.rank < b.rank }
    }

    /// What went wrong.
    public enum Kind: String, Sendable, Codable, CaseIterable {
        case missingIR, orphanIR, missingImage, unsupportedFormat, corruptImage, sizeMismatch, resizedIR
        case noImagesFolder, missingLabel, unreadableLabel, malformedLine, classOutOfRange, notNormalised
        case clippedBox, degenerateBox, duplicateLabel, extremeAspect, duplicateListing, splitOverlap
    }

    public var kind: Kind
    public var severity: Severity
    /// The file concerned (image, label file or list).
    public var file: String
    /// 1-based line in `file`, when the problem is in a text file.
    public var line: Int?
    public var message: String

    public init(_ kind: Kind, _ severity: Severity, file: String, line: Int? = nil, _ message: String) {
        self.kind = kind
        self.severity = severity
        self.file = file
        self.line = line
        self.message = message
    }

    public var description: String {
        "\(file)\(line.map { ":\($0)" } ?? ""): \(severity.rawValue): \(message)"
    }
}

/// Counters of a split's scan; `summary` is the one-line report.
public struct ScanCounts: Sendable, Codable, Equatable {
    /// RGB images found in the split's folders / lists (after `fraction`).
    public var listed = 0
    /// Pairs used for training (backgrounds included).
    public var ok = 0
    /// Usable pairs without boxes (no label file, or an empty one).
    public var backgrounds = 0
    /// RGB images without an IR partner.
    public var missingIR = 0
    /// IR images without an RGB partner (folder splits only).
    public var orphanIR = 0
    /// Paths listed in a .txt split that do not exist.
    public var missingImages = 0
    /// Unreadable, corrupt or truncated images (RGB or IR; the pair is dropped).
    public var corrupt = 0
    /// Image files in formats the pipeline does not decode.
    public var unsupported = 0
    /// RGB/IR size mismatches dropped (without `allowResizeIR`).
    public var sizeMismatch = 0
    /// RGB/IR size mismatches kept, the IR resized to the RGB size.
    public var resizedIR = 0
    /// Pairs dropped for an unusable label file (malformed line, class out of range, not normalised).
    public var badLabels = 0
    /// Boxes kept over all usable pairs.
    public var boxes = 0
    /// Boxes clipped to the image.
    public var clipped = 0
    /// Boxes dropped: zero or negative size, or degenerate after clipping.
    public var degenerate = 0
    /// Duplicate label rows removed.
    public var duplicates = 0
    /// Boxes with an aspect ratio above 50:1 (kept, warned).
    public var extremeAspect = 0

    public init() {}

    /// `N pairs ok (K boxes), B backgrounds, M missing IR, …`.
    public var summary: String {
        var parts = ["\(ok) pairs ok (\(boxes) boxes)", "\(backgrounds) backgrounds", "\(missingIR) missing IR",
                     "\(corrupt) corrupt", "\(duplicates) duplicate labels removed"]
        let optional: [(Int, String)] = [
            (orphanIR, "IR without RGB"), (missingImages, "listed images not found"),
            (unsupported, "unsupported format"), (sizeMismatch, "RGB/IR size mismatches dropped"),
            (resizedIR, "IR resized to RGB size"), (badLabels, "bad label files"),
            (clipped, "boxes clipped"), (degenerate, "degenerate boxes dropped"),
            (extremeAspect, "boxes with aspect > 50:1"),
        ]
        for (n, what) in optional where n > 0 { parts.append("\(n) \(what)") }
        return parts.joined(separator: ", ")
    }
}

/// One usable RGB-IR pair with its validated labels.
public struct PairRecord: Sendable, Codable, Equatable {
    public var rgbPath: String
    public var irPath: String
    /// The label file (it may not exist: then the pair is a background).
    public var labelPath: String
    /// RGB size; the IR has this size after loading (resized when `irNeedsResize`).
    public var width: Int
    public var height: Int
    /// The IR file's size differs from the RGB one and the scan allowed resizing it.
    public var irNeedsResize: Bool
    /// Class id per box.
    public var classes: [Int]
    /// Per box `cx, cy, w, h`, normalised to [0, 1] of the image width and height.
    public var boxes: [Float]

    /// True when the pair has no boxes.
    public var isBackground: Bool { classes.isEmpty }
}

/// The result of scanning one split: usable pairs, every problem, counts.
public struct ScanReport: Sendable, Codable {
    public var split: DatasetSplit
    public var pairs: [PairRecord]
    public var issues: [ScanIssue]
    public var counts: ScanCounts
    /// True when the scan came from the cache file instead of reading every image.
    public var fromCache: Bool
    /// The cache file used or written (nil when none could be written).
    public var cachePath: String?

    /// `split: <counts summary>`.
    public var summary: String { "\(split.rawValue): \(counts.summary)" }
}
