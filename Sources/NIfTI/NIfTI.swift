// NIfTI volumes through nifticlib (Debian libnifti2-dev): NIfTI-1 and NIfTI-2, .nii and .nii.gz,
// integer and float voxels with scl_slope/scl_inter; the sform (else the qform) decides the axes.
// A volume reads as a series of slices with DICOM-style headers (position and orientation in LPS),
// so it is assembled, oriented for display and analysed as the same scan read from DICOM would be.
// Label volumes are written slice by slice (the volume is never whole in memory).
import CNifti
import Foundation
import Scans
import SystemIO

/// Why a NIfTI file cannot be read or written.
public enum NIfTIError: Error, Equatable, CustomStringConvertible, Sendable {
    /// Not a NIfTI file, or one nifticlib cannot read (a .nii.gz that does not inflate, a header that is not NIfTI).
    case unreadable(path: String, reason: String)
    /// A valid file whose content is not a volume we can use (datatype, dimensions).
    case unsupported(String)
    /// A zero or singular sform/qform.
    case badAffine(String)
    /// Over the configured limits (voxels, slices).
    case tooLarge(String)
    /// Writing failed.
    case writeFailed(String)

    public var description: String {
        switch self {
        case .unreadable(let path, let reason): return "\(path) cannot be read as NIfTI: \(reason)."
        case .unsupported(let what): return "The NIfTI volume cannot be used: \(what)."
        case .badAffine(let what): return "The NIfTI volume's affine cannot be used: \(what)."
        case .tooLarge(let what): return "The NIfTI volume is too large: \(what)."
        case .writeFailed(let what): return "The NIfTI file cannot be written: \(what)."
        }
    }
}

/// A NIfTI volume's header, as read.
public struct NIfTIHeader: Sendable, Equatable {
    /// 1 or 2.
    public var version: Int
    /// nx, ny, nz (voxels along i, j, k) and nt (volumes; only the first is used).
    public var nx: Int, ny: Int, nz: Int, nt: Int
    /// The NIfTI datatype code (DT_*).
    public var datatype: Int
    /// Voxel sizes along i, j, k (mm; pixdim[1…3]).
    public var pixdim: [Double]
    /// Applied to every stored value when the slope is finite and non-zero.
    public var sclSlope: Double, sclInter: Double
    /// The 4×4 voxel (i, j, k) → RAS mm affine, row-major.
    public var affine: [[Double]]
    /// Where the affine comes from: "sform", "qform", or "pixdim" (neither code set).
    public var affineSource: String
}

/// Limits checked on the header, before any voxel memory is allocated.
public struct NIfTILimits: Sendable {
    public var maxVoxels: Int
    public var maxSlices: Int
    public var maxSide: Int
    public init(maxVoxels: Int = 2000 * 1024 * 1024, maxSlices: Int = 2000, maxSide: Int = 8192) {
        self.maxVoxels = maxVoxels
        self.maxSlices = maxSlices
        self.maxSide = maxSide
    }
}

/// A NIfTI volume read into memory (the first 3-D volume of the file) as float values.
public final class NIfTIVolume: @unchecked Sendable {
    // @unchecked Sendable: immutable after init.
    public let path: String
    public let header: NIfTIHeader
    /// nx·ny·nz values, i fastest, with scl_slope/scl_inter applied.
    public let values: [Float]

    /// Reads the header only.
    /// - Throws: `NIfTIError`.
    public static func readHeader(path: String) throws -> NIfTIHeader {
        try readHeader(path: path, limits: NIfTILimits())
    }

    /// Reads the header only, refusing one past `limits` before nifticlib reads it.
    /// - Throws: `NIfTIError`.
    public static func readHeader(path: String, limits: NIfTILimits) throws -> NIfTIHeader {
        var h = try withImage(path: path, readData: false, limits: limits) { try header(of: $0, path: path) }
        // The image struct is the same for both versions: ask the file's header which it is.
        var version: Int32 = 0
        if let raw = nifti_read_header(path, &version, 0) { free(raw) }
        if version == 1 || version == 2 { h.version = Int(version) }
        return h
    }

    /// Reads `path` (.nii or .nii.gz): the header first, checked against `limits`, then the voxels.
    /// - Throws: `NIfTIError`.
    public init(path: String, limits: NIfTILimits = NIfTILimits()) throws {
        self.path = path
        let h = try Self.readHeader(path: path, limits: limits)
        guard h.nx <= limits.maxSide, h.ny <= limits.maxSide else {
            throw NIfTIError.tooLarge("\(h.nx)×\(h.ny) voxels per slice; the limit is \(limits.maxSide) per side")
        }
        guard h.nz <= limits.maxSlices else { throw NIfTIError.tooLarge("\(h.nz) slices; the limit is \(limits.maxSlices)") }
        let (count, overflow) = h.nx.multipliedReportingOverflow(by: h.ny * h.nz)
        guard !overflow, count <= limits.maxVoxels else {
            throw NIfTIError.tooLarge("\(h.nx)×\(h.ny)×\(h.nz) voxels; the limit is \(limits.maxVoxels)")
        }
        header = h
        values = try Self.withImage(path: path, readData: true, limits: limits) { nim in
            guard let data = nim.pointee.data else { throw NIfTIError.unreadable(path: path, reason: "the voxel data could not be read (a truncated file, or a .nii.gz that does not inflate)") }
            return try Self.floats(data, datatype: h.datatype, count: count, slope: h.sclSlope, intercept: h.sclInter)
        }
    }

    /// The values of slice k (nx × ny, i fastest: row j, column i).
    public func slice(_ k: Int) -> [Float] {
        let n = header.nx * header.ny
        return Array(values[(k * n)..<((k + 1) * n)])
    }

    /// One DICOM-style header per slice k: rows = ny, columns = nx, position and orientation in LPS
    /// from the affine, the file and k as its source.
    public func sliceHeaders(seriesUID: String? = nil) -> [SliceHeader] {
        let a = header.affine
        let colDir = Vector3(-a[0][0], -a[1][0], a[2][0])   // voxel i (column) in LPS
        let rowDir = Vector3(-a[0][1], -a[1][1], a[2][1])   // voxel j (row)
        let sliceDir = Vector3(-a[0][2], -a[1][2], a[2][2]) // voxel k
        let origin = Vector3(-a[0][3], -a[1][3], a[2][3])
        let uid = seriesUID ?? "nifti:" + (path as NSString).lastPathComponent
        return (0..<header.nz).map { k in
            SliceHeader(source: SliceSource(file: path, frame: k), rows: header.ny, columns: header.nx, modality: "",
                        seriesUID: uid, instanceNumber: k + 1, position: origin + sliceDir * Double(k),
                        orientation: (row: colDir.normalized, column: rowDir.normalized),
                        pixelSpacing: (row: rowDir.length, column: colDir.length), sliceThickness: sliceDir.length)
        }
    }

    // MARK: private

    static func withImage<T>(path: String, readData: Bool, limits: NIfTILimits,
                             _ body: (UnsafeMutablePointer<nifti_image>) throws -> T) throws -> T {
        guard FileManager.default.isReadableFile(atPath: path) else {
            throw NIfTIError.unreadable(path: path, reason: FileManager.default.fileExists(atPath: path) ? "it cannot be opened for reading" : "no such file")
        }
        let lower = path.lowercased()
        guard lower.hasSuffix(".nii") || lower.hasSuffix(".nii.gz") else {
            throw NIfTIError.unreadable(path: path, reason: "the name does not end in .nii or .nii.gz")
        }
        // nifticlib trusts the header: it is checked first (NIfTIPreflight), before nifticlib
        // reads it or allocates the voxels it names.
        let checked = try NIfTIPreflight.check(path: path, limits: limits)
        nifti_set_debug_level(0)
        guard let nim = nifti_image_read(path, readData ? 1 : 0) else {
            throw NIfTIError.unreadable(path: path, reason: readData
                ? "the voxel data could not be read (a truncated file, or a .nii.gz that does not inflate)"
                : "the header is not a NIfTI-1 or NIfTI-2 header (or the file is truncated or does not inflate)")
        }
        defer { nifti_image_free(nim) }
        // The file may have changed since the check (another process): what nifticlib read must
        // be what was checked.
        guard Int(nim.pointee.nvox) == checked.voxels, Int(nim.pointee.nbyper) == checked.bytesPerVoxel else {
            throw NIfTIError.unreadable(path: path, reason: "the file changed while it was read")
        }
        return try body(nim)
    }

    static func header(of nim: UnsafeMutablePointer<nifti_image>, path: String) throws -> NIfTIHeader {
        let n = nim.pointee
        let dims = [n.nx, n.ny, n.nz, n.nt].map { Int($0) }
        guard dims[0] >= 1, dims[1] >= 1, dims[2] >= 1 else {
            throw NIfTIError.unsupported("the dimensions \(dims[0])×\(dims[1])×\(dims[2]) are not a volume")
        }
        guard [DT_UINT8, DT_INT8, DT_INT16, DT_UINT16, DT_INT32, DT_UINT32, DT_INT64, DT_UINT64, DT_FLOAT32, DT_FLOAT64].contains(n.datatype) else {
            throw NIfTIError.unsupported("datatype \(n.datatype) (\(String(cString: nifti_datatype_string(n.datatype)))) is not a scalar integer or float type")
        }
        var pixdim = [n.pixdim.1, n.pixdim.2, n.pixdim.3]
        func matrix(_ m: nifti_dmat44) -> [[Double]] {
            [[m.m.0.0, m.m.0.1, m.m.0.2, m.m.0.3], [m.m.1.0, m.m.1.1, m.m.1.2, m.m.1.3],
             [m.m.2.0, m.m.2.1, m.m.2.2, m.m.2.3], [m.m.3.0, m.m.3.1, m.m.3.2, m.m.3.3]]
        }
        var affine: [[Double]]
        var source: String
        if n.sform_code > 0 {
            affine = matrix(n.sto_xyz)
            source = "sform"
        } else if n.qform_code > 0 {
            affine = matrix(n.qto_xyz)
            source = "qform"
        } else {
            // Neither transform: NIfTI's "method 1", voxel sizes along the axes.
            pixdim = pixdim.map { $0 > 0 && $0.isFinite ? $0 : 1 }
            affine = [[pixdim[0], 0, 0, 0], [0, pixdim[1], 0, 0], [0, 0, pixdim[2], 0], [0, 0, 0, 1]]
            source = "pixdim"
        }
        guard affine.joined().allSatisfy(\.isFinite) else { throw NIfTIError.badAffine("the \(source) holds a value that is not finite") }
        let det = affine[0][0] * (affine[1][1] * affine[2][2] - affine[1][2] * affine[2][1])
            - affine[0][1] * (affine[1][0] * affine[2][2] - affine[1][2] * affine[2][0])
            + affine[0][2] * (affine[1][0] * affine[2][1] - affine[1][1] * affine[2][0])
        guard abs(det) > 1e-9 else { throw NIfTIError.badAffine("the \(source) is zero or singular (determinant \(det))") }
        return NIfTIHeader(version: n.nifti_type == NIFTI_FTYPE_NIFTI2_1 || n.nifti_type == NIFTI_FTYPE_NIFTI2_2 ? 2 : 1,
                           nx: dims[0], ny: dims[1], nz: dims[2], nt: max(1, dims[3]), datatype: Int(n.datatype), pixdim: pixdim,
                           sclSlope: n.scl_slope, sclInter: n.scl_inter, affine: affine, affineSource: source)
    }

    static func floats(_ data: UnsafeMutableRawPointer, datatype: Int, count: Int, slope: Double, intercept: Double) throws -> [Float] {
        var out = [Float](repeating: 0, count: count)
        func convert<T>(_ type: T.Type, _ f: (T) -> Double) {
            let p = data.assumingMemoryBound(to: T.self)
            for i in 0..<count { out[i] = Float(f(p[i])) }
        }
        switch Int32(datatype) {
        case DT_UINT8: convert(UInt8.self) { Double($0) }
        case DT_INT8: convert(Int8.self) { Double($0) }
        case DT_INT16: convert(Int16.self) { Double($0) }
        case DT_UINT16: convert(UInt16.self) { Double($0) }
        case DT_INT32: convert(Int32.self) { Double($0) }
        case DT_UINT32: convert(UInt32.self) { Double($0) }
        case DT_INT64: convert(Int64.self) { Double($0) }
        case DT_UINT64: convert(UInt64.self) { Double($0) }
        case DT_FLOAT32: convert(Float.self) { Double($0) }
        case DT_FLOAT64: convert(Double.self) { $0 }
        default: throw NIfTIError.unsupported("datatype \(datatype)")
        }
        // NIfTI: a slope of 0 (or not finite) means no scaling.
        if slope != 0 && slope.isFinite && intercept.isFinite && !(slope == 1 && intercept == 0) {
            let s = Float(slope), b = Float(intercept)
            for i in 0..<count { out[i] = out[i] * s + b }
        }
        return out
    }
}

/// Writes a uint8 label volume slice by slice (NIfTI-1, .nii or .nii.gz by the name), with the
/// scan's affine as sform and qform (scanner anatomical), so it overlays the scan in 3D Slicer or
/// ITK-SNAP: a `NIfTIVolumeWriter` of bytes (temporary name beside `path`, fsynced and renamed by
/// `finish()`; without `finish()` the temporary file is removed).
public final class NIfTILabelWriter {
    private let writer: NIfTIVolumeWriter
    public var path: String { writer.path }
    public var columns: Int { writer.columns }
    public var rows: Int { writer.rows }
    public var slices: Int { writer.slices }

    /// Writes the header and opens the file for the slices.
    /// - Parameter affine: the 4×4 voxel → RAS affine, row-major.
    /// - Throws: `NIfTIError.writeFailed` (a bad name, a singular affine, an I/O error).
    public init(path: String, columns: Int, rows: Int, slices: Int, affine: [[Double]]) throws {
        writer = try NIfTIVolumeWriter(path: path, columns: columns, rows: rows, slices: slices, affine: affine, voxelType: .uint8,
                                       description: "LesionAffinity lesion labels")
    }

    /// Appends slice k (columns × rows, i fastest), in order.
    /// - Throws: `NIfTIError.writeFailed` on a wrong size, too many slices or an I/O error.
    public func append(_ labels: [UInt8]) throws { try writer.append(labels) }

    /// Closes the file.
    /// - Throws: `NIfTIError.writeFailed` when fewer slices than the header's were written.
    public func finish() throws { try writer.finish() }
}
