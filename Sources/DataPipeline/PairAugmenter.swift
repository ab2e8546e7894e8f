import Foundation
import TensorCore

/// An RGB-IR pair resized so that its long side is the training size (Ultralytics' load_image),
/// with its labels; the input of mosaic, affine and letterbox.
public struct LoadedPair: Sendable {
    public var rgb: RasterImage
    public var ir: RasterImage
    /// Size of the files before resizing.
    public var originalWidth: Int
    public var originalHeight: Int
    public var classes: [Int]
    /// Normalised `cx, cy, w, h` per box.
    public var boxes: [Float]

    public init(rgb: RasterImage, ir: RasterImage, originalWidth: Int, originalHeight: Int, classes: [Int], boxes: [Float]) {
        precondition(rgb.width == ir.width && rgb.height == ir.height,
                     "RGB \(rgb.width)x\(rgb.height) and IR \(ir.width)x\(ir.height) must have one size")
        self.rgb = rgb
        self.ir = ir
        self.originalWidth = originalWidth
        self.originalHeight = originalHeight
        self.classes = classes
        self.boxes = boxes
    }
}

/// One augmented (or letterboxed) pair: images of the training size, pixel `x1, y1, x2, y2` boxes.
public struct PairSample: Sendable {
    public var rgb: RasterImage
    public var ir: RasterImage
    public var classes: [Int]
    /// Pixel `x1, y1, x2, y2` per box.
    public var boxes: [Float]
    /// How to map boxes back to the original image (identity for augmented samples).
    public var letterbox: LetterboxInfo
}

/// Paired augmentation: one random geometry for both streams, photometric jitter per stream.
///
/// Per training sample the random draws come from the sample's own `RandomState`, in this order:
/// mosaic coin; if mosaic, 3 partner indices and the mosaic centre; perspective (2), rotation,
/// scale, shear (2), translation (2); HSV gains (3); IR contrast, IR brightness; flip-ud coin,
/// flip-lr coin. The pipeline is Ultralytics' v8 one: mosaic (2s x 2s canvas, centre in
/// [s/2, 3s/2]) -> random affine to s x s (boxes filtered like `box_candidates`) -> HSV on RGB,
/// intensity jitter on IR -> flips.
public struct PairAugmenter: Sendable {
    public var config: AugmentConfig
    /// Output side s (square).
    public var size: Int

    public init(config: AugmentConfig, size: Int) {
        self.config = config
        self.size = size
    }

    /// The training sample for `primary`; `partner` loads further pairs for the mosaic.
    public func sample(primary: LoadedPair, mosaic mosaicAllowed: Bool, datasetCount: Int,
                       rng: inout RandomState, partner: (Int) throws -> LoadedPair) rethrows -> PairSample {
        let useMosaic = rng.uniform() < config.mosaic && mosaicAllowed
        var s: PairSample
        if useMosaic {
            var pairs = [primary]
            for _ in 0..<3 { pairs.append(try partner(rng.int(below: datasetCount))) }
            let xc = Int(rng.uniform(Float(size) / 2, Float(size) * 3 / 2))
            let yc = Int(rng.uniform(Float(size) / 2, Float(size) * 3 / 2))
            s = mosaic(pairs, center: (xc, yc))
        } else {
            s = PairSample(rgb: primary.rgb, ir: primary.ir, classes: primary.classes,
                           boxes: Self.pixelBoxes(primary.boxes, width: primary.rgb.width, height: primary.rgb.height),
                           letterbox: .identity(width: size, height: size))
        }
        let m = affineMatrix(inputWidth: s.rgb.width, inputHeight: s.rgb.height, rng: &rng)
        s = affine(s, m.matrix, scale: m.scale)
        let gh = rng.uniform(-1, 1) * config.hsvH, gs = rng.uniform(-1, 1) * config.hsvS, gv = rng.uniform(-1, 1) * config.hsvV
        let contrast = rng.uniform(-1, 1) * config.irGain, brightness = rng.uniform(-1, 1) * config.irBias
        s.rgb.jitterHSV(gains: (gh, gs, gv))
        s.ir.jitterIntensity(contrast: contrast, brightness: brightness)
        if rng.uniform() < config.flipud { Self.flipVertically(&s) }
        if rng.uniform() < config.fliplr { Self.flipHorizontally(&s) }
        // Drawn only when on, so runs without dropout keep their random streams.
        if config.modalityDropout > 0 && rng.uniform() < config.modalityDropout {
            if rng.uniform() < 0.5 { s.rgb.pixels.withUnsafeMutableBufferPointer { $0.update(repeating: 0) } }
            else { s.ir.pixels.withUnsafeMutableBufferPointer { $0.update(repeating: 0) } }
        }
        s.letterbox = .identity(width: size, height: size)
        return s
    }

    /// The validation sample: letterbox to s x s, no augmentation. `pair` is resized (long side s).
    public func letterboxed(_ pair: LoadedPair) -> PairSample {
        let inner = Letterbox.plan(width: pair.rgb.width, height: pair.rgb.height, targetWidth: size, targetHeight: size,
                                   scaleUp: false)
        let rgb = Letterbox.apply(pair.rgb, inner), ir = Letterbox.apply(pair.ir, inner)
        // Compose original -> resized (load) -> letterboxed gains.
        let info = LetterboxInfo(gainX: inner.gainX * Float(pair.rgb.width) / Float(pair.originalWidth),
                                 gainY: inner.gainY * Float(pair.rgb.height) / Float(pair.originalHeight),
                                 padX: inner.padX, padY: inner.padY, originalWidth: pair.originalWidth,
                                 originalHeight: pair.originalHeight, width: size, height: size)
        var boxes = Self.pixelBoxes(pair.boxes, width: pair.rgb.width, height: pair.rgb.height)
        for i in stride(from: 0, to: boxes.count, by: 4) {
            boxes[i] = boxes[i] * inner.gainX + inner.padX
            boxes[i + 1] = boxes[i + 1] * inner.gainY + inner.padY
            boxes[i + 2] = boxes[i + 2] * inner.gainX + inner.padX
            boxes[i + 3] = boxes[i + 3] * inner.gainY + inner.padY
        }
        return PairSample(rgb: rgb, ir: ir, classes: pair.classes, boxes: boxes, letterbox: info)
    }

    // MARK: Mosaic

    /// Ultralytics' 4-mosaic on a 2s x 2s grey canvas around `center` (top-left, top-right,
    /// bottom-left, bottom-right); boxes are shifted, clipped to the canvas, empty ones dropped.
    public func mosaic(_ pairs: [LoadedPair], center: (x: Int, y: Int)) -> PairSample {
        precondition(pairs.count == 4, "mosaic needs 4 pairs, got \(pairs.count)")
        let s2 = 2 * size
        var rgb = RasterImage(width: s2, height: s2, channels: 3, fill: Letterbox.padValue)
        var ir = RasterImage(width: s2, height: s2, channels: pairs[0].ir.channels, fill: Letterbox.padValue)
        var classes: [Int] = [], boxes: [Float] = []
        let (xc, yc) = center
        for (i, p) in pairs.enumerated() {
            let w = p.rgb.width, h = p.rgb.height
            var x1a = 0, y1a = 0, x2a = 0, y2a = 0, x1b = 0, y1b = 0
            switch i {
            case 0:
                x1a = max(xc - w, 0); y1a = max(yc - h, 0); x2a = xc; y2a = yc
                x1b = w - (x2a - x1a); y1b = h - (y2a - y1a)
            case 1:
                x1a = xc; y1a = max(yc - h, 0); x2a = min(xc + w, s2); y2a = yc
                x1b = 0; y1b = h - (y2a - y1a)
            case 2:
                x1a = max(xc - w, 0); y1a = yc; x2a = xc; y2a = min(s2, yc + h)
                x1b = w - (x2a - x1a); y1b = 0
            default:
                x1a = xc; y1a = yc; x2a = min(xc + w, s2); y2a = min(s2, yc + h)
                x1b = 0; y1b = 0
            }
            let bw = min(x2a - x1a, w - x1b), bh = min(y2a - y1a, h - y1b)
            rgb.paste(p.rgb, sourceX: x1b, sourceY: y1b, width: bw, height: bh, x: x1a, y: y1a)
            ir.paste(p.ir, sourceX: x1b, sourceY: y1b, width: bw, height: bh, x: x1a, y: y1a)
            let padw = Float(x1a - x1b), padh = Float(y1a - y1b)
            let px = Self.pixelBoxes(p.boxes, width: w, height: h)
            for k in 0..<p.classes.count {
                let bx1 = min(max(px[4 * k] + padw, 0), Float(s2)), by1 = min(max(px[4 * k + 1] + padh, 0), Float(s2))
                let bx2 = min(max(px[4 * k + 2] + padw, 0), Float(s2)), by2 = min(max(px[4 * k + 3] + padh, 0), Float(s2))
                if bx2 > bx1 && by2 > by1 {
                    classes.append(p.classes[k])
                    boxes += [bx1, by1, bx2, by2]
                }
            }
        }
        return PairSample(rgb: rgb, ir: ir, classes: classes, boxes: boxes, letterbox: .identity(width: s2, height: s2))
    }

    // MARK: Affine

    /// Draws Ultralytics' random perspective matrix `M = T · S · R · P · C` for an input of the given
    /// size and an s x s output; also returns the drawn scale (for the box area filter).
    public func affineMatrix(inputWidth: Int, inputHeight: Int, rng: inout RandomState) -> (matrix: Matrix3, scale: Double) {
        let c = config
        let C = Matrix3.translation(-Double(inputWidth) / 2, -Double(inputHeight) / 2)
        let px = Double(rng.uniform(-c.perspective, c.perspective)), py = Double(rng.uniform(-c.perspective, c.perspective))
        let P = Matrix3([1, 0, 0, 0, 1, 0, px, py, 1])
        let angle = Double(rng.uniform(-c.degrees, c.degrees)) * Double.pi / 180
        let scale = Double(rng.uniform(1 - c.scale, 1 + c.scale))
        let alpha = scale * cos(angle), beta = scale * sin(angle)
        let R = Matrix3([alpha, beta, 0, -beta, alpha, 0, 0, 0, 1])
        let shx = tan(Double(rng.uniform(-c.shear, c.shear)) * Double.pi / 180)
        let shy = tan(Double(rng.uniform(-c.shear, c.shear)) * Double.pi / 180)
        let S = Matrix3([1, shx, 0, shy, 1, 0, 0, 0, 1])
        let tx = Double(rng.uniform(0.5 - c.translate, 0.5 + c.translate)) * Double(size)
        let ty = Double(rng.uniform(0.5 - c.translate, 0.5 + c.translate)) * Double(size)
        let T = Matrix3.translation(tx, ty)
        return (T * S * R * P * C, scale)
    }

    /// Warps both streams by `matrix` into s x s (grey 114 outside), maps the boxes through their
    /// four corners, clips them, and keeps the candidates (`boxCandidates` against the boxes scaled by `scale`).
    public func affine(_ sample: PairSample, _ matrix: Matrix3, scale: Double) -> PairSample {
        var out = sample
        let identity = matrix == .identity && sample.rgb.width == size && sample.rgb.height == size
        if !identity {
            let warped = RasterImage.warp([sample.rgb, sample.ir], by: matrix, width: size, height: size,
                                          border: Letterbox.padValue)
            out.rgb = warped[0]
            out.ir = warped[1]
        }
        var classes: [Int] = [], boxes: [Float] = []
        let S = Double(size)
        for k in 0..<sample.classes.count {
            let x1 = Double(sample.boxes[4 * k]), y1 = Double(sample.boxes[4 * k + 1])
            let x2 = Double(sample.boxes[4 * k + 2]), y2 = Double(sample.boxes[4 * k + 3])
            let corners = [matrix.apply(x1, y1), matrix.apply(x2, y2), matrix.apply(x1, y2), matrix.apply(x2, y1)]
            let nx1 = min(max(corners.map(\.x).min() ?? 0, 0), S), nx2 = min(max(corners.map(\.x).max() ?? 0, 0), S)
            let ny1 = min(max(corners.map(\.y).min() ?? 0, 0), S), ny2 = min(max(corners.map(\.y).max() ?? 0, 0), S)
            if Self.boxCandidate(before: ((x2 - x1) * scale, (y2 - y1) * scale), after: (nx2 - nx1, ny2 - ny1)) {
                classes.append(sample.classes[k])
                boxes += [Float(nx1), Float(ny1), Float(nx2), Float(ny2)]
            }
        }
        out.classes = classes
        out.boxes = boxes
        return out
    }

    /// Ultralytics' `box_candidates`: keep a box when it is wider and higher than 2 px, keeps more
    /// than 10% of its (scaled) area and its aspect ratio is below 100.
    public static func boxCandidate(before: (w: Double, h: Double), after: (w: Double, h: Double),
                                    minSide: Double = 2, maxAspect: Double = 100, minAreaRatio: Double = 0.1) -> Bool {
        let eps = 1e-16
        let aspect = max(after.w / (after.h + eps), after.h / (after.w + eps))
        return after.w > minSide && after.h > minSide
            && after.w * after.h / (before.w * before.h + eps) > minAreaRatio && aspect < maxAspect
    }

    // MARK: Flips and conversions

    static func flipHorizontally(_ s: inout PairSample) {
        s.rgb.flipHorizontally()
        s.ir.flipHorizontally()
        let w = Float(s.rgb.width)
        for k in stride(from: 0, to: s.boxes.count, by: 4) {
            let x1 = s.boxes[k], x2 = s.boxes[k + 2]
            s.boxes[k] = w - x2
            s.boxes[k + 2] = w - x1
        }
    }

    static func flipVertically(_ s: inout PairSample) {
        s.rgb.flipVertically()
        s.ir.flipVertically()
        let h = Float(s.rgb.height)
        for k in stride(from: 0, to: s.boxes.count, by: 4) {
            let y1 = s.boxes[k + 1], y2 = s.boxes[k + 3]
            s.boxes[k + 1] = h - y2
            s.boxes[k + 3] = h - y1
        }
    }

    /// Normalised `cx, cy, w, h` -> pixel `x1, y1, x2, y2` for a `width` x `height` image.
    public static func pixelBoxes(_ boxes: [Float], width: Int, height: Int) -> [Float] {
        var out = [Float](repeating: 0, count: boxes.count)
        let W = Float(width), H = Float(height)
        for k in stride(from: 0, to: boxes.count - 3, by: 4) {
            out[k] = (boxes[k] - boxes[k + 2] / 2) * W
            out[k + 1] = (boxes[k + 1] - boxes[k + 3] / 2) * H
            out[k + 2] = (boxes[k] + boxes[k + 2] / 2) * W
            out[k + 3] = (boxes[k + 1] + boxes[k + 3] / 2) * H
        }
        return out
    }

    /// Pixel `x1, y1, x2, y2` -> normalised `cx, cy, w, h` for a `width` x `height` image.
    public static func normalisedBoxes(_ xyxy: [Float], width: Int, height: Int) -> [Float] {
        var out = [Float](repeating: 0, count: xyxy.count)
        let W = Float(width), H = Float(height)
        for k in stride(from: 0, to: xyxy.count - 3, by: 4) {
            out[k] = (xyxy[k] + xyxy[k + 2]) / 2 / W
            out[k + 1] = (xyxy[k + 1] + xyxy[k + 3]) / 2 / H
            out[k + 2] = (xyxy[k + 2] - xyxy[k]) / W
            out[k + 3] = (xyxy[k + 3] - xyxy[k + 1]) / H
        }
        return out
    }
}
