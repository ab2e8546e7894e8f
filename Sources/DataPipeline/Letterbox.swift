import Foundation

/// How an original image was placed into a letterboxed one: `x_box = x_orig · gainX + padX`
/// (same for y). Ultralytics' `ratio_pad`.
public struct LetterboxInfo: Sendable, Codable, Equatable {
    /// Resized width / original width (and height): the scale ratio per axis.
    public var gainX: Float
    public var gainY: Float
    /// Left and top padding in pixels of the letterboxed image.
    public var padX: Float
    public var padY: Float
    /// Size of the original image.
    public var originalWidth: Int
    public var originalHeight: Int
    /// Size of the letterboxed image.
    public var width: Int
    public var height: Int

    public init(gainX: Float, gainY: Float, padX: Float, padY: Float,
                originalWidth: Int, originalHeight: Int, width: Int, height: Int) {
        self.gainX = gainX
        self.gainY = gainY
        self.padX = padX
        self.padY = padY
        self.originalWidth = originalWidth
        self.originalHeight = originalHeight
        self.width = width
        self.height = height
    }

    /// Gain 1 and no padding on a `width` x `height` image (augmented training samples, whose
    /// geometry cannot be inverted).
    public static func identity(width: Int, height: Int) -> LetterboxInfo {
        LetterboxInfo(gainX: 1, gainY: 1, padX: 0, padY: 0, originalWidth: width, originalHeight: height,
                      width: width, height: height)
    }

    /// The scale ratio (the smaller gain; both are equal up to rounding of the resized size).
    public var ratio: Float { min(gainX, gainY) }

    /// The size of the resized image inside the padding.
    public var resizedWidth: Int { max(1, Int((Float(originalWidth) * gainX).rounded())) }
    public var resizedHeight: Int { max(1, Int((Float(originalHeight) * gainY).rounded())) }
}

/// Letterboxing: resize with the aspect ratio kept, pad with grey 114 to a stride-aligned size.
public enum Letterbox {
    /// The padding value of YOLO letterboxes and mosaics.
    public static let padValue: UInt8 = 114

    /// `size` rounded up to a multiple of `stride` (Ultralytics' check_imgsz).
    public static func alignedSize(_ size: Int, stride: Int = 32) -> Int {
        max(stride, (size + stride - 1) / stride * stride)
    }

    /// Plans the letterbox of a `width` x `height` image into `targetWidth` x `targetHeight`
    /// (Ultralytics' LetterBox): ratio `r = min(tw / w, th / h)` (capped at 1 unless `scaleUp`),
    /// resized size `round(w·r) x round(h·r)`, padding split in two halves (`round(d/2 ∓ 0.1)`).
    /// With `minimal` the output is the smallest stride multiple holding the resized image (the
    /// rectangular inference shape); otherwise it is the target size, which must be stride-aligned.
    public static func plan(width: Int, height: Int, targetWidth: Int, targetHeight: Int,
                            scaleUp: Bool = true, stride: Int = 32, minimal: Bool = false) -> LetterboxInfo {
        precondition(width > 0 && height > 0 && targetWidth > 0 && targetHeight > 0,
                     "letterbox \(width)x\(height) into \(targetWidth)x\(targetHeight)")
        var r = min(Double(targetWidth) / Double(width), Double(targetHeight) / Double(height))
        if !scaleUp { r = min(r, 1) }
        let newW = max(1, Int((Double(width) * r).rounded())), newH = max(1, Int((Double(height) * r).rounded()))
        var dw = Double(targetWidth - newW), dh = Double(targetHeight - newH)
        if minimal {
            dw = dw.truncatingRemainder(dividingBy: Double(stride))
            dh = dh.truncatingRemainder(dividingBy: Double(stride))
        }
        let left = Int((dw / 2 - 0.1).rounded()), right = Int((dw / 2 + 0.1).rounded())
        let top = Int((dh / 2 - 0.1).rounded()), bottom = Int((dh / 2 + 0.1).rounded())
        return LetterboxInfo(gainX: Float(newW) / Float(width), gainY: Float(newH) / Float(height),
                             padX: Float(left), padY: Float(top), originalWidth: width, originalHeight: height,
                             width: newW + left + right, height: newH + top + bottom)
    }

    /// Applies `info` to `image` (which must have the original size): resize, then pad with 114.
    public static func apply(_ image: RasterImage, _ info: LetterboxInfo) -> RasterImage {
        precondition(image.width == info.originalWidth && image.height == info.originalHeight,
                     "letterbox planned for \(info.originalWidth)x\(info.originalHeight), image is \(image.width)x\(image.height)")
        let resized = image.resized(width: info.resizedWidth, height: info.resizedHeight)
        return pad(resized, info)
    }

    /// Pads an image that already has the resized size of `info`.
    public static func pad(_ resized: RasterImage, _ info: LetterboxInfo) -> RasterImage {
        if resized.width == info.width && resized.height == info.height { return resized }
        var out = RasterImage(width: info.width, height: info.height, channels: resized.channels, fill: padValue)
        out.paste(resized, width: min(resized.width, info.width - Int(info.padX)),
                  height: min(resized.height, info.height - Int(info.padY)), x: Int(info.padX), y: Int(info.padY))
        return out
    }

    /// Normalised `cx, cy, w, h` boxes of the original image -> normalised boxes of the letterboxed image.
    public static func transformLabels(_ boxes: [Float], _ info: LetterboxInfo) -> [Float] {
        var out = boxes
        let ow = Float(info.originalWidth), oh = Float(info.originalHeight)
        let W = Float(info.width), H = Float(info.height)
        var i = 0
        while i + 3 < out.count {
            out[i] = (boxes[i] * ow * info.gainX + info.padX) / W
            out[i + 1] = (boxes[i + 1] * oh * info.gainY + info.padY) / H
            out[i + 2] = boxes[i + 2] * ow * info.gainX / W
            out[i + 3] = boxes[i + 3] * oh * info.gainY / H
            i += 4
        }
        return out
    }

    /// The inverse transform for predictions (Ultralytics' `scale_boxes`): pixel `x1, y1, x2, y2`
    /// boxes of the letterboxed image -> pixel boxes of the original image, clipped to it.
    public static func scaleBoxes(_ xyxy: [Float], _ info: LetterboxInfo) -> [Float] {
        var out = xyxy
        let ow = Float(info.originalWidth), oh = Float(info.originalHeight)
        var i = 0
        while i + 3 < out.count {
            out[i] = min(max((xyxy[i] - info.padX) / info.gainX, 0), ow)
            out[i + 1] = min(max((xyxy[i + 1] - info.padY) / info.gainY, 0), oh)
            out[i + 2] = min(max((xyxy[i + 2] - info.padX) / info.gainX, 0), ow)
            out[i + 3] = min(max((xyxy[i + 3] - info.padY) / info.gainY, 0), oh)
            i += 4
        }
        return out
    }
}
