/// §5.2.4 paste_masks_in_image with padding 1: a size×size probability map into an H×W canvas.
///
/// `probs` is [size, size] row-major; the result is [imageHeight, imageWidth] row-major
/// probabilities (not thresholded), zero outside the pasted region. Steps (torchvision
/// `paste_masks_in_image`, padding 1): pad the map with one zero pixel per side; enlarge the box
/// about its centre by (size + 2)/size (Float); truncate the corners to integers; resize the padded
/// map bilinearly (align_corners false) to `max(x2 − x1 + 1, 1)` × `max(y2 − y1 + 1, 1)`; copy the
/// part inside the image to rows `max(y1, 0) ..< min(y2 + 1, H)`, columns `max(x1, 0) ..< min(x2 + 1, W)`.
/// A box entirely outside the image pastes nothing (torchvision would fail on such a box).
public func pasteMask(_ probs: UnsafePointer<Float>, size: Int, box: Box, imageHeight: Int, imageWidth: Int) -> [Float] {
    var canvas = [Float](repeating: 0, count: imageHeight * imageWidth)
    canvas.withUnsafeMutableBufferPointer { c in
        let base = c.baseAddress!
        forEachPastedRow(probs, size: size, box: box, imageHeight: imageHeight, imageWidth: imageWidth) { y, x0, values in
            (base + y * imageWidth + x0).update(from: values.baseAddress!, count: values.count)
        }
    }
    return canvas
}

/// The pixels of `pasteMask`'s result above `threshold`, without the H×W canvas.
public func pastedMaskArea(_ probs: UnsafePointer<Float>, size: Int, box: Box, imageHeight: Int, imageWidth: Int,
                           threshold: Float = 0.5) -> Int {
    var n = 0
    forEachPastedRow(probs, size: size, box: box, imageHeight: imageHeight, imageWidth: imageWidth) { _, _, values in
        for v in values where v > threshold { n += 1 }
    }
    return n
}

/// `pasteMask`'s work: `row(y, x0, values)` for each image row y the pasted map reaches, with its
/// values for columns x0 ..< x0 + values.count (the pixels outside are zero).
func forEachPastedRow(_ probs: UnsafePointer<Float>, size: Int, box: Box, imageHeight: Int, imageWidth: Int,
                      _ row: (Int, Int, UnsafeBufferPointer<Float>) -> Void) {
    precondition(size > 0 && imageHeight >= 0 && imageWidth >= 0, "pasteMask: size \(size), image \(imageHeight)×\(imageWidth)")
    let m = size, pm = size + 2
    // The padded map.
    var padded = [Float](repeating: 0, count: pm * pm)
    for y in 0..<m { for x in 0..<m { padded[(y + 1) * pm + x + 1] = probs[y * m + x] } }
    // The enlarged box, truncated toward zero (`.to(int64)`).
    let scale = Float(Double(pm) / Double(m))
    let wHalf = (box.x2 - box.x1) * 0.5 * scale, hHalf = (box.y2 - box.y1) * 0.5 * scale
    let xc = (box.x2 + box.x1) * 0.5, yc = (box.y2 + box.y1) * 0.5
    func trunc(_ v: Float) -> Int {
        guard v.isFinite else { return v > 0 ? Int(Int32.max) : Int(Int32.min) }
        return Int(max(min(v, 1e9), -1e9))
    }
    let x1 = trunc(xc - wHalf), x2 = trunc(xc + wHalf), y1 = trunc(yc - hHalf), y2 = trunc(yc + hHalf)
    let x0 = max(x1, 0), xEnd = min(x2 + 1, imageWidth), y0 = max(y1, 0), yEnd = min(y2 + 1, imageHeight)
    if xEnd <= x0 || yEnd <= y0 { return }
    let w = max(x2 - x1 + 1, 1), h = max(y2 - y1 + 1, 1)
    // Only the visible part of the h×w resized map is computed (F.interpolate's taps:
    // src = max(scale·(dst + 0.5) − 0.5, 0) with scale = in/out, upper index clamped).
    let sy = Float(pm) / Float(h), sx = Float(pm) / Float(w)
    let xt = (x0..<xEnd).map { resizeTap($0 - x1, scale: sx, inSize: pm) }
    var values = [Float](repeating: 0, count: xEnd - x0)
    padded.withUnsafeBufferPointer { pb in
        values.withUnsafeMutableBufferPointer { vb in
            let src = pb.baseAddress!
            for y in y0..<yEnd {
                let t = resizeTap(y - y1, scale: sy, inSize: pm)
                let r0 = src + t.i0 * pm, r1 = src + t.i1 * pm
                for (k, u) in xt.enumerated() {
                    vb[k] = t.l0 * (u.l0 * r0[u.i0] + u.l1 * r0[u.i1]) + t.l1 * (u.l0 * r1[u.i0] + u.l1 * r1[u.i1])
                }
                row(y, x0, UnsafeBufferPointer(vb))
            }
        }
    }
}

/// The two source taps of output index `dst` of a bilinear resize (align_corners false).
@inline(__always)
private func resizeTap(_ dst: Int, scale: Float, inSize: Int) -> (i0: Int, i1: Int, l0: Float, l1: Float) {
    var src = scale * (Float(dst) + 0.5) - 0.5
    if src < 0 { src = 0 }
    let i0 = min(Int(src), inSize - 1)
    let i1 = i0 + (i0 < inSize - 1 ? 1 : 0)
    let l1 = src - Float(i0)
    return (i0, i1, 1 - l1, l1)
}
