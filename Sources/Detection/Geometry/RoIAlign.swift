import Dispatch
import Foundation
import Tensor

// RoIAlign (torchvision `roi_align`, aligned = false), MODEL.md §5.1.
//
// Per RoI with feature-map box (sx, sy, ex, ey) = box · spatialScale: roi size
// rw = max(ex − sx, 1), rh = max(ey − sy, 1); bin size bw = rw / P, bh = rh / P; a grid of gy × gx
// sample points per bin (the sampling ratio, or ceil(rh / P) × ceil(rw / P) when it is ≤ 0); sample
// y = sy + ph·bh + (iy + 0.5)·bh / gy (likewise x); each sample is a bilinear tap of the map
// (0 outside [−1, H] × [−1, W], negative coordinates clamped to 0, the low index clamped to H − 1 /
// W − 1 with the coordinate snapped to it); a bin is the sum of its samples divided by
// max(gy·gx, 1). Gradients flow to the map only.
//
// The bilinear weights and the validity test are separable: per box and axis the samples are
// computed once (`RoIAxis.sample`), and the samples of one bin are merged into their distinct map
// indices with summed weights (`mergedTaps`). A bin's 2-D taps are the products of its y and x
// entries — typically 2 × 2 = 4 taps instead of gy·gx·4 = 16. Summing weights first changes the
// rounding against torchvision by ~1e-7 relative (measured: ≤ 4.3e-7 × scale on the goldens).
//
// Layout: both passes run over a channels-last copy of the map ([H·W, C], made inside the function
// in a workspace buffer), so every tap is one contiguous, vectorised loop over the channels (STYLE.md:
// 8× faster than channel-first for 512 RoIs). The forward pass is parallel over boxes, the backward
// pass over channel slices (each thread owns its channels, so no write races). The layout changes
// ([C, n] ↔ [n, C]) go through 16×16 tiles: with the power-of-two strides of a 256×32×32 map a plain
// strided loop thrashes L1 and made the backward pass 4× slower.

/// One sample coordinate along one axis: the two neighbouring map indices and their weights.
/// `lo < 0` marks a sample outside the map (it contributes 0 but still counts in the average).
struct AxisTap {
    var lo: Int32
    var hi: Int32
    /// Weight of `lo` (1 − l).
    var wLo: Float
    /// Weight of `hi` (l).
    var wHi: Float
}

/// One map index along an axis with the summed weight of every sample of a bin that taps it.
struct MergedTap {
    var index: Int32
    var weight: Float
}

/// The sampling geometry of one RoI along one axis.
struct RoIAxis {
    var start: Float
    var bin: Float
    var grid: Int

    /// torchvision's geometry for the box edges `a`, `b` (image coordinates) scaled by `scale`.
    @inline(__always)
    init(_ a: Float, _ b: Float, scale: Float, pooled: Int, samplingRatio: Int) {
        let s = a * scale, e = b * scale
        let size = max(e - s, 1)
        start = s
        bin = size / Float(pooled)
        grid = samplingRatio > 0 ? samplingRatio : Int((size / Float(pooled)).rounded(.up))
    }

    /// Sample i of output index p on a map axis of length `limit`, with torchvision's arithmetic:
    /// `v = (start + p·bin) + (i + 0.5)·bin / grid`, zero outside [−1, limit], clamped at 0 and at
    /// the last index.
    @inline(__always)
    func sample(_ p: Int, _ i: Int, limit: Int) -> AxisTap {
        var v = start + Float(p) * bin + (Float(i) + 0.5) * bin / Float(grid)
        if !(v >= -1 && v <= Float(limit)) { return AxisTap(lo: -1, hi: -1, wLo: 0, wHi: 0) }  // also NaN
        if v <= 0 { v = 0 }
        var lo = Int(v), hi: Int
        if lo >= limit - 1 {
            lo = limit - 1; hi = lo; v = Float(lo)
        } else {
            hi = lo + 1
        }
        let l = v - Float(lo)
        return AxisTap(lo: Int32(lo), hi: Int32(hi), wLo: 1 - l, wHi: l)
    }

    /// Writes `pooled · grid` samples, index `p · grid + i`.
    @inline(__always)
    func taps(pooled: Int, limit: Int, into t: UnsafeMutablePointer<AxisTap>) {
        for p in 0..<pooled { for i in 0..<grid { t[p * grid + i] = sample(p, i, limit: limit) } }
    }

    /// For every output index p the distinct map indices its `grid` samples tap, with summed
    /// weights: entries `p · 2·grid ..< p · 2·grid + counts[p]`, ascending index. Samples outside
    /// the map contribute nothing.
    @inline(__always)
    func mergedTaps(pooled: Int, limit: Int, into t: UnsafeMutablePointer<MergedTap>, counts: UnsafeMutablePointer<Int32>) {
        let stride = 2 * grid
        for p in 0..<pooled {
            let row = t + p * stride
            var n = 0
            @inline(__always) func add(_ index: Int32, _ w: Float) {
                for j in 0..<n where row[j].index == index { row[j].weight += w; return }
                row[n] = MergedTap(index: index, weight: w); n += 1
            }
            for i in 0..<grid {
                let s = sample(p, i, limit: limit)
                if s.lo < 0 { continue }
                add(s.lo, s.wLo)
                if s.hi != s.lo { add(s.hi, s.wHi) }
            }
            counts[p] = Int32(n)
        }
    }
}

/// Workspace slots used by RoIAlign (scratch: their contents are overwritten by every call).
enum RoIAlignSlot {
    static let channelsLast = 8
    static let perThread = 9
}

/// What a blocked transpose does with each element.
enum TransposeMode {
    case copy
    /// dst = src / divisor.
    case divide(Float)
    /// dst += src.
    case add
}

/// `dst[j·ldd + i] (=, = ·/d, +=) src[i·lds + j]` for i < rows, j < cols, through 16×16 tiles.
///
/// Each tile is read row by row into a stack buffer and written row by row, so every cache line of
/// either side is consumed in one go: with power-of-two strides (a 32×32 map, 256 channels) the
/// naive strided loop thrashes a handful of L1 sets and runs several times slower.
@inline(__always)
func transposeBlocked(_ src: UnsafePointer<Float>, lds: Int, _ dst: UnsafeMutablePointer<Float>, ldd: Int,
                      rows: Int, cols: Int, _ mode: TransposeMode) {
    withUnsafeTemporaryAllocation(of: Float.self, capacity: 256) { tb in
        let t = tb.baseAddress!
        var i0 = 0
        while i0 < rows {
            let ni = min(16, rows - i0)
            var j0 = 0
            while j0 < cols {
                let nj = min(16, cols - j0)
                for i in 0..<ni {
                    let s = src + (i0 + i) * lds + j0
                    for j in 0..<nj { t[j * 16 + i] = s[j] }
                }
                for j in 0..<nj {
                    let d = dst + (j0 + j) * ldd + i0, tr = t + j * 16
                    switch mode {
                    case .copy: for i in 0..<ni { d[i] = tr[i] }
                    case .divide(let q): for i in 0..<ni { d[i] = tr[i] / q }
                    case .add: for i in 0..<ni { d[i] += tr[i] }
                    }
                }
                j0 += 16
            }
            i0 += 16
        }
    }
}

/// dst[p·C + c] = src[c·n + p]: a [C, n] plane stack to channels-last [n, C], parallel over positions.
func transposeToChannelsLast(_ src: UnsafePointer<Float>, channels c: Int, positions n: Int, _ dst: UnsafeMutablePointer<Float>) {
    let block = 64
    let blocks = (n + block - 1) / block
    parallelFor(blocks, minChunk: 2) { b in
        let p0 = b * block, p1 = min(p0 + block, n)
        transposeBlocked(src + p0, lds: n, dst + p0 * c, ldd: c, rows: c, cols: p1 - p0, .copy)
    }
}

/// Validates the common arguments and returns (C, H, W).
private func roiAlignShapes(_ op: String, features: Tensor, grad: Tensor, boxes: Int, outputSize: Int, spatialScale: Float) throws -> (Int, Int, Int) {
    try features.expectRank(4, op, "features")
    guard features.shape[0] == 1 else {
        throw TensorError.shapeMismatch(op: op, detail: "features is \(shapeString(features.shape)), expected a batch of 1")
    }
    guard outputSize > 0 else { throw TensorError.invalidArgument(op: op, detail: "outputSize \(outputSize) must be positive") }
    guard spatialScale.isFinite, spatialScale > 0 else {
        throw TensorError.invalidArgument(op: op, detail: "spatialScale \(spatialScale) must be positive and finite")
    }
    let c = features.shape[1], h = features.shape[2], w = features.shape[3]
    guard h > 0, w > 0 else { throw TensorError.invalidArgument(op: op, detail: "empty feature map \(shapeString(features.shape))") }
    try grad.expectShape([boxes, c, outputSize, outputSize], op, "pooled")
    return (c, h, w)
}

/// The sampling geometry of one RoI on an H×W map.
struct RoIGeometry {
    let y: RoIAxis
    let x: RoIAxis
    /// The divisor of a bin's sum: max(gy·gx, 1).
    let count: Float

    @inline(__always)
    init(_ b: Box, pooled: Int, scale: Float, samplingRatio: Int) {
        y = RoIAxis(b.y1, b.y2, scale: scale, pooled: pooled, samplingRatio: samplingRatio)
        x = RoIAxis(b.x1, b.x2, scale: scale, pooled: pooled, samplingRatio: samplingRatio)
        count = Float(max(y.grid * x.grid, 1))
    }

    /// Calls `body(cell, k, weights, positions)` for every output cell (ph·P + pw) with its k
    /// distinct map positions (y·W + x) and their weights (not divided by `count`). With `padTo4`,
    /// k is rounded up to a multiple of 4 with zero-weight copies of the first tap (k stays 0 for
    /// a cell whose samples all lie outside the map).
    @inline(__always)
    func forEachCell(pooled P: Int, height H: Int, width W: Int, padTo4: Bool,
                     _ body: (Int, Int, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Int>) -> Void) {
        let sy = 2 * y.grid, sx = 2 * x.grid
        let perCell = sy * sx + 3
        withUnsafeTemporaryAllocation(of: MergedTap.self, capacity: P * (sy + sx)) { tb in
            withUnsafeTemporaryAllocation(of: Int32.self, capacity: 2 * P) { cb in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: perCell) { wb in
                    withUnsafeTemporaryAllocation(of: Int.self, capacity: perCell) { pb in
                        let ty = tb.baseAddress!, tx = ty + P * sy
                        let cy = cb.baseAddress!, cx = cy + P
                        let ws = wb.baseAddress!, ps = pb.baseAddress!
                        y.mergedTaps(pooled: P, limit: H, into: ty, counts: cy)
                        x.mergedTaps(pooled: P, limit: W, into: tx, counts: cx)
                        for ph in 0..<P {
                            let yr = ty + ph * sy, ny = Int(cy[ph])
                            for pw in 0..<P {
                                let xr = tx + pw * sx, nx = Int(cx[pw])
                                var k = 0
                                for i in 0..<ny {
                                    let wy = yr[i].weight, row = Int(yr[i].index) * W
                                    for j in 0..<nx {
                                        ws[k] = wy * xr[j].weight
                                        ps[k] = row + Int(xr[j].index)
                                        k += 1
                                    }
                                }
                                if padTo4 && k > 0 {
                                    while k & 3 != 0 { ws[k] = 0; ps[k] = ps[0]; k += 1 }
                                }
                                body(ph * P + pw, k, ws, ps)
                            }
                        }
                    }
                }
            }
        }
    }
}

/// RoIAlign (torchvision roi_align, aligned=false): features [1, C, H, W] (NCHW) → [R, C, P, P].
///
/// `out[r, c, ph, pw]` = mean over the bin's sample points of the bilinear sample of channel c
/// (MODEL.md §5.1). `samplingRatio ≤ 0` selects the adaptive grid `ceil(roi size / P)` per axis.
/// Allocates the output and a channels-last copy of the map; see
/// `roiAlignForward(out:features:boxes:outputSize:spatialScale:samplingRatio:workspace:)` for the
/// allocation-free form.
/// - Throws: `TensorError` if features is not [1, C, H, W] with H, W > 0, or for a non-positive size/scale.
public func roiAlignForward(features: Tensor, boxes: [Box], outputSize: Int, spatialScale: Float, samplingRatio: Int) throws -> Tensor {
    try features.expectRank(4, "roi_align", "features")
    guard outputSize > 0 else { throw TensorError.invalidArgument(op: "roi_align", detail: "outputSize \(outputSize) must be positive") }
    let out = Tensor(shape: [boxes.count, features.shape[1], outputSize, outputSize])
    try roiAlignForward(out: out, features: features, boxes: boxes, outputSize: outputSize,
                        spatialScale: spatialScale, samplingRatio: samplingRatio, workspace: Workspace())
    return out
}

/// RoIAlign into a caller-allocated output, with scratch from `workspace` (no allocation once the
/// workspace has grown): features [1, C, H, W] → out [R, C, P, P] (overwritten).
///
/// Uses workspace slots 8 (the channels-last map, H·W·C floats) and 9 (per-thread accumulators,
/// threads·P²·C floats); their contents are clobbered.
/// - Throws: `TensorError` for mismatched shapes or a non-positive size/scale.
public func roiAlignForward(out: Tensor, features: Tensor, boxes: [Box], outputSize: Int, spatialScale: Float,
                            samplingRatio: Int, workspace: Workspace) throws {
    let (C, H, W) = try roiAlignShapes("roi_align", features: features, grad: out, boxes: boxes.count,
                                       outputSize: outputSize, spatialScale: spatialScale)
    let R = boxes.count
    if R == 0 || C == 0 { return }
    let P = outputSize, cells = P * P, hw = H * W
    let fT = workspace.buffer(RoIAlignSlot.channelsLast, count: hw * C)
    transposeToChannelsLast(features.data, channels: C, positions: hw, fT)
    let chunks = max(1, min(Engine.threads, R))
    let accAll = workspace.buffer(RoIAlignSlot.perThread, count: chunks * cells * C)
    let outData = out.data
    boxes.withUnsafeBufferPointer { bp in
        parallelChunks(R, chunks: chunks) { chunk, range in
            let acc = accAll + chunk * cells * C
            for r in range {
                let geo = RoIGeometry(bp[r], pooled: P, scale: spatialScale, samplingRatio: samplingRatio)
                // acc[cell · C + c] = Σ_taps w · map[pos, c], four taps per pass.
                geo.forEachCell(pooled: P, height: H, width: W, padTo4: true) { cell, k, ws, ps in
                    let a = acc + cell * C
                    if k == 0 { a.update(repeating: 0, count: C); return }
                    var t = 0
                    while t < k {
                        let w0 = ws[t], w1 = ws[t + 1], w2 = ws[t + 2], w3 = ws[t + 3]
                        let r0 = fT + ps[t] * C, r1 = fT + ps[t + 1] * C, r2 = fT + ps[t + 2] * C, r3 = fT + ps[t + 3] * C
                        if t == 0 {
                            for c in 0..<C { a[c] = w0 * r0[c] + w1 * r1[c] + w2 * r2[c] + w3 * r3[c] }
                        } else {
                            for c in 0..<C { a[c] += w0 * r0[c] + w1 * r1[c] + w2 * r2[c] + w3 * r3[c] }
                        }
                        t += 4
                    }
                }
                // [cells, C] accumulators → out[r] [C, cells], divided by the sample count.
                transposeBlocked(acc, lds: C, outData + r * C * cells, ldd: cells, rows: cells, cols: C, .divide(geo.count))
            }
        }
    }
}

/// Gradient w.r.t. the features only, accumulated (+=) into dFeatures [1, C, H, W].
///
/// dOut is [R, C, P, P]; every sample tap adds `w · dOut / count` to its map position (the forward
/// pass read in reverse). Allocates a channels-last gradient buffer; see the `workspace:` form.
/// - Throws: `TensorError` for mismatched shapes or a non-positive size/scale.
public func roiAlignBackward(dFeatures: Tensor, dOut: Tensor, boxes: [Box], outputSize: Int, spatialScale: Float, samplingRatio: Int) throws {
    try roiAlignBackward(dFeatures: dFeatures, dOut: dOut, boxes: boxes, outputSize: outputSize,
                         spatialScale: spatialScale, samplingRatio: samplingRatio, workspace: Workspace())
}

/// `roiAlignBackward` with scratch from `workspace`: dFeatures [1, C, H, W] += ∂out/∂features ᵀ · dOut [R, C, P, P].
///
/// Uses workspace slots 8 (channels-last gradient, H·W·C floats) and 9 (dOut of one box transposed
/// to [P², C], P²·C floats); their contents are clobbered. Parallel over channel slices (multiples
/// of 16 floats, so threads never share a cache line).
/// - Throws: `TensorError` for mismatched shapes or a non-positive size/scale.
public func roiAlignBackward(dFeatures: Tensor, dOut: Tensor, boxes: [Box], outputSize: Int, spatialScale: Float,
                             samplingRatio: Int, workspace: Workspace) throws {
    let (C, H, W) = try roiAlignShapes("roi_align backward", features: dFeatures, grad: dOut, boxes: boxes.count,
                                       outputSize: outputSize, spatialScale: spatialScale)
    let R = boxes.count
    if R == 0 || C == 0 { return }
    let P = outputSize, cells = P * P, hw = H * W
    let dT = workspace.buffer(RoIAlignSlot.channelsLast, count: hw * C)
    dT.update(repeating: 0, count: hw * C)
    // gT[cell · C + c] holds dOut[r, c, cell] / count for the current box; slices never overlap.
    let gT = workspace.buffer(RoIAlignSlot.perThread, count: cells * C)
    let blocks = (C + 15) / 16
    let slices = max(1, min(Engine.threads, blocks))
    let dOutData = dOut.data, dF = dFeatures.data
    boxes.withUnsafeBufferPointer { bp in
        parallelChunks(blocks, chunks: slices) { _, blockRange in
            let c0 = blockRange.lowerBound * 16, c1 = min(blockRange.upperBound * 16, C)
            if c0 >= c1 { return }
            let n = c1 - c0
            for r in 0..<R {
                let geo = RoIGeometry(bp[r], pooled: P, scale: spatialScale, samplingRatio: samplingRatio)
                let g0 = gT + c0
                transposeBlocked(dOutData + r * C * cells + c0 * cells, lds: cells, g0, ldd: C, rows: n, cols: cells, .divide(geo.count))
                geo.forEachCell(pooled: P, height: H, width: W, padTo4: false) { cell, k, ws, ps in
                    let g = g0 + cell * C
                    for t in 0..<k {
                        let w = ws[t], d = dT + ps[t] * C + c0
                        for c in 0..<n { d[c] += w * g[c] }
                    }
                }
            }
            // Channels-last gradient → dFeatures (NCHW), for this thread's channels.
            transposeBlocked(dT + c0, lds: C, dF + c0 * hw, ldd: hw, rows: hw, cols: n, .add)
        }
    }
}

/// Mask R-CNN mask target (§5.2.2): the binary gt mask (H×W, row-major, 0/1) resampled onto `box` as roi_align(output 28×28, spatial_scale 1, sampling_ratio adaptive = ceil(roi_size/28) per axis, aligned false) → 28·28 soft values.
///
/// Returns `size · size` values in [0, 1], row-major (torchvision `project_masks_on_boxes`).
public func maskTarget(mask: UnsafePointer<UInt8>, height: Int, width: Int, box: Box, size: Int) -> [Float] {
    precondition(size > 0 && height > 0 && width > 0, "maskTarget: size \(size), mask \(height)×\(width)")
    let P = size
    let ay = RoIAxis(box.y1, box.y2, scale: 1, pooled: P, samplingRatio: 0)
    let ax = RoIAxis(box.x1, box.x2, scale: 1, pooled: P, samplingRatio: 0)
    let gy = ay.grid, gx = ax.grid
    let count = Float(max(gy * gx, 1))
    var out = [Float](repeating: 0, count: P * P)
    var ty = [AxisTap](repeating: AxisTap(lo: -1, hi: -1, wLo: 0, wHi: 0), count: P * gy)
    var tx = [AxisTap](repeating: AxisTap(lo: -1, hi: -1, wLo: 0, wHi: 0), count: P * gx)
    ty.withUnsafeMutableBufferPointer { ay.taps(pooled: P, limit: height, into: $0.baseAddress!) }
    tx.withUnsafeMutableBufferPointer { ax.taps(pooled: P, limit: width, into: $0.baseAddress!) }
    for ph in 0..<P {
        for pw in 0..<P {
            var v: Float = 0
            for iy in 0..<gy {
                let sy = ty[ph * gy + iy]
                if sy.lo < 0 { continue }
                let rowLo = mask + Int(sy.lo) * width, rowHi = mask + Int(sy.hi) * width
                for ix in 0..<gx {
                    let sx = tx[pw * gx + ix]
                    if sx.lo < 0 { continue }
                    let xl = Int(sx.lo), xh = Int(sx.hi)
                    v += sy.wLo * sx.wLo * Float(rowLo[xl]) + sy.wLo * sx.wHi * Float(rowLo[xh])
                        + sy.wHi * sx.wLo * Float(rowHi[xl]) + sy.wHi * sx.wHi * Float(rowHi[xh])
                }
            }
            out[ph * P + pw] = v / count
        }
    }
    return out
}
