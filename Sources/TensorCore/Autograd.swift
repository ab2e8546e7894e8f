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
    public var grad: Buffer? { didSet { gradIsLaid = false; laidUnrounded = false } }
    var parents: [Node]
    var backwardFn: ((Buffer) -> Void)?
    /// Created in an fp16 or bf16 autocast region: this activation's gradient is rounded to that
    /// format before it is used (`.fp32`: kept as is).
    let gradFormat: Precision
    /// Set by an op whose backward can also take its output gradient in a channel-blocked layout
    /// (element (n, c, p) at ((n * C/B + c/B) * HW + p) * B + c % B, B = `block`): that backward.
    var laid: (block: Int, n: Int, c: Int, hw: Int, backward: (Buffer) -> Void)?
    /// The op's backward rounds the gradient to `gradFormat` itself as it reads it (so backward
    /// does not round it in a pass of its own).
    var roundsOwnGradient = false
    /// Its laid backward (a channel slice, concatenation or sum passing the gradient on) rounds the
    /// gradient to bfloat16 values as it passes it on, so backward does not round a laid gradient in
    /// a pass of its own.
    var laidRoundsAsItPasses = false
    /// `grad` holds the gradient in that layout (`addLaidGradient`, `addBlocked`); anything else that touches the
    /// gradient turns it to NCHW first.
    private(set) var gradIsLaid = false
    /// The laid gradient is one bfloat16 convolution's unrounded Float32 sums (`addLaidGradient`).
    private var laidUnrounded = false
    /// The gradient as bfloat16 words in the laid layout, as a bfloat16 backward-data primitive
    /// rounds and writes it (`setLaidWords`), for `laidWordsBackward`; anything else that touches
    /// the gradient widens them to a Float32 laid gradient first (exact: the same values).
    fileprivate(set) var gradWords: HalfBuffer?
    /// Set by an op whose backward can also take its output gradient as such words (a fused block
    /// on bfloat16 primitives): that backward.
    var laidWordsBackward: ((HalfBuffer) -> Void)?

    init(count: Int, isLeaf: Bool, parents: [Node] = [], backward: ((Buffer) -> Void)? = nil) {
        self.count = count
        self.isLeaf = isLeaf
        self.parents = parents
        self.backwardFn = backward
        gradFormat = isLeaf ? .fp32 : ComputeContext.current.precision
    }

    /// Adds into the gradient: `body` receives a buffer that already holds the running sum
    /// (zeros on first use) and must `+=` its contribution.
    @inline(__always)
    public func accumulate(_ body: (UnsafeMutablePointer<Float>) -> Void) {
        widenWords()
        if gradIsLaid { unlayGradient() }
        if grad == nil { grad = Buffer(count: count, repeating: 0) }
        body(grad!.ptr)
    }

    /// Whether a gradient can be handed over in the channel-blocked layout with block `block`: the
    /// op that made this tensor reads that layout and the gradient so far is empty or in it. (Later
    /// contributions add in that layout, `addBlocked`; one that comes in NCHW turns it to NCHW first.)
    func takesLaidGradient(block: Int) -> Bool {
        guard let laid, laid.block == block else { return false }
        return grad == nil || gradIsLaid   // (words, when held, are a laid gradient too)
    }

    /// Whether the whole gradient can be handed over as bfloat16 words in the blocked layout with
    /// block `block`: the op that made this tensor reads them and nothing has contributed yet.
    func takesLaidWords(block: Int) -> Bool {
        laidWordsBackward != nil && laid?.block == block && grad == nil && gradWords == nil
    }

    /// The whole gradient as bfloat16 words, as `takesLaidWords(block:)` agreed.
    func setLaidWords(_ w: HalfBuffer) {
        precondition(laidWordsBackward != nil && grad == nil && gradWords == nil && w.count == count,
                     "laid words need an op that reads them and no gradient yet")
        gradWords = w
    }

    /// The words widened to a Float32 laid gradient (their values: already rounded).
    private func widenWords() {
        guard let w = gradWords else { return }
        gradWords = nil
        let g = Buffer(count: count), src = w.ptr, dst = g.ptr, widen = ComputeContext.current.k.pointee.bf16_to_f32
        Parallel.chunks(count, grain: 1 << 16) { r in widen(src + r.lowerBound, dst + r.lowerBound, r.count) }
        grad = g
        gradIsLaid = true
    }

    /// A whole gradient in the layout `takesLaidGradient(block:)` agreed to, kept as this node's
    /// gradient when it is the first (else added). `unrounded`: g's values are to be rounded to
    /// bfloat16 before use (a bfloat16 convolution's Float32 sums, which that primitive would have
    /// rounded; a bf16 gradient passed on by an op that leaves the rounding to its reader): left for
    /// the reader to round while g is the whole gradient, rounded before any sum is formed (so the
    /// sums are the NCHW path's, bit for bit).
    func addLaidGradient(_ g: Buffer, unrounded: Bool) {
        widenWords()
        guard let laid, g.count == count else { preconditionFailure("a laid gradient needs an op that reads it, of this node's size") }
        if grad == nil {
            grad = g
            gradIsLaid = true
            laidUnrounded = unrounded
            // Left for the reader only where one rounds to bfloat16 (the node's gradient format).
            if unrounded && gradFormat != .bf16 { roundGradientToBF16() }
            return
        }
        withExtendedLifetime(g) {
            addBlocked(g.ptr, srcC: laid.c, srcStart: 0, channels: laid.c, dstC: laid.c, dstStart: 0, n: laid.n, hw: laid.hw,
                       block: laid.block, unrounded: unrounded)
        }
    }

    /// Adds channels srcStart ..< srcStart + channels of src (blocked [n, srcC, hw] with channel block
    /// `block`) into channels dstStart ..< dstStart + channels of this node's gradient ([n, dstC,
    /// hw]): in the blocked layout when this node's op reads it (`laid`, same block) and the gradient
    /// is empty or already laid, else into the NCHW gradient. `unrounded` as in `addLaidGradient`:
    /// the values are rounded to bfloat16 as they are added.
    func addBlocked(_ src: UnsafePointer<Float>, srcC: Int, srcStart: Int, channels c: Int, dstC: Int, dstStart: Int, n: Int,
                    hw: Int, block: Int, unrounded: Bool) {
        widenWords()
        precondition(n * dstC * hw == count && c % block == 0 && srcStart % block == 0 && dstStart % block == 0,
                     "addBlocked: channels \(srcStart)+\(c) of \(srcC) into \(dstStart) of \(dstC) (block \(block)) for \(count) values")
        let sameBlock = laid?.block == block
        if gradIsLaid && !sameBlock { unlayGradient() }
        var mode: Int32 = unrounded ? 2 : 0
        if grad == nil {
            let whole = dstStart == 0 && c == dstC
            grad = whole ? Buffer(count: count) : Buffer(count: count, repeating: 0)
            gradIsLaid = sameBlock
            laidUnrounded = false
            if !whole { mode |= 1 }
        } else {
            if gradIsLaid && laidUnrounded { roundGradientToBF16() }
            mode |= 1
        }
        let dst = grad!.ptr, toLaid: Int32 = gradIsLaid ? 1 : 0, k = ComputeContext.current.k
        Parallel.chunks(n * (c / block), grain: Swift.max(1, elementwiseGrain / Swift.max(hw * block, 1))) { r in
            k.pointee.blocked_move(src, Int32(srcC), Int32(srcStart), dst, Int32(dstC), Int32(dstStart), Int32(c), Int32(hw),
                                   Int32(block), toLaid, mode, Int32(r.lowerBound), Int32(r.upperBound))
        }
    }

    /// The laid gradient's values rounded to bfloat16 in place (`laidUnrounded`).
    private func roundGradientToBF16() {
        guard let g = grad else { return }
        let p = g.ptr, round = ComputeContext.current.k.pointee.round_bf16
        Parallel.chunks(g.count, grain: 1 << 16) { r in round(p + r.lowerBound, r.count) }
        laidUnrounded = false
    }

    /// The gradient turned from the channel-blocked layout to NCHW (rounded to bfloat16 when it
    /// holds a bfloat16 convolution's unrounded sums).
    func unlayGradient() {
        widenWords()
        guard gradIsLaid, let g = grad, let laid else { return }
        let plain = Buffer(count: count)
        let mode: Int32 = laidUnrounded ? 2 : 0, k = ComputeContext.current.k
        let (n, c, hw, b) = (laid.n, laid.c, laid.hw, laid.block)
        Parallel.chunks(n * (c / b), grain: Swift.max(1, elementwiseGrain / Swift.max(hw * b, 1))) { r in
            k.pointee.blocked_move(g.ptr, Int32(c), 0, plain.ptr, Int32(c), 0, Int32(c), Int32(hw), Int32(b), 0, mode,
                                   Int32(r.lowerBound), Int32(r.upperBound))
        }
        grad = plain
        gradIsLaid = false
        laidUnrounded = false
    }

    /// Like `accumulate`, but on first use hands over uninitialised storage with `fresh == true`:
    /// then `body` must assign (`=`) every element instead of adding. Lets kernels skip a zero fill.
    @inline(__always)
    public func accumulateOrSet(_ body: (UnsafeMutablePointer<Float>, _ fresh: Bool) -> Void) {
        widenWords()
        if gradIsLaid { unlayGradient() }
        if let g = grad { body(g.ptr, false); return }
        let g = Buffer(count: count)
        grad = g
        body(g.ptr, true)
    }
}

// MARK: - Activations saved for backward

/// An activation kept for backward: the Float32 buffer itself, or a 16-bit copy (IEEE half or
/// bfloat16) made under autocast.
public struct Saved: @unchecked Sendable {
    let full: Buffer?
    let half: HalfBuffer?
    /// `.fp16` or `.bf16` when `half` holds the values.
    let format: Precision
    let table: UnsafePointer<df_kernels>
    public let count: Int

    /// Float32 values (a temporary conversion when stored in 16 bits). Keep the returned buffer
    /// alive while using its pointer: prefer `withValues`.
    public func unpack() -> Buffer {
        if let full { return full }
        guard let h = half else { preconditionFailure("Saved holds neither Float32 nor 16-bit values") }
        let b = Buffer(count: h.count)
        let src = h.ptr, dst = b.ptr, k = table
        let convert = format == .bf16 ? k.pointee.bf16_to_f32 : k.pointee.f16_to_f32
        Parallel.chunks(h.count, grain: 1 << 16) { r in convert(src + r.lowerBound, dst + r.lowerBound, r.count) }
        return b
    }

    /// Calls `body` with the Float32 values; the storage lives until `body` returns.
    public func withValues<R>(_ body: (UnsafePointer<Float>) throws -> R) rethrows -> R {
        let b = unpack()
        return try withExtendedLifetime(b) { try body(b.ptr) }
    }
}

/// The activations a context saved for backward: bytes per step, de-duplicated per buffer.
public final class SavedActivations: @unchecked Sendable {
    /// The source is held weakly, so a Float32 activation is freed as soon as backward releases the
    /// last closure that saved it; only 16-bit copies are held here (the registry made them).
    private struct Entry { weak var source: Buffer?; let half: Saved? }
    private var seen: [ObjectIdentifier: Entry] = [:]

    /// Bytes of distinct activations saved for backward since the last `reset()` (cleared by backward).
    public private(set) var bytes = 0

    /// Counts a copy an op keeps for backward itself (e.g. a convolution's input in oneDNN's layout).
    func count(bytes n: Int) { bytes += n }

    /// Of `bytes`, the inputs blocks keep for their weight gradients instead of rebuilding them
    /// (`ComputeContext.keptInputsShare`).
    public private(set) var keptInputBytes = 0

    /// Counts an input kept so (in `bytes` too).
    func countKeptInput(bytes n: Int) { bytes += n; keptInputBytes += n }

    /// Forgets the registry (backward calls this when it finishes).
    public func reset() {
        seen.removeAll(keepingCapacity: true)
        bytes = 0
        keptInputBytes = 0
    }

    /// Saves `buffer` for backward, in 16 bits under an fp16 or bf16 autocast region.
    func save(_ buffer: Buffer, precision: Precision, table: UnsafePointer<df_kernels>) -> Saved {
        let id = ObjectIdentifier(buffer)
        if let e = seen[id], e.source === buffer {
            return e.half ?? Saved(full: buffer, half: nil, format: .fp32, table: table, count: buffer.count)
        }
        let s: Saved
        if precision == .fp32 {
            s = Saved(full: buffer, half: nil, format: .fp32, table: table, count: buffer.count)
            bytes += buffer.bytes
            seen[id] = Entry(source: buffer, half: nil)
            return s
        } else {
            let h = HalfBuffer(count: buffer.count)
            let src = buffer.ptr, dst = h.ptr
            let convert = precision == .bf16 ? table.pointee.f32_to_bf16 : table.pointee.f32_to_f16
            Parallel.chunks(buffer.count, grain: 1 << 16) { r in convert(src + r.lowerBound, dst + r.lowerBound, r.count) }
            s = Saved(full: nil, half: h, format: precision, table: table, count: buffer.count)
            bytes += h.bytes
        }
        seen[id] = Entry(source: buffer, half: s)
        return s
    }
}

extension ComputeContext {
    /// Keeps `buffer` for backward as this context's precision asks.
    @inline(__always)
    public func save(_ buffer: Buffer) -> Saved { saved.save(buffer, precision: precision, table: k) }
}

// MARK: - Recording and backward

extension Tensor {
    /// Attaches a backward closure to `self` (an op's fresh output) when grad mode is on and any
    /// input requires a gradient. `backward` receives d(loss)/d(self) and accumulates into the
    /// inputs' nodes. The buffer it receives is this node's own gradient, which nothing else holds
    /// and backward drops after the closure: the closure may overwrite it as scratch. Returns self
    /// for chaining.
    @discardableResult
    @inline(__always)
    public func recording(_ inputs: [Tensor], _ backward: @escaping (Buffer) -> Void) -> Tensor {
        guard ComputeContext.current.gradEnabled else { return self }
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
        let ctx = ComputeContext.current
        let order = Tensor.topologicalOrder(from: root)
        root.accumulate { g in for i in 0..<root.count { g[i] += seed } }
        let roundF16 = ctx.k.pointee.round_f16, roundBF16 = ctx.k.pointee.round_bf16
        for n in order.reversed() {
            guard let fn = n.backwardFn else { continue }
            if let w = n.gradWords, let wordsBackward = n.laidWordsBackward {
                wordsBackward(w)
            } else if let g = n.grad {
                if n.gradFormat != .fp32 && !n.roundsOwnGradient && !(n.gradIsLaid && n.laidRoundsAsItPasses) {
                    let p = g.ptr, round = n.gradFormat == .bf16 ? roundBF16 : roundF16
                    Parallel.chunks(g.count, grain: 1 << 16) { r in round(p + r.lowerBound, r.count) }
                }
                if n.gradIsLaid, let laid = n.laid { laid.backward(g) } else { fn(g) }
            }
            n.backwardFn = nil
            n.laid = nil
            n.laidWordsBackward = nil
            n.gradWords = nil
            n.parents = []
            if !n.isLeaf { n.grad = nil }
        }
        ctx.saved.reset()
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
