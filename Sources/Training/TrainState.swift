import Foundation

/// The resumable state beside the weights (`*.state.safetensors` metadata "state", JSON).
public struct TrainState: Codable, Equatable, Sendable {
    /// Epochs completed.
    public var epoch = 0
    public var bestFitness = -1.0
    public var bestEpoch = -1
    /// Epochs since the best fitness.
    public var epochsWithoutImprovement = 0
    public var emaUpdates = 0
    public var optimizerSteps = 0
    /// Global batch index of the last optimizer step (Ultralytics' last_opt_step).
    public var lastOptimizerIteration = -1
    public var scaler = LossScaler()
    /// Learning-rate multiplier after NaN rollbacks (halved each time).
    public var lrScale = 1.0
    public var recoveries = 0
    /// Total counted non-finite steps.
    public var skippedSteps = 0
    /// Optimizer steps taken unclipped for --grad-probe, and the norms seen.
    public var probeNorms: [Double] = []
    public var probeReported = false
    /// Clipped steps over the whole run (to say whether clipping was ever active).
    public var clippedSteps = 0
    public var accumulate = 1
    /// The optimizer actually used (auto resolves to SGD or AdamW).
    public var optimizer = "SGD"
    public var lr0 = 0.01
    public var momentum = 0.937
    /// AdamW: updates of each parameter (table order), as torch keeps a step per parameter.
    public var parameterSteps: [Int] = []
    /// The number of epochs this run was started or last extended with.
    public var epochs = 0
    /// Ranks of the data-parallel job that wrote this state (nil: written before ranks existed).
    public var worldSize: Int?

    public init() {}
}
