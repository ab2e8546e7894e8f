import Foundation
import NN
import TensorCore

/// A trainable tensor with its name and optimizer group.
public struct Param: @unchecked Sendable {
    public let name: String
    public let tensor: Tensor
    /// 0 biases (no decay), 1 conv weights (decay), 2 BN weights (no decay): Ultralytics' order,
    /// which makes results.csv's lr/pg0 the bias learning rate.
    public let group: Int
    /// Stream tag from the model YAML (`rgb`, `ir`, `fused`).
    public let stream: String
}

/// The one table of parameters: names, tensors, groups, stream tags. Clipping, finiteness
/// checks, EMA and the optimizer all loop over it.
public struct ParamTable: @unchecked Sendable {
    public let params: [Param]

    public init(_ named: [NamedTensor], streams: [String: String] = [:]) {
        params = named.filter { $0.role.isTrainable }.map { t in
            let g: Int
            switch t.role {
            case .bias: g = 0
            case .weight: g = 1
            default: g = 2
            }
            return Param(name: t.name, tensor: t.tensor, group: g, stream: streams[t.name] ?? "fused")
        }
    }

    public var count: Int { params.count }
    public var elementCount: Int { params.reduce(0) { $0 + $1.tensor.count } }

    public func zeroGrad() { for p in params { p.tensor.zeroGrad() } }

    /// Multiplies every gradient by `s` (unscaling).
    public func scaleGrads(_ s: Float) {
        for p in params { if let g = p.tensor.node?.grad { for i in 0..<g.count { g.ptr[i] *= s } } }
    }

    /// Whether every gradient is finite (missing gradients count as zero).
    public func gradsFinite() -> Bool {
        for p in params {
            guard let g = p.tensor.node?.grad else { continue }
            for i in 0..<g.count where !g.ptr[i].isFinite { return false }
        }
        return true
    }

    /// Global L2 norm of the gradients of the parameters accepted by `filter` (Double accumulation).
    public func gradNorm(_ filter: (Param) -> Bool = { _ in true }) -> Double {
        var s = 0.0
        for p in params where filter(p) {
            guard let g = p.tensor.node?.grad else { continue }
            var t: Float = 0
            for i in 0..<g.count { t += g.ptr[i] * g.ptr[i] }
            s += Double(t)
        }
        return s.squareRoot()
    }

    /// Clips to `maxNorm` as torch.nn.utils.clip_grad_norm_: scales by maxNorm / (norm + 1e-6) when
    /// that is below 1. Returns the norm before clipping.
    @discardableResult
    public func clipGradNorm(_ maxNorm: Double) -> (norm: Double, clipped: Bool) {
        let n = gradNorm()
        guard maxNorm > 0, n.isFinite else { return (n, false) }
        let coef = maxNorm / (n + 1e-6)
        if coef < 1 { scaleGrads(Float(coef)); return (n, true) }
        return (n, false)
    }
}

/// Learning rate and momentum of one optimizer group.
public struct GroupSettings: Equatable, Sendable, Codable {
    public var lr: Double
    public var momentum: Double
    public var weightDecay: Double
    /// lr0 of the group (the schedule multiplies it).
    public var initialLR: Double
}

/// SGD (momentum, Nesterov, as torch.optim.SGD) or AdamW (as torch.optim.AdamW, betas
/// (momentum, 0.999), eps 1e-8), with Ultralytics' three groups.
public final class Optimizer {
    public enum Kind: String, Codable, Sendable { case sgd = "SGD", adamw = "AdamW" }
    public let kind: Kind
    public let table: ParamTable
    public var groups: [GroupSettings]
    public var nesterov = true
    /// First moment (SGD momentum buffer / AdamW m), per parameter, allocated on the first step.
    public var m: [Buffer?]
    /// AdamW second moment.
    public var v: [Buffer?]
    public var steps = 0

    public init(kind: Kind, table: ParamTable, lr: Double, momentum: Double, weightDecay: Double) {
        self.kind = kind
        self.table = table
        let g = GroupSettings(lr: lr, momentum: momentum, weightDecay: 0, initialLR: lr)
        groups = [g, GroupSettings(lr: lr, momentum: momentum, weightDecay: weightDecay, initialLR: lr), g]
        m = [Buffer?](repeating: nil, count: table.count)
        v = [Buffer?](repeating: nil, count: table.count)
    }

    /// One update of every parameter that has a gradient.
    public func step() {
        steps += 1
        for (i, p) in table.params.enumerated() {
            guard let g = p.tensor.node?.grad else { continue }
            let s = groups[p.group]
            let w = p.tensor.data, gp = g.ptr, n = g.count
            let lr = Float(s.lr), mom = Float(s.momentum), wd = Float(s.weightDecay)
            switch kind {
            case .sgd:
                let first = m[i] == nil
                if first { m[i] = Buffer(count: n) }
                let buf = m[i]!.ptr
                for j in 0..<n {
                    let d = gp[j] + wd * w[j]
                    buf[j] = first ? d : mom * buf[j] + d
                    w[j] -= lr * (nesterov ? d + mom * buf[j] : buf[j])
                }
            case .adamw:
                if m[i] == nil { m[i] = Buffer(count: n, repeating: 0); v[i] = Buffer(count: n, repeating: 0) }
                let mb = m[i]!.ptr, vb = v[i]!.ptr
                let b1 = mom, b2: Float = 0.999, eps: Float = 1e-8
                let bc1 = 1 - Foundation.pow(Double(b1), Double(steps)), bc2 = 1 - Foundation.pow(Double(b2), Double(steps))
                let stepSize = Float(Double(lr) / bc1), bc2s = Float(bc2.squareRoot())
                for j in 0..<n {
                    w[j] *= 1 - lr * wd
                    mb[j] = b1 * mb[j] + (1 - b1) * gp[j]
                    vb[j] = b2 * vb[j] + (1 - b2) * gp[j] * gp[j]
                    w[j] -= stepSize * mb[j] / (vb[j].squareRoot() / bc2s + eps)
                }
            }
        }
    }

    /// Ultralytics' `optimizer: auto`: AdamW with lr fitted to the class count for short runs
    /// (<= 10,000 iterations), else SGD lr 0.01; momentum 0.9; it ignores lr0 and momentum.
    public static func auto(nc: Int, iterations: Int) -> (kind: Kind, lr: Double, momentum: Double) {
        if iterations > 10_000 { return (.sgd, 0.01, 0.9) }
        let fit = (0.002 * 5 / Double(4 + nc) * 1e6).rounded() / 1e6
        return (.adamw, fit, 0.9)
    }
}

/// Learning-rate schedule pieces (pure functions, tested at their boundaries).
public enum Schedule {
    /// The per-epoch LR factor: linear (1 - x/E)(1 - lrf) + lrf, or cosine from 1 to lrf
    /// (Ultralytics' one_cycle: (1 - cos(x pi / E)) / 2 (lrf - 1) + 1).
    public static func factor(epoch x: Int, epochs e: Int, lrf: Double, cosine: Bool) -> Double {
        let t = Double(x), n = Double(max(e, 1))
        if cosine { return max((1 - cos(t * Double.pi / n)) / 2, 0) * (lrf - 1) + 1 }
        return max(1 - t / n, 0) * (1 - lrf) + lrf
    }

    /// Warmup length in iterations: max(round(warmup_epochs x batches), minimum), or 0 when off
    /// (Ultralytics: minimum 100).
    public static func warmupIterations(warmupEpochs: Double, batchesPerEpoch: Int, minimum: Int = 100) -> Int {
        warmupEpochs > 0 ? max(Int((warmupEpochs * Double(batchesPerEpoch)).rounded(.toNearestOrEven)), minimum) : 0
    }

    /// np.interp(x, [0, n], [a, b]).
    public static func ramp(_ x: Int, over n: Int, from a: Double, to b: Double) -> Double {
        if x <= 0 { return a }
        if x >= n { return b }
        return a + (b - a) * Double(x) / Double(n)
    }

    /// Group settings at iteration `ni` (global batch index): during warmup the bias lr falls from
    /// warmup_bias_lr and the others rise from 0 towards lr0 x factor, momentum rises from
    /// warmup_momentum; after it, lr = lr0 x factor.
    public static func groups(_ base: [GroupSettings], iteration ni: Int, warmup nw: Int, factor: Double,
                              warmupBiasLR: Double, warmupMomentum: Double, momentum: Double) -> [GroupSettings] {
        base.enumerated().map { j, g in
            var s = g
            let target = g.initialLR * factor
            if nw > 0 && ni <= nw {
                s.lr = ramp(ni, over: nw, from: j == 0 ? warmupBiasLR : 0, to: target)
                s.momentum = ramp(ni, over: nw, from: warmupMomentum, to: momentum)
            } else {
                s.lr = target
                s.momentum = momentum
            }
            return s
        }
    }

    /// Batches per optimizer step during warmup: round(interp(ni, [0, nw], [1, nbs/batch])), at least 1.
    public static func warmupAccumulate(iteration ni: Int, warmup nw: Int, target: Int) -> Int {
        guard nw > 0 && ni <= nw else { return target }
        return max(1, Int(ramp(ni, over: nw, from: 1, to: Double(target)).rounded(.toNearestOrEven)))
    }
}

/// Dynamic loss scaling with torch.cuda.amp.GradScaler's semantics plus a floor.
public struct LossScaler: Codable, Equatable, Sendable {
    public var scale: Double
    public var growth: Double
    public var backoff: Double
    public var interval: Int
    public var minimum: Double
    /// Clean steps since the last growth or overflow.
    public var tracker = 0
    /// Overflows that hit the floor in a row (a persistent overflow, not a normal one).
    public var overflowsAtFloor = 0

    public init(initial: Double = 65536, growth: Double = 2, backoff: Double = 0.5, interval: Int = 2000, minimum: Double = 1) {
        (scale, self.growth, self.backoff, self.interval, self.minimum) = (initial, growth, backoff, interval, minimum)
    }

    public enum Event: Equatable, Sendable { case none, grew, backedOff, atFloor }

    /// After a step: on overflow multiply by backoff (not below the floor) and reset the tracker;
    /// after `interval` clean steps in a row multiply by growth.
    @discardableResult
    public mutating func update(foundInf: Bool) -> Event {
        if foundInf {
            tracker = 0
            if scale * backoff < minimum {
                let was = scale
                scale = minimum
                overflowsAtFloor = was <= minimum ? overflowsAtFloor + 1 : 0
                return .atFloor
            }
            scale *= backoff
            overflowsAtFloor = 0
            return .backedOff
        }
        overflowsAtFloor = 0
        tracker += 1
        if tracker >= interval {
            tracker = 0
            scale *= growth
            return .grew
        }
        return .none
    }
}

/// Exponential moving average of parameters and BN statistics (Ultralytics' ModelEMA).
public final class EMA {
    public let decay: Double
    public let tau: Double
    public var updates: Int
    /// (live tensor, averaged copy) for every parameter and running statistic.
    public let pairs: [(name: String, live: Tensor, ema: Tensor)]

    public init(_ named: [NamedTensor], decay: Double = 0.9999, tau: Double = 2000, updates: Int = 0) {
        self.decay = decay
        self.tau = tau
        self.updates = updates
        pairs = named.filter { $0.role.isTrainable || ($0.role == .buffer && !$0.name.hasSuffix("num_batches_tracked")) }
            .map { ($0.name, $0.tensor, $0.tensor.clone()) }
    }

    /// The decay after `updates` updates: decay x (1 - exp(-updates / tau)).
    public static func decay(_ d: Double, tau: Double, updates: Int) -> Double { d * (1 - exp(-Double(updates) / tau)) }

    public func update() {
        updates += 1
        let d = Float(EMA.decay(decay, tau: tau, updates: updates))
        for (_, live, ema) in pairs {
            let l = live.data, e = ema.data
            for i in 0..<live.count { e[i] = d * e[i] + (1 - d) * l[i] }
        }
    }

    /// Copies the averages into `named` tensors (by name), e.g. an evaluation model.
    public func copy(into named: [NamedTensor]) {
        let byName = Dictionary(uniqueKeysWithValues: pairs.map { ($0.name, $0.ema) })
        for t in named { if let e = byName[t.name] { t.tensor.data.update(from: e.data, count: e.count) } }
    }
}

/// The grad-probe rule: given the pre-clip norms of the first N steps, suggest
/// max_norm = sqrt(max(2 x mean, p95) x max), rounded to two significant digits: the geometric
/// mean of "comfortably above a typical step" and the largest spike, so typical steps pass and
/// spikes are cut (the seeds' example: mean 0.8, max 6 -> sqrt(1.6 x 6) = 3.1).
public enum GradProbe {
    public struct Summary: Equatable, Sendable {
        public let mean, p95, max, suggested: Double
    }

    public static func summarize(_ norms: [Double]) -> Summary? {
        let v = norms.filter { $0.isFinite }.sorted()
        guard !v.isEmpty else { return nil }
        let mean = v.reduce(0, +) / Double(v.count)
        let pos = 0.95 * Double(v.count - 1), lo = Int(pos), hi = min(lo + 1, v.count - 1)
        let p95 = v[lo] + (v[hi] - v[lo]) * (pos - Double(lo))     // numpy's linear percentile
        let mx = v.last!
        return Summary(mean: mean, p95: p95, max: mx, suggested: roundSignificant((max(2 * mean, p95) * mx).squareRoot(), digits: 2))
    }

    static func roundSignificant(_ x: Double, digits: Int) -> Double {
        guard x > 0 else { return 0 }
        let p = Foundation.pow(10, Double(digits) - ceil(log10(x)))
        return (x * p).rounded() / p
    }
}
