// An independent NIfTI writer for tests: Python's standard library (struct, gzip), following the
// NIfTI-1 and NIfTI-2 header layouts; no nifticlib, no numpy.
import Foundation

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
