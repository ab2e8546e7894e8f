import Detection
import Foundation
import NN
import TensorCore

/// Errors of an export; each says what was expected.
public enum ExportError: Error, CustomStringConvertible {
    case unsupported(String)
    public var description: String {
        switch self { case let .unsupported(m): return m }
    }
}

/// What `ONNXExporter` writes besides the graph.
public struct ExportOptions: Sendable {
    /// Input height and width (square, a multiple of the model's stride).
    public var imageSize = 640
    /// Batch, height and width symbolic (anchors computed in the graph from the feature sizes).
    public var dynamic = false
    /// Weights stored as IEEE half (cast to Float32 in the graph); inputs and outputs stay Float32.
    public var half = false
    /// Class names (index = class id).
    public var names: [String] = []
    public init() {}
}

/// Builds an ONNX graph (IR 8, opset 17) from a built `DetectionModel` whose batch norms are folded.
///
/// Inputs: `rgb` [N, 3, H, W] and `ir` [N, C, H, W] for a dual model, `images` for a
/// single-stream one (RGB order, values 0-1, letterboxed, as `predict` feeds them). One output
/// `output0` [N, 4 + nc, A] as Ultralytics' YOLOv8 export: cx, cy, w, h in input pixels, then a
/// sigmoid score per class, no NMS; late fusion concatenates both heads' candidates along A.
/// SiLU is Sigmoid + Mul, the DFL Softmax + a 1x1 Conv, upsampling Resize (nearest, asymmetric,
/// floor), C2f's split a Split with sizes.
public struct ONNXExporter {
    let model: DetectionModel
    let options: ExportOptions
    var graph = ONNX.Graph(name: "dualfuse")
    var counter = 0
    var constants: [String: String] = [:]

    public init(model: DetectionModel, options: ExportOptions) throws {
        guard model.isFused else { throw ExportError.unsupported("fold the batch norms (model.fuse()) before exporting") }
        let stride = model.strides.max() ?? 32
        guard options.imageSize > 0, options.imageSize % stride == 0 else {
            throw ExportError.unsupported("image size \(options.imageSize) must be a positive multiple of the stride \(stride)")
        }
        self.model = model
        self.options = options
    }

    /// The input names of `model`: `rgb` and `ir` for a dual model, `images` otherwise.
    public static func inputNames(_ model: DetectionModel) -> [String: String] {
        var d: [String: String] = [:]
        for s in model.streams { d[s.name] = model.isDual ? s.name : "images" }
        return d
    }

    /// The fusion strategy, from the graph: none, input, early, mid or late.
    public static func fusion(_ model: DetectionModel) -> String {
        guard model.isDual else { return "none" }
        if model.detectNodes.count > 1 { return "late" }
        guard let first = model.nodes.first(where: { $0.streams.count > 1 }) else { return "none" }
        if first.sources.allSatisfy({ if case .input = $0 { return true } else { return false } }) { return "input" }
        return first.stride <= 4 ? "early" : "mid"
    }

    /// The serialized model with Ultralytics' metadata (names, stride, imgsz, task, batch,
    /// description) and DualFuse's (streams, fusion, ir_channels).
    public mutating func export(description: String) throws -> ONNX.Model {
        let names = ONNXExporter.inputNames(model)
        let n: ONNX.Dim = options.dynamic ? .param("batch") : .value(1)
        let h: ONNX.Dim = options.dynamic ? .param("height") : .value(options.imageSize)
        let w: ONNX.Dim = options.dynamic ? .param("width") : .value(options.imageSize)
        var values: [Int: String] = [:]
        var inputTensors: [String: String] = [:]
        for s in model.streams {
            let name = names[s.name]!
            graph.inputs.append(ONNX.ValueInfo(name: name, type: .float, shape: [n, .value(s.channels), h, w]))
            inputTensors[s.name] = name
        }
        var heads: [String] = []
        for node in model.nodes {
            let xs: [String] = node.sources.map { src in
                switch src {
                case let .node(j): return values[j]!
                case let .input(s): return inputTensors[s]!
                }
            }
            switch node.kind {
            case let .layer(l): values[node.index] = try layer(l, xs[0], prefix: node.name)
            case .concat: values[node.index] = emit("Concat", xs, [.int("axis", 1)])
            case let .detect(d): heads.append(try detect(d, xs, prefix: node.name))
            }
        }
        let out = heads.count == 1 ? heads[0] : emit("Concat", heads, [.int("axis", 2)])
        rename(out, to: "output0")
        let anchors: ONNX.Dim
        if options.dynamic { anchors = .param("anchors") } else {
            let s = options.imageSize
            anchors = .value(model.detectNodes.count * model.strides.reduce(0) { $0 + (s / $1) * (s / $1) })
        }
        graph.outputs = [ONNX.ValueInfo(name: "output0", type: .float, shape: [n, .value(4 + model.nc), anchors])]

        var m = ONNX.Model(graph: graph)
        let dict = options.names.enumerated().map { "\($0.offset): '\($0.element.replacingOccurrences(of: "'", with: "\\'"))'" }.joined(separator: ", ")
        m.metadata = [
            ("description", description), ("author", "DualFuse"), ("date", ISO8601DateFormatter().string(from: Date())),
            ("version", "DualFuse 1"), ("license", "see the project"), ("docs", "README.md"),
            ("stride", String(model.strides.max() ?? 32)), ("task", "detect"), ("batch", "1"),
            ("imgsz", "[\(options.imageSize), \(options.imageSize)]"), ("names", "{\(dict)}"),
            ("args", "{'batch': 1, 'half': \(options.half ? "True" : "False"), 'dynamic': \(options.dynamic ? "True" : "False"), 'nms': False}"),
            ("streams", model.streams.map { "\(names[$0.name]!):\($0.channels)" }.joined(separator: ",")),
            ("fusion", ONNXExporter.fusion(model)),
            ("ir_channels", String(model.streams.first { $0.name == "ir" }?.channels ?? 0)),
        ]
        return m
    }

    // MARK: - Graph building

    /// A fresh value name.
    mutating func fresh(_ hint: String) -> String {
        counter += 1
        return "\(hint)_\(counter)"
    }

    /// Adds a node with one output; returns the output's name.
    @discardableResult
    mutating func emit(_ op: String, _ inputs: [String], _ attributes: [ONNX.Attribute] = [], outputs: Int = 1) -> String {
        emitMany(op, inputs, attributes, outputs: outputs)[0]
    }

    mutating func emitMany(_ op: String, _ inputs: [String], _ attributes: [ONNX.Attribute] = [], outputs: Int) -> [String] {
        let outs = (0..<outputs).map { _ in fresh(op.lowercased()) }
        graph.nodes.append(ONNX.Node(op: op, inputs: inputs, outputs: outs, name: "\(op)_\(graph.nodes.count)", attributes: attributes))
        return outs
    }

    /// Renames the value `old` (the output of the last node producing it) to `new`.
    mutating func rename(_ old: String, to new: String) {
        for i in graph.nodes.indices.reversed() {
            if let k = graph.nodes[i].outputs.firstIndex(of: old) { graph.nodes[i].outputs[k] = new; return }
        }
    }

    /// A weight initializer (Float32, or half + a Cast to Float32 with --half); returns the name of the Float32 value.
    mutating func weight(_ name: String, _ t: Tensor) -> String {
        if options.half {
            graph.initializers.append(.halves(name, Half.encode(t.array), dims: t.shape))
            return emit("Cast", [name], [.int("to", ONNX.DataType.float.rawValue)])
        }
        graph.initializers.append(.floats(name, t.array, dims: t.shape))
        return name
    }

    /// A Float32 constant (shared by value).
    mutating func constant(_ values: [Float], dims: [Int]) -> String {
        let key = "f\(dims)\(values)"
        if let c = constants[key] { return c }
        let name = fresh("const")
        graph.initializers.append(.floats(name, values, dims: dims))
        constants[key] = name
        return name
    }

    /// An int64 constant (shapes, axes, split sizes).
    mutating func int64s(_ values: [Int64]) -> String {
        let key = "i\(values)"
        if let c = constants[key] { return c }
        let name = fresh("shape")
        graph.initializers.append(.int64s(name, values))
        constants[key] = name
        return name
    }

    mutating func layer(_ l: UnaryLayer, _ x: String, prefix: String) throws -> String {
        switch l {
        case let c as ConvBlock: return try conv(c, x, prefix: prefix)
        case let c as Conv2d:
            let k = c.weight.shape[2]
            let w = weight(prefix + ".weight", c.weight), b = weight(prefix + ".bias", c.bias)
            return emit("Conv", [x, w, b], convAttributes(k: k, s: c.s, p: c.p))
        case let s as Sequential:
            var y = x
            for (i, inner) in s.layers.enumerated() { y = try layer(inner, y, prefix: prefix + ".\(i)") }
            return y
        case let b as Bottleneck:
            let y = try conv(b.cv2, try conv(b.cv1, x, prefix: prefix + ".cv1"), prefix: prefix + ".cv2")
            return b.add ? emit("Add", [x, y]) : y
        case let c as C2f:
            let y = try conv(c.cv1, x, prefix: prefix + ".cv1")
            var parts = emitMany("Split", [y, int64s([Int64(c.c), Int64(c.c)])], [.int("axis", 1)], outputs: 2)
            for (i, b) in c.m.enumerated() { parts.append(try layer(b, parts[parts.count - 1], prefix: prefix + ".m.\(i)")) }
            return try conv(c.cv2, emit("Concat", parts, [.int("axis", 1)]), prefix: prefix + ".cv2")
        case let s as SPPF:
            var ys = [try conv(s.cv1, x, prefix: prefix + ".cv1")]
            for _ in 0..<3 {
                ys.append(emit("MaxPool", [ys[ys.count - 1]], [.ints("kernel_shape", [Int64(s.k), Int64(s.k)]), .ints("strides", [1, 1]),
                                                                  .ints("pads", Array(repeating: Int64(s.k / 2), count: 4))]))
            }
            return try conv(s.cv2, emit("Concat", ys, [.int("axis", 1)]), prefix: prefix + ".cv2")
        case let u as Upsample:
            let scales = constant([1, 1, Float(u.factor), Float(u.factor)], dims: [4])
            return emit("Resize", [x, "", scales], [.string("mode", "nearest"), .string("coordinate_transformation_mode", "asymmetric"),
                                                    .string("nearest_mode", "floor")])
        default:
            throw ExportError.unsupported("layer \(type(of: l)) at \(prefix) has no ONNX form")
        }
    }

    func convAttributes(k: Int, s: Int, p: Int) -> [ONNX.Attribute] {
        [.ints("kernel_shape", [Int64(k), Int64(k)]), .ints("strides", [Int64(s), Int64(s)]),
         .ints("pads", [Int64(p), Int64(p), Int64(p), Int64(p)]), .ints("dilations", [1, 1]), .int("group", 1)]
    }

    /// A folded Conv (+ SiLU as Sigmoid x Mul).
    mutating func conv(_ c: ConvBlock, _ x: String, prefix: String) throws -> String {
        guard let bias = c.fusedBias else { throw ExportError.unsupported("\(prefix): batch norm not folded") }
        let w = weight(prefix + ".conv.weight", c.weight), b = weight(prefix + ".conv.bias", bias)
        let y = emit("Conv", [x, w, b], convAttributes(k: c.k, s: c.s, p: c.p))
        guard c.act else { return y }
        return emit("Mul", [y, emit("Sigmoid", [y])])
    }

    /// The Detect head with its decoding: [N, 4 + nc, A].
    mutating func detect(_ d: Detect, _ xs: [String], prefix: String) throws -> String {
        var boxes: [String] = [], scores: [String] = [], levels: [String] = []
        for (i, x) in xs.enumerated() {
            var b = x, c = x
            for (j, l) in d.cv2[i].enumerated() { b = try layer(l, b, prefix: "\(prefix).cv2.\(i).\(j)") }
            for (j, l) in d.cv3[i].enumerated() { c = try layer(l, c, prefix: "\(prefix).cv3.\(i).\(j)") }
            levels.append(b)
            boxes.append(emit("Reshape", [b, int64s([0, Int64(4 * d.regMax), -1])]))
            scores.append(emit("Reshape", [c, int64s([0, Int64(d.nc), -1])]))
        }
        let box = boxes.count == 1 ? boxes[0] : emit("Concat", boxes, [.int("axis", 2)])
        let cls = scores.count == 1 ? scores[0] : emit("Concat", scores, [.int("axis", 2)])
        // DFL: [N, 4*R, A] -> [N, 4, R, A] -> [N, R, 4, A] -> softmax over R -> 1x1 conv with 0..R-1 -> [N, 4, A].
        let r = emit("Reshape", [box, int64s([0, 4, Int64(d.regMax), -1])])
        let t = emit("Transpose", [r], [.ints("perm", [0, 2, 1, 3])])
        let sm = emit("Softmax", [t], [.int("axis", 1)])
        let dfl = emit("Conv", [sm, weight(prefix + ".dfl.conv.weight", d.dflWeight)], convAttributes(k: 1, s: 1, p: 0))
        let dist = emit("Reshape", [dfl, int64s([0, 4, -1])])
        // dist2bbox (xywh): anchors [1, 2, A] and strides [1, A] (constants, or computed for --dynamic).
        let (anchors, strides) = try anchorTensors(d, levels: levels)
        let halves = emitMany("Split", [dist, int64s([2, 2])], [.int("axis", 1)], outputs: 2)
        let x1y1 = emit("Sub", [anchors, halves[0]]), x2y2 = emit("Add", [anchors, halves[1]])
        let centre = emit("Mul", [emit("Add", [x1y1, x2y2]), constant([0.5], dims: [])])
        let wh = emit("Sub", [x2y2, x1y1])
        let xywh = emit("Mul", [emit("Concat", [centre, wh], [.int("axis", 1)]), strides])
        return emit("Concat", [xywh, emit("Sigmoid", [cls])], [.int("axis", 1)])
    }

    /// Anchor centres (grid units) [1, 2, A] and the stride of each anchor [1, A].
    mutating func anchorTensors(_ d: Detect, levels: [String]) throws -> (String, String) {
        if !options.dynamic {
            var sizes: [(height: Int, width: Int)] = []
            for s in d.strides { sizes.append((options.imageSize / s, options.imageSize / s)) }
            let (pts, st) = makeAnchors(levels: sizes, strides: d.strides)
            let a = pts.count / 2
            var xy = [Float](repeating: 0, count: 2 * a)
            for j in 0..<a { xy[j] = pts[2 * j]; xy[a + j] = pts[2 * j + 1] }
            return (constant(xy, dims: [1, 2, a]), constant(st, dims: [1, a]))
        }
        // From each level's feature map: Shape -> h, w -> Range -> grids (+0.5) -> flattened.
        var xyLevels: [String] = [], strideLevels: [String] = []
        for (i, f) in levels.enumerated() {
            let shape = emit("Shape", [f])
            let hw = emitMany("Split", [emit("Slice", [shape, int64s([2]), int64s([4])]), int64s([1, 1])], [.int("axis", 0)], outputs: 2)
            let ys = rangeAxis(hw[0]), xs = rangeAxis(hw[1])
            let col = emit("Unsqueeze", [ys, int64s([1])]), row = emit("Unsqueeze", [xs, int64s([0])])
            let zero = constant([0], dims: [])
            let gx = emit("Add", [row, emit("Mul", [col, zero])]), gy = emit("Add", [col, emit("Mul", [row, zero])])
            let fx = emit("Reshape", [gx, int64s([1, -1])]), fy = emit("Reshape", [gy, int64s([1, -1])])
            xyLevels.append(emit("Concat", [fx, fy], [.int("axis", 0)]))
            strideLevels.append(emit("Add", [emit("Mul", [fx, zero]), constant([Float(d.strides[i])], dims: [])]))
        }
        let xy = emit("Unsqueeze", [emit("Concat", xyLevels, [.int("axis", 1)]), int64s([0])])
        let st = emit("Concat", strideLevels, [.int("axis", 1)])
        return (xy, st)
    }
}

extension ONNXExporter {
    /// 0.5, 1.5, ..., n - 0.5 for a one-element int64 tensor `n` (a feature map's height or width).
    mutating func rangeAxis(_ n: String) -> String {
        let limit = emit("Squeeze", [n, int64s([0])])
        let idx = emit("Range", [int64Scalar(0), limit, int64Scalar(1)])
        let f = emit("Cast", [idx], [.int("to", ONNX.DataType.float.rawValue)])
        return emit("Add", [f, constant([0.5], dims: [])])
    }

    /// A rank-0 int64 constant.
    mutating func int64Scalar(_ v: Int64) -> String {
        let key = "s\(v)"
        if let c = constants[key] { return c }
        let name = fresh("scalar")
        graph.initializers.append(.int64s(name, [v], dims: []))
        constants[key] = name
        return name
    }
}
