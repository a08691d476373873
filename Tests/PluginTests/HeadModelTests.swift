// Plugin heads inside the model: trained by Algorithm 1 in place of the affinity layer + classifier,
// saved in checkpoints and model files as head.<id>.* with the head recorded in the metadata, loaded
// back through the plugin registry, refused by name without it.
import Affinity
import Detection
import Foundation
import Imaging
import NN
import PluginHost
import Tensor
import Testing

/// Phantom slices at 128×128 as trainer data: classification slices of the three classes in turn,
/// segmentation slices of the two lesion classes with their §1.2 instances.
final class PhantomTrainingData: TrainingData {
    static let side = 128
    let cls: [ClassificationSample]
    let seg: [SegmentationSample]

    init(classification: Int = 6, segmentation: Int = 4, seed: UInt64 = 4) throws {
        let side = Self.side
        let generator = PhantomGenerator(seed: seed, size: side)
        func input(_ s: PhantomSlice) throws -> Tensor {
            var plane = s.grayImage.pixels
            plane.withUnsafeMutableBufferPointer { Preprocessing.standardize($0.baseAddress!, count: side * side) }
            return try Tensor(shape: [1, 3, side, side], values: plane + plane + plane)
        }
        cls = try (0..<classification).map { i in
            ClassificationSample(image: try input(generator.slice(index: i, class: PhantomClass(rawValue: i % 3)!)), label: i % 3)
        }
        seg = try (0..<segmentation).map { i in
            let s = generator.slice(index: 100 + i, class: i % 2 == 0 ? .covid : .pneumonia)
            let inst = s.labels.withUnsafeBufferPointer { lesionInstances(labelMap: $0.baseAddress!, width: side, height: side) }
            return SegmentationSample(image: try input(s), targets: SegmentationTargets(instances: inst, height: side, width: side))
        }
    }

    var classificationCount: Int { cls.count }
    var segmentationCount: Int { seg.count }
    func classificationSample(_ i: Int) throws -> ClassificationSample { cls[i] }
    func segmentationSample(_ i: Int) throws -> SegmentationSample { seg[i] }
}

/// The largest absolute difference of two equally long float arrays (∞ when the lengths differ).
func maxAbsDiff(_ a: [Float], _ b: [Float]) -> Float {
    guard a.count == b.count else { return .infinity }
    var m: Float = 0
    for i in a.indices { m = max(m, abs(a[i] - b[i])) }
    return m
}

@Suite("Plugin heads in the model", .serialized)
struct HeadModelTests {
    /// The paper's detector with fewer proposals and RoIs (as the affinity training tests).
    static var tinyDetection: DetectionConfig {
        var c = DetectionConfig()
        c.rpnPreNMSTopN = 100; c.rpnPostNMSTopN = 50; c.roiBatchSize = 32; c.rpnBatchSize = 64
        return c
    }

    static let headConfig = #"{"hidden": 32}"#

    static func model(head id: String, seed: UInt64) throws -> AffinityModel {
        let head = try #require(try sharedRegistry.makeHead(id: id, config: headConfig, seed: 1), "the \(id) plugin is not loaded")
        let m = AffinityModel(head: head, config: tinyDetection)
        var rng = SeededGenerator(seed: seed)
        m.initialize(rng: &rng)
        return m
    }

    /// Mean L_CLS over the classification set (eval-mode forward, fixed padding seed).
    static func meanLoss(_ m: AffinityModel, _ data: PhantomTrainingData) throws -> Float {
        let gradient = Tensor(shape: [1, 3])
        var total: Float = 0
        for s in data.cls {
            var rng = SeededGenerator(seed: 1)
            let (features, _) = try m.backbone.forward(s.image, training: false, workspace: Workspace(), keep: false)
            let (out, _) = try m.classify(features: features, imageHeight: PhantomTrainingData.side, imageWidth: PhantomTrainingData.side, rng: &rng)
            total += classificationLoss(logits: out.logits, label: s.label, gradient: gradient)
        }
        return total / Float(data.cls.count)
    }

    static func logits(_ m: AffinityModel, _ image: Tensor) throws -> [Float] {
        var rng = SeededGenerator(seed: 3)
        return try m.predictImage(image, withDetections: false, rng: &rng).logits
    }

    @Test("a plugin head trains with Algorithm 1 (L_CLS falls) and round-trips through checkpoint and model file",
          arguments: ["meanpool", "attention"])
    func trainsAndRoundTrips(_ id: String) throws {
        let data = try PhantomTrainingData()
        let m = try Self.model(head: id, seed: 9)
        #expect(m.affinityHead == nil && m.affinities == 0 && m.head.headID == id)
        #expect(!m.stateEntries.contains { $0.name.hasPrefix("affinity_layer.") || $0.name.hasPrefix("s2new.") })
        var config = TrainingConfig()
        config.affinities = 0; config.epochs = 100; config.learningRate = 1e-3; config.seed = 5
        let trainer = try OneShotTrainer(model: m, data: data, config: config)
        // MODEL.md §8.2 subsets: the head is in L_CLS's subset in place of affinity layer + classifier,
        // and not in L_SEG's.
        let clsNames = Set(trainer.classificationParameters.map(\.name))
        #expect(m.head.parameters.count >= 6 && m.head.parameters.allSatisfy { clsNames.contains($0.name) && $0.name.hasPrefix("head.\(id).") })
        #expect(!trainer.segmentationParameters.contains { $0.name.hasPrefix("head.") })

        let before = try Self.meanLoss(m, data)
        let headBefore = m.head.parameters.map { $0.value.array }
        for _ in 0..<48 { _ = try trainer.step() }
        let after = try Self.meanLoss(m, data)
        // 8 epochs of 6 images: the head learns at least the class balance (the floor of a head that
        // ignores its input is 0.637); a head left out of the step stays at ≈ its initial loss. (Adam
        // at lr 1e-3 carries rounding-level differences of the gradients into visibly different
        // paths: after 6 epochs meanpool fell 0.039 with the GEMM weight gradients, 0.019 with the
        // Winograd ones, which agree with them to 1e-6; after 8, 0.026 and attention 0.037.)
        #expect(after < before - 0.02, "\(id): mean L_CLS \(before) → \(after)")
        let moved = zip(m.head.parameters, headBefore).map { maxAbsDiff($0.value.array, $1) }
        #expect(moved.allSatisfy { $0 > 0 }, "every head parameter is stepped: \(moved)")

        let dir = try temporaryDirectory("headmodel")
        defer { removeTree(dir) }
        // Checkpoint: head.<id>.* keys, the head named in the metadata; resumes into a fresh model
        // whose head the registry makes.
        let ckpt = URL(fileURLWithPath: dir + "/checkpoint.safetensors")
        try trainer.saveCheckpoint(to: ckpt, extraMetadata: ["head": "forged", "affinity": "99"])
        let cf = try SafeTensorsFile(contentsOf: ckpt)
        #expect(cf.metadata["head"] == id && cf.metadata["head_version"] == "1.0.0" && cf.metadata["head_config"] == Self.headConfig)
        #expect(cf.metadata["affinity"] == nil)
        #expect(cf.names.contains("head.\(id).fc1.weight") && !cf.names.contains { $0.hasPrefix("affinity_layer.") })
        let fresh = try Self.model(head: id, seed: 1234)
        let resumed = try OneShotTrainer(model: fresh, data: data, config: config)
        try resumed.resume(from: ckpt)
        var diff: Float = 0
        for (p, q) in zip(m.parameters, fresh.parameters) { diff = max(diff, maxAbsDiff(p.value.array, q.value.array)) }
        #expect(diff == 0, "resumed weights differ by \(diff)")
        #expect(resumed.state == trainer.state)
        // One more step each: the same (Adam moments of the head restored too).
        _ = try trainer.step(); _ = try resumed.step()
        diff = 0
        for (p, q) in zip(m.head.parameters, fresh.head.parameters) { diff = max(diff, maxAbsDiff(p.value.array, q.value.array)) }
        #expect(diff <= 1e-6, "head after one more step differs by \(diff)")

        // Model file: loads through the registry (head made from the recorded config) with identical logits.
        let modelURL = URL(fileURLWithPath: dir + "/model.safetensors")
        try ModelLoader.save(m, to: modelURL)
        let file = try SafeTensorsFile(contentsOf: modelURL)
        #expect(file.headID == id && file.metadata["head_config"] == Self.headConfig)
        let loaded = try ModelLoader.load(file, config: Self.tinyDetection, heads: sharedRegistry)
        #expect(loaded.head.headID == id && loaded.head.headConfig == Self.headConfig)
        #expect(loaded.head.parameters.first { $0.name == "head.\(id).fc1.weight" }?.shape == [32, 256])
        let probe = data.cls[2].image
        let a = try Self.logits(m, probe), b = try Self.logits(loaded, probe)
        #expect(a.count == 3 && maxAbsDiff(a, b) == 0, "\(a) vs \(b)")
        var r = SeededGenerator(seed: 1)
        #expect(try loaded.predictImage(probe, withDetections: false, rng: &r).affinityMatrix.count == 0)

        // Without the plugin: the named error, from no factory and from a registry without it.
        #expect(throws: ClassificationHeadError.headUnavailable(id: id, version: "1.0.0")) { _ = try ModelLoader.load(file) }
        #expect(throws: ClassificationHeadError.headUnavailable(id: id, version: "1.0.0")) {
            _ = try ModelLoader.load(file, heads: PluginRegistry(mode: .development))
        }
        do {
            _ = try ModelLoader.load(contentsOf: modelURL)
            Issue.record("a plugin-head model loaded without its plugin")
        } catch let e as ClassificationHeadError {
            #expect(e.description.contains("\"\(id)\"") && e.description.hasSuffix("."), "\(e)")
        }
        // A C' for a plugin head, and a checkpoint of this head resumed into a built-in model: named errors.
        #expect(throws: ClassificationHeadError.self) { _ = try ModelLoader.load(file, affinities: 8, heads: sharedRegistry) }
        let builtin = AffinityModel(affinities: 8, config: Self.tinyDetection)
        var c8 = config; c8.affinities = 8
        let other = try OneShotTrainer(model: builtin, data: data, config: c8)
        #expect(throws: ClassificationHeadError.headMismatch(file: id, model: "affinity")) { try other.resume(from: ckpt) }
    }

    @Test("the built-in head keeps its file layout: no head keys, C' in the metadata, affinity_layer and s2new keys")
    func builtInLayoutUnchanged() throws {
        let m = AffinityModel(affinities: 8)
        #expect(m.affinityHead != nil && m.head.headID == "affinity" && m.headRecord == nil)
        let dir = try temporaryDirectory("builtin")
        defer { removeTree(dir) }
        let url = URL(fileURLWithPath: dir + "/m.safetensors")
        try ModelLoader.save(m, to: url, metadata: ["head": "meanpool", "note": "kept"])
        let f = try SafeTensorsFile(contentsOf: url)
        #expect(f.metadata["head"] == nil && f.metadata["head_version"] == nil && f.metadata["affinity"] == "8" && f.metadata["note"] == "kept")
        #expect(!f.names.contains { $0.hasPrefix("head.") })
        #expect(f.names.contains("affinity_layer.sieve.2.conv_down.weight") && f.names.contains("affinity_layer.pars.0")
                && f.names.contains("s2new.class_predict_logits.weight"))
        // Loads with or without a factory.
        #expect(try ModelLoader.load(f).affinities == 8)
        #expect(try ModelLoader.load(f, heads: sharedRegistry).affinities == 8)
    }

    @Test("a head id the factory does not know, and a malformed one, are named errors")
    func unknownHeads() throws {
        var w = SafeTensorsWriter(metadata: ["head": "nosuchhead", "head_version": "2.0"])
        w.add("x", Tensor(shape: [1]))
        let f = try SafeTensorsFile(data: try w.serialized())
        #expect(throws: ClassificationHeadError.headUnavailable(id: "nosuchhead", version: "2.0")) { _ = try ModelLoader.load(f, heads: sharedRegistry) }
        var bad = SafeTensorsWriter(metadata: ["head": "../evil"])
        bad.add("x", Tensor(shape: [1]))
        #expect(throws: ClassificationHeadError.invalidID("../evil")) {
            _ = try ModelLoader.load(try SafeTensorsFile(data: try bad.serialized()), heads: sharedRegistry)
        }
        // A config the plugin refuses surfaces as the plugin's error.
        var refused = SafeTensorsWriter(metadata: ["head": "meanpool", "head_config": #"{"hidden": 0}"#])
        refused.add("x", Tensor(shape: [1]))
        #expect(throws: PluginError.self) { _ = try ModelLoader.load(try SafeTensorsFile(data: try refused.serialized()), heads: sharedRegistry) }
        // Weights of another major version of the plugin (1.0.0 is loaded): refused by name before
        // any tensor is read; another minor version, or none recorded, goes on to the tensors.
        var newer = SafeTensorsWriter(metadata: ["head": "meanpool", "head_version": "2.1.0", "head_config": "{}"])
        newer.add("x", Tensor(shape: [1]))
        #expect(throws: ClassificationHeadError.versionMismatch(id: "meanpool", file: "2.1.0", loaded: "1.0.0")) {
            _ = try ModelLoader.load(try SafeTensorsFile(data: try newer.serialized()), heads: sharedRegistry)
        }
        for version in ["1.4.2", ""] {
            var minor = SafeTensorsWriter(metadata: ["head": "meanpool", "head_version": version, "head_config": "{}"])
            minor.add("x", Tensor(shape: [1]))
            #expect(throws: CheckpointError.self) { _ = try ModelLoader.load(try SafeTensorsFile(data: try minor.serialized()), heads: sharedRegistry) }
        }
    }
}
