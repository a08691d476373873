// COCO evaluation against pycocotools' COCOeval (goldens: tools/coco_fixtures.py →
// Fixtures/coco/*.json, pycocotools 2.0.11: evaluate(), accumulate(), summarize() → stats),
// plus hand-computed cases and malformed input.

import Foundation
import Testing
import Evaluation

@Suite("COCO evaluation")
struct COCOEvaluatorTests {
    static let expected: ExpectedCOCO = try! Fixtures.decode(ExpectedCOCO.self, "coco/expected.json")
    static let caseNames: [String] = expected.cases.keys.sorted()

    @Test("parameter arrays equal NumPy's linspace values bit for bit")
    func parameters() {
        let p = COCOParameters()
        #expect(p.iouThresholds == COCOEvaluatorTests.expected.iouThrs)
        #expect(p.recallThresholds == COCOEvaluatorTests.expected.recThrs)
        #expect(COCOEvaluatorTests.expected.generator == "tools/coco_fixtures.py")
    }

    @Test("the 12 stats equal COCOeval's for segm and bbox", arguments: COCOEvaluatorTests.caseNames)
    func matchesPycocotools(_ name: String) throws {
        let gt = try COCOGroundTruth(contentsOf: Fixtures.url("coco/\(name).gt.json"))
        let dt = try COCOResult.list(contentsOf: Fixtures.url("coco/\(name).dt.json"))
        let want = try #require(COCOEvaluatorTests.expected.cases[name])
        for (type, stats) in [(COCOIoUType.segm, want.segm), (.bbox, want.bbox)] {
            let got = try COCOEvaluator(groundTruth: gt, results: dt, iouType: type).evaluate().stats
            for i in 0..<12 {
                #expect(abs(got[i] - stats[i]) < 1e-6, "\(name) \(type) \(COCOSummary.names[i]): \(got[i]) vs COCOeval \(stats[i])")
            }
        }
    }

    /// Two 10×10 ground-truth boxes; detections: exact (0.9), a far false positive (0.8), and one
    /// of IoU exactly 0.5 with the second box (0.7).
    static func handCase() -> (COCOGroundTruth, [COCOResult]) {
        let gt = COCOGroundTruth(
            images: [COCOImage(id: 1, width: 100, height: 100)],
            annotations: [
                COCOAnnotation(id: 1, imageID: 1, categoryID: 1, bbox: BoundingBox(x: 0, y: 0, width: 10, height: 10), area: 100),
                COCOAnnotation(id: 2, imageID: 1, categoryID: 1, bbox: BoundingBox(x: 20, y: 0, width: 10, height: 10), area: 100),
            ],
            categories: [COCOCategory(id: 1, name: "lesion")])
        let dt = [
            COCOResult(imageID: 1, categoryID: 1, score: 0.9, bbox: BoundingBox(x: 0, y: 0, width: 10, height: 10)),
            COCOResult(imageID: 1, categoryID: 1, score: 0.8, bbox: BoundingBox(x: 50, y: 50, width: 5, height: 5)),
            COCOResult(imageID: 1, categoryID: 1, score: 0.7, bbox: BoundingBox(x: 20, y: 0, width: 10, height: 5)),
        ]
        return (gt, dt)
    }

    @Test("hand-computed: 101-point AP, IoU ≥ threshold inclusive, AR, undefined area ranges")
    func handComputed() throws {
        let (gt, dt) = COCOEvaluatorTests.handCase()
        let s = try COCOEvaluator(groundTruth: gt, results: dt, iouType: .bbox).evaluate()
        // IoU 0.5: TP, FP, TP → precision envelope 1 up to recall 0.5 (51 points), 2/3 after (50 points).
        let ap50 = (51.0 + 50.0 * 2.0 / 3.0) / 101.0
        // IoU ≥ 0.55: only the first detection matches → 1 for the 51 points up to recall 0.5.
        let apHigh = 51.0 / 101.0
        #expect(abs(s.ap50 - ap50) < 1e-12)
        #expect(abs(s.ap75 - apHigh) < 1e-12)
        #expect(abs(s.ap - (ap50 + 9 * apHigh) / 10) < 1e-12)
        #expect(abs(s.apSmall - s.ap) < 1e-15)
        #expect(s.apMedium == -1 && s.apLarge == -1 && s.arMedium == -1 && s.arLarge == -1)
        #expect(abs(s.ar100 - 0.55) < 1e-12)
        #expect(abs(s.ar10 - 0.55) < 1e-12)
        #expect(abs(s.ar1 - 0.5) < 1e-12)

        // The same as masks (rectangles in RLE): identical numbers.
        func rect(_ b: BoundingBox) throws -> COCOSegmentation {
            var m = BinaryMask(height: 100, width: 100)
            m.fill(x0: Int(b.x), y0: Int(b.y), x1: Int(b.x + b.width), y1: Int(b.y + b.height))
            return .rle(RLE(mask: m))
        }
        var gtMasks = gt
        for i in gtMasks.annotations.indices { gtMasks.annotations[i].segmentation = try rect(gtMasks.annotations[i].bbox!) }
        let dtMasks = try dt.map { COCOResult(imageID: $0.imageID, categoryID: $0.categoryID, score: $0.score, segmentation: try rect($0.bbox!)) }
        let m = try COCOEvaluator(groundTruth: gtMasks, results: dtMasks, iouType: .segm).evaluate()
        #expect(m.stats == s.stats)
    }

    @Test("detections on a crowd region are ignored; without iscrowd they are false positives")
    func crowd() throws {
        func run(crowd: Bool) throws -> COCOSummary {
            let gt = COCOGroundTruth(
                images: [COCOImage(id: 1, width: 100, height: 100)],
                annotations: [
                    COCOAnnotation(id: 1, imageID: 1, categoryID: 1, bbox: BoundingBox(x: 0, y: 0, width: 40, height: 40), area: 1600, isCrowd: crowd),
                    COCOAnnotation(id: 2, imageID: 1, categoryID: 1, bbox: BoundingBox(x: 60, y: 60, width: 10, height: 10), area: 100),
                ],
                categories: [COCOCategory(id: 1, name: "lesion")])
            let dt = [
                COCOResult(imageID: 1, categoryID: 1, score: 0.9, bbox: BoundingBox(x: 2, y: 2, width: 5, height: 5)),
                COCOResult(imageID: 1, categoryID: 1, score: 0.8, bbox: BoundingBox(x: 10, y: 10, width: 5, height: 5)),
                COCOResult(imageID: 1, categoryID: 1, score: 0.7, bbox: BoundingBox(x: 60, y: 60, width: 10, height: 10)),
            ]
            return try COCOEvaluator(groundTruth: gt, results: dt, iouType: .bbox).evaluate()
        }
        let withCrowd = try run(crowd: true)
        #expect(abs(withCrowd.ap - 1) < 1e-12)
        #expect(abs(withCrowd.ar100 - 1) < 1e-12)
        let without = try run(crowd: false)
        #expect(without.ap < 0.5)
    }

    @Test("per-category AP and the detailed tables")
    func detailed() throws {
        let (gt, dt) = COCOEvaluatorTests.handCase()
        let e = try COCOEvaluator(groundTruth: gt, results: dt, iouType: .bbox).evaluateInDetail()
        #expect(abs(e.averagePrecision(categoryID: 1) - e.summary.ap) < 1e-12)
        #expect(e.averagePrecision(categoryID: 7) == -1)
        #expect(abs(e.recall(t: 0, k: 0, a: 0, m: 2) - 1) < 1e-12)
        #expect(e.precision(t: 0, r: 100, k: 0, a: 2, m: 2) == -1)  // medium: no ground truth
        let json = try JSONEncoder().encode(e)
        #expect(try JSONDecoder().decode(COCOEvaluation.self, from: json) == e)
        let summary = try JSONDecoder().decode(COCOSummary.self, from: JSONEncoder().encode(e.summary))
        #expect(summary == e.summary)
    }

    @Test("ground-truth and results files round-trip through Codable")
    func roundTrip() throws {
        let gt = try COCOGroundTruth(contentsOf: Fixtures.url("coco/random_segm_only.gt.json"))
        let back = try COCOGroundTruth(jsonData: gt.jsonData())
        #expect(back == gt)
        #expect(gt.annotations.contains { if case .polygons = $0.segmentation { return true } else { return false } })
        #expect(gt.annotations.contains { if case .uncompressedRLE = $0.segmentation { return true } else { return false } })
        let dt = try COCOResult.list(contentsOf: Fixtures.url("coco/random_with_boxes.dt.json"))
        #expect(try COCOResult.list(jsonData: COCOResult.jsonData(dt)) == dt)
    }

    @Test("malformed files and inconsistent inputs give named errors")
    func malformed() throws {
        func gtError(_ json: String) -> EvaluationError? {
            do { _ = try COCOGroundTruth(jsonData: Data(json.utf8)); return nil } catch { return error as? EvaluationError }
        }
        func isMalformed(_ e: EvaluationError?) -> Bool { if case .malformedJSON = e { return true } else { return false } }
        #expect(isMalformed(gtError(#"{"images": [{"id": 1, "width": 10}]}"#)))
        #expect(isMalformed(gtError(#"{"images": [{"id": 1, "width": 10, "height": 10}], "annotations": [{"id": 1"#)))
        #expect(isMalformed(gtError(#"[1, 2]"#)))
        #expect(isMalformed(gtError(#"{"annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": {"size": [2, 2], "counts": [1, 2]}}]}"#)))
        #expect(isMalformed(gtError(#"{"annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": {"size": [2, 2], "counts": "~~"}}]}"#)))
        #expect(isMalformed(gtError(#"{"annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": 5}]}"#)))
        #expect(isMalformed(gtError(#"{"annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3]}]}"#)))
        if case .malformedJSON(let text) = gtError(#"{"images": [{"id": 1, "width": 10}]}"#) {
            #expect(text.contains("height"))
        }
        #expect(throws: EvaluationError.self) { try COCOResult.list(jsonData: Data(#"{"image_id": 1}"#.utf8)) }
        #expect(throws: EvaluationError.self) { try COCOResult.list(jsonData: Data(#"[{"image_id": 1, "category_id": 1}]"#.utf8)) }
        #expect(throws: EvaluationError.self) { try COCOGroundTruth(contentsOf: Fixtures.url("does-not-exist.json")) }

        let (gt, dt) = COCOEvaluatorTests.handCase()
        #expect(throws: EvaluationError.unknownImage(9)) {
            try COCOEvaluator(groundTruth: gt, results: dt + [COCOResult(imageID: 9, categoryID: 1, score: 1, bbox: BoundingBox(x: 0, y: 0, width: 1, height: 1))], iouType: .bbox)
        }
        var dup = gt
        dup.annotations.append(dup.annotations[0])
        #expect(throws: EvaluationError.self) { try COCOEvaluator(groundTruth: dup, results: dt, iouType: .bbox) }
        // segm evaluation needs masks on the ground truth.
        #expect(throws: EvaluationError.self) { try COCOEvaluator(groundTruth: gt, results: dt, iouType: .segm) }
        // The first result has a box, so every result needs one (COCO.loadRes).
        let noBox = dt + [COCOResult(imageID: 1, categoryID: 1, score: 0.1, segmentation: .rle(RLE.empty(height: 100, width: 100)))]
        #expect(throws: EvaluationError.self) { try COCOEvaluator(groundTruth: gt, results: noBox, iouType: .bbox) }
        #expect(throws: EvaluationError.self) {
            try COCOEvaluator(groundTruth: gt, results: [COCOResult(imageID: 1, categoryID: 1, score: .nan, bbox: BoundingBox(x: 0, y: 0, width: 1, height: 1))], iouType: .bbox)
        }
    }

    @Test("an empty results list scores 0 where ground truth exists and −1 elsewhere")
    func emptyResults() throws {
        let (gt, _) = COCOEvaluatorTests.handCase()
        let s = try COCOEvaluator(groundTruth: gt, results: [], iouType: .bbox).evaluate()
        #expect(s.stats == [0, 0, 0, 0, -1, -1, 0, 0, 0, 0, -1, -1])
    }
}
