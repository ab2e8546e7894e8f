import CKernels
import Foundation
import Testing
@testable import TensorCore

/// The packed GEMMs: every level bit-identical to portable in Float32 (one FMA chain over k per
/// element), all of them within rounding of a Float64 reference; the bfloat16 GEMM equal to
/// "round both operands to bfloat16, then the Float32 GEMM" on levels without AVX512_BF16, and
/// within a stated bound of it with `vdpbf16ps`.
@Suite struct GemmTests {
    struct Shape: Sendable, CustomStringConvertible {
        let m, n, k: Int
        let transA, transB, accumulate: Bool
        var description: String { "\(m)x\(n)x\(k)\(transA ? " At" : "")\(transB ? " Bt" : "")\(accumulate ? " +=" : "")" }
    }

    /// Edges of every blocking (MR 4/6/8, NR 16/32, KC 256, MC 96, NC 768), transposed operands
    /// and accumulation.
    static let shapes: [Shape] = [
        Shape(m: 1, n: 1, k: 1, transA: false, transB: false, accumulate: false),
        Shape(m: 7, n: 33, k: 5, transA: false, transB: false, accumulate: false),
        Shape(m: 16, n: 64, k: 27, transA: false, transB: false, accumulate: true),
        Shape(m: 13, n: 50, k: 300, transA: true, transB: false, accumulate: false),
        Shape(m: 100, n: 31, k: 513, transA: false, transB: true, accumulate: true),
        Shape(m: 9, n: 800, k: 17, transA: true, transB: true, accumulate: false),
        Shape(m: 97, n: 70, k: 257, transA: false, transB: false, accumulate: true),
    ]

    static var levels: [Kernels] { Kernels.Level.allCases.compactMap { Kernels(level: $0) } }

    func random(_ n: Int, seed: UInt64) -> [Float] {
        var rng = RandomState(seed: seed)
        return (0..<n).map { _ in rng.normal() }
    }

    /// Runs one GEMM of `k` on row-major data laid out as the shape says; returns C.
    func run(_ s: Shape, _ k: Kernels, bf16: Bool, a: [Float], b: [Float], c0: [Float]) -> [Float] {
        var c = c0
        var ws = [Float](repeating: .nan, count: Int(df_gemm_workspace_floats()))
        a.withUnsafeBufferPointer { ap in
            b.withUnsafeBufferPointer { bp in
                let A = s.transA ? df_matrix(p: ap.baseAddress!, rs: 1, cs: s.m) : df_matrix(p: ap.baseAddress!, rs: s.k, cs: 1)
                let B = s.transB ? df_matrix(p: bp.baseAddress!, rs: 1, cs: s.k) : df_matrix(p: bp.baseAddress!, rs: s.n, cs: 1)
                let f = bf16 ? k.table.pointee.bgemm : k.table.pointee.sgemm
                f(Int32(s.m), Int32(s.n), Int32(s.k), A, B, &c, s.n, s.accumulate ? 1 : 0, &ws)
            }
        }
        return c
    }

    /// C = (accumulate ? C0 : 0) + A B in Float64, with the same layouts.
    func reference(_ s: Shape, a: [Float], b: [Float], c0: [Float]) -> [Double] {
        var c = [Double](repeating: 0, count: s.m * s.n)
        for i in 0..<s.m {
            for j in 0..<s.n {
                var t = s.accumulate ? Double(c0[i * s.n + j]) : 0
                for q in 0..<s.k {
                    let av = s.transA ? a[q * s.m + i] : a[i * s.k + q]
                    let bv = s.transB ? b[j * s.k + q] : b[q * s.n + j]
                    t += Double(av) * Double(bv)
                }
                c[i * s.n + j] = t
            }
        }
        return c
    }

    @Test(arguments: shapes)
    func float32IsOneChainOnEveryLevel(_ s: Shape) throws {
        let a = random(s.m * s.k, seed: 1), b = random(s.k * s.n, seed: 2), c0 = random(s.m * s.n, seed: 3)
        let portable = run(s, .portable, bf16: false, a: a, b: b, c0: c0)
        // Against Float64: a chain of k FMAs is within k ulps of the sum of |terms| (a loose,
        // always-valid bound; typical errors are far smaller).
        let ref = reference(s, a: a, b: b, c0: c0)
        var absTerms = [Double](repeating: 0, count: s.m * s.n)
        for i in 0..<s.m { for j in 0..<s.n { for q in 0..<s.k {
            let av = s.transA ? a[q * s.m + i] : a[i * s.k + q], bv = s.transB ? b[j * s.k + q] : b[q * s.n + j]
            absTerms[i * s.n + j] += abs(Double(av) * Double(bv))
        } } }
        for i in 0..<ref.count {
            let bound = Double(s.k + 1) * Double(Float.ulpOfOne) * (absTerms[i] + abs(Double(c0[i])))
            #expect(abs(Double(portable[i]) - ref[i]) <= bound, "\(s) element \(i)")
        }
        for k in GemmTests.levels.dropFirst() {
            let fast = run(s, k, bf16: false, a: a, b: b, c0: c0)
            #expect(zip(fast, portable).allSatisfy { $0.bitPattern == $1.bitPattern }, "\(k) \(s)")
        }
    }

    @Test(arguments: shapes)
    func bfloat16RoundsTheOperands(_ s: Shape) throws {
        let a = random(s.m * s.k, seed: 4), b = random(s.k * s.n, seed: 5), c0 = random(s.m * s.n, seed: 6)
        // Twin definition: round A and B to bfloat16, then the Float32 GEMM.
        func rounded(_ x: [Float]) -> [Float] {
            var y = x
            Kernels.portable.table.pointee.round_bf16(&y, y.count)
            return y
        }
        let twin = run(s, .portable, bf16: false, a: rounded(a), b: rounded(b), c0: c0)
        for k in GemmTests.levels {
            let out = run(s, k, bf16: true, a: a, b: b, c0: c0)
            #expect(zip(out, twin).allSatisfy { $0.bitPattern == $1.bitPattern }, "\(k) \(s)")
        }
        if let native = Kernels(level: .avx512, bf16: true), native.nativeBF16 {
            // vdpbf16ps adds the two exact products of a pair (odd k first) and flushes subnormals:
            // another order of the same exact products. Measured (Emerald Rapids, 2026-11-28): at most
            // 0.82 ulp of the sum of |terms| over these shapes; bound 4 ulp of that sum.
            let out = run(s, native, bf16: true, a: a, b: b, c0: c0)
            let ra = rounded(a), rb = rounded(b)
            var worst = 0.0
            for i in 0..<s.m {
                for j in 0..<s.n {
                    var terms = s.accumulate ? abs(Double(c0[i * s.n + j])) : 0
                    for q in 0..<s.k {
                        let av = s.transA ? ra[q * s.m + i] : ra[i * s.k + q], bv = s.transB ? rb[j * s.k + q] : rb[q * s.n + j]
                        terms += abs(Double(av) * Double(bv))
                    }
                    let e = abs(Double(out[i * s.n + j]) - Double(twin[i * s.n + j])) / max(terms, 1e-30)
                    worst = max(worst, e)
                }
            }
            print("bgemm native vs twin \(s): max error / sum of |terms| = \(worst) (\(worst / Double(Float.ulpOfOne)) ulp)")
            #expect(worst <= 4 * Double(Float.ulpOfOne), "native bfloat16 vs twin \(s): \(worst)")
        }
    }
}
