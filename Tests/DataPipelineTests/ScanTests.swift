import Foundation
import Testing
@testable import DataPipeline

/// Every bad-input case of the scan, each from generated broken files, and the scan cache.
@Suite struct ScanTests {
    func config(_ dir: TempDir, train: String = "images/train", val: String = "images/train", nc: Int = 2) throws -> DatasetConfig {
        let names = (0..<nc).map { "- c\($0)" }.joined(separator: "\n")
        dir.write("data.yaml", "path: \(dir.path)\ntrain: \(train)\nval: \(val)\nnames:\n\(names)\n")
        return try DatasetConfig.load(path: dir.file("data.yaml"))
    }

    func issues(_ r: ScanReport, _ kind: ScanIssue.Kind) -> [ScanIssue] { r.issues.filter { $0.kind == kind } }

    @Test func everyBadInputIsReportedWithFileAndLine() throws {
        let dir = TempDir("scan")
        defer { dir.remove() }
        try writeCleanDataset(dir, count: 3, prefix: "ok")
        let good = PairFixture.textured(width: 64, height: 48)
        func pair(_ stem: String, label: String?, ir: Bool = true) throws {
            try ImageIO.writePNG(good.rgb, to: dir.prepare("images/train/\(stem).png"))
            if ir { try ImageIO.writePNG(good.ir, to: dir.prepare("imagesIR/train/\(stem).png")) }
            if let label { dir.write("labels/train/\(stem).txt", label) }
        }
        // Partners.
        try pair("noir", label: "0 0.5 0.5 0.2 0.2\n", ir: false)
        try ImageIO.writePNG(good.ir, to: dir.prepare("imagesIR/train/orphan.png"))
        // IR stored as JPEG next to a PNG RGB: found by its stem.
        try ImageIO.writePNG(good.rgb, to: dir.prepare("images/train/jpegir.png"))
        try ImageIO.writeJPEG(good.rgb, to: dir.prepare("imagesIR/train/jpegir.jpg"))
        // Sizes.
        try ImageIO.writePNG(good.rgb, to: dir.prepare("images/train/small.png"))
        try ImageIO.writePNG(good.ir.resized(width: 32, height: 24), to: dir.prepare("imagesIR/train/small.png"))
        // Corrupt / truncated images.
        try ImageIO.writeJPEG(good.rgb, to: dir.prepare("images/train/trunc.jpg"))
        let jpg = dir.bytes("images/train/trunc.jpg")
        dir.write("images/train/trunc.jpg", bytes: Array(jpg.prefix(jpg.count / 2)))
        try ImageIO.writeJPEG(good.ir, to: dir.prepare("imagesIR/train/trunc.jpg"))
        try pair("badir", label: nil)
        let png = dir.bytes("imagesIR/train/badir.png")
        dir.write("imagesIR/train/badir.png", bytes: Array(png.prefix(png.count - 30)))
        dir.write("images/train/notimage.png", "hello")
        try ImageIO.writePNG(good.ir, to: dir.prepare("imagesIR/train/notimage.png"))
        dir.write("images/train/scan.bmp", "BM")
        // Labels.
        try pair("background", label: nil)
        try pair("empty", label: "\n\n")
        try pair("fields", label: "0 0.5 0.5 0.2\n")
        try pair("nan", label: "0 0.5 abc 0.2 0.2\n")
        try pair("classrange", label: "0 0.5 0.5 0.2 0.2\n5 0.5 0.5 0.2 0.2\n")
        try pair("fraction", label: "0.5 0.5 0.5 0.2 0.2\n")
        try pair("pixels", label: "1 32 24 10 10\n")
        try pair("clip", label: "0 0.98 0.5 0.1 0.2\n1 0.5 0.5 0.2 0.2\n")
        try pair("degenerate", label: "0 1.04 0.5 0.02 0.2\n1 0.5 0.5 0.2 0.2\n")
        try pair("zero", label: "0 0.5 0.5 0 0.2\n1 0.5 0.5 -0.1 0.2\n1 0.3 0.3 0.2 0.2\n")
        try pair("dups", label: "\u{FEFF}0 0.5 0.5 0.2 0.2\r\n0 0.5 0.5 0.2 0.2\r\n1 0.5 0.5 0.2 0.2\r\n0 0.5 0.5 0.2 0.2\r\n")
        try pair("aspect", label: "0 0.5 0.5 0.9 0.005\n")   // 57.6 x 0.24 px -> degenerate (< 1 px)
        try pair("thin", label: "0 0.5 0.5 0.02 0.99\n")     // 1.28 x 47.5 px -> aspect 37: fine
        try pair("sliver", label: "0 0.5 0.5 0.95 0.021\n")  // 60.8 x 1.008 px -> aspect 60: warned

        let report = try DatasetScanner.scan(try config(dir), split: .train, options: ScanOptions(useCache: false))
        let c = report.counts
        let ok = Set(report.pairs.map { ($0.rgbPath as NSString).lastPathComponent })
        #expect(ok == ["ok0.png", "ok1.png", "ok2.png", "jpegir.png", "background.png", "empty.png", "clip.png",
                       "degenerate.png", "zero.png", "dups.png", "aspect.png", "thin.png", "sliver.png"])
        #expect(c.ok == 13)
        #expect(c.backgrounds == 4)          // background, empty, aspect (its only box dropped), badir? no: dropped
        #expect(c.missingIR == 1)
        #expect(c.orphanIR == 1)
        #expect(c.corrupt == 3)              // trunc (RGB), badir (IR), notimage (RGB)
        #expect(c.unsupported == 1)
        #expect(c.sizeMismatch == 1)
        #expect(c.badLabels == 5)            // fields, nan, classrange, fraction, pixels
        #expect(c.clipped == 1)
        #expect(c.degenerate == 4)           // degenerate, zero (2), aspect
        #expect(c.duplicates == 2)
        #expect(c.extremeAspect == 1)

        // Messages name the file and the line.
        let malformed = issues(report, .malformedLine).filter { $0.line != nil }
        #expect(malformed.contains { $0.file.hasSuffix("fields.txt") && $0.line == 1 && $0.message.contains("5 fields") })
        #expect(malformed.contains { $0.file.hasSuffix("nan.txt") && $0.line == 1 && $0.message.contains("'abc'") })
        #expect(malformed.contains { $0.file.hasSuffix("fraction.txt") && $0.message.contains("not an integer") })
        #expect(issues(report, .classOutOfRange).contains { $0.file.hasSuffix("classrange.txt") && $0.line == 2 && $0.message.contains("class 5") })
        #expect(issues(report, .notNormalised).contains { $0.file.hasSuffix("pixels.txt") && $0.line == 1 })
        #expect(issues(report, .clippedBox).contains { $0.file.hasSuffix("clip.txt") && $0.line == 1 })
        #expect(issues(report, .degenerateBox).contains { $0.file.hasSuffix("zero.txt") && $0.line == 2 && $0.message.contains("negative") })
        #expect(issues(report, .duplicateLabel).map(\.line) == [2, 4])
        #expect(issues(report, .extremeAspect).contains { $0.file.hasSuffix("sliver.txt") && $0.message.contains("50:1") })
        #expect(issues(report, .missingIR).contains { $0.file.hasSuffix("noir.png") && $0.message.contains("imagesIR/train/noir.png") })
        #expect(issues(report, .orphanIR).contains { $0.file.hasSuffix("orphan.png") })
        #expect(issues(report, .sizeMismatch).contains { $0.message.contains("64x48") && $0.message.contains("32x24") })
        #expect(issues(report, .corruptImage).contains { $0.file.hasSuffix("images/train/trunc.jpg") })
        #expect(issues(report, .corruptImage).contains { $0.file.hasSuffix("imagesIR/train/badir.png") })
        #expect(issues(report, .missingLabel).contains { $0.file.hasSuffix("background.png") && $0.severity == .note })
        #expect(issues(report, .unsupportedFormat).contains { $0.file.hasSuffix("scan.bmp") })
        // Labels as kept: clipped box, duplicates removed, BOM and CRLF handled.
        let clip = try #require(report.pairs.first { $0.rgbPath.hasSuffix("clip.png") })
        #expect(clip.classes == [0, 1])
        #expect(abs(clip.boxes[0] - 0.965) < 1e-5 && abs(clip.boxes[2] - 0.07) < 1e-5)
        let dups = try #require(report.pairs.first { $0.rgbPath.hasSuffix("dups.png") })
        #expect(dups.classes == [0, 1])
        let jpegir = try #require(report.pairs.first { $0.rgbPath.hasSuffix("jpegir.png") })
        #expect(jpegir.irPath.hasSuffix("imagesIR/train/jpegir.jpg"))
        // The summary line.
        #expect(report.summary.hasPrefix("train: 13 pairs ok"))
        #expect(report.summary.contains("4 backgrounds, 1 missing IR, 3 corrupt, 2 duplicate labels removed"))
        #expect(report.summary.contains("1 RGB/IR size mismatches dropped"))
        // Each issue reads file:line: severity: message.
        #expect(issues(report, .classOutOfRange)[0].description.contains("classrange.txt:2: error: class 5"))
    }

    @Test func sizeMismatchIsKeptAndResizedWhenAllowed() throws {
        let dir = TempDir("resize")
        defer { dir.remove() }
        try writeCleanDataset(dir, count: 1)
        let good = PairFixture.textured(width: 64, height: 48)
        try ImageIO.writePNG(good.rgb, to: dir.prepare("images/train/small.png"))
        try ImageIO.writePNG(good.ir.resized(width: 32, height: 24), to: dir.prepare("imagesIR/train/small.png"))
        let cfg = try config(dir)
        let strict = try DatasetScanner.scan(cfg, split: .train, options: ScanOptions(useCache: false))
        #expect(strict.counts.ok == 1 && strict.counts.sizeMismatch == 1)
        let lenient = try DatasetScanner.scan(cfg, split: .train, options: ScanOptions(allowResizeIR: true, useCache: false))
        #expect(lenient.counts.ok == 2 && lenient.counts.resizedIR == 1)
        #expect(issues(lenient, .resizedIR).first?.severity == .warning)
        let dataset = PairedDataset(config: cfg, report: lenient)
        let index = try #require(dataset.pairs.firstIndex { $0.rgbPath.hasSuffix("small.png") })
        let loaded = try dataset.load(index, longSide: 64)
        #expect(loaded.ir.width == 64 && loaded.ir.height == 48)
    }

    @Test func zeroValidPairsIsAClearError() throws {
        let dir = TempDir("zero")
        defer { dir.remove() }
        let good = PairFixture.textured(width: 16, height: 16)
        try ImageIO.writePNG(good.rgb, to: dir.prepare("images/train/a.png"))   // no IR
        do {
            _ = try DatasetScanner.scan(try config(dir), split: .train, options: ScanOptions(useCache: false))
            Issue.record("expected noValidPairs")
        } catch let error as DatasetError {
            guard case .noValidPairs = error else { Issue.record("got \(error)"); return }
            #expect(error.description.contains("zero valid RGB-IR pairs"))
            #expect(error.description.contains("a.png"))
            #expect(error.description.contains("no IR partner"))
        }
        // A missing split folder names the YAML and the path.
        #expect(throws: DatasetError.self) { _ = try DatasetScanner.scan(try config(dir, val: "images/nope"), split: .val) }
    }

    @Test func valSameAsTrainIsWarned() throws {
        let dir = TempDir("overlap")
        defer { dir.remove() }
        try writeCleanDataset(dir, count: 4)
        let cfg = try config(dir)
        let t = try DatasetScanner.scan(cfg, split: .train, options: ScanOptions(useCache: false))
        let v = try DatasetScanner.scan(cfg, split: .val, options: ScanOptions(useCache: false))
        let warning = try #require(DatasetScanner.splitOverlap(train: t, val: v))
        #expect(warning.message.contains("same as the train split"))
        let both = try PairedDataset.trainAndVal(cfg, scan: ScanOptions(useCache: false))
        #expect(both.train.count == 4 && both.val.count == 4 && both.overlap == warning)
        try writeCleanDataset(dir, split: "val", count: 2, prefix: "v")
        let v2 = try DatasetScanner.scan(try config(dir, val: "images/val"), split: .val, options: ScanOptions(useCache: false))
        #expect(DatasetScanner.splitOverlap(train: t, val: v2) == nil)
    }

    @Test func textListsResolvePathsAndReportMissingLines() throws {
        let dir = TempDir("lists")
        defer { dir.remove() }
        let stems = try writeCleanDataset(dir, count: 3)
        dir.write("lists/train.txt", """
        ./../images/train/\(stems[0]).png
        images/train/\(stems[1]).png
        # a comment
        \(dir.file("images/train/\(stems[2]).png"))
        images/train/gone.png
        """)
        let report = try DatasetScanner.scan(try config(dir, train: "lists/train.txt"), split: .train, options: ScanOptions(useCache: false))
        #expect(report.counts.ok == 3)
        #expect(report.counts.missingImages == 1)
        #expect(issues(report, .missingImage).first?.line == 5)
        #expect(issues(report, .missingImage).first?.file.hasSuffix("lists/train.txt") == true)
    }

    @Test func fractionIsADeterministicSpreadSubset() throws {
        let dir = TempDir("fraction")
        defer { dir.remove() }
        try writeCleanDataset(dir, count: 10, size: (16, 16))
        let cfg = try config(dir)
        let a = try DatasetScanner.scan(cfg, split: .train, options: ScanOptions(fraction: 0.3, useCache: false))
        let b = try DatasetScanner.scan(cfg, split: .train, options: ScanOptions(fraction: 0.3, useCache: false))
        #expect(a.pairs.count == 3)
        #expect(a.pairs == b.pairs)
        #expect(a.pairs.map { ($0.rgbPath as NSString).lastPathComponent } == ["p0.png", "p3.png", "p6.png"])
        #expect(DatasetScanner.evenlySpacedSubset(Array(0..<100), fraction: 0.1) == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90])
        // Val ignores fraction.
        #expect(try DatasetScanner.scan(cfg, split: .val, options: ScanOptions(fraction: 0.3, useCache: false)).pairs.count == 10)
        #expect(throws: DatasetError.self) { _ = try DatasetScanner.scan(cfg, split: .train, options: ScanOptions(fraction: 0)) }
    }

    @Test func cacheIsReusedUntilAFileChanges() throws {
        let dir = TempDir("cache")
        defer { dir.remove() }
        try writeCleanDataset(dir, count: 3)
        let cfg = try config(dir)
        let first = try DatasetScanner.scan(cfg, split: .train)
        #expect(!first.fromCache)
        #expect(first.cachePath == dir.file("labels/train.dualfuse.cache"))
        #expect(FileManager.default.fileExists(atPath: dir.file("labels/train.dualfuse.cache")))
        let second = try DatasetScanner.scan(cfg, split: .train)
        #expect(second.fromCache)
        #expect(second.pairs == first.pairs && second.counts == first.counts)
        // Editing a label (new size) invalidates the cache.
        dir.write("labels/train/p0.txt", "1 0.5 0.5 0.1 0.1\n0 0.2 0.2 0.1 0.1\n")
        let third = try DatasetScanner.scan(cfg, split: .train)
        #expect(!third.fromCache)
        #expect(third.pairs[0].classes == [1, 0])
        // A different scan option is a different key.
        #expect(!(try DatasetScanner.scan(cfg, split: .train, options: ScanOptions(allowResizeIR: true))).fromCache)
        // A garbage cache file is ignored.
        dir.write("labels/train.dualfuse.cache", "{not json")
        #expect(!(try DatasetScanner.scan(cfg, split: .train)).fromCache)
    }

    @Test func labelParserRules() {
        func parse(_ text: String, nc: Int = 3) -> LabelFile.Parsed {
            LabelFile.parse(text, file: "l.txt", width: 100, height: 100, classCount: nc)
        }
        #expect(parse("").classes.isEmpty && !parse("").fatal)
        #expect(parse("2 0.5 0.5 0.2 0.2").classes == [2])
        #expect(parse("3 0.5 0.5 0.2 0.2").fatal)
        #expect(parse("-1 0.5 0.5 0.2 0.2").fatal)
        #expect(parse("0 0.5 0.5 0.2 0.2 0.9").issues.first?.message.contains("confidence") == true)
        #expect(parse("0 0.1 0.1 0.2 0.1 0.3 0.3").issues.first?.message.contains("polygon") == true)
        #expect(parse("0 0.5 0.5 nan 0.2").fatal)
        #expect(parse("0 1.2 0.5 0.2 0.2").fatal)
        // A tiny overshoot is clipped silently.
        let tiny = parse("0 0.9 0.5 0.2000004 0.2")
        #expect(tiny.issues.isEmpty && tiny.classes == [0] && tiny.boxes[0] + tiny.boxes[2] / 2 <= 1)
    }
}
