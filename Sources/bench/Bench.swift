import ArgumentParser
import TensorCore

/// `bench`: prints performance figures (run in release: `swift run -c release bench <sub>`).
@main
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "DualFuse benchmarks: figures, not pass/fail tests. Build with -c release.",
        subcommands: [ConvBench.self, ModelBench.self, LossBench.self, LoaderBench.self, TrainBench.self, LearnBench.self, OnnxBench.self, DDPBench.self])
}

/// The first lines of every benchmark: what ran, so figures from different runs can be compared.
func printEnvironment() {
    let ctx = ComputeContext.current
    print("kernels: \(ctx.kernels) (cpu level \(Kernels.cpuLevel)\(Kernels.cpuHasBF16 ? ", avx512_bf16" : "")), gemm: \(ctx.gemm.rawValue), " +
          "OpenBLAS core: \(BLAS.coreName), threads: \(ctx.threads), oneDNN " +
          (OneDNN.available ? "\(OneDNN.version) (\(OneDNN.isa))" : "unavailable") +
          (ctx.gemm == .onednn ? " for every convolution" + (OneDNN.nativeBF16 ? "" : " (bf16 on its Float32 primitives, operands rounded)")
           : ctx.bf16OnOneDNN && ctx.kernels.nativeBF16 && OneDNN.nativeBF16 ? " for bf16 convolutions" : " unused"))
}

/// `--gemm packed|openblas` and `--kernels portable|avx2|avx512` of every benchmark, applied to the current context.
struct ContextOptions: ParsableArguments {
    @Option(help: "Threads (default: all cores).") var threads: Int?
    @Option(help: "GEMM behind the convolutions: onednn (oneDNN's primitives for every convolution; the tools' default where libdnnl runs), packed (ours; the default elsewhere) or openblas.") var gemm: String?
    @Flag(help: "bfloat16 convolutions on the packed vdpbf16ps GEMM instead of oneDNN.") var noOnednnBf16 = false
    @Flag(help: "Conv blocks as a convolution, then batch norm through NCHW (not the fused op that keeps the convolution's output in oneDNN's layout).") var noFusedBn = false
    @Flag(help: "A fused Conv block keeps a copy of its input for its weight gradient instead of rebuilding it in backward from the block before.") var noRebuildInputs = false
    @Flag(help: "Fused Conv blocks hand their input gradients over in NCHW, not in the convolution's blocked layout.") var noLaidGradients = false
    @Flag(help: "Fused Conv blocks (and residual sums of their outputs) do not write their outputs also in the blocked layout (bfloat16 words on bfloat16 primitives, Float32 on Float32 ones) for the convolutions after them (which then reorder their NCHW inputs).") var noLaidInputs = false
    @Flag(help: "On Float32 primitives, tensors whose values are laid in the blocked layout get their NCHW values written at once too, instead of only when something reads them.") var noDeferredValues = false
    @Option(help: "On bfloat16 primitives, the share of the other saved bytes up to which fused Conv blocks keep their inputs' words for the weight gradient instead of rebuilding them in backward (0: always rebuild; default 0.5).") var keptInputsShare: Double?
    @Option(help: "Kernel level: portable, avx2 or avx512 (default: the best this CPU runs).") var kernels: String?
    @Flag(help: "Parallel loops on libdispatch's threads instead of oneDNN's OpenMP team.") var noOpenmpTeam = false

    func apply() throws {
        let ctx = ComputeContext.current
        if let threads { ctx.threads = threads }
        if let gemm {
            do { ctx.gemm = try GemmBackend(flag: gemm, allowOpenBLAS: true) } catch { throw ValidationError("\(error)") }
        } else {
            ctx.gemm = .toolDefault
        }
        if noOnednnBf16 { ctx.bf16OnOneDNN = false }
        if noFusedBn { ctx.fuseConvBatchNorm = false }
        if noRebuildInputs { ctx.rebuildConvInputs = false }
        if noLaidGradients { ctx.laidInputGradients = false }
        if noLaidInputs { ctx.laidInputs = false }
        if noDeferredValues { ctx.deferPlainValues = false }
        if let keptInputsShare {
            guard keptInputsShare >= 0, keptInputsShare.isFinite else {
                throw ValidationError("--kept-inputs-share takes a number >= 0 (0: always rebuild), got \(keptInputsShare)")
            }
            ctx.keptInputsShare = keptInputsShare
        }
        if noOpenmpTeam { ctx.openMPTeam = false }
        if let kernels {
            let levels: [String: Kernels.Level] = ["portable": .portable, "avx2": .avx2, "avx512": .avx512]
            guard let l = levels[kernels] else { throw ValidationError("--kernels must be portable, avx2 or avx512, got \(kernels)") }
            guard let k = Kernels(level: l, bf16: true) else { throw ValidationError("--kernels \(kernels): this CPU runs at most \(Kernels.cpuLevel)") }
            ctx.kernels = k
        }
        printEnvironment()
    }
}
