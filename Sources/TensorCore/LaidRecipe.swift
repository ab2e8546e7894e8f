import CKernels

/// How backward rebuilds, in oneDNN's channel-blocked layout, a tensor made from fused Conv blocks'
/// outputs, from what those blocks keep for backward anyway (their z and the affine of their batch
/// norm), so that a convolution reading the tensor does not keep its own copy for its weight
/// gradient. A block's output is silu(z * scale + shift); channel slices (`narrow`, `chunk`),
/// concatenations along channels and sums of such tensors are rebuilt from their parts, with the
/// same operations the forward did (a copy is exact; a sum of two is one rounding either way), so
/// the rebuilt values are the forward's bit for bit. They come out in the element type the weight
/// gradient reads: Float32, rounded to bfloat16 as oneDNN's reorder rounds them, or (fp16
/// emulation, and bfloat16 on oneDNN's Float32 primitives) Float32 rounded to half (bfloat16)
/// values as the composed convolution saves its input.
///
/// Every part shares the batch, the pixels and the channel block B, and channel offsets are
/// multiples of B. A block's z is held weakly: that block's backward closure owns it until its
/// backward, which runs after the backward of every op that reads the block's output, so a recipe
/// kept by a long-lived tensor does not keep z alive.
final class LaidRecipe: @unchecked Sendable {
    /// What a fused block keeps for backward.
    final class Source: @unchecked Sendable {
        weak var zFull: Buffer?
        weak var zHalf: HalfBuffer?
        let scale, shift: [Float]
        let silu: Bool

        init(zFull: Buffer?, zHalf: HalfBuffer?, scale: [Float], shift: [Float], silu: Bool) {
            (self.zFull, self.zHalf, self.scale, self.shift, self.silu) = (zFull, zHalf, scale, shift, silu)
        }
    }

    enum Kind {
        case block(Source)
        /// Channels offset ..< offset + c of the recipe.
        case slice(LaidRecipe, offset: Int)
        case concat([LaidRecipe])
        /// a + b, b not itself a sum (rebuilt as a, then += b: the forward's single rounding).
        case sum(LaidRecipe, LaidRecipe)
    }

    let kind: Kind
    let format: Precision
    let n, c, hw, block: Int

    /// A fused block's output [n, c, hw] (blocked with channel block `block`).
    convenience init(_ source: Source, format: Precision, n: Int, c: Int, hw: Int, block: Int) {
        self.init(kind: .block(source), format: format, n: n, c: c, hw: hw, block: block)
    }

    private init(kind: Kind, format: Precision, n: Int, c: Int, hw: Int, block: Int) {
        (self.kind, self.format, self.n, self.c, self.hw, self.block) = (kind, format, n, c, hw, block)
    }

    /// Channels start ..< start + length, or nil when they do not fall on channel blocks.
    func slice(start: Int, length: Int) -> LaidRecipe? {
        guard start % block == 0, length % block == 0, length > 0, start + length <= c else { return nil }
        if start == 0 && length == c { return self }
        return LaidRecipe(kind: .slice(self, offset: start), format: format, n: n, c: length, hw: hw, block: block)
    }

    /// The concatenation along channels, or nil when the parts do not share batch, pixels, block and type.
    static func concat(_ parts: [LaidRecipe]) -> LaidRecipe? {
        guard let p0 = parts.first, parts.allSatisfy({ $0.compatible(with: p0) }) else { return nil }
        return LaidRecipe(kind: .concat(parts), format: p0.format, n: p0.n, c: parts.reduce(0) { $0 + $1.c }, hw: p0.hw, block: p0.block)
    }

    /// a + b of the same shape, or nil (also when b is itself a sum).
    static func sum(_ a: LaidRecipe, _ b: LaidRecipe) -> LaidRecipe? {
        guard a.compatible(with: b), a.c == b.c else { return nil }
        if case .sum = b.kind { return nil }
        return LaidRecipe(kind: .sum(a, b), format: a.format, n: a.n, c: a.c, hw: a.hw, block: a.block)
    }

    func compatible(with o: LaidRecipe) -> Bool { format == o.format && n == o.n && hw == o.hw && block == o.block }

    /// Whether a convolution of geometry `g` under `mode` reads this tensor.
    func matches(_ g: ConvGeometry, _ mode: Precision) -> Bool { format == mode && g.n == n && g.c == c && g.h * g.w == hw }

    /// The tensor in the blocked layout (raw storage: bfloat16 words, or Float32 values in two words
    /// each). A bfloat16 recipe gives words with `bf16Words` (oneDNN's bfloat16 primitives read
    /// them), else Float32 values rounded to bfloat16 (its Float32 primitives under the bfloat16
    /// autocast, `OneDNN.Route.bf16OnF32`).
    func rebuild(_ ctx: ComputeContext, bf16Words: Bool) -> HalfBuffer {
        let count = n * c * hw
        if format == .bf16 && bf16Words {
            let out = HalfBuffer(count: count)
            writeWords(ctx, into: out.ptr, dstC: c, to: 0, start: 0, count: c)
            return out
        }
        let out = HalfBuffer(count: count * 2)
        let f = UnsafeMutableRawPointer(out.ptr).assumingMemoryBound(to: Float.self)
        // Rounded (fp16, bf16 on Float32 primitives) as each final value is stored.
        write(ctx, into: f, dstC: c, to: 0, start: 0, count: c, accumulate: false, rounded: format != .fp32)
        return out
    }

    /// Channels start ..< start + count of this tensor into channels to ..< to + count of dst
    /// ([n, dstC, hw] Float32, blocked), assigned or (accumulate) added; with `rounded`, the final
    /// values rounded to this recipe's format (half or bfloat16 values), as one pass after would.
    func write(_ ctx: ComputeContext, into dst: UnsafeMutablePointer<Float>, dstC: Int, to: Int, start: Int, count: Int,
               accumulate: Bool, rounded: Bool = false) {
        switch kind {
        case .block(let s):
            leaf(ctx, s, f32: dst, bf16: nil, dstC: dstC, to: to, start: start, count: count, accumulate: accumulate, rounded: rounded)
        case .slice(let r, let offset):
            r.write(ctx, into: dst, dstC: dstC, to: to, start: offset + start, count: count, accumulate: accumulate, rounded: rounded)
        case .concat(let parts):
            var base = 0
            for p in parts {
                let lo = Swift.max(start, base), hi = Swift.min(start + count, base + p.c)
                if lo < hi {
                    p.write(ctx, into: dst, dstC: dstC, to: to + lo - start, start: lo - base, count: hi - lo, accumulate: accumulate,
                            rounded: rounded)
                }
                base += p.c
            }
        case .sum(let a, let b):
            precondition(!accumulate, "LaidRecipe: a sum is never added into another (b of a sum is not a sum)")
            // a unrounded; the sum rounded as b is added.
            a.write(ctx, into: dst, dstC: dstC, to: to, start: start, count: count, accumulate: false)
            b.write(ctx, into: dst, dstC: dstC, to: to, start: start, count: count, accumulate: true, rounded: rounded)
        }
    }

    /// Channels start ..< start + count of this tensor as bfloat16 words into channels to ..< to +
    /// count of dst ([n, dstC, hw] blocked words): a block's values rounded as they are stored, a
    /// sum made in Float32 first (as the forward made it) and rounded once, so only sums pass
    /// through Float32 storage.
    private func writeWords(_ ctx: ComputeContext, into dst: UnsafeMutablePointer<UInt16>, dstC: Int, to: Int, start: Int, count: Int) {
        switch kind {
        case .block(let s):
            leaf(ctx, s, f32: nil, bf16: dst, dstC: dstC, to: to, start: start, count: count, accumulate: false)
        case .slice(let r, let offset):
            r.writeWords(ctx, into: dst, dstC: dstC, to: to, start: offset + start, count: count)
        case .concat(let parts):
            var base = 0
            for p in parts {
                let lo = Swift.max(start, base), hi = Swift.min(start + count, base + p.c)
                if lo < hi { p.writeWords(ctx, into: dst, dstC: dstC, to: to + lo - start, start: lo - base, count: hi - lo) }
                base += p.c
            }
        case .sum:
            let tmp = Buffer(count: n * count * hw)
            write(ctx, into: tmp.ptr, dstC: count, to: 0, start: start, count: count, accumulate: false)
            // Image by image: the part's channels are one contiguous run in both layouts.
            let src = tmp.ptr, k = ctx.k, run = count * hw, (images, hw) = (n, hw)
            Parallel.chunks(images * ((run + (1 << 16) - 1) >> 16), grain: 1) { r in
                let pieces = (run + (1 << 16) - 1) >> 16
                for item in r {
                    let i = item / pieces, lo = (item % pieces) << 16, len = Swift.min(1 << 16, run - lo)
                    k.pointee.f32_to_bf16(src + i * run + lo, dst + (i * dstC + to) * hw + lo, len)
                }
            }
        }
    }

    private func leaf(_ ctx: ComputeContext, _ s: Source, f32: UnsafeMutablePointer<Float>?, bf16: UnsafeMutablePointer<UInt16>?,
                      dstC: Int, to: Int, start: Int, count: Int, accumulate: Bool, rounded: Bool = false) {
        let zFull = s.zFull, zHalf = s.zHalf
        precondition(zFull != nil || zHalf != nil, "LaidRecipe: a block's z was released before a backward that reads its output")
        withExtendedLifetime((zFull, zHalf)) {
            let zf = zFull.map { UnsafePointer($0.ptr) }, zh = zHalf.map { UnsafePointer($0.ptr) }
            let k = ctx.k, (n, c, hw, block) = (n, c, hw, block)
            let f16: Int32 = format == .fp16 ? 1 : 0
            // The kernel's store mode: bit 0 add, bits 1-2 the rounding (1 bfloat16, 2 IEEE half values).
            let store = Int32(accumulate ? 1 : 0) | (rounded ? (format == .fp16 ? 4 : format == .bf16 ? 2 : 0) : 0)
            s.scale.withUnsafeBufferPointer { sp in
                s.shift.withUnsafeBufferPointer { hp in
                    let spp = sp.baseAddress!, hpp = hp.baseAddress!
                    // z's channels read; Float32 written (and read too when added to) or words written.
                    let values = n * count * hw
                    let bytes = values * (zFull != nil ? 4 : 2) + values * (f32 != nil ? (accumulate ? 8 : 4) : 2)
                    ctx.normPass(bytes: bytes) {
                        Parallel.chunks(n * (count / block), grain: Swift.max(1, elementwiseGrain / Swift.max(hw * block, 1))) { r in
                            k.pointee.blocked_affine_laid(zf, zh, f16, Int32(n), Int32(c), Int32(hw), Int32(block), Int32(start),
                                                          Int32(count), Int32(r.lowerBound), Int32(r.upperBound), spp, hpp, s.silu ? 1 : 0,
                                                          f32, bf16, Int32(dstC), Int32(to), store)
                        }
                    }
                }
            }
        }
    }
}

/// A tensor's values in oneDNN's channel-blocked layout, written beside its NCHW values by the op
/// that made it (a fused Conv block on oneDNN: its affine + SiLU pass stores both; a residual sum
/// of such outputs) and carried through channel slices and concatenations, so that a convolution
/// reading the tensor takes them as its input instead of reordering the NCHW values: bfloat16 words
/// on bfloat16 primitives (the same rounding as the reorder's, so the same words), Float32 on
/// Float32 ones (the same values). The tensor holds them and they go with it.
///
/// The channels are `parts` in order, each channels start ..< start + count of a blocked [n, c, hw]
/// buffer; every part shares n, hw, the channel block and the element type, and starts and counts
/// are multiples of the block.
struct LaidValues {
    /// One blocked buffer: bfloat16 words or Float32 values.
    enum Storage {
        case words(HalfBuffer)
        case floats(Buffer)

        var raw: UnsafeMutableRawPointer {
            switch self {
            case .words(let b): UnsafeMutableRawPointer(b.ptr)
            case .floats(let b): UnsafeMutableRawPointer(b.ptr)
            }
        }
        var isWords: Bool { if case .words = self { true } else { false } }
        var bytes: Int {
            switch self {
            case .words(let b): b.bytes
            case .floats(let b): b.bytes
            }
        }
    }

    struct Part {
        let storage: Storage
        let c, start, count: Int
    }

    let parts: [Part]
    let n, hw, block: Int

    /// A whole blocked [n, c, hw] buffer.
    init(_ storage: Storage, n: Int, c: Int, hw: Int, block: Int) {
        self.init(parts: [Part(storage: storage, c: c, start: 0, count: c)], n: n, hw: hw, block: block)
    }

    private init(parts: [Part], n: Int, hw: Int, block: Int) {
        (self.parts, self.n, self.hw, self.block) = (parts, n, hw, block)
    }

    var channels: Int { parts.reduce(0) { $0 + $1.count } }
    /// bfloat16 words (else Float32 values).
    var isWords: Bool { parts[0].storage.isWords }

    /// Channels start ..< start + length, or nil when they do not fall on channel blocks.
    func slice(start: Int, length: Int) -> LaidValues? {
        guard start % block == 0, length % block == 0, length > 0, start + length <= channels else { return nil }
        var out: [Part] = [], base = 0
        for p in parts {
            let lo = Swift.max(start, base), hi = Swift.min(start + length, base + p.count)
            if lo < hi { out.append(Part(storage: p.storage, c: p.c, start: p.start + lo - base, count: hi - lo)) }
            base += p.count
        }
        return LaidValues(parts: out, n: n, hw: hw, block: block)
    }

    /// The concatenation along channels, or nil when the parts do not share n, hw, the block and the
    /// element type.
    static func concat(_ all: [LaidValues]) -> LaidValues? {
        guard let w0 = all.first,
              all.allSatisfy({ $0.n == w0.n && $0.hw == w0.hw && $0.block == w0.block && $0.isWords == w0.isWords }) else { return nil }
        return LaidValues(parts: all.flatMap(\.parts), n: w0.n, hw: w0.hw, block: w0.block)
    }

    /// For every channel block j (channels j * block ..< (j + 1) * block): where its Float32 values
    /// of image 0 start, and how far apart images are.
    func blockRuns() -> [(start: UnsafePointer<Float>, imageStride: Int)] {
        precondition(!isWords, "LaidValues.blockRuns: Float32 values only")
        var runs: [(start: UnsafePointer<Float>, imageStride: Int)] = []
        for p in parts {
            let f = UnsafePointer(p.storage.raw.assumingMemoryBound(to: Float.self))
            for t in 0..<(p.count / block) { runs.append((f + (p.start + t * block) * hw, p.c * hw)) }
        }
        return runs
    }

    /// The Float32 values in NCHW [n, channels, hw], each part's channels copied out of the blocked
    /// layout (the values themselves: this is what a deferred tensor's plain values are made of).
    func plain(_ k: UnsafePointer<df_kernels>) -> Buffer {
        precondition(!isWords, "LaidValues.plain: bfloat16 words do not hold the Float32 values")
        let c = channels, (n, hw, b) = (n, hw, block)
        let out = Buffer(count: n * c * hw)
        let dst = out.ptr
        var to = 0
        for p in parts {
            let src = p.storage.raw.assumingMemoryBound(to: Float.self)
            Parallel.chunks(n * (p.count / b), grain: Swift.max(1, elementwiseGrain / Swift.max(hw * b, 1))) { r in
                k.pointee.blocked_move(src, Int32(p.c), Int32(p.start), dst, Int32(c), Int32(to), Int32(p.count), Int32(hw), Int32(b),
                                       0, 0, Int32(r.lowerBound), Int32(r.upperBound))
            }
            to += p.count
        }
        return out
    }

    /// All channels in one blocked [n, channels, hw] buffer: the one part's own buffer when it is
    /// all of it, else the parts copied together (one contiguous run per image and part).
    func gathered() -> Storage {
        if parts.count == 1, let p = parts.first, p.start == 0, p.count == p.c { return p.storage }
        let c = channels, hw = hw, size = isWords ? 2 : 4
        let out: Storage = isWords ? .words(HalfBuffer(count: n * c * hw)) : .floats(Buffer(count: n * c * hw))
        var offsets: [Int] = [], off = 0
        for p in parts { offsets.append(off); off += p.count }
        let parts = parts, dst = out.raw
        Parallel.chunks(n * parts.count, grain: 1) { r in
            for item in r {
                let i = item / parts.count, j = item % parts.count, p = parts[j]
                (dst + (i * c + offsets[j]) * hw * size).copyMemory(from: p.storage.raw + (i * p.c + p.start) * hw * size,
                                                                     byteCount: p.count * hw * size)
            }
        }
        return out
    }
}
