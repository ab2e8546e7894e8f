import DataPipeline
import Detection
import Foundation
import NN
import TensorCore

extension Trainer {
    /// The end of an epoch: validation (EMA weights), fitness and best, results.csv, plots,
    /// the checkpoint generation, the epoch's console lines.
    ///
    /// Fitness is 0.1 mAP50 + 0.9 mAP50-95, or with --no-val the negative mean training loss;
    /// the first epoch always counts as the best so far (best.safetensors exists after it).
    /// Under data parallelism rank 0 does all of it; the others receive its decisions afterwards
    /// (`shareEpochDecision`).
    func finishEpoch(_ epoch: Int, summary s: EpochSummary) throws {
        state.epoch = epoch + 1
        guard group.isRoot else { return }
        let isFinal = state.epoch == hyp.epochs
        var report: ValidationReport? = nil
        if let valLoader, hyp.val || isFinal {
            ema.copy(into: evalModel.namedTensors())
            let v = Validator(nms: NMSOptions(confidence: Float(hyp.conf), iou: Float(hyp.iou), multiLabel: true, maxDetections: hyp.max_det))
            report = try v.run(model: evalModel, loader: valLoader, loss: loss, names: names)
            lastReport = report
            BufferPool.trim()
        }
        let n = Double(max(s.batches, 1))
        let fitness = report?.metrics.fitness ?? -(s.losses.box + s.losses.cls + s.losses.dfl) / n
        let improved = state.bestEpoch < 0 || fitness > state.bestFitness
        if improved { state.bestFitness = fitness; state.bestEpoch = epoch; state.epochsWithoutImprovement = 0 }
        else { state.epochsWithoutImprovement += 1 }
        let m = report?.metrics
        func mean(_ v: [Double]) -> Double { v.isEmpty ? 0 : v.reduce(0, +) / Double(v.count) }
        let row: [String] = [String(epoch + 1), CSVLog.f(s.seconds), CSVLog.f(s.losses.box / n), CSVLog.f(s.losses.cls / n), CSVLog.f(s.losses.dfl / n),
                             CSVLog.f(m?.meanPrecision ?? 0), CSVLog.f(m?.meanRecall ?? 0), CSVLog.f(m?.map50 ?? 0), CSVLog.f(m?.map ?? 0),
                             CSVLog.f(report?.losses.box ?? 0), CSVLog.f(report?.losses.cls ?? 0), CSVLog.f(report?.losses.dfl ?? 0),
                             CSVLog.f(s.lr[0]), CSVLog.f(s.lr[1]), CSVLog.f(s.lr[2]), CSVLog.f(m?.meanF1 ?? 0),
                             CSVLog.f(mean(s.norms)), CSVLog.f(s.norms.max() ?? 0), CSVLog.f(s.norms.isEmpty ? 0 : Double(s.clipped) / Double(s.norms.count)),
                             CSVLog.f(mean(s.rgbNorms)), CSVLog.f(mean(s.irNorms)), CSVLog.f(hyp.usesLossScale ? state.scaler.scale : 1),
                             String(s.overflows + s.skipped), CSVLog.f(s.waitFraction, 3)]
        results.append(row)
        tensorboard?.scalars(zip(Trainer.resultsHeader, row).dropFirst().compactMap { k, v in Double(v).map { (k, $0) } }, step: epoch + 1)
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
        if hyp.usesLossScale { line += "; loss scale \(Int(state.scaler.scale)), \(s.overflows) overflow skips" }
        if s.skipped > 0 { line += "; \(s.skipped) non-finite steps skipped" }
        log(line)
        if let report {
            log(report.table())
            log(String(format: "fitness %.4f", fitness) + (improved ? " (best)" : ""))
        }
        if !clipHintShown && !s.norms.isEmpty && Double(s.clipped) / Double(s.norms.count) > 0.3 {
            clipHintShown = true
            log(String(format: "hint: %d%% of this epoch's steps were clipped at max_norm %.3g (pre-clip norms: mean %.3g, max %.3g): consider raising it 2-5x (--max-norm), or run --grad-probe 100 to measure",
                       Int(100 * Double(s.clipped) / Double(s.norms.count)), hyp.max_norm, mean(s.norms), s.norms.max() ?? 0))
        }
        if let r = s.rgbNorms.last, let ir = s.irNorms.last, model.isDual, r > 0, ir > 0, max(r / ir, ir / r) > 10 {
            log("note: one stream dominates the gradients (rgb \(String(format: "%.3g", mean(s.rgbNorms))) vs ir \(String(format: "%.3g", mean(s.irNorms))))")
        }
    }
}
