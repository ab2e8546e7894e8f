import Foundation
import Testing
@testable import Detection
@testable import NN
import TensorCore

@Suite struct ParameterCounts {
    @Test func yolov8nMatchesUltralytics() throws {
        #expect(try buildModel("yolov8n.yaml", nc: 1).parameterCount == 3_011_043)
        #expect(try buildModel("yolov8n.yaml", nc: 80).parameterCount == 3_157_200)
    }

    @Test func dualMidMatchesDesign() throws {
        #expect(try buildModel("dual_yolov8n_mid.yaml", nc: 1).parameterCount == 4_456_339)
    }

    @Test func gflopsWithinTwoPercentOfUltralytics() throws {
        let m = try buildModel("yolov8n.yaml", nc: 1)
        #expect(abs(m.gflops(imgsz: 640) - 8.2) / 8.2 < 0.02, "got \(m.gflops(imgsz: 640))")
        let mid = try buildModel("dual_yolov8n_mid.yaml", nc: 1)
        #expect(abs(mid.gflops(imgsz: 320) - 2.92) / 2.92 < 0.02, "got \(mid.gflops(imgsz: 320))")
    }

    @Test func scaleFromFileNameAndKey() throws {
        let n = try buildModel("dual_yolov8n_mid.yaml").parameterCount
        let s = try buildModel("dual_yolov8s_mid.yaml").parameterCount
        #expect(s > 3 * n)
        let keyed = try ModelSpec.parse((try String(contentsOfFile: modelPath("yolov8n.yaml"), encoding: .utf8)) + "\nscale: s\n", file: "custom.yaml")
        #expect(try ModelBuilder.build(keyed, nc: 1).parameterCount == (try buildModel("yolov8s.yaml")).parameterCount)
    }

    @Test func irChannelsComeFromOutside() throws {
        let one = try buildModel("dual_yolov8n_mid.yaml")
        let three = try buildModel("dual_yolov8n_mid.yaml", channels: ["ir": 3])
        // Only the IR stem's kernels grow: 16 filters x 2 more channels x 3 x 3.
        #expect(three.parameterCount - one.parameterCount == 16 * 2 * 9)
        #expect(three.streams.map(\.channels) == [3, 3])
    }
}

@Suite struct FusionGraphs {
    func run(_ m: DetectionModel, size: Int = 64, batch: Int = 2) -> [DetectOutput] {
        var rng = RandomState(seed: 1)
        var inputs: [String: Tensor] = [:]
        for s in m.streams { inputs[s.name] = Tensor.uniform([batch, s.channels, size, size], rng: &rng) }
        return m(inputs)
    }

    @Test(arguments: ["yolov8n.yaml", "ir_yolov8n.yaml", "dual_yolov8n_input.yaml", "dual_yolov8n_early.yaml",
                      "dual_yolov8n_mid.yaml", "dual_yolov8n_late.yaml"])
    func everyConfigBuildsAndRuns(_ name: String) throws {
        let m = try buildModel(name, nc: 2)
        let outs = run(m)
        #expect(outs.count == (name.contains("late") ? 2 : 1))
        for o in outs {
            #expect(o.boxes.shape == [2, 64, 84])
            #expect(o.scores.shape == [2, 2, 84])
            #expect(o.strides == [8, 16, 32])
        }
        // Stream tags follow the graph: dual models have rgb-only and ir-only parameters.
        let tags = Set(m.streamTags().values)
        if m.isDual && !name.contains("input") { #expect(tags.isSuperset(of: ["rgb", "ir"])) }
    }

    @Test func aNewFusionStrategyIsYAMLOnly() throws {
        // Fusion at P4 only, by element-wise-free concat: written here, built without new Swift code.
        let yaml = """
        nc: 3
        scales: {t: [0.33, 0.125, 1024]}
        streams: {rgb: 3, ir: 1}
        backbone:
          rgb:
            - [rgb, 1, Conv, [64, 3, 2]]
            - [-1, 1, Conv, [128, 3, 2]]
            - [-1, 1, Conv, [256, 3, 2]]
            - [-1, 1, Conv, [512, 3, 2]]
          ir:
            - [ir, 1, Conv, [64, 3, 2]]
            - [-1, 1, Conv, [128, 3, 2]]
            - [-1, 1, Conv, [256, 3, 2]]
            - [-1, 1, Conv, [512, 3, 2]]
        fusion:
          - [[rgb.3, ir.3], 1, Concat, [1]]
          - [-1, 1, C2f, [512]]
        head:
          - [fuse.1, 1, Conv, [512, 3, 2]]
          - [-1, 1, SPPF, [512, 5]]
          - [[rgb.2, fuse.1, -1], 1, Detect, [nc]]
        """
        let m = try ModelBuilder.build(try ModelSpec.parse(yaml, file: "p4_fusion.yaml"))
        let o = run(m)[0]
        #expect(o.scores.shape == [2, 3, 8 * 8 + 4 * 4 + 2 * 2])
        #expect(m.nodes.map(\.name).contains("fuse.1"))
        #expect(m.nodes.first { $0.name == "model.4" }?.streamTag == "fused")
        #expect(m.nodes.first { $0.name == "rgb.model.2" }?.streamTag == "rgb")
    }

    @Test func lateFusionHasOneHeadPerStream() throws {
        let m = try buildModel("dual_yolov8n_late.yaml", nc: 1)
        #expect(m.detectNodes.map(\.name) == ["rgb.model.22", "ir.model.22"])
        #expect(m.detectNodes.map(\.streamTag) == ["rgb", "ir"])
    }
}

@Suite struct SpecErrors {
    func error(_ yaml: String) -> String {
        do {
            _ = try ModelBuilder.build(try ModelSpec.parse(yaml, file: "bad.yaml"))
            return "no error"
        } catch { return "\(error)" }
    }

    @Test func unknownModuleNamesTheRow() {
        let e = error("nc: 1\nbackbone:\n  - [-1, 1, Conv, [16, 3, 2]]\n  - [-1, 1, Transformer, [16]]\nhead:\n  - [[1], 1, Detect, [nc]]\n")
        #expect(e.contains("bad.yaml:4") && e.contains("unknown module 'Transformer'"), "\(e)")
    }

    @Test func badReferenceNamesTheRow() {
        let e = error("nc: 1\nbackbone:\n  - [-1, 1, Conv, [16, 3, 2]]\nhead:\n  - [[-1, 7], 1, Concat, [1]]\n  - [[1], 1, Detect, [nc]]\n")
        #expect(e.contains("bad.yaml:5") && e.contains("'from' 7"), "\(e)")
        let q = error("nc: 1\nstreams: {rgb: 3, ir: 1}\nbackbone:\n  rgb:\n    - [rgb, 1, Conv, [16, 3, 2]]\n  ir:\n    - [ir, 1, Conv, [16, 3, 2]]\nhead:\n  - [[rgb.0, thermal.0], 1, Concat, [1]]\n")
        #expect(q.contains("bad.yaml:9") && q.contains("thermal"), "\(q)")
    }

    @Test func channelMismatchNamesTheRow() {
        // Concat of a stride-2 and a stride-4 map.
        let e = error("nc: 1\nbackbone:\n  - [-1, 1, Conv, [16, 3, 2]]\n  - [-1, 1, Conv, [32, 3, 2]]\nhead:\n  - [[0, 1], 1, Concat, [1]]\n  - [[1], 1, Detect, [nc]]\n")
        #expect(e.contains("bad.yaml:6") && e.contains("different strides"), "\(e)")
    }

    @Test func unknownTopLevelKey() {
        let e = error("nc: 1\nbackbon:\n  - [-1, 1, Conv, [16, 3, 2]]\n")
        #expect(e.contains("unknown key 'backbon'"), "\(e)")
    }
}
