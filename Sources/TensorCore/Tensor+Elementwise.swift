import CKernels
import Foundation

/// Element counts below this stay on one core.
let elementwiseGrain = 1 << 15

// MARK: - Binary ops with broadcasting

extension Tensor {
    /// out[i] = f(a[i'], b[i'']) over the broadcast shape.
    static func broadcastMap(_ a: Tensor, _ b: Tensor, _ f: (Float, Float) -> Float) -> Tensor {
        if a.shape == b.shape {
            let out = Tensor(uninitialized: a.shape)
            let pa = a.data, pb = b.data, po = out.data
            Parallel.chunks(a.count, grain: elementwiseGrain) { r in
                for i in r { po[i] = f(pa[i], pb[i]) }
            }
            return out
        }
        let plan = BroadcastPlan(a.shape, b.shape)
        let out = Tensor(uninitialized: plan.outShape)
        let pa = a.data, pb = b.data, po = out.data
        let n = plan.inner, sa = plan.innerA, sb = plan.innerB
        plan.forEachRow { o, ia, ib in
            for i in 0..<n { po[o + i] = f(pa[ia + i * sa], pb[ib + i * sb]) }
        }
        return out
    }

    /// Accumulates `local(g, a, b)` into the gradient of `t` (shape `t.shape`), reducing over
    /// broadcast dimensions from `outShape`.
    static func accumulateBroadcast(_ node: Node, shape: [Int], outShape: [Int], g: Buffer,
                                    a: Tensor, b: Tensor, _ local: (Float, Float, Float) -> Float) {
        if shape == outShape && a.shape == b.shape {
            let pg = g.ptr, pa = a.data, pb = b.data
            node.accumulate { dst in
                Parallel.chunks(g.count, grain: elementwiseGrain) { r in
                    for i in r { dst[i] += local(pg[i], pa[i], pb[i]) }
                }
            }
            return
        }
        // Full-size local gradient, then a reduction to the operand's shape.
        let plan = BroadcastPlan(a.shape, b.shape)
        let tmp = Buffer(count: g.count)
        let pg = g.ptr, pa = a.data, pb = b.data, pt = tmp.ptr
        let n = plan.inner, sa = plan.innerA, sb = plan.innerB
        plan.forEachRow { o, ia, ib in
            for i in 0..<n { pt[o + i] = local(pg[o + i], pa[ia + i * sa], pb[ib + i * sb]) }
        }
        node.accumulate { dst in Tensor.reduce(pt, from: outShape, to: shape, into: dst) }
    }

    public static func + (a: Tensor, b: Tensor) -> Tensor { addOrSubtract(a, b, sign: 1) }
    public static func - (a: Tensor, b: Tensor) -> Tensor { addOrSubtract(a, b, sign: -1) }

    /// a + sign * b; the gradient of b is sign * g, reduced over its broadcast dimensions.
    static func addOrSubtract(_ a: Tensor, _ b: Tensor, sign: Float) -> Tensor {
        let out = sign > 0 ? sumWithLaidValues(a, b) ?? broadcastMap(a, b, +) : broadcastMap(a, b, -)
        if needsGrad(a, b) {
            let (na, nb, sa, sb, so) = (a.node, b.node, a.shape, b.shape, out.shape)
            out.recording([a, b]) { g in
                for (node, shape, s) in [(na, sa, Float(1)), (nb, sb, sign)] {
                    guard let node else { continue }
                    var src = g
                    if s != 1 {
                        src = Buffer(count: g.count)
                        for i in 0..<g.count { src.ptr[i] = s * g.ptr[i] }
                    }
                    if shape == so { node.addGradient(src.ptr) }
                    else { node.accumulate { d in Tensor.reduce(src.ptr, from: so, to: shape, into: d) } }
                }
            }
            // The sum of two tensors backward can rebuild in oneDNN's layout (a residual connection).
            if sign > 0, out.node != nil, sa == sb, let ra = a.laidRecipe, let rb = b.laidRecipe {
                out.laidRecipe = LaidRecipe.sum(ra, rb)
            }
            // A sum of two tensors of which one's op reads a blocked gradient (a residual connection
            // around fused blocks) passes the gradient on in that block: a copy (or a sum) to a, the
            // buffer itself to b when b takes it, as the NCHW backward adds g to a and then to b.
            if sign > 0, let node = out.node, sa == sb, sa == so, sa.count == 4, na !== nb,
               let blk = na?.laid?.block ?? nb?.laid?.block, sa[1] % blk == 0 {
                let (images, channels, hw) = (sa[0], sa[1], sa[2] * sa[3])
                // Under bf16 the rounding of g is left to where it goes: a rounds as it adds, b's
                // reader rounds (or b's first sum).
                let rounds = node.gradFormat == .bf16
                node.laidRoundsAsItPasses = rounds
                node.laid = (block: blk, n: images, c: channels, hw: hw, backward: { g in
                    na?.addBlocked(g.ptr, srcC: channels, srcStart: 0, channels: channels, dstC: channels, dstStart: 0, n: images, hw: hw,
                                   block: blk, unrounded: rounds)
                    guard let nb else { return }
                    if nb.takesLaidGradient(block: blk) && nb.grad == nil {
                        nb.addLaidGradient(g, unrounded: rounds)
                    } else {
                        nb.addBlocked(g.ptr, srcC: channels, srcStart: 0, channels: channels, dstC: channels, dstStart: 0, n: images, hw: hw,
                                      block: blk, unrounded: rounds)
                    }
                })
            }
        }
        return out
    }

    /// a + b of one [N, C, H, W] shape where an operand carries its values in oneDNN's blocked layout
    /// for the convolutions that read it (`LaidValues`: bfloat16 words, or Float32): the sum written
    /// with its own laid values of the same kind in the same pass (a residual connection before
    /// C2f's next bottleneck and its concatenation), so a convolution reading the sum takes them
    /// instead of reordering it. The same values as the plain sum. nil elsewhere.
    static func sumWithLaidValues(_ a: Tensor, _ b: Tensor) -> Tensor? {
        let ctx = ComputeContext.current
        guard ctx.laidInputs, a.rank == 4, a.shape == b.shape, let laid = a.laidValues ?? b.laidValues,
              ctx.precision == (laid.isWords ? .bf16 : .fp32), laid.block % 8 == 0, a.shape[1] % laid.block == 0 else { return nil }
        let (n, c, hw, block) = (a.shape[0], a.shape[1], a.shape[2] * a.shape[3], laid.block)
        let k = ctx.k
        // Both operands' Float32 laid values: the sum of those (the same values), its plain values
        // deferred. Neither operand's plain values are read (nor made, when deferred).
        if !laid.isWords, ctx.deferPlainValues, let la = a.laidValues, let lb = b.laidValues, !la.isWords, !lb.isWords,
           la.n == n, lb.n == n, la.hw == hw, lb.hw == hw, la.block == block, lb.block == block, la.channels == c, lb.channels == c {
            let sum = Buffer(count: n * c * hw)
            let (ra, rb) = (la.blockRuns(), lb.blockRuns())
            let blocks = c / block, size = hw * block, ps = sum.ptr
            Parallel.chunks(n * blocks, grain: Swift.max(1, elementwiseGrain / Swift.max(size, 1))) { r in
                for item in r {
                    let (i, j) = (item / blocks, item % blocks)
                    k.pointee.add(ra[j].start + i * ra[j].imageStride, rb[j].start + i * rb[j].imageStride, ps + item * size, size)
                }
            }
            let values = LaidValues(.floats(sum), n: n, c: c, hw: hw, block: block)
            let out = Tensor(shape: a.shape, deferred: { values.plain(k) })
            out.laidValues = values
            return out
        }
        let out = Tensor(uninitialized: a.shape)
        let storage: LaidValues.Storage = laid.isWords ? .words(HalfBuffer(count: out.count)) : .floats(Buffer(count: out.count))
        let pa = a.data, pb = b.data, po = out.data
        let pw = laid.isWords ? storage.raw.assumingMemoryBound(to: UInt16.self) : nil
        let pf = laid.isWords ? nil : storage.raw.assumingMemoryBound(to: Float.self)
        Parallel.chunks(n * (c / block), grain: Swift.max(1, elementwiseGrain / Swift.max(hw * block, 1))) { r in
            k.pointee.add_laid(pa, pb, po, pw, pf, Int32(c), Int32(hw), Int32(block), Int32(r.lowerBound), Int32(r.upperBound))
        }
        out.laidValues = LaidValues(storage, n: n, c: c, hw: hw, block: block)
        return out
    }

    public static func * (a: Tensor, b: Tensor) -> Tensor {
        let out = broadcastMap(a, b, *)
        if needsGrad(a, b) {
            let (na, nb, so) = (a.node, b.node, out.shape)
            let (ad, bd) = (a.detached(), b.detached())
            out.recording([a, b]) { g in
                if let na { accumulateBroadcast(na, shape: ad.shape, outShape: so, g: g, a: ad, b: bd) { g, _, y in g * y } }
                if let nb { accumulateBroadcast(nb, shape: bd.shape, outShape: so, g: g, a: ad, b: bd) { g, x, _ in g * x } }
            }
        }
        return out
    }

    public static func / (a: Tensor, b: Tensor) -> Tensor {
        let out = broadcastMap(a, b, /)
        if needsGrad(a, b) {
            let (na, nb, so) = (a.node, b.node, out.shape)
            let (ad, bd) = (a.detached(), b.detached())
            out.recording([a, b]) { g in
                if let na { accumulateBroadcast(na, shape: ad.shape, outShape: so, g: g, a: ad, b: bd) { g, _, y in g / y } }
                if let nb { accumulateBroadcast(nb, shape: bd.shape, outShape: so, g: g, a: ad, b: bd) { g, x, y in -g * x / (y * y) } }
            }
        }
        return out
    }

    /// Element-wise maximum; on ties each side receives half the gradient (as PyTorch).
    public static func maximum(_ a: Tensor, _ b: Tensor) -> Tensor {
        let out = broadcastMap(a, b) { Swift.max($0, $1) }
        if needsGrad(a, b) {
            let (na, nb, so) = (a.node, b.node, out.shape)
            let (ad, bd) = (a.detached(), b.detached())
            out.recording([a, b]) { g in
                if let na { accumulateBroadcast(na, shape: ad.shape, outShape: so, g: g, a: ad, b: bd) { g, x, y in x > y ? g : (x == y ? g / 2 : 0) } }
                if let nb { accumulateBroadcast(nb, shape: bd.shape, outShape: so, g: g, a: ad, b: bd) { g, x, y in y > x ? g : (x == y ? g / 2 : 0) } }
            }
        }
        return out
    }

    /// Element-wise minimum; on ties each side receives half the gradient (as PyTorch).
    public static func minimum(_ a: Tensor, _ b: Tensor) -> Tensor {
        let out = broadcastMap(a, b) { Swift.min($0, $1) }
        if needsGrad(a, b) {
            let (na, nb, so) = (a.node, b.node, out.shape)
            let (ad, bd) = (a.detached(), b.detached())
            out.recording([a, b]) { g in
                if let na { accumulateBroadcast(na, shape: ad.shape, outShape: so, g: g, a: ad, b: bd) { g, x, y in x < y ? g : (x == y ? g / 2 : 0) } }
                if let nb { accumulateBroadcast(nb, shape: bd.shape, outShape: so, g: g, a: ad, b: bd) { g, x, y in y < x ? g : (x == y ? g / 2 : 0) } }
            }
        }
        return out
    }

    public static func + (a: Tensor, s: Float) -> Tensor { a.unary({ $0 + s }, saves: .none) { g, _, _ in g } }
    public static func + (s: Float, a: Tensor) -> Tensor { a + s }
    public static func - (a: Tensor, s: Float) -> Tensor { a + (-s) }
    public static func - (s: Float, a: Tensor) -> Tensor { a.unary({ s - $0 }, saves: .none) { g, _, _ in -g } }
    public static func * (a: Tensor, s: Float) -> Tensor { a.unary({ $0 * s }, saves: .none) { g, _, _ in g * s } }
    public static func * (s: Float, a: Tensor) -> Tensor { a * s }
    public static func / (a: Tensor, s: Float) -> Tensor { a * (1 / s) }
    public static prefix func - (a: Tensor) -> Tensor { a.unary({ -$0 }, saves: .none) { g, _, _ in -g } }
}

/// dst += src with the current context's kernels.
@inline(__always)
func addInto(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, _ n: Int) {
    let add = ComputeContext.current.k.pointee.add_into
    Parallel.chunks(n, grain: elementwiseGrain) { r in add(dst + r.lowerBound, src + r.lowerBound, r.count) }
}

extension Node {
    /// The gradient += src (count elements, the whole gradient); on a fresh gradient src is copied
    /// instead of added to zeros (no zero fill; a -0 stays -0).
    func addGradient(_ src: UnsafePointer<Float>) {
        let n = count
        accumulateOrSet { d, fresh in
            if fresh {
                Parallel.chunks(n, grain: elementwiseGrain) { r in (d + r.lowerBound).update(from: src + r.lowerBound, count: r.count) }
            } else {
                addInto(d, src, n)
            }
        }
    }
}

// MARK: - Unary ops

extension Tensor {
    /// What a unary op keeps for backward.
    enum UnarySave { case none, input, output }

    /// y = f(x) with backward dx += df(g, x, y). Saves x and/or y only when `saves` asks.
    func unary(_ f: (Float) -> Float, saves: UnarySave,
               _ df: @escaping (_ g: Float, _ x: Float, _ y: Float) -> Float) -> Tensor {
        let out = Tensor(uninitialized: shape)
        let px = data, py = out.data
        Parallel.chunks(count, grain: elementwiseGrain) { r in for i in r { py[i] = f(px[i]) } }
        if Tensor.needsGrad(self), let nx = node {
            let sx: Saved? = saves == .input ? ComputeContext.current.save(buffer) : nil
            let sy: Saved? = saves == .output ? ComputeContext.current.save(out.buffer) : nil
            let n = count
            out.recording([self]) { g in
                let xb = sx?.unpack(), yb = sy?.unpack()
                withExtendedLifetime((xb, yb)) {
                    let pg = g.ptr
                    let xp = xb?.ptr, yp = yb?.ptr
                    nx.accumulate { d in
                        Parallel.chunks(n, grain: elementwiseGrain) { r in
                            for i in r { d[i] += df(pg[i], xp?[i] ?? 0, yp?[i] ?? 0) }
                        }
                    }
                }
            }
        }
        return out
    }

    public func exp() -> Tensor { unary({ Foundation.exp($0) }, saves: .output) { g, _, y in g * y } }
    public func log() -> Tensor { unary({ Foundation.log($0) }, saves: .input) { g, x, _ in g / x } }
    public func sqrt() -> Tensor { unary({ $0.squareRoot() }, saves: .output) { g, _, y in g / (2 * y) } }
    public func abs() -> Tensor { unary({ Swift.abs($0) }, saves: .input) { g, x, _ in x > 0 ? g : (x < 0 ? -g : 0) } }
    public func atan() -> Tensor { unary({ Foundation.atan($0) }, saves: .input) { g, x, _ in g / (1 + x * x) } }
    public func square() -> Tensor { unary({ $0 * $0 }, saves: .input) { g, x, _ in 2 * g * x } }

    /// x^p for a scalar exponent.
    public func pow(_ p: Float) -> Tensor {
        if p == 2 { return square() }
        return unary({ Foundation.pow($0, p) }, saves: .input) { g, x, _ in g * p * Foundation.pow(x, p - 1) }
    }

    /// Clamps to [lo, hi]; the gradient passes where lo <= x <= hi (as PyTorch).
    public func clamp(min lo: Float = -.infinity, max hi: Float = .infinity) -> Tensor {
        unary({ Swift.min(Swift.max($0, lo), hi) }, saves: .input) { g, x, _ in (x >= lo && x <= hi) ? g : 0 }
    }

    public func relu() -> Tensor { unary({ Swift.max($0, 0) }, saves: .input) { g, x, _ in x > 0 ? g : 0 } }

    /// 1 / (1 + exp(-x)).
    public func sigmoid() -> Tensor {
        let out = Tensor(uninitialized: shape)
        let px = data, py = out.data
        let ctx = ComputeContext.current, k = ctx.k
        Parallel.chunks(count, grain: elementwiseGrain) { r in
            k.pointee.sigmoid_fwd(px + r.lowerBound, py + r.lowerBound, r.count)
        }
        if Tensor.needsGrad(self), let nx = node {
            let sy = ctx.save(out.buffer)
            let n = count
            out.recording([self]) { g in
                sy.withValues { y in
                    let pg = g.ptr
                    nx.accumulate { d in
                        Parallel.chunks(n, grain: elementwiseGrain) { r in
                            k.pointee.sigmoid_bwd(y + r.lowerBound, pg + r.lowerBound, d + r.lowerBound, r.count)
                        }
                    }
                }
            }
        }
        return out
    }

    /// x * sigmoid(x) (Ultralytics' default activation).
    public func silu() -> Tensor {
        let out = Tensor(uninitialized: shape)
        let px = data, py = out.data
        let ctx = ComputeContext.current, k = ctx.k
        Parallel.chunks(count, grain: elementwiseGrain) { r in
            k.pointee.silu_fwd(px + r.lowerBound, py + r.lowerBound, r.count)
        }
        if Tensor.needsGrad(self), let nx = node {
            let sx = ctx.save(buffer)
            let n = count
            out.recording([self]) { g in
                sx.withValues { x in
                    let pg = g.ptr
                    nx.accumulateOrSet { d, fresh in
                        Parallel.chunks(n, grain: elementwiseGrain) { r in
                            k.pointee.silu_bwd(x + r.lowerBound, pg + r.lowerBound, d + r.lowerBound, r.count, fresh ? 0 : 1)
                        }
                    }
                }
            }
        }
        return out
    }
}
