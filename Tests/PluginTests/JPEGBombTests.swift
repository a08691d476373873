// A JPEG decompression bomb (issue 16): a 600-byte progressive JPEG whose frame header names
// 10000×10000 pixels makes libjpeg keep every DCT coefficient of the image (300 MB) until its last
// scan; the jpeg plugin caps libjpeg's memory, so the file is refused as too large before it is
// allocated, and an ordinary file of the same kind still decodes.
import Foundation
import PluginHost
import Testing

@Suite("JPEG decompression bombs")
struct JPEGBombTests {
    /// A small progressive colour JPEG (Fuzz/corpus/jpeg/progressive.jpg, made by
    /// Fuzz/decoders/make_jpeg_seeds.c; its first byte is the fuzz target's mode byte).
    static func progressive() throws -> [UInt8] {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return Array(try Data(contentsOf: root.appendingPathComponent("Fuzz/corpus/jpeg/progressive.jpg")).dropFirst())
    }

    /// The file with its SOF2 frame header's size replaced.
    static func resized(_ bytes: [UInt8], width: UInt16, height: UInt16) -> [UInt8] {
        var b = bytes
        for i in 0..<(b.count - 9) where b[i] == 0xFF && b[i + 1] == 0xC2 {
            b[i + 5] = UInt8(height >> 8); b[i + 6] = UInt8(height & 0xFF)
            b[i + 7] = UInt8(width >> 8); b[i + 8] = UInt8(width & 0xFF)
            break
        }
        return b
    }

    @Test func aProgressiveJPEGNamingAHugeImageIsRefusedAsTooLarge() throws {
        let jpeg = try sharedRegistry.decoder(id: "jpeg")
        let file = try Self.progressive()
        #expect(try jpeg.decode(file).image.width == 16)
        let bomb = Self.resized(file, width: 10000, height: 10000)
        #expect(bomb.count < 1000)
        let start = Date()
        do {
            _ = try jpeg.decode(bomb)
            Issue.record("a 10000×10000 progressive JPEG of \(bomb.count) bytes decoded")
        } catch let PluginError.callFailed(_, operation, code, message) {
            #expect(operation == "decode" && code == -7, "\(code): \(message)")  // AFFINITY_E_TOO_LARGE
            #expect(message.contains("needs more than"), "\(message)")
        }
        #expect(Date().timeIntervalSince(start) < 5)
    }
}
