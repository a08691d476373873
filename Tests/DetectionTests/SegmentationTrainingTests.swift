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
        let m = MaskRCNN()
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
        var rng0 = SeededGenerator(seed: 1)
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
        var pick = SeededGenerator(seed: 77)
        var worst = 0.0, worstName = "", checked = 0, skipped = 0
        for p in m.parameters {
            let g = analytic[p.name]!
            var rms = 0.0
            for i in 0..<g.count { rms += Double(g.data[i] * g.data[i]) }
            rms = (rms / Double(g.count)).squareRoot()
            // Coordinates with the largest gradients are the informative ones; add a random one.
            var idx = Array(0..<g.count).sorted { abs(g.data[$0]) > abs(g.data[$1]) }.prefix(2).map { $0 }
            idx.append(Int(pick.next() % UInt64(g.count)))
            for i in idx {
                let v = p.value.data[i], h: Float = max(1e-3, abs(v) * 1e-2)
                p.value.data[i] = v + h; let lp = try loss()
                p.value.data[i] = v - h; let lm = try loss()
                p.value.data[i] = v
                let a = (lp - l0) / Double(h), b = (l0 - lm) / Double(h)
                let floor = max(0.05 * rms, 1e-5)
                if abs(a - b) > 0.1 * max(abs(a), abs(b), floor) { skipped += 1; continue }  // within a step of a kink
                let num = (lp - lm) / (2 * Double(h)), ana = Double(g.data[i])
                let err = abs(num - ana) / max(abs(num), abs(ana), floor)
                checked += 1
                if err > worst { worst = err; worstName = "\(p.name)[\(i)]: numeric \(num), analytic \(ana)" }
            }
        }
        _ = rng0.next()
        #expect(checked > 100, "checked \(checked), skipped \(skipped)")
        #expect(worst < 0.05, "worst \(worst) at \(worstName); checked \(checked), skipped \(skipped)")
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
        var missingMask = t; missingMask.masks = []
        #expect(throws: DetectionError.self) { try m.segmentationForwardBackward(image: img, targets: missingMask, rng: &rng) }
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
