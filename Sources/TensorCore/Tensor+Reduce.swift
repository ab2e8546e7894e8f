import Foundation

extension Tensor {
    /// Splits the shape around `axis` into (outer, n, inner) for axis-wise loops.
    func around(_ axis: Int) -> (outer: Int, n: Int, inner: Int) {
        let a = normalize(axis)
        return (shape[..<a].reduce(1, *), shape[a], shape[(a + 1)...].reduce(1, *))
    }

    func reducedShape(_ axis: Int, keepDims: Bool) -> [Int] {
        let a = normalize(axis)
        var s = shape
        if keepDims { s[a] = 1 } else { s.remove(at: a) }
        return s
    }

    /// Sum of all elements, as a scalar (accumulated in Double).
    public func sum() -> Tensor {
        var s: Double = 0
        let p = data
        for i in 0..<count { s += Double(p[i]) }
        let out = Tensor(scalar: Float(s))
        if Tensor.needsGrad(self), let nx = node {
            let n = count
            out.recording([self]) { g in
                let v = g.ptr[0]
                nx.accumulate { d in for i in 0..<n { d[i] += v } }
            }
        }
        return out
    }

    /// Mean of all elements, as a scalar.
    public func mean() -> Tensor { sum() * (1 / Float(Swift.max(count, 1))) }

    /// Sum along `axis`.
    public func sum(axis: Int, keepDims: Bool = false) -> Tensor {
        let (outer, n, inner) = around(axis)
        let out = Tensor(zeros: reducedShape(axis, keepDims: keepDims))
        let px = data, po = out.data
        for o in 0..<outer {
            for j in 0..<n {
                let src = px + (o * n + j) * inner, dst = po + o * inner
                for i in 0..<inner { dst[i] += src[i] }
            }
        }
        if Tensor.needsGrad(self), let nx = node {
            out.recording([self]) { g in
                nx.accumulate { d in
                    for o in 0..<outer {
                        for j in 0..<n {
                            let dst = d + (o * n + j) * inner, src = g.ptr + o * inner
                            for i in 0..<inner { dst[i] += src[i] }
                        }
                    }
                }
            }
        }
        return out
    }

    /// Mean along `axis`.
    public func mean(axis: Int, keepDims: Bool = false) -> Tensor {
        sum(axis: axis, keepDims: keepDims) * (1 / Float(Swift.max(size(axis), 1)))
    }

    /// Maximum along `axis` and its index (the first on ties). The gradient goes to that index.
    public func max(axis: Int, keepDims: Bool = false) -> (values: Tensor, indices: [Int]) {
        let (outer, n, inner) = around(axis)
        precondition(n > 0, "max over an empty axis of shape \(shape)")
        let out = Tensor(uninitialized: reducedShape(axis, keepDims: keepDims))
        var idx = [Int](repeating: 0, count: outer * inner)
        let px = data, po = out.data
        for o in 0..<outer {
            for i in 0..<inner {
                var best = px[o * n * inner + i], bi = 0
                for j in 1..<n {
                    let v = px[(o * n + j) * inner + i]
                    if v > best || (best.isNaN == false && v.isNaN) { best = v; bi = j }
                }
                po[o * inner + i] = best
                idx[o * inner + i] = bi
            }
        }
        if Tensor.needsGrad(self), let nx = node {
            let saved = idx
            out.recording([self]) { g in
                nx.accumulate { d in
                    for o in 0..<outer {
                        for i in 0..<inner {
                            d[(o * n + saved[o * inner + i]) * inner + i] += g.ptr[o * inner + i]
                        }
                    }
                }
            }
        }
        return (out, idx)
    }

    /// Index of the maximum along `axis` (the first on ties). Not differentiable.
    public func argmax(axis: Int) -> [Int] { noGrad { max(axis: axis).indices } }

    /// Maximum of all elements.
    public func maxValue() -> Float {
        var m = -Float.infinity
        for i in 0..<count { m = Swift.max(m, data[i]) }
        return m
    }
}
