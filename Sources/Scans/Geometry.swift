// Patient geometry: vectors, the voxel-to-patient affine of an assembled series (for NIfTI label
// volumes, RAS as NIfTI wants it), and the display orientation of axial slices.

/// A 3-vector of doubles (patient coordinates, mm).
public struct Vector3: Sendable, Equatable, Codable {
    public var x: Double, y: Double, z: Double
    public init(_ x: Double, _ y: Double, _ z: Double) { self.x = x; self.y = y; self.z = z }
    public init?(_ values: [Double]) {
        guard values.count == 3 else { return nil }
        self.init(values[0], values[1], values[2])
    }

    public var array: [Double] { [x, y, z] }
    public func dot(_ o: Vector3) -> Double { x * o.x + y * o.y + z * o.z }
    public func cross(_ o: Vector3) -> Vector3 { Vector3(y * o.z - z * o.y, z * o.x - x * o.z, x * o.y - y * o.x) }
    public var length: Double { dot(self).squareRoot() }
    public var normalized: Vector3 { let l = length; return l > 0 ? Vector3(x / l, y / l, z / l) : self }
    public func maxDifference(_ o: Vector3) -> Double { max(abs(x - o.x), abs(y - o.y), abs(z - o.z)) }
    public static func * (a: Vector3, s: Double) -> Vector3 { Vector3(a.x * s, a.y * s, a.z * s) }
    public static func + (a: Vector3, b: Vector3) -> Vector3 { Vector3(a.x + b.x, a.y + b.y, a.z + b.z) }
}

/// How a stored slice maps to the display orientation (radiological: the patient's right on the
/// image's left, anterior up): transpose first (when the stored rows run head-foot or left-right
/// along columns), then flip columns and/or rows.
public struct DisplayTransform: Sendable, Equatable {
    public var transpose: Bool
    public var flipColumns: Bool
    public var flipRows: Bool
    public static let identity = DisplayTransform(transpose: false, flipColumns: false, flipRows: false)

    public init(transpose: Bool, flipColumns: Bool, flipRows: Bool) {
        self.transpose = transpose
        self.flipColumns = flipColumns
        self.flipRows = flipRows
    }

    /// The transform for slices with DICOM orientation `orientation` (LPS): in display
    /// orientation, increasing column index goes to the patient's left (+x) and increasing row
    /// index to posterior (+y). Identity without an orientation (assumed stored for display).
    public init(orientation: (row: Vector3, column: Vector3)?) {
        guard let o = orientation else { self = .identity; return }
        // Which stored axis runs mostly along x (left-right)?
        let rowIsX = abs(o.row.x) >= abs(o.column.x)
        let alongX = rowIsX ? o.row : o.column
        let alongY = rowIsX ? o.column : o.row
        self.init(transpose: !rowIsX, flipColumns: alongX.x < 0, flipRows: alongY.y < 0)
    }

    /// The size after the transform: (width, height).
    public func size(width: Int, height: Int) -> (width: Int, height: Int) { transpose ? (height, width) : (width, height) }

    /// Applies the transform to `height × width` row-major values.
    public func apply<T>(_ values: [T], width: Int, height: Int) -> [T] {
        if self == .identity { return values }
        var out = values
        forEachPixel(width: width, height: height) { display, stored in out[display] = values[stored] }
        return out
    }

    /// The inverse: display-orientation values back to the stored layout (`width × height` are the
    /// stored sizes).
    public func invert<T>(_ values: [T], width: Int, height: Int) -> [T] {
        if self == .identity { return values }
        var out = values
        forEachPixel(width: width, height: height) { display, stored in out[stored] = values[display] }
        return out
    }

    /// Calls `body(display index, stored index)` for every pixel of a stored `width × height` slice.
    private func forEachPixel(width: Int, height: Int, _ body: (Int, Int) -> Void) {
        let (w, h) = size(width: width, height: height)
        for y in 0..<h {
            for x in 0..<w {
                let sx0 = flipColumns ? w - 1 - x : x
                let sy0 = flipRows ? h - 1 - y : y
                let (sx, sy) = transpose ? (sy0, sx0) : (sx0, sy0)
                body(y * w + x, sy * width + sx)
            }
        }
    }
}

extension AssembledSeries {
    /// The 4×4 voxel-to-patient affine in RAS (NIfTI's sform), row-major, for voxel indices
    /// (column i, row j, slice k) of the stored layout, slices in this series' order.
    /// - Throws: `ScanError.badGeometry` when the slices have no orientation or position, or the
    ///   affine is singular.
    public func affineRAS() throws -> [[Double]] {
        guard let first = slices.first, let o = first.orientation, let p0 = first.position else {
            throw ScanError.badGeometry("the slices have no ImageOrientationPatient or ImagePositionPatient")
        }
        let n = o.row.cross(o.column).normalized
        // The slice axis follows the sorted positions; its direction is ±normal.
        var sliceAxis = n * spacing[2]
        if slices.count > 1, let pLast = slices.last?.position {
            let d = pLast + p0 * -1
            if d.dot(n) < 0 { sliceAxis = n * -spacing[2] }
        }
        let colAxis = o.row * spacing[1]   // voxel i (column) moves along the row direction
        let rowAxis = o.column * spacing[0] // voxel j (row) moves along the column direction
        let det = colAxis.dot(rowAxis.cross(sliceAxis))
        guard det.isFinite, abs(det) > 1e-9 else { throw ScanError.badGeometry("the affine is singular (zero spacing or parallel axes)") }
        // LPS → RAS: negate x and y.
        func ras(_ v: Vector3) -> [Double] { [-v.x, -v.y, v.z] }
        let c = ras(colAxis), r = ras(rowAxis), s = ras(sliceAxis), t = ras(p0)
        return [[c[0], r[0], s[0], t[0]], [c[1], r[1], s[1], t[1]], [c[2], r[2], s[2], t[2]], [0, 0, 0, 1]]
    }
}
