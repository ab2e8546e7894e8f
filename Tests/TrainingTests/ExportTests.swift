import DataPipeline
import Detection
import Export
import Foundation
@testable import NN
import ProtoWire
import Testing
@testable import TensorCore
@testable import Training

/// The Python of the ONNX checks: $DUALFUSE_PYTHON, else the repository's .venv (which .ci/run
/// creates with onnxruntime, onnx and tensorboard).
enum PythonTools {
    static var python: String? {
        if let p = ProcessInfo.processInfo.environment["DUALFUSE_PYTHON"], FileManager.default.isExecutableFile(atPath: p) { return p }
        let venv = repoRoot + "/.venv/bin/python"
        return FileManager.default.isExecutableFile(atPath: venv) ? venv : nil
    }

    /// Runs a tools/ script; returns (status, stdout + stderr).
    static func run(_ script: String, _ args: [String]) throws -> (Int32, String) {
        let py = try #require(python, "no Python with onnxruntime: run .ci/run, or create .venv (python3 -m venv .venv && .venv/bin/pip install onnxruntime onnx tensorboard), or set DUALFUSE_PYTHON")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: py)
        p.arguments = [repoRoot + "/tools/" + script] + args
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return (p.terminationStatus, text)
    }
}

/// Exported models run in ONNX Runtime and agree with our own forward pass: boxes within 1e-3 px,
/// class scores within 1e-4, for every fusion strategy, both scales, several class counts,
/// --dynamic at two sizes, --half, and the Ultralytics-named fixture model.
@Suite struct ExportTests {
    /// A model YAML of configs/models at a reduced width (scale t), built with random weights and
    /// random batch-norm statistics, folded.
    func model(_ file: String, nc: Int, width: Double = 0.125, seed: UInt64) throws -> DetectionModel {
        let text = try String(contentsOfFile: repoRoot + "/configs/models/" + file, encoding: .utf8)
            .replacingOccurrences(of: "scales: # [depth_multiple, width_multiple, max_channels]\n",
                                  with: "scales: # [depth_multiple, width_multiple, max_channels]\n  t: [0.33, \(width), 1024]\n")
        let m = try ModelBuilder.build(try ModelSpec.parse(text, file: file), nc: nc, scale: "t", seed: seed)
        var rng = RandomState(seed: seed + 100)
        for t in m.namedTensors() where t.name.hasSuffix("running_mean") || t.name.hasSuffix("running_var") {
            for i in 0..<t.tensor.count { t.tensor.data[i] = t.name.hasSuffix("var") ? rng.uniform(0.5, 2) : rng.uniform(-0.2, 0.2) }
        }
        m.fuse()
        return m
    }

    /// Our decoded output for `inputs` (heads concatenated along the anchors), on the packed GEMM in
    /// a fresh context (the bounds were measured so; a thread's context may hold what an earlier
    /// test on it set, e.g. oneDNN's convolutions, which sum in another order).
    func forward(_ m: DetectionModel, _ inputs: [String: Tensor]) -> Tensor {
        let ctx = ComputeContext()
        ctx.gemm = .packed
        return ctx.run {
            noGrad {
                let outs = m(inputs).map { $0.decoded() }
                return outs.count == 1 ? outs[0] : Tensor.concat(outs, axis: 2)
            }
        }
    }

    func inputs(_ m: DetectionModel, size: Int, batch: Int = 1, seed: UInt64) -> [String: Tensor] {
        var rng = RandomState(seed: seed)
        var d: [String: Tensor] = [:]
        for s in m.streams { d[s.name] = Tensor.uniform([batch, s.channels, size, size], rng: &rng) }
        return d
    }

    /// Exports, writes the case, runs tools/onnx_check.py; returns its JSON.
    @discardableResult
    func check(_ m: DetectionModel, name: String, size: Int, options: ExportOptions, cases: [[String: Tensor]],
               referenceModel: DetectionModel? = nil, thirdOutput: Tensor? = nil) throws -> [[String: Any]] {
        var exporter = try ONNXExporter(model: m, options: options)
        let onnx = try exporter.export(description: "test \(name)")
        let path = scratch + "/export_\(name).onnx"
        try Data(onnx.serialized()).write(to: URL(fileURLWithPath: path))
        let names = ONNXExporter.inputNames(m)
        var results: [[String: Any]] = []
        for (k, x) in cases.enumerated() {
            let expected = forward(referenceModel ?? m, x)
            var named = x.map { NamedTensor("input." + names[$0.key]!, $0.value, .weight) }
            named.append(NamedTensor("expected.output0", expected, .weight))
            if let thirdOutput { named.append(NamedTensor("reference.output0", thirdOutput, .weight)) }
            let casePath = scratch + "/export_\(name)_case\(k).safetensors"
            try StateDict.save(named, to: casePath)
            let (status, text) = try PythonTools.run("onnx_check.py", [path, casePath])
            let line = text.split(separator: "\n").last.map(String.init) ?? ""
            let json = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] ?? [:]
            print("export \(name) case \(k): max box diff \(json["max_box_diff"] ?? "?") px (bound \(json["box_tol"] ?? "?")), max score diff \(json["max_score_diff"] ?? "?")" +
                  (json["ort_vs_reference_box_diff"].map { "; ONNX Runtime vs PyTorch \($0) px" } ?? ""))
            #expect(status == 0, "\(name) case \(k): \(text)")
            results.append(json)
        }
        return results
    }

    static let variants: [(String, Int)] = [("yolov8n.yaml", 1), ("dual_yolov8n_input.yaml", 2), ("dual_yolov8n_early.yaml", 3),
                                            ("dual_yolov8n_mid.yaml", 2), ("dual_yolov8n_late.yaml", 5), ("dual_yolov8s_mid.yaml", 80)]

    @Test(arguments: 0..<variants.count)
    func everyFusionVariantAgreesWithOurForward(_ i: Int) throws {
        let (file, nc) = ExportTests.variants[i]
        let m = try model(file, nc: nc, width: file.contains("8s") ? 0.0625 : 0.125, seed: UInt64(i))
        var o = ExportOptions()
        o.imageSize = 96
        o.names = (0..<nc).map { "c\($0)" }
        let r = try check(m, name: file.replacingOccurrences(of: ".yaml", with: ""), size: 96, options: o,
                          cases: [inputs(m, size: 96, seed: 7)])
        let meta = r.first?["metadata"] as? [String: String] ?? [:]
        #expect(meta["task"] == "detect" && meta["stride"] == "32" && meta["imgsz"] == "[96, 96]" && meta["batch"] == "1")
        #expect(meta["fusion"] == ONNXExporter.fusion(m))
        #expect(meta["names"]?.hasPrefix("{0: 'c0'") == true, "\(meta["names"] ?? "")")
        let ins = r.first?["inputs"] as? [String: [Int]] ?? [:]
        #expect(Set(ins.keys) == (m.isDual ? ["rgb", "ir"] : ["images"]))
    }

    @Test func dynamicShapesAtTwoSizesAndABatch() throws {
        let m = try model("dual_yolov8n_mid.yaml", nc: 2, seed: 11)
        var o = ExportOptions()
        o.dynamic = true
        o.imageSize = 64
        try check(m, name: "mid_dynamic", size: 64, options: o,
                  cases: [inputs(m, size: 64, seed: 1), inputs(m, size: 128, seed: 2), inputs(m, size: 96, batch: 2, seed: 3)])
    }

    @Test func halfWeightsAgreeWithOurForwardOnHalfRoundedWeights() throws {
        let m = try model("dual_yolov8n_late.yaml", nc: 2, seed: 12)
        // The reference: the same model with every weight rounded through IEEE half.
        let r = try model("dual_yolov8n_late.yaml", nc: 2, seed: 12)
        for t in r.namedTensors() { Half.round(t.tensor.data, count: t.tensor.count) }
        var o = ExportOptions()
        o.half = true
        o.imageSize = 64
        try check(m, name: "late_half", size: 64, options: o, cases: [inputs(m, size: 64, seed: 4)], referenceModel: r)
    }

    /// Its boxes reach 516 px: ONNX Runtime and PyTorch (the fixture's eval.pred) differ there by
    /// 2.7e-3 px, so the box bound is 1.5x that difference (measured 2026-11-28: ours vs ONNX Runtime
    /// 3.4e-3 px, ours vs PyTorch 2.5e-3 px); scores stay within 1e-4 (4.7e-7 measured).
    @Test func ultralyticsNamedFixtureModel() throws {
        let (tensors, meta) = try Safetensors.read(repoRoot + "/Tests/Fixtures/model_tiny_v8.safetensors")
        let text = try String(contentsOfFile: repoRoot + "/configs/models/yolov8n.yaml", encoding: .utf8)
            .replacingOccurrences(of: "scales: # [depth_multiple, width_multiple, max_channels]\n",
                                  with: "scales: # [depth_multiple, width_multiple, max_channels]\n  t: [0.33, 0.0625, 512]\n")
        let m = try ModelBuilder.build(try ModelSpec.parse(text, file: "yolov8n.yaml"), nc: Int(meta["nc"] ?? "2")!, scale: "t")
        let weights = tensors.filter { $0.key.hasPrefix("model.") }
        try StateDict.load(weights, into: m.namedTensors(), strict: true)
        m.fuse()
        var o = ExportOptions()
        o.imageSize = 64
        o.dynamic = true          // the fixture's input is a batch of 2
        let fixtureInput = tensors["input.rgb"]!.tensor
        try check(m, name: "fixture_v8", size: fixtureInput.shape[2], options: o, cases: [["rgb": fixtureInput]],
                  thirdOutput: tensors["eval.pred"]!.tensor)
    }

    @Test func protobufWireBasics() {
        var w = ProtoWriter()
        w.int64(1, 150)
        #expect(w.bytes == [0x08, 0x96, 0x01])
        var n = ProtoWriter()
        n.int64(2, -1)
        #expect(n.bytes == [0x10] + [UInt8](repeating: 0xFF, count: 9) + [0x01], "negative int64 is ten bytes")
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.masked([UInt8](repeating: 0, count: 8)) == 0x0798_0329)
    }
}

/// TensorBoard logs read back by TensorBoard's own EventAccumulator hold results.csv's values.
@Suite struct TensorBoardTests {
    @Test func eventsHoldTheResultsAndTheSteps() throws {
        let project = scratch + "/tb"
        let r = try CLI.run("train_dual", HardeningTests.trainArgs(name: "tb", epochs: 3, project: project, extra: ["--exist-ok"]))
        #expect(r.status == 0, "\(r.output)")
        let dir = project + "/tb"
        let events = try #require(try FileManager.default.contentsOfDirectory(atPath: dir).first { $0.hasPrefix("events.out.tfevents.") })
        let (status, text) = try PythonTools.run("tb_check.py", [dir + "/" + events])
        #expect(status == 0, "\(text)")
        let scalars = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: [[Double]]], "\(text)")
        let rows = try String(contentsOfFile: dir + "/results.csv", encoding: .utf8).split(separator: "\n").map { $0.split(separator: ",").map(String.init) }
        let header = rows[0]
        var compared = 0
        for row in rows.dropFirst() {
            let epoch = Double(row[0])!
            for (k, tag) in header.enumerated().dropFirst() {
                guard let v = Double(row[k]), let series = scalars[tag], let point = series.first(where: { $0[0] == epoch }) else {
                    Issue.record("no TensorBoard value for \(tag) at epoch \(epoch)"); continue
                }
                // results.csv keeps 5 significant digits; the event a Float32.
                #expect(abs(point[1] - v) <= 1e-4 * max(abs(v), 1e-3) + 1e-6, "\(tag) epoch \(epoch): \(point[1]) vs \(v)")
                compared += 1
            }
        }
        #expect(compared == (rows.count - 1) * (header.count - 1))
        let steps = try String(contentsOfFile: dir + "/steps.csv", encoding: .utf8).split(separator: "\n").dropFirst()
            .filter { $0.hasSuffix(",0") }.count
        #expect(scalars["step/loss"]?.count == steps && scalars["step/lr_pg1"]?.count == steps, "one point per optimizer step")
        // --no-tb writes none.
        let off = try CLI.run("train_dual", HardeningTests.trainArgs(name: "tb_off", epochs: 1, project: project, extra: ["--exist-ok", "--no-tb", "--no-val"]))
        #expect(off.status == 0)
        #expect(!(try FileManager.default.contentsOfDirectory(atPath: project + "/tb_off")).contains { $0.hasPrefix("events.") })
    }
}

/// What Ultralytics' val writes, written by val_dual and at the end of train_dual.
@Suite struct ValidationOutputTests {
    @Test func valDualWritesPlotsTablesAndCOCOJSON() throws {
        let out = scratch + "/valout"
        let r = try CLI.run("val_dual", ["--weights", HardeningTests.weights, "--data", HardeningTests.data, "--project", out, "--name", "v",
                                         "--exist-ok", "--save-json", "--batch", "4"])
        #expect(r.status == 0, "\(r.output)")
        let dir = out + "/v/"
        for f in ["confusion_matrix.png", "confusion_matrix_normalized.png", "PR_curve.png", "F1_curve.png", "P_curve.png", "R_curve.png",
                  "per_class.csv", "predictions.json", "val_batch0_labels.jpg", "val_batch0_pred.jpg", "val_batch1_labels.jpg"] {
            #expect(FileManager.default.fileExists(atPath: dir + f), "\(f) missing")
        }
        let png = try ImageIO.read(dir + "confusion_matrix.png", channels: 3)
        #expect(png.width > 100 && png.height > 100)
        let csv = try String(contentsOfFile: dir + "per_class.csv", encoding: .utf8).split(separator: "\n")
        #expect(csv[0] == "class,images,instances,precision,recall,f1,mAP50,mAP50-95" && csv[1].hasPrefix("all,8,"))
        let records = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "predictions.json"))) as? [[String: Any]])
        #expect(!records.isEmpty)
        for rec in records.prefix(20) {
            let bbox = rec["bbox"] as? [Double] ?? []
            #expect(bbox.count == 4 && bbox[2] >= 0 && bbox[3] >= 0 && [1, 2].contains(rec["category_id"] as? Int ?? 0))
            #expect(rec["image_id"] != nil && (rec["score"] as? Double ?? -1) >= 0)
        }
    }

    @Test func trainDualWritesBatchImagesAndFinalPlots() throws {
        let r = try CLI.run("train_dual", HardeningTests.trainArgs(name: "plots", epochs: 1, extra: ["--exist-ok"]).filter { $0 != "--no-plots" })
        #expect(r.status == 0, "\(r.output)")
        let dir = scratch + "/runs/plots/"
        for f in ["train_batch0.jpg", "train_batch1.jpg", "train_batch2.jpg", "confusion_matrix.png", "PR_curve.png", "per_class.csv",
                  "val_batch0_pred.jpg", "results.png"] {
            #expect(FileManager.default.fileExists(atPath: dir + f), "\(f) missing")
        }
    }
}
