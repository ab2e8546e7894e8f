import Detection
import Foundation
import NN
import TensorCore

/// A model rebuilt from a weights file (DualFuse's, or one converted by tools/convert_pt.py).
public struct LoadedModel {
    public let model: DetectionModel
    public let names: [String]
    public let metadata: [String: String]
    public let report: LoadReport
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
            throw TrainingError.invalid("\(weights): the file has no model YAML in its metadata; pass --cfg configs/models/…yaml")
        }
        var names: [String] = []
        if let js = meta["names"], let d = js.data(using: .utf8) {
            if let list = try? JSONDecoder().decode([String].self, from: d) { names = list }
            else if let map = try? JSONDecoder().decode([String: String].self, from: d) {
                names = map.keys.compactMap(Int.init).sorted().map { map[String($0)]! }
            }
        }
        var nc = Int(meta["nc"] ?? "") ?? names.count
        if nc == 0 {
            // Infer from the class branch of the (first) Detect head.
            nc = tensors.first { $0.key.hasSuffix(".cv3.0.2.bias") }?.value.shape.first ?? spec.nc
        }
        if names.count != nc { names = (0..<nc).map { "class\($0)" } }
        var channels: [String: Int] = [:]
        for item in (meta["streams"] ?? "").split(separator: ",") {
            let kv = item.split(separator: ":")
            if kv.count == 2, let c = Int(kv[1]), spec.streams.contains(where: { $0.name == String(kv[0]) }) { channels[String(kv[0])] = c }
        }
        if let irChannels, spec.streams.contains(where: { $0.name == "ir" }) { channels["ir"] = irChannels }
        let model = try ModelBuilder.build(spec, nc: nc, channels: channels)
        let report = try StateDict.load(tensors, into: model.namedTensors(), strict: true, fileName: weights)
        model.training = false
        return LoadedModel(model: model, names: names, metadata: meta, report: report)
    }
}
