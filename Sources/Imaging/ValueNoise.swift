/// Smooth random fields for phantom texture: value noise on a coarse lattice, interpolated with a
/// smoothstep-weighted bilinear filter.
enum ValueNoise {
    /// Fills `out` (height × width, row-major) with noise of roughly unit amplitude (lattice values
    /// uniform in [−1, 1]) and feature size `cell` pixels; adds `amplitude` × noise to what is there.
    /// - Precondition: `cell > 0`.
    static func add(to out: UnsafeMutablePointer<Float>, width: Int, height: Int, cell: Float, amplitude: Float,
                    rng: inout SeededGenerator) {
        precondition(cell > 0, "noise cell size must be positive")
        let gw = Int(Float(width) / cell) + 2, gh = Int(Float(height) / cell) + 2
        var lattice = [Float](repeating: 0, count: gw * gh)
        for i in 0..<lattice.count { lattice[i] = Float(rng.unit() * 2 - 1) }
        // Per-column lattice index and smoothed weight, computed once.
        var cx = [Int](repeating: 0, count: width)
        var wx = [Float](repeating: 0, count: width)
        let inv = 1 / cell
        for x in 0..<width {
            let f = Float(x) * inv
            let i = Int(f)
            let t = f - Float(i)
            cx[x] = i
            wx[x] = t * t * (3 - 2 * t)
        }
        lattice.withUnsafeBufferPointer { lat in
            cx.withUnsafeBufferPointer { cxp in
                wx.withUnsafeBufferPointer { wxp in
                    let l = lat.baseAddress!
                    for y in 0..<height {
                        let f = Float(y) * inv
                        let j = Int(f)
                        var t = f - Float(j)
                        t = t * t * (3 - 2 * t)
                        let r0 = l + j * gw, r1 = r0 + gw
                        let o = out + y * width
                        for x in 0..<width {
                            let i = cxp[x], s = wxp[x]
                            let top = r0[i] + s * (r0[i + 1] - r0[i])
                            let bottom = r1[i] + s * (r1[i + 1] - r1[i])
                            o[x] += amplitude * (top + t * (bottom - top))
                        }
                    }
                }
            }
        }
    }
}
