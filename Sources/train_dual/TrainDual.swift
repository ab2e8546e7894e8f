import ArgumentParser
import DataParallel
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
                           the newest run under --project. The run's own arguments are used (the
                           others are named and ignored), except --epochs N, which extends a run to
                           N epochs, and --threads.
        Results go to PROJECT/NAME: args.yaml, results.csv, steps.csv, weights/{last,best}.safetensors
        (EMA weights, Ultralytics names) and weights/*.state.safetensors (resume state). The folder is
        locked while a run trains in it. Ctrl-C (or SIGTERM) stops after the current iteration and says
        how to resume; a second Ctrl-C stops at once. Exit status: 0 done, 1 error, 3 diverged,
        130 / 143 interrupted by SIGINT / SIGTERM.

        Data-parallel training: `mpirun -np N train_dual …` trains one model with N processes (one
        machine, or several with --hostfile). --batch is the global batch (split evenly over the
        ranks); rank 0 writes the run folder; --resume works with any number of ranks. Outside
        mpirun, MPI is never loaded.
        """)

    @Option(help: "Dataset YAML (path, train, val, names, ir_channels). Default: data/synth/data.yaml.") var data: String?
    @Option(help: "Model YAML. Default: configs/models/dual_yolov8n_mid.yaml.") var cfg: String?
    @Option(help: "Hyper-parameter YAML applied over the defaults.") var hyp: String?
    @Option(help: "Initial weights (.safetensors); loads what matches and reports the rest.") var weights: String?
    @Option(help: "Run name (NAME, NAME2, … unless --exist-ok). Default: train.") var name: String?
    @Option(help: "Folder of runs. Default: runs/train.") var project: String?
    @Flag(help: "Reuse PROJECT/NAME if it exists.") var existOk = false
    @Option(help: "IR channels (1 or 3); default: the data YAML's ir_channels.") var irChannels: Int?
    @Option(help: "Threads for compute (default: all cores; under mpirun, the cores shared by the ranks on the machine).") var threads: Int?
    @Option(help: "Convolutions: onednn (oneDNN's primitives; the default where libdnnl runs) or packed (the project's GEMM, the default elsewhere).")
    var gemm: String?
    @Flag(help: "Print the model summary and exit.") var summary = false
    @Flag(help: "Resize IR images whose size differs from their RGB partner (default: such pairs are errors).") var allowResizeIr = false
    @Flag(help: "Start even when the estimated memory exceeds what is available.") var force = false
    @Flag(help: "Accept --weights that fill less than half of the model.") var allowPartial = false
    @Flag(name: .customLong("sync-bn"), help: "Under mpirun: BatchNorm normalises with the global batch's statistics (all ranks' images together, as PyTorch's SyncBatchNorm) instead of each rank's own.") var syncBN = false
    @Flag(help: "Under mpirun: compare a hash of every rank's weights, buffers and EMA at each epoch end (stops on a difference).") var checkReplicas = false
    @Option(help: .hidden) var debugDumpStep: String?   // first step's gradients and parameters, then stop
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
        let group: ProcessGroup
        do { group = try ProcessGroup.fromEnvironment() } catch {
            FileHandle.standardError.write(("error: \(error)\n").data(using: .utf8)!)
            throw ExitCode(1)
        }
        do {
            try train(group)
            group.finalize()
        } catch {
            // An interruption reaches every rank at the same iteration (they agree on it): a clean
            // exit. Any other error may be this rank's alone: the whole job ends (MPI_Abort).
            if group.isDistributed {
                let code = (error as? ExitCode)?.rawValue ?? 1
                if code != 130 && code != 143 {
                    if !(error is ExitCode) {
                        FileHandle.standardError.write(("rank \(group.rank): error: \(TrainDual.fullMessage(for: error))\n").data(using: .utf8)!)
                    }
                    group.abort(code: code)
                }
                group.finalize()
            }
            throw error
        }
    }

    func train(_ group: ProcessGroup) throws {
        let rankPrefix = group.isDistributed ? "rank \(group.rank): " : ""
        var h = Hyperparameters()
        var given = Set<String>()
        do {
            if let hyp { given.formUnion(try h.apply(yamlFile: hyp)) }
            given.formUnion(try h.apply(flags: hypFlags))
        } catch let e as HypError {
            throw ValidationError(e.description)
        }
        if summary {
            let spec = try ModelSpec.load(cfg ?? "configs/models/dual_yolov8n_mid.yaml")
            var ch: [String: Int] = [:]
            if let irChannels, spec.streams.contains(where: { $0.name == "ir" }) { ch["ir"] = irChannels }
            let dataNC = (try? DatasetConfig.load(path: data ?? "data/synth/data.yaml"))?.names.count   // the data set's classes when it is there
            print(try ModelBuilder.build(spec, nc: dataNC, channels: ch).summary(imgsz: 640))
            return
        }
        var o = TrainOptions(data: data ?? "data/synth/data.yaml", cfg: cfg ?? "configs/models/dual_yolov8n_mid.yaml")
        o.weights = weights
        o.project = project ?? "runs/train"
        o.name = name ?? "train"
        o.existOK = existOk
        o.resume = TrainDual.resumeArgument
        o.irChannels = irChannels
        o.threads = threads
        do { o.gemm = try gemm.map { try GemmBackend(flag: $0) } } catch { throw ValidationError("\(error)") }
        o.allowResizeIR = allowResizeIr
        o.force = force
        o.allowPartial = allowPartial
        o.hyp = h
        o.explicitHyp = given
        o.checkReplicas = checkReplicas
        o.syncBN = syncBN
        o.debugStepDump = debugDumpStep
        let named: [(String, Bool)] = [("data", data != nil), ("cfg", cfg != nil), ("hyp", hyp != nil), ("weights", weights != nil),
                                       ("name", name != nil), ("project", project != nil), ("exist-ok", existOk),
                                       ("ir-channels", irChannels != nil), ("threads", threads != nil), ("gemm", gemm != nil), ("allow-resize-ir", allowResizeIr),
                                       ("force", force), ("allow-partial", allowPartial)]
        o.explicitOptions = Set(named.filter(\.1).map(\.0))
        let nanAt = try debugNanAt.map(TrainDual.parseIterations)
        do {
            let trainer = try Trainer(o, group: group) { print($0); fflush(nil) }
            if let nanAt {
                // Each listed iteration's loss becomes NaN once (a rollback re-runs iterations).
                let fired = FiredSet()
                trainer.lossHook = { ni, loss in
                    guard nanAt(ni), fired.insert(ni) else { return loss }
                    return loss * Float.nan
                }
            }
            let signals = SignalForwarder(trainer.stop)
            let s = try withExtendedLifetime(signals) { try trainer.run() }
            guard group.isRoot else { return }
            if let r = s.final {
                print(String(format: "final: mAP50 %.3f, mAP50-95 %.3f, P %.3f, R %.3f (EMA weights) in %.1f min",
                             r.metrics.map50, r.metrics.map, r.metrics.meanPrecision, r.metrics.meanRecall, s.seconds / 60))
            }
            print("results: \(s.runDirectory)")
        } catch let e as TrainingError {
            FileHandle.standardError.write(("\(rankPrefix)error: \(e)\n").data(using: .utf8)!)
            switch e {
            case .diverged: throw ExitCode(3)
            case let .interrupted(signal, _, _, _): throw ExitCode(128 + signal)
            default: throw ExitCode(1)
            }
        } catch {
            FileHandle.standardError.write(("\(rankPrefix)error: \(error)\n").data(using: .utf8)!)
            throw ExitCode(1)
        }
    }

    /// "5,6,7" or "5+" (5 and every later iteration).
    static func parseIterations(_ text: String) throws -> (Int) -> Bool {
        var set = Set<Int>(), from = Int.max
        for part in text.split(separator: ",") {
            if part.hasSuffix("+"), let k = Int(part.dropLast()) { from = min(from, k) }
            else if let k = Int(part) { set.insert(k) }
            else { throw ValidationError("--debug-nan-at: '\(part)' is not an iteration (N or N+)") }
        }
        return { set.contains($0) || $0 >= from }
    }
}

/// Iterations whose NaN already fired.
final class FiredSet: @unchecked Sendable {
    private var set = Set<Int>()
    func insert(_ i: Int) -> Bool { set.insert(i).inserted }
}

/// SIGINT / SIGTERM ask the trainer to stop after the current iteration (it then says how to
/// resume); a second signal ends the process at once.
final class SignalForwarder: @unchecked Sendable {
    private var sources: [DispatchSourceSignal] = []

    init(_ stop: StopRequest) {
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                if stop.requested != nil {
                    signal(sig, SIG_DFL)
                    raise(sig)
                }
                stop.request(sig)
                FileHandle.standardError.write("\nstopping after this iteration (send the signal again to stop at once)\n".data(using: .utf8)!)
            }
            source.resume()
            sources.append(source)
        }
    }
}
