@_exported import Primitives
import Tensor

/// Intersection over union of two boxes, computed with the arithmetic of torchvision's NMS kernel:
/// `inter / ((areaA + areaB) − inter)`; 0/0 gives NaN, as there.
@inline(__always)
func pairIoU(_ a: Box, _ areaA: Float, _ b: Box, _ areaB: Float) -> Float {
    let w = max(min(a.x2, b.x2) - max(a.x1, b.x1), 0)
    let h = max(min(a.y2, b.y2) - max(a.y1, b.y1), 0)
    let inter = w * h
    return inter / (areaA + areaB - inter)
}

/// IoU matrix, row-major [a.count × b.count], torchvision `box_iou` semantics (no +1).
///
/// `iou[i·b.count + j] = |a_i ∩ b_j| / (|a_i| + |b_j| − |a_i ∩ b_j|)`. Two empty boxes give NaN
/// (0/0), as torchvision does.
public func boxIoU(_ a: [Box], _ b: [Box]) -> [Float] {
    let n = a.count, m = b.count
    if n == 0 || m == 0 { return [] }
    let areaB = b.map(\.area)
    var out = [Float](repeating: 0, count: n * m)
    out.withUnsafeMutableBufferPointer { o in
        let op = o.baseAddress!
        b.withUnsafeBufferPointer { bp in
            areaB.withUnsafeBufferPointer { ab in
                let bb = bp.baseAddress!, aa = ab.baseAddress!
                parallelRows(n, work: n * m) { i in
                    let ai = a[i], areaA = ai.area, row = op + i * m
                    for j in 0..<m { row[j] = pairIoU(ai, areaA, bb[j], aa[j]) }
                }
            }
        }
    }
    return out
}

/// Runs `body(i)` for i in 0..<n on the engine's threads when `work` is large enough to pay off.
@inline(__always)
func parallelRows(_ n: Int, work: Int, _ body: (Int) -> Void) {
    if work < 1 << 15 {
        for i in 0..<n { body(i) }
    } else {
        parallelFor(n, minChunk: 1, body)
    }
}

/// Clips to x∈[0,width], y∈[0,height] (torchvision `clip_boxes_to_image`: `clamp(min: 0, max: size)`).
public func clipBoxes(_ boxes: inout [Box], width: Int, height: Int) {
    let w = Float(width), h = Float(height)
    for i in boxes.indices {
        var b = boxes[i]
        b.x1 = min(max(b.x1, 0), w); b.x2 = min(max(b.x2, 0), w)
        b.y1 = min(max(b.y1, 0), h); b.y2 = min(max(b.y2, 0), h)
        boxes[i] = b
    }
}

/// Indices 0..<n ordered by descending score; equal scores keep ascending index order (a stable sort).
///
/// torchvision's CPU NMS sorts the scores descending with `stable = true`; this is the same order.
/// A NaN score sorts after every number.
func descendingOrder(_ scores: [Float]) -> [Int] {
    var order = Array(0..<scores.count)
    scores.withUnsafeBufferPointer { s in
        order.sort { i, j in
            let a = s[i], b = s[j]
            if a != b {
                if a.isNaN { return false }
                if b.isNaN { return true }
                return a > b
            }
            return i < j
        }
    }
    return order
}

/// Greedy NMS: process in descending score order (stable for equal scores: lower index first), suppress IoU strictly > threshold; returns kept indices in descending score order (torchvision.ops.nms semantics).
///
/// The IoU is computed as torchvision's CPU kernel does (`inter / (area_i + area_j − inter)` in
/// Float); a NaN IoU (two empty boxes) never suppresses.
/// - Precondition: `scores.count == boxes.count`.
public func nms(_ boxes: [Box], scores: [Float], iouThreshold: Float) -> [Int] {
    precondition(scores.count == boxes.count, "nms: \(boxes.count) boxes, \(scores.count) scores")
    let n = boxes.count
    if n == 0 { return [] }
    let order = descendingOrder(scores)
    // Boxes and areas in score order, so the inner loop runs over contiguous memory.
    var sorted = [Box](), areas = [Float]()
    sorted.reserveCapacity(n); areas.reserveCapacity(n)
    for i in order { sorted.append(boxes[i]); areas.append(boxes[i].area) }
    var suppressed = [Bool](repeating: false, count: n)
    var keep: [Int] = []
    sorted.withUnsafeBufferPointer { bp in
        areas.withUnsafeBufferPointer { ap in
            suppressed.withUnsafeMutableBufferPointer { sp in
                let b = bp.baseAddress!, a = ap.baseAddress!, s = sp.baseAddress!
                for i in 0..<n where !s[i] {
                    keep.append(order[i])
                    let bi = b[i], ai = a[i]
                    var j = i + 1
                    while j < n {
                        if !s[j] && pairIoU(bi, ai, b[j], a[j]) > iouThreshold { s[j] = true }
                        j += 1
                    }
                }
            }
        }
    }
    return keep
}

/// torchvision batched_nms for per-class NMS (labels), same ordering rule.
///
/// Boxes of different labels never suppress each other. Like torchvision on the CPU, up to 1000
/// boxes use the coordinate trick (every box shifted by `label · (max coordinate + 1)`, computed in
/// Float, then one `nms`), which reproduces its rounding; more boxes run `nms` per label and merge
/// the survivors by descending score (ties: lower index first).
/// - Precondition: `scores.count == boxes.count == labels.count`.
public func batchedNMS(_ boxes: [Box], scores: [Float], labels: [Int], iouThreshold: Float) -> [Int] {
    precondition(scores.count == boxes.count && labels.count == boxes.count,
                 "batchedNMS: \(boxes.count) boxes, \(scores.count) scores, \(labels.count) labels")
    let n = boxes.count
    if n == 0 { return [] }
    if 4 * n <= 4000 {
        var maxCoordinate = -Float.infinity
        for b in boxes { maxCoordinate = max(maxCoordinate, b.x1, b.y1, b.x2, b.y2) }
        let step = maxCoordinate + 1
        let shifted = zip(boxes, labels).map { b, l -> Box in
            let o = Float(l) * step
            return Box(b.x1 + o, b.y1 + o, b.x2 + o, b.y2 + o)
        }
        return nms(shifted, scores: scores, iouThreshold: iouThreshold)
    }
    var byLabel: [Int: [Int]] = [:]
    for i in 0..<n { byLabel[labels[i], default: []].append(i) }
    var kept: [Int] = []
    for (_, idx) in byLabel {
        let k = nms(idx.map { boxes[$0] }, scores: idx.map { scores[$0] }, iouThreshold: iouThreshold)
        kept += k.map { idx[$0] }
    }
    kept.sort()
    let order = descendingOrder(kept.map { scores[$0] })
    return order.map { kept[$0] }
}
