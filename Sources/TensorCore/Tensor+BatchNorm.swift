import CKernels

/// Running statistics of a batch-norm layer (Float32 buffers, updated in place in training).
public final class BatchNormStats: @unchecked Sendable {
    public let mean: Tensor
    public let variance: Tensor
    public init(channels: Int) {
        mean = Tensor(zeros: [channels])
        variance = Tensor(repeating: 1, shape: [channels])
    }
}

extension Tensor {
    /// Batch normalisation over N, H, W of an NCHW tensor, optionally followed by SiLU (fused).
    ///
    /// x: [N, C, H, W], weight (gamma) and bias (beta): [C] -> [N, C, H, W].
    /// Training: normalises with the batch mean and biased variance and updates the running
    /// statistics with `momentum` (new = (1 - m) * old + m * batch, the variance unbiased), as
    /// PyTorch does; Ultralytics uses eps 1e-3, momentum 0.03. Eval: uses the running statistics.
    /// With `silu`, returns silu(bn(x)) and keeps only x for backward (bn(x) is recomputed).
    public static func batchNorm2d(_ x: Tensor, weight: Tensor, bias: Tensor, stats: BatchNormStats,
                                   training: Bool, momentum: Float = 0.03, eps: Float = 1e-3,
                                   silu: Bool = false) -> Tensor {
        precondition(x.rank == 4, "batchNorm2d needs NCHW input, got \(x.shape)")
        let (n, c, hw) = (x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
        precondition(weight.shape == [c] && bias.shape == [c], "batchNorm2d: weight/bias must be [\(c)]")
        let m = n * hw
        let ctx = ComputeContext.current, k = ctx.k
        let replicaSum = training ? ctx.replicaSum : nil
        let px = x.data
        var batchMean: [Float]? = nil, batchVariance: [Float]? = nil
        if training {
            precondition(m > 1, "batchNorm2d in training needs more than one value per channel, got input \(x.shape)")
            var mean = [Float](repeating: 0, count: c)
            var variance = [Float](repeating: 0, count: c)
            mean.withUnsafeMutableBufferPointer { mp in
                variance.withUnsafeMutableBufferPointer { vp in
                    let mpp = mp.baseAddress!, vpp = vp.baseAddress!
                    Parallel.chunks(c, grain: Swift.max(1, elementwiseGrain / Swift.max(m, 1))) { r in
                        k.pointee.channel_moments(px, Int32(n), Int32(c), Int32(hw), Int32(r.lowerBound),
                                           Int32(r.upperBound), mpp, vpp)
                    }
                }
            }
            (batchMean, batchVariance) = (mean, variance)
        }
        let plan = BatchNormPlan(batchMean: batchMean, batchVariance: batchVariance, values: m, stats: stats,
                                 momentum: momentum, eps: eps, weight: weight, bias: bias, replicaSum: replicaSum)
        let (mean, invstd, scale, shift) = (plan.mean, plan.invstd, plan.scale, plan.shift)
        let out = Tensor(uninitialized: x.shape)
        let po = out.data
        scale.withUnsafeBufferPointer { sp in
            shift.withUnsafeBufferPointer { hp in
                let spp = sp.baseAddress!, hpp = hp.baseAddress!
                Parallel.chunks(c, grain: Swift.max(1, elementwiseGrain / Swift.max(m, 1))) { r in
                    k.pointee.channel_affine(px, Int32(n), Int32(c), Int32(hw), Int32(r.lowerBound), Int32(r.upperBound),
                                      spp, hpp, silu ? nil : po, silu ? po : nil, silu ? 1 : 0)
                }
            }
        }
        guard needsGrad(x, weight, bias) else { return out }
        let sx = ctx.save(x.buffer)
        let (nx, nw, nb) = (x.node, weight.node, bias.node)
        let gamma = weight.data
        out.recording([x, weight, bias]) { gout in
            // x as saved: Float32, or bfloat16 words the kernels widen as they read them (no Float32
            // copy); IEEE half is unpacked.
            let bf16Words = sx.format == .bf16 ? sx.half : nil
            let xb = bf16Words == nil ? sx.unpack() : nil
            defer { withExtendedLifetime(xb) {}; withExtendedLifetime(bf16Words) {} }
            let xp = xb.map { UnsafePointer($0.ptr) }, xh = bf16Words.map { UnsafePointer($0.ptr) }
            let grain = Swift.max(1, elementwiseGrain / Swift.max(m, 1))
            // dz, the gradient at the batch-norm output (before SiLU when fused): gout itself, or,
            // with SiLU, computed by the sums pass and stored over gout (this node's own gradient,
            // which backward drops after this closure) for the input-gradient pass.
            let dz = UnsafePointer(gout.ptr)
            var sumG = [Float](repeating: 0, count: c)
            var sumGX = [Float](repeating: 0, count: c)
            sumG.withUnsafeMutableBufferPointer { gp in
                sumGX.withUnsafeMutableBufferPointer { xgp in
                    mean.withUnsafeBufferPointer { mp in
                        scale.withUnsafeBufferPointer { sp in
                            shift.withUnsafeBufferPointer { hp in
                                let gpp = gp.baseAddress!, xgpp = xgp.baseAddress!, mpp = mp.baseAddress!
                                let spp = silu ? sp.baseAddress : nil, hpp = silu ? hp.baseAddress : nil
                                Parallel.chunks(c, grain: grain) { r in
                                    k.pointee.channel_grad_sums(xp, xh, gout.ptr, mpp, spp, hpp, Int32(n), Int32(c), Int32(hw),
                                                                Int32(r.lowerBound), Int32(r.upperBound), gpp, xgpp)
                                }
                            }
                        }
                    }
                }
            }
            // Weight and bias gradients are this replica's own (data parallelism sums them later).
            if let nb { nb.accumulate { d in for ch in 0..<c { d[ch] += sumG[ch] } } }
            if let nw { nw.accumulate { d in for ch in 0..<c { d[ch] += sumGX[ch] * invstd[ch] } } }
            if let nx {
                let (ca, cb, cc) = plan.inputGradCoefficients(sumG: sumG, sumGX: sumGX, gamma: gamma, replicaSum: replicaSum)
                nx.accumulateOrSet { d, fresh in
                    ca.withUnsafeBufferPointer { ap in
                        cb.withUnsafeBufferPointer { bp in
                            cc.withUnsafeBufferPointer { cp in
                                let app = ap.baseAddress!, bpp = bp.baseAddress!, cpp = cp.baseAddress!
                                Parallel.chunks(c, grain: grain) { r in
                                    k.pointee.channel_axpby(dz, xp, xh, Int32(n), Int32(c), Int32(hw), Int32(r.lowerBound),
                                                            Int32(r.upperBound), app, bpp, cpp, d, fresh ? 0 : 1)
                                }
                            }
                        }
                    }
                }
            }
            withExtendedLifetime(gout) {}
        }
        return out
    }
}

/// The per-channel numbers of one batch-norm forward, shared by `batchNorm2d` and the fused
/// convolution + batch norm: the statistics it normalises with and the affine they give
/// (y = x * scale + shift), and the input-gradient coefficients of its backward.
struct BatchNormPlan {
    let mean, invstd, scale, shift: [Float]
    /// Values per channel behind the statistics (every replica's under synchronised statistics).
    let count: Float
    let training: Bool

    /// Training (`batchMean` and the biased `batchVariance` of this batch's `values` values per
    /// channel given): synchronised over the replicas when `replicaSum` is given, and the running
    /// statistics updated with `momentum` (the variance unbiased), as PyTorch does. Eval (nil): the
    /// running statistics.
    init(batchMean: [Float]?, batchVariance: [Float]?, values m: Int, stats: BatchNormStats, momentum: Float, eps: Float,
         weight: Tensor, bias: Tensor, replicaSum: ((UnsafeMutablePointer<Double>, Int) -> Void)?) {
        let c = weight.count
        var total = Double(m)
        var mean = [Float](repeating: 0, count: c)
        var variance = [Float](repeating: 0, count: c)
        if let batchMean, let batchVariance {
            (mean, variance) = (batchMean, batchVariance)
            if let sum = replicaSum {
                // Synchronised statistics: the replicas' counts, sums and sums of squares added up
                // (in Double, so E[x^2] - E[x]^2 does not cancel Float32's digits away).
                var acc = [Double](repeating: 0, count: 2 * c + 1)
                for ch in 0..<c {
                    let mu = Double(mean[ch])
                    acc[ch] = Double(m) * mu
                    acc[c + ch] = Double(m) * (Double(variance[ch]) + mu * mu)
                }
                acc[2 * c] = Double(m)
                acc.withUnsafeMutableBufferPointer { sum($0.baseAddress!, $0.count) }
                total = acc[2 * c]
                for ch in 0..<c {
                    let mu = acc[ch] / total
                    mean[ch] = Float(mu)
                    variance[ch] = Float(Swift.max(acc[c + ch] / total - mu * mu, 0))
                }
            }
            let unbias = replicaSum == nil ? Float(m) / Float(m - 1) : Float(total / (total - 1))
            for ch in 0..<c {
                stats.mean.data[ch] = (1 - momentum) * stats.mean.data[ch] + momentum * mean[ch]
                stats.variance.data[ch] = (1 - momentum) * stats.variance.data[ch] + momentum * variance[ch] * unbias
            }
            training = true
        } else {
            for ch in 0..<c { mean[ch] = stats.mean.data[ch]; variance[ch] = stats.variance.data[ch] }
            training = false
        }
        count = Float(total)
        var invstd = [Float](repeating: 0, count: c)
        var scale = [Float](repeating: 0, count: c)
        var shift = [Float](repeating: 0, count: c)
        for ch in 0..<c {
            invstd[ch] = 1 / (variance[ch] + eps).squareRoot()
            scale[ch] = weight.data[ch] * invstd[ch]
            shift[ch] = bias.data[ch] - mean[ch] * scale[ch]
        }
        (self.mean, self.invstd, self.scale, self.shift) = (mean, invstd, scale, shift)
    }

    /// dx = ca * dz + cb * x + cc per channel, from this replica's sums over its values of dz and
    /// of dz * (x - mean); the input gradient needs the sums over every value the statistics came
    /// from, so they are summed over the replicas first when `replicaSum` is given.
    func inputGradCoefficients(sumG: [Float], sumGX: [Float], gamma: UnsafePointer<Float>,
                               replicaSum: ((UnsafeMutablePointer<Double>, Int) -> Void)?) -> (ca: [Float], cb: [Float], cc: [Float]) {
        let c = sumG.count
        var allG = sumG, allGX = sumGX
        if let replicaSum {
            var acc = sumG.map(Double.init) + sumGX.map(Double.init)
            acc.withUnsafeMutableBufferPointer { replicaSum($0.baseAddress!, $0.count) }
            for ch in 0..<c { allG[ch] = Float(acc[ch]); allGX[ch] = Float(acc[c + ch]) }
        }
        var ca = [Float](repeating: 0, count: c), cb = ca, cc = ca
        for ch in 0..<c {
            if training {
                let k = scale[ch] * invstd[ch] * invstd[ch] * allGX[ch] / count
                ca[ch] = scale[ch]
                cb[ch] = -k
                cc[ch] = -scale[ch] * allG[ch] / count + k * mean[ch]
            } else {
                ca[ch] = gamma[ch] * invstd[ch]
            }
        }
        return (ca, cb, cc)
    }
}

// MARK: - Pooling and resampling

extension Tensor {
    /// Max pooling with a square window k, stride s, padding p (padding never wins: -inf).
    /// x: [N, C, H, W] -> [N, C, (H+2p-k)/s+1, (W+2p-k)/s+1]. The gradient goes to the first
    /// maximum of each window in raster order; a NaN wins (the last NaN of the window, as PyTorch's
    /// CPU kernel). Separable: a row pass, then a column pass over the row maxima (C kernels).
    public func maxPool2d(kernel: Int, stride s: Int, padding p: Int) -> Tensor {
        precondition(rank == 4, "maxPool2d needs NCHW, got \(shape)")
        let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3])
        let oh = (h + 2 * p - kernel) / s + 1, ow = (w + 2 * p - kernel) / s + 1
        let out = Tensor(uninitialized: [n, c, oh, ow])
        let record = Tensor.needsGrad(self)
        // Each output's input index within its plane, for backward: pooled storage (Float32-sized
        // words, reinterpreted), every entry written by the kernel, so no fill and no fresh pages
        // a step.
        let argIdx = record ? Buffer(count: n * c * oh * ow) : nil
        let app = argIdx.map { UnsafeMutableRawPointer($0.ptr).assumingMemoryBound(to: Int32.self) }
        let px = data, po = out.data, k = ComputeContext.current.k
        Parallel.chunks(n * c, grain: Swift.max(1, elementwiseGrain / Swift.max(h * ow * kernel, 1))) { r in
            // The row pass's maxima and their columns, one plane at a time.
            let rowMax = UnsafeMutablePointer<Float>.allocate(capacity: h * ow)
            let rowArg = UnsafeMutablePointer<Int32>.allocate(capacity: h * ow)
            defer { rowMax.deallocate(); rowArg.deallocate() }
            let first = r.lowerBound
            k.pointee.maxpool_fwd(px + first * h * w, Int32(r.count), Int32(h), Int32(w), Int32(kernel), Int32(s), Int32(p),
                                  Int32(oh), Int32(ow), po + first * oh * ow, app.map { $0 + first * oh * ow }, rowMax, rowArg)
        }
        if record, let nx = node, let argIdx, let ap = app {
            out.recording([self]) { g in
                withExtendedLifetime(argIdx) {
                    nx.accumulate { d in
                        Parallel.chunks(n * c) { r in
                            for plane in r {
                                let dst = d + plane * h * w, src = g.ptr + plane * oh * ow
                                for q in 0..<(oh * ow) { dst[Int(ap[plane * oh * ow + q])] += src[q] }
                            }
                        }
                    }
                }
            }
        }
        return out
    }

    /// Nearest-neighbour upsampling by an integer factor: [N, C, H, W] -> [N, C, fH, fW].
    public func upsampleNearest(_ f: Int = 2) -> Tensor {
        precondition(rank == 4, "upsampleNearest needs NCHW, got \(shape)")
        let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3])
        let ow = w * f
        let ctx = ComputeContext.current
        let out: Tensor
        /// The plain (NCHW) values upsampled into po.
        func plain(into po: UnsafeMutablePointer<Float>) {
            let px = data
            Parallel.chunks(n * c, grain: Swift.max(1, elementwiseGrain / Swift.max(h * w * f * f, 1))) { r in
                for plane in r {
                    let src = px + plane * h * w, dst = po + plane * h * w * f * f
                    for y in 0..<h {
                        let row = dst + y * f * ow
                        for x in 0..<w { let v = src[y * w + x]; for j in 0..<f { row[x * f + j] = v } }
                        for i in 1..<f { (row + i * ow).update(from: row, count: ow) }
                    }
                }
            }
        }
        if ctx.deferPlainValues, let laid = laidValues, laid.n == n, laid.channels == c, laid.hw == h * w {
            // Laid values (a fused block's output; Float32 or bfloat16 words): upsampled in that
            // layout, each pixel's channel block copied, and the NCHW values deferred (made when
            // read: from the Float32 laid values, or upsampled from this tensor's own), so a
            // convolution reading the result (through a concatenation) takes them.
            let b = laid.block, size = laid.isWords ? 2 : 4
            let src = laid.gathered()
            let up: LaidValues.Storage = laid.isWords ? .words(HalfBuffer(count: n * c * h * w * f * f))
                : .floats(Buffer(count: n * c * h * w * f * f))
            let sp = UnsafeRawPointer(src.raw), dp = up.raw, pixel = b * size
            withExtendedLifetime(src) {
                Parallel.chunks(n * (c / b), grain: Swift.max(1, elementwiseGrain / Swift.max(h * w * f * f * b, 1))) { r in
                    for item in r {
                        let s = sp + item * h * w * pixel, d = dp + item * h * w * f * f * pixel
                        for y in 0..<h {
                            let row = d + y * f * ow * pixel
                            for x in 0..<w {
                                for j in 0..<f { (row + (x * f + j) * pixel).copyMemory(from: s + (y * w + x) * pixel, byteCount: pixel) }
                            }
                            for i in 1..<f { (row + i * ow * pixel).copyMemory(from: row, byteCount: ow * pixel) }
                        }
                    }
                }
            }
            out = Tensor.withPlainValues([n, c, h * f, w * f], laid: LaidValues(up, n: n, c: c, hw: h * w * f * f, block: b), copy: plain)
        } else {
            out = Tensor(uninitialized: [n, c, h * f, w * f])
            plain(into: out.data)
        }
        if Tensor.needsGrad(self), let nx = node {
            out.recording([self]) { g in
                nx.accumulate { d in
                    Parallel.chunks(n * c) { r in
                        for plane in r {
                            let dst = d + plane * h * w, src = g.ptr + plane * h * w * f * f
                            for y in 0..<h {
                                for i in 0..<f {
                                    let row = src + (y * f + i) * ow
                                    for x in 0..<w {
                                        var s: Float = 0
                                        for j in 0..<f { s += row[x * f + j] }
                                        dst[y * w + x] += s
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        return out
    }
}
