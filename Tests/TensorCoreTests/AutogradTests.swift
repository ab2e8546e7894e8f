import CDNNL
import Testing
import _TestSupport
@testable import TensorCore

@Suite struct AutogradTests {
    @Test func tensorUsedTwiceAccumulates() {
        let x = Tensor([1, 2, 3], shape: [3])
        x.requiresGrad = true
        let y = x * x + x          // dy/dx = 2x + 1
        y.sum().backward()
        #expect(x.grad!.array == [3, 5, 7])
        // A second backward adds (gradient accumulation across micro-batches).
        (x * 2).sum().backward()
        #expect(x.grad!.array == [5, 7, 9])
        x.zeroGrad()
        #expect(x.grad == nil)
    }

    @Test func noGradRecordsNothing() {
        let x = Tensor([1, 2], shape: [2])
        x.requiresGrad = true
        let y = noGrad { (x * 3).exp() }
        #expect(!y.requiresGrad)
        #expect(GradMode.isEnabled)
    }

    @Test func detachStopsTheGradient() {
        let x = Tensor([1, 2], shape: [2])
        x.requiresGrad = true
        let y = (x * x.detached()).sum()   // d/dx = x (the detached factor is a constant)
        y.backward()
        #expect(x.grad!.array == [1, 2])
    }

    @Test func backwardReleasesIntermediatesAndSavedActivations() {
        var rng = RandomState(seed: 5)
        let w = Tensor.normal([8, 4, 3, 3], rng: &rng)
        w.requiresGrad = true
        let x = Tensor.normal([2, 4, 16, 16], rng: &rng)
        let ctx = ComputeContext.current
        weak var convOutput: Buffer?
        weak var siluOutput: Buffer?
        weak var rootNode: Node?
        do {
            let h = Tensor.conv2d(x, weight: w, stride: 1, padding: 1)
            let y = h.silu()
            convOutput = h.buffer
            siluOutput = y.buffer
            let loss = y.sum()
            rootNode = loss.node
            #expect(ctx.saved.bytes > 0)
            loss.backward()
            #expect(ctx.saved.bytes == 0)
        }
        // Nothing of the step survives it: the intermediate activations, the one SiLU saved and the
        // graph are gone; only the weight's gradient stays (tracked per object, not by process-wide
        // counters, so tests running beside this one cannot disturb it).
        #expect(convOutput == nil && siluOutput == nil && rootNode == nil)
        #expect(w.grad?.count == w.count)
    }

    @Test func halfActivationsHalveSavedBytesAndRoundGradients() {
        var rng = RandomState(seed: 6)
        let w = Tensor.normal([8, 4, 3, 3], rng: &rng)
        w.requiresGrad = true
        let w2 = Tensor.normal([8, 8, 3, 3], rng: &rng)
        let x = Tensor.normal([2, 4, 16, 16], rng: &rng)
        // A fresh context: a pooled thread's own may hold what an earlier test saved and never ran
        // backward on (and which GEMM it chose).
        let ctx = ComputeContext()
        func step(_ half: Bool) -> (Int, [Float]) {
            w.zeroGrad()
            return ctx.run { Autocast.with(half ? .fp16 : .fp32) {
                let h = Tensor.conv2d(x, weight: w, stride: 1, padding: 1).silu()
                let y = Tensor.conv2d(h, weight: w2, stride: 1, padding: 1)
                let bytes = ComputeContext.current.saved.bytes
                (y * 1e-3).sum().backward()
                return (bytes, w.grad!.array)
            } }
        }
        let (full, g32) = step(false)
        let (half, g16) = step(true)
        #expect(half * 2 == full, "saved bytes \(half) vs \(full)")
        #expect(g16 != g32)
        let scale = Double(g32.map { abs($0) }.max()!)
        #expect(maxRelativeError(g16, g32, floor: scale) < 1e-2, "\(g16.prefix(4)) vs \(g32.prefix(4))")
        // Half storage is unpacked into temporaries during backward: results must be repeatable
        // (a freed temporary reused by the allocator would make them vary).
        for _ in 0..<20 { #expect(step(true).1 == g16) }
    }

    @Test(arguments: [false, true])
    func parallelChunksCoverTheRangeOnce(openMPTeam: Bool) {
        let ctx = ComputeContext(threads: 3)
        ctx.openMPTeam = openMPTeam
        ctx.run {
            for n in [0, 1, 7, 1000, 100_003] {
                var hits = [Int](repeating: 0, count: n)
                hits.withUnsafeMutableBufferPointer { p in
                    let base = p.baseAddress
                    Parallel.chunks(n, grain: 3) { r in for i in r { base![i] += 1 } }
                }
                #expect(hits.allSatisfy { $0 == 1 })
            }
        }
    }

    /// Once libdnnl is loaded, parallel loops run on its OpenMP team (the same threads as its
    /// convolutions): every chunk on a team thread, the calling thread as number 0, each chunk a
    /// worker whose own loops run serially; with the option off, on libdispatch's threads.
    @Test func parallelLoopsShareOneDNNsTeam() throws {
        try #require(OneDNN.available, "oneDNN (libdnnl) is installed by tools/install-deps.sh")
        #expect(df_team_attached() == 1)
        for team in [true, false] {
            let ctx = ComputeContext(threads: 2)
            ctx.openMPTeam = team
            var teamThreads = [Int32](repeating: -2, count: 2), nested = [Int](repeating: 0, count: 2)
            ctx.run {
                teamThreads.withUnsafeMutableBufferPointer { t in
                    nested.withUnsafeMutableBufferPointer { w in
                        let tp = t.baseAddress!, wp = w.baseAddress!
                        Parallel.indexedChunks(2) { i, _ in
                            tp[i] = df_team_thread()
                            wp[i] = Parallel.threads
                        }
                    }
                }
            }
            #expect(nested == [1, 1], "loops inside a chunk run serially (team \(team))")
            if team { #expect(Set(teamThreads) == [0, 1], "chunks on team threads \(teamThreads)") }
            else { #expect(teamThreads == [0, 0], "libdispatch's threads are in no team \(teamThreads)") }
        }
    }
}
