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
        if failed { throw ExitCode.failure }
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
