import Foundation

extension Tensor {
    /// Same storage, new shape (one dimension may be -1). Free: storage is always contiguous.
    public func reshape(_ newShape: [Int]) -> Tensor {
        var s = newShape
        if let k = s.firstIndex(of: -1) {
            let rest = s.enumerated().filter { $0.offset != k }.map(\.element).reduce(1, *)
            precondition(rest > 0 && count % rest == 0, "cannot reshape \(shape) to \(newShape)")
            s[k] = count / rest
        }
        precondition(Tensor.product(s) == count, "cannot reshape \(shape) (\(count) elements) to \(newShape)")
        let out = sharingStorage(shape: s)
        if Tensor.needsGrad(self), let nx = node {
            out.recording([self]) { g in nx.addGradient(g.ptr) }
        }
        return out
    }

    /// Storage is always contiguous, so this is the tensor itself (kept for PyTorch-shaped code).
    public func contiguous() -> Tensor { self }

    /// Reorders dimensions: out.shape[i] = shape[dims[i]]. Copies.
    public func permute(_ dims: [Int]) -> Tensor {
        precondition(dims.sorted() == Array(0..<rank), "permute \(dims) is not a permutation of 0..<\(rank)")
        let outShape = dims.map { shape[$0] }
        let out = Tensor(uninitialized: outShape)
        Tensor.permuteCopy(data, shape: shape, dims: dims, into: out.data, accumulate: false)
        if Tensor.needsGrad(self), let nx = node {
            var inverse = [Int](repeating: 0, count: dims.count)
            for (i, d) in dims.enumerated() { inverse[d] = i }
            out.recording([self]) { g in
                nx.accumulate { d in
                    Tensor.permuteCopy(g.ptr, shape: outShape, dims: inverse, into: d, accumulate: true)
                }
            }
        }
        return out
    }

    /// dst (shape dims.map{shape[$0]}) = permutation of src; `+=` when accumulate.
    static func permuteCopy(_ src: UnsafePointer<Float>, shape: [Int], dims: [Int],
                            into dst: UnsafeMutablePointer<Float>, accumulate: Bool) {
        let inStrides = Tensor.strides(shape)
        let outShape = dims.map { shape[$0] }
        let r = outShape.count
        let total = Tensor.product(outShape)
        if total == 0 { return }
        if r == 0 { if accumulate { dst[0] += src[0] } else { dst[0] = src[0] }; return }
        let srcStride = dims.map { inStrides[$0] }
        var idx = [Int](repeating: 0, count: r)
        var off = 0
        let inner = outShape[r - 1], innerStride = srcStride[r - 1]
        var o = 0
        while o < total {
            if accumulate { for i in 0..<inner { dst[o + i] += src[off + i * innerStride] } }
            else { for i in 0..<inner { dst[o + i] = src[off + i * innerStride] } }
            o += inner
            var k = r - 2
            while k >= 0 {
                idx[k] += 1
                off += srcStride[k]
                if idx[k] < outShape[k] { break }
                off -= srcStride[k] * outShape[k]
                idx[k] = 0
                k -= 1
            }
        }
    }

    /// Elements `start..<start+length` along `axis` (a copy).
    public func narrow(axis: Int, start: Int, length: Int) -> Tensor {
        let a = normalize(axis)
        precondition(start >= 0 && length >= 0 && start + length <= shape[a],
                     "narrow \(start)..<\(start + length) out of range for axis \(a) of \(shape)")
        let (outer, n, inner) = around(a)
        var outShape = shape
        outShape[a] = length
        let block = length * inner
        // A channel slice of laid values: its plain values deferred, made from the Float32 laid
        // ones, or (bfloat16 words) copied out of this tensor's plain values then.
        let laidSlice = rank == 4 && a == 1 ? laidValues?.slice(start: start, length: length) : nil
        let out = Tensor.withPlainValues(outShape, laid: laidSlice) { po in
            let px = self.data
            Parallel.chunks(outer, grain: Swift.max(1, elementwiseGrain / Swift.max(block, 1))) { r in
                for o in r { (po + o * block).update(from: px + (o * n + start) * inner, count: block) }
            }
        }
        if Tensor.needsGrad(self), let nx = node {
            out.recording([self]) { g in
                // The slice's gradient added (or, on a fresh gradient, copied with zeros around it),
                // rows in parallel.
                let k = ComputeContext.current.k
                nx.accumulateOrSet { d, fresh in
                    Parallel.chunks(outer, grain: Swift.max(1, elementwiseGrain / Swift.max(n * inner, 1))) { r in
                        for o in r {
                            let row = d + o * n * inner, dst = row + start * inner, src = g.ptr + o * block
                            if fresh {
                                row.update(repeating: 0, count: start * inner)
                                dst.update(from: src, count: block)
                                (dst + block).update(repeating: 0, count: (n - start - length) * inner)
                            } else {
                                k.pointee.add_into(dst, src, block)
                            }
                        }
                    }
                }
            }
            // A channel slice of a tensor backward can rebuild in oneDNN's layout can be rebuilt too.
            if out.node != nil, rank == 4, a == 1, let r = laidRecipe { out.laidRecipe = r.slice(start: start, length: length) }
            // A channel slice of a tensor whose op reads a blocked gradient passes one on: added into
            // those channels of the source's gradient, blocked or NCHW (under bf16 rounded to
            // bfloat16 values as it goes, instead of a rounding pass before).
            if let node = out.node, rank == 4, a == 1, let b = nx.laid?.block, start % b == 0, length % b == 0 {
                let (images, channels, hw) = (shape[0], shape[1], shape[2] * shape[3])
                let rounds = node.gradFormat == .bf16
                node.laidRoundsAsItPasses = rounds
                node.laid = (block: b, n: images, c: length, hw: hw, backward: { g in
                    nx.addBlocked(g.ptr, srcC: length, srcStart: 0, channels: length, dstC: channels, dstStart: start, n: images, hw: hw,
                                  block: b, unrounded: rounds)
                })
            }
        }
        return out
    }

    /// Pieces of the given sizes along `axis`.
    public func split(_ sizes: [Int], axis: Int) -> [Tensor] {
        precondition(sizes.reduce(0, +) == size(axis), "split sizes \(sizes) do not add up to \(size(axis))")
        var start = 0
        return sizes.map { len in
            defer { start += len }
            return narrow(axis: axis, start: start, length: len)
        }
    }

    /// `chunks` equal pieces along `axis` (the last may be smaller, as torch.chunk).
    public func chunk(_ chunks: Int, axis: Int) -> [Tensor] {
        let n = size(axis)
        let each = (n + chunks - 1) / chunks
        var sizes: [Int] = []
        var left = n
        while left > 0 { sizes.append(Swift.min(each, left)); left -= each }
        return split(sizes, axis: axis)
    }

    /// Joins tensors along `axis`; all other dimensions must agree.
    public static func concat(_ parts: [Tensor], axis: Int) -> Tensor {
        precondition(!parts.isEmpty, "concat of no tensors")
        let a = parts[0].normalize(axis)
        var outShape = parts[0].shape
        outShape[a] = 0
        for p in parts {
            precondition(p.rank == parts[0].rank, "concat rank mismatch: \(p.shape) vs \(parts[0].shape)")
            for d in 0..<p.rank where d != a {
                precondition(p.shape[d] == parts[0].shape[d],
                             "concat along \(a): shape \(p.shape) does not match \(parts[0].shape)")
            }
            outShape[a] += p.shape[a]
        }
        let outer = outShape[..<a].reduce(1, *)
        let inner = outShape[(a + 1)...].reduce(1, *)
        let total = outShape[a] * inner
        var offsets: [Int] = []
        var off = 0
        for p in parts { offsets.append(off); off += p.shape[a] * inner }
        let blocks = parts.map { $0.shape[a] * inner }
        // Along channels, of tensors that all carry laid values: those concatenated (the parts
        // gathered by the convolution that reads them), and the plain values deferred: made from
        // Float32 laid ones, or (bfloat16 words) copied out of the parts' plain values then.
        var laid: LaidValues? = nil
        if outShape.count == 4, a == 1 {
            let all = parts.compactMap(\.laidValues)
            if all.count == parts.count { laid = LaidValues.concat(all) }
        }
        let out = Tensor.withPlainValues(outShape, laid: laid) { po in
            let ptrs = parts.map { $0.data }
            Parallel.chunks(outer) { r in
                for o in r {
                    for k in 0..<parts.count {
                        (po + o * total + offsets[k]).update(from: ptrs[k] + o * blocks[k], count: blocks[k])
                    }
                }
            }
        }
        if GradMode.isEnabled && parts.contains(where: { $0.node != nil }) {
            let nodes = parts.map { $0.node }
            out.recording(parts) { g in
                for k in 0..<nodes.count {
                    guard let nk = nodes[k] else { continue }
                    let blk = blocks[k], offk = offsets[k]
                    nk.accumulateOrSet { d, fresh in
                        Parallel.chunks(outer) { r in
                            for o in r {
                                let src = g.ptr + o * total + offk, dst = d + o * blk
                                if fresh { dst.update(from: src, count: blk) }
                                else { for i in 0..<blk { dst[i] += src[i] } }
                            }
                        }
                    }
                }
            }
            // Channels of tensors backward can rebuild in oneDNN's layout: rebuilt part by part.
            if out.node != nil, outShape.count == 4, a == 1 {
                let recipes = parts.compactMap(\.laidRecipe)
                if recipes.count == parts.count { out.laidRecipe = LaidRecipe.concat(recipes) }
            }
            // Where a part's op reads a blocked gradient, the concatenation takes one in that block
            // (every part a whole number of blocks) and hands each part its channels: blocked to the
            // parts that read it, NCHW to the others (under bf16 rounded as they go).
            if let node = out.node, outShape.count == 4, a == 1, let b = nodes.lazy.compactMap({ $0?.laid?.block }).first,
               parts.allSatisfy({ $0.shape[1] % b == 0 }) {
                let (images, channels, hw) = (outShape[0], outShape[1], outShape[2] * outShape[3])
                let counts = parts.map { $0.shape[1] }, rounds = node.gradFormat == .bf16
                node.laidRoundsAsItPasses = rounds
                node.laid = (block: b, n: images, c: channels, hw: hw, backward: { g in
                    var start = 0
                    for k in 0..<nodes.count {
                        defer { start += counts[k] }
                        nodes[k]?.addBlocked(g.ptr, srcC: channels, srcStart: start, channels: counts[k], dstC: counts[k], dstStart: 0,
                                             n: images, hw: hw, block: b, unrounded: rounds)
                    }
                })
            }
        }
        return out
    }

    /// Rows `indices` along `axis` (indices may repeat; the gradient adds up).
    public func indexSelect(axis: Int, _ indices: [Int]) -> Tensor {
        let a = normalize(axis)
        let (outer, n, inner) = around(a)
        var outShape = shape
        outShape[a] = indices.count
        let out = Tensor(uninitialized: outShape)
        let px = data, po = out.data
        let m = indices.count
        for o in 0..<outer {
            for (j, ix) in indices.enumerated() {
                precondition(ix >= 0 && ix < n, "index \(ix) out of range 0..<\(n) on axis \(a)")
                (po + (o * m + j) * inner).update(from: px + (o * n + ix) * inner, count: inner)
            }
        }
        if Tensor.needsGrad(self), let nx = node {
            out.recording([self]) { g in
                nx.accumulate { d in
                    for o in 0..<outer {
                        for (j, ix) in indices.enumerated() {
                            let dst = d + (o * n + ix) * inner, src = g.ptr + (o * m + j) * inner
                            for i in 0..<inner { dst[i] += src[i] }
                        }
                    }
                }
            }
        }
        return out
    }

    /// torch.gather: out[..., j, ...] = self[..., index[..., j, ...], ...] along `axis`;
    /// `index` has the output's shape (as Int array, row-major) and matches self elsewhere.
    public func gather(axis: Int, index: [Int], indexShape: [Int]) -> Tensor {
        let a = normalize(axis)
        precondition(indexShape.count == rank, "gather index rank \(indexShape.count) != \(rank)")
        for d in 0..<rank where d != a {
            precondition(indexShape[d] == shape[d], "gather index shape \(indexShape) vs \(shape) on dim \(d)")
        }
        precondition(index.count == Tensor.product(indexShape), "gather index has \(index.count) values for shape \(indexShape)")
        let (outer, n, inner) = around(a)
        let m = indexShape[a]
        let out = Tensor(uninitialized: indexShape)
        let px = data, po = out.data
        for o in 0..<outer {
            for j in 0..<m {
                for i in 0..<inner {
                    let q = (o * m + j) * inner + i
                    let ix = index[q]
                    precondition(ix >= 0 && ix < n, "gather index \(ix) out of range 0..<\(n)")
                    po[q] = px[(o * n + ix) * inner + i]
                }
            }
        }
        if Tensor.needsGrad(self), let nx = node {
            out.recording([self]) { g in
                nx.accumulate { d in
                    for o in 0..<outer {
                        for j in 0..<m {
                            for i in 0..<inner {
                                let q = (o * m + j) * inner + i
                                d[(o * n + index[q]) * inner + i] += g.ptr[q]
                            }
                        }
                    }
                }
            }
        }
        return out
    }
}
