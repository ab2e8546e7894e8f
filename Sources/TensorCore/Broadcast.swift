/// NumPy-style broadcasting of two shapes, lowered to a loop of contiguous rows.
///
/// The output shape is padded and merged ("coalesced") so that the innermost loop is as long as
/// possible; each operand has a stride per output dimension, 0 where it is broadcast.
struct BroadcastPlan {
    /// Output shape after merging.
    let dims: [Int]
    let stridesA: [Int]
    let stridesB: [Int]
    let outShape: [Int]

    static func shape(_ a: [Int], _ b: [Int]) -> [Int] {
        let r = max(a.count, b.count)
        var out = [Int](repeating: 1, count: r)
        for i in 0..<r {
            let da = i < r - a.count ? 1 : a[i - (r - a.count)]
            let db = i < r - b.count ? 1 : b[i - (r - b.count)]
            precondition(da == db || da == 1 || db == 1, "shapes \(a) and \(b) do not broadcast")
            out[i] = da == 1 ? db : da
        }
        return out
    }

    /// Strides of `shape` aligned to the right of `outShape`, 0 on broadcast dimensions.
    static func alignedStrides(_ shape: [Int], to outShape: [Int]) -> [Int] {
        let r = outShape.count
        let s = Tensor.strides(shape)
        var out = [Int](repeating: 0, count: r)
        for i in 0..<shape.count {
            let o = i + (r - shape.count)
            out[o] = shape[i] == 1 ? 0 : s[i]
        }
        return out
    }

    init(_ a: [Int], _ b: [Int]) {
        let out = BroadcastPlan.shape(a, b)
        outShape = out
        var d = out
        var sa = BroadcastPlan.alignedStrides(a, to: out)
        var sb = BroadcastPlan.alignedStrides(b, to: out)
        // Drop size-1 dims, then merge neighbours that are contiguous for both operands.
        var nd: [Int] = [], na: [Int] = [], nb: [Int] = []
        for i in 0..<d.count where d[i] != 1 {
            nd.append(d[i]); na.append(sa[i]); nb.append(sb[i])
        }
        if nd.isEmpty { nd = [1]; na = [0]; nb = [0] }
        d = [nd[0]]; sa = [na[0]]; sb = [nb[0]]
        for i in 1..<nd.count {
            let last = d.count - 1
            if sa[last] == na[i] * nd[i] && sb[last] == nb[i] * nd[i] {
                d[last] *= nd[i]
                sa[last] = na[i]
                sb[last] = nb[i]
            } else {
                d.append(nd[i]); sa.append(na[i]); sb.append(nb[i])
            }
        }
        dims = d
        stridesA = sa
        stridesB = sb
    }

    /// Calls `row(outOffset, aOffset, bOffset)` for every innermost row (length `dims.last`).
    /// Row order is row-major over the output.
    func forEachRow(_ row: (Int, Int, Int) -> Void) {
        let r = dims.count
        let inner = dims[r - 1]
        if r == 1 { row(0, 0, 0); return }
        var idx = [Int](repeating: 0, count: r - 1)
        var offA = 0, offB = 0, o = 0
        let rows = dims.dropLast().reduce(1, *)
        for _ in 0..<rows {
            row(o, offA, offB)
            o += inner
            var k = r - 2
            while k >= 0 {
                idx[k] += 1
                offA += stridesA[k]
                offB += stridesB[k]
                if idx[k] < dims[k] { break }
                offA -= stridesA[k] * dims[k]
                offB -= stridesB[k] * dims[k]
                idx[k] = 0
                k -= 1
            }
        }
    }

    var innerA: Int { stridesA[dims.count - 1] }
    var innerB: Int { stridesB[dims.count - 1] }
    var inner: Int { dims[dims.count - 1] }
}

extension Tensor {
    /// Sums `g` (laid out as `from`) over the broadcast dimensions down to `shape`.
    static func reduce(_ g: UnsafePointer<Float>, from: [Int], to shape: [Int],
                       into dst: UnsafeMutablePointer<Float>) {
        // The plan of (from, shape) pairs every element of `from` with its target in `shape`.
        let plan = BroadcastPlan(from, shape)
        precondition(plan.outShape == from, "cannot reduce \(from) to \(shape)")
        let n = plan.inner
        let sb = plan.innerB
        plan.forEachRow { o, _, b in
            if sb == 0 {
                var s: Float = 0
                for i in 0..<n { s += g[o + i] }
                dst[b] += s
            } else {
                for i in 0..<n { dst[b + i * sb] += g[o + i] }
            }
        }
    }
}
