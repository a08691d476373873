// A general NIfTI-1 volume writer (nifticlib): int16 with scl_slope/scl_inter, float32 or uint8
// voxels, written slice by slice (the volume is never whole in memory) under a temporary name beside
// the target, fsynced and renamed when complete.
import CNifti
import Foundation
import SystemIO

/// The voxel type of a volume written by `NIfTIVolumeWriter`.
public enum NIfTIVoxelType: Sendable, Equatable {
    /// Signed 16-bit stored values; value = stored · slope + intercept (scl_slope, scl_inter).
    case int16(slope: Double, intercept: Double)
    /// 32-bit floats, no scaling.
    case float32
    /// Unsigned bytes, no scaling.
    case uint8

    var datatype: Int32 {
        switch self {
        case .int16: return DT_INT16
        case .float32: return DT_FLOAT32
        case .uint8: return DT_UINT8
        }
    }

    var bytesPerVoxel: Int {
        switch self {
        case .int16: return 2
        case .float32: return 4
        case .uint8: return 1
        }
    }
}

/// Writes a NIfTI-1 volume (.nii, or .nii.gz by the name) slice by slice, with the 4×4 voxel → RAS
/// affine as sform and qform (scanner anatomical). Slices are `columns × rows` voxels, i (column)
/// fastest, in k order. `finish()` completes the file: it is written under a temporary name beside
/// `path`, fsynced and renamed; without `finish()` (or on any failure) the temporary file is removed
/// and `path` is untouched.
public final class NIfTIVolumeWriter {
    public let path: String
    public let columns: Int, rows: Int, slices: Int
    public let voxelType: NIfTIVoxelType
    private let temporary: String
    private var nim: UnsafeMutablePointer<nifti_image>?
    private var file: znzFile?
    private var written = 0

    /// Writes the header and opens the file for the slices.
    /// - Parameters:
    ///   - affine: the 4×4 voxel (i, j, k) → RAS mm affine, row-major; its columns give the voxel
    ///     sizes (pixdim).
    ///   - description: NIfTI's `descrip` (at most 79 characters are kept).
    /// - Throws: `NIfTIError.writeFailed` (a bad name, empty sizes, a singular or non-finite affine, a
    ///   scaling that is not finite, an I/O error).
    public init(path: String, columns: Int, rows: Int, slices: Int, affine: [[Double]], voxelType: NIfTIVoxelType,
                description: String = "") throws {
        self.path = path
        self.columns = columns
        self.rows = rows
        self.slices = slices
        self.voxelType = voxelType
        let lower = path.lowercased()
        guard lower.hasSuffix(".nii") || lower.hasSuffix(".nii.gz") else {
            throw NIfTIError.writeFailed("\(path): the name must end in .nii or .nii.gz")
        }
        let url = URL(fileURLWithPath: path)
        // The temporary name keeps the suffix: nifticlib compresses by the name.
        temporary = url.deletingLastPathComponent().appendingPathComponent(".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))-\(url.lastPathComponent)").path
        guard columns > 0, rows > 0, slices > 0 else {
            throw NIfTIError.writeFailed("the volume \(columns)×\(rows)×\(slices) is empty")
        }
        guard affine.count == 4, affine.allSatisfy({ $0.count == 4 }), affine.joined().allSatisfy(\.isFinite) else {
            throw NIfTIError.writeFailed("the affine is not a 4×4 matrix of finite numbers")
        }
        if case .int16(let slope, let intercept) = voxelType {
            guard slope.isFinite, slope != 0, intercept.isFinite else {
                throw NIfTIError.writeFailed("the scaling (slope \(slope), intercept \(intercept)) must be finite with a non-zero slope")
            }
        }
        var dims: [Int64] = [3, Int64(columns), Int64(rows), Int64(slices), 1, 1, 1, 1]
        guard let made = nifti_make_new_nim(&dims, voxelType.datatype, 0) else { throw NIfTIError.writeFailed("nifticlib could not make a header") }
        nim = made
        var m = nifti_dmat44()
        withUnsafeMutableBytes(of: &m.m) { raw in
            let p = raw.bindMemory(to: Double.self)
            for r in 0..<4 { for c in 0..<4 { p[r * 4 + c] = affine[r][c] } }
        }
        made.pointee.sto_xyz = m
        made.pointee.sto_ijk = nifti_dmat44_inverse(m)
        made.pointee.sform_code = NIFTI_XFORM_SCANNER_ANAT
        made.pointee.qform_code = NIFTI_XFORM_SCANNER_ANAT
        var qb = 0.0, qc = 0.0, qd = 0.0, qx = 0.0, qy = 0.0, qz = 0.0, dx = 0.0, dy = 0.0, dz = 0.0, qfac = 0.0
        nifti_dmat44_to_quatern(m, &qb, &qc, &qd, &qx, &qy, &qz, &dx, &dy, &dz, &qfac)
        let det = affine[0][0] * (affine[1][1] * affine[2][2] - affine[1][2] * affine[2][1])
            - affine[0][1] * (affine[1][0] * affine[2][2] - affine[1][2] * affine[2][0])
            + affine[0][2] * (affine[1][0] * affine[2][1] - affine[1][1] * affine[2][0])
        guard dx > 0, dy > 0, dz > 0, abs(det) > 1e-9 else { throw NIfTIError.writeFailed("the affine is singular") }
        made.pointee.quatern_b = qb; made.pointee.quatern_c = qc; made.pointee.quatern_d = qd
        made.pointee.qoffset_x = qx; made.pointee.qoffset_y = qy; made.pointee.qoffset_z = qz
        made.pointee.qfac = qfac
        made.pointee.dx = dx; made.pointee.dy = dy; made.pointee.dz = dz
        made.pointee.pixdim.1 = dx; made.pointee.pixdim.2 = dy; made.pointee.pixdim.3 = dz
        made.pointee.qto_xyz = nifti_quatern_to_dmat44(qb, qc, qd, qx, qy, qz, dx, dy, dz, qfac)
        made.pointee.qto_ijk = nifti_dmat44_inverse(made.pointee.qto_xyz)
        made.pointee.xyz_units = NIFTI_UNITS_MM
        if case .int16(let slope, let intercept) = voxelType {
            made.pointee.scl_slope = slope
            made.pointee.scl_inter = intercept
        }
        withUnsafeMutableBytes(of: &made.pointee.descrip) { raw in
            raw.initializeMemory(as: UInt8.self, repeating: 0)
            let bytes = Array(description.utf8.prefix(79))
            raw.copyBytes(from: bytes)
        }
        guard nifti_set_filenames(made, temporary, 0, 1) == 0 else {
            throw NIfTIError.writeFailed("\(path): nifticlib does not accept the name")
        }
        nifti_set_debug_level(0)
        let f = nifti_image_write_hdr_img(made, 2, "wb")
        guard cnifti_is_null(f) == 0 else {
            unlink(temporary)
            throw NIfTIError.writeFailed("\(path) cannot be written (its folder is missing or not writable)")
        }
        file = f
    }

    deinit {
        if let file {
            _ = cnifti_close(file)
            unlink(temporary)
        }
        if let nim { nifti_image_free(nim) }
    }

    /// Appends the next slice of int16 stored values.
    /// - Throws: `NIfTIError.writeFailed` for another voxel type, a wrong size, too many slices or an
    ///   I/O error.
    public func append(_ stored: [Int16]) throws {
        guard case .int16 = voxelType else { throw NIfTIError.writeFailed("\(path) holds \(voxelType), not int16") }
        let little = stored.map { $0.littleEndian }
        try little.withUnsafeBytes { try write($0, count: stored.count) }
    }

    /// Appends the next slice of float32 values.
    public func append(_ values: [Float]) throws {
        guard voxelType == .float32 else { throw NIfTIError.writeFailed("\(path) holds \(voxelType), not float32") }
        let little = values.map { $0.bitPattern.littleEndian }
        try little.withUnsafeBytes { try write($0, count: values.count) }
    }

    /// Appends the next slice of uint8 values.
    public func append(_ values: [UInt8]) throws {
        guard voxelType == .uint8 else { throw NIfTIError.writeFailed("\(path) holds \(voxelType), not uint8") }
        try values.withUnsafeBytes { try write($0, count: values.count) }
    }

    private func write(_ bytes: UnsafeRawBufferPointer, count: Int) throws {
        guard let file else { throw NIfTIError.writeFailed("\(path) is already closed") }
        guard count == columns * rows else { throw NIfTIError.writeFailed("a slice of \(count) voxels, not \(columns)×\(rows)") }
        guard written < slices else { throw NIfTIError.writeFailed("more than the \(slices) slices of the header") }
        let n = nifti_write_buffer(file, bytes.baseAddress, Int64(bytes.count))
        guard n == Int64(bytes.count) else { throw NIfTIError.writeFailed("\(path): writing slice \(written + 1) failed") }
        written += 1
    }

    /// Closes the file, makes it durable and gives it its name.
    /// - Throws: `NIfTIError.writeFailed` when fewer slices than the header's were written, or
    ///   closing, syncing or renaming failed.
    public func finish() throws {
        guard let f = file else { return }
        file = nil
        let closed = cnifti_close(f)
        guard written == slices, closed == 0 else {
            unlink(temporary)
            throw NIfTIError.writeFailed(written == slices ? "\(path): closing failed" : "\(path): \(written) of \(slices) slices were written")
        }
        let fd = Descriptors.open(temporary, O_RDONLY)
        guard fd >= 0 else {
            unlink(temporary)
            throw NIfTIError.writeFailed("\(path): the written file cannot be reopened to sync it")
        }
        let synced = fsync(fd)
        Descriptors.close(fd)
        guard synced == 0 else {
            unlink(temporary)
            throw NIfTIError.writeFailed("\(path): fsync failed")
        }
        guard rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw NIfTIError.writeFailed("\(path): rename failed: \(reason)")
        }
        let dir = Descriptors.open(URL(fileURLWithPath: path).deletingLastPathComponent().path, O_RDONLY | O_DIRECTORY)
        if dir >= 0 {
            _ = fsync(dir)
            Descriptors.close(dir)
        }
    }
}
