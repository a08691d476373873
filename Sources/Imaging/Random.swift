@_exported import Primitives

/// The phantom generator's draws, on the package's one xoshiro256** generator (Primitives'
/// `SeededGenerator`): identical seeds give identical streams on every machine.
extension SeededGenerator {
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
