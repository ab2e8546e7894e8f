import CMPI
import Foundation

/// A failed collective or a launcher problem: the operation, this process's rank, and why.
public enum DataParallelError: Error, CustomStringConvertible {
    /// mpirun started this process but Open MPI could not be loaded or initialised.
    case unavailable(String)
    /// A collective returned an error (usually: another rank died or its link broke).
    case communication(operation: String, rank: Int, size: Int, reason: String)
    /// Ranks disagree about something they must share (a setting, a hash of the weights).
    case mismatch(String)

    public var description: String {
        switch self {
        case let .unavailable(m): return m
        case let .communication(operation, rank, size, reason):
            return "rank \(rank) of \(size): \(operation) failed (\(reason)); another rank has probably died or lost its connection. " +
                   "The last checkpoint is whole: resume with `train_dual --resume RUN` (any number of ranks)"
        case let .mismatch(m): return m
        }
    }
}

/// The processes that train one model together, one per rank, with the collectives data-parallel
/// training needs (all-reduce, broadcast, barrier) over Open MPI.
///
/// A process started by `mpirun` (Open MPI sets `OMPI_COMM_WORLD_SIZE` in its environment) joins
/// the job's world; any other process is a group of one and never loads or initialises MPI.
/// Open MPI is loaded at run time (`dlopen`), so the executables start where it is not installed.
/// MPI is initialised as MPI_THREAD_FUNNELED: only the thread that created the group calls it.
public final class ProcessGroup: @unchecked Sendable {
    public let rank: Int
    public let size: Int
    /// "Open MPI" or "single process".
    public let backend: String
    /// Processes of this job on this machine (Open MPI's local size; 1 alone).
    public let localSize: Int
    let mpi: Bool
    private var finalized = false

    /// Seconds spent in collectives and their payload bytes, since the last `resetCounters()`.
    public private(set) var communicationSeconds = 0.0
    public private(set) var communicatedBytes = 0

    public var isRoot: Bool { rank == 0 }
    /// More than one process: collectives do something.
    public var isDistributed: Bool { size > 1 }

    /// A group of one (no MPI).
    public static let single = ProcessGroup(rank: 0, size: 1, localSize: 1, backend: "single process", mpi: false)

    init(rank: Int, size: Int, localSize: Int, backend: String, mpi: Bool) {
        (self.rank, self.size, self.localSize, self.backend, self.mpi) = (rank, size, localSize, backend, mpi)
    }

    /// Whether a launcher started this process as a rank of a job (Open MPI's environment).
    public static var launchedByMPI: Bool { ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_SIZE"] != nil }

    /// The job's world when started by mpirun (MPI is initialised here), else `single`.
    public static func fromEnvironment() throws -> ProcessGroup {
        let env = ProcessInfo.processInfo.environment
        guard env["OMPI_COMM_WORLD_SIZE"] != nil else { return .single }
        var err = [CChar](repeating: 0, count: 512)
        guard dm_init(&err, err.count) == 0 else {
            throw DataParallelError.unavailable("started by mpirun, but MPI could not start: \(ProcessGroup.text(err))")
        }
        let local = env["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap(Int.init) ?? 1
        return ProcessGroup(rank: Int(dm_rank()), size: Int(dm_size()), localSize: max(1, local), backend: "Open MPI", mpi: true)
    }

    static func text(_ c: [CChar]) -> String {
        String(decoding: c.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Threads per rank when none are given: this machine's cores shared by its ranks.
    public var defaultThreads: Int { max(1, ProcessInfo.processInfo.activeProcessorCount / localSize) }

    public func resetCounters() { communicationSeconds = 0; communicatedBytes = 0 }

    private func timed(_ operation: String, bytes: Int, _ body: () -> Int32) throws {
        guard mpi else { return }
        let t0 = DispatchTime.now().uptimeNanoseconds
        let rc = body()
        communicationSeconds += Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
        communicatedBytes += bytes
        guard rc == 0 else {
            var text = [CChar](repeating: 0, count: 512)
            dm_error_string(rc, &text, text.count)
            throw DataParallelError.communication(operation: operation, rank: rank, size: size, reason: ProcessGroup.text(text))
        }
    }

    /// In-place element-wise sum over all ranks.
    public func allReduceSum(_ values: UnsafeMutablePointer<Float>, count: Int, operation: String = "gradient all-reduce") throws {
        guard isDistributed, count > 0 else { return }
        try timed(operation, bytes: count * 4) { dm_allreduce_sum_f32(values, Int64(count)) }
    }

    /// In-place element-wise sum over all ranks.
    public func allReduceSum(_ values: UnsafeMutablePointer<Double>, count: Int, operation: String) throws {
        guard isDistributed, count > 0 else { return }
        try timed(operation, bytes: count * 8) { dm_allreduce_sum_f64(values, Int64(count)) }
    }

    /// In-place element-wise sum over all ranks.
    public func allReduceSum(_ values: inout [Double], operation: String) throws {
        guard isDistributed, !values.isEmpty else { return }
        let n = values.count
        try values.withUnsafeMutableBufferPointer { b in try timed(operation, bytes: n * 8) { dm_allreduce_sum_f64(b.baseAddress, Int64(n)) } }
    }

    /// In-place element-wise maximum over all ranks.
    public func allReduceMax(_ values: inout [Double], operation: String) throws {
        guard isDistributed, !values.isEmpty else { return }
        let n = values.count
        try values.withUnsafeMutableBufferPointer { b in try timed(operation, bytes: n * 8) { dm_allreduce_max_f64(b.baseAddress, Int64(n)) } }
    }

    /// `bytes` bytes at `data` from `root` to every rank.
    public func broadcast(_ data: UnsafeMutableRawPointer, bytes: Int, from root: Int = 0, operation: String) throws {
        guard isDistributed, bytes > 0 else { return }
        try timed(operation, bytes: bytes) { dm_broadcast(data, Int64(bytes), Int32(root)) }
    }

    /// Floats from `root` to every rank.
    public func broadcast(_ values: UnsafeMutablePointer<Float>, count: Int, from root: Int = 0, operation: String) throws {
        try broadcast(UnsafeMutableRawPointer(values), bytes: count * 4, from: root, operation: operation)
    }

    /// Bytes of any length from `root` (the length goes first); other ranks' `data` is replaced.
    public func broadcast(_ data: inout Data, from root: Int = 0, operation: String) throws {
        guard isDistributed else { return }
        var length = [Double(rank == root ? data.count : 0)]
        try length.withUnsafeMutableBytes { b in try broadcast(b.baseAddress!, bytes: 8, from: root, operation: operation) }
        var bytes = [UInt8](repeating: 0, count: Int(length[0]))
        if rank == root { bytes = [UInt8](data) }
        try bytes.withUnsafeMutableBytes { b in
            if let p = b.baseAddress { try broadcast(p, bytes: b.count, from: root, operation: operation) }
        }
        if rank != root { data = Data(bytes) }
    }

    /// A string from `root` to every rank.
    public func broadcast(_ text: inout String, from root: Int = 0, operation: String) throws {
        guard isDistributed else { return }
        var d = Data(text.utf8)
        try broadcast(&d, from: root, operation: operation)
        text = String(decoding: d, as: UTF8.self)
    }

    public func barrier(operation: String) throws {
        guard isDistributed else { return }
        try timed(operation, bytes: 0) { dm_barrier() }
    }

    /// Whether every rank passes the same `value` (64 bits, compared through rank 0's): the
    /// replicas' hash check and settings that must agree.
    public func agree(_ value: UInt64, operation: String) throws -> Bool {
        guard isDistributed else { return true }
        var v = value
        try withUnsafeMutableBytes(of: &v) { b in try broadcast(b.baseAddress!, bytes: 8, operation: operation) }
        var differs = [v == value ? 0.0 : 1.0]
        try allReduceSum(&differs, operation: operation)
        return differs[0] == 0
    }

    /// Ends every process of the job (after this rank printed why).
    public func abort(code: Int32) -> Never {
        if mpi { dm_abort(code) }
        exit(code)
    }

    /// Leaves MPI cleanly (after the last collective).
    public func finalize() {
        guard mpi, !finalized else { return }
        finalized = true
        _ = dm_finalize()
    }
}
