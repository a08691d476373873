import CKernels

/// The geometry of a 2-D convolution (and of its transpose): channels, kernel, stride, padding,
/// dilation. For a transposed convolution `inChannels` is the channel count of its input (the
/// small image) and `outChannels` that of its output (the large image).
public struct ConvGeometry: Hashable, Sendable, CustomStringConvertible {
    public var inChannels: Int
    public var outChannels: Int
    public var kernelH: Int, kernelW: Int
    public var strideH: Int, strideW: Int
    public var padH: Int, padW: Int
    public var dilationH: Int, dilationW: Int

    public init(inChannels: Int, outChannels: Int, kernel: (Int, Int), stride: (Int, Int) = (1, 1),
                padding: (Int, Int) = (0, 0), dilation: (Int, Int) = (1, 1)) {
        self.inChannels = inChannels; self.outChannels = outChannels
        kernelH = kernel.0; kernelW = kernel.1
        strideH = stride.0; strideW = stride.1
        padH = padding.0; padW = padding.1
        dilationH = dilation.0; dilationW = dilation.1
    }

    /// Square kernel, stride, padding and dilation.
    public init(_ inChannels: Int, _ outChannels: Int, kernel: Int, stride: Int = 1, padding: Int = 0, dilation: Int = 1) {
        self.init(inChannels: inChannels, outChannels: outChannels, kernel: (kernel, kernel),
                  stride: (stride, stride), padding: (padding, padding), dilation: (dilation, dilation))
    }

    /// Rows of the im2col matrix: inChannels·kH·kW.
    public var patchSize: Int { inChannels * kernelH * kernelW }

    /// The output size of the convolution on an h×w input (may be ≤ 0 for a too-small input).
    public func outputSize(h: Int, w: Int) -> (h: Int, w: Int) {
        ((h + 2 * padH - dilationH * (kernelH - 1) - 1) / strideH + 1,
         (w + 2 * padW - dilationW * (kernelW - 1) - 1) / strideW + 1)
    }

    /// The output size of the transposed convolution on an h×w input.
    public func transposedOutputSize(h: Int, w: Int, outputPadding: (Int, Int) = (0, 0)) -> (h: Int, w: Int) {
        ((h - 1) * strideH - 2 * padH + dilationH * (kernelH - 1) + outputPadding.0 + 1,
         (w - 1) * strideW - 2 * padW + dilationW * (kernelW - 1) + outputPadding.1 + 1)
    }

    var isPointwise: Bool {
        kernelH == 1 && kernelW == 1 && strideH == 1 && strideW == 1 && padH == 0 && padW == 0
    }

    func validate(_ op: String) throws {
        guard inChannels > 0, outChannels > 0, kernelH > 0, kernelW > 0, strideH > 0, strideW > 0,
              padH >= 0, padW >= 0, dilationH > 0, dilationW > 0 else {
            throw TensorError.invalidArgument(op: op, detail: "bad geometry \(self)")
        }
    }

    public var description: String {
        "\(inChannels)→\(outChannels) k\(kernelH)×\(kernelW) s\(strideH)×\(strideW) p\(padH)×\(padW) d\(dilationH)×\(dilationW)"
    }
}

// MARK: - im2col / col2im

/// Unfolds a [channels, h, w] image into the [channels·kH·kW, oh·ow] patch matrix of `g`'s
/// convolution (zeros where a tap falls in the padding). Row r of the matrix starts at
/// `col + r·ld` (`ld` ≥ oh·ow; by default oh·ow), so that several images can sit side by side.
func im2col(_ x: UnsafePointer<Float>, channels: Int, h: Int, w: Int, g: ConvGeometry,
            oh: Int, ow: Int, col: UnsafeMutablePointer<Float>, ld: Int? = nil) {
    let kh = g.kernelH, kw = g.kernelW, sh = g.strideH, sw = g.strideW
    let ph = g.padH, pw = g.padW, dh = g.dilationH, dw = g.dilationW
    let plane = ld ?? oh * ow
    parallelFor(channels, minChunk: 4) { c in
        let xc = x + c * h * w
        for ky in 0..<kh {
            for kx in 0..<kw {
                let dst = col + ((c * kh + ky) * kw + kx) * plane
                let x0 = kx * dw - pw
                // Valid output columns: 0 ≤ ox·sw + x0 < w.
                let oxLo = x0 >= 0 ? 0 : min(ow, (-x0 + sw - 1) / sw)
                let oxHi = max(oxLo, min(ow, w - x0 > 0 ? (w - x0 + sw - 1) / sw : 0))
                for oy in 0..<oh {
                    let iy = oy * sh - ph + ky * dh
                    let d = dst + oy * ow
                    if iy < 0 || iy >= h {
                        d.update(repeating: 0, count: ow)
                        continue
                    }
                    let src = xc + iy * w + x0
                    if oxLo > 0 { d.update(repeating: 0, count: oxLo) }
                    if sw == 1 {
                        (d + oxLo).update(from: src + oxLo, count: oxHi - oxLo)
                    } else {
                        var ox = oxLo
                        while ox < oxHi { d[ox] = src[ox * sw]; ox += 1 }
                    }
                    if oxHi < ow { (d + oxHi).update(repeating: 0, count: ow - oxHi) }
                }
            }
        }
    }
}

/// Folds a [channels·kH·kW, oh·ow] patch matrix (row stride `ld`, by default oh·ow) back onto a
/// [channels, h, w] image, adding (`+=`) every tap to the pixel it came from (the adjoint of `im2col`).
func col2im(_ col: UnsafePointer<Float>, channels: Int, h: Int, w: Int, g: ConvGeometry,
            oh: Int, ow: Int, x: UnsafeMutablePointer<Float>, ld: Int? = nil) {
    let kh = g.kernelH, kw = g.kernelW, sh = g.strideH, sw = g.strideW
    let ph = g.padH, pw = g.padW, dh = g.dilationH, dw = g.dilationW
    let plane = ld ?? oh * ow
    parallelFor(channels, minChunk: 4) { c in
        let xc = x + c * h * w
        for ky in 0..<kh {
            for kx in 0..<kw {
                let src = col + ((c * kh + ky) * kw + kx) * plane
                let x0 = kx * dw - pw
                let oxLo = x0 >= 0 ? 0 : min(ow, (-x0 + sw - 1) / sw)
                let oxHi = max(oxLo, min(ow, w - x0 > 0 ? (w - x0 + sw - 1) / sw : 0))
                for oy in 0..<oh {
                    let iy = oy * sh - ph + ky * dh
                    if iy < 0 || iy >= h { continue }
                    let s = src + oy * ow
                    let d = xc + iy * w + x0
                    if sw == 1 {
                        var ox = oxLo
                        while ox < oxHi { d[ox] += s[ox]; ox += 1 }
                    } else {
                        var ox = oxLo
                        while ox < oxHi { d[ox * sw] += s[ox]; ox += 1 }
                    }
                }
            }
        }
    }
}

@inline(__always)
func addBias(_ out: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>, channels: Int, plane: Int) {
    for c in 0..<channels {
        let b = bias[c], o = out + c * plane
        for i in 0..<plane { o[i] += b }
    }
}

@inline(__always)
func accumulateBiasGradient(_ dBias: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>, channels: Int, plane: Int) {
    for c in 0..<channels {
        let o = dOut + c * plane
        var s: Float = 0
        for i in 0..<plane { s += o[i] }
        dBias[c] += s
    }
}

// MARK: - Several small images per GEMM

/// How many images share one GEMM: one image's product is too narrow (`plane` columns) to keep
/// the GEMM busy, and its weights would be packed again for every image, so small images (RoIs,
/// the affinity layer's maps) are laid side by side as columns, about 2,048 columns per GEMM,
/// with the side-by-side patch matrix (`rows` × columns) kept under 4M floats. 1 = image by image.
/// Each output element is summed in the same order either way (the GEMM's k blocks do not depend
/// on the columns), so a forward result does not depend on the batching.
func imagesPerGEMM(images n: Int, plane: Int, rows: Int) -> Int {
    if n <= 1 || plane >= 2048 { return 1 }
    let want = (2048 + plane - 1) / plane
    let cap = (1 << 22) / max(rows * plane, 1)
    return max(1, min(n, want, cap))
}

/// Calls `body(first, count)` for consecutive runs of at most `per` of `n` images.
@inline(__always)
func forEachImageRun(_ n: Int, per: Int, _ body: (Int, Int) throws -> Void) rethrows {
    var first = 0
    while first < n {
        let count = min(per, n - first)
        try body(first, count)
        first += count
    }
}

/// dst[c, i·plane + j] = src[i, c, j] for `count` images of [channels, plane] (dst row stride count·plane).
func gatherImages(_ src: UnsafePointer<Float>, count: Int, channels: Int, plane: Int, into dst: UnsafeMutablePointer<Float>) {
    let width = count * plane
    parallelFor(count * channels, minChunk: 16) { idx in
        let i = idx / channels, c = idx % channels
        (dst + c * width + i * plane).update(from: src + (i * channels + c) * plane, count: plane)
    }
}

/// dst[i, c, j] (= or +=) src[c, i·plane + j] + bias[c]: the inverse of `gatherImages`.
func scatterImages(_ src: UnsafePointer<Float>, count: Int, channels: Int, plane: Int, into dst: UnsafeMutablePointer<Float>,
                   bias: UnsafePointer<Float>?, accumulate: Bool) {
    let width = count * plane
    parallelFor(count * channels, minChunk: 16) { idx in
        let i = idx / channels, c = idx % channels
        let s = src + c * width + i * plane, d = dst + (i * channels + c) * plane
        let b = bias?[c] ?? 0
        if accumulate {
            for j in 0..<plane { d[j] += s[j] + b }
        } else if bias != nil {
            for j in 0..<plane { d[j] = s[j] + b }
        } else {
            d.update(from: s, count: plane)
        }
    }
}

// MARK: - conv2d

/// Checks the tensors of a convolution and returns (n, h, w, oh, ow).
func checkConv(_ op: String, input: Tensor, weight: Tensor, bias: Tensor?, out: Tensor?, g: ConvGeometry) throws -> (Int, Int, Int, Int, Int) {
    try g.validate(op)
    try input.expectRank(4, op, "input")
    guard input.shape[1] == g.inChannels else {
        throw TensorError.shapeMismatch(op: op, detail: "input is \(shapeString(input.shape)), geometry expects \(g.inChannels) channels")
    }
    try weight.expectShape([g.outChannels, g.inChannels, g.kernelH, g.kernelW], op, "weight")
    if let bias { try bias.expectShape([g.outChannels], op, "bias") }
    let n = input.shape[0], h = input.shape[2], w = input.shape[3]
    let (oh, ow) = g.outputSize(h: h, w: w)
    guard oh > 0, ow > 0 else {
        throw TensorError.invalidArgument(op: op, detail: "input \(shapeString(input.shape)) is too small for \(g)")
    }
    if let out { try out.expectShape([n, g.outChannels, oh, ow], op, "out") }
    return (n, h, w, oh, ow)
}

/// out[n, co, y, x] = Σ input[n, ci, y·s−p+ky·d, x·s−p+kx·d] · weight[co, ci, ky, kx] + bias[co]
/// - Precondition: input is [n, g.inChannels, h, w]; weight [g.outChannels, g.inChannels, kH, kW];
///   out is [n, g.outChannels, oh, ow] with (oh, ow) = `g.outputSize(h:w:)`.
/// - Throws: `TensorError` naming the shapes when they do not fit.
/// `relu`: max(0, ·) of the result (fused into the Winograd output transform where that runs).
/// `transformed`: the weights as `transformForWinograd` transformed them for this convolution, used
/// instead of transforming them again when they fit (same weight tensor, geometry and tile).
public func conv2dForward(out: Tensor, input: Tensor, weight: Tensor, bias: Tensor?, geometry g: ConvGeometry, workspace: Workspace,
                          relu: Bool = false, transformed: WinogradWeights? = nil) throws {
    try conv2dForward(out: out, input: input, weight: weight, bias: bias, geometry: g, workspace: workspace, winograd: nil, relu: relu,
                      transformed: transformed)
}

/// A 3×3 convolution's weights transformed for Winograd on planes of one size, for a caller that
/// runs the convolution with the same weights over several batches (the mask head over groups of
/// detections): transformed once instead of once per batch. They live where the convolution puts
/// its own (its workspace's slot 4, so they cost no memory of their own) and are taken only while
/// nothing else has been given that slot since; valid while the weights do not change.
public final class WinogradWeights: @unchecked Sendable {
    let u: UnsafeMutablePointer<Float>
    let tile: Int
    let weight: Tensor
    let geometry: ConvGeometry
    let workspace: Workspace
    let handout: Int
    /// Set when `u` holds the (tile + 2)² matrices of U packed for kgemm's GEMM (`kgemm_pack_a` of
    /// `Engine.kgemmPath`, `packedStride` floats apart) instead of U itself: packed once for every
    /// batch rather than again by each product.
    let packedStride: Int?

    init(u: UnsafeMutablePointer<Float>, tile: Int, weight: Tensor, geometry: ConvGeometry, workspace: Workspace, packedStride: Int? = nil) {
        self.u = u; self.tile = tile; self.weight = weight; self.geometry = geometry; self.workspace = workspace
        self.packedStride = packedStride
        handout = workspace.handoutCount(4)
    }

    /// Whether these are still the transformed weights of `weight` for `g` with `tile` in `workspace`.
    func fit(_ weight: Tensor, _ g: ConvGeometry, _ tile: Int, _ workspace: Workspace) -> Bool {
        self.weight === weight && geometry == g && self.tile == tile && self.workspace === workspace
            && workspace.handoutCount(4) == handout
    }
}

/// The transformed weights of `g`'s convolution by `weight` on n planes of h × w, in `workspace`
/// (for convolutions with that workspace), or nil when that convolution does not run by Winograd.
public func transformForWinograd(weight: Tensor, geometry g: ConvGeometry, images n: Int, h: Int, w: Int,
                                 workspace: Workspace) -> WinogradWeights? {
    guard g.usesWinograd(images: n, h: h, w: w), weight.shape == [g.outChannels, g.inChannels, 3, 3] else { return nil }
    let tile = winogradTile(nil, h: h, w: w)
    let count = winogradWeightCount(tile: tile, outChannels: g.outChannels, inChannels: g.inChannels)
    let K = g.outChannels, C = g.inChannels
    if tile == 4 && Engine.useKGEMM && K > Int(KGEMM_SMALL_M) && K <= Int(Int32.max) && C <= Int(Int32.max) {
        // U in the transformed input's scratch slot (5, written again by the convolution), packed
        // into slot 4: the same floats as U, a few more for the panels' padding.
        let path = Engine.kgemmPath
        let stride = kgemmPackedAFloats(m: K, k: C, path: path)
        let u = workspace.buffer(5, count: count)
        winogradTransformWeights(weight.data, outChannels: K, inChannels: C, flipped: false, u: u, tile: tile)
        let packed = workspace.buffer(4, count: 36 * stride)
        parallelFor(36) { xi in
            kgemmPackA(m: K, k: C, a: u + xi * K * C, lda: C, into: packed + xi * stride, path: path)
        }
        return WinogradWeights(u: packed, tile: tile, weight: weight, geometry: g, workspace: workspace, packedStride: stride)
    }
    let u = workspace.buffer(4, count: count)
    winogradTransformWeights(weight.data, outChannels: K, inChannels: C, flipped: false, u: u, tile: tile)
    return WinogradWeights(u: u, tile: tile, weight: weight, geometry: g, workspace: workspace)
}

/// `winograd`: nil chooses by `ConvGeometry.usesWinograd`; true forces Winograd (when eligible),
/// false im2col (for tests, which must not change the process-wide settings); `winogradTile` 2 or 4
/// overrides `Engine.winogradTile` (tests).
/// `implicitPatches: false` keeps im2col where kgemm would pack the patches from the image (for tests).
func conv2dForward(out: Tensor, input: Tensor, weight: Tensor, bias: Tensor?, geometry g: ConvGeometry, workspace: Workspace,
                   winograd: Bool?, winogradTile requestedTile: Int? = nil, implicitPatches: Bool = true, relu: Bool = false,
                   transformed: WinogradWeights? = nil) throws {
    let (n, h, w, oh, ow) = try checkConv("conv2d", input: input, weight: weight, bias: bias, out: out, g: g)
    if winograd.map({ $0 && g.isWinogradEligible }) ?? g.usesWinograd(images: n, h: h, w: w) {
        let tile = winogradTile(requestedTile, h: h, w: w)
        let u: UnsafeMutablePointer<Float>
        var packedStride: Int? = nil
        if let transformed, transformed.fit(weight, g, tile, workspace) {
            u = transformed.u
            packedStride = transformed.packedStride
        } else {
            u = workspace.buffer(4, count: winogradWeightCount(tile: tile, outChannels: g.outChannels, inChannels: g.inChannels))
            winogradTransformWeights(weight.data, outChannels: g.outChannels, inChannels: g.inChannels, flipped: false, u: u, tile: tile)
        }
        winogradConvolve(input: input.data, images: n, inChannels: g.inChannels, h: h, w: w, u: u, outChannels: g.outChannels,
                         bias: bias.map { UnsafePointer($0.data) }, out: out.data, accumulate: false, workspace: workspace,
                         tile: tile, relu: relu, packedStride: packedStride)
        return
    }
    defer { if relu { try? reluForward(out: out, input: out) } }
    let k = g.patchSize, plane = oh * ow, cout = g.outChannels
    let per = imagesPerGEMM(images: n, plane: plane, rows: k)
    if per > 1 {
        let col = workspace.buffer(0, count: k * per * plane), y = workspace.buffer(2, count: cout * per * plane)
        forEachImageRun(n, per: per) { first, count in
            let width = count * plane
            parallelFor(count) { i in
                im2col(input.data + (first + i) * g.inChannels * h * w, channels: g.inChannels, h: h, w: w, g: g, oh: oh, ow: ow,
                       col: col + i * plane, ld: width)
            }
            sgemm(m: cout, n: width, k: k, a: weight.data, lda: k, b: col, ldb: width, c: y, ldc: width)
            scatterImages(y, count: count, channels: cout, plane: plane, into: out.data + first * cout * plane,
                          bias: bias.map { UnsafePointer($0.data) }, accumulate: false)
        }
        return
    }
    // A large image by kgemm: its patch matrix is packed straight from the image, never written.
    let implicit = !g.isPointwise && Engine.useKGEMM && implicitPatches && plane >= 1024
        && k <= Int(Int32.max) && cout * plane <= Int(Int32.max)
    let col = g.isPointwise || implicit ? nil : workspace.buffer(0, count: k * plane)
    for b in 0..<n {
        let x = input.data + b * g.inChannels * h * w
        let y = out.data + b * cout * plane
        if implicit {
            kgemmConvolve(image: x, channels: g.inChannels, h: h, w: w, g: g, oh: oh, ow: ow, weight: weight.data, out: y)
            if let bias { addBias(y, bias: bias.data, channels: cout, plane: plane) }
            continue
        }
        var src = UnsafePointer(x)
        if let col {
            im2col(x, channels: g.inChannels, h: h, w: w, g: g, oh: oh, ow: ow, col: col)
            src = UnsafePointer(col)
        }
        sgemm(m: cout, n: plane, k: k, a: weight.data, lda: k, b: src, ldb: plane, c: y, ldc: plane)
        if let bias { addBias(y, bias: bias.data, channels: cout, plane: plane) }
    }
}

/// The gradients of `conv2dForward`, accumulated (`+=`) into whichever of dInput, dWeight, dBias
/// is given. The patch matrix is recomputed from `input`, not stored.
/// - Precondition: dOut has the forward output's shape; the gradients have their tensor's shape.
public func conv2dBackward(dInput: Tensor?, dWeight: Tensor?, dBias: Tensor?, dOut: Tensor, input: Tensor, weight: Tensor,
                           geometry g: ConvGeometry, workspace: Workspace) throws {
    try conv2dBackward(dInput: dInput, dWeight: dWeight, dBias: dBias, dOut: dOut, input: input, weight: weight, geometry: g,
                       workspace: workspace, winograd: nil)
}

/// `winograd` as in `conv2dForward(…, winograd:)`, for the input and the weight gradient;
/// `implicitPatches: false` keeps im2col for the weight gradient where kgemm would pack the patches
/// from the image, `winogradWeights: false` the GEMM weight gradient where Winograd would run (tests).
func conv2dBackward(dInput: Tensor?, dWeight: Tensor?, dBias: Tensor?, dOut: Tensor, input: Tensor, weight: Tensor,
                    geometry g: ConvGeometry, workspace: Workspace, winograd: Bool?, winogradTile requestedTile: Int? = nil,
                    implicitPatches: Bool = true, winogradWeights: Bool = true) throws {
    let (n, h, w, oh, ow) = try checkConv("conv2d backward", input: input, weight: weight, bias: dBias, out: dOut, g: g)
    if let dInput { try dInput.expectShape(input.shape, "conv2d backward", "dInput") }
    if let dWeight { try dWeight.expectShape(weight.shape, "conv2d backward", "dWeight") }
    let k = g.patchSize, plane = oh * ow, cout = g.outChannels, cin = g.inChannels
    let pointwise = g.isPointwise
    // The input gradient of a 3×3 stride-1 convolution is a 3×3 stride-1 convolution of dOut with
    // the kernels turned 180° and the channel axes swapped: Winograd, accumulated into dInput.
    let winogradInput = dInput != nil && (winograd.map { $0 && g.isWinogradEligible } ?? g.usesWinograd(images: n, h: oh, w: ow))
    if winogradInput, let dInput {
        let tile = winogradTile(requestedTile, h: oh, w: ow)
        let u = workspace.buffer(4, count: winogradWeightCount(tile: tile, outChannels: cin, inChannels: cout))
        winogradTransformWeights(weight.data, outChannels: cin, inChannels: cout, flipped: true, u: u, tile: tile)
        winogradConvolve(input: dOut.data, images: n, inChannels: cout, h: oh, w: ow, u: u, outChannels: cin, bias: nil,
                         out: dInput.data, accumulate: true, workspace: workspace, tile: tile)
    }
    // The weight gradient of a 3×3 stride-1 convolution by Winograd F(3×3, 2×2) where its forward
    // runs by Winograd (`winogradWeightGradient`): 16 products per 2×2 outputs instead of 36.
    var dWeight = dWeight
    if let dW = dWeight, winogradWeights, g.isWinogradEligible,
       winograd.map({ $0 }) ?? (Engine.winogradWeightGradient && g.usesWinograd(images: n, h: oh, w: ow)) {
        winogradWeightGradient(input: input.data, images: n, inChannels: cin, h: h, w: w, dOut: dOut.data, outChannels: cout,
                               dWeight: dW.data, workspace: workspace)
        dWeight = nil
        if dBias == nil && (dInput == nil || winogradInput) { return }
    }
    let per = imagesPerGEMM(images: n, plane: plane, rows: k)
    if per > 1 {
        let dInputByGEMM = dInput != nil && !winogradInput
        if dWeight != nil || dInputByGEMM {
            let dy = workspace.buffer(2, count: cout * per * plane)
            let col = workspace.buffer(0, count: k * per * plane)
            forEachImageRun(n, per: per) { first, count in
                let width = count * plane
                gatherImages(dOut.data + first * cout * plane, count: count, channels: cout, plane: plane, into: dy)
                if let dWeight {
                    parallelFor(count) { i in
                        im2col(input.data + (first + i) * cin * h * w, channels: cin, h: h, w: w, g: g, oh: oh, ow: ow,
                               col: col + i * plane, ld: width)
                    }
                    sgemm(transB: true, m: cout, n: k, k: width, a: dy, lda: width, b: col, ldb: width, beta: 1, c: dWeight.data, ldc: k)
                }
                if dInputByGEMM, let dInput {
                    sgemm(transA: true, m: k, n: width, k: cout, a: weight.data, lda: k, b: dy, ldb: width, c: col, ldc: width)
                    parallelFor(count) { i in
                        col2im(col + i * plane, channels: cin, h: h, w: w, g: g, oh: oh, ow: ow,
                               x: dInput.data + (first + i) * cin * h * w, ld: width)
                    }
                }
            }
        }
        if let dBias {
            for b in 0..<n { accumulateBiasGradient(dBias.data, dOut: dOut.data + b * cout * plane, channels: cout, plane: plane) }
        }
        return
    }
    // A large image's weight gradient by kgemm: the transposed patches packed straight from the image.
    let implicitWeights = !pointwise && Engine.useKGEMM && implicitPatches && plane >= 1024
        && k <= Int(Int32.max) && cout * k <= Int(Int32.max) && cout * plane <= Int(Int32.max)
    for b in 0..<n {
        let x = input.data + b * cin * h * w
        let dy = dOut.data + b * cout * plane
        if let dWeight, implicitWeights {
            kgemmWeightGradient(image: x, channels: cin, h: h, w: w, g: g, oh: oh, ow: ow, dOut: dy, dWeight: dWeight.data)
        } else if let dWeight {
            var src = UnsafePointer(x)
            if !pointwise {
                let col = workspace.buffer(0, count: k * plane)
                im2col(x, channels: cin, h: h, w: w, g: g, oh: oh, ow: ow, col: col)
                src = UnsafePointer(col)
            }
            sgemm(transB: true, m: cout, n: k, k: plane, a: dy, lda: plane, b: src, ldb: plane, beta: 1, c: dWeight.data, ldc: k)
        }
        if let dInput, !winogradInput {
            let dx = dInput.data + b * cin * h * w
            if pointwise {
                sgemm(transA: true, m: k, n: plane, k: cout, a: weight.data, lda: k, b: dy, ldb: plane, beta: 1, c: dx, ldc: plane)
            } else {
                let dcol = workspace.buffer(1, count: k * plane)
                sgemm(transA: true, m: k, n: plane, k: cout, a: weight.data, lda: k, b: dy, ldb: plane, c: dcol, ldc: plane)
                col2im(dcol, channels: cin, h: h, w: w, g: g, oh: oh, ow: ow, x: dx)
            }
        }
        if let dBias { accumulateBiasGradient(dBias.data, dOut: dy, channels: cout, plane: plane) }
    }
}

// MARK: - conv_transpose2d

func checkConvTranspose(_ op: String, input: Tensor, weight: Tensor, bias: Tensor?, out: Tensor?, g: ConvGeometry,
                        outputPadding: (Int, Int)) throws -> (Int, Int, Int, Int, Int) {
    try g.validate(op)
    try input.expectRank(4, op, "input")
    guard input.shape[1] == g.inChannels else {
        throw TensorError.shapeMismatch(op: op, detail: "input is \(shapeString(input.shape)), geometry expects \(g.inChannels) channels")
    }
    guard outputPadding.0 >= 0, outputPadding.1 >= 0,
          outputPadding.0 < max(g.strideH, g.dilationH), outputPadding.1 < max(g.strideW, g.dilationW) else {
        throw TensorError.invalidArgument(op: op, detail: "output padding \(outputPadding) must be smaller than stride or dilation")
    }
    try weight.expectShape([g.inChannels, g.outChannels, g.kernelH, g.kernelW], op, "weight")
    if let bias { try bias.expectShape([g.outChannels], op, "bias") }
    let n = input.shape[0], h = input.shape[2], w = input.shape[3]
    let (oh, ow) = g.transposedOutputSize(h: h, w: w, outputPadding: outputPadding)
    guard oh > 0, ow > 0, h > 0, w > 0 else {
        throw TensorError.invalidArgument(op: op, detail: "input \(shapeString(input.shape)) gives an empty output for \(g)")
    }
    if let out { try out.expectShape([n, g.outChannels, oh, ow], op, "out") }
    return (n, h, w, oh, ow)
}

/// The transposed convolution (the adjoint of conv2d's input map):
/// out[n, co, y·s−p+ky·d, x·s−p+kx·d] += Σ_ci input[n, ci, y, x] · weight[ci, co, ky, kx]; out += bias[co];
/// then, with `relu`, out = max(out, 0) (the ReLU that follows a mask predictor's upsampling, in the same pass).
/// - Precondition: input is [n, g.inChannels, h, w]; weight [g.inChannels, g.outChannels, kH, kW]
///   (PyTorch's ConvTranspose2d layout); out is [n, g.outChannels, oh, ow] with (oh, ow) =
///   `g.transposedOutputSize(h:w:outputPadding:)`.
public func convTranspose2dForward(out: Tensor, input: Tensor, weight: Tensor, bias: Tensor?, geometry g: ConvGeometry,
                                   outputPadding: (Int, Int) = (0, 0), workspace: Workspace, relu: Bool = false) throws {
    let (n, h, w, oh, ow) = try checkConvTranspose("conv_transpose2d", input: input, weight: weight, bias: bias, out: out,
                                                    g: g, outputPadding: outputPadding)
    let cin = g.inChannels, cout = g.outChannels, kk = g.kernelH * g.kernelW, plane = h * w
    // The conv view: a convolution from the big image (cout channels) to the small one.
    let view = ConvGeometry(inChannels: cout, outChannels: cin, kernel: (g.kernelH, g.kernelW), stride: (g.strideH, g.strideW),
                            padding: (g.padH, g.padW), dilation: (g.dilationH, g.dilationW))
    let tiles = g.kernelH == g.strideH && g.kernelW == g.strideW && g.padH == 0 && g.padW == 0 && g.dilationH == 1
        && g.dilationW == 1 && outputPadding == (0, 0)
    // Image i's columns (row stride ld) onto its output: written once per pixel when the kernel
    // tiles the output (kernel = stride, the mask predictors and the sieve), else zeroed and folded.
    // Several images' columns (image i's at cols + i·plane) go out in one parallel loop.
    func place(_ cols: UnsafePointer<Float>, ld: Int, image: Int, count: Int = 1) {
        if tiles {
            parallelFor(count * cout, minChunk: 16) { idx in
                let i = idx / cout, co = idx % cout
                scatterTiles(cols + i * plane + co * kk * ld, ld: ld, h: h, w: w, kh: g.kernelH, kw: g.kernelW,
                             out: out.data + ((image + i) * cout + co) * oh * ow, bias: bias?.data[co] ?? 0, relu: relu)
            }
            return
        }
        if count > 1 {
            parallelFor(count) { i in place(cols + i * plane, ld: ld, image: image + i) }
            return
        }
        let y = out.data + image * cout * oh * ow
        y.update(repeating: 0, count: cout * oh * ow)
        col2im(cols, channels: cout, h: oh, w: ow, g: view, oh: h, ow: w, x: y, ld: ld)
        if let bias { addBias(y, bias: bias.data, channels: cout, plane: oh * ow) }
        if relu { for i in 0..<cout * oh * ow where !(y[i] > 0) { y[i] = 0 } }  // reluForward's rule
    }
    let per = imagesPerGEMM(images: n, plane: plane, rows: cout * kk)
    if per > 1 {
        let cols = workspace.buffer(0, count: cout * kk * per * plane), xs = workspace.buffer(2, count: cin * per * plane)
        forEachImageRun(n, per: per) { first, count in
            let width = count * plane
            gatherImages(input.data + first * cin * plane, count: count, channels: cin, plane: plane, into: xs)
            sgemm(transA: true, m: cout * kk, n: width, k: cin, a: weight.data, lda: cout * kk, b: xs, ldb: width, c: cols, ldc: width)
            place(cols, ld: width, image: first, count: count)
        }
        return
    }
    let cols = workspace.buffer(0, count: cout * kk * plane)
    for b in 0..<n {
        let x = input.data + b * cin * plane
        sgemm(transA: true, m: cout * kk, n: plane, k: cin, a: weight.data, lda: cout * kk, b: x, ldb: plane, c: cols, ldc: plane)
        place(cols, ld: plane, image: b)
    }
}

/// One output channel of a transposed convolution whose kernel equals its stride (no padding, no
/// dilation): out[y·kH+ky, x·kW+kx] = cols[(ky·kW+kx)·ld + y·w + x] + bias, then max(·, 0) with
/// `relu`. Each output pixel comes from exactly one tap, so it is written, not accumulated.
@inline(__always)
func scatterTiles(_ cols: UnsafePointer<Float>, ld: Int, h: Int, w: Int, kh: Int, kw: Int, out: UnsafeMutablePointer<Float>,
                  bias: Float, relu: Bool) {
    let ow = w * kw
    @inline(__always) func f(_ v: Float) -> Float { relu ? (v > 0 ? v : 0) : v }  // reluForward's rule
    for y in 0..<h {
        for ky in 0..<kh {
            let dst = out + (y * kh + ky) * ow
            let row = cols + ky * kw * ld + y * w
            if kw == 2 {
                let s0 = row, s1 = row + ld
                for x in 0..<w {
                    dst[2 * x] = f(s0[x] + bias)
                    dst[2 * x + 1] = f(s1[x] + bias)
                }
            } else {
                for kx in 0..<kw {
                    let src = row + kx * ld
                    for x in 0..<w { dst[x * kw + kx] = f(src[x] + bias) }
                }
            }
        }
    }
}

/// The gradients of `convTranspose2dForward`, accumulated into whichever of dInput, dWeight, dBias is given.
public func convTranspose2dBackward(dInput: Tensor?, dWeight: Tensor?, dBias: Tensor?, dOut: Tensor, input: Tensor, weight: Tensor,
                                    geometry g: ConvGeometry, outputPadding: (Int, Int) = (0, 0), workspace: Workspace) throws {
    let (n, h, w, oh, ow) = try checkConvTranspose("conv_transpose2d backward", input: input, weight: weight, bias: dBias, out: dOut,
                                                    g: g, outputPadding: outputPadding)
    if let dInput { try dInput.expectShape(input.shape, "conv_transpose2d backward", "dInput") }
    if let dWeight { try dWeight.expectShape(weight.shape, "conv_transpose2d backward", "dWeight") }
    let cin = g.inChannels, cout = g.outChannels, kk = g.kernelH * g.kernelW, plane = h * w
    let view = ConvGeometry(inChannels: cout, outChannels: cin, kernel: (g.kernelH, g.kernelW), stride: (g.strideH, g.strideW),
                            padding: (g.padH, g.padW), dilation: (g.dilationH, g.dilationW))
    let per = imagesPerGEMM(images: n, plane: plane, rows: cout * kk)
    if per > 1 {
        if dInput != nil || dWeight != nil {
            let col = workspace.buffer(0, count: cout * kk * per * plane), xs = workspace.buffer(2, count: cin * per * plane)
            forEachImageRun(n, per: per) { first, count in
                let width = count * plane
                parallelFor(count) { i in
                    im2col(dOut.data + (first + i) * cout * oh * ow, channels: cout, h: oh, w: ow, g: view, oh: h, ow: w,
                           col: col + i * plane, ld: width)
                }
                if let dInput {
                    sgemm(m: cin, n: width, k: cout * kk, a: weight.data, lda: cout * kk, b: col, ldb: width, c: xs, ldc: width)
                    scatterImages(xs, count: count, channels: cin, plane: plane, into: dInput.data + first * cin * plane,
                                  bias: nil, accumulate: true)
                }
                if let dWeight {
                    gatherImages(input.data + first * cin * plane, count: count, channels: cin, plane: plane, into: xs)
                    sgemm(transB: true, m: cin, n: cout * kk, k: width, a: xs, lda: width, b: col, ldb: width,
                          beta: 1, c: dWeight.data, ldc: cout * kk)
                }
            }
        }
        if let dBias {
            for b in 0..<n { accumulateBiasGradient(dBias.data, dOut: dOut.data + b * cout * oh * ow, channels: cout, plane: oh * ow) }
        }
        return
    }
    for b in 0..<n {
        let dy = dOut.data + b * cout * oh * ow
        if dInput != nil || dWeight != nil {
            let col = workspace.buffer(0, count: cout * kk * plane)
            im2col(dy, channels: cout, h: oh, w: ow, g: view, oh: h, ow: w, col: col)
            if let dInput {
                sgemm(m: cin, n: plane, k: cout * kk, a: weight.data, lda: cout * kk, b: col, ldb: plane,
                      beta: 1, c: dInput.data + b * cin * plane, ldc: plane)
            }
            if let dWeight {
                sgemm(transB: true, m: cin, n: cout * kk, k: plane, a: input.data + b * cin * plane, lda: plane, b: col, ldb: plane,
                      beta: 1, c: dWeight.data, ldc: cout * kk)
            }
        }
        if let dBias { accumulateBiasGradient(dBias.data, dOut: dy, channels: cout, plane: oh * ow) }
    }
}
