import ArgumentParser
import DataPipeline
import Foundation

/// `synth_data`: writes a synthetic RGB-IR data set (standard layout + data.yaml).
@main
struct SynthData: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "synth_data",
        abstract: "Generate synthetic paired RGB-IR street scenes (person, car) with YOLO labels.",
        discussion: """
        Writes DIR/images/{train,val}, DIR/imagesIR/{train,val} (1-channel PNG), DIR/labels/{train,val} and DIR/data.yaml. Day scenes show objects in both streams; night scenes hide them in the RGB (dark, noisy) but not in the IR; distractor scenes add hot lamps/engines (warm in IR, glowing in RGB) and cold painted look-alikes (object-like in RGB, invisible in IR). File stems record the scene type: 000123_day, 000124_night_distract, ... Output is deterministic for a seed; val scenes come from a stream independent of the train scenes.
        """)

    @Option(help: "Output folder (created; an earlier synth_data output there is replaced).")
    var out: String

    @Option(help: "Number of training pairs.")
    var train = 512

    @Option(help: "Number of validation pairs.")
    var val = 128

    @Option(help: "Image width and height in pixels.")
    var imgsz = 128

    @Option(help: "Random seed; the same seed writes the same data set.")
    var seed: UInt64 = 0

    @Option(help: "Fraction of night scenes, 0-1.")
    var night = 0.5

    @Option(help: "Fraction of scenes with distractors, 0-1.")
    var distract = 0.5

    @Option(help: "A misregistered IR camera: IR pixel -> RGB pixel scale (IR images are written in the IR camera's frame).")
    var irScale = 1.0

    @Option(help: "... and translation in RGB pixels, 'dx,dy'.")
    var irShift = "0,0"

    func validate() throws {
        guard (0...1).contains(night), (0...1).contains(distract) else {
            throw ValidationError("--night and --distract must be in 0...1")
        }
        guard irScale >= 0.5 && irScale <= 2 else { throw ValidationError("--ir-scale must be in 0.5...2, got \(irScale)") }
        guard shift() != nil else { throw ValidationError("--ir-shift must be 'dx,dy' in pixels, got '\(irShift)'") }
    }

    func shift() -> (Double, Double)? {
        let v = irShift.split(separator: ",").compactMap { Double($0.trimmingCharacters(in: .whitespaces)) }
        return v.count == 2 && v.allSatisfy { abs($0) <= Double(imgsz) } ? (v[0], v[1]) : nil
    }

    func run() throws {
        let t0 = Date()
        var options = SyntheticOptions(width: imgsz, height: imgsz, nightFraction: night, distractorFraction: distract)
        if let (dx, dy) = shift(), irScale != 1 || dx != 0 || dy != 0 {
            options.irToRGB = Matrix3([irScale, 0, dx, 0, irScale, dy, 0, 0, 1])
            print(String(format: "IR camera misregistered: IR -> RGB = scale %.4g, shift (%.4g, %.4g) px", irScale, dx, dy))
        }
        do {
            let s = try SyntheticScenes.writeDataset(to: out, train: train, val: val, imageSize: imgsz, seed: seed,
                                                     options: options)
            let seconds = Date().timeIntervalSince(t0)
            print("train: \(s.train.images) pairs (\(s.train.night) night, \(s.train.distract) with distractors, \(s.train.boxes) boxes)")
            print("val:   \(s.val.images) pairs (\(s.val.night) night, \(s.val.distract) with distractors, \(s.val.boxes) boxes)")
            print(String(format: "wrote %@ in %.2f s (%.0f pairs/s)", s.yamlPath, seconds, Double(train + val) / max(seconds, 1e-9)))
        } catch let error as CustomStringConvertible & Error {
            FileHandleOutput.standardError("synth_data: \(error.description)")
            throw ExitCode.failure
        }
    }
}

enum FileHandleOutput {
    static func standardError(_ text: String) {
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }
}
