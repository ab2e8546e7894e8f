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

/// Per-worker scratch memory reused across calls, so the convolution's column buffers are not
/// re-allocated (and re-faulted) on every layer. Only the thread that runs ops touches it;
/// worker w uses slot w.
enum Workspace {
    nonisolated(unsafe) static var slots: [[Buffer]] = []

    /// Scratch buffer `index` of worker `worker`, at least `count` floats (uninitialised).
    static func get(_ worker: Int, _ index: Int, count: Int) -> UnsafeMutablePointer<Float> {
        while slots.count <= worker { slots.append([]) }
        while slots[worker].count <= index { slots[worker].append(Buffer(count: 0)) }
        if slots[worker][index].count < count { slots[worker][index] = Buffer(count: count) }
        return slots[worker][index].ptr
    }

    /// Frees all scratch memory.
    public static func release() { slots = [] }
}

extension Tensor {
    /// 2-D convolution (cross-correlation, as PyTorch), groups 1, square kernel.
    ///
    /// x: [N, C, H, W], weight: [O, C, k, k], bias: [O] or nil -> [N, O, oH, oW].
    /// Lowered per image to sgemm: out[n] [O, oH*oW] = W [O, C*k*k] x columns [C*k*k, oH*oW],
    /// with columns = im2col(x[n]) (skipped for the pointwise case). With N >= 2 images and >= 2
    /// threads, images run concurrently, each with a single-threaded sgemm (OpenBLAS's own threads
    /// are inefficient on the small GEMMs of deep layers); with one image OpenBLAS uses all threads.
    public static func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor? = nil, stride: Int = 1,
                              padding: Int = 0) -> Tensor {
        precondition(x.rank == 4 && weight.rank == 4, "conv2d needs 4-D input and weight, got \(x.shape), \(weight.shape)")
        precondition(weight.shape[1] == x.shape[1], "conv2d: weight \(weight.shape) expects \(weight.shape[1]) input channels, input has \(x.shape[1])")
        precondition(weight.shape[2] == weight.shape[3], "conv2d: square kernels only, got \(weight.shape)")
        let g = ConvGeometry(n: x.shape[0], c: x.shape[1], h: x.shape[2], w: x.shape[3],
                             o: weight.shape[0], k: weight.shape[2], s: stride, p: padding)
        precondition(g.oh > 0 && g.ow > 0, "conv2d: output would be empty for \(x.shape), k=\(g.k) s=\(stride) p=\(padding)")
        if let bias { precondition(bias.shape == [g.o], "conv2d: bias \(bias.shape) != [\(g.o)]") }
        let out = Tensor(uninitialized: [g.n, g.o, g.oh, g.ow])
        convForward(g, x: x.data, w: weight.data, y: out.data)
        if let bias { addChannelBias(out.data, bias.data, n: g.n, c: g.o, hw: g.pixels) }

        if needsGrad(x, weight) || (bias.map { needsGrad($0) } ?? false) {
            let nx = x.node, nw = weight.node, nb = bias?.node
            let sx: Saved? = nw != nil ? SavedActivations.save(x.buffer) : nil
            let wd = weight.detached()
            var inputs = [x, weight]
            if let bias { inputs.append(bias) }
            out.recording(inputs) { gy in
                if let nb {
                    nb.accumulate { d in channelSums(gy.ptr, n: g.n, c: g.o, hw: g.pixels, into: d) }
                }
                if let nw, let sx {
                    sx.withValues { xp in nw.accumulate { d in convWeightGrad(g, x: xp, gy: gy.ptr, gw: d) } }
                }
                if let nx {
                    if g.isPointwise {
                        nx.accumulateOrSet { d, fresh in convInputGrad(g, w: wd.data, gy: gy.ptr, gx: d, fresh: fresh) }
                    } else {
                        nx.accumulate { d in convInputGrad(g, w: wd.data, gy: gy.ptr, gx: d, fresh: false) }
                    }
                }
            }
        }
        return out
    }

    /// Whether to run images concurrently with single-threaded sgemm.
    static func imageParallel(_ n: Int) -> Bool { n >= 2 && Parallel.threads >= 2 }

    /// y[n] = W x im2col(x[n]) for every image. Shapes as `ConvGeometry`.
    public static func convForward(_ g: ConvGeometry, x: UnsafePointer<Float>, w: UnsafePointer<Float>,
                                   y: UnsafeMutablePointer<Float>) {
        let inSize = g.c * g.h * g.w, outSize = g.o * g.pixels
        let colCount = g.kdim * g.pixels
        if imageParallel(g.n) {
            BLAS.setThreads(1)
            defer { BLAS.setThreads(Parallel.threads) }
            let cols = (0..<Parallel.workers(g.n)).map { g.isPointwise ? nil : Workspace.get($0, 0, count: colCount) }
            Parallel.indexedChunks(g.n) { worker, images in
                for i in images {
                    let colMatrix = columns(g, x + i * inSize, cols[worker], parallel: false)
                    BLAS.sgemm(m: g.o, n: g.pixels, k: g.kdim, a: w, b: colMatrix, c: y + i * outSize)
                }
            }
        } else {
            let col = g.isPointwise ? nil : Workspace.get(0, 0, count: colCount)
            for i in 0..<g.n {
                let colMatrix = columns(g, x + i * inSize, col, parallel: true)
                BLAS.sgemm(m: g.o, n: g.pixels, k: g.kdim, a: w, b: colMatrix, c: y + i * outSize)
            }
        }
    }

    /// The column matrix of image `xi`: the image itself for the pointwise case, else im2col into
    /// `col` (over all channels on this thread, or split across threads when `parallel`).
    static func columns(_ g: ConvGeometry, _ xi: UnsafePointer<Float>, _ col: UnsafeMutablePointer<Float>?,
                        parallel: Bool) -> UnsafePointer<Float> {
        guard let col else { return xi }
        if parallel { im2colParallel(g, xi, col) }
        else {
            df_im2col(xi, Int32(g.c), Int32(g.h), Int32(g.w), Int32(g.k), Int32(g.s), Int32(g.p),
                      Int32(g.oh), Int32(g.ow), 0, Int32(g.c), col)
        }
        return UnsafePointer(col)
    }

    static func im2colParallel(_ g: ConvGeometry, _ xi: UnsafePointer<Float>, _ col: UnsafeMutablePointer<Float>) {
        Parallel.chunks(g.c, grain: Swift.max(1, 16384 / Swift.max(g.k * g.k * g.pixels, 1))) { r in
            df_im2col(xi, Int32(g.c), Int32(g.h), Int32(g.w), Int32(g.k), Int32(g.s), Int32(g.p),
                      Int32(g.oh), Int32(g.ow), Int32(r.lowerBound), Int32(r.upperBound), col)
        }
    }

    /// gw [O, C*k*k] += sum over images of gy[n] [O, P] x im2col(x[n])^T [P, C*k*k].
    public static func convWeightGrad(_ g: ConvGeometry, x: UnsafePointer<Float>, gy: UnsafePointer<Float>,
                                      gw: UnsafeMutablePointer<Float>) {
        let inSize = g.c * g.h * g.w, outSize = g.o * g.pixels
        let colCount = g.kdim * g.pixels, wCount = g.o * g.kdim
        if imageParallel(g.n) {
            BLAS.setThreads(1)
            defer { BLAS.setThreads(Parallel.threads) }
            let workers = Parallel.workers(g.n)
            let cols = (0..<workers).map { g.isPointwise ? nil : Workspace.get($0, 0, count: colCount) }
            // Worker 0 adds straight into gw; the others into zeroed partials, summed in order after.
            let partials = (0..<workers).map { $0 == 0 ? gw : Workspace.get($0, 1, count: wCount) }
            Parallel.indexedChunks(g.n) { worker, images in
                let dst = partials[worker]
                if worker > 0 { dst.update(repeating: 0, count: wCount) }
                for i in images {
                    let colMatrix = columns(g, x + i * inSize, cols[worker], parallel: false)
                    BLAS.sgemm(transB: true, m: g.o, n: g.kdim, k: g.pixels, a: gy + i * outSize, b: colMatrix, beta: 1, c: dst)
                }
            }
            for wk in 1..<workers {
                let src = partials[wk]
                for j in 0..<wCount { gw[j] += src[j] }
            }
        } else {
            let col = g.isPointwise ? nil : Workspace.get(0, 0, count: colCount)
            for i in 0..<g.n {
                let colMatrix = columns(g, x + i * inSize, col, parallel: true)
                BLAS.sgemm(transB: true, m: g.o, n: g.kdim, k: g.pixels, a: gy + i * outSize, b: colMatrix, beta: 1, c: gw)
            }
        }
    }

    /// gx[n] (+)= col2im(W^T [C*k*k, O] x gy[n] [O, P]). With `fresh` (pointwise only) gx is
    /// uninitialised and is assigned.
    public static func convInputGrad(_ g: ConvGeometry, w: UnsafePointer<Float>, gy: UnsafePointer<Float>,
                                     gx: UnsafeMutablePointer<Float>, fresh: Bool) {
        let inSize = g.c * g.h * g.w, outSize = g.o * g.pixels
        let colCount = g.kdim * g.pixels
        let beta: Float = fresh ? 0 : 1
        precondition(!fresh || g.isPointwise, "convInputGrad: fresh output needs the pointwise path")
        func one(_ i: Int, _ col: UnsafeMutablePointer<Float>?, parallelFold: Bool) {
            if let col {
                BLAS.sgemm(transA: true, m: g.kdim, n: g.pixels, k: g.o, a: w, b: gy + i * outSize, c: col)
                let gxi = gx + i * inSize
                if parallelFold {
                    Parallel.chunks(g.c, grain: Swift.max(1, 16384 / Swift.max(g.k * g.k * g.pixels, 1))) { r in
                        df_col2im(col, Int32(g.c), Int32(g.h), Int32(g.w), Int32(g.k), Int32(g.s), Int32(g.p),
                                  Int32(g.oh), Int32(g.ow), Int32(r.lowerBound), Int32(r.upperBound), gxi)
                    }
                } else {
                    df_col2im(col, Int32(g.c), Int32(g.h), Int32(g.w), Int32(g.k), Int32(g.s), Int32(g.p),
                              Int32(g.oh), Int32(g.ow), 0, Int32(g.c), gxi)
                }
            } else {
                BLAS.sgemm(transA: true, m: g.kdim, n: g.pixels, k: g.o, a: w, b: gy + i * outSize,
                           beta: beta, c: gx + i * inSize)
            }
        }
        if imageParallel(g.n) {
            BLAS.setThreads(1)
            defer { BLAS.setThreads(Parallel.threads) }
            let cols = (0..<Parallel.workers(g.n)).map { g.isPointwise ? nil : Workspace.get($0, 0, count: colCount) }
            Parallel.indexedChunks(g.n) { worker, images in
                for i in images { one(i, cols[worker], parallelFold: false) }
            }
        } else {
            let col = g.isPointwise ? nil : Workspace.get(0, 0, count: colCount)
            for i in 0..<g.n { one(i, col, parallelFold: true) }
        }
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
