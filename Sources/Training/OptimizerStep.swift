import Foundation
import TensorCore

/// The optimizer step as one fixed sequence:
/// unscale -> finite check (skip + back off) -> pre-clip norm -> clip -> step -> scaler update
/// -> zero gradients -> EMA.
public enum OptimizerStep {
    public enum Outcome: Equatable, Sendable {
        /// The parameters moved; `norm` is the pre-clip global L2 norm of the unscaled gradient.
        case stepped(norm: Double, clipped: Bool)
        /// Under AMP the scaled gradient overflowed: step skipped, scale backed off (normal).
        case overflow(LossScaler.Event)
        /// Non-finite gradient without AMP: step skipped (counted by the trainer).
        case nonFinite
    }

    /// Runs the sequence on gradients accumulated with the loss multiplied by `scaler.scale` (AMP)
    /// or by 1. `maxNorm` nil or 0 leaves the gradient unclipped.
    public static func run(table: ParamTable, optimizer: Optimizer, ema: EMA?, scaler: inout LossScaler,
                           amp: Bool, maxNorm: Double?) -> Outcome {
        if amp { table.scaleGrads(Float(1 / scaler.scale)) }
        guard table.gradsFinite() else {
            table.zeroGrad()
            return amp ? .overflow(scaler.update(foundInf: true)) : .nonFinite
        }
        var norm = 0.0, clipped = false
        if let maxNorm, maxNorm > 0 { (norm, clipped) = table.clipGradNorm(maxNorm) } else { norm = table.gradNorm() }
        optimizer.step()
        if amp { scaler.update(foundInf: false) }
        table.zeroGrad()
        ema?.update()
        return .stepped(norm: norm, clipped: clipped)
    }
}
