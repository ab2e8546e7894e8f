import Foundation
import TensorCore

/// The optimizer step as one fixed sequence:
/// unscale -> finite check (skip + back off) -> pre-clip norm -> clip -> step -> scaler update
/// -> zero gradients -> EMA.
public enum OptimizerStep {
    public enum Outcome: Equatable, Sendable {
        /// The parameters moved; `norm` is the pre-clip global L2 norm of the unscaled gradient.
        case stepped(norm: Double, clipped: Bool)
        /// Under loss scaling the loss or the scaled gradient overflowed: step skipped, scale
        /// backed off (normal), EMA updated as after any optimizer call.
        case overflow(LossScaler.Event)
        /// Non-finite loss or gradient without loss scaling: step skipped (counted by the trainer).
        case nonFinite
    }

    /// Runs the sequence on gradients accumulated with the loss multiplied by `scaler.scale`
    /// (`scaled`: dynamic loss scaling, the fp16 AMP default) or by 1. `lossFinite` false (a loss
    /// that overflowed in the forward pass) skips the step like an overflowing gradient.
    /// `maxNorm` nil or 0 leaves the gradient unclipped. `squares`, when given, receives each
    /// parameter's sum of squares of the unscaled gradient (table order) before the step.
    ///
    /// As Ultralytics (scaler.step, scaler.update, zero_grad, then ema.update unconditionally), the
    /// EMA is updated after a step skipped for a loss-scale overflow too, so its update count and
    /// decay ramp follow the optimizer calls.
    public static func run(table: ParamTable, optimizer: Optimizer, ema: EMA?, scaler: inout LossScaler,
                           scaled: Bool, maxNorm: Double?, lossFinite: Bool = true,
                           squares: (([Double]) -> Void)? = nil) -> Outcome {
        // Unscaling and the per-tensor squares in one visit of each gradient. A finite sum of
        // squares means every gradient is finite (an inf or NaN carries through); when it is not,
        // the elements are checked (finite values whose squares overflow Float lanes still step).
        let perTensor = lossFinite ? table.gradSquares(unscale: scaled ? Float(1 / scaler.scale) : nil) : []
        let norm = perTensor.reduce(0, +).squareRoot()
        guard lossFinite && (norm.isFinite || table.gradsFinite()) else {
            table.zeroGrad()
            guard scaled else { return .nonFinite }
            let event = scaler.update(foundInf: true)
            ema?.update()
            return .overflow(event)
        }
        squares?(perTensor)
        // torch.nn.utils.clip_grad_norm_: scaled by maxNorm / (norm + 1e-6) when that is below 1
        // (the factor applied in the optimizer's pass over each gradient).
        var clip: Float? = nil
        if let maxNorm, maxNorm > 0, norm.isFinite {
            let coef = maxNorm / (norm + 1e-6)
            if coef < 1 { clip = Float(coef) }
        }
        let clipped = clip != nil
        optimizer.step(gradScale: clip)
        if scaled { scaler.update(foundInf: false) }
        table.zeroGrad()
        ema?.update()
        return .stepped(norm: norm, clipped: clipped)
    }
}
