import CKernels
import Foundation
import Testing
import _TestSupport
@testable import TensorCore

/// The batch-norm kernels over oneDNN's channel-blocked layout (`blocked_*`) against the NCHW
/// kernels they stand in for, and every kernel level against portable.
@Suite struct BlockedKernelTests {
    /// (N, C, HW, B): blocks of 16 and 8, nhwc (B = C), pixel counts with and without a tail of 8.
    static let shapes: [(Int, Int, Int, Int)] = [(2, 16, 37, 16), (3, 32, 64, 16), (2, 16, 5, 8), (2, 32, 9, 32), (1, 48, 100, 16), (2, 16, 21, 8)]

    static func random(_ n: Int, seed: UInt64, scale: Float = 2, offset: Float = 0) -> [Float] {
        var rng = RandomState(seed: seed)
        return (0..<n).map { _ in rng.normal() * scale + offset }
    }

    static func blocked(_ x: [Float], _ s: (Int, Int, Int, Int)) -> [Float] {
        var out = [Float](repeating: 0, count: x.count)
        df_blocked_from_nchw(x, Int32(s.0), Int32(s.1), Int32(s.2), Int32(s.3), &out)
        return out
    }

    static func nchw(_ x: [Float], _ s: (Int, Int, Int, Int)) -> [Float] {
        var out = [Float](repeating: 0, count: x.count)
        df_blocked_to_nchw(x, Int32(s.0), Int32(s.1), Int32(s.2), Int32(s.3), &out)
        return out
    }

    static func bf16Words(_ x: [Float]) -> [UInt16] { x.map { df_f32_to_bf16_1($0) } }

    /// z's storage formats: Float32, bfloat16 words, IEEE half words.
    enum Format: CaseIterable { case f32, bf16, f16 }

    /// z rounded to what `format` holds, and its 16-bit words (nil for Float32).
    static func stored(_ z: [Float], _ format: Format) -> (values: [Float], words: [UInt16]?) {
        switch format {
        case .f32: return (z, nil)
        case .bf16: return (z.map { df_bf16_to_f32_1(df_f32_to_bf16_1($0)) }, z.map { df_f32_to_bf16_1($0) })
        case .f16: return (z.map { df_f16_to_f32_1(df_f32_to_f16_1($0)) }, z.map { df_f32_to_f16_1($0) })
        }
    }

    /// Everything the four kernels give for one input, in NCHW order where a tensor comes out.
    struct Outputs: Equatable {
        var mean: [Double] = [], sq: [Double] = [], affine: [Float] = [], silu: [Float] = []
        var dz: [Float] = [], dzPlain: [Float] = [], sumG: [Double] = [], sumGX: [Double] = []
        var gx: [Float] = [], gxHalf: [UInt16] = [], gxBF16Values: [Float] = [], gxF16Values: [Float] = []
        var laid: [Float] = [], laidHalf: [UInt16] = [], laidAdded: [Float] = []
        /// blocked_affine's bfloat16 words of its SiLU values in the blocked layout (beside `silu`).
        var siluWords: [UInt16] = []
        /// blocked_affine's Float32 copy of its plain affine values in the blocked layout (beside `affine`).
        var affineLaid: [Float] = []
        /// The blocked copy written alone (no NCHW output).
        var affineLaidAlone: [Float] = []
        /// affine_laid stored rounded: assigned then added (as laidAdded), to bfloat16 then half values.
        var laidRounded: [[Float]] = []
        /// grad_sums from the gradient in the blocked layout, dz written over it in place.
        var dzLaid: [Float] = [], sumGLaid: [Double] = [], sumGXLaid: [Double] = []
        /// grad_sums reading g rounded to bfloat16 then half values: dz from NCHW g and from blocked
        /// g (in place) per rounding, and their sums (sum_g, sum_gx; then the blocked ones).
        var roundedDz: [[Float]] = [], roundedSums: [[Double]] = []

        /// Bit-equal (NaN-free inputs, so Equatable on values is bit equality up to ±0, which the
        /// kernels do not produce differently).
        static func == (a: Outputs, b: Outputs) -> Bool {
            func same(_ x: [Float], _ y: [Float]) -> Bool { x.count == y.count && zip(x, y).allSatisfy { $0.bitPattern == $1.bitPattern } }
            func sameD(_ x: [Double], _ y: [Double]) -> Bool { x.count == y.count && zip(x, y).allSatisfy { $0.bitPattern == $1.bitPattern } }
            return sameD(a.mean, b.mean) && sameD(a.sq, b.sq) && same(a.affine, b.affine) && same(a.silu, b.silu) && same(a.dz, b.dz)
                && same(a.dzPlain, b.dzPlain) && sameD(a.sumG, b.sumG) && sameD(a.sumGX, b.sumGX) && same(a.gx, b.gx) && a.gxHalf == b.gxHalf
                && same(a.gxBF16Values, b.gxBF16Values) && same(a.gxF16Values, b.gxF16Values)
                && same(a.laid, b.laid) && a.laidHalf == b.laidHalf && a.siluWords == b.siluWords && same(a.affineLaid, b.affineLaid)
                && same(a.affineLaidAlone, b.affineLaidAlone)
                && same(a.laidAdded, b.laidAdded)
                && a.laidRounded.count == b.laidRounded.count && zip(a.laidRounded, b.laidRounded).allSatisfy { same($0, $1) }
                && same(a.dzLaid, b.dzLaid) && sameD(a.sumGLaid, b.sumGLaid) && sameD(a.sumGXLaid, b.sumGXLaid)
                && a.roundedDz.count == b.roundedDz.count && zip(a.roundedDz, b.roundedDz).allSatisfy { same($0, $1) }
                && a.roundedSums.count == b.roundedSums.count && zip(a.roundedSums, b.roundedSums).allSatisfy { sameD($0, $1) }
        }
    }

    /// Runs the four kernels on z (blocked Float32, or its bfloat16 words) with per-channel numbers.
    static func run(_ k: df_kernels, _ s: (Int, Int, Int, Int), zb: [Float], zh: [UInt16]?, f16: Bool = false, g: [Float]) -> Outputs {
        let f: Int32 = f16 ? 1 : 0
        let (n, c, hw, b) = s
        let items = Int32(n * (c / b))
        let mean = random(c, seed: 5, scale: 0.3), scale = random(c, seed: 6, scale: 0.5, offset: 1), shift = random(c, seed: 7, scale: 0.5)
        let ca = random(c, seed: 8), cb = random(c, seed: 9), cc = random(c, seed: 10)
        var o = Outputs()
        o.mean = [Double](repeating: 0, count: n * c); o.sq = o.mean; o.sumG = o.mean; o.sumGX = o.mean
        o.affine = [Float](repeating: 0, count: zb.count); o.silu = o.affine; o.dz = o.affine; o.dzPlain = o.affine
        var half = [UInt16](repeating: 0, count: zb.count)
        func call(_ body: (UnsafePointer<Float>?, UnsafePointer<UInt16>?) -> Void) {
            zb.withUnsafeBufferPointer { zp in
                if let zh { zh.withUnsafeBufferPointer { body(nil, $0.baseAddress) } } else { body(zp.baseAddress, nil) }
            }
        }
        call { zf, zhp in
            k.blocked_sums(zf, zhp, f, Int32(n), Int32(c), Int32(hw), Int32(b), 0, items, nil, &o.mean)
            k.blocked_sums(zf, zhp, f, Int32(n), Int32(c), Int32(hw), Int32(b), 0, items, mean, &o.sq)
            o.affineLaid = [Float](repeating: .nan, count: zb.count)
            k.blocked_affine(zf, zhp, f, Int32(n), Int32(c), Int32(hw), Int32(b), 0, items, scale, shift, &o.affine, nil, &o.affineLaid, 0)
            o.affineLaidAlone = [Float](repeating: .nan, count: zb.count)
            k.blocked_affine(zf, zhp, f, Int32(n), Int32(c), Int32(hw), Int32(b), 0, items, scale, shift, nil, nil, &o.affineLaidAlone, 1)
            o.siluWords = [UInt16](repeating: 0, count: zb.count)
            k.blocked_affine(zf, zhp, f, Int32(n), Int32(c), Int32(hw), Int32(b), 0, items, scale, shift, &o.silu, &o.siluWords, nil, 1)
            o.laid = o.affine
            o.laidHalf = half
            k.blocked_affine_laid(zf, zhp, f, Int32(n), Int32(c), Int32(hw), Int32(b), 0, Int32(c), 0, items, scale, shift, 1,
                                  &o.laid, nil, Int32(c), 0, 0)
            k.blocked_affine_laid(zf, zhp, f, Int32(n), Int32(c), Int32(hw), Int32(b), 0, Int32(c), 0, items, scale, shift, 1,
                                  nil, &o.laidHalf, Int32(c), 0, 0)
            // The first channel block added into the last one's place (a sum of slices, rebuilt).
            o.laidAdded = o.laid
            k.blocked_affine_laid(zf, zhp, f, Int32(n), Int32(c), Int32(hw), Int32(b), 0, Int32(b), 0, Int32(n), scale, shift, 1,
                                  &o.laidAdded, nil, Int32(c), Int32(c - b), 1)
            for rnd in [Int32(1), 2] {
                var assigned = o.affine, added = o.laid
                k.blocked_affine_laid(zf, zhp, f, Int32(n), Int32(c), Int32(hw), Int32(b), 0, Int32(c), 0, items, scale, shift, 1,
                                      &assigned, nil, Int32(c), 0, rnd << 1)
                k.blocked_affine_laid(zf, zhp, f, Int32(n), Int32(c), Int32(hw), Int32(b), 0, Int32(b), 0, Int32(n), scale, shift, 1,
                                      &added, nil, Int32(c), Int32(c - b), 1 | rnd << 1)
                o.laidRounded += [assigned, added]
            }
            k.blocked_grad_sums(zf, zhp, f, g, 0, 0, mean, scale, shift, Int32(n), Int32(c), Int32(hw), Int32(b), 0, items, &o.dz, &o.sumG, &o.sumGX)
            var sg = o.sumG, sgx = o.sumGX
            k.blocked_grad_sums(zf, zhp, f, g, 0, 0, mean, nil, nil, Int32(n), Int32(c), Int32(hw), Int32(b), 0, items, &o.dzPlain, &sg, &sgx)
            var gl = blocked(g, s), sgl = o.sumG.map { _ in -1.0 }, sgxl = sgl
            gl.withUnsafeMutableBufferPointer { p in
                k.blocked_grad_sums(zf, zhp, f, p.baseAddress!, 1, 0, mean, scale, shift, Int32(n), Int32(c), Int32(hw), Int32(b), 0, items,
                                    p.baseAddress!, &sgl, &sgxl)
            }
            (o.dzLaid, o.sumGLaid, o.sumGXLaid) = (gl, sgl, sgxl)
            // g read rounded to bfloat16 (1) and half (2) values, from NCHW and in place from blocked.
            for r in [Int32(1), 2] {
                var d = o.dz, sa = o.sumG, sb = o.sumG
                k.blocked_grad_sums(zf, zhp, f, g, 0, r, mean, scale, shift, Int32(n), Int32(c), Int32(hw), Int32(b), 0, items, &d, &sa, &sb)
                var dl = blocked(g, s), sal = sa, sbl = sb
                dl.withUnsafeMutableBufferPointer { p in
                    k.blocked_grad_sums(zf, zhp, f, p.baseAddress!, 1, r, mean, scale, shift, Int32(n), Int32(c), Int32(hw), Int32(b), 0,
                                        items, p.baseAddress!, &sal, &sbl)
                }
                o.roundedDz += [d, dl]
                o.roundedSums += [sa, sb, sal, sbl]
            }
            var d = o.dz
            k.blocked_axpby(&d, zf, zhp, f, Int32(n), Int32(c), Int32(hw), Int32(b), 0, items, ca, cb, cc, &half, 0)
            o.gxHalf = half
            for (roundTo, result) in [(Int32(1), \Outputs.gxBF16Values), (2, \Outputs.gxF16Values)] {
                var r = o.dz
                k.blocked_axpby(&r, zf, zhp, f, Int32(n), Int32(c), Int32(hw), Int32(b), 0, items, ca, cb, cc, nil, roundTo)
                o[keyPath: result] = r
            }
            k.blocked_axpby(&d, zf, zhp, f, Int32(n), Int32(c), Int32(hw), Int32(b), 0, items, ca, cb, cc, nil, 0)
            o.gx = d
        }
        return o
    }

    /// z as IEEE half words of every kind but NaN (subnormals, zeros of both signs, infinities,
    /// normals; random bit patterns): the fast levels widen them with F16C, portable with integer
    /// ops, and every kernel gives the same bits.
    @Test(arguments: [0, 2])
    func halfWordsOfEveryKindWidenAlike(_ si: Int) {
        let s = BlockedKernelTests.shapes[si]
        let count = s.0 * s.1 * s.2
        var rng = RandomState(seed: 61)
        var words = (0..<count).map { _ -> UInt16 in
            let w = UInt16(truncatingIfNeeded: rng.next())
            return (w & 0x7C00) == 0x7C00 && (w & 0x03FF) != 0 ? w & 0x83FF : w   // a NaN becomes a subnormal
        }
        // Infinities, zeros, the smallest and largest subnormals and normals, in the first pixels.
        for (i, w) in [UInt16(0x7C00), 0xFC00, 0x0000, 0x8000, 0x0001, 0x83FF, 0x7BFF, 0x0400].enumerated() { words[i * 3] = w }
        let zb = words.map { df_f16_to_f32_1($0) }, g = BlockedKernelTests.random(count, seed: 2)
        let ref = BlockedKernelTests.run(KernelLevelTests.p, s, zb: zb, zh: words, f16: true, g: g)
        for k in KernelLevelTests.fast {
            #expect(BlockedKernelTests.run(k.table.pointee, s, zb: zb, zh: words, f16: true, g: g) == ref, "\(k) shape \(s)")
        }
    }

    /// grad_sums reading the gradient rounded to bfloat16 / half values gives what it gives for the
    /// gradient rounded beforehand (as backward rounds an autocast activation's gradient), from
    /// either layout, at every level.
    @Test(arguments: 0..<shapes.count)
    func gradientRoundedAsRead(_ si: Int) {
        let s = BlockedKernelTests.shapes[si]
        let count = s.0 * s.1 * s.2
        let zb = BlockedKernelTests.blocked(BlockedKernelTests.random(count, seed: 1), s)
        let g = BlockedKernelTests.random(count, seed: 2).enumerated().map { $0.offset % 7 == 0 ? $0.element * 1e-6 : $0.element }
        let rounded = [g.map { df_bf16_to_f32_1(df_f32_to_bf16_1($0)) }, g.map { df_f16_to_f32_1(df_f32_to_f16_1($0)) }]
        for k in [KernelLevelTests.p] + KernelLevelTests.fast.map(\.table.pointee) {
            let o = BlockedKernelTests.run(k, s, zb: zb, zh: nil, g: g)
            for (i, gr) in rounded.enumerated() {
                let want = BlockedKernelTests.run(k, s, zb: zb, zh: nil, g: gr)
                for d in [o.roundedDz[2 * i], o.roundedDz[2 * i + 1]] { #expect(d.map(\.bitPattern) == want.dz.map(\.bitPattern), "shape \(s) rounding \(i)") }
                for (j, sums) in o.roundedSums[4 * i..<4 * i + 4].enumerated() {
                    #expect(sums.map(\.bitPattern) == (j % 2 == 0 ? want.sumG : want.sumGX).map(\.bitPattern), "shape \(s) rounding \(i) sums \(j)")
                }
            }
        }
    }

    /// affine_laid's rounded stores give the values of its plain stores rounded in a pass after
    /// (bfloat16, then IEEE half values), assigned and added (only the added channels rounded).
    @Test(arguments: 0..<shapes.count)
    func laidStoresRoundAsAPassAfter(_ si: Int) {
        let s = BlockedKernelTests.shapes[si]
        let count = s.0 * s.1 * s.2, (_, c, hw, b) = s
        let zb = BlockedKernelTests.blocked(BlockedKernelTests.random(count, seed: 1), s), g = BlockedKernelTests.random(count, seed: 2)
        let rounds: [(Float) -> Float] = [{ df_bf16_to_f32_1(df_f32_to_bf16_1($0)) }, { df_f16_to_f32_1(df_f32_to_f16_1($0)) }]
        for k in [KernelLevelTests.p] + KernelLevelTests.fast.map(\.table.pointee) {
            let o = BlockedKernelTests.run(k, s, zb: zb, zh: nil, g: g)
            for (i, round) in rounds.enumerated() {
                #expect(o.laidRounded[2 * i].map(\.bitPattern) == o.laid.map { round($0).bitPattern }, "shape \(s) rounding \(i)")
                // Added: channels c - b ..< c of every image take the sum, rounded; the rest stay as they were.
                let want = o.laidAdded.enumerated().map { j, v -> UInt32 in
                    let blockIndex = (j / (hw * b)) % (c / b)
                    return (blockIndex == c / b - 1 ? round(v) : v).bitPattern
                }
                #expect(o.laidRounded[2 * i + 1].map(\.bitPattern) == want, "shape \(s) rounding \(i) added")
            }
        }
    }

    /// The weight gradient of a 3 x 3 convolution with one input channel (the infrared stem) against
    /// sums in double over the zero-padded image; every level bit for bit as portable, and the
    /// per-image parts independent of how the images are split.
    @Test(arguments: [(2, 21, 18, 16, 8, 2, 1), (1, 9, 9, 32, 16, 1, 1), (3, 10, 7, 16, 16, 2, 0)])
    func oneChannelWeightGradient(_ shape: (Int, Int, Int, Int, Int, Int, Int)) {
        let (n, h, w, o, b, s, p) = shape
        let oh = (h + 2 * p - 3) / s + 1, ow = (w + 2 * p - 3) / s + 1
        let x = BlockedKernelTests.random(n * h * w, seed: 3), gy = BlockedKernelTests.random(n * o * oh * ow, seed: 4)
        let gyb = BlockedKernelTests.blocked(gy, (n, o, oh * ow, b))
        var want = [Double](repeating: 0, count: o * 9)
        for i in 0..<n { for c in 0..<o { for kh in 0..<3 { for kw in 0..<3 {
            var t = 0.0
            for y in 0..<oh { for xo in 0..<ow {
                let ih = y * s + kh - p, iw = xo * s + kw - p
                guard ih >= 0, ih < h, iw >= 0, iw < w else { continue }
                t += Double(gy[((i * o + c) * oh + y) * ow + xo]) * Double(x[(i * h + ih) * w + iw])
            } }
            want[c * 9 + kh * 3 + kw] += t
        } } } }
        let padCount = ((oh - 1) * s + 3) * ((ow - 1) * s + 3)
        func parts(_ k: df_kernels, split: Int) -> [Double] {
            var part = [Double](repeating: .nan, count: n * o * 9), pad = [Float](repeating: 0, count: padCount)
            part.withUnsafeMutableBufferPointer { pp in
                for (lo, hi) in [(0, split), (split, n)] where hi > lo {
                    k.conv1_wgrad3(x, gyb, Int32(h), Int32(w), Int32(o), Int32(b), Int32(s), Int32(p), Int32(oh), Int32(ow), Int32(lo), Int32(hi),
                                   &pad, pp.baseAddress! + lo * o * 9)
                }
            }
            return part
        }
        let ref = parts(KernelLevelTests.p, split: 0)
        let total = (0..<(o * 9)).map { j in (0..<n).reduce(0.0) { $0 + ref[$1 * o * 9 + j] } }
        let scale = want.map { abs($0) }.max()!
        let err = zip(total, want).map { abs($0 - $1) }.max()! / scale
        #expect(err < 1e-6, "relative error \(err)")
        #expect(parts(KernelLevelTests.p, split: n / 2).map(\.bitPattern) == ref.map(\.bitPattern))
        for k in KernelLevelTests.fast { #expect(parts(k.table.pointee, split: n - 1).map(\.bitPattern) == ref.map(\.bitPattern), "\(k)") }
    }

    /// The gradient sums read the output gradient in the blocked layout (in place) as they read it
    /// in NCHW: the same dz and sums bit for bit, at every level.
    @Test(arguments: 0..<shapes.count, Format.allCases)
    func blockedGradientGivesTheSameSums(_ si: Int, format: Format) {
        let s = BlockedKernelTests.shapes[si]
        let count = s.0 * s.1 * s.2
        let zb = BlockedKernelTests.blocked(BlockedKernelTests.stored(BlockedKernelTests.random(count, seed: 1), format).values, s)
        let g = BlockedKernelTests.random(count, seed: 2), zh = BlockedKernelTests.stored(zb, format).words
        for k in [KernelLevelTests.p] + KernelLevelTests.fast.map(\.table.pointee) {
            let o = BlockedKernelTests.run(k, s, zb: zb, zh: zh, f16: format == .f16, g: g)
            #expect(o.dzLaid.map(\.bitPattern) == o.dz.map(\.bitPattern), "shape \(s) \(format)")
            #expect(o.sumGLaid.map(\.bitPattern) == o.sumG.map(\.bitPattern) && o.sumGXLaid.map(\.bitPattern) == o.sumGX.map(\.bitPattern))
        }
    }

    /// blocked_move: a channel slice of a blocked tensor into another blocked one or an NCHW one,
    /// assigned or added, its values rounded to bfloat16 first or not. Every level gives the
    /// element-by-element definition, bit for bit, whatever the split into work items.
    @Test(arguments: 0..<shapes.count)
    func blockedMoveIsItsDefinition(_ si: Int) {
        let (n, c, hw, b) = BlockedKernelTests.shapes[si]
        let srcC = c + b, dstC = c + 2 * b, srcStart = b, dstStart = b, items = n * (c / b)
        let src = BlockedKernelTests.random(n * srcC * hw, seed: 81), dst0 = BlockedKernelTests.random(n * dstC * hw, seed: 82)
        for laid in [Int32(0), 1] {
            for mode in Int32(0)..<4 {
                var expected = dst0
                for i in 0..<n {
                    for ch in 0..<c {
                        for p in 0..<hw {
                            let v = src[(i * srcC + srcStart + ch / b * b) * hw + p * b + ch % b]
                            let value = mode & 2 != 0 ? df_bf16_to_f32_1(df_f32_to_bf16_1(v)) : v
                            let at = laid == 1 ? (i * dstC + dstStart + ch / b * b) * hw + p * b + ch % b : (i * dstC + dstStart + ch) * hw + p
                            expected[at] = mode & 1 != 0 ? expected[at] + value : value
                        }
                    }
                }
                for k in [KernelLevelTests.p] + KernelLevelTests.fast.map({ $0.table.pointee }) {
                    var out = dst0
                    for (lo, hi) in [(0, items / 2), (items / 2, items)] {
                        k.blocked_move(src, Int32(srcC), Int32(srcStart), &out, Int32(dstC), Int32(dstStart), Int32(c), Int32(hw), Int32(b),
                                       laid, mode, Int32(lo), Int32(hi))
                    }
                    let differ = zip(out, expected).filter { $0.bitPattern != $1.bitPattern }.count
                    #expect(differ == 0, "\(String(cString: k.name)) shape \((n, c, hw, b)) laid \(laid) mode \(mode): \(differ) differ")
                }
            }
        }
    }

    /// add_laid: the NCHW sum and its bfloat16 words, or its Float32 values, in the blocked layout, on
    /// every level the element-by-element definition (with pixel counts with and without a tail of 8).
    @Test(arguments: 0..<shapes.count)
    func addLaidIsItsDefinition(_ si: Int) {
        let (n, c, hw, b) = BlockedKernelTests.shapes[si]
        let count = n * c * hw, items = n * (c / b)
        let x = BlockedKernelTests.random(count, seed: 91), y = BlockedKernelTests.random(count, seed: 92, scale: 300)
        let sum = zip(x, y).map { $0 + $1 }
        let laid = BlockedKernelTests.blocked(sum, (n, c, hw, b)), words = BlockedKernelTests.bf16Words(laid)
        for k in [KernelLevelTests.p] + KernelLevelTests.fast.map({ $0.table.pointee }) {
            var out = [Float](repeating: .nan, count: count), w = [UInt16](repeating: 0xFFFF, count: count)
            var out2 = out, f = out
            for (lo, hi) in [(0, items / 2), (items / 2, items)] {
                k.add_laid(x, y, &out, &w, nil, Int32(c), Int32(hw), Int32(b), Int32(lo), Int32(hi))
                k.add_laid(x, y, &out2, nil, &f, Int32(c), Int32(hw), Int32(b), Int32(lo), Int32(hi))
            }
            let badSums = zip(out, sum).filter { $0.bitPattern != $1.bitPattern }.count
            let badSums2 = zip(out2, sum).filter { $0.bitPattern != $1.bitPattern }.count
            let badWords = zip(w, words).filter { $0 != $1 }.count
            let badFloats = zip(f, laid).filter { $0.bitPattern != $1.bitPattern }.count
            #expect(badSums == 0 && badWords == 0 && badSums2 == 0 && badFloats == 0,
                    "\(String(cString: k.name)) shape \((n, c, hw, b)): \(badSums) + \(badSums2) sums, \(badWords) words, \(badFloats) floats differ")
        }
    }

    @Test(arguments: 0..<shapes.count, Format.allCases)
    func levelsMatchPortable(_ si: Int, format: Format) {
        let s = BlockedKernelTests.shapes[si]
        let count = s.0 * s.1 * s.2
        let z = BlockedKernelTests.random(count, seed: 1)
        let zb = BlockedKernelTests.blocked(BlockedKernelTests.stored(z, format).values, s), g = BlockedKernelTests.random(count, seed: 2)
        let zh = BlockedKernelTests.stored(zb, format).words, f16 = format == .f16
        let ref = BlockedKernelTests.run(KernelLevelTests.p, s, zb: zb, zh: zh, f16: f16, g: g)
        for k in KernelLevelTests.fast {
            #expect(BlockedKernelTests.run(k.table.pointee, s, zb: zb, zh: zh, f16: f16, g: g) == ref, "\(k) shape \(s) \(format)")
        }
        // Split into work items the sums do not change (each item writes its own (n, c) sums).
        let k = KernelLevelTests.p, (n, c, hw, b) = s, items = n * (c / b)
        var parts = [Double](repeating: 0, count: n * c)
        for i in 0..<items {
            k.blocked_sums(zh == nil ? zb : nil, zh, f16 ? 1 : 0, Int32(n), Int32(c), Int32(hw), Int32(b), Int32(i), Int32(i + 1), nil, &parts)
        }
        #expect(parts == ref.mean)
    }

    /// The blocked kernels compute what the NCHW kernels compute: the same element-wise values bit
    /// for bit (affine, SiLU, dz, the input-gradient formula), the sums to Float32 rounding (their
    /// order differs: pixels in order per channel in tiles of 64, against 8 lanes per plane).
    @Test(arguments: 0..<shapes.count, Format.allCases)
    func blockedMatchesNCHW(_ si: Int, format: Format) {
        let s = BlockedKernelTests.shapes[si]
        let (n, c, hw, _) = s
        let count = n * c * hw
        let z = BlockedKernelTests.stored(BlockedKernelTests.random(count, seed: 3, offset: 0.5), format).values
        let zb = BlockedKernelTests.blocked(z, s), g = BlockedKernelTests.random(count, seed: 4)
        let zh = BlockedKernelTests.stored(zb, format).words
        let k = Kernels.best.table.pointee
        let o = BlockedKernelTests.run(k, s, zb: zb, zh: zh, f16: format == .f16, g: g)
        let mean = BlockedKernelTests.random(c, seed: 5, scale: 0.3), scale = BlockedKernelTests.random(c, seed: 6, scale: 0.5, offset: 1)
        let shift = BlockedKernelTests.random(c, seed: 7, scale: 0.5)
        let ca = BlockedKernelTests.random(c, seed: 8), cb = BlockedKernelTests.random(c, seed: 9), cc = BlockedKernelTests.random(c, seed: 10)
        // Statistics: per-image sums added in image order, against channel_moments.
        var refMean = [Float](repeating: 0, count: c), refVar = refMean
        k.channel_moments(z, Int32(n), Int32(c), Int32(hw), 0, Int32(c), &refMean, &refVar)
        for ch in 0..<c {
            let total = (0..<n).reduce(0.0) { $0 + o.mean[$1 * c + ch] }
            #expect(abs(Float(total / Double(n * hw)) - refMean[ch]) <= 1e-6 * max(1, abs(refMean[ch])), "mean \(s) channel \(ch)")
        }
        // Element-wise: identical bits.
        var za = [Float](repeating: 0, count: count), zs = za
        k.channel_affine(z, Int32(n), Int32(c), Int32(hw), 0, Int32(c), scale, shift, &za, nil, 0)
        k.channel_affine(z, Int32(n), Int32(c), Int32(hw), 0, Int32(c), scale, shift, nil, &zs, 1)
        #expect(o.affine == za, "affine \(s)")
        #expect(o.silu == zs, "affine + SiLU \(s)")
        #expect(o.laid == BlockedKernelTests.blocked(zs, s), "affine + SiLU in the blocked layout \(s)")
        #expect(o.laidHalf == BlockedKernelTests.bf16Words(BlockedKernelTests.blocked(zs, s)), "the same as bfloat16 \(s)")
        #expect(o.siluWords == o.laidHalf, "the NCHW pass's bfloat16 words in the blocked layout \(s)")
        #expect(o.affineLaid == BlockedKernelTests.blocked(za, s), "the NCHW pass's Float32 copy in the blocked layout \(s)")
        #expect(o.affineLaidAlone == o.laid, "the blocked Float32 copy written without the NCHW output \(s)")
        var added = zs
        let b = s.3
        for i in 0..<n { for j in 0..<b { for p in 0..<hw { added[(i * c + c - b + j) * hw + p] += zs[(i * c + j) * hw + p] } } }
        #expect(o.laidAdded == BlockedKernelTests.blocked(added, s), "channels [0, B) added into [C - B, C) \(s)")
        var gFused = g, sumG = [Float](repeating: 0, count: c), sumGX = sumG
        k.channel_grad_sums(z, nil, &gFused, mean, scale, shift, Int32(n), Int32(c), Int32(hw), 0, Int32(c), &sumG, &sumGX)
        #expect(BlockedKernelTests.nchw(o.dz, s) == gFused, "dz with SiLU \(s)")
        #expect(BlockedKernelTests.nchw(o.dzPlain, s) == g, "dz without SiLU is g \(s)")
        for ch in 0..<c {
            let tg = (0..<n).reduce(0.0) { $0 + o.sumG[$1 * c + ch] }, tgx = (0..<n).reduce(0.0) { $0 + o.sumGX[$1 * c + ch] }
            let bound = 1e-5 * Double(n * hw)
            #expect(abs(tg - Double(sumG[ch])) <= bound && abs(tgx - Double(sumGX[ch])) <= bound, "grad sums \(s) channel \(ch)")
        }
        var gx = [Float](repeating: 0, count: count)
        k.channel_axpby(gFused, z, nil, Int32(n), Int32(c), Int32(hw), 0, Int32(c), ca, cb, cc, &gx, 0)
        #expect(BlockedKernelTests.nchw(o.gx, s) == gx, "input gradient \(s)")
        #expect(o.gxHalf == BlockedKernelTests.bf16Words(BlockedKernelTests.blocked(gx, s)), "input gradient as bfloat16 \(s)")
        #expect(o.gxBF16Values == BlockedKernelTests.blocked(BlockedKernelTests.stored(gx, .bf16).values, s),
                "input gradient rounded to bfloat16 values \(s)")
        #expect(o.gxF16Values == BlockedKernelTests.blocked(BlockedKernelTests.stored(gx, .f16).values, s),
                "input gradient rounded to half values \(s)")
    }
}

extension BlockedKernelTests {
    /// The vector bfloat16 rounding of the blocked kernels on the values where rounding is delicate
    /// (ties, overflow to inf, subnormals to signed zero, NaNs quieted with their payload), against
    /// the scalar oracle, on every level: the input-gradient pass with ca = 1, cb = cc = 0 passes dz
    /// through (-0 becomes +0 on the way: -0 + 0 is +0). Likewise the rounding to bfloat16 and to
    /// IEEE half values kept as Float32 (half: 65504 and the inf threshold 65520, ties, the half
    /// subnormals down to the 2^-25 tie that goes to zero, Float32 subnormals).
    @Test func bfloat16RoundingOfSpecialValues() {
        let specials: [Float] = [.nan, Float(bitPattern: 0xFFC1_2345), Float(bitPattern: 0x7F80_0001), .infinity, -.infinity,
                                 Float(bitPattern: 0x0001_1C71), Float(bitPattern: 0x8001_1C71), .greatestFiniteMagnitude, -.greatestFiniteMagnitude, 0, -0.0,
                                 Float(bitPattern: 0x3F80_8000), Float(bitPattern: 0x3F81_8000), Float(bitPattern: 0x3F80_8001),
                                 Float(bitPattern: 0x7F7F_8000), 1, -3.5,
                                 65504, 65519.99, 65520, -65536, Float(bitPattern: 0x477F_EFFF), Float(bitPattern: 0x3F80_1000),
                                 Float(bitPattern: 0x3F80_3000), Float(bitPattern: 0x3F80_1001), Float(bitPattern: 0x3300_0000),
                                 Float(bitPattern: 0x3300_0001), Float(bitPattern: 0xB3C0_0000), Float(bitPattern: 0x3420_0000),
                                 Float(bitPattern: 0x387F_FFFF), Float(bitPattern: 0x3880_0000), Float(bitPattern: 0x387F_E000),
                                 Float(bitPattern: 0x0000_0001), Float(bitPattern: 0x7FC0_1FFF)]
        let (n, c, hw, b) = (1, 16, 3, 16)
        let dz = (0..<(n * c * hw)).map { specials[$0 % specials.count] }
        let z = [Float](repeating: 1, count: dz.count)
        let ones = [Float](repeating: 1, count: c), zeros = [Float](repeating: 0, count: c)
        for k in [KernelLevelTests.p] + KernelLevelTests.fast.map({ $0.table.pointee }) {
            var d = dz, out = [UInt16](repeating: 0, count: dz.count)
            k.blocked_axpby(&d, z, nil, 0, Int32(n), Int32(c), Int32(hw), Int32(b), 0, 1, ones, zeros, zeros, &out, 0)
            #expect(out == dz.map { df_f32_to_bf16_1((1 * $0 + 0 * 1) + 0) }, "\(String(cString: k.name))")
            let through = dz.map { (1 * $0 + 0 * 1) + 0 }
            for (roundTo, oracle) in [(Int32(1), { (x: Float) in df_bf16_to_f32_1(df_f32_to_bf16_1(x)) }),
                                      (2, { (x: Float) in df_f16_to_f32_1(df_f32_to_f16_1(x)) })] {
                var r = dz
                k.blocked_axpby(&r, z, nil, 0, Int32(n), Int32(c), Int32(hw), Int32(b), 0, 1, ones, zeros, zeros, nil, roundTo)
                #expect(r.map(\.bitPattern) == through.map { oracle($0).bitPattern }, "round_to \(roundTo) \(String(cString: k.name))")
            }
        }
    }
}

/// `Tensor.convBatchNorm` on oneDNN (the convolution's output kept in oneDNN's layout) against the
/// composed `conv2d` + `batchNorm2d` of the same context (`fuseConvBatchNorm` off).
@Suite(.serialized) struct ConvBatchNormTests {
    static let geometries = [ConvGeometry(n: 2, c: 16, h: 12, w: 12, o: 16, k: 3, s: 2, p: 1),
                             ConvGeometry(n: 2, c: 16, h: 9, w: 9, o: 32, k: 1, s: 1, p: 0),
                             ConvGeometry(n: 3, c: 16, h: 10, w: 10, o: 16, k: 3, s: 1, p: 1),
                             ConvGeometry(n: 2, c: 3, h: 20, w: 20, o: 48, k: 3, s: 2, p: 1),
                             ConvGeometry(n: 2, c: 1, h: 21, w: 18, o: 16, k: 3, s: 2, p: 1)]

    struct Run {
        var y: [Float], dx: [Float], dw: [Float], dgamma: [Float], dbeta: [Float], mean: [Float], variance: [Float]
    }

    static func context(bf16: Bool, fused: Bool) -> ComputeContext { context(bf16 ? .bf16 : .fp32, fused: fused) }

    /// `bf16Primitives` false: bf16 on oneDNN's Float32 primitives even where it has bfloat16 ones.
    static func context(_ precision: Precision, fused: Bool, bf16Primitives: Bool = true) -> ComputeContext {
        let ctx = ComputeContext(threads: 2)
        ctx.gemm = .onednn
        ctx.precision = precision
        ctx.fuseConvBatchNorm = fused
        ctx.bf16Primitives = bf16Primitives
        return ctx
    }

    /// A fused Conv block with batch-norm weight 1 and bias 0, trained statistics, SiLU.
    static func unitBlock(_ t: Tensor, _ w: Tensor, stride: Int = 1) -> Tensor {
        let c = w.shape[0]
        return Tensor.convBatchNorm(t, weight: w, stride: stride, padding: w.shape[2] / 2,
                                    bnWeight: Tensor(repeating: 1, shape: [c]), bnBias: Tensor(zeros: [c]),
                                    stats: BatchNormStats(channels: c), training: true, momentum: 0.03, eps: 1e-3, silu: true)
    }

    static func dnnlBF16(_ ctx: ComputeContext) -> Bool { OneDNN.route(ctx, bf16: ctx.precision == .bf16)?.dnnlBF16 ?? false }

    /// Whether fused blocks under `precision` write laid values (Float32, or words on bfloat16 primitives).
    static func laysValues(_ precision: Precision) -> Bool {
        precision == .fp32 || (precision == .bf16 && dnnlBF16(context(precision, fused: true)))
    }

    static func run(_ g: ConvGeometry, _ ctx: ComputeContext, training: Bool, silu: Bool, grad: Bool = true) -> Run {
        var rng = RandomState(seed: 21)
        let x = Tensor.normal([g.n, g.c, g.h, g.w], rng: &rng)
        let w = Tensor.normal([g.o, g.c, g.k, g.k], std: 0.3, rng: &rng)
        let gamma = Tensor.uniform([g.o], lo: 0.5, hi: 1.5, rng: &rng), beta = Tensor.normal([g.o], std: 0.3, rng: &rng)
        let r = Tensor.normal([g.n, g.o, g.oh, g.ow], rng: &rng)
        let stats = BatchNormStats(channels: g.o)
        for ch in 0..<g.o { stats.mean.data[ch] = 0.1 * Float(ch % 5); stats.variance.data[ch] = 1 + 0.2 * Float(ch % 3) }
        for t in [x, w, gamma, beta] { t.requiresGrad = grad }
        return ctx.run {
            let y = Tensor.convBatchNorm(x, weight: w, stride: g.s, padding: g.p, bnWeight: gamma, bnBias: beta, stats: stats,
                                         training: training, momentum: 0.03, eps: 1e-3, silu: silu)
            if grad { (y * r).sum().backward() }
            func grads(_ t: Tensor) -> [Float] { t.grad?.array ?? [] }
            return Run(y: y.array, dx: grads(x), dw: grads(w), dgamma: grads(gamma), dbeta: grads(beta),
                       mean: stats.mean.array, variance: stats.variance.array)
        }
    }

    /// Largest |a - b| over the largest |b| (0 for two empty arrays).
    static func scaled(_ a: [Float], _ b: [Float]) -> Double {
        let m = Double(b.map(abs).max() ?? 0)
        return zip(a, b).map { Double(abs($0 - $1)) }.max().map { $0 / max(m, 1e-30) } ?? 0
    }

    /// (precision, silu, bf16Primitives): bf16 on oneDNN's own route here, and on its Float32
    /// primitives (forced where it has bfloat16 ones).
    static let modes: [(Precision, Bool, Bool)] = [(.fp32, false, true), (.fp32, true, true), (.bf16, false, true), (.bf16, true, true),
                                                   (.bf16, false, false), (.bf16, true, false), (.fp16, false, true), (.fp16, true, true)]

    @Test(arguments: 0..<geometries.count, 0..<modes.count)
    func trainingMatchesTheComposedOps(_ gi: Int, _ mi: Int) throws {
        let (precision, silu, primitives) = ConvBatchNormTests.modes[mi]
        try #require(OneDNN.available, "oneDNN (libdnnl) is installed by tools/install-deps.sh")
        let g = ConvBatchNormTests.geometries[gi]
        let fusedCtx = ConvBatchNormTests.context(precision, fused: true, bf16Primitives: primitives)
        let bf16 = ConvBatchNormTests.dnnlBF16(fusedCtx)
        try #require(fusedCtx.run { OneDNN.blockedOut(g, bf16: bf16) } != nil, "oneDNN keeps \(g)'s output channel-blocked")
        let f = ConvBatchNormTests.run(g, fusedCtx, training: true, silu: silu)
        let c = ConvBatchNormTests.run(g, ConvBatchNormTests.context(precision, fused: false, bf16Primitives: primitives), training: true, silu: silu)
        // The convolution's values are the same (the same primitive; a reorder is exact); only the
        // statistics' sums run in another order: measured at most 3e-7 of the largest value on an
        // AVX-512 machine, bound 2e-6.
        let fp = 2e-6
        #expect(ConvBatchNormTests.scaled(f.y, c.y) < fp, "output \(g)")
        #expect(maxMixedError(f.mean, c.mean) < fp && maxMixedError(f.variance, c.variance) < fp, "running statistics \(g)")
        #expect(ConvBatchNormTests.scaled(f.dgamma, c.dgamma) < fp && ConvBatchNormTests.scaled(f.dbeta, c.dbeta) < fp, "BN gradients \(g)")
        // The convolution's gradients come from an output gradient that differs by those ulps; under
        // bf16 (fp16) that gradient is rounded to bfloat16 (half) in both (measured: identical),
        // where an element may land one step (2^-8, 2^-11) apart: bound one step of the largest value.
        let bound = precision == .bf16 ? 4e-3 : precision == .fp16 ? 5e-4 : fp
        #expect(ConvBatchNormTests.scaled(f.dx, c.dx) < bound, "input gradient \(g): \(ConvBatchNormTests.scaled(f.dx, c.dx))")
        #expect(ConvBatchNormTests.scaled(f.dw, c.dw) < bound, "weight gradient \(g): \(ConvBatchNormTests.scaled(f.dw, c.dw))")
    }

    /// The context's tally of the batch-norm passes (what `bench train` reports): a FP32 block
    /// trained once runs two statistics passes (z read), the affine + SiLU pass (z read, the laid
    /// Float32 output written; the NCHW one deferred), the gradient sums (z and the NCHW gradient
    /// read, dz written) and the input-gradient pass (dz and z read, dz written).
    @Test func passTallyCountsTheFusedBlocksPasses() throws {
        try #require(OneDNN.available, "oneDNN (libdnnl) is installed by tools/install-deps.sh")
        let g = ConvBatchNormTests.geometries[1]
        let ctx = ConvBatchNormTests.context(.fp32, fused: true)
        try #require(ctx.run { OneDNN.blockedOut(g, bf16: false) } != nil, "oneDNN keeps \(g)'s output channel-blocked")
        #expect(ctx.normPasses == PassTally())
        _ = ConvBatchNormTests.run(g, ctx, training: true, silu: true)
        let values = g.n * g.o * g.pixels
        #expect(ctx.normPasses.calls == 5)
        #expect(ctx.normPasses.bytes == 4 * values * (1 + 1 + 2 + 3 + 3))
        #expect(ctx.normPasses.seconds > 0)
        // Eval mode: the affine pass alone (the statistics are the running ones), nothing saved.
        let before = ctx.normPasses
        _ = ConvBatchNormTests.run(g, ctx, training: false, silu: true, grad: false)
        let eval = ctx.normPasses.since(before)
        #expect(eval.calls == 1 && eval.bytes == 4 * values * 2)
    }

    /// In eval mode nothing is summed: the fused forward is the composed one bit for bit.
    @Test(arguments: [Precision.fp32, .bf16, .fp16], [false, true])
    func evalIsBitIdentical(_ precision: Precision, silu: Bool) throws {
        try #require(OneDNN.available, "oneDNN (libdnnl) is installed by tools/install-deps.sh")
        for g in ConvBatchNormTests.geometries {
            let f = ConvBatchNormTests.run(g, ConvBatchNormTests.context(precision, fused: true), training: false, silu: silu, grad: false)
            let c = ConvBatchNormTests.run(g, ConvBatchNormTests.context(precision, fused: false), training: false, silu: silu, grad: false)
            #expect(f.y.map(\.bitPattern) == c.y.map(\.bitPattern), "\(g) \(precision) silu \(silu)")
        }
    }

    /// Where the fused path does not apply (the packed GEMM) it is the composed ops.
    @Test(arguments: [Precision.fp32, .fp16])
    func elsewhereItIsTheComposedOps(_ precision: Precision) {
        let g = ConvBatchNormTests.geometries[2]
        func ctx(_ fused: Bool) -> ComputeContext {
            let c = ComputeContext(threads: 2)
            c.gemm = .packed
            c.precision = precision
            c.fuseConvBatchNorm = fused
            return c
        }
        let f = ConvBatchNormTests.run(g, ctx(true), training: true, silu: true)
        let c = ConvBatchNormTests.run(g, ctx(false), training: true, silu: true)
        #expect(f.y == c.y && f.dx == c.dx && f.dw == c.dw && f.dgamma == c.dgamma && f.mean == c.mean)
    }

    /// Synchronised statistics go through the same plan: with a one-replica sum, the fused op agrees
    /// with the composed ops as without one.
    @Test func replicaSumPath() throws {
        try #require(OneDNN.available, "oneDNN (libdnnl) is installed by tools/install-deps.sh")
        let g = ConvBatchNormTests.geometries[0]
        func ctx(_ fused: Bool) -> ComputeContext {
            let c = ConvBatchNormTests.context(bf16: false, fused: fused)
            c.replicaSum = { _, _ in }
            return c
        }
        let f = ConvBatchNormTests.run(g, ctx(true), training: true, silu: true)
        let c = ConvBatchNormTests.run(g, ctx(false), training: true, silu: true)
        #expect(ConvBatchNormTests.scaled(f.y, c.y) < 2e-6 && ConvBatchNormTests.scaled(f.dx, c.dx) < 2e-6)
        #expect(maxMixedError(f.variance, c.variance) < 2e-6)
    }

    /// A chain of two fused blocks: the second one's weight gradient takes its input rebuilt in
    /// backward from the first one's z. The same outputs and gradients bit for bit as with that input
    /// kept since the forward, with the kept copy's bytes fewer saved for backward.
    /// (precision, bf16Primitives) of the rebuilding tests.
    static let rebuildModes: [(Precision, Bool)] = [(.fp32, true), (.bf16, true), (.bf16, false), (.fp16, true)]

    @Test(arguments: 0..<rebuildModes.count)
    func rebuiltInputsMatchKeptOnes(_ mi: Int) throws {
        let (precision, primitives) = ConvBatchNormTests.rebuildModes[mi]
        try #require(OneDNN.available, "oneDNN (libdnnl) is installed by tools/install-deps.sh")
        let g1 = ConvGeometry(n: 2, c: 16, h: 12, w: 12, o: 32, k: 3, s: 1, p: 1)
        let g2 = ConvGeometry(n: 2, c: 32, h: 12, w: 12, o: 16, k: 3, s: 2, p: 1)
        struct Chain: Equatable { var y: [UInt32], grads: [[UInt32]], saved: Int }
        func chain(rebuild: Bool) -> Chain {
            let ctx = ConvBatchNormTests.context(precision, fused: true, bf16Primitives: primitives)
            ctx.rebuildConvInputs = rebuild
            ctx.keptInputsShare = 0
            var rng = RandomState(seed: 41)
            let x = Tensor.normal([2, 16, 12, 12], rng: &rng)
            let w1 = Tensor.normal([32, 16, 3, 3], std: 0.2, rng: &rng), w2 = Tensor.normal([16, 32, 3, 3], std: 0.2, rng: &rng)
            let g1w = Tensor.uniform([32], lo: 0.5, hi: 1.5, rng: &rng), b1 = Tensor.normal([32], std: 0.3, rng: &rng)
            let g2w = Tensor.uniform([16], lo: 0.5, hi: 1.5, rng: &rng), b2 = Tensor.normal([16], std: 0.3, rng: &rng)
            let r = Tensor.normal([2, 16, 6, 6], rng: &rng)
            let params = [x, w1, w2, g1w, b1, g2w, b2]
            for t in params { t.requiresGrad = true }
            return ctx.run {
                let a = Tensor.convBatchNorm(x, weight: w1, stride: 1, padding: 1, bnWeight: g1w, bnBias: b1, stats: BatchNormStats(channels: 32),
                                             training: true, momentum: 0.03, eps: 1e-3, silu: true)
                let y = Tensor.convBatchNorm(a, weight: w2, stride: 2, padding: 1, bnWeight: g2w, bnBias: b2, stats: BatchNormStats(channels: 16),
                                             training: true, momentum: 0.03, eps: 1e-3, silu: true)
                let saved = ctx.saved.bytes
                (y * r).sum().backward()
                return Chain(y: y.array.map(\.bitPattern), grads: params.map { $0.grad!.array.map(\.bitPattern) }, saved: saved)
            }
        }
        let ctx = ConvBatchNormTests.context(precision, fused: true, bf16Primitives: primitives)
        let bf16 = ConvBatchNormTests.dnnlBF16(ctx)
        try #require(ctx.run { OneDNN.blockedOut(g1, bf16: bf16) != nil && OneDNN.sourceBlock(g2, bf16: bf16) != nil })
        let rebuilt = chain(rebuild: true), kept = chain(rebuild: false)
        #expect(rebuilt.y == kept.y)
        for (i, (a, b)) in zip(rebuilt.grads, kept.grads).enumerated() { #expect(a == b, "gradient \(i)") }
        // The copy not kept: in oneDNN's layout (Float32 or bfloat16), or under fp16 the half copy.
        let copy = 2 * 32 * 12 * 12 * (precision == .fp32 ? 4 : 2)
        #expect(kept.saved - rebuilt.saved == copy, "saved \(kept.saved) with the kept copy, \(rebuilt.saved) rebuilt")
    }

    /// A chain of three fused blocks: the input gradients of the second and third blocks' inputs
    /// (fused blocks' outputs taken by nothing else) stay in the convolutions' blocked layout and the
    /// blocks before read them there. The same outputs and gradients bit for bit as through NCHW;
    /// under bf16 with bfloat16 primitives the handed-over gradient is the primitive's Float32 sums,
    /// rounded to bfloat16 by the block that reads them: the bits of the primitive's own rounding.
    @Test(arguments: 0..<rebuildModes.count)
    func laidInputGradientsMatchNCHWOnes(_ mi: Int) throws {
        let (precision, primitives) = ConvBatchNormTests.rebuildModes[mi]
        try #require(OneDNN.available, "oneDNN (libdnnl) is installed by tools/install-deps.sh")
        struct Chain: Equatable { var y: [UInt32], grads: [[UInt32]], handed: Int }
        func chain(laid: Bool) -> Chain {
            let ctx = ConvBatchNormTests.context(precision, fused: true, bf16Primitives: primitives)
            ctx.laidInputGradients = laid
            var rng = RandomState(seed: 43)
            let x = Tensor.normal([2, 16, 12, 12], rng: &rng)
            let w1 = Tensor.normal([32, 16, 3, 3], std: 0.2, rng: &rng), w2 = Tensor.normal([16, 32, 3, 3], std: 0.2, rng: &rng)
            let w3 = Tensor.normal([32, 16, 1, 1], std: 0.3, rng: &rng)
            let g1 = Tensor.uniform([32], lo: 0.5, hi: 1.5, rng: &rng), b1 = Tensor.normal([32], std: 0.3, rng: &rng)
            let g2 = Tensor.uniform([16], lo: 0.5, hi: 1.5, rng: &rng), b2 = Tensor.normal([16], std: 0.3, rng: &rng)
            let g3 = Tensor.uniform([32], lo: 0.5, hi: 1.5, rng: &rng), b3 = Tensor.normal([32], std: 0.3, rng: &rng)
            let r = Tensor.normal([2, 32, 6, 6], rng: &rng)
            let params = [x, w1, w2, w3, g1, b1, g2, b2, g3, b3]
            for t in params { t.requiresGrad = true }
            return ctx.run {
                func block(_ t: Tensor, _ w: Tensor, _ gw: Tensor, _ b: Tensor, stride: Int) -> Tensor {
                    Tensor.convBatchNorm(t, weight: w, stride: stride, padding: w.shape[2] / 2, bnWeight: gw, bnBias: b,
                                         stats: BatchNormStats(channels: w.shape[0]), training: true, momentum: 0.03, eps: 1e-3, silu: true)
                }
                let y = block(block(block(x, w1, g1, b1, stride: 1), w2, g2, b2, stride: 2), w3, g3, b3, stride: 1)
                (y * r).sum().backward()
                return Chain(y: y.array.map(\.bitPattern), grads: params.map { $0.grad!.array.map(\.bitPattern) }, handed: ctx.laidGradients)
            }
        }
        let laid = chain(laid: true), nchw = chain(laid: false)
        #expect(laid.y == nchw.y)
        for (i, (a, b)) in zip(laid.grads, nchw.grads).enumerated() { #expect(a == b, "gradient \(i)") }
        #expect(nchw.handed == 0)
        let ctx = ConvBatchNormTests.context(precision, fused: true, bf16Primitives: primitives)
        let bf16 = ConvBatchNormTests.dnnlBF16(ctx)
        let geometries = [ConvGeometry(n: 2, c: 16, h: 12, w: 12, o: 32, k: 3, s: 1, p: 1),
                          ConvGeometry(n: 2, c: 32, h: 12, w: 12, o: 16, k: 3, s: 2, p: 1),
                          ConvGeometry(n: 2, c: 16, h: 6, w: 6, o: 32, k: 1, s: 1, p: 0)]
        // Handed over wherever a block's input gradient comes out in the blocks the block before reads.
        let blocks = ctx.run {
            (0..<2).map { i in
                (OneDNN.blockedOut(geometries[i], bf16: bf16)?.block, OneDNN.inputGradBlock(geometries[i + 1], bf16: bf16))
            }
        }
        let expected = blocks.filter { $0.0 != nil && $0.0 == $0.1 }.count
        #expect(laid.handed == expected, "handed over \(laid.handed), blocks \(blocks)")
        // (Float32 everywhere; bfloat16 checked on AVX512_BF16 JIT kernels, where it was measured.)
        if !bf16 || OneDNN.isa == "avx512_core_bf16" {
            #expect(laid.handed > 0, "oneDNN's input gradients come out blocked here (\(blocks), bfloat16 primitives: \(bf16))")
        }
    }

    /// Input gradients stay blocked through channel slices, residual sums, concatenations (also of
    /// a part whose op reads only NCHW: a max pool) and outputs taken by several ops (a block's
    /// output read by two convolutions, a max pool and a concatenation): C2f with two bottlenecks,
    /// then SPPF's concatenation and two heads. The same outputs and gradients bit for bit as
    /// through NCHW (under bf16 on bfloat16 primitives each convolution's contribution is rounded to
    /// bfloat16 before it is added to another, as the primitive rounds its NCHW output), and the
    /// input gradient of every convolution whose input has a gradient handed over blocked (on
    /// bfloat16 primitives as the primitive's words where it goes whole to a block).
    @Test(arguments: 0..<rebuildModes.count)
    func laidGradientsThroughSlicesSumsConcatenationsAndSharedOutputs(_ mi: Int) throws {
        let (precision, primitives) = ConvBatchNormTests.rebuildModes[mi]
        try #require(OneDNN.available, "oneDNN (libdnnl) is installed by tools/install-deps.sh")
        struct Run: Equatable { var y: [[UInt32]], grads: [[UInt32]], handed: Int, words: Int }
        func run(laid: Bool) -> Run {
            let ctx = ConvBatchNormTests.context(precision, fused: true, bf16Primitives: primitives)
            ctx.laidInputGradients = laid
            var rng = RandomState(seed: 71)
            let x = Tensor.normal([2, 16, 12, 12], rng: &rng)
            let w1 = Tensor.normal([32, 16, 1, 1], std: 0.3, rng: &rng)
            let bottleneck = (0..<4).map { _ in Tensor.normal([16, 16, 3, 3], std: 0.2, rng: &rng) }
            let w2 = Tensor.normal([32, 64, 1, 1], std: 0.2, rng: &rng), w3 = Tensor.normal([32, 64, 1, 1], std: 0.2, rng: &rng)
            let w4 = Tensor.normal([16, 32, 3, 3], std: 0.2, rng: &rng), w5 = Tensor.normal([16, 32, 3, 3], std: 0.2, rng: &rng)
            let gammas = [32, 16, 16, 16, 16, 32, 32, 16, 16].map { Tensor.uniform([$0], lo: 0.5, hi: 1.5, rng: &rng) }
            let betas = gammas.map { Tensor.normal([$0.count], std: 0.3, rng: &rng) }
            let r = [Tensor.normal([2, 32, 12, 12], rng: &rng), Tensor.normal([2, 16, 6, 6], rng: &rng),
                     Tensor.normal([2, 16, 12, 12], rng: &rng)]
            let params = [x, w1, w2, w3, w4, w5] + bottleneck + gammas + betas
            for t in params { t.requiresGrad = true }
            return ctx.run {
                var i = 0
                func block(_ t: Tensor, _ w: Tensor, stride: Int = 1) -> Tensor {
                    defer { i += 1 }
                    return Tensor.convBatchNorm(t, weight: w, stride: stride, padding: w.shape[2] / 2, bnWeight: gammas[i], bnBias: betas[i],
                                                stats: BatchNormStats(channels: w.shape[0]), training: true, momentum: 0.03, eps: 1e-3,
                                                silu: true)
                }
                let y = block(x, w1).chunk(2, axis: 1)
                let r1 = y[1] + block(block(y[1], bottleneck[0]), bottleneck[1])
                let r2 = r1 + block(block(r1, bottleneck[2]), bottleneck[3])
                let o = block(Tensor.concat([y[0], y[1], r1, r2], axis: 1), w2)
                let pooled = Tensor.concat([o, o.maxPool2d(kernel: 5, stride: 1, padding: 2)], axis: 1)
                let outs = [block(pooled, w3), block(o, w4, stride: 2), block(o, w5)]
                let loss = zip(outs, r).map { ($0 * $1).sum() }.reduce(Tensor(zeros: []), +)
                loss.backward()
                return Run(y: outs.map { $0.array.map(\.bitPattern) }, grads: params.map { $0.grad!.array.map(\.bitPattern) },
                           handed: ctx.laidGradients, words: ctx.laidGradientWords)
            }
        }
        let laid = run(laid: true), nchw = run(laid: false)
        #expect(laid.y == nchw.y)
        for (i, (a, b)) in zip(laid.grads, nchw.grads).enumerated() {
            let differ = zip(a, b).filter { $0 != $1 }.count
            #expect(differ == 0, "gradient \(i): \(differ) of \(a.count) values differ")
        }
        #expect(nchw.handed == 0)
        // Every convolution but the first (its input is x) hands its input gradient over blocked
        // where all of them come out in the blocks the ops before read (16 channels on AVX-512).
        let probe = ConvBatchNormTests.context(precision, fused: true, bf16Primitives: primitives)
        let bf16 = ConvBatchNormTests.dnnlBF16(probe)
        let geometries = [ConvGeometry(n: 2, c: 16, h: 12, w: 12, o: 32, k: 1, s: 1, p: 0),
                          ConvGeometry(n: 2, c: 16, h: 12, w: 12, o: 16, k: 3, s: 1, p: 1),
                          ConvGeometry(n: 2, c: 64, h: 12, w: 12, o: 32, k: 1, s: 1, p: 0),
                          ConvGeometry(n: 2, c: 32, h: 12, w: 12, o: 16, k: 3, s: 2, p: 1),
                          ConvGeometry(n: 2, c: 32, h: 12, w: 12, o: 16, k: 3, s: 1, p: 1)]
        let blocks = probe.run { geometries.flatMap { [OneDNN.blockedOut($0, bf16: bf16)?.block, OneDNN.inputGradBlock($0, bf16: bf16)] } }
        if blocks.allSatisfy({ $0 == 16 }) {
            #expect(laid.handed == 8, "handed over \(laid.handed)")
            // On bfloat16 primitives the gradients that go whole to a block go as the primitive's
            // words: the bottlenecks' second blocks' inputs (2), and the first output gradient of o.
            if bf16 { #expect(laid.words == 3, "as words \(laid.words)") } else { #expect(laid.words == 0) }
        } else if !bf16 || OneDNN.isa == "avx512_core_bf16" {
            Issue.record("blocks other than 16 here (\(blocks)): count the handovers this CPU allows")
        }
    }

    /// C2f's shape: cv1, chunk in two, a bottleneck (two blocks and a residual sum) on the second
    /// half, the concatenation of all three, cv2. The convolutions after the chunk, after the sum and
    /// concatenation, and after a block rebuild their inputs from the blocks' z: the same outputs and
    /// gradients bit for bit as with copies kept since the forward, and those copies' bytes fewer
    /// saved for backward.
    @Test(arguments: 0..<rebuildModes.count)
    func rebuiltThroughSlicesSumsAndConcatenations(_ mi: Int) throws {
        let (precision, primitives) = ConvBatchNormTests.rebuildModes[mi]
        try #require(OneDNN.available, "oneDNN (libdnnl) is installed by tools/install-deps.sh")
        let probe = ConvBatchNormTests.context(precision, fused: true, bf16Primitives: primitives)
        let bf16 = ConvBatchNormTests.dnnlBF16(probe)
        // 16-channel blocks on AVX-512, 8 on AVX2: either way the chunk falls on block boundaries.
        let blocks = probe.run {
            [OneDNN.sourceBlock(ConvGeometry(n: 2, c: 16, h: 12, w: 12, o: 16, k: 3, s: 1, p: 1), bf16: bf16),
             OneDNN.sourceBlock(ConvGeometry(n: 2, c: 48, h: 12, w: 12, o: 32, k: 1, s: 1, p: 0), bf16: bf16)]
        }
        try #require(blocks[0] != nil && blocks[0] == blocks[1] && 16 % blocks[0]! == 0,
                     "these convolutions take their input in 8- or 16-channel blocks here (\(blocks))")
        struct Run: Equatable { var y: [UInt32], grads: [[UInt32]], saved: Int }
        func run(rebuild: Bool) -> Run {
            let ctx = ConvBatchNormTests.context(precision, fused: true, bf16Primitives: primitives)
            ctx.rebuildConvInputs = rebuild
            ctx.keptInputsShare = 0
            var rng = RandomState(seed: 51)
            let x = Tensor.normal([2, 16, 12, 12], rng: &rng)
            let w1 = Tensor.normal([32, 16, 1, 1], std: 0.3, rng: &rng), wa = Tensor.normal([16, 16, 3, 3], std: 0.2, rng: &rng)
            let wb = Tensor.normal([16, 16, 3, 3], std: 0.2, rng: &rng), w2 = Tensor.normal([32, 48, 1, 1], std: 0.2, rng: &rng)
            let r = Tensor.normal([2, 32, 12, 12], rng: &rng)
            let params = [x, w1, wa, wb, w2]
            for t in params { t.requiresGrad = true }
            func block(_ t: Tensor, _ w: Tensor, _ c: Int) -> Tensor {
                Tensor.convBatchNorm(t, weight: w, stride: 1, padding: w.shape[2] / 2, bnWeight: Tensor(repeating: 1, shape: [c]),
                                     bnBias: Tensor(zeros: [c]), stats: BatchNormStats(channels: c), training: true,
                                     momentum: 0.03, eps: 1e-3, silu: true)
            }
            return ctx.run {
                let y = block(x, w1, 32).chunk(2, axis: 1)
                let residual = y[1] + block(block(y[1], wa, 16), wb, 16)
                let out = block(Tensor.concat([y[0], y[1], residual], axis: 1), w2, 32)
                let saved = ctx.saved.bytes
                (out * r).sum().backward()
                return Run(y: out.array.map(\.bitPattern), grads: params.map { $0.grad!.array.map(\.bitPattern) }, saved: saved)
            }
        }
        let rebuilt = run(rebuild: true), kept = run(rebuild: false)
        #expect(rebuilt.y == kept.y)
        for (i, (a, b)) in zip(rebuilt.grads, kept.grads).enumerated() { #expect(a == b, "gradient \(i)") }
        // Not kept: the slice (16 channels), the first bottleneck block's output (16), the concatenation (48).
        let copies = (16 + 16 + 48) * 2 * 144 * (precision == .fp32 ? 4 : 2)
        #expect(kept.saved - rebuilt.saved == copies, "saved \(kept.saved) with copies kept, \(rebuilt.saved) rebuilt")
    }

    /// One run of a graph of fused blocks for the laid-input tests: the output's bits, every
    /// parameter gradient's bits, the convolutions that took laid inputs, and the deferred plain
    /// values that were made.
    struct LaidRun: Equatable { var y: [UInt32], grads: [[UInt32]], taken: Int, made: Int }

    /// The same graph with laid inputs and deferred plain values, with laid inputs and the plain
    /// values written at once, and with neither (the reorders).
    struct LaidRuns { var laid, eager, reordered: LaidRun }

    /// Builds parameters, a projection r and a graph from `seed`, and runs (graph(params) * r).sum()
    /// forward and backward in a fused context of `precision` in the three ways of `LaidRuns`.
    static func laidAndReordered(_ precision: Precision, seed: UInt64,
                                 _ make: (inout RandomState) -> (params: [Tensor], r: Tensor, graph: ([Tensor]) -> Tensor)) -> LaidRuns {
        func run(laid: Bool, deferred: Bool = true) -> LaidRun {
            let ctx = ConvBatchNormTests.context(precision, fused: true, bf16Primitives: true)
            ctx.laidInputs = laid
            ctx.deferPlainValues = deferred
            var rng = RandomState(seed: seed)
            let (params, r, graph) = make(&rng)
            for t in params { t.requiresGrad = true }
            return ctx.run {
                let out = graph(params)
                (out * r).sum().backward()
                return LaidRun(y: out.array.map(\.bitPattern), grads: params.map { $0.grad!.array.map(\.bitPattern) },
                               taken: ctx.laidInputsTaken, made: ctx.deferredValuesMade)
            }
        }
        return LaidRuns(laid: run(laid: true), eager: run(laid: true, deferred: false), reordered: run(laid: false))
    }

    /// The laid runs against the reordering one: the same bits, no laid input taken without them,
    /// and `made` deferred plain values made (none when written at once).
    static func expectSameBits(_ runs: LaidRuns, made: Int) {
        for run in [runs.laid, runs.eager] {
            #expect(run.y == runs.reordered.y)
            for (i, (a, b)) in zip(run.grads, runs.reordered.grads).enumerated() {
                let differ = zip(a, b).filter { $0 != $1 }.count
                #expect(differ == 0, "gradient \(i): \(differ) of \(a.count) values differ")
            }
        }
        #expect(runs.reordered.taken == 0 && runs.eager.taken == runs.laid.taken)
        #expect(runs.reordered.made == 0 && runs.eager.made == 0)
        #expect(runs.laid.made == made, "plain values made: \(runs.laid.made)")
    }

    /// Blocks write their outputs also in the blocked layout (bfloat16 words on bfloat16 primitives,
    /// Float32 on Float32 ones), and a block whose input is such an output (through a chunk, a
    /// concatenation of chunks and a block, or directly) takes those instead of reordering its NCHW
    /// input: the same outputs and gradients bit for bit as with the reorders.
    @Test(arguments: [Precision.bf16, .fp32])
    func laidInputsMatchReorderedOnes(_ precision: Precision) throws {
        try #require(OneDNN.available, "oneDNN (libdnnl) is installed by tools/install-deps.sh")
        let runs = ConvBatchNormTests.laidAndReordered(precision, seed: 61) { rng in
            let x = Tensor.normal([2, 16, 12, 12], rng: &rng)
            let wa = Tensor.normal([32, 16, 3, 3], std: 0.2, rng: &rng), wb = Tensor.normal([16, 16, 3, 3], std: 0.2, rng: &rng)
            let wc = Tensor.normal([32, 48, 1, 1], std: 0.2, rng: &rng), wd = Tensor.normal([32, 32, 3, 3], std: 0.2, rng: &rng)
            let r = Tensor.normal([2, 32, 6, 6], rng: &rng)
            return ([x, wa, wb, wc, wd], r, { p in
                func block(_ t: Tensor, _ w: Tensor, stride: Int = 1) -> Tensor { ConvBatchNormTests.unitBlock(t, w, stride: stride) }
                let y = block(p[0], p[1]).chunk(2, axis: 1)
                let b = block(y[1], p[2])
                return block(block(Tensor.concat([y[0], y[1], b], axis: 1), p[3]), p[4], stride: 2)
            })
        }
        // Only the output's plain values are made (the projection reads them).
        ConvBatchNormTests.expectSameBits(runs, made: ConvBatchNormTests.laysValues(precision) ? 1 : 0)
        // The chunk, the concatenation and the direct edge (checked on AVX512_BF16 JIT kernels, where it was measured).
        if OneDNN.isa == "avx512_core_bf16" { #expect(runs.laid.taken == 3, "taken \(runs.laid.taken)") }
    }

    /// The plain (NCHW) values of a fused block's output and of channel slices and concatenations
    /// of such outputs (under Float32 also of a residual sum of them) are made only when read, once:
    /// each read gives the bits the ops write at once with `deferPlainValues` off, and a reshape or
    /// a detached tensor shares them (nothing made twice). A nearest upsampling of a tensor with
    /// laid values is laid and deferred too (the block after it takes the laid values). Under bf16
    /// the sum reads its operands' plain values (the chunk, the block it comes from, the second
    /// block) when it runs.
    @Test(arguments: [Precision.fp32, .bf16])
    func deferredPlainValuesAreTheWrittenOnes(_ precision: Precision) throws {
        try #require(OneDNN.available, "oneDNN (libdnnl) is installed by tools/install-deps.sh")
        func run(deferred: Bool) -> (values: [[UInt32]], made: [Int], before: Int, upTaken: Int) {
            let ctx = ConvBatchNormTests.context(precision, fused: true, bf16Primitives: true)
            ctx.deferPlainValues = deferred
            var rng = RandomState(seed: 89)
            let x = Tensor.normal([2, 16, 12, 12], rng: &rng)
            let w1 = Tensor.normal([32, 16, 1, 1], std: 0.3, rng: &rng), wb = Tensor.normal([16, 16, 3, 3], std: 0.2, rng: &rng)
            let wu = Tensor.normal([16, 16, 3, 3], std: 0.2, rng: &rng)
            for t in [x, w1, wb, wu] { t.requiresGrad = true }
            var upBlocks: [Tensor] = [], upTaken = 0
            return ctx.run {
                let a = ConvBatchNormTests.unitBlock(x, w1)
                let y = a.chunk(2, axis: 1)
                let b = ConvBatchNormTests.unitBlock(y[1], wb)
                let res = y[1] + b
                let cat = Tensor.concat([y[0], y[1], res], axis: 1)
                // Upsampled (nearest, 2x) and read by a block: in the laid layout under Float32.
                let up = res.upsampleNearest(2)
                let taken = ctx.laidInputsTaken
                upBlocks.append(ConvBatchNormTests.unitBlock(up, wu))
                upTaken = ctx.laidInputsTaken - taken
                let before = ctx.deferredValuesMade
                var values: [[UInt32]] = [], made: [Int] = []
                for t in [cat, res, y[0], a, a.reshape([2, 32, 144]), b.detached(), a, up, upBlocks[0]] {
                    values.append(t.array.map(\.bitPattern))
                    made.append(ctx.deferredValuesMade - before)
                }
                return (values, made, before, upTaken)
            }
        }
        let deferred = run(deferred: true), eager = run(deferred: false)
        #expect(deferred.values == eager.values)
        #expect(eager.made == [0, 0, 0, 0, 0, 0, 0, 0, 0] && eager.before == 0)
        if precision == .fp32 {
            // The upsampled sum's laid values serve the block after it (not with them written at once).
            #expect(deferred.before == 0 && deferred.upTaken == 1 && eager.upTaken == 0)
            #expect(deferred.made == [1, 2, 3, 4, 4, 5, 5, 6, 7], "made after each read: \(deferred.made)")
        } else if ConvBatchNormTests.laysValues(precision) {
            // The concatenation's copy makes the other chunk's; the sum's were written at once; the
            // upsampled sum's words serve the block after it, its plain values made (from the sum's) when read.
            #expect(deferred.before == 3 && deferred.upTaken == 1 && eager.upTaken == 0)
            #expect(deferred.made == [2, 2, 2, 2, 2, 2, 2, 3, 4], "made after each read: \(deferred.made)")
        }
    }

    /// On bfloat16 primitives a block whose input it could rebuild in backward keeps the words that
    /// served its forward instead, while the kept inputs stay within `keptInputsShare` of the other
    /// saved bytes: the same outputs and gradients bit for bit with every input rebuilt (share 0),
    /// every one kept (a share no step reaches) and the default half, and the saved bytes grow by
    /// exactly the words kept. Float32 rebuilds whatever the share.
    @Test(arguments: [Precision.bf16, .fp32])
    func keptInputsMatchRebuiltOnes(_ precision: Precision) throws {
        try #require(OneDNN.available, "oneDNN (libdnnl) is installed by tools/install-deps.sh")
        struct Run: Equatable { var y: [UInt32], grads: [[UInt32]], saved: Int, keptBytes: Int, kept: Int }
        func run(share: Double) -> Run {
            let ctx = ConvBatchNormTests.context(precision, fused: true, bf16Primitives: true)
            ctx.keptInputsShare = share
            var rng = RandomState(seed: 73)
            let x = Tensor.normal([2, 16, 12, 12], rng: &rng)
            let w1 = Tensor.normal([32, 16, 1, 1], std: 0.3, rng: &rng)
            let wb = (0..<2).map { _ in Tensor.normal([16, 16, 3, 3], std: 0.2, rng: &rng) }
            let w2 = Tensor.normal([32, 48, 1, 1], std: 0.2, rng: &rng), w3 = Tensor.normal([32, 32, 3, 3], std: 0.2, rng: &rng)
            let r = Tensor.normal([2, 32, 6, 6], rng: &rng)
            let params = [x, w1, w2, w3] + wb
            for t in params { t.requiresGrad = true }
            func block(_ t: Tensor, _ w: Tensor, stride: Int = 1) -> Tensor { ConvBatchNormTests.unitBlock(t, w, stride: stride) }
            return ctx.run {
                let y = block(x, w1).chunk(2, axis: 1)
                let res = y[1] + block(block(y[1], wb[0]), wb[1])
                let out = block(block(Tensor.concat([y[0], y[1], res], axis: 1), w2), w3, stride: 2)
                let saved = ctx.saved.bytes, keptBytes = ctx.saved.keptInputBytes
                (out * r).sum().backward()
                return Run(y: out.array.map(\.bitPattern), grads: params.map { $0.grad!.array.map(\.bitPattern) }, saved: saved,
                           keptBytes: keptBytes, kept: ctx.keptInputs)
            }
        }
        let rebuilt = run(share: 0), kept = run(share: 1000), half = run(share: 0.5)
        for other in [kept, half] {
            #expect(other.y == rebuilt.y)
            for (i, (a, b)) in zip(other.grads, rebuilt.grads).enumerated() {
                let differ = zip(a, b).filter { $0 != $1 }.count
                #expect(differ == 0, "gradient \(i): \(differ) of \(a.count) values differ")
            }
            #expect(other.saved - rebuilt.saved == other.keptBytes)
        }
        #expect(rebuilt.kept == 0 && rebuilt.keptBytes == 0)
        // Kept where the layouts agree (checked on AVX512_BF16 JIT kernels, where it was measured):
        // the chunk (16 channels), the bottleneck's block (16), the concatenation (48), the last
        // block's input (32 at 12 x 12); at half, only within half of the rest.
        if precision == .fp32 {
            #expect(kept.kept == 0 && half.kept == 0 && kept.saved == rebuilt.saved)
        } else if OneDNN.isa == "avx512_core_bf16" {
            let bytes = (16 + 16 + 48 + 32) * 2 * 144 * 2
            #expect(kept.kept == 4 && kept.keptBytes == bytes, "kept \(kept.kept), \(kept.keptBytes) bytes")
            #expect(half.kept > 0 && half.kept < kept.kept, "kept \(half.kept) at half")
            #expect(Double(half.keptBytes) <= 0.5 * Double(half.saved - half.keptBytes))
        }
    }

    /// A residual sum of blocks' outputs carries its own laid values (bfloat16 words or Float32,
    /// written with the sum), so the convolutions that read it (the next bottleneck, and C2f's last
    /// block through the concatenation) take them instead of reordering: the same outputs and
    /// gradients bit for bit.
    @Test(arguments: [Precision.bf16, .fp32])
    func residualSumsCarryLaidValues(_ precision: Precision) throws {
        try #require(OneDNN.available, "oneDNN (libdnnl) is installed by tools/install-deps.sh")
        let runs = ConvBatchNormTests.laidAndReordered(precision, seed: 67) { rng in
            let x = Tensor.normal([2, 16, 12, 12], rng: &rng)
            let w1 = Tensor.normal([32, 16, 1, 1], std: 0.3, rng: &rng)
            let wb = (0..<4).map { _ in Tensor.normal([16, 16, 3, 3], std: 0.2, rng: &rng) }
            let w2 = Tensor.normal([32, 64, 1, 1], std: 0.2, rng: &rng)
            let r = Tensor.normal([2, 32, 12, 12], rng: &rng)
            return ([x, w1, w2] + wb, r, { p in
                func block(_ t: Tensor, _ w: Tensor, stride: Int = 1) -> Tensor { ConvBatchNormTests.unitBlock(t, w, stride: stride) }
                let y = block(p[0], p[1]).chunk(2, axis: 1)
                let r1 = y[1] + block(block(y[1], p[3]), p[4])
                let r2 = r1 + block(block(r1, p[5]), p[6])
                return block(Tensor.concat([y[0], y[1], r1, r2], axis: 1), p[2])
            })
        }
        // The output's plain values, and under bf16 (a sum of words reads its operands' Float32
        // values) the sums' operands: the chunk and the block it comes from, and each bottleneck's
        // second block.
        ConvBatchNormTests.expectSameBits(runs, made: !ConvBatchNormTests.laysValues(precision) ? 0 : precision == .fp32 ? 1 : 5)
        // Every block but the first (x has no words): the chunk, the bottlenecks' second blocks, r1,
        // and the concatenation holding r1 and r2 (3 without the sums' words; checked on
        // AVX512_BF16 JIT kernels, where it was measured).
        if OneDNN.isa == "avx512_core_bf16" { #expect(runs.laid.taken == 5, "taken \(runs.laid.taken)") }
    }

    /// Central differences through the fused op (Float32 on oneDNN), every input.
    @Test(arguments: [true, false])
    func gradientCheck(training: Bool) throws {
        try #require(OneDNN.available, "oneDNN (libdnnl) is installed by tools/install-deps.sh")
        let g = ConvGeometry(n: 2, c: 16, h: 6, w: 6, o: 16, k: 3, s: 1, p: 1)
        let ctx = ConvBatchNormTests.context(bf16: false, fused: true)
        try #require(ctx.run { OneDNN.blockedOut(g, bf16: false) } != nil)
        var rng = RandomState(seed: 31)
        let x = Tensor.normal([g.n, g.c, g.h, g.w], rng: &rng), w = Tensor.normal([g.o, g.c, 3, 3], std: 0.2, rng: &rng)
        let gamma = Tensor.uniform([g.o], lo: 0.5, hi: 1.5, rng: &rng), beta = Tensor.normal([g.o], std: 0.3, rng: &rng)
        let results = ctx.run {
            _TestSupport.gradientCheck([x, w, gamma, beta]) { t in
                let s = BatchNormStats(channels: g.o)
                return Tensor.convBatchNorm(t[0], weight: t[1], stride: 1, padding: 1, bnWeight: t[2], bnBias: t[3], stats: s,
                                            training: training, momentum: 0.03, eps: 1e-3, silu: true)
            }
        }
        for (i, r) in results.enumerated() { #expect(r.scaledError < 2e-2, "input \(i): \(r)") }
    }
}
