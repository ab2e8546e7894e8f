import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Path rules of the YOLOFuse layout and the listing of a split's images.
public enum DatasetPaths {
    /// `path` with its last `images` folder component replaced by `folder`; nil when the path has no
    /// `images` folder (the file name itself does not count).
    public static func replacingImagesFolder(in path: String, with folder: String) -> String? {
        var parts = path.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count >= 2, let i = parts[..<(parts.count - 1)].lastIndex(of: "images") else { return nil }
        parts[i] = Substring(folder)
        return parts.joined(separator: "/")
    }

    /// The IR partner of an RGB image: the `images` folder replaced by `irDir`, same file name.
    public static func irPath(forRGB path: String, irDir: String) -> String? {
        replacingImagesFolder(in: path, with: irDir)
    }

    /// The label file of an RGB image (Ultralytics' rule): `images` -> `labels`, extension `.txt`.
    public static func labelPath(forRGB path: String) -> String? {
        guard let p = replacingImagesFolder(in: path, with: "labels") else { return nil }
        return withoutExtension(p) + ".txt"
    }

    /// `path` without its file extension.
    public static func withoutExtension(_ path: String) -> String {
        let name = (path as NSString).lastPathComponent
        guard let dot = name.lastIndex(of: "."), dot != name.startIndex else { return path }
        return String(path.dropLast(name.distance(from: dot, to: name.endIndex)))
    }

    /// The lower-cased extension of `path` (without the dot).
    public static func fileExtension(_ path: String) -> String {
        (path as NSString).pathExtension.lowercased()
    }

    /// The IR file for `expected`: the same path if it exists, else the same stem with another
    /// image extension (RGB `.jpg` with IR `.png`, or different case); nil when none exists.
    public static func existingPartner(_ expected: String) -> String? {
        if isRegularFile(expected) { return expected }
        let stem = withoutExtension(expected)
        for ext in ["png", "jpg", "jpeg", "PNG", "JPG", "JPEG"] where isRegularFile(stem + "." + ext) {
            return stem + "." + ext
        }
        return nil
    }

    /// True when `path` names a regular file (following symlinks).
    public static func isRegularFile(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
    }

    /// True when `path` names a directory.
    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// Size and modification time (ns) of a file, nil when it does not exist.
    public static func stamp(_ path: String) -> (size: Int64, mtime: Int64)? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        #if canImport(Darwin)
        let ns = Int64(st.st_mtimespec.tv_sec) * 1_000_000_000 + Int64(st.st_mtimespec.tv_nsec)
        #else
        let ns = Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
        #endif
        return (Int64(st.st_size), ns)
    }

    /// Image files under `folder`, recursively, sorted; files with image extensions the pipeline
    /// cannot decode are returned separately.
    public static func listFolder(_ folder: String) -> (images: [String], unsupported: [String]) {
        var images: [String] = [], unsupported: [String] = []
        let url = URL(fileURLWithPath: folder)
        guard let walker = FileManager.default.enumerator(at: url, includingPropertiesForKeys: [.isRegularFileKey],
                                                          options: [.skipsHiddenFiles]) else { return ([], []) }
        for case let item as URL in walker {
            let ext = item.pathExtension.lowercased()
            let isImage = ImageIO.extensions.contains(ext)
            guard isImage || ImageIO.unsupportedExtensions.contains(ext) else { continue }
            let path = item.standardizedFileURL.path
            guard isRegularFile(path) else { continue }
            if isImage { images.append(path) } else { unsupported.append(path) }
        }
        return (images.sorted(), unsupported.sorted())
    }

    /// The RGB images a split source names: a folder (recursively), a `.txt` list, or one image.
    public static func images(of source: String, root: String) throws -> [String] {
        if isDirectory(source) { return listFolder(source).images }
        if fileExtension(source) == "txt" { return try readList(source, root: root).map(\.path) }
        return [source]
    }

    /// What a `.txt` list names: image paths (`./x` relative to the list's folder, other relative
    /// paths relative to `root`) with the list line of each. Blank lines and `#` comments are skipped.
    public static func readList(_ list: String, root: String) throws -> [(path: String, line: Int)] {
        let text: String
        do {
            text = try String(contentsOfFile: list, encoding: .utf8)
        } catch {
            throw DatasetError.unreadableList(path: list, reason: (error as NSError).localizedDescription)
        }
        let folder = (list as NSString).deletingLastPathComponent
        var out: [(String, Int)] = []
        var n = 0
        for raw in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" }) {
            n += 1
            let entry = raw.trimmingCharacters(in: .whitespaces)
            if entry.isEmpty || entry.hasPrefix("#") { continue }
            let abs: String
            if entry.hasPrefix("/") { abs = entry }
            else if entry.hasPrefix("./") { abs = (folder as NSString).appendingPathComponent(String(entry.dropFirst(2))) }
            else { abs = (root as NSString).appendingPathComponent(entry) }
            out.append((URL(fileURLWithPath: abs).standardizedFileURL.path, n))
        }
        return out
    }
}

/// A 128-bit FNV-1a based hash of strings and integers (stable across runs and platforms; not
/// cryptographic). Keys the scan cache.
struct StableHasher {
    private var a: UInt64 = 0xcbf2_9ce4_8422_2325
    private var b: UInt64 = 0x8422_2325_cbf2_9ce4

    mutating func combine(_ s: String) {
        for byte in s.utf8 { mix(byte) }
        mix(0)
    }

    mutating func combine(_ v: Int64) {
        var x = UInt64(bitPattern: v)
        for _ in 0..<8 {
            mix(UInt8(x & 0xFF))
            x >>= 8
        }
    }

    private mutating func mix(_ byte: UInt8) {
        a = (a ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
        b = (b ^ UInt64(byte ^ 0x5A)) &* 0x0000_0100_0000_01B3
        b ^= b >> 29
    }

    var hex: String { String(format: "%016llx%016llx", a, b) }
}
