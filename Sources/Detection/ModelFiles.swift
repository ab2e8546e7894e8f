import Foundation
import NN
import TensorCore

/// A model rebuilt from a weights file (DualFuse's, or one converted by tools/convert_pt.py).
public struct LoadedModel {
    public let model: DetectionModel
    public let names: [String]
    public let metadata: [String: String]
    public let report: LoadReport
    /// Metadata values that were unusable, each with the fallback taken (for the caller to print).
    public let warnings: [String]

    /// The training image size stored with the weights, when it is a usable size.
    public var storedImageSize: Int? {
        guard let v = metadata["imgsz"].flatMap({ Int($0) }), ImageSize.range.contains(v) else { return nil }
        return v
    }
}

/// A weights file that cannot be turned into a model, or a size no command accepts.
public enum ModelFileError: Error, CustomStringConvertible {
    case invalid(String)
    public var description: String {
        switch self { case let .invalid(m): return m }
    }
}

/// Image-size checks shared by every command (Ultralytics' check_imgsz, with a stated range).
public enum ImageSize {
    /// Sizes any command accepts.
    public static let range = 32...8192

    /// `requested` (a flag) or else the size stored with the weights (or 640), checked: outside
    /// the range is an error naming the range; a size off the stride is rounded up to the next
    /// multiple, with a warning naming the size used.
    public static func resolve(requested: Int?, flag: String = "--imgsz", stored: Int?, stride: Int,
                               warn: (String) -> Void) throws -> Int {
        guard let v = requested else { return stored.map { align($0, stride) } ?? 640 }
        guard range.contains(v), v >= stride else {
            throw ModelFileError.invalid("\(flag) \(v): expected a size in \(max(range.lowerBound, stride))...\(range.upperBound) (a multiple of the model's stride \(stride))")
        }
        let a = align(v, stride)
        if a != v { warn("warning: \(flag) \(v) is not a multiple of the model's stride \(stride); using \(a)") }
        return a
    }

    static func align(_ v: Int, _ stride: Int) -> Int { max(stride, (v + stride - 1) / stride * stride) }
}

public enum ModelFiles {
    /// Builds the model described by the weights' metadata (or `cfg` when given or when the
    /// file has none) and loads the weights strictly by name.
    ///
    /// `irChannels` overrides the stored stream layout; class names come from the metadata
    /// (`names`), else `class0`, `class1`, ….
    public static func load(weights: String, cfg: String? = nil, irChannels: Int? = nil) throws -> LoadedModel {
        let (tensors, meta) = try Safetensors.read(weights)
        let spec: ModelSpec
        if let cfg {
            spec = try ModelSpec.load(cfg)
        } else if let text = meta["yaml"], !text.isEmpty {
            spec = try ModelSpec.parse(text, file: meta["yaml_file"] ?? weights)
        } else {
            throw ModelFileError.invalid("\(weights): the file has no model YAML in its metadata; pass --cfg configs/models/…yaml")
        }
        var names: [String] = []
        if let js = meta["names"], let d = js.data(using: .utf8) {
            if let list = try? JSONDecoder().decode([String].self, from: d) { names = list }
            else if let map = try? JSONDecoder().decode([String: String].self, from: d) {
                names = map.keys.compactMap(Int.init).sorted().map { map[String($0)]! }
            }
        }
        var warnings: [String] = []
        // The class count the head's weights have: the truth when the metadata disagrees.
        let headNC = tensors.first { $0.key.hasSuffix(".cv3.0.2.bias") }?.value.shape.first
        var nc = names.count
        if let text = meta["nc"] {
            if let v = Int(text), (1...100_000).contains(v) { nc = v }
            else { warnings.append("\(weights): metadata nc '\(text)' is not a class count; using \(headNC.map { "the head's \($0)" } ?? "the names' \(names.count)")") }
        }
        if let headNC, nc != headNC {
            if nc != 0 { warnings.append("\(weights): metadata says \(nc) classes, the Detect head has \(headNC); using \(headNC)") }
            nc = headNC
        }
        if nc == 0 { nc = spec.nc }
        if names.count != nc {
            if !names.isEmpty { warnings.append("\(weights): \(names.count) class names for \(nc) classes; naming them class0, class1, ...") }
            names = (0..<nc).map { "class\($0)" }
        }
        if let text = meta["imgsz"], !(Int(text).map { ImageSize.range.contains($0) } ?? false) {
            warnings.append("\(weights): metadata imgsz '\(text)' is not a usable size (\(ImageSize.range.lowerBound)...\(ImageSize.range.upperBound)); using 640 unless --imgsz is given")
        }
        var channels: [String: Int] = [:]
        for item in (meta["streams"] ?? "").split(separator: ",") {
            let kv = item.split(separator: ":")
            guard kv.count == 2, spec.streams.contains(where: { $0.name == String(kv[0]) }) else { continue }
            if let c = Int(kv[1]), c == 1 || c == 3 || (String(kv[0]) != "ir" && c > 0 && c <= 16) { channels[String(kv[0])] = c }
            else { warnings.append("\(weights): metadata streams entry '\(item)' has no usable channel count; using the model YAML's") }
        }
        if let irChannels, spec.streams.contains(where: { $0.name == "ir" }) { channels["ir"] = irChannels }
        let model = try ModelBuilder.build(spec, nc: nc, channels: channels)
        let report = try StateDict.load(tensors, into: model.namedTensors(), strict: true, fileName: weights)
        model.training = false
        return LoadedModel(model: model, names: names, metadata: meta, report: report, warnings: warnings)
    }
}
