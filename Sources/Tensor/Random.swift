/// A seeded, serialisable pseudo-random generator (xoshiro256**, seeded through SplitMix64).
///
/// Every random choice of the project (initialisation, RPN/RoI sampling, RoI-batch padding,
/// shuffling, phantoms) takes one of these explicitly, so a run is reproducible and a resumed
/// run continues the same sequence (`state` can be saved and restored).
public struct SeededGenerator: RandomNumberGenerator, Sendable, Equatable, Codable {
    public var state: [UInt64]

    public init(seed: UInt64) {
        var s = seed
        var st = [UInt64](repeating: 0, count: 4)
        for i in 0..<4 {
            s &+= 0x9E37_79B9_7F4A_7C15
            var z = s
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            st[i] = z ^ (z >> 31)
        }
        state = st
    }

    /// Restores a generator from a saved `state` (4 words, not all zero).
    public init?(state: [UInt64]) {
        guard state.count == 4, state.contains(where: { $0 != 0 }) else { return nil }
        self.state = state
    }

    @inline(__always)
    private static func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    public mutating func next() -> UInt64 {
        let result = Self.rotl(state[1] &* 5, 7) &* 9
        let t = state[1] << 17
        state[2] ^= state[0]; state[3] ^= state[1]; state[1] ^= state[2]; state[0] ^= state[3]
        state[2] ^= t
        state[3] = Self.rotl(state[3], 45)
        return result
    }

    /// Uniform in [0, 1) with 24 bits of precision.
    public mutating func nextUnitFloat() -> Float { Float(next() >> 40) * (1.0 / 16_777_216.0) }

    /// Uniform in [0, 1) with 53 bits of precision.
    public mutating func nextUnitDouble() -> Double { Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0) }

    /// A standard normal sample (Box–Muller on doubles).
    public mutating func nextNormal() -> Double {
        var u1 = nextUnitDouble()
        while u1 <= 0 { u1 = nextUnitDouble() }
        let u2 = nextUnitDouble()
        return (-2 * _log(u1)).squareRoot() * _cos(2 * Double.pi * u2)
    }

    /// A uniformly random permutation of 0..<n (Fisher–Yates).
    public mutating func permutation(_ n: Int) -> [Int] {
        var p = Array(0..<n)
        if n > 1 {
            for i in stride(from: n - 1, to: 0, by: -1) {
                let j = Int(next() % UInt64(i + 1))
                p.swapAt(i, j)
            }
        }
        return p
    }
}

import Foundation
@inline(__always) private func _log(_ x: Double) -> Double { Foundation.log(x) }
@inline(__always) private func _cos(_ x: Double) -> Double { Foundation.cos(x) }

/// Initialisers matching PyTorch's, drawing from a `SeededGenerator`.
public enum Init {
    /// Fills with N(mean, std²).
    public static func normal(_ t: Tensor, mean: Float = 0, std: Float, rng: inout SeededGenerator) {
        for i in 0..<t.count { t.data[i] = mean + std * Float(rng.nextNormal()) }
    }

    /// Fills with U(−bound, bound).
    public static func uniform(_ t: Tensor, bound: Float, rng: inout SeededGenerator) {
        for i in 0..<t.count { t.data[i] = (2 * rng.nextUnitFloat() - 1) * bound }
    }

    /// Kaiming normal with ReLU gain, fan_out mode: std = √(2 / (dim0 · receptive field)),
    /// computed from the tensor's dimension 0 as PyTorch does (also for ConvTranspose weights).
    public static func kaimingNormalFanOut(_ t: Tensor, rng: inout SeededGenerator) {
        let receptive = t.shape.dropFirst(2).reduce(1, *)
        let fanOut = (t.shape.first ?? 1) * receptive
        normal(t, std: (2.0 / Float(max(fanOut, 1))).squareRoot(), rng: &rng)
    }

    /// PyTorch's fan_in: dim1 · receptive field.
    public static func fanIn(_ shape: [Int]) -> Int {
        shape.count < 2 ? (shape.first ?? 1) : shape[1] * shape.dropFirst(2).reduce(1, *)
    }
}
