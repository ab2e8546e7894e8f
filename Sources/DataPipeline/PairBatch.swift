import TensorCore

/// One batch of pairs ready for a dual-stream model.
public struct PairBatch: @unchecked Sendable {
    /// `[B, 3, H, W]` Float32 in [0, 1], RGB order.
    public let rgb: Tensor
    /// `[B, irChannels, H, W]` Float32 in [0, 1].
    public let ir: Tensor
    /// Per target: the image index in the batch.
    public let batchIndex: [Int]
    /// Per target: the class id.
    public let classes: [Int]
    /// Per target 4 values `cx, cy, w, h`, normalised to [0, 1] of W and H.
    public let boxes: [Float]
    /// RGB paths, one per image.
    public let files: [String]
    /// Sizes of the original files.
    public let originalSizes: [(height: Int, width: Int)]
    /// Per image the original -> batch image mapping (identity for augmented training samples).
    public let letterbox: [LetterboxInfo]

    /// Images in the batch.
    public var count: Int { files.count }
    /// Targets in the batch.
    public var targetCount: Int { classes.count }

    /// Packs samples of one size into tensors and flat target arrays.
    static func assemble(_ samples: [PairSample], files: [String], originalSizes: [(height: Int, width: Int)]) -> PairBatch {
        precondition(!samples.isEmpty, "an empty batch")
        let h = samples[0].rgb.height, w = samples[0].rgb.width, irc = samples[0].ir.channels
        let rgb = Tensor(uninitialized: [samples.count, 3, h, w])
        let ir = Tensor(uninitialized: [samples.count, irc, h, w])
        var batchIndex: [Int] = [], classes: [Int] = [], boxes: [Float] = []
        for (i, s) in samples.enumerated() {
            precondition(s.rgb.width == w && s.rgb.height == h && s.ir.width == w && s.ir.height == h && s.ir.channels == irc,
                         "sample \(i) is \(s.rgb.width)x\(s.rgb.height), batch is \(w)x\(h)")
            s.rgb.writeCHW(to: rgb.data + i * 3 * h * w)
            s.ir.writeCHW(to: ir.data + i * irc * h * w)
            let normalised = PairAugmenter.normalisedBoxes(s.boxes, width: w, height: h)
            for k in 0..<s.classes.count {
                batchIndex.append(i)
                classes.append(s.classes[k])
                boxes.append(contentsOf: normalised[(4 * k)..<(4 * k + 4)])
            }
        }
        return PairBatch(rgb: rgb, ir: ir, batchIndex: batchIndex, classes: classes, boxes: boxes, files: files,
                         originalSizes: originalSizes, letterbox: samples.map(\.letterbox))
    }
}
