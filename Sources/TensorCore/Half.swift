import CKernels

/// IEEE binary16 conversions: F16C when the CPU has it, a bit-exact portable path otherwise.
public enum Half {
    /// Whether the F16C path is available on this CPU.
    public static var hasF16C: Bool { df_cpu_has_f16c() != 0 }

    /// Forces the portable paths (tests and benchmarks) or restores run-time dispatch.
    public static func forcePortable(_ on: Bool) { df_force_portable(on ? 1 : 0) }

    /// Half bits of `values` (round to nearest even; overflow to inf; underflow to subnormal or 0).
    public static func encode(_ values: [Float]) -> [UInt16] {
        var out = [UInt16](repeating: 0, count: values.count)
        values.withUnsafeBufferPointer { s in
            out.withUnsafeMutableBufferPointer { d in df_f32_to_f16(s.baseAddress!, d.baseAddress!, values.count) }
        }
        return out
    }

    /// Float values of half bits (exact).
    public static func decode(_ bits: [UInt16]) -> [Float] {
        var out = [Float](repeating: 0, count: bits.count)
        bits.withUnsafeBufferPointer { s in
            out.withUnsafeMutableBufferPointer { d in df_f16_to_f32(s.baseAddress!, d.baseAddress!, bits.count) }
        }
        return out
    }

    /// Rounds every value to the nearest half in place (what half storage would hold).
    public static func round(_ p: UnsafeMutablePointer<Float>, count: Int) { df_round_f16(p, count) }
}

extension Tensor {
    /// A tensor holding these values rounded through IEEE half (the emulation of Float16 storage).
    /// The gradient passes straight through (as a dtype cast does in PyTorch), itself rounded
    /// to half when `Autocast.halfActivations` is on.
    public func roundedToHalf() -> Tensor {
        let out = clone()
        Half.round(out.data, count: count)
        if Tensor.needsGrad(self), let nx = node {
            out.recording([self]) { g in nx.accumulate { d in addInto(d, g.ptr, g.count) } }
        }
        return out
    }

    /// Stores the values as IEEE half (2 bytes each).
    public func toHalf() -> HalfBuffer {
        let h = HalfBuffer(count: count)
        df_f32_to_f16(data, h.ptr, count)
        return h
    }

    /// A Float32 tensor from half storage.
    public convenience init(shape: [Int], half: HalfBuffer) {
        let b = Buffer(count: half.count)
        df_f16_to_f32(half.ptr, b.ptr, half.count)
        self.init(shape: shape, buffer: b)
    }
}
