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

    /// Bounds on max |ours - PyTorch| / max |PyTorch| (Float32 both; the error is summation order).
    /// Measured 2026-11-28 on Intel Xeon (Emerald Rapids) with each OpenBLAS core forced by
    /// OPENBLAS_CORETYPE (Prescott is what OpenBLAS 0.3.21 picks unguarded on that CPU, Cooperlake
    /// what it picks on Zen 5, Haswell the workplace guard); our C kernels give identical bits on
    /// every level (portable, AVX2, AVX-512), so only the GEMM's order varies:
    ///   eval boxes   v8  1.45e-5 / 2.99e-5 / 1.46e-5    mid 4.30e-5 / 4.02e-5 / 1.33e-4   (Prescott / Haswell / Cooperlake)
    ///   eval scores  v8 <= 5.6e-6, mid <= 4.36e-5;  decoded v8 <= 4.5e-6, mid <= 4.08e-5
    ///   train boxes <= 9.2e-6, train scores <= 2.6e-6 (both models, every core)
    /// and with the convolutions on oneDNN 2.6.3 (avx512_core_amx, 2026-11-29): eval boxes v8 2.85e-5,
    /// mid 4.21e-5; scores 4.0e-6 / 2.25e-5; decoded 5.1e-6 / 1.41e-5; train boxes <= 5.5e-6.
    /// Each bound is about 3x the largest figure of its quantity: another summation order must not
    /// fail the test; a wrong layer (errors of 1e-2 and more) must.
    enum Bound {
        static let evalBoxes = 4e-4
        static let evalScores = 1.5e-4
        static let decoded = 1.5e-4
        static let trainOutputs = 3e-5
    }

    /// Runs `check` with the convolutions on `gemm` (a fresh context: nothing left by other tests).
    func check(_ fixture: String, yaml: String, streams: [String], gemm: GemmBackend) throws {
        if gemm == .onednn { try #require(OneDNN.available, "oneDNN (libdnnl) is installed by tools/install-deps.sh") }
        let ctx = ComputeContext()
        ctx.gemm = gemm
        try ctx.run { try check(fixture, yaml: yaml, streams: streams, label: gemm.rawValue) }
    }

    func check(_ fixture: String, yaml: String, streams: [String], label: String) throws {
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
        #expect(scaledError(e.boxes.array, tensors["eval.boxes"]!.values) < Bound.evalBoxes)
        #expect(scaledError(e.scores.array, tensors["eval.scores"]!.values) < Bound.evalScores)
        let pred = e.decoded()
        print("model parity \(fixture) (\(label)): eval boxes \(scaledError(e.boxes.array, tensors["eval.boxes"]!.values)), scores \(scaledError(e.scores.array, tensors["eval.scores"]!.values)), decoded \(scaledError(pred.array, tensors["eval.pred"]!.values))")
        #expect(pred.shape == tensors["eval.pred"]!.shape)
        #expect(scaledError(pred.array, tensors["eval.pred"]!.values) < Bound.decoded)

        model.training = true
        let t = noGrad { model(inputs)[0] }
        print("model parity \(fixture) (\(label)): train boxes \(scaledError(t.boxes.array, tensors["train.boxes"]!.values)), scores \(scaledError(t.scores.array, tensors["train.scores"]!.values))")
        #expect(scaledError(t.boxes.array, tensors["train.boxes"]!.values) < Bound.trainOutputs)
        #expect(scaledError(t.scores.array, tensors["train.scores"]!.values) < Bound.trainOutputs)
        // Running statistics after one training-mode forward (momentum 0.03, unbiased variance).
        let first = streams.count > 1 ? "rgb.model.0" : "model.0"
        let named = Dictionary(uniqueKeysWithValues: model.namedTensors().map { ($0.name, $0.tensor) })
        for stat in ["running_mean", "running_var"] {
            let key = "\(first).bn.\(stat)"
            #expect(maxRelativeError(named[key]!.array, tensors["train.after.\(key)"]!.values, floor: 1e-3) < 1e-4, "\(key)")
        }
    }

    @Test(arguments: [GemmBackend.packed, .onednn])
    func singleStreamMatchesUltralytics(_ gemm: GemmBackend) throws {
        try check("model_tiny_v8.safetensors", yaml: "yolov8n.yaml", streams: ["rgb"], gemm: gemm)
    }

    @Test(arguments: [GemmBackend.packed, .onednn])
    func midFusionMatchesPyTorch(_ gemm: GemmBackend) throws {
        try check("model_tiny_mid.safetensors", yaml: "dual_yolov8n_mid.yaml", streams: ["rgb", "ir"], gemm: gemm)
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
