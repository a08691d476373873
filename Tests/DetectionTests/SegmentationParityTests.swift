import Detection
import Foundation
import NN
import Tensor
import Testing
import TestSupport

/// The segmentation half against the original PyTorch model on `2_covid_000.png`, with the
/// reference weights (`make_weights.py --keys keys_K128.json --seed 7`) and the reference's own
/// normalised input. Expected values: ../shared/fixtures/reference (README there).
@Suite(.serialized) struct SegmentationParityTests {
    static let loaded: Result<MaskRCNN, Error> = Result {
        let m = MaskRCNN()
        try m.load(from: try SafeTensorsFile(contentsOf: try ReferenceWeights.url()), strict: false)
        return m
    }
    static func model() throws -> MaskRCNN { try loaded.get() }
    var ref: SafeTensorsFile { get throws { try ReferenceWeights.covidTensors() } }

    func expectScaled(_ a: Tensor, _ name: String, _ tol: Float = 1e-3, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let c = compare(a, try ref.tensor(name))
        #expect(c.maxAbsError <= tol * c.maxExpectedMagnitude, "\(name): \(c)", sourceLocation: sourceLocation)
    }

    func image() throws -> Tensor { try ref.tensor("input_normalized").reshaped([1, 3, 512, 512]) }

    @Test func backboneAndFPN() throws {
        let m = try Self.model()
        let (p, saved) = try m.backbone.forward(try image(), training: false, workspace: Workspace(), keep: true)
        try expectScaled(m.backbone.layer3Output(saved!), "backbone_layer3")
        try expectScaled(p, "fpn_out")
    }

    @Test func rpnProposalsBoxBranchAndDetections() throws {
        let m = try Self.model()
        let out = try m.inference(try image())
        try expectScaled(out.objectness, "rpn_objectness")
        try expectScaled(out.deltas, "rpn_bbox_deltas")

        // The same 200 proposals in the same order (swaps only between near-equal logits).
        let refBoxes = try ref.tensor("rpn_proposals"), refLogits = try ref.tensor("rpn_proposal_objectness")
        #expect(out.proposals.boxes.count == 200)
        var unmatched = 0
        for (i, b) in out.proposals.boxes.enumerated() {
            let same = { (j: Int) -> Bool in
                abs(b.x1 - refBoxes[j, 0]) < 1e-3 && abs(b.y1 - refBoxes[j, 1]) < 1e-3 && abs(b.x2 - refBoxes[j, 2]) < 1e-3 && abs(b.y2 - refBoxes[j, 3]) < 1e-3
            }
            if same(i) { continue }
            // A swap is allowed only with a neighbour whose logit differs by < 1e-5.
            let swapOK = [i - 1, i + 1].contains { j in j >= 0 && j < 200 && same(j) && abs(refLogits[j] - refLogits[i]) < 1e-5 }
            if !swapOK { unmatched += 1 }
        }
        #expect(unmatched == 0, "\(unmatched) proposals differ from the reference")

        try expectScaled(out.classLogits, "seg_class_logits")
        try expectScaled(out.boxRegression, "seg_box_regression")

        let detBoxes = try ref.tensor("det_boxes"), detScores = try ref.tensor("det_scores")
        #expect(out.detections.count == detBoxes.shape[0])
        var maxBox: Float = 0, maxScore: Float = 0
        for (i, d) in out.detections.prefix(detBoxes.shape[0]).enumerated() {
            maxBox = max(maxBox, abs(d.box.x1 - detBoxes[i, 0]), abs(d.box.y1 - detBoxes[i, 1]), abs(d.box.x2 - detBoxes[i, 2]), abs(d.box.y2 - detBoxes[i, 3]))
            maxScore = max(maxScore, abs(d.score - detScores[i]))
        }
        #expect(maxBox <= 0.05, "detection boxes differ by up to \(maxBox) px")
        #expect(maxScore <= 1e-4, "detection scores differ by up to \(maxScore)")

        // Pasted mask areas (pixels > 0.5) within 1 % of the reference counts (at least 1 px).
        let refAreas = ((ReferenceWeights.result("2_covid_000.png")?["detections"] as? [String: Any])?["mask_pixels_gt_0.5"] as? [Int]) ?? []
        #expect(refAreas.count == out.detections.count)
        var bad: [String] = []
        for (i, d) in out.detections.enumerated() where i < refAreas.count {
            let pasted = d.mask28.withUnsafeBufferPointer { pasteMask($0.baseAddress!, size: 28, box: d.box, imageHeight: 512, imageWidth: 512) }
            let area = pasted.reduce(0) { $0 + ($1 > 0.5 ? 1 : 0) }
            if Double(abs(area - refAreas[i])) > max(1, 0.01 * Double(refAreas[i])) { bad.append("\(i): \(area) vs \(refAreas[i])") }
        }
        #expect(bad.isEmpty, "mask areas: \(bad)")
    }
}
