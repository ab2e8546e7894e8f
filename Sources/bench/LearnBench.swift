import ArgumentParser
import DataPipeline
import Detection
import Foundation
import TensorCore
import Training

/// `bench learn`: the same fixed-recipe training repeated over seeds and precisions, to measure
/// run-to-run spread (the yardstick every accuracy comparison is judged against).
struct LearnBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "learn",
        abstract: "Train a fixed recipe once per seed and precision; print final val mAP50 per run, mean and spread.",
        discussion: """
        Without --data, trains on a generated synthetic set (256 train / 64 val pairs at 128 px, seed 0) with
        the model at a reduced width (--width 0.125), as the learning tests do. One line per run:
        `learn <precision> seed <s>: mAP50 <m> mAP50-95 <m> (best mAP50 <b> at epoch <e>) <t> s`, then
        per precision `mean`, `min`, `max`, `spread` (max - min).
        """)

    @Option(help: "Dataset YAML (default: a generated synthetic set under --workdir).") var data: String?
    @Option(help: "Model YAML.") var cfg = "configs/models/dual_yolov8n_mid.yaml"
    @Option(help: "Width multiple of the model (1 keeps the YAML's scale).") var width = 0.125
    @Option(help: "Hyper-parameter YAML applied first.") var hyp: String?
    @Option(help: "Epochs per run.") var epochs = 8
    @Option(help: "Batch size.") var batch = 16
    @Option(help: "Image size.") var imgsz = 128
    @Option(help: "Seeds, comma separated.") var seeds = "0,1,2"
    @Option(help: "Precisions, comma separated: fp32, fp16 (Float16 emulation), bf16.") var precisions = "fp32,fp16"
    @Option(help: "Scratch folder for data and runs.") var workdir = "runs/bench-learn"
    @OptionGroup var context: ContextOptions

    func run() throws {
        try context.apply()
        try FileManager.default.createDirectory(atPath: workdir, withIntermediateDirectories: true)
        let dataPath: String
        if let data { dataPath = data } else {
            let dir = workdir + "/synth"
            if !FileManager.default.fileExists(atPath: dir + "/data.yaml") {
                _ = try SyntheticScenes.writeDataset(to: dir, train: 256, val: 64, imageSize: 128, seed: 0)
            }
            dataPath = dir + "/data.yaml"
        }
        var modelPath = cfg
        if width != 1 {
            let text = try String(contentsOfFile: cfg, encoding: .utf8)
            let marker = "scales: # [depth_multiple, width_multiple, max_channels]\n"
            guard text.contains(marker) else { throw ValidationError("\(cfg): no `scales:` block to add a reduced width to") }
            modelPath = workdir + "/w\(width)_" + URL(fileURLWithPath: cfg).lastPathComponent
            try text.replacingOccurrences(of: marker, with: "scale: t\nscales:\n  t: [0.33, \(width), 1024]\n")
                .write(toFile: modelPath, atomically: true, encoding: .utf8)
        }
        let seedList = seeds.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        let precisionList = precisions.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        print("bench learn: \(modelPath) on \(dataPath), \(epochs) epochs, batch \(batch), \(imgsz) px, \(Parallel.threads) threads")
        for p in precisionList {
            guard let precision = Precision(rawValue: p) else { throw ValidationError("--precisions: unknown '\(p)' (fp32, fp16, bf16)") }
            var finals: [Double] = []
            for seed in seedList {
                var o = TrainOptions(data: dataPath, cfg: modelPath)
                o.gemm = ComputeContext.current.gemm
                var h = Hyperparameters()
                if let hyp { try h.apply(yamlFile: hyp) } else {
                    h.accumulate = 1; h.warmup_epochs = 1; h.warmup_iters_min = 20; h.close_mosaic = 2
                }
                h.epochs = epochs; h.batch = batch; h.imgsz = imgsz; h.seed = seed
                h.amp = precision
                h.plots = false
                o.hyp = h
                o.project = workdir + "/runs"
                o.name = "\(p)_seed\(seed)"
                o.existOK = true
                o.verbose = false
                try? FileManager.default.removeItem(atPath: o.project + "/" + o.name)
                let s = try Trainer(o, log: { _ in }).run()
                let m = s.final?.metrics
                finals.append(m?.map50 ?? 0)
                print(String(format: "learn %@ seed %d: mAP50 %.4f mAP50-95 %.4f (best fitness %.4f at epoch %d) %.0f s",
                             p, seed, m?.map50 ?? 0, m?.map ?? 0, s.best.fitness, s.best.epoch + 1, s.seconds))
                fflush(nil)
            }
            let mean = finals.reduce(0, +) / Double(max(finals.count, 1))
            print(String(format: "learn %@: mean %.4f min %.4f max %.4f spread %.4f over %d seeds",
                         p, mean, finals.min() ?? 0, finals.max() ?? 0, (finals.max() ?? 0) - (finals.min() ?? 0), finals.count))
        }
    }
}
