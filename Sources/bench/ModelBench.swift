import ArgumentParser
import Detection
import Foundation
import NN
import TensorCore

struct ModelBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model",
        abstract: "Print a model's summary (layers, parameters, GFLOPs at 640) and time its forward pass.")

    @Option(help: "Model YAML, e.g. configs/models/dual_yolov8n_mid.yaml.") var cfg: String
    @Option(help: "Number of classes.") var nc = 1
    @Option(help: "Image size for the timing (GFLOPs are also printed at 640, as Ultralytics does).") var imgsz = 320
    @Option(help: "IR channels (1 or 3).") var irChannels: Int?
    @Option(help: "Batch size of the training-mode forward timing.") var batch = 8
    @Option(help: "Timed runs per measurement (the median is printed).") var runs = 7
    @Flag(help: "Time inference alone (batch 1, with and without BN folded), not the training-mode passes.") var inferenceOnly = false
    @OptionGroup var context: ContextOptions

    func run() throws {
        try context.apply()
        let spec = try ModelSpec.load(cfg)
        var channels: [String: Int] = [:]
        if let irChannels, spec.streams.contains(where: { $0.name == "ir" }) { channels["ir"] = irChannels }
        let model = try ModelBuilder.build(spec, nc: nc, channels: channels)
        print(model.summary(imgsz: 640))
        print(String(format: "GFLOPs at %d px: %.2f", imgsz, model.gflops(imgsz: imgsz)))
        var rng = RandomState(seed: 1)
        func inputs(_ b: Int) -> [String: Tensor] {
            var d: [String: Tensor] = [:]
            for s in model.streams { d[s.name] = Tensor.uniform([b, s.channels, imgsz, imgsz], rng: &rng) }
            return d
        }
        if !inferenceOnly { try timeTraining(model, inputs(batch)) }
        let x1 = inputs(1)
        model.training = false
        let ctx = ComputeContext.current
        var fastest = 0.0
        let infer = ctx.withFrozenWeights { medianTime(runs: runs) { _ = noGrad { model(x1) } } }
        model.fuse()
        let fused = ctx.withFrozenWeights { medianTime(runs: runs, fastest: &fastest) { _ = noGrad { model(x1) } } }
        print(String(format: "inference, batch 1: %.1f ms; BN folded: %.1f ms (fastest %.1f)  (%d threads, median of %d)",
                     infer * 1e3, fused * 1e3, fastest * 1e3, Parallel.threads, runs))
    }

    func timeTraining(_ model: DetectionModel, _ x8: [String: Tensor]) throws {
        model.training = true
        let train = medianTime(runs: runs) { _ = noGrad { model(x8) } }
        let trainBwd = medianTime(runs: runs) {
            let outs = model(x8)
            var loss = outs[0].boxes.mean() + outs[0].scores.mean()
            for o in outs.dropFirst() { loss = loss + o.boxes.mean() + o.scores.mean() }
            loss.backward()
            for p in model.parameters { p.tensor.zeroGrad() }
        }
        print(String(format: "forward, training mode, batch %d: %.1f ms (%.1f img/s); with backward of a proxy loss: %.1f ms",
                     batch, train * 1e3, Double(batch) / train, trainBwd * 1e3))
    }
}
