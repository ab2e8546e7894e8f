import ArgumentParser
import DataParallel
import Detection
import Foundation
import NN
import TensorCore
import Training

struct DDPBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ddp",
        abstract: "Data-parallel training steps: communication's share of a step, and N ranks x 1 thread against 1 process x N threads.",
        discussion: """
        Each step is what train_dual does per iteration under mpirun: forward, loss, the ranks' agreement on the loss
        (an all-reduce of 5 numbers), backward, rank 0's BatchNorm statistics broadcast, the gradients summed in flat
        buckets, clip + SGD + EMA. Inputs as `bench train` (uniform images, 3 boxes each); --batch is the global batch.
        Run as `bench ddp`: it times one process with --np threads, then starts `mpirun -np NP bench ddp --threads 1`
        and prints both, the communication fraction and the throughput ratio. Under mpirun it times the ranks.
        """)

    @Option(help: "Model YAML.") var cfg = "configs/models/dual_yolov8n_mid.yaml"
    @Option(help: "Image size.") var imgsz = 320
    @Option(help: "Global batch size.") var batch = 8
    @Option(help: "Timed steps (the median is printed).") var steps = 7
    @Option(help: "Warm-up steps.") var warmup = 2
    @Option(help: "Ranks of the mpirun run (and threads of the single process).") var np = 2
    @Option(help: "Threads (default: all cores alone, 1 per rank under mpirun).") var threads: Int?

    func run() throws {
        let group = try ProcessGroup.fromEnvironment()
        let ctx = ComputeContext.current
        ctx.threads = threads ?? (group.isDistributed ? group.defaultThreads : np)
        guard batch % group.size == 0 else { throw ValidationError("--batch \(batch) must split evenly over \(group.size) ranks") }
        let r = try measure(group: group, localBatch: batch / group.size)
        if group.isDistributed {
            if group.isRoot {
                print(String(format: "ranks %d x %d thread: %.1f ms/step, communication %.1f ms (%.1f%% of the step, %.1f MB a step), %.2f img/s",
                             group.size, ctx.threads, r.step * 1e3, r.comm * 1e3, 100 * r.comm / r.step, r.bytes / 1e6, Double(batch) / r.step))
            }
            group.finalize()
            return
        }
        printEnvironment()
        print("bench ddp: \(cfg), \(imgsz) px, global batch \(batch), median of \(steps) steps after \(warmup) warm-up")
        let single = String(format: "1 process x %d threads: %.1f ms/step, %.2f img/s", ctx.threads, r.step * 1e3, Double(batch) / r.step)
        print(single)
        fflush(nil)
        var args = ["-np", "\(np)"]
        if geteuid() == 0 { args.append("--allow-run-as-root") }
        if np > ProcessInfo.processInfo.activeProcessorCount { args.append("--oversubscribe") }
        let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        args += [me, "ddp", "--cfg", cfg, "--imgsz", "\(imgsz)", "--batch", "\(batch)", "--steps", "\(steps)", "--warmup", "\(warmup)",
                 "--threads", "1"]
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["mpirun"] + args
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        print(text, terminator: "")
        guard p.terminationStatus == 0, let line = text.split(separator: "\n").first(where: { $0.hasPrefix("ranks") }),
              let rate = line.split(separator: " ").dropLast().last.flatMap({ Double($0) }) else {
            throw ValidationError("mpirun \(args.joined(separator: " ")) failed (status \(p.terminationStatus)); is openmpi-bin installed?")
        }
        print(String(format: "throughput %d ranks x 1 thread / 1 process x %d threads: %.2fx", np, ctx.threads, rate / (Double(batch) / r.step)))
    }

    /// Median step time, its communication part and bytes, with `localBatch` images on this rank.
    func measure(group: ProcessGroup, localBatch: Int) throws -> (step: Double, comm: Double, bytes: Double) {
        let model = try ModelBuilder.build(try ModelSpec.load(cfg), nc: 1)
        let table = ParamTable(model.namedTensors(), streams: model.streamTags())
        let opt = Optimizer(kind: .sgd, table: table, lr: 0.01, momentum: 0.937, weightDecay: 5e-4)
        let ema = EMA(model.namedTensors())
        let loss = DetectionLoss(nc: 1)
        var rng = RandomState(seed: UInt64(1 + group.rank))
        var inputs: [String: Tensor] = [:]
        for s in model.streams { inputs[s.name] = Tensor.uniform([localBatch, s.channels, imgsz, imgsz], rng: &rng) }
        var bi: [Int] = [], bx: [Float] = []
        for b in 0..<localBatch { for _ in 0..<3 {
            bi.append(b)
            bx += [rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.35), rng.uniform(0.05, 0.35)]
        } }
        let targets = BatchTargets(batchIndex: bi, classes: [Int](repeating: 0, count: bi.count), boxes: bx)
        let buffers = model.namedTensors().filter { $0.role == .buffer }
        var flatBuffers = [Float](repeating: 0, count: buffers.reduce(0) { $0 + $1.tensor.count })
        var scratch: [Float] = []
        var scaler = LossScaler(initial: 1)
        model.training = true
        var rows: [(Double, Double, Double)] = []
        for i in 0..<(warmup + steps) {
            try group.barrier(operation: "step start")
            group.resetCounters()
            let t0 = DispatchTime.now().uptimeNanoseconds
            let outs = model(inputs)
            var total = loss(outs[0], targets).total
            for o in outs.dropFirst() { total = total + loss(o, targets).total }
            var agree = [1.0, 2, 3, 0, 0]
            try group.allReduceSum(&agree, operation: "losses")
            total.backward()
            try flatBuffers.withUnsafeMutableBufferPointer { f in
                try group.broadcast(f.baseAddress!, count: f.count, operation: "buffers")
            }
            try table.allReduceGradients(over: group, scratch: &scratch)
            _ = OptimizerStep.run(table: table, optimizer: opt, ema: ema, scaler: &scaler, scaled: false, maxNorm: 10)
            let t1 = DispatchTime.now().uptimeNanoseconds
            if i >= warmup { rows.append((Double(t1 - t0) * 1e-9, group.communicationSeconds, Double(group.communicatedBytes))) }
        }
        // Rank 0's figures are the slowest rank's: take each step's maximum over the ranks.
        var step = rows.map(\.0), comm = rows.map(\.1)
        try group.allReduceMax(&step, operation: "step times")
        try group.allReduceMax(&comm, operation: "communication times")
        let order = step.indices.sorted { step[$0] < step[$1] }
        let mid = order[order.count / 2]
        return (step[mid], comm[mid], rows[mid].2)
    }
}
