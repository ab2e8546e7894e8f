import ArgumentParser
import Detection
import Export
import Foundation
import NN
import TensorCore

/// `bench onnx`: the exported model's latency in ONNX Runtime beside our own inference on the same input.
struct OnnxBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "onnx",
        abstract: "Export a model (BN folded) to ONNX, time batch-1 inference in ONNX Runtime and in DualFuse.",
        discussion: "Needs a Python with onnxruntime: $DUALFUSE_PYTHON, else .venv/bin/python (see .ci/run).")

    @Option(help: "Model YAML.") var cfg = "configs/models/dual_yolov8n_mid.yaml"
    @Option(help: "Weights (default: random weights of --cfg).") var weights: String?
    @Option(help: "Image size.") var imgsz = 320
    @Option(help: "Timed runs (the median is printed).") var runs = 20
    @OptionGroup var context: ContextOptions

    func run() throws {
        try context.apply()
        let model: DetectionModel
        if let weights { model = try ModelFiles.load(weights: weights).model } else { model = try ModelBuilder.build(try ModelSpec.load(cfg), nc: 1) }
        model.fuse()
        var o = ExportOptions()
        o.imageSize = imgsz
        var exporter = try ONNXExporter(model: model, options: o)
        let path = NSTemporaryDirectory() + "dualfuse-bench-\(getpid()).onnx"
        try Data(try exporter.export(description: "bench").serialized()).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        var rng = RandomState(seed: 1)
        var inputs: [String: Tensor] = [:]
        for s in model.streams { inputs[s.name] = Tensor.uniform([1, s.channels, imgsz, imgsz], rng: &rng) }
        let ours = medianTime(runs: runs) { _ = noGrad { model(inputs).map { $0.decoded() } } }
        let env = ProcessInfo.processInfo.environment
        let python = env["DUALFUSE_PYTHON"] ?? ".venv/bin/python"
        guard FileManager.default.isExecutableFile(atPath: python) else {
            throw ValidationError("no Python with onnxruntime at \(python): set DUALFUSE_PYTHON or create .venv (see .ci/run)")
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: python)
        p.arguments = ["tools/onnx_bench.py", path, "--runs", "\(runs)", "--threads", "\(Parallel.threads)"]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        let json = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
        let ort = json["ms_median"] as? Double ?? .nan
        print(String(format: "inference batch 1, %d px, BN folded (median of %d): DualFuse %.1f ms, ONNX Runtime %@ %.1f ms (ratio %.2f)",
                      imgsz, runs, ours * 1e3, json["onnxruntime"] as? String ?? "?", ort, ours * 1e3 / ort))
    }
}
