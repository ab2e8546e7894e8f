import DataParallel
import Foundation
import NN
import TensorCore

/// Data-parallel training over the ranks of an mpirun job (`ProcessGroup`), as Ultralytics' DDP:
///
/// - `--batch` is the global batch: each rank trains on batch / world images of its own shard of
///   every epoch (`LoaderOptions.rank`); accumulation and weight decay follow the global batch.
/// - Each rank's loss is Ultralytics' (gained terms x its batch), and gradients are summed over
///   the ranks (DDP averages, and Ultralytics multiplies the loss by the world size first: a sum).
///   The sum happens before unscaling and clipping, so the clip sees the global gradient.
/// - Every decision is collective: the loss's finiteness and a stop request are summed over the
///   ranks each iteration, so every rank skips, steps, rolls back and stops at the same place, and
///   the parameters stay bit-identical (`checkReplicas`).
/// - BatchNorm normalises with each rank's own batch; rank 0's running statistics are broadcast
///   after every forward pass (DDP's broadcast_buffers), so every rank also averages the same
///   buffers into its EMA.
/// - Rank 0 owns the run folder: validation, logs, plots and checkpoints.
extension Trainer {
    /// Rank 0's complete training state (weights, buffers, EMA, optimizer moments, counters) sent
    /// to every rank: at the start, after a resume and after a rollback. Pending gradients stay
    /// on rank 0 only, so the next sum counts them once.
    func syncReplicas(_ reason: String) throws {
        guard group.isDistributed else { return }
        var data = group.isRoot ? try stateData() : Data()
        try group.broadcast(&data, operation: "broadcast of rank 0's state (\(reason))")
        if !group.isRoot {
            try loadState(data: data, path: "rank 0's state")
            table.zeroGrad()
        }
    }

    /// The model's buffers (BatchNorm running statistics) from rank 0 to every rank.
    func broadcastBuffers() throws {
        guard group.isDistributed else { return }
        let buffers = model.namedTensors().filter { $0.role == .buffer }
        let total = buffers.reduce(0) { $0 + $1.tensor.count }
        if bufferScratch.count != total { bufferScratch = [Float](repeating: 0, count: total) }
        try bufferScratch.withUnsafeMutableBufferPointer { flat in
            var o = 0
            if group.isRoot { for b in buffers { (flat.baseAddress! + o).update(from: b.tensor.data, count: b.tensor.count); o += b.tensor.count } }
            try group.broadcast(flat.baseAddress!, count: total, operation: "broadcast of BatchNorm statistics")
            if !group.isRoot {
                o = 0
                for b in buffers { b.tensor.data.update(from: flat.baseAddress! + o, count: b.tensor.count); o += b.tensor.count }
            }
        }
    }

    /// Sums every parameter's gradient over the ranks (`ParamTable.allReduceGradients`).
    func reduceGradients() throws {
        try table.allReduceGradients(over: group, scratch: &gradScratch)
    }

    /// The per-iteration agreement: loss terms averaged over the ranks, whether any rank's loss was
    /// non-finite, and whether any rank was asked to stop (its signal).
    func agreeOnIteration(items: (box: Double, cls: Double, dfl: Double), finite: Bool)
        throws -> (items: (box: Double, cls: Double, dfl: Double), finite: Bool, stop: Int32?) {
        let local = stop.requested
        guard group.isDistributed else { return (items, finite, local) }
        var v = [finite ? items.box : 0, finite ? items.cls : 0, finite ? items.dfl : 0, finite ? 0 : 1, Double(local ?? 0)]
        var signal = [Double(local ?? 0)]
        try group.allReduceSum(&v, operation: "all-reduce of the losses")
        let allFinite = v[3] == 0
        if v[4] != 0 { try group.allReduceMax(&signal, operation: "all-reduce of a stop request") }
        let n = Double(group.size)
        return ((v[0] / n, v[1] / n, v[2] / n), allFinite, v[4] != 0 ? Int32(signal[0]) : nil)
    }

    /// At an epoch end: gradients accumulated since the last step (an accumulation that runs over
    /// the epoch boundary) summed onto rank 0, so its checkpoint holds them all; the others zero theirs.
    func gatherPendingGradients() throws {
        guard group.isDistributed else { return }
        try reduceGradients()
        if !group.isRoot { table.zeroGrad() }
        // A rank with nothing pending now holds zeros: drop them so "no gradient" stays nil.
        if table.params.allSatisfy({ p in p.tensor.node?.grad.map { g in (0..<g.count).allSatisfy { g.ptr[$0] == 0 } } ?? true }) {
            table.zeroGrad()
        }
    }

    /// After rank 0 decided the epoch (validation, best, early stop): its counters to every rank.
    func shareEpochDecision() throws {
        guard group.isDistributed else { return }
        var data = group.isRoot ? try JSONEncoder().encode(state) : Data()
        try group.broadcast(&data, operation: "broadcast of the epoch's results")
        if !group.isRoot {
            guard let s = try? JSONDecoder().decode(TrainState.self, from: data) else {
                throw DataParallelError.mismatch("rank \(group.rank): rank 0 sent an unreadable training state")
            }
            state = s
        }
    }

    /// FNV-1a over the bytes of every parameter, buffer and EMA average.
    func replicaHash() -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ p: UnsafePointer<Float>, _ n: Int) {
            UnsafeRawPointer(p).withMemoryRebound(to: UInt64.self, capacity: n / 2) { q in
                for i in 0..<(n / 2) { h = (h ^ q[i]) &* 0x100_0000_01b3 }
            }
            if n % 2 == 1 { h = (h ^ UInt64(p[n - 1].bitPattern)) &* 0x100_0000_01b3 }
        }
        for t in model.namedTensors() { mix(t.tensor.data, t.tensor.count) }
        for p in ema.pairs { mix(p.ema.data, p.ema.count) }
        return h
    }

    /// `--check-replicas`: every rank's weights, buffers and EMA hash to rank 0's, or the run stops.
    func checkReplicas(epoch: Int) throws {
        guard group.isDistributed, options.checkReplicas else { return }
        let h = replicaHash()
        guard try group.agree(h, operation: "replica check") else {
            throw DataParallelError.mismatch("after epoch \(epoch + 1) the ranks' weights differ (rank \(group.rank) hash " +
                                             String(h, radix: 16) + "): a rank computed something the others did not")
        }
        if options.verbose && group.isRoot { log("replica check after epoch \(epoch + 1): \(group.size) ranks hold identical weights, buffers and EMA") }
    }

    /// Copies of the gradients as the step will use them (`--debug-dump-step`).
    func snapshotGradients() -> [NamedTensor] {
        table.params.map { p in
            let copy = Tensor(zeros: p.tensor.shape)
            if let g = p.tensor.node?.grad { copy.data.update(from: g.ptr, count: p.tensor.count) }
            return NamedTensor("grad." + p.name, copy, .buffer)
        }
    }

    /// `--debug-dump-step`: rank 0 writes the step's gradients and the parameters after it.
    func writeStepDump(gradients: [NamedTensor], to path: String) throws {
        guard group.isRoot else { return }
        let params = table.params.map { NamedTensor("param." + $0.name, $0.tensor, .buffer) }
        do {
            try AtomicFile.write(StateDict.encode(gradients + params, metadata: ["world_size": String(group.size)]), to: path)
        } catch {
            throw TrainingError.invalid("--debug-dump-step \(path): \(FileError.reason(error))")
        }
        log("wrote the first step's gradients and parameters to \(path)")
    }
}

extension ParamTable {
    /// Floats per all-reduce call: a few large buckets rather than one call per tensor.
    public static let bucketFloats = 1 << 20

    /// Sums every parameter's gradient over the ranks of `group`, in flat buckets of
    /// `bucketFloats` (consecutive tensors copied into `scratch`; a missing gradient counts as
    /// zeros and receives the sum). Nothing happens in a group of one.
    public func allReduceGradients(over group: ProcessGroup, scratch: inout [Float]) throws {
        guard group.isDistributed else { return }
        var i = 0
        while i < params.count {
            // One bucket: consecutive parameters up to bucketFloats (a larger tensor goes alone).
            var j = i, n = 0
            while j < params.count && (n == 0 || n + params[j].tensor.count <= ParamTable.bucketFloats) { n += params[j].tensor.count; j += 1 }
            if scratch.count < n { scratch = [Float](repeating: 0, count: n) }
            try scratch.withUnsafeMutableBufferPointer { flat in
                let base = flat.baseAddress!
                var o = 0
                for p in params[i..<j] {
                    if let g = p.tensor.node?.grad { (base + o).update(from: g.ptr, count: p.tensor.count) }
                    else { (base + o).update(repeating: 0, count: p.tensor.count) }
                    o += p.tensor.count
                }
                try group.allReduceSum(base, count: n)
                o = 0
                for p in params[i..<j] {
                    if let node = p.tensor.node {
                        if node.grad == nil { node.grad = Buffer(count: p.tensor.count) }
                        node.grad!.ptr.update(from: base + o, count: p.tensor.count)
                    }
                    o += p.tensor.count
                }
            }
            i = j
        }
    }
}
