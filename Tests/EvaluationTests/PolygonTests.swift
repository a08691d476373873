// Polygon and box rasterisation against pycocotools' frPyObjects / merge
// (goldens: tools/coco_fixtures.py → Fixtures/polygons.json, pycocotools 2.0.11).

import Foundation
import Testing
import Evaluation

@Suite("Polygon rasterisation")
struct PolygonTests {
    static let cases: [PolygonFixture.Case] = try! Fixtures.decode(PolygonFixture.self, "polygons.json").polygons

    @Test("each polygon and the merged object match frPyObjects exactly", arguments: PolygonTests.cases)
    func matchesPycocotools(_ c: PolygonFixture.Case) throws {
        for (i, p) in c.polygons.enumerated() {
            let r = c.boxes
                ? try RLE(box: BoundingBox(x: p[0], y: p[1], width: p[2], height: p[3]), height: c.height, width: c.width)
                : try RLE(polygon: p, height: c.height, width: c.width)
            #expect(r.counts.map(Int.init) == c.each[i], "part \(i)")
        }
        let merged = try RLE(polygons: c.polygons, height: c.height, width: c.width)
        #expect(merged.counts.map(Int.init) == c.merged)
        #expect(merged.compressedCounts == c.mergedString)
        #expect(merged.area == c.area)
    }

    @Test("degenerate and invalid polygons")
    func degenerate() throws {
        #expect(try RLE(polygon: [], height: 4, width: 5) == RLE.empty(height: 4, width: 5))
        #expect(try RLE(polygons: [], height: 4, width: 5) == RLE.empty(height: 4, width: 5))
        #expect(throws: EvaluationError.self) { try RLE(polygons: [[1, 2]], height: 4, width: 5) }
        #expect(throws: EvaluationError.self) { try RLE(polygons: [[1, 2, 3, 4], [1, 2, 3, 4, 5, 6]], height: 4, width: 5) }
        #expect(throws: EvaluationError.self) { try RLE(polygon: [0, 0, .infinity, 1, 2, 2], height: 4, width: 5) }
        #expect(throws: EvaluationError.self) { try RLE(polygon: [0, 0, 1e9, 1, 2, 2], height: 4, width: 5) }
    }
}
