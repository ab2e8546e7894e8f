import Foundation
import NN
import TensorCore

/// What a node of the model graph runs.
public enum NodeKind {
    case layer(UnaryLayer)
    case concat
    case detect(Detect)
}

/// Where a node reads an input from.
public enum NodeSource: Equatable, Sendable {
    case node(Int)
    case input(String)
}

/// One row of the model YAML, built: its module, inputs, output channels and stride.
public final class ModelNode {
    /// Position in execution order (all sections, in file order).
    public let index: Int
    /// State-dict prefix without the trailing dot: `model.3`, `rgb.model.3`, `fuse.1`.
    public let name: String
    public let row: SpecRow
    public let sources: [NodeSource]
    public let kind: NodeKind
    public let channels: Int
    public let stride: Int
    /// Input streams this node depends on.
    public let streams: Set<String>
    /// Module name and resolved arguments, as the summary prints them.
    public let moduleName: String
    public let arguments: String
    /// Last node index that reads this node's output (its tensor is dropped after it).
    public internal(set) var lastUse: Int = -1

    init(index: Int, name: String, row: SpecRow, sources: [NodeSource], kind: NodeKind, channels: Int, stride: Int,
         streams: Set<String>, moduleName: String, arguments: String) {
        (self.index, self.name, self.row, self.sources, self.kind) = (index, name, row, sources, kind)
        (self.channels, self.stride, self.streams, self.moduleName, self.arguments) = (channels, stride, streams, moduleName, arguments)
    }

    /// `rgb`, `ir` (a single stream's branch) or `fused` (depends on several streams).
    public var streamTag: String { streams.count == 1 ? streams.first! : "fused" }

    public var module: Module? {
        switch kind {
        case let .layer(l): return l
        case .concat: return nil
        case let .detect(d): return d
        }
    }

    public func namedTensors() -> [NamedTensor] { module?.namedTensors(prefix: name + ".") ?? [] }
}

/// A built detector: a graph of YOLOv8 modules over one or more input streams, ending in one
/// Detect head (early/mid/input fusion, single stream) or one per stream (late fusion).
public final class DetectionModel {
    public let spec: ModelSpec
    public let nc: Int
    /// Input streams with their channel counts, in declaration order.
    public let streams: [(name: String, channels: Int)]
    public let nodes: [ModelNode]
    /// Training mode (BN batch statistics) or eval mode (running statistics).
    public var training = true
    public private(set) var isFused = false

    init(spec: ModelSpec, nc: Int, streams: [(name: String, channels: Int)], nodes: [ModelNode]) {
        self.spec = spec
        self.nc = nc
        self.streams = streams
        self.nodes = nodes
    }

    /// The Detect nodes (two for late fusion).
    public var detectNodes: [ModelNode] { nodes.filter { if case .detect = $0.kind { return true } else { return false } } }
    public var strides: [Int] { detectNodes.first.map { n -> [Int] in if case let .detect(d) = n.kind { return d.strides }; return [] } ?? [] }
    public var isDual: Bool { streams.count > 1 }

    /// Runs the graph. `inputs` maps stream names to NCHW tensors of the declared channels;
    /// returns the raw outputs of each Detect head, in graph order.
    public func callAsFunction(_ inputs: [String: Tensor]) -> [DetectOutput] {
        for s in streams {
            guard let t = inputs[s.name] else { preconditionFailure("missing input stream '\(s.name)'") }
            precondition(t.rank == 4 && t.shape[1] == s.channels,
                         "stream '\(s.name)' expects [N, \(s.channels), H, W], got \(t.shape)")
        }
        var outs = [Tensor?](repeating: nil, count: nodes.count)
        var results: [DetectOutput] = []
        for node in nodes {
            let xs: [Tensor] = node.sources.map { src in
                switch src {
                case let .node(j): return outs[j]!
                case let .input(s): return inputs[s]!
                }
            }
            switch node.kind {
            case let .layer(l): outs[node.index] = l(xs[0], training: training)
            case .concat: outs[node.index] = Tensor.concat(xs, axis: 1)
            case let .detect(d): results.append(d(xs, training: training))
            }
            for src in node.sources {     // drop outputs nobody reads any more
                if case let .node(j) = src, nodes[j].lastUse == node.index { outs[j] = nil }
            }
        }
        return results
    }

    /// Every parameter and buffer with its state-dict name.
    public func namedTensors() -> [NamedTensor] { nodes.flatMap { $0.namedTensors() } }

    /// Trainable parameters (conv weights, BN weights, biases).
    public var parameters: [NamedTensor] { namedTensors().filter { $0.role.isTrainable } }

    /// Element count of parameters, trainable and fixed (as Ultralytics' `model.parameters()`).
    public var parameterCount: Int { namedTensors().filter { $0.role != .buffer }.reduce(0) { $0 + $1.tensor.count } }

    /// Folds every batch norm into its convolution (inference only; not reversible).
    public func fuse() {
        for n in nodes { n.module?.fuse() }
        isFused = true
        training = false
    }

    /// Stream tag of each trainable parameter name: `rgb`, `ir` or `fused`.
    public func streamTags() -> [String: String] {
        var out: [String: String] = [:]
        for n in nodes { for t in n.namedTensors() { out[t.name] = n.streamTag } }
        return out
    }
}
