import CKernels
import Testing
@testable import TensorCore

/// IEEE half storage: every kernel level's path, the portable path and Swift's Float16 agree bit for bit.
@Suite struct HalfTests {
    /// Every level this CPU runs except portable (AVX2's F16C, AVX-512's 16-lane conversions).
    static var fastLevels: [Kernels] { Kernels.Level.allCases.dropFirst().compactMap { Kernels(level: $0) } }

    func decode(_ bits: [UInt16], _ k: Kernels = .portable) -> [Float] {
        var out = [Float](repeating: 0, count: bits.count)
        k.table.pointee.f16_to_f32(bits, &out, bits.count)
        return out
    }

    func encode(_ xs: [Float], _ k: Kernels = .portable) -> [UInt16] {
        var out = [UInt16](repeating: 0, count: xs.count)
        k.table.pointee.f32_to_f16(xs, &out, xs.count)
        return out
    }
    func portableDecode(_ bits: [UInt16]) -> [Float] { decode(bits) }
    func portableEncode(_ xs: [Float]) -> [UInt16] { encode(xs) }

    @Test func allHalfValuesDecodeAndReencodeIdentically() throws {
        let all = (0...0xFFFF).map { UInt16($0) }
        let portable = portableDecode(all)
        // Against Swift's own Float16 -> Float conversion.
        for h in all {
            let swift = Float(Float16(bitPattern: h))
            #expect(swift.bitPattern == portable[Int(h)].bitPattern, "decode 0x\(String(h, radix: 16))")
        }
        // Portable round trip is the identity on every half except NaN payload quieting.
        let back = portableEncode(portable)
        for h in all where !Float16(bitPattern: h).isNaN { #expect(back[Int(h)] == h) }
        try #require(!HalfTests.fastLevels.isEmpty, "this machine kind has F16C; the fast paths must be tested")
        for k in HalfTests.fastLevels {
            let fast = decode(all, k)
            #expect(zip(fast, portable).allSatisfy { $0.bitPattern == $1.bitPattern }, "\(k)")
            #expect(encode(portable, k) == back, "\(k)")
        }
    }

    @Test func randomFloatsEncodeIdentically() throws {
        try #require(!HalfTests.fastLevels.isEmpty)
        var rng = RandomState(seed: 11)
        var xs: [Float] = []
        for _ in 0..<200_000 { xs.append(Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()))) }
        for _ in 0..<100_000 { xs.append(rng.uniform(-70000, 70000)) }
        for _ in 0..<100_000 { xs.append(rng.uniform(-1, 1) * 1e-4) }   // subnormal range of half
        let portable = portableEncode(xs)
        var mismatches = 0
        for k in HalfTests.fastLevels {
            let fast = encode(xs, k)
            for i in 0..<xs.count where fast[i] != portable[i] { mismatches += 1 }
            #expect(mismatches == 0, "\(k)")
            // Odd lengths exercise the tails.
            #expect(encode(Array(xs.prefix(37)), k) == Array(portable.prefix(37)), "\(k) tail")
        }
        for i in 0..<xs.count where !xs[i].isNaN {
            if Float16(xs[i]).bitPattern != portable[i] { mismatches += 1 }
        }
        #expect(mismatches == 0, "portable vs Swift Float16")
    }

    @Test func edgeCasesMatchSwiftFloat16() {
        let cases: [Float] = [
            65504,                       // max half
            65519.99, 65520, 65536, 1e6, // last below the rounding edge; these round to inf
            -65520, .infinity, -.infinity,
            Float(Float16.leastNonzeroMagnitude),          // 2^-24, smallest subnormal
            Float(Float16.leastNonzeroMagnitude) / 2,      // exact tie -> even (0)
            Float(Float16.leastNonzeroMagnitude) * 0.75,   // above the tie -> smallest subnormal
            Float(Float16.leastNormalMagnitude),           // 2^-14
            Float(Float16.leastNormalMagnitude) * (1 - 1.0 / 2048), // rounds up to the least normal
            1 + 1.0 / 2048,              // tie between 1 and 1+2^-10 -> even (1)
            1 + 3.0 / 2048,              // tie -> even (1 + 2^-9)
            -0.0, 0, 1e-10, -1e-10, 0.1, 1.0 / 3,
        ]
        let portable = portableEncode(cases)
        let fast = Half.encode(cases)
        for (i, x) in cases.enumerated() {
            #expect(portable[i] == Float16(x).bitPattern, "\(x)")
            #expect(fast[i] == portable[i], "\(x)")
        }
        #expect(portable[1] == 0x7BFF && portable[2] == 0x7C00, "65519.99 stays max, 65520 rounds to inf")
        #expect(portable[9] == 0x0000 && portable[10] == 0x0001)
        // NaN payloads: quiet bit set, top payload bits kept, sign kept.
        let nans: [UInt32] = [0x7FC0_0000, 0x7F80_0001, 0xFFA0_2000, 0x7FBF_E000, 0x7FFF_FFFF]
        let nanFloats = nans.map { Float(bitPattern: $0) }
        let pn = portableEncode(nanFloats), fn = Half.encode(nanFloats)
        #expect(pn == fn)
        for (i, bits) in nans.enumerated() {
            let expected = UInt16((bits >> 16) & 0x8000) | 0x7E00 | UInt16((bits >> 13) & 0x3FF)
            #expect(pn[i] == expected, "NaN 0x\(String(bits, radix: 16))")
        }
    }

    @Test func roundingInPlaceMatchesEncodeDecode() {
        var rng = RandomState(seed: 12)
        let xs = (0..<1000).map { _ in rng.normal() * 1000 }
        let t = Tensor(xs, shape: [1000])
        let r = t.roundedToHalf()
        #expect(r.array == Half.decode(Half.encode(xs)))
        let r2 = ComputeContext(kernels: .portable).run { t.roundedToHalf() }
        #expect(r2.array == r.array)
    }
}
