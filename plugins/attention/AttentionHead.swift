// attention — classification head: learned attention pooling over the RoIs, then the MLP of
// MODEL.md §6.4 (so only the pooling differs from the affinity model and the meanpool baseline).
//
//   x_k = spatial mean of RoI k's features                      [R, C]
//   u_k = tanh(V x_k + b)                                       [R, A]   attention.V.weight [A, C], attention.V.bias [A]
//   s_k = w · u_k                                               [R]      attention.w.weight [1, A]
//   α = softmax(s),  z = Σ_k α_k x_k                            [C]
//   logits = fc3(relu(fc2(relu(fc1(z)))))                      fc1 C→hidden, fc2 hidden→hidden, logits hidden→3
//
// (Ilse et al. 2018 attention-based MIL pooling.) Initialisation: PyTorch's default Linear init,
// U(−1/√fan_in, 1/√fan_in), from a splitmix64 stream of the seed. Config JSON: "channels" (256),
// "hidden" (128), "attention" (64).
import AffinityPluginSupport
import CAffinityPlugin
import Foundation

private let parameterNames = ["attention.V.weight", "attention.V.bias", "attention.w.weight",
                              "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "logits.weight", "logits.bias"]
private let parameterNamePointers = parameterNames.map(immortal)

private final class AttentionHead {
    let C: Int, H: Int, A: Int
    let shapes: [[Int]]
    let offsets: [Int]
    let total: Int
    let values: UnsafeMutablePointer<Float>
    let grads: UnsafeMutablePointer<Float>
    // Kept from the last forward.
    var rois = 0, plane = 0
    var x: [Float] = [], u: [Float] = [], alpha: [Float] = [], z: [Float], h1: [Float], h2: [Float]

    init(channels: Int, hidden: Int, attention: Int, seed: UInt64) {
        C = channels; H = hidden; A = attention
        shapes = [[A, C], [A], [1, A], [H, C], [H], [H, H], [H], [3, H], [3]]
        var offsets: [Int] = [], o = 0
        for s in shapes { offsets.append(o); o += s.reduce(1, *) }
        self.offsets = offsets
        total = o
        values = .allocate(capacity: total)
        grads = .allocate(capacity: total)
        grads.initialize(repeating: 0, count: total)
        z = [Float](repeating: 0, count: C); h1 = [Float](repeating: 0, count: H); h2 = [Float](repeating: 0, count: H)
        var state = seed
        let fanIn = [C, C, A, C, C, H, H, H, H]
        for (i, s) in shapes.enumerated() {
            let bound = 1 / Float(fanIn[i]).squareRoot()
            for j in 0..<s.reduce(1, *) { values[offsets[i] + j] = uniform(&state, bound) }
        }
    }

    deinit { values.deallocate(); grads.deallocate() }

    func value(_ i: Int) -> UnsafeMutablePointer<Float> { values + offsets[i] }
    func grad(_ i: Int) -> UnsafeMutablePointer<Float> { grads + offsets[i] }

    func forward(_ f: UnsafePointer<Float>, rois R: Int, plane P: Int, logits: UnsafeMutablePointer<Float>) {
        rois = R; plane = P
        x = [Float](repeating: 0, count: R * C)
        u = [Float](repeating: 0, count: R * A)
        alpha = [Float](repeating: 0, count: R)
        let inv = 1 / Double(P)
        for k in 0..<R {
            for c in 0..<C {
                let row = f + (k * C + c) * P
                var s = 0.0
                for i in 0..<P { s += Double(row[i]) }
                x[k * C + c] = Float(s * inv)
            }
        }
        let V = value(0), b = value(1), w = value(2)
        var scores = [Double](repeating: 0, count: R)
        for k in 0..<R {
            var sk = 0.0
            for a in 0..<A {
                var s = Double(b[a])
                let vr = V + a * C
                for c in 0..<C { s += Double(vr[c]) * Double(x[k * C + c]) }
                let t = Float(tanh(s))
                u[k * A + a] = t
                sk += Double(w[a]) * Double(t)
            }
            scores[k] = sk
        }
        let top = scores.max() ?? 0
        let e = scores.map { exp($0 - top) }
        let sum = e.reduce(0, +)
        for k in 0..<R { alpha[k] = Float(e[k] / sum) }
        for c in 0..<C {
            var s = 0.0
            for k in 0..<R { s += Double(alpha[k]) * Double(x[k * C + c]) }
            z[c] = Float(s)
        }
        linear(&h1, z, value(3), value(4), C, H, relu: true)
        linear(&h2, h1, value(5), value(6), H, H, relu: true)
        var out = [Float](repeating: 0, count: 3)
        linear(&out, h2, value(7), value(8), H, 3, relu: false)
        for i in 0..<3 { logits[i] = out[i] }
    }

    func backward(_ dlogits: UnsafePointer<Float>, _ df: UnsafeMutablePointer<Float>?) {
        let R = rois
        let dl = (0..<3).map { dlogits[$0] }
        var dh2 = linearBackward(dl, h2, value(7), grad(7), grad(8), H, 3)
        for i in 0..<H where h2[i] <= 0 { dh2[i] = 0 }
        var dh1 = linearBackward(dh2, h1, value(5), grad(5), grad(6), H, H)
        for i in 0..<H where h1[i] <= 0 { dh1[i] = 0 }
        let dz = linearBackward(dh1, z, value(3), grad(3), grad(4), C, H)
        // z = Σ α_k x_k
        var dx = [Float](repeating: 0, count: R * C)
        var dalpha = [Double](repeating: 0, count: R)
        for k in 0..<R {
            var s = 0.0
            for c in 0..<C {
                s += Double(dz[c]) * Double(x[k * C + c])
                dx[k * C + c] = alpha[k] * dz[c]
            }
            dalpha[k] = s
        }
        // α = softmax(s)
        var dot = 0.0
        for k in 0..<R { dot += Double(alpha[k]) * dalpha[k] }
        let V = value(0), w = value(2), dV = grad(0), db = grad(1), dw = grad(2)
        for k in 0..<R {
            let ds = Float(Double(alpha[k]) * (dalpha[k] - dot))
            for a in 0..<A {
                let t = u[k * A + a]
                dw[a] += ds * t
                let dpre = ds * w[a] * (1 - t * t)
                if dpre == 0 { continue }
                db[a] += dpre
                let vr = V + a * C, dvr = dV + a * C
                for c in 0..<C {
                    dvr[c] += dpre * x[k * C + c]
                    dx[k * C + c] += dpre * vr[c]
                }
            }
        }
        guard let df else { return }
        let scale = 1 / Float(plane)
        for k in 0..<R {
            for c in 0..<C {
                let g = dx[k * C + c] * scale
                let row = df + (k * C + c) * plane
                for i in 0..<plane { row[i] += g }
            }
        }
    }
}

/// y[o] = relu?(b[o] + Σ_i W[o, i] x[i])
private func linear(_ y: inout [Float], _ x: [Float], _ W: UnsafeMutablePointer<Float>, _ b: UnsafeMutablePointer<Float>,
                    _ n: Int, _ m: Int, relu: Bool) {
    for o in 0..<m {
        var s = Double(b[o])
        let row = W + o * n
        for i in 0..<n { s += Double(row[i]) * Double(x[i]) }
        y[o] = relu && s < 0 ? 0 : Float(s)
    }
}

/// dW += dy ⊗ x, db += dy; returns Wᵀ dy.
private func linearBackward(_ dy: [Float], _ x: [Float], _ W: UnsafeMutablePointer<Float>, _ dW: UnsafeMutablePointer<Float>,
                            _ db: UnsafeMutablePointer<Float>, _ n: Int, _ m: Int) -> [Float] {
    var dx = [Float](repeating: 0, count: n)
    for o in 0..<m {
        let g = dy[o]
        db[o] += g
        if g == 0 { continue }
        let row = W + o * n, drow = dW + o * n
        for i in 0..<n { drow[i] += g * x[i]; dx[i] += g * row[i] }
    }
    return dx
}

private func splitmix64(_ state: inout UInt64) -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}

private func uniform(_ state: inout UInt64, _ bound: Float) -> Float {
    let u = Double(splitmix64(&state) >> 11) * (1.0 / 9_007_199_254_740_992.0)
    return Float((2 * u - 1) * Double(bound))
}

private func head(_ h: UnsafeMutableRawPointer?) -> AttentionHead? {
    h.map { Unmanaged<AttentionHead>.fromOpaque($0).takeUnretainedValue() }
}

private let create: @convention(c) (UnsafePointer<CChar>?, UInt64, UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                                    UnsafeMutablePointer<affinity_error>?) -> Int32 = { config, seed, out, errorOut in
    guard let out else { return fail(errorOut, AFFINITY_E_INVALID_ARGUMENT, "The attention head was created without a place to put it.") }
    out.pointee = nil
    let channels: Double, hidden: Double, attention: Double
    do {
        let options = try parseOptions(config)
        try checkKeys(options, allowed: ["channels", "hidden", "attention"], plugin: "attention")
        channels = try numberOption(options, "channels", 256)
        hidden = try numberOption(options, "hidden", 128)
        attention = try numberOption(options, "attention", 64)
    } catch let e as OptionsError {
        return fail(errorOut, AFFINITY_E_INVALID_ARGUMENT, e.message)
    } catch {
        return fail(errorOut, AFFINITY_E_INVALID_ARGUMENT, "The config cannot be read.")
    }
    for (name, v) in [("channels", channels), ("hidden", hidden), ("attention", attention)] {
        guard v >= 1, v <= 65536, v == v.rounded() else {
            return fail(errorOut, AFFINITY_E_INVALID_ARGUMENT, "The attention head's \"\(name)\" must be an integer in 1…65536, got \(v).")
        }
    }
    let h = AttentionHead(channels: Int(channels), hidden: Int(hidden), attention: Int(attention), seed: seed)
    out.pointee = Unmanaged.passRetained(h).toOpaque()
    return AFFINITY_OK
}

private let parameterCount: @convention(c) (UnsafeMutableRawPointer?) -> Int32 = { h in head(h) == nil ? 0 : Int32(parameterNames.count) }

private let parameter: @convention(c) (UnsafeMutableRawPointer?, Int32, UnsafeMutablePointer<affinity_parameter>?,
                                       UnsafeMutablePointer<affinity_error>?) -> Int32 = { h, index, out, errorOut in
    guard let h = head(h), let out else { return fail(errorOut, AFFINITY_E_INVALID_ARGUMENT, "attention: parameter() needs a head and an output struct.") }
    guard index >= 0, Int(index) < parameterNames.count else {
        return fail(errorOut, AFFINITY_E_INVALID_ARGUMENT, "The attention head has \(parameterNames.count) parameters; index \(index) is out of range.")
    }
    let i = Int(index), shape = h.shapes[i]
    var p = affinity_parameter()
    p.struct_size = UInt32(MemoryLayout<affinity_parameter>.size)
    p.rank = UInt32(shape.count)
    p.shape = (Int64(shape[0]), Int64(shape.count > 1 ? shape[1] : 1), 1, 1)
    p.count = Int64(shape.reduce(1, *))
    p.name = parameterNamePointers[i]
    p.value = h.value(i)
    p.gradient = h.grad(i)
    let hostSize = Int(out.pointee.struct_size)
    let n = hostSize > 0 && hostSize < MemoryLayout<affinity_parameter>.size ? hostSize : MemoryLayout<affinity_parameter>.size
    p.struct_size = UInt32(n)
    withUnsafeBytes(of: &p) { UnsafeMutableRawPointer(out).copyMemory(from: $0.baseAddress!, byteCount: n) }
    return AFFINITY_OK
}

private let forward: @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<Float>?, Int32, Int32, Int32, Int32,
                                     UnsafeMutablePointer<Float>?, UnsafeMutablePointer<affinity_error>?) -> Int32 = {
    h, features, rois, channels, height, width, logits, errorOut in
    guard let h = head(h), let features, let logits else { return fail(errorOut, AFFINITY_E_INVALID_ARGUMENT, "attention: forward() got a NULL pointer.") }
    guard rois >= 1, height >= 1, width >= 1, Int(channels) == h.C else {
        return fail(errorOut, AFFINITY_E_INVALID_ARGUMENT,
                    "The attention head expects features [rois ≥ 1, \(h.C), h ≥ 1, w ≥ 1], got [\(rois), \(channels), \(height), \(width)].")
    }
    h.forward(features, rois: Int(rois), plane: Int(height) * Int(width), logits: logits)
    return AFFINITY_OK
}

private let backward: @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<Float>?, UnsafeMutablePointer<Float>?,
                                      UnsafeMutablePointer<affinity_error>?) -> Int32 = { h, dlogits, df, errorOut in
    guard let h = head(h), let dlogits else { return fail(errorOut, AFFINITY_E_INVALID_ARGUMENT, "attention: backward() got a NULL pointer.") }
    guard h.rois > 0 else { return fail(errorOut, AFFINITY_E_INVALID_ARGUMENT, "The attention head's backward was called before any forward.") }
    h.backward(dlogits, df)
    return AFFINITY_OK
}

private let destroy: @convention(c) (UnsafeMutableRawPointer?) -> Void = { h in
    if let h { Unmanaged<AttentionHead>.fromOpaque(h).release() }
}

private let headTable: UnsafePointer<affinity_head> = {
    let t = UnsafeMutablePointer<affinity_head>.allocate(capacity: 1)
    t.initialize(to: affinity_head(struct_size: UInt32(MemoryLayout<affinity_head>.size), reserved: 0, create: create,
                                   parameter_count: parameterCount, parameter: parameter, forward: forward,
                                   backward: backward, destroy: destroy))
    return UnsafePointer(t)
}()

private let descriptor = makeDescriptor(
    id: "attention", version: "1.0.0",
    description: "Classification head: learned attention pooling over the RoI feature vectors, then a 3-layer MLP.",
    kind: AFFINITY_KIND_HEAD, head: headTable)

@_cdecl("affinity_plugin_entry")
public func affinityPluginEntry(_ hostABIVersion: UInt32) -> UnsafePointer<affinity_plugin>? { descriptor }
