import ArgumentParser
import Detection
import Export
import Foundation
import NN
import TensorCore

/// `export`: write a trained model as ONNX for ONNX Runtime, TensorRT, OpenVINO.
@main
struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Export weights as an ONNX model with two inputs (rgb, ir) or one (images) and one output (output0).",
        discussion: """
        The graph computes what `predict` computes before NMS: output0 [N, 4 + nc, A] holds cx, cy, w, h in input
        pixels and a sigmoid score per class for every anchor (Ultralytics' YOLOv8 layout). Inputs are RGB-ordered,
        0-1, letterboxed to --imgsz. Batch norms are folded. IR version 8, opset 17 (ONNX Runtime 1.12 and later).
        Output: beside the weights with the extension .onnx, unless -o names a file.
        """)

    @Option(help: "Weights (.safetensors) written by train_dual or tools/convert_pt.py.") var weights: String
    @Option(help: "Format: onnx.") var format = "onnx"
    @Option(help: "Input size (default: the training size stored in the weights, else 640).") var imgsz: Int?
    @Option(help: "ONNX opset (17).") var opset = 17
    @Flag(help: "Symbolic batch, height and width (anchors computed in the graph).") var dynamic = false
    @Flag(help: "Store the weights as IEEE half (inputs and outputs stay Float32).") var half = false
    @Option(name: .customShort("o"), help: "Output file.") var output: String?
    @Option(help: "Model YAML (default: the one stored in the weights).") var cfg: String?

    func validate() throws {
        guard format.lowercased() == "onnx" else { throw ValidationError("--format \(format): only onnx is supported") }
        guard opset == 17 else { throw ValidationError("--opset \(opset): this exporter writes opset 17 (ONNX Runtime 1.12+ loads it)") }
    }

    func run() throws {
        do {
            let loaded = try ModelFiles.load(weights: weights, cfg: cfg)
            for w in loaded.warnings { FileHandle.standardError.write("warning: \(w)\n".data(using: .utf8)!) }
            let model = loaded.model
            model.fuse()
            let stride = model.strides.max() ?? 32
            let size = try ImageSize.resolve(requested: imgsz, stored: loaded.storedImageSize, stride: stride) {
                FileHandle.standardError.write(($0 + "\n").data(using: .utf8)!)
            }
            var options = ExportOptions()
            options.imageSize = size
            options.dynamic = dynamic
            options.half = half
            options.names = loaded.names
            var exporter = try ONNXExporter(model: model, options: options)
            let file = URL(fileURLWithPath: weights).deletingPathExtension().lastPathComponent
            let onnx = try exporter.export(description: "DualFuse \(URL(fileURLWithPath: model.spec.file).lastPathComponent) (\(file)), \(ONNXExporter.fusion(model)) fusion")
            let out = output ?? URL(fileURLWithPath: weights).deletingPathExtension().path + ".onnx"
            let bytes = onnx.serialized()
            try AtomicFile.write(Data(bytes), to: out)
            let inputs = model.streams.map { s in "\(ONNXExporter.inputNames(model)[s.name]!) [\(dynamic ? "N" : "1"), \(s.channels), \(dynamic ? "H" : "\(size)"), \(dynamic ? "W" : "\(size)")]" }
            print("exported \(out) (\(String(format: "%.1f", Double(bytes.count) / 1e6)) MB, opset 17\(half ? ", half weights" : "")\(dynamic ? ", dynamic" : "")): " +
                  "inputs \(inputs.joined(separator: ", ")); output0 [\(dynamic ? "N" : "1"), \(4 + model.nc), \(dynamic ? "A" : "\(onnx.graph.outputs[0].shape[2])")]")
        } catch let e as ValidationError {
            throw e
        } catch {
            FileHandle.standardError.write("error: \(error)\n".data(using: .utf8)!)
            throw ExitCode(1)
        }
    }
}

extension ONNX.Dim: CustomStringConvertible {
    public var description: String {
        switch self {
        case let .value(v): return String(v)
        case let .param(p): return p
        }
    }
}
