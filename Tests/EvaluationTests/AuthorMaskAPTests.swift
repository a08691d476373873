// The author's per-image mask AP (MODEL.md §10), hand-computed.

import Foundation
import Testing
import Evaluation

@Suite("Author mask AP")
struct AuthorMaskAPTests {
    /// A 1×20 mask with pixels `range` set.
    static func row(_ range: Range<Int>) -> BinaryMask {
        var m = BinaryMask(height: 1, width: 20)
        m.fill(x0: range.lowerBound, y0: 0, x1: range.upperBound, y1: 1)
        return m
    }

    func close(_ a: Double?, _ b: Double) -> Bool { a.map { abs($0 - b) < 1e-12 } ?? false }

    @Test("thresholds are the decimals 0.50 … 0.95")
    func thresholds() {
        #expect(AuthorMaskAP.thresholds == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95])
    }

    @Test("one image by hand: VOC all-points AP, strict IoU > τ")
    func oneImage() throws {
        // gt A = [0,4), B = [10,14). p1 (0.9) = A exactly; p2 (0.8) misses; p3 (0.7) = [10,13): IoU 3/4 with B.
        let gt = [Self.row(0..<4), Self.row(10..<14)]
        let preds = [(mask: Self.row(0..<4), score: 0.9), (mask: Self.row(15..<19), score: 0.8), (mask: Self.row(10..<13), score: 0.7)]
        let r = try AuthorMaskAP.evaluate(images: [(gt: gt, predictions: preds)])
        // τ ≤ 0.70: ranks ✓ ✗ ✓ → precision 1, 1/2, 2/3; recall 1/2, 1/2, 1 → AP = 0.5·1 + 0.5·2/3 = 5/6.
        // τ ≥ 0.75: IoU 0.75 is not > 0.75 → ✓ ✗ ✗ → AP = 0.5.
        for (t, tau) in r.thresholds.enumerated() { #expect(close(r.averagePrecision[t], tau < 0.75 ? 5.0 / 6 : 0.5), "τ = \(tau)") }
        #expect(close(r.ap50, 5.0 / 6) && close(r.ap75, 0.5))
        #expect(close(r.mAP, (5 * 5.0 / 6 + 5 * 0.5) / 10))
    }

    @Test("image rules and the mean over images")
    func imageRules() throws {
        let gt = [Self.row(0..<4), Self.row(10..<14)]
        let preds = [(mask: Self.row(0..<4), score: 0.9), (mask: Self.row(15..<19), score: 0.8), (mask: Self.row(10..<13), score: 0.7)]
        let r = try AuthorMaskAP.evaluate(images: [
            (gt: gt, predictions: preds),
            (gt: [], predictions: []),                                     // no gt, no detection → 1
            (gt: [], predictions: [(mask: Self.row(2..<5), score: 0.3)]),  // no gt, a detection → 0
            (gt: [Self.row(2..<5)], predictions: []),                      // gt, no detection → 0
        ])
        #expect(r.imageCount == 4)
        #expect(r.perImage[1].allSatisfy { $0 == 1 } && r.perImage[2].allSatisfy { $0 == 0 } && r.perImage[3].allSatisfy { $0 == 0 })
        #expect(close(r.ap50, (5.0 / 6 + 1) / 4))
        #expect(close(r.ap75, (0.5 + 1) / 4))
        #expect(close(r.mAP, (2.0 / 3 + 1) / 4))
    }

    @Test("a prediction may match several ground truths and counts once")
    func multiMatch() throws {
        // gt A = [0,4), B = [0,5) overlap; p (0.9) = [0,5) is the best candidate of both (IoU 0.8, 1);
        // q (0.8) misses. Matched ranks ✓ ✗ → recall stays 1/2 → AP = 0.5 at τ = 0.5.
        let r = try AuthorMaskAP.evaluate(images: [(gt: [Self.row(0..<4), Self.row(0..<5)],
                                                    predictions: [(mask: Self.row(0..<5), score: 0.9), (mask: Self.row(10..<12), score: 0.8)])])
        #expect(close(r.ap50, 0.5))
    }

    @Test("equal-IoU candidates: the better-scored prediction is matched")
    func tieBreak() throws {
        // gt [0,4); q (0.95) = [1,4) and p (0.9) = [0,3), both IoU 0.75: q matched → ✓ ✗ → AP 1.
        let r = try AuthorMaskAP.evaluate(images: [(gt: [Self.row(0..<4)],
                                                    predictions: [(mask: Self.row(0..<3), score: 0.9), (mask: Self.row(1..<4), score: 0.95)])])
        #expect(close(r.ap50, 1))
        // Equal scores keep input order.
        let s = try AuthorMaskAP.imageAP(iou: [[0.0], [0.9]], scores: [0.5, 0.5], groundTruthCount: 1, thresholds: [0.5])
        #expect(close(s[0], 0.5))
    }

    @Test("VOC interpolation and mask IoU helpers")
    func helpers() {
        #expect(close(AuthorMaskAP.vocAveragePrecision(matched: [false, true, true], groundTruthCount: 2), 2.0 / 3))
        #expect(close(AuthorMaskAP.vocAveragePrecision(matched: [true, false, false, true], groundTruthCount: 4), 0.25 + 0.25 * 0.5))
        #expect(close(AuthorMaskAP.maskIoU(Self.row(0..<4), Self.row(2..<6)), 2.0 / 6))
        #expect(AuthorMaskAP.maskIoU(BinaryMask(height: 2, width: 2), BinaryMask(height: 2, width: 2)) == 0)
    }

    @Test("probabilities are binarised strictly above 0.5; Bool and UInt8 masks agree")
    func binarise() throws {
        let m = try BinaryMask(height: 1, width: 4, probabilities: [0.2, 0.5, 0.51, 1])
        #expect(m.pixels == [0, 0, 1, 1])
        #expect(try BinaryMask(height: 1, width: 4, bools: [false, false, true, true]) == m)
        #expect(try BinaryMask(height: 1, width: 4, pixels: [0, 0, 7, 255]) == m)
        #expect(throws: EvaluationError.self) { try BinaryMask(height: 2, width: 4, probabilities: [0.2]) }
    }

    @Test("errors and JSON")
    func errors() throws {
        #expect(throws: EvaluationError.self) {
            try AuthorMaskAP.evaluate(images: [(gt: [Self.row(0..<4)], predictions: [(mask: BinaryMask(height: 2, width: 20), score: 1)])])
        }
        #expect(throws: EvaluationError.self) { try AuthorMaskAP.evaluate(images: [] as [AuthorAPImage]) }
        #expect(throws: EvaluationError.self) { try AuthorMaskAP.imageAP(iou: [[0.5]], scores: [.nan], groundTruthCount: 1) }
        let r = try AuthorMaskAP.evaluate(images: [(gt: [Self.row(0..<4)], predictions: [(mask: Self.row(0..<4), score: 1)])])
        #expect(try JSONDecoder().decode(AuthorAPResult.self, from: JSONEncoder().encode(r)) == r)
        let rle = try AuthorMaskAP.evaluate(rleImages: [(gt: [RLE(mask: Self.row(0..<4))], predictions: [(mask: RLE(mask: Self.row(0..<4)), score: 1)])])
        #expect(rle == r)
    }
}
