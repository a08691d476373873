// `affinity-lab decode` for NIfTI volumes (.nii, .nii.gz; nifticlib through the NIfTI module): the
// volume's axial slices are the frames, in display orientation (the patient's right on the image's
// left, anterior up), as a scan analysis sees them — the same view as the same scan read from DICOM.
import Foundation
import NIfTI
import Scans

/// NIfTI-1 and NIfTI-2 volumes: recognised by the name (.nii, .nii.gz) or by the magic of an
/// uncompressed header ("n+1" at byte 344, "n+2" at byte 4).
struct NIfTIDecodeSource: DecodeSource {
    static func recognises(path: String, bytes: [UInt8]) -> Bool {
        let lower = path.lowercased()
        if lower.hasSuffix(".nii") || lower.hasSuffix(".nii.gz") { return true }
        if bytes.count >= 348, Array(bytes[344..<348]) == Array("n+1\0".utf8) { return true }
        if bytes.count >= 540, Array(bytes[4..<8]) == Array("n+2\0".utf8) { return true }
        return false
    }

    func open(path: String, bytes: [UInt8], request: DecodeRequest) throws -> DecodedFile? {
        guard Self.recognises(path: path, bytes: bytes) else { return nil }
        let lower = path.lowercased()
        guard lower.hasSuffix(".nii") || lower.hasSuffix(".nii.gz") else {
            // nifticlib opens by name: a NIfTI header in a file named otherwise.
            throw LabError(name: "unsupported-format",
                           message: "Cannot decode \(path): it holds a NIfTI header, but NIfTI files are read by their name; rename it to end in .nii (or .nii.gz when compressed).",
                           code: 4)
        }
        let volume: NIfTIVolume
        do { volume = try NIfTIVolume(path: path) } catch let e as NIfTIError { throw Self.labError(e, path) }
        let h = volume.header
        guard request.frame < h.nz else {
            throw LabError(name: "bad-image", message: "Cannot decode \(path): it has \(h.nz) slice(s); frame \(request.frame) does not exist.", code: 4)
        }
        let headers = volume.sliceHeaders()
        let slice = headers[request.frame]
        let orientation = slice.orientation
        let transform = DisplayTransform(orientation: orientation)
        let (width, height) = transform.size(width: h.nx, height: h.ny)
        let display = Self.displayGeometry(slice, transform)
        let (bits, signed) = Self.bits(h.datatype)
        let scaled = h.sclSlope != 0 && h.sclSlope.isFinite && h.sclInter.isFinite
        let fields: [String: Any] = [
            "width": width, "height": height, "frames": h.nz, "bits": bits, "signed": signed,
            "pixel_spacing": [display.spacing.row, display.spacing.column].map { jsonNumber($0) },
            "slice_thickness": jsonNumber(slice.sliceThickness),
            "image_position": display.position.array.map { jsonNumber($0) },
            "image_orientation": (display.row.array + display.column.array).map { jsonNumber($0) },
            "instance_number": request.frame + 1,
            "rescale_slope": scaled ? h.sclSlope : 1.0, "rescale_intercept": scaled ? h.sclInter : 0.0,
            "window": [request.windowCenter ?? -600, request.windowWidth ?? 1500],
            "decoder": "nifti \(h.version) (nifticlib, built in; affine from the \(h.affineSource))",
        ]
        return DecodedFile(fields: fields, width: width, height: height, frames: h.nz) {
            var all: [Float] = []
            all.reserveCapacity(h.nx * h.ny * h.nz)
            for k in 0..<h.nz { all += transform.apply(volume.slice(k), width: h.nx, height: h.ny) }
            return all
        }
    }

    /// The geometry of a slice as displayed: the patient position of display pixel (0, 0), the
    /// directions of increasing display column and row (LPS), and [row, column] spacing.
    static func displayGeometry(_ s: SliceHeader, _ t: DisplayTransform) -> (position: Vector3, row: Vector3, column: Vector3, spacing: (row: Double, column: Double)) {
        let o = s.orientation ?? (row: Vector3(1, 0, 0), column: Vector3(0, 1, 0))
        let sp = s.pixelSpacing ?? (row: 1, column: 1)
        let p0 = s.position ?? Vector3(0, 0, 0)
        let (w, h) = t.size(width: s.columns, height: s.rows)
        // Display (x, y) → stored (column, row), as DisplayTransform walks the pixels.
        func stored(_ x: Int, _ y: Int) -> (Int, Int) {
            let sx0 = t.flipColumns ? w - 1 - x : x
            let sy0 = t.flipRows ? h - 1 - y : y
            return t.transpose ? (sy0, sx0) : (sx0, sy0)
        }
        func patient(_ c: (Int, Int)) -> Vector3 { p0 + o.row * (Double(c.0) * sp.column) + o.column * (Double(c.1) * sp.row) }
        let origin = patient(stored(0, 0))
        let alongX = (patient(stored(min(1, w - 1), 0)) + origin * -1)
        let alongY = (patient(stored(0, min(1, h - 1))) + origin * -1)
        let spacing = t.transpose ? (row: sp.column, column: sp.row) : (row: sp.row, column: sp.column)
        let row = w > 1 ? alongX.normalized : (t.transpose ? o.column : o.row)
        let column = h > 1 ? alongY.normalized : (t.transpose ? o.row : o.column)
        return (origin, row, column, spacing)
    }

    static func bits(_ datatype: Int) -> (Int, Bool) {
        switch datatype {
        case 2: return (8, false)      // DT_UINT8
        case 256: return (8, true)     // DT_INT8
        case 4: return (16, true)      // DT_INT16
        case 512: return (16, false)   // DT_UINT16
        case 8: return (32, true)      // DT_INT32
        case 768: return (32, false)   // DT_UINT32
        case 1024: return (64, true)   // DT_INT64
        case 1280: return (64, false)  // DT_UINT64
        case 16: return (32, true)     // DT_FLOAT32
        case 64: return (64, true)     // DT_FLOAT64
        default: return (0, false)
        }
    }

    /// A reader's failure as the lab's error: exit 4, the code naming the kind of failure.
    static func labError(_ e: NIfTIError, _ path: String) -> LabError {
        let name: String
        switch e {
        case .unreadable: name = "damaged-image"
        case .unsupported: name = "unsupported-format"
        case .badAffine: name = "bad-image"
        case .tooLarge: name = "image-too-large"
        case .writeFailed: name = "bad-image"
        }
        return LabError(name: name, message: "Cannot decode \(path) (nifti): \(sentence(e.description))", code: 4)
    }
}
