import Foundation
import TensorCore

/// Float canvases of a synthetic scene: RGB `[h, w, 3]` and IR `[h, w]`, values in 0...255.
struct SceneCanvas {
    let width: Int
    let height: Int
    var rgb: [Float]
    var ir: [Float]

    init(width: Int, height: Int) {
        self.width = width
        self.height = height
        rgb = [Float](repeating: 0, count: width * height * 3)
        ir = [Float](repeating: 0, count: width * height)
    }

    /// Quantised 8-bit images.
    func images() -> (rgb: RasterImage, ir: RasterImage) {
        func q(_ v: Float) -> UInt8 { UInt8(min(255, max(0, v + 0.5))) }
        return (RasterImage(width: width, height: height, channels: 3, pixels: rgb.map(q)),
                RasterImage(width: width, height: height, channels: 1, pixels: ir.map(q)))
    }
}

/// Smooth random texture: bilinear (smoothstep) interpolation of a random lattice.
struct ValueNoise {
    let cellsX: Int
    let cellsY: Int
    let lattice: [Float]

    init(cellsX: Int, cellsY: Int, rng: inout RandomState) {
        self.cellsX = max(1, cellsX)
        self.cellsY = max(1, cellsY)
        lattice = (0..<((self.cellsX + 1) * (self.cellsY + 1))).map { _ in rng.uniform(-1, 1) }
    }

    /// Value in [-1, 1] at normalised position (u, v) in [0, 1].
    @inline(__always) func sample(_ u: Float, _ v: Float) -> Float {
        let x = u * Float(cellsX), y = v * Float(cellsY)
        let x0 = min(Int(x), cellsX - 1), y0 = min(Int(y), cellsY - 1)
        var fx = x - Float(x0), fy = y - Float(y0)
        fx = fx * fx * (3 - 2 * fx)
        fy = fy * fy * (3 - 2 * fy)
        let s = cellsX + 1
        let a = lattice[y0 * s + x0], b = lattice[y0 * s + x0 + 1]
        let c = lattice[(y0 + 1) * s + x0], d = lattice[(y0 + 1) * s + x0 + 1]
        return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy
    }
}

/// A filled primitive of an object silhouette with its look in each stream.
struct ScenePart {
    enum Shape { case rect, ellipse }
    var shape: Shape
    /// Pixel extent [x0, x1) x [y0, y1).
    var x0: Float, y0: Float, x1: Float, y1: Float
    var color: (Float, Float, Float)
    /// IR intensity (temperature) 0...255.
    var heat: Float

    func contains(_ px: Float, _ py: Float) -> Bool {
        guard px >= x0 && px < x1 && py >= y0 && py < y1 else { return false }
        if shape == .rect { return true }
        let cx = (x0 + x1) / 2, cy = (y0 + y1) / 2, rx = (x1 - x0) / 2, ry = (y1 - y0) / 2
        let dx = (px - cx) / rx, dy = (py - cy) / ry
        return dx * dx + dy * dy <= 1
    }
}

/// What a silhouette shows in each stream.
enum SilhouetteLook {
    /// A real object: coloured in RGB, warm in IR.
    case object
    /// A hot non-object (lamp, engine): warm in IR like an object, a glowing light in RGB.
    case hotLamp
    /// A cold painted look-alike: object-coloured in RGB, invisible in IR.
    case painted
}

extension SceneCanvas {
    /// Draws `parts` in the streams `look` asks for; returns the pixel box `x1, y1, x2, y2` covered
    /// (the tight box of every pixel drawn), or nil when nothing was drawn. `visibility` < 1 blends
    /// an object's RGB colour into what lies behind it (unlit objects at night: only `visibility`
    /// of the colour difference remains, before the camera's darkening and noise).
    mutating func draw(_ parts: [ScenePart], look: SilhouetteLook, visibility: Float = 1,
                       rng: inout RandomState) -> (Float, Float, Float, Float)? {
        var minX = Int.max, minY = Int.max, maxX = -1, maxY = -1
        let bx0 = max(0, Int(parts.map(\.x0).min() ?? 0)), by0 = max(0, Int(parts.map(\.y0).min() ?? 0))
        let bx1 = min(width, Int((parts.map(\.x1).max() ?? 0).rounded(.up))), by1 = min(height, Int((parts.map(\.y1).max() ?? 0).rounded(.up)))
        guard bx0 < bx1 && by0 < by1 else { return nil }
        let lampTint: (Float, Float, Float) = (255, rng.uniform(225, 250), rng.uniform(150, 215))
        for y in by0..<by1 {
            for x in bx0..<bx1 {
                let px = Float(x) + 0.5, py = Float(y) + 0.5
                // The last part containing the pixel wins (parts are listed back to front).
                guard let part = parts.last(where: { $0.contains(px, py) }) else { continue }
                minX = min(minX, x); maxX = max(maxX, x); minY = min(minY, y); maxY = max(maxY, y)
                let i = y * width + x
                if look != .painted { ir[i] = part.heat }
                switch look {
                case .object, .painted:
                    let v = visibility
                    rgb[3 * i] += (part.color.0 - rgb[3 * i]) * v
                    rgb[3 * i + 1] += (part.color.1 - rgb[3 * i + 1]) * v
                    rgb[3 * i + 2] += (part.color.2 - rgb[3 * i + 2]) * v
                case .hotLamp:
                    rgb[3 * i] = lampTint.0; rgb[3 * i + 1] = lampTint.1; rgb[3 * i + 2] = lampTint.2
                }
            }
        }
        guard maxX >= 0 else { return nil }
        return (Float(minX), Float(minY), Float(maxX + 1), Float(maxY + 1))
    }

    /// Adds a light halo around a lamp's box (after night darkening, so lamps stay bright).
    mutating func glow(around box: (Float, Float, Float, Float), strength: Float) {
        let cx = (box.0 + box.2) / 2, cy = (box.1 + box.3) / 2
        let rx = (box.2 - box.0) * 0.5 + 0.35 * max(box.2 - box.0, box.3 - box.1)
        let ry = (box.3 - box.1) * 0.5 + 0.35 * max(box.2 - box.0, box.3 - box.1)
        let x0 = max(0, Int(cx - rx)), x1 = min(width, Int(cx + rx) + 1)
        let y0 = max(0, Int(cy - ry)), y1 = min(height, Int(cy + ry) + 1)
        guard x0 < x1 && y0 < y1 else { return }
        for y in y0..<y1 {
            for x in x0..<x1 {
                let dx = (Float(x) + 0.5 - cx) / rx, dy = (Float(y) + 0.5 - cy) / ry
                let rho = dx * dx + dy * dy
                if rho >= 1 { continue }
                let g = strength * (1 - rho) * (1 - rho)
                let i = 3 * (y * width + x)
                rgb[i] += g
                rgb[i + 1] += g * 0.92
                rgb[i + 2] += g * 0.7
            }
        }
    }

    /// Fills the rectangle [x0, x1) x [y0, y1) (clipped) in the chosen streams.
    mutating func fillRect(_ x0: Int, _ y0: Int, _ x1: Int, _ y1: Int, color: (Float, Float, Float)?, heat: Float?) {
        let xa = max(0, x0), xb = min(width, x1), ya = max(0, y0), yb = min(height, y1)
        guard xa < xb && ya < yb else { return }
        for y in ya..<yb {
            for x in xa..<xb {
                let i = y * width + x
                if let color { rgb[3 * i] = color.0; rgb[3 * i + 1] = color.1; rgb[3 * i + 2] = color.2 }
                if let heat { ir[i] = heat }
            }
        }
    }

    /// Fills the ellipse inscribed in [x0, x1) x [y0, y1) in the chosen streams.
    mutating func fillEllipse(_ x0: Float, _ y0: Float, _ x1: Float, _ y1: Float, color: (Float, Float, Float)?, heat: Float?) {
        let part = ScenePart(shape: .ellipse, x0: x0, y0: y0, x1: x1, y1: y1, color: color ?? (0, 0, 0), heat: heat ?? 0)
        let xa = max(0, Int(x0)), xb = min(width, Int(x1.rounded(.up))), ya = max(0, Int(y0)), yb = min(height, Int(y1.rounded(.up)))
        guard xa < xb && ya < yb else { return }
        for y in ya..<yb {
            for x in xa..<xb where part.contains(Float(x) + 0.5, Float(y) + 0.5) {
                let i = y * width + x
                if let color { rgb[3 * i] = color.0; rgb[3 * i + 1] = color.1; rgb[3 * i + 2] = color.2 }
                if let heat { ir[i] = heat }
            }
        }
    }
}

/// Silhouettes of the two classes inside a pixel box; the drawn pixels span the whole box.
enum SceneShapes {
    /// A standing person (class 0): head, torso with arms, two legs. Tall and narrow.
    static func person(x: Float, y: Float, w: Float, h: Float, rng: inout RandomState,
                       shirt: (Float, Float, Float), trousers: (Float, Float, Float), skin: (Float, Float, Float)) -> [ScenePart] {
        let body = rng.uniform(195, 225), headHeat = min(250, body + rng.uniform(10, 25)), legHeat = body - rng.uniform(5, 20)
        let headH = h * 0.2, headW = min(w * 0.75, headH * 0.9)
        let torsoTop = y + headH * 0.85, torsoBottom = y + h * 0.6
        let legGap = w * rng.uniform(0.04, 0.12)
        return [
            ScenePart(shape: .rect, x0: x + w * 0.16, y0: torsoBottom - 1, x1: x + w / 2 - legGap / 2, y1: y + h,
                      color: trousers, heat: legHeat),
            ScenePart(shape: .rect, x0: x + w / 2 + legGap / 2, y0: torsoBottom - 1, x1: x + w * 0.84, y1: y + h,
                      color: trousers, heat: legHeat),
            ScenePart(shape: .ellipse, x0: x, y0: torsoTop, x1: x + w, y1: torsoBottom + h * 0.05, color: shirt, heat: body),
            ScenePart(shape: .ellipse, x0: x + (w - headW) / 2, y0: y, x1: x + (w + headW) / 2, y1: y + headH,
                      color: skin, heat: headHeat),
        ]
    }

    /// A car seen from the side (class 1): body, cabin with windows, two wheels; one end is the
    /// hot engine. Wide.
    static func car(x: Float, y: Float, w: Float, h: Float, rng: inout RandomState, paint: (Float, Float, Float)) -> [ScenePart] {
        let bodyHeat = rng.uniform(165, 195), engineHeat = min(252, bodyHeat + rng.uniform(30, 55))
        let wheelHeat = rng.uniform(190, 220), glassHeat = rng.uniform(120, 150)
        let engineLeft = rng.uniform() < 0.5
        let wheelR = h * 0.2
        let glass: (Float, Float, Float) = (paint.0 * 0.25 + 30, paint.1 * 0.25 + 38, paint.2 * 0.25 + 50)
        let tyre: (Float, Float, Float) = (28, 28, 30)
        let cabinX0 = x + w * rng.uniform(0.15, 0.28), cabinX1 = x + w * rng.uniform(0.66, 0.8)
        var parts = [
            ScenePart(shape: .rect, x0: cabinX0, y0: y, x1: cabinX1, y1: y + h * 0.45, color: paint, heat: bodyHeat - 10),
            ScenePart(shape: .rect, x0: cabinX0 + w * 0.04, y0: y + h * 0.08, x1: cabinX1 - w * 0.04, y1: y + h * 0.38,
                      color: glass, heat: glassHeat),
            ScenePart(shape: .rect, x0: x, y0: y + h * 0.38, x1: x + w, y1: y + h - wheelR, color: paint, heat: bodyHeat),
        ]
        let engine = engineLeft
            ? ScenePart(shape: .rect, x0: x, y0: y + h * 0.42, x1: x + w * 0.22, y1: y + h - wheelR * 1.2, color: paint, heat: engineHeat)
            : ScenePart(shape: .rect, x0: x + w * 0.78, y0: y + h * 0.42, x1: x + w, y1: y + h - wheelR * 1.2, color: paint, heat: engineHeat)
        parts.append(engine)
        for cx in [x + w * 0.22, x + w * 0.78] {
            parts.append(ScenePart(shape: .ellipse, x0: cx - wheelR, y0: y + h - 2 * wheelR, x1: cx + wheelR, y1: y + h,
                                   color: tyre, heat: wheelHeat))
        }
        return parts
    }
}
