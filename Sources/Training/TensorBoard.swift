import Foundation
import ProtoWire

/// Writes TensorBoard event files (`events.out.tfevents.<unix seconds>.<host>` in the run folder):
/// TFRecord framing (length, masked CRC-32C of the length, the Event, masked CRC-32C of it) around
/// `Event` messages (wall_time 1, step 2, file_version 3, summary 5) whose `Summary` holds scalar
/// values (value 1 -> tag 1, simple_value 2). The first record names the format ("brain.Event:2").
/// Records are appended as they come, so a killed run keeps what it logged.
public final class TensorBoardWriter {
    public let path: String
    private let fd: Int32

    public init(directory: String) throws {
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, 255)
        let name = "events.out.tfevents.\(Int(Date().timeIntervalSince1970)).\(String(cString: host))"
        path = directory + "/" + name
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        guard fd >= 0 else { throw TrainingError.invalid("cannot write \(path) (\(String(cString: strerror(errno))))") }
        var w = ProtoWriter()
        w.double(1, Date().timeIntervalSince1970)
        w.string(3, "brain.Event:2")
        record(w.bytes)
    }

    deinit { close(fd) }

    /// Scalars at `step` (one Event, one value per tag).
    public func scalars(_ values: [(tag: String, value: Double)], step: Int) {
        var w = ProtoWriter()
        w.double(1, Date().timeIntervalSince1970)
        w.int64(2, Int64(step))
        w.message(5) { s in
            for (tag, v) in values where v.isFinite {
                s.message(1) { val in
                    val.string(1, tag)
                    val.float(2, Float(v))
                }
            }
        }
        record(w.bytes)
    }

    private func record(_ data: [UInt8]) {
        var frame = [UInt8]()
        frame.reserveCapacity(data.count + 16)
        let len = UInt64(data.count)
        let lenBytes = (0..<8).map { UInt8((len >> (8 * UInt64($0))) & 0xFF) }
        frame += lenBytes
        frame += le32(CRC32C.masked(lenBytes))
        frame += data
        frame += le32(CRC32C.masked(data))
        _ = frame.withUnsafeBytes { Foundation.write(fd, $0.baseAddress, $0.count) }
    }

    private func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8((v >> (8 * UInt32($0))) & 0xFF) } }
}
