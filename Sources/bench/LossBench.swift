import ArgumentParser
import Detection
import Foundation
import NN
import TensorCore

struct LossBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "loss",
        abstract: "Time task-aligned assignment + v8 detection loss, forward and backward, on random head outputs.")

    @Option(help: "Image size.") var imgsz = 320
    @Option(help: "Batch size.") var batch = 8
    @Option(help: "Targets per image.") var targets = 3
    @Option(help: "Number of classes.") var nc = 1
    @Option(help: "Timed runs (the median is printed).") var runs = 11

    func run() throws {
        var rng = RandomState(seed: 2)
        let levels = [8, 16, 32].map { (height: imgsz / $0, width: imgsz / $0) }
        let a = levels.reduce(0) { $0 + $1.height * $1.width }
        let boxes = Tensor.normal([batch, 64, a], rng: &rng), scores = Tensor.normal([batch, nc, a], mean: -2, rng: &rng)
        boxes.requiresGrad = true
        scores.requiresGrad = true
        var bi: [Int] = [], cls: [Int] = [], bx: [Float] = []
        for b in 0..<batch {
            for _ in 0..<targets {   // as torch_reference.py: centres in [0.2, 0.8], sizes in [0.05, 0.35]
                bi.append(b); cls.append(rng.int(below: nc))
                bx += [rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.35), rng.uniform(0.05, 0.35)]
            }
        }
        let t = BatchTargets(batchIndex: bi, classes: cls, boxes: bx)
        let loss = DetectionLoss(nc: nc)
        let out = DetectOutput(boxes: boxes, scores: scores, levels: levels, strides: [8, 16, 32])
        var fg = 0
        let fwd = medianTime(runs: runs) { fg = loss(out, t).foreground }
        let both = medianTime(runs: runs) {
            loss(out, t).total.backward()
            boxes.zeroGrad(); scores.zeroGrad()
        }
        print(String(format: "bench loss: batch %d, %d px (%d anchors), %d targets/image, nc %d: forward %.2f ms, forward + backward %.2f ms (%d positives; median of %d)",
                     batch, imgsz, a, targets, nc, fwd * 1e3, both * 1e3, fg, runs))
        print("PyTorch's v8DetectionLoss on this machine: ~9-25 ms of a ~900-960 ms dual-mid training step (target: <= 5% of a step)")
    }
}
