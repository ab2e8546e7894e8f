import Foundation
import Testing
import _TestSupport
@testable import TensorCore

/// The convolutions on oneDNN (`ComputeContext.gemm = .onednn`, and the bfloat16 autocast
/// convolutions) against the direct-loop reference: Float32 within 1e-5 of the largest value;
/// bfloat16 against the reference on bfloat16-rounded operands, its result rounded to bfloat16,
/// within one bfloat16 unit in the last place of each value plus 1e-5 of the largest (oneDNN sums
/// the exact products in its own order, then rounds).
@Suite(.serialized) struct OneDNNConvTests {
    static let geometries = ConvKernelTests.geometries + [ConvGeometry(n: 2, c: 32, h: 12, w: 12, o: 48, k: 3, s: 1, p: 1),
                                                          ConvGeometry(n: 3, c: 64, h: 10, w: 10, o: 32, k: 1, s: 1, p: 0)]

    static func random(_ n: Int, seed: UInt64) -> [Float] {
        var rng = RandomState(seed: seed)
        return (0..<n).map { _ in rng.uniform(-1, 1) }
    }

    static func bf16(_ v: [Float]) -> [Float] {
        var r = v
        r.withUnsafeMutableBufferPointer { Kernels.portable.table.pointee.round_bf16($0.baseAddress!, $0.count) }
        return r
    }

    /// Largest |a - b| in units of (one bfloat16 ulp of b + 1e-5 of max |b|); <= 1 passes.
    static func bf16Error(_ a: [Float], _ b: [Float]) -> Double {
        let scale = Double(b.map(abs).max() ?? 0)
        var worst = 0.0
        for (x, y) in zip(a, b) {
            let m = Double(abs(y))
            let ulp = m == 0 ? 0 : pow(2, floor(log2(m)) - 7)
            worst = max(worst, Double(abs(x - y)) / (ulp + 1e-5 * scale + 1e-30))
        }
        return worst
    }

    /// Float32; bfloat16 on oneDNN's own route here; bfloat16 on its Float32 primitives (the route
    /// where it has no bfloat16 convolutions, forced on a CPU where it has them).
    enum Mode: CaseIterable { case fp32, bf16, bf16OnF32 }

    /// `OneDNN.convolutionTime` (what `bench train` counts as convolution time) counts each pass's
    /// primitive and the time its execution took (other tests may run convolutions meanwhile).
    @Test func convolutionTimeCountsEveryPass() throws {
        try #require(OneDNN.available, "oneDNN (libdnnl) is installed by tools/install-deps.sh")
        let g = ConvGeometry(n: 2, c: 32, h: 12, w: 12, o: 48, k: 3, s: 1, p: 1)
        let x = OneDNNConvTests.random(g.n * g.c * g.h * g.w, seed: 11), w = OneDNNConvTests.random(g.o * g.kdim, seed: 12)
        let gy = OneDNNConvTests.random(g.n * g.o * g.pixels, seed: 13)
        var y = [Float](repeating: 0, count: gy.count), gw = [Float](repeating: 0, count: w.count), gx = [Float](repeating: 0, count: x.count)
        let ctx = ComputeContext(threads: 2)
        ctx.gemm = .onednn
        let before = OneDNN.convolutionTime
        let weightsBefore = OneDNN.reorderTime(weights: true), activationsBefore = OneDNN.reorderTime(weights: false)
        ctx.run {
            Tensor.convForward(g, x: x, w: w, y: &y)
            Tensor.convWeightGrad(g, x: x, gy: gy, gw: &gw)
            Tensor.convInputGrad(g, w: w, gy: gy, gx: &gx, fresh: true)
        }
        let after = OneDNN.convolutionTime
        #expect(after.calls - before.calls >= 3)
        #expect(after.seconds > before.seconds)
        // The reorders around them, counted apart: plain NCHW x and y go to and from the blocked
        // layouts (activations), the OIHW weights and weight gradient likewise (weights).
        let weights = OneDNN.reorderTime(weights: true), activations = OneDNN.reorderTime(weights: false)
        #expect(weights.calls > weightsBefore.calls && weights.seconds > weightsBefore.seconds)
        #expect(activations.calls > activationsBefore.calls && activations.seconds > activationsBefore.seconds)
    }

    @Test(arguments: 0..<geometries.count, Mode.allCases)
    func passesMatchTheReference(_ gi: Int, mode: Mode) throws {
        let bf16 = mode != .fp32
        try #require(OneDNN.available, "oneDNN (libdnnl) is installed by tools/install-deps.sh")
        let g = OneDNNConvTests.geometries[gi]
        let x = OneDNNConvTests.random(g.n * g.c * g.h * g.w, seed: 11), w = OneDNNConvTests.random(g.o * g.kdim, seed: 12)
        let gy = OneDNNConvTests.random(g.n * g.o * g.pixels, seed: 13)
        let ctx = ComputeContext(threads: 2)
        ctx.gemm = .onednn
        ctx.precision = bf16 ? .bf16 : .fp32
        ctx.bf16Primitives = mode != .bf16OnF32
        #expect(OneDNN.route(ctx, bf16: bf16) == (mode == .fp32 ? .f32 : OneDNN.nativeBF16 && mode == .bf16 ? .bf16 : .bf16OnF32))
        var y = [Float](repeating: .nan, count: gy.count), gw = [Float](repeating: 0, count: w.count)
        var gx = [Float](repeating: .nan, count: x.count)
        var gxAcc = OneDNNConvTests.random(x.count, seed: 14)
        let before = gxAcc
        ctx.run {
            Tensor.convForward(g, x: x, w: w, y: &y)
            Tensor.convWeightGrad(g, x: x, gy: gy, gw: &gw)
            gx = [Float](repeating: 0, count: x.count)
            Tensor.convInputGrad(g, w: w, gy: gy, gx: &gx, fresh: false)
            Tensor.convInputGrad(g, w: w, gy: gy, gx: &gxAcc, fresh: false)
        }
        // The accumulating input gradient adds the same values.
        #expect(maxMixedError(zip(gxAcc, before).map { $0 - $1 }, gx) < 1e-5)
        // Assigned into uninitialised storage (NaNs here), every element is written: the same bits
        // as added to zeros. The same call on the packed GEMM (which folds into zeros itself) agrees.
        var gxFresh = [Float](repeating: .nan, count: x.count), gxPacked = gxFresh
        ctx.run { Tensor.convInputGrad(g, w: w, gy: gy, gx: &gxFresh, fresh: true) }
        #expect(gxFresh == gx, "assigned input gradient \(g)")
        if !bf16 {
            let packed = ComputeContext(threads: 2)
            packed.gemm = .packed
            packed.run { Tensor.convInputGrad(g, w: w, gy: gy, gx: &gxPacked, fresh: true) }
            #expect(maxMixedError(gxPacked, gx) < 1e-5, "assigned input gradient, packed \(g)")
        }
        // The output gradient reordered once for both backward passes (kept by the weight gradient,
        // used by the input gradient) gives the same bits; a kept copy of another gradient is not used.
        let gy2 = OneDNNConvTests.random(gy.count, seed: 15)
        var gw2 = [Float](repeating: 0, count: w.count), gxShared = [Float](repeating: 0, count: x.count)
        var gxOther = [Float](repeating: 0, count: x.count), gxOtherAlone = [Float](repeating: 0, count: x.count)
        ctx.run {
            gw2.withUnsafeMutableBufferPointer { Conv.weightGrad(ctx, g, x: x, gy: gy, gw: $0.baseAddress!, mode: ctx.precision, keepGy: true) }
            gxShared.withUnsafeMutableBufferPointer { Conv.inputGrad(ctx, g, w: w, gy: gy, gx: $0.baseAddress!, fresh: false, bf16: bf16, reuseGy: true) }
            gw2.withUnsafeMutableBufferPointer { Conv.weightGrad(ctx, g, x: x, gy: gy, gw: $0.baseAddress!, mode: ctx.precision, keepGy: true) }
            gxOther.withUnsafeMutableBufferPointer { Conv.inputGrad(ctx, g, w: w, gy: gy2, gx: $0.baseAddress!, fresh: false, bf16: bf16, reuseGy: true) }
            gxOtherAlone.withUnsafeMutableBufferPointer { Conv.inputGrad(ctx, g, w: w, gy: gy2, gx: $0.baseAddress!, fresh: false, bf16: bf16) }
        }
        #expect(gxShared == gx, "input gradient from the kept output gradient \(g)")
        #expect(gxOther == gxOtherAlone, "a kept copy of another output gradient was used \(g)")
        if bf16 {
            let (xr, wr, gyr) = (OneDNNConvTests.bf16(x), OneDNNConvTests.bf16(w), OneDNNConvTests.bf16(gy))
            let ref = OneDNNConvTests.bf16(Tensor.conv2dNaive(g, x: xr, w: wr, bias: nil))
            let (dx, dw) = Tensor.conv2dNaiveGrads(g, x: xr, w: wr, gy: gyr)
            let errors = [OneDNNConvTests.bf16Error(y, ref), OneDNNConvTests.bf16Error(gx, OneDNNConvTests.bf16(dx)),
                          OneDNNConvTests.bf16Error(gw, OneDNNConvTests.bf16(dw))]
            print("oneDNN bf16\(mode == .bf16OnF32 ? " on Float32 primitives" : "") \(g.n)x\(g.c)x\(g.h)x\(g.w) o\(g.o) k\(g.k) s\(g.s) (\(OneDNN.isa)): forward, input and weight gradient " +
                  "within \(errors.map { String(format: "%.2f", $0) }.joined(separator: ", ")) of the bound")
            for (e, pass) in zip(errors, ["forward", "input gradient", "weight gradient"]) { #expect(e <= 1, "\(pass) \(g)") }
        } else {
            let ref = Tensor.conv2dNaive(g, x: x, w: w, bias: nil)
            let (dx, dw) = Tensor.conv2dNaiveGrads(g, x: x, w: w, gy: gy)
            #expect(maxMixedError(y, ref) < 1e-5, "forward \(g)")
            #expect(maxMixedError(gx, dx) < 1e-5, "input gradient \(g)")
            #expect(maxMixedError(gw, dw) < 1e-5, "weight gradient \(g)")
        }
    }

    /// A primitive run from another thread than the one that created it gets its scratchpad (ours,
    /// not oneDNN's per-thread global one, which once handed a gemm backward-data convolution on
    /// AVX2 no memory on a second thread: a crash in about half the runs): the same bits from
    /// several fresh threads, for a convolution whose passes need scratch memory (5x5, stride 2).
    @Test func samePassesFromAnyThread() throws {
        try #require(OneDNN.available, "oneDNN (libdnnl) is installed by tools/install-deps.sh")
        let g = ConvGeometry(n: 2, c: 5, h: 13, w: 10, o: 6, k: 5, s: 2, p: 2)
        let x = OneDNNConvTests.random(g.n * g.c * g.h * g.w, seed: 61), w = OneDNNConvTests.random(g.o * g.kdim, seed: 62)
        let gy = OneDNNConvTests.random(g.n * g.o * g.pixels, seed: 63)
        let passes: @Sendable () -> [[Float]] = {
            let ctx = ComputeContext(threads: 2)
            ctx.gemm = .onednn
            var y = [Float](repeating: 0, count: gy.count), gw = [Float](repeating: 0, count: w.count)
            var gx = [Float](repeating: .nan, count: x.count)
            ctx.run {
                Tensor.convForward(g, x: x, w: w, y: &y)
                Tensor.convWeightGrad(g, x: x, gy: gy, gw: &gw)
                Tensor.convInputGrad(g, w: w, gy: gy, gx: &gx, fresh: true)
            }
            return [y, gw, gx]
        }
        let here = passes()
        final class Result: @unchecked Sendable { var passes: [[Float]] = [] }
        for _ in 0..<4 {
            let done = DispatchSemaphore(value: 0), there = Result()
            let t = Thread { there.passes = passes(); done.signal() }
            t.start()
            done.wait()
            #expect(there.passes.map { $0.map(\.bitPattern) } == here.map { $0.map(\.bitPattern) })
        }
    }

    /// On oneDNN a convolution keeps its input for the weight gradient in oneDNN's layout, from the
    /// forward's own reorder, instead of x itself (FP32) or a 16-bit NCHW copy (bf16): the saved bytes
    /// stay those of x (of its 16-bit copy), and the weight and input gradients are the bits the same
    /// passes give from x (from the 16-bit copy).
    @Test(arguments: [false, true])
    func keptInputGivesTheSameGradients(bf16: Bool) throws {
        try #require(OneDNN.available, "oneDNN (libdnnl) is installed by tools/install-deps.sh")
        let g = ConvGeometry(n: 2, c: 32, h: 12, w: 12, o: 48, k: 3, s: 1, p: 1)
        let ctx = ComputeContext(threads: 2)
        ctx.gemm = .onednn
        let kept = OneDNN.keepBytes(g, bf16: bf16)
        print("oneDNN keeps a \(bf16 ? "bf16" : "FP32") convolution's input in its layout: \(kept) bytes (\(OneDNN.isa))")
        var rng = RandomState(seed: 21)
        let x = Tensor.uniform([g.n, g.c, g.h, g.w], lo: -1, hi: 1, rng: &rng)
        let w = Tensor.uniform([g.o, g.c, g.k, g.k], lo: -1, hi: 1, rng: &rng)
        x.requiresGrad = true
        w.requiresGrad = true
        let gy = OneDNNConvTests.bf16(OneDNNConvTests.random(g.n * g.o * g.pixels, seed: 22))
        let bytes = ctx.run {
            Autocast.with(bf16 ? .bf16 : .fp32) {
                let y = Tensor.conv2d(x, weight: w, stride: g.s, padding: g.p)
                let bytes = ComputeContext.current.saved.bytes
                (y * Tensor(gy, shape: y.shape)).sum().backward()
                return bytes
            }
        }
        #expect(bytes == x.count * (bf16 ? 2 : 4))
        let xr = bf16 ? OneDNNConvTests.bf16(x.array) : x.array, wv = w.array
        var gw = [Float](repeating: 0, count: w.count), gx = [Float](repeating: 0, count: x.count)
        ctx.run {
            gw.withUnsafeMutableBufferPointer { Conv.weightGrad(ctx, g, x: xr, gy: gy, gw: $0.baseAddress!, mode: bf16 ? .bf16 : .fp32) }
            gx.withUnsafeMutableBufferPointer { Conv.inputGrad(ctx, g, w: wv, gy: gy, gx: $0.baseAddress!, fresh: false, bf16: bf16) }
        }
        #expect(w.grad!.array == gw)
        #expect(x.grad!.array == gx)
        // The way back to Float32 NCHW (used when oneDNN refuses the weight pass): x's values as the
        // convolution used them.
        if kept > 0 {
            let copy = HalfBuffer(count: kept / 2)
            var y = [Float](repeating: 0, count: g.n * g.o * g.pixels), back = [Float](repeating: .nan, count: x.count)
            let xv = x.array
            #expect(OneDNN.forward(ctx, g, x: xv, w: wv, y: &y, bf16: bf16, keepX: UnsafeMutableRawPointer(copy.ptr)))
            #expect(OneDNN.unkeep(g, bf16: bf16, kept: UnsafeRawPointer(copy.ptr), x: &back))
            #expect(back == xr)
        }
    }

    /// The bfloat16 autocast convolutions take oneDNN by default only where the CPU has AVX512_BF16
    /// and the kernels are native; portable kernels keep the packed twin.
    /// Inference with frozen weights keeps oneDNN's reordered copy of each convolution's weights:
    /// the same bits as the plain forward, the copy reused while the weights are the same storage,
    /// another tensor of the same shape not served from it, and nothing kept after the scope (weights
    /// changed afterwards are read again).
    @Test func frozenWeightsReuseTheirReorderedCopy() throws {
        try #require(OneDNN.available, "oneDNN (libdnnl) is installed by tools/install-deps.sh")
        var rng = RandomState(seed: 41)
        let x = Tensor.normal([1, 16, 12, 12], rng: &rng)
        let w1 = Tensor.normal([32, 16, 3, 3], std: 0.1, rng: &rng), w2 = Tensor.normal([32, 16, 3, 3], std: 0.1, rng: &rng)
        let ctx = ComputeContext(threads: 2)
        ctx.gemm = .onednn
        ctx.run {
            GradMode.noGrad {
                let plain1 = Tensor.conv2d(x, weight: w1, padding: 1).array, plain2 = Tensor.conv2d(x, weight: w2, padding: 1).array
                let before = OneDNN.weightCacheCounts
                let (a, b, c) = ctx.withFrozenWeights {
                    (Tensor.conv2d(x, weight: w1, padding: 1).array, Tensor.conv2d(x, weight: w1, padding: 1).array,
                     Tensor.conv2d(x, weight: w2, padding: 1).array)
                }
                let after = OneDNN.weightCacheCounts
                #expect(a == plain1 && b == plain1 && c == plain2)
                #expect(after.hits - before.hits == 1 && after.reorders - before.reorders == 2, "\(before) -> \(after)")
                // Changed after the scope: read again.
                for i in 0..<w1.count { w1.data[i] *= -1 }
                let changed = ctx.withFrozenWeights { Tensor.conv2d(x, weight: w1, padding: 1).array }
                #expect(changed == plain1.map { -$0 })
                #expect(!ctx.frozenWeights)
            }
        }
    }

    /// One parser for every `--gemm`: the tools take onednn or packed, the benchmarks also openblas.
    @Test func gemmFlag() throws {
        #expect(try GemmBackend(flag: "packed") == .packed)
        #expect(try GemmBackend(flag: "openblas", allowOpenBLAS: true) == .openblas)
        #expect(throws: GemmFlagError.self) { try GemmBackend(flag: "openblas") }
        func message(_ body: () throws -> GemmBackend) -> String {
            do { return "parsed as \(try body())" } catch { return "\(error)" }
        }
        #expect(message { try GemmBackend(flag: "bogus", allowOpenBLAS: true) } == "--gemm must be onednn, packed or openblas, got bogus")
        #expect(message { try GemmBackend(flag: "bogus") } == "--gemm must be onednn or packed, got bogus")
        if OneDNN.available { #expect(try GemmBackend(flag: "onednn") == .onednn) }
        else { #expect(throws: GemmFlagError.self) { try GemmBackend(flag: "onednn") } }
    }

    /// Where oneDNN has no bfloat16 convolutions (oneDNN 2.6 below AVX-512), `--gemm onednn` runs the
    /// bfloat16 autocast on its Float32 primitives; the packed GEMM keeps it unless the CPU and
    /// oneDNN both have bfloat16.
    @Test func routing() {
        print("oneDNN \(OneDNN.version) (\(OneDNN.isa)): bfloat16 convolutions \(OneDNN.nativeBF16 ? "native" : "on Float32 primitives")")
        if OneDNN.available { #expect(OneDNN.nativeBF16 == OneDNN.isa.hasPrefix("avx512")) }
        let ctx = ComputeContext(threads: 1)
        #expect(OneDNN.handles(ctx, bf16: false) == false)
        #expect(OneDNN.route(ctx, bf16: true) == (OneDNN.nativeBF16 && Kernels.cpuHasBF16 ? .bf16 : nil))
        ctx.kernels = .portable
        #expect(OneDNN.handles(ctx, bf16: true) == false)
        ctx.gemm = .openblas
        #expect(OneDNN.handles(ctx, bf16: false) == false)
        ctx.gemm = .onednn
        #expect(OneDNN.route(ctx, bf16: false) == (OneDNN.available ? .f32 : nil))
        #expect(OneDNN.route(ctx, bf16: true) == (!OneDNN.available ? nil : OneDNN.nativeBF16 ? .bf16 : .bf16OnF32))
    }
}
