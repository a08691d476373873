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

// The DICOM decoder's tests are in DICOMTests.swift (files made by dcmtk and gdcmconv).
