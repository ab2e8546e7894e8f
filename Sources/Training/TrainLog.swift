import Foundation

/// Append-only CSV with a fixed header (results.csv, steps.csv). Rows are flushed as written so a
/// killed run keeps them; on resume, rows after the resumed epoch are dropped.
final class CSVLog {
    let path: String
    let header: [String]

    init(path: String, header: [String], keepRows: ((String) -> Bool)? = nil) {
        self.path = path
        self.header = header
        let fm = FileManager.default
        if let keep = keepRows, let text = try? String(contentsOfFile: path, encoding: .utf8) {
            let lines = text.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
            let kept = [header.joined(separator: ",")] + lines.dropFirst().filter(keep)
            try? (kept.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        } else if !fm.fileExists(atPath: path) || keepRows == nil {
            try? (header.joined(separator: ",") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        }
    }

    func append(_ values: [String]) {
        precondition(values.count == header.count, "\(path): \(values.count) values for \(header.count) columns")
        guard let h = FileHandle(forWritingAtPath: path) else { return }
        h.seekToEndOfFile()
        h.write((values.joined(separator: ",") + "\n").data(using: .utf8)!)
        try? h.close()
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
