// Reading the committed goldens of tools/coco_fixtures.py (pycocotools 2.0.11 at dev time).

import Foundation
import Testing
import Evaluation

/// Paths of the fixture files, relative to this source file (test targets bundle no resources here).
enum Fixtures {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

    static func url(_ relative: String) -> URL { directory.appendingPathComponent(relative) }

    static func decode<T: Decodable>(_ type: T.Type, _ relative: String) throws -> T {
        try JSONDecoder().decode(type, from: Data(contentsOf: url(relative)))
    }

    /// A row-major mask from a string of '0'/'1' characters.
    static func mask(_ pixels: String, height: Int, width: Int) throws -> BinaryMask {
        try BinaryMask(height: height, width: width, pixels: pixels.utf8.map { $0 == UInt8(ascii: "1") ? 1 : 0 })
    }
}

/// `coco/expected.json`: COCOeval's stats per case and iouType, and its parameter arrays.
struct ExpectedCOCO: Decodable {
    struct Case: Decodable {
        let segm: [Double]
        let bbox: [Double]
    }
    let generator: String
    let pycocotools: String
    let iouThrs: [Double]
    let recThrs: [Double]
    let cases: [String: Case]
}

/// `rle.json`: masks with COCO's encodings, IoU matrices and merges.
struct RLEFixture: Decodable {
    struct MaskCase: Decodable {
        let name: String
        let height: Int
        let width: Int
        let counts: [Int]
        let string: String
        let area: Int
        let bbox: [Double]
        let pixels: String?
        let rects: [[Int]]?

        func mask() throws -> BinaryMask {
            if let pixels { return try Fixtures.mask(pixels, height: height, width: width) }
            var m = BinaryMask(height: height, width: width)
            for r in rects ?? [] { m.fill(x0: r[0], y0: r[1], x1: r[2], y1: r[3]) }
            return m
        }
    }
    struct MaskIoU: Decodable {
        let height: Int
        let width: Int
        let detections: [String]
        let groundTruths: [String]
        let iscrowd: [Int]
        let iou: [[Double]]
    }
    struct BoxIoU: Decodable {
        let detections: [[Double]]
        let groundTruths: [[Double]]
        let iscrowd: [Int]
        let iou: [[Double]]
    }
    struct Merge: Decodable {
        let height: Int
        let width: Int
        let masks: [String]
        let union: [Int]
        let intersection: [Int]
    }
    let masks: [MaskCase]
    let maskIoU: MaskIoU
    let boxIoU: BoxIoU
    let merge: Merge
}

/// `polygons.json`: frPyObjects rasterisations.
struct PolygonFixture: Decodable {
    struct Case: Decodable, CustomTestStringConvertible {
        let name: String
        let height: Int
        let width: Int
        let polygons: [[Double]]
        let boxes: Bool
        let each: [[Int]]
        let merged: [Int]
        let mergedString: String
        let area: Int
        var testDescription: String { name }
    }
    let polygons: [Case]
}
