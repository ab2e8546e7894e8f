import DataPipeline
import Foundation
@testable import Training

/// Repository root (tests read configs/ from it).
let repoRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()

/// A scratch folder for this test process.
let scratch: String = {
    let dir = NSTemporaryDirectory() + "dualfuse-tests-\(getpid())"
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}()

/// Synthetic data sets, generated once per process: (name, train, val, seed) -> data.yaml path.
enum TestData {
    nonisolated(unsafe) static var made: [String: String] = [:]
    static let lock = NSLock()

    static func synthetic(_ name: String, train: Int, val: Int, seed: UInt64, size: Int = 128) -> String {
        lock.lock(); defer { lock.unlock() }
        if let p = made[name] { return p }
        let dir = scratch + "/" + name
        let s = try! SyntheticScenes.writeDataset(to: dir, train: train, val: val, imageSize: size, seed: seed)
        made[name] = s.yamlPath
        return s.yamlPath
    }

    /// A model YAML of configs/models at a reduced width (scale t: depth 0.33, width 0.125), for fast tests.
    static func tinyModel(_ file: String) -> String {
        let out = scratch + "/tiny_" + file
        if !FileManager.default.fileExists(atPath: out) {
            let text = try! String(contentsOfFile: repoRoot + "/configs/models/" + file, encoding: .utf8)
                .replacingOccurrences(of: "scales: # [depth_multiple, width_multiple, max_channels]\n",
                                      with: "scale: t\nscales:\n  t: [0.33, 0.125, 1024]\n")
            try! text.write(toFile: out, atomically: true, encoding: .utf8)
        }
        return out
    }

    /// Options of a quiet, fast run.
    static func options(data: String, model: String, name: String, epochs: Int, batch: Int = 16) -> TrainOptions {
        var o = TrainOptions(data: data, cfg: tinyModel(model))
        o.project = scratch + "/runs"
        o.name = name
        o.existOK = true
        o.verbose = false
        o.hyp.epochs = epochs
        o.hyp.batch = batch
        o.hyp.imgsz = 128
        o.hyp.accumulate = 1
        o.hyp.warmup_epochs = 1
        o.hyp.warmup_iters_min = 20
        o.hyp.close_mosaic = 2
        o.hyp.workers = 2
        return o
    }
}
