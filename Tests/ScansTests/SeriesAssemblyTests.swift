// Series assembly and scan geometry (issue 15): grouping, ordering along the normal, spacing and
// its warnings, what is set aside, choosing a series, the display orientation and the affine.
import Scans
import Testing

@Suite("Series assembly")
struct SeriesAssemblyTests {
    static let axial = (row: Vector3(1, 0, 0), column: Vector3(0, 1, 0))

    /// An axial slice of series `uid` at height `z` (mm).
    static func slice(_ name: String, uid: String = "1.2.3", z: Double, instance: Int? = nil,
                      orientation: (row: Vector3, column: Vector3)? = axial, size: Int = 4) -> SliceHeader {
        SliceHeader(source: SliceSource(file: name), rows: size, columns: size, seriesUID: uid, instanceNumber: instance,
                    position: Vector3(-100, -100, z), orientation: orientation, pixelSpacing: (0.7, 0.8), sliceThickness: 2.5)
    }

    @Test func slicesAreSortedInferiorToSuperiorWhateverTheirOrder() throws {
        let zs: [Double] = [10, -5, 0, 5, 15, -10, 20]
        var headers = zs.enumerated().map { Self.slice("f\($0.offset)", z: $0.element, instance: 100 - $0.offset) }
        headers.reverse()
        let a = SeriesAssembler.assemble(headers)
        let s = try a.choose(nil)
        #expect(s.positions == [-10, -5, 0, 5, 10, 15, 20])
        #expect(s.slices.map { $0.position!.z } == [-10, -5, 0, 5, 10, 15, 20])
        #expect(s.spacing == [0.7, 0.8, 5])
        #expect(s.warnings.isEmpty, "\(s.warnings)")
        #expect(a.setAside.isEmpty)
    }

    @Test func aNormalPointingDownStillSortsFeetToHead() throws {
        // Rows along +x, columns along −y: the normal is −z.
        let flipped = (row: Vector3(1, 0, 0), column: Vector3(0, -1, 0))
        let headers = [3.0, 1.0, 2.0].map { Self.slice("z\($0)", z: $0, orientation: flipped) }
        let s = try SeriesAssembler.assemble(headers).choose(nil)
        #expect(s.slices.map { $0.position!.z } == [1, 2, 3])
    }

    @Test func duplicatesMissingSlicesAndUnevenSpacingAreWarnings() throws {
        let zs: [Double] = [0, 1, 2, 2, 3, 4, 7, 8, 9, 9.5, 10.5]
        let s = try SeriesAssembler.assemble(zs.enumerated().map { Self.slice("f\($0.offset)", z: $0.element) }).choose(nil)
        #expect(s.spacing[2] == 1)
        #expect(s.warnings.contains { $0.contains("1 slice has the position of another slice") }, "\(s.warnings)")
        #expect(s.warnings.contains { $0.contains("About 2 slices are missing") }, "\(s.warnings)")
        #expect(s.warnings.contains { $0.contains("uneven") && $0.contains("1 gap") }, "\(s.warnings)")
    }

    @Test func seriesAreSeparatedAndChosenByUID() throws {
        let a = (0..<5).map { Self.slice("a\($0)", uid: "1.1", z: Double($0)) }
        let b = (0..<3).map { Self.slice("b\($0)", uid: "2.2", z: Double($0) * 2) }
        let assembly = SeriesAssembler.assemble((a + b).shuffled())
        #expect(assembly.series.map(\.seriesUID) == ["1.1", "2.2"])
        #expect(throws: ScanError.severalSeries(["1.1 (5 slices)", "2.2 (3 slices)"])) { try assembly.choose(nil) }
        #expect(try assembly.choose("2.2").count == 3)
        #expect(throws: ScanError.seriesNotFound(uid: "9.9", available: ["1.1 (5 slices)", "2.2 (3 slices)"])) { try assembly.choose("9.9") }
        let message = ScanError.severalSeries(["1.1 (5 slices)"]).description
        #expect(message.hasSuffix(".") && message.contains("SeriesInstanceUID"))
    }

    @Test func localizersAndStrayImagesAreSetAside() throws {
        var headers = (0..<6).map { Self.slice("ax\($0)", z: Double($0)) }
        // A scout in the same series, coronal.
        headers.append(Self.slice("scout", z: 0, orientation: (row: Vector3(1, 0, 0), column: Vector3(0, 0, -1))))
        // A LOCALIZER by its ImageType.
        var typed = Self.slice("typed", z: 3)
        typed.imageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        headers.append(typed)
        // One image of another series.
        headers.append(Self.slice("stray", uid: "7.7", z: 0))
        let assembly = SeriesAssembler.assemble(headers)
        #expect(assembly.series.count == 1 && assembly.series[0].count == 6)
        let reasons = Dictionary(uniqueKeysWithValues: assembly.setAside.map { ($0.what, $0.reason) })
        #expect(reasons["scout"]?.contains("orientation differs") == true, "\(reasons)")
        #expect(reasons["typed"]?.contains("localizer") == true, "\(reasons)")
        #expect(reasons["stray"]?.contains("single image") == true, "\(reasons)")
    }

    @Test func nothingToAssembleIsANamedError() {
        #expect(throws: ScanError.noSeries("no slices were given")) { try SeriesAssembler.assemble([]).choose(nil) }
        let onlyScouts = [Self.slice("a", z: 0), Self.slice("b", uid: "2", z: 0)]
        #expect(throws: ScanError.self) { try SeriesAssembler.assemble(onlyScouts).choose(nil) }
    }

    @Test func withoutPositionsInstanceNumbersOrder() throws {
        let headers = [3, 1, 2].map { n in
            SliceHeader(source: SliceSource(file: "n" + String(n)), rows: 2, columns: 2, seriesUID: "1", instanceNumber: n, sliceThickness: 3)
        }
        let s = try SeriesAssembler.assemble(headers).choose(nil)
        #expect(s.slices.map(\.instanceNumber) == [1, 2, 3])
        #expect(s.positions == [0, 3, 6] && s.spacing == [1, 1, 3])
        #expect(s.warnings.contains { $0.contains("InstanceNumber") } && s.warnings.contains { $0.contains("PixelSpacing") })
    }

    @Test func multiFrameSourcesNameTheFrame() {
        #expect(SliceSource(file: "a.dcm", frame: 2).description == "a.dcm (frame 3)")
        #expect(SliceSource(file: "a.dcm").description == "a.dcm")
    }
}

@Suite("Scan geometry")
struct ScanGeometryTests {
    /// Every combination of transpose and flips inverts, and maps a stored slice as the DICOM
    /// orientation says: in display orientation +x (patient's left) runs right, +y (posterior) down.
    @Test func displayTransformFollowsTheOrientation() {
        let w = 3, h = 2
        let values = Array(0..<(w * h))
        for transpose in [false, true] {
            for fc in [false, true] {
                for fr in [false, true] {
                    let t = DisplayTransform(transpose: transpose, flipColumns: fc, flipRows: fr)
                    let shown = t.apply(values, width: w, height: h)
                    #expect(t.invert(shown, width: w, height: h) == values, "\(t)")
                }
            }
        }
        #expect(DisplayTransform(orientation: (row: Vector3(1, 0, 0), column: Vector3(0, 1, 0))) == .identity)
        let mirrored = DisplayTransform(orientation: (row: Vector3(-1, 0, 0), column: Vector3(0, 1, 0)))
        #expect(mirrored == DisplayTransform(transpose: false, flipColumns: true, flipRows: false))
        #expect(mirrored.apply([1, 2, 3, 4, 5, 6], width: 3, height: 2) == [3, 2, 1, 6, 5, 4])
        let upsideDown = DisplayTransform(orientation: (row: Vector3(1, 0, 0), column: Vector3(0, -1, 0)))
        #expect(upsideDown.apply([1, 2, 3, 4, 5, 6], width: 3, height: 2) == [4, 5, 6, 1, 2, 3])
        // Rows stored along y (columns along x): transposed.
        let swapped = DisplayTransform(orientation: (row: Vector3(0, 1, 0), column: Vector3(1, 0, 0)))
        #expect(swapped.transpose && !swapped.flipColumns && !swapped.flipRows)
        #expect(swapped.apply([1, 2, 3, 4, 5, 6], width: 3, height: 2) == [1, 4, 2, 5, 3, 6])
        #expect(swapped.size(width: 3, height: 2).width == 2 && swapped.size(width: 3, height: 2).height == 3)
    }

    @Test func affineMapsVoxelsToRAS() throws {
        let headers = [0.0, 2.5, 5.0].map { z in
            SliceHeader(source: SliceSource(file: "z\(z)"), rows: 4, columns: 4, seriesUID: "1", position: Vector3(-120, -110, z),
                        orientation: (row: Vector3(1, 0, 0), column: Vector3(0, 1, 0)), pixelSpacing: (0.7, 0.8))
        }
        let s = try SeriesAssembler.assemble(headers).choose(nil)
        let a = try s.affineRAS()
        // Voxel (i, j, k) → LPS (−120 + 0.8 i, −110 + 0.7 j, 2.5 k) → RAS (negate x, y).
        #expect(a == [[-0.8, 0, 0, 120], [0, -0.7, 0, 110], [0, 0, 2.5, 0], [0, 0, 0, 1]])
        let noGeometry = [SliceHeader(source: SliceSource(file: "x"), rows: 2, columns: 2, seriesUID: "1")]
        #expect(throws: ScanError.self) { try SeriesAssembler.assemble(noGeometry).choose(nil).affineRAS() }
    }
}
