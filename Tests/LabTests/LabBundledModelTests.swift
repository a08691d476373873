// `affinity-lab predict` without --weights: the bundled demo model, or a named error.
import Affinity
import Foundation
import Imaging
import NN
import Service
import Tensor
import Testing

@Suite("predict with the bundled model", .serialized)
struct LabBundledModelTests {
    /// Runs affinity-lab with `AFFINITY_BUNDLED_MODELS` set.
    static func run(_ args: [String], bundled: String) throws -> LabRun {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Lab.binary)
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        env["AFFINITY_BUNDLED_MODELS"] = bundled
        env["OPENBLAS_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] ?? "2"
        p.environment = env
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return LabRun(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    @Test func predictWithoutWeights() throws {
        let dir = try Lab.temporaryDirectory("bundled")
        defer { Lab.remove(dir) }
        // A bundled folder with an F16 model of random (seeded) weights, and a phantom slice.
        let demo = dir + "/models/" + BundledModel.defaultName
        try FileManager.default.createDirectory(atPath: demo, withIntermediateDirectories: true)
        let model = AffinityModel(affinities: 8)
        var rng = SeededGenerator(seed: 31)
        model.initialize(rng: &rng)
        let weights = demo + "/weights.safetensors"
        try ModelLoader.save(model, to: URL(fileURLWithPath: weights), dtype: .f16)
        let image = dir + "/slice.png"
        try Data(try PNG.encode(PhantomGenerator(seed: 4, size: 512).slice(index: 0, class: .covid).pixelImage)).write(to: URL(fileURLWithPath: image))

        let bundled = try Self.run(["predict", "--json", image], bundled: dir + "/models")
        #expect(bundled.status == 0, "\(bundled.stderr)")
        #expect(bundled.stderr.contains("bundled model") && bundled.stderr.contains("not for diagnosis"), "\(bundled.stderr)")
        #expect(bundled.stderr.split(separator: "\n").count == 1, "one line of note: \(bundled.stderr)")
        // The same as giving that file as --weights.
        let explicit = try Self.run(["predict", "--json", "--weights", weights, image], bundled: dir + "/nothing")
        #expect(explicit.status == 0 && explicit.stderr.isEmpty, "\(explicit.stderr)")
        let a = try bundled.json(), b = try explicit.json()
        #expect(a["class_index"] as? Int == b["class_index"] as? Int)
        #expect((a["logits"] as? [Double]) == (b["logits"] as? [Double]))

        // Neither --weights nor a bundled model: a named error, exit 3.
        try FileManager.default.createDirectory(atPath: dir + "/empty", withIntermediateDirectories: true)
        let none = try Self.run(["predict", image], bundled: dir + "/empty")
        #expect(none.status == 3, "\(none)")
        #expect(none.stderr.contains("error [no-model]") && none.stderr.contains("--weights"), "\(none.stderr)")
    }

    /// The committed demo model (models/phantom-demo) on the committed samples: the README's main
    /// job prints the right class for each class's sample, and the model card's sha256 is the
    /// weights'. (The sample the model is known to get wrong, samples/normal-misread.png, is left out.)
    @Test func theDemoModelClassifiesTheSamples() throws {
        var root = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { root.deleteLastPathComponent() }
        let models = root.appendingPathComponent("models").path
        let samples = ["normal": "normal", "common-pneumonia": "common pneumonia", "covid-19": "COVID-19"]
        let images = samples.keys.sorted().map { root.appendingPathComponent("samples/\($0).png").path }
        let r = try Self.run(["predict", "--json"] + images, bundled: models)
        #expect(r.status == 0, "\(r.stderr)")
        let lines = try r.jsonLines()
        #expect(lines.count == samples.count)
        for line in lines {
            let image = URL(fileURLWithPath: line["image"] as? String ?? "").deletingPathExtension().lastPathComponent
            #expect(line["class"] as? String == samples[image], "\(image): \(line["class"] ?? "-") \(line["probabilities"] ?? "-")")
        }
        let card = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: models + "/phantom-demo/card.json"))) as? [String: Any]
        let weights = [UInt8](try Data(contentsOf: URL(fileURLWithPath: models + "/phantom-demo/weights.safetensors")))
        #expect(card?["sha256"] as? String == sha256Hex(weights))
        let metrics = card?["metrics"] as? [String: Any]
        #expect((metrics?["accuracy"] as? Double ?? 0) >= 0.9 && (metrics?["author_mask_ap50"] as? Double ?? 0) >= 0.5, "\(metrics ?? [:])")
    }
}
