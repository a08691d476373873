import Affinity
import Detection
import Foundation
import NN
import Tensor
import Testing
import TestSupport

/// The classification path against the original PyTorch model on `2_covid_000.png`, with the
/// reference weights (`make_weights.py --keys keys_K128.json --seed 7`, C' = 128) and the
/// reference's normalised input. Expected values: ../shared/fixtures/reference.
@Suite(.serialized) struct AffinityParityTests {
    static let loaded: Result<AffinityModel, Error> = Result {
        let m = AffinityModel(affinities: 128)
        let f = try SafeTensorsFile(contentsOf: try ReferenceWeights.url())
        try m.load(from: f, aliases: Dictionary(uniqueKeysWithValues: m.originalAliases.map { ($0.alias, $0.of) }))
        return m
    }
    /// The model with the reference weights (a missing python3/numpy or shared folder fails the test, with its reason).
    static func model() throws -> AffinityModel { try loaded.get() }
    var ref: SafeTensorsFile { get throws { try ReferenceWeights.covidTensors() } }

    func expectScaled(_ a: Tensor, _ name: String, _ tol: Float = 1e-3, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let e = try ref.tensor(name)
        let c = compare(try a.reshaped(e.shape), e)
        #expect(c.maxAbsError <= tol * c.maxExpectedMagnitude, "\(name): \(c)", sourceLocation: sourceLocation)
    }

    @Test func classificationPathMatchesLayerByLayer() throws {
        let m = try Self.model()
        let image = try ref.tensor("input_normalized").reshaped([1, 3, 512, 512])
        var rng = SeededGenerator(seed: 0)
        let (out, _) = try m.predict(image, withDetections: false, rng: &rng)
        try expectScaled(out.classLogitsS2, "cls_class_logits")
        try expectScaled(out.boxRegressionS2, "cls_box_regression")
        let rb = try ref.tensor("roi_batch_scaled_boxes"), rs = try ref.tensor("roi_batch_scores")
        #expect(out.roiBatch.boxes.count == 8)
        for (i, b) in out.roiBatch.boxes.enumerated() {
            let d = max(abs(b.x1 - rb[i, 0]), abs(b.y1 - rb[i, 1]), abs(b.x2 - rb[i, 2]), abs(b.y2 - rb[i, 3]))
            #expect(d <= 0.05, "RoI \(i) differs by \(d) px")
            #expect(abs(out.roiBatch.scores[i] - rs[i]) <= 1e-4, "RoI \(i) score \(out.roiBatch.scores[i]) vs \(rs[i])")
        }
        try expectScaled(out.maskPool, "mask_pool_s2")
        try expectScaled(out.maskHead, "mask_head_s2")
        try expectScaled(out.lesionMaskFeatures, "lesion_mask_features")
        let affinity = try #require(out.affinity, "the built-in head reports the affinity layer's outputs")
        try expectScaled(affinity.sieveOut, "sieve_out_final")
        try expectScaled(affinity.x1, "affinity_X1")
        try expectScaled(affinity.x2, "affinity_X2")
        try expectScaled(affinity.x3, "affinity_x3")
        let fs = try ref.tensor("final_scores")
        for k in 0..<3 { #expect(abs(out.logits[0, k] - fs[0, k]) <= 1e-3, "logit \(k): \(out.logits[0, k]) vs \(fs[0, k])") }
        #expect(argmax(out.logits) == argmax(fs))
    }

    /// The full inference computes the RPN, the proposals and their pooling once for both the
    /// classification path and the detections: the same numbers as each path on its own.
    @Test func sharedProposalStageGivesEachPathsOwnResult() throws {
        let m = try Self.model()
        let image = try ref.tensor("input_normalized").reshaped([1, 3, 512, 512])
        var rng = SeededGenerator(seed: 0)
        let p = try m.predictImage(image, withDetections: true, rng: &rng)
        #expect(p.timings["proposals"] != nil)
        var rng2 = SeededGenerator(seed: 0)
        let (features, _) = try m.backbone.forward(image, training: false, workspace: m.segmentation.workspace, keep: false)
        let (alone, _) = try m.classify(features: features, imageHeight: 512, imageWidth: 512, rng: &rng2)
        #expect(p.logits == alone.logits.array, "\(p.logits) vs \(alone.logits.array)")
        #expect(p.roiBoxes == alone.roiBatch.boxes)
        let dets = try m.segmentation.inference(image).detections
        #expect(p.detections.count == dets.count)
        for (a, b) in zip(p.detections, dets) {
            #expect(a.box == b.box && a.score == b.score && a.label == b.label)
            #expect(a.mask28.count == b.mask28.count && zip(a.mask28, b.mask28).allSatisfy { $0 == $1 })
        }
    }

    @Test func weightsRoundTripInTheOriginalLayout() throws {
        let m = try Self.model()
        var w = SafeTensorsWriter(metadata: ["affinity": "128"])
        m.addState(to: &w, aliases: m.originalAliases)
        let data = try w.serialized()
        let f = try SafeTensorsFile(data: data)
        // Every key of the original state dict is present, with its shape.
        let keys = try JSONSerialization.jsonObject(with: Data(contentsOf: TestPaths.reference("keys_K128.json"))) as! [String: Any]
        let entries = keys["entries"] as! [[String: Any]]
        #expect(entries.count == 186)
        for e in entries {
            let k = e["key"] as! String
            #expect(f.entries[k]?.shape == (e["shape"] as! [Int]), "\(k)")
        }
        #expect(f.entries.count == entries.count)
    }

    func argmax(_ t: Tensor) -> Int { (0..<t.count).max { t.data[$0] < t.data[$1] }! }
}
