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
        let k = ComputeContext.current.kernels
        for p in params { if let g = p.tensor.node?.grad { k.scale(g.ptr, s, count: g.count) } }
    }

    /// Whether every gradient is finite (missing gradients count as zero).
    public func gradsFinite() -> Bool {
        let k = ComputeContext.current.kernels
        for p in params {
            guard let g = p.tensor.node?.grad else { continue }
            if !k.allFinite(g.ptr, count: g.count) { return false }
        }
        return true
    }

    /// Each parameter's gradient sum of squares (0 where it has none), in one parallel loop over
    /// the tensors; with `unscale`, each gradient is first multiplied by it (the loss scale
    /// removed) in the same visit. Summed in table order they give `gradNorm()`'s square exactly.
    public func gradSquares(unscale: Float? = nil) -> [Double] {
        let k = ComputeContext.current.kernels
        var out = [Double](repeating: 0, count: params.count)
        out.withUnsafeMutableBufferPointer { o in
            Parallel.pieces(params.map { $0.tensor.count }) { i in
                guard let g = params[i].tensor.node?.grad else { return }
                if let unscale { k.scale(g.ptr, unscale, count: g.count) }
                o[i] = k.sumSquares(g.ptr, count: g.count)
            }
        }
        return out
    }

    /// Global L2 norm of the gradients of the parameters accepted by `filter` (per tensor in 16
    /// Float lanes, summed in Double).
    public func gradNorm(_ filter: (Param) -> Bool = { _ in true }) -> Double {
        let k = ComputeContext.current.kernels
        var s = 0.0
        for p in params where filter(p) {
            guard let g = p.tensor.node?.grad else { continue }
            s += k.sumSquares(g.ptr, count: g.count)
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
