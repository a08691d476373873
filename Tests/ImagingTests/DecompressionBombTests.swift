// Decompression bombs (issue 16): a small PNG that names a huge image is refused from its header,
// before libpng has any pixel memory allocated — by the decoded-size limit, and, for a file whose
// compressed data could not hold the image even at zlib's best ratio (1032:1), as damaged.
import Foundation
import Imaging
import Testing

@Suite("PNG decompression bombs")
struct DecompressionBombTests {
    static func be(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)] }
    static func crc(_ data: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in data { c ^= UInt32(b); for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 } }
        return c ^ 0xFFFF_FFFF
    }
    static func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
        let body = Array(type.utf8) + data
        return be(UInt32(data.count)) + body + be(crc(body))
    }
    /// Signature, IHDR (width, height, depth, colour type), one IDAT of `idat` bytes, IEND.
    static func png(width: UInt32, height: UInt32, depth: UInt8, colour: UInt8, idat: [UInt8]) -> [UInt8] {
        PNG.signature + chunk("IHDR", be(width) + be(height) + [depth, colour, 0, 0, 0]) + chunk("IDAT", idat) + chunk("IEND", [])
    }

    @Test func aFileThatCannotHoldItsImageIsRefusedFromItsHeader() throws {
        // 8192×8192 RGBA 16-bit: 512 MiB of pixels from 250 bytes.
        let bomb = Self.png(width: 8192, height: 8192, depth: 16, colour: 6, idat: [0x78, 0x9C] + [UInt8](repeating: 0, count: 200))
        let start = Date()
        #expect(throws: ImageError.self) { try PNG.decode(bomb, options: PNGReadOptions(maxDecodedBytes: 1 << 30)) }
        do { _ = try PNG.decode(bomb, options: PNGReadOptions(maxDecodedBytes: 1 << 30)) } catch let e as ImageError {
            guard case .corrupt(let why) = e else { Issue.record("expected .corrupt, got \(e)"); return }
            #expect(why.contains("cannot hold") && why.contains("8192×8192"), "\(why)")
        }
        #expect(Date().timeIntervalSince(start) < 2, "refused from the header, not after inflating")
        // The same file cut before its IEND is truncated, as before.
        #expect(throws: ImageError.truncated) { try PNG.decode(Array(bomb.dropLast(12)), options: PNGReadOptions(maxDecodedBytes: 1 << 30)) }
    }

    @Test func aRealBombIsRefusedByTheDecodedSizeLimit() throws {
        // A genuine PNG of 2048×2048 16-bit zeros: 8 MiB of pixels in a few kilobytes.
        let image = try PixelImage(width: 2048, height: 2048, format: .gray, bitDepth: 16, samples: [UInt16](repeating: 0, count: 2048 * 2048))
        let bytes = try PNG.encode(image, compressionLevel: 9)
        #expect(bytes.count < 64 << 10)
        #expect(throws: ImageError.decodedTooLarge(bytes: 8 << 20, limit: 4 << 20)) {
            try PNG.decode(bytes, options: PNGReadOptions(maxDecodedBytes: 4 << 20))
        }
        #expect(try PNG.decode(bytes, options: PNGReadOptions(maxDecodedBytes: 8 << 20)) == image)
        // The default limit (256 MiB) refuses 8192² RGBA 16-bit (512 MiB) from the header alone.
        let header = Self.png(width: 8192, height: 8192, depth: 16, colour: 6, idat: [])
        #expect(throws: ImageError.decodedTooLarge(bytes: 512 << 20, limit: 256 << 20)) { try PNG.decode(header) }
        #expect(ImageError.decodedTooLarge(bytes: 1, limit: 0).description.hasSuffix("."))
    }
}
