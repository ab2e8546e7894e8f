import CDNNL
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
/// Work is cut into at most `threads` contiguous chunks (the current context's thread count)
/// whose boundaries depend only on the problem size and the thread count, so results are
/// deterministic for a given thread count. A loop started on a worker thread (inside another
/// parallel loop) runs serially on that worker.
///
/// The chunks run on oneDNN's OpenMP team once libdnnl is loaded (`ComputeContext.openMPTeam`):
/// the same threads then run the convolutions and every loop between them, so no second pool has
/// to be woken around each convolution. Before that, and with the option off, on libdispatch's.
public enum Parallel {
    /// Threads of the current context.
    public static var threads: Int { isWorker ? 1 : ComputeContext.current.threads }

    /// Calls `body` with contiguous sub-ranges covering `0..<n`, on up to `threads` cores.
    /// Chunks hold at least `grain` items, so small loops stay on one core.
    public static func chunks(_ n: Int, grain: Int = 1, _ body: (Range<Int>) -> Void) {
        if n <= 0 { return }
        let k = min(threads, max(1, n / max(grain, 1)))
        if k <= 1 { body(0..<n); return }
        run(k) { i in body((n * i / k)..<(n * (i + 1) / k)) }
    }

    /// Runs body(0), ..., body(k - 1) concurrently (k >= 2), each as a worker.
    private static func run(_ k: Int, _ body: (Int) -> Void) {
        withoutActuallyEscaping(body) { escaping in
            var box = UncheckedSendable(escaping)
            if ComputeContext.current.openMPTeam && df_team_attached() != 0 {
                let ran = withUnsafeMutablePointer(to: &box) { p in
                    df_team_run(Int32(k), { context, i in
                        let task = context!.assumingMemoryBound(to: UncheckedSendable<(Int) -> Void>.self).pointee
                        Parallel.asWorker { task.value(Int(i)) }
                    }, p) == 0
                }
                if ran { return }
            }
            let shared = box
            DispatchQueue.concurrentPerform(iterations: k) { i in asWorker { shared.value(i) } }
        }
    }

    /// Calls `body(i)` for every i in `0..<n`, spread over up to `threads` cores.
    public static func forEach(_ n: Int, _ body: (Int) -> Void) {
        chunks(n) { r in for i in r { body(i) } }
    }

    /// The number of chunks `indexedChunks(n, grain:)` makes.
    public static func workers(_ n: Int, grain: Int = 1) -> Int {
        if n <= 0 { return 0 }
        return min(threads, max(1, n / max(grain, 1)))
    }

    /// Calls `body(worker, range)`: like `chunks`, also passing the chunk's index in
    /// `0..<workers(n)` so each chunk can own a scratch buffer.
    public static func indexedChunks(_ n: Int, grain: Int = 1, _ body: (Int, Range<Int>) -> Void) {
        let k = workers(n, grain: grain)
        if k == 0 { return }
        if k == 1 { body(0, 0..<n); return }
        run(k) { i in body(i, (n * i / k)..<(n * (i + 1) / k)) }
    }

    /// Calls `body(i)` once for every piece `i` of work whose size is `sizes[i]` (e.g. a model's
    /// tensors, of very uneven lengths), in one parallel loop: the pieces are cut into up to
    /// `threads` contiguous runs of about equal total size, a piece going to the run that holds
    /// its first item. Runs hold at least `grain` items. Pieces must be independent.
    public static func pieces(_ sizes: [Int], grain: Int = 1 << 15, _ body: (Int) -> Void) {
        var starts: [Int] = []
        starts.reserveCapacity(sizes.count)
        var total = 0
        for s in sizes { starts.append(total); total += max(s, 0) }
        if total == 0 { for i in sizes.indices { body(i) }; return }
        chunks(total, grain: grain) { r in
            for (i, s) in starts.enumerated() where r.contains(min(s, total - 1)) { body(i) }
        }
    }

    // MARK: Worker marking

    private static let workerKey: pthread_key_t = {
        var k = pthread_key_t()
        pthread_key_create(&k, nil)
        return k
    }()

    /// True on a thread that is running a chunk of a parallel loop.
    static var isWorker: Bool { pthread_getspecific(workerKey) != nil }

    @inline(__always)
    static func asWorker(_ body: () -> Void) {
        let was = pthread_getspecific(workerKey)
        pthread_setspecific(workerKey, UnsafeRawPointer(bitPattern: 1))
        body()
        pthread_setspecific(workerKey, was)
    }
}
