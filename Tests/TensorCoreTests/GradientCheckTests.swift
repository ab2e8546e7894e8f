import Testing
import _TestSupport
@testable import TensorCore

/// Central-difference checks of every differentiable op (Double accumulation, eps 1e-3).
/// The tolerance is relative to the gradient's largest magnitude.
private let tolerance = 2e-2

private func randn(_ shape: [Int], seed: UInt64, scale: Float = 1) -> Tensor {
    var rng = RandomState(seed: seed)
    return Tensor.normal(shape, std: scale, rng: &rng)
}

/// Values away from 0 (for log, sqrt, abs, div, pow) in [lo, hi] with random sign when asked.
private func positive(_ shape: [Int], seed: UInt64, lo: Float = 0.5, hi: Float = 2) -> Tensor {
    var rng = RandomState(seed: seed)
    return Tensor.uniform(shape, lo: lo, hi: hi, rng: &rng)
}

private func check(_ inputs: [Tensor], eps: Float = 1e-3, tol: Double = tolerance,
                   sourceLocation: SourceLocation = #_sourceLocation, _ f: ([Tensor]) -> Tensor) {
    let results = gradientCheck(inputs, eps: eps, f)
    for (i, r) in results.enumerated() {
        #expect(r.scaledError < tol, "input \(i): \(r)", sourceLocation: sourceLocation)
    }
}

@Suite struct ElementwiseGradients {
    @Test(arguments: [([2, 3, 4, 5], [2, 3, 4, 5]), ([2, 3, 4, 5], [1, 3, 1, 1]), ([3, 1, 5], [4, 1]), ([4], [])])
    func binaryBroadcast(_ sa: [Int], _ sb: [Int]) {
        let a = randn(sa, seed: 1), b = randn(sb, seed: 2)
        check([a, b]) { $0[0] + $0[1] }
        check([a, b]) { $0[0] - $0[1] }
        check([a, b]) { $0[0] * $0[1] }
        let bp = positive(sb, seed: 3)
        check([a, bp]) { $0[0] / $0[1] }
    }

    @Test func maximumMinimum() {
        let a = randn([3, 4, 5], seed: 4), b = randn([1, 4, 1], seed: 5)
        check([a, b]) { Tensor.maximum($0[0], $0[1]) }
        check([a, b]) { Tensor.minimum($0[0], $0[1]) }
    }

    @Test func unary() {
        let x = randn([2, 3, 5, 7], seed: 6)
        let p = positive([2, 3, 5, 7], seed: 7)
        check([x]) { -$0[0] }
        check([x]) { $0[0].exp() }
        check([p]) { $0[0].log() }
        check([p]) { $0[0].sqrt() }
        check([p]) { $0[0].pow(1.7) }
        check([x]) { $0[0].pow(2) }
        check([x]) { $0[0].atan() }
        check([x]) { $0[0].sigmoid() }
        check([x]) { $0[0].silu() }
        check([x]) { $0[0].relu() }
        check([x]) { ($0[0] * 3 + 1 - 0.5) / 2 }
        check([x]) { 1 - $0[0] }
        // abs and clamp: keep values away from the kinks.
        let away = Tensor(x.array.map { $0 >= 0 ? $0 + 0.1 : $0 - 0.1 }, shape: x.shape)
        check([away]) { $0[0].abs() }
        check([away]) { $0[0].clamp(min: -0.05, max: 0.05 + 0.7) }
    }

    @Test func bceWithLogits() {
        let x = randn([4, 6], seed: 8, scale: 3)
        var rng = RandomState(seed: 9)
        let t = Tensor.uniform([4, 6], rng: &rng)
        check([x]) { $0[0].bceWithLogits(t) }
    }

    @Test func roundedToHalfPassesGradient() {
        let x = randn([3, 5], seed: 10)
        let r = gradientCheck([x]) { $0[0].roundedToHalf() }
        // Rounding to half is a step function; the straight-through gradient is 1 (per element).
        #expect(maxMixedError(r[0].analytic, gradientCheck([x]) { $0[0] * 1 }[0].analytic) == 0)
    }
}

@Suite struct ReductionAndShapeGradients {
    @Test func reductions() {
        let x = randn([3, 4, 5], seed: 11)
        check([x]) { $0[0].sum() }
        check([x]) { $0[0].mean() }
        for axis in [0, 1, 2, -1] {
            check([x]) { $0[0].sum(axis: axis) }
            check([x]) { $0[0].mean(axis: axis, keepDims: true) }
            check([x]) { $0[0].max(axis: axis).values }
        }
    }

    @Test func softmaxes() {
        let x = randn([2, 5, 3], seed: 12, scale: 2)
        for axis in [0, 1, 2] {
            check([x]) { $0[0].softmax(axis: axis) }
            check([x]) { $0[0].logSoftmax(axis: axis) }
        }
    }

    @Test func shapes() {
        let x = randn([2, 3, 4, 5], seed: 13)
        check([x]) { $0[0].reshape([6, -1]) * $0[0].reshape([6, 20]) }
        check([x]) { $0[0].permute([0, 2, 3, 1]) }
        check([x]) { $0[0].permute([3, 1, 0, 2]) }
        check([x]) { $0[0].narrow(axis: 1, start: 1, length: 2) }
        check([x]) { $0[0].narrow(axis: 3, start: 2, length: 3) }
        check([x]) { t in let p = t[0].split([1, 2], axis: 1); return p[1] * p[1] + Tensor.concat([p[0], p[0]], axis: 1) }
        check([x]) { t in let p = t[0].chunk(2, axis: 2); return p[0] * p[1] }
        let y = randn([2, 1, 4, 5], seed: 14)
        check([x, y]) { Tensor.concat([$0[0], $0[1], $0[0]], axis: 1) }
        check([x]) { $0[0].indexSelect(axis: 2, [3, 0, 3, 1]) }
        let idx = [0, 2, 1, 1, 2, 0]   // [2, 3] picking along axis 1 of [2, 3] view
        check([randn([2, 3], seed: 15)]) { $0[0].gather(axis: 1, index: idx, indexShape: [2, 3]) }
    }

    @Test func matmul() {
        let a = randn([5, 7], seed: 16), b = randn([7, 3], seed: 17)
        check([a, b]) { $0[0].matmul($0[1]) }
    }
}

@Suite struct LayerGradients {
    /// (N, C, H, W, O, k, s, p, bias)
    static let convCases: [(Int, Int, Int, Int, Int, Int, Int, Int, Bool)] = [
        (1, 3, 7, 7, 4, 3, 1, 1, true),    // padding, odd size
        (2, 3, 8, 6, 5, 3, 2, 1, false),   // stride 2, batch > 1, non-square
        (2, 4, 5, 5, 3, 1, 1, 0, true),    // 1x1 pointwise path
        (3, 2, 9, 9, 2, 5, 2, 2, false),   // large kernel
        (2, 2, 6, 6, 3, 3, 1, 0, true),    // no padding
        (2, 3, 6, 5, 2, 1, 2, 0, false),   // 1x1 with stride (im2col path)
    ]

    @Test(arguments: 0..<convCases.count)
    func conv2d(_ i: Int) {
        let (n, c, h, w, o, k, s, p, hasBias) = LayerGradients.convCases[i]
        let x = randn([n, c, h, w], seed: 20)
        let wt = randn([o, c, k, k], seed: 21, scale: 0.5)
        let b = randn([o], seed: 22)
        if hasBias {
            check([x, wt, b]) { Tensor.conv2d($0[0], weight: $0[1], bias: $0[2], stride: s, padding: p) }
        } else {
            check([x, wt]) { Tensor.conv2d($0[0], weight: $0[1], stride: s, padding: p) }
        }
    }

    @Test(arguments: [false, true], [false, true])
    func batchNorm(training: Bool, silu: Bool) {
        let x = randn([3, 4, 3, 5], seed: 23, scale: 2) + 0.5
        let gamma = positive([4], seed: 24), beta = randn([4], seed: 25)
        let stats = BatchNormStats(channels: 4)
        for ch in 0..<4 { stats.mean.data[ch] = 0.3 * Float(ch); stats.variance.data[ch] = 1 + Float(ch) }
        // The check runs the op many times; keep running statistics fixed by copying them.
        check([x, gamma, beta]) { t in
            let s = BatchNormStats(channels: 4)
            for ch in 0..<4 { s.mean.data[ch] = stats.mean.data[ch]; s.variance.data[ch] = stats.variance.data[ch] }
            return Tensor.batchNorm2d(t[0], weight: t[1], bias: t[2], stats: s, training: training, silu: silu)
        }
    }

    @Test func maxPool() {
        // Distinct values so no ties sit at the centre of a difference.
        var rng = RandomState(seed: 26)
        var vals = (0..<(2 * 3 * 7 * 6)).map { Float($0) * 0.01 }
        vals.shuffle(using: &rng)
        let x = Tensor(vals, shape: [2, 3, 7, 6])
        check([x], eps: 1e-3) { $0[0].maxPool2d(kernel: 5, stride: 1, padding: 2) }
        check([x], eps: 1e-3) { $0[0].maxPool2d(kernel: 2, stride: 2, padding: 0) }
        check([x], eps: 1e-3) { $0[0].maxPool2d(kernel: 3, stride: 2, padding: 1) }
    }

    @Test func upsample() {
        let x = randn([2, 3, 4, 5], seed: 27)
        check([x]) { $0[0].upsampleNearest(2) }
    }

    @Test func composedBlock() {
        // conv -> BN+SiLU -> maxpool -> upsample -> concat with itself -> residual add.
        let x = randn([2, 3, 6, 6], seed: 28)
        let w1 = randn([4, 3, 3, 3], seed: 29, scale: 0.4)
        let gamma = positive([4], seed: 30), beta = randn([4], seed: 31)
        check([x, w1, gamma, beta]) { t in
            let y = Tensor.conv2d(t[0], weight: t[1], stride: 1, padding: 1)
            let a = Tensor.batchNorm2d(y, weight: t[2], bias: t[3], stats: BatchNormStats(channels: 4), training: true, silu: true)
            let m = a.maxPool2d(kernel: 2, stride: 2, padding: 0).upsampleNearest(2)
            return Tensor.concat([a + m, a], axis: 1)
        }
    }
}
