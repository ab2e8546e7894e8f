import Foundation
import Testing
import XCTest
@testable import TensorCore

/// The pool's bookkeeping as a value: which blocks `collect()` gives back and which stay.
@Suite struct PoolCacheTests {
    let mb = 1 << 20

    /// `cache.put` (a mutating call cannot sit inside `#expect`).
    static func put(_ cache: inout PoolCache, _ address: UInt, size: Int) -> Bool { cache.put(address, size: size) }

    @Test func blocksTakenEveryRoundStay() {
        var cache = PoolCache(limit: 1 << 40)
        var addresses: [UInt] = [0x10000, 0x20000, 0x30000]
        for a in addresses { #expect(Self.put(&cache, a, size: mb)) }
        for _ in 0..<5 {
            let none = cache.collect(); #expect(none.isEmpty)
            // A step: takes all three (the most recently freed first) and frees them again.
            let taken = (0..<3).compactMap { _ in cache.take(mb) }
            #expect(Set(taken) == Set(addresses))
            let more = cache.take(mb); #expect(more == nil)
            for a in taken.reversed() { #expect(Self.put(&cache, a, size: mb)) }
            addresses = taken
        }
        #expect(cache.cachedBytes == 3 * mb)
    }

    @Test func idleBlocksLeaveAfterOneWholeRound() {
        var cache = PoolCache(limit: 1 << 40)
        #expect(Self.put(&cache, 0xA000, size: mb))
        #expect(Self.put(&cache, 0xB000, size: 2 * mb))
        // Cached during this round: kept at its end.
        let none = cache.collect(); #expect(none.isEmpty)
        // The next round takes only the 2 MiB block and frees it again; the 1 MiB one stayed idle.
        let b = cache.take(2 * mb)
        #expect(b == 0xB000)
        #expect(Self.put(&cache, 0xB000, size: 2 * mb))
        let first = cache.collect(); #expect(first == [PoolCache.Block(address: 0xA000, size: mb)])
        #expect(cache.cachedBytes == 2 * mb)
        // Not taken in the round after: it goes too.
        let second = cache.collect(); #expect(second == [PoolCache.Block(address: 0xB000, size: 2 * mb)])
        #expect(cache.cachedBytes == 0)
        let gone = cache.take(2 * mb); #expect(gone == nil)
    }

    @Test func onlyTheSurplusOfASizeLeaves() {
        // Four blocks of a size cached, a round that takes two: the two idle ones (the oldest) leave.
        var cache = PoolCache(limit: 1 << 40)
        for a in [UInt(1), 2, 3, 4] { #expect(Self.put(&cache, a << 20, size: mb)) }
        _ = cache.collect()
        let t1 = cache.take(mb), t2 = cache.take(mb)
        #expect(t1 == 4 << 20 && t2 == 3 << 20)
        let back3 = cache.put(3 << 20, size: mb), back4 = cache.put(4 << 20, size: mb); #expect(back3 && back4)
        let gone = cache.collect()
        #expect(Set(gone.map(\.address)) == [1 << 20, 2 << 20])
        #expect(cache.cachedBytes == 2 * mb)
    }

    @Test func aSomewhatLargerBlockServesWhenNoneOfTheSizeIsCached() {
        var cache = PoolCache(limit: 1 << 40)
        for (a, size) in [(UInt(0x1000), 3 * mb), (0x2000, 5 * mb), (0x3000, 4 * mb), (0x4000, 2 * mb)] {
            #expect(Self.put(&cache, a, size: size))
        }
        // The exact size first, then the smallest larger size within the bound; nothing past it.
        let exact = cache.take(2 * mb, upTo: 3 * mb); #expect(exact == PoolCache.Block(address: 0x4000, size: 2 * mb))
        let larger = cache.take(2 * mb, upTo: 3 * mb); #expect(larger == PoolCache.Block(address: 0x1000, size: 3 * mb))
        let none = cache.take(2 * mb, upTo: 3 * mb); #expect(none == nil, "4 and 5 MiB blocks lie past the bound")
        let next = cache.take(3 * mb, upTo: 5 * mb); #expect(next == PoolCache.Block(address: 0x3000, size: 4 * mb))
        #expect(cache.cachedBytes == 5 * mb)
        // A block goes back under its own size, whatever it was taken for.
        #expect(Self.put(&cache, 0x1000, size: 3 * mb))
        let again = cache.take(3 * mb); #expect(again == 0x1000)
        let rest = cache.trim(keeping: 0); #expect(rest == [PoolCache.Block(address: 0x2000, size: 5 * mb)])
        #expect(cache.cachedBytes == 0)
    }

    @Test func limitAndTrim() {
        var cache = PoolCache(limit: 3 * mb)
        #expect(Self.put(&cache, 0x1000, size: mb))
        #expect(Self.put(&cache, 0x2000, size: 2 * mb))
        let refused = !cache.put(0x3000, size: mb); #expect(refused, "a block past the limit is not cached")
        #expect(cache.cachedBytes == 3 * mb)
        // Largest first.
        let big = cache.trim(keeping: mb); #expect(big == [PoolCache.Block(address: 0x2000, size: 2 * mb)])
        let small = cache.trim(keeping: 0); #expect(small == [PoolCache.Block(address: 0x1000, size: mb)])
        #expect(cache.cachedBytes == 0)
    }
}

/// The pool as a training loop uses it: with `collect()` after every step, the steady state maps
/// no fresh pages; a pool that caches nothing maps the step's large blocks anew every time.
/// Measured as this thread's minor page faults (a one-thread context on the packed GEMM, so every
/// fault of the step happens here, whatever other tests do meanwhile).
final class BufferPoolFaultTests: XCTestCase {
    static func threadMinorFaults() -> Int {
        var u = rusage()
        getrusage(__rusage_who_t(1), &u)   // RUSAGE_THREAD
        return Int(u.ru_minflt)
    }

    func testSteadyStepsFaultNoFreshPages() {
        let ctx = ComputeContext(threads: 1)
        ctx.gemm = .packed
        var rng = RandomState(seed: 3)
        let w1 = Tensor.kaimingUniform([16, 3, 3, 3], rng: &rng)
        let w2 = Tensor.kaimingUniform([16, 16, 3, 3], rng: &rng)
        let g = Tensor(repeating: 1, shape: [16]), b = Tensor(zeros: [16])
        let stats = BatchNormStats(channels: 16)
        for p in [w1, w2, g, b] { p.requiresGrad = true }
        // Activations of 2 x 16 x 96 x 96 floats (1.1 MiB: the pool maps such blocks from the kernel
        // itself and unmaps what it does not cache).
        let x = Tensor.normal([2, 3, 192, 192], rng: &rng)
        func step() {
            let a = Tensor.batchNorm2d(Tensor.conv2d(x, weight: w1, stride: 2, padding: 1), weight: g, bias: b,
                                       stats: stats, training: true, silu: true)
            Tensor.conv2d(a, weight: w2, padding: 1).silu().square().mean().backward()
            for p in [w1, w2, g, b] { p.zeroGrad() }
            BufferPool.collect()
        }
        func faultsPerStep(steps: Int) -> Double {
            for _ in 0..<2 { step() }
            let f0 = Self.threadMinorFaults()
            for _ in 0..<steps { step() }
            return Double(Self.threadMinorFaults() - f0) / Double(steps)
        }
        let limit = BufferPool.limitBytes
        defer { BufferPool.limitBytes = limit }
        let (pooled, unpooled) = ctx.run { () -> (Double, Double) in
            let pooled = faultsPerStep(steps: 5)
            BufferPool.limitBytes = 0
            let unpooled = faultsPerStep(steps: 5)
            return (pooled, unpooled)
        }
        print("minor faults a step: collected pool \(pooled), uncached \(unpooled)")
        // A step's pooled blocks hold several MiB: over a thousand 4 KiB pages when mapped anew.
        XCTAssertGreaterThan(unpooled, 1000, "without caching, each step maps its blocks again (\(unpooled) faults a step)")
        XCTAssertLessThan(pooled, unpooled / 20, "collected pool: \(pooled) faults a step, uncached: \(unpooled)")
    }
}
