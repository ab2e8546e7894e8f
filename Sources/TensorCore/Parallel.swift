import Dispatch
import Foundation

/// Marks a value as safe to send because the caller guarantees disjoint use (e.g. raw pointers
/// into buffers whose index ranges do not overlap between threads). Keep its use in this file.
@usableFromInline
struct UncheckedSendable<T>: @unchecked Sendable {
    @usableFromInline let value: T
    @usableFromInline init(_ value: T) { self.value = value }
}

/// The one helper through which TensorCore's loops use several cores.
///
/// Work is cut into at most `threads` contiguous chunks whose boundaries depend only on the
/// problem size and the thread count, so results are deterministic for a given thread count.
public enum Parallel {
    nonisolated(unsafe) static var _threads: Int = max(1, ProcessInfo.processInfo.activeProcessorCount)

    /// Threads used by TensorCore loops and by OpenBLAS. Default: the active processor count.
    public static var threads: Int {
        get { _threads }
        set {
            _threads = max(1, newValue)
            BLAS.setThreads(_threads)
        }
    }

    /// Calls `body` with contiguous sub-ranges covering `0..<n`, on up to `threads` cores.
    /// Chunks hold at least `grain` items, so small loops stay on one core.
    public static func chunks(_ n: Int, grain: Int = 1, _ body: (Range<Int>) -> Void) {
        if n <= 0 { return }
        let k = min(_threads, max(1, n / max(grain, 1)))
        if k <= 1 { body(0..<n); return }
        withoutActuallyEscaping(body) { escaping in
            let box = UncheckedSendable(escaping)
            DispatchQueue.concurrentPerform(iterations: k) { i in
                box.value((n * i / k)..<(n * (i + 1) / k))
            }
        }
    }

    /// Calls `body(i)` for every i in `0..<n`, spread over up to `threads` cores.
    public static func forEach(_ n: Int, _ body: (Int) -> Void) {
        chunks(n) { r in for i in r { body(i) } }
    }

    /// Calls `body(worker, range)`: like `chunks`, also passing the chunk's index in
    /// `0..<workers(n)` so each chunk can own a scratch buffer.
    public static func workers(_ n: Int, grain: Int = 1) -> Int {
        if n <= 0 { return 0 }
        return min(_threads, max(1, n / max(grain, 1)))
    }

    public static func indexedChunks(_ n: Int, grain: Int = 1, _ body: (Int, Range<Int>) -> Void) {
        let k = workers(n, grain: grain)
        if k == 0 { return }
        if k == 1 { body(0, 0..<n); return }
        withoutActuallyEscaping(body) { escaping in
            let box = UncheckedSendable(escaping)
            DispatchQueue.concurrentPerform(iterations: k) { i in
                box.value(i, (n * i / k)..<(n * (i + 1) / k))
            }
        }
    }
}
