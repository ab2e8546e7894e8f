import DataPipeline
import Foundation

/// An RGB drawing surface over `RasterImage`: filled rectangles, lines, outlined boxes, 5x7 text
/// and pasted images. Every plot and annotation of the project draws through it.
public struct Canvas {
    public typealias Colour = (UInt8, UInt8, UInt8)
    public var image: RasterImage

    public init(width: Int, height: Int, fill: UInt8 = 255) {
        image = RasterImage(width: width, height: height, channels: 3, fill: fill)
    }

    /// Draws on a copy of `image` (grey is expanded to RGB).
    public init(_ image: RasterImage) {
        self.image = image.channels == 3 ? image : image.converted(toChannels: 3)
    }

    public var width: Int { image.width }
    public var height: Int { image.height }

    /// Fills [x0, x1] x [y0, y1], clipped to the image.
    public mutating func fill(_ x0: Int, _ y0: Int, _ x1: Int, _ y1: Int, _ c: Colour) {
        let xa = max(0, min(x0, x1)), xb = min(image.width - 1, max(x0, x1))
        let ya = max(0, min(y0, y1)), yb = min(image.height - 1, max(y0, y1))
        guard xa <= xb, ya <= yb else { return }
        for y in ya...yb {
            for x in xa...xb {
                let o = (y * image.width + x) * 3
                image.pixels[o] = c.0; image.pixels[o + 1] = c.1; image.pixels[o + 2] = c.2
            }
        }
    }

    /// A straight line `thickness` pixels wide.
    public mutating func line(_ x0: Int, _ y0: Int, _ x1: Int, _ y1: Int, _ c: Colour, thickness: Int = 1) {
        let n = max(abs(x1 - x0), abs(y1 - y0), 1)
        let h = thickness / 2
        for t in 0...n {
            let x = x0 + (x1 - x0) * t / n, y = y0 + (y1 - y0) * t / n
            fill(x - h, y - h, x - h + thickness - 1, y - h + thickness - 1, c)
        }
    }

    /// The outline of [x0, x1] x [y0, y1], `thickness` pixels inside it.
    public mutating func box(_ x0: Int, _ y0: Int, _ x1: Int, _ y1: Int, _ c: Colour, thickness: Int = 1) {
        for t in 0..<thickness {
            fill(x0 + t, y0 + t, x1 - t, y0 + t, c); fill(x0 + t, y1 - t, x1 - t, y1 - t, c)
            fill(x0 + t, y0 + t, x0 + t, y1 - t, c); fill(x1 - t, y0 + t, x1 - t, y1 - t, c)
        }
    }

    /// Pixel width of `text` at `scale`.
    public static func textWidth(_ text: String, scale: Int = 1) -> Int { text.count * 6 * scale }

    /// Upper-case 5x7 text with its top-left corner at (x, y).
    public mutating func text(_ text: String, x: Int, y: Int, scale: Int = 1, _ c: Colour = (40, 40, 40)) {
        var cx = x
        for ch in text.uppercased() {
            let rows = Canvas.glyphs[ch] ?? Canvas.glyphs[ch == "/" ? "-" : " "]!
            for (r, bits) in rows.enumerated() {
                for col in 0..<5 where bits & (16 >> UInt8(col)) != 0 {
                    fill(cx + col * scale, y + r * scale, cx + col * scale + scale - 1, y + r * scale + scale - 1, c)
                }
            }
            cx += 6 * scale
        }
    }

    /// Copies `img` (grey expanded) with its top-left corner at (x, y), clipped.
    public mutating func paste(_ img: RasterImage, x: Int, y: Int) {
        let src = img.channels == 3 ? img : img.converted(toChannels: 3)
        for yy in 0..<src.height where y + yy >= 0 && y + yy < image.height {
            for xx in 0..<src.width where x + xx >= 0 && x + xx < image.width {
                let s = (yy * src.width + xx) * 3, d = ((y + yy) * image.width + x + xx) * 3
                image.pixels[d] = src.pixels[s]; image.pixels[d + 1] = src.pixels[s + 1]; image.pixels[d + 2] = src.pixels[s + 2]
            }
        }
    }

    /// Box colours per class (cycled).
    public static let palette: [Colour] = [(255, 56, 56), (56, 255, 120), (56, 140, 255), (255, 178, 29),
                                           (207, 56, 255), (0, 212, 187), (255, 112, 31), (146, 204, 23)]

    /// 5x7 glyphs, one 5-bit row per byte (bit 4 = leftmost column).
    static let glyphs: [Character: [UInt8]] = [
        "0": [14, 17, 19, 21, 25, 17, 14], "1": [4, 12, 4, 4, 4, 4, 14], "2": [14, 17, 1, 2, 4, 8, 31],
        "3": [31, 2, 4, 2, 1, 17, 14], "4": [2, 6, 10, 18, 31, 2, 2], "5": [31, 16, 30, 1, 1, 17, 14],
        "6": [6, 8, 16, 30, 17, 17, 14], "7": [31, 1, 2, 4, 8, 8, 8], "8": [14, 17, 17, 14, 17, 17, 14],
        "9": [14, 17, 17, 15, 1, 2, 12], ".": [0, 0, 0, 0, 0, 12, 12], " ": [0, 0, 0, 0, 0, 0, 0],
        "-": [0, 0, 0, 31, 0, 0, 0], "_": [0, 0, 0, 0, 0, 0, 31], ":": [0, 12, 12, 0, 12, 12, 0],
        "(": [2, 4, 8, 8, 8, 4, 2], ")": [8, 4, 2, 2, 2, 4, 8], "%": [24, 25, 2, 4, 8, 19, 3], "=": [0, 0, 31, 0, 31, 0, 0],
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
}
