import NN
import Tensor

/// The RPN head (`rpn.head`): conv3×3 256→256 + ReLU, then `cls_logits` 1×1 → A and `bbox_pred`
/// 1×1 → 4A (MODEL.md §4.2).
public final class RPNHead: Module {
    /// The shared 3×3 conv (padding 1, followed by ReLU), the 1×1 objectness conv (A outputs) and the
    /// 1×1 delta conv (4A outputs, channel `4a + k` for k = dx, dy, dw, dh); all with bias.
    public let conv: Conv2d, clsLogits: Conv2d, bboxPred: Conv2d
    /// A, the anchors per feature-map cell (30 for this model).
    public let anchorsPerLocation: Int

    /// What backward needs from one forward: the input features and the shared conv's ReLU output.
    public struct Saved { var features: Tensor, t: Tensor }

    /// An RPN head with zero parameters.
    /// - Parameters:
    ///   - name: The module prefix of the state-dict keys.
    ///   - channels: Feature channels.
    ///   - anchorsPerLocation: A.
    public init(_ name: String = "rpn.head", channels: Int = 256, anchorsPerLocation: Int = 30) {
        self.anchorsPerLocation = anchorsPerLocation
        conv = Conv2d(joinName(name, "conv"), ConvGeometry(channels, channels, kernel: 3, padding: 1), bias: true)
        clsLogits = Conv2d(joinName(name, "cls_logits"), ConvGeometry(channels, anchorsPerLocation, kernel: 1), bias: true)
        bboxPred = Conv2d(joinName(name, "bbox_pred"), ConvGeometry(channels, 4 * anchorsPerLocation, kernel: 1), bias: true)
    }

    /// `conv`, `cls_logits`, `bbox_pred` parameters, in state-dict order.
    public var parameters: [Parameter] { conv.parameters + clsLogits.parameters + bboxPred.parameters }
    /// The parameters as state entries, in state-dict order.
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
    /// `fc6` (flattened RoI features → representation) and `fc7` (representation → representation).
    public let fc6: Linear, fc7: Linear

    /// What backward needs from one forward: the input and both ReLU outputs.
    public struct Saved { var x: Tensor, h6: Tensor, h7: Tensor }

    /// A box head with zero parameters.
    /// - Parameters:
    ///   - name: The module prefix, e.g. `roi_heads.box_head`.
    ///   - inFeatures: The flattened RoI feature width (256·7·7 = 12,544).
    ///   - representation: The width of `fc6` and `fc7`.
    public init(_ name: String, inFeatures: Int = 256 * 7 * 7, representation: Int = 128) {
        fc6 = Linear(joinName(name, "fc6"), inFeatures, representation)
        fc7 = Linear(joinName(name, "fc7"), representation, representation)
    }

    /// `fc6`, then `fc7` parameters.
    public var parameters: [Parameter] { fc6.parameters + fc7.parameters }
    /// The parameters as state entries, in state-dict order.
    public var stateEntries: [StateEntry] { fc6.stateEntries + fc7.stateEntries }

    /// [R, 256, 7, 7] → [R, 128].
    public func forward(_ x: Tensor) throws -> (Tensor, Saved) {
        let h6 = try fc6(x); reluInPlace(h6)
        let h7 = try fc7(h6); reluInPlace(h7)
        return (h7, Saved(x: x, h6: h6, h7: h7))
    }

    /// Accumulates the gradients of `fc6` and `fc7` and returns dL/dx.
    /// - Parameters:
    ///   - dy: The gradient of the representation [R, 128].
    ///   - s: What the forward returned.
    ///   - inputGradient: Whether to compute dL/dx.
    /// - Returns: dL/dx in the input's shape ([R, 256, 7, 7]), or nil when `inputGradient` is false.
    /// - Throws: `TensorError` for mismatched shapes.
    public func backward(_ dy: Tensor, saved s: Saved, inputGradient: Bool = true) throws -> Tensor? {
        let d7 = try reluGradient(dy, output: s.h7)
        let dh6 = try fc7.backward(d7, input: s.h6)!
        let d6 = try reluGradient(dh6, output: s.h6)
        return try fc6.backward(d6, input: s.x, inputGradient: inputGradient)
    }
}

/// FastRCNNPredictor (`box_predictor`, `box_predictor_s2`): `cls_score` 128→2, `bbox_pred` 128→8.
public final class BoxPredictor: Module {
    /// `cls_score` (one logit per class) and `bbox_pred` (4 deltas per class, class-major: class c in
    /// columns 4c ..< 4c + 4).
    public let clsScore: Linear, bboxPred: Linear

    /// A box predictor with zero parameters.
    /// - Parameters:
    ///   - name: The module prefix, e.g. `roi_heads.box_predictor`.
    ///   - inFeatures: The representation width.
    ///   - classes: Classes including the background (2: background, lesion).
    public init(_ name: String, inFeatures: Int = 128, classes: Int = 2) {
        clsScore = Linear(joinName(name, "cls_score"), inFeatures, classes)
        bboxPred = Linear(joinName(name, "bbox_pred"), inFeatures, 4 * classes)
    }

    /// `cls_score`, then `bbox_pred` parameters.
    public var parameters: [Parameter] { clsScore.parameters + bboxPred.parameters }
    /// The parameters as state entries, in state-dict order.
    public var stateEntries: [StateEntry] { clsScore.stateEntries + bboxPred.stateEntries }

    /// Class logits [R, classes] and box deltas [R, 4·classes] of the representations x [R, 128].
    /// - Throws: `TensorError` when x does not have `inFeatures` columns.
    public func forward(_ x: Tensor) throws -> (logits: Tensor, deltas: Tensor) { (try clsScore(x), try bboxPred(x)) }

    /// Accumulates both layers' gradients and returns dL/dx.
    /// - Parameters:
    ///   - dLogits: The gradient of the logits [R, classes].
    ///   - dDeltas: The gradient of the deltas [R, 4·classes].
    ///   - x: The forward's input [R, 128].
    /// - Returns: dL/dx [R, 128].
    /// - Throws: `TensorError` for mismatched shapes.
    public func backward(dLogits: Tensor, dDeltas: Tensor, input x: Tensor) throws -> Tensor {
        let dx = try clsScore.backward(dLogits, input: x)!
        let d2 = try bboxPred.backward(dDeltas, input: x)!
        try addForward(out: dx, dx, d2)
        return dx
    }
}

/// MaskRCNNHeads with one layer (`mask_head`, `mask_head_s2`): `mask_fcn1` 3×3 256→256 + ReLU.
public final class MaskHead: Module {
    /// `mask_fcn1`: 3×3 conv, padding 1, channels → channels, with bias.
    public let fcn1: Conv2d

    /// A mask head with zero parameters.
    /// - Parameters:
    ///   - name: The module prefix, e.g. `roi_heads.mask_head`.
    ///   - channels: Feature channels.
    public init(_ name: String, channels: Int = 256) {
        fcn1 = Conv2d(joinName(name, "mask_fcn1"), ConvGeometry(channels, channels, kernel: 3, padding: 1), bias: true)
    }

    /// The parameters of `mask_fcn1`.
    public var parameters: [Parameter] { fcn1.parameters }
    /// The parameters as state entries.
    public var stateEntries: [StateEntry] { fcn1.stateEntries }

    /// ReLU(mask_fcn1(x)): [R, 256, 14, 14] → [R, 256, 14, 14].
    /// - Throws: `TensorError` for an input of the wrong rank or channel count.
    /// `transformed`: `fcn1.winogradWeights(…)` when several batches go through with the same weights.
    public func forward(_ x: Tensor, workspace ws: Workspace, transformed: WinogradWeights? = nil) throws -> Tensor {
        try fcn1(x, workspace: ws, relu: true, transformed: transformed)
    }

    /// Accumulates the gradients of `mask_fcn1` and returns dL/dx.
    /// - Parameters:
    ///   - dy: The gradient of the output [R, 256, 14, 14].
    ///   - x: The forward's input.
    ///   - y: The forward's output (its positive entries pass the gradient through the ReLU).
    ///   - ws: Scratch memory.
    /// - Returns: dL/dx in the shape of `x`.
    /// - Throws: `TensorError` for mismatched shapes.
    public func backward(_ dy: Tensor, input x: Tensor, output y: Tensor, workspace ws: Workspace) throws -> Tensor {
        try fcn1.backward(try reluGradient(dy, output: y), input: x, workspace: ws)!
    }
}

/// MaskRCNNPredictor (`mask_predictor`): `conv_mask` ConvTranspose 2×2/2 256→256 → ReLU →
/// `mask_fcn_logits` 1×1 256→2 (MODEL.md §5.2.1).
public final class MaskPredictor: Module {
    /// `conv_mask` (2×2 transposed conv, stride 2: 14 → 28) and `mask_fcn_logits` (1×1 conv to one
    /// logit map per class); both with bias.
    public let convMask: ConvTranspose2d, logits: Conv2d

    /// A mask predictor with zero parameters.
    /// - Parameters:
    ///   - name: The module prefix, e.g. `roi_heads.mask_predictor`.
    ///   - channels: Feature channels.
    ///   - classes: Classes including the background.
    public init(_ name: String, channels: Int = 256, classes: Int = 2) {
        convMask = ConvTranspose2d(joinName(name, "conv_mask"), ConvGeometry(channels, channels, kernel: 2, stride: 2), bias: true)
        logits = Conv2d(joinName(name, "mask_fcn_logits"), ConvGeometry(channels, classes, kernel: 1), bias: true)
    }

    /// `conv_mask`, then `mask_fcn_logits` parameters.
    public var parameters: [Parameter] { convMask.parameters + logits.parameters }
    /// The parameters as state entries, in state-dict order.
    public var stateEntries: [StateEntry] { convMask.stateEntries + logits.stateEntries }

    /// [R, 256, 14, 14] → logits [R, 2, 28, 28] (and the ReLU'd upsampled features for backward).
    public func forward(_ x: Tensor, workspace ws: Workspace) throws -> (logits: Tensor, up: Tensor) {
        let up = try convMask(x, workspace: ws, relu: true)
        return (try logits(up, workspace: ws), up)
    }

    /// The mask probabilities of each detection's own class only (inference): for detection
    /// `range.lowerBound + i`, sigmoid(mask_fcn_logits(up[i])) of its label's channel, into its `mask28`.
    /// One product of a single row per detection instead of every class's logits.
    /// - Parameters:
    ///   - up: `forward`'s `up` for the detections of `range`, [range.count, 256, 28, 28].
    /// - Throws: `TensorError` for an `up` of the wrong shape or a label outside the classes.
    public func labelProbabilities(_ up: Tensor, detections dets: inout [Detection], range: Range<Int>) throws {
        let channels = logits.geometry.inChannels, classes = logits.geometry.outChannels
        try up.expectRank(4, "mask_fcn_logits", "up")
        let plane = up.shape[2] * up.shape[3]
        try up.expectShape([range.count, channels, up.shape[2], up.shape[3]], "mask_fcn_logits", "up")
        let labels = dets[range].map(\.label)
        if let bad = labels.first(where: { !(0..<classes).contains($0) }) {
            throw TensorError.invalidArgument(op: "mask_fcn_logits", detail: "label \(bad) is not one of the \(classes) classes")
        }
        let out = Tensor(uninitializedShape: [range.count, plane])
        let weight = logits.weight.value.data, bias = logits.bias?.value.data
        parallelFor(range.count) { i in  // one thread's product each (too small to split)
            sgemm(m: 1, n: plane, k: channels, a: weight + labels[i] * channels, lda: channels,
                  b: up.data + i * channels * plane, ldb: plane, c: out.data + i * plane, ldc: plane)
            let b = bias?[labels[i]] ?? 0, p = out.data + i * plane
            for j in 0..<plane { p[j] = sigmoid(p[j] + b) }
        }
        for (i, d) in range.enumerated() { dets[d].mask28 = Array(UnsafeBufferPointer(start: out.data + i * plane, count: plane)) }
    }

    /// The mask probabilities of each detection's own class from the mask head's output x
    /// [range.count, 256, 14, 14] (inference), as `convMask` + ReLU then `labelProbabilities(_:…)`
    /// give them, bit for bit, without laying out the upsampled features: `conv_mask` runs on the
    /// patch layout (`tiledConvTranspose2dForward`, bias and ReLU in place), whose rows (channel,
    /// ky, kx) are `mask_fcn_logits`' inputs in channel order, so one product of the classes' weight
    /// rows gives every logit of every detection; each detection then takes its label's.
    /// - Throws: `TensorError` for an x of the wrong shape or a label outside the classes.
    public func labelProbabilities(fromHead x: Tensor, detections dets: inout [Detection], range: Range<Int>) throws {
        let channels = logits.geometry.inChannels, classes = logits.geometry.outChannels
        let k = convMask.geometry.kernelH
        guard convMask.geometry.kernelW == k, convMask.geometry.strideH == k, convMask.geometry.strideW == k,
              convMask.geometry.padH == 0, convMask.geometry.padW == 0, convMask.geometry.dilationH == 1, convMask.geometry.dilationW == 1,
              convMask.outputPadding == (0, 0) else {
            throw TensorError.invalidArgument(op: "conv_mask", detail: "the patch layout needs kernel = stride, no padding or dilation")
        }
        try x.expectRank(4, "conv_mask", "input")
        try x.expectShape([range.count, convMask.geometry.inChannels, x.shape[2], x.shape[3]], "conv_mask", "input")
        let labels = dets[range].map(\.label)
        if let bad = labels.first(where: { !(0..<classes).contains($0) }) {
            throw TensorError.invalidArgument(op: "mask_fcn_logits", detail: "label \(bad) is not one of the \(classes) classes")
        }
        let h = x.shape[2], w = x.shape[3], plane = h * w, side = k * k
        let width = range.count * plane  // one (ky, kx) row's columns; a channel's k·k rows are k·k·width floats
        let all = Tensor(uninitializedShape: [classes, side * width])
        if Engine.useKGEMM {
            // conv_mask's product a block of columns at a time on each thread, the logits (bias and
            // ReLU applied as they are read) from it while it is in the caches: the same bits as below.
            try convTransposeReluLogits(try swapLeadingAxes(x), weight: convMask.weight.value, bias: convMask.bias.map { UnsafePointer($0.value.data) },
                                        logits: logits.weight.value.data, classes: classes, out: all.data)
        } else if Engine.kgemmAvailable {
            // [channels·k·k, R, h, w] before conv_mask's bias and ReLU, which the logits' product
            // applies as it reads (`reluBiasedProduct`: the same bits, one pass fewer).
            let cols = try tiledConvTranspose2dForward(try swapLeadingAxes(x), weight: convMask.weight.value, bias: nil)
            for i0 in stride(from: 0, to: classes, by: 4) {
                reluBiasedProduct(m: min(4, classes - i0), rows: channels, width: side * width, weight: logits.weight.value.data + i0 * channels,
                                  x: cols.data, bias: convMask.bias.map { UnsafePointer($0.value.data) }, out: all.data + i0 * side * width)
            }
        } else {
            let cols = try tiledConvTranspose2dForward(try swapLeadingAxes(x), weight: convMask.weight.value, bias: convMask.bias?.value,
                                                       relu: true)  // [channels·k·k, R, h, w]
            sgemm(m: classes, n: side * width, k: channels, a: logits.weight.value.data, lda: channels, b: cols.data, ldb: side * width,
                  c: all.data, ldc: side * width)
        }
        let bias = logits.bias?.value.data, src = UnsafePointer(all.data)
        let outSide = (w * k), outPlane = h * k * outSide
        var masks = [[Float]](repeating: [], count: range.count)
        masks.withUnsafeMutableBufferPointer { mp in
            parallelFor(range.count) { i in
                let label = labels[i], b = bias?[label] ?? 0
                mp[i] = [Float](unsafeUninitializedCapacity: outPlane) { out, count in
                    for q in 0..<side {
                        let ky = q / k, kx = q % k
                        let row = src + label * side * width + q * width + i * plane
                        for y in 0..<h {
                            for xx in 0..<w { out[(y * k + ky) * outSide + xx * k + kx] = sigmoid(row[y * w + xx] + b) }
                        }
                    }
                    count = outPlane
                }
            }
        }
        for (i, d) in range.enumerated() { dets[d].mask28 = masks[i] }
    }

    /// Accumulates both layers' gradients and returns dL/dx.
    /// - Parameters:
    ///   - dLogits: The gradient of the logits [R, classes, 28, 28].
    ///   - x: The forward's input [R, 256, 14, 14].
    ///   - up: The forward's `up` (ReLU'd `conv_mask` output).
    ///   - ws: Scratch memory.
    /// - Returns: dL/dx [R, 256, 14, 14].
    /// - Throws: `TensorError` for mismatched shapes.
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
