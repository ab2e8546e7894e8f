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

    public init() {}
}

/// The paths of a run directory.
public struct RunPaths: Sendable {
    public let root: String
    public var weights: String { root + "/weights" }
    public var last: String { weights + "/last.safetensors" }
    public var lastState: String { weights + "/last.state.safetensors" }
    public var best: String { weights + "/best.safetensors" }
    public var bestState: String { weights + "/best.state.safetensors" }
    public var results: String { root + "/results.csv" }
    public var steps: String { root + "/steps.csv" }
    public var args: String { root + "/args.yaml" }

    public init(root: String) { self.root = root }

    /// `project/name`, or `name2`, `name3`, … when it exists (unless existOK).
    public static func create(project: String, name: String, existOK: Bool) throws -> RunPaths {
        let fm = FileManager.default
        var path = project + "/" + name
        if !existOK {
            var k = 2
            while fm.fileExists(atPath: path) { path = project + "/" + name + "\(k)"; k += 1 }
        }
        do { try fm.createDirectory(atPath: path + "/weights", withIntermediateDirectories: true) } catch {
            throw TrainingError.invalid("cannot create run directory \(path): \(error.localizedDescription)")
        }
        return RunPaths(root: path)
    }

    /// The run to resume: a run directory, a weights file inside one, or "" for the newest
    /// `*/weights/last.state.safetensors` under `project`.
    public static func resolveResume(_ arg: String, project: String) throws -> RunPaths {
        let fm = FileManager.default
        if arg.isEmpty {
            let runs = (try? fm.contentsOfDirectory(atPath: project)) ?? []
            let candidates = runs.map { project + "/" + $0 }.filter { fm.fileExists(atPath: RunPaths(root: $0).lastState) }
            let newest = candidates.max { a, b in
                func date(_ r: String) -> Date {
                    ((try? fm.attributesOfItem(atPath: RunPaths(root: r).lastState))?[.modificationDate] as? Date) ?? .distantPast
                }
                return date(a) < date(b)
            }
            guard let newest else { throw TrainingError.invalid("--resume: no run with weights/last.state.safetensors under \(project)") }
            return RunPaths(root: newest)
        }
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: arg, isDirectory: &isDir) else { throw TrainingError.invalid("--resume \(arg): no such file or directory") }
        let root = isDir.boolValue ? arg : URL(fileURLWithPath: arg).deletingLastPathComponent().deletingLastPathComponent().path
        let p = RunPaths(root: root)
        guard fm.fileExists(atPath: p.lastState) else {
            throw TrainingError.invalid("--resume \(arg): \(p.lastState) is missing (the run saved no resumable state)")
        }
        return p
    }
}
