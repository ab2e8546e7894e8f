import Foundation

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
