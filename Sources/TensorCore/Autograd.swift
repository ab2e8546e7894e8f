import CKernels

/// A vertex of the reverse-mode graph. A tensor that requires a gradient owns one.
///
/// The node holds the gradient buffer, the nodes of the op's inputs and the op's backward
/// closure. The closure captures only what backward needs (saved activations, shapes), never the
/// output tensor, so forward activations are freed as soon as nothing else holds them.
public final class Node: @unchecked Sendable {
    /// Number of elements of the tensor this node belongs to.
    public let count: Int
    /// True for parameters and other tensors created with `requiresGrad`; their grad survives backward.
    public let isLeaf: Bool
    /// Accumulated gradient (same element count as the tensor), allocated on first use.
    public var grad: Buffer?
    var parents: [Node]
    var backwardFn: ((Buffer) -> Void)?
    /// Created under `Autocast.halfActivations`: this activation's gradient is held as half.
    let halfGradient: Bool

    init(count: Int, isLeaf: Bool, parents: [Node] = [], backward: ((Buffer) -> Void)? = nil) {
        self.count = count
        self.isLeaf = isLeaf
        self.parents = parents
        self.backwardFn = backward
        halfGradient = !isLeaf && Autocast.halfActivations
    }

    /// Adds into the gradient: `body` receives a buffer that already holds the running sum
    /// (zeros on first use) and must `+=` its contribution.
    @inline(__always)
    public func accumulate(_ body: (UnsafeMutablePointer<Float>) -> Void) {
        if grad == nil { grad = Buffer(count: count, repeating: 0) }
        body(grad!.ptr)
    }

    /// Like `accumulate`, but on first use hands over uninitialised storage with `fresh == true`:
    /// then `body` must assign (`=`) every element instead of adding. Lets kernels skip a zero fill.
    @inline(__always)
    public func accumulateOrSet(_ body: (UnsafeMutablePointer<Float>, _ fresh: Bool) -> Void) {
        if let g = grad { body(g.ptr, false); return }
        let g = Buffer(count: count)
        grad = g
        body(g.ptr, true)
    }
}

/// Whether ops record the graph. `noGrad { }` switches it off for inference.
public enum GradMode {
    nonisolated(unsafe) public internal(set) static var isEnabled = true

    /// Runs `body` without recording (the pattern of `torch.no_grad()`).
    public static func noGrad<T>(_ body: () throws -> T) rethrows -> T {
        let saved = isEnabled
        isEnabled = false
        defer { isEnabled = saved }
        return try body()
    }
}

/// Runs `body` without recording the autodiff graph.
public func noGrad<T>(_ body: () throws -> T) rethrows -> T { try GradMode.noGrad(body) }

// MARK: - Float16 emulation of saved activations and activation gradients

/// Mixed-precision emulation switches (the `--amp` path of training).
///
/// When `halfActivations` is on, activations that ops save for backward are stored as IEEE half
/// (`HalfBuffer`), and the gradient of every activation created in that region is rounded to
/// half precision before it is used, so overflow gives inf and tiny values flush to subnormals or
/// zero as on a GPU under autocast. Parameters, their gradients, and whatever is computed outside
/// the region (the loss and its reductions) stay Float32.
public enum Autocast {
    nonisolated(unsafe) public static var halfActivations = false

    public static func withHalfActivations<T>(_ on: Bool, _ body: () throws -> T) rethrows -> T {
        let saved = halfActivations
        halfActivations = on
        defer { halfActivations = saved }
        return try body()
    }
}

/// An activation kept for backward: the Float32 buffer itself, or a half copy under `Autocast`.
public struct Saved: @unchecked Sendable {
    let full: Buffer?
    let half: HalfBuffer?
    public let count: Int

    /// Float32 values (a temporary conversion when stored as half). Keep the returned buffer
    /// alive while using its pointer: prefer `withValues`.
    public func unpack() -> Buffer {
        if let full { return full }
        let h = half!
        let b = Buffer(count: h.count)
        let src = h.ptr, dst = b.ptr
        Parallel.chunks(h.count, grain: 1 << 16) { r in df_f16_to_f32(src + r.lowerBound, dst + r.lowerBound, r.count) }
        return b
    }

    /// Calls `body` with the Float32 values; the storage lives until `body` returns.
    public func withValues<R>(_ body: (UnsafePointer<Float>) throws -> R) rethrows -> R {
        let b = unpack()
        return try withExtendedLifetime(b) { try body(b.ptr) }
    }
}

/// Bookkeeping of the activations saved for backward: bytes per step, de-duplicated per buffer.
public enum SavedActivations {
    private struct Entry { weak var source: Buffer?; let half: HalfBuffer? }
    nonisolated(unsafe) private static var seen: [ObjectIdentifier: Entry] = [:]
    nonisolated(unsafe) private static var bytesNow = 0

    /// Bytes of distinct activations saved for backward since the last `reset()` (cleared by backward).
    public static var bytes: Int { bytesNow }

    /// Forgets the saved-activation registry (backward calls this when it finishes).
    public static func reset() {
        seen.removeAll(keepingCapacity: true)
        bytesNow = 0
    }

    /// Saves `buffer` for backward, as half under `Autocast.halfActivations`.
    public static func save(_ buffer: Buffer) -> Saved {
        let id = ObjectIdentifier(buffer)
        if let e = seen[id], e.source === buffer {
            return e.half.map { Saved(full: nil, half: $0, count: buffer.count) }
                ?? Saved(full: buffer, half: nil, count: buffer.count)
        }
        if Autocast.halfActivations {
            let h = HalfBuffer(count: buffer.count)
            let src = buffer.ptr, dst = h.ptr
            Parallel.chunks(buffer.count, grain: 1 << 16) { r in df_f32_to_f16(src + r.lowerBound, dst + r.lowerBound, r.count) }
            seen[id] = Entry(source: buffer, half: h)
            bytesNow += h.bytes
            return Saved(full: nil, half: h, count: buffer.count)
        }
        seen[id] = Entry(source: buffer, half: nil)
        bytesNow += buffer.bytes
        return Saved(full: buffer, half: nil, count: buffer.count)
    }
}

// MARK: - Recording and backward

extension Tensor {
    /// Attaches a backward closure to `self` (an op's fresh output) when grad mode is on and any
    /// input requires a gradient. `backward` receives d(loss)/d(self) and accumulates into the
    /// inputs' nodes. Returns self for chaining.
    @discardableResult
    @inline(__always)
    public func recording(_ inputs: [Tensor], _ backward: @escaping (Buffer) -> Void) -> Tensor {
        guard GradMode.isEnabled else { return self }
        var parents: [Node] = []
        for t in inputs { if let n = t.node { parents.append(n) } }
        if parents.isEmpty { return self }
        node = Node(count: count, isLeaf: false, parents: parents, backward: backward)
        return self
    }

    /// Reverse-mode pass from this tensor. `seed` is d(loss)/d(self) for every element (1 for a
    /// scalar loss). Visits nodes in reverse topological order, so every node's gradient is
    /// complete before its closure runs; afterwards non-leaf gradients and all closures (with
    /// the activations they saved) are released, and leaves keep their accumulated `grad`.
    public func backward(seed: Float = 1) {
        guard let root = node else {
            preconditionFailure("backward() on a tensor that does not require grad")
        }
        let order = Tensor.topologicalOrder(from: root)
        root.accumulate { g in for i in 0..<root.count { g[i] += seed } }
        for n in order.reversed() {
            guard let fn = n.backwardFn else { continue }
            if let g = n.grad {
                if n.halfGradient {
                    let p = g.ptr
                    Parallel.chunks(g.count, grain: 1 << 16) { r in df_round_f16(p + r.lowerBound, r.count) }
                }
                fn(g)
            }
            n.backwardFn = nil
            n.parents = []
            if !n.isLeaf { n.grad = nil }
        }
        SavedActivations.reset()
    }

    /// Nodes reachable from `root`, parents before children (iterative DFS, no recursion limit).
    static func topologicalOrder(from root: Node) -> [Node] {
        var order: [Node] = []
        var visited = Set<ObjectIdentifier>()
        var stack: [(Node, Int)] = [(root, 0)]
        visited.insert(ObjectIdentifier(root))
        while let (n, i0) = stack.popLast() {
            var i = i0
            if i < n.parents.count {
                let p = n.parents[i]
                i += 1
                stack.append((n, i))
                if visited.insert(ObjectIdentifier(p)).inserted { stack.append((p, 0)) }
            } else {
                order.append(n)
            }
        }
        return order
    }
}
