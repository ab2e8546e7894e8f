import Foundation
import NN
import TensorCore

/// Learning rate and momentum of one optimizer group.
public struct GroupSettings: Equatable, Sendable, Codable {
    public var lr: Double
    public var momentum: Double
    public var weightDecay: Double
    /// lr0 of the group (the schedule multiplies it).
    public var initialLR: Double
}

/// SGD (momentum, Nesterov, as torch.optim.SGD) or AdamW (as torch.optim.AdamW, betas
/// (beta1, 0.999), eps 1e-8), with Ultralytics' three groups.
///
/// Warmup ramps each group's `momentum`, which SGD uses; AdamW's beta1 is fixed at construction
/// (Ultralytics' AdamW groups carry `betas`, not `momentum`, so its warmup leaves them alone), and
/// AdamW's bias correction counts the updates of each parameter, as torch does.
public final class Optimizer {
    public enum Kind: String, Codable, Sendable { case sgd = "SGD", adamw = "AdamW" }
    public let kind: Kind
    public let table: ParamTable
    public var groups: [GroupSettings]
    public var nesterov = true
    /// AdamW's beta1 (fixed).
    public let beta1: Double
    /// First moment (SGD momentum buffer / AdamW m), per parameter, allocated on the first step.
    public var m: [Buffer?]
    /// AdamW second moment.
    public var v: [Buffer?]
    /// Optimizer calls.
    public var steps = 0
    /// Updates of each parameter (AdamW's bias-correction step).
    public var parameterSteps: [Int]

    public init(kind: Kind, table: ParamTable, lr: Double, momentum: Double, weightDecay: Double) {
        self.kind = kind
        self.table = table
        beta1 = momentum
        let g = GroupSettings(lr: lr, momentum: momentum, weightDecay: 0, initialLR: lr)
        groups = [g, GroupSettings(lr: lr, momentum: momentum, weightDecay: weightDecay, initialLR: lr), g]
        m = [Buffer?](repeating: nil, count: table.count)
        v = [Buffer?](repeating: nil, count: table.count)
        parameterSteps = [Int](repeating: 0, count: table.count)
    }

    /// One update of every parameter that has a gradient. `gradScale` (the clipping factor), when
    /// given, first multiplies each gradient in place, as a separate scaling pass would. The
    /// tensors are updated in one parallel loop (each element's arithmetic is the same on any
    /// thread count); state is allocated and step counts advanced before it.
    public func step(gradScale: Float? = nil) {
        steps += 1
        let k = ComputeContext.current.kernels
        let grads: [Buffer?] = table.params.map { $0.tensor.node?.grad }
        // SGD's momentum buffer takes the first gradient as it is (torch's buffer starts empty).
        var firstSteps = [Bool](repeating: false, count: grads.count)
        for (i, g) in grads.enumerated() {
            guard let g else { continue }
            parameterSteps[i] += 1
            if m[i] == nil {
                firstSteps[i] = true
                switch kind {
                case .sgd: m[i] = Buffer(count: g.count)   // the first step writes it whole
                case .adamw: m[i] = Buffer(count: g.count, repeating: 0); v[i] = Buffer(count: g.count, repeating: 0)
                }
            }
        }
        let kind = kind, nesterov = nesterov, b1 = Float(beta1)
        let settings = table.params.map { groups[$0.group] }
        let params = table.params, m = m, v = v, parameterSteps = parameterSteps
        Parallel.pieces(grads.map { $0?.count ?? 0 }) { i in
            guard let g = grads[i] else { return }
            let n = g.count
            if let gradScale { k.scale(g.ptr, gradScale, count: n) }
            let s = settings[i], w = params[i].tensor.data, gp = g.ptr
            let lr = Float(s.lr), mom = Float(s.momentum), wd = Float(s.weightDecay)
            switch kind {
            case .sgd:
                let first = firstSteps[i], buf = m[i]!.ptr
                for j in 0..<n {
                    let d = gp[j] + wd * w[j]
                    buf[j] = first ? d : mom * buf[j] + d
                    w[j] -= lr * (nesterov ? d + mom * buf[j] : buf[j])
                }
            case .adamw:
                let mb = m[i]!.ptr, vb = v[i]!.ptr
                let t = Double(parameterSteps[i])
                let b2: Float = 0.999, eps: Float = 1e-8
                let bc1 = 1 - Foundation.pow(Double(b1), t), bc2 = 1 - Foundation.pow(Double(b2), t)
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

    /// Ultralytics' `optimizer: auto` rule: for a run of more than 10,000 iterations
    /// (iterations = ceil(images / max(batch, nbs)) x epochs) SGD at lr 0.01, else AdamW at an lr
    /// fitted to the class count, round(0.002 x 5 / (4 + nc), 6); momentum 0.9 either way.
    /// (Ultralytics 8.4 picks its MuSGD for long runs; DualFuse has SGD.)
    public static func auto(nc: Int, iterations: Int) -> (kind: Kind, lr: Double, momentum: Double) {
        if iterations > 10_000 { return (.sgd, 0.01, 0.9) }
        let fit = (0.002 * 5 / Double(4 + nc) * 1e6).rounded() / 1e6
        return (.adamw, fit, 0.9)
    }

    /// Ultralytics' iteration count for the auto rule.
    public static func autoIterations(images: Int, batch: Int, nbs: Int, epochs: Int) -> Int {
        Int((Double(max(images, 1)) / Double(max(batch, nbs))).rounded(.up)) * epochs
    }
}
