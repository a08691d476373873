// scans: series assembly from a set of slice headers as the DICOM decoder reports them (position,
// orientation, spacing, instance number, series UID, image type: any values, NaN and infinities
// included), then choosing a series, its affine, and the display transform of its slices.
import Foundation
import Scans

func fuzzScans(_ bytes: UnsafeRawBufferPointer) {
    var r = FuzzReader(bytes)
    var headers: [SliceHeader] = []
    let uids = ["1.2.3", "1.2.4", "", "1.2.3.4.5.6.7.8.9"]
    while !r.isAtEnd && headers.count < 64 {
        let flags = r.byte()
        func vector() -> Vector3 { Vector3(r.double(), r.double(), r.double()) }
        var h = SliceHeader(source: SliceSource(file: "f\(headers.count)", frame: Int(r.byte() % 4)),
                            rows: Int(r.byte() % 8) + 1, columns: Int(r.byte() % 8) + 1,
                            modality: flags & 64 != 0 ? "CT" : "MR",
                            seriesUID: flags & 128 != 0 ? r.string() : uids[Int(r.byte() % 4)])
        if flags & 1 != 0 { h.instanceNumber = Int(Int32(bitPattern: r.uint32())) }
        if flags & 2 != 0 { h.position = vector() }
        if flags & 4 != 0 { h.orientation = (vector(), vector()) }
        if flags & 8 != 0 { h.pixelSpacing = (r.double(), r.double()) }
        if flags & 16 != 0 { h.sliceThickness = r.double() }
        if flags & 32 != 0 { h.imageType = r.bool() ? ["ORIGINAL", "PRIMARY", "LOCALIZER"] : ["DERIVED", r.string()] }
        headers.append(h)
    }
    let assembly = SeriesAssembler.assemble(headers)
    var counted = assembly.setAside.count
    for s in assembly.series {
        counted += s.count
        fuzzCheck(s.positions.count == s.count && s.spacing.count == 3, "positions \(s.positions.count), spacing \(s.spacing.count) for \(s.count) slices")
        _ = try? s.affineRAS()
        let first = s.slices[0]
        let transform = DisplayTransform(orientation: first.orientation)
        let values = Array(0..<(first.rows * first.columns))
        let shown = transform.apply(values, width: first.columns, height: first.rows)
        fuzzCheck(transform.invert(shown, width: first.columns, height: first.rows) == values, "display transform does not invert")
        _ = try? assembly.choose(s.seriesUID)
    }
    fuzzCheck(counted == headers.count, "\(headers.count) headers but \(counted) assembled or set aside")
    _ = try? assembly.choose(nil)
    _ = try? assembly.choose("no such series")
}
