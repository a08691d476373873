// An independent NIfTI writer for tests: Python's standard library (struct, gzip), following the
// NIfTI-1 and NIfTI-2 header layouts; no nifticlib, no numpy.
import Foundation
import Imaging

/// The Python writer failed (its stderr).
public struct PythonNIfTIError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { "python: \(message)" }
}

/// Writes a NIfTI file with Python's standard library (no nifticlib, no numpy).
/// - Parameters:
///   - values: voxel values, i fastest (nx·ny·nz).
///   - dtype: "B" (uint8), "h" (int16), "f" (float32), "d" (float64) with NIfTI codes 2, 4, 16, 64.
///   - sform: the 3×4 rows of the sform (nil: sform_code 0).
public func writeNIfTIWithPython(_ path: String, nx: Int, ny: Int, nz: Int, values: [Double], dtype: String = "h", version: Int = 1,
                          slope: Double = 1, intercept: Double = 0, sform: [[Double]]? = nil, pixdim: [Double] = [1, 1, 1],
                          gzip: Bool = false) throws {
    let code = ["B": 2, "h": 4, "f": 16, "d": 64][dtype]!
    let bits = ["B": 8, "h": 16, "f": 32, "d": 64][dtype]!
    let s = sform ?? [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    let script = """
    import struct, gzip, sys, json
    nx, ny, nz, code, bits, version = \(nx), \(ny), \(nz), \(code), \(bits), \(version)
    values = json.loads(sys.stdin.read())
    slope, inter = \(slope), \(intercept)
    sform = \(s)
    sform_code = \(sform == nil ? 0 : 1)
    pixdim = [1.0, \(pixdim[0]), \(pixdim[1]), \(pixdim[2]), 1.0, 1.0, 1.0, 1.0]
    dim = [3, nx, ny, nz, 1, 1, 1, 1]
    if version == 1:
        h = bytearray(352)
        struct.pack_into('<i', h, 0, 348)
        struct.pack_into('<8h', h, 40, *dim)
        struct.pack_into('<hh', h, 70, code, bits)
        struct.pack_into('<8f', h, 76, *pixdim)
        struct.pack_into('<f', h, 108, 352.0)
        struct.pack_into('<ff', h, 112, slope, inter)
        struct.pack_into('<h', h, 252, 0)
        struct.pack_into('<h', h, 254, sform_code)
        for r in range(3):
            struct.pack_into('<4f', h, 280 + 16 * r, *sform[r])
        h[344:348] = b'n+1\\0'
    else:
        h = bytearray(544)
        struct.pack_into('<i', h, 0, 540)
        h[4:12] = b'n+2\\0\\r\\n\\x1a\\n'
        struct.pack_into('<hh', h, 12, code, bits)
        struct.pack_into('<8q', h, 16, *dim)
        struct.pack_into('<8d', h, 104, *pixdim)
        struct.pack_into('<q', h, 168, 544)
        struct.pack_into('<dd', h, 176, slope, inter)
        struct.pack_into('<i', h, 344, 0)
        struct.pack_into('<i', h, 348, sform_code)
        for r in range(3):
            struct.pack_into('<4d', h, 400 + 32 * r, *sform[r])
    fmt = '<%d%s' % (len(values), '\(dtype)')
    data = bytes(h) + struct.pack(fmt, *[int(v) if '\(dtype)' in 'Bh' else v for v in values])
    opener = gzip.open if \(gzip ? "True" : "False") else open
    with opener(sys.argv[1], 'wb') as f:
        f.write(data)
    """
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
    p.arguments = ["-c", script, path]
    let input = Pipe()
    p.standardInput = input
    let err = Pipe()
    p.standardError = err
    try p.run()
    input.fileHandleForWriting.write(try JSONSerialization.data(withJSONObject: values))
    try input.fileHandleForWriting.close()
    let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    p.waitUntilExit()
    guard p.terminationStatus == 0 else { throw PythonNIfTIError(message: message) }
}

/// A chest-CT scan as a NIfTI volume for tests: phantom slices (`PhantomGenerator`, HU = gray ·
/// 1500 − 1350, stored as int16) between two blank slices (−1000 HU), written by the independent
/// Python writer, gzip-compressed, in the usual RAS storage (i towards the patient's right, j
/// anterior): display (row y, column x) → voxel (i = side − 1 − x, j = side − 1 − y).
/// - Parameters:
///   - spacing: the in-plane voxel size in mm; the slices are `sliceSpacing` apart from `z0`.
public func writePhantomNIfTI(_ path: String, classes: [PhantomClass], side: Int, seed: UInt64, spacing: Double,
                              sliceSpacing: Double = 5, z0: Double = 0) throws {
    let generator = PhantomGenerator(seed: seed, size: side)
    let blank = [Double](repeating: -1000, count: side * side)
    var values = blank
    for (k, c) in classes.enumerated() {
        let gray = generator.slice(index: k, class: c).pixelImage.grayImage().pixels
        var slice = [Double](repeating: 0, count: side * side)
        for y in 0..<side { for x in 0..<side { slice[(side - 1 - y) * side + (side - 1 - x)] = (Double(gray[y * side + x]) * 1500 - 1350).rounded() } }
        values += slice
    }
    values += blank
    try writeNIfTIWithPython(path, nx: side, ny: side, nz: classes.count + 2, values: values, dtype: "h",
                             sform: [[spacing, 0, 0, -180], [0, spacing, 0, -180], [0, 0, sliceSpacing, z0]], gzip: true)
}
