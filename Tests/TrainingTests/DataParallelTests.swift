import DataPipeline
import Foundation
@testable import NN
import Testing
import _TestSupport
@testable import TensorCore
@testable import Training

/// Data-parallel training under `mpirun` (Open MPI over TCP), against the same computation done
/// in one process: the summed gradient, the step, a whole run with its resume, and a dead rank.
@Suite(.serialized) struct DataParallelTests {
    static let data = TestData.synthetic("ddp", train: 32, val: 8, seed: 33, size: 64)
    static let model = TestData.tinyModel("dual_yolov8n_mid.yaml")

    static func args(name: String, epochs: Int, extra: [String] = []) -> [String] {
        ["--data", data, "--cfg", model, "--project", scratch + "/ddp_runs", "--name", name, "--exist-ok", "--epochs", "\(epochs)",
         "--batch", "8", "--imgsz", "64", "--workers", "1", "--threads", "1", "--no-plots"] + extra
    }

    /// With 2 ranks, the gradient the first step uses is the sum of the two ranks' gradients, each
    /// computed here one after the other on that rank's shard (same images, same order), and the
    /// parameters after the step are the ones this process gets.
    @Test func twoRanksSumTheirGradientsAndStepAsOneProcess() throws {
        let dump = scratch + "/ddp_step.safetensors"
        try? FileManager.default.removeItem(atPath: dump)
        let r = CLI.finish(try CLI.startMPI(np: 2, "train_dual", DataParallelTests.args(name: "exact", epochs: 1,
                                                                                          extra: DataParallelTests.exactRecipe + ["--debug-dump-step", dump])))
        #expect(r.status == 0, "\(r.output)")
        #expect(r.stdout.contains("world size 2 (Open MPI), rank 0"), "\(r.stdout)")
        let (ranks, meta) = try Safetensors.read(dump)
        #expect(meta["world_size"] == "2")

        // The same in one process: rank 0's batch, then rank 1's, gradients adding up.
        let t = try DataParallelTests.singleProcessTrainer(name: "exact_single")
        for rank in 0..<2 {
            _ = try t.forwardBackward(try DataParallelTests.firstBatch(of: t, rank: rank), iteration: 0, epoch: 0)
        }
        let grads = t.snapshotGradients()
        var s = Trainer.EpochSummary()
        try t.optimizerStep(epoch: 0, iteration: 0, loss: 0, lossFinite: true, files: [], summary: &s)
        #expect(s.norms.count == 1, "the step was taken")

        let relative = DataParallelTests.relative
        var worstGrad = 0.0, worstParam = 0.0, nonzero = 0
        for g in grads {
            worstGrad = max(worstGrad, relative(ranks[g.name], g.tensor))
            if (0..<g.tensor.count).contains(where: { g.tensor.data[$0] != 0 }) { nonzero += 1 }
        }
        for p in t.table.params { worstParam = max(worstParam, relative(ranks["param." + p.name], p.tensor)) }
        print("data parallel exactness: gradient rel. error \(worstGrad), parameters after the step \(worstParam), \(nonzero)/\(grads.count) gradients non-zero")
        #expect(nonzero > grads.count / 2)
        #expect(worstGrad <= 1e-6, "summed gradient differs from the single-process sum")
        #expect(worstParam <= 1e-6, "parameters after the step differ")
    }

    /// The first step's recipe of the exactness tests: no warmup, SGD, accumulate 1, mosaic on, Float32,
    /// the packed GEMM (as TestData.options: the in-process side runs the same kernels bit for bit).
    static let exactRecipe = ["--gemm", "packed", "--optimizer", "SGD", "--lr0", "0.01", "--warmup-epochs", "0", "--warmup-iters-min", "0", "--nbs", "8",
                              "--close-mosaic", "0", "--no-amp", "--no-val"]

    /// A trainer in this process with the exactness recipe, ready for the first step.
    static func singleProcessTrainer(name: String) throws -> Trainer {
        var o = TestData.options(data: DataParallelTests.data, model: "dual_yolov8n_mid.yaml", name: name, epochs: 1, batch: 8)
        o.hyp.imgsz = 64
        o.hyp.lr0 = 0.01
        o.hyp.warmup_epochs = 0
        o.hyp.warmup_iters_min = 0
        o.hyp.nbs = 8
        o.hyp.close_mosaic = 0
        o.hyp.val = false
        o.hyp.workers = 0
        o.threads = 1
        o.explicitHyp = ["optimizer", "lr0"]
        let t = try Trainer(o)
        let nb = t.trainLoader.batchesPerEpoch
        let nw = Schedule.warmupIterations(warmupEpochs: 0, batchesPerEpoch: nb, minimum: 0)
        t.applySchedule(iteration: 0, warmup: nw, factor: Schedule.factor(epoch: 0, epochs: 1, lrf: t.hyp.lrf, cosine: t.hyp.cos_lr))
        t.model.training = true
        return t
    }

    /// Rank `rank`'s first batch of epoch 0 in a 2-rank job.
    static func firstBatch(of t: Trainer, rank: Int) throws -> PairBatch {
        var lo = t.trainLoader.options
        lo.batchSize = 4
        lo.rank = rank
        lo.world = 2
        return try PairLoader(dataset: t.trainLoader.dataset, options: lo).batch(epoch: 0, index: 0, mosaic: true)
    }

    /// Largest difference over the largest magnitude of `b`.
    static func relative(_ a: StoredTensor?, _ b: Tensor) -> Double {
        guard let a, a.values.count == b.count else { return .infinity }
        var diff = 0.0, scale = 0.0
        for i in 0..<b.count { diff = max(diff, Double(abs(a.values[i] - b.data[i]))); scale = max(scale, Double(abs(b.data[i]))) }
        return scale == 0 ? diff : diff / scale
    }

    /// `--sync-bn`: the first step's gradient equals two replicas run here on two threads whose
    /// batch norms sum their statistics in process (the whole global batch's mean and variance),
    /// and it differs from the per-rank statistics' gradient.
    @Test func syncBNUsesTheGlobalBatchStatistics() throws {
        let dump = scratch + "/ddp_step_syncbn.safetensors"
        try? FileManager.default.removeItem(atPath: dump)
        let r = CLI.finish(try CLI.startMPI(np: 2, "train_dual", DataParallelTests.args(name: "exact_syncbn", epochs: 1,
                                                                                          extra: DataParallelTests.exactRecipe + ["--sync-bn", "--debug-dump-step", dump])))
        #expect(r.status == 0, "\(r.output)")
        #expect(r.stdout.contains("BatchNorm statistics of the global batch (--sync-bn)"), "\(r.stdout)")
        let (ranks, _) = try Safetensors.read(dump)

        // Two replicas in this process, each on its own thread with a context whose batch norms
        // meet at an in-process sum.
        final class Replica: @unchecked Sendable {
            let trainer: Trainer, batch: PairBatch, context = ComputeContext(threads: 1)
            var error: Error?
            init(_ t: Trainer, _ b: PairBatch) { trainer = t; batch = b }
        }
        let meeting = InProcessSum(parties: 2)
        var replicas: [Replica] = []
        for rank in 0..<2 {
            let t = try DataParallelTests.singleProcessTrainer(name: "exact_syncbn_\(rank)")
            let replica = Replica(t, try DataParallelTests.firstBatch(of: t, rank: rank))
            replica.context.replicaSum = { p, n in meeting.sum(rank: rank, p, n) }
            replicas.append(replica)
        }
        let done = DispatchGroup()
        for replica in replicas {
            DispatchQueue.global().async(group: done) {
                replica.context.run {
                    do { _ = try replica.trainer.forwardBackward(replica.batch, iteration: 0, epoch: 0) } catch { replica.error = error }
                }
            }
        }
        done.wait()
        for replica in replicas { if let e = replica.error { throw e } }
        let a = replicas[0].trainer.snapshotGradients(), b = replicas[1].trainer.snapshotGradients()
        var worst = 0.0, unsyncedDiffers = false
        let unsynced = try? Safetensors.read(scratch + "/ddp_step.safetensors").0
        for (ga, gb) in zip(a, b) {
            let sum = Tensor(zeros: ga.tensor.shape)
            for i in 0..<sum.count { sum.data[i] = ga.tensor.data[i] + gb.tensor.data[i] }
            worst = max(worst, DataParallelTests.relative(ranks[ga.name], sum))
            if let u = unsynced?[ga.name], DataParallelTests.relative(u, sum) > 1e-3 { unsyncedDiffers = true }
        }
        print("synchronised BatchNorm exactness: gradient rel. error \(worst)")
        #expect(worst <= 1e-5, "the --sync-bn gradient differs from two replicas with in-process synchronised statistics")
        if unsynced != nil { #expect(unsyncedDiffers, "--sync-bn gave the per-rank statistics' gradient") }
    }

    /// Three epochs on 2 ranks over TCP: one results.csv, identical replicas at every epoch end,
    /// weights val_dual loads, and a single-process --resume --epochs 4 continuing it.
    @Test func twoRanksTrainAndOneProcessResumes() throws {
        let run = scratch + "/ddp_runs/e2e"
        let r = CLI.finish(try CLI.startMPI(np: 2, "train_dual", DataParallelTests.args(name: "e2e", epochs: 3, extra: ["--check-replicas"])))
        #expect(r.status == 0, "\(r.output)")
        #expect(r.stdout.contains("replica check after epoch 3: 2 ranks hold identical weights"), "\(r.stdout)")
        #expect(!r.stdout.contains("rank 1"), "only rank 0 prints")
        let rows = try String(contentsOfFile: run + "/results.csv", encoding: .utf8).split(separator: "\n")
        #expect(rows.count == 4, "header + 3 epochs: \(rows)")
        #expect(try String(contentsOfFile: run + "/args.yaml", encoding: .utf8).contains("world_size: 2"))
        let v = try CLI.run("val_dual", ["--weights", run + "/weights/best.safetensors", "--data", DataParallelTests.data, "--imgsz", "64",
                                         "--project", scratch + "/ddp_val", "--name", "e2e", "--exist-ok", "--no-plots"])
        #expect(v.status == 0 && v.output.contains("mAP50"), "\(v.output)")
        let resumed = try CLI.run("train_dual", ["--resume", run, "--epochs", "4"])
        #expect(resumed.status == 0, "\(resumed.output)")
        #expect(resumed.output.contains("trained with 2 ranks and continues with 1"), "\(resumed.output)")
        let after = try String(contentsOfFile: run + "/results.csv", encoding: .utf8).split(separator: "\n")
        #expect(after.count == 5 && after.last!.hasPrefix("4,"), "\(after)")
    }

    /// A rank killed with SIGKILL mid-epoch ends the job promptly, with a message naming the rank.
    @Test func aKilledRankEndsTheJobWithItsRank() throws {
        let run = scratch + "/ddp_runs/fault"
        try? FileManager.default.removeItem(atPath: run)
        let job = try CLI.startMPI(np: 2, "train_dual", DataParallelTests.args(name: "fault", epochs: 500))
        // Wait until training runs (steps.csv has rows), then kill rank 1.
        for _ in 0..<1200 where ((try? String(contentsOfFile: run + "/steps.csv", encoding: .utf8)) ?? "").split(separator: "\n").count < 3 {
            Thread.sleep(forTimeInterval: 0.1)
        }
        let victim = try DataParallelTests.rankProcess(1, of: job.0.processIdentifier)
        let t0 = Date()
        kill(victim, SIGKILL)
        let r = CLI.finish(job)
        let seconds = Date().timeIntervalSince(t0)
        print("data parallel fault: job ended \(String(format: "%.1f", seconds)) s after rank 1 was killed, status \(r.status)")
        #expect(seconds < 60, "the job outlived its dead rank by \(seconds) s")
        #expect(r.status != 0)
        #expect(r.output.contains("rank 1") && r.output.contains("signal 9"), "\(r.output.suffix(2000))")
    }

    /// The pid of the child of `mpirun` that is rank `rank` (Open MPI puts it in the environment).
    static func rankProcess(_ rank: Int, of launcher: Int32) throws -> Int32 {
        for entry in try FileManager.default.contentsOfDirectory(atPath: "/proc") {
            guard let pid = Int32(entry),
                  let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 2, Int32(fields[1]) == launcher,
                  let env = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { continue }
            let vars = env.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            if vars.contains("OMPI_COMM_WORLD_RANK=\(rank)") { return pid }
        }
        throw TrainingError.invalid("no rank \(rank) among the children of mpirun \(launcher)")
    }
}

