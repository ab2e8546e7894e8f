/// An 8-bit image with interleaved channels: `pixels` is `[height, width, channels]`, rows top to
/// bottom, no padding. RGB images have 3 channels in R, G, B order; IR images 1 (luma) or 3.
public struct RasterImage: Sendable, Equatable {
    public let width: Int
    public let height: Int
    public let channels: Int
    public var pixels: [UInt8]

    /// Wraps `pixels` (its count must be `width * height * channels`).
    public init(width: Int, height: Int, channels: Int, pixels: [UInt8]) {
        precondition(width >= 0 && height >= 0 && channels >= 1,
                     "bad image size \(width)x\(height)x\(channels)")
        precondition(pixels.count == width * height * channels,
                     "\(width)x\(height)x\(channels) image needs \(width * height * channels) bytes, got \(pixels.count)")
        self.width = width
        self.height = height
        self.channels = channels
        self.pixels = pixels
    }

    /// An image with every sample set to `value` (114 is the YOLO padding grey).
    public init(width: Int, height: Int, channels: Int, fill value: UInt8 = 0) {
        self.init(width: width, height: height, channels: channels,
                  pixels: [UInt8](repeating: value, count: width * height * channels))
    }

    /// Samples per row.
    @inlinable public var rowStride: Int { width * channels }

    /// The sample at (x, y, channel c).
    @inlinable public subscript(x: Int, y: Int, c: Int) -> UInt8 {
        get { pixels[(y * width + x) * channels + c] }
        set { pixels[(y * width + x) * channels + c] = newValue }
    }

    /// The same picture with `count` channels: 3 -> 1 is OpenCV's BT.601 luma
    /// (`(4899 R + 9617 G + 1868 B + 8192) >> 14`), 1 -> 3 replicates the grey.
    public func converted(toChannels count: Int) -> RasterImage {
        precondition(count == 1 || count == 3, "channels must be 1 or 3, got \(count)")
        if count == channels { return self }
        let n = width * height
        var out = [UInt8](repeating: 0, count: n * count)
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                if count == 1 {
                    for i in 0..<n {
                        let r = UInt32(src[i * channels]), g = UInt32(src[i * channels + 1]), b = UInt32(src[i * channels + 2])
                        dst[i] = UInt8(truncatingIfNeeded: (4899 * r + 9617 * g + 1868 * b + 8192) >> 14)
                    }
                } else {
                    for i in 0..<n {
                        let v = src[i * channels]
                        dst[3 * i] = v; dst[3 * i + 1] = v; dst[3 * i + 2] = v
                    }
                }
            }
        }
        return RasterImage(width: width, height: height, channels: count, pixels: out)
    }

    /// Writes the image as Float32 `[channels, height, width]` scaled to [0, 1] at `destination`.
    public func writeCHW(to destination: UnsafeMutablePointer<Float>) {
        let plane = width * height
        let c = channels
        pixels.withUnsafeBufferPointer { src in
            for ch in 0..<c {
                let out = destination + ch * plane
                var i = ch
                for p in 0..<plane {
                    out[p] = Float(src[i]) * (1 / 255)
                    i += c
                }
            }
        }
    }
}
