import DataPipeline
import Detection
import Foundation
import NN
import Testing
@testable import TensorCore
@testable import Training

/// A small conv net with a loss scaled by `lossScale` (to make gradients tiny or huge).
private struct SmallNet {
    let model: DetectionModel
    let table: ParamTable
    let x: Tensor

    init() throws {
        let yaml = """
        nc: 1
        backbone:
          - [-1, 1, Conv, [8, 3, 2]]
          - [-1, 1, Conv, [16, 3, 2]]
          - [-1, 1, Conv, [16, 3, 2]]
        head:
          - [-1, 1, Conv, [16, 3, 2]]
          - [-1, 1, Conv, [16, 3, 2]]
          - [[2, 3, 4], 1, Detect, [nc]]
        """
        model = try ModelBuilder.build(try ModelSpec.parse(yaml, file: "small.yaml"), seed: 1)
        table = ParamTable(model.namedTensors())
        var rng = RandomState(seed: 2)
        x = Tensor.uniform([2, 3, 64, 64], rng: &rng)
    }

    /// Backward of (sum of head outputs) x factor x seed, under Float16 emulation when `half`.
    func backward(factor: Float, seed: Float, half: Bool) {
        let o = Autocast.with(half ? .fp16 : .fp32) { model(["rgb": x])[0] }
        ((o.boxes.sum() + o.scores.sum()) * factor).backward(seed: seed)     // the loss stays Float32
    }

    func grads() -> [Float] { table.params.flatMap { $0.tensor.grad?.array ?? [Float](repeating: 0, count: $0.tensor.count) } }
    func weights() -> [Float] { table.params.flatMap { $0.tensor.array } }
}

@Suite(.serialized) struct AMPTests {
    /// (a) gradients of ~1e-8 vanish in Float16 without scaling and survive with it.
    @Test func tinyGradientsNeedTheLossScale() throws {
        let net = try SmallNet()
        net.table.zeroGrad()
        net.backward(factor: 1e-8, seed: 1, half: false)
        let fp32 = net.grads()
        #expect(fp32.contains { $0 != 0 })
        net.table.zeroGrad()
        net.backward(factor: 1e-8, seed: 1, half: true)
        let unscaled = net.grads()
        let nonzero = unscaled.filter { $0 != 0 }.count
        #expect(Double(nonzero) < 0.01 * Double(unscaled.count), "half without scaling keeps \(nonzero) of \(unscaled.count)")
        net.table.zeroGrad()
        net.backward(factor: 1e-8, seed: 65536, half: true)
        net.table.scaleGrads(1 / 65536)
        let scaled = net.grads()
        let scale = Double(fp32.map { abs($0) }.max()!)
        var worst = 0.0
        for i in 0..<fp32.count { worst = max(worst, Double(abs(scaled[i] - fp32[i])) / scale) }
        #expect(worst < 1e-3, "scaled half gradients vs FP32: \(worst) relative")
    }

    /// (b) + (d): a scale so large that a real forward/backward overflows Float16 skips exactly
    /// that step, halves the scale and leaves the weights unchanged; the next step goes through.
    @Test func realOverflowSkipsTheStepAndBacksOff() throws {
        let net = try SmallNet()
        let opt = Optimizer(kind: .sgd, table: net.table, lr: 0.01, momentum: 0.9, weightDecay: 0)
        var scaler = LossScaler(initial: 3e5, growth: 2, backoff: 0.5, interval: 2000, minimum: 1)
        let before = net.weights()
        net.backward(factor: 1, seed: Float(scaler.scale), half: true)
        #expect(!net.table.gradsFinite(), "the scaled gradients overflow half precision")
        let first = OptimizerStep.run(table: net.table, optimizer: opt, ema: nil, scaler: &scaler, scaled: true, maxNorm: 10)
        #expect(first == .overflow(.backedOff))
        #expect(scaler.scale == 1.5e5)
        #expect(net.weights() == before)
        #expect(opt.steps == 0)
        // Back off until a real pass fits, then a step happens.
        var outcome = first
        var tries = 0
        while case .overflow = outcome, tries < 20 {
            net.backward(factor: 1, seed: Float(scaler.scale), half: true)
            outcome = OptimizerStep.run(table: net.table, optimizer: opt, ema: nil, scaler: &scaler, scaled: true, maxNorm: 10)
            tries += 1
        }
        guard case .stepped = outcome else { Issue.record("no step after \(tries) back-offs"); return }
        #expect(net.weights() != before && opt.steps == 1)
    }

    /// Autocast fp16 rounds convolution outputs to half in the forward pass: an activation that
    /// Float32 represents but half cannot (> 65504) becomes inf, the loss is not finite, and the
    /// step is skipped with a backed-off scale, as torch.autocast + GradScaler do.
    @Test func forwardOverflowIsCaughtUnderFP16() throws {
        let net = try SmallNet()
        // Scale the first convolution's weights so its outputs reach ~1e6 (finite in Float32).
        let first = net.table.params.first { $0.name.hasSuffix("model.0.conv.weight") }!.tensor
        for i in 0..<first.count { first.data[i] *= 3e5 }
        let opt = Optimizer(kind: .sgd, table: net.table, lr: 0.01, momentum: 0.9, weightDecay: 0)
        func lossValue(_ p: Precision) -> Float {
            let o = Autocast.with(p) { net.model(["rgb": net.x])[0] }
            return (o.boxes.sum() + o.scores.sum()).item
        }
        #expect(lossValue(.fp32).isFinite, "Float32 survives the large activations")
        let half = lossValue(.fp16)
        #expect(!half.isFinite, "fp16 autocast overflows in the forward pass")
        var scaler = LossScaler(initial: 1024)
        let before = net.weights()
        net.table.zeroGrad()
        let outcome = OptimizerStep.run(table: net.table, optimizer: opt, ema: nil, scaler: &scaler, scaled: true, maxNorm: 10, lossFinite: half.isFinite)
        #expect(outcome == .overflow(.backedOff) && scaler.scale == 512 && net.weights() == before)
    }

    /// (c) growth after `interval` clean steps, and the floor.
    @Test func growthAndFloor() throws {
        let net = try SmallNet()
        let opt = Optimizer(kind: .sgd, table: net.table, lr: 1e-4, momentum: 0.9, weightDecay: 0)
        var scaler = LossScaler(initial: 8, growth: 2, backoff: 0.5, interval: 3, minimum: 4)
        for _ in 0..<3 {
            net.backward(factor: 1e-3, seed: Float(scaler.scale), half: true)
            _ = OptimizerStep.run(table: net.table, optimizer: opt, ema: nil, scaler: &scaler, scaled: true, maxNorm: 0)
        }
        #expect(scaler.scale == 16)
        #expect(scaler.update(foundInf: true) == .backedOff && scaler.update(foundInf: true) == .backedOff)
        #expect(scaler.scale == 4 && scaler.update(foundInf: true) == .atFloor && scaler.scale == 4)
    }

    /// (e) the bytes of activations saved for backward are at least halved.
    @Test func savedActivationBytesHalve() throws {
        let data = TestData.synthetic("amp_bytes", train: 8, val: 4, seed: 5)
        _ = data
        let spec = try ModelSpec.load(repoRoot + "/configs/models/dual_yolov8n_mid.yaml")
        let model = try ModelBuilder.build(spec, nc: 2)
        var rng = RandomState(seed: 1)
        let inputs = ["rgb": Tensor.uniform([2, 3, 128, 128], rng: &rng), "ir": Tensor.uniform([2, 1, 128, 128], rng: &rng)]
        let ctx = ComputeContext()     // fresh: nothing another test saved on this thread
        func bytes(_ half: Bool) -> Int {
            ctx.run {
                let o = Autocast.with(half ? .fp16 : .fp32) { model(inputs)[0] }
                let b = ComputeContext.current.saved.bytes
                (o.boxes.mean() + o.scores.mean()).backward()
                return b
            }
        }
        let full = bytes(false), half = bytes(true)
        #expect(full > 10_000_000)
        #expect(Double(half) <= 0.5 * Double(full), "saved \(half) vs \(full) bytes")
    }
}

@Suite(.serialized) struct NonFiniteTests {
    static func data() -> String { TestData.synthetic("nan", train: 32, val: 8, seed: 7) }

    /// NaN losses at iterations k..k+4 (nan_recovery 5) -> one rollback to the last checkpoint
    /// with half the learning rate; the halved rate is in the state file and survives a resume.
    @Test func injectedNaNRollsBackAndTheHalvedRatePersists() throws {
        var o = TestData.options(data: Self.data(), model: "dual_yolov8n_mid.yaml", name: "nan_once", epochs: 4, batch: 8)
        o.hyp.val = false
        o.hyp.nan_recovery = 5
        o.stopAfterEpochs = 3
        let s = try {
            // A trainer holds its run directory's lock while it lives: this one ends before the resume.
            let trainer = try Trainer(o)
            trainer.lossHook = NaNInjector(Set(4..<9)).hook  // all of epoch 2 and the first batch of epoch 3 (4 batches an epoch)
            return try trainer.run()
        }()
        #expect(s.recoveries == 1 && s.lrScale == 0.5)
        let steps = try String(contentsOfFile: s.runDirectory + "/steps.csv", encoding: .utf8)
        #expect(steps.contains(",1\n"), "skipped steps are logged")
        var r = TrainOptions(data: "", cfg: "")
        r.resume = s.runDirectory
        r.verbose = false
        let t = try Trainer(r)
        #expect(t.state.lrScale == 0.5 && t.state.recoveries == 1)
        let done = try t.run()
        #expect(done.epochs == 4 && done.lrScale == 0.5)
    }

    /// NaN forever -> three rollbacks, then a clear error.
    @Test func threeRollbacksThenStop() throws {
        var o = TestData.options(data: Self.data(), model: "dual_yolov8n_mid.yaml", name: "nan_forever", epochs: 4, batch: 8)
        o.hyp.val = false
        o.hyp.nan_recovery = 2
        do {
            let trainer = try Trainer(o)
            trainer.lossHook = NaNInjector(Set(4..<100_000)).hook
            _ = try trainer.run()
            Issue.record("training with NaN everywhere did not stop")
        } catch let e as TrainingError {
            guard case .diverged = e else { Issue.record("wrong error \(e)"); return }
            #expect("\(e)".contains("after 3 rollbacks") && "\(e)".contains("Lower lr0"))
        }
    }

    /// The command line: a diverged run exits with status 3 and says why; SGD at lr0 10 either
    /// survives (recovers) or stops the same way — never a crash.
    @Test func exitStatus() throws {
        let bin = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("train_dual").path
        try #require(FileManager.default.fileExists(atPath: bin), "build the executables first (make test does)")
        func run(_ extra: [String]) throws -> (Int32, String) {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: bin)
            p.arguments = ["--data", Self.data(), "--cfg", TestData.tinyModel("dual_yolov8n_mid.yaml"), "--project", scratch + "/runs",
                           "--exist-ok", "--epochs", "3", "--batch", "8", "--imgsz", "128", "--no-val", "--warmup-iters-min", "10",
                           "--accumulate", "1"] + extra
            let err = Pipe()
            p.standardError = err
            p.standardOutput = FileHandle.nullDevice
            try p.run()
            let text = String(data: err.fileHandleForReading.readDataToEndOfFile(), encoding: .utf8) ?? ""
            p.waitUntilExit()
            #expect(p.terminationReason == .exit, "no crash")
            return (p.terminationStatus, text)
        }
        let (status, text) = try run(["--name", "cli_nan", "--debug-nan-at", "3+", "--nan-recovery", "2"])
        #expect(status == 3 && text.contains("training diverged"), "\(status): \(text)")
        let (s10, t10) = try run(["--name", "cli_lr10", "--lr0", "10", "--optimizer", "SGD"])
        #expect(s10 == 0 || (s10 == 3 && t10.contains("training diverged")), "\(s10): \(t10)")
        let (bad, tbad) = try run(["--name", "cli_bad", "--lr", "0.1"])
        #expect(bad != 0 && tbad.contains("did you mean '--lr0'"), "\(tbad)")
    }
}

/// The test's NaN seam: the loss of each listed iteration becomes NaN once (a rollback re-runs
/// its iterations, which then succeed).
final class NaNInjector: @unchecked Sendable {
    let at: Set<Int>
    var fired = Set<Int>()
    init(_ at: Set<Int>) { self.at = at }
    var hook: (Int, Tensor) -> Tensor {
        { ni, loss in
            guard self.at.contains(ni), self.fired.insert(ni).inserted else { return loss }
            return loss * Float.nan
        }
    }
}
