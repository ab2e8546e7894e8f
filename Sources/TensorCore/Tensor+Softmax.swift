import Foundation

extension Tensor {
    /// softmax along `axis`: exp(x - max) / sum(exp(x - max)).
    public func softmax(axis: Int) -> Tensor {
        let (outer, n, inner) = around(axis)
        let out = Tensor(uninitialized: shape)
        let px = data, po = out.data
        for o in 0..<outer {
            for i in 0..<inner {
                let base = o * n * inner + i
                var m = -Float.infinity
                for j in 0..<n { m = Swift.max(m, px[base + j * inner]) }
                var s: Float = 0
                for j in 0..<n { let e = Foundation.exp(px[base + j * inner] - m); po[base + j * inner] = e; s += e }
                let inv = 1 / s
                for j in 0..<n { po[base + j * inner] *= inv }
            }
        }
        if Tensor.needsGrad(self), let nx = node {
            let sy = ComputeContext.current.save(out.buffer)
            out.recording([self]) { g in
                sy.withValues { y in
                let pg = g.ptr
                nx.accumulate { d in
                    for o in 0..<outer {
                        for i in 0..<inner {
                            let base = o * n * inner + i
                            var dot: Float = 0
                            for j in 0..<n { dot += pg[base + j * inner] * y[base + j * inner] }
                            for j in 0..<n { let q = base + j * inner; d[q] += y[q] * (pg[q] - dot) }
                        }
                    }
                }
                }
            }
        }
        return out
    }

    /// log-softmax along `axis`: x - max - log(sum(exp(x - max))).
    public func logSoftmax(axis: Int) -> Tensor {
        let (outer, n, inner) = around(axis)
        let out = Tensor(uninitialized: shape)
        let px = data, po = out.data
        for o in 0..<outer {
            for i in 0..<inner {
                let base = o * n * inner + i
                var m = -Float.infinity
                for j in 0..<n { m = Swift.max(m, px[base + j * inner]) }
                var s: Float = 0
                for j in 0..<n { s += Foundation.exp(px[base + j * inner] - m) }
                let lse = m + Foundation.log(s)
                for j in 0..<n { po[base + j * inner] = px[base + j * inner] - lse }
            }
        }
        if Tensor.needsGrad(self), let nx = node {
            let sy = ComputeContext.current.save(out.buffer)
            out.recording([self]) { g in
                sy.withValues { y in
                let pg = g.ptr
                nx.accumulate { d in
                    for o in 0..<outer {
                        for i in 0..<inner {
                            let base = o * n * inner + i
                            var gs: Float = 0
                            for j in 0..<n { gs += pg[base + j * inner] }
                            for j in 0..<n { let q = base + j * inner; d[q] += pg[q] - Foundation.exp(y[q]) * gs }
                        }
                    }
                }
                }
            }
        }
        return out
    }

    /// Element-wise binary cross-entropy on logits, no reduction, in the stable form
    /// max(x, 0) - x*t + log(1 + exp(-|x|)). `target` has the same shape and gets no gradient.
    public func bceWithLogits(_ target: Tensor) -> Tensor {
        precondition(target.shape == shape, "bceWithLogits: target \(target.shape) vs logits \(shape)")
        let out = Tensor(uninitialized: shape)
        let px = data, pt = target.data, po = out.data
        for i in 0..<count {
            let x = px[i]
            po[i] = Swift.max(x, 0) - x * pt[i] + Foundation.log1p(Foundation.exp(-Swift.abs(x)))
        }
        if Tensor.needsGrad(self), let nx = node {
            let xs = detached(), ts = target.detached()
            out.recording([self]) { g in
                nx.accumulate { d in
                    for i in 0..<xs.count {
                        let s = 1 / (1 + Foundation.exp(-xs.data[i]))
                        d[i] += g.ptr[i] * (s - ts.data[i])
                    }
                }
            }
        }
        return out
    }

    /// Matrix product of [M, K] and [K, N] (cblas_sgemm).
    public func matmul(_ b: Tensor) -> Tensor {
        precondition(rank == 2 && b.rank == 2 && shape[1] == b.shape[0],
                     "matmul needs [M,K] x [K,N], got \(shape) x \(b.shape)")
        let (m, k, n) = (shape[0], shape[1], b.shape[1])
        let out = Tensor(uninitialized: [m, n])
        let ctx = ComputeContext.current
        if m * n > 0 {
            BLAS.useThreads(of: ctx)
            if k == 0 { out.buffer.zero() }
            else { BLAS.sgemm(m: m, n: n, k: k, a: data, b: b.data, c: out.data) }
        }
        if Tensor.needsGrad(self, b) {
            let (na, nb) = (node, b.node)
            let (ad, bd) = (detached(), b.detached())
            out.recording([self, b]) { g in
                BLAS.useThreads(of: ctx)
                if let na, k > 0 {   // dA = g [M,N] x B^T [N,K]
                    na.accumulateOrSet { d, fresh in
                        BLAS.sgemm(transB: true, m: m, n: k, k: n, a: g.ptr, b: bd.data, beta: fresh ? 0 : 1, c: d)
                    }
                }
                if let nb, k > 0 {   // dB = A^T [K,M] x g [M,N]
                    nb.accumulateOrSet { d, fresh in
                        BLAS.sgemm(transA: true, m: k, n: n, k: m, a: ad.data, b: g.ptr, beta: fresh ? 0 : 1, c: d)
                    }
                }
            }
        }
        return out
    }
}
