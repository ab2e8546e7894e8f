import DataPipeline
import Detection
import Foundation
import NN
import TensorCore

extension Trainer {
    /// Trains until `epochs`, early stop, or a stop request; returns the summary.
    /// A SIGINT/SIGTERM (or `stop.request`) ends the run between iterations with
    /// `TrainingError.interrupted`; the last epoch's checkpoint is whole and `--resume` continues it.
    public func run() throws -> TrainSummary {
        let t0 = Date()
        let nb = trainLoader.batchesPerEpoch
        let nw = Schedule.warmupIterations(warmupEpochs: hyp.warmup_epochs, batchesPerEpoch: nb, minimum: hyp.warmup_iters_min)
        if group.isRoot && Checkpoints.generation(paths) == nil { try saveCheckpoint(fitness: nil, isBest: false) }
        var completedHere = 0
        var epoch = state.epoch
        while epoch < hyp.epochs {
            let summary = try trainEpoch(epoch, batches: nb, warmup: nw)
            if debugDumped { return runSummary(t0) }
            if summary.rolledBack { epoch = state.epoch; continue }
            try gatherPendingGradients()
            try finishEpoch(epoch, summary: summary)
            try shareEpochDecision()
            try checkReplicas(epoch: epoch)
            BufferPool.trim()
            epoch += 1
            completedHere += 1
            if hyp.patience > 0 && state.epochsWithoutImprovement >= hyp.patience {
                log("early stop: no improvement in fitness for \(hyp.patience) epochs (best \(String(format: "%.4f", state.bestFitness)) at epoch \(state.bestEpoch + 1))")
                break
            }
            if let stop = options.stopAfterEpochs, completedHere >= stop { break }
        }
        if hyp.plots, let valLoader { try finalValidation(valLoader) }
        if state.clippedSteps == 0 && hyp.max_norm > 0 && state.optimizerSteps > 0 {
            log("note: no step was clipped in this run: max_norm \(hyp.max_norm) is inactive (see --grad-probe for the norms your data gives)")
        }
        log("results: \(paths.root) (weights/best.safetensors, weights/last.safetensors, results.csv, steps.csv)")
        // The other ranks wait here while rank 0 finishes its outputs.
        try group.barrier(operation: "barrier at the end of training")
        return runSummary(t0)
    }

    func runSummary(_ t0: Date) -> TrainSummary {
        TrainSummary(runDirectory: paths.root, epochs: state.epoch, best: (state.bestEpoch, state.bestFitness), final: lastReport,
                     lossHistory: lossHistory, seconds: Date().timeIntervalSince(t0), recoveries: state.recoveries, lrScale: state.lrScale)
    }

    /// Ultralytics' final evaluation: the best weights validated once more, with the plots and
    /// tables `val_dual` writes, into the run folder.
    func finalValidation(_ loader: PairLoader) throws {
        guard FileManager.default.fileExists(atPath: paths.best) else { return }
        let (tensors, _) = try Safetensors.read(paths.best)
        try StateDict.load(tensors, into: evalModel.namedTensors(), strict: false)
        var v = Validator(nms: NMSOptions(confidence: Float(hyp.conf), iou: Float(hyp.iou), multiLabel: true, maxDetections: hyp.max_det))
        v.keepBatches = 3
        let report = try v.run(model: evalModel, loader: loader, loss: nil, names: names)
        let files = try ValidationPlots.write(report, to: paths.root)
        BufferPool.trim()
        if options.verbose { log("best weights (epoch \(state.bestEpoch + 1)) validated: \(files.joined(separator: ", "))") }
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

    /// Batches of one epoch: forward under autocast, loss (Float32), backward with the loss
    /// scale, an optimizer step every `accumulate` batches.
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
            if !group.isDistributed, let sig = stop.requested {
                throw TrainingError.interrupted(signal: sig, epoch: epoch + 1, iteration: ni, run: paths.root)
            }
            let accumulate = Schedule.warmupAccumulate(iteration: ni, warmup: nw, target: targetAccumulate)
            s.lr = applySchedule(iteration: ni, warmup: nw, factor: factor)

            if ni < 3 && hyp.plots && epoch == 0 && group.isRoot {
                // Ultralytics' train_batch0-2.jpg: the augmented pairs as the model sees them, boxes drawn.
                try? BatchPlot.write(batch, detections: nil, names: names, to: paths.root + "/train_batch\(ni).jpg")
            }
            let (items, finiteLoss) = try forwardBackward(batch, iteration: ni, epoch: epoch)
            pendingFiles += batch.files
            if finiteLoss {
                let lsum = items.box + items.cls + items.dfl
                s.losses.box += items.box; s.losses.cls += items.cls; s.losses.dfl += items.dfl
                s.batches += 1
                pendingLoss += lsum; pendingBatches += 1
                lossHistory.append(lsum)
            }
            // A non-finite loss ends the accumulation now: under loss scaling it is an overflow
            // (skip, back off), otherwise a counted non-finite step.
            if !finiteLoss || ni - state.lastOptimizerIteration >= accumulate {
                try optimizerStep(epoch: epoch, iteration: ni, loss: finiteLoss ? pendingLoss / Double(max(pendingBatches, 1)) : .nan,
                                  lossFinite: finiteLoss, files: pendingFiles, summary: &s)
                state.lastOptimizerIteration = ni
                pendingLoss = 0; pendingBatches = 0; pendingFiles = []
                if s.rolledBack || debugDumped { return s }
            }
            // Cached blocks this iteration did not take again go back to the system.
            BufferPool.collect()
            i += 1
            let elapsed = Date().timeIntervalSince(t0)
            let imgs = Double(i * hyp.batch) / max(elapsed, 1e-9)
            let eta = elapsed / Double(i) * Double(nb - i)
            let n = Double(max(s.batches, 1))
            let scaleText = hyp.usesLossScale ? "\(Int(state.scaler.scale))" : "-"
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

    /// Sets the three groups' learning rate and momentum for iteration `ni` (warmup, then the
    /// epoch's schedule factor); returns the learning rates.
    @discardableResult
    func applySchedule(iteration ni: Int, warmup nw: Int, factor: Double) -> [Double] {
        let base = optimizer.groups.map { var g = $0; g.initialLR = lr0 * state.lrScale; return g }
        let sched = Schedule.groups(base, iteration: ni, warmup: nw, factor: factor, warmupBiasLR: hyp.warmup_bias_lr * state.lrScale,
                                    warmupMomentum: hyp.warmup_momentum, momentum: hyp.momentum)
        for g in 0..<3 { optimizer.groups[g].lr = sched[g].lr; optimizer.groups[g].momentum = sched[g].momentum }
        return sched.map(\.lr)
    }

    /// Forward under autocast, the loss in Float32, and (when every rank's loss is finite) the
    /// backward pass with the loss scale, adding into the gradients. Under data parallelism the
    /// ranks agree here on the loss terms (their mean), its finiteness and a stop request, and
    /// take rank 0's BatchNorm statistics.
    func forwardBackward(_ batch: PairBatch, iteration ni: Int, epoch: Int) throws -> (items: (box: Double, cls: Double, dfl: Double), finite: Bool) {
        let targets = BatchTargets(batchIndex: batch.batchIndex, classes: batch.classes, boxes: batch.boxes)
        let scale = hyp.usesLossScale ? state.scaler.scale : 1
        var items = (box: 0.0, cls: 0.0, dfl: 0.0)
        // --sync-bn: every BatchNorm of this forward and backward sums its statistics over the ranks.
        let ctx = ComputeContext.current
        let synchronised = options.syncBN && group.isDistributed
        if synchronised {
            let group = self.group
            ctx.replicaSum = { values, count in
                do { try group.allReduceSum(values, count: count, operation: "synchronised BatchNorm statistics") } catch {
                    FileHandle.standardError.write(Data("rank \(group.rank): \(error)\n".utf8))
                    group.abort(code: 2)
                }
            }
        }
        defer { if synchronised { ctx.replicaSum = nil } }
        // Autocast covers the model's activations; the loss and its reductions stay Float32.
        let outs = Autocast.with(hyp.amp) { model(PairInputs.inputs(batch, model: model)) }
        if !reportedActivations {
            reportedActivations = true
            lastSavedActivationBytes = ComputeContext.current.saved.bytes
            if options.verbose {
                log(String(format: "activations saved for backward: %.1f MB for a batch of %d (", Double(lastSavedActivationBytes) / 1e6, batch.count) +
                    (hyp.amp != .fp32 ? "\(hyp.amp.rawValue), --amp)" : "Float32; --amp halves it)"))
            }
        }
        var total: Tensor? = nil
        for o in outs {
            let l = loss(o, targets)
            items.box += Double(l.box); items.cls += Double(l.cls); items.dfl += Double(l.dfl)
            total = total.map { $0 + l.total } ?? l.total
        }
        guard var t = total else { throw TrainingError.invalid("the model has no Detect head") }
        if let hook = lossHook { t = hook(ni, t) }
        let agreed = try agreeOnIteration(items: items, finite: t.item.isFinite)
        if let sig = agreed.stop {
            ComputeContext.current.saved.reset()
            throw TrainingError.interrupted(signal: sig, epoch: epoch + 1, iteration: ni, run: paths.root)
        }
        if agreed.finite { t.backward(seed: Float(scale)) } else { ComputeContext.current.saved.reset() }
        try broadcastBuffers()
        return (agreed.items, agreed.finite)
    }

    /// One optimizer step (see `OptimizerStep`) plus its bookkeeping: per-stream norms, the
    /// grad probe, counted skips, steps.csv.
    func optimizerStep(epoch: Int, iteration ni: Int, loss: Double, lossFinite: Bool, files: [String], summary s: inout EpochSummary) throws {
        let stepIndex = state.optimizerSteps
        // Data parallelism: the ranks' gradients summed before anything reads them (unscale, norms, clip).
        if lossFinite { try reduceGradients() }
        let dumpGradients = options.debugStepDump != nil && stepIndex == 0 ? snapshotGradients() : nil
        // Per-stream norms of the unscaled gradient, before clipping, from the step's own sums of squares.
        var rgb = 0.0, ir = 0.0, rest = 0.0
        let probing = state.probeNorms.count < hyp.grad_probe, params = table.params
        let outcome = OptimizerStep.run(table: table, optimizer: optimizer, ema: ema, scaler: &state.scaler, scaled: hyp.usesLossScale,
                                        maxNorm: probing ? nil : hyp.max_norm, lossFinite: lossFinite) { squares in
            for (p, s) in zip(params, squares) {
                switch p.stream {
                case "rgb": rgb += s
                case "ir": ir += s
                default: rest += s
                }
            }
            (rgb, ir, rest) = (rgb.squareRoot(), ir.squareRoot(), rest.squareRoot())
        }
        state.emaUpdates = ema.updates
        if let dumpGradients, let path = options.debugStepDump {
            try writeStepDump(gradients: dumpGradients, to: path)
            debugDumped = true
        }
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
            logStep(stepIndex, epoch, ni, loss, norm, clipped: clipped, skipped: false)
        case let .overflow(event):
            s.overflows += 1
            logStep(stepIndex, epoch, ni, loss, .nan, clipped: false, skipped: true)
            let what = lossFinite ? "gradients" : "the loss (a forward overflow)"
            if event == .atFloor && state.scaler.overflowsAtFloor > 1 {
                log("WARNING: loss scale stuck at its floor \(state.scaler.minimum) and \(what) still overflow")
                try countSkip(epoch: epoch, iteration: ni, reason: "overflow at the loss-scale floor", files: files, summary: &s)
            } else if event == .atFloor {
                log("WARNING: loss scale fell to its floor \(state.scaler.minimum) (loss_scale.min); further overflows count as failed steps")
            }
        case .nonFinite:
            logStep(stepIndex, epoch, ni, loss, .nan, clipped: false, skipped: true)
            try countSkip(epoch: epoch, iteration: ni, reason: lossFinite ? "non-finite gradient" : "non-finite loss", files: files, summary: &s)
        }
    }

    func logStep(_ step: Int, _ epoch: Int, _ ni: Int, _ loss: Double, _ norm: Double, clipped: Bool, skipped: Bool) {
        let g = optimizer.groups
        if !skipped {
            tensorboard?.scalars([("step/loss", loss), ("step/grad_norm", norm), ("step/lr_pg0", g[0].lr), ("step/lr_pg1", g[1].lr),
                                  ("step/lr_pg2", g[2].lr), ("step/loss_scale", hyp.usesLossScale ? state.scaler.scale : 1)], step: step)
        }
        steps.append([String(step), String(epoch + 1), String(ni), CSVLog.f(g[0].lr), CSVLog.f(g[1].lr), CSVLog.f(g[2].lr),
                      CSVLog.f(loss), CSVLog.f(norm), clipped ? "1" : "0", CSVLog.f(hyp.usesLossScale ? state.scaler.scale : 1), skipped ? "1" : "0"])
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
        if group.isRoot { try loadState(paths.lastState) }
        state.recoveries = recoveries
        state.lrScale = scale
        consecutiveSkips = 0
        table.zeroGrad()
        try syncReplicas("rollback")
        log("rollback \(recoveries)/3: reloaded \(paths.lastState) (after epoch \(state.epoch)); learning rate scale now \(scale)")
        try commitCheckpoint(fitness: nil, isBest: false, stateOnly: true)
    }
}
