import Foundation
@testable import Detection
import TensorCore

/// Repository root, found from this file's path (tests read configs/ and Tests/Fixtures/).
let repoRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()

func modelPath(_ name: String) -> String { repoRoot + "/configs/models/" + name }
func fixturePath(_ name: String) -> String { repoRoot + "/Tests/Fixtures/" + name }

func buildModel(_ name: String, nc: Int = 1, channels: [String: Int] = [:], seed: UInt64 = 0) throws -> DetectionModel {
    try ModelBuilder.build(try ModelSpec.load(modelPath(name)), nc: nc, channels: channels, seed: seed)
}
