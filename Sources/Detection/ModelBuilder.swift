import Foundation
import NN
import TensorCore

/// Builds a `DetectionModel` from a `ModelSpec` with Ultralytics' `parse_model` rules: channels
/// scaled by width (rounded up to multiples of 8, capped by max channels), repeats by depth
/// (Python's round, at least 1), modules Conv, C2f, Bottleneck, SPPF, nn.Upsample, Concat, Detect.
public enum ModelBuilder {
    /// - Parameters:
    ///   - nc: number of classes (default: the YAML's).
    ///   - channels: channel counts overriding the YAML's streams (e.g. ["ir": 3] from the data YAML).
    ///   - scale: scale letter overriding the YAML's / file name's.
    ///   - seed: initial weights (PyTorch's default initialisers).
    public static func build(_ spec: ModelSpec, nc ncOverride: Int? = nil, channels: [String: Int] = [:],
                             scale: String? = nil, seed: UInt64 = 0) throws -> DetectionModel {
        func fail(_ row: SpecRow?, _ msg: String) -> ModelSpecError {
            .invalid(file: spec.file, line: row?.line, message: msg)
        }
        var m = spec.multipliers
        if let scale {
            guard let v = spec.scales[scale] else { throw fail(nil, "scale '\(scale)' is not among \(spec.scales.keys.sorted())") }
            m = v
        }
        let nc = ncOverride ?? spec.nc
        guard nc >= 1 else { throw fail(nil, "nc must be >= 1, got \(nc)") }
        for (k, _) in channels where !spec.streams.contains(where: { $0.name == k }) {
            throw fail(nil, "channel override for unknown stream '\(k)'; streams: \(spec.streams.map { $0.name })")
        }
        let streams = spec.streams.map { (name: $0.name, channels: channels[$0.name] ?? $0.channels) }
        var rng = RandomState(seed: seed)
        var nodes: [ModelNode] = []
        var namespace: [String: [Int: Int]] = [:]   // ns -> index in ns -> node index
        var lastOfStream: [String: Int] = [:]      // stream -> last node of its branch

        for section in spec.sections {
            var sectionNodes: [Int] = []
            for (r, row) in section.rows.enumerated() {
                let nsIndex = section.firstIndex + r
                // Resolve inputs.
                var sources: [NodeSource] = []
                for ref in row.from {
                    switch ref {
                    case let .relative(k):
                        let back = sectionNodes.count + k
                        if back >= 0 { sources.append(.node(sectionNodes[back])); break }
                        guard k == -1 && sectionNodes.isEmpty else {
                            throw fail(row, "'from' \(k) reaches before the start of section \(section.namespace)")
                        }
                        if let s = section.stream, section.kind == .backbone {
                            sources.append(.input(s))
                        } else if let s = section.stream, let last = lastOfStream[s] {
                            sources.append(.node(last))
                        } else if nodes.isEmpty {
                            guard streams.count == 1 else { throw fail(row, "'from' -1 on the first row is ambiguous with several streams; name one (\(streams.map { $0.name }.joined(separator: ", ")))") }
                            sources.append(.input(streams[0].name))
                        } else {
                            sources.append(.node(nodes.count - 1))
                        }
                    case let .index(k):
                        guard let j = namespace[section.namespace]?[k] else {
                            throw fail(row, "'from' \(k) does not name an earlier row of namespace '\(section.namespace)'")
                        }
                        sources.append(.node(j))
                    case let .qualified(ns, k):
                        guard let j = namespace[ns]?[k] else { throw fail(row, "'from' \(ns).\(k) does not name an earlier row") }
                        sources.append(.node(j))
                    case let .input(s):
                        sources.append(.input(s))
                    }
                }
                var inCh: [Int] = [], inStride: [Int] = [], deps = Set<String>()
                for src in sources {
                    switch src {
                    case let .node(j):
                        if case .detect = nodes[j].kind { throw fail(row, "cannot read the output of a Detect row (\(nodes[j].name))") }
                        inCh.append(nodes[j].channels); inStride.append(nodes[j].stride); deps.formUnion(nodes[j].streams)
                    case let .input(s):
                        guard let st = streams.first(where: { $0.name == s }) else { throw fail(row, "unknown stream '\(s)'") }
                        inCh.append(st.channels); inStride.append(1); deps.insert(s)
                    }
                }
                let name: String
                switch section.namespace {
                case "model": name = "model.\(nsIndex)"
                case "fuse": name = "fuse.\(nsIndex)"
                default: name = "\(section.namespace).model.\(nsIndex)"
                }
                let built = try buildModule(row, inCh: inCh, inStride: inStride, nc: nc, m: m, regMax: spec.regMax, rng: &rng, fail: fail)
                let node = ModelNode(index: nodes.count, name: name, row: row, sources: sources, kind: built.kind,
                                     channels: built.channels, stride: built.stride, streams: deps,
                                     moduleName: built.moduleName, arguments: built.arguments)
                for case let .node(j) in sources { nodes[j].lastUse = node.index }
                namespace[section.namespace, default: [:]][nsIndex] = node.index
                sectionNodes.append(node.index)
                nodes.append(node)
                if let s = section.stream { lastOfStream[s] = node.index }
            }
        }
        guard nodes.contains(where: { if case .detect = $0.kind { return true } else { return false } }) else {
            throw fail(nil, "the model has no Detect row")
        }
        for s in streams where !nodes.contains(where: { $0.sources.contains(.input(s.name)) }) {
            throw fail(nil, "stream '\(s.name)' is declared but no row reads it")
        }
        return DetectionModel(spec: spec, nc: nc, streams: streams, nodes: nodes)
    }

    struct Built {
        let kind: NodeKind
        let channels: Int
        let stride: Int
        let moduleName: String
        let arguments: String
    }

    static func buildModule(_ row: SpecRow, inCh: [Int], inStride: [Int], nc: Int,
                            m: (depth: Double, width: Double, maxChannels: Int), regMax: Int,
                            rng: inout RandomState, fail: (SpecRow?, String) -> ModelSpecError) throws -> Built {
        func intArg(_ i: Int, _ def: Int) throws -> Int {
            guard i < row.args.count else { return def }
            switch row.args[i] {
            case let .int(v): return v
            case .none: return def
            case let .string(s) where s == "nc": return nc
            default: throw fail(row, "\(row.module) argument \(i + 1) must be an integer, got \(row.args[i])")
            }
        }
        func boolArg(_ i: Int, _ def: Bool) throws -> Bool {
            guard i < row.args.count else { return def }
            switch row.args[i] {
            case let .bool(v): return v
            case .none: return def
            default: throw fail(row, "\(row.module) argument \(i + 1) must be True or False, got \(row.args[i])")
            }
        }
        func scaled(_ c: Int) -> Int { makeDivisible(Double(min(c, m.maxChannels)) * m.width, 8) }
        let n = row.repeats > 1 ? max(Int((Double(row.repeats) * m.depth).rounded(.toNearestOrEven)), 1) : row.repeats
        let single = ["Conv", "C2f", "SPPF", "Bottleneck", "nn.Upsample", "Upsample"]
        if single.contains(row.module) && inCh.count != 1 {
            throw fail(row, "\(row.module) takes one input, 'from' names \(inCh.count)")
        }
        switch row.module {
        case "Conv":
            let c1 = inCh[0], c2 = scaled(try intArg(0, 0))
            let k = try intArg(1, 1), s = try intArg(2, 1)
            guard c2 > 0, k >= 1, s >= 1 else { throw fail(row, "Conv needs [c2 > 0, k >= 1, s >= 1], got \(row.args)") }
            var layers: [UnaryLayer] = []
            for i in 0..<n { layers.append(ConvBlock(i == 0 ? c1 : c2, c2, k: k, s: s, rng: &rng)) }
            var stride = inStride[0]
            for _ in 0..<n { stride *= s }
            return Built(kind: .layer(n == 1 ? layers[0] : Sequential(layers)), channels: c2, stride: stride,
                         moduleName: "Conv", arguments: "[\(c1), \(c2), \(k), \(s)]")
        case "C2f":
            let c1 = inCh[0], c2 = scaled(try intArg(0, 0)), shortcut = try boolArg(1, false)
            return Built(kind: .layer(C2f(c1, c2, n: n, shortcut: shortcut, rng: &rng)), channels: c2, stride: inStride[0],
                         moduleName: "C2f", arguments: "[\(c1), \(c2), \(n), \(shortcut ? "True" : "False")]")
        case "Bottleneck":
            let c1 = inCh[0], c2 = scaled(try intArg(0, 0)), shortcut = try boolArg(1, true)
            var layers: [UnaryLayer] = []
            for i in 0..<n { layers.append(Bottleneck(i == 0 ? c1 : c2, c2, shortcut: shortcut, rng: &rng)) }
            return Built(kind: .layer(n == 1 ? layers[0] : Sequential(layers)), channels: c2, stride: inStride[0],
                         moduleName: "Bottleneck", arguments: "[\(c1), \(c2), \(shortcut ? "True" : "False")]")
        case "SPPF":
            let c1 = inCh[0], c2 = scaled(try intArg(0, 0)), k = try intArg(1, 5)
            return Built(kind: .layer(SPPF(c1, c2, k: k, rng: &rng)), channels: c2, stride: inStride[0],
                         moduleName: "SPPF", arguments: "[\(c1), \(c2), \(k)]")
        case "nn.Upsample", "Upsample":
            let f = try intArg(1, 2)
            if row.args.count > 2, case let .string(mode) = row.args[2], mode != "nearest" {
                throw fail(row, "Upsample mode '\(mode)' is not supported; use nearest")
            }
            guard f >= 1, inStride[0] % f == 0 else { throw fail(row, "Upsample by \(f) from stride \(inStride[0]) is not a whole stride") }
            return Built(kind: .layer(Upsample(factor: f)), channels: inCh[0], stride: inStride[0] / f,
                         moduleName: "nn.Upsample", arguments: "[None, \(f), 'nearest']")
        case "Concat":
            let dim = try intArg(0, 1)
            guard dim == 1 else { throw fail(row, "Concat supports dimension 1 (channels) only, got \(dim)") }
            guard Set(inStride).count == 1 else {
                throw fail(row, "Concat inputs have different strides \(inStride) (feature maps of different sizes)")
            }
            return Built(kind: .concat, channels: inCh.reduce(0, +), stride: inStride[0], moduleName: "Concat", arguments: "[1]")
        case "Detect":
            let ncArg = try intArg(0, nc)
            guard ncArg == nc else { throw fail(row, "Detect nc \(ncArg) differs from the model's nc \(nc); write [nc]") }
            guard Set(inStride).count == inStride.count else { throw fail(row, "Detect inputs must have distinct strides, got \(inStride)") }
            let d = Detect(nc: nc, channels: inCh, strides: inStride, regMax: regMax, rng: &rng)
            return Built(kind: .detect(d), channels: 0, stride: 0, moduleName: "Detect",
                         arguments: "[\(nc), \(inCh)]")
        default:
            throw fail(row, "unknown module '\(row.module)'; supported: Conv, C2f, Bottleneck, SPPF, nn.Upsample, Concat, Detect")
        }
    }
}
