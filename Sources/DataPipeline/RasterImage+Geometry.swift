import Foundation

/// A 3x3 projective matrix in row-major order mapping source pixel coordinates to destination
/// ones: `[x', y', w'] = M · [x, y, 1]`, `(x'/w', y'/w')`.
public struct Matrix3: Sendable, Equatable, Codable {
    public var m: [Double]

    /// The identity.
    public static let identity = Matrix3([1, 0, 0, 0, 1, 0, 0, 0, 1])

    public init(_ m: [Double]) {
        precondition(m.count == 9, "Matrix3 needs 9 values, got \(m.count)")
        self.m = m
    }

    /// Translation by (tx, ty).
    public static func translation(_ tx: Double, _ ty: Double) -> Matrix3 { Matrix3([1, 0, tx, 0, 1, ty, 0, 0, 1]) }

    /// `self · other` (apply `other` first).
    public static func * (a: Matrix3, b: Matrix3) -> Matrix3 {
        var r = [Double](repeating: 0, count: 9)
        for i in 0..<3 {
            for j in 0..<3 {
                var s = 0.0
                for k in 0..<3 { s += a.m[i * 3 + k] * b.m[k * 3 + j] }
                r[i * 3 + j] = s
            }
        }
        return Matrix3(r)
    }

    /// True when the last row is (0, 0, 1).
    public var isAffine: Bool { m[6] == 0 && m[7] == 0 && m[8] == 1 }

    /// The point (x, y) mapped by the matrix.
    public func apply(_ x: Double, _ y: Double) -> (x: Double, y: Double) {
        let w = m[6] * x + m[7] * y + m[8]
        let d = w == 0 ? 1e-12 : w
        return ((m[0] * x + m[1] * y + m[2]) / d, (m[3] * x + m[4] * y + m[5]) / d)
    }

    /// The inverse (adjugate / determinant); nil when singular.
    public var inverse: Matrix3? {
        let a = m
        let c00 = a[4] * a[8] - a[5] * a[7], c01 = a[5] * a[6] - a[3] * a[8], c02 = a[3] * a[7] - a[4] * a[6]
        let det = a[0] * c00 + a[1] * c01 + a[2] * c02
        if abs(det) < 1e-15 { return nil }
        let inv = 1 / det
        return Matrix3([
            c00 * inv, (a[2] * a[7] - a[1] * a[8]) * inv, (a[1] * a[5] - a[2] * a[4]) * inv,
            c01 * inv, (a[0] * a[8] - a[2] * a[6]) * inv, (a[2] * a[3] - a[0] * a[5]) * inv,
            c02 * inv, (a[1] * a[6] - a[0] * a[7]) * inv, (a[0] * a[4] - a[1] * a[3]) * inv,
        ])
    }
}

extension RasterImage {
    /// Bilinear resize with OpenCV's INTER_LINEAR conventions (pixel centres at +0.5, edge clamp).
    public func resized(width newWidth: Int, height newHeight: Int) -> RasterImage {
        precondition(newWidth > 0 && newHeight > 0, "resize to \(newWidth)x\(newHeight)")
        if newWidth == width && newHeight == height { return self }
        let c = channels
        func table(_ dst: Int, _ src: Int) -> (lo: [Int], hi: [Int], w: [Float]) {
            var lo = [Int](repeating: 0, count: dst), hi = lo, w = [Float](repeating: 0, count: dst)
            let scale = Double(src) / Double(dst)
            for d in 0..<dst {
                let f = (Double(d) + 0.5) * scale - 0.5
                var i0 = Int(f.rounded(.down))
                var a = Float(f - Double(i0))
                if i0 < 0 { i0 = 0; a = 0 }
                if i0 >= src - 1 { i0 = src - 1; a = 0 }
                lo[d] = i0
                hi[d] = min(i0 + 1, src - 1)
                w[d] = a
            }
            return (lo, hi, w)
        }
        let xs = table(newWidth, width), ys = table(newHeight, height)
        var out = [UInt8](repeating: 0, count: newWidth * newHeight * c)
        let srcStride = rowStride
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                // Horizontal pass per needed source row into Float rows, then the vertical blend.
                var row0 = [Float](repeating: 0, count: newWidth * c)
                var row1 = row0
                var cached0 = -1, cached1 = -1
                func horizontal(_ y: Int, into row: inout [Float]) {
                    let base = y * srcStride
                    row.withUnsafeMutableBufferPointer { r in
                        for dx in 0..<newWidth {
                            let a = xs.w[dx], b = 1 - a
                            let p0 = base + xs.lo[dx] * c, p1 = base + xs.hi[dx] * c
                            for ch in 0..<c {
                                r[dx * c + ch] = Float(src[p0 + ch]) * b + Float(src[p1 + ch]) * a
                            }
                        }
                    }
                }
                for dy in 0..<newHeight {
                    let y0 = ys.lo[dy], y1 = ys.hi[dy]
                    if cached0 != y0 {
                        if cached1 == y0 { swap(&row0, &row1); swap(&cached0, &cached1) } else { horizontal(y0, into: &row0); cached0 = y0 }
                    }
                    if cached1 != y1 { horizontal(y1, into: &row1); cached1 = y1 }
                    let a = ys.w[dy], b = 1 - a
                    let outBase = dy * newWidth * c
                    row0.withUnsafeBufferPointer { r0 in
                        row1.withUnsafeBufferPointer { r1 in
                            for i in 0..<(newWidth * c) {
                                dst[outBase + i] = UInt8(min(255, r0[i] * b + r1[i] * a + 0.5))
                            }
                        }
                    }
                }
            }
        }
        return RasterImage(width: newWidth, height: newHeight, channels: c, pixels: out)
    }

    /// The image warped by `matrix` (source -> destination pixel coordinates, OpenCV's
    /// `warpAffine` / `warpPerspective` convention: integer pixel positions, no half-pixel shift)
    /// into a `width` x `height` image; bilinear sampling, samples outside the source take `border`.
    public func warped(by matrix: Matrix3, width outWidth: Int, height outHeight: Int, border: UInt8 = 114) -> RasterImage {
        Self.warp([self], by: matrix, width: outWidth, height: outHeight, border: border)[0]
    }

    /// Warps images of one size (the RGB and IR of a pair) by the same matrix; each source
    /// coordinate is computed once and sampled in every image, so the geometry is identical.
    public static func warp(_ sources: [RasterImage], by matrix: Matrix3, width outWidth: Int, height outHeight: Int,
                            border: UInt8 = 114) -> [RasterImage] {
        guard let first = sources.first else { return [] }
        let w = first.width, h = first.height
        precondition(sources.allSatisfy { $0.width == w && $0.height == h },
                     "warp: images of one size expected, got \(sources.map { "\($0.width)x\($0.height)" })")
        var outs = sources.map { [UInt8](repeating: border, count: outWidth * outHeight * $0.channels) }
        let done = { (outs: [[UInt8]]) in
            zip(sources, outs).map { RasterImage(width: outWidth, height: outHeight, channels: $0.channels, pixels: $1) }
        }
        guard let inv = matrix.inverse, w > 0, h > 0, outWidth > 0, outHeight > 0 else { return done(outs) }
        let m = inv.m
        let affine = inv.isAffine
        let borderF = Float(border)
        // Per output row: the source cell (x0, y0), the weights, and whether all four taps are inside.
        var cellX = [Int](repeating: 0, count: outWidth), cellY = cellX
        var weightX = [Float](repeating: 0, count: outWidth), weightY = weightX
        var kind = [UInt8](repeating: 0, count: outWidth)   // 0 outside, 1 interior, 2 straddles the edge
        for y in 0..<outHeight {
            let yd = Double(y)
            for x in 0..<outWidth {
                let xd = Double(x)
                var sx = m[0] * xd + m[1] * yd + m[2]
                var sy = m[3] * xd + m[4] * yd + m[5]
                if !affine {
                    let ww = m[6] * xd + m[7] * yd + m[8]
                    if ww == 0 { kind[x] = 0; continue }
                    sx /= ww
                    sy /= ww
                }
                guard sx > -1 && sy > -1 && sx < Double(w) && sy < Double(h) else { kind[x] = 0; continue }
                let fx = sx.rounded(.down), fy = sy.rounded(.down)
                let x0 = Int(fx), y0 = Int(fy)
                cellX[x] = x0
                cellY[x] = y0
                weightX[x] = Float(sx - fx)
                weightY[x] = Float(sy - fy)
                kind[x] = x0 >= 0 && y0 >= 0 && x0 + 1 < w && y0 + 1 < h ? 1 : 2
            }
            for k in sources.indices {
                let c = sources[k].channels, stride = w * c
                sources[k].pixels.withUnsafeBufferPointer { src in
                    outs[k].withUnsafeMutableBufferPointer { dst in
                        for x in 0..<outWidth where kind[x] != 0 {
                            let x0 = cellX[x], y0 = cellY[x], ax = weightX[x], ay = weightY[x]
                            let o = (y * outWidth + x) * c
                            if kind[x] == 1 {
                                let p = y0 * stride + x0 * c
                                for ch in 0..<c {
                                    let top = Float(src[p + ch]) + (Float(src[p + c + ch]) - Float(src[p + ch])) * ax
                                    let bottom = Float(src[p + stride + ch]) + (Float(src[p + stride + c + ch]) - Float(src[p + stride + ch])) * ax
                                    dst[o + ch] = UInt8(min(255, top + (bottom - top) * ay + 0.5))
                                }
                            } else {
                                let inX0 = x0 >= 0 && x0 < w, inX1 = x0 + 1 >= 0 && x0 + 1 < w
                                let inY0 = y0 >= 0 && y0 < h, inY1 = y0 + 1 >= 0 && y0 + 1 < h
                                for ch in 0..<c {
                                    let v00 = inX0 && inY0 ? Float(src[y0 * stride + x0 * c + ch]) : borderF
                                    let v01 = inX1 && inY0 ? Float(src[y0 * stride + (x0 + 1) * c + ch]) : borderF
                                    let v10 = inX0 && inY1 ? Float(src[(y0 + 1) * stride + x0 * c + ch]) : borderF
                                    let v11 = inX1 && inY1 ? Float(src[(y0 + 1) * stride + (x0 + 1) * c + ch]) : borderF
                                    let top = v00 + (v01 - v00) * ax, bottom = v10 + (v11 - v10) * ax
                                    dst[o + ch] = UInt8(min(255, max(0, top + (bottom - top) * ay + 0.5)))
                                }
                            }
                        }
                    }
                }
            }
        }
        return done(outs)
    }

    /// Mirrors the image left-right in place.
    public mutating func flipHorizontally() {
        let c = channels, w = width, stride = rowStride
        pixels.withUnsafeMutableBufferPointer { p in
            for y in 0..<height {
                let base = y * stride
                var a = 0, b = w - 1
                while a < b {
                    for ch in 0..<c { p.swapAt(base + a * c + ch, base + b * c + ch) }
                    a += 1
                    b -= 1
                }
            }
        }
    }

    /// Mirrors the image top-bottom in place.
    public mutating func flipVertically() {
        let stride = rowStride
        pixels.withUnsafeMutableBufferPointer { p in
            var a = 0, b = height - 1
            while a < b {
                for i in 0..<stride { p.swapAt(a * stride + i, b * stride + i) }
                a += 1
                b -= 1
            }
        }
    }

    /// Copies the `width` x `height` block at (`sourceX`, `sourceY`) of `source` to (`x`, `y`);
    /// the block must lie inside both images and the channel counts must match.
    public mutating func paste(_ source: RasterImage, sourceX: Int = 0, sourceY: Int = 0,
                               width w: Int, height h: Int, x: Int, y: Int) {
        precondition(source.channels == channels, "paste: \(source.channels) channels into \(channels)")
        if w <= 0 || h <= 0 { return }
        precondition(sourceX >= 0 && sourceY >= 0 && sourceX + w <= source.width && sourceY + h <= source.height
                     && x >= 0 && y >= 0 && x + w <= width && y + h <= height,
                     "paste block \(w)x\(h) from (\(sourceX),\(sourceY)) of \(source.width)x\(source.height) to (\(x),\(y)) of \(width)x\(height)")
        let c = channels, dstStride = rowStride, srcStride = source.rowStride
        pixels.withUnsafeMutableBufferPointer { dst in
            source.pixels.withUnsafeBufferPointer { src in
                guard let d = dst.baseAddress, let s = src.baseAddress else { return }
                for row in 0..<h {
                    (d + (y + row) * dstStride + x * c)
                        .update(from: s + (sourceY + row) * srcStride + sourceX * c, count: w * c)
                }
            }
        }
    }
}
