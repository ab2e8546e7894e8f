import DataPipeline
import Detection
import Foundation
import Testing
@testable import TensorCore
@testable import Training

/// In the field: paired video, everyday predict options, a covered camera, misregistered cameras,
/// and what training drops. Driven through the executables; small clips made with ffmpeg.
@Suite struct FieldTests {
    static let data = HardeningTests.data

    /// Runs ffmpeg (installed by tools/install-deps.sh) to make a clip from PNG frames.
    static func makeVideo(_ frames: [String], fps: Int, to path: String, codec: String = "libx264") throws {
        let list = path + ".frames"
        try FileManager.default.createDirectory(atPath: list, withIntermediateDirectories: true)
        for (i, f) in frames.enumerated() {
            let dst = list + String(format: "/%04d.png", i)
            try? FileManager.default.removeItem(atPath: dst)
            try FileManager.default.copyItem(atPath: f, toPath: dst)
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/ffmpeg")
        p.arguments = ["-loglevel", "error", "-y", "-framerate", "\(fps)", "-i", list + "/%04d.png", "-c:v", codec, "-pix_fmt", "yuv420p", path]
        try p.run()
        p.waitUntilExit()
        try #require(p.terminationStatus == 0, "ffmpeg failed for \(path)")
    }

    static func frames(_ folder: String, _ n: Int) throws -> [String] {
        Array(try FileManager.default.contentsOfDirectory(atPath: folder).sorted().prefix(n)).map { folder + "/" + $0 }
    }

    static func decodedFrames(_ path: String) throws -> Int {
        let r = try VideoReader(path: path)
        var n = 0
        while try r.next() != nil { n += 1 }
        return n
    }

    @Test func pairedVideoGivesOneOutputFramePerInputFrame() throws {
        _ = FieldTests.data
        let dir = scratch + "/video"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let rgbFrames = try FieldTests.frames(scratch + "/hard/images/train", 20), irFrames = try FieldTests.frames(scratch + "/hard/imagesIR/train", 20)
        try FieldTests.makeVideo(rgbFrames, fps: 10, to: dir + "/cam.mp4")
        // The IR camera at half the rate (every other frame): matched by timestamp, with a drift warning.
        try FieldTests.makeVideo(stride(from: 0, to: 20, by: 2).map { irFrames[$0] }, fps: 5, to: dir + "/cam_ir.mp4", codec: "mpeg4")
        let out = scratch + "/video_out"
        let r = try CLI.run("predict", ["--weights", HardeningTests.weights, "--source", dir + "/cam.mp4", "--ir", dir + "/cam_ir.mp4",
                                        "--project", out, "--name", "v", "--exist-ok", "--side-by-side", "--conf", "0.001"])
        #expect(r.status == 0, "\(r.output)")
        #expect(r.stderr.contains("drift apart"), "\(r.stderr)")
        #expect(r.stdout.contains("frames are matched by timestamp"))
        for kind in ["rgb", "ir", "side_by_side"] {
            #expect(try FieldTests.decodedFrames(out + "/v/cam_\(kind).mp4") == 20, "\(kind) video")
        }
        let labels = try FileManager.default.contentsOfDirectory(atPath: out + "/v/labels").sorted()
        #expect(labels.count == 20 && labels.contains("cam_1.txt") && labels.contains("cam_20.txt"), "\(labels)")
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/v/predictions.json"))) as! [String: Any]
        #expect((json["frames"] as? [[String: Any]])?.count == 20)
        // --vid-stride 2: every other frame, numbered as processed.
        let s = try CLI.run("predict", ["--weights", HardeningTests.weights, "--source", dir + "/cam.mp4", "--ir", dir + "/cam_ir.mp4",
                                        "--project", out, "--name", "s", "--exist-ok", "--vid-stride", "2"])
        #expect(s.status == 0, "\(s.output)")
        #expect(try FieldTests.decodedFrames(out + "/s/cam_rgb.mp4") == 10)
        #expect(try FileManager.default.contentsOfDirectory(atPath: out + "/s/labels").count == 10)
        // Folders of frames, paired in name order.
        let f = try CLI.run("predict", ["--weights", HardeningTests.weights, "--source", dir + "/cam.mp4.frames", "--ir", dir + "/cam_ir.mp4.frames",
                                        "--frames", "--fps", "5", "--project", out, "--name", "f", "--exist-ok"])
        #expect(f.status == 0, "\(f.output)")
        #expect(f.stderr.contains("20 RGB frames but 10 IR frames"))
        #expect(try FieldTests.decodedFrames(out + "/f/cam.mp4.frames_rgb.mp4") == 10)
    }

    /// A single-stream model (trained once here) on plain images: no IR lookup, no ir/ folder.
    static let rgbWeights: String = {
        let r = try! CLI.run("train_dual", ["--data", data, "--cfg", TestData.tinyModel("yolov8n.yaml"), "--project", scratch + "/runs",
                                            "--name", "rgb_only_field", "--exist-ok", "--epochs", "1", "--batch", "8", "--imgsz", "64",
                                            "--workers", "1", "--no-val", "--no-plots"])
        precondition(r.status == 0, r.output)
        return scratch + "/runs/rgb_only_field/weights/last.safetensors"
    }()

    @Test func predictForEverydayUse() throws {
        let out = scratch + "/everyday"
        let root = scratch + "/hard"
        // Single-stream model on a folder of plain images.
        let single = try CLI.run("predict", ["--weights", FieldTests.rgbWeights, "--source", root + "/images/val", "--project", out, "--name", "single", "--exist-ok"])
        #expect(single.status == 0, "\(single.output)")
        #expect(!FileManager.default.fileExists(atPath: out + "/single/ir"), "no ir/ folder for a single-stream model")
        #expect(try FileManager.default.contentsOfDirectory(atPath: out + "/single/rgb").count == 8)
        // A data set root, and a data YAML with --split.
        let fromRoot = try CLI.run("predict", ["--weights", HardeningTests.weights, "--source", root, "--split", "val", "--project", out, "--name", "root", "--exist-ok"])
        #expect(fromRoot.status == 0 && fromRoot.stdout.contains("8 images"), "\(fromRoot.output)")
        let fromYAML = try CLI.run("predict", ["--weights", HardeningTests.weights, "--source", FieldTests.data, "--split", "train", "--project", out, "--name", "yaml", "--exist-ok"])
        #expect(fromYAML.status == 0 && fromYAML.stdout.contains("24 images"), "\(fromYAML.output)")
        // --batch 4 gives what --batch 1 gives; --classes filters; crops are written.
        func detections(_ name: String, _ extra: [String]) throws -> [[[String: Any]]] {
            let r = try CLI.run("predict", ["--weights", HardeningTests.weights, "--source", root + "/images/val", "--project", out, "--name", name,
                                            "--exist-ok", "--conf", "0.001", "--max-det", "20"] + extra)
            #expect(r.status == 0, "\(r.output)")
            let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/\(name)/predictions.json"))) as! [String: Any]
            return (json["images"] as! [[String: Any]]).map { $0["detections"] as! [[String: Any]] }
        }
        let one = try detections("b1", []), four = try detections("b4", ["--batch", "4", "--save-crop"])
        #expect(one.count == 8 && four.count == 8)
        for (a, b) in zip(one, four) {
            #expect(a.count == b.count)
            for (x, y) in zip(a, b) { #expect(abs((x["confidence"] as! Double) - (y["confidence"] as! Double)) < 1e-5) }
        }
        #expect(FileManager.default.fileExists(atPath: out + "/b4/crops/rgb") && FileManager.default.fileExists(atPath: out + "/b4/crops/ir"))
        let only1 = try detections("c1", ["--classes", "1"])
        #expect(only1.flatMap { $0 }.allSatisfy { $0["class"] as? Int == 1 } && !only1.flatMap { $0 }.isEmpty)
        // Missing IR partners are counted; nothing processed is an error.
        let lonely = scratch + "/lonely"
        try FileManager.default.createDirectory(atPath: lonely, withIntermediateDirectories: true)
        for f in try FieldTests.frames(root + "/images/val", 2) { try? FileManager.default.copyItem(atPath: f, toPath: lonely + "/" + URL(fileURLWithPath: f).lastPathComponent) }
        let none = try CLI.run("predict", ["--weights", HardeningTests.weights, "--source", lonely, "--project", out, "--name", "none", "--exist-ok"])
        #expect(none.status == 1 && none.output.contains("2 without an IR partner skipped") && none.stderr.contains("no image could be processed"), "\(none.output)")
    }

    @Test func aCoveredCameraIsMeasuredPerStream() throws {
        let r = try CLI.run("val_dual", ["--weights", HardeningTests.weights, "--data", FieldTests.data, "--modalities", "--no-plots"])
        #expect(r.status == 0, "\(r.output)")
        #expect(r.stdout.contains("both") && r.stdout.contains("RGB blanked") && r.stdout.contains("IR blanked"), "\(r.stdout)")
        let b = try CLI.run("predict", ["--weights", HardeningTests.weights, "--source", scratch + "/hard/images/val", "--blank", "ir",
                                        "--project", scratch + "/blank", "--name", "b", "--exist-ok"])
        #expect(b.status == 0, "\(b.output)")
        // modality_dropout is a checked hyper-parameter.
        let bad = try CLI.run("train_dual", HardeningTests.trainArgs(name: "bad_dropout", epochs: 1, extra: ["--modality-dropout", "1.5"]))
        #expect(bad.status != 0 && bad.output.contains("'modality_dropout': expected float, 0.0..1.0"), "\(bad.output)")
    }

    @Test func trainingNamesTheDroppedPairs() throws {
        let d = scratch + "/dropnames"
        _ = try SyntheticScenes.writeDataset(to: d, train: 8, val: 2, imageSize: 64, seed: 8)
        let victim = try FieldTests.frames(d + "/imagesIR/train", 1)[0]
        try FileManager.default.removeItem(atPath: victim)
        let r = try CLI.run("train_dual", ["--data", d + "/data.yaml", "--cfg", HardeningTests.model, "--project", scratch + "/runs", "--name", "dropnames",
                                           "--exist-ok", "--epochs", "1", "--batch", "4", "--imgsz", "64", "--workers", "1", "--no-val", "--no-plots"])
        #expect(r.status == 0, "\(r.output)")
        #expect(r.stdout.contains("dropped: ") && r.stdout.contains("no IR partner"), "\(r.stdout)")
    }

    @Test func misregisteredCamerasAreEstimatedAndWarped() throws {
        let d = scratch + "/misreg"
        var o = SyntheticOptions(width: 128, height: 128)
        o.irToRGB = Matrix3([0.95, 0, 4, 0, 0.95, -3, 0, 0, 1])
        _ = try SyntheticScenes.writeDataset(to: d, train: 16, val: 4, imageSize: 128, seed: 9, options: o)
        let r = try CLI.run("check_data", ["--data", d + "/data.yaml", "--align", "--no-cache"])
        #expect(r.status == 0, "\(r.output)")
        let rows = r.stdout.split(separator: "\n").filter { $0.hasPrefix("  - [") }
        try #require(rows.count == 3, "\(r.stdout)")
        let m = rows.flatMap { $0.dropFirst(5).dropLast().split(separator: ",").compactMap { Double($0.trimmingCharacters(in: .whitespaces)) } }
        // Measured on such sets: scale within 1.5 %, shift within 1.5 px of the truth.
        #expect(abs(m[0] - 0.95) < 0.02 && abs(m[4] - 0.95) < 0.02 && abs(m[2] - 4) < 2 && abs(m[5] + 3) < 2, "\(m)")
        #expect(r.stdout.contains("residual"))
        // The data YAML takes it; the loader warps IR into the RGB frame.
        let yaml = try String(contentsOfFile: d + "/data.yaml", encoding: .utf8) + "ir_homography: [[0.95, 0, 4], [0, 0.95, -3], [0, 0, 1]]\n"
        try yaml.write(toFile: d + "/aligned.yaml", atomically: true, encoding: .utf8)
        let cfg = try DatasetConfig.load(path: d + "/aligned.yaml")
        #expect(cfg.irTransform == Matrix3([0.95, 0, 4, 0, 0.95, -3, 0, 0, 1]))
        let bad = "path: \(d)\ntrain: images/train\nval: images/val\nnames: [a, b]\nir_affine: [[1, 0], [0, 1]]\n"
        try bad.write(toFile: d + "/bad.yaml", atomically: true, encoding: .utf8)
        #expect(throws: DatasetConfigError.self) { try DatasetConfig.load(path: d + "/bad.yaml") }
    }
}
