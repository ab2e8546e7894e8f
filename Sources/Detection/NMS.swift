import Foundation
import TensorCore

/// One detection: a corner box in pixels, its confidence and class.
public struct Detection: Equatable, Sendable {
    public var box: Box
    public var confidence: Float
    public var classIndex: Int
    /// Index of the anchor (prediction column) it came from, or -1 for fused boxes.
    public var anchor: Int

    public init(box: Box, confidence: Float, classIndex: Int, anchor: Int = -1) {
        (self.box, self.confidence, self.classIndex, self.anchor) = (box, confidence, classIndex, anchor)
    }
}

/// Post-processing settings (Ultralytics' names; predict defaults conf 0.25 iou 0.7, validation conf 0.001).
public struct NMSOptions: Sendable {
    public var confidence: Float = 0.25
    public var iou: Float = 0.7
    /// Several labels per box (each class above `confidence`): validation mode.
    public var multiLabel = false
    /// Class-agnostic suppression.
    public var agnostic = false
    public var maxDetections = 300
    /// At most this many candidates (highest confidence) enter suppression.
    public var maxCandidates = 30_000
    /// Class offset that keeps classes apart in class-aware suppression (Ultralytics' max_wh).
    public var classOffset: Float = 7680
    /// Only these classes become candidates (Ultralytics' `classes`); nil: every class.
    public var classes: Set<Int>?

    public init(confidence: Float = 0.25, iou: Float = 0.7, multiLabel: Bool = false, agnostic: Bool = false,
                maxDetections: Int = 300, maxCandidates: Int = 30_000) {
        (self.confidence, self.iou, self.multiLabel, self.agnostic) = (confidence, iou, multiLabel, agnostic)
        (self.maxDetections, self.maxCandidates) = (maxDetections, maxCandidates)
    }
}

/// Non-maximum suppression as Ultralytics' `non_max_suppression` with torchvision's kernel.
public enum NMS {
    /// Detections of each image from decoded predictions [B, 4 + nc, A] (cx, cy, w, h, class scores).
    ///
    /// Candidates: best class score > conf (or every class score > conf in multi-label mode);
    /// at most `maxCandidates` by confidence; class-aware greedy suppression in descending
    /// confidence (stable: equal scores keep anchor order), dropping boxes whose IoU with a kept
    /// box is > iou; at most `maxDetections` kept, in that order.
    public static func run(_ pred: Tensor, _ o: NMSOptions = NMSOptions()) -> [[Detection]] {
        precondition(pred.rank == 3, "NMS expects [B, 4 + nc, A], got \(pred.shape)")
        let b = pred.shape[0], nc = pred.shape[1] - 4, a = pred.shape[2]
        var out = [[Detection]](repeating: [], count: b)
        let p = pred.data
        for img in 0..<b {
            let base = img * (4 + nc) * a
            var cands: [Detection] = []
            for j in 0..<a {
                var best: Float = -.infinity, bc = 0
                for c in 0..<nc { let s = p[base + (4 + c) * a + j]; if s > best { best = s; bc = c } }
                guard best > o.confidence else { continue }
                let box = Box(cx: p[base + j], cy: p[base + a + j], w: p[base + 2 * a + j], h: p[base + 3 * a + j])
                if o.multiLabel && nc > 1 {
                    for c in 0..<nc where p[base + (4 + c) * a + j] > o.confidence {
                        cands.append(Detection(box: box, confidence: p[base + (4 + c) * a + j], classIndex: c, anchor: j))
                    }
                } else {
                    cands.append(Detection(box: box, confidence: best, classIndex: bc, anchor: j))
                }
            }
            if o.multiLabel && nc > 1 {
                // Ultralytics lists multi-label candidates anchor-major, class-minor (torch.where order): already so.
            }
            if let keep = o.classes { cands.removeAll { !keep.contains($0.classIndex) } }
            out[img] = suppress(cands, o)
        }
        return out
    }

    /// Greedy suppression of candidates (in their given order for equal confidences).
    public static func suppress(_ candidates: [Detection], _ o: NMSOptions) -> [Detection] {
        var cands = candidates
        if cands.count > o.maxCandidates {
            cands = stableSortedByConfidence(cands)
            cands.removeLast(cands.count - o.maxCandidates)
        }
        let order = stableSortedIndices(cands)
        // Boxes offset by class (as the reference adds class * max_wh in Float32) for class-aware NMS.
        let shifted: [Box] = cands.map { d in
            let c = o.agnostic ? 0 : Float(d.classIndex) * o.classOffset
            return Box(x1: d.box.x1 + c, y1: d.box.y1 + c, x2: d.box.x2 + c, y2: d.box.y2 + c)
        }
        let areas = shifted.map { ($0.x2 - $0.x1) * ($0.y2 - $0.y1) }
        var removed = [Bool](repeating: false, count: cands.count)
        var keep: [Detection] = []
        for (rank, i) in order.enumerated() where !removed[i] {
            keep.append(cands[i])
            if keep.count >= o.maxDetections { break }
            let bi = shifted[i]
            for j in order[(rank + 1)...] where !removed[j] {
                let bj = shifted[j]
                let w = max(min(bi.x2, bj.x2) - max(bi.x1, bj.x1), 0)
                let h = max(min(bi.y2, bj.y2) - max(bi.y1, bj.y1), 0)
                let inter = w * h
                if inter / (areas[i] + areas[j] - inter) > o.iou { removed[j] = true }
            }
        }
        return keep
    }

    static func stableSortedIndices(_ d: [Detection]) -> [Int] {
        Array(d.indices).sorted { d[$0].confidence != d[$1].confidence ? d[$0].confidence > d[$1].confidence : $0 < $1 }
    }

    static func stableSortedByConfidence(_ d: [Detection]) -> [Detection] { stableSortedIndices(d).map { d[$0] } }
}

/// Decision-level fusion of the detection sets of several models (the two branches of late fusion).
public enum DetectionMerge: String, Sendable, CaseIterable {
    /// Concatenate the candidates of all branches and run NMS once (default).
    case nms
    /// Weighted box fusion: overlapping same-class boxes become one box whose corners are the
    /// confidence-weighted mean of theirs; its confidence is the sum of theirs divided by the
    /// number of branches (a box seen by one branch of two keeps half its confidence).
    case wbf

    /// Merges per-branch decoded predictions ([B, 4 + nc, A_k] each) into one detection list per image.
    public func merge(_ branches: [Tensor], options o: NMSOptions, wbfIoU: Float = 0.55) -> [[Detection]] {
        precondition(!branches.isEmpty, "merge of no branches")
        if branches.count == 1 { return NMS.run(branches[0], o) }
        switch self {
        case .nms:
            return NMS.run(Tensor.concat(branches, axis: 2), o)
        case .wbf:
            let per = branches.map { NMS.run($0, o) }
            return (0..<per[0].count).map { img in
                WeightedBoxFusion.fuse(per.map { $0[img] }, iou: wbfIoU, maxDetections: o.maxDetections)
            }
        }
    }
}

/// Weighted box fusion (Solovyev et al. 2021) for a handful of models.
public enum WeightedBoxFusion {
    /// Fuses the detections of `sets.count` models of one image.
    public static func fuse(_ sets: [[Detection]], iou: Float = 0.55, maxDetections: Int = 300) -> [Detection] {
        let models = Float(sets.count)
        let all = NMS.stableSortedByConfidence(sets.flatMap { $0 })
        var clusters: [[Detection]] = []
        var fused: [Detection] = []
        for d in all {
            var best = -1
            var bestIoU: Float = iou
            for (k, f) in fused.enumerated() where f.classIndex == d.classIndex {
                let v = BoxIoU.iou(f.box, d.box)
                if v > bestIoU { bestIoU = v; best = k }
            }
            if best < 0 {
                clusters.append([d])
                fused.append(d)
            } else {
                clusters[best].append(d)
                let members = clusters[best]
                let wsum = members.reduce(Float(0)) { $0 + $1.confidence }
                var x1: Float = 0, y1: Float = 0, x2: Float = 0, y2: Float = 0
                for m in members {
                    x1 += m.box.x1 * m.confidence; y1 += m.box.y1 * m.confidence
                    x2 += m.box.x2 * m.confidence; y2 += m.box.y2 * m.confidence
                }
                fused[best].box = Box(x1: x1 / wsum, y1: y1 / wsum, x2: x2 / wsum, y2: y2 / wsum)
            }
        }
        for k in fused.indices {
            let members = clusters[k]
            let mean = members.reduce(Float(0)) { $0 + $1.confidence } / Float(members.count)
            fused[k].confidence = mean * min(Float(members.count), models) / models
            fused[k].anchor = -1
        }
        return Array(NMS.stableSortedByConfidence(fused).prefix(maxDetections))
    }
}
