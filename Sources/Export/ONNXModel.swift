import ProtoWire

/// The ONNX messages the exporter writes, each serialised with the field numbers of onnx.proto
/// (IR version 8, opset 17). Repeated scalars are written unpacked, one key per element, as
/// onnx.proto (proto2) declares them; parsers accept either form.
public enum ONNX {
    /// TensorProto.DataType values.
    public enum DataType: Int64, Sendable {
        case float = 1, int64 = 7, float16 = 10
    }

    /// TensorProto: dims 1, data_type 2, name 8, raw_data 9 (little-endian, row-major).
    public struct Tensor: Sendable {
        public var name: String
        public var dims: [Int64]
        public var dataType: DataType
        public var raw: [UInt8]

        func write(_ w: inout ProtoWriter) {
            for d in dims { w.int64(1, d) }
            w.int64(2, dataType.rawValue)
            w.string(8, name)
            w.bytes(9, raw)
        }

        public static func floats(_ name: String, _ values: [Float], dims: [Int]) -> Tensor {
            var raw = [UInt8]()
            raw.reserveCapacity(values.count * 4)
            for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { raw.append(contentsOf: $0) } }
            return Tensor(name: name, dims: dims.map(Int64.init), dataType: .float, raw: raw)
        }

        public static func halves(_ name: String, _ bits: [UInt16], dims: [Int]) -> Tensor {
            var raw = [UInt8]()
            raw.reserveCapacity(bits.count * 2)
            for b in bits { withUnsafeBytes(of: b.littleEndian) { raw.append(contentsOf: $0) } }
            return Tensor(name: name, dims: dims.map(Int64.init), dataType: .float16, raw: raw)
        }

        public static func int64s(_ name: String, _ values: [Int64], dims: [Int]? = nil) -> Tensor {
            var raw = [UInt8]()
            for v in values { withUnsafeBytes(of: v.littleEndian) { raw.append(contentsOf: $0) } }
            return Tensor(name: name, dims: (dims ?? [values.count]).map(Int64.init), dataType: .int64, raw: raw)
        }
    }

    /// AttributeProto: name 1, f 2, i 3, s 4, t 5, ints 8, type 20 (FLOAT 1, INT 2, STRING 3,
    /// TENSOR 4, INTS 7).
    public enum Attribute: Sendable {
        case int(String, Int64)
        case ints(String, [Int64])
        case float(String, Float)
        case string(String, String)
        case tensor(String, Tensor)

        func write(_ w: inout ProtoWriter) {
            switch self {
            case let .int(n, v): w.string(1, n); w.int64(3, v); w.int64(20, 2)
            case let .ints(n, v): w.string(1, n); for x in v { w.int64(8, x) }; w.int64(20, 7)
            case let .float(n, v): w.string(1, n); w.float(2, v); w.int64(20, 1)
            case let .string(n, v): w.string(1, n); w.string(4, v); w.int64(20, 3)
            case let .tensor(n, t): w.string(1, n); w.message(5) { t.write(&$0) }; w.int64(20, 4)
            }
        }
    }

    /// NodeProto: input 1, output 2, name 3, op_type 4, attribute 5.
    public struct Node: Sendable {
        public var op: String
        public var inputs: [String]
        public var outputs: [String]
        public var name: String
        public var attributes: [Attribute]

        func write(_ w: inout ProtoWriter) {
            for i in inputs { w.string(1, i) }
            for o in outputs { w.string(2, o) }
            w.string(3, name)
            w.string(4, op)
            for a in attributes { w.message(5) { a.write(&$0) } }
        }
    }

    /// A dimension of a value's shape: a number or a symbol (dim_value 1, dim_param 2).
    public enum Dim: Sendable, Equatable {
        case value(Int)
        case param(String)
    }

    /// ValueInfoProto: name 1, type 2 -> TypeProto.tensor_type 1 -> elem_type 1, shape 2 ->
    /// TensorShapeProto.dim 1.
    public struct ValueInfo: Sendable {
        public var name: String
        public var type: DataType
        public var shape: [Dim]

        func write(_ w: inout ProtoWriter) {
            w.string(1, name)
            w.message(2) { t in
                t.message(1) { tt in
                    tt.int64(1, type.rawValue)
                    tt.message(2) { s in
                        for d in shape {
                            s.message(1) { dim in
                                switch d {
                                case let .value(v): dim.int64(1, Int64(v))
                                case let .param(p): dim.string(2, p)
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// GraphProto: node 1, name 2, initializer 5, input 11, output 12.
    public struct Graph: Sendable {
        public var name: String
        public var nodes: [Node] = []
        public var initializers: [Tensor] = []
        public var inputs: [ValueInfo] = []
        public var outputs: [ValueInfo] = []

        func write(_ w: inout ProtoWriter) {
            for n in nodes { w.message(1) { n.write(&$0) } }
            w.string(2, name)
            for t in initializers { w.message(5) { t.write(&$0) } }
            for i in inputs { w.message(11) { i.write(&$0) } }
            for o in outputs { w.message(12) { o.write(&$0) } }
        }
    }

    /// ModelProto: ir_version 1, producer_name 2, producer_version 3, graph 7, opset_import 8
    /// (OperatorSetIdProto: domain 1, version 2), metadata_props 14 (key 1, value 2).
    public struct Model: Sendable {
        public var irVersion: Int64 = 8
        public var opset: Int64 = 17
        public var producerName = "DualFuse"
        public var producerVersion = "1"
        public var graph: Graph
        public var metadata: [(key: String, value: String)] = []

        public func serialized() -> [UInt8] {
            var w = ProtoWriter()
            w.int64(1, irVersion)
            w.string(2, producerName)
            w.string(3, producerVersion)
            w.message(7) { graph.write(&$0) }
            w.message(8) { o in o.string(1, ""); o.int64(2, opset) }
            for (k, v) in metadata { w.message(14) { e in e.string(1, k); e.string(2, v) } }
            return w.bytes
        }
    }
}
