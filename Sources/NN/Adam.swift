import Foundation
import Tensor

/// Why saved optimizer state (a checkpoint's `optimizer.*` tensors and step counts) cannot be
/// restored. Each case names the parameter or moment at fault; `description` is a sentence.
public enum OptimizerStateError: Error, CustomStringConvertible, Equatable {
    /// A step count names a parameter the optimizer is not restored for.
    case unknownParameter(String)
    /// A parameter has a step count but lacks `<name>.exp_avg` or `<name>.exp_avg_sq`.
    case missingMoments(parameter: String)
    /// A moment's shape differs from its parameter's.
    case shapeMismatch(moment: String, shape: [Int], parameter: [Int])
    /// A step count below 0 or above `Adam.maxStep`.
    case badStep(parameter: String, step: Int)
    /// A moment holds a NaN or an infinity, or the second moment a negative value.
    case badMoment(moment: String, value: Float)
    /// Moments of parameters that have no step count.
    case orphanMoments([String])

    /// A sentence naming the problem.
    public var description: String {
        switch self {
        case .unknownParameter(let n):
            return "The optimizer state has a step count for \(n), which is not a parameter of the model."
        case .missingMoments(let n):
            return "The optimizer state has a step count for \(n) but lacks its moments \(n).exp_avg and \(n).exp_avg_sq."
        case .shapeMismatch(let m, let shape, let parameter):
            return "The optimizer moment \(m) has shape \(shapeString(shape)), but its parameter has shape \(shapeString(parameter))."
        case .badStep(let n, let step):
            return "The optimizer step count of \(n) is \(step); it must be between 0 and \(Adam.maxStep)."
        case .badMoment(let m, let value):
            return "The optimizer moment \(m) holds \(value), which no training step produces."
        case .orphanMoments(let names):
            return "The optimizer state has \(names.count) moment(s) without a step count: \(names.prefix(20).joined(separator: ", "))."
        }
    }
}

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
        // The loop below indexes the moments with the parameter's count. `restore` only installs
        // moments of the parameter's shape; a parameter of another shape under the same name is a
        // programming error, stopped here rather than read or written out of bounds.
        if slot.m.shape != p.value.shape || slot.v.shape != p.value.shape {
            fatalError("Adam: the state of \(p.name) has shape \(shapeString(slot.m.shape)), the parameter \(shapeString(p.value.shape))")
        }
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

    /// The largest step count a checkpoint may hold (2³¹ − 1; a run takes far fewer steps).
    public static let maxStep = Int(Int32.max)

    /// Optimizer state read from a checkpoint and checked against the parameters it belongs to
    /// (`checkState`), ready for `restore(_:)`. Its moments are fresh copies, owned by the
    /// optimizer that restores it (restore it into one optimizer only).
    public struct RestoredState {
        fileprivate let slots: [String: Slot]
        /// The parameters that have state.
        public var names: [String] { slots.keys.sorted() }
    }

    /// Checks the state written by `stateTensors` against the parameters it is for, changing
    /// nothing: every step count names one of `parameters` and lies in 0…`maxStep`; its two moments
    /// exist, have the parameter's shape and hold finite values (the second moment no negative
    /// one); no moment lacks a step count.
    /// - Parameters:
    ///   - tensors: `<name>.exp_avg` and `<name>.exp_avg_sq` by key (e.g. a checkpoint's
    ///     `optimizer.*` tensors with the prefix removed).
    ///   - steps: the step count of each parameter with state.
    ///   - parameters: the parameters the optimizer steps (the model's).
    /// - Returns: the state, with copies of the moments.
    /// - Throws: `OptimizerStateError` naming the first problem found (parameters in name order).
    public static func checkState(tensors: [String: Tensor], steps: [String: Int], parameters: [Parameter]) throws -> RestoredState {
        var shapes: [String: [Int]] = [:]
        for p in parameters { shapes[p.name] = p.value.shape }
        var new: [String: Slot] = [:]
        for name in steps.keys.sorted() {
            let step = steps[name]!
            guard let shape = shapes[name] else { throw OptimizerStateError.unknownParameter(name) }
            guard step >= 0, step <= maxStep else { throw OptimizerStateError.badStep(parameter: name, step: step) }
            guard let m = tensors[name + ".exp_avg"], let v = tensors[name + ".exp_avg_sq"] else {
                throw OptimizerStateError.missingMoments(parameter: name)
            }
            for (key, t) in [(name + ".exp_avg", m), (name + ".exp_avg_sq", v)] where t.shape != shape {
                throw OptimizerStateError.shapeMismatch(moment: key, shape: t.shape, parameter: shape)
            }
            for i in 0..<m.count where !m.data[i].isFinite {
                throw OptimizerStateError.badMoment(moment: name + ".exp_avg", value: m.data[i])
            }
            for i in 0..<v.count where !(v.data[i].isFinite && v.data[i] >= 0) {
                throw OptimizerStateError.badMoment(moment: name + ".exp_avg_sq", value: v.data[i])
            }
            let s = Slot(shape: shape, step: step)
            try s.m.copy(from: m); try s.v.copy(from: v)
            new[name] = s
        }
        let orphans = tensors.keys.filter { key in
            let name = key.hasSuffix(".exp_avg") ? String(key.dropLast(".exp_avg".count))
                : key.hasSuffix(".exp_avg_sq") ? String(key.dropLast(".exp_avg_sq".count)) : key
            return steps[name] == nil
        }
        guard orphans.isEmpty else { throw OptimizerStateError.orphanMoments(orphans.sorted()) }
        return RestoredState(slots: new)
    }

    /// Installs checked state (replacing any current state).
    public func restore(_ state: RestoredState) {
        slots = state.slots
    }

    /// Restores the state written by `stateTensors` (replacing any current state) after checking it
    /// against `parameters` as `checkState` does; on error nothing changes.
    /// - Throws: `OptimizerStateError` naming what is wrong.
    public func restore(tensors: [String: Tensor], steps: [String: Int], parameters: [Parameter]) throws {
        restore(try Self.checkState(tensors: tensors, steps: steps, parameters: parameters))
    }
}
