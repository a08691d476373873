// Classification metrics (MODEL.md §9.2), hand-computed.

import Foundation
import Testing
import Evaluation

@Suite("Classification metrics")
struct ClassificationMetricsTests {
    /// A 3-class matrix (row = true 0 Normal, 1 CP, 2 COVID-19; column = predicted), 121 samples.
    static let m = try! ConfusionMatrix(rows: [
        [50, 3, 2],
        [4, 30, 6],
        [1, 5, 20],
    ])

    func close(_ a: Double?, _ b: Double, _ tol: Double = 1e-12) -> Bool { a.map { abs($0 - b) < tol } ?? false }

    @Test("sensitivity, precision, specificity, accuracy by hand")
    func perClass() {
        let r = ClassificationMetrics(confusion: ClassificationMetricsTests.m)
        #expect(r.support == [55, 40, 26])
        #expect(r.predicted == [55, 38, 28])
        // S_c = M[c,c] / row sum
        #expect(close(r.sensitivity[0], 50.0 / 55) && close(r.sensitivity[1], 30.0 / 40) && close(r.sensitivity[2], 20.0 / 26))
        // P_c = M[c,c] / column sum (the script's "specificity")
        #expect(close(r.precision[0], 50.0 / 55) && close(r.precision[1], 30.0 / 38) && close(r.precision[2], 20.0 / 28))
        // TN / (TN + FP): class 0 TN = 121 − 55 − 55 + 50 = 61, FP = 5; class 1 TN = 73, FP = 8; class 2 TN = 87, FP = 8
        #expect(close(r.specificity[0], 61.0 / 66) && close(r.specificity[1], 73.0 / 81) && close(r.specificity[2], 87.0 / 95))
        #expect(close(r.accuracy, 100.0 / 121))
    }

    @Test("the four F1 scores by hand")
    func f1() {
        let r = ClassificationMetricsTests.m
        let metrics = ClassificationMetrics(confusion: r)
        // 2SP/(S+P) per class, from S and P directly.
        let s = [50.0 / 55, 30.0 / 40, 20.0 / 26], p = [50.0 / 55, 30.0 / 38, 20.0 / 28]
        let f = (0..<3).map { 2 * s[$0] * p[$0] / (s[$0] + p[$0]) }
        #expect(close(metrics.f1[0], 100.0 / 110) && close(metrics.f1[1], 60.0 / 78) && close(metrics.f1[2], 40.0 / 54))
        for c in 0..<3 { #expect(close(metrics.f1[c], f[c])) }
        #expect(close(metrics.authorF1, 0.45 * f[0] + 0.35 * f[1] + 0.20 * f[2]))
        #expect(metrics.authorF1Weighting == .fixedWeights)
        #expect(metrics.authorF1Weights == [0.45, 0.35, 0.20])
        #expect(close(metrics.paperEq14F1, (55 * f[0] + 40 * f[1] + 26 * f[2]) / 121))
        #expect(close(metrics.weightedF1, (55 * f[0] + 40 * f[1] + 26 * f[2]) / 121))
        #expect(close(metrics.macroF1, (f[0] + f[1] + f[2]) / 3))
    }

    @Test("paper check for iCTCF (MODEL.md §9.2): class 1 empty, S = 94.20 % / 86.73 %, shares 0.7148 / 0.2852 → F1 ≈ 92.1 %")
    func iCTCF() throws {
        // 1,965 Normal and 784 COVID-19 test slices (shares 0.7148 / 0.2852); 1,851 and 680 correct;
        // errors go to the other present class ("precisions as implied").
        let m = try ConfusionMatrix(rows: [[1851, 0, 114], [0, 0, 0], [104, 0, 680]])
        let r = ClassificationMetrics(confusion: m)
        #expect(close(r.sensitivity[0], 0.9420, 5e-5) && close(r.sensitivity[2], 0.8673, 5e-5))
        #expect(close(r.shares[0], 0.7148, 5e-5) && close(r.shares[2], 0.2852, 5e-5))
        #expect(r.sensitivity[1] == nil && r.precision[1] == nil && r.f1[1] == nil)
        // Hand: P0 = 1851/1955, P2 = 680/794; F1_0 = 3702/3920, F1_2 = 1360/1578.
        #expect(close(r.precision[0], 1851.0 / 1955) && close(r.precision[2], 680.0 / 794))
        let hand = (1965.0 / 2749) * (3702.0 / 3920) + (784.0 / 2749) * (1360.0 / 1578)
        #expect(close(r.paperEq14F1, hand))
        #expect(close(r.authorF1, hand))
        #expect(r.authorF1Weighting == .classShares)
        #expect(r.authorF1Weights[1] == 0)
        #expect(close(r.authorF1, 0.921, 5e-4))    // MODEL.md: ≈ 92.1 %
        #expect(close(r.authorF1, 0.9206, 5e-4))   // paper Table 7: 92.06 %
        #expect(PaperTables.percent(r.authorF1) == "92.08")
    }

    @Test("empty and never-predicted classes")
    func emptyClasses() throws {
        // Class 1 present but never predicted: precision undefined, F1 = 0 (the script would give NaN).
        let a = ClassificationMetrics(confusion: try ConfusionMatrix(rows: [[5, 0], [3, 0]]))
        #expect(a.precision[1] == nil && a.f1[1] == 0 && a.sensitivity[1] == 0)
        #expect(close(a.macroF1, (10.0 / 13 + 0) / 2))
        // Class 1 predicted but absent: sensitivity undefined, precision 0, F1 0, weight 0 in Eq. 14.
        let b = ClassificationMetrics(confusion: try ConfusionMatrix(rows: [[5, 1], [0, 0]]))
        #expect(b.sensitivity[1] == nil && b.precision[1] == 0 && b.f1[1] == 0)
        #expect(close(b.paperEq14F1, 10.0 / 11))
        #expect(close(b.macroF1, (10.0 / 11) / 2))
        #expect(b.specificity[0] == nil)  // every sample is class 0: TN + FP = 0
        // Nothing at all.
        let c = ClassificationMetrics(confusion: ConfusionMatrix(classCount: 3))
        #expect(c.accuracy == nil && c.authorF1 == nil && c.paperEq14F1 == nil && c.macroF1 == nil && c.weightedF1 == nil)
    }

    @Test("building matrices from labels and scores; errors; JSON")
    func building() throws {
        var m = try ConfusionMatrix(trueLabels: [0, 1, 2, 2], predictedLabels: [0, 2, 2, 1], classCount: 3)
        #expect(m.rows == [[1, 0, 0], [0, 0, 1], [0, 1, 1]])
        try m.record(trueClass: 0, scores: [0.2, 0.2, 0.1])  // first maximum wins
        #expect(m[trueClass: 0, predictedClass: 0] == 2)
        #expect(throws: EvaluationError.self) { try ConfusionMatrix(trueLabels: [0, 3], predictedLabels: [0, 0], classCount: 3) }
        #expect(throws: EvaluationError.self) { try ConfusionMatrix(trueLabels: [0], predictedLabels: [0, 0], classCount: 3) }
        #expect(throws: EvaluationError.self) { try ConfusionMatrix(rows: [[1, 2], [3]]) }
        #expect(throws: EvaluationError.self) { try ClassificationMetrics(confusion: m, authorWeights: [1, 0]) }

        let r = ClassificationMetrics(confusion: ClassificationMetricsTests.m)
        let data = try JSONEncoder().encode(r)
        #expect(try JSONDecoder().decode(ClassificationMetrics.self, from: data) == r)
        #expect(String(decoding: data, as: UTF8.self).contains("\"authorF1\""))
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(ConfusionMatrix.self, from: Data(#"{"classCount": 2, "rows": [[1, 2], [3, -1]]}"#.utf8))
        }
    }
}
