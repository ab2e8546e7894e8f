import CImageIO
import Foundation

/// Why an image could not be read or written. Every case names the file.
public enum ImageIOError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The file cannot be opened or read (missing, permissions, I/O error).
    case unreadable(path: String, reason: String)
    /// The file is neither PNG nor JPEG.
    case unsupportedFormat(path: String)
    /// The data is corrupt or truncated.
    case corrupt(path: String, reason: String)
    /// The image is larger than the decoder accepts.
    case tooLarge(path: String, reason: String)
    /// Writing failed.
    case writeFailed(path: String, reason: String)
    /// A caller error (channel count, quality, size).
    case invalidArgument(path: String, reason: String)

    public var path: String {
        switch self {
        case .unreadable(let p, _), .unsupportedFormat(let p), .corrupt(let p, _), .tooLarge(let p, _),
             .writeFailed(let p, _), .invalidArgument(let p, _): return p
        }
    }

    public var description: String {
        switch self {
        case .unreadable(let p, let r): return "\(p): cannot read image: \(r)"
        case .unsupportedFormat(let p): return "\(p): not a PNG or JPEG image (unknown file signature)"
        case .corrupt(let p, let r): return "\(p): corrupt or truncated image: \(r)"
        case .tooLarge(let p, let r): return "\(p): image too large: \(r)"
        case .writeFailed(let p, let r): return "\(p): cannot write image: \(r)"
        case .invalidArgument(let p, let r): return "\(p): \(r)"
        }
    }
}

/// What an image file stores (from its header), see `ImageIO.verify`.
public struct ImageFileInfo: Sendable, Equatable, Codable {
    public var width: Int
    public var height: Int
    /// Stored channels: 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA (palette PNGs: 3 or 4).
    public var channels: Int
    /// Stored bits per sample (1, 2, 4, 8, 16).
    public var bitDepth: Int
    /// "png" or "jpeg".
    public var format: String
}

/// PNG and JPEG reading and writing through the CImageIO C target (libpng, libjpeg-turbo).
///
/// Decoding always yields 8-bit samples with the requested channel count: 1 = BT.601 luma as
/// OpenCV computes it, 3 = RGB (grey replicated). 16-bit PNG samples keep their high byte
/// (`value >> 8`, as OpenCV's `imread` does); alpha is dropped. Corrupt and truncated files
/// throw `ImageIOError.corrupt`; nothing in here crashes on bad data.
public enum ImageIO {
    /// Image file extensions the pipeline reads (lower case, without the dot).
    public static let extensions: Set<String> = ["png", "jpg", "jpeg"]

    /// Image extensions recognised but not decoded (reported as unsupported by the scan).
    public static let unsupportedExtensions: Set<String> = ["bmp", "tif", "tiff", "webp", "dng", "mpo", "pfm", "heic", "avif"]

    /// Decodes the PNG or JPEG file at `path` to `channels` (1 or 3) channels.
    public static func read(_ path: String, channels: Int) throws -> RasterImage {
        guard channels == 1 || channels == 3 else {
            throw ImageIOError.invalidArgument(path: path, reason: "channels must be 1 or 3, got \(channels)")
        }
        var image = cimg_image()
        var message = [CChar](repeating: 0, count: Int(CIMG_MESSAGE_SIZE))
        let rc = cimg_decode_file(path, Int32(channels), &image, &message)
        return try finish(rc, image: &image, message: message, path: path)
    }

    /// Decodes PNG or JPEG bytes held in memory; `label` names the source in errors.
    public static func decode(_ data: [UInt8], channels: Int, label: String = "<memory>") throws -> RasterImage {
        guard channels == 1 || channels == 3 else {
            throw ImageIOError.invalidArgument(path: label, reason: "channels must be 1 or 3, got \(channels)")
        }
        var image = cimg_image()
        var message = [CChar](repeating: 0, count: Int(CIMG_MESSAGE_SIZE))
        let rc = data.withUnsafeBufferPointer { cimg_decode($0.baseAddress, $0.count, Int32(channels), &image, &message) }
        return try finish(rc, image: &image, message: message, path: label)
    }

    /// Checks that the file decodes completely (PNG through IEND, JPEG entropy data in full at
    /// 1/8 scale) and returns what it stores, without keeping pixels.
    public static func verify(_ path: String) throws -> ImageFileInfo {
        var info = cimg_info()
        var message = [CChar](repeating: 0, count: Int(CIMG_MESSAGE_SIZE))
        let rc = cimg_verify_file(path, &info, &message)
        if Int(rc) != Int(CIMG_OK) { throw error(rc, message: message, path: path) }
        return ImageFileInfo(width: Int(info.width), height: Int(info.height), channels: Int(info.channels),
                             bitDepth: Int(info.bit_depth), format: Int(info.format) == Int(CIMG_FORMAT_PNG) ? "png" : "jpeg")
    }

    /// Writes `image` (1, 3 or 4 channels) as PNG; `compression` is the zlib level 0-9.
    public static func writePNG(_ image: RasterImage, to path: String, compression: Int = 6) throws {
        var message = [CChar](repeating: 0, count: Int(CIMG_MESSAGE_SIZE))
        let rc = image.pixels.withUnsafeBufferPointer {
            cimg_encode_png_file(path, $0.baseAddress, Int32(image.width), Int32(image.height),
                                 Int32(image.channels), Int32(compression), &message)
        }
        if Int(rc) != Int(CIMG_OK) { throw error(rc, message: message, path: path, writing: true) }
    }

    /// Writes `image` (1 or 3 channels) as baseline JPEG of `quality` 1-100.
    public static func writeJPEG(_ image: RasterImage, to path: String, quality: Int = 95) throws {
        var message = [CChar](repeating: 0, count: Int(CIMG_MESSAGE_SIZE))
        let rc = image.pixels.withUnsafeBufferPointer {
            cimg_encode_jpeg_file(path, $0.baseAddress, Int32(image.width), Int32(image.height),
                                  Int32(image.channels), Int32(quality), &message)
        }
        if Int(rc) != Int(CIMG_OK) { throw error(rc, message: message, path: path, writing: true) }
    }

    private static func finish(_ rc: Int32, image: inout cimg_image, message: [CChar], path: String) throws -> RasterImage {
        guard Int(rc) == Int(CIMG_OK), let base = image.pixels else { throw error(rc, message: message, path: path) }
        defer { cimg_free(base) }
        let count = Int(image.width) * Int(image.height) * Int(image.channels)
        let pixels = [UInt8](UnsafeBufferPointer(start: base, count: count))
        return RasterImage(width: Int(image.width), height: Int(image.height), channels: Int(image.channels), pixels: pixels)
    }

    private static func error(_ rc: Int32, message: [CChar], path: String, writing: Bool = false) -> ImageIOError {
        let text = String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        switch Int(rc) {
        case Int(CIMG_ERR_IO): return writing ? .writeFailed(path: path, reason: text) : .unreadable(path: path, reason: text)
        case Int(CIMG_ERR_FORMAT): return .unsupportedFormat(path: path)
        case Int(CIMG_ERR_TOO_LARGE): return .tooLarge(path: path, reason: text)
        case Int(CIMG_ERR_ARGUMENT): return .invalidArgument(path: path, reason: text)
        case Int(CIMG_ERR_MEMORY): return .unreadable(path: path, reason: "out of memory: \(text)")
        default: return writing ? .writeFailed(path: path, reason: text) : .corrupt(path: path, reason: text)
        }
    }
}
