import Foundation
@testable import DataPipeline

/// A fresh folder under the system temporary directory, removed by `remove()`.
struct TempDir {
    let path: String

    init(_ name: String = "dp") {
        path = FileManager.default.temporaryDirectory
            .appendingPathComponent("dualfuse-test-\(name)-\(UUID().uuidString.prefix(8))").path
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func file(_ relative: String) -> String { (path as NSString).appendingPathComponent(relative) }

    /// Creates the parent folders of `relative` and returns its absolute path.
    func prepare(_ relative: String) -> String {
        let p = file(relative)
        try? FileManager.default.createDirectory(atPath: (p as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        return p
    }

    func write(_ relative: String, _ text: String) {
        _ = FileManager.default.createFile(atPath: prepare(relative), contents: Data(text.utf8))
    }

    func write(_ relative: String, bytes: [UInt8]) {
        _ = FileManager.default.createFile(atPath: prepare(relative), contents: Data(bytes))
    }

    func bytes(_ relative: String) -> [UInt8] { [UInt8](FileManager.default.contents(atPath: file(relative)) ?? Data()) }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// A minimal PNG writer for every colour type and bit depth (zlib stored blocks, filter 0), so the
/// decoder is tested on files our own encoder never produces (palette, 1/2/4/16-bit, interlace-free).
enum PNGFixture {
    /// `rows`: packed scanlines without filter bytes, each `ceil(width · channels · bitDepth / 8)` bytes.
    static func encode(width: Int, height: Int, colorType: UInt8, bitDepth: UInt8, rows: [[UInt8]],
                       palette: [(UInt8, UInt8, UInt8)] = [], transparency: [UInt8] = []) -> [UInt8] {
        var out: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        var ihdr = be32(UInt32(width)) + be32(UInt32(height))
        ihdr += [bitDepth, colorType, 0, 0, 0]
        out += chunk("IHDR", ihdr)
        if !palette.isEmpty { out += chunk("PLTE", palette.flatMap { [$0.0, $0.1, $0.2] }) }
        if !transparency.isEmpty { out += chunk("tRNS", transparency) }
        var raw: [UInt8] = []
        for r in rows { raw.append(0); raw += r }
        out += chunk("IDAT", zlibStored(raw))
        out += chunk("IEND", [])
        return out
    }

    /// An Adam7-interlaced 8-bit PNG of `pixels` (`[height, width, channels]`, grey or RGB).
    static func interlaced(width: Int, height: Int, channels: Int, pixels: [UInt8]) -> [UInt8] {
        let passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
        var raw: [UInt8] = []
        for (x0, y0, dx, dy) in passes {
            let xs = Array(stride(from: x0, to: width, by: dx)), ys = Array(stride(from: y0, to: height, by: dy))
            if xs.isEmpty || ys.isEmpty { continue }
            for y in ys {
                raw.append(0)
                for x in xs { raw += pixels[((y * width + x) * channels)..<((y * width + x + 1) * channels)] }
            }
        }
        var out: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        out += chunk("IHDR", be32(UInt32(width)) + be32(UInt32(height)) + [8, channels == 1 ? 0 : 2, 0, 0, 1])
        out += chunk("IDAT", zlibStored(raw))
        out += chunk("IEND", [])
        return out
    }

    static func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }

    static func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
        let typeBytes = Array(type.utf8)
        return be32(UInt32(data.count)) + typeBytes + data + be32(crc32(typeBytes + data))
    }

    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            c ^= UInt32(b)
            for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        }
        return c ^ 0xFFFF_FFFF
    }

    static func zlibStored(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0x78, 0x01]
        var i = 0
        repeat {
            let n = min(65535, data.count - i)
            let last: UInt8 = i + n >= data.count ? 1 : 0
            out += [last, UInt8(n & 0xFF), UInt8(n >> 8), UInt8(~n & 0xFF), UInt8((~n >> 8) & 0xFF)]
            out += data[i..<(i + n)]
            i += n
        } while i < data.count
        var a: UInt32 = 1, b: UInt32 = 0
        for byte in data {
            a = (a + UInt32(byte)) % 65521
            b = (b + a) % 65521
        }
        return out + be32((b << 16) | a)
    }
}

/// Synthetic pairs with known objects for augmentation tests.
enum PairFixture {
    /// A pair of `width` x `height` with solid rectangles (R = 250, G = B = 0 on black) at the given
    /// pixel boxes `x1, y1, x2, y2`; the IR is the luma of the RGB.
    static func rectangles(width: Int, height: Int, boxes: [[Int]], background: UInt8 = 0) -> LoadedPair {
        var rgb = RasterImage(width: width, height: height, channels: 3, fill: background)
        var normalised: [Float] = []
        for b in boxes {
            for y in b[1]..<b[3] {
                for x in b[0]..<b[2] { rgb[x, y, 0] = 250; rgb[x, y, 1] = 0; rgb[x, y, 2] = 0 }
            }
            normalised += [Float(b[0] + b[2]) / 2 / Float(width), Float(b[1] + b[3]) / 2 / Float(height),
                           Float(b[2] - b[0]) / Float(width), Float(b[3] - b[1]) / Float(height)]
        }
        return LoadedPair(rgb: rgb, ir: rgb.converted(toChannels: 1), originalWidth: width, originalHeight: height,
                          classes: Array(repeating: 0, count: boxes.count), boxes: normalised)
    }

    /// A textured pair (gradients and a checker pattern) whose IR is the luma of the RGB.
    static func textured(width: Int, height: Int, seed: Int = 0) -> LoadedPair {
        var rgb = RasterImage(width: width, height: height, channels: 3)
        for y in 0..<height {
            for x in 0..<width {
                let checker = ((x / 7 + y / 5 + seed) % 2) * 60
                rgb[x, y, 0] = UInt8((x * 255 / max(1, width - 1) + checker) % 256)
                rgb[x, y, 1] = UInt8((y * 255 / max(1, height - 1) + seed * 31) % 256)
                rgb[x, y, 2] = UInt8(((x + y) * 3 + checker) % 256)
            }
        }
        return LoadedPair(rgb: rgb, ir: rgb.converted(toChannels: 1), originalWidth: width, originalHeight: height,
                          classes: [0], boxes: [0.5, 0.5, 0.3, 0.3])
    }
}

/// Writes a YOLOFuse-layout data set of `count` clean pairs (PNG) under `root`.
@discardableResult
func writeCleanDataset(_ dir: TempDir, split: String = "train", count: Int, size: (w: Int, h: Int) = (64, 48),
                       prefix: String = "p") throws -> [String] {
    var stems: [String] = []
    for i in 0..<count {
        let stem = "\(prefix)\(i)"
        let pair = PairFixture.textured(width: size.w, height: size.h, seed: i)
        try ImageIO.writePNG(pair.rgb, to: dir.prepare("images/\(split)/\(stem).png"), compression: 1)
        try ImageIO.writePNG(pair.ir, to: dir.prepare("imagesIR/\(split)/\(stem).png"), compression: 1)
        dir.write("labels/\(split)/\(stem).txt", "\(i % 2) 0.5 0.5 0.25 0.4\n")
        stems.append(stem)
    }
    return stems
}
