import DataPipeline
import Detection
import Foundation
@testable import NN
import Testing
@testable import TensorCore
@testable import Training

/// Bad input and hostile conditions, driven through the executables as a user meets them: every
/// case ends with a clear message and an exit status below 128 (or the documented signal status),
/// and nothing of a run is lost.
@Suite struct HardeningTests {
    static let data = TestData.synthetic("hard", train: 24, val: 8, seed: 21)
    static let model = TestData.tinyModel("dual_yolov8n_mid.yaml")

    /// Trained weights of the tiny model (one quick epoch), made once.
    static let weights: String = {
        let r = try! CLI.run("train_dual", trainArgs(name: "hard_weights", epochs: 1))
        precondition(r.status == 0, r.output)
        return scratch + "/runs/hard_weights/weights/last.safetensors"
    }()

    static func trainArgs(name: String, epochs: Int, project: String = scratch + "/runs", extra: [String] = []) -> [String] {
        ["--data", data, "--cfg", model, "--project", project, "--name", name, "--epochs", "\(epochs)", "--batch", "8",
         "--imgsz", "64", "--workers", "1", "--warmup-iters-min", "2", "--accumulate", "1", "--no-plots"] + extra
    }

    func expectClean(_ r: CLI.Result, status: Int32, contains: String, _ what: String) {
        #expect(r.exited, "\(what): ended by a signal\n\(r.output)")
        #expect(r.status == status, "\(what): exit status \(r.status)\n\(r.output)")
        #expect(r.output.contains(contains), "\(what): expected '\(contains)' in\n\(r.output)")
    }

    // MARK: Image sizes and options

    @Test func imageSizesAreCheckedByEveryCommand() throws {
        let w = HardeningTests.weights
        let png = try FileManager.default.contentsOfDirectory(atPath: scratch + "/hard/images/val").sorted().first!
        let source = scratch + "/hard/images/val/" + png
        for tool in ["predict", "val_dual"] {
            let base = tool == "predict" ? ["--weights", w, "--source", source, "--project", scratch + "/pred", "--name", "sizes", "--exist-ok"]
                                         : ["--weights", w, "--data", HardeningTests.data]
            for bad in ["0", "16", "99968"] {
                expectClean(try CLI.run(tool, base + ["--imgsz", bad]), status: 1, contains: "--imgsz \(bad): expected a size in 32...8192", "\(tool) --imgsz \(bad)")
            }
            let r = try CLI.run(tool, base + ["--imgsz", "100"])
            expectClean(r, status: 0, contains: "--imgsz 100 is not a multiple of the model's stride 32; using 128", "\(tool) --imgsz 100")
        }
        expectClean(try CLI.run("predict", ["--weights", w, "--source", source, "--conf", "2"]), status: 64, contains: "--conf 2.0: expected", "predict --conf 2")
        expectClean(try CLI.run("val_dual", ["--weights", w, "--data", HardeningTests.data, "--iou=-1"]), status: 64, contains: "--iou -1.0: expected", "val --iou -1")
    }

    // MARK: Files that lie

    @Test func hostileSafetensorsHeadersAreErrors() throws {
        func file(_ header: String) -> Data {
            var d = Data()
            var n = UInt64(header.utf8.count).littleEndian
            withUnsafeBytes(of: &n) { d.append(contentsOf: $0) }
            d.append(contentsOf: Array(header.utf8))
            d.append(contentsOf: [UInt8](repeating: 0, count: 64))
            return d
        }
        let cases = [
            #"{"w":{"dtype":"F32","shape":[1099511627776,1099511627776,4,1],"data_offsets":[0,16]}}"#,
            #"{"w":{"dtype":"F32","shape":[-1,4],"data_offsets":[0,16]}}"#,
            #"{"w":{"dtype":"F32","shape":[4],"data_offsets":[9223372036854775800,9223372036854775807]}}"#,
            #"{"w":{"dtype":"F32","shape":[4],"data_offsets":[16,0]}}"#,
        ]
        for (i, h) in cases.enumerated() {
            #expect(throws: SafetensorsError.self, "case \(i)") { try Safetensors.parse(file(h), path: "case\(i).safetensors") }
        }
        let path = scratch + "/overflow.safetensors"
        try file(cases[0]).write(to: URL(fileURLWithPath: path))
        expectClean(try CLI.run("val_dual", ["--weights", path, "--data", HardeningTests.data]), status: 1,
                    contains: "needs more bytes than the file's", "val_dual on an overflowing header")
    }

    @Test func badWeightsMetadataFallsBackWithWarnings() throws {
        let (tensors, meta) = try Safetensors.read(HardeningTests.weights)
        let names = tensors.keys.sorted()
        for (key, value, warning) in [("nc", "-5", "metadata nc '-5' is not a class count"), ("imgsz", "0", "metadata imgsz '0' is not a usable size"),
                                      ("imgsz", "100000", "metadata imgsz '100000' is not a usable size")] {
            var m = meta
            m[key] = value
            let path = scratch + "/meta_\(key)_\(value).safetensors"
            let named = names.map { NamedTensor($0, tensors[$0]!.tensor, $0.hasSuffix("num_batches_tracked") ? .buffer : .weight) }
            try StateDict.save(named, metadata: m, to: path)
            let r = try CLI.run("val_dual", ["--weights", path, "--data", HardeningTests.data])
            expectClean(r, status: 0, contains: warning, "metadata \(key)=\(value)")
        }
    }

    @Test func classNamesAreComparedById() throws {
        let dir = scratch + "/hard"
        func yaml(_ names: String) throws -> String {
            let p = dir + "/names_\(abs(names.hashValue)).yaml"
            try "path: \(dir)\ntrain: images/train\nval: images/val\nnames: \(names)\nir_channels: 1\n".write(toFile: p, atomically: true, encoding: .utf8)
            return p
        }
        let w = HardeningTests.weights   // trained with names person, car
        let swapped = try yaml("{0: person, 1: bicycle}")
        expectClean(try CLI.run("val_dual", ["--weights", w, "--data", swapped]), status: 1, contains: "id 1: model 'car', data 'bicycle'", "renamed class")
        expectClean(try CLI.run("val_dual", ["--weights", w, "--data", swapped, "--names-from", "data"]), status: 0, contains: "bicycle", "--names-from data")
        let more = try yaml("[person, car, truck]")
        expectClean(try CLI.run("val_dual", ["--weights", w, "--data", more]), status: 1, contains: "has 3 classes, the model 2", "data with more classes")
    }

    @Test func dataYAMLMisspellingsAreNamed() throws {
        _ = HardeningTests.data
        let p = scratch + "/hard/misspelt.yaml"
        try "path: \(scratch)/hard\ntrain: images/train\nval: images/val\nnames: [person, car]\nir_channel: 3\n".write(toFile: p, atomically: true, encoding: .utf8)
        do {
            _ = try DatasetConfig.load(path: p)
            Issue.record("a misspelt key was accepted")
        } catch {
            #expect("\(error)".contains("misspelt.yaml:") && "\(error)".contains("'ir_channel': unknown key; did you mean 'ir_channels'?"), "\(error)")
        }
    }

    @Test func aLabelPathThatIsAFolderIsAnError() throws {
        let d = scratch + "/labelfolder"
        _ = try SyntheticScenes.writeDataset(to: d, train: 4, val: 2, imageSize: 64, seed: 3)
        let label = try FileManager.default.contentsOfDirectory(atPath: d + "/labels/train").sorted()[0]
        try FileManager.default.removeItem(atPath: d + "/labels/train/" + label)
        try FileManager.default.createDirectory(atPath: d + "/labels/train/" + label, withIntermediateDirectories: false)
        let r = try CLI.run("check_data", ["--data", d + "/data.yaml", "--no-cache"])
        #expect(r.output.contains("label path is not a regular file"), "\(r.output)")
    }

    @Test func scanCacheSeesAnEditThatKeepsSizeAndTime() throws {
        let d = scratch + "/cachehash"
        _ = try SyntheticScenes.writeDataset(to: d, train: 4, val: 2, imageSize: 64, seed: 4)
        let cfg = try DatasetConfig.load(path: d + "/data.yaml")
        let first = try PairedDataset(config: cfg, split: .train)
        let labelDir = d + "/labels/train/"
        let name = try FileManager.default.contentsOfDirectory(atPath: labelDir).sorted().first { name in
            ((try? String(contentsOfFile: labelDir + name, encoding: .utf8)) ?? "").hasPrefix("0 ")
        }!
        let path = labelDir + name
        let attrs = try FileManager.default.attributesOfItem(atPath: path)
        var text = try String(contentsOfFile: path, encoding: .utf8)
        text = "1" + text.dropFirst()                          // class 0 -> 1: same size
        try text.write(toFile: path, atomically: false, encoding: .utf8)
        try FileManager.default.setAttributes([.modificationDate: attrs[.modificationDate]!], ofItemAtPath: path)
        let second = try PairedDataset(config: cfg, split: .train)
        let i = first.pairs.firstIndex { $0.labelPath == path }!
        #expect(first.pairs[i].classes.first == 0 && second.pairs[i].classes.first == 1, "the edited label was read again")
        #expect(!second.report.fromCache)
    }

    // MARK: Runs

    @Test func weightsThatFillNothingAreRefused() throws {
        let state = HardeningTests.weights.replacingOccurrences(of: "last.safetensors", with: "last.state.safetensors")
        let r = try CLI.run("train_dual", HardeningTests.trainArgs(name: "wrong_weights", epochs: 1, extra: ["--weights", state]))
        expectClean(r, status: 1, contains: "filled 0 of the model's", "--weights of a state file")
        let ok = try CLI.run("train_dual", HardeningTests.trainArgs(name: "wrong_weights_ok", epochs: 1, extra: ["--weights", state, "--allow-partial", "--no-val"]))
        expectClean(ok, status: 0, contains: "results:", "--allow-partial")
    }

    @Test func memoryThatCannotFitStopsBeforeItIsUsed() throws {
        let r = try CLI.run("train_dual", HardeningTests.trainArgs(name: "too_big", epochs: 1, extra: ["--imgsz", "8192", "--batch", "4", "--cache", "ram"]))
        expectClean(r, status: 1, contains: "exceeds the", "imgsz 8192 batch 4 cache ram")
        #expect(r.output.contains("--force"), "the message says how to start anyway")
    }

    @Test func twoRunsNeverShareAFolderAndSignalsSayHowToResume() throws {
        let project = scratch + "/race"
        try? FileManager.default.removeItem(atPath: project)
        // Without --exist-ok, concurrent starts get distinct folders.
        let a = try CLI.start("train_dual", HardeningTests.trainArgs(name: "same", epochs: 200, project: project, extra: ["--no-val"]))
        let b = try CLI.start("train_dual", HardeningTests.trainArgs(name: "same", epochs: 1, project: project, extra: ["--no-val"]))
        let rb = CLI.finish(b)
        #expect(rb.status == 0, "\(rb.output)")
        let folders = try FileManager.default.contentsOfDirectory(atPath: project).sorted()
        #expect(folders == ["same", "same2"], "\(folders)")
        // With --exist-ok, a second process on a folder in use is told who holds it.
        let holder = rb.output.contains(project + "/same2") ? "same" : "same2"
        let c = try CLI.run("train_dual", HardeningTests.trainArgs(name: holder, epochs: 1, project: project, extra: ["--exist-ok"]))
        expectClean(c, status: 1, contains: "is in use by another training process (pid \(a.0.processIdentifier))", "second process on a locked folder")
        // --resume of a folder in use stops at the lock, before its recovery could delete the
        // running trainer's temporary files.
        let weights = project + "/" + holder + "/weights"
        for _ in 0..<600 where !FileManager.default.fileExists(atPath: weights + "/last.state.safetensors") { Thread.sleep(forTimeInterval: 0.1) }
        let inFlight = weights + "/last.state.safetensors.g999.tmp"
        FileManager.default.createFile(atPath: inFlight, contents: Data("being written".utf8))
        let d = try CLI.run("train_dual", ["--resume", project + "/" + holder])
        expectClean(d, status: 1, contains: "is in use by another training process", "--resume of a locked folder")
        #expect(FileManager.default.fileExists(atPath: inFlight), "--resume deleted a running trainer's temporary file")
        try? FileManager.default.removeItem(atPath: inFlight)
        // SIGTERM: the first run stops between iterations and says how to resume (once it trains).
        let steps = project + "/" + holder + "/steps.csv"
        for _ in 0..<600 where ((try? String(contentsOfFile: steps, encoding: .utf8)) ?? "").split(separator: "\n").count < 2 {
            Thread.sleep(forTimeInterval: 0.1)
        }
        a.0.terminate()
        let ra = CLI.finish(a)
        #expect(ra.status == 143 && ra.stderr.contains("interrupted (SIGTERM) at epoch") && ra.stderr.contains("train_dual --resume \(project)/\(holder)"),
                "\(ra.status): \(ra.stderr)")
    }

    @Test func resumeWorksFromAnywhereSaysWhatItIgnoresAndExtends() throws {
        let cwd = scratch + "/resume_cwd"
        try FileManager.default.createDirectory(atPath: cwd, withIntermediateDirectories: true)
        // Relative paths at the start ...
        let rel = ["--data", HardeningTests.data, "--cfg", HardeningTests.model, "--project", "runs", "--name", "rel", "--exist-ok",
                   "--epochs", "2", "--batch", "8", "--imgsz", "64", "--workers", "1", "--warmup-iters-min", "2", "--no-val", "--no-plots"]
        let first = try CLI.run("train_dual", rel, cwd: cwd)
        #expect(first.status == 0, "\(first.output)")
        // ... resumed from another folder: finished, so it says so.
        let done = try CLI.run("train_dual", ["--resume", cwd + "/runs/rel"], cwd: scratch)
        expectClean(done, status: 1, contains: "already finished its 2 epochs", "resume of a finished run")
        // Extending it by --epochs; other flags are named as ignored.
        let more = try CLI.run("train_dual", ["--resume", cwd + "/runs/rel", "--epochs", "3", "--lr0", "0.5", "--batch", "4"], cwd: scratch)
        expectClean(more, status: 0, contains: "ignored: --batch, --lr0", "resume with flags")
        #expect(more.output.contains("extending") && more.output.contains("to 3 epochs"))
        let rows = try String(contentsOfFile: cwd + "/runs/rel/results.csv", encoding: .utf8).split(separator: "\n")
        #expect(rows.count == 4, "header + 3 epochs: \(rows)")
    }

    @Test func aFullDiskLeavesThePreviousEpochWhole() throws {
        let mnt = scratch + "/full"
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        // The size of one checkpoint set of this model: a 1-epoch run's weights folder.
        let probe = try CLI.run("train_dual", HardeningTests.trainArgs(name: "size_probe", epochs: 1, extra: ["--no-val", "--exist-ok"]))
        #expect(probe.status == 0, "\(probe.output)")
        let weightsDir = scratch + "/runs/size_probe/weights"
        let set = try FileManager.default.contentsOfDirectory(atPath: weightsDir).reduce(0) { total, f in
            total + (((try? FileManager.default.attributesOfItem(atPath: weightsDir + "/" + f))?[.size] as? Int) ?? 0)
        }
        // Epoch 1 (the first best) needs last + best of both kinds plus their new copies; epoch 2
        // (a better loss: best again) one more set than fits.
        let size = set * 7 / 4 + 256 << 10
        let m = Process()
        m.executableURL = URL(fileURLWithPath: "/bin/mount")
        m.arguments = ["-t", "tmpfs", "-o", "size=\(size)", "tmpfs", mnt]
        try m.run()
        m.waitUntilExit()
        try #require(m.terminationStatus == 0, "mounting a small tmpfs needs root (CI runs as root)")
        defer {
            let u = Process()
            u.executableURL = URL(fileURLWithPath: "/bin/umount")
            u.arguments = [mnt]
            try? u.run()
            u.waitUntilExit()
        }
        let r = try CLI.run("train_dual", HardeningTests.trainArgs(name: "full", epochs: 4, project: mnt, extra: ["--no-val"]))
        expectClean(r, status: 1, contains: "(No space left on device)", "a full disk")
        #expect(r.output.contains("cannot write"), "\(r.output)")
        let w = mnt + "/full/weights"
        let files = try FileManager.default.contentsOfDirectory(atPath: w)
        #expect(!files.contains { $0.contains(".tmp") }, "temporary files are gone: \(files)")
        let epochOf = { (f: String) in Int(try Safetensors.read(w + "/" + f).metadata["epoch"] ?? "") ?? -1 }
        let stateEpoch = { (f: String) -> Int in
            let meta = try Safetensors.read(w + "/" + f).metadata
            let st = try JSONDecoder().decode(TrainState.self, from: Data(meta["state"]!.utf8))
            return st.epoch
        }
        let done = try epochOf("last.safetensors")
        #expect(done >= 1)
        #expect(try stateEpoch("last.state.safetensors") == done && epochOf("best.safetensors") <= done)
        let rows = try String(contentsOfFile: mnt + "/full/results.csv", encoding: .utf8).split(separator: "\n")
        #expect(rows.count == done + 1, "results.csv rows match the committed epoch \(done): \(rows.count - 1)")
    }
}

/// Warnings and log lines of a run, read from what train_dual prints.
@Suite struct RunAdviceTests {
    @Test func aRunThatWillLearnLittleIsToldSoAndAutoSaysWhatItChose() throws {
        // 24 images, batch 8, nbs 64 -> accumulate 8 -> 1 optimizer step an epoch.
        let r = try CLI.run("train_dual", ["--data", HardeningTests.data, "--cfg", HardeningTests.model, "--project", scratch + "/runs",
                                           "--name", "few_steps", "--exist-ok", "--epochs", "2", "--batch", "8", "--imgsz", "64",
                                           "--workers", "1", "--no-val", "--no-plots"])
        #expect(r.status == 0, "\(r.output)")
        #expect(r.output.contains("WARNING: this run will learn little: only about 2 optimizer steps"), "\(r.output)")
        #expect(r.output.contains("warmup (100 iterations) lasts the whole run of 6 iterations"), "\(r.output)")
        #expect(r.output.contains("optimizer: auto chose AdamW for a short run (2 iterations <= 10000): lr0 0.001667 (fitted to 2 classes), momentum 0.9"),
                "\(r.output)")
        // An explicit lr0 is kept; auto picks the kind only.
        let mine = try CLI.run("train_dual", ["--data", HardeningTests.data, "--cfg", HardeningTests.model, "--project", scratch + "/runs",
                                              "--name", "auto_lr", "--exist-ok", "--epochs", "1", "--batch", "8", "--imgsz", "64",
                                              "--workers", "1", "--no-val", "--no-plots", "--lr0", "0.0005"])
        #expect(mine.output.contains("lr0 0.0005 (yours)"), "\(mine.output)")
        // --no-val: the first epoch is the best so far.
        #expect(FileManager.default.fileExists(atPath: scratch + "/runs/few_steps/weights/best.safetensors"))
    }
}
