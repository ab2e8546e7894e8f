import Foundation
import Yams

/// Errors in a model YAML; each names the file, the row (line) and what was expected.
public enum ModelSpecError: Error, CustomStringConvertible {
    case unreadable(file: String, reason: String)
    case invalid(file: String, line: Int?, message: String)

    public var description: String {
        switch self {
        case let .unreadable(file, reason): return "\(file): cannot read model YAML (\(reason))"
        case let .invalid(file, line, message):
            return line.map { "\(file):\($0): \(message)" } ?? "\(file): \(message)"
        }
    }
}

/// A value in a row's argument list.
public enum SpecArg: Equatable, CustomStringConvertible, Sendable {
    case int(Int), double(Double), bool(Bool), string(String), none

    public var description: String {
        switch self {
        case let .int(v): return "\(v)"
        case let .double(v): return "\(v)"
        case let .bool(v): return v ? "True" : "False"
        case let .string(v): return v
        case .none: return "None"
        }
    }
}

/// Where a row takes an input from.
public enum SpecRef: Equatable, CustomStringConvertible, Sendable {
    /// -1, -2, …: rows back within the section (from the first row: the section's entry).
    case relative(Int)
    /// An index in the row's own namespace (Ultralytics' absolute layer index).
    case index(Int)
    /// `ns.k`: index k in namespace ns (a stream name, `fuse`, or `model`).
    case qualified(String, Int)
    /// The raw input of a stream (`rgb`, `ir`).
    case input(String)

    public var description: String {
        switch self {
        case let .relative(k): return "\(k)"
        case let .index(k): return "\(k)"
        case let .qualified(ns, k): return "\(ns).\(k)"
        case let .input(s): return s
        }
    }
}

/// One `[from, repeats, module, args]` row.
public struct SpecRow: Sendable {
    public let from: [SpecRef]
    public let fromIsList: Bool
    public let repeats: Int
    public let module: String
    public let args: [SpecArg]
    public let line: Int?
}

/// A list of rows sharing a namespace (see `ModelSpec`).
public struct SpecSection: Sendable {
    public enum Kind: Sendable, Equatable { case backbone, fusion, head }
    public let kind: Kind
    /// The stream a per-stream section belongs to (nil for shared sections).
    public let stream: String?
    /// Namespace of the rows: a stream name, "fuse", or "model".
    public let namespace: String
    /// Index of the first row in its namespace.
    public let firstIndex: Int
    public let rows: [SpecRow]
}

/// A parsed model YAML.
///
/// Single-stream files are Ultralytics' format: `backbone` and `head` lists numbered together
/// from 0, state names `model.{i}.…`. Multi-stream files add `streams` (name -> channels, in
/// order) and number rows per namespace:
/// - `backbone: {rgb: [rows], ir: [rows]}` — one branch per stream, state names `{stream}.model.{i}`;
/// - `fusion: [rows]` — rows joining streams, state names `fuse.{i}`;
/// - `head: [rows]` — the shared rest, numbered after a stream branch's length B as Ultralytics
///   numbers a head after its backbone (`model.{B+j}`), so a single-stream checkpoint's head
///   loads by name; or `head: {rgb: [rows], ir: [rows]}` — a head per stream (late fusion),
///   continuing that stream's numbering (`{stream}.model.{B+j}`).
/// `from` entries: -1 (previous row of the section; a section's first row reads the previous
/// section's last row, or its stream's input), an index in the row's namespace, a qualified
/// `ns.k` (e.g. `rgb.4`, `ir.9`, `fuse.1`, `model.12`), or a stream name for the raw input.
public struct ModelSpec: Sendable {
    public let file: String
    public let text: String
    public let nc: Int
    public let scales: [String: (depth: Double, width: Double, maxChannels: Int)]
    public let scale: String?
    public let depthMultiple: Double?
    public let widthMultiple: Double?
    public let streams: [(name: String, channels: Int)]
    public let sections: [SpecSection]
    public let regMax: Int

    public var isMultiStream: Bool { streams.count > 1 || sections.contains { $0.stream != nil } }

    public static func load(_ path: String) throws -> ModelSpec {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ModelSpecError.unreadable(file: path, reason: "no such file or not UTF-8 text")
        }
        return try parse(text, file: path)
    }

    /// Parses YAML text; `file` names it in errors and gives the scale by suffix (yolov8s.yaml -> s).
    public static func parse(_ text: String, file: String = "<model>") throws -> ModelSpec {
        func fail(_ line: Int?, _ msg: String) -> ModelSpecError { .invalid(file: file, line: line, message: msg) }
        let root: Node
        do {
            guard let r = try Yams.compose(yaml: text) else { throw fail(nil, "empty YAML") }
            root = r
        } catch let e as ModelSpecError { throw e } catch {
            throw fail(nil, "YAML syntax error: \(error)")
        }
        guard let map = root.mapping else { throw fail(nil, "top level must be a mapping with nc, backbone and head") }
        // yaml_file and channels are what Ultralytics adds to the model dicts it stores; ignored.
        let known: Set<String> = ["nc", "scales", "scale", "depth_multiple", "width_multiple", "streams",
                                  "backbone", "fusion", "head", "reg_max", "activation", "ch", "yaml_file", "channels"]
        for (k, _) in map {
            guard let key = k.string else { continue }
            if !known.contains(key) {
                throw fail(k.mark.map { $0.line }, "unknown key '\(key)'; expected one of \(known.sorted().joined(separator: ", "))")
            }
        }
        func int(_ key: String) throws -> Int? {
            guard let n = map[key] else { return nil }
            guard let v = n.int else { throw fail(n.mark?.line, "'\(key)' must be an integer, got '\(n.string ?? "?")'") }
            return v
        }
        let nc = try int("nc") ?? 80
        let regMax = try int("reg_max") ?? 16
        var scales: [String: (Double, Double, Int)] = [:]
        var scaleOrder: [String] = []
        if let s = map["scales"] {
            guard let sm = s.mapping else { throw fail(s.mark?.line, "'scales' must map a scale name to [depth, width, max_channels]") }
            for (k, v) in sm {
                guard let name = k.string, let seq = v.sequence, seq.count == 3,
                      let d = seq[0].float, let w = seq[1].float, let mc = seq[2].int else {
                    throw fail(k.mark.map { $0.line }, "scale '\(k.string ?? "?")' must be [depth, width, max_channels]")
                }
                scales[name] = (d, w, mc)
                scaleOrder.append(name)
            }
        }
        var scale = map["scale"]?.string
        if scale == nil, !scales.isEmpty {
            // Ultralytics: the letter after the version in the file name, e.g. yolov8s.yaml or dual_yolov8s_mid.yaml.
            let stem = URL(fileURLWithPath: file).deletingPathExtension().lastPathComponent
            if let r = stem.range(of: #"yolov\d+([nsmlxt])"#, options: .regularExpression) {
                let letter = String(stem[r].last!)
                if scales[letter] != nil { scale = letter }
            }
        }
        if scale == nil { scale = scaleOrder.first }   // Ultralytics assumes the first scale listed
        if let s = scale, !scales.isEmpty, scales[s] == nil {
            throw fail(map["scale"]?.mark?.line, "scale '\(s)' is not among scales \(scales.keys.sorted())")
        }
        var streams: [(String, Int)] = []
        if let s = map["streams"] {
            guard let sm = s.mapping else { throw fail(s.mark?.line, "'streams' must map stream names to channel counts, e.g. {rgb: 3, ir: 1}") }
            for (k, v) in sm {
                guard let name = k.string, let c = v.int, c > 0 else {
                    throw fail(k.mark.map { $0.line }, "stream '\(k.string ?? "?")' needs a positive channel count")
                }
                streams.append((name, c))
            }
        } else {
            streams = [("rgb", try int("ch") ?? 3)]
        }
        let streamNames = Set(streams.map { $0.0 })

        func parseRows(_ node: Node, _ what: String) throws -> [SpecRow] {
            guard let seq = node.sequence else { throw fail(node.mark?.line, "'\(what)' must be a list of [from, repeats, module, args] rows") }
            return try seq.map { try parseRow($0, what) }
        }
        func parseRef(_ n: Node, line: Int?) throws -> SpecRef {
            if let v = n.int { return v < 0 ? .relative(v) : .index(v) }
            guard let s = n.string else { throw fail(line, "bad 'from' entry") }
            if streamNames.contains(s) { return .input(s) }
            let parts = s.split(separator: ".")
            if parts.count == 2, let k = Int(parts[1]) {
                let ns = String(parts[0])
                guard streamNames.contains(ns) || ns == "fuse" || ns == "model" else {
                    throw fail(line, "'from' reference '\(s)': unknown namespace '\(ns)' (streams: \(streams.map { $0.0 }.joined(separator: ", ")), fuse, model)")
                }
                return .qualified(ns, k)
            }
            throw fail(line, "'from' entry '\(s)' is neither an index, a stream name (\(streams.map { $0.0 }.joined(separator: ", "))) nor a reference like rgb.4")
        }
        func parseRow(_ n: Node, _ what: String) throws -> SpecRow {
            let line = n.mark?.line
            guard let items = n.sequence, items.count == 4 else {
                throw fail(line, "\(what) row must be [from, repeats, module, args]")
            }
            let fromList = items[0].sequence
            let refs = try (fromList ?? [items[0]]).map { try parseRef($0, line: line) }
            guard let reps = items[1].int, reps >= 1 else { throw fail(line, "repeats must be a positive integer") }
            guard let module = items[2].string else { throw fail(line, "module must be a name such as Conv, C2f, SPPF, Concat, nn.Upsample, Detect") }
            guard let argSeq = items[3].sequence else { throw fail(line, "args must be a list, e.g. [64, 3, 2]") }
            let args: [SpecArg] = argSeq.map { a in
                if a.tag.description.hasSuffix(":null") || a.string == "None" || a.string == "null" || a.string == "~" { return .none }
                if let v = a.int { return .int(v) }
                if let v = a.float { return .double(v) }
                if a.string == "True" || a.string == "true" { return .bool(true) }
                if a.string == "False" || a.string == "false" { return .bool(false) }
                return .string(a.string ?? "")
            }
            return SpecRow(from: refs, fromIsList: fromList != nil, repeats: reps, module: module, args: args, line: line)
        }

        var sections: [SpecSection] = []
        guard let backboneNode = map["backbone"] ?? map["fusion"] ?? map["head"] else {
            throw fail(nil, "no 'backbone', 'fusion' or 'head' section")
        }
        _ = backboneNode
        var branchLength = 0
        if let bb = map["backbone"] {
            if let bm = bb.mapping {
                for (k, v) in bm {
                    guard let s = k.string, streamNames.contains(s) else {
                        throw fail(k.mark.map { $0.line }, "backbone branch '\(k.string ?? "?")' is not a declared stream (\(streams.map { $0.0 }.joined(separator: ", ")))")
                    }
                    let rows = try parseRows(v, "backbone.\(s)")
                    if sections.isEmpty { branchLength = rows.count }
                    sections.append(SpecSection(kind: .backbone, stream: s, namespace: s, firstIndex: 0, rows: rows))
                }
            } else {
                let rows = try parseRows(bb, "backbone")
                branchLength = rows.count
                sections.append(SpecSection(kind: .backbone, stream: nil, namespace: "model", firstIndex: 0, rows: rows))
            }
        }
        if let fu = map["fusion"] {
            sections.append(SpecSection(kind: .fusion, stream: nil, namespace: "fuse", firstIndex: 0, rows: try parseRows(fu, "fusion")))
        }
        if let hd = map["head"] {
            if let hm = hd.mapping {
                for (k, v) in hm {
                    guard let s = k.string, streamNames.contains(s) else {
                        throw fail(k.mark.map { $0.line }, "head branch '\(k.string ?? "?")' is not a declared stream")
                    }
                    let first = sections.first { $0.stream == s && $0.kind == .backbone }?.rows.count ?? 0
                    sections.append(SpecSection(kind: .head, stream: s, namespace: s, firstIndex: first, rows: try parseRows(v, "head.\(s)")))
                }
            } else {
                sections.append(SpecSection(kind: .head, stream: nil, namespace: "model", firstIndex: branchLength, rows: try parseRows(hd, "head")))
            }
        }
        let dm = map["depth_multiple"]?.float, wm = map["width_multiple"]?.float
        return ModelSpec(file: file, text: text, nc: nc, scales: scales.mapValues { (depth: $0.0, width: $0.1, maxChannels: $0.2) },
                         scale: scale, depthMultiple: dm, widthMultiple: wm, streams: streams, sections: sections, regMax: regMax)
    }

    /// (depth, width, max channels) in effect.
    public var multipliers: (depth: Double, width: Double, maxChannels: Int) {
        if let s = scale, let v = scales[s] { return v }
        return (depthMultiple ?? 1, widthMultiple ?? 1, Int.max)
    }
}
