import TensorCore

/// Analytic and central-difference gradients of one input, with their worst disagreement.
public struct GradComparison: CustomStringConvertible {
    public let analytic: [Float]
    public let numeric: [Float]
    /// max |analytic - numeric| / max(max |numeric|, floor): error relative to the gradient's scale.
    public let scaledError: Double
    public let worstIndex: Int

    public var description: String {
        "scaled error \(scaledError) at \(worstIndex): analytic \(analytic[worstIndex]) numeric \(numeric[worstIndex])"
    }
}

/// Checks the gradients of `f` at `inputs` against central differences.
///
/// The scalar checked is sum(f(inputs) * R) with a fixed random R, accumulated in Double so the
/// differences are not swamped by Float rounding. Each element of each input is perturbed by
/// ±eps. Inputs are left unchanged. Returns one comparison per input.
public func gradientCheck(_ inputs: [Tensor], eps: Float = 1e-3, seed: UInt64 = 7,
                          _ f: ([Tensor]) -> Tensor) -> [GradComparison] {
    let probe = noGrad { f(inputs) }
    var rng = RandomState(seed: seed)
    let r = (0..<probe.count).map { _ in Double(rng.uniform(-1, 1)) }
    func objective() -> Double {
        let out = noGrad { f(inputs) }
        var s = 0.0
        for i in 0..<out.count { s += Double(out.data[i]) * r[i] }
        return s
    }
    // Analytic.
    let leaves = inputs.map { t -> Tensor in t.requiresGrad = true; t.zeroGrad(); return t }
    let out = f(leaves)
    let rt = Tensor(r.map(Float.init), shape: out.shape)
    (out * rt).sum().backward()
    var results: [GradComparison] = []
    for t in leaves {
        let analytic = t.grad?.array ?? [Float](repeating: 0, count: t.count)
        t.requiresGrad = false
        var numeric = [Float](repeating: 0, count: t.count)
        for i in 0..<t.count {
            let v = t.data[i]
            t.data[i] = v + eps
            let lp = objective()
            t.data[i] = v - eps
            let lm = objective()
            t.data[i] = v
            numeric[i] = Float((lp - lm) / (2 * Double(eps)))
        }
        let scale = max(numeric.map { Double(abs($0)) }.max() ?? 0, 1e-3)
        var worst = 0.0, wi = 0
        for i in 0..<t.count {
            let e = Double(abs(analytic[i] - numeric[i])) / scale
            if e > worst { worst = e; wi = i }
        }
        results.append(GradComparison(analytic: analytic, numeric: numeric, scaledError: worst, worstIndex: wi))
    }
    for t in inputs { t.requiresGrad = false }
    return results
}

/// Largest |a - b| / max(1, |b|) over two arrays (mixed absolute / relative error).
public func maxMixedError(_ a: [Float], _ b: [Float]) -> Double {
    precondition(a.count == b.count, "arrays differ in length: \(a.count) vs \(b.count)")
    var m = 0.0
    for i in 0..<a.count {
        let e = Double(abs(a[i] - b[i])) / max(1, Double(abs(b[i])))
        if e.isNaN { return .infinity }
        m = max(m, e)
    }
    return m
}

/// Largest |a - b| / max(|b|, floor) relative error.
public func maxRelativeError(_ a: [Float], _ b: [Float], floor: Double = 1e-6) -> Double {
    precondition(a.count == b.count, "arrays differ in length: \(a.count) vs \(b.count)")
    var m = 0.0
    for i in 0..<a.count {
        let e = Double(abs(a[i] - b[i])) / max(Double(abs(b[i])), floor)
        if e.isNaN { return .infinity }
        m = max(m, e)
    }
    return m
}
