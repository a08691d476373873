import Tensor

/// torchvision's `Matcher`: assigns every prediction (anchor or proposal) to its best ground-truth
/// box, or marks it below / between the IoU thresholds (MODEL.md §4.5, §5.2.2).
public struct Matcher: Sendable {
    /// IoU at or above which a prediction is matched.
    public var high: Float
    /// IoU below which a prediction is `below` (background).
    public var low: Float
    /// Restores, for every gt, the predictions that reach that gt's highest IoU (ties included).
    public var allowLowQualityMatches: Bool

    /// Best IoU < low.
    public static let below = -1
    /// low ≤ best IoU < high.
    public static let between = -2

    /// A matcher with the given thresholds.
    /// - Parameters:
    ///   - high: The IoU at or above which a prediction is matched.
    ///   - low: The IoU below which a prediction is `below`.
    ///   - allowLowQualityMatches: Whether every gt gets back its best-overlapping predictions.
    /// - Precondition: `low <= high`.
    public init(high: Float, low: Float, allowLowQualityMatches: Bool) {
        precondition(low <= high, "Matcher: low \(low) > high \(high)")
        self.high = high; self.low = low; self.allowLowQualityMatches = allowLowQualityMatches
    }

    /// For an IoU matrix [gtCount × predCount] returns per prediction the matched gt index, or `below` / `between`. torchvision Matcher semantics incl. low-quality restoration with ties.
    ///
    /// A prediction's candidate is its best gt (the first gt reaching the maximum IoU). With
    /// `allowLowQualityMatches`, for every gt g every prediction p with `iou[g, p]` equal to g's
    /// maximum over all predictions gets its candidate back, whatever the thresholds said (so a gt
    /// whose best IoU is 0 restores every prediction it does not overlap — as torchvision does).
    /// With no gt every prediction is `below`.
    /// - Precondition: `iou.count == gtCount · predCount`.
    public func callAsFunction(iou: [Float], gtCount: Int, predCount: Int) -> [Int] {
        precondition(iou.count == gtCount * predCount, "Matcher: \(iou.count) IoUs for \(gtCount)×\(predCount)")
        if gtCount == 0 { return [Int](repeating: Matcher.below, count: predCount) }
        if predCount == 0 { return [] }
        var best = Array(iou[0..<predCount])
        var candidate = [Int](repeating: 0, count: predCount)
        for g in 1..<gtCount {
            let row = g * predCount
            for p in 0..<predCount where iou[row + p] > best[p] {
                best[p] = iou[row + p]; candidate[p] = g
            }
        }
        var result = [Int](repeating: 0, count: predCount)
        for p in 0..<predCount {
            let v = best[p]
            result[p] = v < low ? Matcher.below : (v < high ? Matcher.between : candidate[p])
        }
        if allowLowQualityMatches {
            for g in 0..<gtCount {
                let row = g * predCount
                var m = iou[row]
                for p in 1..<predCount where iou[row + p] > m { m = iou[row + p] }
                for p in 0..<predCount where iou[row + p] == m { result[p] = candidate[p] }
            }
        }
        return result
    }
}

/// torchvision BalancedPositiveNegativeSampler: labels 1 positive, 0 negative, −1 ignore; returns the chosen indices (sorted ascending) chosen uniformly without replacement with `rng`.
///
/// `numPos = min(#positives, ⌊batchSize · positiveFraction⌋)`, `numNeg = min(#negatives,
/// batchSize − numPos)`. Labels ≥ 1 count as positive. The product is formed in Double from the
/// fraction's shortest decimal form (0.7 → 0.7, as Python would) so that ⌊10 · 0.7⌋ = 7. Positives
/// are drawn first (the first `numPos` of `rng.permutation(#positives)`), then negatives.
public func sampleBalanced(labels: [Int], batchSize: Int, positiveFraction: Float, rng: inout SeededGenerator) -> (positives: [Int], negatives: [Int]) {
    var pos: [Int] = [], neg: [Int] = []
    for (i, l) in labels.enumerated() {
        if l >= 1 { pos.append(i) } else if l == 0 { neg.append(i) }
    }
    let fraction = Double("\(positiveFraction)") ?? Double(positiveFraction)
    let wanted = max(0, Int((Double(batchSize) * fraction).rounded(.down)))
    let numPos = min(pos.count, wanted)
    let numNeg = min(neg.count, max(batchSize - numPos, 0))
    func draw(_ from: [Int], _ k: Int) -> [Int] {
        if k == 0 { return [] }
        return rng.permutation(from.count).prefix(k).map { from[$0] }.sorted()
    }
    let p = draw(pos, numPos)
    let n = draw(neg, numNeg)
    return (p, n)
}
