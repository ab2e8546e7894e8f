import Foundation

/// An N-dimensional Float32 array in contiguous row-major storage (NCHW for images), with an
/// optional autodiff node.
///
/// Tensors are immutable values as far as ops are concerned: every op returns a new tensor.
/// `reshape` shares storage (it is free because storage is always contiguous). Only optimizers
/// and explicit `withMutableData` calls write into existing storage.
public final class Tensor: @unchecked Sendable {
    public let shape: [Int]
    public let buffer: Buffer
    /// Autodiff vertex; nil when the tensor does not require a gradient.
    public internal(set) var node: Node?
    /// How backward can rebuild this tensor in oneDNN's channel-blocked layout: set by
    /// `convBatchNorm` on its output, and carried through channel slices, concatenations and sums
    /// of such tensors (see `LaidRecipe`).
    var laidRecipe: LaidRecipe?
    /// This tensor's values in oneDNN's channel-blocked layout (bfloat16 words or Float32), when the
    /// op that made it wrote them (see `LaidValues`).
    var laidValues: LaidValues?

    /// Wraps `buffer` (its count must equal the shape's product).
    public init(shape: [Int], buffer: Buffer) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in shape \(shape)")
        precondition(Tensor.product(shape) == buffer.count,
                     "shape \(shape) needs \(Tensor.product(shape)) elements, buffer has \(buffer.count)")
        self.shape = shape
        self.buffer = buffer
    }

    /// Uninitialised storage (callers fill every element).
    public convenience init(uninitialized shape: [Int]) {
        self.init(shape: shape, buffer: Buffer(count: Tensor.product(shape)))
    }

    public convenience init(zeros shape: [Int]) {
        self.init(shape: shape, buffer: Buffer(count: Tensor.product(shape), repeating: 0))
    }

    public convenience init(repeating value: Float, shape: [Int]) {
        self.init(shape: shape, buffer: Buffer(count: Tensor.product(shape), repeating: value))
    }

    public convenience init(_ values: [Float], shape: [Int]) {
        self.init(shape: shape, buffer: Buffer(values))
    }

    /// A scalar (shape []).
    public convenience init(scalar: Float) {
        self.init([scalar], shape: [])
    }

    public static func product(_ shape: [Int]) -> Int { shape.reduce(1, *) }

    public var count: Int { buffer.count }
    public var rank: Int { shape.count }
    public var data: UnsafeMutablePointer<Float> { buffer.ptr }
    public var array: [Float] { buffer.array }
    /// The single value of a one-element tensor.
    public var item: Float {
        precondition(count == 1, "item needs one element, shape is \(shape)")
        return buffer.ptr[0]
    }

    public subscript(flat i: Int) -> Float {
        get { buffer.ptr[i] }
        set { buffer.ptr[i] = newValue }
    }

    /// Size of `axis` (negative counts from the end).
    public func size(_ axis: Int) -> Int { shape[normalize(axis)] }

    func normalize(_ axis: Int) -> Int {
        let a = axis < 0 ? axis + rank : axis
        precondition(a >= 0 && a < Swift.max(rank, 1), "axis \(axis) out of range for shape \(shape)")
        return a
    }

    /// Row-major strides of `shape`.
    public static func strides(_ shape: [Int]) -> [Int] {
        var s = [Int](repeating: 1, count: shape.count)
        var acc = 1
        for i in stride(from: shape.count - 1, through: 0, by: -1) {
            s[i] = acc
            acc *= shape[i]
        }
        return s
    }

    // MARK: Autodiff surface

    /// Whether gradients flow to this tensor. Setting true on a tensor without a node makes it a leaf.
    public var requiresGrad: Bool {
        get { node != nil }
        set {
            if newValue {
                if node == nil { node = Node(count: count, isLeaf: true) }
            } else {
                node = nil
            }
        }
    }

    /// The accumulated gradient of a leaf (nil before any backward, or after `zeroGrad()`).
    public var grad: Tensor? {
        node?.unlayGradient()
        guard let g = node?.grad else { return nil }
        return Tensor(shape: shape, buffer: g)
    }

    /// Drops the accumulated gradient (the `set_to_none` form of zero_grad).
    public func zeroGrad() { node?.grad = nil }

    /// The same values, cut from the graph (shares storage).
    public func detached() -> Tensor { Tensor(shape: shape, buffer: buffer) }

    /// A copy of the values with fresh storage, not recorded.
    public func clone() -> Tensor { Tensor(shape: shape, buffer: buffer.copy()) }

    /// True when any input needs a gradient and grad mode is on: ops save activations only then.
    @inline(__always)
    public static func needsGrad(_ inputs: Tensor...) -> Bool {
        guard ComputeContext.current.gradEnabled else { return false }
        for t in inputs where t.node != nil { return true }
        return false
    }
}

extension Tensor: CustomStringConvertible {
    public var description: String {
        let shown = array.prefix(8).map { String(format: "%.4g", $0) }.joined(separator: ", ")
        return "Tensor(\(shape), [\(shown)\(count > 8 ? ", …" : "")]\(requiresGrad ? ", grad" : ""))"
    }
}
