import ArgumentParser
import DataPipeline
import Detection
import Foundation
import TensorCore
import Training

/// `predict`: detect objects in RGB + IR pairs (images, folders, data sets, or paired videos).
@main
struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "predict",
        abstract: "Run a detector on RGB + IR pairs or paired videos; write annotated images or videos, labels and JSON.",
        discussion: """
        --source is one of: an RGB image or a folder of them; a data set root (holding images/ and imagesIR/;
        --split picks images/<split>); a data YAML (with --split, default val); an RGB video (with --ir, its IR
        video); a folder of RGB frames with --frames (and --ir, a folder of IR frames; paired in name order).
        An image's IR partner is the file of the same stem in --ir (a folder, or a file for one source) or,
        by default, the RGB path with its `images` folder replaced by `imagesIR` (--ir-dir), as YOLOFuse lays
        data out. A single-stream model reads the RGB images alone. --ir-homography (or a data YAML's
        ir_homography / ir_affine) maps IR pixels into the RGB frame before inference.
        Output in PROJECT/NAME: rgb/ and ir/ annotated images (or <video>_rgb.mp4, <video>_ir.mp4 and with
        --side-by-side <video>_side_by_side.mp4), labels/<stem>.txt or labels/<video>_<frame>.txt (class cx cy w h
        conf, normalised), crops/ with --save-crop, and predictions.json (boxes in original pixels). Exit status 1
        when no image at all could be processed.
        """)

    @Option(help: "Weights (.safetensors).") var weights: String
    @Option(help: "RGB image, folder, data set root, data YAML, RGB video, or folder of frames (--frames).") var source: String
    @Option(help: "IR image (single source), IR folder, IR video, or folder of IR frames.") var ir: String?
    @Option(help: "Folder name replacing `images` to find IR partners.") var irDir = "imagesIR"
    @Option(help: "Split of a data YAML or data set root: train, val or test.") var split: String?
    @Flag(help: "--source and --ir are folders of video frames (paired in name order; output is video).") var frames = false
    @Option(help: "Frames per second of --frames output (default 25).") var fps: Double = 25
    @Option(help: "Model YAML (default: the one stored in the weights).") var cfg: String?
    @Option(help: "Inference size (default: the training size stored in the weights).") var imgsz: Int?
    @Option(help: "Images per forward pass.") var batch = 1
    @Option(help: "Confidence threshold.") var conf: Float = 0.25
    @Option(help: "NMS IoU threshold.") var iou: Float = 0.7
    @Option(help: "Detections kept per image.") var maxDet = 300
    @Option(help: "Keep only these classes (comma-separated ids).") var classes: String?
    @Flag(help: "Class-agnostic NMS.") var agnosticNms = false
    @Option(help: "Late fusion merge: nms or wbf.") var merge: String = "nms"
    @Option(help: "Feed one stream as all zeros: rgb or ir (a failed or covered camera).") var blank: String?
    @Option(help: "IR pixel -> RGB pixel homography: 9 numbers, row-major, comma-separated.") var irHomography: String?
    @Option(help: "Video: process every Nth frame.") var vidStride = 1
    @Flag(help: "Video: also write RGB and IR side by side.") var sideBySide = false
    @Flag(help: "Save each detection's crop (crops/rgb|ir/<class>/<stem>.jpg).") var saveCrop = false
    @Option(help: "Box line width in pixels (default: from the image size).") var lineWidth: Int?
    @Flag(help: "Do not write class names on boxes.") var hideLabels = false
    @Flag(help: "Do not write confidences on boxes.") var hideConf = false
    @Option(help: "Folder of prediction runs.") var project = "runs/predict"
    @Option(help: "Run name (NAME, NAME2, … unless --exist-ok).") var name = "predict"
    @Flag(help: "Reuse PROJECT/NAME if it exists.") var existOk = false
    @Option(help: "Compute threads (default: all cores).") var threads: Int?
    @Option(help: "Convolutions: onednn (oneDNN's primitives; the default where libdnnl runs) or packed (the project's GEMM, as training uses).")
    var gemm: String?

    func validate() throws {
        guard (0...1).contains(conf) else { throw ValidationError("--conf \(conf): expected a confidence in 0...1") }
        guard (0...1).contains(iou) else { throw ValidationError("--iou \(iou): expected an IoU threshold in 0...1") }
        guard (1...100_000).contains(maxDet) else { throw ValidationError("--max-det \(maxDet): expected 1...100000") }
        guard (1...1024).contains(batch) else { throw ValidationError("--batch \(batch): expected 1...1024") }
        guard (1...10_000).contains(vidStride) else { throw ValidationError("--vid-stride \(vidStride): expected 1...10000") }
        guard fps > 0 && fps <= 1000 else { throw ValidationError("--fps \(fps): expected a rate in (0, 1000]") }
        if let lineWidth { guard (1...100).contains(lineWidth) else { throw ValidationError("--line-width \(lineWidth): expected 1...100") } }
        if let blank { guard ["rgb", "ir"].contains(blank) else { throw ValidationError("--blank must be rgb or ir, got \(blank)") } }
        if let split { guard DatasetSplit(rawValue: split) != nil else { throw ValidationError("--split must be train, val or test, got \(split)") } }
        if let threads { guard (1...1024).contains(threads) else { throw ValidationError("--threads \(threads): expected 1...1024") } }
        _ = try classFilter()
        _ = try homography()
    }

    func classFilter() throws -> Set<Int>? {
        guard let classes else { return nil }
        var out = Set<Int>()
        for part in classes.split(separator: ",") {
            guard let v = Int(part.trimmingCharacters(in: .whitespaces)), v >= 0 else {
                throw ValidationError("--classes: '\(part)' is not a class id (use 0,2,...)")
            }
            out.insert(v)
        }
        return out
    }

    func homography() throws -> Matrix3? {
        guard let irHomography else { return nil }
        let v = irHomography.split(whereSeparator: { $0 == "," || $0 == " " }).compactMap { Double($0) }
        guard v.count == 9, v.allSatisfy(\.isFinite) else {
            throw ValidationError("--ir-homography: expected 9 numbers (a 3x3 matrix, row-major), got '\(irHomography)'")
        }
        let m = Matrix3(v)
        guard m.inverse != nil else { throw ValidationError("--ir-homography: the matrix is not invertible") }
        return m
    }

    func run() throws {
        if let threads { ComputeContext.current.threads = threads }
        do { ComputeContext.current.gemm = try gemm.map { try GemmBackend(flag: $0) } ?? .toolDefault }
        catch { throw ValidationError("\(error)") }
        guard let mergeMode = DetectionMerge(rawValue: merge) else { throw ValidationError("--merge must be nms or wbf, got \(merge)") }
        do {
            let loaded = try ModelFiles.load(weights: weights, cfg: cfg)
            for w in loaded.warnings { warn("warning: \(w)") }
            let model = loaded.model
            model.fuse()
            let stride = model.strides.max() ?? 32
            let size = try ImageSize.resolve(requested: imgsz, stored: loaded.storedImageSize, stride: stride) { warn($0) }
            var nms = NMSOptions(confidence: conf, iou: iou, agnostic: agnosticNms, maxDetections: maxDet)
            nms.classes = try classFilter()
            let resolved = try resolveInputs(model: model)
            let out = try RunPaths.createFolder(project: project, name: name, existOK: existOk)
            var session = PredictSession(model: model, names: loaded.names, size: size, stride: stride, nms: nms, merge: mergeMode,
                                         output: out, irTransform: try homography() ?? resolved.irTransform, blank: blank,
                                         drawing: .init(lineWidth: lineWidth, showLabels: !hideLabels, showConfidence: !hideConf),
                                         saveCrop: saveCrop)
            let t0 = Date()
            // The folded model does not change from here on: oneDNN's copies of its weights are kept.
            try ComputeContext.current.withFrozenWeights {
                switch resolved.kind {
                case let .images(pairs, missing):
                    try session.images(pairs, batch: batch)
                    session.missingIR += missing
                case let .video(rgb, irVideo):
                    try session.video(rgb: rgb, ir: irVideo, stride: vidStride, sideBySide: sideBySide)
                case let .frameFolders(rgb, irFrames):
                    try session.frames(rgb: rgb, ir: irFrames, fps: fps, stride: vidStride, sideBySide: sideBySide)
                }
            }
            try session.writeJSON(weights: weights)
            let total = session.records.count
            var summary = "\(total) \(session.isVideo ? "frames" : "images"), \(session.detections) detections in " +
                String(format: "%.2f s", Date().timeIntervalSince(t0)) + "; results in \(out)"
            if session.missingIR > 0 { summary += "; \(session.missingIR) without an IR partner skipped" }
            print(summary)
            if total == 0 {
                warn("error: no image could be processed (\(session.missingIR) had no IR partner)")
                throw ExitCode(1)
            }
        } catch let e as ValidationError {
            throw e
        } catch let e as ExitCode {
            throw e
        } catch {
            warn("error: \(error)")
            throw ExitCode(1)
        }
    }

    // MARK: - Inputs

    enum Kind {
        case images([(rgb: String, ir: String?)], missing: Int)
        case video(rgb: String, ir: String?)
        case frameFolders(rgb: [String], ir: [String]?)
    }

    static let videoExtensions: Set<String> = ["mp4", "avi", "mov", "mkv", "webm", "m4v", "mpg", "mpeg", "ts"]

    /// What --source names, with each RGB image's IR partner (nil for a single-stream model).
    func resolveInputs(model: DetectionModel) throws -> (kind: Kind, irTransform: Matrix3?) {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: source, isDirectory: &isDir) else { throw ValidationError("--source \(source): no such file or folder") }
        let needsIR = model.streams.contains { $0.name == "ir" }
        let ext = (source as NSString).pathExtension.lowercased()
        if !isDir.boolValue && Predict.videoExtensions.contains(ext) {
            if needsIR && ir == nil { throw ValidationError("--source \(source) is a video: give its IR video with --ir") }
            return (.video(rgb: source, ir: needsIR ? ir : nil), nil)
        }
        if frames {
            guard isDir.boolValue else { throw ValidationError("--frames: --source must be a folder of frames") }
            let rgb = try imageFiles(in: source)
            var irFrames: [String]? = nil
            if needsIR {
                guard let ir else { throw ValidationError("--frames: give the folder of IR frames with --ir") }
                irFrames = try imageFiles(in: ir)
            }
            return (.frameFolders(rgb: rgb, ir: irFrames), nil)
        }
        if ext == "yaml" || ext == "yml" {
            let config = try DatasetConfig.load(path: source)
            let sp = DatasetSplit(rawValue: split ?? "val")!
            var files: [String] = []
            for src in config.sources(sp) { files += try DatasetPaths.images(of: src, root: config.root) }
            guard !files.isEmpty else { throw ValidationError("\(source): split \(sp.rawValue) lists no images") }
            return (pairs(files, needsIR: needsIR, irDir: config.irDir), config.irTransform)
        }
        var rgbFiles: [String]
        if isDir.boolValue {
            let images = source + "/images"
            var sub: ObjCBool = false
            if fm.fileExists(atPath: images, isDirectory: &sub), sub.boolValue {
                // A data set root: images/ (or images/<split>) with imagesIR/ beside it.
                rgbFiles = try imageFiles(in: split.map { images + "/" + $0 } ?? images, recursive: true)
            } else {
                rgbFiles = try imageFiles(in: source)
            }
        } else {
            guard ImageIO.extensions.contains(ext) else { throw ValidationError("--source \(source): not a PNG or JPEG image, a video, a folder or a data YAML") }
            rgbFiles = [source]
        }
        return (pairs(rgbFiles, needsIR: needsIR, irDir: irDir), nil)
    }

    func pairs(_ rgbFiles: [String], needsIR: Bool, irDir: String) -> Kind {
        var out: [(rgb: String, ir: String?)] = [], missing = 0
        for f in rgbFiles {
            if !needsIR { out.append((f, nil)); continue }
            if let p = irPartner(f, irDir: irDir) { out.append((f, p)) } else {
                warn("warning: \(f): no IR partner found (looked in \(ir ?? "the \(irDir) folder")); skipped")
                missing += 1
            }
        }
        return .images(out, missing: missing)
    }

    func imageFiles(in folder: String, recursive: Bool = false) throws -> [String] {
        let fm = FileManager.default
        let names: [String]
        if recursive {
            names = (fm.enumerator(atPath: folder)?.allObjects as? [String]) ?? []
        } else {
            names = (try? fm.contentsOfDirectory(atPath: folder)) ?? []
        }
        let files = names.filter { ImageIO.extensions.contains(($0 as NSString).pathExtension.lowercased()) }.sorted().map { folder + "/" + $0 }
        guard !files.isEmpty else { throw ValidationError("\(folder): no PNG or JPEG images") }
        return files
    }

    func irPartner(_ rgb: String, irDir: String) -> String? {
        let fm = FileManager.default
        let stem = URL(fileURLWithPath: rgb).deletingPathExtension().lastPathComponent
        var candidates: [String] = []
        if let ir {
            var isDir: ObjCBool = false
            if fm.fileExists(atPath: ir, isDirectory: &isDir), !isDir.boolValue { return ir }
            candidates = ImageIO.extensions.sorted().map { ir + "/" + stem + "." + $0 }
        } else {
            var parts = rgb.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
            // Without an `images` folder in the path there is no default partner (never the RGB itself).
            guard let k = parts.lastIndex(of: "images") else { return nil }
            parts[k] = irDir
            let dir = parts.dropLast().joined(separator: "/")
            candidates = [parts.joined(separator: "/")] + ImageIO.extensions.sorted().map { dir + "/" + stem + "." + $0 }
        }
        return candidates.first { fm.fileExists(atPath: $0) }
    }
}

func warn(_ text: String) {
    FileHandle.standardError.write((text + "\n").data(using: .utf8)!)
}
