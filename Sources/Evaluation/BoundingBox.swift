// COCO boxes: [x, y, width, height] and their IoU.

/// An axis-aligned box in COCO's `[x, y, width, height]` form (x = column, y = row, continuous pixels).
///
/// Its JSON form is the four-number array COCO uses.
public struct BoundingBox: Hashable, Sendable {
    /// Left edge.
    public var x: Double
    /// Top edge.
    public var y: Double
    /// Width (`x2 − x1`).
    public var width: Double
    /// Height (`y2 − y1`).
    public var height: Double

    /// A box from its left, top, width and height.
    public init(x: Double, y: Double, width: Double, height: Double) {
        self.x = x
        self.y = y
        self.width = width
        self.height = height
    }

    /// A box from corners `(x1, y1)`, `(x2, y2)` (the detection convention of the model, §9.1).
    public init(x1: Double, y1: Double, x2: Double, y2: Double) {
        self.init(x: x1, y: y1, width: x2 - x1, height: y2 - y1)
    }

    /// `width × height`.
    public var area: Double { width * height }

    /// The four numbers `[x, y, width, height]`.
    public var array: [Double] { [x, y, width, height] }

    /// IoU of a detection box with a ground-truth box, as COCO's `maskUtils.iou` on boxes.
    ///
    /// `I / (A_dt + A_gt − I)`, or `I / A_dt` when the ground truth is a crowd region; 0 when the
    /// boxes do not overlap with positive width and height.
    public static func iou(_ dt: BoundingBox, _ gt: BoundingBox, gtIsCrowd: Bool = false) -> Double {
        let w = min(dt.x + dt.width, gt.x + gt.width) - max(dt.x, gt.x)
        if w <= 0 { return 0 }
        let h = min(dt.y + dt.height, gt.y + gt.height) - max(dt.y, gt.y)
        if h <= 0 { return 0 }
        let i = w * h
        let da = dt.width * dt.height
        let u = gtIsCrowd ? da : da + gt.width * gt.height - i
        return i / u
    }

    /// The D×G IoU matrix of detection boxes against ground-truth boxes (`result[d][g]`).
    /// - Precondition: `gtIsCrowd.count == groundTruths.count`.
    public static func iouMatrix(detections: [BoundingBox], groundTruths: [BoundingBox], gtIsCrowd: [Bool]) -> [[Double]] {
        precondition(gtIsCrowd.count == groundTruths.count, "iouMatrix: one crowd flag per ground truth")
        return detections.map { d in groundTruths.indices.map { g in iou(d, groundTruths[g], gtIsCrowd: gtIsCrowd[g]) } }
    }
}

extension BoundingBox: Codable {
    /// Reads `[x, y, width, height]`.
    public init(from decoder: Decoder) throws {
        var c = try decoder.unkeyedContainer()
        var v = [Double]()
        while !c.isAtEnd { v.append(try c.decode(Double.self)) }
        guard v.count == 4 else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                                                    debugDescription: "a box is [x, y, width, height], got \(v.count) numbers"))
        }
        self.init(x: v[0], y: v[1], width: v[2], height: v[3])
    }

    /// Writes `[x, y, width, height]`.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.unkeyedContainer()
        try c.encode(contentsOf: array)
    }
}
