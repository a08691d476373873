import Foundation
import Imaging

/// Builds PNG files byte by byte, independently of libpng: stored (uncompressed) deflate blocks,
/// our own CRC-32 and Adler-32. Used to make every colour type / bit depth and to damage files.
enum RawPNG {
    static let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

    static let crcTable: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func crc32<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes { c = crcTable[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }

    static func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }

    static func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
        let typeBytes = Array(type.utf8)
        return be32(UInt32(data.count)) + typeBytes + data + be32(crc32(typeBytes + data))
    }

    /// A zlib stream of stored blocks.
    static func zlibStored(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0x78, 0x01]
        var offset = 0
        repeat {
            let n = min(65535, data.count - offset)
            let final: UInt8 = offset + n == data.count ? 1 : 0
            out.append(final)
            out += [UInt8(n & 0xFF), UInt8(n >> 8), UInt8(~n & 0xFF), UInt8((~n >> 8) & 0xFF)]
            out += data[offset..<offset + n]
            offset += n
        } while offset < data.count
        var a: UInt32 = 1, b: UInt32 = 0
        for byte in data {
            a = (a + UInt32(byte)) % 65521
            b = (b + a) % 65521
        }
        return out + be32(b << 16 | a)
    }

    /// A complete PNG. `rows` are the packed scanlines without filter bytes.
    static func file(width: Int, height: Int, bitDepth: Int, colorType: UInt8, rows: [[UInt8]],
                     palette: [UInt8]? = nil, transparency: [UInt8]? = nil) -> [UInt8] {
        var ihdr = be32(UInt32(width)) + be32(UInt32(height))
        ihdr += [UInt8(bitDepth), colorType, 0, 0, 0]
        var raw: [UInt8] = []
        for row in rows { raw += [0] + row }
        var out = signature + chunk("IHDR", ihdr)
        if let palette { out += chunk("PLTE", palette) }
        if let transparency { out += chunk("tRNS", transparency) }
        out += chunk("IDAT", zlibStored(raw))
        out += chunk("IEND", [])
        return out
    }

    /// Packs sample values of `bitDepth` < 8 MSB-first into bytes.
    static func pack(_ values: [Int], bitDepth: Int) -> [UInt8] {
        var out: [UInt8] = []
        var current = 0, used = 0
        for v in values {
            current = current << bitDepth | v
            used += bitDepth
            if used == 8 {
                out.append(UInt8(current))
                current = 0
                used = 0
            }
        }
        if used > 0 { out.append(UInt8(current << (8 - used))) }
        return out
    }

    /// Offsets of the chunks of a PNG: (type, offset of the length field, data length).
    static func chunks(_ bytes: [UInt8]) -> [(type: String, offset: Int, length: Int)] {
        var result: [(String, Int, Int)] = []
        var offset = 8
        while offset + 12 <= bytes.count {
            let length = Int(bytes[offset]) << 24 | Int(bytes[offset + 1]) << 16 | Int(bytes[offset + 2]) << 8 | Int(bytes[offset + 3])
            let type = String(decoding: bytes[offset + 4..<offset + 8], as: UTF8.self)
            result.append((type, offset, length))
            offset += 12 + length
        }
        return result
    }

    /// Recomputes the CRC of the chunk whose length field starts at `offset`.
    static func fixCRC(_ bytes: inout [UInt8], chunkAt offset: Int) {
        let length = Int(bytes[offset]) << 24 | Int(bytes[offset + 1]) << 16 | Int(bytes[offset + 2]) << 8 | Int(bytes[offset + 3])
        let crc = be32(crc32(bytes[offset + 4..<offset + 8 + length]))
        bytes.replaceSubrange(offset + 8 + length..<offset + 12 + length, with: crc)
    }
}

/// A fresh temporary directory, removed by `cleanup()`.
struct TemporaryDirectory {
    let path: String

    init() throws {
        var template = Array((NSTemporaryDirectory() + "/imaging-tests-XXXXXX").utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw ImageError.io(path: NSTemporaryDirectory(), message: "mkdtemp failed")
        }
        path = String(cString: made)
    }

    func cleanup() {
        try? FileManager.default.removeItem(atPath: path)
    }
}

/// `/work/shared` (or wherever `shared/` sits beside the repository), from this file's path.
func sharedDirectory(file: String = #filePath) -> String {
    var components = file.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
    components.removeLast(3)  // Helpers.swift, ImagingTests, Tests
    return components.joined(separator: "/") + "/../shared"
}

/// A deterministic test image: gray gradient with some structure, 8-bit values.
func testPattern(width: Int, height: Int, channels: Int, maxValue: Int) -> [UInt16] {
    var out: [UInt16] = []
    out.reserveCapacity(width * height * channels)
    for y in 0..<height {
        for x in 0..<width {
            for c in 0..<channels {
                let v = (x * 37 + y * 91 + c * 53 + (x * y) % 17) % (maxValue + 1)
                out.append(UInt16(v))
            }
        }
    }
    return out
}

/// 8-connected components of `mask != 0` (sizes, in scan order of their first pixel).
func componentSizes(_ mask: [Bool], width: Int, height: Int) -> [Int] {
    var seen = [Bool](repeating: false, count: mask.count)
    var sizes: [Int] = []
    var stack: [Int] = []
    for start in 0..<mask.count where mask[start] && !seen[start] {
        seen[start] = true
        stack.append(start)
        var size = 0
        while let i = stack.popLast() {
            size += 1
            let x = i % width, y = i / width
            for ny in max(0, y - 1)...min(height - 1, y + 1) {
                for nx in max(0, x - 1)...min(width - 1, x + 1) {
                    let j = ny * width + nx
                    if mask[j] && !seen[j] {
                        seen[j] = true
                        stack.append(j)
                    }
                }
            }
        }
        sizes.append(size)
    }
    return sizes
}
