// Series assembly with positions that are not usable numbers (issue 16): a NIfTI affine or DICOM
// ImagePositionPatient of ±1e308 made a gap of infinity, and `Int(ratio)` trapped (found by the
// nifti fuzz target, Fuzz/regressions/nifti/affine-infinite-spacing-int-trap). Such slices are
// ordered as slices without positions, with a warning.
import Foundation
import Scans
import Testing

@Suite("Series assembly bounds")
struct SeriesAssemblyBoundsTests {
    @Test(arguments: [1e308, -.infinity, .nan, 2e9])
    func unusablePositionsOrderByInstanceNumber(_ far: Double) throws {
        let axial = (row: Vector3(1, 0, 0), column: Vector3(0, 1, 0))
        let zs = [0, 2.5, far, 5]
        let headers = zs.enumerated().map { k, z in
            SliceHeader(source: SliceSource(file: "s\(k)"), rows: 4, columns: 4, seriesUID: "1.2", instanceNumber: 4 - k,
                        position: Vector3(0, 0, z), orientation: axial, pixelSpacing: (1, 1), sliceThickness: 2.5)
        }
        let series = try SeriesAssembler.assemble(headers).choose(nil)
        #expect(series.slices.map(\.instanceNumber) == [1, 2, 3, 4])
        #expect(series.warnings.contains { $0.contains("not a usable number") }, "\(series.warnings)")
        #expect(series.positions.allSatisfy(\.isFinite) && series.spacing[2] == 2.5)
    }
}
