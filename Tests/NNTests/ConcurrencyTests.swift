import Foundation
import Testing
@testable import Detection
@testable import NN
import TensorCore

/// Two models in one process: each thread has its own compute context (grad mode, autocast,
/// saved activations, scratch memory), so concurrent predictions and a training step beside an
/// inference give exactly the results they give alone.
@Suite struct ConcurrencyTests {
    func tinyModel(seed: UInt64) throws -> DetectionModel {
        let text = try String(contentsOfFile: modelPath("dual_yolov8n_mid.yaml"), encoding: .utf8)
            .replacingOccurrences(of: "scales: # [depth_multiple, width_multiple, max_channels]\n",
                                  with: "scales: # [depth_multiple, width_multiple, max_channels]\n  t: [0.33, 0.125, 512]\n")
        return try ModelBuilder.build(try ModelSpec.parse(text, file: "dual_yolov8n_mid.yaml"), nc: 2, scale: "t", seed: seed)
    }

    func inputs(_ seed: UInt64, size: Int) -> [String: Tensor] {
        var rng = RandomState(seed: seed)
        return ["rgb": Tensor.uniform([2, 3, size, size], rng: &rng), "ir": Tensor.uniform([2, 1, size, size], rng: &rng)]
    }

    /// One inference (eval, no grad) and one training-mode forward/backward under fp16 autocast:
    /// what each thread computes.
    func predict(_ m: DetectionModel, _ x: [String: Tensor]) -> [Float] {
        noGrad { m(x)[0].decoded().array }
    }

    func trainStep(_ m: DetectionModel, _ x: [String: Tensor]) -> [Float] {
        let o = Autocast.with(.fp16) { m(x)[0] }
        (o.boxes.mean() + o.scores.mean()).backward()
        let g = m.parameters.flatMap { $0.tensor.grad?.array ?? [] }
        for p in m.parameters { p.tensor.zeroGrad() }
        return g
    }

    @Test func twoPredictionsOnTwoThreadsMatchOneAtATime() throws {
        let a = try tinyModel(seed: 1), b = try tinyModel(seed: 2)
        a.training = false
        let xa = inputs(3, size: 96), xb = inputs(4, size: 128)
        // Every run in a fresh context with the defaults: a pooled test thread's own context may
        // carry another test's settings (a Trainer sets the GEMM of the thread it is made on).
        let alone = ComputeContext()
        let aloneA = alone.run { predict(a, xa) }
        let aloneB = alone.run { trainStep(b, xb) }      // b trains while a predicts
        b.training = true
        let aloneB2 = alone.run { trainStep(b, xb) }
        #expect(differs(aloneB, aloneB2) == nil, "a training step is repeatable")
        let shared = Shared(a: a, b: b, xa: xa, xb: xb)
        let group = DispatchGroup()
        for which in 0..<2 {
            group.enter()
            let t = Thread {
                ComputeContext().run {
                    for _ in 0..<4 {
                        if which == 0 { let r = self.predict(shared.a, shared.xa); shared.lock.withLock { shared.gotA.append(r) } }
                        else { let r = self.trainStep(shared.b, shared.xb); shared.lock.withLock { shared.gotB.append(r) } }
                    }
                }
                group.leave()
            }
            t.start()
        }
        group.wait()
        #expect(shared.gotA.count == 4 && shared.gotB.count == 4)
        for r in shared.gotA { #expect(differs(r, aloneA) == nil, "concurrent prediction differs from the one-thread result") }
        for r in shared.gotB { #expect(differs(r, aloneB) == nil, "concurrent training step differs from the one-thread result") }
    }

    /// Where two results first differ (nil: equal bit for bit), said in a few words: comparing the
    /// arrays inside #expect would make a failure print a diff of thousands of elements, slowly.
    func differs(_ a: [Float], _ b: [Float]) -> String? {
        guard a.count == b.count else { return "\(a.count) values against \(b.count)" }
        guard let i = a.indices.first(where: { a[$0].bitPattern != b[$0].bitPattern }) else { return nil }
        let n = a.indices.filter { a[$0].bitPattern != b[$0].bitPattern }.count
        return "\(n) of \(a.count) values differ, the first at \(i): \(a[i]) against \(b[i])"
    }
}

/// What the two threads share (each touches only its own model; results go under the lock).
private final class Shared: @unchecked Sendable {
    let a, b: DetectionModel
    let xa, xb: [String: Tensor]
    let lock = NSLock()
    var gotA: [[Float]] = [], gotB: [[Float]] = []
    init(a: DetectionModel, b: DetectionModel, xa: [String: Tensor], xb: [String: Tensor]) {
        (self.a, self.b, self.xa, self.xb) = (a, b, xa, xb)
    }
}
