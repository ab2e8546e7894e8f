import TensorCore

/// How a tensor of a module is treated by training.
public enum TensorRole: String, Sendable {
    /// Convolution weights: trained, with weight decay (optimizer group 0).
    case weight
    /// Batch-norm scale (gamma): trained, no weight decay (group 1).
    case bnWeight
    /// Biases (batch-norm beta, conv bias): trained, no weight decay (group 2).
    case bias
    /// Running statistics: saved and averaged by EMA, not trained.
    case buffer
    /// Constants saved with the model (the DFL projection): neither trained nor averaged.
    case fixed

    public var isTrainable: Bool { self == .weight || self == .bnWeight || self == .bias }
}

/// A parameter or buffer with its PyTorch state-dict name.
public struct NamedTensor: @unchecked Sendable {
    public let name: String
    public let tensor: Tensor
    public let role: TensorRole
    public init(_ name: String, _ tensor: Tensor, _ role: TensorRole) {
        self.name = name
        self.tensor = tensor
        self.role = role
    }
}

/// A layer with parameters. Names follow PyTorch's `state_dict()` of the equivalent Ultralytics
/// module, so weights move between the two unchanged.
public protocol Module: AnyObject {
    /// Parameters and buffers, prefixed (e.g. "model.0." + "conv.weight"), in PyTorch's order.
    func namedTensors(prefix: String) -> [NamedTensor]
    /// Folds batch norm into the preceding convolution for inference.
    func fuse()
}

extension Module {
    public func fuse() {}

    /// Number of elements over parameters (trainable and fixed, as `model.parameters()` counts).
    public func parameterCount() -> Int {
        namedTensors(prefix: "").filter { $0.role != .buffer }.reduce(0) { $0 + $1.tensor.count }
    }
}

/// A module applied to one tensor.
public protocol UnaryLayer: Module {
    func callAsFunction(_ x: Tensor, training: Bool) -> Tensor
}

/// Ultralytics' `autopad`: 'same' padding for odd kernels.
@inline(__always) public func autopad(_ k: Int) -> Int { k / 2 }

/// Ultralytics' `make_divisible`: the smallest multiple of `divisor` >= x.
public func makeDivisible(_ x: Double, _ divisor: Int = 8) -> Int {
    Int((x / Double(divisor)).rounded(.up)) * divisor
}
