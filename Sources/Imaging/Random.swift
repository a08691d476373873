/// SplitMix64: a one-word generator used to seed and to mix seeds (Steele, Lea & Flood 2014).
public struct SplitMix64: RandomNumberGenerator, Sendable {
    /// The generator's whole state.
    public var state: UInt64

    /// A generator starting from `seed`.
    public init(seed: UInt64) { state = seed }

    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A well-mixed 64-bit value derived from several integers (for per-item seeds).
    public static func mix(_ values: UInt64...) -> UInt64 {
        var g = SplitMix64(seed: 0x2545_F491_4F6C_DD1D)
        var h: UInt64 = 0
        for v in values {
            g.state ^= v &+ h
            h = g.next()
        }
        return h
    }
}

/// xoshiro256** (Blackman & Vigna 2018): the fast, seeded generator behind every random choice of
/// the phantom generator. Identical seeds give identical streams on every machine.
public struct Xoshiro256: RandomNumberGenerator, Sendable {
    private var s0: UInt64, s1: UInt64, s2: UInt64, s3: UInt64

    /// A generator whose 256-bit state is filled from `seed` by SplitMix64 (never all zero).
    public init(seed: UInt64) {
        var sm = SplitMix64(seed: seed)
        s0 = sm.next()
        s1 = sm.next()
        s2 = sm.next()
        s3 = sm.next()
        if s0 | s1 | s2 | s3 == 0 { s0 = 1 }
    }

    /// The next 64 random bits.
    @inline(__always)
    public mutating func next() -> UInt64 {
        let result = ((s1 &* 5) << 7 | (s1 &* 5) >> 57) &* 9
        let t = s1 << 17
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = s3 << 45 | s3 >> 19
        return result
    }

    /// A uniform Double in [0, 1) with 53 random bits.
    @inline(__always)
    public mutating func unit() -> Double {
        Double(next() >> 11) * 0x1.0p-53
    }

    /// A uniform Double in [lo, hi).
    @inline(__always)
    public mutating func uniform(_ lo: Double, _ hi: Double) -> Double {
        lo + (hi - lo) * unit()
    }

    /// A uniform integer in `range` (bias below 2⁻³², irrelevant here, and reproducible).
    public mutating func int(_ range: ClosedRange<Int>) -> Int {
        let span = UInt64(range.upperBound - range.lowerBound + 1)
        return range.lowerBound + Int(((next() >> 32) * span) >> 32)
    }

    /// True with probability `p`.
    public mutating func chance(_ p: Double) -> Bool { unit() < p }

    /// A standard normal value (Box–Muller; one of the pair is discarded for simplicity).
    public mutating func normal() -> Double {
        let u1 = max(unit(), 1e-300), u2 = unit()
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }

    /// An index drawn with the given (unnormalised, non-negative) weights.
    /// - Precondition: `weights` is not empty and sums to more than 0.
    public mutating func pick(weights: [Double]) -> Int {
        let total = weights.reduce(0, +)
        precondition(!weights.isEmpty && total > 0, "pick needs positive weights")
        var r = unit() * total
        for (i, w) in weights.enumerated() {
            if r < w { return i }
            r -= w
        }
        return weights.count - 1
    }

    /// An approximately standard-normal value from one 64-bit draw: the variance-matched sum of its
    /// four 16-bit lanes (Irwin–Hall, n = 4; tails end at ±3.46). Good enough for image noise and
    /// several times faster than Box–Muller.
    @inline(__always)
    mutating func fastNormal() -> Float {
        let a = next()
        let s = Int32(a & 0xFFFF) + Int32((a >> 16) & 0xFFFF) + Int32((a >> 32) & 0xFFFF) + Int32(a >> 48)
        // Sum of 4 uniforms on [0, 65535]: mean 131070, variance 4·65536²/12.
        return Float(s - 131_070) * (1 / 37_837.23)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
