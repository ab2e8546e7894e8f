import Foundation
import Testing
import _TestSupport
@testable import Detection
@testable import NN
import TensorCore

/// Golden parity with Ultralytics 8.4 / PyTorch: fixtures written by tools/golden/make_model_fixtures.py
/// hold a tiny-width model's weights (Ultralytics names), a fixed input and its outputs.
@Suite(.serialized) struct UltralyticsParity {
    /// Our YAML with the fixture's tiny width scale added.
    func tinySpec(_ file: String) throws -> ModelSpec {
        let text = try String(contentsOfFile: modelPath(file), encoding: .utf8)
            .replacingOccurrences(of: "scales: # [depth_multiple, width_multiple, max_channels]\n",
                                  with: "scales: # [depth_multiple, width_multiple, max_channels]\n  t: [0.33, 0.0625, 512]\n")
        return try ModelSpec.parse(text, file: file)
    }

    /// max |a - b| / max |b|: error relative to the tensor's scale.
    func scaledError(_ a: [Float], _ b: [Float]) -> Double {
        precondition(a.count == b.count)
        let scale = Double(b.map { abs($0) }.max() ?? 1)
        var e = 0.0
        for i in 0..<a.count { e = max(e, Double(abs(a[i] - b[i]))) }
        return e / max(scale, 1e-12)
    }

    func check(_ fixture: String, yaml: String, streams: [String]) throws {
        let (tensors, meta) = try Safetensors.read(fixturePath(fixture))
        let model = try ModelBuilder.build(try tinySpec(yaml), nc: Int(meta["nc"] ?? "2")!, scale: "t")
        let weights = tensors.filter { !$0.key.hasPrefix("input.") && !$0.key.hasPrefix("eval.") && !$0.key.hasPrefix("train.") }
        let report = try StateDict.load(weights, into: model.namedTensors(), strict: true, fileName: fixture)
        #expect(report.isExact)
        #expect(model.parameterCount == Int(meta["param_count"] ?? "0"))
        var inputs: [String: Tensor] = [:]
        for s in streams { inputs[s] = tensors["input.\(s)"]!.tensor }

        model.training = false
        let e = noGrad { model(inputs)[0] }
        #expect(scaledError(e.boxes.array, tensors["eval.boxes"]!.values) < 1e-4)
        #expect(scaledError(e.scores.array, tensors["eval.scores"]!.values) < 1e-4)
        let pred = e.decoded()
        print("model parity \(fixture): eval boxes \(scaledError(e.boxes.array, tensors["eval.boxes"]!.values)), scores \(scaledError(e.scores.array, tensors["eval.scores"]!.values)), decoded \(scaledError(pred.array, tensors["eval.pred"]!.values))")
        #expect(pred.shape == tensors["eval.pred"]!.shape)
        #expect(scaledError(pred.array, tensors["eval.pred"]!.values) < 1e-4)

        model.training = true
        let t = noGrad { model(inputs)[0] }
        print("model parity \(fixture): train boxes \(scaledError(t.boxes.array, tensors["train.boxes"]!.values)), scores \(scaledError(t.scores.array, tensors["train.scores"]!.values))")
        #expect(scaledError(t.boxes.array, tensors["train.boxes"]!.values) < 1e-4)
        #expect(scaledError(t.scores.array, tensors["train.scores"]!.values) < 1e-4)
        // Running statistics after one training-mode forward (momentum 0.03, unbiased variance).
        let first = streams.count > 1 ? "rgb.model.0" : "model.0"
        let named = Dictionary(uniqueKeysWithValues: model.namedTensors().map { ($0.name, $0.tensor) })
        for stat in ["running_mean", "running_var"] {
            let key = "\(first).bn.\(stat)"
            #expect(maxRelativeError(named[key]!.array, tensors["train.after.\(key)"]!.values, floor: 1e-3) < 1e-4, "\(key)")
        }
    }

    @Test func singleStreamMatchesUltralytics() throws {
        try check("model_tiny_v8.safetensors", yaml: "yolov8n.yaml", streams: ["rgb"])
    }

    @Test func midFusionMatchesPyTorch() throws {
        try check("model_tiny_mid.safetensors", yaml: "dual_yolov8n_mid.yaml", streams: ["rgb", "ir"])
    }

    @Test func stateDictNamesAreUltralytics() throws {
        // Every name and shape of Ultralytics' state_dict for the same YAML, and nothing else.
        let (tensors, _) = try Safetensors.read(fixturePath("model_tiny_v8.safetensors"))
        let theirs = tensors.filter { $0.key.hasPrefix("model.") }.mapValues(\.shape)
        let model = try ModelBuilder.build(try tinySpec("yolov8n.yaml"), nc: 2, scale: "t")
        let ours = Dictionary(uniqueKeysWithValues: model.namedTensors().map { ($0.name, $0.tensor.shape) })
        #expect(Set(ours.keys) == Set(theirs.keys))
        for (k, s) in ours { #expect(theirs[k] == s, "\(k)") }
        #expect(ours["model.22.dfl.conv.weight"] == [1, 16, 1, 1])
        #expect(ours["model.22.cv2.0.0.conv.weight"] != nil)
    }
}
