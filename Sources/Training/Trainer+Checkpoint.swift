import DataPipeline
import Detection
import Foundation
import NN
import TensorCore

/// The run options a state file keeps (paths absolute), so `--resume` needs nothing else and
/// works from any folder.
struct SavedOptions: Codable {
    var data: String
    var cfg: String
    var weights: String?
    var project: String
    var name: String
    var irChannels: Int?
    var allowResizeIR: Bool

    init(_ o: TrainOptions) {
        (data, cfg, weights, project, name, irChannels, allowResizeIR) =
            (RunPaths.absolute(o.data), RunPaths.absolute(o.cfg), o.weights.map(RunPaths.absolute), RunPaths.absolute(o.project),
             o.name, o.irChannels, o.allowResizeIR)
    }

    /// `o` with the run's own options; a relative path stored by an older version is taken
    /// relative to the run's project folder's parent when it is not found as it is.
    func apply(to o: TrainOptions, runRoot: String) -> TrainOptions {
        var r = o
        (r.data, r.cfg, r.weights, r.project, r.name, r.irChannels, r.allowResizeIR) = (data, cfg, weights, project, name, irChannels, allowResizeIR)
        r.project = URL(fileURLWithPath: runRoot).deletingLastPathComponent().path
        r.name = URL(fileURLWithPath: runRoot).lastPathComponent
        return r
    }
}

extension Trainer {
    /// Metadata of a weights file: what predict and val_dual need to rebuild the model.
    func weightsMetadata(fitness: Double?) -> [String: String] {
        var m: [String: String] = [
            "format": "dualfuse-weights-v1",
            "yaml": model.spec.text,
            "yaml_file": model.spec.file,
            "nc": String(names.count),
            "names": (try? String(data: JSONEncoder().encode(names), encoding: .utf8) ?? "[]") ?? "[]",
            "streams": model.streams.map { "\($0.name):\($0.channels)" }.joined(separator: ","),
            "imgsz": String(hyp.imgsz),
            "epoch": String(state.epoch),
            "date": ISO8601DateFormatter().string(from: Date()),
            "weights": "EMA",
        ]
        if let fitness { m["fitness"] = String(fitness) }
        return m
    }

    /// Writes last (and best) weights — the EMA model under Ultralytics names — and the state
    /// files beside them as one checkpoint generation (`Checkpoints`): all or nothing.
    func saveCheckpoint(fitness: Double?, isBest: Bool) throws {
        try commitCheckpoint(fitness: fitness, isBest: isBest, stateOnly: false)
    }

    /// The generation of the current epoch: last weights and state (with `stateOnly` just the
    /// state, as a rollback re-saves it), best weights and state when `isBest`.
    func commitCheckpoint(fitness: Double?, isBest: Bool, stateOnly: Bool) throws {
        guard group.isRoot else { return }
        var files: [(path: String, data: Data)] = []
        let state = try stateData()
        if !stateOnly {
            ema.copy(into: evalModel.namedTensors())
            let weights = StateDict.encode(evalModel.namedTensors(), metadata: weightsMetadata(fitness: fitness))
            files.append((paths.last, weights))
            if isBest { files += [(paths.best, weights), (paths.bestState, state)] }
        }
        files.append((paths.lastState, state))
        do {
            try Checkpoints.commit(paths, epoch: self.state.epoch, files: files)
        } catch {
            // Leave the previous generation whole: its results rows only.
            if let e = Checkpoints.committedEpoch(paths) { reconcileLogs(upTo: e) }
            _ = try? Checkpoints.recover(paths)
            throw error
        }
    }

    /// Drops results.csv and steps.csv rows of epochs after `epoch` (a checkpoint that did not commit).
    func reconcileLogs(upTo epoch: Int) {
        results.keep { row in (Int(row.split(separator: ",").first ?? "") ?? Int.max) <= epoch }
        steps.keep { row in
            let cols = row.split(separator: ",")
            return cols.count > 1 && (Int(cols[1]) ?? Int.max) <= epoch
        }
    }

    /// Raw weights and buffers, EMA averages, optimizer moments, pending gradients, and the
    /// JSON state (epoch, scaler, counters, recovery) with the hyper-parameters and run options.
    func stateData() throws -> Data {
        var named: [NamedTensor] = []
        for t in model.namedTensors() { named.append(NamedTensor("raw." + t.name, t.tensor, t.role)) }
        for p in ema.pairs { named.append(NamedTensor("ema." + p.name, p.ema, .buffer)) }
        for (i, p) in table.params.enumerated() {
            if let m = optimizer.m[i] { named.append(NamedTensor("opt.m." + p.name, Tensor(shape: p.tensor.shape, buffer: m), .buffer)) }
            if let v = optimizer.v[i] { named.append(NamedTensor("opt.v." + p.name, Tensor(shape: p.tensor.shape, buffer: v), .buffer)) }
            if let g = p.tensor.node?.grad { named.append(NamedTensor("grad." + p.name, Tensor(shape: p.tensor.shape, buffer: g), .buffer)) }
        }
        var st = state
        st.emaUpdates = ema.updates
        st.optimizerSteps = optimizer.steps
        st.parameterSteps = optimizer.parameterSteps
        let json = String(decoding: try JSONEncoder().encode(st), as: UTF8.self)
        let opts = String(decoding: try JSONEncoder().encode(SavedOptions(options)), as: UTF8.self)
        return StateDict.encode(named, metadata: ["format": "dualfuse-state-v1", "state": json, "hyp": hyp.yaml(), "options": opts])
    }

    /// Restores everything `saveState` wrote.
    func loadState(_ path: String) throws {
        let (t, meta) = try Safetensors.read(path)
        try loadState(tensors: t, metadata: meta, path: path)
    }

    /// Restores a state held in memory (rank 0's, broadcast).
    func loadState(data: Data, path: String) throws {
        let (t, meta) = try Safetensors.parse(data, path: path)
        try loadState(tensors: t, metadata: meta, path: path)
    }

    func loadState(tensors t: [String: StoredTensor], metadata meta: [String: String], path: String) throws {
        guard let js = meta["state"]?.data(using: .utf8), let st = try? JSONDecoder().decode(TrainState.self, from: js) else {
            throw TrainingError.checkpoint(path: path, reason: "no training state in the metadata (not a DualFuse *.state.safetensors?)")
        }
        for n in model.namedTensors() {
            guard let v = t["raw." + n.name] else { throw TrainingError.checkpoint(path: path, reason: "missing raw.\(n.name)") }
            guard v.shape == n.tensor.shape else {
                throw TrainingError.checkpoint(path: path, reason: "raw.\(n.name) has shape \(v.shape), the model \(n.tensor.shape): different model YAML or ir_channels?")
            }
            v.values.withUnsafeBufferPointer { n.tensor.data.update(from: $0.baseAddress!, count: v.values.count) }
        }
        for p in ema.pairs {
            guard let v = t["ema." + p.name] else { throw TrainingError.checkpoint(path: path, reason: "missing ema.\(p.name)") }
            v.values.withUnsafeBufferPointer { p.ema.data.update(from: $0.baseAddress!, count: v.values.count) }
        }
        ema.updates = st.emaUpdates
        for (i, p) in table.params.enumerated() {
            optimizer.m[i] = t["opt.m." + p.name].map { Buffer($0.values) }
            optimizer.v[i] = t["opt.v." + p.name].map { Buffer($0.values) }
            p.tensor.zeroGrad()
            if let g = t["grad." + p.name] {
                p.tensor.node?.grad = Buffer(g.values)
            }
        }
        optimizer.steps = st.optimizerSteps
        if st.parameterSteps.count == optimizer.parameterSteps.count { optimizer.parameterSteps = st.parameterSteps }
        else { optimizer.parameterSteps = [Int](repeating: st.optimizerSteps, count: optimizer.parameterSteps.count) }
        state = st
        if state.epochs == 0 { state.epochs = hyp.epochs }
        targetAccumulate = st.accumulate
        lr0 = st.lr0
    }
}
