import Foundation
import CKernels
import Testing
import _TestSupport
@testable import TensorCore

/// The im2col + sgemm convolution against the direct-loop reference, in both threading modes.
@Suite(.serialized) struct ConvKernelTests {
    static let geometries: [ConvGeometry] = [
        ConvGeometry(n: 1, c: 3, h: 11, w: 9, o: 5, k: 3, s: 1, p: 1),
        ConvGeometry(n: 4, c: 3, h: 16, w: 16, o: 8, k: 3, s: 2, p: 1),
        ConvGeometry(n: 3, c: 16, h: 7, w: 7, o: 12, k: 1, s: 1, p: 0),
        ConvGeometry(n: 2, c: 5, h: 13, w: 10, o: 6, k: 5, s: 2, p: 2),
        ConvGeometry(n: 5, c: 8, h: 6, w: 6, o: 4, k: 3, s: 1, p: 0),
        ConvGeometry(n: 2, c: 4, h: 9, w: 9, o: 3, k: 1, s: 2, p: 0),
    ]

    func random(_ n: Int, seed: UInt64) -> [Float] {
        var rng = RandomState(seed: seed)
        return (0..<n).map { _ in rng.uniform(-1, 1) }
    }

    @Test(arguments: 0..<geometries.count, [1, 2])
    func forwardAndGradientsMatchNaive(_ gi: Int, threads: Int) {
        ComputeContext(threads: threads).run { forwardAndGradients(gi) }
    }

    func forwardAndGradients(_ gi: Int) {
        let g = ConvKernelTests.geometries[gi]
        let x = random(g.n * g.c * g.h * g.w, seed: 1)
        let w = random(g.o * g.kdim, seed: 2)
        let b = random(g.o, seed: 3)
        let gy = random(g.n * g.o * g.pixels, seed: 4)
        let xt = Tensor(x, shape: [g.n, g.c, g.h, g.w]), wt = Tensor(w, shape: [g.o, g.c, g.k, g.k])
        let bt = Tensor(b, shape: [g.o])
        xt.requiresGrad = true; wt.requiresGrad = true; bt.requiresGrad = true
        let y = Tensor.conv2d(xt, weight: wt, bias: bt, stride: g.s, padding: g.p)
        let ref = Tensor.conv2dNaive(g, x: x, w: w, bias: b)
        #expect(maxMixedError(y.array, ref) < 1e-5, "forward \(g)")
        (y * Tensor(gy, shape: y.shape)).sum().backward()
        let (dx, dw) = Tensor.conv2dNaiveGrads(g, x: x, w: w, gy: gy)
        #expect(maxMixedError(xt.grad!.array, dx) < 1e-5, "input gradient \(g)")
        #expect(maxMixedError(wt.grad!.array, dw) < 1e-5, "weight gradient \(g)")
        var db = [Float](repeating: 0, count: g.o)
        for n in 0..<g.n { for o in 0..<g.o { for p in 0..<g.pixels { db[o] += gy[(n * g.o + o) * g.pixels + p] } } }
        #expect(maxMixedError(bt.grad!.array, db) < 1e-5, "bias gradient \(g)")
    }

    @Test(arguments: 0..<geometries.count, Kernels.Level.allCases)
    func im2colMatchesNaiveAndCol2imIsItsAdjoint(_ gi: Int, level: Kernels.Level) throws {
        let k = try #require(Kernels(level: level) ?? (level > Kernels.cpuLevel ? Kernels.portable : nil))
        let df_im2col = k.table.pointee.im2col, df_col2im = k.table.pointee.col2im
        let g = ConvKernelTests.geometries[gi]
        let img = random(g.c * g.h * g.w, seed: 5)
        var col = [Float](repeating: .nan, count: g.kdim * g.pixels)
        df_im2col(img, Int32(g.c), Int32(g.h), Int32(g.w), Int32(g.k), Int32(g.s), Int32(g.p),
                  Int32(g.oh), Int32(g.ow), 0, Int32(g.c), &col)
        #expect(col == Tensor.im2colNaive(g, image: img))
        // <im2col(x), c> == <x, col2im(c)> for random c: col2im is the adjoint.
        let c = random(col.count, seed: 6)
        var folded = [Float](repeating: 0, count: img.count)
        df_col2im(c, Int32(g.c), Int32(g.h), Int32(g.w), Int32(g.k), Int32(g.s), Int32(g.p),
                  Int32(g.oh), Int32(g.ow), 0, Int32(g.c), &folded)
        var lhs = 0.0, rhs = 0.0
        for i in 0..<col.count { lhs += Double(col[i]) * Double(c[i]) }
        for i in 0..<img.count { rhs += Double(img[i]) * Double(folded[i]) }
        #expect(abs(lhs - rhs) < 1e-4 * max(1, abs(lhs)))
        // Channel ranges compose: two halves give the whole.
        var split = [Float](repeating: 0, count: img.count)
        let mid = Int32(g.c / 2)
        df_col2im(c, Int32(g.c), Int32(g.h), Int32(g.w), Int32(g.k), Int32(g.s), Int32(g.p), Int32(g.oh), Int32(g.ow), 0, mid, &split)
        df_col2im(c, Int32(g.c), Int32(g.h), Int32(g.w), Int32(g.k), Int32(g.s), Int32(g.p), Int32(g.oh), Int32(g.ow), mid, Int32(g.c), &split)
        #expect(split == folded)
    }

    @Test func deterministicForSeedAndThreads() {
        func run() -> [Float] {
            var rng = RandomState(seed: 9)
            let x = Tensor.normal([4, 8, 12, 12], rng: &rng)
            let w = Tensor.normal([16, 8, 3, 3], rng: &rng)
            w.requiresGrad = true
            let y = Tensor.conv2d(x, weight: w, stride: 1, padding: 1)
            y.square().sum().backward()
            return y.array + w.grad!.array
        }
        #expect(run() == run())
    }
}

@Suite struct BatchNormBehaviour {
    @Test func trainingUpdatesRunningStatisticsAndEvalUsesThem() {
        var rng = RandomState(seed: 3)
        let x = Tensor.normal([4, 2, 3, 3], mean: 2, std: 3, rng: &rng)
        let stats = BatchNormStats(channels: 2)
        let gamma = Tensor([1, 1], shape: [2]), beta = Tensor([0, 0], shape: [2])
        let y = Tensor.batchNorm2d(x, weight: gamma, bias: beta, stats: stats, training: true, momentum: 0.03, eps: 1e-3)
        for ch in 0..<2 {
            var vals: [Double] = []
            for n in 0..<4 { for i in 0..<9 { vals.append(Double(x.data[(n * 2 + ch) * 9 + i])) } }
            let m = vals.reduce(0, +) / Double(vals.count)
            let v = vals.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(vals.count)
            let unbiased = v * Double(vals.count) / Double(vals.count - 1)
            #expect(abs(Double(stats.mean.data[ch]) - 0.03 * m) < 1e-5)
            #expect(abs(Double(stats.variance.data[ch]) - (0.97 + 0.03 * unbiased)) < 1e-4)
            // Normalised output: mean 0, variance v / (v + eps).
            var ys: [Double] = []
            for n in 0..<4 { for i in 0..<9 { ys.append(Double(y.data[(n * 2 + ch) * 9 + i])) } }
            #expect(abs(ys.reduce(0, +) / 36) < 1e-5)
            let yv = ys.map { $0 * $0 }.reduce(0, +) / 36
            #expect(abs(yv - v / (v + 1e-3)) < 1e-4)
        }
        let e = Tensor.batchNorm2d(x, weight: gamma, bias: beta, stats: stats, training: false)
        let inv = 1 / (stats.variance.data[1] + 1e-3).squareRoot()
        #expect(abs(e.data[9] - (x.data[9] - stats.mean.data[1]) * inv) < 1e-5)
    }

    /// `--sync-bn`: two replicas, each with half of a batch on its own thread and an in-process
    /// sum standing in for MPI, normalise with the whole batch's statistics: outputs, input
    /// gradients and running statistics equal one replica's run on the whole batch, and the two
    /// replicas' weight and bias gradients add up to its own.
    @Test(arguments: [false, true]) func synchronisedStatisticsEqualTheWholeBatch(silu: Bool) throws {
        var rng = RandomState(seed: 9)
        let x = Tensor.normal([4, 3, 5, 5], mean: 2, std: 3, rng: &rng)
        let up = Tensor.normal([4, 3, 5, 5], rng: &rng)
        let gamma0 = Tensor.uniform([3], lo: 0.5, hi: 1.5, rng: &rng), beta0 = Tensor.normal([3], rng: &rng)
        struct Run { var y: [Float]; var dx: [Float]; var dgamma: [Float]; var dbeta: [Float]; var mean: [Float]; var variance: [Float] }
        func run(_ input: Tensor, _ upstream: Tensor, context: ComputeContext) -> Run {
            context.run {
                let xi = Tensor(input.array, shape: input.shape), gamma = Tensor(gamma0.array, shape: [3]), beta = Tensor(beta0.array, shape: [3])
                xi.requiresGrad = true; gamma.requiresGrad = true; beta.requiresGrad = true
                let stats = BatchNormStats(channels: 3)
                let y = Tensor.batchNorm2d(xi, weight: gamma, bias: beta, stats: stats, training: true, silu: silu)
                (y * upstream).sum().backward()
                return Run(y: y.array, dx: xi.grad!.array, dgamma: gamma.grad!.array, dbeta: beta.grad!.array,
                           mean: stats.mean.array, variance: stats.variance.array)
            }
        }
        let whole = run(x, up, context: ComputeContext(threads: 1))
        let meeting = InProcessSum(parties: 2)
        // What the two replica threads share (each reads its own inputs and writes its own slot).
        final class Replicas: @unchecked Sendable {
            var inputs: [(Tensor, Tensor, ComputeContext)] = []
            var results: [Run?] = [nil, nil]
            var body: ((Tensor, Tensor, ComputeContext) -> Run)?
            let lock = NSLock()
        }
        let replicas = Replicas()
        replicas.body = run
        for r in 0..<2 {
            let context = ComputeContext(threads: 1)
            context.replicaSum = { p, n in meeting.sum(rank: r, p, n) }
            replicas.inputs.append((x.narrow(axis: 0, start: 2 * r, length: 2), up.narrow(axis: 0, start: 2 * r, length: 2), context))
        }
        let done = DispatchGroup()
        for r in 0..<2 {
            DispatchQueue.global().async(group: done) {
                let (xs, us, context, body) = replicas.lock.withLock { (replicas.inputs[r].0, replicas.inputs[r].1, replicas.inputs[r].2, replicas.body!) }
                let result = body(xs, us, context)
                replicas.lock.withLock { replicas.results[r] = result }
            }
        }
        done.wait()
        let a = try #require(replicas.results[0]), b = try #require(replicas.results[1])
        #expect(maxMixedError(a.y + b.y, whole.y) < 1e-5)
        #expect(maxMixedError(a.dx + b.dx, whole.dx) < 1e-5)
        #expect(maxMixedError(zip(a.dgamma, b.dgamma).map(+), whole.dgamma) < 1e-5)
        #expect(maxMixedError(zip(a.dbeta, b.dbeta).map(+), whole.dbeta) < 1e-5)
        #expect(a.mean == b.mean && a.variance == b.variance)
        #expect(maxMixedError(a.mean, whole.mean) < 1e-6 && maxMixedError(a.variance, whole.variance) < 1e-6)
        // Without the sum each replica normalises with its own half: the outputs differ.
        let alone = run(x.narrow(axis: 0, start: 0, length: 2), up.narrow(axis: 0, start: 0, length: 2), context: ComputeContext(threads: 1))
        #expect(maxMixedError(alone.y, Array(whole.y[0..<alone.y.count])) > 1e-2)
    }

    /// Batch norm fused with SiLU against batch norm followed by the SiLU op: the same outputs, and in
    /// the backward (which recomputes SiLU's derivative inside the two batch-norm passes instead of
    /// writing it out) the same gradients bit for bit, on every kernel level, accumulating or not.
    @Test(arguments: Kernels.Level.allCases) func fusedSiLUMatchesComposition(level: Kernels.Level) {
        guard let kernels = Kernels(level: level) else { return }
        var rng = RandomState(seed: 4)
        let x0 = Tensor.normal([2, 3, 5, 7], mean: 0.5, std: 2, rng: &rng), up = Tensor.normal([2, 3, 5, 7], rng: &rng)
        let gamma0 = Tensor.uniform([3], lo: 0.5, hi: 1.5, rng: &rng), beta0 = Tensor.normal([3], rng: &rng)
        let context = ComputeContext(threads: 2)
        context.kernels = kernels
        func run(fused: Bool, twice: Bool) -> [[Float]] {
            context.run {
                let x = Tensor(x0.array, shape: x0.shape), gamma = Tensor(gamma0.array, shape: [3]), beta = Tensor(beta0.array, shape: [3])
                x.requiresGrad = true; gamma.requiresGrad = true; beta.requiresGrad = true
                func layer() -> Tensor {
                    let stats = BatchNormStats(channels: 3)
                    return fused ? Tensor.batchNorm2d(x, weight: gamma, bias: beta, stats: stats, training: true, silu: true)
                        : Tensor.batchNorm2d(x, weight: gamma, bias: beta, stats: stats, training: true).silu()
                }
                let y = layer()
                // Used twice, the input's gradient is accumulated the second time.
                ((twice ? y + layer() * 0.5 : y) * up).sum().backward()
                return [y.array, x.grad!.array, gamma.grad!.array, beta.grad!.array]
            }
        }
        for twice in [false, true] {
            let a = run(fused: true, twice: twice), b = run(fused: false, twice: twice)
            #expect(maxMixedError(a[0], b[0]) < 1e-6, "\(level) forward")
            for i in 1..<4 { #expect(a[i] == b[i], "\(level) gradient \(i) twice \(twice)") }
        }
    }

    /// Folded Conv blocks in inference on oneDNN write their outputs also in the blocked layout, and
    /// the blocks after them (directly, through a chunk, a residual sum and a concatenation) take
    /// those instead of reordering: the same bits as with the reorders, with and without frozen
    /// weights; the plain values of the tensors in between are not made (only the output's, read
    /// here), and writing them at once gives the same bits.
    @Test func foldedBlocksTakeLaidInputs() throws {
        try #require(OneDNN.available, "oneDNN (libdnnl) is installed by tools/install-deps.sh")
        var rng = RandomState(seed: 83)
        let x = Tensor.normal([1, 16, 10, 10], rng: &rng)
        let w1 = Tensor.normal([32, 16, 1, 1], std: 0.3, rng: &rng), wb = Tensor.normal([16, 16, 3, 3], std: 0.2, rng: &rng)
        let w2 = Tensor.normal([32, 48, 1, 1], std: 0.2, rng: &rng), w3 = Tensor.normal([32, 32, 3, 3], std: 0.2, rng: &rng)
        let biases = [32, 16, 32, 32].map { Tensor.normal([$0], std: 0.5, rng: &rng) }
        func run(laid: Bool, frozen: Bool, deferred: Bool = true) -> (y: [UInt32], taken: Int, made: Int) {
            let ctx = ComputeContext(threads: 2)
            ctx.gemm = .onednn
            ctx.laidInputs = laid
            ctx.deferPlainValues = deferred
            return ctx.run {
                func block(_ t: Tensor, _ w: Tensor, _ b: Tensor, stride: Int = 1) -> Tensor {
                    Tensor.conv2d(t, weight: w, bias: b, stride: stride, padding: w.shape[2] / 2, silu: true)
                }
                func model() -> Tensor {
                    let y = block(x, w1, biases[0]).chunk(2, axis: 1)
                    let res = y[1] + block(y[1], wb, biases[1])
                    return block(block(Tensor.concat([y[0], y[1], res], axis: 1), w2, biases[2]), w3, biases[3], stride: 2)
                }
                let out = GradMode.noGrad { frozen ? ctx.withFrozenWeights { model() } : model() }
                return (out.array.map(\.bitPattern), ctx.laidInputsTaken, ctx.deferredValuesMade)
            }
        }
        for frozen in [false, true] {
            let laid = run(laid: true, frozen: frozen), reordered = run(laid: false, frozen: frozen)
            let eager = run(laid: true, frozen: frozen, deferred: false)
            #expect(laid.y == reordered.y && eager.y == reordered.y, "frozen \(frozen)")
            #expect(reordered.taken == 0 && eager.taken == laid.taken)
            // Only the output's plain values are made (read here); none when written at once.
            #expect(laid.made == 1 && eager.made == 0 && reordered.made == 0, "made \(laid.made), \(eager.made), \(reordered.made)")
            // The chunk, the concatenation (with the sum's own laid values) and the direct edge
            // (checked on AVX-512 JIT kernels, where it was measured).
            if OneDNN.isa.hasPrefix("avx512_core") { #expect(laid.taken == 3, "taken \(laid.taken), frozen \(frozen)") }
        }
    }

    /// The inference path of a folded Conv block (bias and SiLU in one pass over the convolution's
    /// output; on oneDNN, for 16 input channels, the pass reads oneDNN's channel-blocked output and
    /// writes NCHW, also with frozen weights) gives the bits of the convolution followed by the SiLU
    /// op, on both backends, with and without a bias; with a gradient to record it is the op chain
    /// itself (and backward runs).
    @Test(arguments: [GemmBackend.packed, .onednn]) func convWithSiLUInOnePass(_ gemm: GemmBackend) throws {
        if gemm == .onednn { try #require(OneDNN.available, "oneDNN (libdnnl) is installed by tools/install-deps.sh") }
        var rng = RandomState(seed: 31)
        let x = Tensor.normal([2, 8, 9, 9], rng: &rng), w = Tensor.normal([16, 8, 3, 3], std: 0.2, rng: &rng)
        let x16 = Tensor.normal([2, 16, 9, 9], rng: &rng), w16 = Tensor.normal([16, 16, 3, 3], std: 0.2, rng: &rng)
        let b = Tensor.normal([16], rng: &rng)
        let context = ComputeContext(threads: 2)
        context.gemm = gemm
        if gemm == .onednn {
            let g = ConvGeometry(n: 2, c: 16, h: 9, w: 9, o: 16, k: 3, s: 2, p: 1)
            #expect(context.run { OneDNN.blockedOut(g, bf16: false) } != nil, "the 16-channel case takes the blocked path")
        }
        context.run {
            for (xi, wi) in [(x, w), (x16, w16)] {
                for bias in [b, nil] {
                    for frozen in [false, true] {
                        let (fused, plain) = GradMode.noGrad {
                            let f = frozen ? context.withFrozenWeights { Tensor.conv2d(xi, weight: wi, bias: bias, stride: 2, padding: 1, silu: true) }
                                : Tensor.conv2d(xi, weight: wi, bias: bias, stride: 2, padding: 1, silu: true)
                            return (f, Tensor.conv2d(xi, weight: wi, bias: bias, stride: 2, padding: 1).silu())
                        }
                        #expect(fused.shape == [2, 16, 5, 5] && fused.array.map(\.bitPattern) == plain.array.map(\.bitPattern),
                                "\(gemm) \(xi.shape) bias \(bias != nil) frozen \(frozen)")
                    }
                }
            }
            for bias in [b, nil] {
                let same = GradMode.noGrad { Tensor.conv2d(x, weight: w, bias: bias, stride: 2, padding: 1, silu: false) }
                #expect(same.array == GradMode.noGrad { Tensor.conv2d(x, weight: w, bias: bias, stride: 2, padding: 1) }.array)
            }
            let wg = Tensor(w.array, shape: w.shape)
            wg.requiresGrad = true
            let y = Tensor.conv2d(x, weight: wg, bias: b, stride: 2, padding: 1, silu: true)
            let plain = GradMode.noGrad { Tensor.conv2d(x, weight: w, bias: b, stride: 2, padding: 1).silu() }
            #expect(y.array == plain.array)
            y.sum().backward()
            #expect(wg.grad != nil)
        }
    }
}
