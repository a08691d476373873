import Foundation

// MARK: - linear

/// out[n, o] = Σ_i input[n, i] · weight[o, i] + bias[o]
/// - Precondition: input is [n, in]; weight [out, in]; bias [out]; out [n, out].
public func linearForward(out: Tensor, input: Tensor, weight: Tensor, bias: Tensor?) throws {
    let op = "linear"
    try input.expectRank(2, op, "input"); try weight.expectRank(2, op, "weight")
    let n = input.shape[0], fin = input.shape[1], fout = weight.shape[0]
    guard weight.shape[1] == fin else {
        throw TensorError.shapeMismatch(op: op, detail: "input is \(shapeString(input.shape)), weight is \(shapeString(weight.shape))")
    }
    if let bias { try bias.expectShape([fout], op, "bias") }
    try out.expectShape([n, fout], op, "out")
    sgemm(transB: true, m: n, n: fout, k: fin, a: input.data, lda: fin, b: weight.data, ldb: fin, c: out.data, ldc: fout)
    if let bias {
        for r in 0..<n {
            let o = out.data + r * fout
            for j in 0..<fout { o[j] += bias.data[j] }
        }
    }
}

/// Gradients of `linearForward`, accumulated into whichever of dInput, dWeight, dBias is given.
public func linearBackward(dInput: Tensor?, dWeight: Tensor?, dBias: Tensor?, dOut: Tensor, input: Tensor, weight: Tensor) throws {
    let op = "linear backward"
    try input.expectRank(2, op, "input"); try weight.expectRank(2, op, "weight")
    let n = input.shape[0], fin = input.shape[1], fout = weight.shape[0]
    guard weight.shape[1] == fin else {
        throw TensorError.shapeMismatch(op: op, detail: "input is \(shapeString(input.shape)), weight is \(shapeString(weight.shape))")
    }
    try dOut.expectShape([n, fout], op, "dOut")
    if let dInput {
        try dInput.expectShape(input.shape, op, "dInput")
        sgemm(m: n, n: fin, k: fout, a: dOut.data, lda: fout, b: weight.data, ldb: fin, beta: 1, c: dInput.data, ldc: fin)
    }
    if let dWeight {
        try dWeight.expectShape(weight.shape, op, "dWeight")
        sgemm(transA: true, m: fout, n: fin, k: n, a: dOut.data, lda: fout, b: input.data, ldb: fin, beta: 1, c: dWeight.data, ldc: fin)
    }
    if let dBias {
        try dBias.expectShape([fout], op, "dBias")
        for r in 0..<n {
            let g = dOut.data + r * fout
            for j in 0..<fout { dBias.data[j] += g[j] }
        }
    }
}

// MARK: - batch_norm2d

/// What the training-mode forward of batch norm keeps for its backward.
public struct BatchNormSaved {
    /// Per-channel batch mean and 1/√(var + eps) (biased variance), or the running ones in eval mode.
    public var mean: [Float]
    public var invStd: [Float]
    public var training: Bool
    /// Whether the forward's tensors were [C, N, H, W] (channels first, `channelsFirst: true`).
    public var channelsFirst = false
}

/// Σ of `count` values, eight lanes at a time: `chunk(i)` gives values i ..< i + 8 (for i a multiple
/// of 8 with i + 8 ≤ count), `one(i)` value i; lane l sums the values i ≡ l (mod 8) of the whole
/// chunks in order, the lanes are added pairwise in a fixed order, then the last count mod 8 values
/// one by one. The same order on every machine and thread count, and eight independent chains of
/// additions instead of one.
@inline(__always)
func laneSum(_ count: Int, _ chunk: (Int) -> SIMD8<Float>, _ one: (Int) -> Float) -> Float {
    var acc = SIMD8<Float>()
    var i = 0
    while i + 8 <= count { acc += chunk(i); i += 8 }
    let pairs = SIMD4<Float>(acc[0], acc[2], acc[4], acc[6]) + SIMD4<Float>(acc[1], acc[3], acc[5], acc[7])
    var s = (pairs[0] + pairs[1]) + (pairs[2] + pairs[3])
    while i < count { s += one(i); i += 1 }
    return s
}

/// Batch normalisation over N×H×W per channel.
/// Training: normalises with the batch mean and biased variance, then updates
/// running_mean ← (1−m)·running_mean + m·mean and running_var ← (1−m)·running_var + m·var·n/(n−1)
/// (the unbiased variance). Eval: normalises with the running statistics.
/// out = gamma · (x − mean)/√(var + eps) + beta; with `relu`, then max(0, ·) in the same pass (the
/// ReLU that follows the backbone's BatchNorms: one pass over the activations instead of two, the
/// same values as `reluForward` after it).
/// `channelsFirst`: input and out are [c, n, h, w] (a convolution's product before its images are
/// laid out, as `tiledConv2dForward` gives it), the same statistics and values.
/// - Precondition: input and out are [n, c, h, w]; gamma, beta, runningMean, runningVar are [c].
public func batchNorm2dForward(out: Tensor, input: Tensor, gamma: Tensor, beta: Tensor, runningMean: Tensor, runningVar: Tensor,
                               training: Bool, momentum: Float = 0.1, eps: Float = 1e-5, relu: Bool = false,
                               channelsFirst: Bool = false) throws -> BatchNormSaved {
    let op = "batch_norm2d"
    try input.expectRank(4, op, "input")
    let n = input.shape[channelsFirst ? 1 : 0], c = input.shape[channelsFirst ? 0 : 1], plane = input.shape[2] * input.shape[3]
    // The plane of image b, channel ch (the same sums in the same order in either layout).
    @inline(__always) func at(_ b: Int, _ ch: Int) -> Int { (channelsFirst ? ch * n + b : b * c + ch) * plane }
    try out.expectShape(input.shape, op, "out")
    for (t, name) in [(gamma, "weight"), (beta, "bias"), (runningMean, "running_mean"), (runningVar, "running_var")] {
        try t.expectShape([c], op, name)
    }
    let count = n * plane
    if training && count <= 1 {
        throw TensorError.invalidArgument(op: op, detail: "training mode needs more than one value per channel, got input \(shapeString(input.shape))")
    }
    var mean = [Float](repeating: 0, count: c), invStd = [Float](repeating: 0, count: c)
    let x = input.data, y = out.data
    mean.withUnsafeMutableBufferPointer { meanP in
        invStd.withUnsafeMutableBufferPointer { invP in
            let meanB = meanP.baseAddress!, invB = invP.baseAddress!
            parallelFor(c, minChunk: 4) { ch in
                var m: Float, v: Float
                if training {
                    var s = 0.0
                    for b in 0..<n {
                        let xr = x + at(b, ch)
                        s += Double(laneSum(plane, { load8(xr + $0) }, { xr[$0] }))
                    }
                    let md = s / Double(count)
                    var ss = 0.0
                    for b in 0..<n {
                        let xr = x + at(b, ch)
                        let mf = Float(md)
                        let mv = SIMD8<Float>(repeating: mf)
                        ss += Double(laneSum(plane, { let d = load8(xr + $0) - mv; return d * d }, { let d = xr[$0] - mf; return d * d }))
                    }
                    let vd = ss / Double(count)
                    m = Float(md); v = Float(vd)
                    runningMean.data[ch] = (1 - momentum) * runningMean.data[ch] + momentum * m
                    runningVar.data[ch] = (1 - momentum) * runningVar.data[ch] + momentum * Float(vd * Double(count) / Double(count - 1))
                } else {
                    m = runningMean.data[ch]; v = runningVar.data[ch]
                }
                let inv = 1 / (v + eps).squareRoot()
                meanB[ch] = m; invB[ch] = inv
                let a = gamma.data[ch] * inv, sh = beta.data[ch] - m * a
                for b in 0..<n {
                    let xr = x + at(b, ch), yr = y + at(b, ch)
                    if relu {  // the ReLU that follows, in the same pass (as reluForward: 0 for NaN too)
                        for i in 0..<plane { let v = a * xr[i] + sh; yr[i] = v > 0 ? v : 0 }
                    } else {
                        for i in 0..<plane { yr[i] = a * xr[i] + sh }
                    }
                }
            }
        }
    }
    return BatchNormSaved(mean: mean, invStd: invStd, training: training, channelsFirst: channelsFirst)
}

/// Gradients of `batchNorm2dForward` (through the batch statistics in training mode), accumulated.
/// `reluOutput`: the output of the ReLU that followed (a forward with `relu: true`): dOut is then
/// the gradient of that ReLU's output and passes where it was positive (as `reluBackward` first).
public func batchNorm2dBackward(dInput: Tensor?, dGamma: Tensor?, dBeta: Tensor?, dOut: Tensor, input: Tensor, gamma: Tensor,
                                saved: BatchNormSaved, reluOutput: Tensor? = nil) throws {
    let op = "batch_norm2d backward"
    try input.expectRank(4, op, "input")
    try dOut.expectShape(input.shape, op, "dOut")
    if let reluOutput { try reluOutput.expectShape(input.shape, op, "ReLU output") }
    let channelsFirst = saved.channelsFirst
    let n = input.shape[channelsFirst ? 1 : 0], c = input.shape[channelsFirst ? 0 : 1], plane = input.shape[2] * input.shape[3]
    @inline(__always) func at(_ b: Int, _ ch: Int) -> Int { (channelsFirst ? ch * n + b : b * c + ch) * plane }
    try gamma.expectShape([c], op, "weight")
    if let dInput { try dInput.expectShape(input.shape, op, "dInput") }
    if let dGamma { try dGamma.expectShape([c], op, "dWeight") }
    if let dBeta { try dBeta.expectShape([c], op, "dBias") }
    guard saved.mean.count == c else { throw TensorError.shapeMismatch(op: op, detail: "saved statistics for \(saved.mean.count) channels, input has \(c)") }
    let count = Float(n * plane)
    let x = input.data, dy = dOut.data, mask = reluOutput.map { UnsafePointer($0.data) }
    let zero = SIMD8<Float>()
    // The gradient at i: dOut, or where the ReLU passed it.
    @inline(__always) func grad8(_ gr: UnsafePointer<Float>, _ yr: UnsafePointer<Float>?, _ i: Int) -> SIMD8<Float> {
        guard let yr else { return load8(gr + i) }
        return zero.replacing(with: load8(gr + i), where: load8(yr + i) .> zero)
    }
    @inline(__always) func grad(_ gr: UnsafePointer<Float>, _ yr: UnsafePointer<Float>?, _ i: Int) -> Float {
        guard let yr else { return gr[i] }
        return yr[i] > 0 ? gr[i] : 0
    }
    parallelFor(c, minChunk: 4) { ch in
        let m = saved.mean[ch], inv = saved.invStd[ch], mv = SIMD8<Float>(repeating: m)
        var sdy = 0.0, sdyx = 0.0
        for b in 0..<n {
            let xr = x + at(b, ch), gr = UnsafePointer(dy + at(b, ch)), yr = mask.map { $0 + at(b, ch) }
            sdy += Double(laneSum(plane, { grad8(gr, yr, $0) }, { grad(gr, yr, $0) }))
            sdyx += Double(laneSum(plane, { grad8(gr, yr, $0) * (load8(xr + $0) - mv) }, { grad(gr, yr, $0) * (xr[$0] - m) }))
        }
        let sumDy = Float(sdy), sumDyXhat = Float(sdyx) * inv
        dGamma?.data[ch] += sumDyXhat
        dBeta?.data[ch] += sumDy
        guard let dInput else { return }
        let g = gamma.data[ch] * inv
        if saved.training {
            let k1 = sumDy / count, k2 = sumDyXhat / count
            let gv = SIMD8<Float>(repeating: g), k1v = SIMD8<Float>(repeating: k1), k2v = SIMD8<Float>(repeating: k2)
            let invv = SIMD8<Float>(repeating: inv)
            for b in 0..<n {
                let xr = x + at(b, ch), gr = UnsafePointer(dy + at(b, ch)), dr = dInput.data + at(b, ch), yr = mask.map { $0 + at(b, ch) }
                var i = 0
                while i + 8 <= plane {  // the scalar loop's operations, eight at a time
                    let xhat = (load8(xr + i) - mv) * invv
                    store8(load8(dr + i) + gv * (grad8(gr, yr, i) - k1v - xhat * k2v), dr + i)
                    i += 8
                }
                while i < plane {
                    let xhat = (xr[i] - m) * inv
                    dr[i] += g * (grad(gr, yr, i) - k1 - xhat * k2)
                    i += 1
                }
            }
        } else {
            let gv = SIMD8<Float>(repeating: g)
            for b in 0..<n {
                let gr = UnsafePointer(dy + at(b, ch)), dr = dInput.data + at(b, ch), yr = mask.map { $0 + at(b, ch) }
                var i = 0
                while i + 8 <= plane { store8(load8(dr + i) + gv * grad8(gr, yr, i), dr + i); i += 8 }
                while i < plane { dr[i] += g * grad(gr, yr, i); i += 1 }
            }
        }
    }
}

// MARK: - relu, add, sigmoid

/// out = max(input, 0). `out` may be `input` (in place).
public func reluForward(out: Tensor, input: Tensor) throws {
    try out.expectShape(input.shape, "relu", "out")
    let x = input.data, y = out.data, n = input.count, chunk = 1 << 16
    parallelFor((n + chunk - 1) / chunk) { c in
        for i in c * chunk..<min(n, (c + 1) * chunk) { let v = x[i]; y[i] = v > 0 ? v : 0 }
    }
}

/// dInput += dOut where the forward output was positive (PyTorch's rule: the gradient at 0 is 0);
/// with `accumulate: false`, dInput = that (dInput's old contents are not read).
public func reluBackward(dInput: Tensor, dOut: Tensor, output: Tensor, accumulate: Bool = true) throws {
    try dOut.expectShape(output.shape, "relu backward", "dOut")
    try dInput.expectShape(output.shape, "relu backward", "dInput")
    let y = output.data, g = dOut.data, d = dInput.data, n = output.count, chunk = 1 << 16
    // Selects rather than a branch, so that the loops vectorise.
    parallelFor((n + chunk - 1) / chunk) { c in
        if accumulate {
            for i in c * chunk..<min(n, (c + 1) * chunk) { d[i] += y[i] > 0 ? g[i] : 0 }
        } else {
            for i in c * chunk..<min(n, (c + 1) * chunk) { d[i] = y[i] > 0 ? g[i] : 0 }
        }
    }
}

/// out = a + b (same shapes; no broadcasting). `out` may alias either input.
public func addForward(out: Tensor, _ a: Tensor, _ b: Tensor) throws {
    try b.expectShape(a.shape, "add", "b")
    try out.expectShape(a.shape, "add", "out")
    let x = a.data, y = b.data, o = out.data, n = a.count, chunk = 1 << 16
    parallelFor((n + chunk - 1) / chunk) { c in
        for i in c * chunk..<min(n, (c + 1) * chunk) { o[i] = x[i] + y[i] }
    }
}

/// dA += dOut and dB += dOut.
public func addBackward(dA: Tensor?, dB: Tensor?, dOut: Tensor) throws {
    for (t, name) in [(dA, "dA"), (dB, "dB")] {
        guard let t else { continue }
        try t.expectShape(dOut.shape, "add backward", name)
        let d = t.data, g = dOut.data
        for i in 0..<t.count { d[i] += g[i] }
    }
}

/// The logistic function, computed stably for large |x|.
@inline(__always) public func sigmoid(_ x: Float) -> Float {
    x >= 0 ? 1 / (1 + expf(-x)) : { let e = expf(x); return e / (1 + e) }()
}

/// out = 1/(1 + e^(−input)).
public func sigmoidForward(out: Tensor, input: Tensor) throws {
    try out.expectShape(input.shape, "sigmoid", "out")
    for i in 0..<input.count { out.data[i] = sigmoid(input.data[i]) }
}

/// dInput += dOut · y · (1 − y), with y the forward output.
public func sigmoidBackward(dInput: Tensor, dOut: Tensor, output: Tensor) throws {
    try dOut.expectShape(output.shape, "sigmoid backward", "dOut")
    try dInput.expectShape(output.shape, "sigmoid backward", "dInput")
    for i in 0..<output.count { let y = output.data[i]; dInput.data[i] += dOut.data[i] * y * (1 - y) }
}

// MARK: - softmax (over the last dimension)

/// out[r, :] = softmax(input[r, :]) over the last dimension.
public func softmaxForward(out: Tensor, input: Tensor) throws {
    try out.expectShape(input.shape, "softmax", "out")
    guard let cols = input.shape.last, cols > 0 else { throw TensorError.invalidArgument(op: "softmax", detail: "input \(shapeString(input.shape)) has no last dimension") }
    let rows = input.count / cols
    for r in 0..<rows {
        let x = input.data + r * cols, y = out.data + r * cols
        var m = -Float.infinity
        for j in 0..<cols { m = max(m, x[j]) }
        var s: Float = 0
        for j in 0..<cols { let e = expf(x[j] - m); y[j] = e; s += e }
        let inv = 1 / s
        for j in 0..<cols { y[j] *= inv }
    }
}

/// dInput[r, :] += y ⊙ (dOut − ⟨dOut, y⟩), with y the forward output.
public func softmaxBackward(dInput: Tensor, dOut: Tensor, output: Tensor) throws {
    try dOut.expectShape(output.shape, "softmax backward", "dOut")
    try dInput.expectShape(output.shape, "softmax backward", "dInput")
    guard let cols = output.shape.last, cols > 0 else { return }
    for r in 0..<(output.count / cols) {
        let y = output.data + r * cols, g = dOut.data + r * cols, d = dInput.data + r * cols
        var dot: Float = 0
        for j in 0..<cols { dot += g[j] * y[j] }
        for j in 0..<cols { d[j] += y[j] * (g[j] - dot) }
    }
}

// MARK: - max_pool2d

/// Checks a max pool's arguments and returns (n, c, h, w, oh, ow).
private func checkMaxPool(out: Tensor, input: Tensor, kernel: Int, stride: Int, padding: Int) throws -> (Int, Int, Int, Int, Int, Int) {
    let op = "max_pool2d"
    try input.expectRank(4, op, "input")
    guard kernel > 0, stride > 0, padding >= 0, padding * 2 <= kernel else {
        throw TensorError.invalidArgument(op: op, detail: "kernel \(kernel), stride \(stride), padding \(padding)")
    }
    let n = input.shape[0], c = input.shape[1], h = input.shape[2], w = input.shape[3]
    let oh = (h + 2 * padding - kernel) / stride + 1, ow = (w + 2 * padding - kernel) / stride + 1
    guard oh > 0, ow > 0 else { throw TensorError.invalidArgument(op: op, detail: "input \(shapeString(input.shape)) too small for kernel \(kernel)") }
    try out.expectShape([n, c, oh, ow], op, "out")
    return (n, c, h, w, oh, ow)
}

/// Max pooling with −∞ padding; `indices` receives the flat input-plane index of each maximum
/// (the first one in scan order on ties, as PyTorch).
/// - Precondition: input [n, c, h, w]; out and indices [n, c, oh, ow] with
///   oh = (h + 2p − k)/s + 1 (floor mode).
public func maxPool2dForward(out: Tensor, indices: UnsafeMutablePointer<Int32>, input: Tensor, kernel: Int, stride: Int, padding: Int) throws {
    let (n, c, h, w, oh, ow) = try checkMaxPool(out: out, input: input, kernel: kernel, stride: stride, padding: padding)
    // Scanning a window row by row, a value replaces the best so far when it is larger or NaN: the
    // first maximum wins, or the last NaN. The same choice in two passes: along each input row
    // (each row's winner), then down the window's rows (the first row whose winner is larger, or
    // the last with a NaN).
    parallelFor(n * c, minChunk: 4) { p in
        let x = input.data + p * h * w, y = out.data + p * oh * ow, ix = indices + p * oh * ow
        withUnsafeTemporaryAllocation(of: Float.self, capacity: h * ow) { rowBestBuf in
            withUnsafeTemporaryAllocation(of: Int32.self, capacity: h * ow) { rowArgBuf in
                let rowBest = rowBestBuf.baseAddress!, rowArg = rowArgBuf.baseAddress!
                for yy in 0..<h {
                    let xr = x + yy * w, br = rowBest + yy * ow, ar = rowArg + yy * ow
                    // The ResNet stem's pool (3×3, stride 2, padding 1): eight outputs at a time
                    // where all their windows are inside the row, the rest below.
                    let vectorEnd = kernel == 3 && stride == 2 && padding == 1 ? stemRowWinners(xr, w: w, ow: ow, row: yy, best: br, arg: ar) : 0
                    for ox in 0..<ow where ox == 0 || ox >= vectorEnd {
                        let x0 = ox * stride - padding, xLo = max(x0, 0), xHi = min(x0 + kernel, w)
                        var best = xr[xLo], bi = xLo
                        for xx in (xLo + 1)..<max(xHi, xLo + 1) {
                            // v > best, or v NaN (never both): without a branch, which random data mispredicts
                            let v = xr[xx], take = (v > best) != v.isNaN
                            best = take ? v : best; bi = take ? xx : bi
                        }
                        br[ox] = best
                        ar[ox] = Int32(yy * w + bi)
                    }
                }
                for oy in 0..<oh {
                    let y0 = oy * stride - padding, yLo = max(y0, 0), yHi = min(y0 + kernel, h)
                    var ox = 0
                    while ox + 8 <= ow {  // down the window's rows, eight columns at a time
                        var best = load8(rowBest + yLo * ow + ox), bi = load8(rowArg + yLo * ow + ox)
                        for yy in (yLo + 1)..<max(yHi, yLo + 1) {
                            let v = load8(rowBest + yy * ow + ox), take = (v .> best) .^ (v .!= v)
                            best.replace(with: v, where: take); bi.replace(with: load8(rowArg + yy * ow + ox), where: take)
                        }
                        store8(best, y + oy * ow + ox); store8(bi, ix + oy * ow + ox)
                        ox += 8
                    }
                    for ox in ox..<ow {
                        var best = rowBest[yLo * ow + ox], bi = rowArg[yLo * ow + ox]
                        for yy in (yLo + 1)..<max(yHi, yLo + 1) {
                            let v = rowBest[yy * ow + ox], take = (v > best) != v.isNaN
                            best = take ? v : best; bi = take ? rowArg[yy * ow + ox] : bi
                        }
                        y[oy * ow + ox] = best
                        ix[oy * ow + ox] = bi
                    }
                }
            }
        }
    }
}

@inline(__always) private func load8<T: SIMDScalar>(_ p: UnsafePointer<T>) -> SIMD8<T> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD8<T>.self)
}
@inline(__always) private func load8<T: SIMDScalar>(_ p: UnsafeMutablePointer<T>) -> SIMD8<T> { load8(UnsafePointer(p)) }
@inline(__always) private func store8<T: SIMDScalar>(_ v: SIMD8<T>, _ p: UnsafeMutablePointer<T>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<T>.self)
}

/// Each window's winner along one input row for a 3×3, stride-2, padding-1 pool (window of output
/// ox: columns 2·ox − 1, 2·ox, 2·ox + 1, scanned in that order; a value wins when larger or NaN),
/// eight outputs at a time from ox = 1 while the windows' 16-float loads stay inside the row.
/// Returns the first output not written (outputs 0 and from there on are left to the caller).
@inline(__always)
private func stemRowWinners(_ xr: UnsafePointer<Float>, w: Int, ow: Int, row: Int,
                            best br: UnsafeMutablePointer<Float>, arg ar: UnsafeMutablePointer<Int32>) -> Int {
    var o0 = 1
    let lane = SIMD8<Int32>(0, 2, 4, 6, 8, 10, 12, 14)
    while o0 + 8 <= ow && 2 * o0 + 16 <= w {
        let before = UnsafeRawPointer(xr + 2 * o0 - 2).loadUnaligned(as: SIMD16<Float>.self)
        let at = UnsafeRawPointer(xr + 2 * o0).loadUnaligned(as: SIMD16<Float>.self)
        var best = before.oddHalf  // columns 2·ox − 1
        var bi = SIMD8<Int32>(repeating: Int32(row * w + 2 * o0 - 1)) &+ lane
        let even = at.evenHalf, odd = at.oddHalf  // 2·ox, 2·ox + 1
        var take = (even .> best) .^ (even .!= even)
        best.replace(with: even, where: take); bi.replace(with: bi &+ 1, where: take)
        take = (odd .> best) .^ (odd .!= odd)
        let base = SIMD8<Int32>(repeating: Int32(row * w + 2 * o0 + 1)) &+ lane
        best.replace(with: odd, where: take); bi.replace(with: base, where: take)
        store8(best, br + o0); store8(bi, ar + o0)
        o0 += 8
    }
    return o0
}

/// `maxPool2dForward(out:indices:…)` without the argmax indices (inference): the same maxima
/// (NaN wins, as in PyTorch), computed separably: the column maxima of each output row's input
/// rows, then the maxima of those along the row.
public func maxPool2dForward(out: Tensor, input: Tensor, kernel: Int, stride: Int, padding: Int) throws {
    let (n, c, h, w, oh, ow) = try checkMaxPool(out: out, input: input, kernel: kernel, stride: stride, padding: padding)
    @inline(__always) func larger(_ a: Float, _ b: Float) -> Float { b > a || b.isNaN ? b : a }
    parallelFor(n * c, minChunk: 4) { p in
        let x = input.data + p * h * w, y = out.data + p * oh * ow
        withUnsafeTemporaryAllocation(of: Float.self, capacity: w) { colBuf in
            let col = colBuf.baseAddress!
            for oy in 0..<oh {
                let y0 = oy * stride - padding, yLo = max(y0, 0), yHi = min(y0 + kernel, h)
                col.update(from: x + yLo * w, count: w)
                for yy in (yLo + 1)..<max(yHi, yLo + 1) {
                    let r = x + yy * w
                    for i in 0..<w { col[i] = larger(col[i], r[i]) }
                }
                let yr = y + oy * ow
                var vectorEnd = 0
                if kernel == 3 && stride == 2 && padding == 1 {  // the stem's pool: eight outputs at a time from 1
                    vectorEnd = 1
                    while vectorEnd + 8 <= ow && 2 * vectorEnd + 16 <= w {
                        let before = UnsafeRawPointer(col + 2 * vectorEnd - 2).loadUnaligned(as: SIMD16<Float>.self)
                        let at = UnsafeRawPointer(col + 2 * vectorEnd).loadUnaligned(as: SIMD16<Float>.self)
                        var best = before.oddHalf
                        for v in [at.evenHalf, at.oddHalf] { best.replace(with: v, where: (v .> best) .| (v .!= v)) }
                        store8(best, yr + vectorEnd)
                        vectorEnd += 8
                    }
                }
                for ox in 0..<ow where ox == 0 || ox >= vectorEnd {
                    let x0 = ox * stride - padding, xLo = max(x0, 0), xHi = min(x0 + kernel, w)
                    var best = col[xLo]
                    for xx in (xLo + 1)..<max(xHi, xLo + 1) { best = larger(best, col[xx]) }
                    yr[ox] = best
                }
            }
        }
    }
}

/// dInput[argmax] += dOut for each pooled cell.
public func maxPool2dBackward(dInput: Tensor, dOut: Tensor, indices: UnsafePointer<Int32>) throws {
    try dInput.expectRank(4, "max_pool2d backward", "dInput"); try dOut.expectRank(4, "max_pool2d backward", "dOut")
    guard dInput.shape[0] == dOut.shape[0], dInput.shape[1] == dOut.shape[1] else {
        throw TensorError.shapeMismatch(op: "max_pool2d backward", detail: "dInput \(shapeString(dInput.shape)), dOut \(shapeString(dOut.shape))")
    }
    let planes = dOut.shape[0] * dOut.shape[1], ip = dInput.shape[2] * dInput.shape[3], op = dOut.shape[2] * dOut.shape[3]
    parallelFor(planes, minChunk: 8) { p in
        let d = dInput.data + p * ip, g = dOut.data + p * op, ix = indices + p * op
        for i in 0..<op { d[Int(ix[i])] += g[i] }
    }
}

// MARK: - bilinear resize (align_corners = false)

/// Source coordinate and interpolation weights of one output index, as PyTorch's
/// upsample_bilinear2d with align_corners = false computes them.
@inline(__always)
func bilinearTap(_ dst: Int, scale: Float, inSize: Int) -> (i0: Int, i1: Int, l0: Float, l1: Float) {
    var src = scale * (Float(dst) + 0.5) - 0.5
    if src < 0 { src = 0 }
    let i0 = min(Int(src), inSize - 1)
    let i1 = i0 + (i0 < inSize - 1 ? 1 : 0)
    let l1 = src - Float(i0)
    return (i0, i1, 1 - l1, l1)
}

/// Bilinear resize of every [h, w] plane to [oh, ow] (align_corners = false, no antialiasing).
/// - Precondition: input [n, c, h, w]; out [n, c, oh, ow].
public func bilinearResizeForward(out: Tensor, input: Tensor) throws {
    try input.expectRank(4, "bilinear_resize", "input"); try out.expectRank(4, "bilinear_resize", "out")
    guard out.shape[0] == input.shape[0], out.shape[1] == input.shape[1], input.shape[2] > 0, input.shape[3] > 0 else {
        throw TensorError.shapeMismatch(op: "bilinear_resize", detail: "input \(shapeString(input.shape)), out \(shapeString(out.shape))")
    }
    let h = input.shape[2], w = input.shape[3], oh = out.shape[2], ow = out.shape[3]
    bilinearResize(input.data, planes: input.shape[0] * input.shape[1], h: h, w: w, out: out.data, oh: oh, ow: ow)
}

/// Bilinear resize of `planes` [h, w] planes into [oh, ow] planes (align_corners = false).
public func bilinearResize(_ x: UnsafePointer<Float>, planes: Int, h: Int, w: Int, out: UnsafeMutablePointer<Float>, oh: Int, ow: Int) {
    let sy = Float(h) / Float(oh), sx = Float(w) / Float(ow)
    let xt = (0..<ow).map { bilinearTap($0, scale: sx, inSize: w) }
    let yt = (0..<oh).map { bilinearTap($0, scale: sy, inSize: h) }
    parallelFor(planes, minChunk: 1) { p in
        let src = x + p * h * w, dst = out + p * oh * ow
        for oy in 0..<oh {
            let t = yt[oy], r0 = src + t.i0 * w, r1 = src + t.i1 * w, d = dst + oy * ow
            for ox in 0..<ow {
                let u = xt[ox]
                d[ox] = t.l0 * (u.l0 * r0[u.i0] + u.l1 * r0[u.i1]) + t.l1 * (u.l0 * r1[u.i0] + u.l1 * r1[u.i1])
            }
        }
    }
}

/// Gradient of `bilinearResizeForward`, accumulated into dInput.
public func bilinearResizeBackward(dInput: Tensor, dOut: Tensor) throws {
    try dInput.expectRank(4, "bilinear_resize backward", "dInput"); try dOut.expectRank(4, "bilinear_resize backward", "dOut")
    guard dOut.shape[0] == dInput.shape[0], dOut.shape[1] == dInput.shape[1] else {
        throw TensorError.shapeMismatch(op: "bilinear_resize backward", detail: "dInput \(shapeString(dInput.shape)), dOut \(shapeString(dOut.shape))")
    }
    let h = dInput.shape[2], w = dInput.shape[3], oh = dOut.shape[2], ow = dOut.shape[3]
    let sy = Float(h) / Float(oh), sx = Float(w) / Float(ow)
    let xt = (0..<ow).map { bilinearTap($0, scale: sx, inSize: w) }
    let yt = (0..<oh).map { bilinearTap($0, scale: sy, inSize: h) }
    parallelFor(dInput.shape[0] * dInput.shape[1]) { p in
        let d = dInput.data + p * h * w, g = dOut.data + p * oh * ow
        for oy in 0..<oh {
            let t = yt[oy], r0 = d + t.i0 * w, r1 = d + t.i1 * w, gr = g + oy * ow
            for ox in 0..<ow {
                let u = xt[ox], v = gr[ox]
                r0[u.i0] += t.l0 * u.l0 * v; r0[u.i1] += t.l0 * u.l1 * v
                r1[u.i0] += t.l1 * u.l0 * v; r1[u.i1] += t.l1 * u.l1 * v
            }
        }
    }
}
