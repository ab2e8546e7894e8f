import Foundation
import Testing
import TensorCore
@testable import DataPipeline

/// Letterbox, mosaic, affine, flips: labels follow the pixels, both streams share one geometry.
@Suite struct AugmentTests {
    /// Checks that the red object pixels of `s` (R > 128, G < 80) lie inside its boxes (grown by
    /// `slack` px) and that every box is mostly covered by object pixels (`minFill`).
    func expectObjectsInsideBoxes(_ s: PairSample, minFill: Double, slack: Float = 1.5, strict: Bool = false,
                                  _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let boxes = stride(from: 0, to: s.boxes.count, by: 4).map { Array(s.boxes[$0..<($0 + 4)]) }
        var outside = 0, object = 0
        var covered = [Int](repeating: 0, count: boxes.count)
        for y in 0..<s.rgb.height {
            for x in 0..<s.rgb.width {
                let px = Float(x) + 0.5, py = Float(y) + 0.5
                let isObject = s.rgb[x, y, 0] > 128 && s.rgb[x, y, 1] < 80
                if isObject { object += 1 }
                var inside = false
                for (k, b) in boxes.enumerated() {
                    if px >= b[0] - slack && px <= b[2] + slack && py >= b[1] - slack && py <= b[3] + slack {
                        inside = true
                    }
                    if isObject && px >= b[0] && px <= b[2] && py >= b[1] && py <= b[3] { covered[k] += 1 }
                }
                if isObject && !inside { outside += 1 }
            }
        }
        // Boxes that keep under 10% of their area are dropped (box_candidates) while their last
        // pixels stay visible: allow that much, nothing like a misplaced box.
        #expect(outside <= (strict ? 0 : max(12, object / 10)), "\(what): \(outside) of \(object) object pixels outside every box",
                sourceLocation: sourceLocation)
        for (k, b) in boxes.enumerated() {
            let area = Double((b[2] - b[0]) * (b[3] - b[1]))
            #expect(Double(covered[k]) >= minFill * area - 2 * Double(b[2] - b[0] + b[3] - b[1]),
                    "\(what): box \(k) \(b) holds \(covered[k]) object pixels of \(Int(area))", sourceLocation: sourceLocation)
        }
    }

    /// The IR equals the luma of the RGB wherever both were warped alike (within rounding).
    func expectSameGeometry(_ s: PairSample, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let luma = s.rgb.converted(toChannels: 1)
        var worst = 0, sum = 0
        for i in 0..<luma.pixels.count {
            let d = abs(Int(luma.pixels[i]) - Int(s.ir.pixels[i]))
            worst = max(worst, d)
            sum += d
        }
        #expect(worst <= 2, "\(what): IR differs from the RGB luma by up to \(worst)", sourceLocation: sourceLocation)
        #expect(Double(sum) / Double(luma.pixels.count) < 0.6, "\(what): mean difference \(Double(sum) / Double(luma.pixels.count))",
                sourceLocation: sourceLocation)
    }

    func geometryOnly(_ change: (inout AugmentConfig) -> Void) -> AugmentConfig {
        var c = AugmentConfig.none
        change(&c)
        return c
    }

    let objects = PairFixture.rectangles(width: 96, height: 64, boxes: [[10, 8, 30, 40], [50, 30, 90, 50], [70, 2, 80, 12]])

    @Test func labelsFollowEachAugmentation() {
        let cases: [(String, AugmentConfig, Double)] = [
            ("none", .none, 0.95),
            ("translate + scale", geometryOnly { $0.translate = 0.2; $0.scale = 0.5 }, 0.9),
            ("rotation", geometryOnly { $0.degrees = 30 }, 0.35),
            ("shear", geometryOnly { $0.shear = 10 }, 0.5),
            ("perspective", geometryOnly { $0.perspective = 0.001 }, 0.5),
            ("fliplr", geometryOnly { $0.fliplr = 1 }, 0.9),
            ("flipud", geometryOnly { $0.flipud = 1 }, 0.9),
            ("mosaic", geometryOnly { $0.mosaic = 1 }, 0.9),
            ("everything", { var c = AugmentConfig(); c.degrees = 15; c.shear = 5; c.flipud = 0.5; c.hsvH = 0; c.hsvS = 0; c.hsvV = 0; return c }(), 0.3),
        ]
        let partners = (0..<3).map { k in
            PairFixture.rectangles(width: 64 + 16 * k, height: 96 - 16 * k, boxes: [[4 + k, 6, 30 + k, 20 + 5 * k], [36, 50 - 10 * k, 60, 70 - 10 * k]])
        }
        for (name, config, fill) in cases {
            let augmenter = PairAugmenter(config: config, size: 96)
            for seed in 0..<6 {
                var rng = RandomState(seed: UInt64(seed))
                let s = augmenter.sample(primary: objects, mosaic: true, datasetCount: 3, rng: &rng, partner: { partners[$0] })
                #expect(s.rgb.width == 96 && s.rgb.height == 96 && s.ir.width == 96 && s.ir.channels == 1)
                #expect(s.classes.count * 4 == s.boxes.count)
                #expect(s.boxes.allSatisfy { $0 >= 0 && $0 <= 96 }, "\(name): boxes inside the image")
                let strict = ["none", "fliplr", "flipud"].contains(name)
                expectObjectsInsideBoxes(s, minFill: fill, strict: strict, "\(name) seed \(seed)")
                if name == "none" { #expect(s.classes.count == 3) }
            }
        }
    }

    @Test func bothStreamsShareOneGeometry() {
        var config = AugmentConfig()
        config.degrees = 20; config.shear = 5; config.perspective = 0.0005; config.flipud = 0.5
        config.hsvH = 0; config.hsvS = 0; config.hsvV = 0; config.irGain = 0; config.irBias = 0
        let augmenter = PairAugmenter(config: config, size: 64)
        let partners = (0..<3).map { PairFixture.textured(width: 48 + 8 * $0, height: 40, seed: $0 + 1) }
        let primary = PairFixture.textured(width: 80, height: 50)
        for seed in 0..<8 {
            var rng = RandomState(seed: UInt64(100 + seed))
            let s = augmenter.sample(primary: primary, mosaic: seed % 2 == 0, datasetCount: 3, rng: &rng, partner: { partners[$0] })
            expectSameGeometry(s, "seed \(seed)")
        }
        // With colour jitter on, the streams differ photometrically but not geometrically.
        var jitter = AugmentConfig()
        jitter.irGain = 0.5
        var rng = RandomState(seed: 3)
        let s = PairAugmenter(config: jitter, size: 64).sample(primary: primary, mosaic: false, datasetCount: 3, rng: &rng,
                                                              partner: { partners[$0] })
        #expect(s.ir.pixels != s.rgb.converted(toChannels: 1).pixels)
    }

    @Test func mosaicPlacesFourPairsAroundTheCentre() {
        let augmenter = PairAugmenter(config: .none, size: 32)
        let pairs = (0..<4).map { k in
            LoadedPair(rgb: RasterImage(width: 32, height: 24, channels: 3, fill: UInt8(50 * (k + 1))),
                       ir: RasterImage(width: 32, height: 24, channels: 1, fill: UInt8(50 * (k + 1))),
                       originalWidth: 32, originalHeight: 24, classes: [k], boxes: [0.5, 0.5, 0.5, 0.5])
        }
        let m = augmenter.mosaic(pairs, center: (x: 30, y: 40))
        #expect(m.rgb.width == 64 && m.rgb.height == 64)
        #expect(m.rgb[29, 39, 0] == 50 && m.rgb[30, 39, 0] == 100 && m.rgb[29, 40, 0] == 150 && m.rgb[30, 40, 0] == 200)
        #expect(m.rgb[0, 0, 0] == 114 && m.ir[63, 63, 0] == 114 && m.ir[0, 16, 0] == 50)
        // Top-left pair spans x 0..<30 (its right 30 columns), y 16..<40; its box 8..24 x 6..18 shifts by (-2, 16).
        #expect(m.classes == [0, 1, 2, 3])
        #expect(Array(m.boxes[0..<4]) == [6, 22, 22, 34])
    }

    @Test func boxCandidatesFollowUltralytics() {
        #expect(PairAugmenter.boxCandidate(before: (100, 100), after: (80, 80)))
        #expect(!PairAugmenter.boxCandidate(before: (100, 100), after: (2, 80)))      // 2 px is not wider than 2
        #expect(!PairAugmenter.boxCandidate(before: (100, 100), after: (30, 30)))     // 9% of the area
        #expect(!PairAugmenter.boxCandidate(before: (400, 3), after: (400, 3.9)))     // aspect >= 100
    }

    @Test func letterboxAndItsInverse() {
        let info = Letterbox.plan(width: 640, height: 480, targetWidth: 320, targetHeight: 320)
        #expect(info.width == 320 && info.height == 320 && info.resizedWidth == 320 && info.resizedHeight == 240)
        #expect(info.padX == 0 && info.padY == 40 && info.gainX == 0.5)
        // Odd padding splits like Ultralytics: round(d/2 - 0.1) on the top/left.
        let odd = Letterbox.plan(width: 100, height: 33, targetWidth: 64, targetHeight: 64)
        #expect(odd.resizedHeight == 21 && odd.padY == 21 && odd.height == 64)
        // Minimal (rectangular inference) shape is stride-aligned.
        let rect = Letterbox.plan(width: 1280, height: 1024, targetWidth: 640, targetHeight: 640, minimal: true)
        #expect(rect.width == 640 && rect.height == 512)
        #expect(Letterbox.alignedSize(100) == 128 && Letterbox.alignedSize(640) == 640)
        // Labels in and boxes back out.
        let labels: [Float] = [0.25, 0.5, 0.1, 0.2]
        let boxed = Letterbox.transformLabels(labels, info)
        #expect(abs(boxed[0] - 0.25) < 1e-6 && abs(boxed[1] - 0.5) < 1e-6 && abs(boxed[3] - 0.15) < 1e-6)
        let xyxy: [Float] = [(boxed[0] - boxed[2] / 2) * 320, (boxed[1] - boxed[3] / 2) * 320,
                             (boxed[0] + boxed[2] / 2) * 320, (boxed[1] + boxed[3] / 2) * 320]
        let back = Letterbox.scaleBoxes(xyxy, info)
        let expected: [Float] = [128, 192, 192, 288]
        for k in 0..<4 { #expect(abs(back[k] - expected[k]) < 1e-3, "coordinate \(k): \(back[k])") }
        #expect(Letterbox.scaleBoxes([-10, -10, 400, 400], info) == [0, 0, 640, 480])
        // The picture lands where the plan says.
        let image = RasterImage(width: 64, height: 48, channels: 1, fill: 200)
        let small = Letterbox.plan(width: 64, height: 48, targetWidth: 32, targetHeight: 32)
        let out = Letterbox.apply(image, small)
        #expect(out.width == 32 && out[5, 3, 0] == 114 && out[5, 4, 0] == 200 && out[5, 27, 0] == 200 && out[5, 28, 0] == 114)
    }

    @Test func validationSamplesMapBackToTheOriginal() {
        // A 96x64 original loaded at long side 48 (48x32), letterboxed into 48x48.
        let pair = PairFixture.rectangles(width: 96, height: 64, boxes: [[10, 8, 30, 40]])
        let loaded = LoadedPair(rgb: pair.rgb.resized(width: 48, height: 32), ir: pair.ir.resized(width: 48, height: 32),
                                originalWidth: 96, originalHeight: 64, classes: pair.classes, boxes: pair.boxes)
        let s = PairAugmenter(config: AugmentConfig(), size: 48).letterboxed(loaded)
        #expect(s.rgb.width == 48 && s.rgb.height == 48)
        #expect(s.letterbox.padY == 8 && s.letterbox.gainX == 0.5 && s.letterbox.originalWidth == 96)
        let back = Letterbox.scaleBoxes(s.boxes, s.letterbox)
        for (k, v) in [Float(10), 8, 30, 40].enumerated() { #expect(abs(back[k] - v) < 1e-3) }
        expectObjectsInsideBoxes(s, minFill: 0.8, strict: true, "letterbox")
    }

    @Test func colourJitterTouchesOnlyItsStream() {
        var image = PairFixture.textured(width: 20, height: 10).rgb
        let original = image
        image.jitterHSV(gains: (0, 0, 0))
        #expect(image == original)
        image.jitterHSV(gains: (0, 0, 0.4))   // brighter value, same hue
        #expect(image != original)
        var grey = RasterImage(width: 4, height: 1, channels: 1, pixels: [0, 100, 128, 255])
        grey.jitterIntensity(contrast: 0.5, brightness: 0.1)
        #expect(grey.pixels == [0, 112, 154, 255])   // 127.5 + (x - 127.5) * 1.5 + 25.5, clipped
    }
}
