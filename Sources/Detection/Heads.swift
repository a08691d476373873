import NN
import Tensor

/// The RPN head (`rpn.head`): conv3×3 256→256 + ReLU, then `cls_logits` 1×1 → A and `bbox_pred`
/// 1×1 → 4A (MODEL.md §4.2).
public final class RPNHead: Module {
    public let conv: Conv2d, clsLogits: Conv2d, bboxPred: Conv2d
    public let anchorsPerLocation: Int

    public struct Saved { var features: Tensor, t: Tensor }

    public init(_ name: String = "rpn.head", channels: Int = 256, anchorsPerLocation: Int = 30) {
        self.anchorsPerLocation = anchorsPerLocation
        conv = Conv2d(joinName(name, "conv"), ConvGeometry(channels, channels, kernel: 3, padding: 1), bias: true)
        clsLogits = Conv2d(joinName(name, "cls_logits"), ConvGeometry(channels, anchorsPerLocation, kernel: 1), bias: true)
        bboxPred = Conv2d(joinName(name, "bbox_pred"), ConvGeometry(channels, 4 * anchorsPerLocation, kernel: 1), bias: true)
    }

    public var parameters: [Parameter] { conv.parameters + clsLogits.parameters + bboxPred.parameters }
    public var stateEntries: [StateEntry] { conv.stateEntries + clsLogits.stateEntries + bboxPred.stateEntries }

    /// N(0, 0.01²) weights, zero biases.
    public func initialize(rng: inout SeededGenerator) {
        for c in [conv, clsLogits, bboxPred] { Init.normal(c.weight.value, std: 0.01, rng: &rng); c.bias?.value.zero() }
    }

    /// Objectness [1, A, h, w] and deltas [1, 4A, h, w].
    public func forward(_ features: Tensor, workspace ws: Workspace) throws -> (objectness: Tensor, deltas: Tensor, saved: Saved) {
        let t = try conv(features, workspace: ws)
        reluInPlace(t)
        return (try clsLogits(t, workspace: ws), try bboxPred(t, workspace: ws), Saved(features: features, t: t))
    }

    /// Accumulates parameter gradients and returns dL/dfeatures.
    public func backward(dObjectness: Tensor, dDeltas: Tensor, saved s: Saved, workspace ws: Workspace) throws -> Tensor {
        let dt = try clsLogits.backward(dObjectness, input: s.t, workspace: ws)!
        let dt2 = try bboxPred.backward(dDeltas, input: s.t, workspace: ws)!
        try addForward(out: dt, dt, dt2)
        let dr = try reluGradient(dt, output: s.t)
        return try conv.backward(dr, input: s.features, workspace: ws)!
    }
}

/// TwoMLPHead (`box_head`, `box_head_s2`): flatten 256·7·7 → fc6 → ReLU → fc7 → ReLU (representation 128).
public final class BoxHead: Module {
    public let fc6: Linear, fc7: Linear

    public struct Saved { var x: Tensor, h6: Tensor, h7: Tensor }

    public init(_ name: String, inFeatures: Int = 256 * 7 * 7, representation: Int = 128) {
        fc6 = Linear(joinName(name, "fc6"), inFeatures, representation)
        fc7 = Linear(joinName(name, "fc7"), representation, representation)
    }

    public var parameters: [Parameter] { fc6.parameters + fc7.parameters }
    public var stateEntries: [StateEntry] { fc6.stateEntries + fc7.stateEntries }

    /// [R, 256, 7, 7] → [R, 128].
    public func forward(_ x: Tensor) throws -> (Tensor, Saved) {
        let h6 = try fc6(x); reluInPlace(h6)
        let h7 = try fc7(h6); reluInPlace(h7)
        return (h7, Saved(x: x, h6: h6, h7: h7))
    }

    public func backward(_ dy: Tensor, saved s: Saved, inputGradient: Bool = true) throws -> Tensor? {
        let d7 = try reluGradient(dy, output: s.h7)
        let dh6 = try fc7.backward(d7, input: s.h6)!
        let d6 = try reluGradient(dh6, output: s.h6)
        return try fc6.backward(d6, input: s.x, inputGradient: inputGradient)
    }
}

/// FastRCNNPredictor (`box_predictor`, `box_predictor_s2`): `cls_score` 128→2, `bbox_pred` 128→8.
public final class BoxPredictor: Module {
    public let clsScore: Linear, bboxPred: Linear

    public init(_ name: String, inFeatures: Int = 128, classes: Int = 2) {
        clsScore = Linear(joinName(name, "cls_score"), inFeatures, classes)
        bboxPred = Linear(joinName(name, "bbox_pred"), inFeatures, 4 * classes)
    }

    public var parameters: [Parameter] { clsScore.parameters + bboxPred.parameters }
    public var stateEntries: [StateEntry] { clsScore.stateEntries + bboxPred.stateEntries }

    public func forward(_ x: Tensor) throws -> (logits: Tensor, deltas: Tensor) { (try clsScore(x), try bboxPred(x)) }

    public func backward(dLogits: Tensor, dDeltas: Tensor, input x: Tensor) throws -> Tensor {
        let dx = try clsScore.backward(dLogits, input: x)!
        let d2 = try bboxPred.backward(dDeltas, input: x)!
        try addForward(out: dx, dx, d2)
        return dx
    }
}

/// MaskRCNNHeads with one layer (`mask_head`, `mask_head_s2`): `mask_fcn1` 3×3 256→256 + ReLU.
public final class MaskHead: Module {
    public let fcn1: Conv2d

    public init(_ name: String, channels: Int = 256) {
        fcn1 = Conv2d(joinName(name, "mask_fcn1"), ConvGeometry(channels, channels, kernel: 3, padding: 1), bias: true)
    }

    public var parameters: [Parameter] { fcn1.parameters }
    public var stateEntries: [StateEntry] { fcn1.stateEntries }

    public func forward(_ x: Tensor, workspace ws: Workspace) throws -> Tensor {
        let y = try fcn1(x, workspace: ws); reluInPlace(y); return y
    }

    public func backward(_ dy: Tensor, input x: Tensor, output y: Tensor, workspace ws: Workspace) throws -> Tensor {
        try fcn1.backward(try reluGradient(dy, output: y), input: x, workspace: ws)!
    }
}

/// MaskRCNNPredictor (`mask_predictor`): `conv_mask` ConvTranspose 2×2/2 256→256 → ReLU →
/// `mask_fcn_logits` 1×1 256→2 (MODEL.md §5.2.1).
public final class MaskPredictor: Module {
    public let convMask: ConvTranspose2d, logits: Conv2d

    public init(_ name: String, channels: Int = 256, classes: Int = 2) {
        convMask = ConvTranspose2d(joinName(name, "conv_mask"), ConvGeometry(channels, channels, kernel: 2, stride: 2), bias: true)
        logits = Conv2d(joinName(name, "mask_fcn_logits"), ConvGeometry(channels, classes, kernel: 1), bias: true)
    }

    public var parameters: [Parameter] { convMask.parameters + logits.parameters }
    public var stateEntries: [StateEntry] { convMask.stateEntries + logits.stateEntries }

    /// [R, 256, 14, 14] → logits [R, 2, 28, 28] (and the ReLU'd upsampled features for backward).
    public func forward(_ x: Tensor, workspace ws: Workspace) throws -> (logits: Tensor, up: Tensor) {
        let up = try convMask(x, workspace: ws, relu: true)
        return (try logits(up, workspace: ws), up)
    }

    public func backward(_ dLogits: Tensor, input x: Tensor, up: Tensor, workspace ws: Workspace) throws -> Tensor {
        let dUp = try logits.backward(dLogits, input: up, workspace: ws)!
        return try convMask.backward(try reluGradient(dUp, output: up), input: x, workspace: ws)!
    }
}

/// Parameters the RoI heads are initialised with (MODEL.md §13).
public enum HeadInit {
    /// PyTorch's default Linear init: weight and bias U(±1/√fan_in).
    public static func linear(_ l: Linear, rng: inout SeededGenerator) {
        let b = 1 / Float(l.inFeatures).squareRoot()
        Init.uniform(l.weight.value, bound: b, rng: &rng)
        if let bias = l.bias { Init.uniform(bias.value, bound: b, rng: &rng) }
    }

    /// Kaiming normal fan_out weight (from dim 0, as PyTorch computes it, also for transposed
    /// convolutions) and PyTorch's default bias U(±1/√fan_in).
    public static func kaimingConv(_ w: Parameter, bias: Parameter?, rng: inout SeededGenerator) {
        Init.kaimingNormalFanOut(w.value, rng: &rng)
        if let bias { Init.uniform(bias.value, bound: 1 / Float(Init.fanIn(w.shape)).squareRoot(), rng: &rng) }
    }
}
