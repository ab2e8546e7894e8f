import CKernels
import Foundation
import Testing
@testable import TensorCore

/// Every fast kernel level (AVX2, AVX-512, AVX-512 with native bfloat16) pinned to its portable
/// twin, function by function, on sizes with SIMD tails. The kernels are compiled without FP
/// contraction and sum in fixed lane orders, so every level must agree with portable bit for bit.
@Suite struct KernelLevelTests {
    /// The levels this CPU runs besides portable, with and without native bfloat16.
    static var fast: [Kernels] {
        var out: [Kernels] = []
        for level in Kernels.Level.allCases.dropFirst() {
            if let k = Kernels(level: level) { out.append(k) }
            if let k = Kernels(level: level, bf16: true), k.nativeBF16 { out.append(k) }
        }
        return out
    }

    static var p: df_kernels { Kernels.portable.table.pointee }

    func random(_ n: Int, seed: UInt64, scale: Float = 4) -> [Float] {
        var rng = RandomState(seed: seed)
        return (0..<n).map { _ in rng.normal() * scale }
    }

    /// Identical bit patterns (NaN included).
    func same(_ a: [Float], _ b: [Float]) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { $0.bitPattern == $1.bitPattern }
    }

    @Test func thisMachineHasAFastLevel() {
        // The kinds this project runs on have AVX2 at least; without it these tests would prove nothing.
        #expect(!KernelLevelTests.fast.isEmpty, "cpu level \(Kernels.cpuLevel)")
        #expect(Kernels.best.level == Kernels.cpuLevel)
        #expect(Kernels.best.nativeBF16 == Kernels.cpuHasBF16)
    }

    @Test(arguments: [1, 15, 16, 17, 1000, 4099])
    func activationsAndElementwise(_ n: Int) {
        let x = random(n, seed: 1), y = random(n, seed: 2), g = random(n, seed: 3, scale: 1)
        let p = KernelLevelTests.p
        func run(_ k: df_kernels) -> [[Float]] {
            var outs: [[Float]] = []
            var o = [Float](repeating: 0, count: n)
            k.silu_fwd(x, &o, n); outs.append(o)
            k.sigmoid_fwd(x, &o, n); outs.append(o)
            k.exp_fwd(x, &o, n); outs.append(o)
            o = y; k.silu_bwd(x, g, &o, n, 1); outs.append(o)
            k.silu_bwd(x, g, &o, n, 0); outs.append(o)
            o = y; k.sigmoid_bwd(x.map { 1 / (1 + exp(-$0)) }, g, &o, n); outs.append(o)
            o = y; k.add_scaled_into(&o, x, 0.37, n); outs.append(o)
            return outs
        }
        func exact(_ k: df_kernels) -> [[Float]] {
            var outs: [[Float]] = []
            var o = y
            k.add_into(&o, x, n); outs.append(o)
            o = y; k.scale(&o, 0.37, n); outs.append(o)
            k.add(x, y, &o, n); outs.append(o)
            k.sub(x, y, &o, n); outs.append(o)
            k.mul(x, y, &o, n); outs.append(o)
            var s = 0.0
            k.sum_squares(x, n, &s); outs.append([Float(s)])
            var finite: Int32 = 0
            k.all_finite(x, n, &finite); outs.append([Float(finite)])
            var withNaN = x
            withNaN[n / 2] = .nan
            k.all_finite(withNaN, n, &finite); outs.append([Float(finite)])
            withNaN[n / 2] = -.infinity
            k.all_finite(withNaN, n, &finite); outs.append([Float(finite)])
            return outs
        }
        let ref = run(p), refExact = exact(p)
        for k in KernelLevelTests.fast {
            for (i, (a, b)) in zip(run(k.table.pointee) + exact(k.table.pointee), ref + refExact).enumerated() {
                #expect(same(a, b), "\(k) function \(i) n=\(n)")
            }
        }
    }

    @Test(arguments: [(2, 5, 7), (3, 16, 33), (1, 8, 4096)])
    func channelLoops(_ shape: (Int, Int, Int)) {
        let (n, c, hw) = shape
        let x = random(n * c * hw, seed: 4), g = random(n * c * hw, seed: 5, scale: 0.5)
        let sc = random(c, seed: 6, scale: 1), sh = random(c, seed: 7, scale: 1)
        let (N, C, HW) = (Int32(n), Int32(c), Int32(hw))
        // x as bfloat16 words, and those words' Float32 values.
        var xh = [UInt16](repeating: 0, count: x.count)
        KernelLevelTests.p.f32_to_bf16(x, &xh, x.count)
        let xw = xh.map { Float(bitPattern: UInt32($0) << 16) }
        func run(_ k: df_kernels) -> [[Float]] {
            var outs: [[Float]] = []
            var mean = [Float](repeating: 0, count: c), v = mean
            k.channel_moments(x, N, C, HW, 0, C, &mean, &v); outs += [mean, v]
            var sums = [Float](repeating: 1, count: c)
            k.channel_sums(x, N, C, HW, 0, C, &sums); outs.append(sums)
            var sg = mean, sgx = mean
            var gs = g
            k.channel_grad_sums(x, nil, &gs, mean, nil, nil, N, C, HW, 0, C, &sg, &sgx); outs += [sg, sgx, gs]
            k.channel_grad_sums(x, nil, &gs, mean, sc, sh, N, C, HW, 0, C, &sg, &sgx); outs += [sg, sgx, gs]
            // x from bfloat16 words: the same bits as from their Float32 values.
            var gw = g, gf = g, sgw = mean, sgxw = mean, sgf = mean, sgxf = mean
            k.channel_grad_sums(nil, xh, &gw, mean, sc, sh, N, C, HW, 0, C, &sgw, &sgxw)
            k.channel_grad_sums(xw, nil, &gf, mean, sc, sh, N, C, HW, 0, C, &sgf, &sgxf)
            outs += [sgw, sgxw, gw]
            #expect(same(sgw, sgf) && same(sgxw, sgxf) && same(gw, gf), "\(String(cString: k.name)) bf16 x, SiLU")
            k.channel_grad_sums(nil, xh, &gw, mean, nil, nil, N, C, HW, 1, C, &sgw, &sgxw)
            k.channel_grad_sums(xw, nil, &gf, mean, nil, nil, N, C, HW, 1, C, &sgf, &sgxf)
            #expect(same(sgw, sgf) && same(sgxw, sgxf) && same(gw, gf), "bf16 x, plain")
            var z = x, a = x
            k.channel_affine(x, N, C, HW, 0, C, sc, sh, &z, &a, 1); outs += [z, a]
            k.channel_affine(x, N, C, HW, 0, C, sc, sh, &z, nil, 0); outs.append(z)
            var o = g
            k.channel_axpby(g, x, nil, N, C, HW, 0, C, sc, sh, sc, &o, 1); outs.append(o)
            k.channel_axpby(g, x, nil, N, C, HW, 1, C, sc, sh, sc, &o, 0); outs.append(o)
            var ow = o, of = o
            k.channel_axpby(g, nil, xh, N, C, HW, 0, C, sc, sh, sc, &ow, 1)
            k.channel_axpby(g, xw, nil, N, C, HW, 0, C, sc, sh, sc, &of, 1)
            outs.append(ow)
            #expect(same(ow, of), "bf16 x, axpby")
            var y = x
            k.channel_bias_silu(&y, N, C, HW, 0, C, sh, 1); outs.append(y)
            y = x
            k.channel_bias_silu(&y, N, C, HW, 1, C, sh, 0); outs.append(y)
            return outs
        }
        let ref = run(KernelLevelTests.p)
        for k in KernelLevelTests.fast {
            for (i, (a, b)) in zip(run(k.table.pointee), ref).enumerated() {
                #expect(same(a, b), "\(k) channel function \(i) shape \(shape)")
            }
        }
    }

    /// bfloat16 conversion: every level (the native `vcvtneps2bf16` included) equals the portable
    /// rule bit for bit: round to nearest even, subnormals to signed zero, NaN quieted, overflow to inf.
    @Test func bfloat16ConversionIsOneRuleOnEveryLevel() {
        var rng = RandomState(seed: 13)
        var xs: [Float] = [0, -0.0, 1, -1, .infinity, -.infinity, .nan, Float(bitPattern: 0x7F80_0001),
                           Float(bitPattern: 0xFFA0_1234), .greatestFiniteMagnitude, -.greatestFiniteMagnitude,
                           Float(bitPattern: 0x7F7F_8000), Float(bitPattern: 0x7F7F_7FFF),
                           Float.leastNonzeroMagnitude, -Float.leastNormalMagnitude / 2, Float.leastNormalMagnitude,
                           Float(bitPattern: 0x3F80_8000), Float(bitPattern: 0x3F81_8000), Float(bitPattern: 0x3F80_8001)]
        for _ in 0..<100_000 { xs.append(Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()))) }
        for _ in 0..<10_000 { xs.append(rng.normal()) }
        let p = KernelLevelTests.p
        var ref = [UInt16](repeating: 0, count: xs.count)
        p.f32_to_bf16(xs, &ref, xs.count)
        // The rule itself, on the edges.
        #expect(ref[0] == 0 && ref[1] == 0x8000 && ref[2] == 0x3F80 && ref[4] == 0x7F80)
        #expect(ref[7] == 0x7FC0 && ref[8] == 0xFFE0, "NaN quieted, payload top kept")
        #expect(ref[9] == 0x7F80, "max float rounds to inf")
        #expect(ref[11] == 0x7F80 && ref[12] == 0x7F7F, "tie above max bfloat16 -> inf; below -> max")
        #expect(ref[13] == 0 && ref[14] == 0x8000, "subnormals flush to signed zero")
        #expect(ref[16] == 0x3F80 && ref[17] == 0x3F82 && ref[18] == 0x3F81, "ties to even; above the tie up")
        for k in [Kernels.portable] + KernelLevelTests.fast {
            var out = [UInt16](repeating: 0, count: xs.count)
            k.table.pointee.f32_to_bf16(xs, &out, xs.count)
            #expect(out == ref, "\(k) encode")
            var tail = [UInt16](repeating: 0, count: 21)
            k.table.pointee.f32_to_bf16(xs, &tail, 21)
            #expect(tail == Array(ref.prefix(21)), "\(k) tail")
            var back = [Float](repeating: 0, count: xs.count)
            k.table.pointee.bf16_to_f32(ref, &back, xs.count)
            var rounded = xs
            k.table.pointee.round_bf16(&rounded, xs.count)
            #expect(zip(back, rounded).allSatisfy { $0.bitPattern == $1.bitPattern }, "\(k) round == decode(encode)")
        }
    }

    @Test func contextsChooseTheirKernels() {
        let a = ComputeContext(kernels: .portable)
        #expect(a.run { ComputeContext.current.kernels } == .portable)
        #expect(ComputeContext.current !== a, "run restores the previous context")
        // A Saved 16-bit activation decodes with the kernels it was saved with.
        let t = Tensor(random(100, seed: 9), shape: [100])
        let viaPortable = a.run { Autocast.with(.bf16) { ComputeContext.current.save(t.buffer).unpack().array } }
        let viaBest = Autocast.with(.bf16) { ComputeContext.current.save(t.buffer).unpack().array }
        #expect(viaPortable == viaBest)
        #expect(viaPortable != t.array, "bfloat16 storage rounds")
    }
}

/// The separable max pool against the plain two-dimensional scan, on every kernel level: values and
/// the index each output takes its gradient from, with many ties (small integers), NaNs and the
/// window shapes the models use (SPPF's 5/1/2) and others (odd sizes, strides, padding).
@Suite struct MaxPoolKernelTests {
    /// Raster scan of every window: the first strict maximum, or the last NaN.
    func reference(_ x: [Float], planes: Int, h: Int, w: Int, k: Int, s: Int, p: Int) -> ([Float], [Int32]) {
        let oh = (h + 2 * p - k) / s + 1, ow = (w + 2 * p - k) / s + 1
        var y = [Float](), idx = [Int32]()
        for plane in 0..<planes {
            for oy in 0..<oh {
                for ox in 0..<ow {
                    let y0 = max(oy * s - p, 0), y1 = min(oy * s - p + k, h)
                    let x0 = max(ox * s - p, 0), x1 = min(ox * s - p + k, w)
                    var best = -Float.infinity, bi = y0 * w + x0
                    for yy in y0..<y1 {
                        for xx in x0..<x1 {
                            let v = x[plane * h * w + yy * w + xx]
                            if v > best || v.isNaN { best = v; bi = yy * w + xx }
                        }
                    }
                    y.append(best)
                    idx.append(Int32(bi))
                }
            }
        }
        return (y, idx)
    }

    @Test(arguments: [(5, 1, 2), (2, 2, 0), (3, 2, 1), (3, 1, 0), (4, 3, 1)])
    func separableMatchesTheScan(_ window: (Int, Int, Int)) {
        let (k, s, p) = window
        var rng = RandomState(seed: UInt64(k * 100 + s * 10 + p))
        for (h, w) in [(10, 10), (7, 13), (3, 5), (1, 9)] where h + 2 * p >= k && w + 2 * p >= k {
            let planes = 3
            var x = (0..<(planes * h * w)).map { _ in Float(Int(rng.uniform(0, 4))) }
            x[5 % x.count] = .nan
            if x.count > 40 { x[40] = .nan; x[41] = -.infinity }
            let (ry, ri) = reference(x, planes: planes, h: h, w: w, k: k, s: s, p: p)
            for level in Kernels.Level.allCases {
                guard let kernels = Kernels(level: level) else { continue }
                var y = [Float](repeating: 0, count: ry.count), idx = [Int32](repeating: -1, count: ri.count)
                let oh = (h + 2 * p - k) / s + 1, ow = (w + 2 * p - k) / s + 1
                var rowMax = [Float](repeating: 0, count: h * ow), rowArg = [Int32](repeating: 0, count: h * ow)
                kernels.table.pointee.maxpool_fwd(x, Int32(planes), Int32(h), Int32(w), Int32(k), Int32(s), Int32(p),
                                                  Int32(oh), Int32(ow), &y, &idx, &rowMax, &rowArg)
                #expect(zip(y, ry).allSatisfy { $0.bitPattern == $1.bitPattern }, "\(level) values, \(h)x\(w) window \(window)")
                #expect(idx == ri, "\(level) indices, \(h)x\(w) window \(window)")
                var y2 = [Float](repeating: 0, count: ry.count)
                kernels.table.pointee.maxpool_fwd(x, Int32(planes), Int32(h), Int32(w), Int32(k), Int32(s), Int32(p),
                                                  Int32(oh), Int32(ow), &y2, nil, &rowMax, &rowArg)
                #expect(zip(y2, ry).allSatisfy { $0.bitPattern == $1.bitPattern }, "\(level) values without indices")
            }
        }
    }
}
