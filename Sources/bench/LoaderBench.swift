import ArgumentParser
import DataPipeline
import Foundation
import TensorCore

/// `bench loader`: training-loader throughput (pairs/s) from JPEG pairs with mosaic + affine.
struct LoaderBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "loader",
        abstract: "Pairs/s of the training loader at 640 px from JPEG (mosaic + affine + colour + flips), on 1 worker and on the default workers.",
        discussion: "Writes a temporary data set of synthetic 640x512 RGB + IR JPEG pairs (LLVIP-like 5:4), then times whole batches taken from the prefetching loader by an idle consumer.")

    @Option(help: "Training image size.") var imgsz = 640
    @Option(help: "Pairs in the temporary data set.") var pairs = 64
    @Option(help: "Batch size.") var batch = 8
    @Option(help: "Timed batches per configuration (after one warm-up batch).") var batches = 8
    @Option(help: "Worker count of the second run (default: min(2, cores)).") var workers: Int?

    func run() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dualfuse-bench-loader-\(ProcessInfo.processInfo.processIdentifier)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let width = imgsz, height = imgsz * 4 / 5
        let t0 = Date()
        for split in ["images", "imagesIR", "labels"] {
            try FileManager.default.createDirectory(atPath: "\(dir)/\(split)/train", withIntermediateDirectories: true)
        }
        let options = SyntheticOptions(width: width, height: height)
        for i in 0..<pairs {
            let scene = SyntheticScenes.render(seed: 7, index: i, options: options)
            let stem = scene.stem(index: i)
            try ImageIO.writeJPEG(scene.rgb, to: "\(dir)/images/train/\(stem).jpg", quality: 90)
            try ImageIO.writeJPEG(scene.ir.converted(toChannels: 3), to: "\(dir)/imagesIR/train/\(stem).jpg", quality: 90)
            var text = ""
            for k in 0..<scene.classes.count {
                text += "\(scene.classes[k]) \(scene.boxes[4 * k]) \(scene.boxes[4 * k + 1]) \(scene.boxes[4 * k + 2]) \(scene.boxes[4 * k + 3])\n"
            }
            try text.write(toFile: "\(dir)/labels/train/\(stem).txt", atomically: false, encoding: .utf8)
        }
        print(String(format: "bench loader: %d JPEG pairs %dx%d (3-channel IR files read as 1 channel) written in %.1f s",
                     pairs, width, height, Date().timeIntervalSince(t0)))
        let config = DatasetConfig(root: dir, train: ["\(dir)/images/train"], val: ["\(dir)/images/train"], names: SyntheticScenes.names)
        let dataset = try PairedDataset(config: config, split: .train, scan: ScanOptions(useCache: false))

        // Decode + resize alone, one thread.
        let decodeRuns = min(pairs, 16)
        let td = Date()
        for i in 0..<decodeRuns { _ = try dataset.load(i, longSide: imgsz) }
        let decodeRate = Double(decodeRuns) / Date().timeIntervalSince(td)
        print(String(format: "decode + resize (RGB + IR JPEG, 1 thread): %.1f pairs/s", decodeRate))

        let defaultWorkers = workers ?? LoaderOptions.defaultWorkers
        for w in [1, defaultWorkers] {
            let loader = try PairLoader(dataset: dataset, options: LoaderOptions(mode: .train, imageSize: imgsz, batchSize: batch,
                                                                               seed: 1, workers: w))
            let stream = loader.epoch(0)
            _ = try stream.next()   // warm-up
            let timed = min(batches, loader.batchesPerEpoch - 1)
            guard timed > 0 else { print("not enough batches: raise --pairs"); return }
            loader.resetWaitSeconds()
            let start = Date()
            var images = 0
            for _ in 0..<timed { images += try stream.next()?.count ?? 0 }
            let seconds = Date().timeIntervalSince(start)
            print(String(format: "train loader, mosaic + affine, %d px, batch %d, %d worker%@: %.1f pairs/s (%d batches in %.2f s)",
                         imgsz, batch, w, w == 1 ? "" : "s", Double(images) / seconds, timed, seconds))
            stream.cancel()
        }
    }
}
