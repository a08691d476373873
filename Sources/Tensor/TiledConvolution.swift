import CKernels

// Convolutions whose kernel equals their stride (k×k, stride k, no padding, no dilation) on tensors
// kept in their patch layout: such a convolution's patch matrix is a rearrangement of its input, and
// the transposed convolution's product is that rearrangement of its output, so a chain of them (the
// affinity layer's sieve: conv_down → BN → ReLU → conv_up, nine times, then conv_d1) runs as plain
// products with no im2col, gather or scatter in between. Each element is the same product, summed in
// the same order, as `conv2dForward` / `convTranspose2dForward` and their backward passes give it.

/// The patch layout: [N, C, H, W] → [C·k·k, N, H/k, W/k], element (c·k·k + ky·k + kx, n, y, x) =
/// x[n, c, y·k + ky, x·k + kx]: the patch matrix of a k×k, stride-k convolution of all N images side
/// by side (and the product a transposed one writes before placing it).
/// - Throws: `TensorError` unless x is [N, C, H, W] with H and W multiples of k > 0.
public func tilePatches(_ x: Tensor, kernel k: Int) throws -> Tensor {
    let op = "tile_patches"
    try x.expectRank(4, op, "input")
    let n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
    guard k > 0, h % k == 0, w % k == 0 else {
        throw TensorError.invalidArgument(op: op, detail: "input \(shapeString(x.shape)) does not tile by \(k)×\(k)")
    }
    let oh = h / k, ow = w / k, plane = oh * ow, width = n * plane
    let out = Tensor(uninitializedShape: [c * k * k, n, oh, ow])
    let src = x.data, dst = out.data
    parallelFor(n * c, minChunk: 8) { idx in
        let b = idx / c, ch = idx % c
        let xs = src + (b * c + ch) * h * w
        for ky in 0..<k {
            for kx in 0..<k {
                let row = dst + ((ch * k + ky) * k + kx) * width + b * plane
                for y in 0..<oh {
                    let s = xs + (y * k + ky) * w + kx, d = row + y * ow
                    for x in 0..<ow { d[x] = s[x * k] }
                }
            }
        }
    }
    return out
}

/// The inverse of `tilePatches`: [C·k·k, N, h, w] → [N, C, h·k, w·k].
/// - Throws: `TensorError` unless p is rank 4 with a first dimension divisible by k·k.
public func untilePatches(_ p: Tensor, kernel k: Int) throws -> Tensor {
    let op = "untile_patches"
    try p.expectRank(4, op, "patches")
    guard k > 0, p.shape[0] % (k * k) == 0 else {
        throw TensorError.invalidArgument(op: op, detail: "patches \(shapeString(p.shape)) have no whole \(k)×\(k) tiles")
    }
    let c = p.shape[0] / (k * k), n = p.shape[1], oh = p.shape[2], ow = p.shape[3], h = oh * k, w = ow * k
    let plane = oh * ow, width = n * plane
    let out = Tensor(uninitializedShape: [n, c, h, w])
    let src = p.data, dst = out.data
    parallelFor(n * c, minChunk: 8) { idx in
        let b = idx / c, ch = idx % c
        let xs = dst + (b * c + ch) * h * w
        for ky in 0..<k {
            for kx in 0..<k {
                let row = src + ((ch * k + ky) * k + kx) * width + b * plane
                for y in 0..<oh {
                    let d = xs + (y * k + ky) * w + kx, s = row + y * ow
                    for x in 0..<ow { d[x * k] = s[x] }
                }
            }
        }
    }
    return out
}

/// [A, B, H, W] → [B, A, H, W]: images first to channels first and back.
public func swapLeadingAxes(_ x: Tensor) throws -> Tensor {
    try x.expectRank(4, "swap_leading_axes", "input")
    let a = x.shape[0], b = x.shape[1], plane = x.shape[2] * x.shape[3]
    let out = Tensor(uninitializedShape: [b, a, x.shape[2], x.shape[3]])
    gatherImages(x.data, count: a, channels: b, plane: plane, into: out.data)
    return out
}

/// Checks a tiled convolution's weight [cout, cin, k, k] against patches [cin·k·k, N, h, w];
/// returns (cout, k·k·cin, N·h·w).
private func checkTiled(_ op: String, patches: Tensor, weight: Tensor, bias: Tensor?) throws -> (Int, Int, Int) {
    try patches.expectRank(4, op, "patches")
    try weight.expectRank(4, op, "weight")
    let rows = weight.shape[1] * weight.shape[2] * weight.shape[3]
    guard weight.shape[2] == weight.shape[3], patches.shape[0] == rows else {
        throw TensorError.shapeMismatch(op: op, detail: "patches \(shapeString(patches.shape)) for weight \(shapeString(weight.shape))")
    }
    if let bias { try bias.expectShape([weight.shape[0]], op, "bias") }
    return (weight.shape[0], rows, patches.shape[1] * patches.shape[2] * patches.shape[3])
}

/// The k×k, stride-k convolution of the images whose patches `tilePatches` laid out:
/// out [cout, N, h, w] (channels first) = weight [cout, cin·k·k] · patches + bias, then max(·, 0)
/// with `relu` (0 for NaN, as `reluForward`).
/// - Throws: `TensorError` for shapes that do not fit.
public func tiledConv2dForward(patches: Tensor, weight: Tensor, bias: Tensor?, relu: Bool = false) throws -> Tensor {
    let (cout, rows, width) = try checkTiled("tiled_conv2d", patches: patches, weight: weight, bias: bias)
    let out = Tensor(uninitializedShape: [cout, patches.shape[1], patches.shape[2], patches.shape[3]])
    sgemm(m: cout, n: width, k: rows, a: weight.data, lda: rows, b: patches.data, ldb: width, c: out.data, ldc: width)
    addRowBias(out.data, rows: cout, width: width, rowsPerBias: 1, bias: bias, relu: relu)
    return out
}

/// The gradients of `tiledConv2dForward` (before any ReLU): dWeight and dBias accumulated (`+=`)
/// when given; returns d(patches) [cin·k·k, N, h, w] when `patchesGradient`.
/// - Throws: `TensorError` for shapes that do not fit.
public func tiledConv2dBackward(dOut: Tensor, patches: Tensor, weight: Tensor, dWeight: Tensor?, dBias: Tensor?,
                                patchesGradient: Bool = true) throws -> Tensor? {
    let op = "tiled_conv2d backward"
    let (cout, rows, width) = try checkTiled(op, patches: patches, weight: weight, bias: dBias)
    try dOut.expectShape([cout, patches.shape[1], patches.shape[2], patches.shape[3]], op, "dOut")
    if let dWeight { try dWeight.expectShape(weight.shape, op, "dWeight") }
    if let dWeight {
        sgemm(transB: true, m: cout, n: rows, k: width, a: dOut.data, lda: width, b: patches.data, ldb: width, beta: 1,
              c: dWeight.data, ldc: rows)
    }
    if let dBias {
        let n = patches.shape[1], plane = patches.shape[2] * patches.shape[3]
        for b in 0..<n {  // image by image, each plane in order (conv2dBackward's sums)
            for co in 0..<cout {
                let o = dOut.data + (co * n + b) * plane
                var s: Float = 0
                for i in 0..<plane { s += o[i] }
                dBias.data[co] += s
            }
        }
    }
    guard patchesGradient else { return nil }
    let dp = Tensor(uninitializedShape: patches.shape)
    sgemm(transA: true, m: rows, n: width, k: cout, a: weight.data, lda: rows, b: dOut.data, ldb: width, c: dp.data, ldc: width)
    return dp
}

/// The k×k, stride-k transposed convolution of channels-first images x [cin, N, h, w] with weight
/// [cin, cout, k, k] (PyTorch's layout): its output in the patch layout [cout·k·k, N, h, w]
/// (`untilePatches` gives [N, cout, h·k, w·k]), bias added, then max(·, 0) with `relu`.
/// - Throws: `TensorError` for shapes that do not fit.
public func tiledConvTranspose2dForward(_ x: Tensor, weight: Tensor, bias: Tensor?, relu: Bool = false) throws -> Tensor {
    let op = "tiled_conv_transpose2d"
    let (cout, kk, width) = try checkTiledTranspose(op, x: x, weight: weight, bias: bias)
    let out = Tensor(uninitializedShape: [cout * kk, x.shape[1], x.shape[2], x.shape[3]])
    sgemm(transA: true, m: cout * kk, n: width, k: x.shape[0], a: weight.data, lda: cout * kk, b: x.data, ldb: width,
          c: out.data, ldc: width)
    addRowBias(out.data, rows: cout * kk, width: width, rowsPerBias: kk, bias: bias, relu: relu)
    return out
}

/// The gradients of `tiledConvTranspose2dForward` (before any ReLU) from dOut in the patch layout:
/// dWeight and dBias accumulated when given; returns dx [cin, N, h, w] when `inputGradient`.
/// - Throws: `TensorError` for shapes that do not fit.
public func tiledConvTranspose2dBackward(dOut: Tensor, input x: Tensor, weight: Tensor, dWeight: Tensor?, dBias: Tensor?,
                                         inputGradient: Bool = true) throws -> Tensor? {
    let op = "tiled_conv_transpose2d backward"
    let (cout, kk, width) = try checkTiledTranspose(op, x: x, weight: weight, bias: dBias)
    try dOut.expectShape([cout * kk, x.shape[1], x.shape[2], x.shape[3]], op, "dOut")
    if let dWeight { try dWeight.expectShape(weight.shape, op, "dWeight") }
    let cin = x.shape[0]
    if let dWeight {
        sgemm(transB: true, m: cin, n: cout * kk, k: width, a: x.data, lda: width, b: dOut.data, ldb: width, beta: 1,
              c: dWeight.data, ldc: cout * kk)
    }
    if let dBias {
        // Image by image, each output plane in raster order (convTranspose2dBackward's sums).
        let n = x.shape[1], h = x.shape[2], w = x.shape[3], k = weight.shape[2], plane = h * w
        // Each sum is one chain of dependent adds: four channels' chains side by side (SIMD lanes),
        // the channels split over the threads.
        let g = UnsafePointer(dOut.data), db = dBias.data
        parallelFor((cout + 3) / 4, minChunk: 4) { q in
            let c0 = 4 * q, lanes = min(4, cout - c0)
            if lanes < 4 {  // the last channels, one at a time
                for co in c0..<cout {
                    for b in 0..<n {
                        var s: Float = 0
                        for oy in 0..<h {
                            for ky in 0..<k {
                                let row = g + (co * k + ky) * k * width + b * plane + oy * w
                                for ox in 0..<w { for kx in 0..<k { s += row[kx * width + ox] } }
                            }
                        }
                        db[co] += s
                    }
                }
                return
            }
            let laneStride = k * k * width  // from one channel's rows to the next's
            for b in 0..<n {
                var s = SIMD4<Float>()
                for oy in 0..<h {
                    for ky in 0..<k {  // output row oy·k + ky, left to right
                        let row = g + (c0 * k + ky) * k * width + b * plane + oy * w
                        for ox in 0..<w {
                            for kx in 0..<k {
                                let p = row + kx * width + ox
                                s += SIMD4(p[0], p[laneStride], p[2 * laneStride], p[3 * laneStride])
                            }
                        }
                    }
                }
                for lane in 0..<4 { db[c0 + lane] += s[lane] }
            }
        }
    }
    guard inputGradient else { return nil }
    let dx = Tensor(uninitializedShape: x.shape)
    sgemm(m: cin, n: width, k: cout * kk, a: weight.data, lda: cout * kk, b: dOut.data, ldb: width, c: dx.data, ldc: width)
    return dx
}

/// Checks a tiled transposed convolution's weight [cin, cout, k, k] against x [cin, N, h, w];
/// returns (cout, k·k, N·h·w).
private func checkTiledTranspose(_ op: String, x: Tensor, weight: Tensor, bias: Tensor?) throws -> (Int, Int, Int) {
    try x.expectRank(4, op, "input")
    try weight.expectRank(4, op, "weight")
    guard weight.shape[2] == weight.shape[3], weight.shape[0] == x.shape[0] else {
        throw TensorError.shapeMismatch(op: op, detail: "input \(shapeString(x.shape)) for weight \(shapeString(weight.shape))")
    }
    if let bias { try bias.expectShape([weight.shape[1]], op, "bias") }
    return (weight.shape[1], weight.shape[2] * weight.shape[3], x.shape[1] * x.shape[2] * x.shape[3])
}

/// row r += bias[r / rowsPerBias] (when given), then max(·, 0) with `relu` (0 for NaN).
private func addRowBias(_ y: UnsafeMutablePointer<Float>, rows: Int, width: Int, rowsPerBias: Int, bias: Tensor?, relu: Bool) {
    if bias == nil && !relu { return }
    parallelFor(rows, minChunk: 8) { r in
        let p = y + r * width
        if let bias {
            let b = bias.data[r / rowsPerBias]
            if relu { for j in 0..<width { let v = p[j] + b; p[j] = v > 0 ? v : 0 } } else { for j in 0..<width { p[j] += b } }
        } else {
            for j in 0..<width { let v = p[j]; p[j] = v > 0 ? v : 0 }
        }
    }
}

/// A mask predictor's logits straight from its input: out[i, q·width + j] = Σ_c logits[i, c] ·
/// max(0, (W·x)[c·k·k + q, j] + bias[c]) for every class i < `classes`, tap q < k·k and column j of
/// the channels-first images x [cin, N, h, w] (width = N·h·w), W the k×k, stride-k transposed
/// convolution's weight [cin, cout, k, k] — what `tiledConvTranspose2dForward` followed by
/// `reluBiasedProduct` gives, bit for bit, without the [cout·k·k, width] product in memory: each
/// thread takes its share of the columns a block at a time, the transposed convolution's product of
/// the block (W's packed panels made once, not for every block) into a buffer of its own that stays
/// in the caches, then the logits from that buffer.
/// - Precondition: `Engine.useKGEMM`; logits [classes, cout]; out [classes, k·k·width]; bias [cout] or nil.
public func convTransposeReluLogits(_ x: Tensor, weight: Tensor, bias: UnsafePointer<Float>?, logits: UnsafePointer<Float>,
                                    classes: Int, out: UnsafeMutablePointer<Float>) throws {
    let op = "conv_transpose_relu_logits"
    let (cout, kk, width) = try checkTiledTranspose(op, x: x, weight: weight, bias: nil)
    precondition(Engine.useKGEMM && classes >= 1)
    let cin = x.shape[0], rows = cout * kk
    guard rows <= Int(Int32.max), width <= Int(Int32.max), cin <= Int(Int32.max) else {
        throw TensorError.invalidArgument(op: op, detail: "\(rows) × \(width) × \(cin) is too large for one product")
    }
    let path = Engine.kgemmPath
    // A = Wᵀ [cout·k·k, cin], packed whole once, straight from W (A stored transposed).
    let packed = Tensor(uninitializedShape: [kgemmPackedAFloats(m: rows, k: cin, path: path)])
    kgemmPackA(m: rows, k: cin, a: weight.data, lda: rows, transposed: true, into: packed.data, path: path)
    // Column blocks of 768 (a multiple of both B panels, 16 and 32 columns, and of the logits'
    // 24-column steps), split over the threads in units of 96.
    let unit = 96, block = 768, units = (width + unit - 1) / unit
    let chunks = max(1, min(Engine.threads, units))
    let xs = UnsafePointer(x.data), ap = UnsafePointer(packed.data)
    parallelFor(chunks) { t in
        let n0 = min(width, units * t / chunks * unit), n1 = min(width, units * (t + 1) / chunks * unit)
        guard n0 < n1 else { return }
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: rows * min(block, n1 - n0))
        defer { buffer.deallocate() }
        var j0 = n0
        while j0 < n1 {
            let jb = min(block, n1 - j0)
            kgemmPackedA(m: rows, n: jb, k: cin, ap: ap, b: xs + j0, ldb: width, c: buffer, ldc: jb, path: path)
            // Tap q's rows of the block are rows c·k·k + q: a [cout, jb] matrix of row stride k·k·jb.
            for q in 0..<kk {
                for i0 in stride(from: 0, to: classes, by: Int(KGEMM_SMALL_M)) {
                    let m = min(Int(KGEMM_SMALL_M), classes - i0)
                    MultiplyAdds.add(m, jb, cout)
                    kgemm_avx2_relu_bias_rows(Int32(m), Int32(cout), 0, Int32(jb), logits + i0 * cout, Int32(cout), buffer + q * jb, Int32(kk * jb),
                                              bias, out + i0 * kk * width + q * width + j0, Int32(kk * width))
                }
            }
            j0 += jb
        }
    }
}

/// out[i, j] = Σ_r weight[i, r] · max(0, x[r, j] + bias[r]) for i < m ≤ 4 (0 for NaN): a few rows
/// times a biased, ReLU'd matrix read as it goes (`kgemm_avx2_relu_bias_rows`), never written; the
/// same bits as `sgemm` (kgemm's small-row product) over the biased, ReLU'd matrix. A mask
/// predictor's logits over `tiledConvTranspose2dForward`'s product before its bias and ReLU.
/// - Precondition: `Engine.kgemmAvailable`; 1 ≤ m ≤ 4; x is rows × width, out m × width (row
///   strides width), weight m × rows.
public func reluBiasedProduct(m: Int, rows: Int, width: Int, weight: UnsafePointer<Float>, x: UnsafePointer<Float>,
                              bias: UnsafePointer<Float>?, out: UnsafeMutablePointer<Float>) {
    precondition(Engine.kgemmAvailable && m >= 1 && m <= Int(KGEMM_SMALL_M))
    MultiplyAdds.add(m, width, rows)
    let blocks = (width + 23) / 24, chunks = max(1, min(Engine.threads, blocks / 8))
    parallelFor(chunks) { i in
        let n0 = min(width, blocks * i / chunks * 24), n1 = min(width, blocks * (i + 1) / chunks * 24)
        if n0 < n1 {
            kgemm_avx2_relu_bias_rows(Int32(m), Int32(rows), Int32(n0), Int32(n1), weight, Int32(rows), x, Int32(width), bias, out, Int32(width))
        }
    }
}
