import DataPipeline
import Foundation
import TensorCore
@testable import Training
import XCTest

/// A long run must not grow: after the first epoch, 200 optimizer steps of training (with the
/// buffer pool, the loader and the checkpoints every epoch) leave the resident size within 5%.
/// XCTest runs this alone (nothing else allocates in the process meanwhile).
final class LeakTests: XCTestCase {
    func testResidentSizeStaysFlatOver200Steps() throws {
        let data = TestData.synthetic("leak", train: 32, val: 8, seed: 41, size: 64)
        var o = TestData.options(data: data, model: "dual_yolov8n_mid.yaml", name: "leak", epochs: 51, batch: 8)
        o.hyp.imgsz = 64
        o.hyp.val = false
        o.hyp.plots = false
        o.hyp.workers = 1
        var rss: [Int] = []
        let trainer = try Trainer(o) { line in
            if line.hasPrefix("epoch ") { }   // quiet
        }
        trainer.lossHook = { ni, loss in
            if ni % 4 == 0 { rss.append(MemoryStats.residentBytes()) }   // 4 batches an epoch: once an epoch
            return loss
        }
        let s = try trainer.run()
        XCTAssertEqual(s.epochs, 51)
        print("RSS per epoch (MB): " + rss.map { String(format: "%.1f", Double($0) / 1e6) }.joined(separator: " "))
        // The resident size moves by a few MB from one sample to the next (batches in flight): compare
        // the median of epochs 2-6 with the median of the last 10 epochs; a leak grows steadily.
        func median(_ v: ArraySlice<Int>) -> Double { let s = v.sorted(); return Double(s[s.count / 2]) }
        let afterFirst = median(rss[1...5]), end = median(rss.suffix(10))
        print(String(format: "RSS median after epoch 1: %.1f MB, over the last 10 epochs (steps %d-%d): %.1f MB (%+.2f%%)", afterFirst / 1e6,
                     rss.count * 4 - 40, rss.count * 4, end / 1e6, 100 * (end - afterFirst) / afterFirst))
        XCTAssertLessThan(end - afterFirst, 0.05 * afterFirst, "RSS grew from \(afterFirst) to \(end) bytes")
    }
}
