import Foundation
import TensorCore

/// Errors loading weights into a model.
public enum StateDictError: Error, CustomStringConvertible {
    case mismatch(file: String, report: LoadReport)

    public var description: String {
        switch self {
        case let .mismatch(file, report):
            return "\(file): weights do not match the model (strict loading):\n\(report.problems)\n" +
                   "Load with strict: false (train_dual --weights does) to copy what matches."
        }
    }
}

/// What a load copied, adapted and could not place.
public struct LoadReport: CustomStringConvertible, Sendable {
    /// Target names copied unchanged, with the source name when it differs (a single-stream
    /// checkpoint loaded into a stream branch).
    public var copied: [(target: String, source: String)] = []
    /// Targets filled by adapting a source tensor (a 3-channel stem summed over input channels
    /// for a 1-channel IR stem).
    public var adapted: [(target: String, source: String, how: String)] = []
    /// Model tensors the file does not have (left as they were).
    public var missing: [String] = []
    /// File tensors the model does not use.
    public var unexpected: [String] = []
    /// Same name, different shape: (name, model shape, file shape).
    public var misshaped: [(name: String, expected: [Int], found: [Int])] = []

    public var isExact: Bool { missing.isEmpty && unexpected.isEmpty && misshaped.isEmpty && adapted.isEmpty }

    var problems: String {
        var out: [String] = []
        if !missing.isEmpty { out.append("  missing (\(missing.count)): " + missing.prefix(20).joined(separator: ", ") + (missing.count > 20 ? ", …" : "")) }
        if !unexpected.isEmpty { out.append("  unexpected (\(unexpected.count)): " + unexpected.prefix(20).joined(separator: ", ") + (unexpected.count > 20 ? ", …" : "")) }
        for m in misshaped.prefix(20) { out.append("  mis-shaped: \(m.name) model \(m.expected) file \(m.found)") }
        return out.joined(separator: "\n")
    }

    public var description: String {
        let renamed = copied.filter { $0.target != $0.source }.count
        var s = "loaded \(copied.count + adapted.count) tensors (\(renamed) into stream branches by their single-stream names, \(adapted.count) adapted)"
        for a in adapted { s += "\n  adapted \(a.target) <- \(a.source): \(a.how)" }
        if !problems.isEmpty { s += "\n" + problems }
        return s
    }
}

/// Saving and loading of named tensors in safetensors files with PyTorch state-dict names.
public enum StateDict {
    /// Safetensors entries for named tensors; `num_batches_tracked` counters are stored as I64
    /// scalars as PyTorch does, the rest as F32 (or F16 when `half`).
    public static func entries(_ named: [NamedTensor], half: Bool = false) -> [Safetensors.Entry] {
        named.map { t in
            let isCounter = t.name.hasSuffix("num_batches_tracked")
            return Safetensors.Entry(name: t.name, shape: t.tensor.shape,
                                     values: UnsafeBufferPointer(start: t.tensor.data, count: t.tensor.count),
                                     dtype: isCounter ? "I64" : (half ? "F16" : "F32"))
        }
    }

    /// The safetensors bytes of named tensors.
    public static func encode(_ named: [NamedTensor], metadata: [String: String] = [:], half: Bool = false) -> Data {
        withExtendedLifetime(named) { Safetensors.encode(entries(named, half: half), metadata: metadata) }
    }

    /// Writes named tensors atomically.
    public static func save(_ named: [NamedTensor], metadata: [String: String] = [:], to path: String, half: Bool = false) throws {
        try withExtendedLifetime(named) {
            try Safetensors.write(entries(named, half: half), metadata: metadata, to: path)
        }
    }

    /// Copies file tensors into the model's tensors by name.
    ///
    /// Exact names first. With `streamPrefixes` (e.g. ["rgb", "ir"]) a model tensor named
    /// `rgb.model.4.cv1.conv.weight` that the file lacks is taken from `model.4.cv1.conv.weight`,
    /// so one single-stream checkpoint fills every branch; when such a source is a 3-channel stem
    /// and the target has 1 input channel, the kernels are summed over their input channels (the
    /// response to a grey image equal to the RGB stem's response to its grey replicated).
    /// `num_batches_tracked` counters are optional. With `strict`, anything missing, unexpected
    /// or mis-shaped throws, listing them by name.
    @discardableResult
    public static func load(_ file: [String: StoredTensor], into named: [NamedTensor], strict: Bool,
                            streamPrefixes: [String] = [], fileName: String = "<weights>") throws -> LoadReport {
        var report = LoadReport()
        var used = Set<String>()
        var plan: [(NamedTensor, StoredTensor, String, Bool)] = []   // target, source, source name, sum channels
        for t in named {
            if let src = file[t.name] {
                used.insert(t.name)
                if src.shape == t.tensor.shape { plan.append((t, src, t.name, false)) }
                else { report.misshaped.append((t.name, t.tensor.shape, src.shape)) }
                continue
            }
            var matched = false
            for p in streamPrefixes where t.name.hasPrefix(p + ".model.") {
                let alt = String(t.name.dropFirst(p.count + 1))
                guard let src = file[alt] else { continue }
                used.insert(alt)
                if src.shape == t.tensor.shape {
                    plan.append((t, src, alt, false)); matched = true
                } else if src.shape.count == 4, t.tensor.shape.count == 4, t.tensor.shape[1] == 1,
                          src.shape[0] == t.tensor.shape[0], src.shape[2...] == t.tensor.shape[2...] {
                    plan.append((t, src, alt, true)); matched = true
                } else {
                    report.misshaped.append((t.name, t.tensor.shape, src.shape)); matched = true
                }
                break
            }
            if !matched && !t.name.hasSuffix("num_batches_tracked") { report.missing.append(t.name) }
        }
        report.unexpected = file.keys.filter { !used.contains($0) && !$0.hasSuffix("num_batches_tracked") }.sorted()
        if strict && !(report.missing.isEmpty && report.unexpected.isEmpty && report.misshaped.isEmpty) {
            throw StateDictError.mismatch(file: fileName, report: report)
        }
        for (t, src, srcName, sum) in plan {
            let dst = t.tensor.data
            if sum {
                let (o, ci, k2) = (src.shape[0], src.shape[1], src.shape[2] * src.shape[3])
                for a in 0..<o {
                    for j in 0..<k2 {
                        var s: Float = 0
                        for c in 0..<ci { s += src.values[(a * ci + c) * k2 + j] }
                        dst[a * k2 + j] = s
                    }
                }
                report.adapted.append((t.name, srcName, "\(ci)-channel kernels summed over input channels"))
            } else {
                src.values.withUnsafeBufferPointer { dst.update(from: $0.baseAddress!, count: src.values.count) }
                report.copied.append((t.name, srcName))
            }
        }
        return report
    }
}
