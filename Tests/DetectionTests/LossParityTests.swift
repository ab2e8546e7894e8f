import Foundation
import Testing
import _TestSupport
@testable import Detection
import NN
import TensorCore

private let root: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()

/// max |a - b| / max |b| (error relative to the tensor's scale).
func scaledError(_ a: [Float], _ b: [Float]) -> Double {
    precondition(a.count == b.count, "\(a.count) vs \(b.count)")
    let scale = Double(b.map { abs($0) }.max() ?? 0)
    var e = 0.0
    for i in 0..<a.count { e = max(e, Double(abs(a[i] - b[i]))) }
    return scale == 0 ? e : e / scale
}

/// Parity with Ultralytics 8.4's v8DetectionLoss and TaskAlignedAssigner on fixed head outputs
/// and targets (Tests/Fixtures/loss_v8.safetensors, made by tools/golden/make_loss_fixtures.py).
@Suite(.serialized) struct LossParity {
    let t: [String: StoredTensor]

    init() throws { t = try Safetensors.read(root + "/Tests/Fixtures/loss_v8.safetensors").tensors }

    func v(_ k: String) -> [Float] { t[k]!.values }

    @Test(arguments: ["", "aligned."])
    func assignerMatches(_ p: String) {
        let scores = v(p + "assign.pd_scores"), pd = v(p + "assign.pd_bboxes"), anc = v(p + "assign.anc_points")
        let gl = v(p + "assign.gt_labels"), gb = v(p + "assign.gt_bboxes"), mg = v(p + "assign.mask_gt")
        let b = 3, a = 84, n = 3, nc = 3
        var truths = [[GroundTruth]](repeating: [], count: b)
        for i in 0..<b { for j in 0..<n where mg[i * n + j] > 0 {
            truths[i].append(GroundTruth(label: Int(gl[i * n + j]), box: Box(x1: gb[(i * n + j) * 4], y1: gb[(i * n + j) * 4 + 1],
                                                                             x2: gb[(i * n + j) * 4 + 2], y2: gb[(i * n + j) * 4 + 3])))
        } }
        let boxes = (0..<(b * a)).map { Box(x1: pd[4 * $0], y1: pd[4 * $0 + 1], x2: pd[4 * $0 + 2], y2: pd[4 * $0 + 3]) }
        let anchors = (0..<a).map { (x: anc[2 * $0], y: anc[2 * $0 + 1]) }
        let r = scores.withUnsafeBufferPointer {
            TaskAlignedAssigner().assign(scores: $0.baseAddress!, boxes: boxes, anchors: anchors, truths: truths, nc: nc)
        }
        #expect(r.foreground.map { $0 ? Float(1) : 0 } == v(p + "assign.fg_mask"))
        #expect(r.labels.map(Float.init) == v(p + "assign.target_labels"))
        #expect(r.gtIndex.map(Float.init) == v(p + "assign.target_gt_idx"))
        #expect(r.boxes.flatMap { [$0.x1, $0.y1, $0.x2, $0.y2] } == v(p + "assign.target_bboxes"))
        print("assigner parity \(p.isEmpty ? "random" : "aligned"): target_scores rel. error \(maxRelativeError(r.scores, v(p + "assign.target_scores"), floor: 1e-6))")
        #expect(scaledError(r.scores, v(p + "assign.target_scores")) < 1e-5)
        #expect(maxRelativeError(r.scores, v(p + "assign.target_scores"), floor: 1e-6) < 1e-5)
        // Top-k candidates before one-GT-per-anchor resolution (the fixture pins multi-claimed anchors).
        #expect(r.candidateMask.map { $0 ? Float(1) : 0 } == v(p + "assign.pre.mask_pos"))
    }

    @Test(arguments: ["", "aligned."])
    func lossAndGradientsMatch(_ p: String) throws {
        let boxes = t[p + "boxes"]!.tensor, scores = t[p + "scores"]!.tensor
        boxes.requiresGrad = true
        scores.requiresGrad = true
        let out = DetectOutput(boxes: boxes, scores: scores, levels: [(8, 8), (4, 4), (2, 2)], strides: [8, 16, 32])
        let bi = v("batch_idx").map { Int($0) }, cls = v("cls").map { Int($0) }
        let loss = DetectionLoss(nc: 3)(out, BatchTargets(batchIndex: bi, classes: cls, boxes: v("bboxes")))
        let items = v(p + "loss_items"), scaled = v(p + "loss")
        #expect(maxRelativeError([loss.box, loss.cls, loss.dfl], items, floor: 1e-6) < 1e-5, "\([loss.box, loss.cls, loss.dfl]) vs \(items)")
        #expect(abs(loss.total.item - scaled.reduce(0, +)) / scaled.reduce(0, +) < 1e-5)
        #expect(abs(loss.targetScoresSum - t[p + "target_scores_sum"]!.values[0]) < 1e-5 * max(1, loss.targetScoresSum))
        loss.total.backward()
        print("loss parity \(p.isEmpty ? "random" : "aligned"): components rel. error \(maxRelativeError([loss.box, loss.cls, loss.dfl], items, floor: 1e-6)), " +
              "grad boxes \(scaledError(boxes.grad!.array, v(p + "grad.boxes"))), grad scores \(scaledError(scores.grad!.array, v(p + "grad.scores")))")
        #expect(scaledError(boxes.grad!.array, v(p + "grad.boxes")) < 1e-4)
        #expect(scaledError(scores.grad!.array, v(p + "grad.scores")) < 1e-4)
        #expect(maxMixedError(boxes.grad!.array, v(p + "grad.boxes")) < 1e-4)
    }
}

@Suite struct BoxMeasures {
    @Test func closedFormCIoUGradientMatchesAutodiff() {
        var rng = RandomState(seed: 3)
        var pred: [Float] = [], tgt: [Float] = []
        for _ in 0..<200 {
            let cx = rng.uniform(0, 20), cy = rng.uniform(0, 20), w = rng.uniform(0.5, 8), h = rng.uniform(0.5, 8)
            pred += [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
            let dx = rng.uniform(-4, 4), dy = rng.uniform(-4, 4), w2 = rng.uniform(0.5, 8), h2 = rng.uniform(0.5, 8)
            tgt += [cx + dx - w2 / 2, cy + dy - h2 / 2, cx + dx + w2 / 2, cy + dy + h2 / 2]
        }
        let a = Tensor(pred, shape: [200, 4]), b = Tensor(tgt, shape: [200, 4])
        a.requiresGrad = true
        let c = Tensor.ciou(a, b)
        c.sum().backward()
        let auto = a.grad!.array
        for i in 0..<200 {
            let pa = Box(x1: pred[4 * i], y1: pred[4 * i + 1], x2: pred[4 * i + 2], y2: pred[4 * i + 3])
            let pb = Box(x1: tgt[4 * i], y1: tgt[4 * i + 1], x2: tgt[4 * i + 2], y2: tgt[4 * i + 3])
            let (val, g) = BoxIoU.ciouWithGradient(pa, pb)
            #expect(abs(val - c.data[i]) < 1e-6)
            #expect(abs(val - BoxIoU.measure(pa, pb, .ciou)) < 1e-6)
            let ours = [g.0, g.1, g.2, g.3]
            #expect(maxMixedError(ours, Array(auto[(4 * i)..<(4 * i + 4)])) < 1e-5, "box \(i)")
        }
    }

    @Test func ciouTensorGradientCheck() {
        let a = Tensor([0, 0, 4, 3, 1, 1, 3, 5, 2, 2, 6, 7], shape: [3, 4])
        let b = Tensor([1, 0.5, 5, 4, 0, 0, 2, 2, 3, 1, 5, 6], shape: [3, 4])
        // The full derivative (alpha not detached) against central differences, both boxes.
        let r = gradientCheck([a, b]) { Tensor.ciou($0[0], $0[1], detachAlpha: false) }
        #expect(r[0].scaledError < 1e-2, "\(r[0])")
        #expect(r[1].scaledError < 1e-2, "\(r[1])")
    }

    @Test func iouFamilyKnownValues() {
        let a = Box(x1: 0, y1: 0, x2: 2, y2: 2), b = Box(x1: 1, y1: 1, x2: 3, y2: 3)
        #expect(abs(BoxIoU.iou(a, b) - 1.0 / 7) < 1e-6)
        #expect(abs(BoxIoU.measure(a, b, .giou) - (1.0 / 7 - 2.0 / 9)) < 1e-5)   // enclosing 3x3, union 7
        #expect(abs(BoxIoU.measure(a, b, .diou) - (1.0 / 7 - 2.0 / 18)) < 1e-5)  // centre distance^2 2, diagonal^2 18
        #expect(abs(BoxIoU.measure(a, b, .ciou) - BoxIoU.measure(a, b, .diou)) < 1e-6)   // same aspect: v = 0
        let c = Box(cx: 1, cy: 1, w: 2, h: 2)
        #expect(c == a && c.xywh == (1, 1, 2, 2))
    }
}
