import Foundation

/// A file changed between the scan and loading. Messages name the file.
public enum LoaderError: Error, CustomStringConvertible, Sendable {
    /// The image no longer has the size the scan recorded.
    case imageChanged(path: String, expected: String, found: String)
    /// `cache: ram` would not fit in the memory available.
    case ramCacheTooLarge(pairs: Int, imageSize: Int, requiredBytes: Int, availableBytes: Int)

    public var description: String {
        switch self {
        case .imageChanged(let p, let e, let f):
            return "\(p): changed since the dataset scan (expected \(e), found \(f)); rescan the dataset"
        case .ramCacheTooLarge(let n, let s, let r, let a):
            return String(format: "cache: ram needs about %.2f GB for %d pairs at imgsz %d (with a 50%% margin) but only %.2f GB is available (MemAvailable); use cache: none, a smaller imgsz or a smaller fraction",
                          Double(r) / 1e9, n, s, Double(a) / 1e9)
        }
    }
}

/// The usable pairs of one split (the scan's result) and how to load them.
public struct PairedDataset: Sendable {
    public let config: DatasetConfig
    public let split: DatasetSplit
    /// The scan: pairs, issues, counts.
    public let report: ScanReport

    /// Scans `split` of `config` (or reads its cache); throws when the split has no valid pair.
    public init(config: DatasetConfig, split: DatasetSplit, scan options: ScanOptions = ScanOptions()) throws {
        self.config = config
        self.split = split
        self.report = try DatasetScanner.scan(config, split: split, options: options)
    }

    /// Wraps an existing scan report.
    public init(config: DatasetConfig, report: ScanReport) {
        self.config = config
        self.split = report.split
        self.report = report
    }

    /// Scans train and val of `config` (`options.fraction` applies to train only) and compares them:
    /// `overlap` is a warning when val repeats train images.
    public static func trainAndVal(_ config: DatasetConfig, scan options: ScanOptions = ScanOptions()) throws
        -> (train: PairedDataset, val: PairedDataset, overlap: ScanIssue?) {
        let train = try PairedDataset(config: config, split: .train, scan: options)
        let val = try PairedDataset(config: config, split: .val, scan: options)
        return (train, val, DatasetScanner.splitOverlap(train: train.report, val: val.report))
    }

    public var pairs: [PairRecord] { report.pairs }
    public var count: Int { report.pairs.count }
    public var irChannels: Int { config.irChannels }
    public var names: [String] { config.names }

    /// The size of a `width` x `height` image with its long side scaled to `size`
    /// (Ultralytics' load_image: `min(ceil(w · r), size)`, r = size / max(w, h)).
    public static func resizedSize(width: Int, height: Int, longSide size: Int) -> (width: Int, height: Int) {
        let r = Double(size) / Double(max(width, height))
        if r == 1 { return (width, height) }
        return (min(Int((Double(width) * r).rounded(.up)), size), min(Int((Double(height) * r).rounded(.up)), size))
    }

    /// Decodes pair `index` (RGB as 3 channels, IR as `irChannels`) and resizes both so the long
    /// side is `longSide`; an IR of another size (allowed by the scan) is resized to the same size.
    public func load(_ index: Int, longSide: Int) throws -> LoadedPair {
        let record = report.pairs[index]
        let rgb = try ImageIO.read(record.rgbPath, channels: 3)
        guard rgb.width == record.width && rgb.height == record.height else {
            throw LoaderError.imageChanged(path: record.rgbPath, expected: "\(record.width)x\(record.height)",
                                           found: "\(rgb.width)x\(rgb.height)")
        }
        var ir = try ImageIO.read(record.irPath, channels: config.irChannels)
        if let t = config.irTransform {
            // IR pixel -> RGB pixel: the IR in the RGB frame; outside the IR camera's view is 0.
            ir = ir.warped(by: t, width: rgb.width, height: rgb.height, border: 0)
        } else if !record.irNeedsResize && (ir.width != rgb.width || ir.height != rgb.height) {
            throw LoaderError.imageChanged(path: record.irPath, expected: "\(rgb.width)x\(rgb.height)",
                                           found: "\(ir.width)x\(ir.height)")
        }
        let target = Self.resizedSize(width: rgb.width, height: rgb.height, longSide: longSide)
        return LoadedPair(rgb: rgb.resized(width: target.width, height: target.height),
                          ir: ir.resized(width: target.width, height: target.height),
                          originalWidth: record.width, originalHeight: record.height,
                          classes: record.classes, boxes: record.boxes)
    }

    /// Bytes that `cache: ram` holds for this split at `longSide`: every pair resized, RGB + IR.
    public func ramCacheBytes(longSide: Int) -> Int {
        pairs.reduce(0) { total, p in
            let s = Self.resizedSize(width: p.width, height: p.height, longSide: longSide)
            return total + s.width * s.height * (3 + config.irChannels) + 256
        }
    }

    /// MemAvailable from /proc/meminfo in bytes (nil where unknown).
    public static func availableMemoryBytes() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
            let fields = line.split(separator: " ")
            if fields.count >= 2, let kb = Int(fields[1]) { return kb * 1024 }
        }
        return nil
    }
}
