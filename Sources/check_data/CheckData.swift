import ArgumentParser
import DataPipeline
import Foundation

/// `check_data`: scans a dataset YAML's splits once and prints every problem and a summary.
@main
struct CheckData: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check_data",
        abstract: "Check a paired RGB-IR dataset before a long run: pairs, images, labels.",
        discussion: """
        Scans the train, val and (when given) test splits of the dataset YAML the way training does: finds each RGB image's IR partner and label file, decodes every image to detect corrupt or truncated files, validates every label line, and prints each problem as file:line followed by one summary line per split. The scan is cached next to the labels (<labels folder>.dualfuse.cache) and reused while no file changes.

        Exit status: 0 when train and val have valid pairs, 1 otherwise.
        """)

    @Option(help: "Dataset YAML (path, train, val, [test], names, [nc], [ir_dir], [ir_channels]).")
    var data: String

    @Flag(help: "Keep pairs whose IR size differs from the RGB size (the IR is resized at load time) instead of dropping them.")
    var allowResizeIR = false

    @Option(help: "Use this fraction (0-1] of the train split: an evenly spaced, deterministic subset.")
    var fraction = 1.0

    @Option(help: "Training image size: also report the memory `cache: ram` would need at this size.")
    var imgsz: Int?

    @Flag(help: "Ignore and do not write the scan cache.")
    var noCache = false

    @Flag(help: "Print every problem (default: at most 20 per kind, notes such as missing label files only counted).")
    var verbose = false

    @Flag(help: "Estimate the IR -> RGB registration of the train pairs and print it as YAML (ir_homography) with its residual.")
    var align = false

    @Option(help: "Pairs used by --align (evenly spaced over the train split).")
    var alignPairs = 8

    func validate() throws {
        guard fraction > 0 && fraction <= 1 else { throw ValidationError("--fraction must be in (0, 1], got \(fraction)") }
        if let imgsz, imgsz <= 0 { throw ValidationError("--imgsz must be positive, got \(imgsz)") }
    }

    func run() throws {
        let config: DatasetConfig
        do {
            config = try DatasetConfig.load(path: data)
        } catch let error as DatasetConfigError {
            printError(error.description)
            throw ExitCode.failure
        }
        print("dataset \(config.file): root \(config.root), \(config.classCount) classes (\(config.names.joined(separator: ", "))), IR from '\(config.irDir)' as \(config.irChannels) channel\(config.irChannels == 1 ? "" : "s")")
        let options = ScanOptions(allowResizeIR: allowResizeIR, fraction: fraction, useCache: !noCache)
        var reports: [DatasetSplit: ScanReport] = [:]
        var failed = false
        for split in DatasetSplit.allCases where !config.sources(split).isEmpty {
            let t0 = Date()
            do {
                let report = try DatasetScanner.scan(config, split: split, options: options)
                reports[split] = report
                printIssues(report.issues)
                let seconds = Date().timeIntervalSince(t0)
                let source = report.fromCache ? "from cache \(report.cachePath ?? "")" : String(format: "scanned in %.1f s", seconds)
                print("\(report.summary) [\(source)]")
                if let imgsz {
                    let bytes = PairedDataset(config: config, report: report).ramCacheBytes(longSide: imgsz)
                    let available = PairedDataset.availableMemoryBytes().map { String(format: "%.2f GB available", Double($0) / 1e9) } ?? "available memory unknown"
                    print(String(format: "  cache: ram at imgsz %d needs about %.2f GB (%@)", imgsz, Double(bytes) / 1e9, available))
                }
            } catch let error as DatasetError {
                printError(error.description)
                if split != .test { failed = true }
            }
        }
        if let train = reports[.train], let val = reports[.val], let overlap = DatasetScanner.splitOverlap(train: train, val: val) {
            print(overlap.description)
        }
        if align {
            guard let train = reports[.train], !train.pairs.isEmpty else { printError("--align needs valid train pairs"); throw ExitCode.failure }
            try estimateAlignment(train, config: config)
        }
        if failed { throw ExitCode.failure }
    }

    /// Reads `--align-pairs` evenly spaced pairs at their own sizes and prints the estimate as YAML.
    func estimateAlignment(_ report: ScanReport, config: DatasetConfig) throws {
        let n = min(max(alignPairs, 1), report.pairs.count)
        var pairs: [(rgb: RasterImage, ir: RasterImage)] = []
        for k in 0..<n {
            let p = report.pairs[k * report.pairs.count / n]
            pairs.append((try ImageIO.read(p.rgbPath, channels: 3), try ImageIO.read(p.irPath, channels: 1)))
        }
        // Pairs of the most common sizes only (the estimate assumes one rig).
        let key = { (p: (rgb: RasterImage, ir: RasterImage)) in "\(p.rgb.width)x\(p.rgb.height)/\(p.ir.width)x\(p.ir.height)" }
        let common = Dictionary(grouping: pairs, by: key).max { $0.value.count < $1.value.count }!.value
        guard let e = Registration.estimate(common) else { printError("--align: no pairs to compare"); throw ExitCode.failure }
        let m = e.irToRGB.m
        func f(_ v: Double) -> String { String(format: "%.6g", v) }
        print("""
        # IR -> RGB registration estimated by check_data --align from \(e.pairs) train pairs: scale per axis and
        # translation maximising the correlation of edge maps; residual \(String(format: "%.3f", e.residual)) \
        (1 - mean correlation; \(String(format: "%.3f", e.residualUnregistered)) without registration).
        # Paste into \(config.file) to warp every IR image into its RGB partner's frame:
        ir_homography:
          - [\(f(m[0])), \(f(m[1])), \(f(m[2]))]
          - [\(f(m[3])), \(f(m[4])), \(f(m[5]))]
          - [\(f(m[6])), \(f(m[7])), \(f(m[8]))]
        """)
    }

    func printIssues(_ issues: [ScanIssue]) {
        var shown: [ScanIssue.Kind: Int] = [:]
        var hidden: [ScanIssue.Kind: Int] = [:]
        for issue in issues {
            if !verbose && (issue.severity == .note || shown[issue.kind, default: 0] >= 20) {
                hidden[issue.kind, default: 0] += 1
                continue
            }
            shown[issue.kind, default: 0] += 1
            print(issue.description)
        }
        for (kind, n) in hidden.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
            print("  ... \(n) more '\(kind.rawValue)' messages (use --verbose to list them)")
        }
    }

    func printError(_ text: String) {
        FileHandle.standardError.write(Data("check_data: \(text)\n".utf8))
    }
}
