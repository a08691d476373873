import Foundation

/// Losses: each returns the loss value (accumulated in Double) and, when `grad` is given, adds
/// `scale · ∂loss/∂input` to it (so a caller combining several terms passes its upstream factor).

/// Mean binary cross-entropy with logits: (1/N) Σ max(x,0) − x·t + log(1 + e^(−|x|)).
/// - Precondition: logits and targets have the same shape.
@discardableResult
public func bceWithLogitsLoss(logits: Tensor, targets: Tensor, grad: Tensor? = nil, scale: Float = 1) throws -> Double {
    try targets.expectShape(logits.shape, "binary_cross_entropy_with_logits", "targets")
    if let grad { try grad.expectShape(logits.shape, "binary_cross_entropy_with_logits", "grad") }
    return bceWithLogits(logits.data, targets.data, count: logits.count, grad: grad?.data, scale: scale)
}

/// Mean BCE-with-logits over `count` raw values; see `bceWithLogitsLoss`.
@discardableResult
public func bceWithLogits(_ x: UnsafePointer<Float>, _ t: UnsafePointer<Float>, count: Int, grad: UnsafeMutablePointer<Float>?, scale: Float = 1) -> Double {
    guard count > 0 else { return 0 }
    var loss = 0.0
    let k = scale / Float(count)
    for i in 0..<count {
        let v = x[i], y = t[i]
        loss += Double(max(v, 0) - v * y + log1pf(expf(-abs(v))))
        if let grad { grad[i] += k * (sigmoid(v) - y) }
    }
    return loss / Double(count)
}

/// Mean cross-entropy of softmax(logits[r, :]) against the class index targets[r].
/// - Precondition: logits [n, c]; targets has n entries, each in 0..<c.
@discardableResult
public func crossEntropyLoss(logits: Tensor, targets: [Int], grad: Tensor? = nil, scale: Float = 1) throws -> Double {
    let op = "cross_entropy"
    try logits.expectRank(2, op, "logits")
    let n = logits.shape[0], c = logits.shape[1]
    guard targets.count == n else { throw TensorError.shapeMismatch(op: op, detail: "\(targets.count) targets for logits \(shapeString(logits.shape))") }
    guard targets.allSatisfy({ $0 >= 0 && $0 < c }) else { throw TensorError.invalidArgument(op: op, detail: "a target is outside 0..<\(c)") }
    if let grad { try grad.expectShape(logits.shape, op, "grad") }
    guard n > 0 else { return 0 }
    var loss = 0.0
    let k = scale / Float(n)
    for r in 0..<n {
        let x = logits.data + r * c
        var m = -Float.infinity
        for j in 0..<c { m = max(m, x[j]) }
        var s: Float = 0
        for j in 0..<c { s += expf(x[j] - m) }
        let lse = m + logf(s)
        loss += Double(lse - x[targets[r]])
        if let grad {
            let g = grad.data + r * c
            for j in 0..<c { g[j] += k * (expf(x[j] - lse) - (j == targets[r] ? 1 : 0)) }
        }
    }
    return loss / Double(n)
}

/// Summed smooth-L1 (β = 1): Σ 0.5·d² if |d| < 1, else |d| − 0.5, with d = input − target.
@discardableResult
public func smoothL1Loss(input: Tensor, target: Tensor, grad: Tensor? = nil, scale: Float = 1) throws -> Double {
    try target.expectShape(input.shape, "smooth_l1", "target")
    if let grad { try grad.expectShape(input.shape, "smooth_l1", "grad") }
    return smoothL1(input.data, target.data, count: input.count, grad: grad?.data, scale: scale)
}

/// Summed smooth-L1 (β = 1) over raw values; see `smoothL1Loss`.
@discardableResult
public func smoothL1(_ x: UnsafePointer<Float>, _ t: UnsafePointer<Float>, count: Int, grad: UnsafeMutablePointer<Float>?, scale: Float = 1) -> Double {
    var loss = 0.0
    for i in 0..<count {
        let d = x[i] - t[i], a = abs(d)
        if a < 1 {
            loss += Double(0.5 * d * d)
            grad?[i] += scale * d
        } else {
            loss += Double(a - 0.5)
            grad?[i] += scale * (d > 0 ? 1 : -1)
        }
    }
    return loss
}

/// Summed L1: Σ |input − target|; the gradient is sign(d) (0 at d = 0).
@discardableResult
public func l1Loss(input: Tensor, target: Tensor, grad: Tensor? = nil, scale: Float = 1) throws -> Double {
    try target.expectShape(input.shape, "l1", "target")
    if let grad { try grad.expectShape(input.shape, "l1", "grad") }
    return l1(input.data, target.data, count: input.count, grad: grad?.data, scale: scale)
}

/// Summed L1 over raw values; see `l1Loss`.
@discardableResult
public func l1(_ x: UnsafePointer<Float>, _ t: UnsafePointer<Float>, count: Int, grad: UnsafeMutablePointer<Float>?, scale: Float = 1) -> Double {
    var loss = 0.0
    for i in 0..<count {
        let d = x[i] - t[i]
        loss += Double(abs(d))
        if let grad, d != 0 { grad[i] += scale * (d > 0 ? 1 : -1) }
    }
    return loss
}
