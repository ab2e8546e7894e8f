import Foundation
import TensorCore

/// Raw outputs of a Detect head (Ultralytics 8.4's training dict).
///
/// boxes: [B, 4*regMax, A] DFL logits (ltrb distributions); scores: [B, nc, A] class logits.
/// Anchors run over the levels in order, row-major within a level (A = sum of h*w).
public struct DetectOutput: @unchecked Sendable {
    public let boxes: Tensor
    public let scores: Tensor
    public let levels: [(height: Int, width: Int)]
    public let strides: [Int]
    public let regMax: Int

    public init(boxes: Tensor, scores: Tensor, levels: [(height: Int, width: Int)], strides: [Int], regMax: Int = 16) {
        (self.boxes, self.scores, self.levels, self.strides, self.regMax) = (boxes, scores, levels, strides, regMax)
    }

    public var anchorCount: Int { levels.reduce(0) { $0 + $1.height * $1.width } }
    public var nc: Int { scores.shape[1] }
}

/// Anchor points (cell centres, grid units) and the stride of each anchor, level after level.
///
/// points: [A * 2] as (x, y) pairs; strides: [A].
public func makeAnchors(levels: [(height: Int, width: Int)], strides: [Int], offset: Float = 0.5)
    -> (points: [Float], strides: [Float]) {
    var pts: [Float] = [], st: [Float] = []
    for (l, size) in levels.enumerated() {
        for y in 0..<size.height {
            for x in 0..<size.width {
                pts.append(Float(x) + offset)
                pts.append(Float(y) + offset)
                st.append(Float(strides[l]))
            }
        }
    }
    return (pts, st)
}

/// Ultralytics' `Detect` head (v8 "legacy" branches).
///
/// For each level i with input channels ch[i]: box branch cv2[i] = Conv3x3(ch, c2) -> Conv3x3(c2, c2)
/// -> Conv2d1x1(c2, 4*regMax) and class branch cv3[i] = Conv3x3(ch, c3) -> Conv3x3(c3, c3) ->
/// Conv2d1x1(c3, nc), with c2 = max(16, ch0/4, 4*regMax), c3 = max(ch0, min(nc, 100)). `dfl.conv.weight`
/// is the fixed projection 0..regMax-1.
public final class Detect: Module {
    public let nc, regMax: Int
    public let strides: [Int]
    public let cv2: [[UnaryLayer]]
    public let cv3: [[UnaryLayer]]
    public let dflWeight: Tensor     // [1, regMax, 1, 1] = 0, 1, …, regMax-1

    public init(nc: Int, channels: [Int], strides: [Int], regMax: Int = 16, rng: inout RandomState) {
        self.nc = nc
        self.regMax = regMax
        self.strides = strides
        let c2 = max(16, channels[0] / 4, regMax * 4), c3 = max(channels[0], min(nc, 100))
        var box: [[UnaryLayer]] = [], cls: [[UnaryLayer]] = []
        for ch in channels {
            box.append([ConvBlock(ch, c2, k: 3, rng: &rng), ConvBlock(c2, c2, k: 3, rng: &rng), Conv2d(c2, 4 * regMax, k: 1, rng: &rng)])
            cls.append([ConvBlock(ch, c3, k: 3, rng: &rng), ConvBlock(c3, c3, k: 3, rng: &rng), Conv2d(c3, nc, k: 1, rng: &rng)])
        }
        cv2 = box
        cv3 = cls
        dflWeight = Tensor((0..<regMax).map(Float.init), shape: [1, regMax, 1, 1])
        initBiases()
    }

    /// Ultralytics' bias init: box logits 1.0, class logits log(5 / nc / (640 / stride)^2)
    /// (about 0.01 objects per cell at 640 px).
    public func initBiases() {
        for (i, s) in strides.enumerated() {
            let b = (cv2[i][2] as! Conv2d).bias, c = (cv3[i][2] as! Conv2d).bias
            for j in 0..<b.count { b.data[j] = 1.0 }
            let v = Float(Foundation.log(5.0 / Double(nc) / pow(640.0 / Double(s), 2)))
            for j in 0..<c.count { c.data[j] = v }
        }
    }

    /// Raw head outputs for the level features `xs` (one per stride).
    public func callAsFunction(_ xs: [Tensor], training: Bool) -> DetectOutput {
        precondition(xs.count == strides.count, "Detect expects \(strides.count) feature maps, got \(xs.count)")
        let b = xs[0].shape[0]
        var boxes: [Tensor] = [], scores: [Tensor] = [], levels: [(Int, Int)] = []
        for (i, x) in xs.enumerated() {
            let h = x.shape[2], w = x.shape[3]
            levels.append((h, w))
            let bx = cv2[i].reduce(x) { $1($0, training: training) }
            let cx = cv3[i].reduce(x) { $1($0, training: training) }
            boxes.append(bx.reshape([b, 4 * regMax, h * w]))
            scores.append(cx.reshape([b, nc, h * w]))
        }
        return DetectOutput(boxes: boxes.count == 1 ? boxes[0] : Tensor.concat(boxes, axis: 2),
                            scores: scores.count == 1 ? scores[0] : Tensor.concat(scores, axis: 2),
                            levels: levels.map { (height: $0.0, width: $0.1) }, strides: strides, regMax: regMax)
    }

    public func namedTensors(prefix: String) -> [NamedTensor] {
        var out: [NamedTensor] = []
        for (name, branches) in [("cv2", cv2), ("cv3", cv3)] {
            for (i, seq) in branches.enumerated() {
                for (j, layer) in seq.enumerated() { out += layer.namedTensors(prefix: prefix + "\(name).\(i).\(j).") }
            }
        }
        out.append(NamedTensor(prefix + "dfl.conv.weight", dflWeight, .fixed))
        return out
    }

    public func fuse() { (cv2 + cv3).forEach { $0.forEach { $0.fuse() } } }
}

extension DetectOutput {
    /// Decoded predictions as Ultralytics' eval output: [B, 4 + nc, A] with boxes (cx, cy, w, h)
    /// in input pixels (DFL expectation around each anchor, times its stride) and sigmoid scores.
    /// Not differentiable.
    public func decoded() -> Tensor {
        let b = boxes.shape[0], a = anchorCount, r = regMax
        let (pts, st) = makeAnchors(levels: levels, strides: strides)
        let out = Tensor(uninitialized: [b, 4 + nc, a])
        let pb = boxes.data, ps = scores.data, po = out.data
        Parallel.forEach(b) { n in
            var d = [Float](repeating: 0, count: 4)
            var e = [Float](repeating: 0, count: r)
            for j in 0..<a {
                for side in 0..<4 {
                    var m = -Float.infinity
                    for k in 0..<r { e[k] = pb[((n * 4 + side) * r + k) * a + j]; m = max(m, e[k]) }
                    var s: Float = 0, acc: Float = 0
                    for k in 0..<r { let v = Foundation.exp(e[k] - m); s += v; acc += v * Float(k) }
                    d[side] = acc / s
                }
                let ax = pts[2 * j], ay = pts[2 * j + 1], stv = st[j]
                let x1 = ax - d[0], y1 = ay - d[1], x2 = ax + d[2], y2 = ay + d[3]
                po[(n * (4 + nc) + 0) * a + j] = (x1 + x2) / 2 * stv
                po[(n * (4 + nc) + 1) * a + j] = (y1 + y2) / 2 * stv
                po[(n * (4 + nc) + 2) * a + j] = (x2 - x1) * stv
                po[(n * (4 + nc) + 3) * a + j] = (y2 - y1) * stv
                for c in 0..<nc {
                    po[(n * (4 + nc) + 4 + c) * a + j] = 1 / (1 + Foundation.exp(-ps[(n * nc + c) * a + j]))
                }
            }
        }
        return out
    }
}
