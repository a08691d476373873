import Foundation
import Tensor

/// Adam with PyTorch's semantics (`torch.optim.Adam`, not AdamW): L2 weight decay added to the
/// gradient, per-parameter step counters and bias correction, moments keyed by parameter name.
/// A parameter without a gradient in a step (`hasGradient == false`) is left untouched: no decay,
/// no moment update, no step count.
public final class Adam {
    /// The step size; it may be changed between steps (the trainer does, for a separate head rate).
    public var learningRate: Float
    /// The decay rate of the first-moment (mean) estimate.
    public var beta1: Float
    /// The decay rate of the second-moment (uncentred variance) estimate.
    public var beta2: Float
    /// Added to the bias-corrected √v in the denominator of the update.
    public var eps: Float
    /// The L2 coefficient: `weightDecay · x` is added to the gradient before the moments are updated
    /// (PyTorch's `weight_decay`, not decoupled as in AdamW).
    public var weightDecay: Float

    /// The optimizer state of one parameter.
    public final class Slot {
        /// The first-moment estimate (`exp_avg`), in the parameter's shape.
        public let m: Tensor
        /// The second-moment estimate (`exp_avg_sq`), in the parameter's shape.
        public let v: Tensor
        /// The updates applied to this parameter so far (the exponent of the bias correction).
        public var step: Int
        init(shape: [Int], step: Int = 0) { m = Tensor(shape: shape); v = Tensor(shape: shape); self.step = step }
    }

    /// State by parameter name.
    public private(set) var slots: [String: Slot] = [:]

    /// An optimizer with no state yet; the defaults are PyTorch's.
    /// - Parameters:
    ///   - learningRate: The step size.
    ///   - beta1: The first-moment decay rate.
    ///   - beta2: The second-moment decay rate.
    ///   - eps: The term added to the denominator.
    ///   - weightDecay: The L2 coefficient added to the gradient (0: none).
    public init(learningRate: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8, weightDecay: Float = 0) {
        self.learningRate = learningRate; self.beta1 = beta1; self.beta2 = beta2; self.eps = eps; self.weightDecay = weightDecay
    }

    /// Updates every parameter of `parameters` that has a gradient.
    public func step(_ parameters: [Parameter]) {
        for p in parameters where p.hasGradient { update(p) }
    }

    private func update(_ p: Parameter) {
        let slot: Slot
        if let s = slots[p.name] { slot = s } else { slot = Slot(shape: p.value.shape); slots[p.name] = slot }
        slot.step += 1
        let t = Float(slot.step)
        let bc1 = 1 - powf(beta1, t), bc2 = 1 - powf(beta2, t)
        let stepSize = learningRate / bc1, bc2Sqrt = bc2.squareRoot()
        let x = p.value.data, g = p.grad.data, m = slot.m.data, v = slot.v.data
        let b1 = beta1, b2 = beta2, wd = weightDecay, e = eps
        let n = p.value.count, chunk = 1 << 16
        parallelFor((n + chunk - 1) / chunk) { c in  // a plain loop per chunk, so that it vectorises
            for i in c * chunk..<min(n, (c + 1) * chunk) {
                var gi = g[i]
                if wd != 0 { gi += wd * x[i] }
                m[i] += (gi - m[i]) * (1 - b1)
                v[i] = b2 * v[i] + (1 - b2) * gi * gi
                let denom = v[i].squareRoot() / bc2Sqrt + e
                x[i] -= stepSize * m[i] / denom
            }
        }
    }

    /// The state as named tensors (for checkpoints): `<name>.exp_avg`, `<name>.exp_avg_sq`, and the
    /// step counters.
    public func stateTensors() -> (tensors: [(String, Tensor)], steps: [String: Int]) {
        var out: [(String, Tensor)] = []
        var steps: [String: Int] = [:]
        for name in slots.keys.sorted() {
            let s = slots[name]!
            out.append((name + ".exp_avg", s.m)); out.append((name + ".exp_avg_sq", s.v))
            steps[name] = s.step
        }
        return (out, steps)
    }

    /// Restores the state written by `stateTensors` (replacing any current state).
    /// - Throws: `CheckpointError` if a moment is missing or has the wrong size.
    public func restore(tensors: [String: Tensor], steps: [String: Int]) throws {
        var new: [String: Slot] = [:]
        for (name, step) in steps {
            guard let m = tensors[name + ".exp_avg"], let v = tensors[name + ".exp_avg_sq"], m.shape == v.shape else {
                throw CheckpointError.missingKeys([name + ".exp_avg", name + ".exp_avg_sq"])
            }
            let s = Slot(shape: m.shape, step: step)
            try s.m.copy(from: m); try s.v.copy(from: v)
            new[name] = s
        }
        slots = new
    }
}
