import CKernels
import Foundation
import Synchronization

/// Bytes held by live `Buffer`s and `HalfBuffer`s, for the memory tests and benchmarks.
public enum MemoryStats {
    static let live = Atomic<Int>(0)
    static let peak = Atomic<Int>(0)

    /// Bytes currently allocated by tensor storage.
    public static var allocatedBytes: Int { live.load(ordering: .relaxed) }
    /// Highest `allocatedBytes` since the last `resetPeak()`.
    public static var peakBytes: Int { peak.load(ordering: .relaxed) }
    /// Sets the peak to the current allocation.
    public static func resetPeak() { peak.store(live.load(ordering: .relaxed), ordering: .relaxed) }

    static func add(_ bytes: Int) {
        let now = live.add(bytes, ordering: .relaxed).newValue
        var p = peak.load(ordering: .relaxed)
        while now > p {
            let (exchanged, original) = peak.compareExchange(expected: p, desired: now, ordering: .relaxed)
            if exchanged { break }
            p = original
        }
    }

    static func sub(_ bytes: Int) { live.subtract(bytes, ordering: .relaxed) }

    /// Resident set size of this process in bytes (Linux `/proc/self/statm`), or 0 when unknown.
    public static func residentBytes() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }
}

/// A cache of large freed blocks keyed by their size (rounded up to 4 KiB), shared by the
/// process like the C allocator beneath it (every access is under its lock).
///
/// A training step allocates the same activation sizes every time; reusing the blocks avoids
/// re-faulting fresh pages from the kernel each step (measured: a bounded pool that unmapped what
/// backward freed cost a 320 px step 25-35 % in page faults) and the RSS creep of the C
/// allocator's heuristics. Blocks below 64 KiB go to malloc directly. What stays cached is
/// decided by use, not by a size budget: `collect()` (the trainer calls it after every
/// forward/backward) returns each block that was already cached at the previous `collect()` and
/// has not been taken since, so the blocks a step takes again stay, and sizes it no longer asks
/// for (another batch size, validation) leave after one more step. `limitBytes` is a ceiling on
/// top (by default 1/8 of physical memory, at most 4 GiB); `trim` returns everything (the trainer
/// trims after validation and at epoch ends).
public enum BufferPool {
    static let state = Mutex(PoolCache(limit: min(4 << 30, Int(ProcessInfo.processInfo.physicalMemory / 8))))
    static let minPooled = 64 << 10

    /// Most bytes kept in the cache; blocks freed beyond it go back to the system.
    public static var limitBytes: Int {
        get { state.withLock { $0.limit } }
        set { state.withLock { $0.limit = max(0, newValue) }; if cachedBytes > newValue { trim(keeping: newValue) } }
    }

    static func roundedSize(_ bytes: Int) -> Int { (bytes + 4095) & ~4095 }

    /// How much larger than asked a cached block may be and still be handed out (when no block of
    /// the exact size is cached), as a fraction of the size asked for.
    static let reuseSlack = 0.5

    /// Storage for `bytes` and the size of the block behind it (what `release` is given back).
    static func allocate(_ bytes: Int) -> (pointer: UnsafeMutableRawPointer, block: Int) {
        if bytes >= minPooled {
            let size = roundedSize(bytes)
            let reused = state.withLock { $0.take(size, upTo: roundedSize(size + Int(Double(size) * reuseSlack))) }
            if let reused, let p = UnsafeMutableRawPointer(bitPattern: reused.address) { return (p, reused.size) }
            return (systemAllocate(size), size)
        }
        return (systemAllocate(max(bytes, 1)), bytes)
    }

    /// Returns storage of `block` bytes (as `allocate` said) to the cache or the system.
    static func release(_ p: UnsafeMutableRawPointer, block: Int) {
        if block >= minPooled {
            if state.withLock({ $0.put(UInt(bitPattern: p), size: block) }) { return }
            systemFree(p, block)
            return
        }
        free(p)
    }

    /// Blocks from this size on are mapped from the kernel directly and unmapped when the pool lets
    /// them go, so their pages leave the process (the C allocator keeps freed memory and moves its
    /// own mmap threshold up after large frees, which grows the resident size after the first epoch).
    static let mappedFrom = 1 << 20

    /// glibc raises its mmap threshold after the first large free (up to 32 MiB) and from then
    /// on keeps freed large blocks (decoded images, checkpoint bytes) in the heap: the resident
    /// size steps up after the first epoch and stays. Fixing the threshold at glibc's default
    /// 128 KiB (which switches the adjustment off) sends such blocks back to the kernel. Set once,
    /// before the first allocation of tensor storage.
    static let allocatorConfigured: Bool = {
        df_configure_allocator()
        return true
    }()

    static func systemAllocate(_ bytes: Int) -> UnsafeMutableRawPointer {
        _ = allocatorConfigured
        if bytes >= mappedFrom {
            let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
            precondition(p != MAP_FAILED && p != nil, "out of memory mapping \(bytes) bytes")
            return p!
        }
        var raw: UnsafeMutableRawPointer?
        let rc = posix_memalign(&raw, 64, bytes)
        precondition(rc == 0 && raw != nil, "out of memory allocating \(bytes) bytes")
        return raw!
    }

    /// Returns a pooled-size block (`size` already rounded) to the system.
    static func systemFree(_ p: UnsafeMutableRawPointer, _ size: Int) {
        if size >= mappedFrom { munmap(p, size) } else { free(p) }
    }

    static func systemFree(_ blocks: [PoolCache.Block]) {
        for b in blocks { if let p = UnsafeMutableRawPointer(bitPattern: b.address) { systemFree(p, b.size) } }
    }

    /// Bytes held in the cache (not in use by any tensor).
    public static var cachedBytes: Int { state.withLock { $0.cachedBytes } }

    /// Returns cached blocks to the system until at most `keeping` bytes stay cached (largest
    /// blocks first).
    public static func trim(keeping: Int = 0) {
        systemFree(state.withLock { $0.trim(keeping: keeping) })
    }

    /// Returns to the system every block that was cached at the previous call and has not been
    /// taken since (see `PoolCache.collect`). Called once per repeating unit of work (a training
    /// iteration), so the sizes every iteration takes are never unmapped. Returns the bytes released.
    @discardableResult
    public static func collect() -> Int {
        let blocks = state.withLock { $0.collect() }
        systemFree(blocks)
        return blocks.reduce(0) { $0 + $1.size }
    }
}

/// What `BufferPool` caches, as a value: freed blocks by size, the most recently freed last (taken
/// first), each marked with the `collect()` round it was cached in. Only bookkeeping; the caller
/// maps and unmaps.
struct PoolCache {
    struct Block: Equatable {
        var address: UInt
        var size: Int
    }

    private var free: [Int: [(address: UInt, round: Int)]] = [:]
    private(set) var cachedBytes = 0
    /// Most bytes cached; `put` refuses blocks beyond it.
    var limit: Int
    /// `collect()` calls so far.
    private(set) var round = 0

    init(limit: Int) { self.limit = limit }

    /// A cached block of exactly `size` bytes (the most recently freed), or nil.
    mutating func take(_ size: Int) -> UInt? { take(size, upTo: size)?.address }

    /// A cached block of `size` bytes, else the smallest cached size up to `upTo` (the most recently
    /// freed block of that size), or nil.
    mutating func take(_ size: Int, upTo: Int) -> Block? {
        var i = lowerBound(size)
        while i < sizes.count, sizes[i] <= upTo {
            let s = sizes[i]
            if let b = free[s]?.popLast() {
                cachedBytes -= s
                if free[s]!.isEmpty { free[s] = nil; sizes.remove(at: i) }
                return Block(address: b.address, size: s)
            }
            i += 1
        }
        return nil
    }

    /// Caches a freed block; false (not cached) when it would pass `limit`.
    mutating func put(_ address: UInt, size: Int) -> Bool {
        guard cachedBytes + size <= limit else { return false }
        if free[size] == nil { sizes.insert(size, at: lowerBound(size)) }
        free[size, default: []].append((address, round))
        cachedBytes += size
        return true
    }

    /// The index of the first cached size >= size.
    private func lowerBound(_ size: Int) -> Int {
        var lo = 0, hi = sizes.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if sizes[mid] < size { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// The sizes that have cached blocks, ascending.
    private var sizes: [Int] = []

    /// The blocks to give back: every block cached before the previous `collect()` and not taken
    /// since, i.e. idle for a whole round. Starts a new round.
    mutating func collect() -> [Block] {
        var out: [Block] = []
        for (size, list) in free {
            // Blocks are taken from the end, so the idle ones (the oldest rounds) sit at the front.
            let idle = list.prefix { $0.round < round }.count
            guard idle > 0 else { continue }
            for b in list[..<idle] { out.append(Block(address: b.address, size: size)) }
            cachedBytes -= idle * size
            free[size] = idle == list.count ? nil : Array(list[idle...])
        }
        sizes.removeAll { free[$0] == nil }
        round += 1
        return out
    }

    /// The blocks to give back so that at most `keeping` bytes stay cached, largest sizes first.
    mutating func trim(keeping: Int) -> [Block] {
        var out: [Block] = []
        for size in free.keys.sorted(by: >) where cachedBytes > keeping {
            while cachedBytes > keeping, let b = free[size]?.popLast() {
                out.append(Block(address: b.address, size: size))
                cachedBytes -= size
            }
            if free[size]?.isEmpty == true { free[size] = nil }
        }
        sizes.removeAll { free[$0] == nil }
        return out
    }
}

/// Contiguous Float32 storage, 64-byte aligned (pooled, see `BufferPool`). Freed when the last
/// reference goes.
public final class Buffer: @unchecked Sendable {
    public let count: Int
    public let ptr: UnsafeMutablePointer<Float>
    /// Bytes of the block behind `ptr` (the pool may hand out a somewhat larger cached block).
    let block: Int

    /// Uninitialised storage for `count` floats.
    public init(count: Int) {
        precondition(count >= 0, "Buffer count must be >= 0, got \(count)")
        self.count = count
        let (p, block) = BufferPool.allocate(count * 4)
        ptr = p.bindMemory(to: Float.self, capacity: max(count, 1))
        self.block = block
        MemoryStats.add(count * 4)
    }

    /// Storage filled with `value` (large buffers on the context's threads).
    public convenience init(count: Int, repeating value: Float) {
        self.init(count: count)
        let p = ptr
        Parallel.chunks(count, grain: 1 << 18) { r in (p + r.lowerBound).update(repeating: value, count: r.count) }
    }

    /// A copy of `array`.
    public convenience init(_ array: [Float]) {
        self.init(count: array.count)
        array.withUnsafeBufferPointer { src in
            if let base = src.baseAddress { ptr.update(from: base, count: array.count) }
        }
    }

    deinit {
        MemoryStats.sub(count * 4)
        BufferPool.release(UnsafeMutableRawPointer(ptr), block: block)
    }

    public var bytes: Int { count * 4 }
    public var array: [Float] { Array(UnsafeBufferPointer(start: ptr, count: count)) }

    public func zero() { ptr.update(repeating: 0, count: count) }

    /// A new buffer with the same contents.
    public func copy() -> Buffer {
        let b = Buffer(count: count)
        b.ptr.update(from: ptr, count: count)
        return b
    }
}

/// Contiguous IEEE half storage (raw binary16 bits). See `Half` for conversions.
public final class HalfBuffer: @unchecked Sendable {
    public let count: Int
    public let ptr: UnsafeMutablePointer<UInt16>
    /// Bytes of the block behind `ptr` (see `Buffer.block`).
    let block: Int

    public init(count: Int) {
        self.count = count
        let (p, block) = BufferPool.allocate(count * 2)
        ptr = p.bindMemory(to: UInt16.self, capacity: max(count, 1))
        self.block = block
        MemoryStats.add(count * 2)
    }

    deinit {
        MemoryStats.sub(count * 2)
        BufferPool.release(UnsafeMutableRawPointer(ptr), block: block)
    }

    public var bytes: Int { count * 2 }
}
