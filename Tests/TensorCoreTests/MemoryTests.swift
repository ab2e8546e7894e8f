import XCTest
@testable import TensorCore

/// Memory must not grow from step to step: every buffer of a forward/backward pass is released.
final class MemoryTests: XCTestCase {
    func testNoGrowthOver50Iterations() {
        var rng = RandomState(seed: 1)
        let w1 = Tensor.kaimingUniform([16, 3, 3, 3], rng: &rng)
        let w2 = Tensor.kaimingUniform([32, 16, 3, 3], rng: &rng)
        let w3 = Tensor.kaimingUniform([8, 48, 1, 1], rng: &rng)
        let g1 = Tensor(repeating: 1, shape: [16]), b1 = Tensor(zeros: [16])
        let bn = BatchNormStats(channels: 16)
        let params = [w1, w2, w3, g1, b1]
        for p in params { p.requiresGrad = true }
        let x = Tensor.normal([4, 3, 32, 32], rng: &rng)
        func step() {
            let a = Tensor.batchNorm2d(Tensor.conv2d(x, weight: w1, stride: 2, padding: 1), weight: g1, bias: b1,
                                       stats: bn, training: true, silu: true)
            let b = Tensor.conv2d(a, weight: w2, stride: 1, padding: 1).silu()
            let c = Tensor.concat([b, a], axis: 1).maxPool2d(kernel: 5, stride: 1, padding: 2)
            let d = Tensor.conv2d(c, weight: w3).upsampleNearest(2)
            d.square().mean().backward()
            for p in params {          // a plain SGD step, so values change every iteration
                let g = p.grad!
                for i in 0..<p.count { p.data[i] -= 1e-3 * g.data[i] }
                p.zeroGrad()
            }
        }
        for _ in 0..<5 { step() }          // warm up workspace and the allocator
        let bytes0 = MemoryStats.allocatedBytes
        let rss0 = MemoryStats.residentBytes()
        for _ in 0..<50 { step() }
        let bytes1 = MemoryStats.allocatedBytes
        let rss1 = MemoryStats.residentBytes()
        XCTAssertEqual(bytes1, bytes0, "tensor bytes grew from \(bytes0) to \(bytes1)")
        XCTAssertGreaterThan(rss0, 0)
        // The allocator may keep a little; growth proportional to the iterations would be
        // 50 x several MB here.
        XCTAssertLessThan(rss1 - rss0, 4 << 20, "RSS grew from \(rss0) to \(rss1)")
    }
}
