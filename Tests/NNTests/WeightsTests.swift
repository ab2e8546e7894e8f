import Foundation
import Testing
import _TestSupport
@testable import Detection
@testable import NN
import TensorCore

@Suite struct SafetensorsFormat {
    @Test func roundTripF32F16I64AndMetadata() throws {
        let a = Tensor([1.5, -2, 3.25, 65504, 1e-8, 0], shape: [2, 3])
        let b = Tensor([0.1, 0.2, 0.3], shape: [3])
        let n = Tensor([42], shape: [])
        let path = NSTemporaryDirectory() + "rt_\(getpid()).safetensors"
        defer { unlink(path) }
        let entries = [Safetensors.Entry(name: "a", shape: a.shape, values: UnsafeBufferPointer(start: a.data, count: a.count)),
                       Safetensors.Entry(name: "b.half", shape: b.shape, values: UnsafeBufferPointer(start: b.data, count: b.count), dtype: "F16"),
                       Safetensors.Entry(name: "n", shape: [], values: UnsafeBufferPointer(start: n.data, count: 1), dtype: "I64")]
        try withExtendedLifetime([a, b, n]) {
            try Safetensors.write(entries, metadata: ["yaml": "nc: 1\nnames: [\"a\\b\"]", "nc": "1"], to: path)
        }
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let headerLength = data.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        #expect((8 + headerLength) % 8 == 0, "data section is 8-byte aligned")
        let (t, meta) = try Safetensors.read(path)
        #expect(t["a"]!.values == a.array && t["a"]!.shape == [2, 3] && t["a"]!.dtype == "F32")
        #expect(t["b.half"]!.dtype == "F16" && t["b.half"]!.values == Half.decode(Half.encode(b.array)))
        #expect(t["n"]!.dtype == "I64" && t["n"]!.values == [42] && t["n"]!.shape == [])
        #expect(meta["yaml"] == "nc: 1\nnames: [\"a\\b\"]" && meta["nc"] == "1")
    }

    @Test func malformedFilesAreErrorsNamingTheFile() throws {
        let path = NSTemporaryDirectory() + "bad_\(getpid()).safetensors"
        defer { unlink(path) }
        try Data([200, 0, 0, 0, 0, 0, 0, 0, 0x7B]).write(to: URL(fileURLWithPath: path))
        #expect(throws: SafetensorsError.self) { try Safetensors.read(path) }
        do { _ = try Safetensors.read(path) } catch { #expect("\(error)".contains(path)) }
        #expect(throws: SafetensorsError.self) { try Safetensors.read("/nonexistent/x.safetensors") }
    }

    @Test func modelRoundTripIsExact() throws {
        let m = try buildModel("dual_yolov8n_mid.yaml", seed: 1)
        let path = NSTemporaryDirectory() + "mid_\(getpid()).safetensors"
        defer { unlink(path) }
        try StateDict.save(m.namedTensors(), metadata: ["yaml": m.spec.text], to: path)
        let other = try buildModel("dual_yolov8n_mid.yaml", seed: 2)
        let (t, meta) = try Safetensors.read(path)
        let report = try StateDict.load(t, into: other.namedTensors(), strict: true)
        #expect(report.isExact && report.copied.count == m.namedTensors().count)
        #expect(meta["yaml"] == m.spec.text)
        for (x, y) in zip(m.namedTensors(), other.namedTensors()) { #expect(x.tensor.array == y.tensor.array, "\(x.name)") }
        // Dual-stream names are prefixed per branch.
        let names = Set(m.namedTensors().map(\.name))
        #expect(names.contains("rgb.model.0.conv.weight") && names.contains("ir.model.9.cv2.bn.running_var"))
        #expect(names.contains("fuse.1.conv.weight") && names.contains("model.22.dfl.conv.weight"))
    }
}

@Suite struct PartialLoading {
    @Test func singleStreamCheckpointFillsBothBranchesOfAMidModel() throws {
        let single = try buildModel("yolov8n.yaml", nc: 1, seed: 3)
        let path = NSTemporaryDirectory() + "v8n_\(getpid()).safetensors"
        defer { unlink(path) }
        try StateDict.save(single.namedTensors(), to: path)
        let dual = try buildModel("dual_yolov8n_mid.yaml", nc: 1, seed: 4)
        let (t, _) = try Safetensors.read(path)
        #expect(throws: StateDictError.self) { try StateDict.load(t, into: dual.namedTensors(), strict: true, streamPrefixes: ["rgb", "ir"]) }
        let report = try StateDict.load(t, into: dual.namedTensors(), strict: false, streamPrefixes: ["rgb", "ir"])
        let src = Dictionary(uniqueKeysWithValues: single.namedTensors().map { ($0.name, $0.tensor) })
        let dst = Dictionary(uniqueKeysWithValues: dual.namedTensors().map { ($0.name, $0.tensor) })
        // Both backbones copied from model.0-9, the head by its own names.
        #expect(dst["rgb.model.4.cv1.conv.weight"]!.array == src["model.4.cv1.conv.weight"]!.array)
        #expect(dst["ir.model.4.cv1.conv.weight"]!.array == src["model.4.cv1.conv.weight"]!.array)
        #expect(dst["model.22.cv3.2.2.bias"]!.array == src["model.22.cv3.2.2.bias"]!.array)
        // The 1-channel IR stem is the RGB stem summed over its input channels.
        let rgbStem = src["model.0.conv.weight"]!, irStem = dst["ir.model.0.conv.weight"]!
        #expect(irStem.shape == [16, 1, 3, 3])
        for o in 0..<16 { for j in 0..<9 {
            let s = (0..<3).reduce(Float(0)) { $0 + rgbStem.data[(o * 3 + $1) * 9 + j] }
            #expect(abs(irStem.data[o * 9 + j] - s) < 1e-6)
        } }
        #expect(report.adapted.map(\.target) == ["ir.model.0.conv.weight"])
        // Only the three fusion convolutions are new.
        #expect(Set(report.missing.map { $0.split(separator: ".").prefix(2).joined(separator: ".") }) == ["fuse.1", "fuse.3", "fuse.5"])
        #expect(report.unexpected.isEmpty && report.misshaped.isEmpty)
        #expect("\(report)".contains("adapted ir.model.0.conv.weight <- model.0.conv.weight"))
    }

    @Test func misshapedTensorsAreReportedByName() throws {
        let a = try buildModel("yolov8n.yaml", nc: 1)
        let b = try buildModel("yolov8n.yaml", nc: 3)
        let path = NSTemporaryDirectory() + "nc_\(getpid()).safetensors"
        defer { unlink(path) }
        try StateDict.save(a.namedTensors(), to: path)
        let (t, _) = try Safetensors.read(path)
        let report = try StateDict.load(t, into: b.namedTensors(), strict: false)
        #expect(report.misshaped.map(\.name).sorted() == ["model.22.cv3.0.2.bias", "model.22.cv3.0.2.weight", "model.22.cv3.1.2.bias",
                                                          "model.22.cv3.1.2.weight", "model.22.cv3.2.2.bias", "model.22.cv3.2.2.weight"])
        do {
            try StateDict.load(t, into: b.namedTensors(), strict: true, fileName: "v8n.safetensors")
            Issue.record("strict load of mis-shaped weights did not throw")
        } catch {
            #expect("\(error)".contains("v8n.safetensors"))
            #expect("\(error)".contains("mis-shaped: model.22.cv3.0.2.weight model [3, 64, 1, 1] file [1, 64, 1, 1]"))
        }
    }
}

@Suite struct BatchNormFolding {
    @Test(arguments: ["yolov8n.yaml", "dual_yolov8n_mid.yaml"])
    func foldedModelMatchesUnfolded(_ name: String) throws {
        let m = try buildModel(name, nc: 2, seed: 5)
        // Non-trivial running statistics and affine parameters.
        var rng = RandomState(seed: 6)
        for t in m.namedTensors() {
            if t.name.hasSuffix("running_mean") { for i in 0..<t.tensor.count { t.tensor.data[i] = rng.normal() * 0.1 } }
            if t.name.hasSuffix("running_var") { for i in 0..<t.tensor.count { t.tensor.data[i] = rng.uniform(0.5, 2) } }
            if t.name.hasSuffix("bn.weight") { for i in 0..<t.tensor.count { t.tensor.data[i] = rng.uniform(0.5, 1.5) } }
        }
        var inputs: [String: Tensor] = [:]
        for s in m.streams { inputs[s.name] = Tensor.uniform([2, s.channels, 64, 64], rng: &rng) }
        m.training = false
        let before = noGrad { m(inputs)[0] }
        m.fuse()
        let after = noGrad { m(inputs)[0] }
        for (x, y) in [(after.boxes, before.boxes), (after.scores, before.scores)] {
            let scale = max(y.array.map { abs($0) }.max()!, 1)
            #expect(zip(x.array, y.array).map { abs($0 - $1) }.max()! / scale < 1e-4)
        }
        #expect(!m.namedTensors().contains { $0.name.contains(".bn.") })
    }
}
