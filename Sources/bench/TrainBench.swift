import ArgumentParser
import Detection
import Foundation
import NN
import TensorCore
import Training

struct TrainBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Time full training steps (forward, v8 loss, backward, clip, SGD step, EMA) as torch_reference.py does.",
        discussion: """
        Inputs and targets follow ../shared/bench/torch_reference.py: uniform images, 3 boxes per image. Prints one line
        per precision, `FP32: 364.7 ms/step ...`, `AMP fp16: ...`, `AMP bf16: ...` (median step time, the fastest step, the parts,
        img/s, bytes of activations saved for backward), the ratios to FP32, and the peak RSS of the process after
        the first step (the buffer pool collected after every step as train_dual collects it after every iteration:
        blocks a step did not take again go back to the system), with the most tensor storage alive at once and what
        the pool holds at the end. Where the convolutions run on oneDNN, a second line per precision, `FP32 convolutions:
        ...` (not matched by `^FP32:`), gives their time (the primitives' execution alone, not the reorders around them)
        and the share of the step outside them (the median of the steps' own shares).
        --amp fp16 | bf16 | all times FP32 and the named precisions (in this order, one process), then takes their steps in
        turn (FP32, fp16, bf16, FP32, ...) for the ratios: `AMP fp16/FP32: time 1.13x (steps in turn: 1.04x, rounds
        0.97-1.10)`, the first from the two medians, the second the median of the rounds' ratios.
        """)

    @Option(help: "Model YAML.") var cfg = "configs/models/dual_yolov8n_mid.yaml"
    @Option(help: "Image size.") var imgsz = 320
    @Option(help: "Batch size.") var batch = 8
    @Option(help: "Timed steps (the median is printed).") var steps = 7
    @Option(help: "Warm-up steps.") var warmup = 2
    @Option(help: "Also time mixed precision: fp16, bf16 or all.") var amp: String?
    @Option(help: "A ceiling on the buffer pool in MB after the first step (default: none beyond the pool's own, as train_dual).") var poolMb: Int?
    @Flag(help: "Time only the --amp precisions, not FP32 first (to profile one precision alone).") var skipFp32 = false
    @OptionGroup var context: ContextOptions

    func validate() throws {
        guard steps >= 1 else { throw ValidationError("--steps must be at least 1, got \(steps)") }
        guard warmup >= 0 else { throw ValidationError("--warmup must be 0 or more, got \(warmup)") }
    }

    func run() throws {
        try context.apply()
        let model = try ModelBuilder.build(try ModelSpec.load(cfg), nc: 1)
        let table = ParamTable(model.namedTensors(), streams: model.streamTags())
        let opt = Optimizer(kind: .sgd, table: table, lr: 0.01, momentum: 0.937, weightDecay: 5e-4)
        let ema = EMA(model.namedTensors())
        let loss = DetectionLoss(nc: 1)
        var rng = RandomState(seed: 1)
        var inputs: [String: Tensor] = [:]
        for s in model.streams { inputs[s.name] = Tensor.uniform([batch, s.channels, imgsz, imgsz], rng: &rng) }
        var bi: [Int] = [], bx: [Float] = []
        for b in 0..<batch { for _ in 0..<3 {
            bi.append(b)
            bx += [rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.35), rng.uniform(0.05, 0.35)]
        } }
        let targets = BatchTargets(batchIndex: bi, classes: [Int](repeating: 0, count: bi.count), boxes: bx)
        model.training = true
        /// One training step: its times in ns (total, forward, loss, backward, optimizer, oneDNN's
        /// convolutions within it, the batch-norm passes, oneDNN's reorders of weights and of
        /// activations), the bytes the batch-norm passes moved, and the bytes saved for backward.
        func step(_ precision: Precision, _ scaler: inout LossScaler) -> (row: [Double], saved: Int) {
            let c0 = OneDNN.convolutionTime.seconds
            let n0 = ComputeContext.current.normPasses
            let rw0 = OneDNN.reorderTime(weights: true).seconds, ra0 = OneDNN.reorderTime(weights: false).seconds
            let t0 = DispatchTime.now().uptimeNanoseconds
            let outs = Autocast.with(precision) { model(inputs) }
            let saved = ComputeContext.current.saved.bytes
            let t1 = DispatchTime.now().uptimeNanoseconds
            var total = loss(outs[0], targets).total
            for o in outs.dropFirst() { total = total + loss(o, targets).total }
            let t2 = DispatchTime.now().uptimeNanoseconds
            total.backward(seed: Float(scaler.scale))
            let t3 = DispatchTime.now().uptimeNanoseconds
            _ = OptimizerStep.run(table: table, optimizer: opt, ema: ema, scaler: &scaler, scaled: precision == .fp16, maxNorm: 10)
            let t4 = DispatchTime.now().uptimeNanoseconds
            let conv = (OneDNN.convolutionTime.seconds - c0) * 1e9
            let norm = ComputeContext.current.normPasses.since(n0)
            let rw = (OneDNN.reorderTime(weights: true).seconds - rw0) * 1e9
            let ra = (OneDNN.reorderTime(weights: false).seconds - ra0) * 1e9
            return ([Double(t4 - t0), Double(t1 - t0), Double(t2 - t1), Double(t3 - t2), Double(t4 - t3), conv,
                     norm.seconds * 1e9, rw, ra, Double(norm.bytes)], saved)
        }
        typealias Figures = (total: Double, fwd: Double, loss: Double, bwd: Double, opt: Double, saved: Int, fastest: Double,
                             conv: Double, outside: Double, norm: Double, weightReorders: Double, reorders: Double,
                             normBytes: Double, rest: Double)
        func measure(_ precision: Precision) -> Figures {
            var scaler = LossScaler(initial: precision == .fp16 ? 1024 : 1)
            // total, forward, loss, backward, optimizer, convolutions, batch-norm passes, weight and
            // activation reorders (ns); the passes' bytes
            var rows: [[Double]] = []
            var saved = 0
            for i in 0..<(warmup + steps) {
                let (row, bytes) = step(precision, &scaler)
                saved = bytes
                if i >= warmup { rows.append(row) }
                BufferPool.collect()   // as train_dual after every iteration
                if i == 0 {
                    // An optional ceiling on the pool, and the peaks from here on.
                    if let poolMb { BufferPool.limitBytes = poolMb << 20 }
                    Self.resetPeakRSS()
                    MemoryStats.resetPeak()
                }
            }
            func med(_ k: Int) -> Double { median(rows.map { $0[k] }) / 1e6 }
            // The share of a step outside the convolutions: the median of the steps' own shares.
            let outside = median(rows.map { 1 - $0[5] / $0[0] })
            // What is left outside the convolutions once the parts named are taken away (each step's own).
            let rest = median(rows.map { $0[0] - $0[2] - $0[4] - $0[5] - $0[6] - $0[7] - $0[8] }) / 1e6
            return (med(0), med(1), med(2), med(3), med(4), saved, (rows.map { $0[0] }.min() ?? 0) / 1e6, med(5), outside,
                    med(6), med(7), med(8), median(rows.map { $0[9] }), rest)
        }
        func report(_ name: String, _ r: Figures) {
            print(String(format: "%@: %.1f ms/step (fastest %.1f; forward %.1f, loss %.1f, backward %.1f, clip+SGD+EMA %.1f) = %.2f img/s; activations saved for backward %.0f MB; peak RSS %.0f MB (tensor storage at most %.0f MB live, %.0f MB cached for reuse at the end)",
                         name, r.total, r.fastest, r.fwd, r.loss, r.bwd, r.opt, Double(batch) / r.total * 1e3, Double(r.saved) / 1e6, Double(Self.peakRSS()) / 1e6,
                         Double(MemoryStats.peakBytes) / 1e6, Double(BufferPool.cachedBytes) / 1e6))
            if r.conv > 0 {
                print(String(format: "%@ convolutions: %.1f ms/step on oneDNN (their execution alone); outside them %.1f%% of the step",
                             name, r.conv, 100 * r.outside))
                print(String(format: "%@ outside the convolutions (ms/step, medians): batch norm + SiLU passes %.1f (%.2f GB read and written: %.1f GB/s), oneDNN's reorders of weights %.1f and of activations %.1f, loss %.1f, clip+SGD+EMA %.1f, the rest %.1f",
                             name, r.norm, r.normBytes / 1e9, r.norm > 0 ? r.normBytes / (r.norm * 1e6) : 0, r.weightReorders, r.reorders,
                             r.loss, r.opt, r.rest))
            }
            BufferPool.trim()   // each precision's measure() resets the peaks after its first step
        }
        var precisions: [Precision] = []
        switch amp {
        case nil: break
        case "fp16": precisions = [.fp16]
        case "bf16": precisions = [.bf16]
        case "all": precisions = [.fp16, .bf16]
        default: throw ValidationError("--amp must be fp16, bf16 or all, got \(amp!)")
        }
        print("bench train: \(cfg), \(imgsz) px, batch \(batch), \(Parallel.threads) threads, median of \(steps) steps after \(warmup) warm-up")
        if skipFp32 && precisions.isEmpty { throw ValidationError("--skip-fp32 needs --amp fp16, bf16 or all") }
        let fp32 = skipFp32 ? nil : measure(.fp32)
        if let fp32 { report("FP32", fp32) }
        var results: [(Precision, Figures)] = []
        for p in precisions {
            let r = measure(p)
            report("AMP \(p.rawValue)", r)
            results.append((p, r))
        }
        if OneDNN.convolutionTime.calls > 0 { Self.reportCopyRate() }
        guard let fp32, !results.isEmpty else { return }
        // The ratios again from steps taken in turn (FP32, then each --amp precision, `steps` rounds
        // after one round of warm-up; the pool collected once a round): a slow phase of a shared
        // machine then slows every precision of a round alike, where the medians above may each
        // fall in another phase.
        let order: [Precision] = [.fp32] + precisions
        var scalers = order.map { LossScaler(initial: $0 == .fp16 ? 1024 : 1) }
        var ratios = [[Double]](repeating: [], count: precisions.count)
        for round in 0..<(1 + steps) {
            var times: [Double] = []
            for (j, p) in order.enumerated() { times.append(step(p, &scalers[j]).row[0]) }
            BufferPool.collect()
            if round > 0 { for j in 0..<precisions.count { ratios[j].append(times[j + 1] / times[0]) } }
        }
        BufferPool.trim()
        for (j, (p, r)) in results.enumerated() {
            let v = ratios[j].sorted()
            print(String(format: "AMP %@/FP32: time %.2fx (steps in turn: %.2fx, rounds %.2f-%.2f), saved activations %.2fx", p.rawValue,
                         r.total / fp32.total, v[v.count / 2], v.first!, v.last!, Double(r.saved) / Double(fp32.saved)))
        }

    }

    /// The rate of a plain copy (memcpy) on these threads over 64 pairs of 4 MB buffers, piece by
    /// piece as the batch-norm passes go layer by layer (best of 5): what a pass that only reads and
    /// writes its bytes once reaches here, to set the passes' rate against.
    static func reportCopyRate() {
        let floats = 1 << 20, pieces = 64
        let src = (0..<pieces).map { _ in UnsafeMutablePointer<Float>.allocate(capacity: floats) }
        let dst = (0..<pieces).map { _ in UnsafeMutablePointer<Float>.allocate(capacity: floats) }
        defer { for p in src + dst { p.deallocate() } }
        for i in 0..<pieces {
            src[i].initialize(repeating: Float(i), count: floats)
            dst[i].initialize(repeating: 0, count: floats)
        }
        var best = Double.infinity
        for _ in 0..<5 {
            let t0 = DispatchTime.now().uptimeNanoseconds
            for i in 0..<pieces {
                let s = src[i], d = dst[i]
                Parallel.chunks(floats, grain: 1 << 16) { r in memcpy(d + r.lowerBound, s + r.lowerBound, r.count * 4) }
            }
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9)
        }
        let bytes = Double(2 * pieces * floats * 4)
        print(String(format: "A plain copy (memcpy) on these threads, %.0f MB in 4 MB pieces, reads and writes %.1f GB/s (best of 5)",
                     Double(pieces * floats * 4) / 1e6, bytes / best / 1e9))
    }

    /// Resets VmHWM to the current RSS (Linux: `5` into /proc/self/clear_refs), so each precision's
    /// peak is its own.
    static func resetPeakRSS() {
        if let h = FileHandle(forWritingAtPath: "/proc/self/clear_refs") { h.write("5".data(using: .utf8)!); try? h.close() }
    }

    /// VmHWM of this process (bytes).
    static func peakRSS() -> Int {
        guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in s.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            let kb = line.split(separator: " ").compactMap { Int($0) }.first ?? 0
            return kb * 1024
        }
        return 0
    }
}
