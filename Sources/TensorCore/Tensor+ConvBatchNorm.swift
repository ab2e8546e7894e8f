import CKernels

extension Tensor {
    /// silu(batchNorm2d(conv2d(x, weight))) (without SiLU when `silu` is false): Ultralytics' Conv
    /// block as one op.
    ///
    /// x: [N, C, H, W], weight: [O, C, k, k], bnWeight, bnBias: [O] -> [N, O, oH, oW]; stride,
    /// padding, statistics, momentum and eps as `conv2d` and `batchNorm2d`.
    ///
    /// Where the convolutions run on oneDNN (Float32 or the bfloat16 autocast) and
    /// `ComputeContext.fuseConvBatchNorm` is on, the convolution's output z stays in oneDNN's own
    /// channel-blocked layout (`OneDNN.blockedOut`): the batch-norm statistics are read from it,
    /// the affine + SiLU pass writes the NCHW output from it, and it is what backward keeps (in
    /// bfloat16 under bf16). Backward reads the NCHW output gradient, and the batch norm's input
    /// gradient is written in the blocked layout both convolution backward passes take (rounded to
    /// bfloat16 under bf16, as the convolution output's gradient is in the composed ops). So the two
    /// reorders of every block, z to NCHW and its gradient back, are not done. The values are the
    /// composed ops' up to the order of the statistics' sums (pixels in order per channel, tiles of
    /// 64 in Float32, images in double). Under fp16 emulation, and under bf16 where oneDNN has no
    /// bfloat16 convolutions (`OneDNN.Route.bf16OnF32`), the convolutions are Float32 primitives
    /// (under bf16 on operands rounded to bfloat16) and z is kept in 16 bits, rounded from their
    /// Float32 output. Elsewhere (the packed GEMM, layouts the kernels do not read) it is exactly
    /// `batchNorm2d(conv2d(...))`.
    public static func convBatchNorm(_ x: Tensor, weight: Tensor, stride: Int, padding: Int, bnWeight: Tensor, bnBias: Tensor,
                                     stats: BatchNormStats, training: Bool, momentum: Float, eps: Float, silu: Bool) -> Tensor {
        let ctx = ComputeContext.current
        // Under fp16 emulation the convolutions run in Float32 and z is kept as IEEE half; under
        // bf16 on Float32 primitives, likewise with bfloat16 operands and z.
        let mode = ctx.precision, bf16 = mode == .bf16, f16 = mode == .fp16
        func composed() -> Tensor {
            batchNorm2d(conv2d(x, weight: weight, stride: stride, padding: padding), weight: bnWeight, bias: bnBias, stats: stats,
                        training: training, momentum: momentum, eps: eps, silu: silu)
        }
        guard ctx.fuseConvBatchNorm, x.rank == 4, weight.rank == 4, weight.shape[1] == x.shape[1],
              weight.shape[2] == weight.shape[3], bnWeight.shape == [weight.shape[0]], bnBias.shape == [weight.shape[0]]
        else { return composed() }
        let g = ConvGeometry(n: x.shape[0], c: x.shape[1], h: x.shape[2], w: x.shape[3],
                             o: weight.shape[0], k: weight.shape[2], s: stride, p: padding)
        let (n, c, hw) = (g.n, g.o, g.pixels)
        let m = n * hw
        guard g.oh > 0, g.ow > 0, !(training && m <= 1), let route = OneDNN.route(ctx, bf16: bf16) else { return composed() }
        let dnnlBF16 = route.dnnlBF16, onF32 = route == .bf16OnF32
        guard let laid = OneDNN.blockedOut(g, bf16: dnnlBF16), laid.bytes == n * c * hw * (dnnlBF16 ? 2 : 4) else { return composed() }
        let B = laid.block, items = n * (c / B), k = ctx.k
        let grain = Swift.max(1, elementwiseGrain / Swift.max(hw * B, 1))

        // z [N, O, oH, oW] in the blocked layout: Float32, or bfloat16 / IEEE half words. Under
        // fp16 (bf16 on Float32 primitives) oneDNN writes Float32 into a scratch buffer, rounded to
        // half (bfloat16) below, as the composed convolution rounds its output.
        let zFull = mode == .fp32 ? Buffer(count: n * c * hw) : nil
        let zHalf = mode == .fp32 ? nil : HalfBuffer(count: n * c * hw)
        let zScratch = f16 || onF32 ? Buffer(count: n * c * hw) : nil
        let zRaw = zFull.map { UnsafeMutableRawPointer($0.ptr) } ?? zScratch.map { UnsafeMutableRawPointer($0.ptr) }
            ?? UnsafeMutableRawPointer(zHalf!.ptr)
        let zf = zFull.map { UnsafePointer($0.ptr) }, zh = zHalf.map { UnsafePointer($0.ptr) }
        let zF16: Int32 = f16 ? 1 : 0
        // Bytes of z, and of the same values as Float32 or as 16-bit words (what each pass below moves).
        let values = n * c * hw, zBytes = values * (zFull != nil ? 4 : 2), f32Bytes = values * 4, wordBytes = values * 2
        // The weight gradient's x in oneDNN's layout: rebuilt in backward from the block that made
        // x (when x is a fused block's output and the layouts agree), else kept from the forward's
        // own reorder (as conv2d), else x saved. On bfloat16 primitives a rebuildable x whose words
        // serve the forward keeps those words instead, while the inputs kept so stay within
        // `keptInputsShare` of the other bytes saved in the step. (Float32 rebuilds: keeping its
        // laid values measured 1-2% of the backward at 640 px for a fifth more peak memory.)
        // x's laid values, where the forward takes them (`LaidValues`); without a recipe to rebuild
        // x, and where the weight gradient reads the same layout, they are also what backward keeps.
        let laidKind = mode == .fp32 || dnnlBF16
        let xLaidValues: LaidValues? = {
            guard laidKind, ctx.laidInputs, let w = x.laidValues, w.isWords == dnnlBF16, w.n == g.n, w.hw == g.h * g.w,
                  w.channels == g.c, OneDNN.forwardSourceBlock(g, bf16: dnnlBF16) == w.block else { return nil }
            return w
        }()
        var kept: HalfBuffer?, source: LaidRecipe?, keepInstead = false, keepLaid = false
        if needsGrad(weight) {
            if ctx.rebuildConvInputs, ctx.gradEnabled, let r = x.laidRecipe, r.matches(g, mode),
               OneDNN.sourceBlock(g, bf16: dnnlBF16) == r.block {
                source = r
                if ctx.keptInputsShare > 0 && dnnlBF16 && ctx.laidInputs {
                    // The words' bytes against the share of the other saved bytes.
                    let others = ctx.saved.bytes - ctx.saved.keptInputBytes
                    keepInstead = Double(ctx.saved.keptInputBytes + x.count * 2) <= ctx.keptInputsShare * Double(others)
                }
            } else if xLaidValues != nil && OneDNN.sourceBlock(g, bf16: dnnlBF16) == OneDNN.forwardSourceBlock(g, bf16: dnnlBF16) {
                keepLaid = true
            } else if !f16 && !onF32 {
                // (Under fp16 and bf16 on Float32 primitives the input is saved in 16 bits, as the
                // composed convolution saves it.)
                let bytes = OneDNN.keepBytes(g, bf16: dnnlBF16)
                if bytes > 0 && bytes <= x.count * (dnnlBF16 ? 2 : 4) { kept = HalfBuffer(count: bytes / 2) }
            }
        }
        let xr = onF32 ? Conv.roundedBF16(ctx, x.data, count: x.count) : nil
        let wr = onF32 ? Conv.roundedBF16(ctx, weight.data, count: weight.count) : nil
        // x in the layout the forward takes, where the ops that made x wrote it so (no reorder of x):
        // bfloat16 words on bfloat16 primitives, Float32 values on Float32 ones.
        let xLaid: LaidValues.Storage? = kept == nil ? xLaidValues?.gathered() : nil
        // Kept instead of rebuilt: the words that served the forward, where the weight gradient
        // takes the same layout.
        if keepInstead {
            keepInstead = xLaid != nil && OneDNN.sourceBlock(g, bf16: true) == OneDNN.forwardSourceBlock(g, bf16: true)
        }
        // (x's plain values are not read, nor made when deferred, where the forward takes its laid ones.)
        let laidForward = withExtendedLifetime((xr, wr, xLaid)) {
            OneDNN.forwardLaid(ctx, g, x: xr.map { UnsafePointer($0.ptr) } ?? (xLaid != nil ? nil : UnsafePointer(x.data)), w: wr?.ptr ?? weight.data,
                               y: zRaw, bf16: dnnlBF16, keepX: kept.map { UnsafeMutableRawPointer($0.ptr) },
                               xLaid: xLaid.map { UnsafeRawPointer($0.raw) })
        }
        if laidForward && xLaid != nil { ctx.laidInputsTaken += 1 }
        guard laidForward else { return composed() }
        // The laid input kept for the weight gradient (x has no recipe to rebuild it from).
        let keptLaid = keepLaid ? xLaid : nil
        var keptInstead: HalfBuffer? = nil
        if keepInstead, case .words(let words)? = xLaid {
            keptInstead = words
            source = nil
            ctx.keptInputs += 1
        }
        if let zScratch, let zHalf {
            let src = zScratch.ptr, dst = zHalf.ptr, convert = f16 ? k.pointee.f32_to_f16 : k.pointee.f32_to_bf16
            ctx.normPass(bytes: f32Bytes + wordBytes) {
                Parallel.chunks(zHalf.count, grain: 1 << 16) { r in convert(src + r.lowerBound, dst + r.lowerBound, r.count) }
            }
        }

        // Statistics: per-image sums from the kernels, added in image order.
        func channelTotals(_ perImage: [Double]) -> [Double] {
            var t = [Double](repeating: 0, count: c)
            for i in 0..<n { for ch in 0..<c { t[ch] += perImage[i * c + ch] } }
            return t
        }
        func blockedSums(mean: [Float]?) -> [Double] {
            var out = [Double](repeating: 0, count: n * c)
            out.withUnsafeMutableBufferPointer { op in
                let opp = op.baseAddress!
                if let mean {
                    mean.withUnsafeBufferPointer { mp in
                        let mpp = mp.baseAddress!
                        ctx.normPass(bytes: zBytes) {
                            Parallel.chunks(items, grain: grain) { r in
                                k.pointee.blocked_sums(zf, zh, zF16, Int32(n), Int32(c), Int32(hw), Int32(B), Int32(r.lowerBound),
                                                       Int32(r.upperBound), mpp, opp)
                            }
                        }
                    }
                } else {
                    ctx.normPass(bytes: zBytes) {
                        Parallel.chunks(items, grain: grain) { r in
                            k.pointee.blocked_sums(zf, zh, zF16, Int32(n), Int32(c), Int32(hw), Int32(B), Int32(r.lowerBound),
                                                   Int32(r.upperBound), nil, opp)
                        }
                    }
                }
            }
            return channelTotals(out)
        }
        var batchMean: [Float]? = nil, batchVariance: [Float]? = nil
        if training {
            let mean = blockedSums(mean: nil).map { Float($0 / Double(m)) }
            batchVariance = blockedSums(mean: mean).map { Float($0 / Double(m)) }
            batchMean = mean
        }
        let replicaSum = training ? ctx.replicaSum : nil
        let plan = BatchNormPlan(batchMean: batchMean, batchVariance: batchVariance, values: m, stats: stats,
                                 momentum: momentum, eps: eps, weight: bnWeight, bias: bnBias, replicaSum: replicaSum)
        // The output also in z's layout, for the convolutions that read it (`LaidValues`): as
        // bfloat16 words on bfloat16 primitives, as Float32 on Float32 ones. With
        // `deferPlainValues` the NCHW output is made only when something reads it: copied out of
        // the Float32 ones, or (words do not hold the Float32 values) by the same affine pass from z.
        let words = dnnlBF16 && ctx.laidInputs ? HalfBuffer(count: n * c * hw) : nil
        let floats = mode == .fp32 && ctx.laidInputs ? Buffer(count: n * c * hw) : nil
        let outShape = [n, c, g.oh, g.ow]
        let out: Tensor
        if let floats, ctx.deferPlainValues {
            let values = LaidValues(.floats(floats), n: n, c: c, hw: hw, block: B)
            out = Tensor(shape: outShape, deferred: { values.plain(k) })
        } else if words != nil, ctx.deferPlainValues {
            let (scale, shift) = (plan.scale, plan.shift)
            out = Tensor(shape: outShape, deferred: {
                withExtendedLifetime((zFull, zHalf)) {
                    let b = Buffer(count: n * c * hw), po = b.ptr
                    scale.withUnsafeBufferPointer { sp in
                        shift.withUnsafeBufferPointer { hp in
                            let spp = sp.baseAddress!, hpp = hp.baseAddress!
                            ComputeContext.current.normPass(bytes: zBytes + f32Bytes) {
                                Parallel.chunks(items, grain: grain) { r in
                                    k.pointee.blocked_affine(zf, zh, zF16, Int32(n), Int32(c), Int32(hw), Int32(B), Int32(r.lowerBound),
                                                             Int32(r.upperBound), spp, hpp, po, nil, nil, silu ? 1 : 0)
                                }
                            }
                        }
                    }
                    return b
                }
            })
        } else {
            out = Tensor(uninitialized: outShape)
        }
        let po: UnsafeMutablePointer<Float>? = out.hasPlainValues ? out.data : nil
        let pw = words?.ptr, pf = floats?.ptr
        plan.scale.withUnsafeBufferPointer { sp in
            plan.shift.withUnsafeBufferPointer { hp in
                let spp = sp.baseAddress!, hpp = hp.baseAddress!
                let written = (po != nil ? f32Bytes : 0) + (pw != nil ? wordBytes : 0) + (pf != nil ? f32Bytes : 0)
                ctx.normPass(bytes: zBytes + written) {
                    Parallel.chunks(items, grain: grain) { r in
                        k.pointee.blocked_affine(zf, zh, zF16, Int32(n), Int32(c), Int32(hw), Int32(B), Int32(r.lowerBound),
                                                 Int32(r.upperBound), spp, hpp, po, pw, pf, silu ? 1 : 0)
                    }
                }
            }
        }
        if let words { out.laidValues = LaidValues(.words(words), n: n, c: c, hw: hw, block: B) }
        if let floats { out.laidValues = LaidValues(.floats(floats), n: n, c: c, hw: hw, block: B) }
        guard needsGrad(x, weight, bnWeight, bnBias) else { return out }

        ctx.saved.count(bytes: (zFull?.bytes ?? 0) + (zHalf?.bytes ?? 0))
        if let kept { ctx.saved.count(bytes: kept.bytes) }
        if let keptInstead {
            ctx.saved.countKeptInput(bytes: keptInstead.bytes)
            kept = keptInstead
        }
        if let keptLaid { ctx.saved.count(bytes: keptLaid.bytes) }
        let sx: Saved? = needsGrad(weight) && kept == nil && source == nil && keptLaid == nil ? ctx.save(x.buffer) : nil
        // This output can be rebuilt from z while this op's backward has not run (the recipe holds z
        // weakly; this closure holds it).
        let recipe = LaidRecipe(LaidRecipe.Source(zFull: zFull, zHalf: zHalf, scale: plan.scale, shift: plan.shift, silu: silu),
                                format: mode, n: n, c: c, hw: hw, block: B)
        let (nx, nw, ng, nb) = (x.node, weight.node, bnWeight.node, bnBias.node)
        let wd = weight.detached()
        let gamma = bnWeight.data
        // gout: NCHW, or with goutLaid in z's blocked layout (handed over by the one op that takes
        // this output, a fused block whose input gradient comes out in that layout). Under fp16 and
        // bf16 the gradient sums read gout rounded to half (bfloat16) values, as backward would have
        // rounded this node's gradient in a pass of its own (`Node.roundsOwnGradient`).
        let gRound: Int32 = mode == .fp16 ? 2 : mode == .bf16 ? 1 : 0
        func backward(_ gout: Buffer?, goutLaid: Bool, words: HalfBuffer? = nil) {
            let bctx = ComputeContext.current
            let kb = bctx.k
            withExtendedLifetime((zFull, zHalf)) {
                // dz (blocked, Float32): the gradient at the batch-norm output (before SiLU), and the
                // per-image sums of dz and dz * (z - mean). A blocked gout becomes dz in place (the
                // node's own gradient buffer, which backward hands over as scratch).
                // With `words` (the whole gradient as a bfloat16 primitive's words, blocked) dz is a
                // buffer of its own.
                let d = goutLaid ? gout! : Buffer(count: n * c * hw)
                let gIn = words.map { UnsafeRawPointer($0.ptr).assumingMemoryBound(to: Float.self) } ?? UnsafePointer(gout!.ptr)
                let gLaid: Int32 = words != nil ? 2 : goutLaid ? 1 : 0
                var sg = [Double](repeating: 0, count: n * c), sgx = sg
                sg.withUnsafeMutableBufferPointer { gp in
                    sgx.withUnsafeMutableBufferPointer { xgp in
                        plan.mean.withUnsafeBufferPointer { mp in
                            plan.scale.withUnsafeBufferPointer { sp in
                                plan.shift.withUnsafeBufferPointer { hp in
                                    let gpp = gp.baseAddress!, xgpp = xgp.baseAddress!, mpp = mp.baseAddress!
                                    let spp = silu ? sp.baseAddress : nil, hpp = silu ? hp.baseAddress : nil
                                    bctx.normPass(bytes: zBytes + (gLaid == 2 ? wordBytes : f32Bytes) + f32Bytes) {
                                        Parallel.chunks(items, grain: grain) { r in
                                            kb.pointee.blocked_grad_sums(zf, zh, zF16, gIn, gLaid, gRound, mpp, spp, hpp,
                                                                         Int32(n), Int32(c), Int32(hw),
                                                                         Int32(B), Int32(r.lowerBound), Int32(r.upperBound), d.ptr,
                                                                         gpp, xgpp)
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                let sumG = channelTotals(sg).map { Float($0) }, sumGX = channelTotals(sgx).map { Float($0) }
                // Batch-norm weight and bias gradients are this replica's own (data parallelism sums them later).
                if let nb { nb.accumulate { p in for ch in 0..<c { p[ch] += sumG[ch] } } }
                if let ng { ng.accumulate { p in for ch in 0..<c { p[ch] += sumGX[ch] * plan.invstd[ch] } } }
                guard nx != nil || nw != nil else { return }
                // The convolution's output gradient, blocked: over dz in place (Float32; under fp16
                // rounded to half values, under bf16 on Float32 primitives to bfloat16 values), or as
                // bfloat16 words (rounded to nearest even), as the composed ops round the gradient of
                // the convolution's output.
                let (ca, cb, cc) = plan.inputGradCoefficients(sumG: sumG, sumGX: sumGX, gamma: gamma, replicaSum: replicaSum)
                let gyHalf = dnnlBF16 ? HalfBuffer(count: n * c * hw) : nil
                let roundTo: Int32 = f16 ? 2 : onF32 ? 1 : 0
                ca.withUnsafeBufferPointer { ap in
                    cb.withUnsafeBufferPointer { bp in
                        cc.withUnsafeBufferPointer { cp in
                            let app = ap.baseAddress!, bpp = bp.baseAddress!, cpp = cp.baseAddress!
                            bctx.normPass(bytes: f32Bytes + zBytes + (gyHalf != nil ? wordBytes : f32Bytes)) {
                                Parallel.chunks(items, grain: grain) { r in
                                    kb.pointee.blocked_axpby(d.ptr, zf, zh, zF16, Int32(n), Int32(c), Int32(hw), Int32(B), Int32(r.lowerBound),
                                                             Int32(r.upperBound), app, bpp, cpp, gyHalf?.ptr, roundTo)
                                }
                            }
                        }
                    }
                }
                let gy = gyHalf.map { UnsafeRawPointer($0.ptr) } ?? UnsafeRawPointer(d.ptr)
                withExtendedLifetime((d, gyHalf)) {
                    if let nw {
                        let rebuilt = source?.rebuild(bctx, bf16Words: dnnlBF16)
                        withExtendedLifetime((rebuilt, kept, keptLaid)) {
                            let keptX = (rebuilt ?? kept).map { UnsafeRawPointer($0.ptr) } ?? keptLaid.map { UnsafeRawPointer($0.raw) }
                            Conv.weightGradLaid(bctx, g, x: sx, kept: keptX, gy: gy, block: B, mode: mode, dnnlBF16: dnnlBF16, into: nw)
                        }
                    }
                    if let nx {
                        let refused = "convBatchNorm: oneDNN refused the input gradient of a convolution it ran forward (\(g))"
                        if bctx.laidInputGradients, dnnlBF16, let b = OneDNN.inputGradWordsBlock(g), nx.takesLaidWords(block: b) {
                            // The whole gradient of x, and x's op reads it as bfloat16 words: the
                            // primitive's own rounded words in its layout (half the bytes of its
                            // Float32 sums, and the same values once rounded).
                            let gx = HalfBuffer(count: nx.count)
                            guard OneDNN.inputGradWordsOut(bctx, g, w: wd.data, gy: gy, gx: gx.ptr) else { preconditionFailure(refused) }
                            nx.setLaidWords(gx)
                            bctx.laidGradients += 1
                            bctx.laidGradientWords += 1
                        } else if bctx.laidInputGradients, let b = OneDNN.inputGradBlock(g, bf16: dnnlBF16),
                           nx.takesLaidGradient(block: b) {
                            // x made by an op that reads this layout (a fused block, or a channel
                            // slice, concatenation or sum that passes it on), its gradient so far
                            // empty or laid: the gradient stays in the primitive's layout (no
                            // reorder to NCHW), added to what is there.
                            // Under bf16 on Float32 primitives: rounded weights, the result rounded.
                            // On bfloat16 primitives the Float32 sums as they come: the block that
                            // reads them rounds them to bfloat16 as it reads (`roundsOwnGradient`),
                            // as the primitive would have rounded them.
                            let gx = Buffer(count: nx.count)
                            let done: Bool
                            if dnnlBF16 {
                                done = OneDNN.inputGradLaidOut(bctx, g, w: wd.data, gy: gy, gx: gx.ptr, bf16: true)
                            } else if onF32 {
                                let wr = Conv.roundedBF16(bctx, wd.data, count: wd.count)
                                done = withExtendedLifetime(wr) {
                                    Conv.roundedBF16Gradient(bctx, gx.ptr, count: gx.count, fresh: true) {
                                        OneDNN.inputGradLaidOut(bctx, g, w: wr.ptr, gy: gy, gx: $0)
                                    }
                                }
                            } else {
                                done = OneDNN.inputGradLaidOut(bctx, g, w: wd.data, gy: gy, gx: gx.ptr)
                            }
                            guard done else { preconditionFailure(refused) }
                            nx.addLaidGradient(gx, unrounded: dnnlBF16)
                            bctx.laidGradients += 1
                        } else if onF32 {
                            let wr = Conv.roundedBF16(bctx, wd.data, count: wd.count)
                            nx.accumulateOrSet { p, fresh in
                                let done = withExtendedLifetime(wr) {
                                    Conv.roundedBF16Gradient(bctx, p, count: nx.count, fresh: fresh) {
                                        OneDNN.inputGradLaid(bctx, g, w: wr.ptr, gy: gy, gx: $0, accumulate: false, bf16: false)
                                    }
                                }
                                guard done else { preconditionFailure(refused) }
                            }
                        } else {
                            nx.accumulateOrSet { p, fresh in
                                guard OneDNN.inputGradLaid(bctx, g, w: wd.data, gy: gy, gx: p, accumulate: !fresh, bf16: dnnlBF16) else {
                                    preconditionFailure(refused)
                                }
                            }
                        }
                    }
                }
            }
            withExtendedLifetime((gout, words)) {}
        }
        out.recording([x, weight, bnWeight, bnBias]) { backward($0, goutLaid: false) }
        if let node = out.node {
            out.laidRecipe = recipe
            node.roundsOwnGradient = node.gradFormat == mode
            node.laid = (block: B, n: n, c: c, hw: hw, backward: { backward($0, goutLaid: true) })
            if dnnlBF16 { node.laidWordsBackward = { backward(nil, goutLaid: false, words: $0) } }
        }
        return out
    }
}

extension Conv {
    /// The weight gradient of `convBatchNorm` from gy in oneDNN's blocked layout: assigned into the
    /// partials slot, rounded under bf16 and fp16 (as a 16-bit convolution's backward produces it), added to
    /// the weight's gradient. x is the saved input, or `kept` in oneDNN's layout; `dnnlBF16`: the
    /// primitive takes bfloat16 operands (else Float32 ones, under bf16 already rounded).
    static func weightGradLaid(_ ctx: ComputeContext, _ g: ConvGeometry, x: Saved?, kept: UnsafeRawPointer?, gy: UnsafeRawPointer,
                               block: Int, mode: Precision, dnnlBF16: Bool, into node: Node) {
        let wCount = g.o * g.kdim
        let parts = ctx.workspace.get(0, partialSlot, count: wCount)
        let ok: Bool
        if g.c == 1, g.k == 3, !dnnlBF16, kept == nil, let x {
            // One input channel (the infrared stem): oneDNN would take x padded to a channel block
            // (a reorder writing B times x's bytes, then B times the work); this kernel reads x as it is.
            x.withValues { oneChannelWeightGrad(ctx, g, x: $0, gy: gy.assumingMemoryBound(to: Float.self), block: block, into: parts) }
            ok = true
        } else if let kept {
            ok = OneDNN.weightGradLaid(ctx, g, x: nil, gy: gy, gw: parts, bf16: dnnlBF16, keptX: kept)
        } else if let x {
            ok = x.withValues { OneDNN.weightGradLaid(ctx, g, x: $0, gy: gy, gw: parts, bf16: dnnlBF16, keptX: nil) }
        } else {
            preconditionFailure("convBatchNorm: the weight gradient needs the convolution's input, which was not kept")
        }
        guard ok else { preconditionFailure("convBatchNorm: oneDNN refused the weight gradient of a convolution it ran forward (\(g))") }
        if mode != .fp32 { round(ctx, parts, count: wCount, to: mode) }
        node.accumulate { d in for j in 0..<wCount { d[j] += parts[j] } }
    }

    /// gw [O, 1, 3, 3] (assigned) of a 3 x 3 convolution with one input channel: x NCHW, gy in the
    /// blocked layout with channel block `block`. Per-image sums (CKernels' conv1_wgrad3) added in
    /// image order in double.
    static func oneChannelWeightGrad(_ ctx: ComputeContext, _ g: ConvGeometry, x: UnsafePointer<Float>, gy: UnsafePointer<Float>,
                                     block: Int, into gw: UnsafeMutablePointer<Float>) {
        precondition(g.c == 1 && g.k == 3 && block % 8 == 0 && g.o % block == 0, "conv1_wgrad3 takes one input channel, 3 x 3, whole blocks of 8")
        let perImage = g.o * 9, k = ctx.k
        let padCount = ((g.oh - 1) * g.s + 3) * ((g.ow - 1) * g.s + 3)
        var part = [Double](repeating: 0, count: g.n * perImage)
        part.withUnsafeMutableBufferPointer { pp in
            let base = pp.baseAddress!
            Parallel.chunks(g.n, grain: 1) { r in
                let pad = Buffer(count: padCount)
                k.pointee.conv1_wgrad3(x, gy, Int32(g.h), Int32(g.w), Int32(g.o), Int32(block), Int32(g.s), Int32(g.p), Int32(g.oh),
                                       Int32(g.ow), Int32(r.lowerBound), Int32(r.upperBound), pad.ptr, base + r.lowerBound * perImage)
            }
        }
        for j in 0..<perImage {
            var s = 0.0
            for i in 0..<g.n { s += part[i * perImage + j] }
            gw[j] = Float(s)
        }
    }
}
