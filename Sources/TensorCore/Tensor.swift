import Foundation

/// An N-dimensional Float32 array in contiguous row-major storage (NCHW for images), with an
/// optional autodiff node.
///
/// Tensors are immutable values as far as ops are concerned: every op returns a new tensor.
/// `reshape` shares storage (it is free because storage is always contiguous). Only optimizers
/// and explicit `withMutableData` calls write into existing storage.
public final class Tensor: @unchecked Sendable {
    public let shape: [Int]
    public let count: Int
    /// The storage: made with the tensor, or (`deferred`) on first use.
    private let made: Buffer?
    private let deferred: DeferredValues?
    /// The values (NCHW for images). A tensor whose values an op wrote only in oneDNN's blocked
    /// layout (`init(shape:deferred:)`) makes them here on first use.
    public var buffer: Buffer { made ?? deferred!.buffer }
    /// Whether the plain values exist yet (false: deferred and not asked for).
    var hasPlainValues: Bool { made != nil || deferred!.isMade }
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
        self.count = buffer.count
        self.made = buffer
        self.deferred = nil
    }

    /// A tensor whose values `make` writes when first asked for (once; `make` must give the
    /// same values whenever it runs, e.g. a copy out of values the op wrote in another layout).
    convenience init(shape: [Int], deferred make: @escaping () -> Buffer) {
        self.init(shape: shape, deferred: DeferredValues(count: Tensor.product(shape), make))
    }

    private init(shape: [Int], deferred: DeferredValues) {
        precondition(shape.allSatisfy { $0 >= 0 } && Tensor.product(shape) == deferred.count,
                     "shape \(shape) needs \(Tensor.product(shape)) elements, deferred values have \(deferred.count)")
        self.shape = shape
        self.count = deferred.count
        self.made = nil
        self.deferred = deferred
    }

    /// A tensor of `shape` carrying `laid` (its values in the blocked layout) whose plain values
    /// `copy` writes: at once, or, with laid values and `deferPlainValues`, when first read (then
    /// copied out of Float32 laid values, and by `copy` for bfloat16 words, which do not hold them).
    static func withPlainValues(_ shape: [Int], laid: LaidValues?, copy: @escaping (UnsafeMutablePointer<Float>) -> Void) -> Tensor {
        let ctx = ComputeContext.current
        let out: Tensor
        if let laid, ctx.deferPlainValues {
            let k = ctx.k, count = Tensor.product(shape)
            out = Tensor(shape: shape, deferred: {
                if !laid.isWords { return laid.plain(k) }
                let b = Buffer(count: count)
                copy(b.ptr)
                return b
            })
        } else {
            out = Tensor(uninitialized: shape)
            copy(out.data)
        }
        out.laidValues = laid
        return out
    }

    /// The same storage (made or deferred) under another shape of as many elements.
    func sharingStorage(shape: [Int]) -> Tensor {
        if let made { return Tensor(shape: shape, buffer: made) }
        return Tensor(shape: shape, deferred: deferred!)
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
    public func detached() -> Tensor { sharingStorage(shape: shape) }

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

/// Values an op did not write in the plain layout: made on first use, under a lock (a tensor may be
/// read from several threads), then kept.
final class DeferredValues: @unchecked Sendable {
    let count: Int
    private let lock = NSLock()
    private var made: Buffer?
    private var make: (() -> Buffer)?

    init(count: Int, _ make: @escaping () -> Buffer) {
        self.count = count
        self.make = make
    }

    var isMade: Bool {
        lock.lock()
        defer { lock.unlock() }
        return made != nil
    }

    var buffer: Buffer {
        lock.lock()
        defer { lock.unlock() }
        if let made { return made }
        let b = make!()
        precondition(b.count == count, "deferred values: made \(b.count) values for \(count)")
        made = b
        make = nil
        ComputeContext.current.deferredValuesMade += 1
        return b
    }
}
