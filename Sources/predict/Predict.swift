import ArgumentParser
import DataPipeline
import Detection
import Foundation
import TensorCore
import Training

/// `predict`: detect objects in RGB + IR pairs.
@main
struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "predict",
        abstract: "Run a detector on RGB + IR pairs; write annotated images (both modalities), labels and JSON.",
        discussion: """
        --source is an RGB image or a folder of them. Each one's IR partner is the file of the same stem in
        --ir (a folder, or a file for a single source) or, by default, the RGB path with its `images`
        folder replaced by `imagesIR` (--ir-dir), as YOLOFuse lays data out. Output in PROJECT/NAME:
        rgb/ and ir/ annotated images, labels/<stem>.txt (class cx cy w h conf, normalised) and
        predictions.json (boxes in original-image pixels). Late-fusion models merge their two heads with
        --merge nms (concatenate + NMS, default) or wbf (weighted box fusion).
        """)

    @Option(help: "Weights (.safetensors).") var weights: String
    @Option(help: "RGB image or folder of RGB images.") var source: String
    @Option(help: "IR image (single source) or folder of IR images.") var ir: String?
    @Option(help: "Folder name replacing `images` to find IR partners.") var irDir = "imagesIR"
    @Option(help: "Model YAML (default: the one stored in the weights).") var cfg: String?
    @Option(help: "Inference size (default: the training size stored in the weights).") var imgsz: Int?
    @Option(help: "Confidence threshold.") var conf: Float = 0.25
    @Option(help: "NMS IoU threshold.") var iou: Float = 0.7
    @Option(help: "Detections kept per image.") var maxDet = 300
    @Option(help: "Late fusion merge: nms or wbf.") var merge: String = "nms"
    @Option(help: "Folder of prediction runs.") var project = "runs/predict"
    @Option(help: "Run name (NAME, NAME2, … unless --exist-ok).") var name = "predict"
    @Flag(help: "Reuse PROJECT/NAME if it exists.") var existOk = false
    @Option(help: "Compute threads (default: all cores).") var threads: Int?

    func irPartner(_ rgb: String) -> String? {
        let fm = FileManager.default
        let stem = URL(fileURLWithPath: rgb).deletingPathExtension().lastPathComponent
        var candidates: [String] = []
        if let ir {
            var isDir: ObjCBool = false
            if fm.fileExists(atPath: ir, isDirectory: &isDir), !isDir.boolValue { return ir }
            candidates = ImageIO.extensions.sorted().map { ir + "/" + stem + "." + $0 }
        } else {
            var parts = rgb.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
            if let k = parts.lastIndex(of: "images") { parts[k] = irDir }
            let dir = parts.dropLast().joined(separator: "/")
            candidates = [parts.joined(separator: "/")] + ImageIO.extensions.sorted().map { dir + "/" + stem + "." + $0 }
        }
        return candidates.first { fm.fileExists(atPath: $0) }
    }

    func validate() throws {
        guard (0...1).contains(conf) else { throw ValidationError("--conf \(conf): expected a confidence in 0...1") }
        guard (0...1).contains(iou) else { throw ValidationError("--iou \(iou): expected an IoU threshold in 0...1") }
        guard (1...100_000).contains(maxDet) else { throw ValidationError("--max-det \(maxDet): expected 1...100000") }
        if let threads { guard (1...1024).contains(threads) else { throw ValidationError("--threads \(threads): expected 1...1024") } }
    }

    func run() throws {
        if let threads { ComputeContext.current.threads = threads }
        guard let mergeMode = DetectionMerge(rawValue: merge) else { throw ValidationError("--merge must be nms or wbf, got \(merge)") }
        do {
            let loaded = try ModelFiles.load(weights: weights, cfg: cfg)
            for w in loaded.warnings { FileHandle.standardError.write("warning: \(w)\n".data(using: .utf8)!) }
            let model = loaded.model
            model.fuse()
            let stride = model.strides.max() ?? 32
            let size = try ImageSize.resolve(requested: imgsz, stored: loaded.storedImageSize, stride: stride) {
                FileHandle.standardError.write(($0 + "\n").data(using: .utf8)!)
            }
            let fm = FileManager.default
            var isDir: ObjCBool = false
            guard fm.fileExists(atPath: source, isDirectory: &isDir) else { throw ValidationError("--source \(source): no such file or folder") }
            let sources = isDir.boolValue
                ? ((try? fm.contentsOfDirectory(atPath: source)) ?? []).filter { ImageIO.extensions.contains(($0 as NSString).pathExtension.lowercased()) }
                    .sorted().map { source + "/" + $0 }
                : [source]
            guard !sources.isEmpty else { throw ValidationError("--source \(source): no PNG or JPEG images") }
            let out = try RunPaths.createFolder(project: project, name: name, existOK: existOk)
            for sub in ["rgb", "ir", "labels"] { try fm.createDirectory(atPath: out + "/" + sub, withIntermediateDirectories: true) }
            let irChannels = model.streams.first { $0.name == "ir" }?.channels ?? 1
            var records: [[String: Any]] = []
            var total = 0
            let t0 = Date()
            for rgbPath in sources {
                guard let irPath = irPartner(rgbPath) else {
                    FileHandle.standardError.write("warning: \(rgbPath): no IR partner found (looked in \(ir ?? "the \(irDir) folder")); skipped\n".data(using: .utf8)!)
                    continue
                }
                let rgb = try ImageIO.read(rgbPath, channels: 3)
                var irImg = try ImageIO.read(irPath, channels: irChannels)
                if irImg.width != rgb.width || irImg.height != rgb.height {
                    FileHandle.standardError.write("warning: \(irPath): \(irImg.width)x\(irImg.height) differs from the RGB \(rgb.width)x\(rgb.height); resized\n".data(using: .utf8)!)
                    irImg = irImg.resized(width: rgb.width, height: rgb.height)
                }
                let info = Letterbox.plan(width: rgb.width, height: rgb.height, targetWidth: size, targetHeight: size, stride: stride)
                func tensor(_ img: RasterImage) -> Tensor {
                    let lb = Letterbox.apply(img, info)
                    let t = Tensor(uninitialized: [1, lb.channels, lb.height, lb.width])
                    lb.writeCHW(to: t.data)
                    return t
                }
                var inputs: [String: Tensor] = [:]
                for s in model.streams { inputs[s.name] = s.name == "ir" ? tensor(irImg) : tensor(rgb) }
                let outs = noGrad { model(inputs) }
                let dets = mergeMode.merge(outs.map { $0.decoded() },
                                           options: NMSOptions(confidence: conf, iou: iou, maxDetections: maxDet))[0].map { d -> Detection in
                    var d = d
                    let v = Letterbox.scaleBoxes([d.box.x1, d.box.y1, d.box.x2, d.box.y2], info)
                    d.box = Box(x1: v[0], y1: v[1], x2: v[2], y2: v[3])
                    return d
                }
                total += dets.count
                let stem = URL(fileURLWithPath: rgbPath).deletingPathExtension().lastPathComponent
                // Annotated images keep the source's format (PNG stays lossless).
                let png = (rgbPath as NSString).pathExtension.lowercased() == "png"
                for (sub, img) in [("rgb", rgb), ("ir", irImg)] {
                    let drawn = Annotate.draw(dets, on: img, names: loaded.names)
                    if png { try ImageIO.writePNG(drawn, to: "\(out)/\(sub)/\(stem).png") }
                    else { try ImageIO.writeJPEG(drawn, to: "\(out)/\(sub)/\(stem).jpg") }
                }
                let w = Float(rgb.width), h = Float(rgb.height)
                let lines = dets.map { d in
                    String(format: "%d %.6f %.6f %.6f %.6f %.4f", d.classIndex, (d.box.x1 + d.box.x2) / 2 / w, (d.box.y1 + d.box.y2) / 2 / h,
                           (d.box.x2 - d.box.x1) / w, (d.box.y2 - d.box.y1) / h, d.confidence)
                }
                try (lines.joined(separator: "\n") + (lines.isEmpty ? "" : "\n")).write(toFile: "\(out)/labels/\(stem).txt", atomically: true, encoding: .utf8)
                records.append(["rgb": rgbPath, "ir": irPath, "width": rgb.width, "height": rgb.height,
                                "detections": dets.map { d -> [String: Any] in
                                    ["class": d.classIndex, "name": d.classIndex < loaded.names.count ? loaded.names[d.classIndex] : "class\(d.classIndex)",
                                     "confidence": Double(d.confidence), "box": [d.box.x1, d.box.y1, d.box.x2, d.box.y2].map(Double.init)]
                                }])
                print("\(stem): \(dets.count) detections" + (dets.isEmpty ? "" : " (" + Dictionary(grouping: dets, by: \.classIndex)
                        .sorted { $0.key < $1.key }.map { "\($0.value.count) \($0.key < loaded.names.count ? loaded.names[$0.key] : "class\($0.key)")" }
                        .joined(separator: ", ") + ")"))
            }
            let json = try JSONSerialization.data(withJSONObject: ["weights": weights, "imgsz": size, "conf": Double(conf), "iou": Double(iou),
                                                                   "merge": merge, "images": records], options: [.prettyPrinted, .sortedKeys])
            try json.write(to: URL(fileURLWithPath: out + "/predictions.json"))
            print("\(records.count) images, \(total) detections in " + String(format: "%.2f s", Date().timeIntervalSince(t0)) + "; results in \(out)")
        } catch let e as ValidationError {
            throw e
        } catch let e as TrainingError {
            FileHandle.standardError.write("error: \(e)\n".data(using: .utf8)!)
            throw ExitCode(1)
        } catch let e as ModelFileError {
            FileHandle.standardError.write("error: \(e)\n".data(using: .utf8)!)
            throw ExitCode(1)
        } catch {
            FileHandle.standardError.write("error: \(error)\n".data(using: .utf8)!)
            throw ExitCode(1)
        }
    }
}
