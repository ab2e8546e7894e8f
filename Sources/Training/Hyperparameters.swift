import Foundation
import TensorCore
import Yams

/// Errors in hyper-parameter files and flags: each names the key (and file and line when known)
/// and what is allowed.
public enum HypError: Error, CustomStringConvertible, Equatable {
    case unknownKey(key: String, suggestion: String?, file: String?, line: Int?)
    case badValue(key: String, value: String, expected: String, file: String?, line: Int?)
    case unreadable(file: String, reason: String)

    public var description: String {
        func at(_ file: String?, _ line: Int?) -> String {
            guard let file else { return "" }
            return line.map { "\(file):\($0): " } ?? "\(file): "
        }
        switch self {
        case let .unknownKey(key, s, file, line):
            return "\(at(file, line))unknown hyper-parameter '\(key)'" + (s.map { "; did you mean '\($0)'?" } ?? "")
        case let .badValue(key, value, expected, file, line):
            return "\(at(file, line))bad value '\(value)' for '\(key)': expected \(expected)"
        case let .unreadable(file, reason):
            return "\(file): cannot read hyper-parameter YAML (\(reason))"
        }
    }
}

/// Every training hyper-parameter. Names are Ultralytics' where they exist; `configs/hyp/default.yaml`
/// lists each with its type, meaning and default, and every key is also a `train_dual` flag
/// (`lr0` -> `--lr0`, `max_norm` -> `--max-norm`, `loss_scale.init` -> `--loss-scale-init`).
public struct Hyperparameters: Equatable, Sendable {
    // Run length and batch
    public var epochs = 100
    public var batch = 16
    public var imgsz = 640
    public var patience = 100
    public var seed = 0
    public var workers = 2
    public var cache = "none"
    public var fraction = 1.0
    public var save_period = -1
    public var val = true
    public var plots = true
    public var tb = true
    // Optimizer and schedule
    public var optimizer = "auto"
    public var lr0 = 0.01
    public var lrf = 0.01
    public var momentum = 0.937
    public var weight_decay = 0.0005
    public var warmup_epochs = 3.0
    public var warmup_momentum = 0.8
    public var warmup_bias_lr = 0.1
    public var warmup_iters_min = 100
    public var cos_lr = true
    public var nbs = 64
    public var accumulate = 0
    public var scale_lr = "none"
    // Stability
    public var max_norm = 10.0
    public var amp = Precision.fp32
    public var loss_scale_enabled = "auto"
    public var loss_scale_init = 65536.0
    public var loss_scale_growth = 2.0
    public var loss_scale_backoff = 0.5
    public var loss_scale_interval = 2000
    public var loss_scale_min = 1.0
    public var bf16_kept_inputs = 0.5
    public var nan_recovery = 5
    public var grad_probe = 0
    public var ema_decay = 0.9999
    public var ema_tau = 2000.0
    // Loss
    public var box = 7.5
    public var cls = 0.5
    public var dfl = 1.5
    // Validation
    public var conf = 0.001
    public var iou = 0.7
    public var max_det = 300
    // Augmentation
    public var hsv_h = 0.015
    public var hsv_s = 0.7
    public var hsv_v = 0.4
    public var ir_gain = 0.3
    public var ir_bias = 0.1
    public var modality_dropout = 0.0
    public var degrees = 0.0
    public var translate = 0.1
    public var scale = 0.5
    public var shear = 0.0
    public var perspective = 0.0
    public var flipud = 0.0
    public var fliplr = 0.5
    public var mosaic = 1.0
    public var close_mosaic = 10

    public init() {}

    /// Whether the loss is multiplied by a dynamic scale: `loss_scale.enabled` true, or auto under
    /// fp16 (bfloat16 has Float32's range, so auto leaves it off there, as PyTorch's CPU autocast).
    public var usesLossScale: Bool { loss_scale_enabled == "true" || (loss_scale_enabled == "auto" && amp == .fp16) }
}

/// How one key is read, checked and written.
public struct HypField: Sendable {
    public enum Kind: Sendable {
        case int(WritableKeyPath<Hyperparameters, Int> & Sendable, ClosedRange<Int>)
        case double(WritableKeyPath<Hyperparameters, Double> & Sendable, ClosedRange<Double>)
        case bool(WritableKeyPath<Hyperparameters, Bool> & Sendable)
        case choice(WritableKeyPath<Hyperparameters, String> & Sendable, [String])
        /// Mixed precision: false | true (= fp16) | fp16 | bf16; a bare flag means fp16.
        case precision(WritableKeyPath<Hyperparameters, Precision> & Sendable)
    }

    /// Words a precision key accepts, and what they mean.
    static let precisionWords: [String: Precision] = [
        "false": .fp32, "no": .fp32, "off": .fp32, "0": .fp32, "fp32": .fp32,
        "true": .fp16, "yes": .fp16, "on": .fp16, "1": .fp16, "fp16": .fp16, "bf16": .bf16,
    ]

    /// YAML key (`loss_scale.init` for nested keys).
    public let key: String
    public let kind: Kind
    /// One line: meaning (the type and default are added from the field).
    public let help: String

    /// The flag spelling: `--max-norm`, `--loss-scale-init`.
    public var flag: String { "--" + key.replacingOccurrences(of: "_", with: "-").replacingOccurrences(of: ".", with: "-") }

    public var typeName: String {
        switch kind {
        case let .int(_, r): return "int, \(Self.range(r))"
        case let .double(_, r): return "float, \(Self.range(r))"
        case .bool: return "bool"
        case let .choice(_, c): return c.joined(separator: " | ")
        case .precision: return "false | true | fp16 | bf16"
        }
    }

    static func range<T: Comparable & CustomStringConvertible>(_ r: ClosedRange<T>) -> String { "\(r.lowerBound)..\(r.upperBound)" }

    public func value(in h: Hyperparameters) -> String {
        switch kind {
        case let .int(kp, _): return String(h[keyPath: kp])
        case let .double(kp, _): return Self.format(h[keyPath: kp])
        case let .bool(kp): return h[keyPath: kp] ? "true" : "false"
        case let .choice(kp, _): return h[keyPath: kp]
        case let .precision(kp): return h[keyPath: kp] == .fp32 ? "false" : h[keyPath: kp].rawValue
        }
    }

    static func format(_ v: Double) -> String {
        if v == v.rounded() && abs(v) < 1e15 { return String(format: "%.1f", v) }
        return "\(v)"
    }

    /// Parses and range-checks `text`, storing it into `h`.
    public func set(_ text: String, in h: inout Hyperparameters, file: String? = nil, line: Int? = nil) throws {
        let t = text.trimmingCharacters(in: .whitespaces)
        func bad() -> HypError { .badValue(key: key, value: t, expected: typeName, file: file, line: line) }
        switch kind {
        case let .int(kp, r):
            guard let v = Int(t) ?? Double(t).flatMap({ $0 == $0.rounded() ? Int(exactly: $0) : nil }), r.contains(v) else { throw bad() }
            h[keyPath: kp] = v
        case let .double(kp, r):
            guard let v = Double(t), v.isFinite, r.contains(v) else { throw bad() }
            h[keyPath: kp] = v
        case let .bool(kp):
            switch t.lowercased() {
            case "true", "yes", "on", "1": h[keyPath: kp] = true
            case "false", "no", "off", "0": h[keyPath: kp] = false
            default: throw bad()
            }
        case let .choice(kp, choices):
            guard let c = choices.first(where: { $0.lowercased() == t.lowercased() }) else { throw bad() }
            h[keyPath: kp] = c
        case let .precision(kp):
            guard let p = HypField.precisionWords[t.lowercased()] else { throw bad() }
            h[keyPath: kp] = p
        }
    }
}

extension Hyperparameters {
    /// The table of every key, in the order of `configs/hyp/default.yaml`.
    public static var fields: [HypField] {
        [
            HypField(key: "epochs", kind: .int(\.epochs, 1...100_000), help: "training epochs"),
            HypField(key: "batch", kind: .int(\.batch, 1...4096), help: "images per batch (batch <= 4 gives noisy BatchNorm statistics)"),
            HypField(key: "imgsz", kind: .int(\.imgsz, 32...8192), help: "train/val image size in pixels, a multiple of 32"),
            HypField(key: "patience", kind: .int(\.patience, 0...100_000), help: "stop after this many epochs without a better fitness (0: never)"),
            HypField(key: "seed", kind: .int(\.seed, 0...Int(Int32.max)), help: "random seed of weights, shuffling and augmentation"),
            HypField(key: "workers", kind: .int(\.workers, 0...64), help: "background threads decoding and augmenting batches"),
            HypField(key: "cache", kind: .choice(\.cache, ["none", "ram"]), help: "keep decoded, resized pairs in RAM (refused when they would not fit)"),
            HypField(key: "fraction", kind: .double(\.fraction, 0.000001...1), help: "train on this deterministic fraction of the training pairs"),
            HypField(key: "save_period", kind: .int(\.save_period, -1...100_000), help: "also keep weights/epoch{N}.safetensors every N epochs (-1: off)"),
            HypField(key: "val", kind: .bool(\.val), help: "validate (EMA weights) after every epoch"),
            HypField(key: "plots", kind: .bool(\.plots), help: "write results.png and other plots"),
            HypField(key: "tb", kind: .bool(\.tb), help: "write TensorBoard event files (events.out.tfevents.*) in the run folder"),
            HypField(key: "optimizer", kind: .choice(\.optimizer, ["SGD", "AdamW", "auto"]),
                     help: "SGD (momentum, Nesterov), AdamW, or auto: Ultralytics' rule (AdamW at lr0 fitted to nc for runs of <= 10000 iterations, else SGD 0.01), keeping an lr0 or momentum you set"),
            HypField(key: "lr0", kind: .double(\.lr0, 1e-9...100), help: "initial learning rate"),
            HypField(key: "lrf", kind: .double(\.lrf, 0...1), help: "final learning rate as a fraction of lr0"),
            HypField(key: "momentum", kind: .double(\.momentum, 0...0.9999), help: "SGD momentum / AdamW beta1"),
            HypField(key: "weight_decay", kind: .double(\.weight_decay, 0...1), help: "L2 decay of conv weights, scaled by batch*accumulate/nbs"),
            HypField(key: "warmup_epochs", kind: .double(\.warmup_epochs, 0...10_000),
                     help: "warmup length in epochs (at least 100 iterations; 0 turns warmup off)"),
            HypField(key: "warmup_momentum", kind: .double(\.warmup_momentum, 0...0.9999), help: "momentum at the start of warmup"),
            HypField(key: "warmup_bias_lr", kind: .double(\.warmup_bias_lr, 0...10), help: "bias learning rate at the start of warmup"),
            HypField(key: "warmup_iters_min", kind: .int(\.warmup_iters_min, 0...1_000_000),
                     help: "warmup lasts at least this many iterations (Ultralytics: 100)"),
            HypField(key: "cos_lr", kind: .bool(\.cos_lr), help: "cosine decay from lr0 to lr0*lrf (false: linear)"),
            HypField(key: "nbs", kind: .int(\.nbs, 1...100_000), help: "nominal batch size: accumulate = round(nbs / batch) when accumulate is 0"),
            HypField(key: "accumulate", kind: .int(\.accumulate, 0...10_000), help: "batches per optimizer step (0: derive from nbs)"),
            HypField(key: "scale_lr", kind: .choice(\.scale_lr, ["none", "linear", "sqrt"]),
                     help: "scale lr0 by batch*accumulate/nbs (linear) or its square root"),
            HypField(key: "max_norm", kind: .double(\.max_norm, 0...1e9), help: "clip the global gradient L2 norm to this (0: off)"),
            HypField(key: "amp", kind: .precision(\.amp),
                     help: "mixed precision: fp16 (true) emulates IEEE half autocast with loss scaling; bf16 runs bfloat16 GEMMs (AVX512_BF16 where present)"),
            HypField(key: "loss_scale.enabled", kind: .choice(\.loss_scale_enabled, ["auto", "true", "false"]),
                     help: "dynamic loss scaling: auto = on under fp16, off under bf16 and without amp"),
            HypField(key: "loss_scale.init", kind: .double(\.loss_scale_init, 1...1e12), help: "initial loss scale"),
            HypField(key: "loss_scale.growth", kind: .double(\.loss_scale_growth, 1...1000), help: "scale factor after `interval` clean steps"),
            HypField(key: "loss_scale.backoff", kind: .double(\.loss_scale_backoff, 0.0001...1), help: "scale factor after an overflow"),
            HypField(key: "loss_scale.interval", kind: .int(\.loss_scale_interval, 1...10_000_000), help: "clean steps between growths"),
            HypField(key: "loss_scale.min", kind: .double(\.loss_scale_min, 1e-12...1e12), help: "floor of the scale (a warning when it is reached)"),
            HypField(key: "bf16_kept_inputs", kind: .double(\.bf16_kept_inputs, 0...1000),
                     help: "under amp bf16 on oneDNN's bfloat16 convolutions: Conv blocks keep the bfloat16 input their convolution read for the weight gradient, up to this share of the other activation bytes saved in a step (0: rebuild it in backward: less memory, a little slower)"),
            HypField(key: "nan_recovery", kind: .int(\.nan_recovery, 1...1_000_000),
                     help: "consecutive non-finite steps before a rollback to the last good checkpoint with half the lr"),
            HypField(key: "grad_probe", kind: .int(\.grad_probe, 0...1_000_000),
                     help: "leave the first N optimizer steps unclipped, then print norm statistics and a suggested max_norm"),
            HypField(key: "ema_decay", kind: .double(\.ema_decay, 0...1), help: "EMA decay (ramped by 1 - exp(-updates / ema_tau))"),
            HypField(key: "ema_tau", kind: .double(\.ema_tau, 1...1e9), help: "EMA ramp in optimizer steps"),
            HypField(key: "box", kind: .double(\.box, 0...1000), help: "box (CIoU) loss gain"),
            HypField(key: "cls", kind: .double(\.cls, 0...1000), help: "classification (BCE) loss gain"),
            HypField(key: "dfl", kind: .double(\.dfl, 0...1000), help: "distribution focal loss gain"),
            HypField(key: "conf", kind: .double(\.conf, 0...1), help: "validation confidence threshold"),
            HypField(key: "iou", kind: .double(\.iou, 0...1), help: "validation NMS IoU threshold"),
            HypField(key: "max_det", kind: .int(\.max_det, 1...100_000), help: "detections kept per image"),
            HypField(key: "hsv_h", kind: .double(\.hsv_h, 0...1), help: "RGB hue jitter (fraction)"),
            HypField(key: "hsv_s", kind: .double(\.hsv_s, 0...1), help: "RGB saturation jitter (fraction)"),
            HypField(key: "hsv_v", kind: .double(\.hsv_v, 0...1), help: "RGB value jitter (fraction)"),
            HypField(key: "ir_gain", kind: .double(\.ir_gain, 0...1), help: "IR contrast jitter: factor 1 + U(-ir_gain, ir_gain) about mid-grey"),
            HypField(key: "ir_bias", kind: .double(\.ir_bias, 0...1), help: "IR brightness jitter: shift U(-ir_bias, ir_bias) * 255"),
            HypField(key: "modality_dropout", kind: .double(\.modality_dropout, 0...1),
                     help: "probability per training image of blanking one stream (RGB or IR, even odds) to zeros: a failed or covered camera"),
            HypField(key: "degrees", kind: .double(\.degrees, 0...180), help: "rotation range (+/- degrees)"),
            HypField(key: "translate", kind: .double(\.translate, 0...0.9), help: "translation range (+/- fraction)"),
            HypField(key: "scale", kind: .double(\.scale, 0...0.95), help: "scale range (1 +/- scale)"),
            HypField(key: "shear", kind: .double(\.shear, 0...90), help: "shear range (+/- degrees)"),
            HypField(key: "perspective", kind: .double(\.perspective, 0...0.001), help: "perspective range"),
            HypField(key: "flipud", kind: .double(\.flipud, 0...1), help: "vertical flip probability"),
            HypField(key: "fliplr", kind: .double(\.fliplr, 0...1), help: "horizontal flip probability"),
            HypField(key: "mosaic", kind: .double(\.mosaic, 0...1), help: "4-pair mosaic probability"),
            HypField(key: "close_mosaic", kind: .int(\.close_mosaic, 0...100_000), help: "turn mosaic off for the last N epochs"),
        ]
    }

    public static func field(_ key: String) -> HypField? { fields.first { $0.key == key } }

    /// The closest known key, for "did you mean" messages.
    public static func suggestion(for key: String) -> String? {
        let k = key.lowercased().replacingOccurrences(of: "-", with: "_")
        let scored = fields.map { ($0.key, levenshtein(k, $0.key)) }.min { $0.1 < $1.1 }
        guard let (best, d) = scored, d <= max(2, best.count / 3) else { return nil }
        return best
    }

    static func levenshtein(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var prev = Array(0...b.count)
        for i in 1...max(a.count, 1) where !a.isEmpty {
            var cur = [i] + [Int](repeating: 0, count: b.count)
            for j in 1...max(b.count, 1) where !b.isEmpty {
                cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            prev = cur
        }
        return a.isEmpty ? b.count : prev[b.count]
    }

    // MARK: YAML

    /// Applies a hyper-parameter YAML on top of `self`.
    ///
    /// Keys as in default.yaml; `loss_scale` may be a nested map ({init, growth, backoff,
    /// interval, min}); the seeds' shape `training: {gradient_clipping: bool, max_norm: x,
    /// use_amp: bool}` is accepted as an alias (gradient_clipping false sets max_norm 0).
    @discardableResult
    public mutating func apply(yaml text: String, file: String) throws -> Set<String> {
        var given = Set<String>()
        let root: Yams.Node?
        do { root = try Yams.compose(yaml: text) } catch {
            throw HypError.unreadable(file: file, reason: "YAML syntax error: \(error)")
        }
        guard let root else { return given }
        guard let map = root.mapping else { throw HypError.unreadable(file: file, reason: "the top level must be a mapping of key: value") }
        var clipping: (on: Bool, line: Int?)? = nil
        for (k, v) in map {
            guard let key = k.string else { continue }
            let line = k.mark?.line
            if key == "loss_scale" || key == "training" {
                guard let sub = v.mapping else {
                    throw HypError.badValue(key: key, value: v.string ?? "?", expected: "a mapping", file: file, line: line)
                }
                for (sk, sv) in sub {
                    guard let name = sk.string else { continue }
                    let sline = sk.mark?.line
                    if key == "loss_scale" {
                        guard let f = Self.field("loss_scale." + name) else {
                            throw HypError.unknownKey(key: "loss_scale." + name, suggestion: Self.suggestion(for: "loss_scale." + name), file: file, line: sline)
                        }
                        try f.set(sv.string ?? "", in: &self, file: file, line: sline)
                        given.insert(f.key)
                    } else {
                        switch name {
                        case "gradient_clipping":
                            var tmp = Hyperparameters()
                            try Self.field("val")!.set(sv.string ?? "", in: &tmp, file: file, line: sline)
                            clipping = (tmp.val, sline)
                        case "max_norm": try Self.field("max_norm")!.set(sv.string ?? "", in: &self, file: file, line: sline); given.insert("max_norm")
                        case "use_amp": try Self.field("amp")!.set(sv.string ?? "", in: &self, file: file, line: sline); given.insert("amp")
                        default:
                            if let f = Self.field(name) { try f.set(sv.string ?? "", in: &self, file: file, line: sline); given.insert(f.key) }
                            else { throw HypError.unknownKey(key: "training." + name, suggestion: Self.suggestion(for: name), file: file, line: sline) }
                        }
                    }
                }
                continue
            }
            guard let f = Self.field(key) ?? Self.field(key.replacingOccurrences(of: "loss_scale_", with: "loss_scale.")) else {
                throw HypError.unknownKey(key: key, suggestion: Self.suggestion(for: key), file: file, line: line)
            }
            if v.string == nil || v.string == "" || v.tag.description.hasSuffix(":null") {
                throw HypError.badValue(key: key, value: "", expected: f.typeName, file: file, line: line)
            }
            try f.set(v.string!, in: &self, file: file, line: line)
            given.insert(f.key)
        }
        if let c = clipping, !c.on { max_norm = 0; given.insert("max_norm") }
        return given
    }

    @discardableResult
    public mutating func apply(yamlFile path: String) throws -> Set<String> {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw HypError.unreadable(file: path, reason: "no such file or not UTF-8 text")
        }
        return try apply(yaml: text, file: path)
    }

    /// Applies `--key value`, `--key=value`, `--flag` / `--no-flag` (booleans) arguments.
    /// Returns the keys set; throws on an unknown flag (with the nearest name) or a bad value.
    @discardableResult
    public mutating func apply(flags args: [String]) throws -> Set<String> {
        var given = Set<String>()
        var i = 0
        while i < args.count {
            let arg = args[i]
            guard arg.hasPrefix("--") else {
                throw HypError.badValue(key: arg, value: arg, expected: "a --flag", file: nil, line: nil)
            }
            var name = String(arg.dropFirst(2)), value: String? = nil
            if let eq = name.firstIndex(of: "=") { value = String(name[name.index(after: eq)...]); name = String(name[..<eq]) }
            let key = name.replacingOccurrences(of: "-", with: "_")
            var negated = false
            var field = Self.fields.first { $0.flag == "--" + name }
            if field == nil, key.hasPrefix("no_"), let f = Self.fields.first(where: { $0.flag == "--" + String(name.dropFirst(3)) }) {
                switch f.kind {
                case .bool, .precision: field = f; negated = true
                default: break
                }
            }
            guard let f = field else {
                throw HypError.unknownKey(key: "--" + name, suggestion: Self.suggestion(for: key).map { Self.field($0)!.flag }, file: nil, line: nil)
            }
            if negated, let value {
                throw HypError.badValue(key: f.key, value: value, expected: "no value after --\(name) (it means \(f.key) off; " +
                                        "to set a value use \(f.flag) VALUE)", file: nil, line: nil)
            }
            if case .precision = f.kind, value == nil {
                let next = i + 1 < args.count ? args[i + 1].lowercased() : ""
                if HypField.precisionWords[next] != nil && !negated { value = args[i + 1]; i += 1 }
                else { value = negated ? "false" : "fp16" }
            }
            if case .bool = f.kind, value == nil {
                let next = i + 1 < args.count ? args[i + 1].lowercased() : ""
                if ["true", "false", "yes", "no", "on", "off", "1", "0"].contains(next) && !negated { value = args[i + 1]; i += 1 }
                else { value = negated ? "false" : "true" }
            }
            if value == nil {
                guard i + 1 < args.count else { throw HypError.badValue(key: f.key, value: "", expected: f.typeName, file: nil, line: nil) }
                value = args[i + 1]
                i += 1
            }
            try f.set(value!, in: &self)
            given.insert(f.key)
            i += 1
        }
        return given
    }

    /// Every key with its value, one per line, in default.yaml's order (the body of args.yaml).
    public func yaml() -> String {
        var lines: [String] = []
        var inLossScale = false
        for f in Self.fields {
            if f.key.hasPrefix("loss_scale.") {
                if !inLossScale { lines.append("loss_scale:"); inLossScale = true }
                lines.append("  \(f.key.dropFirst("loss_scale.".count)): \(f.value(in: self))")
            } else {
                inLossScale = false
                lines.append("\(f.key): \(f.value(in: self))")
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// The documented YAML of the defaults: configs/hyp/default.yaml is exactly this text.
    public static func documentedDefaults() -> String {
        var out = """
        # DualFuse training hyper-parameters: every key, its type and range, meaning and default.
        # Load a file of your own with `train_dual --hyp FILE` (only the keys you change are needed);
        # every key is also a flag: lr0 -> --lr0, max_norm -> --max-norm, loss_scale.init ->
        # --loss-scale-init, booleans as --amp / --no-amp. Flags win over the file.
        # The seeds' shape `training: {gradient_clipping: true, max_norm: 1.0, use_amp: true}` is accepted too.
        # Units: max_norm is the L2 norm of the gradient of the loss as Ultralytics scales it
        # (sum of gained box, cls and dfl terms x batch size), summed over the accumulated batches.

        """
        let h = Hyperparameters()
        var inLossScale = false
        for f in fields {
            let comment = "  # (\(f.typeName)) \(f.help); default \(f.value(in: h))"
            if f.key.hasPrefix("loss_scale.") {
                if !inLossScale { out += "loss_scale:  # dynamic loss scaling under amp (GradScaler semantics)\n"; inLossScale = true }
                out += "  \(f.key.dropFirst("loss_scale.".count)): \(f.value(in: h))\(comment)\n"
            } else {
                inLossScale = false
                out += "\(f.key): \(f.value(in: h))\(comment)\n"
            }
        }
        return out
    }

    /// The flag reference printed by `train_dual --help`.
    public static var flagHelp: String {
        fields.map { f in
            let d = f.value(in: Hyperparameters())
            let flag: String
            switch f.kind {
            case .bool: flag = f.flag + " / --no-" + f.flag.dropFirst(2)
            case .precision: flag = f.flag + " [fp16|bf16] / --no-" + f.flag.dropFirst(2)
            default: flag = f.flag + " <v>"
            }
            return "  \(flag)\n      (\(f.typeName); default \(d)) \(f.help)"
        }.joined(separator: "\n")
    }
}
