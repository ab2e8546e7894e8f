import Foundation

/// A ground-truth object of one image: class and corner box (pixels of the network input).
public struct GroundTruth: Equatable, Sendable {
    public var label: Int
    public var box: Box
    public init(label: Int, box: Box) { self.label = label; self.box = box }
}

/// Ultralytics' `TaskAlignedAssigner` (TOOD), as in 8.4: which anchors learn which object.
///
/// For each ground truth, candidate anchors are those whose centres lie strictly inside the box
/// (sides shorter than `minSide` enlarged to it about the centre). Each candidate's alignment
/// metric is score^alpha x CIoU^beta (CIoU clamped at 0, score = predicted probability of the
/// GT's class); the `topk` best candidates per GT become positives; an anchor claimed by several
/// GTs goes to the one it overlaps most. Target scores are the one-hot class times the
/// anchor's alignment, normalised so the best anchor of each GT gets that GT's best CIoU.
public struct TaskAlignedAssigner: Sendable {
    public var topk = 10
    public var alpha: Float = 0.5
    public var beta: Float = 6.0
    public var eps: Float = 1e-9
    /// Ultralytics' `stride_val` (the middle stride, 16): GT sides below it are enlarged for candidate selection.
    public var minSide: Float = 16

    public init(topk: Int = 10, alpha: Float = 0.5, beta: Float = 6.0, eps: Float = 1e-9, minSide: Float = 16) {
        (self.topk, self.alpha, self.beta, self.eps, self.minSide) = (topk, alpha, beta, eps, minSide)
    }

    /// Assignment of one batch. Arrays are flat, image-major.
    public struct Result: Sendable {
        /// [B * A]: assigned class (of GT 0 for background anchors, as Ultralytics).
        public var labels: [Int]
        /// [B * A]: assigned GT box in pixels (GT 0's box for background anchors, zeros without GTs).
        public var boxes: [Box]
        /// [B * A * nc]: normalised soft targets (0 for background).
        public var scores: [Float]
        /// [B * A]: positive anchors.
        public var foreground: [Bool]
        /// [B * A]: index of the assigned GT within its image (0 for background).
        public var gtIndex: [Int]
        /// [B * n * A] before one-GT-per-anchor resolution (for tests), n = max GTs per image.
        public var candidateMask: [Bool]
        public var maxObjects: Int
    }

    /// - Parameters:
    ///   - scores: [B, A, nc] predicted class probabilities (sigmoid, detached).
    ///   - boxes: [B * A] predicted boxes in pixels.
    ///   - anchors: [A] anchor centres in pixels (x, y).
    ///   - truths: per image, its ground truths (an image may have none).
    public func assign(scores: UnsafePointer<Float>, boxes: [Box], anchors: [(x: Float, y: Float)],
                       truths: [[GroundTruth]], nc: Int) -> Result {
        let b = truths.count, a = anchors.count
        let n = truths.map(\.count).max() ?? 0
        var res = Result(labels: [Int](repeating: n == 0 ? nc : 0, count: b * a),
                         boxes: [Box](repeating: Box(x1: 0, y1: 0, x2: 0, y2: 0), count: b * a),
                         scores: [Float](repeating: 0, count: b * a * nc), foreground: [Bool](repeating: false, count: b * a),
                         gtIndex: [Int](repeating: 0, count: b * a), candidateMask: [Bool](repeating: false, count: b * n * a),
                         maxObjects: n)
        if n == 0 { return res }
        for img in 0..<b {
            let gts = truths[img]
            let ng = gts.count
            var align = [Float](repeating: 0, count: ng * a)
            var overlap = [Float](repeating: 0, count: ng * a)
            var inside = [Bool](repeating: false, count: ng * a)
            var pos = [Bool](repeating: false, count: ng * a)
            var valid = [Bool](repeating: false, count: ng)
            for (j, gt) in gts.enumerated() {
                let g = gt.box
                valid[j] = g.x1 + g.y1 + g.x2 + g.y2 > 0
                guard valid[j] else { continue }
                // Candidate region: xyxy -> xywh, small sides raised to minSide, back to xyxy.
                let cx = (g.x1 + g.x2) / 2, cy = (g.y1 + g.y2) / 2
                var w = g.x2 - g.x1, h = g.y2 - g.y1
                if w < minSide { w = minSide }
                if h < minSide { h = minSide }
                let rx1 = cx - w / 2, ry1 = cy - h / 2, rx2 = cx + w / 2, ry2 = cy + h / 2
                for k in 0..<a {
                    let (ax, ay) = anchors[k]
                    guard ax - rx1 > eps, ay - ry1 > eps, rx2 - ax > eps, ry2 - ay > eps else { continue }
                    inside[j * a + k] = true
                    let o = max(BoxIoU.measure(g, boxes[img * a + k], .ciou), 0)
                    let s = scores[(img * a + k) * nc + gt.label]
                    overlap[j * a + k] = o
                    align[j * a + k] = Foundation.pow(s, alpha) * Foundation.pow(o, beta)
                }
                // Top-k by metric (ties: lowest anchor index, so zero-metric fill-ins are deterministic).
                var order = (0..<a).filter { align[j * a + $0] > 0 }
                order.sort { align[j * a + $0] != align[j * a + $1] ? align[j * a + $0] > align[j * a + $1] : $0 < $1 }
                var chosen = Array(order.prefix(topk))
                if chosen.count < topk {
                    var k = 0
                    while chosen.count < topk && k < a {
                        if align[j * a + k] <= 0 { chosen.append(k) }
                        k += 1
                    }
                }
                for k in chosen where inside[j * a + k] { pos[j * a + k] = true }
            }
            for j in 0..<ng { for k in 0..<a { res.candidateMask[(img * n + j) * a + k] = pos[j * a + k] } }
            // One GT per anchor: the one with the largest overlap among all GTs of the image.
            for k in 0..<a {
                var claims = 0
                for j in 0..<ng where pos[j * a + k] { claims += 1 }
                if claims > 1 {
                    var best = 0
                    for j in 1..<ng where overlap[j * a + k] > overlap[best * a + k] { best = j }
                    for j in 0..<ng { pos[j * a + k] = (j == best) }
                }
            }
            // Normalisation per GT over its positives.
            var posAlign = [Float](repeating: 0, count: ng), posOverlap = [Float](repeating: 0, count: ng)
            for j in 0..<ng {
                for k in 0..<a where pos[j * a + k] {
                    posAlign[j] = max(posAlign[j], align[j * a + k])
                    posOverlap[j] = max(posOverlap[j], overlap[j * a + k])
                }
            }
            for k in 0..<a {
                let q = img * a + k
                var gi = 0
                var fg = false
                var norm: Float = 0
                for j in 0..<ng {
                    let m = pos[j * a + k] ? align[j * a + k] * posOverlap[j] / (posAlign[j] + eps) : 0
                    norm = max(norm, m)
                    if pos[j * a + k] && !fg { fg = true; gi = j }
                }
                res.foreground[q] = fg
                res.gtIndex[q] = gi
                if ng > 0 {
                    res.labels[q] = max(gts[gi].label, 0)
                    res.boxes[q] = gts[gi].box
                }
                if fg { res.scores[q * nc + res.labels[q]] = norm }
            }
        }
        return res
    }
}
