import ArgumentParser
import Foundation
import TensorCore

/// Distinct convolutions of yolov8n (nc=1) as (in, out, k, s, input size at 640/…) with their
/// multiplicity: backbone, neck and the Detect box/class branches.
struct ConvShape: Hashable {
    let c, o, k, s, h: Int
}

func yolov8nConvShapes(imgsz: Int) -> [(ConvShape, Int)] {
    let p1 = imgsz / 2, p2 = imgsz / 4, p3 = imgsz / 8, p4 = imgsz / 16, p5 = imgsz / 32
    var list: [ConvShape] = [
        ConvShape(c: 3, o: 16, k: 3, s: 2, h: imgsz),       // 0
        ConvShape(c: 16, o: 32, k: 3, s: 2, h: p1),         // 1
        ConvShape(c: 32, o: 32, k: 1, s: 1, h: p2),         // 2 C2f cv1
        ConvShape(c: 16, o: 16, k: 3, s: 1, h: p2), ConvShape(c: 16, o: 16, k: 3, s: 1, h: p2),
        ConvShape(c: 48, o: 32, k: 1, s: 1, h: p2),         // 2 cv2
        ConvShape(c: 32, o: 64, k: 3, s: 2, h: p2),         // 3
        ConvShape(c: 64, o: 64, k: 1, s: 1, h: p3),         // 4 cv1
    ]
    list += Array(repeating: ConvShape(c: 32, o: 32, k: 3, s: 1, h: p3), count: 4)
    list += [ConvShape(c: 128, o: 64, k: 1, s: 1, h: p3),   // 4 cv2
             ConvShape(c: 64, o: 128, k: 3, s: 2, h: p3),   // 5
             ConvShape(c: 128, o: 128, k: 1, s: 1, h: p4)]  // 6 cv1
    list += Array(repeating: ConvShape(c: 64, o: 64, k: 3, s: 1, h: p4), count: 4)
    list += [ConvShape(c: 256, o: 128, k: 1, s: 1, h: p4),  // 6 cv2
             ConvShape(c: 128, o: 256, k: 3, s: 2, h: p4),  // 7
             ConvShape(c: 256, o: 256, k: 1, s: 1, h: p5),  // 8 cv1
             ConvShape(c: 128, o: 128, k: 3, s: 1, h: p5), ConvShape(c: 128, o: 128, k: 3, s: 1, h: p5),
             ConvShape(c: 384, o: 256, k: 1, s: 1, h: p5),  // 8 cv2
             ConvShape(c: 256, o: 128, k: 1, s: 1, h: p5),  // 9 SPPF cv1
             ConvShape(c: 512, o: 256, k: 1, s: 1, h: p5),  // 9 SPPF cv2
             ConvShape(c: 384, o: 128, k: 1, s: 1, h: p4),  // 12 cv1
             ConvShape(c: 64, o: 64, k: 3, s: 1, h: p4), ConvShape(c: 64, o: 64, k: 3, s: 1, h: p4),
             ConvShape(c: 192, o: 128, k: 1, s: 1, h: p4),  // 12 cv2
             ConvShape(c: 192, o: 64, k: 1, s: 1, h: p3),   // 15 cv1
             ConvShape(c: 32, o: 32, k: 3, s: 1, h: p3), ConvShape(c: 32, o: 32, k: 3, s: 1, h: p3),
             ConvShape(c: 96, o: 64, k: 1, s: 1, h: p3),    // 15 cv2
             ConvShape(c: 64, o: 64, k: 3, s: 2, h: p3),    // 16
             ConvShape(c: 192, o: 128, k: 1, s: 1, h: p4),  // 18 cv1
             ConvShape(c: 64, o: 64, k: 3, s: 1, h: p4), ConvShape(c: 64, o: 64, k: 3, s: 1, h: p4),
             ConvShape(c: 192, o: 128, k: 1, s: 1, h: p4),  // 18 cv2
             ConvShape(c: 128, o: 128, k: 3, s: 2, h: p4),  // 19
             ConvShape(c: 384, o: 256, k: 1, s: 1, h: p5),  // 21 cv1
             ConvShape(c: 128, o: 128, k: 3, s: 1, h: p5), ConvShape(c: 128, o: 128, k: 3, s: 1, h: p5),
             ConvShape(c: 384, o: 256, k: 1, s: 1, h: p5)]  // 21 cv2
    // Detect: per level, box and class branches Conv3x3(ch, 64), Conv3x3(64, 64), conv1x1.
    for (ch, h) in [(64, p3), (128, p4), (256, p5)] {
        list += [ConvShape(c: ch, o: 64, k: 3, s: 1, h: h), ConvShape(c: 64, o: 64, k: 3, s: 1, h: h),
                 ConvShape(c: 64, o: 64, k: 1, s: 1, h: h),
                 ConvShape(c: ch, o: 64, k: 3, s: 1, h: h), ConvShape(c: 64, o: 64, k: 3, s: 1, h: h),
                 ConvShape(c: 64, o: 1, k: 1, s: 1, h: h)]
    }
    var counts: [ConvShape: Int] = [:]
    var order: [ConvShape] = []
    for s in list {
        if counts[s] == nil { order.append(s) }
        counts[s, default: 0] += 1
    }
    return order.map { ($0, counts[$0]!) }
}

/// The middle value of `v` (the upper one of the two middle values when the count is even); `v` not empty.
func median(_ v: [Double]) -> Double { v.sorted()[v.count / 2] }

/// Median wall time of `body` in seconds over `runs` runs after one warm-up (used by the other benches).
func medianTime(runs: Int, _ body: () -> Void) -> Double {
    var fastest = 0.0
    return medianTime(runs: runs, fastest: &fastest, body)
}

/// The median of `runs` timed calls after one untimed call (seconds); `fastest` gets the shortest.
func medianTime(runs: Int, fastest: inout Double, _ body: () -> Void) -> Double {
    body()
    var t: [Double] = []
    for _ in 0..<runs {
        let t0 = DispatchTime.now().uptimeNanoseconds
        body()
        t.append(Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9)
    }
    t.sort()
    fastest = t[0]
    return t[t.count / 2]
}

struct ConvBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "conv",
        abstract: "Forward, input-gradient and weight-gradient speed of every distinct yolov8n convolution, against sgemm on the same GEMM shapes.")

    @Option(help: "Image size.") var imgsz = 320
    @Option(help: "Batch size.") var batch = 8
    @Option(help: "Timed runs per measurement (the median is printed).") var runs = 7
    @OptionGroup var context: ContextOptions

    func run() throws {
        try context.apply()

        print("bench conv: yolov8n convolutions at \(imgsz) px, batch \(batch), \(Parallel.threads) threads, median of \(runs) runs")
        print("    C    O  k s    H  count |   fwd ms  GFLOP/s |  dgrad ms  GFLOP/s |  wgrad ms  GFLOP/s | sgemm GFLOP/s f/d/w")
        var rng = RandomState(seed: 1)
        var convTime = 0.0, gemmTime = 0.0, totalFlops = 0.0
        // Buffers per shape, then `runs` rounds that time every measurement once each, conv and
        // sgemm of the same GEMM back to back, so load from other processes hits both alike;
        // medians over the rounds.
        struct Case {
            let s: ConvShape, count: Int, g: ConvGeometry
            let x, w, y, gy, gx, gw, a1, b1, c1, c2, c3: Tensor
        }
        var cases: [Case] = []
        for (s, count) in yolov8nConvShapes(imgsz: imgsz) {
            let g = ConvGeometry(n: batch, c: s.c, h: s.h, w: s.h, o: s.o, k: s.k, s: s.s, p: s.k / 2)
            let np = g.n * g.pixels
            cases.append(Case(s: s, count: count, g: g,
                              x: Tensor.normal([g.n, g.c, g.h, g.w], rng: &rng), w: Tensor.normal([g.o, g.c, g.k, g.k], rng: &rng),
                              y: Tensor(uninitialized: [g.n, g.o, g.oh, g.ow]), gy: Tensor.normal([g.n, g.o, g.oh, g.ow], rng: &rng),
                              gx: Tensor(zeros: [g.n, g.c, g.h, g.w]), gw: Tensor(zeros: [g.o, g.c, g.k, g.k]),
                              a1: Tensor.normal([g.o, g.kdim], rng: &rng), b1: Tensor.normal([g.kdim, np], rng: &rng),
                              c1: Tensor(uninitialized: [g.o, np]), c2: Tensor(uninitialized: [g.kdim, np]),
                              c3: Tensor(uninitialized: [g.o, g.kdim])))
        }
        // Each timed call follows an untimed identical one (warm caches). Every round times all
        // convolutions, then all the equivalent sgemm calls (OpenBLAS on all threads); medians over
        // the rounds. Phases, not single calls, alternate: OpenBLAS's worker threads spin for a
        // while after a call and would otherwise steal a core from the convolution that follows.
        func time(_ body: () -> Void) -> Double {
            body()
            let t0 = DispatchTime.now().uptimeNanoseconds
            body()
            return Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
        }
        var samples = [[[Double]]](repeating: [[Double]](repeating: [], count: 6), count: cases.count)
        for round in 0...runs {          // round 0 warms up
            var t = [[Double]](repeating: [0, 0, 0, 0, 0, 0], count: cases.count)
            for (k, c) in cases.enumerated() {
                let g = c.g
                t[k][0] = time { Tensor.convForward(g, x: c.x.data, w: c.w.data, y: c.y.data) }
                t[k][2] = time { Tensor.convInputGrad(g, w: c.w.data, gy: c.gy.data, gx: c.gx.data, fresh: g.isPointwise) }
                t[k][4] = time { Tensor.convWeightGrad(g, x: c.x.data, gy: c.gy.data, gw: c.gw.data) }
            }
            BLAS.setThreads(ComputeContext.current.threads)   // the whole-problem reference uses every thread
            for (k, c) in cases.enumerated() {
                let g = c.g, np = g.n * g.pixels
                t[k][1] = time { BLAS.sgemm(m: g.o, n: np, k: g.kdim, a: c.a1.data, b: c.b1.data, c: c.c1.data) }
                t[k][3] = time { BLAS.sgemm(transA: true, m: g.kdim, n: np, k: g.o, a: c.a1.data, b: c.c1.data, c: c.c2.data) }
                t[k][5] = time { BLAS.sgemm(transB: true, m: g.o, n: g.kdim, k: np, a: c.c1.data, b: c.b1.data, c: c.c3.data) }
            }
            if round > 0 { for k in 0..<cases.count { for j in 0..<6 { samples[k][j].append(t[k][j]) } } }
        }
        for (k, c) in cases.enumerated() {
            let m = samples[k].map(median)
            let (tf, gf, td, gd, tw, gw2) = (m[0], m[1], m[2], m[3], m[4], m[5])
            let s = c.s, count = c.count
            let flops = 2.0 * Double(c.g.macs)
            let gfl = { (t: Double) in flops / t * 1e-9 }
            print(String(format: "%5d %4d %2d %1d %4d %6d | %8.2f %8.1f | %9.2f %8.1f | %9.2f %8.1f | %6.1f %6.1f %6.1f",
                         s.c, s.o, s.k, s.s, s.h, count, tf * 1e3, gfl(tf), td * 1e3, gfl(td), tw * 1e3, gfl(tw),
                         gfl(gf), gfl(gd), gfl(gw2)))
            let dgradUsed = s.c > 3   // the first layer's input gradient is never needed
            convTime += Double(count) * (tf + tw + (dgradUsed ? td : 0))
            gemmTime += Double(count) * (gf + gw2 + (dgradUsed ? gd : 0))
            totalFlops += Double(count) * flops * (dgradUsed ? 3 : 2)
        }
        print(String(format: "total: conv %.1f ms (%.1f GFLOP/s), sgemm %.1f ms (%.1f GFLOP/s) for fwd + dgrad + wgrad of one step",
                     convTime * 1e3, totalFlops / convTime * 1e-9, gemmTime * 1e3, totalFlops / gemmTime * 1e-9))
        print(String(format: "conv/sgemm throughput ratio: %.3f", gemmTime / convTime))
    }
}
