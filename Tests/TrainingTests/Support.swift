import DataPipeline
import Foundation
@testable import Training

/// Repository root (tests read configs/ from it).
let repoRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()

/// A scratch folder for this test process (runs, data sets and checkpoints: about a gigabyte),
/// removed when the process exits; folders left by test processes that died first are removed
/// when the next one makes its own.
let scratch: String = {
    let fm = FileManager.default, base = NSTemporaryDirectory(), prefix = "dualfuse-tests-"
    for name in (try? fm.contentsOfDirectory(atPath: base)) ?? [] where name.hasPrefix(prefix) {
        if let pid = Int32(name.dropFirst(prefix.count)), pid != getpid(), kill(pid, 0) != 0, errno == ESRCH {
            try? fm.removeItem(atPath: base + name)
        }
    }
    let dir = base + prefix + "\(getpid())"
    try? fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
    atexit { try? FileManager.default.removeItem(atPath: NSTemporaryDirectory() + "dualfuse-tests-\(getpid())") }
    return dir
}()

/// Synthetic data sets, generated once per process: (name, train, val, seed) -> data.yaml path.
enum TestData {
    nonisolated(unsafe) static var made: [String: String] = [:]
    static let lock = NSLock()

    static func synthetic(_ name: String, train: Int, val: Int, seed: UInt64, size: Int = 128) -> String {
        lock.lock(); defer { lock.unlock() }
        if let p = made[name] { return p }
        let dir = scratch + "/" + name
        let s = try! SyntheticScenes.writeDataset(to: dir, train: train, val: val, imageSize: size, seed: seed)
        made[name] = s.yamlPath
        return s.yamlPath
    }

    /// A model YAML of configs/models at a reduced width (scale t: depth 0.33, width 0.125), for fast tests.
    static func tinyModel(_ file: String) -> String {
        let out = scratch + "/tiny_" + file
        if !FileManager.default.fileExists(atPath: out) {
            let text = try! String(contentsOfFile: repoRoot + "/configs/models/" + file, encoding: .utf8)
                .replacingOccurrences(of: "scales: # [depth_multiple, width_multiple, max_channels]\n",
                                      with: "scale: t\nscales:\n  t: [0.33, 0.125, 1024]\n")
            try! text.write(toFile: out, atomically: true, encoding: .utf8)
        }
        return out
    }

    /// Options of a quiet, fast run.
    static func options(data: String, model: String, name: String, epochs: Int, batch: Int = 16) -> TrainOptions {
        var o = TrainOptions(data: data, cfg: tinyModel(model))
        o.project = scratch + "/runs"
        o.name = name
        o.existOK = true
        o.verbose = false
        o.hyp.epochs = epochs
        o.hyp.batch = batch
        o.hyp.imgsz = 128
        o.hyp.accumulate = 1
        o.hyp.warmup_epochs = 1
        o.hyp.warmup_iters_min = 20
        o.hyp.close_mosaic = 2
        o.hyp.workers = 2
        o.hyp.optimizer = "SGD"     // the recipe the learning tests' spreads were measured with
        o.explicitHyp = ["optimizer"]
        // The packed GEMM, whose Float32 results are the same bits on every CPU and kernel level:
        // a short run's trajectory (and so each learning test's figures) then does not depend on
        // the machine. train_dual's default where libdnnl runs, oneDNN, sums in its own
        // CPU-dependent order; LearningTests judges it against the packed runs' seed spread.
        o.gemm = .packed
        return o
    }
}

/// Runs the project's executables (built beside the test bundle) and captures what they say.
enum CLI {
    struct Result {
        let status: Int32
        let stdout: String
        let stderr: String
        /// True when the process ended by exit(), not by a signal (a trap, a kill).
        let exited: Bool
        var output: String { stdout + stderr }
    }

    static func path(_ tool: String) -> String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent(tool).path
    }

    /// Starts `tool` with `args` (in `cwd` when given); `run` waits for it.
    static func start(_ tool: String, _ args: [String], cwd: String? = nil, environment: [String: String]? = nil) throws -> (Process, Pipe, Pipe) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool.hasPrefix("/") ? tool : path(tool))
        p.arguments = args
        if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
        if let environment { p.environment = environment }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        return (p, out, err)
    }

    static func finish(_ started: (Process, Pipe, Pipe)) -> Result {
        let (p, out, err) = started
        // Read both pipes concurrently with the process (a full pipe would block it).
        let box = OutputBox()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async { box.set(err: err.fileHandleForReading.readDataToEndOfFile()); group.leave() }
        let o = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        p.waitUntilExit()
        return Result(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self),
                      stderr: String(decoding: box.err, as: UTF8.self), exited: p.terminationReason == .exit)
    }

    static func run(_ tool: String, _ args: [String], cwd: String? = nil) throws -> Result {
        finish(try start(tool, args, cwd: cwd))
    }

    /// Open MPI's launcher (installed by tools/install-deps.sh).
    static let mpirun: String = {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":").map(String.init) + ["/usr/bin"] {
            let p = dir + "/mpirun"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return "/usr/bin/mpirun"
    }()

    /// `mpirun -np N tool args` as CI runs it: as root, more ranks than cores allowed, TCP between ranks.
    static func startMPI(np: Int, _ tool: String, _ args: [String]) throws -> (Process, Pipe, Pipe) {
        guard FileManager.default.isExecutableFile(atPath: mpirun) else {
            throw TrainingError.invalid("mpirun not found: run tools/install-deps.sh (it installs openmpi-bin)")
        }
        return try start(mpirun, ["--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "--mca", "btl", "tcp,self",
                                  "-np", "\(np)", path(tool)] + args)
    }
}

final class OutputBox: @unchecked Sendable {
    private(set) var err = Data()
    func set(err: Data) { self.err = err }
}
