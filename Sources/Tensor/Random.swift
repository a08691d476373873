@_exported import Primitives

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
