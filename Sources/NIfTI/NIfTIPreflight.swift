// The header checks made before nifticlib sees a file (issue 16). nifticlib trusts its header: a
// NIfTI-2 dim[0] of two billion overflows its stack (nifti_convert_n2hdr2nim, found by fuzzing),
// and it allocates every voxel the header names (all volumes of a 4-D file) before it reads one,
// so a small .nii.gz (or a truncated .nii) naming gigabytes of voxels would make it allocate them.
// Here the first bytes are read and checked — magic, dim[0], dimensions, datatype, the data's
// offset and size — against the limits and against what the file can hold: a .nii must be at
// least as long as its voxels, and deflate expands at most 1032:1, so a .nii.gz shorter than a
// 1/1032 of its voxels cannot be complete. What passes is safe to hand to nifticlib.
import CNifti
import Foundation

/// What a NIfTI file's header says it holds, checked.
struct NIfTIPreflight: Equatable {
    /// 1 or 2.
    var version: Int
    /// dim[1…7] as stored (unused dimensions 1).
    var dims: [Int]
    /// Every voxel of every volume (what nifticlib reads).
    var voxels: Int
    var bytesPerVoxel: Int
    var dataOffset: Int

    /// The largest expansion of a deflate stream (RFC 1951: a 258-byte match costs at least 2 bits).
    static let deflateRatio = 1032

    /// Bytes per voxel of the datatypes nifticlib knows (NIfTI-1 `datatype` codes).
    static let datatypeSizes: [Int: Int] = [2: 1, 4: 2, 8: 4, 16: 4, 32: 8, 64: 8, 128: 3, 256: 1, 512: 2, 768: 4,
                                            1024: 8, 1280: 8, 1536: 16, 1792: 16, 2048: 32, 2304: 4]
    /// The scalar datatypes a volume may have (NIfTIVolume converts them to Float).
    static let scalarDatatypes: Set<Int> = [2, 4, 8, 16, 64, 256, 512, 768, 1024, 1280]

    /// Reads and checks the header of `path` (.nii or .nii.gz).
    /// - Throws: `NIfTIError.unreadable` (not a single-file NIfTI-1/2 header, a bad dim[0] or
    ///   offset, a file too short for its voxels), `.unsupported` (a datatype that is not a scalar,
    ///   a dimension below 1), `.tooLarge` (past `limits`).
    static func check(path: String, limits: NIfTILimits) throws -> NIfTIPreflight {
        let compressed = path.lowercased().hasSuffix(".gz")
        var info = stat()
        guard stat(path, &info) == 0 else { throw NIfTIError.unreadable(path: path, reason: "it cannot be opened for reading") }
        let fileSize = Int(info.st_size)
        var header = [UInt8](repeating: 0, count: 540)
        let file = znzopen(path, "rb", compressed ? 1 : 0)
        guard cnifti_is_null(file) == 0 else { throw NIfTIError.unreadable(path: path, reason: "it cannot be opened for reading") }
        // znzread returns what gzread/fread read: up to 540, or negative on an error (a folder,
        // a damaged .gz).
        let got = header.withUnsafeMutableBytes { znzread($0.baseAddress, 1, 540, file) }
        _ = cnifti_close(file)
        guard got >= 0 else { throw NIfTIError.unreadable(path: path, reason: compressed ? "it does not inflate" : "it cannot be read") }
        return try parse(header: Array(header.prefix(min(got, 540))), path: path, fileSize: fileSize, compressed: compressed, limits: limits)
    }

    /// Checks header bytes (the first up to 540 bytes of the uncompressed file).
    static func parse(header h: [UInt8], path: String, fileSize: Int, compressed: Bool, limits: NIfTILimits) throws -> NIfTIPreflight {
        func unreadable(_ why: String) -> NIfTIError { .unreadable(path: path, reason: why) }
        guard h.count >= 348 else { throw unreadable("the file is shorter than a NIfTI header (\(h.count) bytes)") }
        func raw<T: FixedWidthInteger>(_ at: Int, _: T.Type, swapped: Bool) -> T {
            var v: T = 0
            for i in 0..<MemoryLayout<T>.size { v |= T(truncatingIfNeeded: h[at + i]) << (8 * i) }
            return swapped ? v.byteSwapped : v
        }
        let size = raw(0, Int32.self, swapped: false)
        let swapped = size != 348 && size != 540
        let sizeofHeader = Int(swapped ? size.byteSwapped : size)
        guard sizeofHeader == 348 || sizeofHeader == 540 else {
            throw unreadable("the header is not a NIfTI-1 or NIfTI-2 header (sizeof_hdr \(size))")
        }
        let version = sizeofHeader == 348 ? 1 : 2
        var dims: [Int], datatype: Int, offset: Double
        if version == 1 {
            let magic = Array(h[344..<348])
            if magic == Array("ni1\0".utf8) { throw NIfTIError.unsupported("a NIfTI-1 header and image pair (.hdr/.img) is not read; convert it to one .nii file") }
            guard magic == Array("n+1\0".utf8) else { throw unreadable("the NIfTI-1 header has no n+1 magic (an ANALYZE file, or not NIfTI)") }
            dims = (0..<8).map { Int(raw(40 + 2 * $0, Int16.self, swapped: swapped)) }
            datatype = Int(raw(70, Int16.self, swapped: swapped))
            offset = Double(Float(bitPattern: raw(108, UInt32.self, swapped: swapped)))
        } else {
            guard h.count >= 540 else { throw unreadable("the file is shorter than a NIfTI-2 header (\(h.count) bytes)") }
            guard Array(h[4..<8]) == Array("n+2\0".utf8) else { throw unreadable("the NIfTI-2 header has no n+2 magic (a .hdr/.img pair, or not NIfTI)") }
            dims = (0..<8).map { Int(raw(16 + 8 * $0, Int64.self, swapped: swapped)) }
            datatype = Int(raw(12, Int16.self, swapped: swapped))
            offset = Double(raw(168, Int64.self, swapped: swapped))
        }
        let rank = dims[0]
        guard (1...7).contains(rank) else { throw unreadable("dim[0] is \(rank), not 1 to 7") }
        var voxels = 1
        for i in 1...rank {
            guard dims[i] >= 1 else { throw NIfTIError.unsupported("dimension \(i) is \(dims[i])") }
            let (m, o) = voxels.multipliedReportingOverflow(by: dims[i])
            guard !o, m <= limits.maxVoxels else {
                throw NIfTIError.tooLarge("\(dims[1...rank].map(String.init).joined(separator: "×")) voxels (every volume of the file); the limit is \(limits.maxVoxels)")
            }
            voxels = m
        }
        let shape = Array(dims[1...7].enumerated().map { $0.offset < rank ? $0.element : 1 })
        guard shape[0] <= limits.maxSide, shape[1] <= limits.maxSide else {
            throw NIfTIError.tooLarge("\(shape[0])×\(shape[1]) voxels per slice; the limit is \(limits.maxSide) per side")
        }
        guard shape[2] <= limits.maxSlices else { throw NIfTIError.tooLarge("\(shape[2]) slices; the limit is \(limits.maxSlices)") }
        guard let bytesPerVoxel = datatypeSizes[datatype], scalarDatatypes.contains(datatype) else {
            throw NIfTIError.unsupported("datatype \(datatype) is not a scalar integer or float type")
        }
        guard offset.isFinite, offset >= Double(sizeofHeader), offset <= Double(1 << 40) else {
            throw unreadable("the voxel offset \(offset) is not inside the file")
        }
        let dataOffset = Int(offset)
        let (bytes, o1) = voxels.multipliedReportingOverflow(by: bytesPerVoxel)
        let (needed, o2) = bytes.addingReportingOverflow(dataOffset)
        guard !o1, !o2 else { throw NIfTIError.tooLarge("\(voxels) voxels of \(bytesPerVoxel) bytes") }
        if compressed {
            guard needed <= fileSize.multipliedReportingOverflow(by: deflateRatio).partialValue + 4096 || fileSize > Int.max / deflateRatio else {
                throw unreadable("the header names \(bytes) bytes of voxels, more than a \(fileSize)-byte .nii.gz can hold (at most \(deflateRatio):1); the file is truncated or not what it says")
            }
        } else {
            guard needed <= fileSize else {
                throw unreadable("the header names \(bytes) bytes of voxels from byte \(dataOffset), but the file has \(fileSize) bytes; it is truncated")
            }
        }
        return NIfTIPreflight(version: version, dims: shape, voxels: voxels, bytesPerVoxel: bytesPerVoxel, dataOffset: dataOffset)
    }
}
