import Foundation
import TensorCore

/// An axis-aligned box in corner form (x1, y1, x2, y2).
public struct Box: Equatable, Sendable, CustomStringConvertible {
    public var x1, y1, x2, y2: Float

    public init(x1: Float, y1: Float, x2: Float, y2: Float) {
        (self.x1, self.y1, self.x2, self.y2) = (x1, y1, x2, y2)
    }

    /// From centre and size.
    public init(cx: Float, cy: Float, w: Float, h: Float) {
        self.init(x1: cx - w / 2, y1: cy - h / 2, x2: cx + w / 2, y2: cy + h / 2)
    }

    public var width: Float { x2 - x1 }
    public var height: Float { y2 - y1 }
    public var area: Float { max(width, 0) * max(height, 0) }
    public var center: (x: Float, y: Float) { ((x1 + x2) / 2, (y1 + y2) / 2) }
    /// (cx, cy, w, h)
    public var xywh: (Float, Float, Float, Float) { ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1) }
    public var description: String { "[\(x1), \(y1), \(x2), \(y2)]" }

    public func scaled(by s: Float) -> Box { Box(x1: x1 * s, y1: y1 * s, x2: x2 * s, y2: y2 * s) }
}

/// Overlap measures with Ultralytics' conventions (`bbox_iou`, eps 1e-7).
public enum BoxIoU {
    public static let eps: Float = 1e-7

    /// Plain IoU of two corner boxes (`box_iou`: inter / (area1 + area2 - inter + eps)); used by NMS and metrics.
    @inline(__always)
    public static func iou(_ a: Box, _ b: Box) -> Float {
        let iw = max(min(a.x2, b.x2) - max(a.x1, b.x1), 0)
        let ih = max(min(a.y2, b.y2) - max(a.y1, b.y1), 0)
        let inter = iw * ih
        return inter / ((a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter + eps)
    }

    /// The IoU family as `bbox_iou` computes it: eps added to the heights and to the union.
    public enum Kind: Sendable { case iou, giou, diou, ciou }

    public static func measure(_ a: Box, _ b: Box, _ kind: Kind) -> Float {
        let w1 = a.x2 - a.x1, h1 = a.y2 - a.y1 + eps
        let w2 = b.x2 - b.x1, h2 = b.y2 - b.y1 + eps
        let inter = max(min(a.x2, b.x2) - max(a.x1, b.x1), 0) * max(min(a.y2, b.y2) - max(a.y1, b.y1), 0)
        let union = w1 * h1 + w2 * h2 - inter + eps
        let iou = inter / union
        if kind == .iou { return iou }
        let cw = max(a.x2, b.x2) - min(a.x1, b.x1)
        let ch = max(a.y2, b.y2) - min(a.y1, b.y1)
        if kind == .giou {
            let carea = cw * ch + eps
            return iou - (carea - union) / carea
        }
        let c2 = cw * cw + ch * ch + eps
        let dx = b.x1 + b.x2 - a.x1 - a.x2, dy = b.y1 + b.y2 - a.y1 - a.y2
        let rho2 = (dx * dx + dy * dy) / 4
        if kind == .diou { return iou - rho2 / c2 }
        let d = Foundation.atan(w2 / h2) - Foundation.atan(w1 / h1)
        let v = Float(4 / (Double.pi * Double.pi)) * d * d
        let alpha = v / (v - iou + (1 + eps))
        return iou - (rho2 / c2 + v * alpha)
    }

    /// CIoU of a (prediction) against b (constant target) and its gradient w.r.t. a's corners.
    ///
    /// Matches autograd through `bbox_iou(..., CIoU=True)`: alpha is a constant (computed under
    /// no_grad); at exact ties min/max split the gradient in half, and a clamped intersection
    /// side passes gradient only where it is > 0.
    public static func ciouWithGradient(_ a: Box, _ b: Box) -> (value: Float, grad: (Float, Float, Float, Float)) {
        let w1 = a.x2 - a.x1, h1 = a.y2 - a.y1 + eps
        let w2 = b.x2 - b.x1, h2 = b.y2 - b.y1 + eps
        let iw = min(a.x2, b.x2) - max(a.x1, b.x1)
        let ih = min(a.y2, b.y2) - max(a.y1, b.y1)
        let iwc = max(iw, 0), ihc = max(ih, 0)
        let inter = iwc * ihc
        let union = w1 * h1 + w2 * h2 - inter + eps
        let iou = inter / union
        let cw = max(a.x2, b.x2) - min(a.x1, b.x1)
        let ch = max(a.y2, b.y2) - min(a.y1, b.y1)
        let c2 = cw * cw + ch * ch + eps
        let dx = b.x1 + b.x2 - a.x1 - a.x2, dy = b.y1 + b.y2 - a.y1 - a.y2
        let rho2 = (dx * dx + dy * dy) / 4
        let k = Float(4 / (Double.pi * Double.pi))
        let d = Foundation.atan(w2 / h2) - Foundation.atan(w1 / h1)
        let v = k * d * d
        let alpha = v / (v - iou + (1 + eps))
        let value = iou - (rho2 / c2 + v * alpha)

        // d(min(p, q))/dp = 1, 1/2 on ties, 0; likewise max.
        @inline(__always) func less(_ p: Float, _ q: Float) -> Float { p < q ? 1 : (p == q ? 0.5 : 0) }
        @inline(__always) func greater(_ p: Float, _ q: Float) -> Float { p > q ? 1 : (p == q ? 0.5 : 0) }
        // Intersection sides.
        let diwX1 = iw > 0 ? -greater(a.x1, b.x1) : 0, diwX2 = iw > 0 ? less(a.x2, b.x2) : 0
        let dihY1 = ih > 0 ? -greater(a.y1, b.y1) : 0, dihY2 = ih > 0 ? less(a.y2, b.y2) : 0
        let dInter = (ihc * diwX1, iwc * dihY1, ihc * diwX2, iwc * dihY2)
        // Union: d(w1 h1) - d inter.
        let dUnion = (-h1 - dInter.0, -w1 - dInter.1, h1 - dInter.2, w1 - dInter.3)
        @inline(__always) func dIoU(_ di: Float, _ du: Float) -> Float { di / union - iou * du / union }
        // Enclosing box.
        let dcwX1 = -less(a.x1, b.x1), dcwX2 = greater(a.x2, b.x2)
        let dchY1 = -less(a.y1, b.y1), dchY2 = greater(a.y2, b.y2)
        let dc2 = (2 * cw * dcwX1, 2 * ch * dchY1, 2 * cw * dcwX2, 2 * ch * dchY2)
        // Centre distance: rho2 = (dx^2 + dy^2) / 4, d dx / d x1 = d dx / d x2 = -1.
        let drhoX = -dx / 2, drhoY = -dy / 2
        // Aspect term: v = k (atan(w2/h2) - atan(w1/h1))^2.
        let den = h1 * h1 + w1 * w1
        let dvX1 = 2 * k * d * h1 / den, dvX2 = -dvX1
        let dvY1 = -2 * k * d * w1 / den, dvY2 = -dvY1
        func total(_ di: Float, _ du: Float, _ drho: Float, _ dc: Float, _ dv: Float) -> Float {
            dIoU(di, du) - (drho / c2 - rho2 * dc / (c2 * c2)) - alpha * dv
        }
        let g = (total(dInter.0, dUnion.0, drhoX, dc2.0, dvX1),
                 total(dInter.1, dUnion.1, drhoY, dc2.1, dvY1),
                 total(dInter.2, dUnion.2, drhoX, dc2.2, dvX2),
                 total(dInter.3, dUnion.3, drhoY, dc2.3, dvY2))
        return (value, g)
    }
}

extension Tensor {
    /// CIoU of corner boxes built from autodiff ops: a reference for `BoxIoU.ciouWithGradient`
    /// (which the loss uses) and a differentiable measure in its own right.
    /// a, b: [N, 4] (x1, y1, x2, y2) -> [N]. alpha is detached by default, as in Ultralytics.
    public static func ciou(_ a: Tensor, _ b: Tensor, detachAlpha: Bool = true) -> Tensor {
        let eps = BoxIoU.eps
        let ac = a.split([1, 1, 1, 1], axis: 1), bc = b.split([1, 1, 1, 1], axis: 1)
        let (x1a, y1a, x2a, y2a) = (ac[0], ac[1], ac[2], ac[3])
        let (x1b, y1b, x2b, y2b) = (bc[0], bc[1], bc[2], bc[3])
        let w1 = x2a - x1a, h1 = y2a - y1a + eps, w2 = x2b - x1b, h2 = y2b - y1b + eps
        let iw = (Tensor.minimum(x2a, x2b) - Tensor.maximum(x1a, x1b)).clamp(min: 0)
        let ih = (Tensor.minimum(y2a, y2b) - Tensor.maximum(y1a, y1b)).clamp(min: 0)
        let inter = iw * ih
        let union = w1 * h1 + w2 * h2 - inter + eps
        let iou = inter / union
        let cw = Tensor.maximum(x2a, x2b) - Tensor.minimum(x1a, x1b)
        let ch = Tensor.maximum(y2a, y2b) - Tensor.minimum(y1a, y1b)
        let c2 = cw * cw + ch * ch + eps
        let dx = x1b + x2b - x1a - x2a, dy = y1b + y2b - y1a - y2a
        let rho2 = (dx * dx + dy * dy) / 4
        let d = (w2 / h2).atan() - (w1 / h1).atan()
        let v = d * d * Float(4 / (Double.pi * Double.pi))
        let alpha = detachAlpha ? noGrad { v / (v - iou + (1 + eps)) }.detached() : v / (v - iou + (1 + eps))
        return (iou - (rho2 / c2 + v * alpha)).reshape([-1])
    }
}
