import Foundation
import NN
import TensorCore

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
        let pairs = pairs
        Parallel.pieces(pairs.map { $0.live.count }) { k in
            let l = pairs[k].live.data, e = pairs[k].ema.data
            for i in 0..<pairs[k].live.count { e[i] = d * e[i] + (1 - d) * l[i] }
        }
    }

    /// Copies the averages into `named` tensors (by name), e.g. an evaluation model.
    public func copy(into named: [NamedTensor]) {
        let byName = Dictionary(uniqueKeysWithValues: pairs.map { ($0.name, $0.ema) })
        for t in named { if let e = byName[t.name] { t.tensor.data.update(from: e.data, count: e.count) } }
    }
}
