// affinity-lab with plugins, run as the built binary: `plugins`, `predict` of a JPEG through the
// jpeg decoder plugin, `train` reading through the covidx-ct and cncb-seg reader plugins.
import Affinity
import Foundation
import Glibc
import Imaging
import NN
import PluginHost
import Tensor
import Testing

enum LabPlugins {
    /// The folder of the built binary, where SwiftPM puts the plugin libraries.
    static var folder: String { URL(fileURLWithPath: Lab.binary).deletingLastPathComponent().path }

    /// A gray JPEG through the jpeg plugin's own encoder (an extra symbol of that library).
    static func jpeg(_ gray: [UInt8], width: Int, height: Int) throws -> [UInt8] {
        typealias Encode = @convention(c) (UnsafePointer<UInt8>?, UInt32, UInt32, UInt32, Int32,
                                           UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>?, UnsafeMutablePointer<Int>?, UnsafeMutableRawPointer?) -> Int32
        typealias Free = @convention(c) (UnsafeMutablePointer<UInt8>?) -> Void
        guard let handle = dlopen(folder + "/libaffinity-jpeg.so", RTLD_NOW | RTLD_LOCAL),
              let e = dlsym(handle, "affinity_jpeg_encode"), let f = dlsym(handle, "affinity_jpeg_free") else {
            throw LabTestError("the jpeg plugin's encoder is not available in \(folder)")
        }
        let encode = unsafeBitCast(e, to: Encode.self), free = unsafeBitCast(f, to: Free.self)
        var out: UnsafeMutablePointer<UInt8>?
        var length = 0
        let status = gray.withUnsafeBufferPointer { encode($0.baseAddress, UInt32(width), UInt32(height), 1, 92, &out, &length, nil) }
        guard status == 0, let out else { throw LabTestError("JPEG encoding failed (\(status))") }
        defer { free(out) }
        return Array(UnsafeBufferPointer(start: out, count: length))
    }

    /// A library that is not an affinity plugin (no entry symbol), built with `cc -shared`.
    static func compileNonPlugin(in dir: String) throws -> String {
        let c = dir + "/lonely.c", so = dir + "/liblonely.so"
        try "int lonely(void) { return 42; }\n".write(toFile: c, atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["cc", "-shared", "-fPIC", "-o", so, c]
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw LabTestError("cc failed") }
        return so
    }
}

@Suite("affinity-lab with plugins", .serialized)
struct LabPluginTests {
    let fx = Lab.fixtures

    @Test("plugins lists the package's plugins (JSON and text) and says why a library does not load")
    func pluginsCommand() throws {
        let r = try Lab.run(["plugins", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let list = try #require(try r.json()["plugins"] as? [[String: String]])
        let loaded = Dictionary(uniqueKeysWithValues: list.filter { $0["state"] == "loaded" }.map { ($0["id"]!, $0) })
        let kinds = ["jpeg": "image-decoder", "dicom": "image-decoder", "meanpool": "head", "attention": "head",
                     "covidx-ct": "dataset-reader", "cncb-seg": "dataset-reader", "ictcf": "dataset-reader"]
        for (id, kind) in kinds {
            #expect(loaded[id]?["kind"] == kind && loaded[id]?["version"] == (id == "dicom" ? "2.0.0" : "1.0.0"), "\(id): \(String(describing: loaded[id]))")
            #expect(loaded[id]?["path"]?.hasPrefix(LabPlugins.folder + "/") == true)
            #expect((loaded[id]?["description"] ?? "").isEmpty == false)
        }
        #expect(!list.contains { $0["state"] == "failed" }, "\(list)")

        let dir = try Lab.temporaryDirectory("plugins")
        defer { Lab.remove(dir) }
        let so = try LabPlugins.compileNonPlugin(in: dir)
        let text = try Lab.run(["plugins", "--plugin-dir", LabPlugins.folder, "--plugin-dir", dir])
        #expect(text.status == 0, "\(text.stderr)")
        #expect(text.stdout.contains("meanpool 1.0.0 (head) " + LabPlugins.folder), "\(text.stdout)")
        #expect(text.stdout.contains("failed \(so): ") && text.stdout.contains("affinity_plugin_entry"), "\(text.stdout)")
        let missing = try Lab.run(["plugins", "--plugin-dir", dir + "/nowhere"])
        #expect(missing.status == 3 && missing.stderr.contains("missing-directory"), "\(missing.stderr)")
    }

    @Test("predict reads a JPEG through the jpeg plugin and records it; unknown formats stay exit 4")
    func predictJPEG() throws {
        let dir = try Lab.temporaryDirectory("predict-jpeg")
        defer { Lab.remove(dir) }
        let slice = PhantomGenerator(seed: 4, size: 512).slice(index: 0, class: .covid).pixelImage
        let gray = slice.grayImage().pixels.map { UInt8(max(0, min(255, ($0 * 255).rounded()))) }
        let jpeg = try LabPlugins.jpeg(gray, width: slice.width, height: slice.height)
        let path = dir + "/slice.jpg"
        try Data(jpeg).write(to: URL(fileURLWithPath: path))

        let r = try Lab.run(["predict", "--weights", fx.weights, "--json", "--plugin-dir", LabPlugins.folder, path])
        #expect(r.status == 0, "\(r.stderr)")
        let o = try r.json()
        #expect(o["plugins"] as? [String] == ["jpeg 1.0.0"], "\(o)")
        #expect((o["image_size"] as? [Int]) == [512, 512])
        // The same numbers as predictImage on the plugin's decoding.
        let registry = PluginRegistry(mode: .development)
        try registry.load(path: LabPlugins.folder + "/libaffinity-jpeg.so")
        let decoded = try registry.decodeImage(jpeg)
        let model = try ModelLoader.load(contentsOf: URL(fileURLWithPath: fx.weights))
        var rng = SeededGenerator(seed: 1)
        let expected = try model.predictImage(try Tensor(shape: [1, 3, 512, 512], values: Preprocessing.modelInput(decoded.image)), rng: &rng)
        #expect(o["class_index"] as? Int == expected.classIndex)
        let logits = doubles(o["logits"])
        #expect(logits.count == 3)
        for (a, b) in zip(logits, expected.logits.map(Double.init)) { #expect(abs(a - b) <= 1e-4 * max(1, abs(b)), "\(logits) vs \(expected.logits)") }
        // Default plugin folder (the binary's): the text output names the decoder.
        let text = try Lab.run(["predict", "--weights", fx.weights, path])
        #expect(text.status == 0 && text.stdout.contains("[decoded by jpeg 1.0.0]"), "\(text.stdout) \(text.stderr)")
        // A PNG records no plugin.
        let png = try Lab.run(["predict", "--weights", fx.weights, "--json", fx.image512])
        #expect(try png.json()["plugins"] as? [String] == [])
        // A damaged JPEG: bad-image with the decoder's reason.
        let damaged = dir + "/damaged.jpg"
        try Data(jpeg.prefix(40)).write(to: URL(fileURLWithPath: damaged))
        let bad = try Lab.run(["predict", "--weights", fx.weights, damaged])
        #expect(bad.status == 4 && bad.stderr.contains("bad-image") && bad.stderr.contains("jpeg 1.0.0"), "\(bad.stderr)")
    }

    @Test("train --data-format covidx-ct --segmentation-format cncb-seg reads through the readers and records them")
    func trainThroughReaders() throws {
        let dir = try Lab.temporaryDirectory("train-readers")
        defer { Lab.remove(dir) }
        let data = dir + "/phantoms"
        try PhantomDataset.write(to: data, count: 6, seed: 3, size: 128, slicesPerPatient: 1)
        // A broken entry: skipped and reported, not fatal.
        let split = data + "/classification/train_COVIDx_CT.txt"
        try (try String(contentsOfFile: split, encoding: .utf8) + "NCP_99_1099_0000.png 2 0 0 10 10\n")
            .write(toFile: split, atomically: true, encoding: .utf8)
        let out = dir + "/run"
        let r = try Lab.run(["train", "--data", data, "--data-format", "covidx-ct", "--segmentation-format", "cncb-seg",
                             "--out", out, "--affinities", "8", "--epochs", "1", "--image-size", "64", "--seed", "5",
                             "--max-iterations", "2", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("warning: covidx-ct: skipped") && r.stderr.contains("NCP_99_1099_0000.png"), "\(r.stderr)")
        #expect(try r.json()["total_iterations"] as? Int == 2)
        let checkpoint = try SafeTensorsFile(contentsOf: URL(fileURLWithPath: out + "/checkpoint.safetensors"))
        #expect(checkpoint.metadata["data_format"] == "covidx-ct" && checkpoint.metadata["segmentation_format"] == "cncb-seg")
        let plugins = checkpoint.metadata["plugins"] ?? ""
        #expect(plugins.contains("covidx-ct 1.0.0") && plugins.contains("cncb-seg 1.0.0"), "\(checkpoint.metadata)")
        // An unknown reader id: a named data error listing the readers.
        let unknown = try Lab.run(["train", "--data", data, "--data-format", "nope", "--out", dir + "/x", "--affinities", "8",
                                   "--image-size", "64", "--max-iterations", "1"])
        #expect(unknown.status == 6 && unknown.stderr.contains("covidx-ct"), "\(unknown.stderr)")
    }
}
