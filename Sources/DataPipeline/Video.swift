import CVideo
import Foundation

/// A video file or a stream that cannot be used; messages name the file and FFmpeg's reason.
public enum VideoError: Error, CustomStringConvertible {
    case unreadable(path: String, reason: String)
    case unwritable(path: String, reason: String)
    public var description: String {
        switch self {
        case let .unreadable(p, r): return "\(p): cannot read video (\(r))"
        case let .unwritable(p, r): return "cannot write video \(p) (\(r))"
        }
    }
}

/// The NUL-terminated text of an error buffer.
func message(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Frames of a video file in order, decoded to RGB with their presentation times (FFmpeg).
public final class VideoReader {
    public let path: String
    public let width: Int, height: Int
    /// Nominal frames per second (0 when the container does not say).
    public let fps: Double
    /// Duration in seconds (0 when unknown).
    public let duration: Double
    private let reader: OpaquePointer
    private var buffer: [UInt8]
    private var index = 0

    public init(path: String) throws {
        var err = [CChar](repeating: 0, count: 256)
        guard let r = dv_open(path, &err, err.count) else { throw VideoError.unreadable(path: path, reason: message(err)) }
        reader = r
        var w: Int32 = 0, h: Int32 = 0, f = 0.0, d = 0.0
        dv_info(r, &w, &h, &f, &d)
        (width, height, fps, duration) = (Int(w), Int(h), f, d)
        self.path = path
        buffer = [UInt8](repeating: 0, count: width * height * 3)
    }

    deinit { dv_close(reader) }

    /// The next frame (RGB) and its presentation time in seconds (the frame index over the frame
    /// rate when the stream has no timestamps), or nil at the end.
    public func next() throws -> (image: RasterImage, seconds: Double)? {
        var err = [CChar](repeating: 0, count: 256)
        var t = 0.0
        let rc = buffer.withUnsafeMutableBufferPointer { dv_read(reader, $0.baseAddress, &t, &err, err.count) }
        if rc == 0 { return nil }
        if rc < 0 { throw VideoError.unreadable(path: path, reason: message(err)) }
        defer { index += 1 }
        return (RasterImage(width: width, height: height, channels: 3, pixels: buffer), t >= 0 ? t : Double(index) / (fps > 0 ? fps : 25))
    }
}

/// An MP4 written frame by frame: H.264 where FFmpeg has libx264, else MPEG-4 Part 2.
public final class VideoWriter {
    public let path: String
    public let width: Int, height: Int
    private var writer: OpaquePointer?

    public init(path: String, width: Int, height: Int, fps: Double) throws {
        var err = [CChar](repeating: 0, count: 256)
        guard let w = dv_create(path, Int32(width), Int32(height), fps, &err, err.count) else {
            throw VideoError.unwritable(path: path, reason: message(err))
        }
        writer = w
        (self.path, self.width, self.height) = (path, width, height)
    }

    /// The encoder in use: `libx264` or `mpeg4`.
    public var codec: String { writer.map { String(cString: dv_codec($0)) } ?? "" }

    public func write(_ image: RasterImage) throws {
        guard let writer else { throw VideoError.unwritable(path: path, reason: "already finished") }
        let img = image.channels == 3 ? image : image.converted(toChannels: 3)
        precondition(img.width == width && img.height == height, "video frame \(img.width)x\(img.height) into \(width)x\(height)")
        var err = [CChar](repeating: 0, count: 256)
        let rc = img.pixels.withUnsafeBufferPointer { dv_write(writer, $0.baseAddress, &err, err.count) }
        if rc != 0 { throw VideoError.unwritable(path: path, reason: message(err)) }
    }

    /// Flushes and closes the file.
    public func finish() throws {
        guard let w = writer else { return }
        writer = nil
        var err = [CChar](repeating: 0, count: 256)
        if dv_finish(w, &err, err.count) != 0 { throw VideoError.unwritable(path: path, reason: message(err)) }
    }

    deinit { if let w = writer { _ = dv_finish(w, nil, 0) } }
}
