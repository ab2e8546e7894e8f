import Foundation
import NN

/// The paths of a run directory.
public struct RunPaths: Sendable {
    public let root: String
    public var weights: String { root + "/weights" }
    public var last: String { weights + "/last.safetensors" }
    public var lastState: String { weights + "/last.state.safetensors" }
    public var best: String { weights + "/best.safetensors" }
    public var bestState: String { weights + "/best.state.safetensors" }
    public var results: String { root + "/results.csv" }
    public var steps: String { root + "/steps.csv" }
    public var args: String { root + "/args.yaml" }
    /// The checkpoint commit marker (see `Checkpoints`).
    public var commit: String { weights + "/commit.json" }
    /// The lock held while a process trains in this directory.
    public var lock: String { root + "/.lock" }

    public init(root: String) { self.root = root }

    /// Creates the output folder `project/name` (or the first free `name2`, `name3`, …, claimed
    /// with an atomic mkdir); with `existOK` an existing `project/name` is reused. Returns its path.
    public static func createFolder(project: String, name: String, existOK: Bool) throws -> String {
        do { try FileManager.default.createDirectory(atPath: project, withIntermediateDirectories: true) } catch {
            throw TrainingError.invalid("cannot create the project folder \(project): \(FileError.reason(error))")
        }
        var k = 1
        while true {
            let path = project + "/" + name + (k == 1 ? "" : "\(k)")
            if mkdir(path, 0o755) == 0 || (existOK && k == 1 && errno == EEXIST) { return path }
            guard errno == EEXIST else { throw TrainingError.invalid("cannot create \(path) (\(String(cString: strerror(errno))))") }
            k += 1
        }
    }

    /// Creates `project/name` atomically: `mkdir` fails when the folder exists, and then `name2`,
    /// `name3`, … are tried, so two processes never pick the same folder. With `existOK` an
    /// existing `project/name` is reused (its lock still keeps a second process out).
    public static func create(project: String, name: String, existOK: Bool) throws -> RunPaths {
        let path = try createFolder(project: project, name: name, existOK: existOK)
        if mkdir(path + "/weights", 0o755) != 0 && errno != EEXIST {
            throw TrainingError.invalid("cannot create \(path)/weights (\(String(cString: strerror(errno))))")
        }
        return RunPaths(root: path)
    }

    /// The run to resume: a run directory, a weights file inside one, or "" for the newest
    /// `*/weights/last.state.safetensors` under `project`. The path is made absolute.
    public static func resolveResume(_ arg: String, project: String) throws -> RunPaths {
        let fm = FileManager.default
        if arg.isEmpty {
            let runs = (try? fm.contentsOfDirectory(atPath: project)) ?? []
            let candidates = runs.map { project + "/" + $0 }.filter { fm.fileExists(atPath: RunPaths(root: $0).lastState) }
            let newest = candidates.max { a, b in
                func date(_ r: String) -> Date {
                    ((try? fm.attributesOfItem(atPath: RunPaths(root: r).lastState))?[.modificationDate] as? Date) ?? .distantPast
                }
                return date(a) < date(b)
            }
            guard let newest else { throw TrainingError.invalid("--resume: no run with weights/last.state.safetensors under \(project)") }
            return RunPaths(root: absolute(newest))
        }
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: arg, isDirectory: &isDir) else { throw TrainingError.invalid("--resume \(arg): no such file or directory") }
        let root = isDir.boolValue ? arg : URL(fileURLWithPath: arg).deletingLastPathComponent().deletingLastPathComponent().path
        let p = RunPaths(root: absolute(root))
        guard fm.fileExists(atPath: p.lastState) || fm.fileExists(atPath: p.commit) else {
            throw TrainingError.invalid("--resume \(arg): \(p.lastState) is missing (the run saved no resumable state)")
        }
        return p
    }

    /// `path` made absolute against the current directory (standardised).
    public static func absolute(_ path: String) -> String {
        URL(fileURLWithPath: path, relativeTo: URL(fileURLWithPath: FileManager.default.currentDirectoryPath)).standardizedFileURL.path
    }
}

/// An exclusive lock on a run directory for the lifetime of a training process (`flock` on
/// `.lock`, which holds the owner's pid). The kernel drops it when the process ends, however it ends.
public final class RunLock {
    let fd: Int32

    /// Takes the lock or throws an error naming the process that holds it.
    public init(_ paths: RunPaths) throws {
        fd = open(paths.lock, O_RDWR | O_CREAT, 0o644)
        guard fd >= 0 else { throw TrainingError.invalid("cannot open \(paths.lock) (\(String(cString: strerror(errno))))") }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            var buf = [UInt8](repeating: 0, count: 32)
            let n = pread(fd, &buf, 31, 0)
            let holder = n > 0 ? String(decoding: buf[0..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : "?"
            close(fd)
            throw TrainingError.invalid("run directory \(paths.root) is in use by another training process (pid \(holder)); " +
                                        "pick another --name, or wait for it to finish")
        }
        let pid = "\(getpid())\n"
        _ = ftruncate(fd, 0)
        _ = pid.withCString { pwrite(fd, $0, strlen($0), 0) }
    }

    deinit { close(fd) }
}

/// Clear sentences for file-system errors (errno text, never a raw Foundation dump).
public enum FileError {
    /// The reason of a Foundation or POSIX error: "No space left on device", "Permission denied", …
    public static func reason(_ error: Error) -> String {
        let ns = error as NSError
        if let posix = ns.userInfo[NSUnderlyingErrorKey] as? NSError, posix.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(posix.code)))
        }
        if ns.domain == NSPOSIXErrorDomain { return String(cString: strerror(Int32(ns.code))) }
        if ns.domain == NSCocoaErrorDomain {
            switch ns.code {
            case NSFileWriteOutOfSpaceError: return String(cString: strerror(ENOSPC))
            case NSFileWriteNoPermissionError, NSFileReadNoPermissionError: return String(cString: strerror(EACCES))
            case NSFileNoSuchFileError, NSFileReadNoSuchFileError: return String(cString: strerror(ENOENT))
            case NSFileWriteVolumeReadOnlyError: return String(cString: strerror(EROFS))
            default: break
            }
        }
        if let e = error as? CustomStringConvertible, !(error is NSError) { return e.description }
        return ns.localizedDescription
    }
}

/// A checkpoint set (last weights, last state, and best weights + state when the epoch improved)
/// written as one generation. Generations only grow: a rollback that re-saves an epoch's state
/// writes a new generation, never over a committed one. The marker also records the epoch the
/// files hold, which is how far results.csv and steps.csv are trimmed after a failure.
///
/// Every file of generation G is first written in full beside its final name (`NAME.gG.tmp`,
/// fsync); then `commit.json` ({"generation": G, "files": [...]}) replaces the previous marker
/// atomically: that rename is the commit. Only then are the temporary files renamed over the final
/// names. On start (and after a failed commit), `recover` finishes the committed generation whose
/// renames were interrupted (roll forward) and deletes every other temporary file (roll back), so
/// a failure at any point (a full disk, a kill) leaves the previous epoch whole.
public enum Checkpoints {
    struct Marker: Codable {
        var generation: Int
        var files: [String]
        /// The training epoch the files hold (absent in markers of older runs: the generation was the epoch).
        var epoch: Int?
        var heldEpoch: Int { epoch ?? generation }
    }

    static func marker(_ paths: RunPaths) -> Marker? {
        guard let d = FileManager.default.contents(atPath: paths.commit) else { return nil }
        return try? JSONDecoder().decode(Marker.self, from: d)
    }

    /// Writes `files` (final path -> bytes), holding epoch `epoch`, as the next generation.
    public static func commit(_ paths: RunPaths, epoch: Int, files: [(path: String, data: Data)]) throws {
        let generation = (marker(paths)?.generation ?? 0) + 1
        for f in files {
            do { try AtomicFile.writeDurably(f.data, to: temporary(f.path, generation)) } catch let SafetensorsError.unwritable(_, reason) {
                throw SafetensorsError.unwritable(path: f.path, reason: reason)
            }
        }
        let m = Marker(generation: generation, files: files.map { URL(fileURLWithPath: $0.path).lastPathComponent }, epoch: epoch)
        let json = try JSONEncoder().encode(m)
        try AtomicFile.write(json, to: paths.commit)
        try finish(paths, m, requireAll: true)
    }

    /// The committed generation, or nil for a run that has none yet.
    public static func generation(_ paths: RunPaths) -> Int? { marker(paths)?.generation }

    /// The epoch held by the committed generation, or nil for a run that has none yet.
    public static func committedEpoch(_ paths: RunPaths) -> Int? { marker(paths)?.heldEpoch }

    /// Rolls a half-written checkpoint forward (committed) or back (not committed); returns a
    /// description of what it did, or nil when the folder was consistent.
    @discardableResult
    public static func recover(_ paths: RunPaths) throws -> String? {
        let fm = FileManager.default
        var notes: [String] = []
        var committed = Set<String>()
        if let m = marker(paths) {
            committed = Set(m.files.map { URL(fileURLWithPath: temporary(paths.weights + "/" + $0, m.generation)).lastPathComponent })
            let pending = m.files.filter { fm.fileExists(atPath: temporary(paths.weights + "/" + $0, m.generation)) }
            if !pending.isEmpty {
                try finish(paths, m)
                notes.append("completed checkpoint generation \(m.generation) (\(pending.joined(separator: ", ")))")
            }
        }
        for name in (try? fm.contentsOfDirectory(atPath: paths.weights)) ?? [] {
            let isTemp = name.hasSuffix(".tmp") || (name.hasPrefix(".") && name.contains(".tmp"))
            guard isTemp, !committed.contains(name) else { continue }
            try? fm.removeItem(atPath: paths.weights + "/" + name)
            notes.append("removed \(name) (an interrupted write)")
        }
        return notes.isEmpty ? nil : notes.joined(separator: "; ")
    }

    /// The temporary name of `path` in generation `g`.
    static func temporary(_ path: String, _ g: Int) -> String { path + ".g\(g).tmp" }

    /// Renames the generation's temporary files into place. Right after a commit every one must be
    /// there (`requireAll`: a missing one means another process touched the folder); a recovery
    /// finishes whichever renames an interruption left.
    static func finish(_ paths: RunPaths, _ m: Marker, requireAll: Bool = false) throws {
        for name in m.files {
            let final = paths.weights + "/" + name, tmp = temporary(final, m.generation)
            if requireAll, !FileManager.default.fileExists(atPath: tmp) {
                throw TrainingError.checkpoint(path: tmp, reason: "the new checkpoint file vanished before it was renamed into place " +
                                                "(was the run folder changed by another process?)")
            }
            if FileManager.default.fileExists(atPath: tmp) {
                guard rename(tmp, final) == 0 else {
                    throw TrainingError.checkpoint(path: final, reason: "cannot rename the new checkpoint into place (\(String(cString: strerror(errno))))")
                }
            }
        }
        AtomicFile.syncDirectory(paths.weights)
    }
}
