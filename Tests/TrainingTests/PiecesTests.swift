import Foundation
import Testing
@testable import NN
@testable import TensorCore
@testable import Training

private let root: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()

@Suite struct HyperparameterFiles {
    @Test func defaultYAMLIsTheDocumentedDefaults() throws {
        let text = try String(contentsOfFile: root + "/configs/hyp/default.yaml", encoding: .utf8)
        if text != Hyperparameters.documentedDefaults() {
            // The expected file, to copy over configs/hyp/default.yaml after changing Hyperparameters.
            let expected = NSTemporaryDirectory() + "default.yaml"
            try Hyperparameters.documentedDefaults().write(toFile: expected, atomically: true, encoding: .utf8)
            Issue.record("configs/hyp/default.yaml is not the documented defaults: regenerate it (cp \(expected) configs/hyp/default.yaml)")
        }
        var h = Hyperparameters()
        h.lr0 = 123
        try h.apply(yaml: text, file: "default.yaml")
        #expect(h == Hyperparameters())
        // One line per key, each with a comment.
        for f in Hyperparameters.fields {
            let leaf = f.key.split(separator: ".").last!
            #expect(text.contains("\(leaf): \(f.value(in: Hyperparameters()))  # ("), "\(f.key)")
        }
    }

    /// `bf16_kept_inputs` (flag `--bf16-kept-inputs`) reaches the context the trainer computes in.
    @Test func keptInputsShareReachesTheContext() throws {
        let previous = ComputeContext.current.keptInputsShare
        defer { ComputeContext.current.keptInputsShare = previous }
        var o = TestData.options(data: DataParallelTests.data, model: "dual_yolov8n_mid.yaml", name: "kept_share", epochs: 1, batch: 8)
        o.hyp.imgsz = 64
        o.hyp.workers = 0
        o.hyp.val = false
        o.hyp.amp = .bf16
        o.hyp.bf16_kept_inputs = 0.25
        _ = try Trainer(o)
        #expect(ComputeContext.current.keptInputsShare == 0.25)
        var h = Hyperparameters()
        try h.apply(yaml: "bf16_kept_inputs: 0", file: "x.yaml")
        #expect(h.bf16_kept_inputs == 0)
        #expect(throws: HypError.self) { try h.apply(yaml: "bf16_kept_inputs: -1", file: "x.yaml") }
    }

    @Test func presetsParse() throws {
        for name in ["quick", "finetune", "early"] {
            var h = Hyperparameters()
            try h.apply(yamlFile: root + "/configs/hyp/\(name).yaml")
            #expect(h != Hyperparameters(), "\(name) changes something")
        }
        var f = Hyperparameters()
        try f.apply(yamlFile: root + "/configs/hyp/finetune.yaml")
        #expect(f.lr0 >= 1e-4 && f.lr0 <= 5e-4 && f.warmup_epochs == 0)
        var e = Hyperparameters()
        try e.apply(yamlFile: root + "/configs/hyp/early.yaml")
        #expect(e.lr0 <= 0.008)
        var q = Hyperparameters()
        try q.apply(yamlFile: root + "/configs/hyp/quick.yaml")
        #expect(q.accumulate == 1)
    }

    @Test func unknownKeySuggestsTheNearest() {
        var h = Hyperparameters()
        #expect(throws: HypError.unknownKey(key: "lr", suggestion: "lr0", file: "h.yaml", line: 2)) {
            try h.apply(yaml: "epochs: 3\nlr: 0.1\n", file: "h.yaml")
        }
        #expect(throws: HypError.unknownKey(key: "--max-nrom", suggestion: "--max-norm", file: nil, line: nil)) {
            try h.apply(flags: ["--max-nrom", "1"])
        }
        do { try h.apply(yaml: "warmup_epoch: 2\n", file: "h.yaml") } catch {
            #expect("\(error)" == "h.yaml:1: unknown hyper-parameter 'warmup_epoch'; did you mean 'warmup_epochs'?")
        }
    }

    @Test func badValuesNameKeyAndRange() {
        var h = Hyperparameters()
        do { try h.apply(yaml: "momentum: 1.5\n", file: "h.yaml"); Issue.record("no error") } catch {
            #expect("\(error)" == "h.yaml:1: bad value '1.5' for 'momentum': expected float, 0.0..0.9999")
        }
        do { try h.apply(flags: ["--optimizer", "Adam"]); Issue.record("no error") } catch {
            #expect("\(error)".contains("'optimizer': expected SGD | AdamW | auto"))
        }
        do { try h.apply(flags: ["--epochs", "ten"]); Issue.record("no error") } catch {
            #expect("\(error)".contains("bad value 'ten' for 'epochs'"))
        }
    }

    @Test func flagsWinAndSpellings() throws {
        var h = Hyperparameters()
        try h.apply(yaml: "lr0: 0.02\namp: true\nloss_scale:\n  init: 1024\n", file: "h.yaml")
        try h.apply(flags: ["--lr0", "0.005", "--max-norm=1.0", "--warmup-epochs", "2", "--no-cos-lr", "--accumulate", "4",
                            "--no-amp", "--loss-scale-interval", "10", "--plots", "false"])
        #expect(h.lr0 == 0.005 && h.max_norm == 1 && h.warmup_epochs == 2 && !h.cos_lr && h.accumulate == 4)
        #expect(h.amp == .fp32 && h.loss_scale_init == 1024 && h.loss_scale_interval == 10 && !h.plots)
        try h.apply(flags: ["--amp", "--cos-lr"])
        #expect(h.amp == .fp16 && h.cos_lr)
        // A value after a --no- flag would contradict it: refused, never read as the value.
        for bad in ["--no-amp=bf16", "--no-val=true"] {
            do { try h.apply(flags: [bad]); Issue.record("\(bad) accepted") } catch {
                #expect("\(error)".contains("no value after"))
            }
        }
        #expect(h.amp == .fp16 && h.val)
    }

    @Test func seedsConfigShapeIsAnAlias() throws {
        var h = Hyperparameters()
        try h.apply(yaml: "training:\n  gradient_clipping: true\n  max_norm: 1.0\n  use_amp: true\n", file: "seed.yaml")
        #expect(h.max_norm == 1 && h.amp == .fp16)
        try h.apply(yaml: "training:\n  gradient_clipping: false\n  max_norm: 3.0\n", file: "seed.yaml")
        #expect(h.max_norm == 0)
    }

    @Test func argsYAMLRoundTrips() throws {
        var h = Hyperparameters()
        h.lr0 = 0.003; h.amp = .fp16; h.loss_scale_min = 8; h.optimizer = "AdamW"
        var back = Hyperparameters()
        try back.apply(yaml: h.yaml(), file: "args.yaml")
        #expect(back == h)
    }
}

@Suite struct ScheduleBoundaries {
    @Test func lrFactorEnds() {
        for cosine in [false, true] {
            #expect(Schedule.factor(epoch: 0, epochs: 10, lrf: 0.01, cosine: cosine) == 1)
            #expect(abs(Schedule.factor(epoch: 10, epochs: 10, lrf: 0.01, cosine: cosine) - 0.01) < 1e-12)
        }
        #expect(abs(Schedule.factor(epoch: 5, epochs: 10, lrf: 0.01, cosine: false) - 0.505) < 1e-12)
        #expect(abs(Schedule.factor(epoch: 5, epochs: 10, lrf: 0.01, cosine: true) - 0.505) < 1e-12)
        #expect(Schedule.factor(epoch: 2, epochs: 10, lrf: 0.01, cosine: true) > Schedule.factor(epoch: 2, epochs: 10, lrf: 0.01, cosine: false))
    }

    @Test func warmupLengthAndOff() {
        #expect(Schedule.warmupIterations(warmupEpochs: 3, batchesPerEpoch: 10) == 100)
        #expect(Schedule.warmupIterations(warmupEpochs: 3, batchesPerEpoch: 1000) == 3000)
        #expect(Schedule.warmupIterations(warmupEpochs: 0, batchesPerEpoch: 1000) == 0)
        #expect(Schedule.warmupIterations(warmupEpochs: 1, batchesPerEpoch: 8, minimum: 20) == 20)
    }

    @Test func warmupGroupsAtStartEndAndAfter() {
        let base = [GroupSettings(lr: 0.01, momentum: 0.937, weightDecay: 0, initialLR: 0.01),
                    GroupSettings(lr: 0.01, momentum: 0.937, weightDecay: 5e-4, initialLR: 0.01),
                    GroupSettings(lr: 0.01, momentum: 0.937, weightDecay: 0, initialLR: 0.01)]
        let s0 = Schedule.groups(base, iteration: 0, warmup: 100, factor: 1, warmupBiasLR: 0.1, warmupMomentum: 0.8, momentum: 0.937)
        #expect(s0.map(\.lr) == [0.1, 0, 0] && s0.allSatisfy { $0.momentum == 0.8 })
        let s50 = Schedule.groups(base, iteration: 50, warmup: 100, factor: 1, warmupBiasLR: 0.1, warmupMomentum: 0.8, momentum: 0.937)
        #expect(abs(s50[0].lr - 0.055) < 1e-12 && abs(s50[1].lr - 0.005) < 1e-12 && abs(s50[2].momentum - 0.8685) < 1e-12)
        let s100 = Schedule.groups(base, iteration: 100, warmup: 100, factor: 0.9, warmupBiasLR: 0.1, warmupMomentum: 0.8, momentum: 0.937)
        #expect(s100.allSatisfy { abs($0.lr - 0.009) < 1e-12 && $0.momentum == 0.937 })
        let after = Schedule.groups(base, iteration: 500, warmup: 100, factor: 0.5, warmupBiasLR: 0.1, warmupMomentum: 0.8, momentum: 0.937)
        #expect(after.allSatisfy { $0.lr == 0.005 })
        let none = Schedule.groups(base, iteration: 0, warmup: 0, factor: 1, warmupBiasLR: 0.1, warmupMomentum: 0.8, momentum: 0.937)
        #expect(none.allSatisfy { $0.lr == 0.01 && $0.momentum == 0.937 })
    }

    @Test func accumulationRampsDuringWarmup() {
        #expect(Schedule.warmupAccumulate(iteration: 0, warmup: 100, target: 4) == 1)
        #expect(Schedule.warmupAccumulate(iteration: 50, warmup: 100, target: 4) == 2)   // round(2.5) -> 2 (even)
        #expect(Schedule.warmupAccumulate(iteration: 100, warmup: 100, target: 4) == 4)
        #expect(Schedule.warmupAccumulate(iteration: 3, warmup: 0, target: 4) == 4)
    }
}

@Suite struct StabilityPieces {
    @Test func scalerBacksOffGrowsAndFloors() {
        var s = LossScaler(initial: 8, growth: 2, backoff: 0.5, interval: 3, minimum: 2)
        #expect(s.update(foundInf: true) == .backedOff && s.scale == 4)
        #expect(s.update(foundInf: false) == .none && s.update(foundInf: false) == .none)
        #expect(s.update(foundInf: false) == .grew && s.scale == 8 && s.tracker == 0)
        _ = s.update(foundInf: true); _ = s.update(foundInf: true)
        #expect(s.scale == 2)
        #expect(s.update(foundInf: true) == .atFloor && s.scale == 2 && s.overflowsAtFloor == 1)
        #expect(s.update(foundInf: true) == .atFloor && s.overflowsAtFloor == 2)
        #expect(s.update(foundInf: false) == .none && s.overflowsAtFloor == 0)
    }

    @Test func clipMatchesTorchRule() {
        let a = Tensor([3, 4], shape: [2]), b = Tensor([12], shape: [1])
        a.requiresGrad = true; b.requiresGrad = true
        (a * a.detached()).sum().backward()     // grad a = a = (3, 4)
        (b * b.detached()).sum().backward()     // grad b = 12
        let t = ParamTable([NamedTensor("a", a, .weight), NamedTensor("b", b, .bias)])
        #expect(abs(t.gradNorm() - 13) < 1e-9)
        let (n, clipped) = t.clipGradNorm(6.5)
        #expect(n == 13 && clipped)
        #expect(abs(t.gradNorm() - 6.5) < 1e-5)
        #expect(t.clipGradNorm(100).clipped == false)
        #expect(t.clipGradNorm(0).clipped == false)   // 0 turns clipping off
    }

    @Test func emaDecayRampAndUpdate() {
        #expect(EMA.decay(0.9999, tau: 2000, updates: 0) == 0)
        #expect(abs(EMA.decay(0.9999, tau: 2000, updates: 2000) - 0.9999 * (1 - exp(-1))) < 1e-12)
        let w = Tensor([1, 2], shape: [2])
        w.requiresGrad = true
        let ema = EMA([NamedTensor("w", w, .weight)], decay: 0.5, tau: 1)
        w.data[0] = 3
        ema.update()       // d = 0.5 (1 - e^-1)
        let d = Float(0.5 * (1 - exp(-1.0)))
        #expect(abs(ema.pairs[0].ema.data[0] - (d * 1 + (1 - d) * 3)) < 1e-6)
    }

    @Test func gradProbeRule() {
        // The seeds' example: mean 0.8 with rare spikes up to 6 -> about 3.
        var norms = [Double](repeating: 0.65, count: 96) + [2, 3, 5, 6]
        norms.shuffle()
        let s = GradProbe.summarize(norms)!
        #expect(abs(s.mean - 0.784) < 1e-9 && s.max == 6)
        #expect(abs(s.p95 - 0.65) < 1e-9)                  // numpy's linear percentile
        #expect(s.suggested == 3.1)                        // sqrt(max(2 * 0.784, 0.65) * 6) = 3.07
        #expect(GradProbe.summarize([2, 2, 2])!.suggested == 2.8)   // just above steady norms
        #expect(abs(GradProbe.summarize([1, 1, 1, 1, 40])!.p95 - 32.2) < 1e-9)
        #expect(GradProbe.summarize([])  == nil)
    }

    @Test func sgdNesterovMatchesTorchFormula() {
        let w = Tensor([1, -2], shape: [2])
        w.requiresGrad = true
        let table = ParamTable([NamedTensor("w", w, .weight)])
        let opt = Optimizer(kind: .sgd, table: table, lr: 0.1, momentum: 0.9, weightDecay: 0.01)
        var buf: [Float] = [0, 0]
        var ref: [Float] = [1, -2]
        for step in 0..<3 {
            table.zeroGrad()
            (w * w.detached()).sum().backward()       // grad = w
            opt.step()
            for i in 0..<2 {
                let d = ref[i] + 0.01 * ref[i]
                buf[i] = step == 0 ? d : 0.9 * buf[i] + d
                ref[i] -= 0.1 * (d + 0.9 * buf[i])
            }
            #expect(maxAbs(w.array, ref) < 1e-6)
        }
    }

    @Test func adamwMatchesTorchFormula() {
        let w = Tensor([0.5], shape: [1])
        w.requiresGrad = true
        let table = ParamTable([NamedTensor("w", w, .weight)])
        let opt = Optimizer(kind: .adamw, table: table, lr: 0.01, momentum: 0.9, weightDecay: 0.1)
        var p = 0.5, m = 0.0, v = 0.0
        for t in 1...3 {
            table.zeroGrad()
            (w * 3).sum().backward()
            opt.step()
            p *= 1 - 0.01 * 0.1
            m = 0.9 * m + 0.1 * 3; v = 0.999 * v + 0.001 * 9
            let mh = m / (1 - pow(0.9, Double(t))), vh = v / (1 - pow(0.999, Double(t)))
            p -= 0.01 * mh / (vh.squareRoot() + 1e-8)
            #expect(abs(Double(w.data[0]) - p) < 1e-6)
        }
    }

    /// Warmup ramps the groups' momentum; AdamW's beta1 stays what it was built with, and each
    /// parameter's bias correction counts its own updates (a parameter without a gradient in a step
    /// does not advance).
    @Test func adamwBetasStayFixedInWarmupWithStepsPerParameter() {
        let a = Tensor([0.5], shape: [1]), b = Tensor([0.25], shape: [1])
        a.requiresGrad = true; b.requiresGrad = true
        let table = ParamTable([NamedTensor("a", a, .weight), NamedTensor("b", b, .weight)])
        let opt = Optimizer(kind: .adamw, table: table, lr: 0.01, momentum: 0.9, weightDecay: 0)
        var pa = 0.5, ma = 0.0, va = 0.0, pb = 0.25, mb = 0.0, vb = 0.0, tb = 0
        for t in 1...4 {
            for g in 0..<3 { opt.groups[g].momentum = 0.8 + 0.02 * Double(t) }   // what warmup does to the groups
            table.zeroGrad()
            let withB = t != 2
            (withB ? (a * 3).sum() + (b * 2).sum() : (a * 3).sum()).backward()
            opt.step()
            ma = 0.9 * ma + 0.1 * 3; va = 0.999 * va + 0.001 * 9
            pa -= 0.01 * (ma / (1 - pow(0.9, Double(t)))) / ((va / (1 - pow(0.999, Double(t)))).squareRoot() + 1e-8)
            if withB {
                tb += 1
                mb = 0.9 * mb + 0.1 * 2; vb = 0.999 * vb + 0.001 * 4
                pb -= 0.01 * (mb / (1 - pow(0.9, Double(tb)))) / ((vb / (1 - pow(0.999, Double(tb)))).squareRoot() + 1e-8)
            }
            #expect(abs(Double(a.data[0]) - pa) < 1e-6 && abs(Double(b.data[0]) - pb) < 1e-6, "step \(t)")
        }
        #expect(opt.parameterSteps == [4, 3])
    }

    /// Ultralytics calls ema.update after scaler.step whether or not the step was skipped.
    @Test func emaUpdatesAfterSkippedAMPSteps() {
        let w = Tensor([1], shape: [1])
        w.requiresGrad = true
        let table = ParamTable([NamedTensor("w", w, .weight)])
        let opt = Optimizer(kind: .sgd, table: table, lr: 0.1, momentum: 0, weightDecay: 0)
        let ema = EMA([NamedTensor("w", w, .weight)])
        var scaler = LossScaler(initial: 8)
        (w * Float.infinity).sum().backward()
        #expect(OptimizerStep.run(table: table, optimizer: opt, ema: ema, scaler: &scaler, scaled: true, maxNorm: nil) == .overflow(.backedOff))
        #expect(ema.updates == 1 && opt.steps == 0)
        #expect(OptimizerStep.run(table: table, optimizer: opt, ema: ema, scaler: &scaler, scaled: true, maxNorm: nil, lossFinite: false) == .overflow(.backedOff))
        #expect(ema.updates == 2 && scaler.scale == 2, "a forward overflow (non-finite loss) backs off too")
        // Without loss scaling a non-finite step is a real failure: no EMA update, counted by the trainer.
        (w * Float.nan).sum().backward()
        #expect(OptimizerStep.run(table: table, optimizer: opt, ema: ema, scaler: &scaler, scaled: false, maxNorm: nil) == .nonFinite)
        #expect(ema.updates == 2)
    }

    /// The optimizer sequence runs its passes over the tensors on several threads (the clipping
    /// factor applied in the optimizer's own pass, the norm from per-tensor sums): the parameters,
    /// momentum and EMA it gives equal, bit for bit, the one-tensor-at-a-time sequence (clip
    /// in place, then SGD / AdamW by the formula, then EMA) on tensors of very uneven sizes.
    @Test(arguments: [Optimizer.Kind.sgd, .adamw], [1, 2, 3])
    func parallelStepEqualsSerialSequence(kind: Optimizer.Kind, threads: Int) {
        let sizes = [1, 70_001, 3, 5, 40_000, 130_003, 2, 9_999]
        var rng = RandomState(seed: 7)
        func tensors() -> [NamedTensor] {
            var r = RandomState(seed: 3)
            return sizes.enumerated().map { i, n in
                let t = Tensor.uniform([n], rng: &r)
                t.requiresGrad = true
                return NamedTensor("t\(i)", t, i % 3 == 0 ? .bias : .weight)
            }
        }
        let grads = sizes.map { n in (0..<n).map { _ in Float(rng.uniform() * 2 - 1) } }
        func setGrads(_ named: [NamedTensor]) {
            for (t, g) in zip(named, grads) { (t.tensor * Tensor(g, shape: [g.count])).sum().backward() }   // grad = g
        }
        // The sequence as it was: norm, scale every gradient, then each tensor's formula, then EMA.
        let refNamed = tensors(), refTable = ParamTable(refNamed)
        var m = sizes.map { [Float](repeating: 0, count: $0) }, v = m
        var refEma = refNamed.map { $0.tensor.array }
        let ctx = ComputeContext(threads: threads)
        let named = tensors(), table = ParamTable(named)
        let opt = Optimizer(kind: kind, table: table, lr: 0.01, momentum: 0.9, weightDecay: 0.05)
        let ema = EMA(named, decay: 0.9, tau: 1)
        var scaler = LossScaler(initial: 1)
        for t in 1...3 {
            setGrads(refNamed)
            let (refNorm, clipped) = refTable.clipGradNorm(50)
            #expect(clipped)
            for (i, p) in refTable.params.enumerated() {
                let w = p.tensor.data, g = p.tensor.node!.grad!.ptr
                let lr: Float = 0.01, wd: Float = p.group == 1 ? 0.05 : 0, b1: Float = 0.9, b2: Float = 0.999, eps: Float = 1e-8
                let bc1 = 1 - Foundation.pow(Double(b1), Double(t)), bc2 = 1 - Foundation.pow(Double(b2), Double(t))
                let stepSize = Float(Double(lr) / bc1), bc2s = Float(bc2.squareRoot())
                for j in 0..<sizes[i] {
                    switch kind {
                    case .sgd:
                        let d = g[j] + wd * w[j]
                        m[i][j] = t == 1 ? d : 0.9 * m[i][j] + d
                        w[j] -= lr * (d + 0.9 * m[i][j])
                    case .adamw:
                        w[j] *= 1 - lr * wd
                        m[i][j] = b1 * m[i][j] + (1 - b1) * g[j]
                        v[i][j] = b2 * v[i][j] + (1 - b2) * g[j] * g[j]
                        w[j] -= stepSize * m[i][j] / (v[i][j].squareRoot() / bc2s + eps)
                    }
                }
            }
            refTable.zeroGrad()
            let d = Float(EMA.decay(0.9, tau: 1, updates: t))
            for i in sizes.indices {
                let w = refNamed[i].tensor.data
                for j in 0..<sizes[i] { refEma[i][j] = d * refEma[i][j] + (1 - d) * w[j] }
            }
            var squares: [Double] = []
            let outcome = ctx.run {
                setGrads(named)
                return OptimizerStep.run(table: table, optimizer: opt, ema: ema, scaler: &scaler, scaled: false, maxNorm: 50) { squares = $0 }
            }
            #expect(outcome == .stepped(norm: refNorm, clipped: true))
            #expect(squares.count == sizes.count && squares.reduce(0, +).squareRoot() == refNorm)
            for i in sizes.indices {
                // Compared outside #expect: a failing comparison of long arrays would print their diff.
                let same = named[i].tensor.array == refNamed[i].tensor.array, sameEma = ema.pairs[i].ema.array == refEma[i]
                #expect(same, "step \(t), tensor \(i)")
                #expect(sameEma, "EMA, step \(t), tensor \(i)")
            }
        }
    }

    /// Every piece is visited once, whatever the sizes (zeros included) and thread count.
    @Test func piecesVisitEachOnce() {
        for threads in [1, 2, 3, 8] {
            for sizes in [[], [0], [0, 0, 5], [1 << 20, 1, 0, 1 << 16, 3], Array(repeating: 40_000, count: 9), [7, 0]] {
                let ctx = ComputeContext(threads: threads)
                let counts = UnsafeMutablePointer<Int>.allocate(capacity: max(sizes.count, 1))
                counts.initialize(repeating: 0, count: max(sizes.count, 1))
                defer { counts.deallocate() }
                ctx.run { Parallel.pieces(sizes, grain: 1 << 12) { i in counts[i] += 1 } }
                #expect((0..<sizes.count).allSatisfy { counts[$0] == 1 }, "sizes \(sizes), \(threads) threads")
            }
        }
    }

    @Test func autoOptimizerRule() {
        #expect(Optimizer.auto(nc: 1, iterations: 500) == (.adamw, 0.002, 0.9))
        #expect(Optimizer.auto(nc: 80, iterations: 500).lr == 0.000119)
        #expect(Optimizer.auto(nc: 1, iterations: 20000) == (.sgd, 0.01, 0.9))
    }

    func maxAbs(_ a: [Float], _ b: [Float]) -> Float { zip(a, b).map { abs($0 - $1) }.max()! }
}

@Suite struct CheckpointGenerations {
    @Test func generationsOnlyGrowAndAnInterruptedRewriteRollsBack() throws {
        let dir = NSTemporaryDirectory() + "dualfuse_generations_\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = try RunPaths.create(project: dir, name: "run", existOK: false)
        try Checkpoints.commit(p, epoch: 3, files: [(p.last, Data("w3".utf8)), (p.lastState, Data("s3".utf8))])
        #expect(Checkpoints.generation(p) == 1 && Checkpoints.committedEpoch(p) == 3)
        // A rollback re-saves epoch 3's state: a new generation, never the committed one's name.
        try Checkpoints.commit(p, epoch: 3, files: [(p.lastState, Data("s3b".utf8))])
        #expect(Checkpoints.generation(p) == 2 && Checkpoints.committedEpoch(p) == 3)
        // A write of the next generation killed half way: recovery deletes it and keeps generation 2 whole.
        let partial = Checkpoints.temporary(p.lastState, 3)
        FileManager.default.createFile(atPath: partial, contents: Data("half".utf8))
        let note = try Checkpoints.recover(p)
        #expect(note?.contains("removed") == true)
        #expect(!FileManager.default.fileExists(atPath: partial))
        #expect(FileManager.default.contents(atPath: p.lastState) == Data("s3b".utf8))
        #expect(FileManager.default.contents(atPath: p.last) == Data("w3".utf8))
    }

    @Test func markersWithoutAnEpochReadTheGenerationAsTheEpoch() throws {
        let dir = NSTemporaryDirectory() + "dualfuse_old_marker_\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = try RunPaths.create(project: dir, name: "run", existOK: false)
        try Data(#"{"generation": 5, "files": ["last.safetensors"]}"#.utf8).write(to: URL(fileURLWithPath: p.commit))
        #expect(Checkpoints.committedEpoch(p) == 5)
        try Checkpoints.commit(p, epoch: 6, files: [(p.last, Data("w6".utf8))])
        #expect(Checkpoints.generation(p) == 6 && Checkpoints.committedEpoch(p) == 6)
    }
}
