import CDNNL

/// Convolutions on oneDNN (`CDNNL`): its primitives pick blocked layouts and the CPU's best
/// kernels (AMX tiles for bfloat16 where the CPU has them, else AVX512_BF16 or AVX-512 JIT code).
/// Used for the bfloat16 autocast convolutions by default where the CPU has AVX512_BF16
/// (`ComputeContext.bf16OnOneDNN`), and for every convolution with `ComputeContext.gemm = .onednn`
/// (under the bfloat16 autocast, where oneDNN has no bfloat16 convolutions, as Float32 ones on
/// operands rounded to bfloat16: see `Route`).
/// A call that oneDNN refuses falls back to the packed GEMM. The library (and its OpenMP runtime) is
/// opened at run time on first use, so processes that never need it do not load it.
public enum OneDNN {
    /// Whether oneDNN's CPU engine runs here.
    public static let available = df_dnnl_available() != 0

    /// oneDNN's instruction set on this CPU (e.g. "avx512_core_amx").
    public static var isa: String { String(cString: df_dnnl_isa()) }

    /// The library's version.
    public static var version: String { String(cString: df_dnnl_version()) }

    /// Whether oneDNN has bfloat16 convolutions on this CPU (oneDNN 2.6 has them from AVX-512 on).
    /// Where it has not, `ctx.gemm == .onednn` runs the bfloat16 autocast convolutions as Float32
    /// ones on operands rounded to bfloat16 (`Route.bf16OnF32`).
    public static let nativeBF16 = available && df_dnnl_bf16_native() != 0

    /// How a convolution runs on oneDNN.
    enum Route: Equatable {
        /// Float32 operands (no autocast, or fp16 emulation).
        case f32
        /// bfloat16 operands in oneDNN's own bfloat16 primitives: they round x, w and the output
        /// gradient while reordering them, and write bfloat16 outputs and input gradients.
        case bf16
        /// The bfloat16 autocast where oneDNN has no bfloat16 convolutions: its Float32 primitives
        /// on operands the caller rounded to bfloat16, their outputs and input gradients rounded to
        /// bfloat16 afterwards. The same products as `.bf16`; only the order of the Float32 sums is
        /// oneDNN's own for each kind of primitive.
        case bf16OnF32

        /// Whether oneDNN's calls take bfloat16 operands (its `bf16` argument).
        var dnnlBF16: Bool { self == .bf16 }
    }

    /// How `ctx` runs a convolution (`bf16`: under the bfloat16 autocast) on oneDNN, or nil when it
    /// does not run it there.
    static func route(_ ctx: ComputeContext, bf16: Bool) -> Route? {
        // The library is opened on the first convolution that would use it.
        guard !Parallel.isWorker else { return nil }
        switch ctx.gemm {
        case .onednn:
            guard available else { return nil }
            return !bf16 ? .f32 : nativeBF16 && ctx.bf16Primitives ? .bf16 : .bf16OnF32
        case .packed: return bf16 && ctx.bf16OnOneDNN && ctx.kernels.nativeBF16 && nativeBF16 ? .bf16 : nil
        case .openblas: return nil
        }
    }

    /// Whether `ctx` runs its convolutions (Float32 or, with `bf16`, under the bfloat16 autocast) on oneDNN.
    static func handles(_ ctx: ComputeContext, bf16: Bool) -> Bool { route(ctx, bf16: bf16) != nil }

    static func shape(_ g: ConvGeometry) -> df_dnnl_conv {
        df_dnnl_conv(n: Int32(g.n), c: Int32(g.c), h: Int32(g.h), w: Int32(g.w), o: Int32(g.o), k: Int32(g.k), s: Int32(g.s), p: Int32(g.p))
    }

    /// keepX: where x goes in oneDNN's layout (`keepBytes(g, bf16:)` bytes) for `weightGrad(keptX:)`.
    static func forward(_ ctx: ComputeContext, _ g: ConvGeometry, x: UnsafePointer<Float>, w: UnsafePointer<Float>,
                        y: UnsafeMutablePointer<Float>, bf16: Bool, keepX: UnsafeMutableRawPointer? = nil) -> Bool {
        var s = shape(g)
        return df_dnnl_conv_forward(&s, bf16 ? 1 : 0, Int32(ctx.threads), x, w, y, keepX) == 0
    }

    /// The forward with weights that do not change (`ComputeContext.withFrozenWeights`): their
    /// reordered copy is cached per shape and weight pointer.
    static func forwardFrozen(_ ctx: ComputeContext, _ g: ConvGeometry, x: UnsafePointer<Float>, w: UnsafePointer<Float>,
                              y: UnsafeMutablePointer<Float>, bf16: Bool) -> Bool {
        var s = shape(g)
        return df_dnnl_conv_forward_frozen(&s, bf16 ? 1 : 0, Int32(ctx.threads), x, w, y) == 0
    }

    /// Drops the weight copies cached by frozen-weight forwards.
    static func forgetWeights() { if available { df_dnnl_forget_weights() } }

    /// Frozen-weight forwards so far: (served from the cache, reordered).
    public static var weightCacheCounts: (hits: Int, reorders: Int) {
        var h = 0, r = 0
        df_dnnl_weight_cache_counts(&h, &r)
        return (h, r)
    }

    /// oneDNN convolutions run so far in this process and the seconds their executions took (not
    /// the reorders around them): what `bench train` counts as convolution time.
    public static var convolutionTime: (calls: Int, seconds: Double) {
        guard available else { return (0, 0) }
        var c = 0, s = 0.0
        df_dnnl_conv_time(&c, &s)
        return (c, s)
    }

    /// The reorders run so far around those convolutions (between plain and oneDNN's layouts, and
    /// the adding reorders of weight gradients) and their seconds: `weights` those of weights and
    /// weight gradients, else those of activations and their gradients.
    public static func reorderTime(weights: Bool) -> (calls: Int, seconds: Double) {
        guard available else { return (0, 0) }
        var c = 0, s = 0.0
        df_dnnl_reorder_time(weights ? 1 : 0, &c, &s)
        return (c, s)
    }

    /// Bytes of x in the layout oneDNN's forward and weight-gradient primitives share (0: none).
    static func keepBytes(_ g: ConvGeometry, bf16: Bool) -> Int {
        var s = shape(g)
        return df_dnnl_conv_keep_bytes(&s, bf16 ? 1 : 0)
    }

    /// x (Float32, NCHW) from a copy kept by `forward(keepX:)`.
    static func unkeep(_ g: ConvGeometry, bf16: Bool, kept: UnsafeRawPointer, x: UnsafeMutablePointer<Float>) -> Bool {
        var s = shape(g)
        return df_dnnl_conv_unkeep(&s, bf16 ? 1 : 0, kept, x) == 0
    }

    /// With `reuseGy`, gy's reordered copy kept by the `weightGrad(keepGy: true)` call just before is used.
    static func inputGrad(_ ctx: ComputeContext, _ g: ConvGeometry, w: UnsafePointer<Float>, gy: UnsafePointer<Float>,
                          gx: UnsafeMutablePointer<Float>, accumulate: Bool, bf16: Bool, reuseGy: Bool = false) -> Bool {
        var s = shape(g)
        return df_dnnl_conv_backward_data(&s, bf16 ? 1 : 0, Int32(ctx.threads), w, gy, gx, accumulate ? 1 : 0, reuseGy ? 1 : 0) == 0
    }

    /// gw = the weight gradient (assigned, Float32 sums).
    static func weightGrad(_ ctx: ComputeContext, _ g: ConvGeometry, x: UnsafePointer<Float>?, gy: UnsafePointer<Float>,
                           gw: UnsafeMutablePointer<Float>, bf16: Bool, keepGy: Bool = false, keptX: UnsafeRawPointer? = nil) -> Bool {
        var s = shape(g)
        return df_dnnl_conv_backward_weights(&s, bf16 ? 1 : 0, Int32(ctx.threads), x, gy, gw, keepGy ? 1 : 0, keptX) == 0
    }

    /// Frees oneDNN's cached primitives and scratch memory.
    public static func release() { df_dnnl_release() }
}

extension GemmBackend {
    /// The tools' default: oneDNN's convolutions where libdnnl runs, else the packed GEMM.
    public static var toolDefault: GemmBackend { OneDNN.available ? .onednn : .packed }

    /// The value of a tool's `--gemm` flag: `onednn` (only where libdnnl runs) or `packed`, and
    /// `openblas` where `allowOpenBLAS` (the benchmarks compare with it; the tools do not offer it).
    public init(flag: String, allowOpenBLAS: Bool = false) throws {
        switch flag {
        case "onednn":
            guard OneDNN.available else { throw GemmFlagError(description: "--gemm onednn: oneDNN (libdnnl.so.2) does not run here; use --gemm packed") }
            self = .onednn
        case "packed": self = .packed
        case "openblas" where allowOpenBLAS: self = .openblas
        default:
            throw GemmFlagError(description: "--gemm must be onednn\(allowOpenBLAS ? ", packed or openblas" : " or packed"), got \(flag)")
        }
    }
}

/// A `--gemm` value that cannot be used here.
public struct GemmFlagError: Error, CustomStringConvertible {
    public let description: String
}

// MARK: - Outputs kept in oneDNN's layout (the fused convolution + batch norm)

extension OneDNN {
    /// The forward output's own layout when it is channel-blocked and both backward passes take the
    /// output gradient in it (see `df_dnnl_conv_blocked_out`): its bytes and channel block B, or nil.
    static func blockedOut(_ g: ConvGeometry, bf16: Bool) -> (bytes: Int, block: Int)? {
        var s = shape(g)
        var block: Int32 = 0
        let bytes = df_dnnl_conv_blocked_out(&s, bf16 ? 1 : 0, &block)
        return bytes > 0 && block > 0 ? (bytes, Int(block)) : nil
    }

    /// The channel block of the layout the weight gradient takes x in, when channel-blocked (x
    /// rebuilt in it can be passed as `keptX`), or nil.
    static func sourceBlock(_ g: ConvGeometry, bf16: Bool) -> Int? {
        var s = shape(g)
        let b = Int(df_dnnl_conv_src_block(&s, bf16 ? 1 : 0))
        return b > 0 ? b : nil
    }

    /// y in that layout (Float32, or bfloat16 words under bf16); keepX as in `forward`; `frozen`:
    /// the weights do not change (as `forwardFrozen`); xLaid: x already in the layout the forward
    /// takes it in (`forwardSourceBlock`; then x is not read and keepX must be nil).
    static func forwardLaid(_ ctx: ComputeContext, _ g: ConvGeometry, x: UnsafePointer<Float>?, w: UnsafePointer<Float>,
                            y: UnsafeMutableRawPointer, bf16: Bool, keepX: UnsafeMutableRawPointer?, frozen: Bool = false,
                            xLaid: UnsafeRawPointer? = nil) -> Bool {
        var s = shape(g)
        return df_dnnl_conv_forward_laid(&s, bf16 ? 1 : 0, Int32(ctx.threads), x, w, y, keepX, frozen ? 1 : 0, xLaid) == 0
    }

    /// The channel block of the layout the forward takes x in, when channel-blocked (x in it can be
    /// passed as `xLaid`), or nil.
    static func forwardSourceBlock(_ g: ConvGeometry, bf16: Bool) -> Int? {
        var s = shape(g)
        let b = Int(df_dnnl_conv_forward_src_block(&s, bf16 ? 1 : 0))
        return b > 0 ? b : nil
    }

    /// gx (+= when accumulate) from gy in that layout.
    static func inputGradLaid(_ ctx: ComputeContext, _ g: ConvGeometry, w: UnsafePointer<Float>, gy: UnsafeRawPointer,
                              gx: UnsafeMutablePointer<Float>, accumulate: Bool, bf16: Bool) -> Bool {
        var s = shape(g)
        return df_dnnl_conv_backward_data_laid(&s, bf16 ? 1 : 0, Int32(ctx.threads), w, gy, gx, accumulate ? 1 : 0) == 0
    }

    /// The channel block of the Float32 layout the input gradient comes out in, when channel-blocked
    /// (`inputGradLaidOut` writes gx in it), or nil. Under bf16: of a primitive on bfloat16 operands
    /// whose input gradient is Float32 (its sums not rounded to bfloat16).
    static func inputGradBlock(_ g: ConvGeometry, bf16: Bool) -> Int? {
        var s = shape(g)
        let b = Int(df_dnnl_conv_diff_src_block(&s, bf16 ? 1 : 0))
        return b > 0 ? b : nil
    }

    /// On bfloat16 primitives: the channel block of the layout in which the backward-data primitive
    /// that rounds its input gradient to bfloat16 writes it (`inputGradWordsOut`), or nil.
    static func inputGradWordsBlock(_ g: ConvGeometry) -> Int? {
        var s = shape(g)
        let b = Int(df_dnnl_conv_diff_src_words_block(&s))
        return b > 0 ? b : nil
    }

    /// gx = the input gradient as bfloat16 words (the primitive's own rounding) in that layout, from
    /// gy as bfloat16 words in the output's layout.
    static func inputGradWordsOut(_ ctx: ComputeContext, _ g: ConvGeometry, w: UnsafePointer<Float>, gy: UnsafeRawPointer,
                                  gx: UnsafeMutablePointer<UInt16>) -> Bool {
        var s = shape(g)
        return df_dnnl_conv_backward_data_words_out(&s, Int32(ctx.threads), w, gy, gx) == 0
    }


    /// under bf16), written in the primitive's channel-blocked layout (`inputGradBlock`) instead of
    /// NCHW; under bf16 not rounded to bfloat16 (the reader rounds it).
    static func inputGradLaidOut(_ ctx: ComputeContext, _ g: ConvGeometry, w: UnsafePointer<Float>, gy: UnsafeRawPointer,
                                 gx: UnsafeMutablePointer<Float>, bf16: Bool = false) -> Bool {
        var s = shape(g)
        return df_dnnl_conv_backward_data_laid_out(&s, bf16 ? 1 : 0, Int32(ctx.threads), w, gy, gx) == 0
    }

    /// gw = the weight gradient (assigned) from gy in that layout; x, or keptX from `forward(keepX:)`.
    static func weightGradLaid(_ ctx: ComputeContext, _ g: ConvGeometry, x: UnsafePointer<Float>?, gy: UnsafeRawPointer,
                               gw: UnsafeMutablePointer<Float>, bf16: Bool, keptX: UnsafeRawPointer?) -> Bool {
        var s = shape(g)
        return df_dnnl_conv_backward_weights_laid(&s, bf16 ? 1 : 0, Int32(ctx.threads), x, gy, gw, keptX) == 0
    }
}
