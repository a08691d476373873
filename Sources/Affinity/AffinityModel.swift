import Detection
import Foundation
import NN
import Tensor

/// MaskRCNNPredictorTruncated (`mask_predictor_s2`): `conv_mask` ConvTranspose 2×2/2 256→256 →
/// `conv_reduce` 3×3 256→256 → ReLU (no ReLU in between, no logits layer; MODEL.md §5.3.1).
public final class MaskFeaturePredictor: Module {
    /// `conv_mask` (transposed 2×2, stride 2: 14 → 28; copied from the segmentation `mask_predictor`)
    /// and `conv_reduce` (3×3, padding 1; never copied); both with bias.
    public let convMask: ConvTranspose2d, convReduce: Conv2d

    /// A predictor with zero parameters.
    /// - Parameters:
    ///   - name: The module prefix, e.g. `roi_heads.mask_predictor_s2`.
    ///   - channels: Feature channels.
    public init(_ name: String, channels: Int = 256) {
        convMask = ConvTranspose2d(joinName(name, "conv_mask"), ConvGeometry(channels, channels, kernel: 2, stride: 2), bias: true)
        convReduce = Conv2d(joinName(name, "conv_reduce"), ConvGeometry(channels, channels, kernel: 3, padding: 1), bias: true)
    }

    /// `conv_mask`, then `conv_reduce` parameters.
    public var parameters: [Parameter] { convMask.parameters + convReduce.parameters }
    /// The parameters as state entries, in state-dict order.
    public var stateEntries: [StateEntry] { convMask.stateEntries + convReduce.stateEntries }

    /// ReLU(conv_reduce(conv_mask(x))): [R, 256, 14, 14] → lesion mask features [R, 256, 28, 28];
    /// `up` is `conv_mask`'s output, kept for backward.
    /// - Throws: `TensorError` for an input of the wrong rank or channel count.
    public func forward(_ x: Tensor, workspace ws: Workspace) throws -> (out: Tensor, up: Tensor) {
        let up = try convMask(x, workspace: ws)
        let out = try convReduce(up, workspace: ws)
        reluInPlace(out)
        return (out, up)
    }

    /// dL/dx; the weights are frozen in the classification step (paper Eq. 8) unless `trainReduce`.
    public func backward(_ dy: Tensor, input x: Tensor, up: Tensor, output: Tensor, trainReduce: Bool, workspace ws: Workspace) throws -> Tensor {
        let dUp = try convReduce.backward(try reluGradient(dy, output: output), input: up, workspace: ws, parameterGradients: trainReduce)!
        return try convMask.backward(dUp, input: x, workspace: ws, parameterGradients: false)!
    }
}

/// Errors of the affinity model.
public enum AffinityError: Error, CustomStringConvertible, Equatable {
    /// The RoI batch selection kept no box: there were no proposals, or every decoded box was
    /// degenerate (clipped area ≤ 1e-5).
    case noRegionsOfInterest
    /// The image tensor is not [1, 3, H, W] with H and W multiples of 16 and at least 32.
    case invalidImage(String)
    /// An argument outside its domain, e.g. a class label other than 0, 1, 2.
    case invalidArgument(String)

    /// A one-line message naming the problem.
    public var description: String {
        switch self {
        case .noRegionsOfInterest: return "no region of interest survived the RoI batch selection (every proposal is degenerate)"
        case .invalidImage(let s): return "invalid image: \(s)"
        case .invalidArgument(let s): return "invalid argument: \(s)"
        }
    }
}

/// The RoI batch of the classification path (MODEL.md §5.3.2).
public struct RoIBatch: Sendable {
    /// B clipped decoded boxes in rank order (with repetitions when padded).
    public var boxes: [Box]
    /// Their lesion scores (`box_predictor_s2`'s softmax probability of class 1), same order.
    public var scores: [Float]
    /// How many distinct boxes survived NMS before padding (≤ B).
    public var survivors: Int
}

/// The One Shot Affinity Model: the segmentation Mask R-CNN plus the classification box and
/// mask-features branches (`*_s2`), and the image-classification head: by default the affinity
/// layer and the image classifier `s2new` (`AffinityHead`), or any other `ClassificationHead`.
public final class AffinityModel: Module {
    /// The segmentation Mask R-CNN: backbone, RPN and the segmentation RoI branches.
    public let segmentation: MaskRCNN
    /// `roi_heads.box_head_s2`, the box head that scores the proposals for the RoI batch.
    public let boxHeadS2: BoxHead
    /// `roi_heads.box_predictor_s2`.
    public let boxPredictorS2: BoxPredictor
    /// `roi_heads.mask_head_s2`.
    public let maskHeadS2: MaskHead
    /// `roi_heads.mask_predictor_s2`, which outputs the lesion mask features.
    public let maskPredictorS2: MaskFeaturePredictor
    /// The image-classification head (lesion mask features → 3 logits).
    public let head: any ClassificationHead
    /// The NMS IoU of the RoI batch selection (`box_nms_thresh_classifier`).
    public var roiNMSThreshold: Float = 0.25
    /// B, the number of RoIs in the lesion-mask-feature batch (8).
    public let roiBatchSize: Int

    /// The backbone, shared by the segmentation and the classification path.
    public var backbone: Backbone { segmentation.backbone }
    var workspace: Workspace { segmentation.workspace }

    /// The model of the paper: the built-in affinity head with C' = `affinities`.
    public convenience init(affinities: Int, config: DetectionConfig = DetectionConfig()) {
        self.init(head: AffinityHead(affinities: affinities), config: config)
    }

    /// A model with `head` in place of the affinity layer + classifier.
    public init(head: any ClassificationHead, config: DetectionConfig = DetectionConfig()) {
        segmentation = MaskRCNN(config: config)
        boxHeadS2 = BoxHead("roi_heads.box_head_s2", representation: config.representationSize)
        boxPredictorS2 = BoxPredictor("roi_heads.box_predictor_s2", inFeatures: config.representationSize)
        maskHeadS2 = MaskHead("roi_heads.mask_head_s2")
        maskPredictorS2 = MaskFeaturePredictor("roi_heads.mask_predictor_s2")
        self.head = head
        roiBatchSize = (head as? AffinityHead)?.layer.batchSize ?? 8
    }

    /// The built-in head, or nil when the model has another one.
    public var affinityHead: AffinityHead? { head as? AffinityHead }
    /// C' of the built-in head; 0 when the model has another head (it has no affinity layer).
    public var affinities: Int { affinityHead?.affinities ?? 0 }

    /// The classification RoI branches (box_head_s2, box_predictor_s2, mask_head_s2, mask_predictor_s2).
    public var classificationBranchParameters: [Parameter] {
        boxHeadS2.parameters + boxPredictorS2.parameters + maskHeadS2.parameters + maskPredictorS2.parameters
    }

    /// The segmentation model's, the classification RoI branches', then the head's parameters.
    public var parameters: [Parameter] {
        segmentation.parameters + classificationBranchParameters + head.parameters
    }

    /// Every state entry in the original state-dict order (without the alias keys).
    public var stateEntries: [StateEntry] {
        segmentation.stateEntries + boxHeadS2.stateEntries + boxPredictorS2.stateEntries + maskHeadS2.stateEntries + maskPredictorS2.stateEntries
            + head.stateEntries
    }

    /// The alias keys of the original state dict (alias → key), accepted on load and written on save.
    public var originalAliases: [(alias: String, of: String)] { head.originalAliases }

    /// From-scratch initialisation of MODEL.md §13 (the `_s2` copies are overwritten by the first copy).
    public func initialize(rng: inout SeededGenerator) {
        segmentation.initialize(rng: &rng)
        for l in [boxHeadS2.fc6, boxHeadS2.fc7, boxPredictorS2.clsScore, boxPredictorS2.bboxPred] { HeadInit.linear(l, rng: &rng) }
        HeadInit.kaimingConv(maskHeadS2.fcn1.weight, bias: maskHeadS2.fcn1.bias, rng: &rng)
        Init.kaimingNormalFanOut(maskPredictorS2.convMask.weight.value, rng: &rng); maskPredictorS2.convMask.bias?.value.fill(0.01)
        Init.kaimingNormalFanOut(maskPredictorS2.convReduce.weight.value, rng: &rng); maskPredictorS2.convReduce.bias?.value.fill(0.01)
        head.initialize(rng: &rng)
    }

    /// Copies the segmentation branches into the classification ones (MODEL.md §5.3.1 `copy_weights`):
    /// box_head → box_head_s2, box_predictor → box_predictor_s2, mask_head.mask_fcn1 → mask_head_s2,
    /// mask_predictor.conv_mask → mask_predictor_s2.conv_mask. `conv_reduce` is never copied.
    public func copySegmentationWeights() throws {
        let pairs: [(Parameter, Parameter)] = zip(segmentation.boxHead.parameters, boxHeadS2.parameters).map { ($0, $1) }
            + zip(segmentation.boxPredictor.parameters, boxPredictorS2.parameters).map { ($0, $1) }
            + zip(segmentation.maskHead.parameters, maskHeadS2.parameters).map { ($0, $1) }
            + zip(segmentation.maskPredictor.convMask.parameters, maskPredictorS2.convMask.parameters).map { ($0, $1) }
        for (src, dst) in pairs { try dst.value.copy(from: src.value) }
    }

    // MARK: - RoI batch selection

    /// MODEL.md §5.3.2: decode all proposals with box_predictor_s2's class-1 deltas (10,10,5,5),
    /// clip, keep area > 1e-5, NMS 0.25 ranked by the lesion score, the top B, padded by the seeded
    /// repetition rule when fewer survive.
    public func selectRoIBatch(proposals: [Box], logits: Tensor, regression: Tensor, imageHeight: Int, imageWidth: Int,
                               rng: inout SeededGenerator) throws -> RoIBatch {
        let classes = logits.shape[1]
        let probs = Tensor(shape: logits.shape)
        try softmaxForward(out: probs, input: logits)
        var boxes: [Box] = [], scores: [Float] = []
        for i in 0..<proposals.count {
            let d = regression.data + i * 4 * classes + 4
            var b = [BoxCoder.roi.decode((d[0], d[1], d[2], d[3]), reference: proposals[i])]
            clipBoxes(&b, width: imageWidth, height: imageHeight)
            if (b[0].x2 - b[0].x1) * (b[0].y2 - b[0].y1) > 1e-5 {
                boxes.append(b[0]); scores.append(probs.data[i * classes + 1])
            }
        }
        let keep = Array(nms(boxes, scores: scores, iouThreshold: roiNMSThreshold).prefix(roiBatchSize))
        guard !keep.isEmpty else { throw AffinityError.noRegionsOfInterest }
        let order = Self.paddingOrder(count: keep.count, batchSize: roiBatchSize, rng: &rng)
        return RoIBatch(boxes: order.map { boxes[keep[$0]] }, scores: order.map { scores[keep[$0]] }, survivors: keep.count)
    }

    /// Which ranked box fills each of the B positions (§5.3.2 step 8): n − 1 distinct cut points
    /// from {1, …, B−2} (a random permutation of B−2 values, the first n−1, plus one, sorted);
    /// positions [b_i, b_{i+1}) hold the i-th box. n ≥ B gives 0..<B.
    ///
    /// No box (n ≤ 0) or no position (B ≤ 0) gives an empty order, without drawing from `rng`:
    /// every returned index is a valid index of the n ranked boxes. (`selectRoIBatch` throws
    /// `AffinityError.noRegionsOfInterest` before it asks for an order of no boxes.)
    public static func paddingOrder(count n: Int, batchSize b: Int, rng: inout SeededGenerator) -> [Int] {
        if n <= 0 || b <= 0 { return [] }
        if n >= b { return Array(0..<b) }
        let perm = rng.permutation(b - 2)
        let cuts = perm.prefix(n - 1).map { $0 + 1 }.sorted()
        let bounds = [0] + cuts + [b]
        var out: [Int] = []
        for i in 0..<n { out += Array(repeating: i, count: bounds[i + 1] - bounds[i]) }
        return out
    }

    // MARK: - Forward

    /// Everything the classification path computes for one image.
    public struct ClassificationOutput {
        /// The FPN feature map [1, 256, H/16, W/16].
        public var features: Tensor
        /// The RPN proposals.
        public var proposals: Proposals
        /// `box_predictor_s2` logits of the proposals [R, 2].
        public var classLogitsS2: Tensor
        /// `box_predictor_s2` deltas of the proposals [R, 8].
        public var boxRegressionS2: Tensor
        /// The B selected RoIs.
        public var roiBatch: RoIBatch
        /// RoIAlign 14×14 of the RoI batch [B, 256, 14, 14].
        public var maskPool: Tensor
        /// `mask_head_s2`'s output [B, 256, 14, 14].
        public var maskHead: Tensor
        /// The lesion mask features [B, 256, 28, 28].
        public var lesionMaskFeatures: Tensor
        /// The affinity layer's X1, X2, x3 (nil for a head other than the built-in one).
        public var affinity: AffinityLayer.Output?
        /// The image logits [1, 3] (0 normal, 1 common pneumonia, 2 COVID-19).
        public var logits: Tensor
    }

    /// What the classification step's backward needs.
    public struct ClassificationSaved {
        var backbone: Backbone.Saved?
        var maskUp: Tensor
        var head: ClassificationHeadOutput
    }

    /// The classification path on normalised features: proposals → box_head_s2/box_predictor_s2 →
    /// RoI batch → mask_head_s2/mask_predictor_s2 → the head (affinity layer → classifier).
    /// `stage`: the features' RPN proposals and their pooling when the caller has them already
    /// (the inference shares them with the segmentation detections; computed here otherwise).
    /// `forBackward: false` (inference): the head keeps less of what only a backward pass needs.
    public func classify(features: Tensor, imageHeight: Int, imageWidth: Int, rng: inout SeededGenerator,
                         fixedRoIBatch: RoIBatch? = nil, stage: MaskRCNN.ProposalStage? = nil,
                         forBackward: Bool = true) throws -> (ClassificationOutput, ClassificationSaved) {
        let ws = workspace
        let st = try stage ?? segmentation.proposalStage(features: features, imageHeight: imageHeight, imageWidth: imageWidth)
        let (props, pooled) = (st.proposals, st.pooled)
        let (rep, _) = try boxHeadS2.forward(pooled)
        let (logits2, reg2) = try boxPredictorS2.forward(rep)
        let batch = try fixedRoIBatch
            ?? selectRoIBatch(proposals: props.boxes, logits: logits2, regression: reg2, imageHeight: imageHeight, imageWidth: imageWidth, rng: &rng)
        let mpool = try roiAlignForward(features: features, boxes: batch.boxes, outputSize: 14, spatialScale: 1.0 / 16, samplingRatio: 2)
        let mh = try maskHeadS2.forward(mpool, workspace: ws)
        let (lmf, up) = try maskPredictorS2.forward(mh, workspace: ws)
        let h = try head.forward(lesionMaskFeatures: lmf, workspace: ws, forBackward: forBackward)
        let out = ClassificationOutput(features: features, proposals: props, classLogitsS2: logits2, boxRegressionS2: reg2, roiBatch: batch,
                                       maskPool: mpool, maskHead: mh, lesionMaskFeatures: lmf, affinity: h.affinity, logits: h.logits)
        return (out, ClassificationSaved(backbone: nil, maskUp: up, head: h))
    }

    /// The full inference of the original test script: eval-mode backbone and RPN, the
    /// classification path (affinity BNs on batch statistics) and, if asked, the segmentation
    /// detections with their masks.
    ///
    /// The image must be normalised as Imaging's `Preprocessing.modelInput` does.
    /// - Throws: `AffinityError.invalidImage` unless the image is [1, 3, H, W] with H and W multiples
    ///   of 16 and at least 32; `AffinityError.noRegionsOfInterest` when no RoI survives the selection;
    ///   `TensorError` from the layers.
    public func predict(_ image: Tensor, withDetections: Bool = true, rng: inout SeededGenerator) throws -> (ClassificationOutput, [Detection]) {
        try Self.checkImage(image)
        let (features, _) = try backbone.forward(image, training: false, workspace: workspace, keep: false)
        let h = image.shape[2], w = image.shape[3]
        let stage = try segmentation.proposalStage(features: features, imageHeight: h, imageWidth: w)
        let (out, _) = try classify(features: features, imageHeight: h, imageWidth: w, rng: &rng, stage: stage, forBackward: false)
        var dets: [Detection] = []
        if withDetections {
            dets = try segmentation.inference(features: features, imageHeight: h, imageWidth: w, stage: stage).detections
        }
        return (out, dets)
    }

    static func checkImage(_ image: Tensor) throws {
        guard image.shape.count == 4, image.shape[0] == 1, image.shape[1] == 3 else {
            throw AffinityError.invalidImage("expected a [1, 3, H, W] tensor, got \(shapeString(image.shape))")
        }
        guard image.shape[2] >= 32, image.shape[3] >= 32, image.shape[2] % 16 == 0, image.shape[3] % 16 == 0 else {
            throw AffinityError.invalidImage("sides must be multiples of 16 and at least 32, got \(image.shape[2])×\(image.shape[3])")
        }
    }

    // MARK: - Classification step

    /// The classification step's forward and backward (MODEL.md §8.2): eval-mode backbone and RPN,
    /// the classification path, L_CLS = mean of 3 BCE-with-logits terms against the one-hot label;
    /// gradients accumulated into the backbone (body + FPN) and the head (the affinity layer and the
    /// classifier) (and `conv_reduce` if `trainReduce`). The classification RoI branches get no gradient.
    /// `fixedRoIBatch` replaces the RoI batch selection (for gradient checks: the selection is not
    /// differentiable, so the loss must not move through it).
    public func classificationForwardBackward(image: Tensor, label: Int, trainReduce: Bool = false,
                                              rng: inout SeededGenerator, fixedRoIBatch: RoIBatch? = nil) throws -> (loss: Double, logits: Tensor) {
        try Self.checkImage(image)
        guard (0..<3).contains(label) else { throw AffinityError.invalidArgument("label \(label) is not 0, 1 or 2") }
        let ws = workspace
        let (features, bsaved) = try backbone.forward(image, training: false, workspace: ws, keep: true)
        let (out, saved) = try classify(features: features, imageHeight: image.shape[2], imageWidth: image.shape[3], rng: &rng,
                                        fixedRoIBatch: fixedRoIBatch)
        let target = Tensor(shape: [1, 3])
        target.data[label] = 1
        let dLogits = Tensor(shape: [1, 3])
        let loss = try bceWithLogitsLoss(logits: out.logits, targets: target, grad: dLogits)
        let dLMF = try head.backward(logitsGradient: dLogits, output: saved.head, workspace: ws)
        let dMH = try maskPredictorS2.backward(dLMF, input: out.maskHead, up: saved.maskUp, output: out.lesionMaskFeatures, trainReduce: trainReduce, workspace: ws)
        let dMPool = try maskHeadS2.fcn1.backward(try reluGradient(dMH, output: out.maskHead), input: out.maskPool, workspace: ws, parameterGradients: false)!
        let dFeatures = Tensor(shape: features.shape)
        try roiAlignBackward(dFeatures: dFeatures, dOut: dMPool, boxes: out.roiBatch.boxes, outputSize: 14, spatialScale: 1.0 / 16, samplingRatio: 2)
        try backbone.backward(dFeatures, saved: bsaved!, workspace: ws)
        return (loss, out.logits)
    }
}
