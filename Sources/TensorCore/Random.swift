import Foundation

/// A seeded xoshiro256** generator. Its state is four words, so checkpoints can save and restore it.
public struct RandomState: RandomNumberGenerator, Codable, Sendable, Equatable {
    public var s: [UInt64]

    /// Seeds the four state words from `seed` by splitmix64.
    public init(seed: UInt64) {
        var x = seed
        func splitmix() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s = [splitmix(), splitmix(), splitmix(), splitmix()]
    }

    @inline(__always)
    static func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    public mutating func next() -> UInt64 {
        let result = RandomState.rotl(s[1] &* 5, 7) &* 9
        let t = s[1] << 17
        s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]
        s[2] ^= t
        s[3] = RandomState.rotl(s[3], 45)
        return result
    }

    /// Uniform in [0, 1) with 24 random bits.
    public mutating func uniform() -> Float { Float(next() >> 40) * (1.0 / 16_777_216.0) }

    /// Uniform in [lo, hi).
    public mutating func uniform(_ lo: Float, _ hi: Float) -> Float { lo + (hi - lo) * uniform() }

    /// Standard normal by Box-Muller (one value per call).
    public mutating func normal() -> Float {
        let u1 = max(Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0), 1e-300)
        let u2 = Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0)
        return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }

    /// An integer in 0..<n.
    public mutating func int(below n: Int) -> Int { Int(next() % UInt64(max(n, 1))) }
}

extension Tensor {
    /// Uniform values in [lo, hi).
    public static func uniform(_ shape: [Int], lo: Float = 0, hi: Float = 1, rng: inout RandomState) -> Tensor {
        let t = Tensor(uninitialized: shape)
        for i in 0..<t.count { t.data[i] = rng.uniform(lo, hi) }
        return t
    }

    /// Normal values with the given mean and standard deviation.
    public static func normal(_ shape: [Int], mean: Float = 0, std: Float = 1, rng: inout RandomState) -> Tensor {
        let t = Tensor(uninitialized: shape)
        for i in 0..<t.count { t.data[i] = mean + std * rng.normal() }
        return t
    }

    /// Kaiming-uniform weights as PyTorch initialises Conv2d / Linear (a = sqrt(5)):
    /// U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = product of all dims but the first.
    public static func kaimingUniform(_ shape: [Int], rng: inout RandomState) -> Tensor {
        let fanIn = Swift.max(1, shape.dropFirst().reduce(1, *))
        let bound = 1 / Float(fanIn).squareRoot()
        return uniform(shape, lo: -bound, hi: bound, rng: &rng)
    }

    /// Kaiming-normal weights for ReLU-like layers: N(0, 2/fan_in).
    public static func kaimingNormal(_ shape: [Int], rng: inout RandomState) -> Tensor {
        let fanIn = Swift.max(1, shape.dropFirst().reduce(1, *))
        return normal(shape, std: (2 / Float(fanIn)).squareRoot(), rng: &rng)
    }
}
