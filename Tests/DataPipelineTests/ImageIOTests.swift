import Foundation
import Testing
@testable import DataPipeline

/// PNG (every colour type and bit depth) and JPEG decode, encode round trips, corrupt files.
@Suite struct ImageIOTests {
    /// OpenCV's BT.601 luma.
    func luma(_ r: Int, _ g: Int, _ b: Int) -> UInt8 { UInt8((4899 * r + 9617 * g + 1868 * b + 8192) >> 14) }

    func decode(_ bytes: [UInt8], _ channels: Int) throws -> RasterImage {
        try ImageIO.decode(bytes, channels: channels, label: "fixture")
    }

    @Test func png8BitRoundTripsForEveryChannelCount() throws {
        let dir = TempDir("png8")
        defer { dir.remove() }
        for channels in [1, 2, 3, 4] {
            var pixels = [UInt8](repeating: 0, count: 7 * 5 * channels)
            for i in 0..<pixels.count { pixels[i] = UInt8((i * 37 + channels) % 256) }
            let image = RasterImage(width: 7, height: 5, channels: channels, pixels: pixels)
            let path = dir.file("c\(channels).png")
            try ImageIO.writePNG(image, to: path)
            let info = try ImageIO.verify(path)
            #expect(info == ImageFileInfo(width: 7, height: 5, channels: channels, bitDepth: 8, format: "png"))
            let rgb = try ImageIO.read(path, channels: 3), grey = try ImageIO.read(path, channels: 1)
            for p in 0..<35 {
                let src = Array(pixels[(p * channels)..<((p + 1) * channels)])
                let expectRGB: [UInt8] = channels <= 2 ? [src[0], src[0], src[0]] : Array(src[0..<3])
                #expect(Array(rgb.pixels[(3 * p)..<(3 * p + 3)]) == expectRGB, "channels \(channels) pixel \(p)")
                let expectGrey = channels <= 2 ? src[0] : luma(Int(src[0]), Int(src[1]), Int(src[2]))
                #expect(grey.pixels[p] == expectGrey, "channels \(channels) pixel \(p)")
            }
        }
    }

    @Test func png16BitKeepsTheHighByte() throws {
        // Grey 16, grey+alpha 16, RGB 16, RGBA 16: samples 0xABCD -> 0xAB (OpenCV's >> 8).
        for (colorType, channels) in [(UInt8(0), 1), (4, 2), (2, 3), (6, 4)] {
            var row: [UInt8] = []
            for x in 0..<3 {
                for c in 0..<channels { row += [UInt8(0x10 * (x + 1) + c), UInt8(0xCD)] }
            }
            let bytes = PNGFixture.encode(width: 3, height: 1, colorType: colorType, bitDepth: 16, rows: [row])
            let rgb = try decode(bytes, 3), grey = try decode(bytes, 1)
            for x in 0..<3 {
                let high = (0..<channels).map { UInt8(0x10 * (x + 1) + $0) }
                let expect: [UInt8] = channels <= 2 ? [high[0], high[0], high[0]] : Array(high[0..<3])
                #expect(Array(rgb.pixels[(3 * x)..<(3 * x + 3)]) == expect, "type \(colorType) x \(x)")
                let g = channels <= 2 ? high[0] : luma(Int(high[0]), Int(high[1]), Int(high[2]))
                #expect(grey.pixels[x] == g, "type \(colorType) x \(x)")
            }
        }
    }

    @Test func pngLowBitGreyIsScaledTo8Bit() throws {
        // 1-bit: 0/1 -> 0/255; 2-bit: 0..3 -> 0, 85, 170, 255; 4-bit: v -> v * 17.
        let one = PNGFixture.encode(width: 8, height: 1, colorType: 0, bitDepth: 1, rows: [[0b1010_0011]])
        #expect(try decode(one, 1).pixels == [255, 0, 255, 0, 0, 0, 255, 255])
        let two = PNGFixture.encode(width: 4, height: 1, colorType: 0, bitDepth: 2, rows: [[0b0001_1011]])
        #expect(try decode(two, 1).pixels == [0, 85, 170, 255])
        let four = PNGFixture.encode(width: 2, height: 1, colorType: 0, bitDepth: 4, rows: [[0x3F]])
        #expect(try decode(four, 3).pixels == [51, 51, 51, 255, 255, 255])
    }

    @Test func pngPaletteIsExpanded() throws {
        let palette: [(UInt8, UInt8, UInt8)] = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (10, 20, 30)]
        for depth in [UInt8(2), 4, 8] {
            let row: [UInt8]
            switch depth {
            case 2: row = [0b0001_1011]
            case 4: row = [0x01, 0x23]
            default: row = [0, 1, 2, 3]
            }
            let bytes = PNGFixture.encode(width: 4, height: 1, colorType: 3, bitDepth: depth, rows: [row], palette: palette,
                                          transparency: depth == 8 ? [255, 128, 0, 255] : [])
            let rgb = try decode(bytes, 3)
            #expect(rgb.pixels == [255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30], "palette depth \(depth)")
            let grey = try decode(bytes, 1)
            #expect(grey.pixels == palette.map { luma(Int($0.0), Int($0.1), Int($0.2)) }, "palette depth \(depth)")
        }
    }

    @Test func interlacedPNGDecodes() throws {
        let image = PairFixture.textured(width: 13, height: 11).rgb
        let bytes = PNGFixture.interlaced(width: 13, height: 11, channels: 3, pixels: image.pixels)
        #expect(try decode(bytes, 3) == image)
        #expect(try decode(bytes, 1) == image.converted(toChannels: 1))
    }

    @Test func jpegRoundTripIsClose() throws {
        let dir = TempDir("jpeg")
        defer { dir.remove() }
        // A smooth picture: JPEG keeps it within a few levels even with 4:2:0 chroma.
        var rgb = RasterImage(width: 40, height: 24, channels: 3)
        for y in 0..<24 {
            for x in 0..<40 { rgb[x, y, 0] = UInt8(x * 6); rgb[x, y, 1] = UInt8(y * 10); rgb[x, y, 2] = UInt8(120 + x - y) }
        }
        for image in [rgb, rgb.converted(toChannels: 1)] {
            let path = dir.file("x\(image.channels).jpg")
            try ImageIO.writeJPEG(image, to: path, quality: 100)
            let info = try ImageIO.verify(path)
            #expect(info.width == 40 && info.height == 24 && info.channels == image.channels && info.format == "jpeg")
            let back = try ImageIO.read(path, channels: image.channels)
            var total = 0
            for i in 0..<image.pixels.count { total += abs(Int(image.pixels[i]) - Int(back.pixels[i])) }
            #expect(Double(total) / Double(image.pixels.count) < 4, "mean error \(Double(total) / Double(image.pixels.count))")
            // Grey delivery from a colour JPEG is its luma (within JPEG loss).
            let grey = try ImageIO.read(path, channels: 1), expected = image.converted(toChannels: 1)
            var worst = 0
            for i in 0..<grey.pixels.count { worst = max(worst, abs(Int(grey.pixels[i]) - Int(expected.pixels[i]))) }
            #expect(worst <= 4, "luma error \(worst)")
        }
    }

    @Test func corruptAndTruncatedFilesAreErrorsNotCrashes() throws {
        let dir = TempDir("corrupt")
        defer { dir.remove() }
        let image = PairFixture.textured(width: 48, height: 32).rgb
        try ImageIO.writePNG(image, to: dir.file("ok.png"))
        try ImageIO.writeJPEG(image, to: dir.file("ok.jpg"), quality: 90)
        let png = dir.bytes("ok.png"), jpg = dir.bytes("ok.jpg")
        var flipped = png
        flipped[png.count / 2] ^= 0xFF   // inside IDAT: CRC / zlib failure
        // Random bit errors inside entropy-coded data often decode to wrong pixels without any
        // complaint from libjpeg (nor from OpenCV or PIL); what is detectable is tested: a marker
        // in the middle of the data (premature end of segment) and a broken frame header.
        var earlyEOI = jpg
        earlyEOI[jpg.count / 2] = 0xFF
        earlyEOI[jpg.count / 2 + 1] = 0xD9
        var zeroWidth = jpg
        if let sof = (0..<(jpg.count - 9)).first(where: { jpg[$0] == 0xFF && jpg[$0 + 1] == 0xC0 }) {
            zeroWidth[sof + 7] = 0
            zeroWidth[sof + 8] = 0
        }
        let cases: [(String, [UInt8])] = [
            ("truncated.png", Array(png.prefix(png.count * 2 / 3))),
            ("no-iend.png", Array(png.dropLast(12))),
            ("flipped.png", flipped),
            ("header-only.png", Array(png.prefix(40))),
            ("truncated.jpg", Array(jpg.prefix(jpg.count * 2 / 3))),
            ("no-eoi.jpg", Array(jpg.prefix(jpg.count - 200))),
            ("early-eoi.jpg", earlyEOI),
            ("zero-width.jpg", zeroWidth),
            ("header-only.jpg", Array(jpg.prefix(20))),
            ("empty.png", []),
            ("text.jpg", Array("not an image at all".utf8)),
        ]
        for (name, bytes) in cases {
            dir.write(name, bytes: bytes)
            #expect(throws: ImageIOError.self, "\(name) must not decode") { _ = try ImageIO.read(dir.file(name), channels: 3) }
            #expect(throws: ImageIOError.self, "\(name) must not verify") { _ = try ImageIO.verify(dir.file(name)) }
        }
        do {
            _ = try ImageIO.read(dir.file("truncated.jpg"), channels: 3)
        } catch let error as ImageIOError {
            guard case .corrupt(let path, let reason) = error else { Issue.record("expected .corrupt, got \(error)"); return }
            #expect(path.hasSuffix("truncated.jpg"))
            #expect(reason.contains("JPEG"))
        }
        #expect(throws: ImageIOError.unsupportedFormat(path: dir.file("text.jpg"))) { _ = try ImageIO.read(dir.file("text.jpg"), channels: 1) }
        #expect(throws: ImageIOError.self) { _ = try ImageIO.read(dir.file("missing.png"), channels: 1) }
        // The intact files still decode.
        #expect(try ImageIO.read(dir.file("ok.png"), channels: 3) == image)
        _ = try ImageIO.read(dir.file("ok.jpg"), channels: 1)
    }

    @Test func writingToAMissingFolderFails() {
        let image = RasterImage(width: 2, height: 2, channels: 1, fill: 9)
        #expect(throws: ImageIOError.self) { try ImageIO.writePNG(image, to: "/nonexistent-dir/x.png") }
        #expect(throws: ImageIOError.self) { try ImageIO.writeJPEG(image, to: "/nonexistent-dir/x.jpg") }
    }
}
