import Foundation
import Testing
import Detection
import NN
import Tensor
import TestSupport

/// The original model's intermediate tensors for `2_covid_000.png`
/// (`shared/fixtures/reference/tensors_2_covid_000.safetensors`, torch 2.14.1 / torchvision 0.29.1).
private let reference: SafeTensorsFile? = try? SafeTensorsFile(contentsOf: TestPaths.reference("tensors_2_covid_000.safetensors"))

private func referenceTensor(_ name: String) throws -> Tensor {
    guard let r = reference else { throw CheckpointError.io("tensors_2_covid_000.safetensors is missing") }
    return try r.tensor(name)
}

@Suite("Geometry vs the original model (tensors_2_covid_000)", .enabled(if: reference != nil, "reference tensors not found"))
struct GeometryReferenceTests {
    /// Proposal generation of MODEL.md §4.4 from the reference RPN outputs, built from the geometry API:
    /// decode all anchors, the 400 highest logits (descending, ties by lower anchor index), clip, NMS 0.75,
    /// the first 200. Returns the proposals and their logits.
    static func proposals(objectness: Tensor, deltas: Tensor) -> (boxes: [Box], logits: [Float]) {
        let a = 30, fh = objectness.shape[2], fw = objectness.shape[3], plane = fh * fw
        let anchors = Anchors.grid(featureHeight: fh, featureWidth: fw, strideY: 512 / fh, strideX: 512 / fw,
                                   base: Anchors.baseAnchors(sizes: Anchors.sizes, aspectRatios: Anchors.aspectRatios))
        var logits = [Float](repeating: 0, count: plane * a)
        for y in 0..<fh { for x in 0..<fw { for k in 0..<a { logits[(y * fw + x) * a + k] = objectness.data[k * plane + y * fw + x] } } }
        let order = Array(0..<logits.count).sorted { logits[$0] != logits[$1] ? logits[$0] > logits[$1] : $0 < $1 }
        let top = Array(order.prefix(400))
        var boxes = top.map { i -> Box in
            let cell = i / a, k = i % a
            let d = (0..<4).map { deltas.data[(k * 4 + $0) * plane + cell] }
            return BoxCoder.rpn.decode((d[0], d[1], d[2], d[3]), reference: anchors[i])
        }
        clipBoxes(&boxes, width: 512, height: 512)
        let scores = top.map { logits[$0] }
        let keep = nms(boxes, scores: scores, iouThreshold: 0.75).prefix(200)
        return (keep.map { boxes[$0] }, keep.map { scores[$0] })
    }

    /// mask_pool_s2 = roi_align(fpn_out, roi_batch_scaled_boxes, 14, 1/16, 2).
    @Test func roiAlignMatchesMaskPool() throws {
        let features = try referenceTensor("fpn_out")
        let boxes = GeometryFixtures.boxes(try referenceTensor("roi_batch_scaled_boxes"))
        let out = try roiAlignForward(features: features, boxes: boxes, outputSize: 14, spatialScale: 1.0 / 16, samplingRatio: 2)
        let c = compare(out, try referenceTensor("mask_pool_s2"))
        #expect(c.maxAbsError <= 1e-4 * c.maxExpectedMagnitude, "\(c)")
    }

    /// rpn_proposals: anchors + RPN box coder + top-400 + clip + NMS(0.75) + first 200, in order.
    @Test func proposalsMatchRPN() throws {
        let (boxes, logits) = GeometryReferenceTests.proposals(objectness: try referenceTensor("rpn_objectness"),
                                                 deltas: try referenceTensor("rpn_bbox_deltas"))
        let expected = GeometryFixtures.boxes(try referenceTensor("rpn_proposals"))
        let expectedLogits = try referenceTensor("rpn_proposal_objectness").array
        try #require(boxes.count == expected.count)
        var worst: Float = 0
        for i in expected.indices {
            let d = Geo.maxAbsDiff(Geo.flat([boxes[i]]), Geo.flat([expected[i]]))
            if d <= 1e-3 { worst = max(worst, d); continue }
            // Allowed: a swap of two proposals whose logits differ by less than 1e-5.
            let j = boxes.firstIndex { Geo.maxAbsDiff(Geo.flat([$0]), Geo.flat([expected[i]])) <= 1e-3 }
            #expect(j != nil && abs(logits[j!] - logits[i]) < 1e-5, "proposal \(i): \(boxes[i]) vs \(expected[i])")
        }
        #expect(worst <= 1e-3, "max |Δ| \(worst) px")
        #expect(Geo.maxAbsDiff(logits, expectedLogits) <= 1e-5)
    }

    /// det_boxes / det_scores: RoI box coder on the proposals, softmax, score > 0.05, batched NMS 0.5, top 100.
    @Test func detectionsMatchPostprocess() throws {
        let proposals = GeometryFixtures.boxes(try referenceTensor("rpn_proposals"))
        let logits = try referenceTensor("seg_class_logits"), reg = try referenceTensor("seg_box_regression")
        var boxes: [Box] = [], scores: [Float] = []
        for i in proposals.indices {
            let l0 = logits.data[2 * i], l1 = logits.data[2 * i + 1], m = max(l0, l1)
            let e0 = Foundation.exp(l0 - m), e1 = Foundation.exp(l1 - m)
            let score = e1 / (e0 + e1)
            let d = reg.data + 8 * i + 4
            var b = [BoxCoder.roi.decode((d[0], d[1], d[2], d[3]), reference: proposals[i])]
            clipBoxes(&b, width: 512, height: 512)
            if score > 0.05 { boxes.append(b[0]); scores.append(score) }
        }
        let keep = batchedNMS(boxes, scores: scores, labels: [Int](repeating: 1, count: boxes.count), iouThreshold: 0.5).prefix(100)
        let expected = GeometryFixtures.boxes(try referenceTensor("det_boxes"))
        let expectedScores = try referenceTensor("det_scores").array
        try #require(keep.count == expected.count)
        let got = keep.map { boxes[$0] }
        let d = Geo.maxAbsDiff(Geo.flat(got), Geo.flat(expected))
        #expect(d <= 0.05, "max |Δ| \(d) px")
        #expect(Geo.maxAbsDiff(keep.map { scores[$0] }, expectedScores) <= 1e-5)
    }
}
