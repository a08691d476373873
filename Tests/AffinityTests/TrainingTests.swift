import Affinity
import Detection
import Foundation
import NN
import Tensor
import Testing
import TestSupport

/// Small synthetic data: 64×64 slices with elliptic bright "lesions" (count and brightness by class).
final class TinyData: TrainingData {
    let cls: [ClassificationSample]
    let seg: [SegmentationSample]
    init(size: Int = 64, classification: Int = 6, segmentation: Int = 4, seed: UInt64 = 1) {
        var rng = SeededGenerator(seed: seed)
        func sample(_ label: Int) -> (Tensor, SegmentationTargets) {
            let img = Tensor(shape: [1, 3, size, size])
            var boxes: [Box] = [], masks: [[UInt8]] = []
            let n = label == 0 ? 0 : (label == 1 ? 1 : 3)
            for _ in 0..<n {
                let rx = Float(label == 1 ? 10 : 6) + 2 * rng.nextUnitFloat(), ry = Float(label == 1 ? 8 : 5) + 2 * rng.nextUnitFloat()
                let cx = 14 + Float(size - 28) * rng.nextUnitFloat(), cy = 14 + Float(size - 28) * rng.nextUnitFloat()
                var m = [UInt8](repeating: 0, count: size * size)
                var x1 = size, y1 = size, x2 = 0, y2 = 0
                for y in 0..<size { for x in 0..<size {
                    let dx = (Float(x) - cx) / rx, dy = (Float(y) - cy) / ry
                    if dx * dx + dy * dy <= 1 { m[y * size + x] = 1; x1 = min(x1, x); y1 = min(y1, y); x2 = max(x2, x); y2 = max(y2, y) }
                } }
                boxes.append(Box(Float(x1), Float(y1), Float(x2 + 1), Float(y2 + 1))); masks.append(m)
            }
            for y in 0..<size { for x in 0..<size {
                var v = 0.3 * Float(rng.nextNormal())
                for m in masks where m[y * size + x] == 1 { v += label == 1 ? 2.0 : 1.0 }
                for c in 0..<3 { img[0, c, y, x] = v }
            } }
            return (img, SegmentationTargets(boxes: boxes, masks: masks, height: size, width: size))
        }
        cls = (0..<classification).map { i in ClassificationSample(image: sample(i % 3).0, label: i % 3) }
        seg = (0..<segmentation).map { i in let (img, t) = sample(1 + i % 2); return SegmentationSample(image: img, targets: t) }
    }
    var classificationCount: Int { cls.count }
    var segmentationCount: Int { seg.count }
    func classificationSample(_ i: Int) throws -> ClassificationSample { cls[i] }
    func segmentationSample(_ i: Int) throws -> SegmentationSample { seg[i] }
}

@Suite(.serialized) struct TrainingTests {
    /// The paper's detector with fewer proposals and RoIs, so that a step takes a fraction of a second.
    static var tinyDetection: DetectionConfig {
        var c = DetectionConfig()
        c.rpnPreNMSTopN = 100; c.rpnPostNMSTopN = 50; c.roiBatchSize = 32; c.rpnBatchSize = 64
        return c
    }

    static func model(seed: UInt64, affinities: Int = 16) -> AffinityModel {
        let m = AffinityModel(affinities: affinities, config: tinyDetection)
        var rng = SeededGenerator(seed: seed)
        m.initialize(rng: &rng)
        return m
    }

    static func config(seed: UInt64 = 3) -> TrainingConfig {
        var c = TrainingConfig()
        c.affinities = 16; c.epochs = 100; c.learningRate = 1e-4; c.seed = seed
        return c
    }

    @Test func clsGradientMatchesFiniteDifferences() throws {
        let m = Self.model(seed: 5)
        try m.copySegmentationWeights()
        let data = TinyData(classification: 1, segmentation: 1)
        let img = data.cls[0].image
        var rng = SeededGenerator(seed: 1)
        let (features, _) = try m.backbone.forward(img, training: false, workspace: Workspace(), keep: false)
        let (out, _) = try m.classify(features: features, imageHeight: 64, imageWidth: 64, rng: &rng)
        let batch = out.roiBatch
        func loss() throws -> Double {
            var r = SeededGenerator(seed: 1)
            m.zeroGrad()
            return try m.classificationForwardBackward(image: img, label: 2, rng: &r, fixedRoIBatch: batch).loss
        }
        let l0 = try loss()
        let grads = Dictionary(uniqueKeysWithValues: m.parameters.map { ($0.name, $0.grad.clone()) })
        // Through the classifier, the affinity layer, the mask-features branch, into the FPN and body.
        let checkedParams = m.head.parameters + m.backbone.fpnLayer.parameters
            + [m.backbone.blocks[5].conv2.weight, m.backbone.bn1.weight]
        // Directional derivatives along each tensor's own gradient (see SegmentationTrainingTests).
        var worst = 0.0, worstName = "", errors: [Double] = []
        for p in checkedParams {
            let g = grads[p.name]!
            var gn = 0.0, pn = 0.0
            for i in 0..<g.count { gn += Double(g.data[i] * g.data[i]); pn += Double(p.value.data[i] * p.value.data[i]) }
            gn = gn.squareRoot(); pn = pn.squareRoot()
            guard gn > 1e-7 else { continue }
            // A step that changes the loss by ≤ 0.2 % and each weight by ≤ 1e-4 of the tensor norm: the loss is
            // piecewise smooth (the RPN box term is an L1 with kinks ~1e-2 away along ĝ).
            let eps = min(max(1e-4 * pn, 1e-3), 2e-3 * max(l0, 0.1) / gn)
            let original = p.value.clone()
            func shifted(_ sign: Double) throws -> Double {
                for i in 0..<g.count { p.value.data[i] = original.data[i] + Float(sign * eps * Double(g.data[i]) / gn) }
                return try loss()
            }
            let lp = try shifted(1), lm = try shifted(-1)
            try p.value.copy(from: original)
            // Absolute floor: float32 losses carry ~1e-6 of noise, i.e. ~1e-2 in gradient units at this ε
            // (conv_down.bias, followed by a batch-statistics BN, has a true gradient of exactly 0).
            let err = abs((lp - lm) / (2 * eps) - gn) / max(gn, 0.05)
            errors.append(err)
            if err > worst { worst = err; worstName = "\(p.name): numeric \((lp - lm) / (2 * eps)), analytic \(gn)" }
        }
        errors.sort()
        #expect(errors.count >= 15)
        // Nine sieve passes and four batch-statistics BNs over 8 RoIs make this loss strongly
        // curved: the median deviation is ~2 %; a wrong backward term gives ≥ 50 %.
        #expect(errors[errors.count / 2] < 0.03, "median relative error \(errors[errors.count / 2])")
        #expect(worst < 0.25, "worst \(worst) at \(worstName), checked \(errors.count)")
        // The classification RoI branches get no gradient (paper Eq. 8), nor do the RPN and segmentation heads.
        _ = try loss()
        for p in m.classificationBranchParameters + m.segmentation.rpn.parameters + m.segmentation.segmentationHeadParameters {
            #expect(!p.hasGradient, "\(p.name) must not receive L_CLS gradients")
        }
    }

    @Test func stepsTouchOnlyTheirSubsets() throws {
        let m = Self.model(seed: 7)
        let trainer = try OneShotTrainer(model: m, data: TinyData(), config: Self.config())
        let subsetS = Set(trainer.segmentationParameters.map(\.name))
        let subsetC = Set(trainer.classificationParameters.map(\.name))
        let before = Dictionary(uniqueKeysWithValues: m.parameters.map { ($0.name, $0.value.array) })
        let r = try trainer.step()
        #expect(r.segmentation != nil && r.copied)
        for p in m.parameters {
            let changed = p.value.array != before[p.name]!
            let copiedS2 = p.name.contains("_s2") && !p.name.contains("conv_reduce")
            if !subsetS.contains(p.name) && !subsetC.contains(p.name) && !copiedS2 {
                #expect(!changed, "\(p.name) changed although no step updates it")
            }
        }
        // conv_reduce is never copied and (by default) never trained.
        let reduceUnchanged = m.maskPredictorS2.convReduce.weight.value.array == before["roi_heads.mask_predictor_s2.conv_reduce.weight"]!
        #expect(reduceUnchanged)
        // The first segmentation step always copies, before its Adam update: the _s2 box head holds
        // the box head's weights that produced the loss.
        let copied = m.boxHeadS2.fc6.weight.value.array == before["roi_heads.box_head.fc6.weight"]!
        let stepped = m.segmentation.boxHead.fc6.weight.value.array != before["roi_heads.box_head.fc6.weight"]!
        #expect(copied && stepped)
    }

    @Test func algorithmOneLowersBothLossesAndResumesExactly() throws {
        let data = TinyData()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("la-train-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        // 40 iterations, with a checkpoint written after 20 (the run goes on uninterrupted).
        let a = try OneShotTrainer(model: Self.model(seed: 9), data: data, config: Self.config())
        var seg: [Double] = [], cls: [Double] = []
        let ckpt = dir.appendingPathComponent("run.safetensors")
        for i in 0..<40 {
            if i == 20 { try a.saveCheckpoint(to: ckpt) }
            let r = try a.step()
            if let s = r.segmentation { seg.append(s.total) }
            cls.append(r.classification)
        }
        func mean(_ x: ArraySlice<Double>) -> Double { x.reduce(0, +) / Double(max(x.count, 1)) }
        #expect(mean(seg.suffix(8)) < mean(seg.prefix(8)), "L_SEG \(seg)")
        #expect(mean(cls.suffix(12)) < mean(cls.prefix(12)), "L_CLS \(cls)")
        // Resumed from the checkpoint at 20 into a fresh, differently initialised model: after 20
        // more iterations the weights equal the uninterrupted run's.
        let c = try OneShotTrainer(model: Self.model(seed: 1234), data: data, config: Self.config())
        try c.resume(from: ckpt)
        #expect(c.state.totalIterations == 20)
        for _ in 0..<20 { _ = try c.step() }
        var maxDiff: Float = 0
        for (p, q) in zip(a.model.parameters, c.model.parameters) {
            for i in 0..<p.value.count { maxDiff = max(maxDiff, abs(p.value.data[i] - q.value.data[i])) }
        }
        #expect(maxDiff <= 1e-6, "resumed run differs by \(maxDiff)")
        let sameState = c.state == a.state
        #expect(sameState, "trainer state after resume: epoch \(c.state.epoch)/\(a.state.epoch), iteration \(c.state.iteration)/\(a.state.iteration)")
    }

    @Test("segmentation pre-training steps only the segmentation subset, still copies, and survives a checkpoint")
    func segmentationOnly() throws {
        var config = Self.config()
        config.classificationStep = false
        let m = Self.model(seed: 5)
        let trainer = try OneShotTrainer(model: m, data: TinyData(), config: config)
        let subsetS = Set(trainer.segmentationParameters.map(\.name))
        let before = Dictionary(uniqueKeysWithValues: m.parameters.map { ($0.name, $0.value.array) })
        var copies = 0
        for _ in 0..<3 {
            let r = try trainer.step()
            #expect(r.classification == 0)
            #expect(r.segmentation != nil)
            if r.copied { copies += 1 }
        }
        #expect(copies >= 1, "the first segmentation step always copies")
        var segmentationMoved = false
        for p in m.parameters {
            let changed = p.value.array != before[p.name]!
            let copiedS2 = p.name.contains("_s2") && !p.name.contains("conv_reduce")
            if subsetS.contains(p.name) { segmentationMoved = segmentationMoved || changed }
            else if !copiedS2 { #expect(!changed, "\(p.name) changed without a classification step") }
        }
        #expect(segmentationMoved)
        // The switch is part of the checkpoint's configuration; a configuration written before the
        // switch existed decodes with both steps on.
        let enc = try JSONEncoder().encode(config)
        #expect(try JSONDecoder().decode(TrainingConfig.self, from: enc).classificationStep == false)
        var old = try JSONSerialization.jsonObject(with: enc) as! [String: Any]
        old["classificationStep"] = nil
        let decoded = try JSONDecoder().decode(TrainingConfig.self, from: JSONSerialization.data(withJSONObject: old))
        #expect(decoded.classificationStep && !decoded.segmentationStep == false)
        var none = config
        none.segmentationStep = false
        #expect(throws: TrainingError.self) { _ = try OneShotTrainer(model: m, data: TinyData(), config: none) }
    }

    @Test("headLearningRate steps the head at its own rate and the backbone at the base rate")
    func headLearningRate() throws {
        var config = Self.config()
        config.segmentationStep = false
        config.learningRate = 1e-5
        config.headLearningRate = 1e-3
        let m = Self.model(seed: 6)
        let trainer = try OneShotTrainer(model: m, data: TinyData(), config: config)
        let before = Dictionary(uniqueKeysWithValues: m.parameters.map { ($0.name, $0.value.array) })
        _ = try trainer.step()
        // Adam's first step moves every parameter with a gradient by the learning rate (times
        // m̂/√v̂ = ±1), so the largest move of each group is its rate.
        func largestMove(_ ps: [Parameter]) -> Float {
            var worst: Float = 0
            for p in ps { let b = before[p.name]!; for i in 0..<p.value.count { worst = max(worst, abs(p.value.data[i] - b[i])) } }
            return worst
        }
        let head = largestMove(trainer.headParameters), backbone = largestMove(m.backbone.parameters)
        #expect(head > 0.9e-3 && head < 1.01e-3, "head moved \(head)")
        #expect(backbone > 0.9e-5 && backbone < 1.01e-5, "backbone moved \(backbone)")
        #expect(adamRate(trainer) == 1e-5, "the optimizer returns to the base rate")
        let decoded = try JSONDecoder().decode(TrainingConfig.self, from: JSONEncoder().encode(config))
        #expect(decoded.headLearningRate == 1e-3)
    }

    private func adamRate(_ t: OneShotTrainer) -> Float { t.adam.learningRate }

    @Test func resumeRejectsAModelFile() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("la-train-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let m = Self.model(seed: 2)
        var w = SafeTensorsWriter(); m.addState(to: &w)
        let url = dir.appendingPathComponent("model.safetensors")
        try w.write(to: url)
        let t = try OneShotTrainer(model: m, data: TinyData(classification: 1, segmentation: 1), config: Self.config())
        #expect(throws: TrainingError.self) { try t.resume(from: url) }
    }

    @Test func paddingRule() {
        var rng = SeededGenerator(seed: 3)
        for n in 1...8 {
            for _ in 0..<20 {
                let o = AffinityModel.paddingOrder(count: n, batchSize: 8, rng: &rng)
                #expect(o.count == 8 && o[0] == 0 && o == o.sorted() && Set(o) == Set(0..<n))
                if n < 8 { #expect(o[6] == n - 1 && o[7] == n - 1, "the last kept box covers positions ≥ 6: \(o)") }
            }
        }
        #expect(AffinityModel.paddingOrder(count: 1, batchSize: 8, rng: &rng) == Array(repeating: 0, count: 8))
    }
}
