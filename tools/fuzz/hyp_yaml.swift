// libFuzzer target: hyper-parameter YAML (every key, nested loss_scale and training maps).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHypYAML(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    var h = Hyperparameters()
    _ = try? h.apply(yaml: text, file: "fuzz.yaml")
    var f = Hyperparameters()
    _ = try? f.apply(flags: text.split(separator: " ").map(String.init))
    return 0
}
