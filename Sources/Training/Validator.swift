import DataPipeline
import Detection
import Foundation
import NN
import TensorCore

/// Validation results: metrics, mean losses and per-scene-type splits.
public struct ValidationReport: Sendable {
    public var metrics: DetectionMetrics.Result
    /// Mean gained box, cls, dfl losses per batch (Ultralytics' val/*_loss).
    public var losses: (box: Double, cls: Double, dfl: Double)
    public var images: Int
    public var names: [String]
    /// Metrics of image subsets chosen by file-name tags (e.g. "night", "day", "distract").
    public var subsets: [String: DetectionMetrics.Result]
    public var seconds: Double
    /// Ultralytics' detection confusion matrix (conf 0.25, IoU 0.45).
    public var confusion: ConfusionMatrix
    /// COCO-style records ({image_id, category_id (class + 1), bbox [x, y, w, h] in original pixels,
    /// score}) when the validator was asked to collect them.
    public var cocoPredictions: [CocoPrediction] = []
    /// The first batches with their predictions (for val_batch*_labels/_pred images), when asked.
    public var plottedBatches: [(batch: PairBatch, detections: [[Detection]])] = []

    /// Ultralytics-style table: one row for all classes and one per class with ground truth.
    public func table() -> String {
        func row(_ name: String, _ imgs: Int, _ inst: Int, _ p: Double, _ r: Double, _ m50: Double, _ m: Double) -> String {
            let n = name.count >= 12 ? String(name.prefix(12)) : String(repeating: " ", count: 12 - name.count) + name
            return n + String(format: " %8d %9d %9.3f %9.3f %9.3f %9.3f", imgs, inst, p, r, m50, m)
        }
        var lines = ["       Class   Images Instances         P         R     mAP50  mAP50-95"]
        let m = metrics
        lines.append(row("all", images, m.truthCounts.reduce(0, +), m.meanPrecision, m.meanRecall, m.map50, m.map))
        if names.count > 1 {
            for (i, c) in m.classes.enumerated() {
                lines.append(row(c < names.count ? names[c] : "class\(c)", images, m.truthCounts[i], m.precision[i], m.recall[i],
                                 m.ap[i][0], m.ap[i].reduce(0, +) / Double(m.ap[i].count)))
            }
        }
        return lines.joined(separator: "\n")
    }
}

/// One detection as COCO's results format has it (Ultralytics' predictions.json): image_id is the
/// file stem (a number when the stem is one), category_id the class index + 1, bbox [x, y, w, h]
/// (top-left corner) in original-image pixels.
public struct CocoPrediction: Sendable {
    public var imageID: String
    public var categoryID: Int
    public var file: String
    public var bbox: [Double]
    public var score: Double

    public var jsonObject: [String: Any] {
        ["image_id": Int(imageID).map { $0 as Any } ?? imageID, "category_id": categoryID, "bbox": bbox, "score": score, "file_name": file]
    }
}

/// Runs a model over a validation loader: NMS (multi-label, conf 0.001, iou 0.7 by default),
/// boxes mapped back to each original image, matched against the labels there.
public struct Validator {
    public var nms: NMSOptions
    public var merge: DetectionMerge
    /// File-name tags that define metric subsets: an image belongs to tag t when its stem
    /// contains `_t` (the synthetic scenes write `_day`, `_night`, `_distract`).
    public var subsetTags: [String]
    /// Collect COCO-style prediction records (`--save-json`).
    public var collectPredictions = false
    /// Keep this many first batches with their predictions for plotting.
    public var keepBatches = 0
    /// A stream fed as all zeros (`rgb` or `ir`): the model with one camera dark.
    public var blank: String?

    public init(nms: NMSOptions = NMSOptions(confidence: 0.001, iou: 0.7, multiLabel: true), merge: DetectionMerge = .nms,
                subsetTags: [String] = ["day", "night", "distract"]) {
        self.nms = nms
        self.merge = merge
        self.subsetTags = subsetTags
    }

    /// Detections per image in original-image pixels, and the batch's ground truths there.
    static func detections(_ outs: [DetectOutput], batch: PairBatch, nms: NMSOptions, merge: DetectionMerge)
        -> (dets: [[Detection]], truths: [[GroundTruth]]) {
        let merged = merge.merge(outs.map { $0.decoded() }, options: nms)
        let h = Float(batch.rgb.shape[2]), w = Float(batch.rgb.shape[3])
        let truthsNet = BatchTargets(batchIndex: batch.batchIndex, classes: batch.classes, boxes: batch.boxes)
            .perImage(batch: batch.count, width: w, height: h)
        var dets: [[Detection]] = [], truths: [[GroundTruth]] = []
        for i in 0..<batch.count {
            let lb = batch.letterbox[i]
            func back(_ b: Box) -> Box {
                let v = Letterbox.scaleBoxes([b.x1, b.y1, b.x2, b.y2], lb)
                return Box(x1: v[0], y1: v[1], x2: v[2], y2: v[3])
            }
            dets.append(merged[i].map { var d = $0; d.box = back(d.box); return d })
            truths.append(truthsNet[i].map { GroundTruth(label: $0.label, box: back($0.box)) })
        }
        return (dets, truths)
    }

    /// Validates `model` (switched to eval mode for the pass) on every batch of `loader`.
    public func run(model: DetectionModel, loader: PairLoader, loss: DetectionLoss?, names: [String]) throws -> ValidationReport {
        let t0 = Date()
        let wasTraining = model.training
        model.training = false
        defer { model.training = wasTraining }
        var all = ValidationStats()
        var subsets: [String: ValidationStats] = [:]
        var confusion = ConfusionMatrix(nc: max(names.count, model.nc))
        var coco: [CocoPrediction] = []
        var kept: [(batch: PairBatch, detections: [[Detection]])] = []
        var lsum = (0.0, 0.0, 0.0), batches = 0
        let epoch = loader.epoch(0)
        defer { epoch.cancel() }
        while let batch = try epoch.next() {
            let outs = noGrad { model(PairInputs.inputs(batch, model: model, blank: blank)) }
            if let loss {
                let t = BatchTargets(batchIndex: batch.batchIndex, classes: batch.classes, boxes: batch.boxes)
                for o in outs {
                    let l = noGrad { loss(o, t) }
                    lsum.0 += Double(l.box); lsum.1 += Double(l.cls); lsum.2 += Double(l.dfl)
                }
                batches += 1
            }
            let (dets, truths) = Validator.detections(outs, batch: batch, nms: nms, merge: merge)
            if kept.count < keepBatches {
                // Predictions in the network's (letterboxed) frame, for drawing on the batch.
                let net = merge.merge(outs.map { $0.decoded() }, options: nms).map { $0.filter { $0.confidence >= 0.25 } }
                kept.append((batch, net))
            }
            for i in 0..<batch.count {
                all.add(dets[i], truths[i])
                confusion.add(dets[i], truths[i])
                if collectPredictions {
                    let stem = URL(fileURLWithPath: batch.files[i]).deletingPathExtension().lastPathComponent
                    for d in dets[i] {
                        let r = { (v: Float) in (Double(v) * 1000).rounded() / 1000 }
                        coco.append(CocoPrediction(imageID: stem, categoryID: d.classIndex + 1, file: batch.files[i],
                                                   bbox: [r(d.box.x1), r(d.box.y1), r(d.box.x2 - d.box.x1), r(d.box.y2 - d.box.y1)],
                                                   score: (Double(d.confidence) * 1e5).rounded() / 1e5))
                    }
                }
                let stem = URL(fileURLWithPath: batch.files[i]).deletingPathExtension().lastPathComponent
                for tag in subsetTags where stem.contains("_" + tag) { subsets[tag, default: ValidationStats()].add(dets[i], truths[i]) }
            }
        }
        let n = Double(max(batches, 1))
        return ValidationReport(metrics: all.result(), losses: (lsum.0 / n, lsum.1 / n, lsum.2 / n), images: all.images,
                                names: names, subsets: subsets.mapValues { $0.result() }, seconds: Date().timeIntervalSince(t0),
                                confusion: confusion, cocoPredictions: coco, plottedBatches: kept)
    }
}

/// Maps a batch's streams onto a model's inputs.
public enum PairInputs {
    /// `rgb` and `ir` by name; a single-stream model named otherwise gets the RGB image. The stream
    /// named by `blank` (`rgb` or `ir`) is all zeros.
    public static func inputs(_ batch: PairBatch, model: DetectionModel, blank: String? = nil) -> [String: Tensor] {
        var d: [String: Tensor] = [:]
        for s in model.streams {
            let isIR = s.name == "ir"
            let t = isIR ? batch.ir : batch.rgb
            d[s.name] = blank == (isIR ? "ir" : "rgb") ? Tensor(zeros: t.shape) : t
        }
        return d
    }
}
