// `affinity-lab decode`: the decoder's view of a file as JSON, the Modality-LUT values as float32,
// and one named error line (exit 4) for files it cannot decode. The DICOM files are made here with
// dcmtk (dump2dcm, dcmcjpls, dcmcjpeg) from stored values this test chooses; the expected values are
// those stored values times the slope plus the intercept.

import Foundation
import Imaging
import Testing

/// dcmtk's tools for these tests; a missing one fails the test naming the package.
private func dcmtk(_ tool: String, _ arguments: [String]) throws {
    guard let path = ["/usr/bin", "/usr/local/bin"].map({ "\($0)/\(tool)" }).first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
        throw LabTestError("The decode tests need \(tool) from the Debian package dcmtk, which is not installed; scripts/setup installs it.")
    }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = arguments
    let out = Pipe()
    p.standardOutput = out
    p.standardError = out
    try p.run()
    let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    p.waitUntilExit()
    guard p.terminationStatus == 0 else { throw LabTestError("\(tool) failed: \(text)") }
}

/// A 3-frame 40×30 signed 16-bit CT (slope 2, intercept −1024) written by dump2dcm.
private func writeCT(in dir: String) throws -> (path: String, stored: [Int]) {
    let rows = 30, columns = 40, frames = 3
    var stored: [Int] = []
    for f in 0..<frames { for y in 0..<rows { for x in 0..<columns { stored.append((x * 37 + y * 23 + f * 301) % 1500 - 400) } } }
    var raw: [UInt8] = []
    for v in stored { let u = UInt16(bitPattern: Int16(v)); raw += [UInt8(u & 0xFF), UInt8(u >> 8)] }
    try Data(raw).write(to: URL(fileURLWithPath: dir + "/ct.raw"))
    let dump = """
    (0002,0010) UI =LittleEndianExplicit
    (0008,0016) UI =CTImageStorage
    (0008,0018) UI [1.2.826.0.1.3680043.2.1125.5.1]
    (0008,0060) CS [CT]
    (0018,0050) DS [2.5]
    (0020,000d) UI [1.2.826.0.1.3680043.2.1125.5.2]
    (0020,000e) UI [1.2.826.0.1.3680043.2.1125.5.3]
    (0020,0013) IS [12]
    (0020,0032) DS [-150\\-160.5\\-42.25]
    (0020,0037) DS [1\\0\\0\\0\\0.8\\-0.6]
    (0028,0002) US 1
    (0028,0004) CS [MONOCHROME2]
    (0028,0008) IS [\(frames)]
    (0028,0010) US \(rows)
    (0028,0011) US \(columns)
    (0028,0030) DS [0.7\\0.6]
    (0028,0100) US 16
    (0028,0101) US 16
    (0028,0102) US 15
    (0028,0103) US 1
    (0028,1052) DS [-1024]
    (0028,1053) DS [2]
    (7fe0,0010) OW =\(dir)/ct.raw

    """
    try dump.write(toFile: dir + "/ct.dump", atomically: true, encoding: .utf8)
    try dcmtk("dump2dcm", [dir + "/ct.dump", dir + "/ct.dcm"])
    return (dir + "/ct.dcm", stored)
}

private func floats(_ path: String) throws -> [Float] {
    let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    var out: [Float] = []
    for i in stride(from: 0, to: bytes.count - 3, by: 4) {
        let b0 = UInt32(bytes[i]), b1 = UInt32(bytes[i + 1]) << 8, b2 = UInt32(bytes[i + 2]) << 16, b3 = UInt32(bytes[i + 3]) << 24
        out.append(Float(bitPattern: b0 | b1 | b2 | b3))
    }
    return out
}

@Suite("affinity-lab decode")
struct LabDecodeTests {
    @Test func describesAJPEGLSCompressedMultiFrameCTAndWritesItsValues() throws {
        let dir = try Lab.temporaryDirectory("decode")
        defer { Lab.remove(dir) }
        let (plain, stored) = try writeCT(in: dir)
        try dcmtk("dcmcjpls", [plain, dir + "/ct-ls.dcm"])
        let r = try Lab.run(["decode", dir + "/ct-ls.dcm", "--json", "--values", dir + "/values.f32", "--plugin-dir", LabPlugins.folder])
        #expect(r.status == 0 && r.stderr.isEmpty, "\(r.stderr)")
        let o = try r.json()
        #expect(o["width"] as? Int == 40 && o["height"] as? Int == 30 && o["frames"] as? Int == 3, "\(o)")
        #expect(o["modality"] as? String == "CT" && o["photometric"] as? String == "MONOCHROME2", "\(o)")
        #expect(o["transfer_syntax"] as? String == "1.2.840.10008.1.2.4.80" && o["decoder"] as? String == "dicom 2.0.0", "\(o)")
        #expect(doubles(o["pixel_spacing"]) == [0.7, 0.6] && (o["slice_thickness"] as? NSNumber)?.doubleValue == 2.5, "\(o)")
        #expect(doubles(o["image_position"]) == [-150, -160.5, -42.25] && doubles(o["image_orientation"]) == [1, 0, 0, 0, 0.8, -0.6], "\(o)")
        #expect(doubles(o["window"]) == [-600, 1500] && (o["rescale_slope"] as? NSNumber)?.doubleValue == 2
            && (o["rescale_intercept"] as? NSNumber)?.doubleValue == -1024, "\(o)")
        #expect(o["instance_number"] as? Int == 12 && o["series_instance_uid"] as? String == "1.2.826.0.1.3680043.2.1125.5.3"
            && o["study_instance_uid"] as? String == "1.2.826.0.1.3680043.2.1125.5.2" && o["signed"] as? Bool == true, "\(o)")
        let values = try floats(dir + "/values.f32")
        #expect(values == stored.map { Float($0 * 2 - 1024) }, "the values are not stored · 2 − 1024")
        // Text output, another window, another frame's header.
        let text = try Lab.run(["decode", plain, "--window-center", "40", "--window-width", "400", "--frame", "2", "--plugin-dir", LabPlugins.folder])
        #expect(text.status == 0 && text.stdout.contains("window: 40, 400") && text.stdout.contains("transfer_syntax: 1.2.840.10008.1.2.1"),
                "\(text.stdout) \(text.stderr)")
    }

    @Test func pngThroughTheBuiltInReader() throws {
        let dir = try Lab.temporaryDirectory("decode-png")
        defer { Lab.remove(dir) }
        let samples: [UInt16] = (0..<(7 * 5)).map { UInt16($0 * 1000) }
        try PNG.write(try PixelImage(width: 7, height: 5, format: .gray, bitDepth: 16, samples: samples), to: dir + "/a.png")
        let r = try Lab.run(["decode", dir + "/a.png", "--json", "--values", dir + "/a.f32"])
        #expect(r.status == 0, "\(r.stderr)")
        let o = try r.json()
        #expect(o["decoder"] as? String == "png (built in)" && o["frames"] as? Int == 1 && o["bits"] as? Int == 16 && o["modality"] is NSNull, "\(o)")
        let values = try floats(dir + "/a.f32")
        #expect(values.count == samples.count && zip(values, samples).allSatisfy { abs($0 - Float($1)) < 0.01 }, "\(values)")
    }

    @Test func filesItCannotDecodeGiveOneNamedErrorLine() throws {
        let dir = try Lab.temporaryDirectory("decode-errors")
        defer { Lab.remove(dir) }
        let (plain, _) = try writeCT(in: dir)
        let sr = """
        (0002,0010) UI =LittleEndianExplicit
        (0008,0016) UI =BasicTextSRStorage
        (0008,0018) UI [1.2.826.0.1.3680043.2.1125.5.9]
        (0008,0060) CS [SR]
        (0040,a040) CS [CONTAINER]

        """
        try sr.write(toFile: dir + "/sr.dump", atomically: true, encoding: .utf8)
        try dcmtk("dump2dcm", [dir + "/sr.dump", dir + "/sr.dcm"])
        let bytes = try Data(contentsOf: URL(fileURLWithPath: plain))
        try bytes.prefix(bytes.count - 700).write(to: URL(fileURLWithPath: dir + "/cut.dcm"))
        try Data("hello".utf8).write(to: URL(fileURLWithPath: dir + "/hello.txt"))
        let cases: [(String, Int32, String, [String])] = [
            (dir + "/sr.dcm", 4, "unsupported-format", ["Basic Text SR", "not an image"]),
            (dir + "/cut.dcm", 4, "damaged-image", ["truncated"]),
            (dir + "/hello.txt", 4, "unknown-format", ["no loaded decoder plugin"]),
            (dir + "/missing.dcm", 3, "missing-file", ["does not exist"]),
        ]
        for (file, status, code, words) in cases {
            let r = try Lab.run(["decode", file, "--json", "--values", dir + "/v.f32", "--plugin-dir", LabPlugins.folder])
            let lines = r.stderr.split(separator: "\n")
            #expect(r.status == status && r.stdout.isEmpty && lines.count == 1, "\(file): \(r.status) \(r.stderr)")
            #expect(lines.first?.hasPrefix("affinity-lab: error [\(code)]: ") == true, "\(file): \(r.stderr)")
            for w in words { #expect(r.stderr.contains(w), "\(file): \(r.stderr) lacks \(w)") }
        }
        #expect(!FileManager.default.fileExists(atPath: dir + "/v.f32"))
    }

    /// Damaged JPEG data, byte by byte through the whole command: a result or exit 4 with one
    /// named line, never a signal.
    @Test func damagedJPEGFragmentsNeverCrashTheCommand() throws {
        let dir = try Lab.temporaryDirectory("decode-fuzz")
        defer { Lab.remove(dir) }
        let (plain, _) = try writeCT(in: dir)
        try dcmtk("dcmcjpeg", ["+e1", plain, dir + "/ct-jpeg.dcm"])
        let good = try Data(contentsOf: URL(fileURLWithPath: dir + "/ct-jpeg.dcm"))
        let start = max(900, good.count - 2400)   // the last frames' JPEG data
        for (k, i) in stride(from: start, to: good.count, by: 61).enumerated() {
            var bytes = good
            bytes[i] ^= k % 2 == 0 ? 0xFF : 0x10
            try bytes.write(to: URL(fileURLWithPath: dir + "/bad.dcm"))
            let r = try Lab.run(["decode", dir + "/bad.dcm", "--json", "--values", dir + "/bad.f32", "--plugin-dir", LabPlugins.folder])
            #expect(r.status == 0 || (r.status == 4 && r.stderr.hasPrefix("affinity-lab: error [")), "byte \(i): status \(r.status) \(r.stderr)")
        }
    }
}
