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
    /// Limits on the numbers of a model YAML (each checked before anything is allocated): a typo or a
    /// hostile file gets an error naming the row, never an allocation failure or an overflow trap.
    public enum Limits {
        public static let channels = 16384
        public static let kernel = 31
        public static let stride = 8
        public static let repeats = 64
        public static let classes = 100_000
        public static let regMax = 64
        /// Parameters of the whole model (Float32 elements).
        public static let parameters = 500_000_000
    }

    public static func build(_ spec: ModelSpec, nc ncOverride: Int? = nil, channels: [String: Int] = [:],
                             scale: String? = nil, seed: UInt64 = 0, maxParameters: Int = Limits.parameters) throws -> DetectionModel {
        func fail(_ row: SpecRow?, _ msg: String) -> ModelSpecError {
            .invalid(file: spec.file, line: row?.line, message: msg)
        }
        var m = spec.multipliers
        if let scale {
            guard let v = spec.scales[scale] else { throw fail(nil, "scale '\(scale)' is not among \(spec.scales.keys.sorted())") }
            m = v
        }
        let nc = ncOverride ?? spec.nc
        guard nc >= 1 && nc <= Limits.classes else { throw fail(nil, "nc must be in 1...\(Limits.classes), got \(nc)") }
        guard (1...Limits.regMax).contains(spec.regMax) else { throw fail(nil, "reg_max must be in 1...\(Limits.regMax), got \(spec.regMax)") }
        guard m.width > 0 && m.width <= 64 && m.depth > 0 && m.depth <= 64 && m.maxChannels >= 1 else {
            throw fail(nil, "scale multipliers must be positive (depth, width <= 64, max_channels >= 1), got \(m)")
        }
        var budget = maxParameters
        for (k, c) in channels {
            guard (1...Limits.channels).contains(c) else { throw fail(nil, "stream '\(k)' has \(c) channels; expected 1...\(Limits.channels)") }
        }
        for s in spec.streams where !(1...Limits.channels).contains(s.channels) {
            throw fail(nil, "stream '\(s.name)' has \(s.channels) channels; expected 1...\(Limits.channels)")
        }
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
                let built = try buildModule(row, inCh: inCh, inStride: inStride, nc: nc, m: m, regMax: spec.regMax, budget: &budget,
                                            rng: &rng, fail: fail)
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
                            m: (depth: Double, width: Double, maxChannels: Int), regMax: Int, budget: inout Int,
                            rng: inout RandomState, fail: (SpecRow?, String) -> ModelSpecError) throws -> Built {
        /// Takes `products` (each a list of factors) from the parameter budget, with checked arithmetic.
        func charge(_ products: [[Int]]) throws {
            var total = 0
            for factors in products {
                var p = 1
                for f in factors {
                    let (r, o) = p.multipliedReportingOverflow(by: max(f, 0))
                    guard !o else { throw fail(row, "\(row.module) would need more parameters than can be counted") }
                    p = r
                }
                let (t, o) = total.addingReportingOverflow(p)
                guard !o else { throw fail(row, "\(row.module) would need more parameters than can be counted") }
                total = t
            }
            guard total <= budget else {
                throw fail(row, "the model would exceed \(Limits.parameters) parameters at this \(row.module) row (args \(row.args))")
            }
            budget -= total
        }
        func channels(_ c: Int, _ what: String) throws -> Int {
            guard (1...Limits.channels).contains(c) else { throw fail(row, "\(row.module) \(what) \(c) is outside 1...\(Limits.channels)") }
            return c
        }
        for c in inCh { _ = try channels(c, "input channels") }
        guard (0...Limits.repeats).contains(row.repeats) else { throw fail(row, "repeats \(row.repeats) is outside 0...\(Limits.repeats)") }
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
            let c1 = inCh[0], c2 = try channels(scaled(try channels(try intArg(0, 0), "output channels")), "scaled output channels")
            let k = try intArg(1, 1), s = try intArg(2, 1)
            guard c2 > 0, (1...Limits.kernel).contains(k), (1...Limits.stride).contains(s) else {
                throw fail(row, "Conv needs [c2 > 0, k in 1...\(Limits.kernel), s in 1...\(Limits.stride)], got \(row.args)")
            }
            try charge([[c1, c2, k, k]] + Array(repeating: [c2, c2, k, k], count: max(n - 1, 0)))
            var layers: [UnaryLayer] = []
            for i in 0..<n { layers.append(ConvBlock(i == 0 ? c1 : c2, c2, k: k, s: s, rng: &rng)) }
            var stride = inStride[0]
            for _ in 0..<n {
                stride *= s
                guard stride <= 1024 else { throw fail(row, "the feature stride would exceed 1024 at this Conv row") }
            }
            return Built(kind: .layer(n == 1 ? layers[0] : Sequential(layers)), channels: c2, stride: stride,
                         moduleName: "Conv", arguments: "[\(c1), \(c2), \(k), \(s)]")
        case "C2f":
            let c1 = inCh[0], c2 = try channels(scaled(try channels(try intArg(0, 0), "output channels")), "scaled output channels"), shortcut = try boolArg(1, false)
            let c = c2 / 2
            try charge([[c1, 2 * c], [(2 + n) * c, c2]] + Array(repeating: [2, c, c, 9], count: n))
            return Built(kind: .layer(C2f(c1, c2, n: n, shortcut: shortcut, rng: &rng)), channels: c2, stride: inStride[0],
                         moduleName: "C2f", arguments: "[\(c1), \(c2), \(n), \(shortcut ? "True" : "False")]")
        case "Bottleneck":
            let c1 = inCh[0], c2 = try channels(scaled(try channels(try intArg(0, 0), "output channels")), "scaled output channels"), shortcut = try boolArg(1, true)
            try charge(Array(repeating: [2, max(c1, c2), c2, 9], count: n))
            var layers: [UnaryLayer] = []
            for i in 0..<n { layers.append(Bottleneck(i == 0 ? c1 : c2, c2, shortcut: shortcut, rng: &rng)) }
            return Built(kind: .layer(n == 1 ? layers[0] : Sequential(layers)), channels: c2, stride: inStride[0],
                         moduleName: "Bottleneck", arguments: "[\(c1), \(c2), \(shortcut ? "True" : "False")]")
        case "SPPF":
            let c1 = inCh[0], c2 = try channels(scaled(try channels(try intArg(0, 0), "output channels")), "scaled output channels"), k = try intArg(1, 5)
            guard (1...Limits.kernel).contains(k) else { throw fail(row, "SPPF kernel \(k) is outside 1...\(Limits.kernel)") }
            try charge([[c1, c1 / 2], [c1 / 2 * 4, c2]])
            return Built(kind: .layer(SPPF(c1, c2, k: k, rng: &rng)), channels: c2, stride: inStride[0],
                         moduleName: "SPPF", arguments: "[\(c1), \(c2), \(k)]")
        case "nn.Upsample", "Upsample":
            let f = try intArg(1, 2)
            if row.args.count > 2, case let .string(mode) = row.args[2], mode != "nearest" {
                throw fail(row, "Upsample mode '\(mode)' is not supported; use nearest")
            }
            guard (1...Limits.stride).contains(f), inStride[0] % f == 0 else { throw fail(row, "Upsample by \(f) from stride \(inStride[0]) is not a whole stride") }
            return Built(kind: .layer(Upsample(factor: f)), channels: inCh[0], stride: inStride[0] / f,
                         moduleName: "nn.Upsample", arguments: "[None, \(f), 'nearest']")
        case "Concat":
            guard !inCh.isEmpty else { throw fail(row, "Concat needs at least one input") }
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
            guard !inCh.isEmpty else { throw fail(row, "Detect needs at least one input") }
            let c2 = max(16, inCh[0] / 4, regMax * 4), c3 = max(inCh[0], min(nc, 100))
            try charge(inCh.flatMap { ch in [[ch, c2, 9], [c2, c2, 9], [c2, 4 * regMax], [ch, c3, 9], [c3, c3, 9], [c3, nc]] })
            let d = Detect(nc: nc, channels: inCh, strides: inStride, regMax: regMax, rng: &rng)
            return Built(kind: .detect(d), channels: 0, stride: 0, moduleName: "Detect",
                         arguments: "[\(nc), \(inCh)]")
        default:
            throw fail(row, "unknown module '\(row.module)'; supported: Conv, C2f, Bottleneck, SPPF, nn.Upsample, Concat, Detect")
        }
    }
}
