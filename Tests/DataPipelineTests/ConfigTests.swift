import Foundation
import Testing
@testable import DataPipeline

/// Dataset YAML parsing and the path rules.
@Suite struct ConfigTests {
    @Test func namesAsMapOrListAndDefaults() throws {
        let map = try DatasetConfig.parse(yaml: "path: /d\ntrain: images/train\nval: [images/val, lists/v.txt]\nnames: {0: person, 1: car}\n",
                                          file: "m.yaml", directory: "/x")
        #expect(map.names == ["person", "car"])
        #expect(map.root == "/d")
        #expect(map.train == ["/d/images/train"])
        #expect(map.val == ["/d/images/val", "/d/lists/v.txt"])
        #expect(map.test.isEmpty)
        #expect(map.irDir == "imagesIR" && map.irChannels == 1)
        let list = try DatasetConfig.parse(yaml: "train: a\nval: b\ntest: c\nnames: [x, y, z]\nnc: 3\nir_dir: thermal\nir_channels: 3\n",
                                           file: "l.yaml", directory: "/data/set")
        #expect(list.names == ["x", "y", "z"] && list.irDir == "thermal" && list.irChannels == 3)
        #expect(list.root == "/data/set" && list.test == ["/data/set/c"])
        let ncOnly = try DatasetConfig.parse(yaml: "train: a\nval: b\nnc: 2\n", directory: "/r")
        #expect(ncOnly.names == ["class0", "class1"])
        let relative = try DatasetConfig.parse(yaml: "path: ../sets/llvip\ntrain: images/train\nval: images/test\nnames: [person]\n",
                                               directory: "/home/u/datasets")
        #expect(relative.root == "/home/u/sets/llvip")
    }

    @Test func errorsNameTheFileLineAndKey() {
        func error(_ yaml: String) -> String {
            do {
                _ = try DatasetConfig.parse(yaml: yaml, file: "bad.yaml", directory: "/r")
                return "no error"
            } catch {
                return "\(error)"
            }
        }
        #expect(error("train: a\nval: b\nnames: [p]\nir_channels: 2\n") == "bad.yaml:4: 'ir_channels': must be 1 or 3, got 2")
        #expect(error("train: a\nval: b\nnames: [p, q]\nnc: 3\n").contains("bad.yaml:4: 'nc': is 3 but 'names' lists 2 classes"))
        // Found by the fuzzer: a huge nc without names once made that many default names.
        #expect(error("train: a\nval: b\nnc: 466666660\n") == "bad.yaml:3: 'nc': must be at most 100000, got 466666660")
        #expect(error("train: a\nnames: [p]\n").contains("'val': required"))
        #expect(error("val: a\nnames: [p]\n").contains("'train': required"))
        #expect(error("train: a\nval: b\n").contains("'names': required"))
        #expect(error("train: a\nval: b\nnames: {0: p, 2: q}\n").contains("1 is missing"))
        #expect(error("train: a\nval: b\nnames: {zero: p}\n").contains("class ids"))
        #expect(error("train: a\nval: b\nnames: [p]\nir_dir: a/b\n").contains("'ir_dir'"))
        #expect(error("train: a\nval: b\nnames: [p]\nir_channels: three\n").contains("expected an integer"))
        #expect(error("train: [a\n").contains("invalid YAML"))
        #expect(error("- a\n- b\n").contains("expected a mapping"))
        #expect(throws: DatasetConfigError.self) { _ = try DatasetConfig.load(path: "/nonexistent/data.yaml") }
    }

    @Test func pairAndLabelPathRules() {
        #expect(DatasetPaths.irPath(forRGB: "/d/images/train/a.jpg", irDir: "imagesIR") == "/d/imagesIR/train/a.jpg")
        // The last `images` folder is replaced, never the file name.
        #expect(DatasetPaths.irPath(forRGB: "/images/set/images/x/images.png", irDir: "ir") == "/images/set/ir/x/images.png")
        #expect(DatasetPaths.labelPath(forRGB: "/d/images/val/b.c.PNG") == "/d/labels/val/b.c.txt")
        #expect(DatasetPaths.irPath(forRGB: "/d/rgb/a.jpg", irDir: "imagesIR") == nil)
        #expect(DatasetPaths.withoutExtension("/a.b/c") == "/a.b/c")
    }

    @Test func llvipTemplateParses() throws {
        // datasets/llvip.yaml ships in the repository; it must stay valid.
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        let path = url.appendingPathComponent("datasets/llvip.yaml").path
        let config = try DatasetConfig.load(path: path)
        #expect(config.names == ["person"])
        #expect(config.irDir == "imagesIR" && config.irChannels == 1)
        #expect(config.train.first?.hasSuffix("images/train") == true)
    }
}
