import Foundation

/// The scan cache file: a JSON `ScanReport` with the hash it is valid for.
enum ScanCache {
    struct File: Codable {
        var version: Int
        var hash: String
        var report: ScanReport
    }

    /// The cached report when `path` exists, parses and matches `hash` and the version; else nil.
    static func load(_ path: String, hash: String) -> ScanReport? {
        guard let data = FileManager.default.contents(atPath: path),
              let file = try? JSONDecoder().decode(File.self, from: data),
              file.version == DatasetScanner.cacheVersion, file.hash == hash else { return nil }
        return file.report
    }

    /// Writes the cache atomically (temporary file + rename); false when the folder is not writable.
    @discardableResult
    static func save(_ report: ScanReport, to path: String, hash: String) -> Bool {
        guard let data = try? JSONEncoder().encode(File(version: DatasetScanner.cacheVersion, hash: hash, report: report)) else {
            return false
        }
        let temporary = path + ".tmp\(ProcessInfo.processInfo.processIdentifier)"
        guard FileManager.default.createFile(atPath: temporary, contents: data) else { return false }
        if rename(temporary, path) != 0 {
            unlink(temporary)
            return false
        }
        return true
    }
}
