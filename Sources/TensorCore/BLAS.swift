import CBLAS
import Synchronization

/// OpenBLAS entry points used by TensorCore (row-major sgemm and the thread count).
///
/// OpenBLAS keeps one thread count for the whole process; the last value set is remembered here
/// (atomically) only to skip redundant calls. Two contexts with different thread counts in one
/// process may change each other's OpenBLAS threading (a speed effect only: results do not
/// depend on OpenBLAS's thread count).
public enum BLAS {
    static let current = Atomic<Int>(-1)

    /// Sets OpenBLAS's thread count (no call when unchanged).
    public static func setThreads(_ n: Int) {
        if current.exchange(n, ordering: .relaxed) != n { openblas_set_num_threads(Int32(n)) }
    }

    /// Sets OpenBLAS's threads for a call made on the current thread: the context's count on its own
    /// thread, one inside a parallel region (its workers already occupy the cores).
    @inline(__always)
    public static func useThreads(of ctx: ComputeContext) {
        setThreads(Parallel.isWorker ? 1 : ctx.threads)
    }

    /// The OpenBLAS core in use (`openblas_get_corename`), e.g. `Haswell`, `Cooperlake`.
    public static var coreName: String { openblas_get_corename().map { String(cString: $0) } ?? "unknown" }

    /// C[M,N] = alpha * op(A) * op(B) + beta * C, row-major; lda/ldb/ldc default to the packed widths.
    @inline(__always)
    public static func sgemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                             alpha: Float = 1, a: UnsafePointer<Float>, lda: Int? = nil,
                             b: UnsafePointer<Float>, ldb: Int? = nil, beta: Float = 0,
                             c: UnsafeMutablePointer<Float>, ldc: Int? = nil) {
        let la = lda ?? (transA ? m : k)
        let lb = ldb ?? (transB ? k : n)
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans,
                    transB ? CblasTrans : CblasNoTrans, Int32(m), Int32(n), Int32(k), alpha,
                    a, Int32(la), b, Int32(lb), beta, c, Int32(ldc ?? n))
    }
}
