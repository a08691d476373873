// NIfTI through nifticlib (issue 15): files written by an independent writer (Python's struct and
// gzip, following the NIfTI-1 and NIfTI-2 layouts) read back with their values, scaling and
// affine; the display orientation of a NIfTI scan equal to the same scan's as DICOM; label volumes
// written slice by slice and read back; bad files refused with named errors.
import Foundation
import NIfTI
import Scans
import TestSupport
import Testing

@Suite("NIfTI volumes")
struct NIfTITests {
    static func temporary(_ name: String) -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("nifti-\(UUID().uuidString.prefix(8))")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir.appendingPathComponent(name).path
    }

    @Test(arguments: [(1, false, "h"), (1, true, "h"), (2, false, "f"), (2, true, "d"), (1, true, "B")])
    func valuesScalingAndAffine(_ version: Int, _ gz: Bool, _ dtype: String) throws {
        let path = Self.temporary("v\(version)\(dtype).nii" + (gz ? ".gz" : ""))
        let (nx, ny, nz) = (5, 4, 3)
        let values = (0..<(nx * ny * nz)).map { Double(($0 * 7) % 200) }
        let sform = [[-0.7, 0, 0, 90], [0, 0.8, 0, -120], [0, 0, 2.5, -30]]
        try writeNIfTIWithPython(path, nx: nx, ny: ny, nz: nz, values: values, dtype: dtype, version: version,
                                 slope: 2, intercept: -1024, sform: sform, gzip: gz)
        let v = try NIfTIVolume(path: path)
        #expect(v.header.version == version, "version \(v.header.version)")
        #expect(v.header.nx == nx && v.header.ny == ny && v.header.nz == nz, "\(v.header)")
        #expect(v.header.affineSource == "sform")
        for r in 0..<3 { for c in 0..<4 { #expect(abs(v.header.affine[r][c] - sform[r][c]) < 1e-5, "affine[\(r)][\(c)]") } }
        #expect(v.values == values.map { Float($0 * 2 - 1024) })
        #expect(v.slice(1) == Array(v.values[20..<40]))
        // The slices as DICOM-style headers (LPS): i runs along −x_RAS·(−1) …
        let headers = v.sliceHeaders()
        #expect(headers.count == 3 && headers[0].rows == 4 && headers[0].columns == 5)
        #expect(headers[0].orientation?.row.maxDifference(Vector3(1, 0, 0)) ?? 1 < 1e-6)     // RAS −x (i) = LPS +x
        #expect(headers[0].orientation?.column.maxDifference(Vector3(0, -1, 0)) ?? 1 < 1e-6) // RAS +y (j) = LPS −y
        #expect(headers[2].position?.maxDifference(Vector3(-90, 120, -25)) ?? 1 < 1e-4)
        // (NIfTI-1 stores the sform in float32.)
        #expect(abs((headers[0].pixelSpacing?.row ?? 0) - 0.8) < 1e-6 && abs((headers[0].pixelSpacing?.column ?? 0) - 0.7) < 1e-6)
        #expect(abs((headers[0].sliceThickness ?? 0) - 2.5) < 1e-6)
    }

    /// A NIfTI scan in the usual RAS storage (i towards the patient's right) comes out in display
    /// orientation like DICOM: the patient's right on the image's left, anterior up.
    @Test func displayOrientationMatchesDICOM() throws {
        let path = Self.temporary("ras.nii.gz")
        let (nx, ny) = (4, 3)
        // i increases towards the patient's right (RAS +x), j towards anterior (RAS +y).
        let sform = [[1.0, 0, 0, -2], [0, 1, 0, -1], [0, 0, 1, 0]]
        // A mark at the patient's rightmost, most anterior voxel: i = nx − 1, j = ny − 1.
        var values = [Double](repeating: 0, count: nx * ny)
        values[(ny - 1) * nx + (nx - 1)] = 100
        try writeNIfTIWithPython(path, nx: nx, ny: ny, nz: 1, values: values, sform: sform, gzip: true)
        let v = try NIfTIVolume(path: path)
        let h = v.sliceHeaders()[0]
        let t = DisplayTransform(orientation: h.orientation)
        let shown = t.apply(v.slice(0), width: nx, height: ny)
        let (w, _) = t.size(width: nx, height: ny)
        // Display: patient's right → image left (column 0), anterior → image top (row 0).
        #expect(shown[0 * w + 0] == 100, "\(shown)")
        // The DICOM storage of the same scan (rows along +x, columns along +y, LPS) needs no change.
        #expect(DisplayTransform(orientation: (row: Vector3(1, 0, 0), column: Vector3(0, 1, 0))) == .identity)
    }

    @Test func noTransformMeansPixdim() throws {
        let path = Self.temporary("plain.nii")
        try writeNIfTIWithPython(path, nx: 2, ny: 2, nz: 2, values: [1, 2, 3, 4, 5, 6, 7, 8], pixdim: [0.5, 0.6, 3])
        let h = try NIfTIVolume.readHeader(path: path)
        #expect(h.affineSource == "pixdim" && h.affine[0][0] == 0.5 && h.affine[2][2] == 3)
    }

    @Test func badFilesAreNamedErrors() throws {
        // A zero sform.
        let zero = Self.temporary("zero.nii")
        try writeNIfTIWithPython(zero, nx: 2, ny: 2, nz: 1, values: [0, 0, 0, 0], sform: [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
        do { _ = try NIfTIVolume(path: zero); Issue.record("a zero affine was accepted") } catch let e as NIfTIError {
            guard case .badAffine = e else { Issue.record("\(e)"); return }
            #expect(e.description.hasSuffix("."))
        }
        // A .nii.gz that does not inflate.
        let junk = Self.temporary("junk.nii.gz")
        try Data([0x1f, 0x8b, 8, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]).write(to: URL(fileURLWithPath: junk))
        #expect(throws: NIfTIError.self) { try NIfTIVolume(path: junk) }
        // A truncated volume: the header promises more voxels than follow.
        let full = Self.temporary("full.nii")
        try writeNIfTIWithPython(full, nx: 8, ny: 8, nz: 8, values: [Double](repeating: 1, count: 512), sform: [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])
        let bytes = try Data(contentsOf: URL(fileURLWithPath: full))
        let cut = Self.temporary("cut.nii")
        try bytes.prefix(bytes.count - 100).write(to: URL(fileURLWithPath: cut))
        #expect(throws: NIfTIError.self) { try NIfTIVolume(path: cut) }
        // Over the limits: refused from the header, before the voxels are read.
        #expect(throws: NIfTIError.tooLarge("8 slices; the limit is 4")) { try NIfTIVolume(path: full, limits: NIfTILimits(maxSlices: 4)) }
        #expect(throws: NIfTIError.self) { try NIfTIVolume(path: full, limits: NIfTILimits(maxVoxels: 100)) }
        // Not NIfTI, a wrong name, a missing file.
        let text = Self.temporary("text.nii")
        try "hello".write(toFile: text, atomically: true, encoding: .utf8)
        #expect(throws: NIfTIError.self) { try NIfTIVolume(path: text) }
        #expect(throws: NIfTIError.self) { try NIfTIVolume(path: Self.temporary("scan.img")) }
        #expect(throws: NIfTIError.self) { try NIfTIVolume(path: "/nonexistent/scan.nii") }
    }

    @Test func labelVolumesAreWrittenSliceBySliceAndReadBack() throws {
        for name in ["labels.nii.gz", "labels.nii"] {
            let path = Self.temporary(name)
            let affine = [[-0.7, 0, 0, 90], [0, -0.7, 0, 80], [0, 0, 5, -100], [0, 0, 0, 1]]
            let w = try NIfTILabelWriter(path: path, columns: 6, rows: 5, slices: 3, affine: affine)
            for k in 0..<3 { try w.append((0..<30).map { UInt8(($0 + k) % 4) }) }
            #expect(!FileManager.default.fileExists(atPath: path), "visible before finish")
            try w.finish()
            let v = try NIfTIVolume(path: path)
            #expect(v.header.datatype == 2 && v.header.nx == 6 && v.header.ny == 5 && v.header.nz == 3)
            #expect(v.values == (0..<3).flatMap { k in (0..<30).map { Float(($0 + k) % 4) } })
            for r in 0..<3 { for c in 0..<4 { #expect(abs(v.header.affine[r][c] - affine[r][c]) < 1e-4, "\(name) affine[\(r)][\(c)]") } }
            // The temporary file is gone.
            let dir = URL(fileURLWithPath: path).deletingLastPathComponent().path
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix(".tmp-") }.isEmpty)
        }
        // Too few slices: refused, nothing left behind.
        let short = Self.temporary("short.nii.gz")
        let w = try NIfTILabelWriter(path: short, columns: 2, rows: 2, slices: 2, affine: [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
        try w.append([1, 2, 3, 4])
        #expect(throws: NIfTIError.self) { try w.append([1]) }
        #expect(throws: NIfTIError.self) { try w.finish() }
        #expect(!FileManager.default.fileExists(atPath: short))
        #expect(throws: NIfTIError.self) {
            try NIfTILabelWriter(path: "/nonexistent/x.nii", columns: 2, rows: 2, slices: 1, affine: [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
        }
        #expect(throws: NIfTIError.self) {
            try NIfTILabelWriter(path: Self.temporary("x.img"), columns: 2, rows: 2, slices: 1, affine: [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
        }
    }
}
