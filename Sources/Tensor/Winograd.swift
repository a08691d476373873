import CKernels
import Foundation

// Winograd convolution for the 3×3, stride-1, padding-1 convolutions (Lavin & Gray 2016).
// F(2×2, 3×3): each 2×2 block of outputs from a 4×4 block of input with 16 multiplications instead
// of 36; F(4×4, 3×3) (`Engine.winogradTile` 4, where the processor has AVX-512 or AVX2): each 4×4 block
// from a 6×6 block with 36 instead of 144. The element-wise products over channels become 16 (36)
// GEMMs [K×C]·[C×tiles]; the transforms are additions and multiplications by constants.
// Used by conv2dForward and by conv2dBackward's input gradient (a 3×3 convolution with the weights
// turned 180° and their channel axes swapped).

extension ConvGeometry {
    /// 3×3 kernel, stride 1, padding 1, dilation 1: the shape Winograd F(2×2, 3×3) computes here.
    var isWinogradEligible: Bool {
        kernelH == 3 && kernelW == 3 && strideH == 1 && strideW == 1 && padH == 1 && padW == 1 && dilationH == 1 && dilationW == 1
    }

    /// Whether the convolution of n h×w images runs by Winograd: eligible, turned on, wide enough
    /// and large enough (`Engine.winogradMinChannels`, `Engine.winogradMinImages`).
    func usesWinograd(images n: Int, h: Int, w: Int) -> Bool {
        Engine.winograd && isWinogradEligible && min(inChannels, outChannels) >= Engine.winogradMinChannels
            && n >= Engine.winogradMinImages
    }
}

/// The transformed weights' size for tiles of `tile` (2 or 4): (tile + 2)² matrices [K × C].
func winogradWeightCount(tile: Int, outChannels K: Int, inChannels C: Int) -> Int { (tile + 2) * (tile + 2) * K * C }

/// The tile a Winograd convolution of h×w planes uses: `requested` (tests), else
/// `Engine.winogradTile` on planes no larger than `Engine.winograd4MaxSide`; 4 only where the
/// vector transforms exist (AVX-512 or AVX2).
func winogradTile(_ requested: Int? = nil, h: Int, w: Int) -> Int {
    if let requested { return requested == 4 && Engine.vectorISA != nil ? 4 : 2 }
    return Engine.winogradTile == 4 && Engine.vectorISA != nil && max(h, w) <= Engine.winograd4MaxSide ? 4 : 2
}


/// The 16 transformed weights U = G·g·Gᵀ of every (out, in) channel pair, stored as 16 matrices
/// [outChannels × inChannels]: u[(ξ·K + k)·C + c]. `weight` is [K, C, 3, 3]; with `flipped` it is
/// [C, K, 3, 3] and each kernel is used turned by 180° (the input gradient's convolution).
/// `vector`: by the AVX-512 or AVX2 kernel of Sources/CKernels/winograd.c (the same sums in the same
/// order), nil: by the scalar code here.
func winogradTransformWeights(_ weight: UnsafePointer<Float>, outChannels K: Int, inChannels C: Int, flipped: Bool,
                              u: UnsafeMutablePointer<Float>, vector: VectorISA? = Engine.vectorISA, tile: Int = 2) {
    let plane = K * C
    if tile == 4 {
        guard let isa = vector else { preconditionFailure("Winograd F(4×4, 3×3) needs the vector transforms (AVX-512 or AVX2)") }
        let chunks = min(K, max(1, Engine.threads))
        parallelFor(chunks) { i in
            let k0 = Int32(K * i / chunks), k1 = Int32(K * (i + 1) / chunks)
            if isa == .avx512 { winograd4_weight_tiles(weight, Int32(K), Int32(C), flipped ? 1 : 0, k0, k1, u) }
            else { winograd4_weight_tiles_avx2(weight, Int32(K), Int32(C), flipped ? 1 : 0, k0, k1, u) }
        }
        return
    }
    if let vector {
        let chunks = min(K, max(1, Engine.threads))
        parallelFor(chunks) { i in
            let k0 = Int32(K * i / chunks), k1 = Int32(K * (i + 1) / chunks)
            if vector == .avx512 { winograd_weight_tiles(weight, Int32(K), Int32(C), flipped ? 1 : 0, k0, k1, u) }
            else { winograd_weight_tiles_avx2(weight, Int32(K), Int32(C), flipped ? 1 : 0, k0, k1, u) }
        }
        return
    }
    parallelFor(K, minChunk: 8) { k in
        for c in 0..<C {
            let src = flipped ? weight + (c * K + k) * 9 : weight + (k * C + c) * 9
            @inline(__always) func tap(_ i: Int) -> Float { flipped ? src[8 - i] : src[i] }
            let g0 = SIMD4<Float>(tap(0), tap(1), tap(2), 0)
            let g1 = SIMD4<Float>(tap(3), tap(4), tap(5), 0)
            let g2 = SIMD4<Float>(tap(6), tap(7), tap(8), 0)
            // Gg (4×3): rows g0, (g0+g1+g2)/2, (g0−g1+g2)/2, g2; then (Gg)Gᵀ: the same on each row.
            let t = (g0, 0.5 * (g0 + g1 + g2), 0.5 * (g0 - g1 + g2), g2)
            let dst = u + k * C + c
            @inline(__always) func store(_ r: Int, _ row: SIMD4<Float>) {
                let a = row[0], b = row[1], d = row[2]
                dst[(4 * r) * plane] = a
                dst[(4 * r + 1) * plane] = 0.5 * (a + b + d)
                dst[(4 * r + 2) * plane] = 0.5 * (a - b + d)
                dst[(4 * r + 3) * plane] = d
            }
            store(0, t.0); store(1, t.1); store(2, t.2); store(3, t.3)
        }
    }
}

/// out (= or +=) conv3×3(input, U) + bias for a batch of [C, H, W] images, stride 1, padding 1;
/// `u` from `winogradTransformWeights`. Images are taken in chunks of about 2,048 tiles so that
/// the transformed input stays small.
///
/// `vectorTransforms`: the transforms by the AVX-512 or the AVX2 kernels of
/// Sources/CKernels/winograd.c (by default the best the processor has), or, with nil, by the
/// scalar code here; all compute the same sums in the same order.
func winogradConvolve(input: UnsafePointer<Float>, images n: Int, inChannels C: Int, h: Int, w: Int,
                      u: UnsafePointer<Float>, outChannels K: Int, bias: UnsafePointer<Float>?,
                      out: UnsafeMutablePointer<Float>, accumulate: Bool, workspace: Workspace,
                      vectorTransforms: VectorISA? = Engine.vectorISA, tile: Int = 2, relu: Bool = false, packedStride: Int? = nil) {
    if tile == 4 {
        guard let isa = vectorTransforms else { preconditionFailure("Winograd F(4×4, 3×3) needs the vector transforms (AVX-512 or AVX2)") }
        winograd4Convolve(input: input, images: n, inChannels: C, h: h, w: w, u: u, outChannels: K, bias: bias, out: out,
                          accumulate: accumulate, relu: relu, workspace: workspace, isa: isa, packedStride: packedStride)
        return
    }
    precondition(packedStride == nil, "only F(4×4) takes packed weights")
    defer {
        if relu {  // F(2×2): a pass of its own
            parallelFor(n * K, minChunk: 16) { i in
                let p = out + i * h * w
                for j in 0..<(h * w) { let v = p[j]; p[j] = v > 0 ? v : 0 }  // reluForward's rule (0 for NaN)
            }
        }
    }
    let th = (h + 1) / 2, tw = (w + 1) / 2, tilesPerImage = th * tw
    let perChunk = max(1, min(n, 2048 / max(tilesPerImage, 1)))
    let imagePlane = h * w
    var start = 0
    while start < n {
        let count = min(perChunk, n - start)
        let tiles = count * tilesPerImage
        let v = workspace.buffer(5, count: 16 * C * tiles)
        let m = workspace.buffer(6, count: 16 * K * tiles)
        let vStride = C * tiles
        winograd2InputTiles(input, start: start, count: count, channels: C, h: h, w: w, v: v, tiles: tiles,
                            vectorTransforms: vectorTransforms)
        // M_ξ = U_ξ · V_ξ, 16 GEMMs [K×C]·[C×tiles], whole GEMMs split over the threads (each GEMM
        // too small to be worth a split of its own; the same sums either way).
        parallelFor(16) { xi in
            sgemm(m: K, n: tiles, k: C, a: u + xi * K * C, lda: C, b: v + xi * vStride, ldb: tiles, c: m + xi * K * tiles, ldc: tiles)
        }
        // Y = Aᵀ·M·A for every tile: rows m0+m1+m2, m1−m2−m3; then the same on the columns.
        let mStride = K * tiles
        parallelFor(count * K, minChunk: 4) { idx in
            let img = idx / K, k = idx % K
            let y = out + ((start + img) * K + k) * imagePlane
            let b = bias?[k] ?? 0
            let mBase = m + k * tiles + img * tilesPerImage
            switch vectorTransforms {
            case .avx512?: winograd_output_tiles(mBase, mStride, Int32(h), Int32(w), b, accumulate ? 1 : 0, y); return
            case .avx2?: winograd_output_tiles_avx2(mBase, mStride, Int32(h), Int32(w), b, accumulate ? 1 : 0, y); return
            case nil: break
            }
            for i in 0..<th {
                for j in 0..<tw {
                    let t = i * tw + j
                    @inline(__always) func load(_ r: Int) -> SIMD4<Float> {
                        let p = mBase + (4 * r) * mStride + t
                        return SIMD4(p[0], p[mStride], p[2 * mStride], p[3 * mStride])
                    }
                    let rows = (load(0), load(1), load(2), load(3))
                    let a0 = rows.0 + rows.1 + rows.2, a1 = rows.1 - rows.2 - rows.3
                    let y00 = a0[0] + a0[1] + a0[2] + b, y01 = a0[1] - a0[2] - a0[3] + b
                    let y10 = a1[0] + a1[1] + a1[2] + b, y11 = a1[1] - a1[2] - a1[3] + b
                    let oy = 2 * i, ox = 2 * j
                    let p = y + oy * w + ox
                    let right = ox + 1 < w, down = oy + 1 < h
                    if accumulate {
                        p[0] += y00
                        if right { p[1] += y01 }
                        if down { p[w] += y10; if right { p[w + 1] += y11 } }
                    } else {
                        p[0] = y00
                        if right { p[1] = y01 }
                        if down { p[w] = y10; if right { p[w + 1] = y11 } }
                    }
                }
            }
        }
        start += count
    }
}

/// V = Bᵀ·d·B of every 4×4 input tile (rows 2i−1…2i+2, columns 2j−1…2j+2 of its plane, zero
/// outside) of images start ..< start + count of `input` [n, C, h, w], into v: element ξ of channel
/// c's tile t (the images' tiles one after another) at v[ξ·C·tiles + c·tiles + t]. F(2×2)'s input
/// transform; also F(3×3, 2×2)'s, whose tiles are the same (the weight gradient).
func winograd2InputTiles(_ input: UnsafePointer<Float>, start: Int, count: Int, channels C: Int, h: Int, w: Int,
                         v: UnsafeMutablePointer<Float>, tiles: Int, vectorTransforms: VectorISA?) {
    let th = (h + 1) / 2, tw = (w + 1) / 2, tilesPerImage = th * tw
    let imagePlane = h * w
    let vStride = C * tiles
    // V = Bᵀ·d·B for every 4×4 input tile (rows 2i−1…2i+2, columns 2j−1…2j+2, zero outside).
    // The plane is first copied into a zero border (one row/column before, up to two after),
    // so that every tile is four plain rows.
    let ph = 2 * th + 2, pw = 2 * tw + 2
    parallelFor(count * C, minChunk: 4) { idx in
        let img = idx / C, c = idx % C
        let x = input + ((start + img) * C + c) * imagePlane
        let vBase = v + c * tiles + img * tilesPerImage
        switch vectorTransforms {
        case .avx512?: winograd_input_tiles(x, Int32(h), Int32(w), vBase, vStride); return
        case .avx2?: winograd_input_tiles_avx2(x, Int32(h), Int32(w), vBase, vStride); return
        case nil: break
        }
        withUnsafeTemporaryAllocation(of: Float.self, capacity: ph * pw) { buf in
            let pad = buf.baseAddress!
            pad.update(repeating: 0, count: ph * pw)
            for r in 0..<h { (pad + (r + 1) * pw + 1).update(from: x + r * w, count: w) }
            let raw = UnsafeRawPointer(pad)
            @inline(__always) func row(_ offset: Int) -> SIMD4<Float> {
                raw.loadUnaligned(fromByteOffset: offset * MemoryLayout<Float>.stride, as: SIMD4<Float>.self)
            }
            for i in 0..<th {
                for j in 0..<tw {
                    let o = 2 * i * pw + 2 * j
                    let d0 = row(o), d1 = row(o + pw), d2 = row(o + 2 * pw), d3 = row(o + 3 * pw)
                    // Bᵀd: rows d0−d2, d1+d2, d2−d1, d1−d3; then the same on the columns.
                    let r0 = d0 - d2, r1 = d1 + d2, r2 = d2 - d1, r3 = d1 - d3
                    let t = i * tw + j
                    @inline(__always) func store(_ r: Int, _ vec: SIMD4<Float>) {
                        let q = vBase + (4 * r) * vStride + t
                        q[0] = vec[0] - vec[2]
                        q[vStride] = vec[1] + vec[2]
                        q[2 * vStride] = vec[2] - vec[1]
                        q[3 * vStride] = vec[1] - vec[3]
                    }
                    store(0, r0); store(1, r1); store(2, r2); store(3, r3)
                }
            }
        }
    }
}

/// dWeight [K, C, 3, 3] += the weight gradient of a 3×3, stride-1, padding-1 convolution of the n
/// images x [n, C, h, w] whose output gradient is dOut [n, K, h, w], by Winograd F(3×3, 2×2)
/// (Lavin & Gray 2016; the dual of F(2×2, 3×3): its input transform B on the same 4×4 tiles of x,
/// G' = [1 0; 1 1; 1 −1; 0 −1] on each 2×2 tile of dOut (zero past the plane), A'ᵀ = Gᵀ of
/// F(2×2, 3×3) back to 3×3). Per tile 16 products for each (out, in) pair instead of 36: 16 GEMMs
/// [K × tiles]·[tiles × C] summed over the tiles, then one small transform per kernel.
func winogradWeightGradient(input x: UnsafePointer<Float>, images n: Int, inChannels C: Int, h: Int, w: Int,
                            dOut: UnsafePointer<Float>, outChannels K: Int, dWeight: UnsafeMutablePointer<Float>, workspace: Workspace,
                            vectorTransforms: VectorISA? = Engine.vectorISA) {
    let th = (h + 1) / 2, tw = (w + 1) / 2, tilesPerImage = th * tw
    let perChunk = max(1, min(n, 4096 / max(tilesPerImage, 1)))
    let m = workspace.buffer(7, count: 16 * K * C)
    var start = 0
    while start < n {
        let count = min(perChunk, n - start), tiles = count * tilesPerImage
        let v = workspace.buffer(5, count: 16 * C * tiles), u = workspace.buffer(6, count: 16 * K * tiles)
        winograd2InputTiles(x, start: start, count: count, channels: C, h: h, w: w, v: v, tiles: tiles, vectorTransforms: vectorTransforms)
        // U = G'·dy·G'ᵀ of each 2×2 tile of dOut: rows (a, a + b, a − b, −b) of the tile's rows a, b,
        // then the same along each row.
        let uStride = K * tiles
        parallelFor(count * K, minChunk: 4) { idx in
            let img = idx / K, k = idx % K
            let g = dOut + ((start + img) * K + k) * h * w, uBase = u + k * tiles + img * tilesPerImage
            if tw < 16 {
                // Narrow planes (the RoI heads' 14×14 and 28×28): eight consecutive tiles at a time
                // across rows, their values read one by one, the 16 results stored as vectors; the
                // same operations lane by lane as below. The last few tiles one by one.
                var t0 = 0
                while t0 + 8 <= tilesPerImage {
                    var a0 = SIMD8<Float>(), b0 = SIMD8<Float>(), a1 = SIMD8<Float>(), b1 = SIMD8<Float>()
                    for l in 0..<8 {
                        let t = t0 + l, y0 = 2 * (t / tw), x0 = 2 * (t % tw), y1 = y0 + 1, x1 = x0 + 1
                        a0[l] = g[y0 * w + x0]
                        b0[l] = x1 < w ? g[y0 * w + x1] : 0
                        a1[l] = y1 < h ? g[y1 * w + x0] : 0
                        b1[l] = y1 < h && x1 < w ? g[y1 * w + x1] : 0
                    }
                    gradientTiles8(a0, b0, a1, b1, u: uBase + t0, uStride: uStride)
                    t0 += 8
                }
                for t in t0..<tilesPerImage { gradientTile(g, h: h, w: w, i: t / tw, j: t % tw, t: t, u: uBase, uStride: uStride) }
                return
            }
            for i in 0..<th {
                let y0 = 2 * i, y1 = 2 * i + 1
                // Eight tiles of the row at a time where their 16 columns are inside the plane: the
                // even and odd columns of the two rows, the same operations lane by lane.
                var j0 = 0
                while j0 + 8 <= tw && 2 * j0 + 16 <= w {
                    let top = UnsafeRawPointer(g + y0 * w + 2 * j0).loadUnaligned(as: SIMD16<Float>.self)
                    let bottom = y1 < h ? UnsafeRawPointer(g + y1 * w + 2 * j0).loadUnaligned(as: SIMD16<Float>.self) : SIMD16<Float>()
                    let a0 = top.evenHalf, b0 = top.oddHalf, a1 = bottom.evenHalf, b1 = bottom.oddHalf
                    gradientTiles8(a0, b0, a1, b1, u: uBase + i * tw + j0, uStride: uStride)
                    j0 += 8
                }
                for j in j0..<tw { gradientTile(g, h: h, w: w, i: i, j: j, t: i * tw + j, u: uBase, uStride: uStride) }
            }
        }
        // M_ξ (+)= U_ξ · V_ξᵀ, summed over the tiles; whole GEMMs over the threads.
        let first = start == 0
        parallelFor(16) { xi in
            sgemm(transB: true, m: K, n: C, k: tiles, a: u + xi * uStride, lda: tiles, b: v + xi * C * tiles, ldb: tiles,
                  beta: first ? 0 : 1, c: m + xi * K * C, ldc: C)
        }
        start += count
    }
    // dW += A'ᵀ·M·A' per (out, in) pair, A'ᵀ = [1 ½ ½ 0; 0 ½ −½ 0; 0 ½ ½ 1].
    let plane = K * C
    parallelFor(K, minChunk: 4) { k in
        // Eight input channels at a time (each plane's values for them are contiguous), the same
        // operations lane by lane; the rest one by one.
        var c0 = 0
        while c0 + 8 <= C {
            let p = m + k * C + c0
            @inline(__always) func at(_ xi: Int) -> SIMD8<Float> {
                UnsafeRawPointer(p + xi * plane).loadUnaligned(as: SIMD8<Float>.self)
            }
            let m0 = (at(0), at(1), at(2), at(3)), m1 = (at(4), at(5), at(6), at(7))
            let m2 = (at(8), at(9), at(10), at(11)), m3 = (at(12), at(13), at(14), at(15))
            // Rows of A'ᵀ·M, column by column (t0, t1, t2 below).
            @inline(__always) func rows(_ a: SIMD8<Float>, _ b: SIMD8<Float>, _ c: SIMD8<Float>, _ d: SIMD8<Float>)
                -> (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>) {
                (a + 0.5 * (b + c), 0.5 * (b - c), 0.5 * (b + c) + d)
            }
            let col0 = rows(m0.0, m1.0, m2.0, m3.0), col1 = rows(m0.1, m1.1, m2.1, m3.1)
            let col2 = rows(m0.2, m1.2, m2.2, m3.2), col3 = rows(m0.3, m1.3, m2.3, m3.3)
            let out = dWeight + (k * C + c0) * 9
            // Row r of the 3×3 gradient from row r of A'ᵀ·M (t0…t3 its columns), added lane by lane.
            @inline(__always) func emit(_ r: Int, _ t0: SIMD8<Float>, _ t1: SIMD8<Float>, _ t2: SIMD8<Float>, _ t3: SIMD8<Float>) {
                let a = t0 + 0.5 * (t1 + t2), b = 0.5 * (t1 - t2), c = 0.5 * (t1 + t2) + t3
                for l in 0..<8 {
                    out[l * 9 + 3 * r] += a[l]
                    out[l * 9 + 3 * r + 1] += b[l]
                    out[l * 9 + 3 * r + 2] += c[l]
                }
            }
            emit(0, col0.0, col1.0, col2.0, col3.0)
            emit(1, col0.1, col1.1, col2.1, col3.1)
            emit(2, col0.2, col1.2, col2.2, col3.2)
            c0 += 8
        }
        for c in c0..<C {
            let p = m + k * C + c
            @inline(__always) func row(_ r: Int) -> SIMD4<Float> {
                SIMD4(p[(4 * r) * plane], p[(4 * r + 1) * plane], p[(4 * r + 2) * plane], p[(4 * r + 3) * plane])
            }
            let m0 = row(0), m1 = row(1), m2 = row(2), m3 = row(3)
            let t0 = m0 + 0.5 * (m1 + m2), t1 = 0.5 * (m1 - m2), t2 = 0.5 * (m1 + m2) + m3  // rows of A'ᵀ·M
            let out = dWeight + (k * C + c) * 9
            for (r, t) in [t0, t1, t2].enumerated() {
                out[3 * r] += t[0] + 0.5 * (t[1] + t[2])
                out[3 * r + 1] += 0.5 * (t[1] - t[2])
                out[3 * r + 2] += 0.5 * (t[1] + t[2]) + t[3]
            }
        }
    }
}

/// U = G'·dy·G'ᵀ of the 2×2 tile (i, j) of the h × w plane g (zero outside), element ξ to
/// u[ξ·uStride + t]: columns first, each row (a, b) → (a, a + b, a − b, −b), then the rows likewise.
@inline(__always)
private func gradientTile(_ g: UnsafePointer<Float>, h: Int, w: Int, i: Int, j: Int, t: Int, u: UnsafeMutablePointer<Float>, uStride: Int) {
    let y0 = 2 * i, y1 = 2 * i + 1, x0 = 2 * j, x1 = 2 * j + 1
    let a0 = g[y0 * w + x0], b0 = x1 < w ? g[y0 * w + x1] : 0
    let a1 = y1 < h ? g[y1 * w + x0] : 0, b1 = y1 < h && x1 < w ? g[y1 * w + x1] : 0
    let r0 = SIMD4<Float>(a0, a0 + b0, a0 - b0, -b0), r1 = SIMD4<Float>(a1, a1 + b1, a1 - b1, -b1)
    let rows = (r0, r0 + r1, r0 - r1, -r1)
    @inline(__always) func store(_ r: Int, _ vec: SIMD4<Float>) {
        let q = u + (4 * r) * uStride + t
        q[0] = vec[0]; q[uStride] = vec[1]; q[2 * uStride] = vec[2]; q[3 * uStride] = vec[3]
    }
    store(0, rows.0); store(1, rows.1); store(2, rows.2); store(3, rows.3)
}

/// `gradientTile` for eight tiles at once, lane l from the tile's rows (a0, b0) and (a1, b1), element
/// ξ of the eight to u[ξ·uStride …< ξ·uStride + 8]: the same operations lane by lane.
@inline(__always)
private func gradientTiles8(_ a0: SIMD8<Float>, _ b0: SIMD8<Float>, _ a1: SIMD8<Float>, _ b1: SIMD8<Float>,
                            u: UnsafeMutablePointer<Float>, uStride: Int) {
    let r0 = (a0, a0 + b0, a0 - b0, -b0), r1 = (a1, a1 + b1, a1 - b1, -b1)
    @inline(__always) func put(_ xi: Int, _ vec: SIMD8<Float>) {
        UnsafeMutableRawPointer(u + xi * uStride).storeBytes(of: vec, as: SIMD8<Float>.self)
    }
    put(0, r0.0); put(1, r0.1); put(2, r0.2); put(3, r0.3)
    put(4, r0.0 + r1.0); put(5, r0.1 + r1.1); put(6, r0.2 + r1.2); put(7, r0.3 + r1.3)
    put(8, r0.0 - r1.0); put(9, r0.1 - r1.1); put(10, r0.2 - r1.2); put(11, r0.3 - r1.3)
    put(12, -r1.0); put(13, -r1.1); put(14, -r1.2); put(15, -r1.3)
}

/// Tiles per chunk of a F(4×4, 3×3) convolution: the transformed input (36·C·tiles floats) and the
/// products (36·K·tiles) of one chunk stay within a few MB, in the last-level cache, while the 36 GEMMs
/// still have a wide n (`AFFINITY_WINOGRAD4_TILES`, for measurements).
let winograd4ChunkTiles: Int = Int(ProcessInfo.processInfo.environment["AFFINITY_WINOGRAD4_TILES"] ?? "") ?? 512

/// F(4×4, 3×3): as `winogradConvolve`, with 6×6 input tiles, 36 GEMMs and `u` from
/// `winogradTransformWeights(…, tile: 4)`. `relu`: max(0, ·) of the result (after the bias, or after
/// the sum when accumulating), fused into the output transform.
func winograd4Convolve(input: UnsafePointer<Float>, images n: Int, inChannels C: Int, h: Int, w: Int,
                       u: UnsafePointer<Float>, outChannels K: Int, bias: UnsafePointer<Float>?,
                       out: UnsafeMutablePointer<Float>, accumulate: Bool, relu: Bool, workspace: Workspace,
                       isa: VectorISA, packedStride: Int? = nil) {
    let th = (h + 3) / 4, tw = (w + 3) / 4, tilesPerImage = th * tw
    let perChunk = max(1, min(n, winograd4ChunkTiles / max(tilesPerImage, 1)))
    let imagePlane = h * w
    // `u` packed for kgemm already (`packedStride` set: `transformForWinograd`): each product reads it.
    let gemmPath = Engine.kgemmPath
    let packedA = packedStride.map { (pointer: u, stride: $0) }
    var start = 0
    while start < n {
        let count = min(perChunk, n - start)
        let tiles = count * tilesPerImage
        let v = workspace.buffer(5, count: 36 * C * tiles)
        let m = workspace.buffer(6, count: 36 * K * tiles)
        let vStride = C * tiles, mStride = K * tiles
        parallelFor(count * C, minChunk: 4) { idx in
            let img = idx / C, c = idx % C
            let x = input + ((start + img) * C + c) * imagePlane, dst = v + c * tiles + img * tilesPerImage
            if isa == .avx512 { winograd4_input_tiles(x, Int32(h), Int32(w), dst, vStride) }
            else { winograd4_input_tiles_avx2(x, Int32(h), Int32(w), dst, vStride) }
        }
        parallelFor(36) { xi in  // whole GEMMs over the threads, as in F(2×2)
            if let (ap, stride) = packedA {
                kgemmPackedA(m: K, n: tiles, k: C, ap: ap + xi * stride, b: v + xi * vStride, ldb: tiles, c: m + xi * mStride, ldc: tiles,
                             path: gemmPath)
            } else {
                sgemm(m: K, n: tiles, k: C, a: u + xi * K * C, lda: C, b: v + xi * vStride, ldb: tiles, c: m + xi * mStride, ldc: tiles)
            }
        }
        parallelFor(count * K, minChunk: 4) { idx in
            let img = idx / K, k = idx % K
            let src = m + k * tiles + img * tilesPerImage, y = out + ((start + img) * K + k) * imagePlane
            if isa == .avx512 {
                winograd4_output_tiles(src, mStride, Int32(h), Int32(w), bias?[k] ?? 0, accumulate ? 1 : 0, relu ? 1 : 0, y)
            } else {
                winograd4_output_tiles_avx2(src, mStride, Int32(h), Int32(w), bias?[k] ?? 0, accumulate ? 1 : 0, relu ? 1 : 0, y)
            }
        }
        start += count
    }
}
