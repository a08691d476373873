import Foundation
import PluginHost
import Testing

/// A gradient test card: value at (x, y) in 0…255.
private func card(width: Int, height: Int) -> [UInt8] {
    (0..<(width * height)).map { i in UInt8(((i % width) * 255 / max(1, width - 1) + (i / width) * 2) % 256) }
}

@Suite("JPEG decoder")
struct JPEGDecoderTests {
    @Test func decodesGrayAndColour() throws {
        let jpeg = try sharedRegistry.decoder(id: "jpeg")
        let w = 40, h = 24
        let gray = card(width: w, height: h)
        let file = try encodeJPEG(gray, width: w, height: h, quality: 98)
        #expect(jpeg.probe(file) == 100)
        let g = try jpeg.geometry(file)
        #expect(g.width == w && g.height == h && g.channels == 1 && g.bits == 8)
        let decoded = try sharedRegistry.decodeImage(file)
        #expect(decoded.decoder == "jpeg 1.0.0")
        #expect(decoded.image.width == w && decoded.image.height == h)
        let maxError = zip(decoded.image.pixels, gray).map { abs($0 * 255 - Float($1)) }.max()!
        #expect(maxError <= 6, "JPEG q98 should stay within a few levels, got \(maxError)")
        // RGB: libjpeg's gray is the BT.601 luma, like PIL's convert("L").
        let rgb = (0..<(w * h)).flatMap { _ in [UInt8(200), UInt8(100), UInt8(50)] }
        let colour = try jpeg.decode(try encodeJPEG(rgb, width: w, height: h, channels: 3, quality: 98))
        #expect(colour.geometry.channels == 3)
        let luma: Float = 0.299 * 200 + 0.587 * 100 + 0.114 * 50
        #expect(colour.image.pixels.allSatisfy { abs($0 * 255 - luma) <= 3 })
    }

    @Test func damagedFilesAreErrorsNotImages() throws {
        let jpeg = try sharedRegistry.decoder(id: "jpeg")
        let w = 64, h = 64
        let file = try encodeJPEG(card(width: w, height: h), width: w, height: h, quality: 90)
        var cases: [(String, [UInt8])] = [
            ("empty", []),
            ("SOI only", [0xFF, 0xD8, 0xFF]),
            ("header cut", Array(file.prefix(40))),
            ("cut in the scan", Array(file.prefix(file.count * 2 / 3))),
            ("no EOI and half the scan", Array(file.prefix(file.count / 2))),
            ("garbage after SOI", [0xFF, 0xD8, 0xFF] + (0..<200).map { UInt8(($0 * 37 + 11) % 256) }),
        ]
        // Data precision 0 in the SOF0 segment.
        var badPrecision = file
        if let sof = (0..<(file.count - 1)).first(where: { file[$0] == 0xFF && file[$0 + 1] == 0xC0 }) {
            badPrecision[sof + 4] = 0
            cases.append(("SOF precision 0", badPrecision))
        }
        // A zero height.
        var zero = file
        if let sof = (0..<(file.count - 1)).first(where: { file[$0] == 0xFF && file[$0 + 1] == 0xC0 }) {
            zero[sof + 5] = 0; zero[sof + 6] = 0
            cases.append(("zero height", zero))
        }
        for (name, bytes) in cases {
            do {
                let image = try jpeg.decode(bytes)
                Issue.record("\(name): decoded a damaged file to \(image.image.width)×\(image.image.height)")
            } catch let e as PluginError {
                guard case .callFailed(let plugin, _, let code, let message) = e else { Issue.record("\(name): \(e)"); continue }
                #expect(plugin == "jpeg 1.0.0")
                #expect(code == -4 || code == -3, "\(name): \(e)")
                #expect(!message.isEmpty && e.description.hasSuffix("."), "\(name): \(e)")
            }
        }
        // Bytes that are no known format: the registry says so.
        #expect(throws: PluginError.self) { try sharedRegistry.decodeImage(Array("hello, world".utf8)) }
    }
}

/// Writes DICOM Part 10 files byte by byte (PS3.5 / PS3.10), independently of the decoder.
struct DICOMWriter {
    var explicit: Bool
    var transferSyntax: String

    static func le16(_ v: Int) -> [UInt8] { [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF)] }
    static func le32(_ v: UInt32) -> [UInt8] { [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF), UInt8((v >> 16) & 0xFF), UInt8(v >> 24)] }

    static func padded(_ value: [UInt8], _ vr: String) -> [UInt8] {
        value.count % 2 == 0 ? value : value + [vr == "UI" || vr == "OB" ? 0 : 0x20]
    }

    static func element(_ g: Int, _ e: Int, _ vr: String, _ value: [UInt8], explicit: Bool) -> [UInt8] {
        let v = padded(value, vr)
        var out = le16(g) + le16(e)
        if explicit {
            out += Array(vr.utf8)
            if ["OB", "OW", "SQ", "UN", "UT"].contains(vr) { out += [0, 0] + le32(UInt32(v.count)) } else { out += le16(v.count) }
        } else {
            out += le32(UInt32(v.count))
        }
        return out + v
    }

    func element(_ g: Int, _ e: Int, _ vr: String, _ value: [UInt8]) -> [UInt8] { Self.element(g, e, vr, value, explicit: explicit) }
    func text(_ g: Int, _ e: Int, _ vr: String, _ s: String) -> [UInt8] { element(g, e, vr, Array(s.utf8)) }
    func us(_ g: Int, _ e: Int, _ v: Int) -> [UInt8] { element(g, e, "US", Self.le16(v)) }

    /// A sequence of undefined length holding one item of undefined length (skipped by readers).
    func undefinedSequence() -> [UInt8] {
        var out = Self.le16(0x0008) + Self.le16(0x1140)
        out += explicit ? Array("SQ".utf8) + [0, 0] + Self.le32(0xFFFF_FFFF) : Self.le32(0xFFFF_FFFF)
        out += Self.le16(0xFFFE) + Self.le16(0xE000) + Self.le32(0xFFFF_FFFF)
        out += text(0x0008, 0x1150, "UI", "1.2.840.10008.5.1.4.1.1.2")
        out += Self.le16(0xFFFE) + Self.le16(0xE00D) + Self.le32(0)
        out += Self.le16(0xFFFE) + Self.le16(0xE0DD) + Self.le32(0)
        return out
    }

    /// A CT slice: 16-bit signed stored values, HU = stored + intercept.
    func file(rows: Int, columns: Int, stored: [Int16], intercept: String = "-1024", slope: String = "1",
              photometric: String = "MONOCHROME2") -> [UInt8] {
        var meta = Self.element(0x0002, 0x0001, "OB", [0, 1], explicit: true)
        meta += Self.element(0x0002, 0x0010, "UI", Array(transferSyntax.utf8), explicit: true)
        var out = [UInt8](repeating: 0, count: 128) + Array("DICM".utf8)
        out += Self.element(0x0002, 0x0000, "UL", Self.le32(UInt32(meta.count)), explicit: true) + meta
        out += text(0x0008, 0x0060, "CS", "CT")
        out += undefinedSequence()
        out += us(0x0028, 0x0002, 1)
        out += text(0x0028, 0x0004, "CS", photometric)
        out += us(0x0028, 0x0010, rows)
        out += us(0x0028, 0x0011, columns)
        out += text(0x0028, 0x0030, "DS", "0.75\\0.5")
        out += us(0x0028, 0x0100, 16)
        out += us(0x0028, 0x0101, 16)
        out += us(0x0028, 0x0103, 1)
        out += text(0x0028, 0x1052, "DS", intercept)
        out += text(0x0028, 0x1053, "DS", slope)
        out += element(0x7FE0, 0x0010, "OW", stored.flatMap { Self.le16(Int(UInt16(bitPattern: $0))) })
        return out
    }
}

@Suite("DICOM decoder")
struct DICOMDecoderTests {
    /// Stored values whose HU (intercept −1024) span the lung window: −1350 … 150 → 0 … 1.
    let stored: [Int16] = [-326, 0, 424, 1174, 1500, 3000]   // HU −1350, −1024, −600, 150, 476, 1976

    @Test(arguments: [false, true])
    func decodesUncompressedCT(explicit: Bool) throws {
        let dicom = try sharedRegistry.decoder(id: "dicom")
        let ts = explicit ? "1.2.840.10008.1.2.1" : "1.2.840.10008.1.2"
        let file = DICOMWriter(explicit: explicit, transferSyntax: ts).file(rows: 2, columns: 3, stored: stored)
        #expect(dicom.probe(file) == 100)
        let decoded = try sharedRegistry.decodeImage(file)
        #expect(decoded.decoder == "dicom 1.0.0")
        #expect(decoded.image.width == 3 && decoded.image.height == 2)
        #expect(decoded.geometry.pixelSpacingY == 0.75 && decoded.geometry.pixelSpacingX == 0.5)
        let expected: [Float] = [0, Float(326) / 1500, 0.5, 1, 1, 1]
        for (a, b) in zip(decoded.image.pixels, expected) { #expect(abs(a - b) < 1e-6) }
        // Another window (mediastinum: centre 40, width 400) and the slope.
        let soft = try dicom.decode(file, options: #"{"window_center": 40, "window_width": 400}"#)
        #expect(abs(soft.image.pixels[3] - Float((150.0 - (40 - 200)) / 400)) < 1e-6)
        let sloped = DICOMWriter(explicit: explicit, transferSyntax: ts).file(rows: 1, columns: 1, stored: [212], slope: "2")
        #expect(abs(try dicom.decode(sloped).image.pixels[0] - 0.5) < 1e-6)   // 2·212 − 1024 = −600 HU
        let inverted = DICOMWriter(explicit: explicit, transferSyntax: ts).file(rows: 1, columns: 1, stored: [0], photometric: "MONOCHROME1")
        #expect(abs(try dicom.decode(inverted).image.pixels[0] - (1 - Float(326) / 1500)) < 1e-6)
    }

    @Test func refusesCompressedAndDamagedFiles() throws {
        let dicom = try sharedRegistry.decoder(id: "dicom")
        for (uid, name) in [("1.2.840.10008.1.2.4.50", "JPEG Baseline (Process 1)"), ("1.2.840.10008.1.2.4.90", "JPEG 2000 Image Compression (Lossless Only)"),
                            ("1.2.840.10008.1.2.5", "RLE Lossless"), ("1.2.840.10008.1.2.2", "Explicit VR Big Endian")] {
            let file = DICOMWriter(explicit: true, transferSyntax: uid).file(rows: 2, columns: 3, stored: stored)
            do {
                _ = try dicom.decode(file)
                Issue.record("decoded a \(name) file")
            } catch let e as PluginError {
                guard case .callFailed(_, _, let code, let message) = e else { Issue.record("\(e)"); continue }
                #expect(code == -3)
                #expect(message.contains(name) && message.contains(uid), "\(message)")
            }
        }
        let good = DICOMWriter(explicit: true, transferSyntax: "1.2.840.10008.1.2.1").file(rows: 2, columns: 3, stored: stored)
        var badVR = good
        // The VR of (0008,0060) "CS" → "c1": not a VR.
        if let i = (132..<(good.count - 4)).first(where: { good[$0] == 0x08 && good[$0 + 1] == 0 && good[$0 + 2] == 0x60 && good[$0 + 3] == 0 }) {
            badVR[i + 4] = 0x63; badVR[i + 5] = 0x31
        }
        for (name, bytes) in [("truncated pixels", Array(good.dropLast(5))), ("truncated header", Array(good.prefix(200))),
                              ("no DICM", Array(good.prefix(128)) + [0, 0, 0, 0] + Array(good.dropFirst(132))),
                              ("bad VR", badVR)] {
            #expect(throws: PluginError.self, "\(name)") { try dicom.decode(bytes) }
        }
        #expect(throws: PluginError.self) { try dicom.decode(good, options: #"{"window_width": 0}"#) }
        #expect(throws: PluginError.self) { try dicom.decode(good, options: #"{"windowwidth": 300}"#) }
    }
}
