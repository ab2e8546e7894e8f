import Foundation
import Testing
import TensorCore
@testable import DataPipeline

/// Batches: layout, determinism for (seed, epoch), workers, RAM cache, validation mode.
@Suite(.serialized) struct LoaderTests {
    func dataset(_ dir: TempDir, count: Int = 10) throws -> PairedDataset {
        try writeCleanDataset(dir, count: count, size: (80, 56))
        let config = DatasetConfig(root: dir.path, train: [dir.file("images/train")], val: [dir.file("images/train")],
                                   names: ["a", "b"])
        return try PairedDataset(config: config, split: .train, scan: ScanOptions(useCache: false))
    }

    func same(_ a: PairBatch, _ b: PairBatch) -> Bool {
        a.rgb.array == b.rgb.array && a.ir.array == b.ir.array && a.classes == b.classes && a.boxes == b.boxes
            && a.batchIndex == b.batchIndex && a.files == b.files
    }

    @Test func batchLayout() throws {
        let dir = TempDir("layout")
        defer { dir.remove() }
        let loader = try PairLoader(dataset: try dataset(dir), options: LoaderOptions(imageSize: 64, batchSize: 4, seed: 1, workers: 0))
        #expect(loader.batchesPerEpoch == 3)
        let b = try loader.batch(epoch: 0, index: 0)
        #expect(b.rgb.shape == [4, 3, 64, 64] && b.ir.shape == [4, 1, 64, 64])
        #expect(b.rgb.array.allSatisfy { $0 >= 0 && $0 <= 1 } && b.ir.array.allSatisfy { $0 >= 0 && $0 <= 1 })
        #expect(b.boxes.count == 4 * b.classes.count && b.batchIndex.count == b.classes.count)
        #expect(b.boxes.allSatisfy { $0 >= 0 && $0 <= 1 })
        #expect(b.batchIndex.allSatisfy { (0..<4).contains($0) })
        #expect(b.files.count == 4 && b.originalSizes.allSatisfy { $0.height == 56 && $0.width == 80 })
        #expect(b.letterbox.allSatisfy { $0 == .identity(width: 64, height: 64) })
        let last = try loader.batch(epoch: 0, index: 2)
        #expect(last.count == 2)
        #expect(throws: DatasetError.self) { _ = try PairLoader(dataset: loader.dataset, options: LoaderOptions(imageSize: 100)) }
    }

    @Test func deterministicForSeedAndEpoch() throws {
        let dir = TempDir("determinism")
        defer { dir.remove() }
        let data = try dataset(dir)
        let options = LoaderOptions(imageSize: 64, batchSize: 4, seed: 42, workers: 0)
        let a = try PairLoader(dataset: data, options: options), b = try PairLoader(dataset: data, options: options)
        #expect(same(try a.batch(epoch: 3, index: 1), try b.batch(epoch: 3, index: 1)))
        // A resumed run reproduces an epoch without replaying the ones before.
        let fresh = try PairLoader(dataset: data, options: options)
        #expect(same(try fresh.batch(epoch: 5, index: 0), try a.batch(epoch: 5, index: 0)))
        #expect(!same(try a.batch(epoch: 3, index: 1), try a.batch(epoch: 4, index: 1)))
        #expect(a.order(epoch: 3) != a.order(epoch: 4))
        #expect(a.order(epoch: 3).sorted() == Array(0..<10))
        var other = options
        other.seed = 43
        #expect(!same(try a.batch(epoch: 3, index: 1), try PairLoader(dataset: data, options: other).batch(epoch: 3, index: 1)))
    }

    /// Ranks of a data-parallel job: disjoint shards of the same shuffled order, padded to equal
    /// length by wrapping around (as PyTorch's DistributedSampler), and each sample augmented by its
    /// global position, so N ranks see exactly the images one process would.
    @Test func ranksGetDisjointPaddedShardsOfOneOrder() throws {
        let dir = TempDir("shards")
        defer { dir.remove() }
        let data = try dataset(dir)
        let single = try PairLoader(dataset: data, options: LoaderOptions(imageSize: 64, batchSize: 1, seed: 7, workers: 0))
        let full = single.order(epoch: 2)
        var positions: [Int] = []
        var shards: [[Int]] = []
        for rank in 0..<3 {
            let loader = try PairLoader(dataset: data, options: LoaderOptions(imageSize: 64, batchSize: 2, seed: 7, workers: 0,
                                                                              rank: rank, world: 3))
            #expect(loader.shardCount == 4)
            #expect(loader.batchesPerEpoch == 2)
            let shard = loader.shard(epoch: 2)
            #expect(shard.count == 4)
            for (index, position) in shard { #expect(index == full[position % full.count]) }
            positions += shard.map(\.position)
            shards.append(shard.map(\.index))
        }
        // 12 global positions, each on exactly one rank; the last two wrap to the order's start.
        #expect(positions.sorted() == Array(0..<12))
        #expect(Set(shards.flatMap { $0 }) == Set(0..<10))
        #expect(shards[1][3] == full[0] && shards[2][3] == full[1])
        // Rank 1's first sample is global position 1: the same augmented image as the single process's.
        let rank1 = try PairLoader(dataset: data, options: LoaderOptions(imageSize: 64, batchSize: 1, seed: 7, workers: 0,
                                                                         rank: 1, world: 3))
        #expect(same(try rank1.batch(epoch: 2, index: 0), try single.batch(epoch: 2, index: 1)))
        #expect(!same(try rank1.batch(epoch: 2, index: 0), try single.batch(epoch: 2, index: 0)))
    }

    @Test func workersProduceTheSameBatchesInOrder() throws {
        let dir = TempDir("workers")
        defer { dir.remove() }
        let data = try dataset(dir)
        var options = LoaderOptions(imageSize: 64, batchSize: 3, seed: 7, workers: 0)
        let reference = try PairLoader(dataset: data, options: options)
        options.workers = 2
        options.prefetch = 1
        let threaded = try PairLoader(dataset: data, options: options)
        let stream = threaded.epoch(2)
        var n = 0
        while let batch = try stream.next() {
            #expect(same(batch, try reference.batch(epoch: 2, index: n)), "batch \(n)")
            n += 1
        }
        #expect(n == threaded.batchesPerEpoch && n == 4)
        #expect(threaded.waitSeconds >= 0)
        threaded.resetWaitSeconds()
        #expect(threaded.waitSeconds == 0)
        // Abandoning an epoch early stops its workers.
        let partial = threaded.epoch(3)
        _ = try partial.next()
        partial.cancel()
        #expect(try partial.next() == nil)
    }

    @Test func closeMosaicFlag() throws {
        let dir = TempDir("mosaic")
        defer { dir.remove() }
        var augment = AugmentConfig.none
        augment.mosaic = 1
        let loader = try PairLoader(dataset: try dataset(dir), options: LoaderOptions(imageSize: 64, batchSize: 2, augment: augment,
                                                                                      seed: 1, workers: 0))
        let on = try loader.batch(epoch: 0, index: 0)
        loader.mosaicEnabled = false
        let off = try loader.batch(epoch: 0, index: 0)
        // Without mosaic (and no affine) the 80x56 pair sits letterboxed: rows 0..<9 are padding grey.
        let grey = Float(114) / 255
        #expect((0..<64).allSatisfy { abs(off.rgb[flat: $0] - grey) < 1e-6 })
        #expect(!same(on, off))
        #expect(off.classes.count == 2)
    }

    @Test func ramCacheGivesTheSameBatchesAndRefusesWhenTooLarge() throws {
        let dir = TempDir("ram")
        defer { dir.remove() }
        let data = try dataset(dir)
        var options = LoaderOptions(imageSize: 64, batchSize: 4, seed: 9, workers: 0)
        let disk = try PairLoader(dataset: data, options: options)
        options.cache = .ram
        let ram = try PairLoader(dataset: data, options: options)
        #expect(same(try disk.batch(epoch: 1, index: 1), try ram.batch(epoch: 1, index: 1)))
        #expect(data.ramCacheBytes(longSide: 64) == 10 * (64 * 45 * 4 + 256))
        do {
            _ = try PairLoader(dataset: data, options: options, availableMemory: 1000)
            Issue.record("expected ramCacheTooLarge")
        } catch let error as LoaderError {
            #expect(error.description.contains("cache: ram needs"))
            #expect(error.description.contains("MemAvailable"))
        }
    }

    @Test func validationModeLetterboxesInFixedOrder() throws {
        let dir = TempDir("val")
        defer { dir.remove() }
        let data = try dataset(dir)
        let loader = try PairLoader(dataset: data, options: LoaderOptions(mode: .val, imageSize: 64, batchSize: 4, workers: 0))
        #expect(loader.order(epoch: 0) == Array(0..<10) && loader.order(epoch: 7) == Array(0..<10))
        let b = try loader.batch(epoch: 0, index: 0)
        #expect(b.files == Array(data.pairs[0..<4].map(\.rgbPath)))
        #expect(b.letterbox[0].gainX == 0.8 && b.letterbox[0].padY == 9 && b.letterbox[0].padX == 0)
        // Labels map back to the original through the letterbox (cx 0.5, w 0.25 of 80 -> 30...50).
        let xyxy: [Float] = [(b.boxes[0] - b.boxes[2] / 2) * 64, (b.boxes[1] - b.boxes[3] / 2) * 64,
                             (b.boxes[0] + b.boxes[2] / 2) * 64, (b.boxes[1] + b.boxes[3] / 2) * 64]
        let back = Letterbox.scaleBoxes(xyxy, b.letterbox[0])
        for (k, v) in [Float(30), 16.8, 50, 39.2].enumerated() { #expect(abs(back[k] - v) < 0.05, "coordinate \(k): \(back[k])") }
        #expect(same(b, try loader.batch(epoch: 9, index: 0)))
    }

    @Test func changedFilesSurfaceAsErrorsFromTheStream() throws {
        let dir = TempDir("changed")
        defer { dir.remove() }
        let data = try dataset(dir, count: 4)
        let loader = try PairLoader(dataset: data, options: LoaderOptions(mode: .val, imageSize: 64, batchSize: 2, workers: 1))
        try FileManager.default.removeItem(atPath: data.pairs[2].irPath)
        let stream = loader.epoch(0)
        _ = try stream.next()
        #expect(throws: ImageIOError.self) { _ = try stream.next() }
    }
}
