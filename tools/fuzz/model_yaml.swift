// libFuzzer target: model YAML (rows, scales, streams, fusion sections), parsed and, when it
// parses, built at a tiny width (graph construction checks every reference and channel count).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzModelYAML(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    guard let spec = try? ModelSpec.parse(text, file: "fuzz.yaml") else { return 0 }
    // Building allocates every layer: keep fuzzed sizes small (at most a few MB of weights).
    if text.count < 4096 { _ = try? ModelBuilder.build(spec, nc: 2, maxParameters: 2_000_000) }
    return 0
}
