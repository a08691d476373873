import Foundation
import Testing
import Detection
import Tensor
import TestSupport

@Suite("Geometry: boxes, anchors, coder, NMS")
struct GeometryBoxTests {
    /// MODEL.md §4.1: the 30 rounded base anchors, a = ratio_index·5 + size_index.
    static let anchorTable: [(Float, Float, Float, Float)] = [
        (-3, 0, 3, 0), (-6, -1, 6, 1), (-13, -1, 13, 1), (-25, -3, 25, 3), (-51, -5, 51, 5),
        (-2, 0, 2, 0), (-4, -1, 4, 1), (-8, -2, 8, 2), (-16, -4, 16, 4), (-32, -8, 32, 8),
        (-1, -1, 1, 1), (-3, -1, 3, 1), (-6, -3, 6, 3), (-11, -6, 11, 6), (-23, -11, 23, 11),
        (-1, -1, 1, 1), (-2, -2, 2, 2), (-4, -4, 4, 4), (-8, -8, 8, 8), (-16, -16, 16, 16),
        (-1, -1, 1, 1), (-2, -2, 2, 2), (-3, -5, 3, 5), (-7, -10, 7, 10), (-13, -20, 13, 20),
        (-1, -1, 1, 1), (-1, -3, 1, 3), (-3, -6, 3, 6), (-6, -11, 6, 11), (-11, -23, 11, 23),
    ]

    @Test func anchorTableOfSection41() {
        let base = Anchors.baseAnchors(sizes: Anchors.sizes, aspectRatios: Anchors.aspectRatios)
        #expect(base.count == 30)
        for (a, t) in Self.anchorTable.enumerated() {
            #expect(base[a] == Box(t.0, t.1, t.2, t.3), "anchor \(a): \(base[a])")
        }
    }

    @Test func anchorGridIndexing() {
        let base = Anchors.baseAnchors(sizes: Anchors.sizes, aspectRatios: Anchors.aspectRatios)
        let grid = Anchors.grid(featureHeight: 32, featureWidth: 32, strideY: 16, strideX: 16, base: base)
        #expect(grid.count == 30_720)
        for (y, x, a) in [(0, 0, 0), (0, 1, 7), (3, 5, 29), (31, 31, 13)] {
            let b = base[a], g = grid[(y * 32 + x) * 30 + a]
            #expect(g == Box(b.x1 + Float(16 * x), b.y1 + Float(16 * y), b.x2 + Float(16 * x), b.y2 + Float(16 * y)))
        }
    }

    @Test func boxBasicsAndIoU() {
        let a = Box(0, 0, 4, 2), b = Box(2, 1, 6, 5)
        #expect(a.width == 4 && a.height == 2 && a.area == 8)
        let iou = boxIoU([a, b], [b, Box(10, 10, 11, 11)])
        #expect(iou.count == 4)
        #expect(iou[0] == Float(2) / Float(8 + 16 - 2))
        #expect(iou[1] == 0 && iou[2] == 1 && iou[3] == 0)
        #expect(boxIoU([], [a]).isEmpty)
        var c = [Box(-5, -1, 600, 20), Box(700, 600, 800, 900)]
        clipBoxes(&c, width: 512, height: 500)
        #expect(c == [Box(0, 0, 512, 20), Box(512, 500, 512, 500)])
    }

    @Test func coderRoundTripAndClamp() {
        let ref = Box(10, 20, 50, 40), tgt = Box(12.5, 18, 61, 47)
        for coder in [BoxCoder.rpn, BoxCoder.roi] {
            let d = coder.encode(tgt, reference: ref)
            let back = coder.decode(d, reference: ref)
            #expect(Geo.maxAbsDiff(Geo.flat([back]), Geo.flat([tgt])) < 1e-4)
        }
        #expect(abs(BoxCoder.rpn.clamp - 4.1351666) < 1e-6)
        // dw beyond ln(1000/16) is clamped: width 40 → 40·1000/16 = 2500.
        let big = BoxCoder.rpn.decode((0, 0, 20, 0), reference: ref)
        #expect(abs(big.width - 2500) < 0.01)
        let bigRoI = BoxCoder.roi.decode((0, 0, 100, 0), reference: ref)
        #expect(abs(bigRoI.width - 2500) < 0.01)
    }

    /// IoU exactly at the threshold does not suppress (strictly greater rule).
    @Test func nmsKeepsIoUAtThreshold() {
        let boxes = [Box(0, 0, 3, 1), Box(1, 0, 4, 1)]  // IoU = 2/4 = 0.5 exactly
        #expect(nms(boxes, scores: [0.9, 0.8], iouThreshold: 0.5) == [0, 1])
        #expect(nms(boxes, scores: [0.9, 0.8], iouThreshold: 0.49) == [0])
        #expect(nms(boxes, scores: [0.7, 0.8], iouThreshold: 0.49) == [1])
    }

    @Test func nmsOrderAndTies() {
        let boxes = [Box(0, 0, 10, 10), Box(0, 0, 10, 10), Box(20, 20, 30, 30), Box(1, 1, 10, 10), Box(40, 0, 41, 1)]
        // Equal scores: lower index first, so box 0 suppresses its duplicate 1.
        #expect(nms(boxes, scores: [0.5, 0.5, 0.5, 0.9, 0.1], iouThreshold: 0.5) == [3, 2, 4])
        #expect(nms(boxes, scores: [0.5, 0.5, 0.5, 0.2, 0.1], iouThreshold: 0.5) == [0, 2, 4])
        #expect(nms([], scores: [], iouThreshold: 0.5).isEmpty)
        // Two empty boxes: IoU 0/0 is NaN and never suppresses.
        #expect(nms([Box(1, 1, 1, 1), Box(1, 1, 1, 1)], scores: [1, 1], iouThreshold: 0.1) == [0, 1])
    }

    @Test func batchedNMSSeparatesLabels() {
        let boxes = [Box(0, 0, 10, 10), Box(0, 0, 10, 10), Box(1, 0, 10, 10), Box(50, 50, 60, 60)]
        let keep = batchedNMS(boxes, scores: [0.9, 0.8, 0.7, 0.95], labels: [1, 2, 1, 1], iouThreshold: 0.5)
        #expect(keep == [3, 0, 1])
        // More than 1000 boxes take the per-label path; the result must agree with the offset path.
        var rng = SeededGenerator(seed: 5)
        var many: [Box] = [], scores: [Float] = [], labels: [Int] = []
        for _ in 0..<1200 {
            let x = rng.nextUnitFloat() * 200, y = rng.nextUnitFloat() * 200
            many.append(Box(x, y, x + 5 + rng.nextUnitFloat() * 30, y + 5 + rng.nextUnitFloat() * 30))
            scores.append(Float(Int(rng.nextUnitFloat() * 50)) / 50)
            labels.append(Int(rng.next() % 3))
        }
        let big = batchedNMS(many, scores: scores, labels: labels, iouThreshold: 0.5)
        var perLabel: [Int] = []
        for l in 0..<3 {
            let idx = (0..<many.count).filter { labels[$0] == l }
            perLabel += nms(idx.map { many[$0] }, scores: idx.map { scores[$0] }, iouThreshold: 0.5).map { idx[$0] }
        }
        #expect(big.sorted() == perLabel.sorted())
        #expect(zip(big, big.dropFirst()).allSatisfy { scores[$0] > scores[$1] || (scores[$0] == scores[$1] && $0 < $1) })
    }
}

@Suite("Geometry: matcher and sampler")
struct GeometryMatchingTests {
    @Test func matcherThresholdsAndLowQuality() {
        // 2 gts × 5 predictions.
        let iou: [Float] = [
            0.80, 0.50, 0.20, 0.10, 0.00,
            0.75, 0.60, 0.25, 0.25, 0.00,
        ]
        let strict = Matcher(high: 0.7, low: 0.3, allowLowQualityMatches: false)
        #expect(strict(iou: iou, gtCount: 2, predCount: 5) == [0, Matcher.between, Matcher.below, Matcher.below, Matcher.below])
        // gt 1's best IoU is 0.75 at prediction 0, whose best gt is 0: restores match 0 there (already).
        // gt 0's best is 0.80 (prediction 0). No other prediction changes.
        let lq = Matcher(high: 0.9, low: 0.3, allowLowQualityMatches: true)
        #expect(lq(iou: iou, gtCount: 2, predCount: 5) == [0, Matcher.between, Matcher.below, Matcher.below, Matcher.below])
        // Ties: gt 1's max 0.6 reached by predictions 1 and 3 → both restored to their best gt (1).
        let tie: [Float] = [
            0.90, 0.10, 0.00, 0.20,
            0.00, 0.60, 0.10, 0.60,
        ]
        #expect(lq(iou: tie, gtCount: 2, predCount: 4) == [0, 1, Matcher.below, 1])
        // First max wins when two gts tie for a prediction.
        #expect(strict(iou: [0.8, 0.8], gtCount: 2, predCount: 1) == [0])
        #expect(strict(iou: [], gtCount: 0, predCount: 3) == [Matcher.below, Matcher.below, Matcher.below])
    }

    @Test func samplerCounts() {
        var labels = [Int](repeating: 0, count: 2000)
        for i in stride(from: 0, to: 2000, by: 5) { labels[i] = 1 }      // 400 positives
        for i in stride(from: 1, to: 2000, by: 7) { labels[i] = -1 }     // some ignored
        var rng = SeededGenerator(seed: 42)
        let (p, n) = sampleBalanced(labels: labels, batchSize: 256, positiveFraction: 0.75, rng: &rng)
        #expect(p.count == 192 && n.count == 64)
        #expect(p == p.sorted() && n == n.sorted())
        #expect(Set(p).count == p.count && Set(n).count == n.count)
        #expect(p.allSatisfy { labels[$0] == 1 } && n.allSatisfy { labels[$0] == 0 })

        // Few positives: negatives fill up; few of both: everything.
        let few = [1, 0, 0, -1, 1, 0] + [Int](repeating: 0, count: 500)
        var r2 = SeededGenerator(seed: 1)
        let (p2, n2) = sampleBalanced(labels: few, batchSize: 256, positiveFraction: 0.75, rng: &r2)
        #expect(p2 == [0, 4] && n2.count == 254)
        let (p3, n3) = sampleBalanced(labels: [1, -1, 0, 0], batchSize: 256, positiveFraction: 0.75, rng: &r2)
        #expect(p3 == [0] && n3 == [2, 3])
        // ⌊10 · 0.7⌋ = 7 as in Python, although Float(0.7) < 0.7.
        let (p4, n4) = sampleBalanced(labels: [Int](repeating: 1, count: 20) + [Int](repeating: 0, count: 20),
                                      batchSize: 10, positiveFraction: 0.7, rng: &r2)
        #expect(p4.count == 7 && n4.count == 3)
    }

    @Test func samplerIsDeterministicPerSeed() {
        let labels = (0..<5000).map { $0 % 3 == 0 ? 1 : ($0 % 3 == 1 ? 0 : -1) }
        var a = SeededGenerator(seed: 7), b = SeededGenerator(seed: 7), c = SeededGenerator(seed: 8)
        let ra = sampleBalanced(labels: labels, batchSize: 256, positiveFraction: 0.75, rng: &a)
        let rb = sampleBalanced(labels: labels, batchSize: 256, positiveFraction: 0.75, rng: &b)
        let rc = sampleBalanced(labels: labels, batchSize: 256, positiveFraction: 0.75, rng: &c)
        #expect(ra.positives == rb.positives && ra.negatives == rb.negatives)
        #expect(ra.positives != rc.positives)
        #expect(a == b)
    }
}

@Suite("Geometry: lesion instances, mask targets, pasting")
struct GeometryMaskTests {
    /// A label map with a filled rectangle of `value` at rows r0..<r1, cols c0..<c1.
    static func fill(_ m: inout [UInt8], width: Int, rows: Range<Int>, cols: Range<Int>, value: UInt8) {
        for r in rows { for c in cols { m[r * width + c] = value } }
    }

    static func instances(_ m: [UInt8], width: Int, height: Int, minArea: Int = 100) -> [LesionInstance] {
        m.withUnsafeBufferPointer { lesionInstances(labelMap: $0.baseAddress!, width: width, height: height, minArea: minArea) }
    }

    @Test func areaThresholdIsStrict() {
        let w = 40, h = 30
        var m = [UInt8](repeating: 1, count: w * h)
        Self.fill(&m, width: w, rows: 0..<10, cols: 0..<10, value: 2)          // 100 px: dropped
        Self.fill(&m, width: w, rows: 15..<25, cols: 20..<30, value: 2)        // 100 + 1 px: kept
        m[25 * w + 20] = 3
        let inst = Self.instances(m, width: w, height: h)
        #expect(inst.count == 1)
        #expect(inst.first?.area == 101)
        #expect(inst.first?.box == Box(20, 15, 30, 26))
        #expect(inst.first?.mask.reduce(0) { $0 + Int($1) } == 101)
        #expect(inst.first?.mask[25 * w + 20] == 1 && inst.first?.mask[0] == 0)
    }

    @Test func eightConnectivityAndMerging() {
        let w = 12, h = 10
        var m = [UInt8](repeating: 0, count: w * h)
        // A diagonal staircase of GGO (2) and consolidation (3): one component under 8-connectivity.
        for i in 0..<8 { m[i * w + i] = i % 2 == 0 ? 2 : 3 }
        m[9 * w + 11] = 2   // isolated pixel, a second component (ordered after the first)
        m[0 * w + 11] = 1   // lung: never a lesion
        let inst = Self.instances(m, width: w, height: h, minArea: 0)
        #expect(inst.count == 2)
        #expect(inst[0].area == 8 && inst[0].box == Box(0, 0, 8, 8))
        #expect(inst[1].area == 1 && inst[1].box == Box(11, 9, 12, 10))
        // Component order follows the first pixel in a row-major scan.
        var m2 = [UInt8](repeating: 0, count: w * h)
        m2[5 * w + 0] = 2; m2[1 * w + 9] = 2
        let inst2 = Self.instances(m2, width: w, height: h, minArea: 0)
        #expect(inst2.map(\.box) == [Box(9, 1, 10, 2), Box(0, 5, 1, 6)])
    }

    @Test func lungOnlyMapHasNoInstance() {
        let m = [UInt8](repeating: 1, count: 64 * 64)
        #expect(Self.instances(m, width: 64, height: 64).isEmpty)
        #expect(Self.instances([UInt8](repeating: 0, count: 16), width: 4, height: 4).isEmpty)
    }

    @Test func maskTargetOfFullAndEmptyMask() {
        let w = 50, h = 40
        let ones = [UInt8](repeating: 1, count: w * h)
        let t = ones.withUnsafeBufferPointer { maskTarget(mask: $0.baseAddress!, height: h, width: w, box: Box(5, 5, 30, 25), size: 28) }
        #expect(t.count == 784 && t.allSatisfy { abs($0 - 1) < 1e-6 })
        let zeros = [UInt8](repeating: 0, count: w * h)
        let z = zeros.withUnsafeBufferPointer { maskTarget(mask: $0.baseAddress!, height: h, width: w, box: Box(5, 5, 30, 25), size: 28) }
        #expect(z.allSatisfy { $0 == 0 })
    }

    @Test func pasteMaskPartlyOutside() {
        let h = 40, w = 50
        let probs = [Float](repeating: 1, count: 28 * 28)
        // Box 28×28 at (-10, -6): expanded by 30/28 → 30×30 around (4, 8): corners (-11, -7, 19, 23).
        let c = probs.withUnsafeBufferPointer { pasteMask($0.baseAddress!, size: 28, box: Box(-10, -6, 18, 22), imageHeight: h, imageWidth: w) }
        #expect(c.count == h * w)
        #expect(c.allSatisfy { $0 >= 0 && $0 <= 1 })
        for y in 0..<h { for x in 0..<w where x > 19 || y > 23 { #expect(c[y * w + x] == 0) } }
        #expect(c[10 * w + 5] == 1)     // interior of the pasted map
        #expect(c[22 * w + 10] > 0.9 && c[22 * w + 10] < 1)  // the zero padding fades the border rows
        #expect(c[23 * w + 10] == 0)
        // Entirely outside: nothing pasted, no crash.
        for b in [Box(-80, -80, -60, -60), Box(60, 10, 80, 20), Box(10, 45, 20, 60)] {
            let e = probs.withUnsafeBufferPointer { pasteMask($0.baseAddress!, size: 28, box: b, imageHeight: h, imageWidth: w) }
            #expect(e.allSatisfy { $0 == 0 }, "\(b)")
        }
    }

    /// `pastedMaskArea` (no canvas) counts what `pasteMask` pastes above the threshold.
    @Test func pastedAreaCountsThePastedMask() {
        let h = 40, w = 50
        var rng = SeededGenerator(seed: 3)
        let probs = (0..<784).map { _ in Float.random(in: 0...1, using: &rng) }
        for b in [Box(-10, -6, 18, 22), Box(3.5, 4.25, 40.75, 30), Box(0, 0, 50, 40), Box(45, 35, 60, 55), Box(-80, -80, -60, -60), Box(7, 7, 7.5, 7.2)] {
            let canvas = probs.withUnsafeBufferPointer { pasteMask($0.baseAddress!, size: 28, box: b, imageHeight: h, imageWidth: w) }
            let area = probs.withUnsafeBufferPointer { pastedMaskArea($0.baseAddress!, size: 28, box: b, imageHeight: h, imageWidth: w) }
            let expected = canvas.filter { $0 > 0.5 }.count
            #expect(area == expected, "\(b)")
        }
    }
}

@Suite("Geometry: RoIAlign")
struct GeometryRoIAlignTests {
    /// Boxes (feature scale 1) that cross the borders, are smaller than a bin, start below −1,
    /// lie on the last row/column, are degenerate, or lie entirely outside.
    static let edgeBoxes: [Box] = [
        Box(0, 0, 7, 6), Box(-2.5, -1.7, 2.2, 3.1), Box(-0.6, -0.4, 0.3, 0.2), Box(5.6, 4.3, 8.5, 7.2),
        Box(1.3, 1.1, 1.4, 1.15), Box(0.5, 5.2, 6.5, 6.0), Box(6.2, 0.5, 7.0, 5.5), Box(8, 1, 9, 2),
        Box(2, 2, 2, 2), Box(1.7, 0.9, 5.9, 4.4), Box(-1.4, 2.0, 3.0, 2.5),
    ]

    @Test(arguments: [(3, 2, Float(1)), (2, 0, Float(1)), (4, 1, Float(0.5)), (2, 3, Float(2))])
    func gradientCheck(_ p: Int, _ samplingRatio: Int, _ scale: Float) throws {
        let features = randomTensor([1, 3, 6, 7], seed: 11)
        let boxes = Self.edgeBoxes.map { $0.scaled(by: 1 / scale) }
        let report = try GradCheck.run(
            inputs: [features],
            forward: { try roiAlignForward(features: features, boxes: boxes, outputSize: p, spatialScale: scale, samplingRatio: samplingRatio) },
            backward: { r in
                let d = Tensor(shape: features.shape)
                try roiAlignBackward(dFeatures: d, dOut: r, boxes: boxes, outputSize: p, spatialScale: scale, samplingRatio: samplingRatio)
                return [d]
            },
            step: 0.1, samples: features.count)
        #expect(report.maxRelativeError < 1e-3, "\(report)")
    }

    @Test func backwardAccumulatesAndWorkspaceFormAgrees() throws {
        let features = randomTensor([1, 37, 9, 8], seed: 3)
        let boxes = Self.edgeBoxes + [Box(0.2, 0.1, 8, 9), Box(3, 3, 6, 7)]
        let a = try roiAlignForward(features: features, boxes: boxes, outputSize: 5, spatialScale: 1, samplingRatio: 2)
        let ws = Workspace()
        let b = Tensor(shape: a.shape, repeating: 7)
        try roiAlignForward(out: b, features: features, boxes: boxes, outputSize: 5, spatialScale: 1, samplingRatio: 2, workspace: ws)
        #expect(compare(b, a).maxAbsError == 0)

        let dOut = randomTensor(a.shape, seed: 4)
        let once = Tensor(shape: features.shape)
        try roiAlignBackward(dFeatures: once, dOut: dOut, boxes: boxes, outputSize: 5, spatialScale: 1, samplingRatio: 2)
        let twice = Tensor(shape: features.shape, repeating: 1)
        try roiAlignBackward(dFeatures: twice, dOut: dOut, boxes: boxes, outputSize: 5, spatialScale: 1, samplingRatio: 2, workspace: ws)
        try roiAlignBackward(dFeatures: twice, dOut: dOut, boxes: boxes, outputSize: 5, spatialScale: 1, samplingRatio: 2, workspace: ws)
        var worst: Float = 0
        for i in 0..<once.count { worst = max(worst, abs(twice.data[i] - (1 + 2 * once.data[i]))) }
        #expect(worst < 1e-5)
        // An entirely outside box pools zeros.
        #expect((0..<(37 * 25)).allSatisfy { a.data[7 * 37 * 25 + $0] == 0 })
    }

    @Test func shapeErrors() throws {
        let f = Tensor(shape: [2, 3, 4, 4])
        #expect(throws: TensorError.self) { try roiAlignForward(features: f, boxes: [Box(0, 0, 1, 1)], outputSize: 2, spatialScale: 1, samplingRatio: 2) }
        let g = Tensor(shape: [1, 3, 4, 4])
        #expect(throws: TensorError.self) { try roiAlignForward(features: g, boxes: [Box(0, 0, 1, 1)], outputSize: 0, spatialScale: 1, samplingRatio: 2) }
        #expect(throws: TensorError.self) {
            try roiAlignBackward(dFeatures: g, dOut: Tensor(shape: [1, 3, 3, 3]), boxes: [Box(0, 0, 1, 1)], outputSize: 2, spatialScale: 1, samplingRatio: 2)
        }
        let empty = try roiAlignForward(features: g, boxes: [], outputSize: 2, spatialScale: 1, samplingRatio: 2)
        #expect(empty.shape == [0, 3, 2, 2])
    }
}

/// Timings of the model's RoIAlign calls (256×32×32 map, scale 1/16, sampling 2); run with
/// `GEOMETRY_BENCH=1 swift test -c release --filter roiAlignTimings`.
@Test(.enabled(if: ProcessInfo.processInfo.environment["GEOMETRY_BENCH"] != nil))
func roiAlignTimings() throws {
    let features = randomTensor([1, 256, 32, 32], seed: 1)
    var rng = SeededGenerator(seed: 2)
    func boxes(_ n: Int) -> [Box] {
        (0..<n).map { _ in
            let x = rng.nextUnitFloat() * 460, y = rng.nextUnitFloat() * 460
            return Box(x, y, x + 4 + rng.nextUnitFloat() * 120, y + 2 + rng.nextUnitFloat() * 80)
        }
    }
    let ws = Workspace()
    for (n, p) in [(200, 7), (100, 14), (8, 14)] {
        let b = boxes(n)
        let out = Tensor(shape: [n, 256, p, p]), dF = Tensor(shape: features.shape)
        let dOut = randomTensor(out.shape, seed: 5)
        func time(_ body: () throws -> Void) rethrows -> Double {
            try body()
            var best = Double.infinity
            for _ in 0..<20 {
                let t0 = DispatchTime.now().uptimeNanoseconds
                try body()
                best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
            }
            return best
        }
        let f = try time { try roiAlignForward(out: out, features: features, boxes: b, outputSize: p, spatialScale: 1.0 / 16, samplingRatio: 2, workspace: ws) }
        let g = try time { try roiAlignBackward(dFeatures: dF, dOut: dOut, boxes: b, outputSize: p, spatialScale: 1.0 / 16, samplingRatio: 2, workspace: ws) }
        print("roiAlign \(n) boxes \(p)×\(p) on 256×32×32 (\(Engine.threads) threads): forward \(String(format: "%.2f", f)) ms, backward \(String(format: "%.2f", g)) ms")
    }
}
