import Foundation
import NN
import Tensor

/// The constants of the detector (MODEL.md §4–5), defaults as the original model.
public struct DetectionConfig: Sendable, Codable, Equatable {
    /// Anchor sizes in pixels (MODEL.md §4.1).
    public var anchorSizes: [Float] = [2, 4, 8, 16, 32]
    /// Anchor aspect ratios h/w.
    public var aspectRatios: [Float] = [0.1, 0.25, 0.5, 1, 1.5, 2]
    /// Anchors kept (highest objectness logits) before the RPN's NMS.
    public var rpnPreNMSTopN = 400
    /// Proposals kept after the RPN's NMS.
    public var rpnPostNMSTopN = 200
    /// The RPN's NMS suppresses a box whose IoU with a better one exceeds this.
    public var rpnNMSThreshold: Float = 0.75
    /// Training: an anchor with IoU ≥ this with a gt box is positive.
    public var rpnForegroundIoU: Float = 0.7
    /// Training: an anchor whose best IoU is below this is negative.
    public var rpnBackgroundIoU: Float = 0.3
    /// Training: anchors sampled per image for the RPN losses.
    public var rpnBatchSize = 256
    /// Training: the largest share of positives in the RPN sample.
    public var rpnPositiveFraction: Float = 0.75
    /// Training: a proposal with IoU ≥ this with a gt box is foreground.
    public var roiForegroundIoU: Float = 0.75
    /// Training: a proposal whose best IoU is below this is background.
    public var roiBackgroundIoU: Float = 0.5
    /// Training: RoIs sampled per image for the box and mask losses.
    public var roiBatchSize = 256
    /// Training: the largest share of foreground RoIs in that sample.
    public var roiPositiveFraction: Float = 0.75
    /// Inference: a detection needs a class probability above this.
    public var boxScoreThreshold: Float = 0.05
    /// Inference: the per-class NMS suppresses a detection whose IoU with a better one exceeds this.
    public var boxNMSThreshold: Float = 0.5
    /// Inference: the most detections returned per image.
    public var detectionsPerImage = 100
    /// The width of the box heads' representation (`fc6`, `fc7` outputs).
    public var representationSize = 128
    /// The original model's constants.
    public init() {}

    /// A = anchor sizes × aspect ratios (30 with the defaults).
    public var anchorsPerLocation: Int { anchorSizes.count * aspectRatios.count }
}

/// One detected lesion: box in image pixels, softmax score, label (1), and the 28×28 mask probabilities.
public struct Detection: Sendable {
    /// The box in input-image pixels, decoded from the RoI head and clipped to the image.
    public var box: Box
    /// The softmax probability of `label`.
    public var score: Float
    /// The class index: always 1 (lesion) in this two-class model.
    public var label: Int
    /// Sigmoid probabilities of the predicted class's mask logits, 28·28 row-major.
    public var mask28: [Float]
}

/// The RPN's proposals for one image: clipped boxes in descending objectness order and their logits.
public struct Proposals: Sendable {
    /// Clipped boxes in image pixels, highest objectness first.
    public var boxes: [Box]
    /// Their objectness logits (not probabilities), in the same order.
    public var logits: [Float]
    /// Proposals from boxes and their logits (equal counts expected, not checked).
    public init(boxes: [Box], logits: [Float]) { self.boxes = boxes; self.logits = logits }
}

/// Ground truth of one segmentation sample (MODEL.md §1.2): lesion boxes and full-image masks.
public struct SegmentationTargets: Sendable {
    /// One box per lesion instance, in image pixels.
    public var boxes: [Box]
    /// One H×W 0/1 mask per box.
    public var masks: [[UInt8]]
    /// The image (and mask) size in pixels.
    public var height: Int, width: Int

    /// Targets from boxes and their masks; `MaskRCNN.segmentationForwardBackward` checks them.
    /// - Parameters:
    ///   - boxes: One box per instance, in image pixels.
    ///   - masks: One `height`×`width` 0/1 mask per box, row-major.
    ///   - height: The image height.
    ///   - width: The image width.
    public init(boxes: [Box], masks: [[UInt8]], height: Int, width: Int) {
        self.boxes = boxes; self.masks = masks; self.height = height; self.width = width
    }

    /// Targets from instances made by `lesionInstances`.
    public init(instances: [LesionInstance], height: Int, width: Int) {
        self.init(boxes: instances.map(\.box), masks: instances.map(\.mask), height: height, width: width)
    }
}

/// The five terms of L_SEG (MODEL.md §5.2.2, §4.5).
public struct SegmentationLosses: Sendable, Codable, Equatable {
    /// torchvision's `loss_classifier`, `loss_box_reg`, `loss_mask`, `loss_objectness`, `loss_rpn_box_reg`.
    public var classifier = 0.0, boxReg = 0.0, mask = 0.0, objectness = 0.0, rpnBoxReg = 0.0
    /// L_SEG: the plain sum of the five terms.
    public var total: Double { classifier + boxReg + mask + objectness + rpnBoxReg }
    /// All five terms zero.
    public init() {}
}

/// Errors of the detector's inputs.
public enum DetectionError: Error, CustomStringConvertible, Equatable {
    /// Segmentation targets that cannot be trained on: no box, masks of the wrong count or size, a
    /// size other than the image's, or a degenerate box.
    case invalidTargets(String)
    /// The image tensor is not [1, 3, H, W] with H and W multiples of 16 and at least 32.
    case invalidImage(String)

    /// A one-line message naming the problem.
    public var description: String {
        switch self {
        case .invalidTargets(let s): return "invalid segmentation targets: \(s)"
        case .invalidImage(let s): return "invalid image: \(s)"
        }
    }
}

/// The segmentation half of the One Shot Affinity Model: ResNet18-to-layer3 + FPN, RPN, and the
/// segmentation RoI branches (`box_head`, `box_predictor`, `mask_head`, `mask_predictor`).
public final class MaskRCNN: Module {
    /// The constants the detector was made with.
    public let config: DetectionConfig
    /// ResNet18 to layer3 + the single-level FPN.
    public let backbone = Backbone()
    /// The RPN head (`rpn.head`), A = `config.anchorsPerLocation`.
    public let rpn: RPNHead
    /// `roi_heads.box_head`.
    public let boxHead: BoxHead
    /// `roi_heads.box_predictor` (2 classes).
    public let boxPredictor: BoxPredictor
    /// `roi_heads.mask_head`.
    public let maskHead: MaskHead
    /// `roi_heads.mask_predictor` (2 classes).
    public let maskPredictor: MaskPredictor
    /// Scratch memory of the model's convolutions; it is not thread-safe, so one model must not run
    /// on two threads at once.
    public let workspace = Workspace()
    private var anchorCache: (h: Int, w: Int, sy: Int, sx: Int, anchors: [Box])?

    /// A detector with the original keys (`backbone.*`, `rpn.head.*`, `roi_heads.*`) and zero weights
    /// (BatchNorm γ = 1); call `initialize(rng:)` or load a checkpoint.
    /// - Parameter config: The detector constants; `anchorsPerLocation` sizes the RPN head and
    ///   `representationSize` the box head and predictor.
    public init(config: DetectionConfig = DetectionConfig()) {
        self.config = config
        rpn = RPNHead(anchorsPerLocation: config.anchorsPerLocation)
        boxHead = BoxHead("roi_heads.box_head", representation: config.representationSize)
        boxPredictor = BoxPredictor("roi_heads.box_predictor", inFeatures: config.representationSize)
        maskHead = MaskHead("roi_heads.mask_head")
        maskPredictor = MaskPredictor("roi_heads.mask_predictor")
    }

    /// The segmentation RoI branches (Θ2).
    public var segmentationHeadParameters: [Parameter] {
        boxHead.parameters + boxPredictor.parameters + maskHead.parameters + maskPredictor.parameters
    }
    /// The backbone's, the RPN head's, then the segmentation RoI branches' parameters.
    public var parameters: [Parameter] { backbone.parameters + rpn.parameters + segmentationHeadParameters }
    /// Every state entry in state-dict order: backbone, RPN head, box head, box predictor, mask head,
    /// mask predictor.
    public var stateEntries: [StateEntry] {
        backbone.stateEntries + rpn.stateEntries + boxHead.stateEntries + boxPredictor.stateEntries + maskHead.stateEntries + maskPredictor.stateEntries
    }

    /// From-scratch initialisation of MODEL.md §13.
    public func initialize(rng: inout SeededGenerator) {
        backbone.initialize(rng: &rng)
        rpn.initialize(rng: &rng)
        for l in [boxHead.fc6, boxHead.fc7, boxPredictor.clsScore, boxPredictor.bboxPred] { HeadInit.linear(l, rng: &rng) }
        HeadInit.kaimingConv(maskHead.fcn1.weight, bias: maskHead.fcn1.bias, rng: &rng)
        HeadInit.kaimingConv(maskPredictor.convMask.weight, bias: maskPredictor.convMask.bias, rng: &rng)
        HeadInit.kaimingConv(maskPredictor.logits.weight, bias: maskPredictor.logits.bias, rng: &rng)
    }

    // MARK: - Anchors and proposals

    /// The anchors of a feature map of h×w cells for an image of imageH×imageW (stride = image/feature).
    public func anchors(featureHeight h: Int, featureWidth w: Int, imageHeight: Int, imageWidth: Int) -> [Box] {
        let sy = imageHeight / h, sx = imageWidth / w
        if let c = anchorCache, c.h == h, c.w == w, c.sy == sy, c.sx == sx { return c.anchors }
        let a = Anchors.grid(featureHeight: h, featureWidth: w, strideY: sy, strideX: sx,
                             base: Anchors.baseAnchors(sizes: config.anchorSizes, aspectRatios: config.aspectRatios))
        anchorCache = (h, w, sy, sx, a)
        return a
    }

    /// RPN proposals (MODEL.md §4.4): the top `config.rpnPreNMSTopN` logits → decode → clip → NMS at
    /// `config.rpnNMSThreshold` → the first `config.rpnPostNMSTopN`.
    public func proposals(objectness: Tensor, deltas: Tensor, imageHeight: Int, imageWidth: Int) -> Proposals {
        let A = config.anchorsPerLocation, h = objectness.shape[2], w = objectness.shape[3], plane = h * w
        let anchors = self.anchors(featureHeight: h, featureWidth: w, imageHeight: imageHeight, imageWidth: imageWidth)
        let n = A * plane
        // Flattened logits in anchor order.
        var logits = [Float](repeating: 0, count: n)
        for a in 0..<A {
            let src = objectness.data + a * plane
            for c in 0..<plane { logits[c * A + a] = src[c] }
        }
        let k = min(config.rpnPreNMSTopN, n)
        let top = topK(logits, k)
        var boxes = [Box](), scores = [Float]()
        boxes.reserveCapacity(k); scores.reserveCapacity(k)
        for i in top {
            let a = i % A, c = i / A
            let d = (deltas.data[(a * 4) * plane + c], deltas.data[(a * 4 + 1) * plane + c],
                     deltas.data[(a * 4 + 2) * plane + c], deltas.data[(a * 4 + 3) * plane + c])
            boxes.append(BoxCoder.rpn.decode(d, reference: anchors[i]))
            scores.append(logits[i])
        }
        clipBoxes(&boxes, width: imageWidth, height: imageHeight)
        let keep = nms(boxes, scores: scores, iouThreshold: config.rpnNMSThreshold).prefix(config.rpnPostNMSTopN)
        return Proposals(boxes: keep.map { boxes[$0] }, logits: keep.map { scores[$0] })
    }

    // MARK: - Inference

    /// Checks an input image: [1, 3, H, W] with H and W positive multiples of 16 (the feature
    /// stride; MODEL.md §1.5's transform pads to multiples of 32, Imaging's `Preprocessing.modelInput`
    /// always gives 512×512).
    /// - Throws: `DetectionError.invalidImage` with the shape at fault.
    public static func checkImage(_ image: Tensor) throws {
        guard image.shape.count == 4, image.shape[0] == 1, image.shape[1] == 3 else {
            throw DetectionError.invalidImage("expected a [1, 3, H, W] tensor, got \(shapeString(image.shape))")
        }
        guard image.shape[2] >= 32, image.shape[3] >= 32, image.shape[2] % 16 == 0, image.shape[3] % 16 == 0 else {
            throw DetectionError.invalidImage("sides must be multiples of 16 and at least 32 (pad or resize first), got \(image.shape[2])×\(image.shape[3])")
        }
    }

    /// Everything an eval-mode forward of the segmentation half computes.
    public struct Output {
        /// The FPN feature map [1, 256, H/16, W/16].
        public var features: Tensor
        /// The RPN objectness logits [1, A, H/16, W/16].
        public var objectness: Tensor
        /// The RPN deltas [1, 4A, H/16, W/16].
        public var deltas: Tensor
        /// The RPN proposals (at most `config.rpnPostNMSTopN`).
        public var proposals: Proposals
        /// Box-branch class logits of the proposals [R, 2].
        public var classLogits: Tensor
        /// Box-branch deltas of the proposals [R, 8] (class-major, weights (10, 10, 5, 5)).
        public var boxRegression: Tensor
        /// The post-processed detections, best first, with 28×28 masks unless `withMasks` was false.
        public var detections: [Detection]
    }

    /// Eval-mode forward (backbone BN with running statistics): features, proposals, box branch on
    /// all proposals, post-processing and the mask branch on the detections.
    /// - Throws: `DetectionError.invalidImage` unless the image is [1, 3, H, W] with H and W multiples
    ///   of 16 and at least 32 (see `checkImage(_:)`); `TensorError` from the layers.
    public func inference(_ image: Tensor, withMasks: Bool = true) throws -> Output {
        try Self.checkImage(image)
        let (features, _) = try backbone.forward(image, training: false, workspace: workspace, keep: false)
        return try inference(features: features, imageHeight: image.shape[2], imageWidth: image.shape[3], withMasks: withMasks)
    }

    /// The eval-mode RPN on given features, its proposals and their 7×7 RoIAlign pooling: the
    /// part of the heads that the segmentation detections and the classification path share.
    public struct ProposalStage {
        /// The RPN objectness logits [1, A, H/16, W/16].
        public var objectness: Tensor
        /// The RPN deltas [1, 4A, H/16, W/16].
        public var deltas: Tensor
        /// The RPN proposals (at most `config.rpnPostNMSTopN`).
        public var proposals: Proposals
        /// RoIAlign 7×7 of the features at the proposals, [R, 256, 7, 7].
        public var pooled: Tensor
    }

    /// Runs the RPN on `features`, selects the proposals and pools them (eval mode).
    public func proposalStage(features: Tensor, imageHeight: Int, imageWidth: Int) throws -> ProposalStage {
        let (obj, del, _) = try rpn.forward(features, workspace: workspace)
        let props = proposals(objectness: obj, deltas: del, imageHeight: imageHeight, imageWidth: imageWidth)
        let pooled = try roiAlignForward(features: features, boxes: props.boxes, outputSize: 7, spatialScale: 1.0 / 16, samplingRatio: 2)
        return ProposalStage(objectness: obj, deltas: del, proposals: props, pooled: pooled)
    }

    /// The eval-mode heads on given features. `stage` is the features' `proposalStage` when the
    /// caller has it already (computed here otherwise).
    public func inference(features: Tensor, imageHeight: Int, imageWidth: Int, withMasks: Bool = true,
                          stage: ProposalStage? = nil) throws -> Output {
        let st = try stage ?? proposalStage(features: features, imageHeight: imageHeight, imageWidth: imageWidth)
        let (obj, del, props, pooled) = (st.objectness, st.deltas, st.proposals, st.pooled)
        let (rep, _) = try boxHead.forward(pooled)
        let (logits, regression) = try boxPredictor.forward(rep)
        var dets = postprocess(proposals: props.boxes, logits: logits, regression: regression, imageHeight: imageHeight, imageWidth: imageWidth)
        if withMasks && !dets.isEmpty { try addMasks(&dets, features: features) }
        return Output(features: features, objectness: obj, deltas: del, proposals: props, classLogits: logits, boxRegression: regression, detections: dets)
    }

    /// torchvision's postprocess_detections with this model's constants (§5.2.3).
    public func postprocess(proposals: [Box], logits: Tensor, regression: Tensor, imageHeight: Int, imageWidth: Int) -> [Detection] {
        let r = proposals.count, classes = logits.shape[1]
        var boxes: [Box] = [], scores: [Float] = [], labels: [Int] = []
        let probs = Tensor(shape: logits.shape)
        try? softmaxForward(out: probs, input: logits)
        for i in 0..<r {
            for c in 1..<classes {
                let d = regression.data + i * 4 * classes + 4 * c
                var b = [BoxCoder.roi.decode((d[0], d[1], d[2], d[3]), reference: proposals[i])]
                clipBoxes(&b, width: imageWidth, height: imageHeight)
                let s = probs.data[i * classes + c]
                if s > config.boxScoreThreshold { boxes.append(b[0]); scores.append(s); labels.append(c) }
            }
        }
        let keep = batchedNMS(boxes, scores: scores, labels: labels, iouThreshold: config.boxNMSThreshold).prefix(config.detectionsPerImage)
        return keep.map { Detection(box: boxes[$0], score: scores[$0], label: labels[$0], mask28: []) }
    }

    /// Runs the mask branch on the detections' boxes and stores their 28×28 probabilities.
    /// The boxes go through in groups of about 24, so that the upsampled features (256×28×28 per
    /// box, 80 MB for 100 boxes) stay in the cache; each box's mask is the same either way.
    public func addMasks(_ dets: inout [Detection], features: Tensor) throws {
        let groups = (dets.count + 23) / 24
        // mask_fcn1's weights transformed for Winograd once for all the groups.
        let transformed = groups > 1 ? maskHead.fcn1.winogradWeights(images: dets.count / groups, h: 14, w: 14, workspace: workspace) : nil
        for g in 0..<groups {
            let range = dets.count * g / groups..<dets.count * (g + 1) / groups
            let pooled = try roiAlignForward(features: features, boxes: dets[range].map(\.box), outputSize: 14, spatialScale: 1.0 / 16,
                                             samplingRatio: 2)
            let h = try maskHead.forward(pooled, workspace: workspace, transformed: transformed)
            try maskPredictor.labelProbabilities(fromHead: h, detections: &dets, range: range)
        }
    }

    // MARK: - Training

    /// One segmentation step's forward and backward (MODEL.md §8.2): train-mode backbone, RPN and
    /// segmentation RoI losses, gradients accumulated into every parameter of Θ1 ∪ Θ2.
    /// - Throws: `DetectionError.invalidTargets` for an empty or inconsistent target set.
    @discardableResult
    public func segmentationForwardBackward(image: Tensor, targets: SegmentationTargets, rng: inout SeededGenerator) throws -> SegmentationLosses {
        try segmentationForwardBackward(image: image, targets: targets, rng: &rng, fixedProposals: nil)
    }

    /// As above; `fixedProposals` replaces the RPN's proposals (for gradient checks, where the
    /// loss must not move through the non-differentiable proposal selection).
    public func segmentationForwardBackward(image: Tensor, targets: SegmentationTargets, rng: inout SeededGenerator,
                                            fixedProposals: [Box]?) throws -> SegmentationLosses {
        guard !targets.boxes.isEmpty else { throw DetectionError.invalidTargets("a segmentation step needs at least one lesion box") }
        guard targets.masks.count == targets.boxes.count, targets.masks.allSatisfy({ $0.count == targets.height * targets.width }) else {
            throw DetectionError.invalidTargets("\(targets.boxes.count) boxes, \(targets.masks.count) masks, masks must be \(targets.height)×\(targets.width)")
        }
        try Self.checkImage(image)
        guard image.shape[2] == targets.height, image.shape[3] == targets.width else {
            throw DetectionError.invalidTargets("image \(shapeString(image.shape)) and masks \(targets.height)×\(targets.width) differ in size")
        }
        for b in targets.boxes where !(b.x2 > b.x1 && b.y2 > b.y1) {
            throw DetectionError.invalidTargets("degenerate box (\(b.x1), \(b.y1), \(b.x2), \(b.y2))")
        }
        let ws = workspace
        let H = targets.height, W = targets.width
        var losses = SegmentationLosses()
        let (features, bsaved) = try backbone.forward(image, training: true, workspace: ws)
        let dFeatures = Tensor(shape: features.shape)

        // RPN.
        let (obj, del, rsaved) = try rpn.forward(features, workspace: ws)
        let props = fixedProposals.map { Proposals(boxes: $0, logits: []) } ?? proposals(objectness: obj, deltas: del, imageHeight: H, imageWidth: W)
        let A = config.anchorsPerLocation, fh = obj.shape[2], fw = obj.shape[3], plane = fh * fw
        let anchors = self.anchors(featureHeight: fh, featureWidth: fw, imageHeight: H, imageWidth: W)
        let gt = targets.boxes
        let iouA = boxIoU(gt, anchors)
        let matchA = Matcher(high: config.rpnForegroundIoU, low: config.rpnBackgroundIoU, allowLowQualityMatches: true)(iou: iouA, gtCount: gt.count, predCount: anchors.count)
        let labelsA = matchA.map { $0 >= 0 ? 1 : ($0 == Matcher.below ? 0 : -1) }
        let (posA, negA) = sampleBalanced(labels: labelsA, batchSize: config.rpnBatchSize, positiveFraction: config.rpnPositiveFraction, rng: &rng)
        let sampled = Float(posA.count + negA.count)
        let dObj = Tensor(shape: obj.shape), dDel = Tensor(shape: del.shape)
        if sampled > 0 {
            var lossObj = 0.0
            for (i, t) in posA.map({ ($0, Float(1)) }) + negA.map({ ($0, Float(0)) }) {
                let a = i % A, c = i / A
                let x = obj.data[a * plane + c]
                lossObj += Double(max(x, 0) - x * t + log1pf(expf(-abs(x))))
                dObj.data[a * plane + c] += (sigmoid(x) - t) / sampled
            }
            losses.objectness = lossObj / Double(sampled)
            var lossBox = 0.0
            for i in posA {
                let a = i % A, c = i / A
                let t = BoxCoder.rpn.encode(gt[matchA[i]], reference: anchors[i])
                let tv = [t.0, t.1, t.2, t.3]
                for k in 0..<4 {
                    let j = (a * 4 + k) * plane + c
                    let d = del.data[j] - tv[k]
                    lossBox += Double(abs(d))
                    if d != 0 { dDel.data[j] += (d > 0 ? 1 : -1) / sampled }
                }
            }
            losses.rpnBoxReg = lossBox / Double(sampled)
        }
        let dFromRPN = try rpn.backward(dObjectness: dObj, dDeltas: dDel, saved: rsaved, workspace: ws)
        try addForward(out: dFeatures, dFeatures, dFromRPN)

        // RoI box branch: proposals + gt boxes, matched and sampled.
        let roiBoxes = props.boxes + gt
        let iouR = boxIoU(gt, roiBoxes)
        let matchR = Matcher(high: config.roiForegroundIoU, low: config.roiBackgroundIoU, allowLowQualityMatches: false)(iou: iouR, gtCount: gt.count, predCount: roiBoxes.count)
        let labelsR = matchR.map { $0 >= 0 ? 1 : ($0 == Matcher.below ? 0 : -1) }
        let (posR, negR) = sampleBalanced(labels: labelsR, batchSize: config.roiBatchSize, positiveFraction: config.roiPositiveFraction, rng: &rng)
        let sampledR = (posR + negR).sorted()
        let R = sampledR.count
        if R > 0 {
            let boxes = sampledR.map { roiBoxes[$0] }
            let pooled = try roiAlignForward(features: features, boxes: boxes, outputSize: 7, spatialScale: 1.0 / 16, samplingRatio: 2)
            let (rep, hsaved) = try boxHead.forward(pooled)
            let (logits, regression) = try boxPredictor.forward(rep)
            let classes = logits.shape[1]
            let cls = sampledR.map { labelsR[$0] > 0 ? 1 : 0 }
            let dLogits = Tensor(shape: logits.shape), dReg = Tensor(shape: regression.shape)
            losses.classifier = try crossEntropyLoss(logits: logits, targets: cls, grad: dLogits)
            var lossBox = 0.0
            for (r, idx) in sampledR.enumerated() where cls[r] > 0 {
                let t = BoxCoder.roi.encode(gt[matchR[idx]], reference: roiBoxes[idx])
                var tv: [Float] = [t.0, t.1, t.2, t.3]
                let off = r * 4 * classes + 4 * cls[r]
                lossBox += tv.withUnsafeMutableBufferPointer { tp in
                    smoothL1(regression.data + off, tp.baseAddress!, count: 4, grad: dReg.data + off, scale: 1 / Float(R))
                }
            }
            losses.boxReg = lossBox / Double(R)
            let dRep = try boxPredictor.backward(dLogits: dLogits, dDeltas: dReg, input: rep)
            let dPooled = try boxHead.backward(dRep, saved: hsaved)!
            try roiAlignBackward(dFeatures: dFeatures, dOut: try dPooled.reshaped(pooled.shape), boxes: boxes, outputSize: 7, spatialScale: 1.0 / 16, samplingRatio: 2)

            // Mask branch on the sampled positives.
            let positives = sampledR.filter { labelsR[$0] > 0 }
            if !positives.isEmpty {
                let mboxes = positives.map { roiBoxes[$0] }
                let mpooled = try roiAlignForward(features: features, boxes: mboxes, outputSize: 14, spatialScale: 1.0 / 16, samplingRatio: 2)
                let mh = try maskHead.forward(mpooled, workspace: ws)
                let (mlogits, up) = try maskPredictor.forward(mh, workspace: ws)
                let mclasses = mlogits.shape[1], mplane = 28 * 28
                let dM = Tensor(shape: mlogits.shape)
                var lossMask = 0.0
                let count = Float(positives.count * mplane)
                for (p, idx) in positives.enumerated() {
                    var target = targets.masks[matchR[idx]].withUnsafeBufferPointer {
                        maskTarget(mask: $0.baseAddress!, height: H, width: W, box: roiBoxes[idx], size: 28)
                    }
                    let off = (p * mclasses + 1) * mplane
                    lossMask += target.withUnsafeMutableBufferPointer { tp in
                        Double(mplane) * bceWithLogits(mlogits.data + off, tp.baseAddress!, count: mplane, grad: dM.data + off, scale: Float(mplane) / count)
                    }
                }
                losses.mask = lossMask / Double(count)
                let dmh = try maskPredictor.backward(dM, input: mh, up: up, workspace: ws)
                let dmp = try maskHead.backward(dmh, input: mpooled, output: mh, workspace: ws)
                try roiAlignBackward(dFeatures: dFeatures, dOut: dmp, boxes: mboxes, outputSize: 14, spatialScale: 1.0 / 16, samplingRatio: 2)
            } else {
                // torchvision multiplies the (absent) mask logits by zero: the loss is 0 and no
                // gradient reaches the mask branch, which still counts as "in the graph".
                for p in maskHead.parameters + maskPredictor.parameters { p.hasGradient = true }
            }
        }
        try backbone.backward(dFeatures, saved: bsaved!, workspace: ws)
        return losses
    }
}

/// Indices of the k largest values, in descending value order (ties: lower index first).
public func topK(_ v: [Float], _ k: Int) -> [Int] {
    guard k > 0 else { return [] }
    if k >= v.count { return v.indices.sorted { v[$0] > v[$1] || (v[$0] == v[$1] && $0 < $1) } }
    // Threshold by a partial selection, then sort the survivors.
    var idx = Array(v.indices)
    idx.withUnsafeMutableBufferPointer { p in
        var lo = 0, hi = p.count - 1
        let target = k - 1
        func better(_ a: Int, _ b: Int) -> Bool { v[a] > v[b] || (v[a] == v[b] && a < b) }
        while lo < hi {
            let pivot = p[(lo + hi) / 2]
            var i = lo, j = hi
            while i <= j {
                while better(p[i], pivot) { i += 1 }
                while better(pivot, p[j]) { j -= 1 }
                if i <= j { p.swapAt(i, j); i += 1; j -= 1 }
            }
            if target <= j { hi = j } else if target >= i { lo = i } else { break }
        }
    }
    return Array(idx.prefix(k)).sorted { v[$0] > v[$1] || (v[$0] == v[$1] && $0 < $1) }
}
