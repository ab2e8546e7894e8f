import CKernels

/// IEEE binary16 and bfloat16 conversions with the current context's kernels (F16C / AVX-512
/// when the CPU has them, bit-exact portable loops otherwise).
public enum Half {
    /// Whether this CPU has F16C.
    public static var hasF16C: Bool { df_cpu_has_f16c() != 0 }

    /// Half bits of `values` (round to nearest even; overflow to inf; underflow to subnormal or 0).
    public static func encode(_ values: [Float], kernels: Kernels? = nil) -> [UInt16] {
        let k = (kernels ?? ComputeContext.current.kernels).table
        var out = [UInt16](repeating: 0, count: values.count)
        values.withUnsafeBufferPointer { s in
            out.withUnsafeMutableBufferPointer { d in
                if let sp = s.baseAddress, let dp = d.baseAddress { k.pointee.f32_to_f16(sp, dp, values.count) }
            }
        }
        return out
    }

    /// Float values of half bits (exact).
    public static func decode(_ bits: [UInt16], kernels: Kernels? = nil) -> [Float] {
        let k = (kernels ?? ComputeContext.current.kernels).table
        var out = [Float](repeating: 0, count: bits.count)
        bits.withUnsafeBufferPointer { s in
            out.withUnsafeMutableBufferPointer { d in
                if let sp = s.baseAddress, let dp = d.baseAddress { k.pointee.f16_to_f32(sp, dp, bits.count) }
            }
        }
        return out
    }

    /// Rounds every value to the nearest half in place (what half storage would hold).
    public static func round(_ p: UnsafeMutablePointer<Float>, count: Int) {
        ComputeContext.current.k.pointee.round_f16(p, count)
    }

    /// Rounds every value to the nearest bfloat16 in place (subnormals flush to signed zero).
    public static func roundBF16(_ p: UnsafeMutablePointer<Float>, count: Int) {
        ComputeContext.current.k.pointee.round_bf16(p, count)
    }
}

extension Tensor {
    /// A tensor holding these values rounded through IEEE half (the emulation of Float16 storage).
    /// The gradient passes straight through (as a dtype cast does in PyTorch), itself rounded
    /// to half in an fp16 autocast region.
    public func roundedToHalf() -> Tensor {
        let out = clone()
        Half.round(out.data, count: count)
        if Tensor.needsGrad(self), let nx = node {
            out.recording([self]) { g in nx.addGradient(g.ptr) }
        }
        return out
    }

    /// Stores the values as IEEE half (2 bytes each).
    public func toHalf() -> HalfBuffer {
        let h = HalfBuffer(count: count)
        ComputeContext.current.k.pointee.f32_to_f16(data, h.ptr, count)
        return h
    }

    /// A Float32 tensor from half storage.
    public convenience init(shape: [Int], half: HalfBuffer) {
        let b = Buffer(count: half.count)
        ComputeContext.current.k.pointee.f16_to_f32(half.ptr, b.ptr, half.count)
        self.init(shape: shape, buffer: b)
    }
}
