import Foundation
import Yams

/// A split named in a dataset YAML.
public enum DatasetSplit: String, Sendable, Codable, CaseIterable {
    case train, val, test
}

/// A dataset YAML that cannot be used. Messages name the file, the line when known, and the key.
public enum DatasetConfigError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The YAML file cannot be read.
    case unreadable(file: String, reason: String)
    /// The text is not valid YAML.
    case syntax(file: String, detail: String)
    /// A key is missing, has the wrong type or an invalid value.
    case invalid(file: String, line: Int?, key: String, message: String)

    public var description: String {
        switch self {
        case .unreadable(let f, let r): return "\(f): cannot read dataset YAML: \(r)"
        case .syntax(let f, let d): return "\(f): invalid YAML: \(d)"
        case .invalid(let f, let line, let key, let m):
            return "\(f)\(line.map { ":\($0)" } ?? ""): '\(key)': \(m)"
        }
    }
}

/// A dataset description in the Ultralytics style with the YOLOFuse IR keys.
///
/// ```yaml
/// path: /data/LLVIP          # root; relative paths are taken from the YAML's folder
/// train: images/train        # folder(s) of RGB images or .txt list(s) of RGB image paths
/// val: images/val
/// test:                      # optional
/// names: {0: person}         # map or list; `nc`, when given, must equal the count
/// ir_dir: imagesIR           # IR path = RGB path with its `images` folder replaced by this
/// ir_channels: 1             # 1 (luma) or 3: what the IR stream delivers, whatever the files store
/// ```
/// Labels are found as Ultralytics does: the last `images` folder of the RGB path replaced by
/// `labels`, the extension by `.txt`.
public struct DatasetConfig: Sendable, Equatable, Codable {
    /// The YAML file this came from (`<text>` when parsed from a string).
    public var file: String
    /// The resolved absolute dataset root (`path`).
    public var root: String
    /// Absolute folders, image files or `.txt` lists per split.
    public var train: [String]
    public var val: [String]
    public var test: [String]
    /// Class names; the index is the class id.
    public var names: [String]
    /// Folder name that replaces `images` in an RGB path to find its IR partner. Default `imagesIR`.
    public var irDir: String
    /// IR channels delivered to the model: 1 or 3. Default 1.
    public var irChannels: Int
    /// IR pixel -> RGB pixel (`ir_homography`, or `ir_affine` as its first two rows): the loader
    /// warps each IR image into its RGB partner's frame (and size) before anything else. nil: the
    /// cameras are registered.
    public var irTransform: Matrix3?

    /// The number of classes.
    public var classCount: Int { names.count }

    /// Sources of `split` (empty when the split is not given).
    public func sources(_ split: DatasetSplit) -> [String] {
        switch split {
        case .train: return train
        case .val: return val
        case .test: return test
        }
    }

    /// Builds a configuration directly (paths are used as given).
    public init(file: String = "<memory>", root: String, train: [String], val: [String], test: [String] = [],
                names: [String], irDir: String = "imagesIR", irChannels: Int = 1, irTransform: Matrix3? = nil) {
        self.irTransform = irTransform
        self.file = file
        self.root = root
        self.train = train
        self.val = val
        self.test = test
        self.names = names
        self.irDir = irDir
        self.irChannels = irChannels
    }

    /// Reads and validates the dataset YAML at `path`.
    public static func load(path: String) throws -> DatasetConfig {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw DatasetConfigError.unreadable(file: path, reason: (error as NSError).localizedDescription)
        }
        let url = URL(fileURLWithPath: path).standardizedFileURL
        return try parse(yaml: text, file: path, directory: url.deletingLastPathComponent().path)
    }

    /// Parses YAML text; relative paths resolve against `directory` (the YAML's folder).
    public static func parse(yaml text: String, file: String = "<text>",
                             directory: String = FileManager.default.currentDirectoryPath) throws -> DatasetConfig {
        let node: Node?
        do {
            node = try Yams.compose(yaml: text)
        } catch {
            throw DatasetConfigError.syntax(file: file, detail: "\(error)")
        }
        guard let root = node, case .mapping(let map) = root else {
            throw DatasetConfigError.invalid(file: file, line: node?.mark?.line, key: "<document>",
                                             message: "expected a mapping of keys (path, train, val, names, ...)")
        }
        func fail(_ key: String, _ n: Node?, _ message: String) -> DatasetConfigError {
            .invalid(file: file, line: n?.mark?.line, key: key, message: message)
        }
        func isNull(_ n: Node) -> Bool {
            if case .scalar(let s) = n { return s.string.isEmpty || s.string == "~" || s.string == "null" }
            return false
        }
        func string(_ key: String) throws -> String? {
            guard let n = map[key], !isNull(n) else { return nil }
            guard case .scalar(let s) = n else { throw fail(key, n, "expected a string") }
            return s.string
        }
        func strings(_ key: String) throws -> [String] {
            guard let n = map[key], !isNull(n) else { return [] }
            switch n {
            case .scalar(let s): return [s.string]
            case .sequence(let seq):
                return try seq.map { item in
                    guard case .scalar(let s) = item, !s.string.isEmpty else {
                        throw fail(key, item, "expected a list of paths")
                    }
                    return s.string
                }
            default: throw fail(key, n, "expected a path or a list of paths")
            }
        }
        // Keys: ours, and Ultralytics' descriptive ones (accepted, unused). Anything else is an
        // error, with the nearest known key when it looks like a misspelling.
        for (k, _) in map {
            guard let key = k.string else { continue }
            if DatasetConfig.knownKeys.contains(key) || DatasetConfig.ultralyticsKeys.contains(key) { continue }
            let near = DatasetConfig.knownKeys.map { ($0, DatasetConfig.editDistance(key.lowercased(), $0)) }.min { $0.1 < $1.1 }
            let hint = near.flatMap { $0.1 <= max(2, $0.0.count / 3) ? "; did you mean '\($0.0)'?" : nil } ?? ""
            throw fail(key, k, "unknown key\(hint) (keys: \(DatasetConfig.knownKeys.sorted().joined(separator: ", ")))")
        }
        func int(_ key: String) throws -> Int? {
            guard let n = map[key], !isNull(n) else { return nil }
            guard let v = n.int else { throw fail(key, n, "expected an integer, got '\(n.string ?? "a collection")'") }
            return v
        }

        // Root.
        let fm = FileManager.default
        var rootPath = directory
        if let p = try string("path") {
            let expanded = (p as NSString).expandingTildeInPath
            if expanded.hasPrefix("/") {
                rootPath = expanded
            } else {
                let besideYAML = (directory as NSString).appendingPathComponent(expanded)
                let fromCWD = (fm.currentDirectoryPath as NSString).appendingPathComponent(expanded)
                rootPath = !fm.fileExists(atPath: besideYAML) && fm.fileExists(atPath: fromCWD) ? fromCWD : besideYAML
            }
        }
        rootPath = URL(fileURLWithPath: rootPath).standardizedFileURL.path
        func resolve(_ p: String) -> String {
            let e = (p as NSString).expandingTildeInPath
            let abs = e.hasPrefix("/") ? e : (rootPath as NSString).appendingPathComponent(e)
            return URL(fileURLWithPath: abs).standardizedFileURL.path
        }

        let train = try strings("train").map(resolve)
        let val = try strings("val").map(resolve)
        let test = try strings("test").map(resolve)
        if train.isEmpty { throw fail("train", map["train"], "required: a folder of RGB images or a .txt list of RGB image paths") }
        if val.isEmpty { throw fail("val", map["val"], "required: a folder of RGB images or a .txt list of RGB image paths") }

        // Names: a map {id: name} with ids 0..n-1, or a list.
        var names: [String] = []
        if let n = map["names"], !isNull(n) {
            switch n {
            case .sequence(let seq):
                names = try seq.map { item in
                    guard case .scalar(let s) = item else { throw fail("names", item, "expected a list of class names") }
                    return s.string
                }
            case .mapping(let m):
                var byId: [Int: String] = [:]
                for (k, v) in m {
                    guard let id = k.int, id >= 0 else {
                        throw fail("names", k, "keys must be class ids 0, 1, 2, ..., got '\(k.string ?? "?")'")
                    }
                    guard case .scalar(let s) = v else { throw fail("names", v, "class \(id): expected a name") }
                    if byId[id] != nil { throw fail("names", k, "class id \(id) appears twice") }
                    byId[id] = s.string
                }
                for id in 0..<byId.count {
                    guard let name = byId[id] else {
                        throw fail("names", n, "class ids must be 0...\(byId.count - 1) without gaps; \(id) is missing")
                    }
                    names.append(name)
                }
            default:
                throw fail("names", n, "expected a map {0: name, ...} or a list [name, ...]")
            }
        }
        if let nc = try int("nc") {
            if nc <= 0 { throw fail("nc", map["nc"], "must be positive, got \(nc)") }
            // Bounded before the default names are made (the model builder's limit too).
            if nc > DatasetConfig.maxClasses { throw fail("nc", map["nc"], "must be at most \(DatasetConfig.maxClasses), got \(nc)") }
            if names.isEmpty {
                names = (0..<nc).map { "class\($0)" }
            } else if names.count != nc {
                throw fail("nc", map["nc"], "is \(nc) but 'names' lists \(names.count) classes")
            }
        }
        if names.isEmpty { throw fail("names", map["names"], "required: the class names (map or list), or 'nc'") }

        let irDir = try string("ir_dir") ?? "imagesIR"
        if irDir.isEmpty || irDir.contains("/") || irDir == "." || irDir == ".." {
            throw fail("ir_dir", map["ir_dir"], "must be one folder name such as imagesIR, got '\(irDir)'")
        }
        if irDir == "images" || irDir == "labels" {
            throw fail("ir_dir", map["ir_dir"], "cannot be '\(irDir)': IR images need their own folder")
        }
        let irChannels = try int("ir_channels") ?? 1
        if irChannels != 1 && irChannels != 3 {
            throw fail("ir_channels", map["ir_channels"], "must be 1 or 3, got \(irChannels)")
        }
        // IR registration: a 3x3 homography or a 2x3 affine (nested lists or flat), IR pixel -> RGB pixel.
        var irTransform: Matrix3? = nil
        if map["ir_homography"] != nil && map["ir_affine"] != nil {
            throw fail("ir_affine", map["ir_affine"], "give ir_homography or ir_affine, not both")
        }
        for (key, count) in [("ir_homography", 9), ("ir_affine", 6)] {
            guard let n = map[key], !isNull(n) else { continue }
            var values: [Double] = []
            func collect(_ node: Node) throws {
                switch node {
                case .sequence(let seq): for item in seq { try collect(item) }
                case .scalar(let sc):
                    guard let v = Double(sc.string), v.isFinite else { throw fail(key, node, "'\(sc.string)' is not a number") }
                    values.append(v)
                default: throw fail(key, node, "expected numbers")
                }
            }
            try collect(n)
            guard values.count == count else {
                throw fail(key, n, count == 9 ? "expected a 3x3 matrix (9 numbers, rows [[a, b, c], [d, e, f], [g, h, i]]), got \(values.count)"
                                              : "expected a 2x3 matrix (6 numbers, rows [[a, b, tx], [d, e, ty]]), got \(values.count)")
            }
            let m = Matrix3(count == 9 ? values : values + [0, 0, 1])
            guard let inv = m.inverse, inv.m.allSatisfy({ $0.isFinite }) else {
                throw fail(key, n, "the matrix is not invertible")
            }
            irTransform = m
        }
        return DatasetConfig(file: file, root: rootPath, train: train, val: val, test: test, names: names,
                             irDir: irDir, irChannels: irChannels, irTransform: irTransform)
    }

    /// The keys DatasetConfig reads.
    /// Most classes a data set may declare (as many as a model may have).
    public static let maxClasses = 100_000

    public static let knownKeys: Set<String> = ["path", "train", "val", "test", "names", "nc", "ir_dir", "ir_channels", "ir_homography", "ir_affine"]
    /// Keys Ultralytics' data YAMLs carry that say nothing DualFuse uses (accepted as they are).
    static let ultralyticsKeys: Set<String> = ["download", "yaml_file", "author", "license", "description", "channels",
                                               "kpt_shape", "flip_idx", "roboflow", "url", "version"]

    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var prev = Array(0...b.count)
        for i in 1...a.count {
            var cur = [i] + [Int](repeating: 0, count: b.count)
            for j in 1...b.count {
                cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            prev = cur
        }
        return prev[b.count]
    }
}
