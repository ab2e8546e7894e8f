import Foundation
import NN
import TensorCore

extension DetectionModel {
    /// Multiply-accumulates of one forward pass on a square `imgsz` image, counted over every
    /// convolution (as thop counts them; batch norm, activations and pooling excluded).
    public func macs(imgsz: Int) -> Int {
        var total = 0
        for node in nodes {
            let inSize: [Int] = node.sources.map { src in
                switch src {
                case let .node(j): return imgsz / max(nodes[j].stride, 1)
                case .input: return imgsz
                }
            }
            switch node.kind {
            case let .layer(l): total += DetectionModel.macs(of: l, size: inSize[0])
            case .concat: break
            case let .detect(d):
                for (i, size) in inSize.enumerated() {
                    for branch in [d.cv2[i], d.cv3[i]] { for l in branch { total += DetectionModel.macs(of: l, size: size) } }
                }
            }
        }
        return total
    }

    /// GFLOPs (2 x MACs) of one forward pass at `imgsz`.
    public func gflops(imgsz: Int = 640) -> Double { 2 * Double(macs(imgsz: imgsz)) / 1e9 }

    static func convOut(_ size: Int, k: Int, s: Int, p: Int) -> Int { (size + 2 * p - k) / s + 1 }

    static func macs(of layer: UnaryLayer, size: Int) -> Int {
        switch layer {
        case let c as ConvBlock:
            let o = convOut(size, k: c.k, s: c.s, p: c.p)
            return c.c2 * c.c1 * c.k * c.k * o * o
        case let c as Conv2d:
            let w = c.weight.shape
            let o = convOut(size, k: w[2], s: c.s, p: c.p)
            return w[0] * w[1] * w[2] * w[3] * o * o
        case let b as Bottleneck:
            return macs(of: b.cv1, size: size) + macs(of: b.cv2, size: size)
        case let c as C2f:
            return macs(of: c.cv1, size: size) + macs(of: c.cv2, size: size) + c.m.reduce(0) { $0 + macs(of: $1, size: size) }
        case let s as SPPF:
            return macs(of: s.cv1, size: size) + macs(of: s.cv2, size: size)
        case let q as Sequential:
            var size = size, total = 0
            for l in q.layers {
                total += macs(of: l, size: size)
                if let c = l as? ConvBlock { size = convOut(size, k: c.k, s: c.s, p: c.p) }
            }
            return total
        default:
            return 0
        }
    }

    /// Leaf layers (convolutions, batch norms, activations, pools, upsamples, concats, DFL), as a
    /// rough analogue of the module count Ultralytics prints.
    public var layerCount: Int {
        var count = 0
        func leaves(_ l: UnaryLayer) -> Int {
            switch l {
            case is ConvBlock: return 3
            case is Conv2d, is Upsample: return 1
            case let b as Bottleneck: return leaves(b.cv1) + leaves(b.cv2)
            case let c as C2f: return leaves(c.cv1) + leaves(c.cv2) + c.m.reduce(0) { $0 + leaves($1) }
            case let s as SPPF: return leaves(s.cv1) + leaves(s.cv2) + 1
            case let q as Sequential: return q.layers.reduce(0) { $0 + leaves($1) }
            default: return 1
            }
        }
        for n in nodes {
            switch n.kind {
            case let .layer(l): count += leaves(l)
            case .concat: count += 1
            case let .detect(d): count += (d.cv2 + d.cv3).reduce(0) { $0 + $1.reduce(0) { $0 + leaves($1) } } + 1
            }
        }
        return count
    }

    /// Ultralytics-style table: one row per YAML row (index, from, repeats, params, module,
    /// arguments, stream) and a closing `N layers, P parameters, G GFLOPs` line (GFLOPs at `imgsz`).
    public func summary(imgsz: Int = 640, title: String? = nil) -> String {
        var lines: [String] = []
        func l(_ s: String, _ w: Int) -> String { s.count >= w ? s : s + String(repeating: " ", count: w - s.count) }
        func r(_ s: String, _ w: Int) -> String { s.count >= w ? s : String(repeating: " ", count: w - s.count) + s }
        lines.append(r("", 4) + " " + l("name", 16) + r("from", 18) + r("n", 4) + r("params", 11) + "  " + l("module", 12) + l("arguments", 28) + "stream")
        for node in nodes {
            let from = node.row.fromIsList ? "[" + node.row.from.map(\.description).joined(separator: ", ") + "]" : node.row.from[0].description
            let params = node.namedTensors().filter { $0.role != .buffer }.reduce(0) { $0 + $1.tensor.count }
            lines.append(r(String(node.index), 4) + " " + l(node.name, 16) + r(from, 18) + r(String(node.row.repeats), 4) +
                         r(String(params), 11) + "  " + l(node.moduleName, 12) + l(node.arguments, 28) + node.streamTag)
        }
        let gradients = parameters.reduce(0) { $0 + $1.tensor.count }
        let name = title ?? URL(fileURLWithPath: spec.file).deletingPathExtension().lastPathComponent
        lines.append("\(name) summary: \(layerCount) layers, \(DetectionModel.grouped(parameterCount)) parameters, " +
                     "\(DetectionModel.grouped(gradients)) gradients, " + String(format: "%.1f", gflops(imgsz: imgsz)) + " GFLOPs (at \(imgsz) px)")
        return lines.joined(separator: "\n")
    }

    /// 3011043 -> "3,011,043".
    public static func grouped(_ n: Int) -> String {
        let s = String(n)
        var out = ""
        for (i, ch) in s.reversed().enumerated() {
            if i > 0 && i % 3 == 0 { out.append(",") }
            out.append(ch)
        }
        return String(out.reversed())
    }
}
