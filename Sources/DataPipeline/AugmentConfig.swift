import Foundation

/// Training augmentation settings; defaults are Ultralytics' (plus the IR photometric jitter).
/// Geometry (mosaic, affine, flips) is drawn once per sample and applied to both streams; colour
/// jitter is per stream. YAML keys are the Ultralytics names (`hsv_h`, `fliplr`, ...).
public struct AugmentConfig: Sendable, Codable, Equatable {
    /// Float, probability of a 4-image mosaic. Default 1.0. The loader's `mosaicEnabled` turns it
    /// off for the last `close_mosaic` epochs.
    public var mosaic: Float = 1.0
    /// Float, rotation range in degrees (+/-). Default 0.
    public var degrees: Float = 0
    /// Float, translation as a fraction of the image size (+/-). Default 0.1.
    public var translate: Float = 0.1
    /// Float, scale gain: scale drawn in [1 - scale, 1 + scale]. Default 0.5.
    public var scale: Float = 0.5
    /// Float, shear range in degrees (+/-). Default 0.
    public var shear: Float = 0
    /// Float, perspective coefficient range (+/-), 0-0.001. Default 0.
    public var perspective: Float = 0
    /// Float, probability of a vertical flip. Default 0.
    public var flipud: Float = 0
    /// Float, probability of a horizontal flip. Default 0.5.
    public var fliplr: Float = 0.5
    /// Float, hue gain of the RGB HSV jitter (fraction of the hue circle). Default 0.015.
    public var hsvH: Float = 0.015
    /// Float, saturation gain of the RGB HSV jitter. Default 0.7.
    public var hsvS: Float = 0.7
    /// Float, value gain of the RGB HSV jitter. Default 0.4.
    public var hsvV: Float = 0.4
    /// Float, IR contrast jitter: contrast factor `1 + c`, c drawn in [-irGain, irGain], applied
    /// about mid-grey. Default 0.3.
    public var irGain: Float = 0.3
    /// Float, IR brightness jitter: shift of `b · 255`, b drawn in [-irBias, irBias]. Default 0.1.
    public var irBias: Float = 0.1
    /// Float, probability per sample of blanking one stream (RGB or IR, even odds) to all zeros:
    /// a camera that failed or is covered. Default 0.
    public var modalityDropout: Float = 0

    enum CodingKeys: String, CodingKey {
        case mosaic, degrees, translate, scale, shear, perspective, flipud, fliplr
        case hsvH = "hsv_h", hsvS = "hsv_s", hsvV = "hsv_v", irGain = "ir_gain", irBias = "ir_bias"
        case modalityDropout = "modality_dropout"
    }

    /// The Ultralytics defaults.
    public init() {}

    /// Decodes the keys present; absent keys keep their defaults.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        func value(_ key: CodingKeys, _ fallback: Float) throws -> Float {
            try c.decodeIfPresent(Float.self, forKey: key) ?? fallback
        }
        let d = AugmentConfig()
        mosaic = try value(.mosaic, d.mosaic)
        degrees = try value(.degrees, d.degrees)
        translate = try value(.translate, d.translate)
        scale = try value(.scale, d.scale)
        shear = try value(.shear, d.shear)
        perspective = try value(.perspective, d.perspective)
        flipud = try value(.flipud, d.flipud)
        fliplr = try value(.fliplr, d.fliplr)
        hsvH = try value(.hsvH, d.hsvH)
        hsvS = try value(.hsvS, d.hsvS)
        hsvV = try value(.hsvV, d.hsvV)
        irGain = try value(.irGain, d.irGain)
        irBias = try value(.irBias, d.irBias)
    }

    /// No augmentation at all (every probability and gain 0).
    public static let none: AugmentConfig = {
        var c = AugmentConfig()
        c.mosaic = 0; c.translate = 0; c.scale = 0; c.fliplr = 0
        c.hsvH = 0; c.hsvS = 0; c.hsvV = 0; c.irGain = 0; c.irBias = 0
        return c
    }()

    /// True when no geometric change is drawn besides mosaic (affine parameters all zero).
    var affineIsIdentity: Bool { degrees == 0 && translate == 0 && scale == 0 && shear == 0 && perspective == 0 }

    /// Checks every value's range; the error names the key.
    public func validate() throws {
        func check(_ key: String, _ v: Float, _ lo: Float, _ hi: Float) throws {
            guard v.isFinite && v >= lo && v <= hi else {
                throw DatasetError.invalidOption(name: key, message: "must be in [\(lo), \(hi)], got \(v)")
            }
        }
        try check("mosaic", mosaic, 0, 1)
        try check("degrees", degrees, 0, 180)
        try check("translate", translate, 0, 0.9)
        try check("scale", scale, 0, 0.95)
        try check("shear", shear, 0, 45)
        try check("perspective", perspective, 0, 0.001)
        try check("flipud", flipud, 0, 1)
        try check("fliplr", fliplr, 0, 1)
        try check("hsv_h", hsvH, 0, 1)
        try check("hsv_s", hsvS, 0, 1)
        try check("hsv_v", hsvV, 0, 1)
        try check("ir_gain", irGain, 0, 1)
        try check("ir_bias", irBias, 0, 1)
    }
}
