import Foundation

extension RasterImage {
    /// Ultralytics' RandomHSV on a 3-channel RGB image, in place: the image goes to OpenCV's 8-bit
    /// HSV (H in 0..<180), through the lookup tables `H' = (H + gh·180) mod 180`,
    /// `S' = clip(S·(1 + gs))` (`S' = 0` stays 0), `V' = clip(V·(1 + gv))`, and back to RGB.
    /// `gains` are the sampled (gh, gs, gv), each already drawn in `[-gain, gain]`.
    public mutating func jitterHSV(gains: (h: Float, s: Float, v: Float)) {
        precondition(channels == 3, "HSV jitter needs 3 channels, got \(channels)")
        if gains.h == 0 && gains.s == 0 && gains.v == 0 { return }
        var lutH = [UInt8](repeating: 0, count: 256), lutS = lutH, lutV = lutH
        for x in 0..<256 {
            let xf = Float(x)
            var hue = (xf + gains.h * 180).truncatingRemainder(dividingBy: 180)
            if hue < 0 { hue += 180 }
            lutH[x] = UInt8(min(179, max(0, hue)))
            lutS[x] = UInt8(min(255, max(0, xf * (1 + gains.s))))
            lutV[x] = UInt8(min(255, max(0, xf * (1 + gains.v))))
        }
        lutS[0] = 0
        // OpenCV's fixed-point division tables (hsv_shift = 12).
        var sdiv = [Int](repeating: 0, count: 256), hdiv = sdiv
        for i in 1..<256 {
            sdiv[i] = Int((Double(255 << 12) / Double(i)).rounded())
            hdiv[i] = Int((Double(180 << 12) / (6 * Double(i))).rounded())
        }
        let n = width * height
        pixels.withUnsafeMutableBufferPointer { p in
            for i in 0..<n {
                let o = 3 * i
                let r = Int(p[o]), g = Int(p[o + 1]), b = Int(p[o + 2])
                let v = max(r, g, b), vmin = min(r, g, b), diff = v - vmin
                let s = (diff * sdiv[v] + (1 << 11)) >> 12
                var h: Int
                if v == r { h = g - b } else if v == g { h = b - r + 2 * diff } else { h = r - g + 4 * diff }
                h = (h * hdiv[diff] + (1 << 11)) >> 12
                if h < 0 { h += 180 }
                let hh = Int(lutH[min(h, 255)]), ss = Float(lutS[s]) * (1 / 255), vv = Float(lutV[v]) * (1 / 255)
                var rf = vv, gf = vv, bf = vv
                if ss != 0 {
                    var hf = Float(hh) * (6 / 180)
                    if hf >= 6 { hf -= 6 }
                    let sector = Int(hf)
                    let f = hf - Float(sector)
                    let t0 = vv, t1 = vv * (1 - ss), t2 = vv * (1 - ss * f), t3 = vv * (1 - ss * (1 - f))
                    switch sector {
                    case 0: rf = t0; gf = t3; bf = t1
                    case 1: rf = t2; gf = t0; bf = t1
                    case 2: rf = t1; gf = t0; bf = t3
                    case 3: rf = t1; gf = t2; bf = t0
                    case 4: rf = t3; gf = t1; bf = t0
                    default: rf = t0; gf = t1; bf = t2
                    }
                }
                p[o] = UInt8(min(255, rf * 255 + 0.5))
                p[o + 1] = UInt8(min(255, gf * 255 + 0.5))
                p[o + 2] = UInt8(min(255, bf * 255 + 0.5))
            }
        }
    }

    /// The IR stream's own photometric jitter, in place, on every channel:
    /// `y = clip(127.5 + (x - 127.5)·(1 + contrast) + brightness·255)`, a contrast change about
    /// mid-grey followed by a brightness shift. `contrast` and `brightness` are the sampled values
    /// (drawn in `[-irGain, irGain]` and `[-irBias, irBias]`).
    public mutating func jitterIntensity(contrast: Float, brightness: Float) {
        if contrast == 0 && brightness == 0 { return }
        var lut = [UInt8](repeating: 0, count: 256)
        for x in 0..<256 {
            let y = 127.5 + (Float(x) - 127.5) * (1 + contrast) + brightness * 255
            lut[x] = UInt8(min(255, max(0, y.rounded())))
        }
        pixels.withUnsafeMutableBufferPointer { p in
            for i in 0..<p.count { p[i] = lut[Int(p[i])] }
        }
    }
}
