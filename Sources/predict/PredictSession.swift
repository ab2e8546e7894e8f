import DataPipeline
import Detection
import Foundation
import TensorCore
import Training

/// One prediction run: letterboxes pairs to the model's size, runs the model in batches, maps the
/// boxes back, and writes every output (annotated images or videos, crops, labels, JSON records).
struct PredictSession {
    struct Drawing {
        var lineWidth: Int?
        var showLabels: Bool
        var showConfidence: Bool
    }

    let model: DetectionModel
    let names: [String]
    let size: Int
    let stride: Int
    let nms: NMSOptions
    let merge: DetectionMerge
    let output: String
    let irTransform: Matrix3?
    let blank: String?
    let drawing: Drawing
    let saveCrop: Bool
    var records: [[String: Any]] = []
    var detections = 0
    var missingIR = 0
    var isVideo = false
    var irChannels: Int { model.streams.first { $0.name == "ir" }?.channels ?? 0 }
    var dual: Bool { irChannels > 0 }

    init(model: DetectionModel, names: [String], size: Int, stride: Int, nms: NMSOptions, merge: DetectionMerge, output: String,
         irTransform: Matrix3?, blank: String?, drawing: Drawing, saveCrop: Bool) {
        (self.model, self.names, self.size, self.stride, self.nms, self.merge) = (model, names, size, stride, nms, merge)
        (self.output, self.irTransform, self.blank, self.drawing, self.saveCrop) = (output, irTransform, blank, drawing, saveCrop)
    }

    /// The IR in the RGB frame and in the model's IR channels: warped by the registration, else
    /// resized when its size differs; a video's RGB-decoded IR frame becomes luma for a 1-channel model.
    func register(_ irImage: RasterImage, to rgb: RasterImage, file: String) -> RasterImage {
        let ir = irImage.channels == irChannels ? irImage : irImage.converted(toChannels: irChannels)
        if let t = irTransform { return ir.warped(by: t, width: rgb.width, height: rgb.height, border: 0) }
        if ir.width != rgb.width || ir.height != rgb.height {
            warn("warning: \(file): \(ir.width)x\(ir.height) differs from the RGB \(rgb.width)x\(rgb.height); resized (give --ir-homography when the cameras are not registered)")
            return ir.resized(width: rgb.width, height: rgb.height)
        }
        return ir
    }

    /// Detections in original pixels for a batch of (rgb, ir) pairs of any sizes.
    func detect(_ pairs: [(rgb: RasterImage, ir: RasterImage?)]) -> [[Detection]] {
        let infos = pairs.map { Letterbox.plan(width: $0.rgb.width, height: $0.rgb.height, targetWidth: size, targetHeight: size, stride: stride) }
        func stack(_ images: [RasterImage], channels: Int) -> Tensor {
            let t = Tensor(uninitialized: [images.count, channels, size, size])
            for (i, img) in images.enumerated() {
                let lb = Letterbox.apply(img, infos[i])
                precondition(lb.channels == channels && lb.width == size && lb.height == size,
                             "letterboxed \(lb.width)x\(lb.height)x\(lb.channels) for a \(size)x\(size)x\(channels) input")
                lb.writeCHW(to: t.data + i * channels * size * size)
            }
            return t
        }
        var inputs: [String: Tensor] = [:]
        for s in model.streams {
            let isIR = s.name == "ir"
            let t = isIR ? stack(pairs.map { $0.ir! }, channels: s.channels) : stack(pairs.map(\.rgb), channels: s.channels)
            inputs[s.name] = blank == (isIR ? "ir" : "rgb") ? Tensor(zeros: t.shape) : t
        }
        let outs = noGrad { model(inputs) }
        let merged = merge.merge(outs.map { $0.decoded() }, options: nms)
        return merged.enumerated().map { i, dets in
            dets.map { d in
                var d = d
                let v = Letterbox.scaleBoxes([d.box.x1, d.box.y1, d.box.x2, d.box.y2], infos[i])
                d.box = Box(x1: v[0], y1: v[1], x2: v[2], y2: v[3])
                return d
            }
        }
    }

    func draw(_ dets: [Detection], _ img: RasterImage) -> RasterImage {
        Annotate.draw(dets, on: img, names: names, lineWidth: drawing.lineWidth, showLabels: drawing.showLabels,
                      showConfidence: drawing.showConfidence)
    }

    func className(_ c: Int) -> String { c < names.count ? names[c] : "class\(c)" }

    /// labels/<stem>.txt: class cx cy w h conf, normalised.
    func writeLabels(_ dets: [Detection], width: Int, height: Int, stem: String) throws {
        let w = Float(width), h = Float(height)
        let lines = dets.map { d in
            String(format: "%d %.6f %.6f %.6f %.6f %.4f", d.classIndex, (d.box.x1 + d.box.x2) / 2 / w, (d.box.y1 + d.box.y2) / 2 / h,
                   (d.box.x2 - d.box.x1) / w, (d.box.y2 - d.box.y1) / h, d.confidence)
        }
        try (lines.joined(separator: "\n") + (lines.isEmpty ? "" : "\n")).write(toFile: "\(output)/labels/\(stem).txt", atomically: true, encoding: .utf8)
    }

    /// crops/<stream>/<class>/<stem>[_k].jpg, from the unannotated images.
    func writeCrops(_ dets: [Detection], _ streams: [(String, RasterImage)], stem: String) throws {
        for (sub, img) in streams {
            var used: [String: Int] = [:]
            for d in dets {
                let x0 = max(0, Int(d.box.x1.rounded(.down))), y0 = max(0, Int(d.box.y1.rounded(.down)))
                let x1 = min(img.width, Int(d.box.x2.rounded(.up))), y1 = min(img.height, Int(d.box.y2.rounded(.up)))
                guard x1 - x0 >= 1, y1 - y0 >= 1 else { continue }
                let dir = "\(output)/crops/\(sub)/\(className(d.classIndex))"
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                let k = used[dir, default: 0]
                used[dir] = k + 1
                var crop = RasterImage(width: x1 - x0, height: y1 - y0, channels: img.channels)
                crop.paste(img, sourceX: x0, sourceY: y0, width: x1 - x0, height: y1 - y0, x: 0, y: 0)
                try ImageIO.writeJPEG(crop, to: "\(dir)/\(stem)\(k == 0 ? "" : "_\(k + 1)").jpg")
            }
        }
    }

    func record(_ dets: [Detection]) -> [[String: Any]] {
        dets.map { d in
            ["class": d.classIndex, "name": className(d.classIndex), "confidence": Double(d.confidence),
             "box": [d.box.x1, d.box.y1, d.box.x2, d.box.y2].map(Double.init)]
        }
    }

    func summary(_ dets: [Detection]) -> String {
        dets.isEmpty ? "" : " (" + Dictionary(grouping: dets, by: \.classIndex).sorted { $0.key < $1.key }
            .map { "\($0.value.count) \(className($0.key))" }.joined(separator: ", ") + ")"
    }

    // MARK: - Images

    mutating func images(_ pairs: [(rgb: String, ir: String?)], batch: Int) throws {
        let fm = FileManager.default
        for sub in ["labels", "rgb"] + (dual ? ["ir"] : []) { try fm.createDirectory(atPath: output + "/" + sub, withIntermediateDirectories: true) }
        var start = 0
        while start < pairs.count {
            let chunk = pairs[start..<min(start + batch, pairs.count)]
            start += batch
            var loaded: [(rgb: RasterImage, ir: RasterImage?)] = []
            var files: [(rgb: String, ir: String?)] = []
            for p in chunk {
                do {
                    let rgb = try ImageIO.read(p.rgb, channels: 3)
                    let ir = try p.ir.map { register(try ImageIO.read($0, channels: irChannels), to: rgb, file: $0) }
                    loaded.append((rgb, ir))
                    files.append(p)
                } catch {
                    warn("warning: \(p.rgb): \(error); skipped")
                }
            }
            guard !loaded.isEmpty else { continue }
            let all = detect(loaded)
            for (i, dets) in all.enumerated() {
                let stem = URL(fileURLWithPath: files[i].rgb).deletingPathExtension().lastPathComponent
                let png = (files[i].rgb as NSString).pathExtension.lowercased() == "png"
                var streams = [("rgb", loaded[i].rgb)]
                if let ir = loaded[i].ir { streams.append(("ir", ir)) }
                for (sub, img) in streams {
                    let drawn = draw(dets, img)
                    if png { try ImageIO.writePNG(drawn, to: "\(output)/\(sub)/\(stem).png") } else { try ImageIO.writeJPEG(drawn, to: "\(output)/\(sub)/\(stem).jpg") }
                }
                if saveCrop { try writeCrops(dets, streams, stem: stem) }
                try writeLabels(dets, width: loaded[i].rgb.width, height: loaded[i].rgb.height, stem: stem)
                var rec: [String: Any] = ["rgb": files[i].rgb, "width": loaded[i].rgb.width, "height": loaded[i].rgb.height, "detections": record(dets)]
                if let ir = files[i].ir { rec["ir"] = ir }
                records.append(rec)
                detections += dets.count
                print("\(stem): \(dets.count) detections" + summary(dets))
            }
        }
    }

    // MARK: - Video

    /// A paired stream of frames: RGB frames in order, each with the IR frame nearest in time.
    struct FrameSource {
        var next: () throws -> (rgb: RasterImage, ir: RasterImage?, seconds: Double?)?
        var total: Int?
        var fps: Double
        var name: String
    }

    mutating func video(rgb: String, ir: String?, stride: Int, sideBySide: Bool) throws {
        let r = try VideoReader(path: rgb)
        let matcher = try ir.map { try NearestFrame(try VideoReader(path: $0)) }
        if let m = matcher, abs(m.reader.fps - r.fps) > 0.01 {
            print(String(format: "note: RGB at %.3f fps, IR at %.3f fps: frames are matched by timestamp", r.fps, m.reader.fps))
        }
        let interval = r.fps > 0 ? 1 / r.fps : 1.0 / 25
        var warnedDrift = false
        let source = FrameSource(next: {
            guard let f = try r.next() else { return nil }
            guard let matcher else { return (f.image, nil, f.seconds) }
            guard let match = try matcher.frame(at: f.seconds) else { return nil }
            let drift = abs(match.seconds - f.seconds)
            if drift > interval / 2 && !warnedDrift {
                warnedDrift = true
                warn(String(format: "warning: the IR and RGB streams drift apart: %.3f s at %.3f s (more than half a frame interval, %.3f s)",
                            drift, f.seconds, interval / 2))
            }
            return (f.image, match.image, f.seconds)
        }, total: r.duration > 0 && r.fps > 0 ? Int((r.duration * r.fps).rounded()) : nil, fps: r.fps > 0 ? r.fps : 25,
        name: URL(fileURLWithPath: rgb).deletingPathExtension().lastPathComponent)
        try run(source, stride: stride, sideBySide: sideBySide)
    }

    mutating func frames(rgb: [String], ir: [String]?, fps: Double, stride: Int, sideBySide: Bool) throws {
        if let ir, ir.count != rgb.count {
            warn("warning: \(rgb.count) RGB frames but \(ir.count) IR frames: pairing the first \(min(rgb.count, ir.count)) in name order")
        }
        let n = min(rgb.count, ir?.count ?? rgb.count)
        var k = 0
        let channels = irChannels
        let source = FrameSource(next: {
            guard k < n else { return nil }
            defer { k += 1 }
            let r = try ImageIO.read(rgb[k], channels: 3)
            let i = try ir.map { try ImageIO.read($0[k], channels: channels) }
            return (r, i, Double(k) / fps)
        }, total: n, fps: fps, name: URL(fileURLWithPath: rgb.first ?? "frames").deletingLastPathComponent().lastPathComponent)
        try run(source, stride: stride, sideBySide: sideBySide)
    }

    /// Frames through the model: annotated MP4s (RGB, IR, side by side), labels/<video>_<frame>.txt
    /// (frames counted as processed, as Ultralytics numbers them), JSON records, progress lines.
    mutating func run(_ source: FrameSource, stride: Int, sideBySide: Bool) throws {
        isVideo = true
        try FileManager.default.createDirectory(atPath: output + "/labels", withIntermediateDirectories: true)
        var writers: [String: VideoWriter] = [:]
        var decoded = 0, processed = 0
        let t0 = Date()
        var lastProgress = Date.distantPast
        let outFPS = source.fps / Double(stride)
        while let f = try source.next() {
            decoded += 1
            if (decoded - 1) % stride != 0 { continue }
            let ir = f.ir.map { register($0, to: f.rgb, file: source.name) }
            let dets = detect([(f.rgb, ir)])[0]
            processed += 1
            var outputs = [("rgb", draw(dets, f.rgb))]
            if let ir { outputs.append(("ir", draw(dets, ir))) }
            if sideBySide, let irImg = outputs.count > 1 ? outputs[1].1 : nil {
                var c = Canvas(width: f.rgb.width * 2, height: f.rgb.height, fill: 0)
                c.paste(outputs[0].1, x: 0, y: 0)
                c.paste(irImg, x: f.rgb.width, y: 0)
                outputs.append(("side_by_side", c.image))
            }
            for (kind, img) in outputs {
                if writers[kind] == nil {
                    let w = try VideoWriter(path: "\(output)/\(source.name)_\(kind).mp4", width: img.width, height: img.height, fps: outFPS)
                    if kind == "rgb" { print("writing \(output)/\(source.name)_*.mp4 (\(w.codec), \(img.width)x\(img.height) at \(String(format: "%.3g", outFPS)) fps)") }
                    writers[kind] = w
                }
                try writers[kind]!.write(img)
            }
            if saveCrop { try writeCrops(dets, [("rgb", f.rgb)] + (ir.map { [("ir", $0)] } ?? []), stem: "\(source.name)_\(processed)") }
            try writeLabels(dets, width: f.rgb.width, height: f.rgb.height, stem: "\(source.name)_\(processed)")
            var rec: [String: Any] = ["video": source.name, "frame": processed, "width": f.rgb.width, "height": f.rgb.height, "detections": record(dets)]
            if let t = f.seconds { rec["seconds"] = t }
            records.append(rec)
            detections += dets.count
            if Date().timeIntervalSince(lastProgress) > 2 {
                lastProgress = Date()
                let elapsed = Date().timeIntervalSince(t0), rate = Double(processed) / max(elapsed, 1e-9)
                var line = String(format: "frame %d", decoded)
                if let total = source.total, total > 0 {
                    let left = Double(max(total - decoded, 0)) / Double(stride) / max(rate, 1e-9)
                    line += String(format: "/%d (%.0f%%), %.1f fps, ETA %d:%02d", total, 100 * Double(decoded) / Double(total), rate, Int(left) / 60, Int(left) % 60)
                } else {
                    line += String(format: ", %.1f fps", rate)
                }
                print(line)
                fflush(nil)
            }
        }
        for (_, w) in writers.sorted(by: { $0.key < $1.key }) { try w.finish() }
        print("\(source.name): \(decoded) frames decoded, \(processed) processed")
    }

    func writeJSON(weights: String) throws {
        let json = try JSONSerialization.data(withJSONObject: ["weights": weights, "imgsz": size, "conf": Double(nms.confidence),
                                                               "iou": Double(nms.iou), "merge": merge.rawValue,
                                                               (isVideo ? "frames" : "images"): records], options: [.prettyPrinted, .sortedKeys])
        try json.write(to: URL(fileURLWithPath: output + "/predictions.json"))
    }
}

/// The frames of a second stream matched by time to a first: for a time t, the frame whose time
/// is nearest to t (streams of different rates or lengths; past the end, the last frame).
final class NearestFrame {
    let reader: VideoReader
    private var current: (image: RasterImage, seconds: Double)?
    private var lookahead: (image: RasterImage, seconds: Double)?

    init(_ reader: VideoReader) throws {
        self.reader = reader
        current = try reader.next()
        lookahead = try reader.next()
    }

    func frame(at t: Double) throws -> (image: RasterImage, seconds: Double)? {
        while let la = lookahead, let cur = current, abs(la.seconds - t) <= abs(cur.seconds - t) {
            current = la
            lookahead = try reader.next()
        }
        return current
    }
}
