// RLE encode/decode/area/box/compressed strings/merge/IoU against pycocotools' outputs
// (goldens: tools/coco_fixtures.py → Fixtures/rle.json, pycocotools 2.0.11 maskUtils).

import Foundation
import Testing
import Evaluation

@Suite("RLE")
struct RLETests {
    static let fixture: RLEFixture = try! Fixtures.decode(RLEFixture.self, "rle.json")

    @Test("encode, compressed string, area and toBbox match pycocotools for every fixture mask")
    func encodeMatchesPycocotools() throws {
        for c in RLETests.fixture.masks {
            let mask = try c.mask()
            let rle = RLE(mask: mask)
            #expect(rle.counts.map(Int.init) == c.counts, "\(c.name) counts")
            #expect(rle.compressedCounts == c.string, "\(c.name) string")
            #expect(rle.area == c.area, "\(c.name) area")
            #expect(rle.boundingBox.array == c.bbox, "\(c.name) bbox")
            #expect(mask.area == c.area, "\(c.name) mask area")
        }
    }

    @Test("decode inverts encode; compressed strings decode to COCO's counts")
    func decodeRoundTrip() throws {
        for c in RLETests.fixture.masks {
            let mask = try c.mask()
            let fromString = try RLE(compressedCounts: c.string, height: c.height, width: c.width)
            #expect(fromString.counts.map(Int.init) == c.counts, "\(c.name)")
            #expect(fromString.decode() == mask, "\(c.name)")
            let columnMajor = fromString.decodeColumnMajor()
            let again = columnMajor.withUnsafeBufferPointer { RLE(columnMajor: $0, height: c.height, width: c.width) }
            #expect(again == fromString, "\(c.name)")
        }
    }

    @Test("a hand-written 3×2 mask: column-major runs starting with zeros")
    func handEncoded() throws {
        // rows: [1 0] [1 1] [0 1] → column 0 = 1,1,0; column 1 = 0,1,1 → stream 1 1 0 0 1 1
        let m = try BinaryMask(rows: [[1, 0], [1, 1], [0, 1]])
        let r = RLE(mask: m)
        #expect(r.counts == [0, 2, 2, 2])
        #expect(r.area == 4)
        #expect(r.boundingBox == BoundingBox(x: 0, y: 0, width: 2, height: 3))
        #expect(RLE(mask: BinaryMask(height: 2, width: 2)).counts == [4])
    }

    @Test("compressed counts: large values and negative deltas survive a round trip")
    func compressedExtremes() throws {
        let counts = [0, 1, 4_000_000, 3, 1, 70_000, 2, 16, 15, 17, 33, 4_000_000 + 1_000_000 - 70_000 - 88]
        let total = counts.reduce(0, +)
        let r = try RLE(height: 1, width: total, counts: counts)
        let back = try RLE(compressedCounts: r.compressedCounts, height: 1, width: total)
        #expect(back == r)
    }

    @Test("malformed RLE input throws named errors")
    func malformed() {
        #expect(throws: EvaluationError.self) { try RLE(height: 2, width: 2, counts: [1, 2]) }
        #expect(throws: EvaluationError.self) { try RLE(height: 2, width: 2, counts: [-1, 5]) }
        #expect(throws: EvaluationError.self) { try RLE(compressedCounts: "4~", height: 2, width: 2) }
        #expect(throws: EvaluationError.self) { try RLE(compressedCounts: "P", height: 2, width: 2) }  // truncated (continuation bit)
        #expect(throws: EvaluationError.self) { try RLE(compressedCounts: "5", height: 2, width: 2) }  // sums to 5
        #expect(throws: EvaluationError.self) { try RLE.union([]) }
        #expect(throws: EvaluationError.self) { try RLE.union([RLE.empty(height: 2, width: 2), RLE.empty(height: 2, width: 3)]) }
        #expect(throws: EvaluationError.self) { try BinaryMask(height: 2, width: 2, pixels: [1, 0, 1]) }
    }

    @Test("mask IoU matrix with iscrowd matches maskUtils.iou")
    func maskIoU() throws {
        let f = RLETests.fixture.maskIoU
        let dts = try f.detections.map { RLE(mask: try Fixtures.mask($0, height: f.height, width: f.width)) }
        let gts = try f.groundTruths.map { RLE(mask: try Fixtures.mask($0, height: f.height, width: f.width)) }
        let iou = RLE.iouMatrix(detections: dts, groundTruths: gts, gtIsCrowd: f.iscrowd.map { $0 != 0 })
        for d in dts.indices {
            for g in gts.indices { #expect(abs(iou[d][g] - f.iou[d][g]) < 1e-12, "[\(d)][\(g)]") }
        }
        // Different sizes with overlapping boxes: −1, as COCO.
        let a = RLE(mask: { var m = BinaryMask(height: 4, width: 4); m.fill(x0: 0, y0: 0, x1: 2, y1: 2); return m }())
        let b = RLE(mask: { var m = BinaryMask(height: 5, width: 4); m.fill(x0: 0, y0: 0, x1: 2, y1: 2); return m }())
        #expect(RLE.iou(a, b) == -1)
    }

    @Test("box IoU matrix with iscrowd matches maskUtils.iou on boxes")
    func boxIoU() {
        let f = RLETests.fixture.boxIoU
        let box = { (v: [Double]) in BoundingBox(x: v[0], y: v[1], width: v[2], height: v[3]) }
        let iou = BoundingBox.iouMatrix(detections: f.detections.map(box), groundTruths: f.groundTruths.map(box),
                                        gtIsCrowd: f.iscrowd.map { $0 != 0 })
        for d in f.detections.indices {
            for g in f.groundTruths.indices { #expect(abs(iou[d][g] - f.iou[d][g]) < 1e-12, "[\(d)][\(g)]") }
        }
    }

    @Test("union and intersection match maskUtils.merge")
    func merge() throws {
        let f = RLETests.fixture.merge
        let parts = try f.masks.map { RLE(mask: try Fixtures.mask($0, height: f.height, width: f.width)) }
        #expect(try RLE.union(parts).counts.map(Int.init) == f.union)
        #expect(try RLE.intersection(parts).counts.map(Int.init) == f.intersection)
        #expect(try RLE.union([parts[0]]) == parts[0])
    }

    @Test("JSON form: compressed and uncompressed counts read, compressed written")
    func codable() throws {
        let json = #"{"size":[2,3],"counts":[1,2,3]}"#
        let r = try JSONDecoder().decode(RLE.self, from: Data(json.utf8))
        #expect(r.counts == [1, 2, 3] && r.height == 2 && r.width == 3)
        let written = try JSONEncoder().encode(r)
        let back = try JSONDecoder().decode(RLE.self, from: written)
        #expect(back == r)
        #expect(String(decoding: written, as: UTF8.self).contains("\"counts\":\"\(r.compressedCounts)\""))
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(RLE.self, from: Data(#"{"size":[2,3],"counts":[1,2]}"#.utf8)) }
    }

    @Test("512×512 masks encode and decode quickly")
    func speed() throws {
        var m = BinaryMask(height: 512, width: 512)
        for y in 0..<512 {
            for x in 0..<512 {
                let dx = Double(x - 256) / 200, dy = Double(y - 240) / 150
                if dx * dx + dy * dy <= 1 || (x * 7 + y * 13) % 97 == 0 { m[y, x] = true }
            }
        }
        let clock = ContinuousClock()
        var total = 0
        let elapsed = clock.measure {
            for _ in 0..<50 {
                let r = RLE(mask: m)
                total &+= r.decode().pixels.count &+ r.compressedCounts.utf8.count
            }
        }
        #expect(RLE(mask: m).decode() == m)
        #expect(total > 0)
        // About 1–2 ms per encode+decode+compress in release; generous bound for a shared 2-core machine.
        #expect(elapsed < .seconds(3), "50 round trips took \(elapsed)")
    }
}
