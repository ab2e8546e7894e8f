import Dispatch
import Foundation
import TensorCore

/// Training (augmented, shuffled) or validation (letterboxed, fixed order).
public enum LoaderMode: String, Sendable, Codable {
    case train, val
}

/// Where decoded images live between epochs.
public enum ImageCacheMode: String, Sendable, Codable {
    /// Decode from disk for every sample.
    case none
    /// Keep every pair decoded and resized (long side = image size) in memory.
    case ram
}

/// How a `PairLoader` makes batches.
public struct LoaderOptions: Sendable, Equatable {
    /// `.train`: mosaic / affine / colour / flips, shuffled per epoch. `.val`: square letterbox, no
    /// augmentation, dataset order. Default `.train`.
    public var mode: LoaderMode
    /// Int, square training size s in pixels; a multiple of `stride`. Default 640.
    public var imageSize: Int
    /// Int, images per batch (the last batch of an epoch may be smaller). Default 16.
    public var batchSize: Int
    /// Int, the model's largest stride; `imageSize` must be a multiple of it. Default 32.
    public var stride: Int
    /// Augmentation settings (train mode only). Default: Ultralytics' defaults.
    public var augment: AugmentConfig
    /// UInt64, seed of shuffling and augmentation. Default 0.
    public var seed: UInt64
    /// Int, background threads building batches; 0 builds on the caller's thread. Default min(2, cores).
    public var workers: Int
    /// Int, batches each worker may build ahead of the consumer. Default 2.
    public var prefetch: Int
    /// Image cache. Default `.none`.
    public var cache: ImageCacheMode
    /// Shuffle per epoch; nil means "train mode shuffles, val does not". Default nil.
    public var shuffle: Bool?
    /// Int, this process's rank and the number of ranks sharing each epoch (data-parallel
    /// training): rank r takes positions r, r + world, … of the epoch's order padded to a multiple
    /// of `world`, as torch's DistributedSampler. Default 0 of 1 (every position).
    public var rank: Int
    public var world: Int

    /// min(2, active cores).
    public static var defaultWorkers: Int { min(2, ProcessInfo.processInfo.activeProcessorCount) }

    public init(mode: LoaderMode = .train, imageSize: Int = 640, batchSize: Int = 16, stride: Int = 32,
                augment: AugmentConfig = AugmentConfig(), seed: UInt64 = 0, workers: Int = LoaderOptions.defaultWorkers,
                prefetch: Int = 2, cache: ImageCacheMode = .none, shuffle: Bool? = nil, rank: Int = 0, world: Int = 1) {
        self.mode = mode
        self.imageSize = imageSize
        self.batchSize = batchSize
        self.stride = stride
        self.augment = augment
        self.seed = seed
        self.workers = workers
        self.prefetch = prefetch
        self.cache = cache
        self.shuffle = shuffle
        self.rank = rank
        self.world = world
    }
}

/// Batches of RGB-IR pairs, deterministic for (seed, epoch), built by background workers.
///
/// Determinism: the epoch's order is a Fisher-Yates shuffle from `RandomState(seed ⊕ epoch)`; every
/// sample draws its augmentation from its own `RandomState(seed, epoch, position)`, so a batch's
/// content does not depend on the worker count, on timing, or on earlier epochs: a resumed run
/// reproduces an epoch exactly. The trainer turns mosaic off for the last `close_mosaic` epochs by
/// setting `mosaicEnabled = false` before `epoch(_:)`.
public final class PairLoader: @unchecked Sendable {
    public let dataset: PairedDataset
    public let options: LoaderOptions
    public let augmenter: PairAugmenter
    private let lock = NSLock()
    private var mosaicFlag = true
    private var waited = 0.0
    private let ramCache: [LoadedPair]?

    /// Checks the options, and with `cache: .ram` estimates the memory, refuses when it exceeds
    /// MemAvailable (with a 50% margin), and decodes every pair.
    public convenience init(dataset: PairedDataset, options: LoaderOptions) throws {
        try self.init(dataset: dataset, options: options, availableMemory: PairedDataset.availableMemoryBytes())
    }

    /// `availableMemory` (bytes, nil = unknown) is what the RAM cache estimate is checked against.
    init(dataset: PairedDataset, options: LoaderOptions, availableMemory: Int?) throws {
        guard options.stride > 0, options.imageSize >= options.stride, options.imageSize % options.stride == 0 else {
            throw DatasetError.invalidOption(name: "imgsz",
                                             message: "must be a positive multiple of the stride \(options.stride), got \(options.imageSize) (try \(Letterbox.alignedSize(options.imageSize, stride: max(1, options.stride))))")
        }
        guard options.batchSize >= 1 else {
            throw DatasetError.invalidOption(name: "batch", message: "must be at least 1, got \(options.batchSize)")
        }
        guard options.world >= 1, options.rank >= 0, options.rank < options.world else {
            throw DatasetError.invalidOption(name: "rank", message: "rank \(options.rank) of \(options.world) ranks is out of range")
        }
        guard options.workers >= 0, options.prefetch >= 1 else {
            throw DatasetError.invalidOption(name: "workers", message: "workers must be >= 0 and prefetch >= 1, got \(options.workers), \(options.prefetch)")
        }
        try options.augment.validate()
        self.dataset = dataset
        self.options = options
        self.augmenter = PairAugmenter(config: options.augment, size: options.imageSize)
        if options.cache == .ram {
            let required = dataset.ramCacheBytes(longSide: options.imageSize)
            if let available = availableMemory, required + required / 2 > available {
                throw LoaderError.ramCacheTooLarge(pairs: dataset.count, imageSize: options.imageSize,
                                                   requiredBytes: required + required / 2, availableBytes: available)
            }
            var loaded = [Result<LoadedPair, Error>?](repeating: nil, count: dataset.count)
            loaded.withUnsafeMutableBufferPointer { out in
                let slots = out   // disjoint indices per chunk; Parallel owns the threading
                Parallel.chunks(dataset.count) { range in
                    for i in range { slots[i] = Result { try dataset.load(i, longSide: options.imageSize) } }
                }
            }
            ramCache = try loaded.map { entry -> LoadedPair in
                guard let entry else { preconditionFailure("RAM cache slot left empty") }
                return try entry.get()
            }
        } else {
            ramCache = nil
        }
    }

    /// Pairs in the dataset.
    public var count: Int { dataset.count }

    /// Positions of an epoch this rank takes: all pairs alone, ceil(pairs / world) with ranks.
    public var shardCount: Int { options.world == 1 ? dataset.count : (dataset.count + options.world - 1) / options.world }

    /// Batches per epoch: ceil(shard / batch size) (the same on every rank).
    public var batchesPerEpoch: Int { (shardCount + options.batchSize - 1) / options.batchSize }

    /// Mosaic on (default) or off; read when an epoch starts.
    public var mosaicEnabled: Bool {
        get { lock.withLock { mosaicFlag } }
        set { lock.withLock { mosaicFlag = newValue } }
    }

    /// Seconds the consumer spent waiting in `PairEpoch.next()` since the last reset.
    public var waitSeconds: Double { lock.withLock { waited } }

    /// Sets `waitSeconds` back to 0.
    public func resetWaitSeconds() { lock.withLock { waited = 0 } }

    func addWait(_ seconds: Double) { lock.withLock { waited += seconds } }

    /// Dataset indices in the order of `epoch`.
    public func order(epoch: Int) -> [Int] {
        var order = Array(0..<dataset.count)
        if options.shuffle ?? (options.mode == .train) {
            var rng = RandomState(seed: Self.mix(options.seed, UInt64(truncatingIfNeeded: epoch), 0x5348_5546))
            for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, rng.int(below: i + 1)) }
        }
        return order
    }

    /// This rank's share of `epoch`: dataset indices with their positions in the epoch's order
    /// (padded by repeating its start to a multiple of the rank count). The position seeds the
    /// sample's augmentation, so a pair is augmented the same whichever rank draws it.
    public func shard(epoch: Int) -> [(index: Int, position: Int)] {
        let full = order(epoch: epoch)
        guard options.world > 1, !full.isEmpty else { return full.enumerated().map { ($0.element, $0.offset) } }
        return (0..<shardCount).map { j in
            let position = options.rank + j * options.world
            return (full[position % full.count], position)
        }
    }

    /// Pair `index` resized to the training size, from the RAM cache or from disk.
    public func loadPair(_ index: Int) throws -> LoadedPair {
        if let ramCache { return ramCache[index] }
        return try dataset.load(index, longSide: options.imageSize)
    }

    /// Builds batch `index` of `epoch` on the calling thread (the workers call this too).
    public func batch(epoch: Int, index: Int, mosaic: Bool? = nil) throws -> PairBatch {
        try makeBatch(shard: shard(epoch: epoch), epoch: epoch, index: index, mosaic: mosaic ?? mosaicEnabled)
    }

    func makeBatch(shard: [(index: Int, position: Int)], epoch: Int, index: Int, mosaic: Bool) throws -> PairBatch {
        precondition(index >= 0 && index < batchesPerEpoch, "batch \(index) of \(batchesPerEpoch)")
        let start = index * options.batchSize, end = min(start + options.batchSize, shard.count)
        var samples: [PairSample] = [], files: [String] = [], sizes: [(height: Int, width: Int)] = []
        for (i, position) in shard[start..<end] {
            let pair = try loadPair(i)
            let sample: PairSample
            if options.mode == .train {
                var rng = RandomState(seed: Self.mix(options.seed, UInt64(truncatingIfNeeded: epoch), UInt64(position)))
                sample = try augmenter.sample(primary: pair, mosaic: mosaic, datasetCount: dataset.count, rng: &rng,
                                              partner: loadPair)
            } else {
                sample = augmenter.letterboxed(pair)
            }
            samples.append(sample)
            files.append(dataset.pairs[i].rgbPath)
            sizes.append((pair.originalHeight, pair.originalWidth))
        }
        return PairBatch.assemble(samples, files: files, originalSizes: sizes)
    }

    /// Starts the workers for `epoch` and returns the stream of its batches.
    public func epoch(_ epoch: Int) -> PairEpoch {
        PairEpoch(loader: self, epoch: epoch, mosaic: mosaicEnabled)
    }

    /// splitmix64 over the parts: independent seeds for (seed, epoch, position).
    static func mix(_ parts: UInt64...) -> UInt64 {
        var h: UInt64 = 0x9E37_79B9_7F4A_7C15
        for p in parts {
            h ^= p &+ 0x9E37_79B9_7F4A_7C15 &+ (h << 6) &+ (h >> 2)
            var z = h
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            h = z ^ (z >> 31)
        }
        return h
    }
}

/// The batches of one epoch, in order, prefetched by the loader's workers.
///
/// `next()` returns nil after the last batch and rethrows a worker's error (a file that became
/// unreadable). Dropping the stream (or `cancel()`) stops the workers.
public final class PairEpoch: @unchecked Sendable {
    public let epoch: Int
    /// Batches in this epoch.
    public let count: Int
    private let loader: PairLoader
    private let state: State

    final class State: @unchecked Sendable {
        let condition = NSCondition()
        var ready: [Int: Result<PairBatch, Error>] = [:]
        var consumed = 0
        var claimed = 0
        var cancelled = false
        var running = 0
    }

    init(loader: PairLoader, epoch: Int, mosaic: Bool) {
        self.loader = loader
        self.epoch = epoch
        self.count = loader.batchesPerEpoch
        self.state = State()
        let order = loader.shard(epoch: epoch)
        self.order = order
        self.mosaic = mosaic
        let workers = loader.options.workers
        if workers == 0 { return }
        let capacity = workers * loader.options.prefetch
        let total = count, state = self.state
        state.running = workers
        for w in 0..<workers {
            let thread = Thread {
                Self.work(loader: loader, state: state, order: order, epoch: epoch, mosaic: mosaic,
                          total: total, capacity: capacity)
            }
            thread.name = "PairLoader worker \(w)"
            thread.start()
        }
    }

    private let order: [(index: Int, position: Int)]
    private let mosaic: Bool

    private static func work(loader: PairLoader, state: State, order: [(index: Int, position: Int)], epoch: Int, mosaic: Bool,
                             total: Int, capacity: Int) {
        while true {
            state.condition.lock()
            while !state.cancelled && state.claimed < total && state.claimed >= state.consumed + capacity {
                state.condition.wait()
            }
            if state.cancelled || state.claimed >= total {
                state.running -= 1
                state.condition.broadcast()
                state.condition.unlock()
                return
            }
            let index = state.claimed
            state.claimed += 1
            state.condition.unlock()
            let result = Result { try loader.makeBatch(shard: order, epoch: epoch, index: index, mosaic: mosaic) }
            state.condition.lock()
            state.ready[index] = result
            state.condition.broadcast()
            state.condition.unlock()
        }
    }

    /// The next batch, waiting for a worker when it is not ready (the wait is added to the
    /// loader's `waitSeconds`); nil after the last batch.
    public func next() throws -> PairBatch? {
        let t0 = DispatchTime.now().uptimeNanoseconds
        defer { loader.addWait(Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9) }
        if loader.options.workers == 0 {
            state.condition.lock()
            let index = state.consumed
            state.consumed += 1
            state.condition.unlock()
            if index >= count { return nil }
            return try loader.makeBatch(shard: order, epoch: epoch, index: index, mosaic: mosaic)
        }
        state.condition.lock()
        let index = state.consumed
        if index >= count || state.cancelled {
            state.condition.unlock()
            return nil
        }
        while state.ready[index] == nil && !state.cancelled { state.condition.wait() }
        let result = state.ready.removeValue(forKey: index)
        state.consumed += 1
        state.condition.broadcast()
        state.condition.unlock()
        switch result {
        case .success(let batch): return batch
        case .failure(let error):
            cancel()
            throw error
        case nil: return nil
        }
    }

    /// Stops the workers and waits for them to exit.
    public func cancel() {
        state.condition.lock()
        state.cancelled = true
        state.condition.broadcast()
        while state.running > 0 { state.condition.wait() }
        state.ready.removeAll()
        state.condition.unlock()
    }

    deinit { cancel() }
}
