import Foundation
import Testing
@testable import DataPipeline

/// The synthetic scene generator: deterministic, learnable labels, each stream ambiguous alone.
@Suite struct SyntheticTests {
    func mean(_ image: RasterImage, channel: Int, inside box: [Float]?, _ include: Bool) -> Double {
        var sum = 0.0, n = 0.0
        for y in 0..<image.height {
            for x in 0..<image.width {
                var isIn = false
                if let box = box {
                    let W = Float(image.width), H = Float(image.height)
                    isIn = Float(x) >= (box[0] - box[2] / 2) * W && Float(x) < (box[0] + box[2] / 2) * W
                        && Float(y) >= (box[1] - box[3] / 2) * H && Float(y) < (box[1] + box[3] / 2) * H
                }
                if isIn == include {
                    sum += Double(image[x, y, channel])
                    n += 1
                }
            }
        }
        return n > 0 ? sum / n : 0
    }

    @Test func scenesAreDeterministicAndLabelled() {
        let a = SyntheticScenes.render(seed: 5, index: 17), b = SyntheticScenes.render(seed: 5, index: 17)
        #expect(a.rgb == b.rgb && a.ir == b.ir && a.boxes == b.boxes && a.classes == b.classes)
        let c = SyntheticScenes.render(seed: 6, index: 17)
        #expect(c.rgb != a.rgb)
        var sizes: [Float] = [], counts: [Int] = [], night = 0, distract = 0
        for i in 0..<200 {
            let s = SyntheticScenes.render(seed: 1, index: i)
            #expect(s.rgb.width == 128 && s.ir.channels == 1 && s.classes.count * 4 == s.boxes.count)
            #expect(!s.classes.isEmpty && s.classes.count <= 4, "scene \(i) has \(s.classes.count) objects")
            #expect(s.classes.allSatisfy { $0 == 0 || $0 == 1 })
            #expect(s.boxes.allSatisfy { $0 >= 0 && $0 <= 1 })
            for k in 0..<s.classes.count {
                let w = s.boxes[4 * k + 2], h = s.boxes[4 * k + 3]
                sizes.append(max(w, h))
                if s.classes[k] == 0 { #expect(h > w, "persons are tall") } else { #expect(w > h, "cars are wide") }
            }
            counts.append(s.classes.count)
            night += s.night ? 1 : 0
            distract += s.hasDistractors ? 1 : 0
            #expect(s.stem(index: i).hasPrefix(String(format: "%06d_", i)))
            #expect(s.stem(index: i).contains(s.night ? "_night" : "_day"))
            #expect(s.stem(index: i).hasSuffix("_distract") == s.hasDistractors)
        }
        let inRange = sizes.filter { $0 >= 0.1 && $0 <= 0.5 }.count
        #expect(Double(inRange) / Double(sizes.count) > 0.9, "object sides mostly 10-50% of the image")
        #expect((60...140).contains(night) && (60...140).contains(distract))
        #expect(Set(counts).count >= 3)
    }

    @Test func nightHidesObjectsInRGBButNotInIR() {
        var nightContrastRGB: [Double] = [], nightContrastIR: [Double] = [], dayRGB: [Double] = []
        for i in 0..<120 {
            let s = SyntheticScenes.render(seed: 3, index: i, options: SyntheticOptions(distractorFraction: 0))
            let box = Array(s.boxes[0..<4])
            let grey = s.rgb.converted(toChannels: 1)
            let rgbContrast = abs(mean(grey, channel: 0, inside: box, true) - mean(grey, channel: 0, inside: box, false))
            let irContrast = mean(s.ir, channel: 0, inside: box, true) - mean(s.ir, channel: 0, inside: box, false)
            if s.night {
                nightContrastRGB.append(rgbContrast)
                nightContrastIR.append(irContrast)
                #expect(mean(grey, channel: 0, inside: nil, false) < 40, "night RGB is dark")
            } else {
                dayRGB.append(mean(grey, channel: 0, inside: nil, false))
            }
        }
        let avg = { (v: [Double]) in v.reduce(0, +) / Double(max(v.count, 1)) }
        #expect(avg(nightContrastRGB) < 12, "objects nearly invisible in night RGB: \(avg(nightContrastRGB))")
        #expect(avg(nightContrastIR) > 60, "objects warm in IR: \(avg(nightContrastIR))")
        #expect(avg(dayRGB) > 80)
    }

    @Test func distractorsLookLikeObjectsInOneStreamOnly() {
        // Hot lamps: warm like objects in IR, bright in RGB at night; objects stay dark at night.
        var found = 0
        for i in 0..<200 where found < 10 {
            let s = SyntheticScenes.render(seed: 11, index: i, options: SyntheticOptions(nightFraction: 1, distractorFraction: 1))
            guard s.hotDistractors > 0 else { continue }
            found += 1
            let grey = s.rgb.converted(toChannels: 1)
            // The brightest RGB region is a lamp, not a labelled object.
            var brightest = (value: UInt8(0), x: 0, y: 0)
            for y in 0..<grey.height { for x in 0..<grey.width where grey[x, y, 0] > brightest.value { brightest = (grey[x, y, 0], x, y) } }
            #expect(brightest.value > 180, "a lamp glows in night RGB")
            let inObject = stride(from: 0, to: s.boxes.count, by: 4).contains { k in
                let b = s.boxes[k..<(k + 4)].map { $0 * 128 }
                return Float(brightest.x) >= b[0] - b[2] / 2 && Float(brightest.x) < b[0] + b[2] / 2
                    && Float(brightest.y) >= b[1] - b[3] / 2 && Float(brightest.y) < b[1] + b[3] / 2
            }
            #expect(!inObject, "scene \(i): the brightest RGB pixel is not on a labelled object")
            // IR holds more warm blobs than labelled objects.
            let warm = s.ir.pixels.filter { $0 > 170 }.count
            var labelledArea: Float = 0
            for k in stride(from: 0, to: s.boxes.count, by: 4) {
                let w: Float = s.boxes[k + 2] * 128, h: Float = s.boxes[k + 3] * 128
                labelledArea += w * h
            }
            #expect(Float(warm) > labelledArea * 0.4)
        }
        #expect(found == 10)
    }

    @Test func writesALayoutThatScansClean() throws {
        let dir = TempDir("synth")
        defer { dir.remove() }
        let start = Date()
        let summary = try SyntheticScenes.writeDataset(to: dir.path, train: 40, val: 12, imageSize: 64, seed: 2)
        let seconds = Date().timeIntervalSince(start)
        #expect(seconds < 5, "52 pairs at 64 px took \(seconds) s")
        #expect(summary.train.images == 40 && summary.val.images == 12)
        let config = try DatasetConfig.load(path: summary.yamlPath)
        #expect(config.names == ["person", "car"] && config.irChannels == 1)
        let train = try DatasetScanner.scan(config, split: .train, options: ScanOptions(useCache: false))
        let val = try DatasetScanner.scan(config, split: .val, options: ScanOptions(useCache: false))
        #expect(train.counts.ok == 40 && val.counts.ok == 12)
        #expect(train.issues.isEmpty, "\(train.issues.prefix(3))")
        #expect(train.counts.boxes == summary.train.boxes)
        #expect(DatasetScanner.splitOverlap(train: train, val: val) == nil)
        // Val comes from another stream: no identical images.
        let valFirst = try ImageIO.read(val.pairs[0].rgbPath, channels: 3)
        #expect(try train.pairs.allSatisfy { try ImageIO.read($0.rgbPath, channels: 3) != valFirst })
        // Re-running over an earlier output replaces it; a foreign non-empty folder is refused.
        _ = try SyntheticScenes.writeDataset(to: dir.path, train: 2, val: 1, imageSize: 64, seed: 2)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.file("images/train")).count == 2)
        let foreign = TempDir("foreign")
        defer { foreign.remove() }
        foreign.write("notes.txt", "mine")
        #expect(throws: SyntheticDataError.self) { _ = try SyntheticScenes.writeDataset(to: foreign.path, train: 1, val: 1, imageSize: 64, seed: 0) }
    }
}
