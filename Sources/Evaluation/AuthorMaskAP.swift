// The author's per-image mask AP (MODEL.md §10): Matterport-style matching, VOC all-points
// interpolation, averaged over images, not COCO's dataset-level accumulation.

/// A predicted mask with its confidence score.
public struct ScoredMask: Hashable, Sendable {
    /// The binarised mask (the model's pasted probability > 0.5).
    public var mask: BinaryMask
    /// The detection score.
    public var score: Double

    /// A prediction from its mask and score.
    public init(mask: BinaryMask, score: Double) {
        self.mask = mask
        self.score = score
    }
}

/// One test image for `AuthorMaskAP`: its ground-truth masks and its predictions.
public struct AuthorAPImage: Hashable, Sendable {
    /// Ground-truth lesion masks (possibly none).
    public var groundTruth: [BinaryMask]
    /// Predicted masks with scores (possibly none).
    public var predictions: [ScoredMask]

    /// An image from its ground truth and predictions.
    public init(groundTruth: [BinaryMask], predictions: [ScoredMask]) {
        self.groundTruth = groundTruth
        self.predictions = predictions
    }
}

/// The author's AP averaged over images, per IoU threshold.
public struct AuthorAPResult: Codable, Hashable, Sendable {
    /// The IoU thresholds τ (strict: a match needs IoU > τ).
    public let thresholds: [Double]
    /// Mean over images of the per-image AP, one per threshold.
    public let averagePrecision: [Double]
    /// AP at τ = 0.50 (Table 4 "AP@0.5"); `nil` when 0.50 is not among the thresholds.
    public let ap50: Double?
    /// AP at τ = 0.75 (Table 4 "AP@0.75"); `nil` when 0.75 is not among the thresholds.
    public let ap75: Double?
    /// Mean of `averagePrecision` over the thresholds, by default 0.50:0.05:0.95 (Table 4 "mAP").
    public let mAP: Double
    /// Number of images averaged.
    public let imageCount: Int
    /// Per-image AP, `perImage[image][threshold]`.
    public let perImage: [[Double]]
}

/// The author's segmentation AP (MODEL.md §10), per image, averaged over images.
///
/// For one image and threshold τ:
/// 1. Predictions are sorted by score, descending (ties keep their input order).
/// 2. The mask IoU matrix is computed (paper Eq. 11; IoU = 0 when both masks are empty).
/// 3. For each ground truth in order, the candidates are the predictions with IoU **> τ** (strict),
///    sorted by IoU descending (ties: earlier in score order first); the first is matched. A
///    prediction may match several ground truths, and counts once.
/// 4. Over the score-sorted predictions, precision_k = matched among the first k / k and
///    recall_k = matched among the first k / G.
/// 5. VOC all-points interpolation: (0, 0) prepended and (precision 0, recall 1) appended,
///    precision made non-increasing from the right, AP = Σ (r_i − r_{i−1}) p_i where recall changes.
///
/// Image rules: ground truth and ≥ 1 prediction → the AP above; no ground truth and no prediction
/// → 1; no ground truth but a prediction → 0; ground truth but no prediction → 0.
/// Thresholds are the decimals 0.50, 0.55, …, 0.95 (each the nearest `Double`).
public enum AuthorMaskAP {
    /// The ten IoU thresholds 0.50:0.05:0.95.
    public static let thresholds: [Double] = (0..<10).map { Double(50 + 5 * $0) / 100 }

    /// Evaluates images given as ground-truth masks and (mask, score) predictions.
    /// - Throws: `EvaluationError.shapeMismatch` when masks of one image differ in size,
    ///   `EvaluationError.invalidParameter` for a NaN score or an empty image list.
    public static func evaluate(images: [(gt: [BinaryMask], predictions: [(mask: BinaryMask, score: Double)])],
                                thresholds: [Double] = AuthorMaskAP.thresholds) throws -> AuthorAPResult {
        try evaluate(images: images.map { image in
            AuthorAPImage(groundTruth: image.gt, predictions: image.predictions.map { ScoredMask(mask: $0.mask, score: $0.score) })
        }, thresholds: thresholds)
    }

    /// Evaluates `AuthorAPImage`s.
    /// - Throws: `EvaluationError.shapeMismatch` when masks of one image differ in size,
    ///   `EvaluationError.invalidParameter` for a NaN score, no images or no thresholds.
    public static func evaluate(images: [AuthorAPImage], thresholds: [Double] = AuthorMaskAP.thresholds) throws -> AuthorAPResult {
        var perImage = [[Double]]()
        perImage.reserveCapacity(images.count)
        for image in images {
            let all = image.groundTruth + image.predictions.map(\.mask)
            if let f = all.first, let bad = all.first(where: { $0.height != f.height || $0.width != f.width }) {
                throw EvaluationError.shapeMismatch("masks of one image are \(f.height)×\(f.width) and \(bad.height)×\(bad.width)")
            }
            let gt = image.groundTruth.map { RLE(mask: $0) }
            let dt = image.predictions.map { RLE(mask: $0.mask) }
            perImage.append(try imageAP(groundTruth: gt, predictions: dt, scores: image.predictions.map(\.score), thresholds: thresholds))
        }
        return try result(perImage: perImage, thresholds: thresholds)
    }

    /// Evaluates images whose masks are already run-length encoded.
    /// - Throws: as `evaluate(images:thresholds:)`.
    public static func evaluate(rleImages: [(gt: [RLE], predictions: [(mask: RLE, score: Double)])],
                                thresholds: [Double] = AuthorMaskAP.thresholds) throws -> AuthorAPResult {
        var perImage = [[Double]]()
        for image in rleImages {
            let all = image.gt + image.predictions.map(\.mask)
            if let f = all.first, let bad = all.first(where: { $0.height != f.height || $0.width != f.width }) {
                throw EvaluationError.shapeMismatch("masks of one image are \(f.height)×\(f.width) and \(bad.height)×\(bad.width)")
            }
            perImage.append(try imageAP(groundTruth: image.gt, predictions: image.predictions.map(\.mask),
                                        scores: image.predictions.map(\.score), thresholds: thresholds))
        }
        return try result(perImage: perImage, thresholds: thresholds)
    }

    /// Mask IoU of paper Eq. 11, `I / (S1 + S2 − I)`; 0 when both masks are empty.
    /// - Precondition: the masks have the same size.
    public static func maskIoU(_ a: BinaryMask, _ b: BinaryMask) -> Double {
        precondition(a.height == b.height && a.width == b.width, "maskIoU: size mismatch")
        var i = 0, sa = 0, sb = 0
        a.pixels.withUnsafeBufferPointer { pa in
            b.pixels.withUnsafeBufferPointer { pb in
                for j in 0..<pa.count {
                    let x = Int(pa[j]), y = Int(pb[j])
                    i &+= x & y
                    sa &+= x
                    sb &+= y
                }
            }
        }
        let u = sa + sb - i
        return u > 0 ? Double(i) / Double(u) : 0
    }

    /// Per-image AP at each threshold from an IoU matrix `iou[prediction][gt]` and the scores.
    ///
    /// This is the core of the method; the mask entry points compute the IoU matrix and call it.
    /// - Throws: `EvaluationError.shapeMismatch` when the matrix does not match the scores and
    ///   `groundTruthCount`, `EvaluationError.invalidParameter` for a NaN score.
    public static func imageAP(iou: [[Double]], scores: [Double], groundTruthCount g: Int,
                               thresholds: [Double] = AuthorMaskAP.thresholds) throws -> [Double] {
        guard iou.count == scores.count, iou.allSatisfy({ $0.count == g }) else {
            throw EvaluationError.shapeMismatch("IoU matrix must be \(scores.count)×\(g)")
        }
        guard !scores.contains(where: { $0.isNaN }) else { throw EvaluationError.invalidParameter("NaN score") }
        let p = scores.count
        if g == 0 { return thresholds.map { _ in p == 0 ? 1 : 0 } }
        if p == 0 { return thresholds.map { _ in 0 } }
        // Score order, descending, stable.
        let order = (0..<p).sorted { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 < $1 }
        var ap = [Double]()
        ap.reserveCapacity(thresholds.count)
        for tau in thresholds {
            var matched = [Bool](repeating: false, count: p)  // indexed by rank in score order
            for gi in 0..<g {
                // The candidate with the highest IoU > τ; ties go to the better-ranked prediction.
                var best = -1
                var bestIoU = 0.0
                for rank in 0..<p {
                    let v = iou[order[rank]][gi]
                    if v > tau && (best < 0 || v > bestIoU) {
                        best = rank
                        bestIoU = v
                    }
                }
                if best >= 0 { matched[best] = true }
            }
            ap.append(vocAveragePrecision(matched: matched, groundTruthCount: g))
        }
        return ap
    }

    /// VOC all-points AP of a ranked list of predictions flagged matched / unmatched, G ground truths.
    ///
    /// precision_k = TP_k / k, recall_k = TP_k / G; (0, 0) prepended and (0, 1) appended; precision
    /// made non-increasing from the right; AP = Σ (r_i − r_{i−1}) p_i over indices where recall changes.
    /// - Precondition: `groundTruthCount > 0`.
    public static func vocAveragePrecision(matched: [Bool], groundTruthCount g: Int) -> Double {
        precondition(g > 0, "vocAveragePrecision needs ground truth")
        let n = matched.count
        var precision = [Double](repeating: 0, count: n + 2)
        var recall = [Double](repeating: 0, count: n + 2)
        var tp = 0
        for k in 0..<n {
            if matched[k] { tp += 1 }
            precision[k + 1] = Double(tp) / Double(k + 1)
            recall[k + 1] = Double(tp) / Double(g)
        }
        precision[n + 1] = 0
        recall[n + 1] = 1
        for i in stride(from: n, through: 0, by: -1) { precision[i] = max(precision[i], precision[i + 1]) }
        var ap = 0.0
        for i in 1..<(n + 2) where recall[i] != recall[i - 1] { ap += (recall[i] - recall[i - 1]) * precision[i] }
        return ap
    }

    static func imageAP(groundTruth: [RLE], predictions: [RLE], scores: [Double], thresholds: [Double]) throws -> [Double] {
        let iou = RLE.iouMatrix(detections: predictions, groundTruths: groundTruth,
                                gtIsCrowd: [Bool](repeating: false, count: groundTruth.count))
        return try imageAP(iou: iou, scores: scores, groundTruthCount: groundTruth.count, thresholds: thresholds)
    }

    static func result(perImage: [[Double]], thresholds: [Double]) throws -> AuthorAPResult {
        guard !perImage.isEmpty else { throw EvaluationError.invalidParameter("no images to evaluate") }
        guard !thresholds.isEmpty else { throw EvaluationError.invalidParameter("no IoU thresholds") }
        let means = thresholds.indices.map { t in perImage.reduce(0) { $0 + $1[t] } / Double(perImage.count) }
        func at(_ tau: Double) -> Double? {
            thresholds.firstIndex(where: { abs($0 - tau) < 1e-12 }).map { means[$0] }
        }
        return AuthorAPResult(thresholds: thresholds, averagePrecision: means, ap50: at(0.5), ap75: at(0.75),
                              mAP: means.reduce(0, +) / Double(means.count), imageCount: perImage.count, perImage: perImage)
    }
}
