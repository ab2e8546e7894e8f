import Foundation

/// Detection metrics as Ultralytics' validator computes them (8.4): greedy matching per IoU
/// threshold, per-class AP by 101-point interpolation of the precision envelope (trapezoid),
/// and precision / recall / F1 at the confidence that maximises the smoothed mean F1.
public enum DetectionMetrics {
    /// IoU thresholds 0.50:0.05:0.95 (the Float32 values torch.linspace gives).
    public static let iouThresholds: [Float] = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]

    /// Correctness of each prediction at each IoU threshold.
    ///
    /// Predictions are in descending confidence. For each prediction and threshold, the
    /// unclaimed ground truth of the same class with the highest IoU is claimed when its IoU >= the
    /// threshold. iou: [truths][predictions].
    public static func match(predClasses: [Int], trueClasses: [Int], iou: [[Float]]) -> [[Bool]] {
        let t = iouThresholds.count
        var correct = [[Bool]](repeating: [Bool](repeating: false, count: t), count: predClasses.count)
        let m = trueClasses.count
        guard m > 0 else { return correct }
        var claimed = [[Bool]](repeating: [Bool](repeating: false, count: t), count: m)
        for j in 0..<predClasses.count {
            var col = [Float](repeating: 0, count: m)
            var any = false
            for i in 0..<m {
                col[i] = trueClasses[i] == predClasses[j] ? iou[i][j] : 0
                if col[i] >= iouThresholds[0] { any = true }
            }
            guard any else { continue }
            for k in 0..<t {
                var best = 0
                var bestV: Float = claimed[0][k] ? 0 : col[0]
                for i in 1..<m {
                    let v = claimed[i][k] ? 0 : col[i]
                    if v > bestV { bestV = v; best = i }
                }
                if bestV >= iouThresholds[k] {
                    correct[j][k] = true
                    claimed[best][k] = true
                }
            }
        }
        return correct
    }

    /// Matching of one image's detections (sorted by descending confidence) against its ground truths.
    public static func match(_ detections: [Detection], _ truths: [GroundTruth]) -> [[Bool]] {
        let iou = truths.map { t in detections.map { BoxIoU.iou(t.box, $0.box) } }
        return match(predClasses: detections.map(\.classIndex), trueClasses: truths.map(\.label), iou: iou)
    }

    /// Per-class results at the best-F1 confidence.
    public struct Result: Sendable {
        /// Classes that have ground truth, ascending (the rows of the arrays below).
        public var classes: [Int] = []
        public var truthCounts: [Int] = []
        public var precision: [Double] = []
        public var recall: [Double] = []
        public var f1: [Double] = []
        /// [class][10]: AP at each IoU threshold.
        public var ap: [[Double]] = []
        /// Index on the 1000-point confidence grid of the best smoothed mean F1.
        public var bestIndex = 0
        /// Per class (order of `classes`) over the 1000-point confidence grid 0...1: precision,
        /// recall and F1 (Ultralytics' P/R/F1 curves); and precision over the 1000-point recall grid
        /// 0...1 at IoU 0.5 (its PR curve, the envelope its AP integrates).
        public var precisionCurve: [[Double]] = []
        public var recallCurve: [[Double]] = []
        public var f1Curve: [[Double]] = []
        public var prCurve: [[Double]] = []
        /// Confidence at that index.
        public var bestConfidence: Double { Double(bestIndex) / 999 }

        public var meanPrecision: Double { mean(precision) }
        public var meanRecall: Double { mean(recall) }
        public var meanF1: Double { mean(f1) }
        public var map50: Double { mean(ap.map { $0[0] }) }
        public var map75: Double { mean(ap.map { $0[5] }) }
        public var map: Double { mean(ap.map { mean($0) }) }
        /// 0.1 x mAP50 + 0.9 x mAP50-95 (the definition DualFuse uses to pick best.safetensors;
        /// Ultralytics 8.4 itself uses mAP50-95 alone).
        public var fitness: Double { 0.1 * map50 + 0.9 * map }

        /// mAP50-95 per class index 0..<nc; classes without ground truth get the overall mAP (as Ultralytics).
        public func maps(nc: Int) -> [Double] {
            var m = [Double](repeating: map, count: nc)
            for (i, c) in classes.enumerated() where c < nc { m[c] = mean(ap[i]) }
            return m
        }

        func mean(_ v: [Double]) -> Double { v.isEmpty ? 0 : v.reduce(0, +) / Double(v.count) }
    }

    /// Ultralytics' `ap_per_class`.
    /// - Parameters:
    ///   - tp: [predictions][10] correctness; conf and predClasses per prediction; targetClasses per ground truth.
    public static func apPerClass(tp: [[Bool]], conf: [Float], predClasses: [Int], targetClasses: [Int]) -> Result {
        let order = Array(conf.indices).sorted { conf[$0] != conf[$1] ? conf[$0] > conf[$1] : $0 < $1 }
        let tps = order.map { tp[$0] }, confs = order.map { Double(conf[$0]) }, pcls = order.map { predClasses[$0] }
        var counts: [Int: Int] = [:]
        for c in targetClasses { counts[c, default: 0] += 1 }
        let classes = counts.keys.sorted()
        let grid = (0..<1000).map { Double($0) / 999 }
        let eps = 1e-16
        var res = Result()
        res.classes = classes
        res.truthCounts = classes.map { counts[$0]! }
        var pCurve = [[Double]](repeating: [Double](repeating: 0, count: 1000), count: classes.count)
        var rCurve = pCurve
        var prCurve = pCurve
        res.ap = [[Double]](repeating: [Double](repeating: 0, count: iouThresholds.count), count: classes.count)
        for (ci, c) in classes.enumerated() {
            let idx = pcls.indices.filter { pcls[$0] == c }
            let nl = Double(counts[c]!)
            if idx.isEmpty { continue }
            let negConf = idx.map { -confs[$0] }
            for k in 0..<iouThresholds.count {
                var tpc = 0.0, fpc = 0.0
                var recall: [Double] = [], precision: [Double] = []
                for i in idx {
                    if tps[i][k] { tpc += 1 } else { fpc += 1 }
                    recall.append(tpc / (nl + eps))
                    precision.append(tpc / (tpc + fpc))
                }
                if k == 0 {
                    rCurve[ci] = grid.map { interp(-$0, negConf, recall, left: 0) }
                    pCurve[ci] = grid.map { interp(-$0, negConf, precision, left: 1) }
                    prCurve[ci] = precisionEnvelope(recall: recall, precision: precision, at: grid)
                }
                res.ap[ci][k] = computeAP(recall: recall, precision: precision)
            }
        }
        var f1Curve = pCurve
        for ci in classes.indices {
            for g in 0..<1000 {
                let p = pCurve[ci][g], r = rCurve[ci][g]
                f1Curve[ci][g] = 2 * p * r / (p + r + eps)
            }
        }
        if !classes.isEmpty {
            let meanF1 = (0..<1000).map { g in f1Curve.reduce(0) { $0 + $1[g] } / Double(classes.count) }
            let s = smooth(meanF1, fraction: 0.1)
            var best = 0
            for g in 1..<s.count where s[g] > s[best] { best = g }
            res.bestIndex = best
        }
        (res.precisionCurve, res.recallCurve, res.f1Curve, res.prCurve) = (pCurve, rCurve, f1Curve, prCurve)
        res.precision = pCurve.map { $0[res.bestIndex] }
        res.recall = rCurve.map { $0[res.bestIndex] }
        res.f1 = f1Curve.map { $0[res.bestIndex] }
        return res
    }

    /// AP from one precision-recall curve: sentinels, precision envelope (running max from the
    /// right), then the trapezoid rule over 101 recall points.
    public static func computeAP(recall: [Double], precision: [Double]) -> Double {
        let mrec = [0.0] + recall + [recall.last ?? 1.0, 1.0]
        var mpre = [1.0] + precision + [0.0, 0.0]
        for i in stride(from: mpre.count - 2, through: 0, by: -1) { mpre[i] = max(mpre[i], mpre[i + 1]) }
        let x = (0...100).map { Double($0) / 100 }
        let y = x.map { interp($0, mrec, mpre) }
        var ap = 0.0
        for i in 1..<x.count { ap += (x[i] - x[i - 1]) * (y[i] + y[i - 1]) / 2 }
        return ap
    }

    /// The precision envelope of one PR curve (as `computeAP` builds it) sampled at `points`.
    public static func precisionEnvelope(recall: [Double], precision: [Double], at points: [Double]) -> [Double] {
        let mrec = [0.0] + recall + [recall.last ?? 1.0, 1.0]
        var mpre = [1.0] + precision + [0.0, 0.0]
        for i in stride(from: mpre.count - 2, through: 0, by: -1) { mpre[i] = max(mpre[i], mpre[i + 1]) }
        return points.map { interp($0, mrec, mpre) }
    }

    /// numpy's `interp` (xp non-decreasing; on repeated xp the last equal point wins).
    public static func interp(_ x: Double, _ xp: [Double], _ fp: [Double], left: Double? = nil, right: Double? = nil) -> Double {
        let n = xp.count
        if n == 0 { return .nan }
        if x < xp[0] { return left ?? fp[0] }
        if x > xp[n - 1] { return right ?? fp[n - 1] }
        if x == xp[n - 1] { return fp[n - 1] }
        // Largest j with xp[j] <= x.
        var lo = 0, hi = n - 1
        while hi - lo > 1 {
            let mid = (lo + hi) / 2
            if xp[mid] <= x { lo = mid } else { hi = mid }
        }
        let j = lo
        if xp[j] == x { return fp[j] }
        let slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j])
        var v = slope * (x - xp[j]) + fp[j]
        if v.isNaN {
            v = slope * (x - xp[j + 1]) + fp[j + 1]
            if v.isNaN && fp[j] == fp[j + 1] { v = fp[j] }
        }
        return v
    }

    /// Box filter of width round(2 n f)//2 + 1 with edge padding (Ultralytics' `smooth`).
    public static func smooth(_ y: [Double], fraction f: Double) -> [Double] {
        let nf = Int((Double(y.count) * f * 2).rounded(.toNearestOrEven)) / 2 + 1
        let half = nf / 2
        let padded = [Double](repeating: y[0], count: half) + y + [Double](repeating: y[y.count - 1], count: half)
        return (0..<y.count).map { i in padded[i..<(i + nf)].reduce(0, +) / Double(nf) }
    }
}

/// Accumulates validation statistics over images.
public struct ValidationStats: Sendable {
    public var tp: [[Bool]] = []
    public var conf: [Float] = []
    public var predClasses: [Int] = []
    public var targetClasses: [Int] = []
    public var images = 0

    public init() {}

    /// Adds one image (detections sorted by descending confidence, as NMS returns them).
    public mutating func add(_ detections: [Detection], _ truths: [GroundTruth]) {
        images += 1
        targetClasses += truths.map(\.label)
        guard !detections.isEmpty else { return }
        tp += DetectionMetrics.match(detections, truths)
        conf += detections.map(\.confidence)
        predClasses += detections.map(\.classIndex)
    }

    public func result() -> DetectionMetrics.Result {
        DetectionMetrics.apPerClass(tp: tp, conf: conf, predClasses: predClasses, targetClasses: targetClasses)
    }
}

/// Ultralytics' detection confusion matrix: rows predicted class (last row: background = missed),
/// columns true class (last column: background = false positive).
public struct ConfusionMatrix: Sendable, Equatable {
    public let nc: Int
    public var matrix: [[Int]]
    public var confidence: Float
    public var iou: Float

    public init(nc: Int, confidence: Float = 0.25, iou: Float = 0.45) {
        self.nc = nc
        self.confidence = confidence
        self.iou = iou
        matrix = [[Int]](repeating: [Int](repeating: 0, count: nc + 1), count: nc + 1)
    }

    /// Adds one image. Greedy, one-to-one, class-agnostic matching in descending confidence:
    /// each detection above `confidence` claims its best unclaimed truth with IoU > `iou`.
    public mutating func add(_ detections: [Detection], _ truths: [GroundTruth]) {
        if truths.isEmpty {
            for d in detections where d.confidence > confidence { matrix[d.classIndex][nc] += 1 }
            return
        }
        if detections.isEmpty {
            for t in truths { matrix[nc][t.label] += 1 }
            return
        }
        let dets = detections.filter { $0.confidence > confidence }
        var iouM = truths.map { t in dets.map { BoxIoU.iou(t.box, $0.box) } }
        var match = [Int](repeating: -1, count: truths.count)
        let cands = dets.indices.filter { j in truths.indices.contains { iouM[$0][j] > iou } }
        let order = cands.sorted { dets[$0].confidence != dets[$1].confidence ? dets[$0].confidence > dets[$1].confidence : $0 < $1 }
        for j in order {
            var g = 0
            for i in 1..<truths.count where iouM[i][j] > iouM[g][j] { g = i }
            if iouM[g][j] > iou {
                match[g] = j
                for k in dets.indices { iouM[g][k] = 0 }
            }
        }
        let matched = Set(match.filter { $0 >= 0 })
        for (i, t) in truths.enumerated() {
            if match[i] >= 0 { matrix[dets[match[i]].classIndex][t.label] += 1 } else { matrix[nc][t.label] += 1 }
        }
        for (j, d) in dets.enumerated() where !matched.contains(j) { matrix[d.classIndex][nc] += 1 }
    }
}
