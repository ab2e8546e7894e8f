/// The protocol-buffers wire format, written by hand for the few messages DualFuse emits (ONNX
/// models, TensorBoard events): varints, fixed 32/64-bit values, length-delimited bytes and
/// nested messages. Field numbers live with the callers, beside the message they describe.
///
/// Wire types: 0 varint, 1 fixed 64-bit, 2 length-delimited, 5 fixed 32-bit.
public struct ProtoWriter: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init() {}

    /// An unsigned varint: 7 bits per byte, least significant first, high bit = more.
    public mutating func varint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    mutating func key(_ field: Int, _ wireType: Int) {
        precondition(field >= 1 && field < (1 << 29), "protobuf field number \(field) out of range")
        varint(UInt64(field << 3 | wireType))
    }

    /// int64 / int32 / enum / bool fields (wire type 0); negative values take 10 bytes, as in protobuf.
    public mutating func int64(_ field: Int, _ value: Int64) {
        key(field, 0)
        varint(UInt64(bitPattern: value))
    }

    public mutating func bool(_ field: Int, _ value: Bool) { int64(field, value ? 1 : 0) }

    /// float (wire type 5, little-endian IEEE).
    public mutating func float(_ field: Int, _ value: Float) {
        key(field, 5)
        fixed32(value.bitPattern)
    }

    /// double (wire type 1, little-endian IEEE).
    public mutating func double(_ field: Int, _ value: Double) {
        key(field, 1)
        let b = value.bitPattern
        for i in 0..<8 { bytes.append(UInt8((b >> (8 * UInt64(i))) & 0xFF)) }
    }

    mutating func fixed32(_ v: UInt32) {
        for i in 0..<4 { bytes.append(UInt8((v >> (8 * UInt32(i))) & 0xFF)) }
    }

    /// bytes (wire type 2).
    public mutating func bytes(_ field: Int, _ value: [UInt8]) {
        key(field, 2)
        varint(UInt64(value.count))
        bytes.append(contentsOf: value)
    }

    /// string (wire type 2, UTF-8).
    public mutating func string(_ field: Int, _ value: String) { bytes(field, Array(value.utf8)) }

    /// A nested message (wire type 2) built by `body`.
    public mutating func message(_ field: Int, _ body: (inout ProtoWriter) -> Void) {
        var inner = ProtoWriter()
        body(&inner)
        bytes(field, inner.bytes)
    }

    /// Packed repeated int64 (one length-delimited field of varints).
    public mutating func packedInt64(_ field: Int, _ values: [Int64]) {
        var inner = ProtoWriter()
        for v in values { inner.varint(UInt64(bitPattern: v)) }
        bytes(field, inner.bytes)
    }

    /// Packed repeated float.
    public mutating func packedFloat(_ field: Int, _ values: [Float]) {
        var inner = ProtoWriter()
        for v in values { inner.fixed32(v.bitPattern) }
        bytes(field, inner.bytes)
    }
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as TFRecord framing uses it.
public enum CRC32C {
    static let table: [UInt32] = (0..<256).map { i -> UInt32 in
        var c = UInt32(i)
        for _ in 0..<8 { c = c & 1 != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
        return c
    }

    public static func checksum<C: Collection>(_ data: C) -> UInt32 where C.Element == UInt8 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in data { c = table[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }

    /// TFRecord's masked CRC: ((crc >> 15) | (crc << 17)) + 0xa282ead8, in 32 bits.
    public static func masked<C: Collection>(_ data: C) -> UInt32 where C.Element == UInt8 {
        let c = checksum(data)
        return ((c >> 15) | (c << 17)) &+ 0xA282_EAD8
    }
}
