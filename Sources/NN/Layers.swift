import TensorCore

// MARK: - Conv (conv without bias + BN + SiLU)

/// Ultralytics' `Conv`: 2-D convolution without bias, batch norm (eps 1e-3, momentum 0.03) and SiLU.
///
/// x: [N, c1, H, W] -> [N, c2, H/s, W/s]. State names: `conv.weight`, `bn.weight`, `bn.bias`,
/// `bn.running_mean`, `bn.running_var`, `bn.num_batches_tracked`. After `fuse()` the batch norm
/// is folded into the convolution (inference only).
public final class ConvBlock: UnaryLayer {
    public let c1, c2, k, s, p: Int
    public let act: Bool
    public let weight: Tensor        // [c2, c1, k, k]
    public let bnWeight: Tensor      // [c2]
    public let bnBias: Tensor        // [c2]
    public let stats: BatchNormStats
    public let numBatchesTracked = Tensor(zeros: [])
    public private(set) var fusedBias: Tensor?
    public static let eps: Float = 1e-3
    public static let momentum: Float = 0.03

    public init(_ c1: Int, _ c2: Int, k: Int = 1, s: Int = 1, p: Int? = nil, act: Bool = true,
                rng: inout RandomState) {
        (self.c1, self.c2, self.k, self.s, self.p, self.act) = (c1, c2, k, s, p ?? autopad(k), act)
        weight = Tensor.kaimingUniform([c2, c1, k, k], rng: &rng)
        bnWeight = Tensor(repeating: 1, shape: [c2])
        bnBias = Tensor(zeros: [c2])
        stats = BatchNormStats(channels: c2)
        for t in [weight, bnWeight, bnBias] { t.requiresGrad = true }
    }

    public func callAsFunction(_ x: Tensor, training: Bool) -> Tensor {
        if let fusedBias {
            return Tensor.conv2d(x, weight: weight, bias: fusedBias, stride: s, padding: p, silu: act)
        }
        if training && GradMode.isEnabled { numBatchesTracked.data[0] += 1 }
        return Tensor.convBatchNorm(x, weight: weight, stride: s, padding: p, bnWeight: bnWeight, bnBias: bnBias, stats: stats,
                                    training: training, momentum: ConvBlock.momentum, eps: ConvBlock.eps, silu: act)
    }

    public func namedTensors(prefix: String) -> [NamedTensor] {
        if let fusedBias {
            return [NamedTensor(prefix + "conv.weight", weight, .weight), NamedTensor(prefix + "conv.bias", fusedBias, .bias)]
        }
        return [NamedTensor(prefix + "conv.weight", weight, .weight),
                NamedTensor(prefix + "bn.weight", bnWeight, .bnWeight),
                NamedTensor(prefix + "bn.bias", bnBias, .bias),
                NamedTensor(prefix + "bn.running_mean", stats.mean, .buffer),
                NamedTensor(prefix + "bn.running_var", stats.variance, .buffer),
                NamedTensor(prefix + "bn.num_batches_tracked", numBatchesTracked, .buffer)]
    }

    /// Folds BN into the convolution: w' = w * gamma / sqrt(var + eps), b' = beta - mean * gamma / sqrt(var + eps).
    public func fuse() {
        guard fusedBias == nil else { return }
        let b = Tensor(zeros: [c2])
        let per = c1 * k * k
        for o in 0..<c2 {
            let scale = bnWeight.data[o] / (stats.variance.data[o] + ConvBlock.eps).squareRoot()
            for j in 0..<per { weight.data[o * per + j] *= scale }
            b.data[o] = bnBias.data[o] - stats.mean.data[o] * scale
        }
        fusedBias = b
    }
}

// MARK: - Conv2d (plain, with bias)

/// `nn.Conv2d` with bias (the last 1x1 layer of the Detect branches). State: `weight`, `bias`.
public final class Conv2d: UnaryLayer {
    public let weight: Tensor   // [c2, c1, k, k]
    public let bias: Tensor     // [c2]
    public let s, p: Int

    public init(_ c1: Int, _ c2: Int, k: Int = 1, s: Int = 1, p: Int = 0, rng: inout RandomState) {
        weight = Tensor.kaimingUniform([c2, c1, k, k], rng: &rng)
        let bound = 1 / Float(c1 * k * k).squareRoot()
        bias = Tensor.uniform([c2], lo: -bound, hi: bound, rng: &rng)
        (self.s, self.p) = (s, p)
        weight.requiresGrad = true
        bias.requiresGrad = true
    }

    public func callAsFunction(_ x: Tensor, training: Bool) -> Tensor {
        Tensor.conv2d(x, weight: weight, bias: bias, stride: s, padding: p)
    }

    public func namedTensors(prefix: String) -> [NamedTensor] {
        [NamedTensor(prefix + "weight", weight, .weight), NamedTensor(prefix + "bias", bias, .bias)]
    }
}

// MARK: - Bottleneck, C2f, SPPF

/// Ultralytics' `Bottleneck`: Conv(c1, c_, k0) -> Conv(c_, c2, k1), plus x when `shortcut` and c1 == c2.
public final class Bottleneck: UnaryLayer {
    public let cv1, cv2: ConvBlock
    public let add: Bool

    public init(_ c1: Int, _ c2: Int, shortcut: Bool = true, k: (Int, Int) = (3, 3), e: Double = 0.5,
                rng: inout RandomState) {
        let c = Int(Double(c2) * e)
        cv1 = ConvBlock(c1, c, k: k.0, s: 1, rng: &rng)
        cv2 = ConvBlock(c, c2, k: k.1, s: 1, rng: &rng)
        add = shortcut && c1 == c2
    }

    public func callAsFunction(_ x: Tensor, training: Bool) -> Tensor {
        let y = cv2(cv1(x, training: training), training: training)
        return add ? x + y : y
    }

    public func namedTensors(prefix: String) -> [NamedTensor] {
        cv1.namedTensors(prefix: prefix + "cv1.") + cv2.namedTensors(prefix: prefix + "cv2.")
    }

    public func fuse() { cv1.fuse(); cv2.fuse() }
}

/// Ultralytics' `C2f`: cv1 to 2c channels, split in two, n bottlenecks chained on the second
/// half, every intermediate concatenated, cv2 back to c2. c = int(c2 * e).
public final class C2f: UnaryLayer {
    public let c: Int
    public let cv1, cv2: ConvBlock
    public let m: [Bottleneck]

    public init(_ c1: Int, _ c2: Int, n: Int = 1, shortcut: Bool = false, e: Double = 0.5, rng: inout RandomState) {
        c = Int(Double(c2) * e)
        cv1 = ConvBlock(c1, 2 * c, k: 1, s: 1, rng: &rng)
        cv2 = ConvBlock((2 + n) * c, c2, k: 1, rng: &rng)
        var blocks: [Bottleneck] = []
        for _ in 0..<n { blocks.append(Bottleneck(c, c, shortcut: shortcut, k: (3, 3), e: 1.0, rng: &rng)) }
        m = blocks
    }

    public func callAsFunction(_ x: Tensor, training: Bool) -> Tensor {
        var y = cv1(x, training: training).chunk(2, axis: 1)
        for b in m { y.append(b(y[y.count - 1], training: training)) }
        return cv2(Tensor.concat(y, axis: 1), training: training)
    }

    public func namedTensors(prefix: String) -> [NamedTensor] {
        var out = cv1.namedTensors(prefix: prefix + "cv1.") + cv2.namedTensors(prefix: prefix + "cv2.")
        for (i, b) in m.enumerated() { out += b.namedTensors(prefix: prefix + "m.\(i).") }
        return out
    }

    public func fuse() { cv1.fuse(); cv2.fuse(); m.forEach { $0.fuse() } }
}

/// Ultralytics' `SPPF`: cv1 to c1/2, three chained max-pools (k, stride 1, pad k/2), concat, cv2.
public final class SPPF: UnaryLayer {
    public let cv1, cv2: ConvBlock
    public let k: Int

    public init(_ c1: Int, _ c2: Int, k: Int = 5, rng: inout RandomState) {
        let c = c1 / 2
        cv1 = ConvBlock(c1, c, k: 1, s: 1, rng: &rng)
        cv2 = ConvBlock(c * 4, c2, k: 1, s: 1, rng: &rng)
        self.k = k
    }

    public func callAsFunction(_ x: Tensor, training: Bool) -> Tensor {
        var y = [cv1(x, training: training)]
        for _ in 0..<3 { y.append(y[y.count - 1].maxPool2d(kernel: k, stride: 1, padding: k / 2)) }
        return cv2(Tensor.concat(y, axis: 1), training: training)
    }

    public func namedTensors(prefix: String) -> [NamedTensor] {
        cv1.namedTensors(prefix: prefix + "cv1.") + cv2.namedTensors(prefix: prefix + "cv2.")
    }

    public func fuse() { cv1.fuse(); cv2.fuse() }
}

/// `nn.Upsample(scale_factor=f, mode="nearest")`.
public final class Upsample: UnaryLayer {
    public let factor: Int
    public init(factor: Int = 2) { self.factor = factor }
    public func callAsFunction(_ x: Tensor, training: Bool) -> Tensor { x.upsampleNearest(factor) }
    public func namedTensors(prefix: String) -> [NamedTensor] { [] }
}

/// `n` copies of a layer applied in turn (`nn.Sequential`), named `0.`, `1.`, … as PyTorch does.
public final class Sequential: UnaryLayer {
    public let layers: [UnaryLayer]
    public init(_ layers: [UnaryLayer]) { self.layers = layers }
    public func callAsFunction(_ x: Tensor, training: Bool) -> Tensor {
        layers.reduce(x) { $1($0, training: training) }
    }
    public func namedTensors(prefix: String) -> [NamedTensor] {
        layers.enumerated().flatMap { $1.namedTensors(prefix: prefix + "\($0).") }
    }
    public func fuse() { layers.forEach { $0.fuse() } }
}
