import CKernels

/// Geometry of a 2-D convolution with a square kernel (groups 1).
public struct ConvGeometry: Sendable, Equatable {
    public let n, c, h, w: Int        // input [N, C, H, W]
    public let o, k, s, p: Int        // weight [O, C, k, k], stride, zero padding
    public var oh: Int { (h + 2 * p - k) / s + 1 }
    public var ow: Int { (w + 2 * p - k) / s + 1 }
    /// GEMM inner size C*k*k.
    public var kdim: Int { c * k * k }
    /// Output pixels per image.
    public var pixels: Int { oh * ow }
    /// 1x1, stride 1, no padding: the image is already the column matrix.
    public var isPointwise: Bool { k == 1 && s == 1 && p == 0 }

    public init(n: Int, c: Int, h: Int, w: Int, o: Int, k: Int, s: Int, p: Int) {
        (self.n, self.c, self.h, self.w, self.o, self.k, self.s, self.p) = (n, c, h, w, o, k, s, p)
    }

    /// Multiply-adds of the forward pass (one GEMM of M=o, N=n*pixels, K=kdim).
    public var macs: Int { o * kdim * n * pixels }
}

extension Tensor {
    /// 2-D convolution (cross-correlation, as PyTorch), groups 1, square kernel.
    ///
    /// x: [N, C, H, W], weight: [O, C, k, k], bias: [O] or nil -> [N, O, oH, oW].
    /// Lowered per image to a GEMM: out[n] [O, oH*oW] = W [O, C*k*k] x columns [C*k*k, oH*oW],
    /// with columns = im2col(x[n]) (skipped for the pointwise case); see `Conv` for the three GEMMs
    /// and how they are spread over threads.
    ///
    /// Autocast: under `.fp16` the output is rounded to IEEE half (a forward overflow becomes inf,
    /// as an fp16 convolution's would); under `.bf16` the GEMM operands are bfloat16 and the output
    /// is rounded to bfloat16. The input saved for the weight gradient is stored in 16 bits, and
    /// the weight and bias gradients of the batch pass through the 16-bit format before they are
    /// added to the Float32 gradient (an fp16 / bf16 convolution's backward produces them so).
    public static func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor? = nil, stride: Int = 1,
                              padding: Int = 0) -> Tensor {
        precondition(x.rank == 4 && weight.rank == 4, "conv2d needs 4-D input and weight, got \(x.shape), \(weight.shape)")
        precondition(weight.shape[1] == x.shape[1], "conv2d: weight \(weight.shape) expects \(weight.shape[1]) input channels, input has \(x.shape[1])")
        precondition(weight.shape[2] == weight.shape[3], "conv2d: square kernels only, got \(weight.shape)")
        let g = ConvGeometry(n: x.shape[0], c: x.shape[1], h: x.shape[2], w: x.shape[3],
                             o: weight.shape[0], k: weight.shape[2], s: stride, p: padding)
        precondition(g.oh > 0 && g.ow > 0, "conv2d: output would be empty for \(x.shape), k=\(g.k) s=\(stride) p=\(padding)")
        if let bias { precondition(bias.shape == [g.o], "conv2d: bias \(bias.shape) != [\(g.o)]") }
        let ctx = ComputeContext.current
        let mode = ctx.precision
        let route = OneDNN.route(ctx, bf16: mode == .bf16)
        let out = Tensor(uninitialized: [g.n, g.o, g.oh, g.ow])
        // On oneDNN the weight gradient takes x in oneDNN's layout, kept from the forward's own
        // reorder, instead of x itself (FP32) or a 16-bit NCHW copy (bf16) that backward would reorder
        // again. Only where that copy is no larger (no channel padding); the storage is raw 16-bit
        // words (Float32 values take two). Not under fp16 emulation or bfloat16 on Float32
        // primitives: there x is kept as the 16-bit copy.
        var kept: HalfBuffer?
        if let route, route != .bf16OnF32, mode != .fp16, needsGrad(weight) {
            let bytes = OneDNN.keepBytes(g, bf16: route.dnnlBF16)
            if bytes > 0 && bytes <= x.count * (route.dnnlBF16 ? 2 : 4) { kept = HalfBuffer(count: bytes / 2) }
        }
        let onDNNL = Conv.forward(ctx, g, x: x.data, w: weight.data, y: out.data, bf16: mode == .bf16,
                                  keepX: kept.map { UnsafeMutableRawPointer($0.ptr) })
        if !onDNNL { kept = nil }
        if let bias { addChannelBias(out.data, bias.data, n: g.n, c: g.o, hw: g.pixels) }
        // oneDNN's bfloat16 convolution already wrote bfloat16 values (unless a bias was added since).
        if mode != .fp32 && !(onDNNL && mode == .bf16 && bias == nil) { Conv.round(ctx, out.data, count: out.count, to: mode) }

        if needsGrad(x, weight) || (bias.map { needsGrad($0) } ?? false) {
            let nx = x.node, nw = weight.node, nb = bias?.node
            let sx: Saved? = nw != nil && kept == nil ? ctx.save(x.buffer) : nil
            if let kept { ctx.saved.count(bytes: kept.bytes) }
            let wd = weight.detached()
            var inputs = [x, weight]
            if let bias { inputs.append(bias) }
            out.recording(inputs) { gy in
                let bctx = ComputeContext.current
                if let nb {
                    var sums = [Float](repeating: 0, count: g.o)
                    sums.withUnsafeMutableBufferPointer { channelSums(gy.ptr, n: g.n, c: g.o, hw: g.pixels, into: $0.baseAddress!) }
                    if mode != .fp32 { sums.withUnsafeMutableBufferPointer { Conv.round(bctx, $0.baseAddress!, count: g.o, to: mode) } }
                    nb.accumulate { d in for j in 0..<g.o { d[j] += sums[j] } }
                }
                if let nw, let kept {
                    nw.accumulate { d in
                        Conv.weightGrad(bctx, g, x: nil, gy: gy.ptr, gw: d, mode: mode, keepGy: nx != nil, keptX: UnsafeRawPointer(kept.ptr))
                    }
                } else if let nw, let sx {
                    sx.withValues { xp in
                        // oneDNN keeps gy's reordered copy for the input gradient below. Under bf16,
                        // x saved in bfloat16 and gy (this output's gradient, rounded by backward)
                        // hold bfloat16 values already.
                        nw.accumulate { d in
                            Conv.weightGrad(bctx, g, x: xp, gy: gy.ptr, gw: d, mode: mode, keepGy: nx != nil, operandsRounded: sx.format == .bf16)
                        }
                    }
                }
                if let nx {
                    // A first gradient is assigned, not added to zeros (on oneDNN a plain reorder
                    // instead of a zero fill and a summing one).
                    nx.accumulateOrSet { d, fresh in
                        Conv.inputGrad(bctx, g, w: wd.data, gy: gy.ptr, gx: d, fresh: fresh, bf16: mode == .bf16, reuseGy: nw != nil,
                                       gyRounded: mode == .bf16)
                    }
                }
            }
        }
        return out
    }

    /// silu(conv2d(x, weight, bias)) when `silu`, else conv2d. Without a gradient to record, in
    /// Float32, the bias and SiLU are one pass over the output (the inference path of a folded Conv
    /// block): on oneDNN, where it keeps the output channel-blocked (`OneDNN.blockedOut`), that pass
    /// reads the blocked output and writes NCHW, in place of oneDNN's reorder (with
    /// `fuseConvBatchNorm`); else in place over the NCHW output. Otherwise the SiLU op follows. The
    /// values are the same bit for bit.
    public static func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor? = nil, stride: Int = 1,
                              padding: Int = 0, silu: Bool) -> Tensor {
        let ctx = ComputeContext.current
        guard silu, ctx.precision == .fp32, !needsGrad(x, weight), !(bias.map { needsGrad($0) } ?? false) else {
            let y = conv2d(x, weight: weight, bias: bias, stride: stride, padding: padding)
            return silu ? y.silu() : y
        }
        if let y = blockedInference(x, weight: weight, bias: bias, stride: stride, padding: padding, ctx) { return y }
        let y = conv2d(x, weight: weight, stride: stride, padding: padding)
        let (n, c, hw) = (y.shape[0], y.shape[1], y.shape[2] * y.shape[3])
        let py = y.data, pb = bias?.data, k = ctx.k
        Parallel.chunks(c, grain: Swift.max(1, elementwiseGrain / Swift.max(n * hw, 1))) { r in
            k.pointee.channel_bias_silu(py, Int32(n), Int32(c), Int32(hw), Int32(r.lowerBound), Int32(r.upperBound), pb, 1)
        }
        return y
    }

    /// silu(conv2d(x, weight) + bias) through oneDNN's channel-blocked output, or nil where that
    /// path does not apply (see `conv2d(_:weight:bias:stride:padding:silu:)`).
    static func blockedInference(_ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int, padding: Int,
                                 _ ctx: ComputeContext) -> Tensor? {
        guard ctx.fuseConvBatchNorm, x.rank == 4, weight.rank == 4, weight.shape[1] == x.shape[1], weight.shape[2] == weight.shape[3],
              OneDNN.handles(ctx, bf16: false) else { return nil }
        let g = ConvGeometry(n: x.shape[0], c: x.shape[1], h: x.shape[2], w: x.shape[3],
                             o: weight.shape[0], k: weight.shape[2], s: stride, p: padding)
        guard g.oh > 0, g.ow > 0, bias.map({ $0.shape == [g.o] }) ?? true,
              let laid = OneDNN.blockedOut(g, bf16: false), laid.bytes == g.n * g.o * g.pixels * 4 else { return nil }
        let z = Buffer(count: g.n * g.o * g.pixels)
        // x in the layout the forward takes, where the op that made x wrote it so (no reorder).
        var xLaid: LaidValues.Storage? = nil
        if ctx.laidInputs, let w = x.laidValues, !w.isWords, w.n == g.n, w.hw == g.h * g.w, w.channels == g.c,
           OneDNN.forwardSourceBlock(g, bf16: false) == w.block {
            xLaid = w.gathered()
        }
        let done = withExtendedLifetime(xLaid) {
            OneDNN.forwardLaid(ctx, g, x: xLaid != nil ? nil : UnsafePointer(x.data), w: weight.data, y: UnsafeMutableRawPointer(z.ptr),
                               bf16: false, keepX: nil,
                               frozen: ctx.frozenWeights, xLaid: xLaid.map { UnsafeRawPointer($0.raw) })
        }
        guard done else { return nil }
        if xLaid != nil { ctx.laidInputsTaken += 1 }
        // silu(z * 1 + b): z * 1 is z exactly, so these are the bits of silu(z + b).
        let ones = [Float](repeating: 1, count: g.o)
        let shift = bias.map { Array(UnsafeBufferPointer(start: $0.data, count: g.o)) } ?? [Float](repeating: 0, count: g.o)
        let (n, c, hw, B) = (g.n, g.o, g.pixels, laid.block), k = ctx.k, zp = UnsafePointer(z.ptr)
        // The output also in z's layout, for the convolutions that read it (`LaidValues`); with
        // `deferPlainValues` the NCHW output is made from those only when something reads it.
        let floats = ctx.laidInputs ? Buffer(count: n * c * hw) : nil
        let outShape = [g.n, g.o, g.oh, g.ow]
        let out: Tensor
        if let floats, ctx.deferPlainValues {
            let values = LaidValues(.floats(floats), n: n, c: c, hw: hw, block: B)
            out = Tensor(shape: outShape, deferred: { values.plain(k) })
        } else {
            out = Tensor(uninitialized: outShape)
        }
        let po: UnsafeMutablePointer<Float>? = out.hasPlainValues ? out.data : nil
        let pf = floats?.ptr
        ones.withUnsafeBufferPointer { sp in
            shift.withUnsafeBufferPointer { hp in
                let spp = sp.baseAddress!, hpp = hp.baseAddress!
                Parallel.chunks(n * (c / B), grain: Swift.max(1, elementwiseGrain / Swift.max(hw * B, 1))) { r in
                    k.pointee.blocked_affine(zp, nil, 0, Int32(n), Int32(c), Int32(hw), Int32(B), Int32(r.lowerBound),
                                             Int32(r.upperBound), spp, hpp, po, nil, pf, 1)
                }
            }
        }
        if let floats { out.laidValues = LaidValues(.floats(floats), n: n, c: c, hw: hw, block: B) }
        return out
    }

    /// Forward pass only (no autodiff), for tests and benchmarks: y = conv(x) with the current context.
    public static func convForward(_ g: ConvGeometry, x: UnsafePointer<Float>, w: UnsafePointer<Float>,
                                   y: UnsafeMutablePointer<Float>) {
        let ctx = ComputeContext.current
        Conv.forward(ctx, g, x: x, w: w, y: y, bf16: ctx.precision == .bf16)
    }

    /// gw += the batch's weight gradient (see `Conv.weightGrad`), with the current context.
    public static func convWeightGrad(_ g: ConvGeometry, x: UnsafePointer<Float>, gy: UnsafePointer<Float>,
                                      gw: UnsafeMutablePointer<Float>) {
        let ctx = ComputeContext.current
        Conv.weightGrad(ctx, g, x: x, gy: gy, gw: gw, mode: ctx.precision)
    }

    /// gx (+)= the input gradient (see `Conv.inputGrad`), with the current context.
    public static func convInputGrad(_ g: ConvGeometry, w: UnsafePointer<Float>, gy: UnsafePointer<Float>,
                                     gx: UnsafeMutablePointer<Float>, fresh: Bool) {
        let ctx = ComputeContext.current
        Conv.inputGrad(ctx, g, w: w, gy: gy, gx: gx, fresh: fresh, bf16: ctx.precision == .bf16)
    }

    /// y[n, c, :] += b[c].
    static func addChannelBias(_ y: UnsafeMutablePointer<Float>, _ b: UnsafePointer<Float>, n: Int, c: Int, hw: Int) {
        Parallel.chunks(n * c, grain: Swift.max(1, elementwiseGrain / Swift.max(hw, 1))) { r in
            for q in r {
                let v = b[q % c], p = y + q * hw
                for i in 0..<hw { p[i] += v }
            }
        }
    }

    /// d[c] += sum over n and pixels of g[n, c, :].
    static func channelSums(_ g: UnsafePointer<Float>, n: Int, c: Int, hw: Int, into d: UnsafeMutablePointer<Float>) {
        for ch in 0..<c {
            var s: Double = 0
            for i in 0..<n {
                let p = g + (i * c + ch) * hw
                var t: Float = 0
                for j in 0..<hw { t += p[j] }
                s += Double(t)
            }
            d[ch] += Float(s)
        }
    }
}

/// The convolution's three GEMMs and their threading.
///
/// forward     out[n] [O, P]   = W [O, K] x col[n] [K, P]            (M = O, N = P, K = C*k*k)
/// input grad  col [K, P]      = W^T [K, O] x gy[n] [O, P], then col2im into gx[n]
/// weight grad part[n] [O, K]  = gy[n] [O, P] x col[n]^T [P, K]; gw += part[0] + part[1] + ...
///
/// With two or more images and threads, images run concurrently, each worker with its own column
/// and packing scratch; with one image the GEMM's N (pixels) is split across threads (the weight
/// gradient's M). The GEMM computes every output element as one chain over k whatever the split,
/// and the weight gradient is summed per image in image order, so results are the same for every
/// thread count and kernel level. Backend: the packed GEMMs of `CKernels` (the default) or
/// OpenBLAS (`ComputeContext.gemm = .openblas`, Float32 only; for comparisons).
enum Conv {
    /// Scratch slots of a worker: 0 column matrix, 1 GEMM packing, 2 weight-gradient partials (worker 0).
    static let colSlot = 0, packSlot = 1, partialSlot = 2
    static let packFloats = Int(df_gemm_workspace_floats())

    static func imageParallel(_ ctx: ComputeContext, _ n: Int) -> Bool { n >= 2 && ctx.threads >= 2 && !Parallel.isWorker }

    /// Rounds `count` values in place to the autocast format.
    static func round(_ ctx: ComputeContext, _ p: UnsafeMutablePointer<Float>, count: Int, to mode: Precision) {
        let f = mode == .bf16 ? ctx.k.pointee.round_bf16 : ctx.k.pointee.round_f16
        Parallel.chunks(count, grain: 1 << 16) { r in f(p + r.lowerBound, r.count) }
    }

    /// A copy of `count` values rounded to bfloat16: an operand of a bfloat16 convolution that runs
    /// on oneDNN's Float32 primitives (`OneDNN.Route.bf16OnF32`).
    static func roundedBF16(_ ctx: ComputeContext, _ p: UnsafePointer<Float>, count: Int) -> Buffer {
        let b = Buffer(count: count)
        let dst = b.ptr, f = ctx.k.pointee.round_bf16
        Parallel.chunks(count, grain: 1 << 16) { r in
            (dst + r.lowerBound).update(from: p + r.lowerBound, count: r.count)
            f(dst + r.lowerBound, r.count)
        }
        return b
    }

    /// gx [count] = (fresh), else +=, the bfloat16 rounding of what `body` assigns into the storage
    /// it is given: an input gradient of a bfloat16 convolution on Float32 primitives, rounded as
    /// oneDNN's bfloat16 primitive writes it before it is added. False when `body` fails (then gx
    /// is unchanged, or when fresh, not written in full).
    static func roundedBF16Gradient(_ ctx: ComputeContext, _ gx: UnsafeMutablePointer<Float>, count: Int, fresh: Bool,
                                    _ body: (UnsafeMutablePointer<Float>) -> Bool) -> Bool {
        if fresh {
            guard body(gx) else { return false }
            round(ctx, gx, count: count, to: .bf16)
            return true
        }
        let t = Buffer(count: count)
        guard body(t.ptr) else { return false }
        let tp = t.ptr, k = ctx.k
        Parallel.chunks(count, grain: 1 << 16) { r in
            k.pointee.round_bf16(tp + r.lowerBound, r.count)
            k.pointee.add_into(gx + r.lowerBound, tp + r.lowerBound, r.count)
        }
        return true
    }

    /// One single-threaded GEMM: C[M, N] (=, or += when accumulate) A x B on the context's backend.
    static func gemm(_ ctx: ComputeContext, ws: UnsafeMutablePointer<Float>, m: Int, n: Int, k: Int, a: df_matrix, b: df_matrix,
                     c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool, bf16: Bool) {
        if ctx.gemm == .openblas && !bf16 {
            BLAS.setThreads(1)   // single-threaded: the caller parallelises over images or output rows
            let transA = a.cs != 1, transB = b.cs != 1
            BLAS.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, a: a.p, lda: transA ? a.cs : a.rs,
                       b: b.p, ldb: transB ? b.cs : b.rs, beta: accumulate ? 1 : 0, c: c, ldc: ldc)
            return
        }
        let f = bf16 ? ctx.k.pointee.bgemm : ctx.k.pointee.sgemm
        f(Int32(m), Int32(n), Int32(k), a, b, c, ldc, accumulate ? 1 : 0, ws)
    }

    /// Splits `0..<n` into `parts` contiguous ranges (the last ones may be empty when n < parts).
    static func split(_ n: Int, _ parts: Int, _ i: Int, align: Int = 32) -> Range<Int> {
        let blocks = (n + align - 1) / align
        let lo = Swift.min(n, blocks * i / parts * align), hi = Swift.min(n, blocks * (i + 1) / parts * align)
        return lo..<hi
    }

    /// Per-worker scratch pointers, fetched on the context's thread before work is handed out.
    static func scratch(_ ctx: ComputeContext, workers: Int, slot: Int, count: Int) -> [UnsafeMutablePointer<Float>] {
        (0..<Swift.max(workers, 1)).map { ctx.workspace.get($0, slot, count: count) }
    }

    /// The column matrix of image `xi`: the image itself for the pointwise case, else im2col into
    /// `col` (over all channels on this thread, or split across threads when `parallel`).
    static func columns(_ ctx: ComputeContext, _ g: ConvGeometry, _ xi: UnsafePointer<Float>, _ col: UnsafeMutablePointer<Float>,
                        parallel: Bool) -> UnsafePointer<Float> {
        if g.isPointwise { return xi }
        let f = ctx.k.pointee.im2col
        let grain = Swift.max(1, 16384 / Swift.max(g.k * g.k * g.pixels, 1))
        let body = { (r: Range<Int>) in
            f(xi, Int32(g.c), Int32(g.h), Int32(g.w), Int32(g.k), Int32(g.s), Int32(g.p),
              Int32(g.oh), Int32(g.ow), Int32(r.lowerBound), Int32(r.upperBound), col)
        }
        if parallel { Parallel.chunks(g.c, grain: grain, body) } else { body(0..<g.c) }
        return UnsafePointer(col)
    }

    /// y[n] = W x columns(x[n]) for every image. Shapes as `ConvGeometry`. Returns true when oneDNN
    /// computed it (under bf16 its output then holds bfloat16 values, on either route).
    @discardableResult
    static func forward(_ ctx: ComputeContext, _ g: ConvGeometry, x: UnsafePointer<Float>, w: UnsafePointer<Float>,
                        y: UnsafeMutablePointer<Float>, bf16: Bool, keepX: UnsafeMutableRawPointer? = nil) -> Bool {
        switch OneDNN.route(ctx, bf16: bf16) {
        case .bf16OnF32?:
            let xr = roundedBF16(ctx, x, count: g.n * g.c * g.h * g.w), wr = roundedBF16(ctx, w, count: g.o * g.kdim)
            let done = withExtendedLifetime((xr, wr)) { OneDNN.forward(ctx, g, x: xr.ptr, w: wr.ptr, y: y, bf16: false, keepX: nil) }
            if done {
                round(ctx, y, count: g.n * g.o * g.pixels, to: .bf16)   // as oneDNN's bfloat16 primitive writes it
                return true
            }
        case let route?:
            if ctx.frozenWeights && keepX == nil && !ctx.gradEnabled,
               OneDNN.forwardFrozen(ctx, g, x: x, w: w, y: y, bf16: route.dnnlBF16) { return true }
            if OneDNN.forward(ctx, g, x: x, w: w, y: y, bf16: route.dnnlBF16, keepX: keepX) { return true }
        case nil: break
        }
        let inSize = g.c * g.h * g.w, outSize = g.o * g.pixels
        let colCount = g.isPointwise ? 0 : g.kdim * g.pixels
        let a = df_matrix(p: w, rs: g.kdim, cs: 1)
        if imageParallel(ctx, g.n) {
            let workers = Parallel.workers(g.n)
            let cols = scratch(ctx, workers: workers, slot: colSlot, count: colCount)
            let packs = scratch(ctx, workers: workers, slot: packSlot, count: packFloats)
            Parallel.indexedChunks(g.n) { worker, images in
                for i in images {
                    let b = columns(ctx, g, x + i * inSize, cols[worker], parallel: false)
                    gemm(ctx, ws: packs[worker], m: g.o, n: g.pixels, k: g.kdim, a: a, b: df_matrix(p: b, rs: g.pixels, cs: 1),
                         c: y + i * outSize, ldc: g.pixels, accumulate: false, bf16: bf16)
                }
            }
        } else {
            let threads = Parallel.threads
            let col = scratch(ctx, workers: 1, slot: colSlot, count: colCount)[0]
            let packs = scratch(ctx, workers: threads, slot: packSlot, count: packFloats)
            for i in 0..<g.n {
                let b = columns(ctx, g, x + i * inSize, col, parallel: true)
                Parallel.indexedChunks(threads) { worker, _ in
                    let cols = split(g.pixels, threads, worker)
                    if cols.isEmpty { return }
                    gemm(ctx, ws: packs[worker], m: g.o, n: cols.count, k: g.kdim, a: a,
                         b: df_matrix(p: b + cols.lowerBound, rs: g.pixels, cs: 1),
                         c: y + i * outSize + cols.lowerBound, ldc: g.pixels, accumulate: false, bf16: bf16)
                }
            }
        }
        return false
    }

    /// gw [O, K] += (under autocast: the 16-bit rounding of) sum over images, in image order, of
    /// gy[n] [O, P] x columns(x[n])^T [P, K].
    /// With `keepGy`, oneDNN keeps gy's reordered copy for an `inputGrad(reuseGy: true)` that follows at once.
    /// With `keptX` (x as `forward(keepX:)` left it in oneDNN's layout) `x` is nil.
    /// `operandsRounded`: under bf16, x and gy hold bfloat16 values already (no rounded copies are
    /// made where oneDNN's Float32 primitives run the bfloat16 convolution).
    static func weightGrad(_ ctx: ComputeContext, _ g: ConvGeometry, x: UnsafePointer<Float>?, gy: UnsafePointer<Float>,
                           gw: UnsafeMutablePointer<Float>, mode: Precision, keepGy: Bool = false, keptX: UnsafeRawPointer? = nil,
                           operandsRounded: Bool = false) {
        let inSize = g.c * g.h * g.w, outSize = g.o * g.pixels
        let colCount = g.isPointwise ? 0 : g.kdim * g.pixels, wCount = g.o * g.kdim
        let bf16 = mode == .bf16
        let parts = ctx.workspace.get(0, partialSlot, count: g.n * wCount)
        if let route = OneDNN.route(ctx, bf16: bf16) {
            let copy = route == .bf16OnF32 && !operandsRounded
            let xr = copy ? x.map { roundedBF16(ctx, $0, count: g.n * inSize) } : nil
            let gyr = copy ? roundedBF16(ctx, gy, count: g.n * outSize) : nil
            let done = withExtendedLifetime((xr, gyr)) {
                OneDNN.weightGrad(ctx, g, x: xr.map { UnsafePointer($0.ptr) } ?? x, gy: gyr.map { UnsafePointer($0.ptr) } ?? gy, gw: parts,
                                  bf16: route.dnnlBF16, keepGy: keepGy && !copy, keptX: keptX)
            }
            if done {
                if mode != .fp32 { round(ctx, parts, count: wCount, to: mode) }
                for j in 0..<wCount { gw[j] += parts[j] }
                return
            }
        }
        guard let x else {
            // oneDNN did not take this pass after keeping x in its layout: x back in Float32 NCHW.
            let plain = Buffer(count: inSize)
            guard let keptX, OneDNN.unkeep(g, bf16: bf16, kept: keptX, x: plain.ptr) else {
                preconditionFailure("convolution weight gradient: oneDNN kept the input and can no longer convert it back")
            }
            withExtendedLifetime(plain) { weightGrad(ctx, g, x: plain.ptr, gy: gy, gw: gw, mode: mode) }
            return
        }
        func bView(_ col: UnsafePointer<Float>) -> df_matrix { df_matrix(p: col, rs: 1, cs: g.pixels) }   // B(p, kk) = col[kk, p]
        if imageParallel(ctx, g.n) {
            let workers = Parallel.workers(g.n)
            let cols = scratch(ctx, workers: workers, slot: colSlot, count: colCount)
            let packs = scratch(ctx, workers: workers, slot: packSlot, count: packFloats)
            Parallel.indexedChunks(g.n) { worker, images in
                for i in images {
                    let b = columns(ctx, g, x + i * inSize, cols[worker], parallel: false)
                    gemm(ctx, ws: packs[worker], m: g.o, n: g.kdim, k: g.pixels, a: df_matrix(p: gy + i * outSize, rs: g.pixels, cs: 1),
                         b: bView(b), c: parts + i * wCount, ldc: g.kdim, accumulate: false, bf16: bf16)
                }
            }
        } else {
            let threads = Parallel.threads
            let col = scratch(ctx, workers: 1, slot: colSlot, count: colCount)[0]
            let packs = scratch(ctx, workers: threads, slot: packSlot, count: packFloats)
            for i in 0..<g.n {
                let b = columns(ctx, g, x + i * inSize, col, parallel: true)
                Parallel.indexedChunks(threads) { worker, _ in
                    let rows = split(g.o, threads, worker, align: 8)
                    if rows.isEmpty { return }
                    gemm(ctx, ws: packs[worker], m: rows.count, n: g.kdim, k: g.pixels,
                         a: df_matrix(p: gy + i * outSize + rows.lowerBound * g.pixels, rs: g.pixels, cs: 1),
                         b: bView(b), c: parts + i * wCount + rows.lowerBound * g.kdim, ldc: g.kdim, accumulate: false, bf16: bf16)
                }
            }
        }
        // Sum the images in order, round under autocast, add to the gradient.
        let n = g.n
        let roundF = mode == .bf16 ? ctx.k.pointee.round_bf16 : ctx.k.pointee.round_f16
        Parallel.chunks(wCount, grain: 1 << 14) { r in
            let len = r.count
            let first = parts + r.lowerBound
            for i in 1..<Swift.max(n, 1) {
                let src = parts + i * wCount + r.lowerBound
                for j in 0..<len { first[j] += src[j] }
            }
            if mode != .fp32 { roundF(first, len) }
            let dst = gw + r.lowerBound
            for j in 0..<len { dst[j] += first[j] }
        }
    }

    /// gx[n] (+)= col2im(W^T [K, O] x gy[n] [O, P]). With `fresh` gx is uninitialised and is
    /// assigned (oneDNN writes every element; the packed path folds k > 1 columns into zeros).
    /// `gyRounded`: under bf16, gy holds bfloat16 values already (see `weightGrad`).
    static func inputGrad(_ ctx: ComputeContext, _ g: ConvGeometry, w: UnsafePointer<Float>, gy: UnsafePointer<Float>,
                          gx: UnsafeMutablePointer<Float>, fresh: Bool, bf16: Bool, reuseGy: Bool = false, gyRounded: Bool = false) {
        switch OneDNN.route(ctx, bf16: bf16) {
        case .bf16OnF32?:
            let wr = roundedBF16(ctx, w, count: g.o * g.kdim)
            let gyr = gyRounded ? nil : roundedBF16(ctx, gy, count: g.n * g.o * g.pixels)
            let gyp = gyr.map { UnsafePointer($0.ptr) } ?? gy
            let done = withExtendedLifetime((wr, gyr)) {
                roundedBF16Gradient(ctx, gx, count: g.n * g.c * g.h * g.w, fresh: fresh) {
                    OneDNN.inputGrad(ctx, g, w: wr.ptr, gy: gyp, gx: $0, accumulate: false, bf16: false, reuseGy: reuseGy && gyr == nil)
                }
            }
            if done { return }
        case let route?:
            if OneDNN.inputGrad(ctx, g, w: w, gy: gy, gx: gx, accumulate: !fresh, bf16: route.dnnlBF16, reuseGy: reuseGy) { return }
        case nil: break
        }
        var fresh = fresh
        if fresh && !g.isPointwise {
            gx.update(repeating: 0, count: g.n * g.c * g.h * g.w)
            fresh = false
        }
        let inSize = g.c * g.h * g.w, outSize = g.o * g.pixels
        let colCount = g.isPointwise ? 0 : g.kdim * g.pixels
        let a = df_matrix(p: w, rs: 1, cs: g.kdim)          // A(kk, o) = W[o, kk]
        let fold = ctx.k.pointee.col2im
        func col2im(_ col: UnsafePointer<Float>, _ gxi: UnsafeMutablePointer<Float>, _ r: Range<Int>) {
            fold(col, Int32(g.c), Int32(g.h), Int32(g.w), Int32(g.k), Int32(g.s), Int32(g.p),
                 Int32(g.oh), Int32(g.ow), Int32(r.lowerBound), Int32(r.upperBound), gxi)
        }
        if imageParallel(ctx, g.n) {
            let workers = Parallel.workers(g.n)
            let cols = scratch(ctx, workers: workers, slot: colSlot, count: colCount)
            let packs = scratch(ctx, workers: workers, slot: packSlot, count: packFloats)
            Parallel.indexedChunks(g.n) { worker, images in
                for i in images {
                    let b = df_matrix(p: gy + i * outSize, rs: g.pixels, cs: 1)
                    if g.isPointwise {
                        gemm(ctx, ws: packs[worker], m: g.kdim, n: g.pixels, k: g.o, a: a, b: b, c: gx + i * inSize, ldc: g.pixels,
                             accumulate: !fresh, bf16: bf16)
                    } else {
                        gemm(ctx, ws: packs[worker], m: g.kdim, n: g.pixels, k: g.o, a: a, b: b, c: cols[worker], ldc: g.pixels,
                             accumulate: false, bf16: bf16)
                        col2im(cols[worker], gx + i * inSize, 0..<g.c)
                    }
                }
            }
        } else {
            let threads = Parallel.threads
            let col = scratch(ctx, workers: 1, slot: colSlot, count: colCount)[0]
            let packs = scratch(ctx, workers: threads, slot: packSlot, count: packFloats)
            let grain = Swift.max(1, 16384 / Swift.max(g.k * g.k * g.pixels, 1))
            for i in 0..<g.n {
                let dst = g.isPointwise ? gx + i * inSize : col
                Parallel.indexedChunks(threads) { worker, _ in
                    let cols = split(g.pixels, threads, worker)
                    if cols.isEmpty { return }
                    gemm(ctx, ws: packs[worker], m: g.kdim, n: cols.count, k: g.o, a: a,
                         b: df_matrix(p: gy + i * outSize + cols.lowerBound, rs: g.pixels, cs: 1),
                         c: dst + cols.lowerBound, ldc: g.pixels, accumulate: g.isPointwise && !fresh, bf16: bf16)
                }
                if !g.isPointwise {
                    Parallel.chunks(g.c, grain: grain) { r in col2im(col, gx + i * inSize, r) }
                }
            }
        }
    }
}

// MARK: - Naive reference (the oracle for the fast path)

extension Tensor {
    /// Direct-loop convolution: the reference the im2col + sgemm path is tested against.
    public static func conv2dNaive(_ g: ConvGeometry, x: [Float], w: [Float], bias: [Float]? = nil) -> [Float] {
        var y = [Float](repeating: 0, count: g.n * g.o * g.pixels)
        for n in 0..<g.n {
            for o in 0..<g.o {
                for oy in 0..<g.oh {
                    for ox in 0..<g.ow {
                        var s: Double = Double(bias?[o] ?? 0)
                        for c in 0..<g.c {
                            for i in 0..<g.k {
                                for j in 0..<g.k {
                                    let iy = oy * g.s - g.p + i, ix = ox * g.s - g.p + j
                                    if iy < 0 || iy >= g.h || ix < 0 || ix >= g.w { continue }
                                    s += Double(x[((n * g.c + c) * g.h + iy) * g.w + ix]) *
                                         Double(w[((o * g.c + c) * g.k + i) * g.k + j])
                                }
                            }
                        }
                        y[((n * g.o + o) * g.oh + oy) * g.ow + ox] = Float(s)
                    }
                }
            }
        }
        return y
    }

    /// Direct-loop gradients of the convolution for an output gradient gy: (dx, dw).
    public static func conv2dNaiveGrads(_ g: ConvGeometry, x: [Float], w: [Float], gy: [Float]) -> (dx: [Float], dw: [Float]) {
        var dx = [Double](repeating: 0, count: x.count)
        var dw = [Double](repeating: 0, count: w.count)
        for n in 0..<g.n {
            for o in 0..<g.o {
                for oy in 0..<g.oh {
                    for ox in 0..<g.ow {
                        let gv = Double(gy[((n * g.o + o) * g.oh + oy) * g.ow + ox])
                        for c in 0..<g.c {
                            for i in 0..<g.k {
                                for j in 0..<g.k {
                                    let iy = oy * g.s - g.p + i, ix = ox * g.s - g.p + j
                                    if iy < 0 || iy >= g.h || ix < 0 || ix >= g.w { continue }
                                    let xi = ((n * g.c + c) * g.h + iy) * g.w + ix
                                    let wi = ((o * g.c + c) * g.k + i) * g.k + j
                                    dx[xi] += gv * Double(w[wi])
                                    dw[wi] += gv * Double(x[xi])
                                }
                            }
                        }
                    }
                }
            }
        }
        return (dx.map(Float.init), dw.map(Float.init))
    }

    /// Direct-loop im2col of one image [C, H, W] -> [C*k*k, oH*oW].
    public static func im2colNaive(_ g: ConvGeometry, image: [Float]) -> [Float] {
        var col = [Float](repeating: 0, count: g.kdim * g.pixels)
        for c in 0..<g.c {
            for i in 0..<g.k {
                for j in 0..<g.k {
                    let row = (c * g.k + i) * g.k + j
                    for oy in 0..<g.oh {
                        for ox in 0..<g.ow {
                            let iy = oy * g.s - g.p + i, ix = ox * g.s - g.p + j
                            if iy >= 0 && iy < g.h && ix >= 0 && ix < g.w {
                                col[row * g.pixels + oy * g.ow + ox] = image[(c * g.h + iy) * g.w + ix]
                            }
                        }
                    }
                }
            }
        }
        return col
    }
}
