// Image-classification metrics over K classes (MODEL.md §9.2): confusion matrix, sensitivity,
// precision, specificity, accuracy and four F1 scores, with empty classes handled explicitly.

/// A K×K confusion matrix: row = true class, column = predicted class.
///
/// JSON form: `{"classCount": K, "rows": [[…], …]}`.
public struct ConfusionMatrix: Hashable, Sendable {
    /// Number of classes K.
    public let classCount: Int
    /// Row-major counts, `counts[trueClass * classCount + predictedClass]`.
    public private(set) var counts: [Int]

    /// An all-zero K×K matrix.
    /// - Precondition: `classCount >= 1`.
    public init(classCount: Int) {
        precondition(classCount >= 1, "ConfusionMatrix needs at least one class")
        self.classCount = classCount
        self.counts = [Int](repeating: 0, count: classCount * classCount)
    }

    /// A matrix from its rows (row = true class).
    /// - Throws: `EvaluationError.shapeMismatch` when the rows are not K×K with K ≥ 1,
    ///   `EvaluationError.invalidLabel` for a negative count.
    public init(rows: [[Int]]) throws {
        let k = rows.count
        guard k >= 1, rows.allSatisfy({ $0.count == k }) else {
            throw EvaluationError.shapeMismatch("confusion matrix must be K×K, got \(rows.map(\.count))")
        }
        guard rows.allSatisfy({ $0.allSatisfy { $0 >= 0 } }) else {
            throw EvaluationError.invalidLabel("negative count in confusion matrix")
        }
        self.classCount = k
        self.counts = rows.flatMap { $0 }
    }

    /// A matrix counted from paired true and predicted labels.
    /// - Throws: `EvaluationError.shapeMismatch` for lists of different lengths,
    ///   `EvaluationError.invalidLabel` for a label outside `0..<classCount`.
    public init(trueLabels: [Int], predictedLabels: [Int], classCount: Int) throws {
        guard classCount >= 1 else { throw EvaluationError.invalidParameter("classCount must be at least 1") }
        guard trueLabels.count == predictedLabels.count else {
            throw EvaluationError.shapeMismatch("\(trueLabels.count) true labels, \(predictedLabels.count) predictions")
        }
        self.init(classCount: classCount)
        for (t, p) in zip(trueLabels, predictedLabels) { try record(trueClass: t, predictedClass: p) }
    }

    /// Adds one sample.
    /// - Throws: `EvaluationError.invalidLabel` for a class outside `0..<classCount`.
    public mutating func record(trueClass: Int, predictedClass: Int) throws {
        guard (0..<classCount).contains(trueClass), (0..<classCount).contains(predictedClass) else {
            throw EvaluationError.invalidLabel("(\(trueClass), \(predictedClass)) outside 0..<\(classCount)")
        }
        counts[trueClass * classCount + predictedClass] += 1
    }

    /// Adds one sample whose prediction is the argmax of `scores` (first maximum wins, as `torch.argmax`).
    /// - Throws: `EvaluationError.shapeMismatch` when `scores.count != classCount`, `invalidLabel` for a bad true class.
    public mutating func record(trueClass: Int, scores: [Double]) throws {
        guard scores.count == classCount else {
            throw EvaluationError.shapeMismatch("\(scores.count) scores for \(classCount) classes")
        }
        var best = 0
        for c in 1..<max(classCount, 1) where scores[c] > scores[best] { best = c }
        try record(trueClass: trueClass, predictedClass: best)
    }

    /// The count of samples of true class `t` predicted as `p`.
    public subscript(trueClass t: Int, predictedClass p: Int) -> Int { counts[t * classCount + p] }

    /// The rows (row = true class).
    public var rows: [[Int]] { (0..<classCount).map { Array(counts[($0 * classCount)..<(($0 + 1) * classCount)]) } }

    /// Number of samples of true class `c` (row sum, the class's support).
    public func support(_ c: Int) -> Int { (0..<classCount).reduce(0) { $0 + self[trueClass: c, predictedClass: $1] } }

    /// Number of samples predicted as class `c` (column sum).
    public func predictedCount(_ c: Int) -> Int { (0..<classCount).reduce(0) { $0 + self[trueClass: $1, predictedClass: c] } }

    /// Total number of samples.
    public var total: Int { counts.reduce(0, +) }

    /// Number of correctly classified samples (the trace).
    public var correct: Int { (0..<classCount).reduce(0) { $0 + self[trueClass: $1, predictedClass: $1] } }
}

extension ConfusionMatrix: Codable {
    private enum CodingKeys: String, CodingKey { case classCount, rows }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let rows = try c.decode([[Int]].self, forKey: .rows)
        do { try self.init(rows: rows) } catch {
            throw DecodingError.dataCorruptedError(forKey: .rows, in: c, debugDescription: "\(error)")
        }
        if let k = try c.decodeIfPresent(Int.self, forKey: .classCount), k != classCount {
            throw DecodingError.dataCorruptedError(forKey: .classCount, in: c, debugDescription: "classCount \(k) but \(classCount) rows")
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(classCount, forKey: .classCount)
        try c.encode(rows, forKey: .rows)
    }
}

/// Which weights `ClassificationMetrics.authorF1` used.
public enum AuthorF1Weighting: String, Codable, Sendable {
    /// The test script's fixed weights (default [0.45, 0.35, 0.20]); every class had test samples.
    case fixedWeights
    /// The class shares of the evaluated set: either no fixed weights were given, or some class had
    /// no test samples and was excluded — the author's K−1-class variant, weighted by the present
    /// classes' shares (MODEL.md §9.2, iCTCF).
    case classShares
}

/// Classification metrics of a confusion matrix, as the author's test script and the paper define them.
///
/// Per class c, with TP = M[c,c], support n_c = row sum, predicted p_c = column sum, N = total:
/// - `sensitivity[c]` S_c = TP / n_c (recall); `nil` when n_c = 0.
/// - `precision[c]` P_c = TP / p_c (what the script calls "specificity", the column-normalised
///   diagonal); `nil` when p_c = 0.
/// - `specificity[c]` = TN / (TN + FP) with TN = N − n_c − p_c + TP, FP = p_c − TP (paper Eq. 13);
///   `nil` when TN + FP = 0.
/// - `f1[c]` = 2 S_c P_c / (S_c + P_c), computed as 2TP / (2TP + FP + FN); it is **0** when TP = 0 and
///   the class occurs (as truth or prediction) — where the author's script would give NaN (0/0) —
///   and `nil` only when the class occurs nowhere.
///
/// F1 scores (each Σ w_c f1[c]):
/// - `authorF1`: the test script, w = `authorWeights` (default [0.45, 0.35, 0.20] for 3 classes;
///   the class shares for other K). A class with **no test samples** is excluded, and then the
///   present classes are weighted by their shares — the 2-class variant the author used for iCTCF
///   (§9.2), which reproduces Table 7. `authorF1Weighting` says which case applied.
/// - `paperEq14F1`: w_c = n_c / N, the class shares of the evaluated set (paper Eq. 14); classes
///   with no samples have weight 0 and are excluded.
/// - `macroF1`: the unweighted mean of `f1` over the classes that occur as truth or prediction
///   (scikit-learn's `average="macro"` label set).
/// - `weightedF1`: Σ n_c f1[c] / N (scikit-learn's `average="weighted"`); numerically the same as
///   `paperEq14F1`, kept under its usual name.
/// All are `nil` for an empty matrix.
public struct ClassificationMetrics: Codable, Hashable, Sendable {
    /// The author's fixed F1 weights for classes 0 Normal, 1 CP, 2 COVID-19 (MODEL.md §9.2).
    public static let authorWeights: [Double] = [0.45, 0.35, 0.20]

    /// The matrix the metrics were computed from.
    public let confusion: ConfusionMatrix
    /// Samples per true class (row sums).
    public let support: [Int]
    /// Samples per predicted class (column sums).
    public let predicted: [Int]
    /// Class shares of the evaluated set, n_c / N (0 when N = 0).
    public let shares: [Double]
    /// Per-class sensitivity (recall), row-normalised diagonal.
    public let sensitivity: [Double?]
    /// Per-class precision, column-normalised diagonal (the script's "specificity").
    public let precision: [Double?]
    /// Per-class specificity TN / (TN + FP) (paper Eq. 13).
    public let specificity: [Double?]
    /// Per-class F1 = 2SP/(S+P) with the conventions above.
    public let f1: [Double?]
    /// Overall accuracy, trace / total.
    public let accuracy: Double?
    /// F1 of the author's test script (see the type's documentation for empty classes).
    public let authorF1: Double?
    /// Weights `authorF1` used, one per class (0 for an excluded class).
    public let authorF1Weights: [Double]
    /// Whether `authorF1` used the fixed weights or the present classes' shares.
    public let authorF1Weighting: AuthorF1Weighting
    /// F1 of paper Eq. 14: class-share-weighted per-class F1.
    public let paperEq14F1: Double?
    /// Unweighted mean of per-class F1 over occurring classes.
    public let macroF1: Double?
    /// Support-weighted mean of per-class F1.
    public let weightedF1: Double?

    /// Metrics of a confusion matrix with the author's weights (shares when K ≠ 3).
    public init(confusion: ConfusionMatrix) {
        let w = confusion.classCount == 3 ? ClassificationMetrics.authorWeights : nil
        // Cannot throw: the weights either match K or are absent.
        try! self.init(confusion: confusion, authorWeights: w)
    }

    /// Metrics of a confusion matrix with explicit weights for `authorF1` (`nil` = class shares).
    /// - Throws: `EvaluationError.shapeMismatch` when `authorWeights` does not have one weight per class.
    public init(confusion m: ConfusionMatrix, authorWeights: [Double]?) throws {
        let k = m.classCount
        if let w = authorWeights, w.count != k {
            throw EvaluationError.shapeMismatch("\(w.count) F1 weights for \(k) classes")
        }
        let n = m.total
        let support = (0..<k).map { m.support($0) }
        let predicted = (0..<k).map { m.predictedCount($0) }
        let tp = (0..<k).map { m[trueClass: $0, predictedClass: $0] }
        let shares = support.map { n > 0 ? Double($0) / Double(n) : 0 }

        var sens = [Double?](), prec = [Double?](), spec = [Double?](), f1 = [Double?]()
        for c in 0..<k {
            sens.append(support[c] > 0 ? Double(tp[c]) / Double(support[c]) : nil)
            prec.append(predicted[c] > 0 ? Double(tp[c]) / Double(predicted[c]) : nil)
            let fp = predicted[c] - tp[c]
            let tn = n - support[c] - predicted[c] + tp[c]
            spec.append(tn + fp > 0 ? Double(tn) / Double(tn + fp) : nil)
            let fn = support[c] - tp[c]
            let denominator = 2 * tp[c] + fp + fn
            f1.append(denominator > 0 ? Double(2 * tp[c]) / Double(denominator) : nil)
        }

        self.confusion = m
        self.support = support
        self.predicted = predicted
        self.shares = shares
        self.sensitivity = sens
        self.precision = prec
        self.specificity = spec
        self.f1 = f1
        self.accuracy = n > 0 ? Double(m.correct) / Double(n) : nil

        func weighted(_ w: [Double]) -> Double? {
            guard n > 0 else { return nil }
            var s = 0.0
            for c in 0..<k where support[c] > 0 { s += w[c] * (f1[c] ?? 0) }
            return s
        }
        self.paperEq14F1 = weighted(shares)
        if n > 0 {
            var s = 0.0
            for c in 0..<k where support[c] > 0 { s += Double(support[c]) * (f1[c] ?? 0) }
            self.weightedF1 = s / Double(n)
        } else {
            self.weightedF1 = nil
        }
        let occurring = f1.compactMap { $0 }
        self.macroF1 = occurring.isEmpty ? nil : occurring.reduce(0, +) / Double(occurring.count)

        if support.allSatisfy({ $0 > 0 }) {
            let w = authorWeights ?? shares
            self.authorF1Weights = w
            self.authorF1Weighting = authorWeights == nil ? .classShares : .fixedWeights
            self.authorF1 = weighted(w)
        } else {
            self.authorF1Weights = shares
            self.authorF1Weighting = .classShares
            self.authorF1 = weighted(shares)
        }
    }
}
