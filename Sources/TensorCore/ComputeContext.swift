import CKernels
import Foundation

/// Mixed-precision mode of a region of ops (PyTorch's autocast, emulated or native on a CPU).
public enum Precision: String, Sendable, CaseIterable, Codable {
    /// Float32 everywhere.
    case fp32
    /// IEEE half emulation: convolution outputs, saved activations and activation gradients are
    /// rounded to binary16 (overflow to inf, underflow to subnormals and zero); arithmetic is Float32.
    case fp16
    /// bfloat16: convolution GEMMs take bfloat16 operands (AVX512_BF16 `vdpbf16ps` where the CPU
    /// has it, else rounded operands into the Float32 GEMM), saved activations and activation
    /// gradients are bfloat16; accumulation and reductions are Float32.
    case bf16

    /// Bytes per element of a saved activation.
    public var storageBytes: Int { self == .fp32 ? 4 : 2 }
}

/// The kernel implementations a context runs: one level of `CKernels` (portable C, AVX2, AVX-512)
/// and whether bfloat16 is native. Chosen once, at run time, from the CPU (`best`).
public struct Kernels: Sendable, CustomStringConvertible, Equatable {
    public enum Level: Int, Comparable, CaseIterable, Sendable {
        case portable = 0, avx2 = 1, avx512 = 2
        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
    }

    nonisolated(unsafe) let table: UnsafePointer<df_kernels>

    /// The highest level this CPU runs.
    public static let cpuLevel = Level(rawValue: Int(df_cpu_level())) ?? .portable
    /// Whether this CPU has AVX512_BF16.
    public static let cpuHasBF16 = df_cpu_has_avx512_bf16() != 0

    /// The fastest kernels this CPU runs (the default of every context).
    public static let best = Kernels(unchecked: cpuLevel, bf16: true)
    /// Portable C: the reference every fast path is tested against.
    public static let portable = Kernels(unchecked: .portable, bf16: false)

    init(unchecked level: Level, bf16: Bool) {
        table = df_kernels_for_level(Int32(level.rawValue), bf16 ? 1 : 0)
    }

    /// The kernels of `level`, or nil when this CPU cannot run it. `bf16` asks for native
    /// bfloat16 (granted only with AVX512_BF16).
    public init?(level: Level, bf16: Bool = false) {
        guard level <= Kernels.cpuLevel else { return nil }
        self.init(unchecked: level, bf16: bf16)
    }

    public var level: Level { Level(rawValue: Int(table.pointee.level)) ?? .portable }
    /// True when bfloat16 conversion and dot products run on AVX512_BF16.
    public var nativeBF16: Bool { table.pointee.bf16 != 0 }
    /// `portable`, `avx2`, `avx512` or `avx512+bf16`.
    public var description: String { String(cString: table.pointee.name) }

    public static func == (a: Kernels, b: Kernels) -> Bool { a.table == b.table }
}

/// The GEMM behind the convolutions.
public enum GemmBackend: String, Sendable, CaseIterable {
    /// `CKernels`' packed GEMM at the context's kernel level (bit-identical on every level).
    case packed
    /// OpenBLAS's `cblas_sgemm` (its own core choice and summation order).
    case openblas
    /// oneDNN's convolution primitives for every convolution, Float32 included (its own layouts,
    /// kernels and summation order; results depend on the CPU and thread count).
    case onednn
}

/// How many passes of a kind ran, their seconds, and the bytes they read and wrote.
public struct PassTally: Sendable, Equatable {
    public var calls = 0
    public var seconds = 0.0
    public var bytes = 0

    public init() {}

    mutating func add(seconds: Double, bytes: Int) {
        calls += 1
        self.seconds += seconds
        self.bytes += bytes
    }

    /// What ran since `earlier` (a tally taken before).
    public func since(_ earlier: PassTally) -> PassTally {
        var d = PassTally()
        d.calls = calls - earlier.calls
        d.seconds = seconds - earlier.seconds
        d.bytes = bytes - earlier.bytes
        return d
    }
}

/// Everything ops read besides their operands: thread count, grad mode, autocast precision,
/// the registry of activations saved for backward, scratch memory and the kernel table.
///
/// There is no process-wide state: each thread has a current context (created on first use with
/// the defaults), and `run` installs another for the duration of a closure. Two models on two
/// threads therefore never share a workspace, a grad mode or a saved-activation registry. Parallel
/// loops hand their chunks to worker threads but capture what they need from the caller's context
/// first; code on a worker never reads a context.
public final class ComputeContext: @unchecked Sendable {
    /// Threads of TensorCore's loops and GEMMs (at least 1). Default: the active processor count.
    public var threads: Int {
        didSet { threads = Swift.max(1, threads) }
    }
    /// Whether ops record the autodiff graph (`noGrad` turns it off for a closure).
    public var gradEnabled = true
    /// Mixed-precision mode of the ops run now (`Autocast.with` sets it for a closure).
    public var precision: Precision = .fp32
    /// The kernels this context runs.
    public var kernels: Kernels
    /// Which GEMM the convolutions use: the packed kernels of `kernels` (default) or OpenBLAS
    /// (Float32 only; kept for comparisons and benchmarks).
    public var gemm: GemmBackend = .packed
    /// With `gemm == .packed`: bfloat16 autocast convolutions run on oneDNN (AMX or AVX512_BF16
    /// kernels, several times the packed vdpbf16ps GEMM) where the CPU has AVX512_BF16 and the
    /// kernels are native bf16. Off: the packed bfloat16 GEMM. Float32 stays on the packed GEMM.
    public var bf16OnOneDNN = true
    /// With `gemm == .onednn`, under the bfloat16 autocast: oneDNN's bfloat16 primitives where it has
    /// them (`OneDNN.nativeBF16`). Off: its Float32 primitives on operands rounded to bfloat16, as
    /// where it has none (the same products; to compare the two, and to test that path on any CPU).
    public var bf16Primitives = true
    /// Parallel loops run on oneDNN's OpenMP threads once libdnnl is loaded (one team for the
    /// convolutions and the loops between them). Off: on libdispatch's threads.
    public var openMPTeam = true
    /// Whether a convolution followed by batch norm (`Tensor.convBatchNorm`, the Conv block) keeps
    /// the convolution's output in oneDNN's channel-blocked layout through the batch norm where its
    /// convolutions run on oneDNN (no reorder of the output or of its gradient). Off: the two ops
    /// one after the other, through NCHW (the reference the fused path is tested against).
    public var fuseConvBatchNorm = true
    /// With `fuseConvBatchNorm`: when a fused block's input is another fused block's output, its
    /// weight gradient takes that input rebuilt in backward from the other block's kept z (one
    /// affine + SiLU pass) instead of a copy kept since the forward, so a chain of Conv blocks keeps
    /// one tensor per block for backward instead of two. Off: the copy is kept (same values).
    public var rebuildConvInputs = true
    /// With `fuseConvBatchNorm`: when a fused block's input is made of fused blocks' outputs
    /// (directly, or through channel slices, concatenations and sums, also when other ops take it
    /// too), the input gradient stays in the convolution's channel-blocked layout, which those ops'
    /// backward reads (no reorder to NCHW and back). On bfloat16 primitives, when the gradient goes
    /// whole to a block, as the primitive's bfloat16 words. Off: NCHW (same values).
    public var laidInputGradients = true
    /// Input gradients handed over in that layout since the context was made (for tests).
    public internal(set) var laidGradients = 0
    /// Of those, the ones handed over as bfloat16 words.
    public internal(set) var laidGradientWords = 0
    /// With `fuseConvBatchNorm`, on oneDNN's primitives: a fused block writes its output also in its
    /// convolution's channel-blocked layout (in the same pass; bfloat16 words on bfloat16
    /// primitives, Float32 on Float32 ones), as does a residual sum of such outputs, and a
    /// convolution whose input is made of such outputs (directly, or through channel slices and
    /// concatenations) takes them instead of reordering the NCHW input. Off: the reorder (the same
    /// values).
    public var laidInputs = true
    /// Convolutions that took their input so since the context was made (for tests).
    public internal(set) var laidInputsTaken = 0
    /// With `laidInputs`: a tensor whose values an op wrote in the blocked layout (a fused block's
    /// output, a channel slice or concatenation of such, and under Float32 a residual sum of such)
    /// gets its NCHW values only when something reads them, instead of the op writing both: copied
    /// out of the blocked Float32 values, or (bfloat16 words do not hold the Float32 values) by the
    /// block's own affine pass from z, a slice or concatenation copied out of its sources' NCHW
    /// values then. The same values either way. Off: both are written.
    public var deferPlainValues = true
    /// Deferred NCHW values made since the context was made (for tests).
    public internal(set) var deferredValuesMade = 0
    /// With `rebuildConvInputs` and `laidInputs`, on bfloat16 primitives: a block whose input it
    /// could rebuild in backward, and whose forward took that input as words, keeps the words for
    /// its weight gradient instead, while the inputs kept so stay within this share of the other
    /// bytes saved for backward in the step (greedily, in forward order): memory traded for the
    /// rebuild's pass. 0: always rebuild. The same words either way. (Float32 always rebuilds.)
    public var keptInputsShare = 0.5
    /// Inputs kept so since the context was made (for tests).
    public internal(set) var keptInputs = 0
    /// The fused Conv blocks' batch-norm passes run on this context since it was made: statistics,
    /// affine + SiLU (also when deferred NCHW values are made), the rebuild of a block's output for
    /// a weight gradient, the gradient sums and the input gradient, and under fp16 / bf16 the halving
    /// of z; with the bytes they read and wrote (`bench train`'s account of a step).
    public internal(set) var normPasses = PassTally()
    /// Synchronised batch statistics (data parallelism with `--sync-bn`): sums `count` Doubles in
    /// place over every replica of the job. Batch norm in training calls it once in the forward
    /// (the channels' sums and sums of squares, and the count) and once in the backward (the sums
    /// the input gradient needs), so every replica must run the same layers in the same order.
    /// Nil (the default): each replica normalises with its own batch's statistics.
    public var replicaSum: ((UnsafeMutablePointer<Double>, Int) -> Void)?
    /// Inside `withFrozenWeights`: convolutions without a gradient to record keep oneDNN's
    /// reordered copy of their weights and reuse it while the weight storage is the same.
    public private(set) var frozenWeights = false
    /// Activations saved for backward since the last backward.
    public let saved = SavedActivations()
    /// Per-worker scratch memory of the convolution.
    let workspace = Workspace()

    public init(threads: Int? = nil, kernels: Kernels = .best) {
        self.threads = Swift.max(1, threads ?? ProcessInfo.processInfo.activeProcessorCount)
        self.kernels = kernels
    }

    /// The table of function pointers of `kernels` (hot paths read it once per op).
    @inline(__always) var k: UnsafePointer<df_kernels> { kernels.table }

    /// Runs `body`, one of the passes `normPasses` counts, and adds it there as reading and writing `bytes`.
    @inline(__always) func normPass(bytes: Int, _ body: () -> Void) {
        let t0 = DispatchTime.now().uptimeNanoseconds
        body()
        normPasses.add(seconds: Double(DispatchTime.now().uptimeNanoseconds &- t0) * 1e-9, bytes: bytes)
    }

    /// This thread's context (a default one is created on first use).
    public static var current: ComputeContext {
        if let p = pthread_getspecific(ContextKey.key) {
            return Unmanaged<ComputeContext>.fromOpaque(p).takeUnretainedValue()
        }
        let c = ComputeContext()
        install(c)
        return c
    }

    /// Runs `body` with `self` as this thread's context, then restores the previous one.
    public func run<T>(_ body: () throws -> T) rethrows -> T {
        let previous = pthread_getspecific(ContextKey.key).map { Unmanaged<ComputeContext>.fromOpaque($0).takeUnretainedValue() }
        ComputeContext.install(self)
        defer { ComputeContext.install(previous) }
        return try body()
    }

    static func install(_ c: ComputeContext?) {
        if let old = pthread_getspecific(ContextKey.key) { Unmanaged<ComputeContext>.fromOpaque(old).release() }
        pthread_setspecific(ContextKey.key, c.map { Unmanaged.passRetained($0).toOpaque() })
    }

    /// Runs `body` (inference with a fixed model) with `frozenWeights` on: the weights of the
    /// convolutions must not change inside it. Copies cached inside are dropped before and after.
    public func withFrozenWeights<T>(_ body: () throws -> T) rethrows -> T {
        let previous = frozenWeights
        OneDNN.forgetWeights()
        frozenWeights = true
        defer { frozenWeights = previous; OneDNN.forgetWeights() }
        return try body()
    }

    /// Frees the scratch memory (the next convolution allocates it again).
    public func releaseWorkspace() { workspace.release() }
}

/// The thread-specific slot of the current context; its destructor drops the reference when a
/// thread ends.
enum ContextKey {
    static let key: pthread_key_t = {
        var k = pthread_key_t()
        let rc = pthread_key_create(&k) { p in
            if let p { Unmanaged<ComputeContext>.fromOpaque(p).release() }
        }
        precondition(rc == 0, "pthread_key_create failed: \(rc)")
        return k
    }()
}

/// Per-worker scratch memory reused across calls, so the convolution's column buffers are not
/// re-allocated (and re-faulted) on every layer. Owned by one context; worker w uses slot w.
final class Workspace: @unchecked Sendable {
    private var slots: [[Buffer]] = []

    /// Scratch buffer `index` of worker `worker`, at least `count` floats (uninitialised).
    /// Called on the context's thread before work is handed to workers.
    func get(_ worker: Int, _ index: Int, count: Int) -> UnsafeMutablePointer<Float> {
        while slots.count <= worker { slots.append([]) }
        while slots[worker].count <= index { slots[worker].append(Buffer(count: 0)) }
        if slots[worker][index].count < count { slots[worker][index] = Buffer(count: count) }
        return slots[worker][index].ptr
    }

    /// Bytes held.
    var bytes: Int { slots.reduce(0) { $0 + $1.reduce(0) { $0 + $1.bytes } } }

    func release() { slots = [] }
}

// MARK: - Grad mode and autocast (views of the current context)

/// Whether ops record the graph. `noGrad { }` switches it off for inference.
public enum GradMode {
    public static var isEnabled: Bool { ComputeContext.current.gradEnabled }

    /// Runs `body` without recording (the pattern of `torch.no_grad()`).
    public static func noGrad<T>(_ body: () throws -> T) rethrows -> T {
        let c = ComputeContext.current
        let saved = c.gradEnabled
        c.gradEnabled = false
        defer { c.gradEnabled = saved }
        return try body()
    }
}

/// Runs `body` without recording the autodiff graph.
public func noGrad<T>(_ body: () throws -> T) rethrows -> T { try GradMode.noGrad(body) }

/// Mixed-precision regions (the `--amp` paths of training): see `Precision` for what each mode
/// rounds. Parameters, their gradients, and whatever runs outside the region (the loss and its
/// reductions) stay Float32.
public enum Autocast {
    /// The precision of the current region.
    public static var precision: Precision { ComputeContext.current.precision }

    public static func with<T>(_ p: Precision, _ body: () throws -> T) rethrows -> T {
        let c = ComputeContext.current
        let saved = c.precision
        c.precision = p
        defer { c.precision = saved }
        return try body()
    }
}

// MARK: - Kernel calls for the other modules (they do not import CKernels)

extension Kernels {
    /// x *= s
    public func scale(_ x: UnsafeMutablePointer<Float>, _ s: Float, count: Int) { table.pointee.scale(x, s, count) }
    /// Sum of squares (16 Float lanes, then Double).
    public func sumSquares(_ x: UnsafePointer<Float>, count: Int) -> Double {
        var out = 0.0
        table.pointee.sum_squares(x, count, &out)
        return out
    }
    /// True when no value is inf or NaN.
    public func allFinite(_ x: UnsafePointer<Float>, count: Int) -> Bool {
        var ok: Int32 = 0
        table.pointee.all_finite(x, count, &ok)
        return ok != 0
    }
    /// dst += s * src
    public func addScaled(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, _ s: Float, count: Int) {
        table.pointee.add_scaled_into(dst, src, s, count)
    }
}
