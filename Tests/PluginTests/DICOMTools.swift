// DICOM test files made at test time with independent tools from Debian packages — dcmtk
// (dump2dcm, dcmconv, dcmcjpeg/dcmdjpeg, dcmcjpls/dcmdjpls, dcmcrle/dcmdrle, dcmdump) and GDCM's
// gdcmconv (JPEG 2000, which dcmtk does not write) — and the values they say the pixels have:
// the stored values put in through a raw file, or dcmtk's own decompression dumped with dcmdump +W.
// A missing tool is a test failure naming the package (scripts/setup installs them), not a skip.

import Foundation
import Testing

struct ToolError: Error, CustomStringConvertible {
    var description: String
}

enum DICOMTools {
    /// Which Debian package has each tool.
    static let packages = ["dump2dcm": "dcmtk", "dcmconv": "dcmtk", "dcmcjpeg": "dcmtk", "dcmdjpeg": "dcmtk", "dcmcjpls": "dcmtk",
                           "dcmdjpls": "dcmtk", "dcmcrle": "dcmtk", "dcmdrle": "dcmtk", "dcmdump": "dcmtk", "gdcmconv": "libgdcm-tools"]

    /// The tool's path, or a failure saying which package to install.
    static func path(_ tool: String) throws -> String {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") + ["/usr/bin"] {
            let p = "\(dir)/\(tool)"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        throw ToolError(description: "The DICOM tests need \(tool) from the Debian package \(packages[tool] ?? "?"), which is not installed; "
                            + "scripts/setup installs it (apt-get install \(packages[tool] ?? tool)).")
    }

    /// Runs a tool; a non-zero exit is an error with its output.
    @discardableResult
    static func run(_ tool: String, _ arguments: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try path(tool))
        p.arguments = arguments
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        guard p.terminationStatus == 0 else {
            throw ToolError(description: "\(tool) \(arguments.joined(separator: " ")) failed (status \(p.terminationStatus)): \(text)")
        }
        return text
    }
}

/// A monochrome image described for dump2dcm: attributes, and stored values written to a raw file.
struct TestImage {
    var rows = 48
    var columns = 64
    var frames = 3
    var bitsAllocated = 16
    var bitsStored = 16
    var signed = true
    var photometric = "MONOCHROME2"
    var modality = "CT"
    var sopClass = "=CTImageStorage"
    /// nil: the attribute is absent (identity Modality LUT).
    var slope: String? = "1"
    var intercept: String? = "-1024"
    var spacing = "0.75\\0.5"
    var thickness = "1.25"
    var position = "-100.5\\-120.25\\30"
    var orientation = "1\\0\\0\\0\\1\\0"
    var instanceNumber = "7"
    var sopInstance = "1.2.826.0.1.3680043.2.1125.7.1"
    var series = "1.2.826.0.1.3680043.2.1125.7.3"
    var study = "1.2.826.0.1.3680043.2.1125.7.2"
    /// frames × rows × columns stored values, frames in order, rows top to bottom.
    var stored: [Int] = []
    /// Lines added to the data set as they are (dcmdump syntax).
    var extra: [String] = []

    var pixelsPerFrame: Int { rows * columns }
    var range: ClosedRange<Int> {
        signed ? -(1 << (bitsStored - 1))...((1 << (bitsStored - 1)) - 1) : 0...((1 << bitsStored) - 1)
    }

    /// Stored values: a smooth ramp with a ripple, different per frame, spanning most of the range,
    /// plus (when `extremes`) the range's ends at the first pixels of frame 0.
    mutating func fill(extremes: Bool = true) {
        let r = range
        let span = Double(r.upperBound - r.lowerBound)
        stored = []
        for f in 0..<frames {
            for y in 0..<rows {
                for x in 0..<columns {
                    let t = (Double(x) / Double(columns - 1) * 0.6 + Double(y) / Double(rows - 1) * 0.3 + Double(f) * 0.03)
                    let ripple = 0.04 * sin(Double(x) * 0.7 + Double(y) * 0.3 + Double(f))
                    let v = Double(r.lowerBound) + span * min(0.999, max(0.001, 0.05 + t * 0.9 + ripple))
                    stored.append(Int(v.rounded()))
                }
            }
        }
        if extremes { stored[0] = r.lowerBound; stored[1] = r.upperBound }
    }

    /// The raw little-endian bytes of the stored values.
    var raw: [UInt8] {
        var out: [UInt8] = []
        for v in stored {
            let bits = UInt32(bitPattern: Int32(v)) & UInt32((1 << bitsAllocated) - 1)
            out.append(UInt8(bits & 0xFF))
            if bitsAllocated == 16 { out.append(UInt8(bits >> 8)) }
        }
        return out
    }

    /// The Modality-LUT values the stored values stand for (what the decoder must return).
    func expectedValues(_ stored: [Int]? = nil) -> [Float] {
        let s = Double(slope ?? "1")!, i = Double(intercept ?? "0")!
        return (stored ?? self.stored).map { Float(Double($0) * s + i) }
    }

    /// The dcmdump-syntax text dump2dcm reads.
    func dump(pixelFile: String) -> String {
        var lines = [
            "(0002,0010) UI =LittleEndianExplicit",
            "(0008,0016) UI \(sopClass)",
            "(0008,0018) UI [\(sopInstance)]",
            "(0008,0060) CS [\(modality)]",
            "(0018,0050) DS [\(thickness)]",
            "(0020,000d) UI [\(study)]",
            "(0020,000e) UI [\(series)]",
            "(0020,0013) IS [\(instanceNumber)]",
            "(0020,0032) DS [\(position)]",
            "(0020,0037) DS [\(orientation)]",
            "(0028,0002) US 1",
            "(0028,0004) CS [\(photometric)]",
        ]
        if frames > 1 { lines.append("(0028,0008) IS [\(frames)]") }
        lines += [
            "(0028,0010) US \(rows)",
            "(0028,0011) US \(columns)",
            "(0028,0030) DS [\(spacing)]",
            "(0028,0100) US \(bitsAllocated)",
            "(0028,0101) US \(bitsStored)",
            "(0028,0102) US \(bitsStored - 1)",
            "(0028,0103) US \(signed ? 1 : 0)",
        ]
        if let intercept { lines.append("(0028,1052) DS [\(intercept)]") }
        if let slope { lines.append("(0028,1053) DS [\(slope)]") }
        lines += extra
        lines.append("(7fe0,0010) \(bitsAllocated == 8 ? "OB" : "OW") =\(pixelFile)")
        // dump2dcm wants the data set in tag order.
        let meta = lines.filter { $0.hasPrefix("(0002") }
        let data = lines.filter { !$0.hasPrefix("(0002") }.sorted { $0.lowercased() < $1.lowercased() }
        return (meta + data).joined(separator: "\n") + "\n"
    }

    /// Writes the image as an Explicit VR Little Endian file with dump2dcm; returns its path.
    func write(in directory: String, name: String) throws -> String {
        let rawPath = directory + "/\(name).raw", dumpPath = directory + "/\(name).dump", out = directory + "/\(name).dcm"
        try writeFile(rawPath, raw)
        try dump(pixelFile: rawPath).write(toFile: dumpPath, atomically: true, encoding: .utf8)
        try DICOMTools.run("dump2dcm", [dumpPath, out])
        return out
    }
}

/// A transfer syntax and the tool command that writes it from an Explicit VR Little Endian file.
struct DICOMEncoding: CustomStringConvertible, Sendable {
    var name: String
    var uid: String
    var tool: String
    var arguments: [String]
    /// Lossy: the tool that decompresses it independently (dcmtk), or nil (compare with the original
    /// within `tolerance` stored units).
    var lossy = false
    var decompressor: String? = nil
    var tolerance = 0.0

    var description: String { name }

    /// Writes `input` in this encoding next to it.
    func encode(_ input: String) throws -> String {
        let out = input.replacingOccurrences(of: ".dcm", with: "-\(name).dcm")
        try DICOMTools.run(tool, arguments + [input, out])
        return out
    }

    static let explicitLE = DICOMEncoding(name: "explicit-le", uid: "1.2.840.10008.1.2.1", tool: "dcmconv", arguments: ["+te"])
    static let implicitLE = DICOMEncoding(name: "implicit-le", uid: "1.2.840.10008.1.2", tool: "dcmconv", arguments: ["+ti"])
    static let bigEndian = DICOMEncoding(name: "big-endian", uid: "1.2.840.10008.1.2.2", tool: "dcmconv", arguments: ["+tb"])
    static let deflated = DICOMEncoding(name: "deflated", uid: "1.2.840.10008.1.2.1.99", tool: "dcmconv", arguments: ["+td"])
    static let jpegBaseline = DICOMEncoding(name: "jpeg-baseline", uid: "1.2.840.10008.1.2.4.50", tool: "dcmcjpeg", arguments: ["+eb", "+q", "85"],
                                       lossy: true, decompressor: "dcmdjpeg", tolerance: 1)
    static let jpegExtended = DICOMEncoding(name: "jpeg-extended", uid: "1.2.840.10008.1.2.4.51", tool: "dcmcjpeg", arguments: ["+ee", "+q", "85"],
                                       lossy: true, decompressor: "dcmdjpeg", tolerance: 1)
    static let jpegLossless = DICOMEncoding(name: "jpeg-lossless", uid: "1.2.840.10008.1.2.4.57", tool: "dcmcjpeg", arguments: ["+el", "+sv", "6"])
    static let jpegLosslessSV1 = DICOMEncoding(name: "jpeg-lossless-sv1", uid: "1.2.840.10008.1.2.4.70", tool: "dcmcjpeg", arguments: ["+e1"])
    /// Several fragments per frame (1 KiB each) and a Basic Offset Table.
    static let jpegLosslessFragments = DICOMEncoding(name: "jpeg-lossless-fragments", uid: "1.2.840.10008.1.2.4.70", tool: "dcmcjpeg",
                                                arguments: ["+e1", "+fs", "1"])
    static let jpegLSLossless = DICOMEncoding(name: "jpeg-ls", uid: "1.2.840.10008.1.2.4.80", tool: "dcmcjpls", arguments: ["+el"])
    static let jpegLSNear = DICOMEncoding(name: "jpeg-ls-near", uid: "1.2.840.10008.1.2.4.81", tool: "dcmcjpls", arguments: ["+en", "+md", "3"],
                                     lossy: true, decompressor: "dcmdjpls", tolerance: 0)
    static let rle = DICOMEncoding(name: "rle", uid: "1.2.840.10008.1.2.5", tool: "dcmcrle", arguments: [])
    static let j2kLossless = DICOMEncoding(name: "j2k", uid: "1.2.840.10008.1.2.4.90", tool: "gdcmconv", arguments: ["--quiet", "--j2k"])
    /// GDCM's lossy JPEG 2000 at quality 80; no independent decoder here, so: the original within
    /// 2 % of the stored range per pixel, 0.25 % on average (see DICOMTests.swift).
    static let j2kLossy = DICOMEncoding(name: "j2k-lossy", uid: "1.2.840.10008.1.2.4.91", tool: "gdcmconv", arguments: ["--quiet", "--j2k", "--lossy", "-q", "80"],
                                   lossy: true)
    /// Second encoders (GDCM's) for JPEG-LS and RLE.
    static let gdcmJPEGLS = DICOMEncoding(name: "gdcm-jpeg-ls", uid: "1.2.840.10008.1.2.4.80", tool: "gdcmconv", arguments: ["--quiet", "--jpegls"])
    static let gdcmRLE = DICOMEncoding(name: "gdcm-rle", uid: "1.2.840.10008.1.2.5", tool: "gdcmconv", arguments: ["--quiet", "--rle"])
}

/// The stored values dcmtk decodes from a file: decompressed by `decompressor` (if any), then the
/// pixel data dumped with `dcmdump +W` (little endian), read as the image's sample type.
func dcmtkStoredValues(_ file: String, decompressor: String?, image: TestImage, directory: String) throws -> [Int] {
    var plain = file
    if let decompressor {
        plain = file.replacingOccurrences(of: ".dcm", with: "-dcmtk.dcm")
        try DICOMTools.run(decompressor, [file, plain])
    }
    let dumpDir = directory + "/dump-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dumpDir, withIntermediateDirectories: false)
    defer { removeTree(dumpDir) }
    try DICOMTools.run("dcmdump", ["+W", dumpDir, plain])
    let raws = try FileManager.default.contentsOfDirectory(atPath: dumpDir).filter { $0.hasSuffix(".raw") }
    guard raws.count == 1 else { throw ToolError(description: "dcmdump +W wrote \(raws) for \(plain)") }
    let bytes = try readFile(dumpDir + "/" + raws[0])
    let n = image.frames * image.pixelsPerFrame
    guard bytes.count >= n * image.bitsAllocated / 8 else { throw ToolError(description: "dcmdump +W wrote \(bytes.count) bytes for \(n) samples") }
    let mask = (1 << image.bitsStored) - 1
    return (0..<n).map { i in
        var v = image.bitsAllocated == 16 ? Int(bytes[2 * i]) | Int(bytes[2 * i + 1]) << 8 : Int(bytes[i])
        v &= mask
        if image.signed && v >= 1 << (image.bitsStored - 1) { v -= 1 << image.bitsStored }
        return v
    }
}

/// The transfer syntax UID dcmdump reports for a file.
func transferSyntaxOf(_ file: String) throws -> String {
    let text = try DICOMTools.run("dcmdump", ["-M", "+P", "0002,0010", "-Un", file])
    guard let open = text.firstIndex(of: "["), let close = text.firstIndex(of: "]") else { throw ToolError(description: "no transfer syntax in \(text)") }
    return String(text[text.index(after: open)..<close])
}

/// The value of the first fragment item of encapsulated pixel data: (offset, length) in the file.
func firstFragment(_ bytes: [UInt8]) -> (offset: Int, length: Int)? {
    // (7FE0,0010) OB, undefined length, then the offset table item, then the first fragment.
    let header: [UInt8] = [0xE0, 0x7F, 0x10, 0x00, 0x4F, 0x42, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]
    guard bytes.count > header.count, let at = (0...(bytes.count - header.count)).last(where: { Array(bytes[$0..<($0 + header.count)]) == header }) else {
        return nil
    }
    var p = at + header.count
    func item() -> (Int, Int)? {
        guard p + 8 <= bytes.count, bytes[p] == 0xFE, bytes[p + 1] == 0xFF, bytes[p + 2] == 0x00, bytes[p + 3] == 0xE0 else { return nil }
        let n = Int(bytes[p + 4]) | Int(bytes[p + 5]) << 8 | Int(bytes[p + 6]) << 16 | Int(bytes[p + 7]) << 24
        defer { p += 8 + n }
        return (p + 8, n)
    }
    guard item() != nil, let f = item() else { return nil }
    return (f.0, f.1)
}

/// RescaleSlope and RescaleIntercept as dcmdump reads them from a file (nil: absent).
func rescaleOf(_ file: String) throws -> (slope: Double?, intercept: Double?) {
    let text = try DICOMTools.run("dcmdump", ["-M", "+P", "0028,1053", "+P", "0028,1052", file])
    func value(_ tag: String) -> Double? {
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("(\(tag))") }),
              let open = line.firstIndex(of: "["), let close = line.firstIndex(of: "]") else { return nil }
        return Double(line[line.index(after: open)..<close].trimmingCharacters(in: .whitespaces))
    }
    return (value("0028,1053"), value("0028,1052"))
}
