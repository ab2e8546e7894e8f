import Foundation

// libFuzzer target: safetensors files (header length, JSON header, dtypes, shapes, offsets).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSafetensors(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    _ = try? Safetensors.parse(Data(bytes: data, count: size), path: "fuzz.safetensors")
    return 0
}
