import Foundation

/// Estimates where an IR camera's pixels land in its RGB partner's frame, for data sets whose
/// cameras are not registered pixel for pixel (DroneVehicle, KAIST, FLIR): `check_data --align`.
///
/// Model: x_rgb = sx · x_ir + tx, y_rgb = sy · y_ir + ty (scale per axis and translation, the
/// offsets such rigs have; written as a homography). Both images become gradient magnitudes
/// (edges survive the change of modality where intensities do not), normalised, and the
/// parameters maximise their normalised cross-correlation summed over all pairs (one joint
/// estimate: a pair without structure does not pull it off). Search: a coarse grid at 48 px,
/// then refinements at 96 and 192 px around the best, each halving the step.
public enum Registration {
    public struct Estimate: Sendable {
        /// IR pixel -> RGB pixel in the original images.
        public var irToRGB: Matrix3
        /// 1 - mean normalised cross-correlation of the gradient maps at the estimate (0 = identical edges).
        public var residual: Double
        /// The same at the identity (no registration), for comparison.
        public var residualUnregistered: Double
        /// Pairs used.
        public var pairs: Int
    }

    /// A single-channel Float image.
    struct Plane {
        var w: Int, h: Int
        var v: [Float]
        subscript(x: Int, y: Int) -> Float { v[y * w + x] }
    }

    /// Luma of `img` resized to `width` x `height`, then Sobel gradient magnitude, zero mean, unit variance.
    static func gradients(_ img: RasterImage, width: Int, height: Int) -> Plane {
        let grey = (img.channels == 1 ? img : img.converted(toChannels: 1)).resized(width: width, height: height)
        var g = [Float](repeating: 0, count: width * height)
        for y in 1..<max(height - 1, 1) {
            for x in 1..<max(width - 1, 1) {
                func p(_ dx: Int, _ dy: Int) -> Float { Float(grey.pixels[(y + dy) * width + x + dx]) }
                let gx = (p(1, -1) + 2 * p(1, 0) + p(1, 1)) - (p(-1, -1) + 2 * p(-1, 0) + p(-1, 1))
                let gy = (p(-1, 1) + 2 * p(0, 1) + p(1, 1)) - (p(-1, -1) + 2 * p(0, -1) + p(1, -1))
                g[y * width + x] = (gx * gx + gy * gy).squareRoot()
            }
        }
        let mean = g.reduce(0, +) / Float(max(g.count, 1))
        var varsum: Float = 0
        for i in g.indices { g[i] -= mean; varsum += g[i] * g[i] }
        let sd = max((varsum / Float(max(g.count, 1))).squareRoot(), 1e-6)
        for i in g.indices { g[i] /= sd }
        return Plane(w: width, h: height, v: g)
    }

    /// NCC of `rgb` with `ir` sampled bilinearly at x_ir = (x - tx) / sx, over the overlap.
    static func score(_ rgb: Plane, _ ir: Plane, sx: Double, sy: Double, tx: Double, ty: Double) -> Double {
        var sab = 0.0, saa = 0.0, sbb = 0.0, sa = 0.0, sb = 0.0, n = 0.0
        for y in 0..<rgb.h {
            let fy = (Double(y) - ty) / sy
            guard fy >= 0 && fy < Double(ir.h - 1) else { continue }
            let yi = Int(fy), wy = Float(fy - Double(yi))
            for x in 0..<rgb.w {
                let fx = (Double(x) - tx) / sx
                guard fx >= 0 && fx < Double(ir.w - 1) else { continue }
                let xi = Int(fx), wx = Float(fx - Double(xi))
                let top = ir[xi, yi] + (ir[xi + 1, yi] - ir[xi, yi]) * wx
                let bottom = ir[xi, yi + 1] + (ir[xi + 1, yi + 1] - ir[xi, yi + 1]) * wx
                let a = Double(rgb[x, y]), b = Double(top + (bottom - top) * wy)
                sab += a * b; saa += a * a; sbb += b * b; sa += a; sb += b; n += 1
            }
        }
        // Little overlap is no evidence.
        guard n > 0.25 * Double(rgb.w * rgb.h) else { return -1 }
        let cov = sab / n - sa / n * sb / n
        let va = saa / n - (sa / n) * (sa / n), vb = sbb / n - (sb / n) * (sb / n)
        return cov / max((va * vb).squareRoot(), 1e-12)
    }

    /// The estimate over `pairs` (RGB, IR) of any sizes.
    public static func estimate(_ pairs: [(rgb: RasterImage, ir: RasterImage)]) -> Estimate? {
        guard let first = pairs.first else { return nil }
        let rgbW = first.rgb.width, rgbH = first.rgb.height, irW = first.ir.width, irH = first.ir.height
        guard pairs.allSatisfy({ $0.rgb.width == rgbW && $0.rgb.height == rgbH && $0.ir.width == irW && $0.ir.height == irH }) else { return nil }
        // Parameters in units of the RGB width/height: x_rgb/W = sx' · x_ir/Wi + tx'/W, so one
        // estimate serves every working resolution.
        var best = (sx: 1.0, sy: 1.0, tx: 0.0, ty: 0.0)
        var bestScore = -Double.infinity
        // In normalised, centred units: x_rgb/W - 1/2 = a (x_ir/Wi - 1/2) + t (scale about the
        // centres, so scale and translation do not trade off against each other).
        func total(_ planes: [(Plane, Plane)], _ c: (sx: Double, sy: Double, tx: Double, ty: Double)) -> Double {
            planes.reduce(0) { acc, p in
                let sx = c.sx * Double(p.0.w) / Double(p.1.w), sy = c.sy * Double(p.0.h) / Double(p.1.h)
                let tx = (0.5 - 0.5 * c.sx + c.tx) * Double(p.0.w), ty = (0.5 - 0.5 * c.sy + c.ty) * Double(p.0.h)
                return acc + score(p.0, p.1, sx: sx, sy: sy, tx: tx, ty: ty)
            }
        }
        var identity = 0.0
        for (level, side) in [48, 96, 192].enumerated() {
            let scale = Double(side) / Double(max(rgbW, rgbH))
            let w = max(8, Int(Double(rgbW) * scale)), h = max(8, Int(Double(rgbH) * scale))
            let iw = max(8, Int(Double(irW) * scale)), ih = max(8, Int(Double(irH) * scale))
            let planes = pairs.map { (gradients($0.rgb, width: w, height: h), gradients($0.ir, width: iw, height: ih)) }
            // The identity in pixels (x_rgb = x_ir): a = Wi / W, t = (a - 1) / 2.
            let base = (sx: Double(irW) / Double(rgbW), sy: Double(irH) / Double(rgbH))
            if level == 2 { identity = total(planes, (base.sx, base.sy, (base.sx - 1) / 2, (base.sy - 1) / 2)) / Double(pairs.count) }
            if level == 0 {
                var candidates: [(Double, Double, Double, Double)] = []
                let scales = stride(from: -0.25, through: 0.25, by: 0.025).map { exp($0) }
                let shifts = stride(from: -0.2, through: 0.2, by: 1.0 / Double(w))
                let t0 = ((base.sx - 1) / 2, (base.sy - 1) / 2)
                for s in scales { for tx in shifts { for ty in shifts { candidates.append((base.sx * s, base.sy * s, t0.0 + tx, t0.1 + ty)) } } }
                bestScore = -Double.infinity
                for c in candidates {
                    let v = total(planes, (c.0, c.1, c.2, c.3))
                    if v > bestScore { bestScore = v; best = (c.0, c.1, c.2, c.3) }
                }
                continue
            }
            // Local refinement: +/- 2 steps in each parameter, repeated while it improves.
            let ds = 0.025 / Double(1 << level), dt = 1.0 / Double(w)
            bestScore = total(planes, best)
            for _ in 0..<6 {
                let centre = best
                var moved = false
                for a in -2...2 { for b in -2...2 { for c in -2...2 { for d in -2...2 {
                    let cand = (centre.sx * exp(Double(a) * ds), centre.sy * exp(Double(b) * ds), centre.tx + Double(c) * dt, centre.ty + Double(d) * dt)
                    let v = total(planes, cand)
                    if v > bestScore + 1e-12 { bestScore = v; best = cand; moved = true }
                } } } }
                if !moved { break }
            }
        }
        // Back to original pixels: x_rgb = (a W / Wi) x_ir + (1/2 - a/2 + t) W.
        let sx = best.sx * Double(rgbW) / Double(irW), sy = best.sy * Double(rgbH) / Double(irH)
        let m = Matrix3([sx, 0, (0.5 - 0.5 * best.sx + best.tx) * Double(rgbW), 0, sy, (0.5 - 0.5 * best.sy + best.ty) * Double(rgbH), 0, 0, 1])
        return Estimate(irToRGB: m, residual: 1 - bestScore / Double(pairs.count), residualUnregistered: 1 - identity, pairs: pairs.count)
    }
}
