import Foundation
import NN

/// Append-only CSV with a fixed header (results.csv, steps.csv). Rows are flushed as written so a
/// killed run keeps them; on resume, rows after the resumed epoch are dropped.
final class CSVLog {
    let path: String
    let header: [String]

    /// Opens the log: with `keepRows`, an existing file keeps the rows it accepts; otherwise the
    /// file starts anew with the header.
    init(path: String, header: [String], keepRows: ((String) -> Bool)? = nil) throws {
        self.path = path
        self.header = header
        if let keepRows, FileManager.default.fileExists(atPath: path) { keep(keepRows); return }
        do { try AtomicFile.write(Data((header.joined(separator: ",") + "\n").utf8), to: path) } catch {
            throw TrainingError.invalid("\(error)")
        }
    }

    /// A log that writes nothing (the ranks other than 0 of a data-parallel run).
    init(discarding header: [String]) {
        path = ""
        self.header = header
    }

    /// Rewrites the file with the rows `keepRow` accepts (best effort).
    func keep(_ keepRow: (String) -> Bool) {
        guard !path.isEmpty else { return }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
        let kept = [header.joined(separator: ",")] + lines.dropFirst().filter(keepRow)
        try? AtomicFile.write(Data((kept.joined(separator: "\n") + "\n").utf8), to: path)
    }

    /// Appends one row (a failed write is reported once by the checkpoint that follows it).
    func append(_ values: [String]) {
        precondition(values.count == header.count, "\(path): \(values.count) values for \(header.count) columns")
        guard !path.isEmpty else { return }
        let fd = open(path, O_WRONLY | O_APPEND)
        guard fd >= 0 else { return }
        let line = values.joined(separator: ",") + "\n"
        _ = line.withCString { Foundation.write(fd, $0, strlen($0)) }
        close(fd)
    }

    static func f(_ v: Double, _ digits: Int = 5) -> String { v.isFinite ? String(format: "%.\(digits)g", v) : "nan" }
}

/// Console output: a live progress line on a terminal, periodic plain lines otherwise.
final class Progress {
    let isTTY = isatty(STDOUT_FILENO) != 0
    var lastPlain = Date.distantPast
    let enabled: Bool

    init(enabled: Bool) { self.enabled = enabled }

    func update(_ text: String, index: Int, total: Int) {
        guard enabled else { return }
        if isTTY {
            print("\r\u{1B}[2K" + text, terminator: "")
            fflush(nil)
        } else if index == total || Date().timeIntervalSince(lastPlain) > 10 || index == 1 {
            print(text)
            lastPlain = Date()
        }
    }

    func finish() {
        guard enabled, isTTY else { return }
        print("")
    }

    static func duration(_ s: Double) -> String {
        guard s.isFinite, s >= 0 else { return "?" }
        let t = Int(s.rounded())
        return t >= 3600 ? String(format: "%d:%02d:%02d", t / 3600, (t / 60) % 60, t % 60) : String(format: "%d:%02d", t / 60, t % 60)
    }
}
