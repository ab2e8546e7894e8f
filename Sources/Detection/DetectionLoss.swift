import Foundation
import NN
import TensorCore

/// Ground truths of a batch in the loader's form: one row per object.
public struct BatchTargets: Sendable {
    /// Image index in the batch of each object (need not be sorted).
    public var batchIndex: [Int]
    public var classes: [Int]
    /// Per object cx, cy, w, h normalised to [0, 1] of the network input.
    public var boxes: [Float]

    public init(batchIndex: [Int], classes: [Int], boxes: [Float]) {
        precondition(batchIndex.count == classes.count && boxes.count == 4 * classes.count,
                     "targets: \(batchIndex.count) indices, \(classes.count) classes, \(boxes.count / 4) boxes")
        (self.batchIndex, self.classes, self.boxes) = (batchIndex, classes, boxes)
    }

    public var count: Int { classes.count }

    /// Ground truths per image in pixels of a `width` x `height` input (xywh scaled, then corners).
    public func perImage(batch: Int, width: Float, height: Float) -> [[GroundTruth]] {
        var out = [[GroundTruth]](repeating: [], count: batch)
        for i in 0..<count {
            let cx = boxes[4 * i] * width, cy = boxes[4 * i + 1] * height
            let w = boxes[4 * i + 2] * width, h = boxes[4 * i + 3] * height
            out[batchIndex[i]].append(GroundTruth(label: classes[i], box: Box(x1: cx - w / 2, y1: cy - h / 2, x2: cx + w / 2, y2: cy + h / 2)))
        }
        return out
    }
}

/// Loss gains (Ultralytics' `box`, `cls`, `dfl` hyper-parameters).
public struct LossGains: Sendable, Equatable {
    public var box: Float = 7.5
    public var cls: Float = 0.5
    public var dfl: Float = 1.5
    public init(box: Float = 7.5, cls: Float = 0.5, dfl: Float = 1.5) { (self.box, self.cls, self.dfl) = (box, cls, dfl) }
}

/// The result of the detection loss for one batch.
public struct LossOutput: @unchecked Sendable {
    /// Scalar to call `backward()` on: (gain_box * box + gain_cls * cls + gain_dfl * dfl) x batch size,
    /// as Ultralytics returns `loss * batch_size` and the trainer sums it.
    public let total: Tensor
    /// The three gained components, detached and not multiplied by the batch size (the values logged).
    public let box, cls, dfl: Float
    /// Positive anchors in the batch.
    public let foreground: Int
    /// The assignment used (for tests and diagnostics).
    public let assignment: TaskAlignedAssigner.Result
    /// max(sum of target scores, 1): the normaliser of all three terms.
    public let targetScoresSum: Float
}

/// Ultralytics' v8 detection loss (`v8DetectionLoss` of 8.4) with its gradient written out.
///
/// Where normalisation happens: every term is divided by `targetScoresSum` = max(sum of the
/// assigner's soft targets over the batch, 1) — not by the number of images or anchors — and the
/// returned total is multiplied by the batch size B, so gradients are of (sum of gained terms) x B.
/// - cls: BCE-with-logits over all anchors and classes against the soft targets.
/// - box: sum over positives of (1 - CIoU(pred, target)) x weight, in grid units (boxes divided by
///   the anchor's stride), weight = the anchor's soft target.
/// - dfl: distribution focal loss on the 16 bins of each side: cross-entropy with the target
///   distance split between its two neighbouring bins (targets clamped to [0, 14.99]), mean over
///   the four sides, times weight.
/// The assignment, the soft targets, their sum and CIoU's aspect weight alpha carry no gradient.
public final class DetectionLoss {
    public let nc: Int
    public var gains: LossGains
    public var assigner: TaskAlignedAssigner

    public init(nc: Int, gains: LossGains = LossGains(), assigner: TaskAlignedAssigner = TaskAlignedAssigner()) {
        self.nc = nc
        self.gains = gains
        self.assigner = assigner
    }

    /// Loss of one Detect head's raw outputs against the batch's targets.
    public func callAsFunction(_ out: DetectOutput, _ targets: BatchTargets) -> LossOutput {
        let bsz = out.boxes.shape[0], a = out.anchorCount, r = out.regMax, nc = out.nc
        precondition(nc == self.nc, "loss built for \(self.nc) classes, head has \(nc)")
        let (points, strides) = makeAnchors(levels: out.levels, strides: out.strides)
        let imgH = Float(out.levels[0].height * out.strides[0]), imgW = Float(out.levels[0].width * out.strides[0])
        var assigner = self.assigner
        if out.strides.count > 1 { assigner.minSide = Float(out.strides[1]) }

        // Softmax over the bins of each side: expectations (grid-unit distances) per (image, side, anchor).
        let logits = out.boxes.data
        let expectBuf = Buffer(count: bsz * 4 * a), maxBuf = Buffer(count: bsz * 4 * a), sumBuf = Buffer(count: bsz * 4 * a)
        let expect = expectBuf.ptr, rowMax = maxBuf.ptr, rowSum = sumBuf.ptr
        Parallel.forEach(bsz * 4) { bs in
            let base = bs * r * a
            let m = rowMax + bs * a, s = rowSum + bs * a, e = expect + bs * a
            for j in 0..<a { m[j] = -.infinity; s[j] = 0; e[j] = 0 }
            for k in 0..<r { let row = logits + base + k * a; for j in 0..<a { m[j] = max(m[j], row[j]) } }
            for k in 0..<r {
                let row = logits + base + k * a
                for j in 0..<a { let v = Foundation.exp(row[j] - m[j]); s[j] += v; e[j] += v * Float(k) }
            }
            for j in 0..<a { e[j] /= s[j] }
        }
        // Predicted boxes in grid units and in pixels; class probabilities [B, A, nc].
        var predGrid = [Box](repeating: Box(x1: 0, y1: 0, x2: 0, y2: 0), count: bsz * a)
        var predPixels = predGrid
        for img in 0..<bsz {
            for j in 0..<a {
                let e0 = expect[(img * 4 + 0) * a + j], e1 = expect[(img * 4 + 1) * a + j]
                let e2 = expect[(img * 4 + 2) * a + j], e3 = expect[(img * 4 + 3) * a + j]
                let ax = points[2 * j], ay = points[2 * j + 1], st = strides[j]
                let g = Box(x1: ax - e0, y1: ay - e1, x2: ax + e2, y2: ay + e3)
                predGrid[img * a + j] = g
                predPixels[img * a + j] = g.scaled(by: st)
            }
        }
        let sc = out.scores.data
        var probs = [Float](repeating: 0, count: bsz * a * nc)
        for img in 0..<bsz { for c in 0..<nc { for j in 0..<a {
            probs[(img * a + j) * nc + c] = 1 / (1 + Foundation.exp(-sc[(img * nc + c) * a + j]))
        } } }
        var anchorsPx: [(x: Float, y: Float)] = []
        anchorsPx.reserveCapacity(a)
        for j in 0..<a {
            let st: Float = strides[j]
            anchorsPx.append((x: points[2 * j] * st, y: points[2 * j + 1] * st))
        }
        let truths = targets.perImage(batch: bsz, width: imgW, height: imgH)
        let asg = probs.withUnsafeBufferPointer {
            assigner.assign(scores: $0.baseAddress!, boxes: predPixels, anchors: anchorsPx, truths: truths, nc: nc)
        }

        var tss: Float = 0
        for v in asg.scores { tss += v }
        tss = max(tss, 1)
        let gScores = Tensor(uninitialized: out.scores.shape), gBoxes = Tensor(zeros: out.boxes.shape)
        let scale = Float(bsz)   // d(total)/d(component) before gains

        // Classification: BCE over everything.
        var clsSum: Double = 0
        let gs = gScores.data
        for img in 0..<bsz { for c in 0..<nc { for j in 0..<a {
            let q = (img * nc + c) * a + j
            let x = sc[q], t = asg.scores[(img * a + j) * nc + c]
            clsSum += Double(max(x, 0) - x * t + Foundation.log1p(Foundation.exp(-abs(x))))
            gs[q] = (probs[(img * a + j) * nc + c] - t) / tss * gains.cls * scale
        } } }

        // Box (CIoU) and DFL on positives.
        var boxSum: Double = 0, dflSum: Double = 0
        var fgCount = 0
        let gb = gBoxes.data
        for img in 0..<bsz {
            for j in 0..<a where asg.foreground[img * a + j] {
                fgCount += 1
                let q = img * a + j
                var weight: Float = 0
                for c in 0..<nc { weight += asg.scores[q * nc + c] }
                let st = strides[j]
                let tb = asg.boxes[q]
                let target = Box(x1: tb.x1 / st, y1: tb.y1 / st, x2: tb.x2 / st, y2: tb.y2 / st)
                let (ciou, dc) = BoxIoU.ciouWithGradient(predGrid[q], target)
                boxSum += Double((1 - ciou) * weight)
                // d(box term)/d(corners) = -weight * dCIoU / tss; corners -> side distances (l, t, r, b).
                let gBox = -weight / tss * gains.box * scale
                let dSide: [Float] = [-dc.0 * gBox, -dc.1 * gBox, dc.2 * gBox, dc.3 * gBox]
                // DFL targets (grid units), clamped to [0, regMax - 1 - 0.01].
                let ax = points[2 * j], ay = points[2 * j + 1]
                let hi = Float(r - 1) - 0.01
                let raw: [Float] = [ax - target.x1, ay - target.y1, target.x2 - ax, target.y2 - ay]
                let tgt = raw.map { v -> Float in min(max(v, 0), hi) }
                let gDfl = weight / 4 / tss * gains.dfl * scale
                for side in 0..<4 {
                    let row = (img * 4 + side) * a + j
                    let m = rowMax[row], s = rowSum[row], e = expect[row]
                    let t = tgt[side]
                    let tl = Int(t), tr = tl + 1
                    let wl = Float(tr) - t, wr = 1 - wl
                    let base = (img * 4 + side) * r * a + j
                    let logS = Foundation.log(s)
                    let lpl = logits[base + tl * a] - m - logS, lpr = logits[base + tr * a] - m - logS
                    dflSum += Double(-(lpl * wl + lpr * wr) * weight / 4)
                    for k in 0..<r {
                        let p = Foundation.exp(logits[base + k * a] - m) / s
                        var g = dSide[side] * p * (Float(k) - e)        // through the expectation
                        let onehot: Float = (k == tl ? wl : 0) + (k == tr ? wr : 0)
                        g += gDfl * (p - onehot)                         // cross-entropy
                        gb[base + k * a] += g
                    }
                }
            }
        }
        let box = Float(boxSum) / tss * gains.box
        let cls = Float(clsSum) / tss * gains.cls
        let dfl = Float(dflSum) / tss * gains.dfl
        let total = Tensor(scalar: (box + cls + dfl) * scale)
        let nb = out.boxes.node, ns = out.scores.node
        total.recording([out.boxes, out.scores]) { g in
            let up = g.ptr[0]
            if let nb { nb.accumulate { d in for i in 0..<gBoxes.count { d[i] += up * gb[i] } } }
            if let ns { ns.accumulate { d in for i in 0..<gScores.count { d[i] += up * gs[i] } } }
            withExtendedLifetime((gBoxes, gScores)) {}
        }
        withExtendedLifetime((expectBuf, maxBuf, sumBuf)) {}
        return LossOutput(total: total, box: box, cls: cls, dfl: dfl, foreground: fgCount, assignment: asg,
                          targetScoresSum: tss)
    }
}
