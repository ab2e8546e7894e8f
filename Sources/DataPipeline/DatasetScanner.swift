import Foundation
import TensorCore

/// A split that cannot be used at all. Messages name the YAML, the split and the paths involved.
public enum DatasetError: Error, CustomStringConvertible, Sendable {
    /// The YAML has no entry for the split.
    case splitNotGiven(split: DatasetSplit, yaml: String)
    /// A folder, list or file named for the split does not exist.
    case sourceNotFound(split: DatasetSplit, path: String, yaml: String)
    /// A `.txt` list cannot be read.
    case unreadableList(path: String, reason: String)
    /// The split's folders and lists hold no PNG or JPEG image.
    case noImages(split: DatasetSplit, sources: [String])
    /// Every pair of the split was rejected.
    case noValidPairs(split: DatasetSplit, summary: String, firstIssues: [String])
    /// A scan or loader option is out of range.
    case invalidOption(name: String, message: String)

    public var description: String {
        switch self {
        case .splitNotGiven(let s, let y): return "\(y): no '\(s.rawValue)' split is given"
        case .sourceNotFound(let s, let p, let y): return "\(y): '\(s.rawValue)': \(p) does not exist"
        case .unreadableList(let p, let r): return "\(p): cannot read image list: \(r)"
        case .noImages(let s, let src):
            return "\(s.rawValue): no PNG or JPEG images found in \(src.joined(separator: ", "))"
        case .noValidPairs(let s, let summary, let issues):
            var text = "\(s.rawValue): zero valid RGB-IR pairs (\(summary))"
            if !issues.isEmpty { text += "; first problems:\n  " + issues.joined(separator: "\n  ") }
            return text
        case .invalidOption(let n, let m): return "'\(n)': \(m)"
        }
    }
}

/// How a split is scanned.
public struct ScanOptions: Sendable, Equatable {
    /// Keep pairs whose IR size differs from the RGB size, resizing the IR at load time (warned).
    /// Default false: such pairs are errors and dropped.
    public var allowResizeIR: Bool
    /// Fraction (0, 1] of the train split to use: an evenly spaced, deterministic subset of the sorted
    /// image list. Other splits always use everything. Default 1.
    public var fraction: Double
    /// Read and write the scan cache next to the labels. Default true.
    public var useCache: Bool

    public init(allowResizeIR: Bool = false, fraction: Double = 1, useCache: Bool = true) {
        self.allowResizeIR = allowResizeIR
        self.fraction = fraction
        self.useCache = useCache
    }
}

/// Finds a split's RGB-IR pairs, validates images and labels once, and caches the result.
///
/// The cache (`<labels folder>.dualfuse.cache`, JSON) is keyed by a hash of every RGB, IR and label
/// path with its size and modification time, plus the class count, `ir_dir` and the scan options;
/// any change rescans. A cache that cannot be written is skipped silently.
public enum DatasetScanner {
    /// Bumped whenever the scan rules or the cache format change.
    static let cacheVersion = 2

    /// Scans `split` of `config`. Throws only when the split cannot be used at all; every
    /// per-pair problem is an issue in the report. Zero valid pairs throws `noValidPairs`.
    public static func scan(_ config: DatasetConfig, split: DatasetSplit, options: ScanOptions = ScanOptions()) throws -> ScanReport {
        guard options.fraction > 0 && options.fraction <= 1 else {
            throw DatasetError.invalidOption(name: "fraction", message: "must be in (0, 1], got \(options.fraction)")
        }
        let sources = config.sources(split)
        if sources.isEmpty { throw DatasetError.splitNotGiven(split: split, yaml: config.file) }

        // 1. List RGB images.
        var issues: [ScanIssue] = []
        var counts = ScanCounts()
        var images: [String] = []
        var folders: [String] = []
        for source in sources {
            if DatasetPaths.isDirectory(source) {
                let listed = DatasetPaths.listFolder(source)
                images += listed.images
                folders.append(source)
                for f in listed.unsupported {
                    issues.append(ScanIssue(.unsupportedFormat, .error, file: f,
                                            "unsupported image format '.\(DatasetPaths.fileExtension(f))' (PNG and JPEG are read): skipped"))
                }
                counts.unsupported += listed.unsupported.count
            } else if DatasetPaths.isRegularFile(source) && DatasetPaths.fileExtension(source) == "txt" {
                for (path, line) in try DatasetPaths.readList(source, root: config.root) {
                    let ext = DatasetPaths.fileExtension(path)
                    if !DatasetPaths.isRegularFile(path) {
                        issues.append(ScanIssue(.missingImage, .error, file: source, line: line, "listed image \(path) not found"))
                        counts.missingImages += 1
                    } else if !ImageIO.extensions.contains(ext) {
                        issues.append(ScanIssue(.unsupportedFormat, .error, file: source, line: line,
                                                "\(path): unsupported image format '.\(ext)' (PNG and JPEG are read)"))
                        counts.unsupported += 1
                    } else {
                        images.append(path)
                    }
                }
            } else if DatasetPaths.isRegularFile(source) && ImageIO.extensions.contains(DatasetPaths.fileExtension(source)) {
                images.append(source)
            } else {
                throw DatasetError.sourceNotFound(split: split, path: source, yaml: config.file)
            }
        }
        var unique: [String] = []
        var seen = Set<String>()
        for p in images.sorted() {
            if seen.insert(p).inserted { unique.append(p) } else {
                issues.append(ScanIssue(.duplicateListing, .warning, file: p, "listed more than once in '\(split.rawValue)': used once"))
            }
        }
        images = unique
        if split == .train && options.fraction < 1 {
            images = evenlySpacedSubset(images, fraction: options.fraction)
        }
        if images.isEmpty && issues.isEmpty { throw DatasetError.noImages(split: split, sources: sources) }
        counts.listed = images.count

        // 2. Partners, hash, cache.
        let candidates = images.map { rgb -> Candidate in
            let expectedIR = DatasetPaths.irPath(forRGB: rgb, irDir: config.irDir)
            return Candidate(rgb: rgb, expectedIR: expectedIR, ir: expectedIR.flatMap(DatasetPaths.existingPartner),
                             label: DatasetPaths.labelPath(forRGB: rgb))
        }
        let orphans = options.fraction < 1 ? [] : orphanIR(folders: folders, irDir: config.irDir, rgb: images)
        var hasher = StableHasher()
        hasher.combine("dualfuse-scan-v\(cacheVersion)|nc=\(config.classCount)|ir=\(config.irDir)|resize=\(options.allowResizeIR)|warp=\(config.irTransform != nil)")
        for c in candidates {
            for p in [c.rgb, c.ir ?? "-"] {
                hasher.combine(p)
                let st = DatasetPaths.stamp(p)
                hasher.combine(st?.size ?? -1)
                hasher.combine(st?.mtime ?? -1)
            }
            // Labels are small: their contents go into the key, so an edit that keeps the size and
            // the modification time still invalidates the cache.
            hasher.combine(c.label ?? "-")
            if let label = c.label, DatasetPaths.isRegularFile(label), let bytes = FileManager.default.contents(atPath: label) {
                hasher.combine(Int64(bytes.count))
                hasher.combine(String(decoding: bytes, as: UTF8.self))
            } else {
                hasher.combine(Int64(DatasetPaths.stamp(c.label ?? "-")?.size ?? -1))
            }
        }
        for o in orphans { hasher.combine(o) }
        let hash = hasher.hex
        let cachePath = candidates.lazy.compactMap(\.label).first.map {
            ($0 as NSString).deletingLastPathComponent + ".dualfuse.cache"
        }
        if options.useCache, let cachePath, var cached = ScanCache.load(cachePath, hash: hash) {
            cached.fromCache = true
            cached.cachePath = cachePath
            cached.split = split   // train and val may share one cache when they list the same files
            return try finished(cached)
        }

        // 3. Verify every pair (in parallel; results kept in list order).
        var results = [CandidateResult](repeating: CandidateResult(), count: candidates.count)
        results.withUnsafeMutableBufferPointer { out in
            let slots = out   // disjoint indices per chunk; Parallel owns the threading
            Parallel.chunks(candidates.count, grain: 4) { range in
                for i in range { slots[i] = check(candidates[i], config: config, options: options) }
            }
        }
        for r in results {
            issues += r.issues
            counts.missingIR += r.missingIR ? 1 : 0
            counts.corrupt += r.corrupt ? 1 : 0
            counts.sizeMismatch += r.sizeMismatch ? 1 : 0
            counts.resizedIR += r.record?.irNeedsResize == true ? 1 : 0
            counts.badLabels += r.badLabel ? 1 : 0
            counts.clipped += r.clipped
            counts.degenerate += r.degenerate
            counts.duplicates += r.duplicates
            counts.extremeAspect += r.extremeAspect
        }
        for o in orphans {
            issues.append(ScanIssue(.orphanIR, .warning, file: o, "IR image without an RGB partner: ignored"))
        }
        counts.orphanIR = orphans.count
        let pairs = results.compactMap(\.record)
        counts.ok = pairs.count
        counts.backgrounds = pairs.filter(\.isBackground).count
        counts.boxes = pairs.reduce(0) { $0 + $1.classes.count }
        var report = ScanReport(split: split, pairs: pairs, issues: issues, counts: counts, fromCache: false, cachePath: nil)
        if options.useCache, let cachePath, ScanCache.save(report, to: cachePath, hash: hash) {
            report.cachePath = cachePath
        }
        return try finished(report)
    }

    /// A warning when `val` uses the same images as `train` (or some of them), else nil.
    public static func splitOverlap(train: ScanReport, val: ScanReport) -> ScanIssue? {
        let t = Set(train.pairs.map(\.rgbPath)), v = Set(val.pairs.map(\.rgbPath))
        guard !v.isEmpty else { return nil }
        let shared = v.intersection(t).count
        let where_ = val.pairs.first.map { ($0.rgbPath as NSString).deletingLastPathComponent } ?? "val"
        if t == v {
            return ScanIssue(.splitOverlap, .warning, file: where_,
                             "the val split is the same as the train split (\(v.count) images): validation metrics will be optimistic")
        }
        if shared > 0 {
            return ScanIssue(.splitOverlap, .warning, file: where_,
                             "\(shared) of \(v.count) val images are also in the train split: validation metrics will be optimistic")
        }
        return nil
    }

    /// `k = max(1, round(n · fraction))` items at indices `floor(j · n / k)`: spread over the list.
    static func evenlySpacedSubset<T>(_ items: [T], fraction: Double) -> [T] {
        let n = items.count
        let k = max(1, min(n, Int((Double(n) * fraction).rounded())))
        return (0..<k).map { items[$0 * n / k] }
    }

    private static func finished(_ report: ScanReport) throws -> ScanReport {
        if report.pairs.isEmpty {
            let first = report.issues.filter { $0.severity == .error }.prefix(10).map(\.description)
            throw DatasetError.noValidPairs(split: report.split, summary: report.counts.summary, firstIssues: Array(first))
        }
        return report
    }

    // MARK: Per pair

    struct Candidate: Sendable {
        var rgb: String
        var expectedIR: String?
        var ir: String?
        var label: String?
    }

    struct CandidateResult: Sendable {
        var record: PairRecord?
        var issues: [ScanIssue] = []
        var missingIR = false, corrupt = false, sizeMismatch = false, badLabel = false
        var clipped = 0, degenerate = 0, duplicates = 0, extremeAspect = 0
    }

    static func check(_ c: Candidate, config: DatasetConfig, options: ScanOptions) -> CandidateResult {
        var r = CandidateResult()
        guard let expectedIR = c.expectedIR, let labelPath = c.label else {
            r.issues.append(ScanIssue(.noImagesFolder, .error, file: c.rgb,
                                      "the path has no 'images' folder, so its IR partner ('\(config.irDir)') and labels ('labels') cannot be found"))
            return r
        }
        var rgbInfo: ImageFileInfo?
        do {
            rgbInfo = try ImageIO.verify(c.rgb)
        } catch {
            r.issues.append(ScanIssue(.corruptImage, .error, file: c.rgb, "RGB image unusable: \(reason(error))"))
            r.corrupt = true
        }
        guard let irPath = c.ir else {
            r.issues.append(ScanIssue(.missingIR, .error, file: c.rgb, "no IR partner: expected \(expectedIR)"))
            r.missingIR = true
            r.corrupt = false   // counted once, as missing IR
            return r
        }
        var irInfo: ImageFileInfo?
        do {
            irInfo = try ImageIO.verify(irPath)
        } catch {
            r.issues.append(ScanIssue(.corruptImage, .error, file: irPath, "IR image unusable: \(reason(error))"))
            r.corrupt = true
        }
        guard let rgbInfo, let irInfo else { return r }
        var resize = false
        // With an IR transform the IR is warped into the RGB frame: its size may differ.
        if (rgbInfo.width != irInfo.width || rgbInfo.height != irInfo.height) && config.irTransform == nil {
            let sizes = "RGB is \(rgbInfo.width)x\(rgbInfo.height) but IR \(irPath) is \(irInfo.width)x\(irInfo.height)"
            if options.allowResizeIR {
                r.issues.append(ScanIssue(.resizedIR, .warning, file: c.rgb, "\(sizes): IR will be resized to the RGB size"))
                resize = true
            } else {
                r.issues.append(ScanIssue(.sizeMismatch, .error, file: c.rgb, "\(sizes): pair dropped (allow with --allow-resize-ir)"))
                r.sizeMismatch = true
                return r
            }
        }
        var classes: [Int] = [], boxes: [Float] = []
        if DatasetPaths.isRegularFile(labelPath) {
            guard let data = FileManager.default.contents(atPath: labelPath) else {
                r.issues.append(ScanIssue(.unreadableLabel, .error, file: labelPath, "label file cannot be read: pair dropped"))
                r.badLabel = true
                return r
            }
            guard let text = String(data: data, encoding: .utf8) else {
                r.issues.append(ScanIssue(.unreadableLabel, .error, file: labelPath, "label file is not UTF-8 text: pair dropped"))
                r.badLabel = true
                return r
            }
            let parsed = LabelFile.parse(text, file: labelPath, width: rgbInfo.width, height: rgbInfo.height,
                                         classCount: config.classCount)
            r.issues += parsed.issues
            r.clipped = parsed.clipped
            r.degenerate = parsed.degenerate
            r.duplicates = parsed.duplicates
            r.extremeAspect = parsed.extremeAspect
            if parsed.fatal {
                r.issues.append(ScanIssue(.malformedLine, .error, file: labelPath, "unusable label file: pair \(c.rgb) dropped"))
                r.badLabel = true
                return r
            }
            classes = parsed.classes
            boxes = parsed.boxes
        } else if FileManager.default.fileExists(atPath: labelPath) {
            // Something is there but it is not a file (a folder, a socket): not a background image.
            r.issues.append(ScanIssue(.unreadableLabel, .error, file: labelPath, "label path is not a regular file (a folder?): pair \(c.rgb) dropped"))
            r.badLabel = true
            return r
        } else {
            r.issues.append(ScanIssue(.missingLabel, .note, file: c.rgb, "no label file \(labelPath): used as a background image"))
        }
        r.record = PairRecord(rgbPath: c.rgb, irPath: irPath, labelPath: labelPath, width: rgbInfo.width,
                              height: rgbInfo.height, irNeedsResize: resize, classes: classes, boxes: boxes)
        return r
    }

    private static func reason(_ error: Error) -> String {
        switch error {
        case ImageIOError.corrupt(_, let r), ImageIOError.unreadable(_, let r), ImageIOError.tooLarge(_, let r):
            return r
        case ImageIOError.unsupportedFormat: return "not a PNG or JPEG file"
        default: return "\(error)"
        }
    }

    /// IR images in the IR folders of `folders` whose RGB partner (same stem) is not in `rgb`.
    static func orphanIR(folders: [String], irDir: String, rgb: [String]) -> [String] {
        let rgbStems = Set(rgb.map(DatasetPaths.withoutExtension))
        var orphans: [String] = []
        for folder in folders {
            guard let irFolder = DatasetPaths.replacingImagesFolder(in: folder + "/x", with: irDir)
                .map({ ($0 as NSString).deletingLastPathComponent }),
                DatasetPaths.isDirectory(irFolder) else { continue }
            for ir in DatasetPaths.listFolder(irFolder).images {
                guard let back = replacingFolder(ir, irDir) else { continue }
                if !rgbStems.contains(DatasetPaths.withoutExtension(back)) { orphans.append(ir) }
            }
        }
        return orphans
    }

    /// `path` with its last `folder` component replaced by `images`.
    private static func replacingFolder(_ path: String, _ folder: String) -> String? {
        var parts = path.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count >= 2, let i = parts[..<(parts.count - 1)].lastIndex(where: { $0 == folder }) else { return nil }
        parts[i] = "images"
        return parts.joined(separator: "/")
    }
}

