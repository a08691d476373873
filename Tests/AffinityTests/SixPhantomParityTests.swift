import Affinity
import Detection
import Foundation
import Imaging
import NN
import Tensor
import Testing
import TestSupport

/// The whole model against the original on all six reference phantoms, from the PNG files through
/// our preprocessing: the RoI batch, the affinity tensors, the logits, the detections and their
/// pasted mask areas. Expected values: ../shared/fixtures/reference/run_K128_seed7.json.
@Suite(.serialized) struct SixPhantomParityTests {
    /// Its own model instance: a model (and its workspace) serves one forward at a time, and other
    /// suites run in parallel with this one.
    static let loaded: Result<AffinityModel, Error> = Result {
        let m = AffinityModel(affinities: 128)
        try m.load(from: try SafeTensorsFile(contentsOf: try ReferenceWeights.url()),
                   aliases: Dictionary(uniqueKeysWithValues: m.originalAliases.map { ($0.alias, $0.of) }))
        return m
    }

    static let images = ["0_normal_004.png", "0_normal_005.png", "1_cp_002.png", "1_cp_003.png", "2_covid_000.png", "2_covid_001.png"]

    func stats(_ t: Tensor) -> (mean: Double, std: Double, min: Float, max: Float) {
        var s = 0.0, ss = 0.0, lo = Float.infinity, hi = -Float.infinity
        for i in 0..<t.count { let v = Double(t.data[i]); s += v; ss += v * v; lo = min(lo, t.data[i]); hi = max(hi, t.data[i]) }
        let m = s / Double(t.count)
        return (m, ((ss - Double(t.count) * m * m) / Double(t.count - 1)).squareRoot(), lo, hi)
    }

    /// Mean, std, min, max and the first values of a tensor against the reference's statistics, to
    /// 1e-3 of the tensor's scale.
    func expectStats(_ t: Tensor, _ ref: [String: Any], _ name: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let s = stats(t)
        let rmin = (ref["min"] as! NSNumber).floatValue, rmax = (ref["max"] as! NSNumber).floatValue
        let scale = max(abs(rmin), abs(rmax))
        let tol = 1e-3 * Double(scale)
        #expect(abs(s.mean - (ref["mean"] as! NSNumber).doubleValue) <= tol, "\(name) mean", sourceLocation: sourceLocation)
        #expect(abs(s.std - (ref["std"] as! NSNumber).doubleValue) <= tol, "\(name) std", sourceLocation: sourceLocation)
        #expect(abs(Double(s.min - rmin)) <= tol && abs(Double(s.max - rmax)) <= tol, "\(name) min/max", sourceLocation: sourceLocation)
        if let first = ref["first"] as? [NSNumber] {
            for (i, v) in first.enumerated() { #expect(abs(Double(t.data[i]) - v.doubleValue) <= tol, "\(name) first[\(i)]", sourceLocation: sourceLocation) }
        }
    }

    @Test(arguments: images)
    func image(_ name: String) throws {
        let model = try Self.loaded.get()
        let ref = try #require(ReferenceWeights.result(name))
        let it = ref["intermediates"] as! [String: Any]
        let px = try PNG.read(path: TestPaths.reference("phantoms/imgs/\(name)").path)
        let image = try Tensor(shape: [1, 3, 512, 512], values: Preprocessing.modelInput(px))
        var rng = SeededGenerator(seed: 0)
        let (features, _) = try model.backbone.forward(image, training: false, workspace: Workspace(), keep: false)
        expectStats(features, it["fpn_out"] as! [String: Any], "fpn_out")
        let (out, _) = try model.classify(features: features, imageHeight: 512, imageWidth: 512, rng: &rng)

        // The RoI batch: boxes within 0.05 px, scores within 1e-4.
        let sel = it["selected_roi_batch"] as! [String: Any]
        let rb = sel["scaled_boxes"] as! [[NSNumber]], rs = sel["scores"] as! [NSNumber]
        for (i, b) in out.roiBatch.boxes.enumerated() {
            let d = max(abs(b.x1 - rb[i][0].floatValue), abs(b.y1 - rb[i][1].floatValue), abs(b.x2 - rb[i][2].floatValue), abs(b.y2 - rb[i][3].floatValue))
            #expect(d <= 0.05, "\(name) RoI \(i): \(d) px")
            #expect(abs(out.roiBatch.scores[i] - rs[i].floatValue) <= 1e-4, "\(name) RoI \(i) score")
        }
        // Lesion mask features, X1, X2, x3 within 1e-3 of their scale.
        expectStats(out.lesionMaskFeatures, it["lesion_mask_features_batch"] as! [String: Any], "lesion mask features")
        let affinity = try #require(out.affinity, "the built-in head reports the affinity layer's outputs")
        expectStats(affinity.x2, it["affinity_X2_KxC"] as! [String: Any], "X2")
        for (key, t) in [("affinity_X1_BxC", affinity.x1), ("affinity_x3_1xC", affinity.x3)] {
            let values = ((it[key] as! [String: Any])["values"] as! [[NSNumber]]).flatMap { $0 }.map(\.floatValue)
            let expected = try Tensor(shape: t.shape, values: values)
            let c = compare(t, expected)
            #expect(c.maxAbsError <= 1e-3 * c.maxExpectedMagnitude, "\(name) \(key): \(c)")
        }
        // Logits within 1e-3, same argmax.
        let logits = (ref["final_scores_logits"] as! [[NSNumber]])[0].map(\.floatValue)
        for k in 0..<3 { #expect(abs(out.logits[0, k] - logits[k]) <= 1e-3, "\(name) logit \(k)") }
        let argmax = (0..<3).max { out.logits[0, $0] < out.logits[0, $1] }!
        #expect(argmax == ref["argmax_class"] as! Int, "\(name) class")

        // Detections: same count, boxes within 0.05 px, scores within 1e-4, mask areas within 1 %.
        let dets = try model.segmentation.inference(features: features, imageHeight: 512, imageWidth: 512).detections
        let rd = ref["detections"] as! [String: Any]
        let boxes = rd["boxes"] as! [[NSNumber]], scores = rd["scores"] as! [NSNumber], areas = rd["mask_pixels_gt_0.5"] as! [Int]
        #expect(dets.count == rd["num"] as! Int, "\(name) detections")
        var worstBox: Float = 0, worstScore: Float = 0, badAreas = 0
        for (i, d) in dets.enumerated() where i < boxes.count {
            worstBox = max(worstBox, abs(d.box.x1 - boxes[i][0].floatValue), abs(d.box.y1 - boxes[i][1].floatValue),
                           abs(d.box.x2 - boxes[i][2].floatValue), abs(d.box.y2 - boxes[i][3].floatValue))
            worstScore = max(worstScore, abs(d.score - scores[i].floatValue))
            let a = d.mask28.withUnsafeBufferPointer { pastedArea($0.baseAddress!, box: d.box, imageHeight: 512, imageWidth: 512) }
            if Double(abs(a - areas[i])) > max(1, 0.01 * Double(areas[i])) { badAreas += 1 }
        }
        #expect(worstBox <= 0.05, "\(name): detection boxes differ by \(worstBox) px")
        #expect(worstScore <= 1e-4, "\(name): detection scores differ by \(worstScore)")
        #expect(badAreas == 0, "\(name): \(badAreas) mask areas differ by more than 1 %")
    }
}
