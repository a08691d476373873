// Standard COCO detection evaluation (what pycocotools' COCOeval computes for iouType "segm" and
// "bbox"), written from its documented behaviour: per-image greedy matching, crowd and area-range
// ignores, dataset-level accumulation with 101-point interpolation, and the 12 summary numbers.

/// The overlap measure of a COCO evaluation.
public enum COCOIoUType: String, Codable, Hashable, Sendable {
    /// Mask IoU on RLEs.
    case segm
    /// Box IoU.
    case bbox
}

/// An object-area range of the evaluation, inclusive at both ends (an area of exactly 32² is both
/// small and medium, as in COCO).
public struct COCOAreaRange: Codable, Hashable, Sendable {
    /// "all", "small", "medium" or "large" for the defaults.
    public var label: String
    /// Smallest area in the range.
    public var lower: Double
    /// Largest area in the range.
    public var upper: Double

    /// A labelled range.
    public init(label: String, lower: Double, upper: Double) {
        self.label = label
        self.lower = lower
        self.upper = upper
    }
}

/// Parameters of a COCO evaluation; the defaults are COCOeval's detection defaults.
public struct COCOParameters: Codable, Hashable, Sendable {
    /// IoU thresholds, default `linspace(0.5, 0.95, 10)` (NumPy's values: the ninth is 0.8999999999999999).
    public var iouThresholds: [Double]
    /// Recall points of the interpolated precision, default `linspace(0, 1, 101)`.
    public var recallThresholds: [Double]
    /// Detections kept per image and category, default [1, 10, 100] (sorted before use).
    public var maxDetections: [Int]
    /// Area ranges, default all [0, 1e10], small [0, 32²], medium [32², 96²], large [96², 1e10].
    public var areaRanges: [COCOAreaRange]
    /// Images to evaluate; `nil` = every image of the ground truth.
    public var imageIDs: [Int]?
    /// Categories to evaluate; `nil` = every category of the ground truth.
    public var categoryIDs: [Int]?

    /// COCOeval's defaults.
    public init() {
        iouThresholds = COCOParameters.linspace(0.5, 0.95, count: 10)
        recallThresholds = COCOParameters.linspace(0.0, 1.0, count: 101)
        maxDetections = [1, 10, 100]
        areaRanges = [
            COCOAreaRange(label: "all", lower: 0, upper: 1e10),
            COCOAreaRange(label: "small", lower: 0, upper: 1024),
            COCOAreaRange(label: "medium", lower: 1024, upper: 9216),
            COCOAreaRange(label: "large", lower: 9216, upper: 1e10),
        ]
        imageIDs = nil
        categoryIDs = nil
    }

    /// NumPy's `linspace(start, stop, count)` value for value: `start + i · ((stop − start) / (count − 1))`,
    /// the last one exactly `stop`.
    public static func linspace(_ start: Double, _ stop: Double, count: Int) -> [Double] {
        guard count > 1 else { return count == 1 ? [start] : [] }
        let step = (stop - start) / Double(count - 1)
        var v = (0..<count).map { Double($0) * step + start }
        v[count - 1] = stop
        return v
    }
}

/// The 12 numbers of COCOeval's `summarize()`; −1 where undefined (no ground truth in the selection).
public struct COCOSummary: Codable, Hashable, Sendable {
    /// AP @[IoU 0.50:0.95, all areas, 100 detections].
    public var ap: Double
    /// AP @ IoU 0.50.
    public var ap50: Double
    /// AP @ IoU 0.75.
    public var ap75: Double
    /// AP for small objects (area ≤ 32²).
    public var apSmall: Double
    /// AP for medium objects (32² ≤ area ≤ 96²).
    public var apMedium: Double
    /// AP for large objects (area ≥ 96²).
    public var apLarge: Double
    /// AR with 1 detection per image.
    public var ar1: Double
    /// AR with 10 detections per image.
    public var ar10: Double
    /// AR with 100 detections per image.
    public var ar100: Double
    /// AR for small objects.
    public var arSmall: Double
    /// AR for medium objects.
    public var arMedium: Double
    /// AR for large objects.
    public var arLarge: Double

    private enum CodingKeys: String, CodingKey {
        case ap = "AP", ap50 = "AP50", ap75 = "AP75", apSmall = "APs", apMedium = "APm", apLarge = "APl"
        case ar1 = "AR1", ar10 = "AR10", ar100 = "AR100", arSmall = "ARs", arMedium = "ARm", arLarge = "ARl"
    }

    /// The names of the 12 numbers in COCO's order.
    public static let names = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]

    /// A summary from COCOeval's `stats` array.
    /// - Precondition: `stats.count == 12`.
    public init(stats: [Double]) {
        precondition(stats.count == 12, "COCOSummary needs 12 numbers")
        ap = stats[0]; ap50 = stats[1]; ap75 = stats[2]
        apSmall = stats[3]; apMedium = stats[4]; apLarge = stats[5]
        ar1 = stats[6]; ar10 = stats[7]; ar100 = stats[8]
        arSmall = stats[9]; arMedium = stats[10]; arLarge = stats[11]
    }

    /// The 12 numbers in COCOeval's `stats` order.
    public var stats: [Double] { [ap, ap50, ap75, apSmall, apMedium, apLarge, ar1, ar10, ar100, arSmall, arMedium, arLarge] }
}

/// The accumulated evaluation: precision and recall tables plus the summary.
///
/// `precision` is COCOeval's T×R×K×A×M array flattened row-major (threshold, recall point,
/// category, area range, max detections); `recall` the T×K×A×M one. −1 marks cells without
/// ground truth.
public struct COCOEvaluation: Codable, Hashable, Sendable {
    /// Mask or box IoU.
    public let iouType: COCOIoUType
    /// The parameters used, with the image and category ids resolved (sorted, unique).
    public let parameters: COCOParameters
    /// Flattened T×R×K×A×M interpolated precision.
    public let precision: [Double]
    /// Flattened T×K×A×M recall.
    public let recall: [Double]
    /// The 12 summary numbers.
    public internal(set) var summary: COCOSummary

    var dims: (t: Int, r: Int, k: Int, a: Int, m: Int) {
        (parameters.iouThresholds.count, parameters.recallThresholds.count, parameters.categoryIDs?.count ?? 0,
         parameters.areaRanges.count, parameters.maxDetections.count)
    }

    /// Interpolated precision at threshold index t, recall index r, category index k, area index a, maxDets index m.
    public func precision(t: Int, r: Int, k: Int, a: Int, m: Int) -> Double {
        let d = dims
        return precision[(((t * d.r + r) * d.k + k) * d.a + a) * d.m + m]
    }

    /// Recall at threshold index t, category index k, area index a, maxDets index m.
    public func recall(t: Int, k: Int, a: Int, m: Int) -> Double {
        let d = dims
        return recall[((t * d.k + k) * d.a + a) * d.m + m]
    }

    /// AP of one category (mean over thresholds and recall points of the defined cells), as the
    /// per-class column of the usual COCO tables; −1 when undefined or the category is not evaluated.
    public func averagePrecision(categoryID: Int, areaLabel: String = "all", maxDetections: Int = 100) -> Double {
        guard let k = parameters.categoryIDs?.firstIndex(of: categoryID),
              let a = parameters.areaRanges.firstIndex(where: { $0.label == areaLabel }),
              let m = parameters.maxDetections.firstIndex(of: maxDetections) else { return -1 }
        let d = dims
        var s = 0.0, n = 0
        for t in 0..<d.t { for r in 0..<d.r { let v = precision(t: t, r: r, k: k, a: a, m: m); if v > -1 { s += v; n += 1 } } }
        return n > 0 ? s / Double(n) : -1
    }
}

/// COCO evaluation of detections against a ground-truth dataset, as pycocotools' `COCOeval`
/// (`evaluate()`, `accumulate()`, `summarize()`), for masks (`segm`) or boxes (`bbox`).
///
/// Behaviour reproduced, for each image and category:
/// - Ground truth is ignored when it is a crowd or its area lies outside the area range; ignored
///   ground truth is matched last.
/// - Detections are sorted by score (stable) and cut to the largest max-detections value; each, in
///   order, takes the unmatched (or crowd) ground truth of highest IoU ≥ threshold, preferring
///   non-ignored ground truth; a detection matched to ignored ground truth is ignored, as is an
///   unmatched detection outside the area range. IoU with a crowd uses the detection's area as denominator.
/// - Accumulation over images per category, area range and max detections: detections of all
///   images sorted by score (stable, images in id order), cumulative TP/FP, precision made
///   monotone, sampled at 101 recall points (searchsorted left; 0 past the last recall);
///   recall = final recall.
/// - Summary: means over the defined cells (> −1), −1 when none.
///
/// Results are read as `COCO.loadRes` reads them: detection ids are 1 + their index in the list;
/// if the **first** result has a box, every result needs one and its area is the box area (even for
/// `segm`; a missing mask becomes the box polygon); otherwise areas are mask areas and missing boxes
/// come from the mask. Extensions where pycocotools would crash: an empty results list evaluates
/// to zero detections; a ground-truth annotation without `area` gets the mask (or box) area; polygon
/// results are rasterised. Evaluation with `useCats = 0` and keypoints are not implemented.
public struct COCOEvaluator: Sendable {
    /// Mask or box IoU.
    public let iouType: COCOIoUType
    /// The parameters, with image and category ids resolved.
    public let parameters: COCOParameters

    struct GT {
        var id: Int
        var area: Double
        var crowd: Bool
        var rle: RLE?
        var box: BoundingBox
    }

    struct DT {
        var id: Int
        var score: Double
        var area: Double
        var rle: RLE?
        var box: BoundingBox
    }

    /// Per (category index k, image index i): ground truth and detections in file order, at `k * I + i`.
    let gts: [[GT]]
    let dts: [[DT]]

    /// Prepares an evaluation (COCOeval's `loadRes` and `_prepare`).
    /// - Throws: `EvaluationError.unknownImage` for a result whose image is not in the ground truth,
    ///   `duplicateID` for repeated image or annotation ids, `missingField` for a missing box or mask,
    ///   `invalidSegmentation` / `invalidRLE` for unusable masks, `invalidParameter` for a NaN score
    ///   or empty parameter lists.
    public init(groundTruth: COCOGroundTruth, results: [COCOResult], iouType: COCOIoUType,
                parameters: COCOParameters = COCOParameters()) throws {
        var p = parameters
        guard !p.iouThresholds.isEmpty, !p.recallThresholds.isEmpty, !p.maxDetections.isEmpty, !p.areaRanges.isEmpty else {
            throw EvaluationError.invalidParameter("thresholds, recall points, max detections and area ranges must be non-empty")
        }
        guard p.maxDetections.allSatisfy({ $0 >= 0 }) else { throw EvaluationError.invalidParameter("negative max detections") }
        p.maxDetections.sort()

        var images = [Int: COCOImage]()
        for im in groundTruth.images {
            guard images[im.id] == nil else { throw EvaluationError.duplicateID("image \(im.id)") }
            guard im.width >= 0, im.height >= 0 else { throw EvaluationError.invalidParameter("image \(im.id) has a negative size") }
            images[im.id] = im
        }
        var annotationIDs = Set<Int>()
        for a in groundTruth.annotations {
            guard annotationIDs.insert(a.id).inserted else { throw EvaluationError.duplicateID("annotation \(a.id)") }
        }
        let imageIDs = Array(Set(p.imageIDs ?? groundTruth.images.map(\.id))).sorted()
        let categoryIDs = Array(Set(p.categoryIDs ?? groundTruth.categories.map(\.id))).sorted()
        p.imageIDs = imageIDs
        p.categoryIDs = categoryIDs
        self.iouType = iouType
        self.parameters = p

        let nI = imageIDs.count, nK = categoryIDs.count
        var imageIndex = [Int: Int](), categoryIndex = [Int: Int]()
        for (i, id) in imageIDs.enumerated() { imageIndex[id] = i }
        for (k, id) in categoryIDs.enumerated() { categoryIndex[id] = k }

        var gts = [[GT]](repeating: [], count: nK * nI)
        for a in groundTruth.annotations {
            guard let i = imageIndex[a.imageID], let k = categoryIndex[a.categoryID], let image = images[a.imageID] else { continue }
            var rle: RLE?
            if let s = a.segmentation, iouType == .segm || a.area == nil || a.bbox == nil {
                rle = try s.rle(imageHeight: image.height, imageWidth: image.width)
            }
            if iouType == .segm && rle == nil {
                throw EvaluationError.missingField("segmentation of annotation \(a.id)")
            }
            guard let box = a.bbox ?? rle?.boundingBox else {
                throw EvaluationError.missingField("bbox of annotation \(a.id)")
            }
            let area = a.area ?? (rle.map { Double($0.area) } ?? box.area)
            gts[k * nI + i].append(GT(id: a.id, area: area, crowd: a.isCrowd, rle: iouType == .segm ? rle : nil, box: box))
        }

        var dts = [[DT]](repeating: [], count: nK * nI)
        let boxBranch = results.first?.bbox != nil
        for (n, r) in results.enumerated() {
            guard let image = images[r.imageID] else { throw EvaluationError.unknownImage(r.imageID) }
            guard !r.score.isNaN else { throw EvaluationError.invalidParameter("NaN score in result \(n)") }
            let id = n + 1
            var rle: RLE?
            let area: Double
            let box: BoundingBox
            if boxBranch {
                guard let b = r.bbox else { throw EvaluationError.missingField("bbox of result \(n) (the first result has one)") }
                box = b
                area = b.width * b.height
                if iouType == .segm {
                    rle = try r.segmentation?.rle(imageHeight: image.height, imageWidth: image.width)
                        ?? RLE(box: b, height: image.height, width: image.width)
                }
            } else {
                guard let s = r.segmentation else { throw EvaluationError.missingField("segmentation or bbox of result \(n)") }
                let m = try s.rle(imageHeight: image.height, imageWidth: image.width)
                area = Double(m.area)
                box = r.bbox ?? m.boundingBox
                rle = iouType == .segm ? m : nil
            }
            guard let i = imageIndex[r.imageID], let k = categoryIndex[r.categoryID] else { continue }
            dts[k * nI + i].append(DT(id: id, score: r.score, area: area, rle: rle, box: box))
        }
        self.gts = gts
        self.dts = dts
    }

    /// Runs the evaluation and returns the 12 summary numbers.
    public func evaluate() -> COCOSummary { evaluateInDetail().summary }

    /// Runs the evaluation and returns the precision/recall tables with the summary.
    public func evaluateInDetail() -> COCOEvaluation {
        let p = parameters
        let nI = p.imageIDs?.count ?? 0, nK = p.categoryIDs?.count ?? 0
        let nA = p.areaRanges.count, nT = p.iouThresholds.count, nR = p.recallThresholds.count, nM = p.maxDetections.count
        let maxDet = p.maxDetections.last!

        // evaluateImg for every category, area range and image (COCOeval's order).
        var evalImgs = [PerImage?](repeating: nil, count: nK * nA * nI)
        for k in 0..<nK {
            for i in 0..<nI {
                let cell = k * nI + i
                let g = gts[cell]
                let dSorted = stableScoreOrder(dts[cell].map(\.score)).prefix(maxDet).map { dts[cell][$0] }
                if g.isEmpty && dSorted.isEmpty { continue }
                let ious = iouMatrix(dSorted, g)
                for a in 0..<nA {
                    evalImgs[(k * nA + a) * nI + i] = evaluateImage(gt: g, dt: dSorted, ious: ious, range: p.areaRanges[a])
                }
            }
        }

        // accumulate
        var precision = [Double](repeating: -1, count: nT * nR * nK * nA * nM)
        var recall = [Double](repeating: -1, count: nT * nK * nA * nM)
        let eps = Double.ulpOfOne  // np.spacing(1)
        for k in 0..<nK {
            for a in 0..<nA {
                let images = (0..<nI).compactMap { evalImgs[(k * nA + a) * nI + $0] }
                if images.isEmpty { continue }
                let npig = images.reduce(0) { $0 + $1.gtIgnore.lazy.filter { !$0 }.count }
                if npig == 0 { continue }
                for (m, md) in p.maxDetections.enumerated() {
                    // Concatenate the first md detections of each image, then sort by score (stable).
                    var scores = [Double](), owner = [(image: Int, index: Int)]()
                    for (e, im) in images.enumerated() {
                        for d in 0..<min(md, im.scores.count) {
                            scores.append(im.scores[d])
                            owner.append((e, d))
                        }
                    }
                    let order = stableScoreOrder(scores)
                    let nd = order.count
                    var pr = [Double](repeating: 0, count: nd)
                    var rc = [Double](repeating: 0, count: nd)
                    for t in 0..<nT {
                        var tp = 0, fp = 0
                        for (j, o) in order.enumerated() {
                            let im = images[owner[o].image], d = owner[o].index
                            let dCount = im.scores.count
                            if !im.dtIgnore[t * dCount + d] {
                                if im.dtMatch[t * dCount + d] != 0 { tp += 1 } else { fp += 1 }
                            }
                            rc[j] = Double(tp) / Double(npig)
                            pr[j] = Double(tp) / (Double(fp + tp) + eps)
                        }
                        recall[((t * nK + k) * nA + a) * nM + m] = nd > 0 ? rc[nd - 1] : 0
                        if nd > 1 {
                            for j in stride(from: nd - 1, to: 0, by: -1) where pr[j] > pr[j - 1] { pr[j - 1] = pr[j] }
                        }
                        // searchsorted(rc, recThrs, side='left'); precision 0 past the last recall.
                        var j = 0
                        for (r, thr) in p.recallThresholds.enumerated() {
                            while j < nd && rc[j] < thr { j += 1 }
                            precision[(((t * nR + r) * nK + k) * nA + a) * nM + m] = j < nd ? pr[j] : 0
                        }
                    }
                }
            }
        }

        var evaluation = COCOEvaluation(iouType: iouType, parameters: p, precision: precision, recall: recall,
                                        summary: COCOSummary(stats: [Double](repeating: -1, count: 12)))
        evaluation.summary = COCOEvaluator.summarize(evaluation)
        return evaluation
    }

    /// Per-image, per-category, per-area-range matching result (COCOeval's `evalImgs` entry).
    struct PerImage {
        /// Scores of the kept detections, descending.
        var scores: [Double]
        /// T×D: id of the matched ground truth, 0 when unmatched.
        var dtMatch: [Int]
        /// T×D: ignored detection.
        var dtIgnore: [Bool]
        /// G: ignored ground truth.
        var gtIgnore: [Bool]
    }

    /// Indices sorted by score descending, ties in index order (NumPy's mergesort of −score).
    func stableScoreOrder(_ scores: [Double]) -> [Int] {
        scores.indices.sorted { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 < $1 }
    }

    /// D×G IoU, row-major (`ious[d * G + g]`).
    func iouMatrix(_ dt: [DT], _ gt: [GT]) -> [Double] {
        let nD = dt.count, nG = gt.count
        guard nD > 0, nG > 0 else { return [] }
        var out = [Double](repeating: 0, count: nD * nG)
        switch iouType {
        case .bbox:
            for d in 0..<nD { for g in 0..<nG { out[d * nG + g] = BoundingBox.iou(dt[d].box, gt[g].box, gtIsCrowd: gt[g].crowd) } }
        case .segm:
            let dR = dt.map { $0.rle! }, gR = gt.map { $0.rle! }
            let dA = dR.map(\.area), gA = gR.map(\.area)
            let dB = dR.map(\.boundingBox), gB = gR.map(\.boundingBox)
            for d in 0..<nD {
                for g in 0..<nG {
                    out[d * nG + g] = RLE.iou(dR[d], gR[g], gtIsCrowd: gt[g].crowd, dtArea: dA[d], gtArea: gA[g], dtBox: dB[d], gtBox: gB[g])
                }
            }
        }
        return out
    }

    /// COCOeval's `evaluateImg` for one image, category and area range; `dt` already sorted and cut.
    func evaluateImage(gt: [GT], dt: [DT], ious: [Double], range: COCOAreaRange) -> PerImage {
        let nT = parameters.iouThresholds.count
        let ignoredByRange = gt.map { $0.crowd || $0.area < range.lower || $0.area > range.upper }
        // Non-ignored ground truth first, stable.
        let gOrder = gt.indices.filter { !ignoredByRange[$0] } + gt.indices.filter { ignoredByRange[$0] }
        let nG = gt.count, nD = dt.count
        let gtIg = gOrder.map { ignoredByRange[$0] }
        let crowd = gOrder.map { gt[$0].crowd }
        var dtMatch = [Int](repeating: 0, count: nT * nD)
        var dtIg = [Bool](repeating: false, count: nT * nD)
        if !ious.isEmpty {
            var gtMatched = [Bool](repeating: false, count: nG)
            for (t, threshold) in parameters.iouThresholds.enumerated() {
                for g in 0..<nG { gtMatched[g] = false }
                for d in 0..<nD {
                    var best = min(threshold, 1 - 1e-10)
                    var m = -1
                    for gi in 0..<nG {
                        if gtMatched[gi] && !crowd[gi] { continue }
                        if m > -1 && !gtIg[m] && gtIg[gi] { break }
                        let v = ious[d * nG + gOrder[gi]]
                        if v < best { continue }
                        best = v
                        m = gi
                    }
                    if m == -1 { continue }
                    dtIg[t * nD + d] = gtIg[m]
                    dtMatch[t * nD + d] = gt[gOrder[m]].id
                    gtMatched[m] = true
                }
            }
        }
        for d in 0..<nD where dt[d].area < range.lower || dt[d].area > range.upper {
            for t in 0..<nT where dtMatch[t * nD + d] == 0 { dtIg[t * nD + d] = true }
        }
        return PerImage(scores: dt.map(\.score), dtMatch: dtMatch, dtIgnore: dtIg, gtIgnore: gtIg)
    }

    /// COCOeval's `summarize()`: the 12 numbers from the precision and recall tables.
    ///
    /// Positions 0, 1, 2 of the (sorted) max-detections list give AR1, AR10, AR100 and the AP
    /// columns use position 2, except the first AP, which uses 100 — all as COCOeval; with fewer
    /// than three values the last one stands in.
    static func summarize(_ e: COCOEvaluation) -> COCOSummary {
        let p = e.parameters
        let d = e.dims
        let md = p.maxDetections
        func maxDets(_ i: Int) -> Int { md[min(i, md.count - 1)] }
        func value(ap: Bool, iou: Double? = nil, area: String = "all", maxDetections: Int) -> Double {
            let ts = (0..<d.t).filter { iou == nil || p.iouThresholds[$0] == iou! }
            let areas = (0..<d.a).filter { p.areaRanges[$0].label == area }
            let ms = (0..<d.m).filter { md[$0] == maxDetections }
            var sum = 0.0, n = 0
            for t in ts {
                for k in 0..<d.k {
                    for a in areas {
                        for m in ms {
                            if ap {
                                for r in 0..<d.r {
                                    let v = e.precision(t: t, r: r, k: k, a: a, m: m)
                                    if v > -1 { sum += v; n += 1 }
                                }
                            } else {
                                let v = e.recall(t: t, k: k, a: a, m: m)
                                if v > -1 { sum += v; n += 1 }
                            }
                        }
                    }
                }
            }
            return n > 0 ? sum / Double(n) : -1
        }
        let m2 = maxDets(2)
        return COCOSummary(stats: [
            value(ap: true, maxDetections: 100),  // COCOeval's literal default, not maxDets[2]
            value(ap: true, iou: 0.5, maxDetections: m2),
            value(ap: true, iou: 0.75, maxDetections: m2),
            value(ap: true, area: "small", maxDetections: m2),
            value(ap: true, area: "medium", maxDetections: m2),
            value(ap: true, area: "large", maxDetections: m2),
            value(ap: false, maxDetections: maxDets(0)),
            value(ap: false, maxDetections: maxDets(1)),
            value(ap: false, maxDetections: m2),
            value(ap: false, area: "small", maxDetections: m2),
            value(ap: false, area: "medium", maxDetections: m2),
            value(ap: false, area: "large", maxDetections: m2),
        ])
    }
}
