import Detection
import Foundation
import NN
import Tensor
import Testing
import TestSupport

/// L_SEG's gradient and the segmentation training step on tiny configurations.
@Suite struct SegmentationTrainingTests {
    /// A 64×64 image with one or two elliptic "lesions" and their targets.
    static func tinySample(seed: UInt64, size: Int = 64, lesions: [(Float, Float, Float, Float)] = [(30, 28, 9, 6)]) -> (Tensor, SegmentationTargets) {
        var rng = SeededGenerator(seed: seed)
        let img = Tensor(shape: [1, 3, size, size])
        var boxes: [Box] = [], masks: [[UInt8]] = []
        for (cx, cy, rx, ry) in lesions {
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
            for m in masks where m[y * size + x] == 1 { v += 1.5 }
            for c in 0..<3 { img[0, c, y, x] = v }
        } }
        return (img, SegmentationTargets(boxes: boxes, masks: masks, height: size, width: size))
    }

    static func tinyModel(seed: UInt64) -> MaskRCNN {
        var c = DetectionConfig()
        c.rpnPreNMSTopN = 100; c.rpnPostNMSTopN = 50; c.roiBatchSize = 32; c.rpnBatchSize = 64
        let m = MaskRCNN(config: c)
        var rng = SeededGenerator(seed: seed)
        m.initialize(rng: &rng)
        return m
    }

    @Test func lossGradientMatchesFiniteDifferences() throws {
        let m = Self.tinyModel(seed: 11)
        // Larger RPN weights than the N(0, 0.01²) init, so the RPN terms have gradients worth checking.
        var r = SeededGenerator(seed: 5)
        for c in [m.rpn.clsLogits, m.rpn.bboxPred] { Init.normal(c.weight.value, std: 0.05, rng: &r) }
        let (img, targets) = Self.tinySample(seed: 3)
        let rng0 = SeededGenerator(seed: 1)
        // Fix the proposals (no gradient flows through their selection).
        let out = try m.inference(img, withMasks: false)
        let proposals = out.proposals.boxes
        func loss() throws -> Double {
            var rng = rng0
            m.zeroGrad()
            return try m.segmentationForwardBackward(image: img, targets: targets, rng: &rng, fixedProposals: proposals).total
        }
        let l0 = try loss()
        #expect(l0.isFinite && l0 > 0)
        let analytic = Dictionary(uniqueKeysWithValues: m.parameters.map { ($0.name, $0.grad.clone()) })
        // Per parameter tensor: the directional derivative along its own gradient, (L(θ+εĝ) − L(θ−εĝ))/2ε,
        // must equal ‖g‖. This checks every coordinate's contribution at once, with the largest signal
        // a finite difference can have (coordinate-wise differences drown in float32 noise and ReLU/max-pool kinks).
        var worst = 0.0, worstName = "", checked = 0, errors: [Double] = []
        for p in m.parameters {
            let g = analytic[p.name]!
            var gn = 0.0, pn = 0.0
            for i in 0..<g.count { gn += Double(g.data[i] * g.data[i]); pn += Double(p.value.data[i] * p.value.data[i]) }
            gn = gn.squareRoot(); pn = pn.squareRoot()
            guard gn > 1e-6 else { continue }
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
            let num = (lp - lm) / (2 * eps)
            let err = abs(num - gn) / max(gn, 0.05)
            checked += 1
            errors.append(err)
            if err > worst { worst = err; worstName = "\(p.name): numeric \(num), analytic \(gn)" }
        }
        // The loss is piecewise smooth (ReLU, max-pool, L1 and smooth-L1 kinks) and float32: a few
        // tensors show up to ~17 % deviation from kinks crossed within ε; a missing or mis-scaled
        // backward term gives ≥ 50 % (or a sign flip) and moves the median.
        errors.sort()
        #expect(checked > 50, "checked \(checked)")
        #expect(errors[errors.count / 2] < 0.01, "median relative error \(errors[errors.count / 2])")
        #expect(worst < 0.25, "worst \(worst) at \(worstName); checked \(checked)")
    }

    @Test func rejectsBadTargets() throws {
        let m = Self.tinyModel(seed: 1)
        let (img, t) = Self.tinySample(seed: 2)
        var rng = SeededGenerator(seed: 1)
        #expect(throws: DetectionError.self) {
            try m.segmentationForwardBackward(image: img, targets: SegmentationTargets(boxes: [], masks: [], height: 64, width: 64), rng: &rng)
        }
        var degenerate = t; degenerate.boxes[0] = Box(10, 10, 10, 20)
        #expect(throws: DetectionError.self) { try m.segmentationForwardBackward(image: img, targets: degenerate, rng: &rng) }
        var wrongSize = t; wrongSize.height = 32; wrongSize.width = 32
        #expect(throws: DetectionError.self) { try m.segmentationForwardBackward(image: img, targets: wrongSize, rng: &rng) }
        // Sides that are not multiples of the feature stride are refused with a sentence, not a crash.
        let odd = Tensor(shape: [1, 3, 50, 64])
        var oddTargets = t; oddTargets.height = 50; oddTargets.masks = [[UInt8](repeating: 0, count: 50 * 64)]
        #expect(throws: DetectionError.self) { try m.segmentationForwardBackward(image: odd, targets: oddTargets, rng: &rng) }
        #expect(throws: DetectionError.self) { _ = try m.inference(Tensor(shape: [1, 3, 100, 64])) }
        #expect(throws: DetectionError.self) { _ = try m.inference(Tensor(shape: [1, 1, 64, 64])) }
        var missingMask = t; missingMask.masks = []
        #expect(throws: DetectionError.self) { try m.segmentationForwardBackward(image: img, targets: missingMask, rng: &rng) }
    }

    @Test func nonSquareImagesWork() throws {
        let m = Self.tinyModel(seed: 3)
        let (square, t) = Self.tinySample(seed: 8)
        // A 64×96 image: the 64×64 sample on the left, noise on the right.
        let img = Tensor(shape: [1, 3, 64, 96])
        for c in 0..<3 { for y in 0..<64 { for x in 0..<64 { img[0, c, y, x] = square[0, c, y, x] } } }
        let masks = t.masks.map { mk -> [UInt8] in
            var out = [UInt8](repeating: 0, count: 64 * 96)
            for y in 0..<64 { for x in 0..<64 { out[y * 96 + x] = mk[y * 64 + x] } }
            return out
        }
        var rng = SeededGenerator(seed: 4)
        let l = try m.segmentationForwardBackward(image: img, targets: SegmentationTargets(boxes: t.boxes, masks: masks, height: 64, width: 96), rng: &rng)
        #expect(l.total.isFinite && l.total > 0)
        let out = try m.inference(img)
        #expect(out.features.shape == [1, 256, 4, 6])
        #expect(out.proposals.boxes.allSatisfy { $0.x2 <= 96 && $0.y2 <= 64 })
    }

    @Test func lossFallsByHalfWhenTraining() throws {
        let m = Self.tinyModel(seed: 21)
        let samples = [Self.tinySample(seed: 4, lesions: [(22, 24, 10, 7)]), Self.tinySample(seed: 5, lesions: [(40, 36, 8, 9), (16, 14, 6, 5)])]
        let adam = Adam(learningRate: 1e-3)
        var rng = SeededGenerator(seed: 9)
        var first = 0.0, last = 0.0
        let steps = 60
        for s in 0..<steps {
            let (img, t) = samples[s % 2]
            m.zeroGrad()
            let l = try m.segmentationForwardBackward(image: img, targets: t, rng: &rng).total
            adam.step(m.parameters)
            if s < 2 { first += l }
            if s >= steps - 2 { last += l }
        }
        #expect(last < 0.5 * first, "L_SEG \(first / 2) → \(last / 2)")
    }
}
