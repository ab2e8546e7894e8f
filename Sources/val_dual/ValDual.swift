import ArgumentParser
import DataPipeline
import Detection
import Foundation
import TensorCore
import Training

/// `val_dual`: evaluate weights on a data set split.
@main
struct ValDual: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "val_dual",
        abstract: "Evaluate a detector on a data set: P, R, F1, mAP50, mAP50-95 per class and per scene type.",
        discussion: """
        Predictions use NMS at --conf 0.001 / --iou 0.7 in multi-label mode (Ultralytics' validation), boxes
        mapped back to each original image. Images whose file stem contains _day, _night or _distract
        (the synthetic scenes) are also scored as subsets. Late-fusion models merge their two heads
        with --merge nms (concatenate + NMS, default) or wbf (weighted box fusion).
        """)

    @Option(help: "Weights (.safetensors) written by train_dual or tools/convert_pt.py.") var weights: String
    @Option(help: "Dataset YAML.") var data: String = "data/synth/data.yaml"
    @Option(help: "Model YAML (default: the one stored in the weights).") var cfg: String?
    @Option(help: "Split: val, test or train.") var split: String = "val"
    @Option(help: "Image size.") var imgsz: Int?
    @Option(help: "Batch size.") var batch = 16
    @Option(help: "Confidence threshold.") var conf: Float = 0.001
    @Option(help: "NMS IoU threshold.") var iou: Float = 0.7
    @Option(help: "Detections kept per image.") var maxDet = 300
    @Option(help: "Late fusion merge: nms or wbf.") var merge: String = "nms"
    @Option(help: "IR channels (1 or 3); default: stored with the weights.") var irChannels: Int?
    @Option(help: "Background threads for loading.") var workers = 2
    @Option(help: "Compute threads (default: all cores).") var threads: Int?
    @Option(help: "Convolutions: onednn (oneDNN's primitives; the default where libdnnl runs) or packed (the project's GEMM).")
    var gemm: String?
    @Option(help: "Also write the metrics as JSON to this file.") var json: String?
    @Option(help: "Folder of validation runs (plots, per-class CSV, predictions.json go to PROJECT/NAME).") var project = "runs/val"
    @Option(help: "Run name (NAME, NAME2, … unless --exist-ok).") var name = "val"
    @Flag(help: "Reuse PROJECT/NAME if it exists.") var existOk = false
    @Flag(help: "Write COCO-style predictions.json (image_id, category_id = class + 1, bbox [x, y, w, h], score).") var saveJson = false
    @Flag(help: "Do not write plots (confusion matrices, curves, batch images).") var noPlots = false
    @Option(help: "Feed one stream as all zeros: rgb or ir (a failed or covered camera).") var blank: String?
    @Flag(help: "Validate three times: both streams, RGB blanked, IR blanked; print one row each.") var modalities = false
    @Flag(help: "Resize IR images whose size differs from their RGB partner.") var allowResizeIr = false
    @Option(help: "When the data set's class names differ from the model's for the same ids: trust 'model' or 'data' names (default: stop with an error).")
    var namesFrom: String?

    func validate() throws {
        guard (0...1).contains(conf) else { throw ValidationError("--conf \(conf): expected a confidence in 0...1") }
        guard (0...1).contains(iou) else { throw ValidationError("--iou \(iou): expected an IoU threshold in 0...1") }
        guard (1...100_000).contains(maxDet) else { throw ValidationError("--max-det \(maxDet): expected 1...100000") }
        guard (1...4096).contains(batch) else { throw ValidationError("--batch \(batch): expected 1...4096") }
        guard (0...64).contains(workers) else { throw ValidationError("--workers \(workers): expected 0...64") }
        if let namesFrom { guard ["model", "data"].contains(namesFrom) else { throw ValidationError("--names-from must be model or data, got \(namesFrom)") } }
        if let blank { guard ["rgb", "ir"].contains(blank) else { throw ValidationError("--blank must be rgb or ir, got \(blank)") } }
        if modalities && blank != nil { throw ValidationError("--modalities runs the blanked variants itself; drop --blank") }
        if let threads { guard (1...1024).contains(threads) else { throw ValidationError("--threads \(threads): expected 1...1024") } }
    }

    /// The names to report per class id, after comparing the model's and the data set's by id:
    /// a data class the model does not have, or a name that differs for the same id, is an error
    /// unless --names-from says which to trust. A model with more classes than the data (same
    /// names on the shared ids) is fine.
    static func reconcileNames(model: [String], data: [String], dataFile: String, trust: String?) throws -> [String] {
        if data.count > model.count {
            guard trust == "data" else {
                throw TrainingError.invalid("\(dataFile) has \(data.count) classes, the model \(model.count): labels with ids \(model.count)...\(data.count - 1) " +
                                            "(\(data[model.count...].prefix(5).joined(separator: ", "))) have no class in the model. Validate with a model trained on these classes, or pass --names-from data to score the shared ids only")
            }
        }
        let differing = (0..<min(model.count, data.count)).filter { model[$0] != data[$0] }
        if !differing.isEmpty && trust == nil {
            let shown = differing.prefix(5).map { "id \($0): model '\(model[$0])', data '\(data[$0])'" }.joined(separator: "; ")
            throw TrainingError.invalid("class names differ between the model and \(dataFile) (\(shown)\(differing.count > 5 ? "; …" : "")). " +
                                        "Pass --names-from model or --names-from data to say which names are right")
        }
        if trust == "data" { return (0..<model.count).map { $0 < data.count ? data[$0] : model[$0] } }
        return model
    }

    func run() throws {
        if let threads { ComputeContext.current.threads = threads }
        do { ComputeContext.current.gemm = try gemm.map { try GemmBackend(flag: $0) } ?? .toolDefault }
        catch { throw ValidationError("\(error)") }
        guard let mergeMode = DetectionMerge(rawValue: merge) else { throw ValidationError("--merge must be nms or wbf, got \(merge)") }
        guard let sp = DatasetSplit(rawValue: split) else { throw ValidationError("--split must be val, test or train, got \(split)") }
        do {
            let loaded = try ModelFiles.load(weights: weights, cfg: cfg, irChannels: irChannels)
            for w in loaded.warnings { FileHandle.standardError.write("warning: \(w)\n".data(using: .utf8)!) }
            var config = try DatasetConfig.load(path: data)
            let names = try ValDual.reconcileNames(model: loaded.names, data: config.names, dataFile: data, trust: namesFrom)
            if let c = loaded.model.streams.first(where: { $0.name == "ir" })?.channels { config.irChannels = c }
            var scan = ScanOptions()
            scan.allowResizeIR = allowResizeIr
            let dataset = try PairedDataset(config: config, split: sp, scan: scan)
            print(dataset.report.summary)
            let stride = loaded.model.strides.max() ?? 32
            let size = try ImageSize.resolve(requested: imgsz, stored: loaded.storedImageSize, stride: stride) {
                FileHandle.standardError.write(($0 + "\n").data(using: .utf8)!)
            }
            let loader = try PairLoader(dataset: dataset, options: LoaderOptions(mode: .val, imageSize: size, batchSize: batch,
                                                                               stride: stride, workers: workers))
            var v = Validator(nms: NMSOptions(confidence: conf, iou: iou, multiLabel: true, maxDetections: maxDet), merge: mergeMode)
            v.collectPredictions = saveJson
            v.keepBatches = noPlots ? 0 : 3
            v.blank = blank
            if blank != nil { print("stream \(blank!) blanked (all zeros)") }
            let r = try v.run(model: loaded.model, loader: loader, loss: nil, names: names)
            if modalities {
                guard loaded.model.isDual else { throw ValidationError("--modalities needs a dual-stream model") }
                var rows = [("both", r)]
                for b in ["rgb", "ir"] {
                    var vb = v
                    vb.blank = b
                    vb.keepBatches = 0
                    vb.collectPredictions = false
                    rows.append(("\(b.uppercased()) blanked", try vb.run(model: loaded.model, loader: loader, loss: nil, names: names)))
                }
                print("     streams      mAP50  mAP50-95         P         R")
                for (label, rep) in rows {
                    let pad = String(repeating: " ", count: max(0, 12 - label.count)) + label
                    print(pad + String(format: " %10.4f %9.4f %9.4f %9.4f", rep.metrics.map50, rep.metrics.map, rep.metrics.meanPrecision, rep.metrics.meanRecall))
                }
            }
            print(r.table())
            for (tag, m) in r.subsets.sorted(by: { $0.key < $1.key }) {
                print("  scenes _\(tag): " + String(format: "mAP50 %.3f, mAP50-95 %.3f over %d objects", m.map50, m.map, m.truthCounts.reduce(0, +)))
            }
            print(String(format: "mAP50 %.4f  mAP50-95 %.4f  P %.4f  R %.4f  F1 %.4f  fitness %.4f  (%d images, %.1f s)",
                         r.metrics.map50, r.metrics.map, r.metrics.meanPrecision, r.metrics.meanRecall, r.metrics.meanF1,
                         r.metrics.fitness, r.images, r.seconds))
            let out = try RunPaths.createFolder(project: project, name: name, existOK: existOk)
            let files = noPlots && !saveJson ? [] : try ValidationPlots.write(r, to: out, saveJSON: saveJson)
            print("results: \(out)" + (files.isEmpty ? "" : " (\(files.joined(separator: ", ")))"))
            if let json {
                var d: [String: Any] = ["weights": weights, "data": data, "split": split, "images": r.images,
                                        "mAP50": r.metrics.map50, "mAP50-95": r.metrics.map, "precision": r.metrics.meanPrecision,
                                        "recall": r.metrics.meanRecall, "f1": r.metrics.meanF1, "fitness": r.metrics.fitness]
                d["subsets"] = r.subsets.mapValues { ["mAP50": $0.map50, "mAP50-95": $0.map] }
                let out = try JSONSerialization.data(withJSONObject: d, options: [.prettyPrinted, .sortedKeys])
                try out.write(to: URL(fileURLWithPath: json))
            }
        } catch let e as ValidationError {
            throw e
        } catch let e as TrainingError {
            FileHandle.standardError.write("error: \(e)\n".data(using: .utf8)!)
            throw ExitCode(1)
        } catch let e as ModelFileError {
            FileHandle.standardError.write("error: \(e)\n".data(using: .utf8)!)
            throw ExitCode(1)
        } catch {
            FileHandle.standardError.write("error: \(error)\n".data(using: .utf8)!)
            throw ExitCode(1)
        }
    }
}
