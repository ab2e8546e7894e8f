import DataPipeline
import Detection
import Foundation
import NN
import TensorCore
@testable import Training
import XCTest

/// Training on generated synthetic RGB-IR scenes at 128 px with reduced-width models.
/// Deterministic for a thread count; together they take a few minutes on 2 cores.
final class LearningTests: XCTestCase {
    /// Validates saved weights on a data set's val split; returns (all, night-or-distractor) mAP50.
    func evaluate(_ weights: String, data: String) throws -> ValidationReport {
        let m = try ModelFiles.load(weights: weights)
        var cfg = try DatasetConfig.load(path: data)
        cfg.irChannels = m.model.streams.first { $0.name == "ir" }?.channels ?? 1
        let ds = try PairedDataset(config: cfg, split: .val)
        let loader = try PairLoader(dataset: ds, options: LoaderOptions(mode: .val, imageSize: 128, batchSize: 32, stride: 32))
        return try Validator().run(model: m.model, loader: loader, loss: nil, names: m.names)
    }

    /// A data YAML whose val split holds only the night and distractor scenes of `data`'s val split.
    func hardScenes(of data: String) throws -> String {
        let root = URL(fileURLWithPath: data).deletingLastPathComponent().path
        let files = try FileManager.default.contentsOfDirectory(atPath: root + "/images/val").sorted()
            .filter { $0.contains("_night") || $0.contains("_distract") }.map { root + "/images/val/" + $0 }
        try (files.joined(separator: "\n") + "\n").write(toFile: root + "/hard.txt", atomically: true, encoding: .utf8)
        let yaml = "path: \(root)\ntrain: images/train\nval: hard.txt\nnames: {0: person, 1: car}\nir_channels: 1\n"
        try yaml.write(toFile: root + "/hard.yaml", atomically: true, encoding: .utf8)
        return root + "/hard.yaml"
    }

    /// The same 8-epoch recipe (mid fusion at width 0.125, 256 synthetic pairs at 128 px) per
    /// (precision, seed), trained once per process and shared by the tests below.
    static let runs = RunCache()

    func learn(_ precision: Precision, seed: Int, gemm: GemmBackend = .packed) throws -> TrainSummary {
        let name = "learn_\(precision.rawValue)_\(seed)" + (gemm == .packed ? "" : "_\(gemm.rawValue)")
        return try LearningTests.runs.get(name) {
            let data = TestData.synthetic("learn", train: 256, val: 64, seed: 0)
            var o = TestData.options(data: data, model: "dual_yolov8n_mid.yaml", name: name, epochs: 8)
            o.hyp.seed = seed
            o.hyp.amp = precision
            o.gemm = gemm
            return try Trainer(o).run()
        }
    }

    /// A single-stream model on the same data and recipe (per-epoch validation off).
    func singleStream(_ model: String) throws -> TrainSummary {
        try LearningTests.runs.get(model) {
            let data = TestData.synthetic("learn", train: 256, val: 64, seed: 0)
            var o = TestData.options(data: data, model: model, name: "learn_" + model, epochs: 8)
            o.hyp.val = false
            return try Trainer(o).run()
        }
    }

    /// FP32's own spread over seeds 0-2 of the recipe (at least 0.02).
    func fp32Spread() throws -> Double {
        let v = try [0, 1, 2].map { try XCTUnwrap(learn(.fp32, seed: $0).final).metrics.map50 }
        return max(v.max()! - v.min()!, 0.02)
    }

    /// Issue 12: the same scenes seen by a misregistered IR camera (scale 0.92, shift (6, -5) px,
    /// IR -> RGB). Given the matrix (ir_homography) the recipe reaches the registered set's mAP50
    /// within FP32's spread plus 0.02; without it, clearly less (at least 0.05 below).
    func testMisregisteredCamerasLearnWhenTheMatrixIsGiven() throws {
        let h = Matrix3([0.92, 0, 6, 0, 0.92, -5, 0, 0, 1])
        let dir = scratch + "/learn_misreg"
        if !FileManager.default.fileExists(atPath: dir + "/data.yaml") {
            var o = SyntheticOptions(width: 128, height: 128)
            o.irToRGB = h
            _ = try SyntheticScenes.writeDataset(to: dir, train: 256, val: 64, imageSize: 128, seed: 0, options: o)
        }
        let yaml = try String(contentsOfFile: dir + "/data.yaml", encoding: .utf8)
        try (yaml + "ir_homography: [[0.92, 0, 6], [0, 0.92, -5], [0, 0, 1]]\n").write(toFile: dir + "/registered.yaml", atomically: true, encoding: .utf8)
        func run(_ data: String, _ name: String) throws -> Double {
            let o = TestData.options(data: data, model: "dual_yolov8n_mid.yaml", name: name, epochs: 8)
            return try XCTUnwrap(try Trainer(o).run().final).metrics.map50
        }
        let registered = try XCTUnwrap(learn(.fp32, seed: 0).final).metrics.map50
        let withMatrix = try run(dir + "/registered.yaml", "misreg_with_matrix")
        let without = try run(dir + "/data.yaml", "misreg_without")
        let spread = try fp32Spread()
        print(String(format: "misregistered IR: mAP50 %.4f with ir_homography, %.4f without; registered cameras %.4f (FP32 spread %.4f)",
                     withMatrix, without, registered, spread))
        XCTAssertLessThanOrEqual(abs(withMatrix - registered), spread + 0.02)
        XCTAssertLessThanOrEqual(without, withMatrix - 0.05, "without the matrix the misregistered IR should cost accuracy")
    }

    /// Issue 12: with modality_dropout 0.15 the model stays useful with a camera dark and costs
    /// nothing with both streams (within FP32's spread plus 0.02 of the model trained without it).
    ///
    /// On this synthetic set the RGB stream alone learns almost nothing in 8 epochs (an RGB-only
    /// model: mAP50 0.0025), so "IR dark" can only be held to that (at least 0.8x of it). The side
    /// that can fail is "RGB dark": at least 0.9x the mAP50 of an IR-only model trained as long.
    /// Measured (2026-11-29, packed GEMM): RGB dark 0.7833 against IR-only 0.7885. The model trained
    /// without dropout reached 0.7646 with RGB dark, so this data does not show what dropout adds;
    /// it shows that the fused model does not collapse when a stream goes dark.
    func testModalityDropoutKeepsTheModelUsefulWithACameraDark() throws {
        let data = TestData.synthetic("learn", train: 256, val: 64, seed: 0)
        var o = TestData.options(data: data, model: "dual_yolov8n_mid.yaml", name: "learn_dropout", epochs: 8)
        o.hyp.modality_dropout = 0.15
        let run = try Trainer(o).run()
        let weights = run.runDirectory + "/weights/last.safetensors"
        func map(_ w: String, blank: String?) throws -> Double {
            let m = try ModelFiles.load(weights: w)
            var cfg = try DatasetConfig.load(path: data)
            cfg.irChannels = m.model.streams.first { $0.name == "ir" }?.channels ?? 1
            let loader = try PairLoader(dataset: try PairedDataset(config: cfg, split: .val),
                                        options: LoaderOptions(mode: .val, imageSize: 128, batchSize: 32, stride: 32))
            var v = Validator()
            v.blank = blank
            return try v.run(model: m.model, loader: loader, loss: nil, names: m.names).metrics.map50
        }
        let both = try map(weights, blank: nil), irDark = try map(weights, blank: "ir"), rgbDark = try map(weights, blank: "rgb")
        let rgbOnly = try map(try singleStream("yolov8n.yaml").runDirectory + "/weights/last.safetensors", blank: nil)
        let irOnly = try map(try singleStream("ir_yolov8n.yaml").runDirectory + "/weights/last.safetensors", blank: nil)
        let plain = try learn(.fp32, seed: 0)
        let noDropout = try XCTUnwrap(plain.final).metrics.map50
        let plainWeights = plain.runDirectory + "/weights/last.safetensors"
        let plainRGBDark = try map(plainWeights, blank: "rgb"), plainIRDark = try map(plainWeights, blank: "ir")
        let spread = try fp32Spread()
        print(String(format: "modality_dropout 0.15: mAP50 %.4f both streams, %.4f IR dark, %.4f RGB dark; RGB-only model %.4f, IR-only model %.4f; " +
                     "no dropout %.4f (IR dark %.4f, RGB dark %.4f; spread %.4f)",
                     both, irDark, rgbDark, rgbOnly, irOnly, noDropout, plainIRDark, plainRGBDark, spread))
        XCTAssertGreaterThanOrEqual(rgbDark, 0.9 * irOnly, "RGB camera dark against an IR-only model")
        XCTAssertGreaterThanOrEqual(irDark, 0.8 * rgbOnly)
        XCTAssertLessThanOrEqual(abs(both - noDropout), spread + 0.02)
    }

    /// (a) loss falls and val mAP50 >= 0.5 after a few epochs; (b) on night and distractor scenes
    /// of a val set generated with another seed, mid fusion beats RGB-only and IR-only by >= 0.10 mAP50.
    func testMidFusionLearnsAndBeatsEachSingleStream() throws {
        let data = TestData.synthetic("learn", train: 256, val: 64, seed: 0)
        let other = TestData.synthetic("learn_val", train: 8, val: 128, seed: 99)
        let hard = try hardScenes(of: other)
        var hardMAP: [String: Double] = [:]
        for model in ["yolov8n.yaml", "ir_yolov8n.yaml"] {
            let summary = try singleStream(model)
            hardMAP[model] = try evaluate(summary.runDirectory + "/weights/last.safetensors", data: hard).metrics.map50
        }
        let summary = try learn(.fp32, seed: 0)
        hardMAP["dual_yolov8n_mid.yaml"] = try evaluate(summary.runDirectory + "/weights/last.safetensors", data: hard).metrics.map50
        // (a) the loss falls over training and the own val split is learnt.
        let h = summary.lossHistory, k = max(h.count / 8, 1)
        let first = h.prefix(k).reduce(0, +) / Double(k), last = h.suffix(k).reduce(0, +) / Double(k)
        XCTAssertLessThan(last, 0.6 * first, "training loss should fall: first \(first), last \(last)")
        let own = try XCTUnwrap(summary.final)
        XCTAssertGreaterThanOrEqual(own.metrics.map50, 0.5, "val mAP50 after 8 epochs")
        let csv = try String(contentsOfFile: summary.runDirectory + "/results.csv", encoding: .utf8)
        XCTAssertEqual(csv.split(separator: "\n").count, 9, "header + one row per epoch")
        print("night+distractor mAP50: \(hardMAP)")
        let mid = hardMAP["dual_yolov8n_mid.yaml"]!, rgb = hardMAP["yolov8n.yaml"]!, ir = hardMAP["ir_yolov8n.yaml"]!
        XCTAssertGreaterThanOrEqual(mid - rgb, 0.10, "mid \(mid) vs RGB-only \(rgb)")
        XCTAssertGreaterThanOrEqual(mid - ir, 0.10, "mid \(mid) vs IR-only \(ir)")
    }

    /// Mixed precision learns as FP32 does, judged against FP32's own run-to-run spread.
    ///
    /// One run per precision tells nothing: two FP32 runs that differ only in rounding (another
    /// OpenBLAS core) ended 0.94 and 0.99. Measured with `bench learn` over 5 seeds (2026-11-28,
    /// Emerald Rapids, packed GEMM; final val mAP50): FP32 0.985 0.986 0.979 0.961 0.980 (mean
    /// 0.978, spread 0.025); fp16 0.986 0.984 0.987 0.977 0.840 (seed 4 was still learning: 0.89 at
    /// epoch 7, its training loss normal); bf16 0.989 0.974 0.970 0.917 0.985. The test
    /// takes seeds 0-2 of each precision: the AMP mean must lie within FP32's spread over those
    /// seeds (at least 0.02) plus a margin of 0.02 of the FP32 mean, and every run must learn (>= 0.8).
    /// FP32 with the convolutions on oneDNN (train_dual's default where libdnnl runs; its own
    /// summation order) is judged the same way. bf16 runs as train_dual runs it (see below);
    /// 2026-12-06, Zen 3 (AVX2, oneDNN without bfloat16 convolutions, so on its Float32 primitives):
    /// FP32 0.9777 0.9525 0.9871; bf16 on oneDNN's Float32 primitives 0.9817 0.9557 0.9892 (on the
    /// packed GEMM, before: 0.9671 0.9774 0.9596). Measured 2026-11-29 (Emerald Rapids, oneDNN 2.6.3):
    /// FP32 on oneDNN 0.9851 0.9726 0.9742 against packed FP32's seeds.
    func testMixedPrecisionLearnsAsFP32() throws {
        let seeds = [0, 1, 2]
        func finals(_ p: Precision) throws -> [Double] { try seeds.map { try XCTUnwrap(learn(p, seed: $0).final).metrics.map50 } }
        let fp32 = try finals(.fp32)
        let spread = max(fp32.max()! - fp32.min()!, 0.02)
        let mean32 = fp32.reduce(0, +) / 3
        // bf16 as train_dual runs it: on oneDNN where libdnnl runs (its bfloat16 primitives, or where
        // it has none its Float32 ones on rounded operands), else the packed GEMM.
        var variants: [(name: String, precision: Precision, gemm: GemmBackend)] = [("fp16", .fp16, .packed), ("bf16", .bf16, .toolDefault)]
        if OneDNN.available { variants.append(("FP32 on oneDNN", .fp32, .onednn)) }
        for v in variants {
            let amp = try seeds.map { try XCTUnwrap(learn(v.precision, seed: $0, gemm: v.gemm).final).metrics.map50 }
            let mean = amp.reduce(0, +) / 3
            print(String(format: "val mAP50 over seeds %@: FP32 %@ (mean %.4f, spread %.4f), %@ %@ (mean %.4f)", "\(seeds)",
                         fp32.map { String(format: "%.4f", $0) }.joined(separator: " "), mean32, spread, v.name,
                         amp.map { String(format: "%.4f", $0) }.joined(separator: " "), mean))
            XCTAssertLessThanOrEqual(abs(mean - mean32), spread + 0.02, "\(v.name) mean \(mean) vs FP32 mean \(mean32) (spread \(spread))")
            for (seed, m) in zip(seeds, amp) { XCTAssertGreaterThanOrEqual(m, 0.8, "\(v.name) seed \(seed) did not learn") }
        }
    }

    /// Issue 11's end-to-end check: the trained mid-fusion run exported by `export` runs in ONNX
    /// Runtime with two inputs, and its boxes after NMS are predict's for the same pair.
    func testExportedRunMatchesPredictAfterNMS() throws {
        let run = try learn(.fp32, seed: 0)
        let weights = run.runDirectory + "/weights/best.safetensors", onnx = scratch + "/learn_mid.onnx"
        let e = try CLI.run("export", ["--weights", weights, "-o", onnx])
        XCTAssertEqual(e.status, 0, e.output)
        let valDir = scratch + "/learn/images/val/"
        let name = try XCTUnwrap(FileManager.default.contentsOfDirectory(atPath: valDir).sorted().first { $0.contains("_night") })
        let p = try CLI.run("predict", ["--weights", weights, "--source", valDir + name, "--project", scratch + "/pred", "--name", "onnx_cmp", "--exist-ok"])
        XCTAssertEqual(p.status, 0, p.output)
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: scratch + "/pred/onnx_cmp/predictions.json"))) as! [String: Any]
        let predicted = ((json["images"] as! [[String: Any]])[0]["detections"] as! [[String: Any]])
        XCTAssertFalse(predicted.isEmpty, "the trained model finds the objects of a night scene")
        // The inputs predict builds: each stream letterboxed to the stored size, CHW, 0-1.
        let loaded = try ModelFiles.load(weights: weights)
        loaded.model.fuse()
        let size = loaded.storedImageSize ?? 128
        let rgb = try ImageIO.read(valDir + name, channels: 3)
        let ir = try ImageIO.read(valDir.replacingOccurrences(of: "/images/", with: "/imagesIR/") + name, channels: 1)
        let info = Letterbox.plan(width: rgb.width, height: rgb.height, targetWidth: size, targetHeight: size, stride: 32)
        func tensor(_ img: RasterImage) -> Tensor {
            let lb = Letterbox.apply(img, info)
            let t = Tensor(uninitialized: [1, lb.channels, lb.height, lb.width])
            lb.writeCHW(to: t.data)
            return t
        }
        let inputs = ["rgb": tensor(rgb), "ir": tensor(ir)]
        let ours = noGrad { loaded.model(inputs)[0].decoded() }
        let casePath = scratch + "/learn_mid_case.safetensors", outPath = scratch + "/learn_mid_ort.bin"
        try StateDict.save([NamedTensor("input.rgb", inputs["rgb"]!, .weight), NamedTensor("input.ir", inputs["ir"]!, .weight),
                            NamedTensor("expected.output0", ours, .weight)], to: casePath)
        let (status, text) = try PythonTools.run("onnx_check.py", [onnx, casePath, "--save", outPath])
        XCTAssertEqual(status, 0, text)
        print("exported mid fusion vs our forward: \(text.split(separator: "\n").last ?? "")")
        let raw = try Data(contentsOf: URL(fileURLWithPath: outPath))
        let values = raw.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        let ort = Tensor(values, shape: ours.shape)
        let dets = DetectionMerge.nms.merge([ort], options: NMSOptions(confidence: 0.25, iou: 0.7, maxDetections: 300))[0]
        XCTAssertEqual(dets.count, predicted.count, "ONNX Runtime + NMS vs predict")
        for (d, q) in zip(dets, predicted) {
            let v = Letterbox.scaleBoxes([d.box.x1, d.box.y1, d.box.x2, d.box.y2], info)
            let box = (q["box"] as! [Double]).map(Float.init)
            XCTAssertEqual(d.classIndex, q["class"] as? Int)
            XCTAssertEqual(Double(d.confidence), q["confidence"] as! Double, accuracy: 1e-4)
            for k in 0..<4 { XCTAssertEqual(v[k], box[k], accuracy: 1e-2, "box coordinate \(k)") }
        }
    }

    /// (c) a run resumed from a mid-run checkpoint reproduces the uninterrupted run's next epoch bit for bit.
    func testResumeReproducesTheNextEpochExactly() throws {
        let data = TestData.synthetic("resume", train: 48, val: 16, seed: 3)
        var a = TestData.options(data: data, model: "dual_yolov8n_mid.yaml", name: "uninterrupted", epochs: 3, batch: 8)
        a.hyp.accumulate = 4          // 6 batches an epoch: gradients are pending across the epoch boundary
        a.hyp.amp = .fp16             // the scaler state must survive too
        a.gemm = .toolDefault         // train_dual's default: oneDNN's convolutions where libdnnl runs
        let full = try Trainer(a).run()
        var b = a
        b.name = "interrupted"
        b.stopAfterEpochs = 2         // a kill after epoch 2 (checkpoints are written at every epoch end)
        _ = try Trainer(b).run()
        var c = TrainOptions(data: "", cfg: "")
        c.resume = scratch + "/runs/interrupted"
        c.verbose = false
        let resumed = try Trainer(c).run()
        XCTAssertEqual(resumed.epochs, 3)
        let (x, _) = try Safetensors.read(full.runDirectory + "/weights/last.state.safetensors")
        let (y, _) = try Safetensors.read(resumed.runDirectory + "/weights/last.state.safetensors")
        XCTAssertEqual(Set(x.keys), Set(y.keys))
        var differing: [String] = []
        for (k, v) in x where v.values != y[k]!.values { differing.append(k) }
        XCTAssertEqual(differing.count, 0, "\(differing.count) tensors differ after resume, e.g. \(differing.sorted().prefix(5))")
        // The epoch-3 rows of results.csv agree except the wall time.
        func row3(_ dir: String) throws -> [Substring] {
            let rows = try String(contentsOfFile: dir + "/results.csv", encoding: .utf8).split(separator: "\n")
            var cols = rows[3].split(separator: ",")
            cols.remove(at: 1)          // time
            cols.removeLast()           // data wait fraction
            return cols
        }
        XCTAssertEqual(try row3(full.runDirectory), try row3(resumed.runDirectory))
    }
}

/// Training summaries by key, computed once per process (XCTest runs these tests one by one).
final class RunCache: @unchecked Sendable {
    private var done: [String: TrainSummary] = [:]
    private let lock = NSLock()
    func get(_ key: String, _ make: () throws -> TrainSummary) throws -> TrainSummary {
        if let s = lock.withLock({ done[key] }) { return s }
        let s = try make()
        lock.withLock { done[key] = s }
        return s
    }
}
