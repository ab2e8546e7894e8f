import Foundation
import TensorCore

/// Errors that stop a training run; each says what to do.
public enum TrainingError: Error, CustomStringConvertible {
    case invalid(String)
    case diverged(String)
    case checkpoint(path: String, reason: String)
    /// SIGINT / SIGTERM: the run stopped between iterations; its last checkpoint is whole.
    case interrupted(signal: Int32, epoch: Int, iteration: Int, run: String)

    public var description: String {
        switch self {
        case let .invalid(m): return m
        case let .diverged(m): return m
        case let .checkpoint(path, reason): return "\(path): \(reason)"
        case let .interrupted(signal, epoch, iteration, run):
            let name = signal == SIGTERM ? "SIGTERM" : "SIGINT"
            return "interrupted (\(name)) at epoch \(epoch), iteration \(iteration); resume with `train_dual --resume \(run)`"
        }
    }
}

/// Everything `train_dual` is told besides the hyper-parameters.
public struct TrainOptions: Sendable {
    /// Dataset YAML.
    public var data: String
    /// Model YAML.
    public var cfg: String
    /// Initial weights (partial loading with a report).
    public var weights: String?
    public var project = "runs/train"
    public var name = "train"
    public var existOK = false
    /// A run to continue: its directory, its weights/last.safetensors, or "" for the most recent run of `project`.
    public var resume: String?
    /// IR channels overriding the data YAML (1 or 3).
    public var irChannels: Int?
    public var threads: Int?
    /// The convolutions' backend: nil picks oneDNN where libdnnl runs, else the packed GEMM.
    public var gemm: GemmBackend?
    public var allowResizeIR = false
    public var hyp = Hyperparameters()
    /// Hyper-parameter keys the user set (flags or --hyp file): auto honours an explicit lr0 or
    /// momentum; --resume names the ones it ignores.
    public var explicitHyp: Set<String> = []
    /// Other options the user gave on the command line (flag names without dashes), for --resume's notice.
    public var explicitOptions: Set<String> = []
    /// Start even when the memory estimate exceeds the available memory.
    public var force = false
    /// Accept --weights that fill less than half of the model.
    public var allowPartial = false
    /// Print progress (tests turn it off).
    public var verbose = true
    /// Test-only: stop after this many completed epochs of this invocation (a simulated kill).
    public var stopAfterEpochs: Int?
    /// Data-parallel runs: compare a hash of every rank's weights, buffers and EMA at each epoch end.
    public var checkReplicas = false
    /// Under mpirun: BatchNorm normalises with the statistics of the global batch (every rank's
    /// values together), as PyTorch's SyncBatchNorm; off: each rank's own batch (DDP's default).
    public var syncBN = false
    /// Debugging: after the first optimizer step, rank 0 writes the gradients it stepped with
    /// (summed over the ranks, before unscaling) and the parameters after the step to this
    /// safetensors file, and the run ends.
    public var debugStepDump: String?

    public init(data: String, cfg: String) {
        self.data = data
        self.cfg = cfg
    }
}

/// What a finished run reports.
public struct TrainSummary: Sendable {
    public var runDirectory: String
    public var epochs: Int
    public var best: (epoch: Int, fitness: Double)
    public var final: ValidationReport?
    public var lossHistory: [Double]
    public var seconds: Double
    public var recoveries: Int
    public var lrScale: Double
}
