import DataPipeline
import Detection
import Foundation
import NN
import TensorCore

/// The training loop of `train_dual`.
///
/// Each optimizer step is one fixed sequence: unscale (AMP) -> finite check (skip, back off the
/// scale, count real NaNs) -> pre-clip norm (logged, per stream) -> clip to max_norm -> step ->
/// scaler update -> zero gradients -> EMA. The optimizer steps every `accumulate` batches.
/// Loss normalisation: the detection loss is Ultralytics' (gained terms x batch size, see
/// `DetectionLoss`); gradients of the `accumulate` batches add up without averaging, and weight
/// decay is scaled by batch x accumulate / nbs, so one step sees about nbs images' worth of loss.
public final class Trainer {
    public let options: TrainOptions
    public private(set) var hyp: Hyperparameters
    public let paths: RunPaths
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
    /// Base learning rate of every group before schedule and recovery scaling.
    var lr0 = 0.01
    var targetAccumulate = 1
    var consecutiveSkips = 0
    var lossHistory: [Double] = []
    var lastReport: ValidationReport?
    var reportedActivations = false
    /// Test hook bookkeeping: each injected NaN fires once (a rollback re-runs its iterations).
    var firedNaN = Set<Int>()
    /// Bytes of activations the first batch saved for backward (halved by --amp).
    public private(set) var lastSavedActivationBytes = 0

    public init(_ opts: TrainOptions, log: @escaping (String) -> Void = { print($0); fflush(nil) }) throws {
        var options = opts
        var resumeFrom: RunPaths? = nil
        var resumeMeta: [String: String] = [:]
        if let r = opts.resume {
            let p = try RunPaths.resolveResume(r, project: opts.project)
            resumeFrom = p
            resumeMeta = try Safetensors.read(p.lastState).metadata
            guard let saved = resumeMeta["options"].flatMap({ $0.data(using: .utf8) }),
                  let o = try? JSONDecoder().decode(SavedOptions.self, from: saved) else {
                throw TrainingError.checkpoint(path: p.lastState, reason: "no run options in the state file")
            }
            options = o.apply(to: opts)
            var h = Hyperparameters()
            try h.apply(yaml: resumeMeta["hyp"] ?? "", file: p.lastState)
            options.hyp = h
        }
        self.options = options
        self.log = log
        self.progress = Progress(enabled: options.verbose)
        hyp = options.hyp
        if let t = options.threads { Parallel.threads = t }

        // Data.
        var data = try DatasetConfig.load(path: options.data)
        if let c = options.irChannels {
            guard c == 1 || c == 3 else { throw TrainingError.invalid("--ir-channels must be 1 or 3, got \(c)") }
            data.irChannels = c
        }
        names = data.names
        var scan = ScanOptions()
        scan.fraction = hyp.fraction
        scan.allowResizeIR = options.allowResizeIR
        let train = try PairedDataset(config: data, split: .train, scan: scan)
        if options.verbose { log(train.report.summary) }
        var valScan = ScanOptions()
        valScan.allowResizeIR = options.allowResizeIR
        let val = hyp.val ? try PairedDataset(config: data, split: .val, scan: valScan) : nil
        if let val, options.verbose { log(val.report.summary) }

        // Model.
        let spec = try ModelSpec.load(options.cfg)
        var channels: [String: Int] = [:]
        if spec.streams.contains(where: { $0.name == "ir" }) { channels["ir"] = data.irChannels }
        model = try ModelBuilder.build(spec, nc: data.names.count, channels: channels, seed: UInt64(hyp.seed))
        evalModel = try ModelBuilder.build(spec, nc: data.names.count, channels: channels, seed: UInt64(hyp.seed))
        if let w = options.weights, resumeFrom == nil {
            let (tensors, _) = try Safetensors.read(w)
            let report = try StateDict.load(tensors, into: model.namedTensors(), strict: false,
                                            streamPrefixes: model.streams.map(\.name), fileName: w)
            log("weights \(w): \(report)")
        }
        if options.verbose { log(model.summary(imgsz: 640)) }

        // Loaders.
        let stride = model.strides.max() ?? 32
        guard hyp.imgsz % stride == 0 else {
            throw TrainingError.invalid("imgsz \(hyp.imgsz) must be a multiple of the model's largest stride \(stride) (try \(max(stride, (hyp.imgsz / stride) * stride)))")
        }
        var aug = AugmentConfig()
        aug.mosaic = Float(hyp.mosaic); aug.degrees = Float(hyp.degrees); aug.translate = Float(hyp.translate)
        aug.scale = Float(hyp.scale); aug.shear = Float(hyp.shear); aug.perspective = Float(hyp.perspective)
        aug.flipud = Float(hyp.flipud); aug.fliplr = Float(hyp.fliplr)
        aug.hsvH = Float(hyp.hsv_h); aug.hsvS = Float(hyp.hsv_s); aug.hsvV = Float(hyp.hsv_v)
        aug.irGain = Float(hyp.ir_gain); aug.irBias = Float(hyp.ir_bias)
        let cache: ImageCacheMode = hyp.cache == "ram" ? .ram : .none
        trainLoader = try PairLoader(dataset: train, options: LoaderOptions(mode: .train, imageSize: hyp.imgsz, batchSize: hyp.batch,
                                                                              stride: stride, augment: aug, seed: UInt64(hyp.seed),
                                                                              workers: hyp.workers, cache: cache))
        let valOptions = LoaderOptions(mode: .val, imageSize: hyp.imgsz, batchSize: hyp.batch, stride: stride,
                                       seed: UInt64(hyp.seed), workers: hyp.workers, cache: cache)
        valLoader = try val.map { try PairLoader(dataset: $0, options: valOptions) }

        // Optimizer and friends.
        table = ParamTable(model.namedTensors(), streams: model.streamTags())
        let nb = trainLoader.batchesPerEpoch
        targetAccumulate = hyp.accumulate > 0 ? hyp.accumulate : max(Int((Double(hyp.nbs) / Double(hyp.batch)).rounded(.toNearestOrEven)), 1)
        var kind = Optimizer.Kind(rawValue: hyp.optimizer) ?? .sgd
        var momentum = hyp.momentum
        lr0 = hyp.lr0
        if hyp.optimizer == "auto" {
            let iterations = Int((Double(max(train.count, hyp.batch)) / Double(max(hyp.batch, hyp.nbs))).rounded(.up)) * hyp.epochs
            let a = Optimizer.auto(nc: names.count, iterations: iterations)
            (kind, lr0, momentum) = (a.kind, a.lr, a.momentum)
            hyp.warmup_bias_lr = 0
            log("optimizer: auto chose \(kind.rawValue) lr \(lr0) momentum \(momentum) for \(iterations) iterations (lr0 and momentum ignored)")
        }
        let ratio = Double(hyp.batch * targetAccumulate) / Double(hyp.nbs)
        switch hyp.scale_lr {
        case "linear": lr0 *= ratio
        case "sqrt": lr0 *= ratio.squareRoot()
        default: break
        }
        hyp.momentum = momentum
        let decay = hyp.weight_decay * ratio
        optimizer = Optimizer(kind: kind, table: table, lr: lr0, momentum: momentum, weightDecay: decay)
        ema = EMA(model.namedTensors(), decay: hyp.ema_decay, tau: hyp.ema_tau)
        var gains = LossGains()
        (gains.box, gains.cls, gains.dfl) = (Float(hyp.box), Float(hyp.cls), Float(hyp.dfl))
        loss = DetectionLoss(nc: names.count, gains: gains)
        state.accumulate = targetAccumulate
        state.optimizer = kind.rawValue
        state.lr0 = lr0
        state.momentum = momentum
        state.scaler = LossScaler(initial: hyp.loss_scale_init, growth: hyp.loss_scale_growth, backoff: hyp.loss_scale_backoff,
                                  interval: hyp.loss_scale_interval, minimum: hyp.loss_scale_min)

        // Run directory.
        if let p = resumeFrom {
            paths = p
            try loadState(p.lastState)
            log("resuming \(p.root) after epoch \(state.epoch) of \(hyp.epochs)")
        } else {
            paths = try RunPaths.create(project: options.project, name: options.name, existOK: options.existOK)
        }
        let resumedEpoch = state.epoch
        results = CSVLog(path: paths.results, header: Trainer.resultsHeader,
                         keepRows: resumeFrom == nil ? nil : { row in (Int(row.split(separator: ",").first ?? "") ?? Int.max) <= resumedEpoch })
        steps = CSVLog(path: paths.steps, header: ["step", "epoch", "iteration", "lr/pg0", "lr/pg1", "lr/pg2", "loss", "grad_norm",
                                                   "clipped", "loss_scale", "skipped"],
                       keepRows: resumeFrom == nil ? nil : { row in
                           let cols = row.split(separator: ",")
                           return cols.count > 1 && (Int(cols[1]) ?? Int.max) <= resumedEpoch
                       })
        try writeArgs()
        warnBeforeStart(batches: nb)
    }

    static let resultsHeader = ["epoch", "time", "train/box_loss", "train/cls_loss", "train/dfl_loss", "metrics/precision(B)",
                                "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)", "val/box_loss", "val/cls_loss",
                                "val/dfl_loss", "lr/pg0", "lr/pg1", "lr/pg2", "metrics/F1(B)", "train/grad_norm", "train/grad_norm_max",
                                "train/clip_frac", "train/grad_norm_rgb", "train/grad_norm_ir", "amp/scale", "amp/skipped", "time/data_wait"]

    func writeArgs() throws {
        var text = "# train_dual run arguments (hyper-parameters resolved: file, then flags)\n"
        text += "data: \(options.data)\ncfg: \(options.cfg)\nweights: \(options.weights ?? "null")\nproject: \(options.project)\n"
        text += "name: \(URL(fileURLWithPath: paths.root).lastPathComponent)\nir_channels: \(model.streams.first { $0.name == "ir" }?.channels ?? 0)\n"
        text += "threads: \(Parallel.threads)\naccumulate_resolved: \(targetAccumulate)\noptimizer_resolved: \(optimizer.kind.rawValue)\n"
        text += "lr0_resolved: \(lr0)\n"
        text += hyp.yaml()
        try text.write(toFile: paths.args, atomically: true, encoding: .utf8)
    }

    func warnBeforeStart(batches nb: Int) {
        if hyp.batch <= 4 {
            log("WARNING: batch \(hyp.batch) <= 4: BatchNorm statistics from so few images are noisy; use a larger batch if memory allows")
        }
        if targetAccumulate > nb {
            let stepsPerEpoch = Double(nb) / Double(targetAccumulate)
            log("WARNING: accumulate \(targetAccumulate) (nbs \(hyp.nbs) / batch \(hyp.batch)) is larger than the \(nb) batches of an epoch: " +
                String(format: "only about %.0f optimizer steps in %d epochs. ", stepsPerEpoch * Double(hyp.epochs), hyp.epochs) +
                "Pass --accumulate 1 (or a smaller --nbs), e.g. --hyp configs/hyp/quick.yaml for small data sets")
        }
        if let need = estimatePeakBytes(), let have = PairedDataset.availableMemoryBytes(), need > have {
            log(String(format: "WARNING: estimated peak memory %.1f GB exceeds the %.1f GB available; the kernel's OOM killer stops a process without a message. Lower --batch or --imgsz, or pass --amp (halves activation memory)",
                       Double(need) / 1e9, Double(have) / 1e9))
        }
    }

    /// Peak memory of one training step, from a measured batch-1 forward/backward at imgsz.
    /// Runs on the evaluation copy (overwritten by the EMA before it is used), so the training
    /// model's statistics and pending gradients are untouched.
    func estimatePeakBytes() -> Int? {
        let before = MemoryStats.allocatedBytes
        MemoryStats.resetPeak()
        var inputs: [String: Tensor] = [:]
        for s in evalModel.streams { inputs[s.name] = Tensor(zeros: [1, s.channels, hyp.imgsz, hyp.imgsz]) }
        evalModel.training = true
        let outs = Autocast.withHalfActivations(hyp.amp) { evalModel(inputs) }
        var total = outs[0].boxes.mean() + outs[0].scores.mean()
        for o in outs.dropFirst() { total = total + o.boxes.mean() + o.scores.mean() }
        total.backward()
        evalModel.training = false
        for t in evalModel.namedTensors() { t.tensor.zeroGrad() }
        let perImage = MemoryStats.peakBytes - before
        let fixed = table.elementCount * 4 * 5 + MemoryStats.residentBytes()
        return perImage * hyp.batch + fixed
    }

    // MARK: - The loop

    public func run() throws -> TrainSummary {
        let t0 = Date()
        let nb = trainLoader.batchesPerEpoch
        let nw = Schedule.warmupIterations(warmupEpochs: hyp.warmup_epochs, batchesPerEpoch: nb, minimum: hyp.warmup_iters_min)
        if !FileManager.default.fileExists(atPath: paths.lastState) { try saveCheckpoint(fitness: nil, isBest: false) }
        var completedHere = 0
        var epoch = state.epoch
        while epoch < hyp.epochs {
            let summary = try trainEpoch(epoch, batches: nb, warmup: nw)
            if summary.rolledBack { epoch = state.epoch; continue }
            try finishEpoch(epoch, summary: summary)
            epoch += 1
            completedHere += 1
            if hyp.patience > 0 && state.epochsWithoutImprovement >= hyp.patience {
                log("early stop: no improvement in fitness for \(hyp.patience) epochs (best \(String(format: "%.4f", state.bestFitness)) at epoch \(state.bestEpoch + 1))")
                break
            }
            if let stop = options.stopAfterEpochs, completedHere >= stop { break }
        }
        if state.clippedSteps == 0 && hyp.max_norm > 0 && state.optimizerSteps > 0 {
            log("note: no step was clipped in this run: max_norm \(hyp.max_norm) is inactive (see --grad-probe for the norms your data gives)")
        }
        log("results: \(paths.root) (weights/best.safetensors, weights/last.safetensors, results.csv, steps.csv)")
        return TrainSummary(runDirectory: paths.root, epochs: state.epoch, best: (state.bestEpoch, state.bestFitness), final: lastReport,
                            lossHistory: lossHistory, seconds: Date().timeIntervalSince(t0), recoveries: state.recoveries, lrScale: state.lrScale)
    }

    struct EpochSummary {
        var losses = (box: 0.0, cls: 0.0, dfl: 0.0)
        var batches = 0
        var norms: [Double] = []
        var rgbNorms: [Double] = []
        var irNorms: [Double] = []
        /// Norms of the fused rest (fusion, neck, head).
        var restNorms: [Double] = []
        var clipped = 0
        var skipped = 0
        var overflows = 0
        var seconds = 0.0
        var waitFraction = 0.0
        var rolledBack = false
        var lr: [Double] = [0, 0, 0]
    }

    func trainEpoch(_ epoch: Int, batches nb: Int, warmup nw: Int) throws -> EpochSummary {
        var s = EpochSummary()
        let t0 = Date()
        trainLoader.mosaicEnabled = epoch < hyp.epochs - hyp.close_mosaic
        if epoch == hyp.epochs - hyp.close_mosaic && hyp.close_mosaic > 0 && options.verbose { log("closing mosaic for the last \(hyp.close_mosaic) epochs") }
        let factor = Schedule.factor(epoch: epoch, epochs: hyp.epochs, lrf: hyp.lrf, cosine: hyp.cos_lr)
        trainLoader.resetWaitSeconds()
        let it = trainLoader.epoch(epoch)
        defer { it.cancel() }
        model.training = true
        var pendingLoss = 0.0, pendingBatches = 0, pendingFiles: [String] = []
        var i = 0
        while let batch = try it.next() {
            let ni = i + nb * epoch
            let accumulate = Schedule.warmupAccumulate(iteration: ni, warmup: nw, target: targetAccumulate)
            let base = optimizer.groups.map { var g = $0; g.initialLR = lr0 * state.lrScale; return g }
            let sched = Schedule.groups(base, iteration: ni, warmup: nw, factor: factor, warmupBiasLR: hyp.warmup_bias_lr * state.lrScale,
                                        warmupMomentum: hyp.warmup_momentum, momentum: hyp.momentum)
            for g in 0..<3 { optimizer.groups[g].lr = sched[g].lr; optimizer.groups[g].momentum = sched[g].momentum }
            s.lr = sched.map(\.lr)

            let targets = BatchTargets(batchIndex: batch.batchIndex, classes: batch.classes, boxes: batch.boxes)
            let scale = hyp.amp ? state.scaler.scale : 1
            var finiteLoss = true
            var items = (box: 0.0, cls: 0.0, dfl: 0.0)
            // Float16 emulation covers the model's activations; the loss and its reductions stay Float32.
            let outs = Autocast.withHalfActivations(hyp.amp) { model(PairInputs.inputs(batch, model: model)) }
            if !reportedActivations {
                reportedActivations = true
                lastSavedActivationBytes = SavedActivations.bytes
                if options.verbose {
                    log(String(format: "activations saved for backward: %.1f MB for a batch of %d (", Double(SavedActivations.bytes) / 1e6, batch.count) +
                        (hyp.amp ? "Float16, --amp)" : "Float32; --amp halves it)"))
                }
            }
            var total: Tensor? = nil
            for o in outs {
                let l = loss(o, targets)
                items.box += Double(l.box); items.cls += Double(l.cls); items.dfl += Double(l.dfl)
                total = total.map { $0 + l.total } ?? l.total
            }
            var t = total!
            if options.injectNaNAt.contains(ni) && !firedNaN.contains(ni) {
                firedNaN.insert(ni)
                t = t * Float.nan
            }
            finiteLoss = t.item.isFinite
            if finiteLoss { t.backward(seed: Float(scale)) }
            pendingFiles += batch.files
            if !finiteLoss {
                logStep(state.optimizerSteps, epoch, ni, .nan, .nan, clipped: false, skipped: true)
                try countSkip(epoch: epoch, iteration: ni, reason: "non-finite loss", files: pendingFiles, summary: &s)
                pendingLoss = 0; pendingBatches = 0; pendingFiles = []
                table.zeroGrad()
                state.lastOptimizerIteration = ni
                if s.rolledBack { return s }
                i += 1
                continue
            }
            let lsum = items.box + items.cls + items.dfl
            s.losses.box += items.box; s.losses.cls += items.cls; s.losses.dfl += items.dfl
            s.batches += 1
            pendingLoss += lsum; pendingBatches += 1
            lossHistory.append(lsum)
            if ni - state.lastOptimizerIteration >= accumulate {
                try optimizerStep(epoch: epoch, iteration: ni, loss: pendingLoss / Double(pendingBatches), files: pendingFiles, summary: &s)
                state.lastOptimizerIteration = ni
                pendingLoss = 0; pendingBatches = 0; pendingFiles = []
                if s.rolledBack { return s }
            }
            i += 1
            let elapsed = Date().timeIntervalSince(t0)
            let imgs = Double(i * hyp.batch) / max(elapsed, 1e-9)
            let eta = elapsed / Double(i) * Double(nb - i)
            let n = Double(max(s.batches, 1))
            let scaleText = hyp.amp ? "\(Int(state.scaler.scale))" : "-"
            progress.update("epoch \(epoch + 1)/\(hyp.epochs) \(i)/\(nb)  " +
                            String(format: "box %.3f cls %.3f dfl %.3f  gnorm %.2f  ", s.losses.box / n, s.losses.cls / n, s.losses.dfl / n, s.norms.last ?? 0) +
                            "scale \(scaleText)  " + String(format: "lr %.2e  %.1f img/s  ", s.lr[1], imgs) + "ETA \(Progress.duration(eta))",
                            index: i, total: nb)
        }
        progress.finish()
        s.seconds = Date().timeIntervalSince(t0)
        s.waitFraction = trainLoader.waitSeconds / max(s.seconds, 1e-9)
        return s
    }

    /// One optimizer step (see `OptimizerStep`) plus its bookkeeping: per-stream norms, the
    /// grad probe, counted skips, steps.csv.
    func optimizerStep(epoch: Int, iteration ni: Int, loss: Double, files: [String], summary s: inout EpochSummary) throws {
        let stepIndex = state.optimizerSteps
        // Per-stream norms of the unscaled gradient, before clipping (read before the step zeroes them).
        let unscale = hyp.amp ? 1 / state.scaler.scale : 1
        let rgb = table.gradNorm { $0.stream == "rgb" } * unscale, ir = table.gradNorm { $0.stream == "ir" } * unscale
        let rest = table.gradNorm { $0.stream != "rgb" && $0.stream != "ir" } * unscale
        let probing = state.probeNorms.count < hyp.grad_probe
        let outcome = OptimizerStep.run(table: table, optimizer: optimizer, ema: ema, scaler: &state.scaler, amp: hyp.amp,
                                        maxNorm: probing ? nil : hyp.max_norm)
        switch outcome {
        case let .stepped(norm, clipped):
            consecutiveSkips = 0
            s.norms.append(norm); s.rgbNorms.append(rgb); s.irNorms.append(ir); s.restNorms.append(rest)
            if probing {
                state.probeNorms.append(norm)
                if state.probeNorms.count == hyp.grad_probe { reportProbe() }
            }
            if clipped { s.clipped += 1; state.clippedSteps += 1 }
            state.optimizerSteps += 1
            state.emaUpdates = ema.updates
            logStep(stepIndex, epoch, ni, loss, norm, clipped: clipped, skipped: false)
        case let .overflow(event):
            s.overflows += 1
            logStep(stepIndex, epoch, ni, loss, .nan, clipped: false, skipped: true)
            if event == .atFloor && state.scaler.overflowsAtFloor > 1 {
                log("WARNING: loss scale stuck at its floor \(state.scaler.minimum) and gradients still overflow")
                try countSkip(epoch: epoch, iteration: ni, reason: "overflow at the loss-scale floor", files: files, summary: &s)
            } else if event == .atFloor {
                log("WARNING: loss scale fell to its floor \(state.scaler.minimum) (loss_scale.min); further overflows count as failed steps")
            }
        case .nonFinite:
            logStep(stepIndex, epoch, ni, loss, .nan, clipped: false, skipped: true)
            try countSkip(epoch: epoch, iteration: ni, reason: "non-finite gradient", files: files, summary: &s)
        }
    }

    func logStep(_ step: Int, _ epoch: Int, _ ni: Int, _ loss: Double, _ norm: Double, clipped: Bool, skipped: Bool) {
        let g = optimizer.groups
        steps.append([String(step), String(epoch + 1), String(ni), CSVLog.f(g[0].lr), CSVLog.f(g[1].lr), CSVLog.f(g[2].lr),
                      CSVLog.f(loss), CSVLog.f(norm), clipped ? "1" : "0", CSVLog.f(hyp.amp ? state.scaler.scale : 1), skipped ? "1" : "0"])
    }

    func reportProbe() {
        guard let p = GradProbe.summarize(state.probeNorms) else { return }
        log(String(format: "grad probe over %d unclipped steps: mean %.3g, p95 %.3g, max %.3g -> suggested --max-norm %.3g (now %.3g). Units: L2 norm of the gradient of the loss as Ultralytics scales it (gained terms x batch), summed over accumulated batches.",
                   state.probeNorms.count, p.mean, p.p95, p.max, p.suggested, hyp.max_norm))
        state.probeReported = true
    }

    /// Counts a real non-finite step; after `nan_recovery` in a row, rolls back.
    func countSkip(epoch: Int, iteration ni: Int, reason: String, files: [String], summary s: inout EpochSummary) throws {
        consecutiveSkips += 1
        state.skippedSteps += 1
        s.skipped += 1
        let shown = files.prefix(8).map { URL(fileURLWithPath: $0).lastPathComponent }.joined(separator: ", ")
        log("WARNING: skipped step at epoch \(epoch + 1) iteration \(ni): \(reason) (batch: \(shown)\(files.count > 8 ? ", …" : "")); \(consecutiveSkips)/\(hyp.nan_recovery) in a row")
        guard consecutiveSkips >= hyp.nan_recovery else { return }
        try rollback(epoch: epoch)
        s.rolledBack = true
    }

    /// Reloads the last good checkpoint and halves the learning rate (at most 3 times).
    func rollback(epoch: Int) throws {
        let recoveries = state.recoveries + 1
        if recoveries > 3 {
            throw TrainingError.diverged("training diverged: \(hyp.nan_recovery) non-finite steps in a row at epoch \(epoch + 1) after 3 rollbacks " +
                                         "(learning-rate scale \(state.lrScale)). Lower lr0 (now \(lr0)), set --max-norm (now \(hyp.max_norm)), " +
                                         "or check the data with check_data. Last good weights: \(paths.last)")
        }
        let scale = state.lrScale / 2
        try loadState(paths.lastState)
        state.recoveries = recoveries
        state.lrScale = scale
        consecutiveSkips = 0
        table.zeroGrad()
        log("rollback \(recoveries)/3: reloaded \(paths.lastState) (after epoch \(state.epoch)); learning rate scale now \(scale)")
        try saveState(paths.lastState)
    }

    func finishEpoch(_ epoch: Int, summary s: EpochSummary) throws {
        state.epoch = epoch + 1
        let isFinal = state.epoch == hyp.epochs
        var report: ValidationReport? = nil
        if let valLoader, hyp.val || isFinal {
            ema.copy(into: evalModel.namedTensors())
            let v = Validator(nms: NMSOptions(confidence: Float(hyp.conf), iou: Float(hyp.iou), multiLabel: true, maxDetections: hyp.max_det))
            report = try v.run(model: evalModel, loader: valLoader, loss: loss, names: names)
            lastReport = report
        }
        let n = Double(max(s.batches, 1))
        let fitness = report?.metrics.fitness ?? -(s.losses.box + s.losses.cls + s.losses.dfl) / n
        let improved = fitness > state.bestFitness
        if improved { state.bestFitness = fitness; state.bestEpoch = epoch; state.epochsWithoutImprovement = 0 }
        else { state.epochsWithoutImprovement += 1 }
        let m = report?.metrics
        func mean(_ v: [Double]) -> Double { v.isEmpty ? 0 : v.reduce(0, +) / Double(v.count) }
        let row: [String] = [String(epoch + 1), CSVLog.f(s.seconds), CSVLog.f(s.losses.box / n), CSVLog.f(s.losses.cls / n), CSVLog.f(s.losses.dfl / n),
                             CSVLog.f(m?.meanPrecision ?? 0), CSVLog.f(m?.meanRecall ?? 0), CSVLog.f(m?.map50 ?? 0), CSVLog.f(m?.map ?? 0),
                             CSVLog.f(report?.losses.box ?? 0), CSVLog.f(report?.losses.cls ?? 0), CSVLog.f(report?.losses.dfl ?? 0),
                             CSVLog.f(s.lr[0]), CSVLog.f(s.lr[1]), CSVLog.f(s.lr[2]), CSVLog.f(m?.meanF1 ?? 0),
                             CSVLog.f(mean(s.norms)), CSVLog.f(s.norms.max() ?? 0), CSVLog.f(s.norms.isEmpty ? 0 : Double(s.clipped) / Double(s.norms.count)),
                             CSVLog.f(mean(s.rgbNorms)), CSVLog.f(mean(s.irNorms)), CSVLog.f(hyp.amp ? state.scaler.scale : 1),
                             String(s.overflows + s.skipped), CSVLog.f(s.waitFraction, 3)]
        results.append(row)
        if hyp.plots { try? ResultsPlot.write(csv: paths.results, png: paths.root + "/results.png") }
        try saveCheckpoint(fitness: fitness, isBest: improved)
        if hyp.save_period > 0 && state.epoch % hyp.save_period == 0 {
            try? FileManager.default.removeItem(atPath: paths.weights + "/epoch\(state.epoch).safetensors")
            try? FileManager.default.copyItem(atPath: paths.last, toPath: paths.weights + "/epoch\(state.epoch).safetensors")
        }
        guard options.verbose else { return }
        var line = String(format: "epoch %d/%d: %.1fs, loss box %.3f cls %.3f dfl %.3f; grad norm mean %.3g max %.3g (rgb %.3g, ir %.3g, rest %.3g), %d/%d clipped",
                          epoch + 1, hyp.epochs, s.seconds, s.losses.box / n, s.losses.cls / n, s.losses.dfl / n, mean(s.norms), s.norms.max() ?? 0,
                          mean(s.rgbNorms), mean(s.irNorms), mean(s.restNorms), s.clipped, s.norms.count)
        line += String(format: "; data wait %.1f%%", 100 * s.waitFraction)
        if hyp.amp { line += "; loss scale \(Int(state.scaler.scale)), \(s.overflows) overflow skips" }
        if s.skipped > 0 { line += "; \(s.skipped) non-finite steps skipped" }
        log(line)
        if let report {
            log(report.table())
            log(String(format: "fitness %.4f", fitness) + (improved ? " (best)" : ""))
        }
        if !s.norms.isEmpty && Double(s.clipped) / Double(s.norms.count) > 0.3 {
            log("hint: \(Int(100 * Double(s.clipped) / Double(s.norms.count)))% of steps were clipped at max_norm \(hyp.max_norm): consider raising it 2-5x (--max-norm), or run --grad-probe 100 to measure")
        }
        if let r = s.rgbNorms.last, let ir = s.irNorms.last, model.isDual, r > 0, ir > 0, max(r / ir, ir / r) > 10 {
            log("note: one stream dominates the gradients (rgb \(String(format: "%.3g", mean(s.rgbNorms))) vs ir \(String(format: "%.3g", mean(s.irNorms))))")
        }
    }
}
