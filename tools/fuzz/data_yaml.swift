// libFuzzer target: dataset YAML (keys, paths, names, nc, ir_dir, ir_channels).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDataYAML(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    _ = try? DatasetConfig.parse(yaml: text, file: "fuzz.yaml", directory: "/nonexistent")
    return 0
}
