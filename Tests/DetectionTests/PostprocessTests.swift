import Foundation
import Testing
@testable import Detection
import NN
import TensorCore

private func fixture(_ name: String) throws -> [String: Any] {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    let data = try Data(contentsOf: url.appendingPathComponent("Tests/Fixtures/" + name))
    return try JSONSerialization.jsonObject(with: data) as! [String: Any]
}

private func floats(_ v: Any) -> [Float] {
    if let a = v as? [Any] { return a.flatMap { floats($0) } }
    return [(v as! NSNumber).floatValue]
}

/// NMS against Ultralytics' non_max_suppression (torchvision kernel): Tests/Fixtures/nms.json.
@Suite struct NMSParity {
    @Test func everyFixtureCaseKeepsTheSameBoxes() throws {
        let cases = try fixture("nms.json")["cases"] as! [[String: Any]]
        #expect(cases.count >= 8)
        for c in cases {
            let name = c["name"] as! String
            let shape = (c["shape"] as! [NSNumber]).map(\.intValue)
            let pred = Tensor(floats(c["pred"]!), shape: shape)
            let a = c["args"] as! [String: Any]
            var o = NMSOptions(confidence: (a["conf_thres"] as! NSNumber).floatValue, iou: (a["iou_thres"] as! NSNumber).floatValue,
                               multiLabel: a["multi_label"] as! Bool, agnostic: a["agnostic"] as! Bool,
                               maxDetections: (a["max_det"] as! NSNumber).intValue, maxCandidates: (a["max_nms"] as! NSNumber).intValue)
            o.classOffset = (a["max_wh"] as! NSNumber).floatValue
            let got = NMS.run(pred, o)
            let want = c["output"] as! [[[NSNumber]]]
            let keep = c["keep_index"] as! [[NSNumber]]
            #expect(got.count == want.count, "\(name)")
            for (img, dets) in got.enumerated() {
                #expect(dets.map(\.anchor) == keep[img].map(\.intValue), "\(name) image \(img)")
                let rows = dets.map { [$0.box.x1, $0.box.y1, $0.box.x2, $0.box.y2, $0.confidence, Float($0.classIndex)] }
                #expect(rows == want[img].map { $0.map(\.floatValue) }, "\(name) image \(img)")
            }
        }
    }

    @Test func weightedBoxFusionAveragesByConfidence() {
        let a = Detection(box: Box(x1: 0, y1: 0, x2: 10, y2: 10), confidence: 0.9, classIndex: 0)
        let b = Detection(box: Box(x1: 1, y1: 1, x2: 11, y2: 11), confidence: 0.6, classIndex: 0)
        let c = Detection(box: Box(x1: 50, y1: 50, x2: 60, y2: 60), confidence: 0.8, classIndex: 1)
        let fused = WeightedBoxFusion.fuse([[a, c], [b]], iou: 0.55)
        #expect(fused.count == 2)
        #expect(abs(fused[0].box.x1 - 0.6 / 1.5) < 1e-5 && abs(fused[0].box.x2 - (9 + 6.6) / 1.5) < 1e-5)
        #expect(abs(fused[0].confidence - 0.75) < 1e-6)          // both branches saw it: mean
        #expect(abs(fused[1].confidence - 0.4) < 1e-6)           // one of two branches: halved
        // Different classes never fuse.
        let d = Detection(box: a.box, confidence: 0.7, classIndex: 1)
        #expect(WeightedBoxFusion.fuse([[a], [d]]).count == 2)
    }

    @Test func lateFusionMergeModes() {
        // Two branches predicting the same object; NMS keeps the better one, WBF fuses them.
        func pred(_ cx: Float, _ s: Float) -> Tensor { Tensor([cx, 20, 10, 10, s], shape: [1, 5, 1]) }
        let n = DetectionMerge.nms.merge([pred(20, 0.9), pred(21, 0.8)], options: NMSOptions())
        #expect(n[0].count == 1 && n[0][0].confidence == 0.9 && n[0][0].box.x1 == 15)
        let w = DetectionMerge.wbf.merge([pred(20, 0.9), pred(21, 0.8)], options: NMSOptions())
        #expect(w[0].count == 1 && abs(w[0][0].box.x1 - (15 * 0.9 + 16 * 0.8) / 1.7) < 1e-5)
    }
}

/// Metrics against Ultralytics' ap_per_class / match_predictions / ConfusionMatrix: Tests/Fixtures/metrics.json.
@Suite struct MetricsParity {
    func images(_ m: [String: Any]) -> [(gts: [GroundTruth], dets: [Detection], tp: [[Bool]], iou: [[Float]])] {
        (m["images"] as! [[String: Any]]).map { im in
            let gts = (im["gt"] as! [[NSNumber]]).map { r in
                GroundTruth(label: r[4].intValue, box: Box(x1: r[0].floatValue, y1: r[1].floatValue, x2: r[2].floatValue, y2: r[3].floatValue))
            }
            let dets = (im["pred"] as! [[NSNumber]]).map { r in
                Detection(box: Box(x1: r[0].floatValue, y1: r[1].floatValue, x2: r[2].floatValue, y2: r[3].floatValue),
                          confidence: r[4].floatValue, classIndex: r[5].intValue)
            }
            let tp = (im["tp"] as? [[NSNumber]] ?? []).map { $0.map { $0.intValue == 1 } }
            let iou = (im["iou"] as? [[NSNumber]] ?? []).map { $0.map(\.floatValue) }
            return (gts, dets, tp, iou)
        }
    }

    @Test func matchingAPAndBestF1MatchUltralytics() throws {
        let f = try fixture("metrics.json")
        let m = f["main"] as! [String: Any]
        var stats = ValidationStats()
        for im in images(m) {
            if !im.iou.isEmpty && !im.dets.isEmpty {
                let ours = im.gts.map { t in im.dets.map { BoxIoU.iou(t.box, $0.box) } }
                #expect(ours == im.iou)
            }
            let tp = DetectionMetrics.match(im.dets, im.gts)
            #expect(tp == im.tp)
            stats.add(im.dets, im.gts)
        }
        let r = stats.result()
        func d(_ k: String) -> [Double] { (m[k] as! [NSNumber]).map(\.doubleValue) }
        #expect(r.classes == (m["unique_classes"] as! [NSNumber]).map(\.intValue))
        #expect(r.bestIndex == (m["max_f1_index"] as! NSNumber).intValue)
        let ap = (m["ap"] as! [[NSNumber]]).map { $0.map(\.doubleValue) }
        for (x, y) in zip(r.ap.joined(), ap.joined()) { #expect(abs(x - y) < 1e-6) }
        for (x, y) in zip(r.precision, d("p")) { #expect(abs(x - y) < 1e-6) }
        for (x, y) in zip(r.recall, d("r")) { #expect(abs(x - y) < 1e-6) }
        for (x, y) in zip(r.f1, d("f1")) { #expect(abs(x - y) < 1e-6) }
        #expect(abs(r.meanPrecision - (m["mp"] as! NSNumber).doubleValue) < 1e-6)
        #expect(abs(r.meanRecall - (m["mr"] as! NSNumber).doubleValue) < 1e-6)
        #expect(abs(r.map50 - (m["map50"] as! NSNumber).doubleValue) < 1e-6)
        #expect(abs(r.map75 - (m["map75"] as! NSNumber).doubleValue) < 1e-6)
        #expect(abs(r.map - (m["map"] as! NSNumber).doubleValue) < 1e-6)
        #expect(abs(r.fitness - (m["fitness_0.1_map50_0.9_map"] as! NSNumber).doubleValue) < 1e-6)
        for (x, y) in zip(r.maps(nc: 3), d("maps_per_class")) { #expect(abs(x - y) < 1e-6) }
    }

    @Test func confusionMatrixMatchesUltralytics() throws {
        let m = try fixture("metrics.json")["main"] as! [String: Any]
        let want = m["confusion_matrix"] as! [String: [[NSNumber]]]
        for (key, conf) in [("conf0.25_iou0.45", Float(0.25)), ("conf0.001_iou0.45", Float(0.001))] {
            var cm = ConfusionMatrix(nc: 3, confidence: conf, iou: 0.45)
            for im in images(m) { cm.add(im.dets, im.gts) }
            #expect(cm.matrix == want[key]!.map { $0.map(\.intValue) }, "\(key)")
        }
    }

    @Test func edgeCases() throws {
        let f = try fixture("metrics.json")
        for key in ["edge_no_predictions", "edge_no_ground_truth"] {
            let e = f[key] as! [String: Any]
            var stats = ValidationStats()
            let ims = (e["images"] as? [[String: Any]]).map { images(["images": $0]) } ?? images(f["main"] as! [String: Any]).map {
                key == "edge_no_predictions" ? ($0.gts, [], [], []) : ([], $0.dets, [], [])
            }
            for im in ims { stats.add(im.dets, im.gts) }
            let r = stats.result()
            #expect(r.classes == (e["unique_classes"] as! [NSNumber]).map(\.intValue), "\(key)")
            #expect(abs(r.map50 - (e["map50"] as! NSNumber).doubleValue) < 1e-9, "\(key)")
            #expect(abs(r.map - (e["map"] as! NSNumber).doubleValue) < 1e-9, "\(key)")
            #expect(abs(r.meanPrecision - (e["mp"] as! NSNumber).doubleValue) < 1e-9, "\(key)")
            #expect(abs(r.meanRecall - (e["mr"] as! NSNumber).doubleValue) < 1e-9, "\(key)")
        }
        // Empty images only: all zeros, no crash.
        var empty = ValidationStats()
        empty.add([], [])
        #expect(empty.result().map50 == 0 && empty.result().classes.isEmpty)
    }
}
