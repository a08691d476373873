import Foundation
import Testing
import Detection
import NN
import Tensor
import TestSupport

/// torchvision 0.29.1 goldens (CPU, float32) written by `tools/make_geometry_fixtures.py` into
/// `Tests/Fixtures/geometry/geometry.safetensors`; every test names the torchvision call it checks.
final class GeometryFixtures: @unchecked Sendable {
    let file: SafeTensorsFile
    let cases: [[String: Any]]

    static let shared: GeometryFixtures = {
        do { return try GeometryFixtures(url: TestPaths.fixture("geometry/geometry.safetensors")) } catch {
            fatalError("Tests/Fixtures/geometry/geometry.safetensors is unreadable: \(error)")
        }
    }()

    init(url: URL) throws {
        file = try SafeTensorsFile(contentsOf: url)
        let json = file.metadata["cases"] ?? "[]"
        cases = (try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]]) ?? []
    }

    func cases(_ op: String) -> [[String: Any]] { cases.filter { ($0["op"] as? String) == op } }
    func names(_ op: String) -> [String] { cases(op).compactMap { $0["name"] as? String } }
    func tensor(_ name: String) throws -> Tensor { try file.tensor(name) }
    func ints(_ name: String) throws -> [Int] { try file.int64Values(name).map { Int($0) } }
    func boxes(_ name: String) throws -> [Box] { try GeometryFixtures.boxes(file.tensor(name)) }
    func floats(_ name: String) throws -> [Float] { try file.tensor(name).array }

    /// [N, 4] → boxes.
    static func boxes(_ t: Tensor) -> [Box] {
        (0..<(t.count / 4)).map { Box(t.data[4 * $0], t.data[4 * $0 + 1], t.data[4 * $0 + 2], t.data[4 * $0 + 3]) }
    }

    func caseInfo(_ name: String) -> [String: Any] { cases.first { ($0["name"] as? String) == name } ?? [:] }
}

private var fx: GeometryFixtures { GeometryFixtures.shared }

/// Small helpers of the geometry tests.
enum Geo {
    /// Largest |a − b| over two equally long arrays (∞ if the lengths differ or a value is NaN).
    static func maxAbsDiff(_ a: [Float], _ b: [Float]) -> Float {
        guard a.count == b.count else { return .infinity }
        var m: Float = 0
        for i in a.indices { let d = abs(a[i] - b[i]); if d > m || d.isNaN { m = d.isNaN ? .infinity : d } }
        return m
    }

    /// The coordinates of boxes, 4 per box.
    static func flat(_ boxes: [Box]) -> [Float] { boxes.flatMap { [$0.x1, $0.y1, $0.x2, $0.y2] } }
}

@Suite("Geometry vs torchvision goldens (tools/make_geometry_fixtures.py)")
struct GeometryFixtureTests {
    /// torchvision.ops.roi_align(x, [boxes], P, spatial_scale, sampling_ratio, aligned=False), forward and x.grad.
    @Test(arguments: GeometryFixtures.shared.names("roi_align"))
    func roiAlign(_ name: String) throws {
        let info = fx.caseInfo(name)
        let p = info["output_size"] as! Int
        let scale = Float(info["spatial_scale"] as! Double)
        let sr = info["sampling_ratio"] as! Int
        let features = try fx.tensor("\(name).features")
        let boxes = try fx.boxes("\(name).boxes")
        let out = try roiAlignForward(features: features, boxes: boxes, outputSize: p, spatialScale: scale, samplingRatio: sr)
        let expected = try fx.tensor("\(name).out")
        let c = compare(out, expected)
        #expect(c.maxAbsError <= 1e-5 * max(1, c.maxExpectedMagnitude), "\(name) forward: \(c)")

        let dF = Tensor(shape: features.shape)
        try roiAlignBackward(dFeatures: dF, dOut: try fx.tensor("\(name).dout"), boxes: boxes, outputSize: p,
                             spatialScale: scale, samplingRatio: sr)
        let g = compare(dF, try fx.tensor("\(name).dfeatures"))
        #expect(g.maxAbsError <= 1e-5 * max(1, g.maxExpectedMagnitude), "\(name) backward: \(g)")
    }

    /// torchvision roi_heads.project_masks_on_boxes(gt_masks, boxes, matched_idxs, 28).
    @Test func maskTargets() throws {
        let masks = try fx.tensor("mask_target.masks")
        let boxes = try fx.boxes("mask_target.boxes")
        let index = try fx.ints("mask_target.index")
        let expected = try fx.floats("mask_target.out")
        let h = masks.shape[1], w = masks.shape[2]
        var worst: Float = 0
        for (k, b) in boxes.enumerated() {
            let m = (0..<(h * w)).map { UInt8(masks.data[index[k] * h * w + $0]) }
            let t = m.withUnsafeBufferPointer { maskTarget(mask: $0.baseAddress!, height: h, width: w, box: b, size: 28) }
            worst = max(worst, Geo.maxAbsDiff(t, Array(expected[(k * 784)..<((k + 1) * 784)])))
        }
        #expect(worst <= 1e-6, "max |Δ| \(worst)")
    }

    /// torchvision roi_heads.paste_masks_in_image(masks, boxes, (H, W), padding=1).
    @Test func pasteMasks() throws {
        let info = fx.caseInfo("paste")
        let h = info["height"] as! Int, w = info["width"] as! Int
        let probs = try fx.tensor("paste.probs")
        let boxes = try fx.boxes("paste.boxes")
        let expected = try fx.floats("paste.out")
        for (k, b) in boxes.enumerated() {
            let canvas = pasteMask(probs.data + k * 784, size: 28, box: b, imageHeight: h, imageWidth: w)
            let d = Geo.maxAbsDiff(canvas, Array(expected[(k * h * w)..<((k + 1) * h * w)]))
            #expect(d <= 1e-6, "box \(k) \(b): max |Δ| \(d)")
        }
    }

    /// torchvision.ops.nms, batched_nms and box_iou on random boxes with duplicated boxes and scores.
    @Test(arguments: GeometryFixtures.shared.names("nms"))
    func nmsParity(_ name: String) throws {
        let thr = Float(fx.caseInfo(name)["threshold"] as! Double)
        let boxes = try fx.boxes("\(name).boxes")
        let scores = try fx.floats("\(name).scores")
        let labels = try fx.ints("\(name).labels")
        #expect(nms(boxes, scores: scores, iouThreshold: thr) == (try fx.ints("\(name).keep")))
        #expect(batchedNMS(boxes, scores: scores, labels: labels, iouThreshold: thr) == (try fx.ints("\(name).batched_keep")))
        let half = boxes.count / 2
        let iou = boxIoU(Array(boxes[..<half]), Array(boxes[half...]))
        #expect(Geo.maxAbsDiff(iou, try fx.floats("\(name).iou")) <= 1e-7)
    }

    /// torchvision.models.detection._utils.Matcher(high, low, allow_low_quality_matches).
    @Test(arguments: GeometryFixtures.shared.names("matcher"))
    func matcherParity(_ name: String) throws {
        let info = fx.caseInfo(name)
        let m = Matcher(high: Float(info["high"] as! Double), low: Float(info["low"] as! Double),
                        allowLowQualityMatches: info["low_quality"] as! Bool)
        let iou = try fx.tensor("\(name).iou")
        let got = m(iou: iou.array, gtCount: iou.shape[0], predCount: iou.shape[1])
        #expect(got == (try fx.ints("\(name).matches")))
    }

    /// torchvision _utils.BoxCoder(weights).encode_single / decode_single.
    @Test(arguments: GeometryFixtures.shared.names("coder"))
    func coderParity(_ name: String) throws {
        let w = (fx.caseInfo(name)["weights"] as! [Double]).map { Float($0) }
        let coder = BoxCoder(weights: (w[0], w[1], w[2], w[3]))
        let ref = try fx.boxes("\(name).reference"), tgt = try fx.boxes("\(name).target")
        let deltas = try fx.floats("\(name).deltas")
        let enc = zip(tgt, ref).flatMap { t, r -> [Float] in let e = coder.encode(t, reference: r); return [e.0, e.1, e.2, e.3] }
        #expect(Geo.maxAbsDiff(enc, try fx.floats("\(name).encoded")) <= 1e-5)
        let dec = ref.enumerated().map { i, r in
            coder.decode((deltas[4 * i], deltas[4 * i + 1], deltas[4 * i + 2], deltas[4 * i + 3]), reference: r)
        }
        // Decoded coordinates reach ~10⁴ px where the clamp bites; 1 ulp there is ~1e-3.
        let expected = try fx.floats("\(name).decoded")
        var worst: Float = 0
        for (a, e) in zip(Geo.flat(dec), expected) { worst = max(worst, abs(a - e) / max(1, abs(e))) }
        #expect(worst <= 2e-7, "max relative |Δ| \(worst)")
    }

    /// torchvision AnchorGenerator(sizes, aspect_ratios) on a 5×6 map of an 80×96 image.
    @Test func anchorGrid() throws {
        let info = fx.caseInfo("anchors")
        let base = Anchors.baseAnchors(sizes: Anchors.sizes, aspectRatios: Anchors.aspectRatios)
        #expect(Geo.flat(base) == (try fx.floats("anchors.base")))
        let grid = Anchors.grid(featureHeight: info["feature_height"] as! Int, featureWidth: info["feature_width"] as! Int,
                                strideY: info["stride_y"] as! Int, strideX: info["stride_x"] as! Int, base: base)
        #expect(Geo.flat(grid) == (try fx.floats("anchors.grid")))
    }
}
