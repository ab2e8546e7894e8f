import DataPipeline
import Detection
import Foundation

/// Drawing of detections onto images (boxes and a small "name 0.87" label) for `predict`.
public enum Annotate {
    /// Box colours per class (cycled).
    static let palette: [(UInt8, UInt8, UInt8)] = [(255, 56, 56), (56, 255, 120), (56, 140, 255), (255, 178, 29),
                                                    (207, 56, 255), (0, 212, 187), (255, 112, 31), (146, 204, 23)]

    /// 5x7 glyphs, one 5-bit row per byte (bit 4 = leftmost column).
    static let glyphs: [Character: [UInt8]] = [
        "0": [14, 17, 19, 21, 25, 17, 14], "1": [4, 12, 4, 4, 4, 4, 14], "2": [14, 17, 1, 2, 4, 8, 31],
        "3": [31, 2, 4, 2, 1, 17, 14], "4": [2, 6, 10, 18, 31, 2, 2], "5": [31, 16, 30, 1, 1, 17, 14],
        "6": [6, 8, 16, 30, 17, 17, 14], "7": [31, 1, 2, 4, 8, 8, 8], "8": [14, 17, 17, 14, 17, 17, 14],
        "9": [14, 17, 17, 15, 1, 2, 12], ".": [0, 0, 0, 0, 0, 12, 12], " ": [0, 0, 0, 0, 0, 0, 0],
        "-": [0, 0, 0, 31, 0, 0, 0], "_": [0, 0, 0, 0, 0, 0, 31],
        "A": [14, 17, 17, 31, 17, 17, 17], "B": [30, 17, 17, 30, 17, 17, 30], "C": [14, 17, 16, 16, 16, 17, 14],
        "D": [28, 18, 17, 17, 17, 18, 28], "E": [31, 16, 16, 30, 16, 16, 31], "F": [31, 16, 16, 30, 16, 16, 16],
        "G": [14, 17, 16, 23, 17, 17, 15], "H": [17, 17, 17, 31, 17, 17, 17], "I": [14, 4, 4, 4, 4, 4, 14],
        "J": [7, 2, 2, 2, 2, 18, 12], "K": [17, 18, 20, 24, 20, 18, 17], "L": [16, 16, 16, 16, 16, 16, 31],
        "M": [17, 27, 21, 21, 17, 17, 17], "N": [17, 17, 25, 21, 19, 17, 17], "O": [14, 17, 17, 17, 17, 17, 14],
        "P": [30, 17, 17, 30, 16, 16, 16], "Q": [14, 17, 17, 17, 21, 18, 13], "R": [30, 17, 17, 30, 20, 18, 17],
        "S": [15, 16, 16, 14, 1, 1, 30], "T": [31, 4, 4, 4, 4, 4, 4], "U": [17, 17, 17, 17, 17, 17, 14],
        "V": [17, 17, 17, 17, 17, 10, 4], "W": [17, 17, 17, 21, 21, 21, 10], "X": [17, 17, 10, 4, 10, 17, 17],
        "Y": [17, 17, 10, 4, 4, 4, 4], "Z": [31, 1, 2, 4, 8, 16, 31],
    ]

    /// Draws each detection as a rectangle with a label above it (RGB output; grey input is expanded).
    public static func draw(_ detections: [Detection], on image: RasterImage, names: [String]) -> RasterImage {
        var img = image.channels == 3 ? image : image.converted(toChannels: 3)
        let thickness = max(1, min(img.width, img.height) / 320 + 1)
        for d in detections {
            let c = palette[d.classIndex % palette.count]
            let x1 = Int(d.box.x1.rounded()), y1 = Int(d.box.y1.rounded()), x2 = Int(d.box.x2.rounded()), y2 = Int(d.box.y2.rounded())
            for t in 0..<thickness {
                rect(&img, x1 + t, y1 + t, x2 - t, y1 + t, c); rect(&img, x1 + t, y2 - t, x2 - t, y2 - t, c)
                rect(&img, x1 + t, y1 + t, x1 + t, y2 - t, c); rect(&img, x2 - t, y1 + t, x2 - t, y2 - t, c)
            }
            let name = d.classIndex < names.count ? names[d.classIndex] : "class\(d.classIndex)"
            let text = (name + String(format: " %.2f", d.confidence)).uppercased()
            let scale = max(1, min(img.width, img.height) / 400)
            let tw = text.count * 6 * scale + 2, th = 9 * scale
            let ty = y1 - th >= 0 ? y1 - th : min(y1 + 1, img.height - th)
            rect(&img, x1, ty, x1 + tw, ty + th - 1, c)
            var x = x1 + 1
            for ch in text {
                let rows = glyphs[ch] ?? glyphs[" "]!
                for (r, bits) in rows.enumerated() {
                    for col in 0..<5 where bits & (16 >> UInt8(col)) != 0 {
                        rect(&img, x + col * scale, ty + 1 + r * scale, x + col * scale + scale - 1, ty + r * scale + scale, (255, 255, 255))
                    }
                }
                x += 6 * scale
            }
        }
        return img
    }

    /// Fills [x0, x1] x [y0, y1], clipped to the image.
    static func rect(_ img: inout RasterImage, _ x0: Int, _ y0: Int, _ x1: Int, _ y1: Int, _ c: (UInt8, UInt8, UInt8)) {
        let xa = max(0, min(x0, x1)), xb = min(img.width - 1, max(x0, x1))
        let ya = max(0, min(y0, y1)), yb = min(img.height - 1, max(y0, y1))
        guard xa <= xb, ya <= yb else { return }
        for y in ya...yb {
            for x in xa...xb {
                let o = (y * img.width + x) * 3
                img.pixels[o] = c.0; img.pixels[o + 1] = c.1; img.pixels[o + 2] = c.2
            }
        }
    }
}
