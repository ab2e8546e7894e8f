import ArgumentParser
import DataPipeline
import Detection
import Foundation
import TensorCore
import Training

/// `train_dual`: train a dual-stream (or single-stream) detector.
@main
struct TrainDual: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train_dual",
        abstract: "Train an RGB + IR detector on an LLVIP / YOLOFuse-style data set.",
        discussion: """
        Hyper-parameters come from configs/hyp/default.yaml's defaults, then --hyp FILE, then flags
        (flags win). Every hyper-parameter is a flag:

        \(Hyperparameters.flagHelp)

        --resume [PATH]    continue a run: its directory, its weights/last.safetensors, or nothing for
                           the newest run under --project. The run's own arguments are used.
        Results go to PROJECT/NAME: args.yaml, results.csv, steps.csv, weights/{last,best}.safetensors
        (EMA weights, Ultralytics names) and weights/*.state.safetensors (resume state).
        """)

    @Option(help: "Dataset YAML (path, train, val, names, ir_channels).") var data: String = "data/synth/data.yaml"
    @Option(help: "Model YAML.") var cfg: String = "configs/models/dual_yolov8n_mid.yaml"
    @Option(help: "Hyper-parameter YAML applied over the defaults.") var hyp: String?
    @Option(help: "Initial weights (.safetensors); loads what matches and reports the rest.") var weights: String?
    @Option(help: "Run name (NAME, NAME2, … unless --exist-ok).") var name = "train"
    @Option(help: "Folder of runs.") var project = "runs/train"
    @Flag(help: "Reuse PROJECT/NAME if it exists.") var existOk = false
    @Option(help: "IR channels (1 or 3); default: the data YAML's ir_channels.") var irChannels: Int?
    @Option(help: "Threads for compute (default: all cores).") var threads: Int?
    @Flag(help: "Print the model summary and exit.") var summary = false
    @Flag(help: "Resize IR images whose size differs from their RGB partner (default: such pairs are errors).") var allowResizeIr = false
    @Option(help: .hidden) var debugNanAt: String?      // test hook: "5,6,7" or "5+" (every iteration from 5)
    @Argument(parsing: .allUnrecognized, help: .hidden) var hypFlags: [String] = []

    /// Set by main() from `--resume [PATH]` before parsing (an option whose value is optional).
    nonisolated(unsafe) static var resumeArgument: String?

    static func main() {
        var args = Array(CommandLine.arguments.dropFirst())
        if let i = args.firstIndex(where: { $0 == "--resume" || $0.hasPrefix("--resume=") }) {
            if args[i].hasPrefix("--resume=") {
                resumeArgument = String(args[i].dropFirst("--resume=".count))
                args.remove(at: i)
            } else if i + 1 < args.count, !args[i + 1].hasPrefix("--") {
                resumeArgument = args[i + 1]
                args.removeSubrange(i...(i + 1))
            } else {
                resumeArgument = ""
                args.remove(at: i)
            }
        }
        do {
            var command = try parseAsRoot(args)
            try command.run()
        } catch {
            exit(withError: error)
        }
    }

    func run() throws {
        var h = Hyperparameters()
        do {
            if let hyp { try h.apply(yamlFile: hyp) }
            try h.apply(flags: hypFlags)
        } catch let e as HypError {
            throw ValidationError(e.description)
        }
        if summary {
            let spec = try ModelSpec.load(cfg)
            var ch: [String: Int] = [:]
            if let irChannels, spec.streams.contains(where: { $0.name == "ir" }) { ch["ir"] = irChannels }
            let dataNC = (try? DatasetConfig.load(path: data))?.names.count   // the data set's classes when it is there
            print(try ModelBuilder.build(spec, nc: dataNC, channels: ch).summary(imgsz: 640))
            return
        }
        var o = TrainOptions(data: data, cfg: cfg)
        o.weights = weights
        o.project = project
        o.name = name
        o.existOK = existOk
        o.resume = TrainDual.resumeArgument
        o.irChannels = irChannels
        o.threads = threads
        o.allowResizeIR = allowResizeIr
        o.hyp = h
        if let d = debugNanAt {
            for part in d.split(separator: ",") {
                if part.hasSuffix("+"), let k = Int(part.dropLast()) { o.injectNaNAt.formUnion(k..<(k + 10_000_000)) }
                else if let k = Int(part) { o.injectNaNAt.insert(k) }
            }
        }
        do {
            let trainer = try Trainer(o) { print($0); fflush(nil) }
            let s = try trainer.run()
            if let r = s.final {
                print(String(format: "final: mAP50 %.3f, mAP50-95 %.3f, P %.3f, R %.3f (EMA weights) in %.1f min",
                             r.metrics.map50, r.metrics.map, r.metrics.meanPrecision, r.metrics.meanRecall, s.seconds / 60))
            }
            print("results: \(s.runDirectory)")
        } catch let e as TrainingError {
            FileHandle.standardError.write(("error: \(e)\n").data(using: .utf8)!)
            if case .diverged = e { throw ExitCode(3) }
            throw ExitCode(1)
        } catch {
            FileHandle.standardError.write(("error: \(error)\n").data(using: .utf8)!)
            throw ExitCode(1)
        }
    }
}
