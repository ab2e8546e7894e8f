import DataParallel
import DataPipeline
import Detection
import Foundation
import NN
import TensorCore

/// The training loop of `train_dual`.
///
/// Each optimizer step is one fixed sequence (`OptimizerStep`): unscale (loss scaling) -> finite
/// check (skip, back off the scale, count real NaNs) -> pre-clip norm (logged, per stream) -> clip
/// to max_norm -> step -> scaler update -> zero gradients -> EMA. The optimizer steps every
/// `accumulate` batches.
/// Loss normalisation: the detection loss is Ultralytics' (gained terms x batch size, see
/// `DetectionLoss`); gradients of the `accumulate` batches add up without averaging, and weight
/// decay is scaled by batch x accumulate / nbs, so one step sees about nbs images' worth of loss.
///
/// `init` runs the set-up steps in order (each a function below): resolve a resume, read the
/// data, build the models, check memory, make the loaders, make the optimizer, open the run
/// directory (atomic, locked), open the logs.
public final class Trainer {
    public let options: TrainOptions
    public private(set) var hyp: Hyperparameters
    public let paths: RunPaths
    /// Held by rank 0 (nil on the other ranks, which write nothing).
    let runLock: RunLock?
    /// The ranks training this model together (a group of one outside mpirun).
    public let group: ProcessGroup
    /// Images per batch on this rank: the global --batch divided by the ranks.
    public let localBatch: Int
    var bufferScratch: [Float] = []
    /// `--debug-dump-step` wrote its file: the run ends.
    var debugDumped = false
    var gradScratch: [Float] = []
    public let model: DetectionModel
    let evalModel: DetectionModel
    let table: ParamTable
    let optimizer: Optimizer
    let ema: EMA
    let loss: DetectionLoss
    let trainLoader: PairLoader
    let valLoader: PairLoader?
    let names: [String]
    var state = TrainState()
    let log: (String) -> Void
    let progress: Progress
    var results: CSVLog!
    var steps: CSVLog!
    /// TensorBoard events (every results.csv column per epoch; loss, grad norm, lr, scale per step).
    var tensorboard: TensorBoardWriter?
    /// Base learning rate of every group before schedule and recovery scaling.
    var lr0 = 0.01
    var targetAccumulate = 1
    var consecutiveSkips = 0
    var lossHistory: [Double] = []
    var lastReport: ValidationReport?
    var reportedActivations = false
    var clipHintShown = false
    /// Bytes of activations the first batch saved for backward (halved by --amp).
    public internal(set) var lastSavedActivationBytes = 0
    /// A seam for tests and `train_dual --debug-nan-at`: receives each iteration's global index and
    /// total loss before backward and returns the loss to use.
    public var lossHook: ((_ iteration: Int, _ loss: Tensor) -> Tensor)?
    /// Set (by the signal handler or a test) to stop at the next iteration boundary.
    public let stop = StopRequest()

    /// `group`: the ranks of a data-parallel job (`ProcessGroup.fromEnvironment()` under mpirun);
    /// every rank runs this with the same options, rank 0 alone writes the run folder and logs.
    public init(_ opts: TrainOptions, group: ProcessGroup = .single, log: @escaping (String) -> Void = { print($0); fflush(nil) }) throws {
        self.group = group
        let log: (String) -> Void = group.isRoot ? log : { _ in }
        self.log = log
        let resumed = try Trainer.resolveResume(opts, group: group, log: log)
        var options = resumed.options
        hyp = options.hyp
        self.progress = Progress(enabled: options.verbose && group.isRoot)
        if let t = options.threads { ComputeContext.current.threads = t }
        else if group.isDistributed { ComputeContext.current.threads = group.defaultThreads }
        if options.gemm == .onednn && !OneDNN.available {
            throw TrainingError.invalid("--gemm onednn: oneDNN (libdnnl.so.2) does not run here; use --gemm packed")
        }
        ComputeContext.current.gemm = options.gemm ?? .toolDefault
        ComputeContext.current.keptInputsShare = hyp.bf16_kept_inputs
        guard hyp.batch % group.size == 0 else {
            let lower = max(group.size, hyp.batch / group.size * group.size)
            throw TrainingError.invalid("--batch \(hyp.batch) is the global batch and must split evenly over the \(group.size) ranks " +
                                        "(try --batch \(lower) or \(lower + group.size))")
        }
        localBatch = hyp.batch / group.size
        let ctx = ComputeContext.current
        if group.isDistributed {
            log("world size \(group.size) (\(group.backend)), rank \(group.rank): global batch \(hyp.batch), \(localBatch) per rank; " +
                "\(ctx.threads) thread\(ctx.threads == 1 ? "" : "s") per rank, kernels \(ctx.kernels), \(Trainer.convolutions(ctx, amp: hyp.amp)); BatchNorm statistics " +
                (options.syncBN ? "of the global batch (--sync-bn)" : "per rank"))
        } else {
            log("single process: batch \(hyp.batch), \(ctx.threads) thread\(ctx.threads == 1 ? "" : "s"), kernels \(ctx.kernels), \(Trainer.convolutions(ctx, amp: hyp.amp))")
            if options.syncBN { log("note: --sync-bn has no effect in a single process (its batch statistics are the global batch's)") }
        }

        let data = try Trainer.readData(options, hyp: hyp, readVal: group.isRoot, log: log)
        names = data.config.names
        let built = try Trainer.buildModels(options, hyp: hyp, data: data.config, loadWeights: resumed.from == nil, log: log)
        (model, evalModel) = (built.model, built.eval)
        if options.verbose && group.isRoot { log(model.summary(imgsz: 640)) }
        let stride = model.strides.max() ?? 32
        guard hyp.imgsz % stride == 0 else {
            throw TrainingError.invalid("imgsz \(hyp.imgsz) must be a multiple of the model's largest stride \(stride) (try \(max(stride, (hyp.imgsz / stride) * stride)))")
        }
        let resuming = resumed.from != nil
        loss = DetectionLoss(nc: names.count, gains: LossGains(box: Float(hyp.box), cls: Float(hyp.cls), dfl: Float(hyp.dfl)))
        table = ParamTable(model.namedTensors(), streams: model.streamTags())
        try Trainer.checkMemory(options, hyp: hyp, batch: localBatch, probe: evalModel, table: table, train: data.train, log: log)
        (trainLoader, valLoader) = try Trainer.makeLoaders(hyp: hyp, batch: localBatch, group: group, stride: stride, train: data.train, val: data.val)

        let made = Trainer.makeOptimizer(options, hyp: hyp, table: table, images: data.train.count, batches: trainLoader.batchesPerEpoch,
                                         nc: names.count, resumed: resumed.saved, log: log)
        optimizer = made.optimizer
        hyp = made.hyp
        lr0 = made.lr0
        targetAccumulate = made.accumulate
        ema = EMA(model.namedTensors(), decay: hyp.ema_decay, tau: hyp.ema_tau)
        state.accumulate = targetAccumulate
        state.optimizer = made.optimizer.kind.rawValue
        state.lr0 = lr0
        state.momentum = hyp.momentum
        state.epochs = hyp.epochs
        state.scaler = LossScaler(initial: hyp.loss_scale_init, growth: hyp.loss_scale_growth, backoff: hyp.loss_scale_backoff,
                                  interval: hyp.loss_scale_interval, minimum: hyp.loss_scale_min)

        // Run directory: created atomically, then locked for this process's lifetime (rank 0's;
        // the other ranks write nothing and learn its path).
        if !group.isRoot {
            var root = ""
            try group.broadcast(&root, operation: "broadcast of the run folder")
            paths = RunPaths(root: root)
            runLock = nil
        } else if let from = resumed.from, let lock = resumed.lock {
            paths = from
            runLock = lock
        } else {
            paths = try RunPaths.create(project: options.project, name: options.name, existOK: options.existOK)
            runLock = try RunLock(paths)
        }
        if group.isRoot && group.isDistributed {
            var root = paths.root
            try group.broadcast(&root, operation: "broadcast of the run folder")
        }
        options.name = URL(fileURLWithPath: paths.root).lastPathComponent
        self.options = options
        if let from = resumed.from {
            if group.isRoot {
                if let note = try Checkpoints.recover(from) { log("checkpoint recovery: \(note)") }
                try loadState(from.lastState)
            }
            // Every rank continues from rank 0's state (its counters decide the epochs below).
            try syncReplicas("resume")
            if resumed.extendTo > state.epochs {
                log("extending \(from.root) from \(state.epochs) to \(resumed.extendTo) epochs (the schedule is recomputed for the new length)")
                state.epochs = resumed.extendTo
            }
            hyp.epochs = state.epochs
            if state.epoch >= hyp.epochs {
                throw TrainingError.invalid("\(from.root) already finished its \(hyp.epochs) epochs: nothing to resume. " +
                                            "Pass --epochs N (N > \(hyp.epochs)) to train it further, or start a new run")
            }
            log("resuming \(from.root) after epoch \(state.epoch) of \(hyp.epochs)")
            if let w = state.worldSize, w != group.size {
                log("note: the run trained with \(w) rank\(w == 1 ? "" : "s") and continues with \(group.size): each epoch's order is re-derived " +
                    "from the seed for \(group.size) shard\(group.size == 1 ? "" : "s"), the global batch stays \(hyp.batch)")
            }
        } else {
            if group.isRoot {
                if let note = try Checkpoints.recover(paths) { log("checkpoint recovery: \(note)") }
                // A reused folder (--exist-ok) starts a new run: the previous run's commit marker goes.
                try? FileManager.default.removeItem(atPath: paths.commit)
            }
            // DDP's start: rank 0's parameters and buffers on every rank.
            try syncReplicas("start")
        }
        state.worldSize = group.size
        if group.isRoot {
            try openLogs(resumedEpoch: resuming ? state.epoch : nil)
            if hyp.tb { tensorboard = try TensorBoardWriter(directory: paths.root) }
            try writeArgs()
        } else {
            results = CSVLog(discarding: Trainer.resultsHeader)
            steps = CSVLog(discarding: Trainer.stepsHeader)
        }
        warnBeforeStart(batches: trainLoader.batchesPerEpoch, images: data.train.count)
    }

    static let resultsHeader = ["epoch", "time", "train/box_loss", "train/cls_loss", "train/dfl_loss", "metrics/precision(B)",
                                "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)", "val/box_loss", "val/cls_loss",
                                "val/dfl_loss", "lr/pg0", "lr/pg1", "lr/pg2", "metrics/F1(B)", "train/grad_norm", "train/grad_norm_max",
                                "train/clip_frac", "train/grad_norm_rgb", "train/grad_norm_ir", "amp/scale", "amp/skipped", "time/data_wait"]

    static let stepsHeader = ["step", "epoch", "iteration", "lr/pg0", "lr/pg1", "lr/pg2", "loss", "grad_norm", "clipped", "loss_scale", "skipped"]

    // MARK: - Set-up steps

    /// A resume: the run's own options and hyper-parameters (paths absolute), which command-line
    /// values are ignored, and the epoch count to extend to. Otherwise the options with absolute paths.
    /// Under data parallelism rank 0 finds, locks and reads the run; the others receive its root
    /// and the state file's metadata.
    static func resolveResume(_ opts: TrainOptions, group: ProcessGroup, log: (String) -> Void) throws
        -> (options: TrainOptions, from: RunPaths?, lock: RunLock?, extendTo: Int, saved: TrainState?) {
        var options = opts
        guard let r = opts.resume else {
            options.data = RunPaths.absolute(opts.data)
            options.cfg = RunPaths.absolute(opts.cfg)
            options.weights = opts.weights.map(RunPaths.absolute)
            options.project = RunPaths.absolute(opts.project)
            return (options, nil, nil, 0, nil)
        }
        var p = RunPaths(root: ""), lock: RunLock? = nil, meta: [String: String] = [:]
        if group.isRoot {
            p = try RunPaths.resolveResume(r, project: opts.project)
            // The lock comes first: a run still training owns its temporary files, and recovery would delete them.
            lock = try RunLock(p)
            _ = try Checkpoints.recover(p)
            meta = try Safetensors.read(p.lastState).metadata
        }
        if group.isDistributed {
            var shared = group.isRoot ? try JSONEncoder().encode(["root": p.root, "options": meta["options"] ?? "", "hyp": meta["hyp"] ?? "",
                                                                   "state": meta["state"] ?? ""]) : Data()
            try group.broadcast(&shared, operation: "broadcast of the resumed run")
            if !group.isRoot {
                let m = try JSONDecoder().decode([String: String].self, from: shared)
                p = RunPaths(root: m["root"] ?? "")
                meta = m
            }
        }
        guard let saved = meta["options"].flatMap({ $0.data(using: .utf8) }),
              let o = try? JSONDecoder().decode(SavedOptions.self, from: saved) else {
            throw TrainingError.checkpoint(path: p.lastState, reason: "no run options in the state file")
        }
        options = o.apply(to: opts, runRoot: p.root)
        var h = Hyperparameters()
        try h.apply(yaml: meta["hyp"] ?? "", file: p.lastState)
        let extendTo = opts.explicitHyp.contains("epochs") ? opts.hyp.epochs : 0
        options.hyp = h
        let ignoredHyp = opts.explicitHyp.subtracting(["epochs"]).sorted().map { Hyperparameters.field($0)?.flag ?? "--" + $0 }
        let ignoredOptions = opts.explicitOptions.subtracting(["threads", "gemm", "resume"]).sorted().map { "--" + $0 }
        let ignored = ignoredOptions + ignoredHyp
        if !ignored.isEmpty {
            log("note: --resume continues the run with its own settings; ignored: \(ignored.joined(separator: ", ")) " +
                "(only --epochs, to extend the run, --threads and --gemm apply)")
        }
        let savedState = meta["state"].flatMap { $0.data(using: .utf8) }.flatMap { try? JSONDecoder().decode(TrainState.self, from: $0) }
        return (options, p, lock, extendTo, savedState)
    }

    /// Where the convolutions run, for the header line.
    static func convolutions(_ ctx: ComputeContext, amp: Precision) -> String {
        switch ctx.gemm {
        case .onednn:
            // oneDNN 2.6 has bfloat16 convolutions from AVX-512 on.
            let emulated = amp == .bf16 && !OneDNN.nativeBF16 ? ", bf16 on its Float32 primitives with operands rounded to bfloat16" : ""
            return "convolutions on oneDNN \(OneDNN.version) (\(OneDNN.isa)\(emulated))"
        case .packed: return "convolutions on the packed GEMM"
        case .openblas: return "convolutions on OpenBLAS sgemm"
        }
    }

    struct DataSets {
        var config: DatasetConfig
        var train: PairedDataset
        var val: PairedDataset?
    }

    /// Reads and scans the data set; names every dropped pair (up to 20) as `check_data` does.
    static func readData(_ options: TrainOptions, hyp: Hyperparameters, readVal: Bool = true, log: (String) -> Void) throws -> DataSets {
        var config = try DatasetConfig.load(path: options.data)
        if let c = options.irChannels {
            guard c == 1 || c == 3 else { throw TrainingError.invalid("--ir-channels must be 1 or 3, got \(c)") }
            config.irChannels = c
        }
        var scan = ScanOptions()
        scan.fraction = hyp.fraction
        scan.allowResizeIR = options.allowResizeIR
        let train = try PairedDataset(config: config, split: .train, scan: scan)
        if options.verbose { nameDropped(train.report, log: log); log(train.report.summary) }
        var valScan = ScanOptions()
        valScan.allowResizeIR = options.allowResizeIR
        let val = hyp.val && readVal ? try PairedDataset(config: config, split: .val, scan: valScan) : nil
        if let val, options.verbose { nameDropped(val.report, log: log); log(val.report.summary) }
        return DataSets(config: config, train: train, val: val)
    }

    /// Each pair the scan dropped, with its reason (as check_data prints it), up to 20.
    static func nameDropped(_ report: ScanReport, log: (String) -> Void) {
        let errors = report.issues.filter { $0.severity == .error }
        for e in errors.prefix(20) { log("dropped: \(e)") }
        if errors.count > 20 { log("… and \(errors.count - 20) more: run check_data --data <your data YAML> for the full list") }
    }

    /// The training model and its evaluation twin (which receives the EMA weights), with --weights
    /// loaded into the first (refused when it fills less than half the model, unless --allow-partial).
    static func buildModels(_ options: TrainOptions, hyp: Hyperparameters, data: DatasetConfig, loadWeights: Bool,
                            log: (String) -> Void) throws -> (model: DetectionModel, eval: DetectionModel) {
        let spec = try ModelSpec.load(options.cfg)
        var channels: [String: Int] = [:]
        if spec.streams.contains(where: { $0.name == "ir" }) { channels["ir"] = data.irChannels }
        let model = try ModelBuilder.build(spec, nc: data.names.count, channels: channels, seed: UInt64(hyp.seed))
        let eval = try ModelBuilder.build(spec, nc: data.names.count, channels: channels, seed: UInt64(hyp.seed))
        if let w = options.weights, loadWeights {
            let (tensors, _) = try Safetensors.read(w)
            let named = model.namedTensors()
            let report = try StateDict.load(tensors, into: named, strict: false,
                                            streamPrefixes: model.streams.map(\.name), fileName: w)
            log("weights \(w): \(report)")
            let total = named.filter { $0.role != .buffer }.reduce(0) { $0 + $1.tensor.count }
            let filledNames = Set(report.copied.map(\.0) + report.adapted.map(\.0))
            let filled = named.filter { filledNames.contains($0.name) && $0.role != .buffer }.reduce(0) { $0 + $1.tensor.count }
            if Double(filled) < 0.5 * Double(total) && !options.allowPartial {
                throw TrainingError.invalid("--weights \(w) filled \(filled) of the model's \(total) parameters " +
                                            "(\(filledNames.count) tensors matched by name and shape): is it a weights file of this model " +
                                            "(not a *.state.safetensors, not another architecture)? Pass --allow-partial to train anyway")
            }
        }
        return (model, eval)
    }

    static func makeLoaders(hyp: Hyperparameters, batch: Int, group: ProcessGroup, stride: Int, train: PairedDataset,
                            val: PairedDataset?) throws -> (PairLoader, PairLoader?) {
        var aug = AugmentConfig()
        aug.mosaic = Float(hyp.mosaic); aug.degrees = Float(hyp.degrees); aug.translate = Float(hyp.translate)
        aug.scale = Float(hyp.scale); aug.shear = Float(hyp.shear); aug.perspective = Float(hyp.perspective)
        aug.flipud = Float(hyp.flipud); aug.fliplr = Float(hyp.fliplr)
        aug.hsvH = Float(hyp.hsv_h); aug.hsvS = Float(hyp.hsv_s); aug.hsvV = Float(hyp.hsv_v)
        aug.irGain = Float(hyp.ir_gain); aug.irBias = Float(hyp.ir_bias)
        aug.modalityDropout = Float(hyp.modality_dropout)
        let cache: ImageCacheMode = hyp.cache == "ram" ? .ram : .none
        let trainLoader = try PairLoader(dataset: train, options: LoaderOptions(mode: .train, imageSize: hyp.imgsz, batchSize: batch,
                                                                              stride: stride, augment: aug, seed: UInt64(hyp.seed),
                                                                              workers: hyp.workers, cache: cache, rank: group.rank, world: group.size))
        let valOptions = LoaderOptions(mode: .val, imageSize: hyp.imgsz, batchSize: hyp.batch, stride: stride,
                                       seed: UInt64(hyp.seed), workers: hyp.workers, cache: cache)
        return (trainLoader, try val.map { try PairLoader(dataset: $0, options: valOptions) })
    }

    /// The optimizer, the resolved accumulation and lr0, and the hyper-parameters as used.
    ///
    /// `optimizer: auto` follows Ultralytics' rule for the kind (see `Optimizer.auto`) but, one
    /// step past it, keeps an lr0 or momentum the user set explicitly; the log says what it used.
    static func makeOptimizer(_ options: TrainOptions, hyp inHyp: Hyperparameters, table: ParamTable, images: Int, batches: Int,
                              nc: Int, resumed: TrainState?, log: (String) -> Void)
        -> (optimizer: Optimizer, hyp: Hyperparameters, lr0: Double, accumulate: Int) {
        var hyp = inHyp
        if let r = resumed, let kind = Optimizer.Kind(rawValue: r.optimizer) {
            // A resumed run keeps what it resolved when it started.
            if hyp.optimizer == "auto" { hyp.warmup_bias_lr = 0 }
            hyp.momentum = r.momentum
            let ratio = Double(hyp.batch * r.accumulate) / Double(hyp.nbs)
            let optimizer = Optimizer(kind: kind, table: table, lr: r.lr0, momentum: r.momentum, weightDecay: hyp.weight_decay * ratio)
            return (optimizer, hyp, r.lr0, r.accumulate)
        }
        let announce = true
        let accumulate = hyp.accumulate > 0 ? hyp.accumulate : max(Int((Double(hyp.nbs) / Double(hyp.batch)).rounded(.toNearestOrEven)), 1)
        var kind = Optimizer.Kind(rawValue: hyp.optimizer) ?? .sgd
        var lr0 = hyp.lr0, momentum = hyp.momentum
        if hyp.optimizer == "auto" {
            let iterations = Optimizer.autoIterations(images: images, batch: hyp.batch, nbs: hyp.nbs, epochs: hyp.epochs)
            let a = Optimizer.auto(nc: nc, iterations: iterations)
            kind = a.kind
            let lrGiven = options.explicitHyp.contains("lr0"), momentumGiven = options.explicitHyp.contains("momentum")
            if !lrGiven { lr0 = a.lr }
            if !momentumGiven { momentum = a.momentum }
            hyp.warmup_bias_lr = 0
            if announce {
                let why = iterations > 10_000 ? "a long run (\(iterations) iterations > 10000)" : "a short run (\(iterations) iterations <= 10000)"
                let lrText = lrGiven ? "lr0 \(lr0) (yours)" : (kind == .adamw ? "lr0 \(lr0) (fitted to \(nc) classes)" : "lr0 \(lr0)")
                log("optimizer: auto chose \(kind.rawValue) for \(why): \(lrText), momentum \(momentum)\(momentumGiven ? " (yours)" : ""), warmup_bias_lr 0")
            }
        }
        let ratio = Double(hyp.batch * accumulate) / Double(hyp.nbs)
        switch hyp.scale_lr {
        case "linear": lr0 *= ratio
        case "sqrt": lr0 *= ratio.squareRoot()
        default: break
        }
        hyp.momentum = momentum
        let optimizer = Optimizer(kind: kind, table: table, lr: lr0, momentum: momentum, weightDecay: hyp.weight_decay * ratio)
        return (optimizer, hyp, lr0, accumulate)
    }

    /// Peak memory of a training step, estimated from a forward/backward of one image at a small
    /// size scaled by area to imgsz x batch, plus the RAM cache, the buffer pool's bound, the
    /// optimizer state and what the process holds now. Throws when it exceeds the available
    /// memory (unless --force), with what to change.
    static func checkMemory(_ options: TrainOptions, hyp: Hyperparameters, batch: Int, probe model: DetectionModel, table: ParamTable,
                            train: PairedDataset, log: (String) -> Void) throws {
        guard let have = PairedDataset.availableMemoryBytes() else { return }
        let stride = model.strides.max() ?? 32
        let side = max(stride * 2, min(hyp.imgsz, 128) / stride * stride)
        let activations = estimateStepBytes(model: model, side: side, precision: hyp.amp)
        let scale = Double(hyp.imgsz * hyp.imgsz) / Double(side * side)
        let step = Int(Double(activations) * scale * Double(batch))
        let cache = hyp.cache == "ram" ? train.ramCacheBytes(longSide: hyp.imgsz) : 0
        // The pool keeps the blocks each iteration takes again (`BufferPool.collect`); at a step's
        // peak it holds those only backward takes, counted as a quarter of the activations.
        let pool = max(64 << 20, step / 4)
        let fixed = table.elementCount * 4 * 6 + MemoryStats.residentBytes()
        let need = step + cache + pool + fixed
        guard need > have else { return }
        let text = String(format: "estimated peak memory %.1f GB (a step's activations %.1f GB at imgsz %d batch %d, RAM cache %.1f GB, buffer pool %.1f GB, model and optimizer %.1f GB) exceeds the %.1f GB available",
                          Double(need) / 1e9, Double(step) / 1e9, hyp.imgsz, hyp.batch, Double(cache) / 1e9,
                          Double(pool) / 1e9, Double(fixed) / 1e9, Double(have) / 1e9)
            .replacingOccurrences(of: "batch \(hyp.batch)", with: batch == hyp.batch ? "batch \(batch)" : "batch \(batch) per rank")
        if options.force {
            log("WARNING: \(text); continuing because of --force (the kernel may stop the process without a message)")
            return
        }
        throw TrainingError.invalid("\(text). Lower --batch or --imgsz, use --cache none, or --amp (16-bit activations); --force starts anyway")
    }

    /// Bytes a forward/backward of one image at `side` px allocates beyond what is live before.
    static func estimateStepBytes(model: DetectionModel, side: Int, precision: Precision) -> Int {
        let before = MemoryStats.allocatedBytes
        MemoryStats.resetPeak()
        var inputs: [String: Tensor] = [:]
        for s in model.streams { inputs[s.name] = Tensor(zeros: [1, s.channels, side, side]) }
        model.training = true
        let outs = Autocast.with(precision) { model(inputs) }
        var total = outs[0].boxes.mean() + outs[0].scores.mean()
        for o in outs.dropFirst() { total = total + o.boxes.mean() + o.scores.mean() }
        total.backward()
        model.training = false
        for t in model.namedTensors() { t.tensor.zeroGrad() }
        return max(MemoryStats.peakBytes - before, 0)
    }

    func openLogs(resumedEpoch: Int?) throws {
        results = try CSVLog(path: paths.results, header: Trainer.resultsHeader,
                             keepRows: resumedEpoch.map { e in { row in (Int(row.split(separator: ",").first ?? "") ?? Int.max) <= e } })
        steps = try CSVLog(path: paths.steps, header: Trainer.stepsHeader,
                           keepRows: resumedEpoch.map { e in { row in
                               let cols = row.split(separator: ",")
                               return cols.count > 1 && (Int(cols[1]) ?? Int.max) <= e
                           } })
    }

    func writeArgs() throws {
        var text = "# train_dual run arguments (hyper-parameters resolved: file, then flags)\n"
        text += "data: \(options.data)\ncfg: \(options.cfg)\nweights: \(options.weights ?? "null")\nproject: \(options.project)\n"
        text += "name: \(URL(fileURLWithPath: paths.root).lastPathComponent)\nir_channels: \(model.streams.first { $0.name == "ir" }?.channels ?? 0)\n"
        text += "world_size: \(group.size)\nsync_bn: \(options.syncBN && group.isDistributed)\nthreads: \(Parallel.threads)\nkernels: \(ComputeContext.current.kernels)\ngemm: \(ComputeContext.current.gemm.rawValue)\naccumulate_resolved: \(targetAccumulate)\n"
        text += "optimizer_resolved: \(optimizer.kind.rawValue)\nlr0_resolved: \(lr0)\nmomentum_resolved: \(hyp.momentum)\n"
        text += hyp.yaml()
        do { try AtomicFile.write(Data(text.utf8), to: paths.args) } catch {
            throw TrainingError.invalid("\(error)")
        }
    }

    /// Warnings about settings that make a run learn little, said before it starts.
    func warnBeforeStart(batches nb: Int, images: Int) {
        if localBatch <= 4 {
            log("WARNING: batch \(localBatch)\(group.isDistributed ? " per rank" : "") <= 4: BatchNorm statistics from so few images are noisy; use a larger batch if memory allows")
        }
        let nw = Schedule.warmupIterations(warmupEpochs: hyp.warmup_epochs, batchesPerEpoch: nb, minimum: hyp.warmup_iters_min)
        let totalBatches = nb * hyp.epochs
        let stepsPerEpoch = (nb + targetAccumulate - 1) / targetAccumulate
        let totalSteps = stepsPerEpoch * hyp.epochs
        let warmupBatches = min(nw, totalBatches)
        var problems: [String] = []
        if totalSteps < 100 {
            problems.append("only about \(totalSteps) optimizer steps (\(images) images / batch \(hyp.batch) = \(nb) batches an epoch, accumulate \(targetAccumulate), \(hyp.epochs) epochs)")
        }
        if nw > 0 && nw >= totalBatches {
            problems.append("warmup (\(nw) iterations) lasts the whole run of \(totalBatches) iterations")
        } else if nw > 0 && Double(warmupBatches) > 0.5 * Double(totalBatches) {
            problems.append("\(warmupBatches) of the run's \(totalBatches) iterations are warmup")
        }
        if !problems.isEmpty {
            var fixes: [String] = []
            if targetAccumulate > 1 { fixes.append("--accumulate 1 (or a smaller --nbs)") }
            if nw >= totalBatches / 2 { fixes.append("--warmup-iters-min \(max(1, totalBatches / 10)) or --warmup-epochs 1") }
            fixes.append("more --epochs")
            log("WARNING: this run will learn little: " + problems.joined(separator: "; ") + ". Consider " + fixes.joined(separator: ", ") +
                " (configs/hyp/quick.yaml sets the first two for small data sets)")
        }
    }
}

/// A request to stop training at the next iteration boundary (set from a signal handler).
public final class StopRequest: @unchecked Sendable {
    private let flag = NSLock()
    private var signal: Int32 = 0
    public init() {}
    public func request(_ signal: Int32) { flag.withLock { self.signal = signal } }
    public var requested: Int32? { flag.withLock { signal == 0 ? nil : signal } }
}
