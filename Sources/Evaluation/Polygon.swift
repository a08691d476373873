// Polygon and box rasterisation to RLE, reproducing COCO's frPoly / frBbox pixel for pixel.

extension RLE {
    /// The sub-pixel factor of the rasteriser: vertices are traced on a grid 5× finer than the image.
    static let polygonUpsampling = 5

    /// Rasterises one polygon `[x0, y0, x1, y1, …]` (pixel coordinates) to an RLE, as COCO's `frPyObjects`.
    ///
    /// The method, which decides exactly which pixels a polygon covers:
    /// 1. Vertices are scaled by 5 and rounded half up (`Int(5·v + 0.5)`, truncating toward zero);
    ///    the polygon is closed.
    /// 2. Each edge is traced on the fine grid, one point per step of the longer axis, the other
    ///    coordinate rounded the same way; points run from the edge's first to its last vertex.
    /// 3. Wherever the traced column changes, the crossing is mapped back to the image: it counts only
    ///    when it lands exactly on a pixel-centre column inside the image; its row is the smaller of
    ///    the two fine rows, mapped back, clamped to `0...height` and rounded up.
    /// 4. Each crossing toggles the column-major pixel stream at `x·height + y`; sorted toggles become
    ///    runs, and empty runs fold into their neighbours.
    ///
    /// An odd trailing coordinate is ignored; fewer than one vertex gives the empty mask.
    /// - Throws: `EvaluationError.invalidSegmentation` for a coordinate that is not finite or lies
    ///   more than `RLE.maximumPolygonCoordinate` from the origin (the fine-grid trace would not fit).
    public init(polygon xy: [Double], height: Int, width: Int) throws {
        guard height >= 0, width >= 0 else { throw EvaluationError.invalidSegmentation("negative size \(height)×\(width)") }
        for v in xy where !(v.isFinite && abs(v) <= RLE.maximumPolygonCoordinate) {
            throw EvaluationError.invalidSegmentation("polygon coordinate \(v) out of range")
        }
        self = RLE.rasterize(polygon: xy, height: height, width: width)
    }

    /// The largest polygon coordinate magnitude accepted (pixels).
    public static let maximumPolygonCoordinate = 1.0e6

    /// Rasterises several polygons (one object in parts) and returns their union, as COCO's `annToRLE`.
    ///
    /// Follows `frPyObjects`' rule that a list whose *first* polygon has exactly four numbers is a
    /// list of boxes `[x, y, w, h]` (see `init(box:height:width:)`). An empty list gives the empty
    /// mask (pycocotools would raise).
    /// - Throws: `EvaluationError.invalidSegmentation` when the first polygon has fewer than four
    ///   numbers (COCO rejects that input) or boxes are mixed with polygons.
    public init(polygons: [[Double]], height: Int, width: Int) throws {
        guard height >= 0, width >= 0 else { throw EvaluationError.invalidSegmentation("negative size \(height)×\(width)") }
        guard let first = polygons.first else {
            self = RLE.empty(height: height, width: width)
            return
        }
        guard first.count >= 4 else {
            throw EvaluationError.invalidSegmentation("a polygon needs at least two points, got \(first.count) numbers")
        }
        let parts: [RLE]
        if first.count == 4 {
            guard polygons.allSatisfy({ $0.count == 4 }) else {
                throw EvaluationError.invalidSegmentation("boxes ([x, y, w, h]) mixed with polygons")
            }
            parts = try polygons.map { try RLE(box: BoundingBox(x: $0[0], y: $0[1], width: $0[2], height: $0[3]), height: height, width: width) }
        } else {
            parts = try polygons.map { try RLE(polygon: $0, height: height, width: width) }
        }
        self = try RLE.union(parts)
    }

    /// Rasterises a box as the polygon of its four corners, as COCO's `frBbox`.
    /// - Throws: `EvaluationError.invalidSegmentation` for corners out of range (see `init(polygon:height:width:)`).
    public init(box: BoundingBox, height: Int, width: Int) throws {
        let x1 = box.x, y1 = box.y, x2 = box.x + box.width, y2 = box.y + box.height
        try self.init(polygon: [x1, y1, x1, y2, x2, y2, x2, y1], height: height, width: width)
    }

    /// The rasteriser behind `init(polygon:height:width:)`.
    static func rasterize(polygon xy: [Double], height h: Int, width w: Int) -> RLE {
        let k = xy.count / 2
        let total = h * w
        guard k > 0, h > 0, w > 0 else { return RLE.empty(height: h, width: w) }
        let scale = Double(polygonUpsampling)

        // 1. Vertices on the fine grid, closed.
        var vx = [Int](repeating: 0, count: k + 1), vy = [Int](repeating: 0, count: k + 1)
        for j in 0..<k {
            vx[j] = Int(scale * xy[2 * j] + 0.5)
            vy[j] = Int(scale * xy[2 * j + 1] + 0.5)
        }
        vx[k] = vx[0]
        vy[k] = vy[0]

        // 2. Trace the edges.
        var length = 0
        for j in 0..<k { length += max(abs(vx[j + 1] - vx[j]), abs(vy[j + 1] - vy[j])) + 1 }
        var u = [Int](), v = [Int]()
        u.reserveCapacity(length)
        v.reserveCapacity(length)
        for j in 0..<k {
            var xs = vx[j], xe = vx[j + 1], ys = vy[j], ye = vy[j + 1]
            let dx = abs(xe - xs), dy = abs(ys - ye)
            if dx == 0 && dy == 0 {
                // A zero-length edge contributes its vertex; its row is never read in step 3
                // (both neighbours share its column).
                u.append(xs)
                v.append(ys)
                continue
            }
            let flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye)
            if flip {
                swap(&xs, &xe)
                swap(&ys, &ye)
            }
            if dx >= dy {
                let slope = Double(ye - ys) / Double(dx)
                for d in 0...dx {
                    let t = flip ? dx - d : d
                    u.append(t + xs)
                    v.append(Int(Double(ys) + slope * Double(t) + 0.5))
                }
            } else {
                let slope = Double(xe - xs) / Double(dy)
                for d in 0...dy {
                    let t = flip ? dy - d : d
                    v.append(t + ys)
                    u.append(Int(Double(xs) + slope * Double(t) + 0.5))
                }
            }
        }

        // 3. Column crossings back on the image grid → toggle positions.
        var toggles = [Int]()
        toggles.reserveCapacity(u.count / 2 + 1)
        let maxColumn = Double(w - 1), maxRow = Double(h)
        for j in 1..<max(u.count, 1) where u[j] != u[j - 1] {
            var xd = Double(u[j] < u[j - 1] ? u[j] : u[j] - 1)
            xd = (xd + 0.5) / scale - 0.5
            if xd.rounded(.down) != xd || xd < 0 || xd > maxColumn { continue }
            var yd = Double(v[j] < v[j - 1] ? v[j] : v[j - 1])
            yd = (yd + 0.5) / scale - 0.5
            if yd < 0 { yd = 0 } else if yd > maxRow { yd = maxRow }
            yd = yd.rounded(.up)
            toggles.append(Int(xd) * h + Int(yd))
        }
        toggles.append(total)
        toggles.sort()

        // 4. Toggles → runs; an empty run merges the run after it into the run before it.
        var runs = [UInt32]()
        runs.reserveCapacity(toggles.count)
        var previous = 0
        var j = 0
        runs.append(UInt32(toggles[0]))
        previous = toggles[0]
        j = 1
        while j < toggles.count {
            let run = toggles[j] - previous
            previous = toggles[j]
            j += 1
            if run > 0 {
                runs.append(UInt32(run))
            } else if j < toggles.count {
                let next = toggles[j] - previous
                previous = toggles[j]
                j += 1
                runs[runs.count - 1] += UInt32(next)
            }
        }
        return RLE(unchecked: h, w, runs)
    }
}
