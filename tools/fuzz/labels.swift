// libFuzzer target: YOLO label files (`class cx cy w h` lines) as the scan reads them.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzLabels(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    _ = LabelFile.parse(text, file: "fuzz.txt", width: 640, height: 480, classCount: 3)
    _ = LabelFile.parse(text, file: "fuzz.txt", width: 1, height: 1, classCount: 1)
    return 0
}
