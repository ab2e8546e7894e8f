import Foundation
import TensorCore

/// Errors reading or writing safetensors files; each names the file and what was expected.
public enum SafetensorsError: Error, CustomStringConvertible {
    case unreadable(path: String, reason: String)
    case unwritable(path: String, reason: String)
    case malformed(path: String, reason: String)
    case unsupportedDType(path: String, tensor: String, dtype: String)

    public var description: String {
        switch self {
        case let .unreadable(path, reason): return "\(path): cannot read safetensors file (\(reason))"
        case let .unwritable(path, reason): return "cannot write \(path) (\(reason))"
        case let .malformed(path, reason): return "\(path): not a valid safetensors file: \(reason)"
        case let .unsupportedDType(path, tensor, dtype):
            return "\(path): tensor '\(tensor)' has dtype \(dtype); supported: F32, F16, BF16, F64, I64, I32, U8, BOOL"
        }
    }
}

/// One tensor as stored: its dtype, shape and values converted to Float.
public struct StoredTensor: @unchecked Sendable {
    public let dtype: String
    public let shape: [Int]
    public let values: [Float]
    public var tensor: Tensor { Tensor(values, shape: shape) }
}

/// The safetensors format: an 8-byte little-endian header length, a JSON header mapping each
/// tensor name to {dtype, shape, data_offsets: [begin, end]} (offsets relative to the data
/// section) plus an optional "__metadata__" map of strings, then the raw little-endian data.
public enum Safetensors {
    /// Reads every tensor (converted to Float) and the metadata.
    public static func read(_ path: String) throws -> (tensors: [String: StoredTensor], metadata: [String: String]) {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SafetensorsError.unreadable(path: path, reason: "no such file or not readable")
        }
        return try parse(data, path: path)
    }

    /// The tensors and metadata of safetensors bytes held in memory (`path` names them in errors).
    public static func parse(_ data: Data, path: String) throws -> (tensors: [String: StoredTensor], metadata: [String: String]) {
        guard data.count >= 8 else { throw SafetensorsError.malformed(path: path, reason: "shorter than 8 bytes") }
        let n = data.prefix(8).enumerated().reduce(UInt64(0)) { $0 | (UInt64($1.element) << (8 * UInt64($1.offset))) }
        guard n <= UInt64(data.count - 8), n < 100_000_000 else {
            throw SafetensorsError.malformed(path: path, reason: "header length \(n) exceeds the file size \(data.count)")
        }
        let headerData = data.subdata(in: 8..<(8 + Int(n)))
        guard let header = try? JSONSerialization.jsonObject(with: headerData) as? [String: Any] else {
            throw SafetensorsError.malformed(path: path, reason: "header is not a JSON object")
        }
        let base = 8 + Int(n)
        var tensors: [String: StoredTensor] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in header {
            if name == "__metadata__" {
                if let m = value as? [String: Any] {
                    for (k, v) in m { metadata[k] = v as? String ?? "\(v)" }
                }
                continue
            }
            guard let info = value as? [String: Any], let dtype = info["dtype"] as? String,
                  let shape = (info["shape"] as? [Any])?.compactMap({ ($0 as? NSNumber)?.intValue }),
                  let offs = (info["data_offsets"] as? [Any])?.compactMap({ ($0 as? NSNumber)?.intValue }), offs.count == 2
            else { throw SafetensorsError.malformed(path: path, reason: "entry '\(name)' lacks dtype, shape or data_offsets") }
            guard let size = elementSize(dtype) else {
                throw SafetensorsError.unsupportedDType(path: path, tensor: name, dtype: dtype)
            }
            // Checked arithmetic: a hostile shape ([2^40, 2^40, ...]) must not overflow.
            var count = 1, bytes = size
            for d in shape {
                guard d >= 0 else { throw SafetensorsError.malformed(path: path, reason: "entry '\(name)': negative dimension in shape \(shape)") }
                let (c, o1) = count.multipliedReportingOverflow(by: d)
                let (b, o2) = bytes.multipliedReportingOverflow(by: d)
                guard !o1, !o2, b <= data.count else {
                    throw SafetensorsError.malformed(path: path, reason: "entry '\(name)': shape \(shape) \(dtype) needs more bytes than the file's \(data.count)")
                }
                (count, bytes) = (c, b)
            }
            let (end, o3) = base.addingReportingOverflow(offs[1])
            guard offs[0] >= 0, offs[1] >= offs[0], offs[1] - offs[0] == bytes, !o3, end <= data.count else {
                throw SafetensorsError.malformed(path: path, reason: "entry '\(name)': data_offsets \(offs) do not fit shape \(shape) \(dtype) in a file of \(data.count) bytes")
            }
            let values: [Float] = data.withUnsafeBytes { raw in
                let p = raw.baseAddress! + base + offs[0]
                return (0..<count).map { decode(p, index: $0, dtype: dtype) }
            }
            tensors[name] = StoredTensor(dtype: dtype, shape: shape, values: values)
        }
        return (tensors, metadata)
    }

    static func elementSize(_ dtype: String) -> Int? {
        switch dtype {
        case "F32", "I32": return 4
        case "F16", "BF16": return 2
        case "F64", "I64": return 8
        case "U8", "BOOL", "I8": return 1
        default: return nil
        }
    }

    static func decode(_ p: UnsafeRawPointer, index i: Int, dtype: String) -> Float {
        switch dtype {
        case "F32": return Float(bitPattern: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
        case "F16": return Half.decode([UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))])[0]
        case "BF16": return Float(bitPattern: UInt32(UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) << 16)
        case "F64": return Float(Double(bitPattern: UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))))
        case "I64": return Float(Int64(littleEndian: p.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)))
        case "I32": return Float(Int32(littleEndian: p.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)))
        case "I8": return Float(p.load(fromByteOffset: i, as: Int8.self))
        default: return Float(p.load(fromByteOffset: i, as: UInt8.self))
        }
    }

    /// A tensor to write: its values are stored as `dtype` (F32, F16 or I64).
    public struct Entry {
        public let name: String
        public let shape: [Int]
        public let values: UnsafeBufferPointer<Float>
        public let dtype: String
        public init(name: String, shape: [Int], values: UnsafeBufferPointer<Float>, dtype: String = "F32") {
            (self.name, self.shape, self.values, self.dtype) = (name, shape, values, dtype)
        }
    }

    /// Serialises entries (in the given order) and metadata to bytes.
    public static func encode(_ entries: [Entry], metadata: [String: String] = [:]) -> Data {
        var header: [String] = []
        if !metadata.isEmpty {
            let items = metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }
            header.append("\"__metadata__\":{\(items.joined(separator: ","))}")
        }
        var offset = 0
        for e in entries {
            let size = e.values.count * (elementSize(e.dtype) ?? 4)
            header.append("\(jsonString(e.name)):{\"dtype\":\"\(e.dtype)\",\"shape\":[\(e.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(offset + size)]}")
            offset += size
        }
        var json = Array("{\(header.joined(separator: ","))}".utf8)
        while (json.count + 8) % 8 != 0 { json.append(0x20) }   // pad with spaces to 8-byte alignment
        var out = Data(capacity: 8 + json.count + offset)
        var n = UInt64(json.count).littleEndian
        withUnsafeBytes(of: &n) { out.append(contentsOf: $0) }
        out.append(contentsOf: json)
        for e in entries {
            switch e.dtype {
            case "F16":
                let bits = Half.encode(Array(e.values))
                bits.withUnsafeBytes { out.append(contentsOf: $0) }
            case "I64":
                let ints = e.values.map { Int64($0).littleEndian }
                ints.withUnsafeBytes { out.append(contentsOf: $0) }
            default:
                out.append(UnsafeBufferPointer(start: UnsafeRawPointer(e.values.baseAddress!).assumingMemoryBound(to: UInt8.self),
                                               count: e.values.count * 4))
            }
        }
        return out
    }

    /// Writes atomically: to a temporary file in the same folder, fsync, then rename over `path`.
    public static func write(_ entries: [Entry], metadata: [String: String] = [:], to path: String) throws {
        try AtomicFile.write(encode(entries, metadata: metadata), to: path)
    }

    static func jsonString(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 { out += String(format: "\\u%04x", u.value) } else { out.unicodeScalars.append(u) }
            }
        }
        return out + "\""
    }
}

/// Crash-safe file replacement: temporary file + fsync + rename (+ fsync of the folder).
/// Errors name the final path and the system's reason: "cannot write PATH (No space left on device)".
public enum AtomicFile {
    public static func write(_ data: Data, to path: String) throws {
        let url = URL(fileURLWithPath: path)
        let dir = url.deletingLastPathComponent().path
        let tmp = dir + "/." + url.lastPathComponent + ".tmp\(getpid())"
        do { try writeDurably(data, to: tmp) } catch let SafetensorsError.unwritable(_, reason) {
            throw SafetensorsError.unwritable(path: path, reason: reason)
        }
        guard rename(tmp, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(tmp)
            throw SafetensorsError.unwritable(path: path, reason: reason)
        }
        syncDirectory(dir)
    }

    /// Writes `data` to exactly `path` and fsyncs it; a failed write removes the partial file.
    public static func writeDurably(_ data: Data, to path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw SafetensorsError.unwritable(path: path, reason: String(cString: strerror(errno))) }
        var failure: Int32 = 0
        data.withUnsafeBytes { raw in
            var off = 0
            while off < raw.count {
                let n = Foundation.write(fd, raw.baseAddress! + off, raw.count - off)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { failure = n < 0 ? errno : ENOSPC; break }
                off += n
            }
        }
        if failure == 0 && fsync(fd) != 0 { failure = errno }
        if close(fd) != 0 && failure == 0 { failure = errno }
        if failure != 0 {
            unlink(path)
            throw SafetensorsError.unwritable(path: path, reason: String(cString: strerror(failure)))
        }
    }

    /// fsync of a folder (makes renames in it durable).
    public static func syncDirectory(_ dir: String) {
        let dfd = open(dir, O_RDONLY)
        if dfd >= 0 { fsync(dfd); close(dfd) }
    }
}
