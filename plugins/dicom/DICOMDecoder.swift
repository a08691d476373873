// dicom — image decoder for uncompressed CT DICOM (PS3.5), pure Swift.
//
// Reads a Part 10 file (128-byte preamble, "DICM", the explicit-VR-little-endian meta group) whose
// transfer syntax is Implicit VR Little Endian (1.2.840.10008.1.2) or Explicit VR Little Endian
// (1.2.840.10008.1.2.1); every other transfer syntax (big endian, deflate, the JPEG, JPEG-LS,
// JPEG 2000 and RLE families) is refused with an error naming it, and so is encapsulated pixel data.
// Sequences of undefined length are skipped item by item. The first frame of a monochrome image of 8
// or 16 allocated bits (signed or unsigned, any bits stored) is decoded as
//   HU = stored · RescaleSlope + RescaleIntercept             (0028,1053) / (0028,1052), default 1 / 0
//   out = clamp((HU − (centre − width/2)) / width, 0, 1)      the window
// inverted for MONOCHROME1. Options (JSON): "window_center" (default −600 HU) and "window_width"
// (default 1500 HU): the lung window.
import AffinityPluginSupport
import CAffinityPlugin
import Foundation

private let implicitLE = "1.2.840.10008.1.2"
private let explicitLE = "1.2.840.10008.1.2.1"

/// Names of the transfer syntaxes this decoder refuses (PS3.6 Annex A).
private let refusedSyntaxes: [String: String] = [
    "1.2.840.10008.1.2.2": "Explicit VR Big Endian",
    "1.2.840.10008.1.2.1.99": "Deflated Explicit VR Little Endian",
    "1.2.840.10008.1.2.4.50": "JPEG Baseline (Process 1)",
    "1.2.840.10008.1.2.4.51": "JPEG Extended (Process 2 & 4)",
    "1.2.840.10008.1.2.4.57": "JPEG Lossless, Non-Hierarchical (Process 14)",
    "1.2.840.10008.1.2.4.70": "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])",
    "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless Image Compression",
    "1.2.840.10008.1.2.4.81": "JPEG-LS Lossy (Near-Lossless) Image Compression",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 Image Compression (Lossless Only)",
    "1.2.840.10008.1.2.4.91": "JPEG 2000 Image Compression",
    "1.2.840.10008.1.2.4.201": "High-Throughput JPEG 2000 Image Compression (Lossless Only)",
    "1.2.840.10008.1.2.4.203": "High-Throughput JPEG 2000 Image Compression",
    "1.2.840.10008.1.2.5": "RLE Lossless",
]

/// VRs whose explicit encoding has 2 reserved bytes and a 4-byte length.
private let longVRs: Set<String> = ["OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"]

private struct DICOMError: Error {
    let code: Int32
    let message: String
}

private let undefinedLength: UInt32 = 0xFFFF_FFFF

/// "(GGGG,EEEE)" in upper-case hex.
private func tagText(_ tag: UInt32) -> String {
    func hex4(_ v: UInt32) -> String {
        let s = String(v, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, 4 - s.count)) + s
    }
    return "(\(hex4(tag >> 16)),\(hex4(tag & 0xFFFF)))"
}

/// What the header says about the image, and where its pixels are.
private struct DICOMImage {
    var transferSyntax = ""
    var rows = 0, columns = 0
    var samplesPerPixel = 1
    var bitsAllocated = 16, bitsStored = 0, pixelRepresentation = 0
    var photometric = "MONOCHROME2"
    var slope = 1.0, intercept = 0.0
    var spacingRow = 0.0, spacingColumn = 0.0
    var pixelOffset = -1, pixelLength = 0
}

private struct Parser {
    let bytes: UnsafeBufferPointer<UInt8>
    var pos = 0
    var explicit = true

    init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    func truncated() -> DICOMError {
        DICOMError(code: AFFINITY_E_CORRUPT, message: "The DICOM data ends early (at byte \(pos) of \(bytes.count)); the file is truncated.")
    }

    mutating func u16() throws -> UInt16 {
        guard pos + 2 <= bytes.count else { throw truncated() }
        defer { pos += 2 }
        return UInt16(bytes[pos]) | UInt16(bytes[pos + 1]) << 8
    }

    mutating func u32() throws -> UInt32 {
        guard pos + 4 <= bytes.count else { throw truncated() }
        defer { pos += 4 }
        return UInt32(bytes[pos]) | UInt32(bytes[pos + 1]) << 8 | UInt32(bytes[pos + 2]) << 16 | UInt32(bytes[pos + 3]) << 24
    }

    /// One element header: tag, VR ("" when implicit or an item tag), value length, value offset.
    mutating func element() throws -> (tag: UInt32, vr: String, length: UInt32) {
        let group = try u16(), elem = try u16()
        let tag = UInt32(group) << 16 | UInt32(elem)
        if group == 0xFFFE { return (tag, "", try u32()) }   // items and delimiters: never a VR
        if explicit || group == 0x0002 {
            guard pos + 2 <= bytes.count else { throw truncated() }
            let vr = String(decoding: [bytes[pos], bytes[pos + 1]], as: UTF8.self)
            pos += 2
            guard vr.utf8.allSatisfy({ $0 >= 0x41 && $0 <= 0x5A }) else {
                throw DICOMError(code: AFFINITY_E_CORRUPT, message: "The DICOM element \(tagText(tag)) has the invalid VR \"\(vr)\"; the file is damaged or its transfer syntax is wrong.")
            }
            if longVRs.contains(vr) {
                pos += 2
                return (tag, vr, try u32())
            }
            return (tag, vr, UInt32(try u16()))
        }
        return (tag, "", try u32())
    }

    mutating func skip(_ length: UInt32) throws {
        guard length != undefinedLength else { return }
        guard pos + Int(length) <= bytes.count else { pos = bytes.count; throw truncated() }
        pos += Int(length)
    }

    /// Skips the items of a sequence of undefined length, up to and including its delimiter.
    mutating func skipSequence(depth: Int) throws {
        guard depth < 32 else { throw DICOMError(code: AFFINITY_E_CORRUPT, message: "The DICOM sequences nest more than 32 deep; the file is damaged.") }
        while true {
            let (tag, _, length) = try element()
            if tag == 0xFFFE_E0DD { return }                   // sequence delimitation
            guard tag == 0xFFFE_E000 else {
                throw DICOMError(code: AFFINITY_E_CORRUPT, message: "Expected a sequence item, found the tag \(tagText(tag)); the file is damaged.")
            }
            if length != undefinedLength { try skip(length); continue }
            while true {                                      // an item of undefined length
                let (inner, _, innerLength) = try element()
                if inner == 0xFFFE_E00D { break }              // item delimitation
                if innerLength == undefinedLength { try skipSequence(depth: depth + 1) } else { try skip(innerLength) }
            }
        }
    }

    func text(_ length: UInt32) -> String {
        let end = min(bytes.count, pos + Int(length))
        return String(decoding: bytes[pos..<end], as: UTF8.self).trimmingCharacters(in: CharacterSet(charactersIn: " \0"))
    }

    func us(_ length: UInt32) throws -> Int {
        guard length >= 2, pos + 2 <= bytes.count else { throw truncated() }
        return Int(UInt16(bytes[pos]) | UInt16(bytes[pos + 1]) << 8)
    }
}

private func parse(_ bytes: UnsafeBufferPointer<UInt8>) throws -> DICOMImage {
    guard bytes.count >= 132, bytes[128] == 0x44, bytes[129] == 0x49, bytes[130] == 0x43, bytes[131] == 0x4D else {
        throw DICOMError(code: AFFINITY_E_CORRUPT, message: "The data is not a DICOM Part 10 file (no \"DICM\" after the 128-byte preamble).")
    }
    var p = Parser(bytes)
    p.pos = 132
    var image = DICOMImage()
    // The meta group: always explicit VR little endian.
    while p.pos + 4 <= bytes.count, UInt16(bytes[p.pos]) | UInt16(bytes[p.pos + 1]) << 8 == 0x0002 {
        let (tag, _, length) = try p.element()
        guard length != undefinedLength else { throw DICOMError(code: AFFINITY_E_CORRUPT, message: "The DICOM meta group has an element of undefined length.") }
        if tag == 0x0002_0010 { image.transferSyntax = p.text(length) }
        try p.skip(length)
    }
    guard !image.transferSyntax.isEmpty else {
        throw DICOMError(code: AFFINITY_E_CORRUPT, message: "The DICOM file has no transfer syntax (0002,0010) in its meta group.")
    }
    switch image.transferSyntax {
    case implicitLE: p.explicit = false
    case explicitLE: p.explicit = true
    default:
        let name = refusedSyntaxes[image.transferSyntax].map { "\($0) (\(image.transferSyntax))" } ?? "the unknown transfer syntax \(image.transferSyntax)"
        throw DICOMError(code: AFFINITY_E_UNSUPPORTED,
                         message: "The DICOM file uses \(name); this decoder reads only uncompressed Implicit or Explicit VR Little Endian.")
    }
    while p.pos < bytes.count {
        let (tag, vr, length) = try p.element()
        if tag == 0x7FE0_0010 {
            if length == undefinedLength {
                throw DICOMError(code: AFFINITY_E_UNSUPPORTED, message: "The DICOM pixel data is encapsulated (compressed), which this decoder does not read.")
            }
            image.pixelOffset = p.pos
            image.pixelLength = Int(length)
            break
        }
        if length == undefinedLength {
            guard vr == "SQ" || vr == "" || vr == "UN" else {
                throw DICOMError(code: AFFINITY_E_CORRUPT, message: "The DICOM element \(tagText(tag)) has an undefined length; the file is damaged.")
            }
            try p.skipSequence(depth: 0)
            continue
        }
        guard p.pos + Int(length) <= bytes.count else { throw p.truncated() }
        switch tag {
        case 0x0028_0002: image.samplesPerPixel = try p.us(length)
        case 0x0028_0004: image.photometric = p.text(length)
        case 0x0028_0010: image.rows = try p.us(length)
        case 0x0028_0011: image.columns = try p.us(length)
        case 0x0028_0030:
            let parts = p.text(length).split(separator: "\\").map { Double($0.trimmingCharacters(in: .whitespaces)) }
            if parts.count == 2, let r = parts[0], let c = parts[1] { image.spacingRow = r; image.spacingColumn = c }
        case 0x0028_0100: image.bitsAllocated = try p.us(length)
        case 0x0028_0101: image.bitsStored = try p.us(length)
        case 0x0028_0103: image.pixelRepresentation = try p.us(length)
        case 0x0028_1052:
            guard let v = Double(p.text(length)) else { throw DICOMError(code: AFFINITY_E_CORRUPT, message: "The DICOM rescale intercept \"\(p.text(length))\" is not a number.") }
            image.intercept = v
        case 0x0028_1053:
            guard let v = Double(p.text(length)), v != 0 else { throw DICOMError(code: AFFINITY_E_CORRUPT, message: "The DICOM rescale slope \"\(p.text(length))\" is not a non-zero number.") }
            image.slope = v
        default: break
        }
        try p.skip(length)
    }
    guard image.pixelOffset >= 0 else { throw DICOMError(code: AFFINITY_E_CORRUPT, message: "The DICOM file has no pixel data (7FE0,0010).") }
    guard image.rows > 0, image.columns > 0 else {
        throw DICOMError(code: AFFINITY_E_CORRUPT, message: "The DICOM image has no rows (0028,0010) or columns (0028,0011).")
    }
    guard image.samplesPerPixel == 1, image.photometric == "MONOCHROME1" || image.photometric == "MONOCHROME2" else {
        throw DICOMError(code: AFFINITY_E_UNSUPPORTED, message: "The DICOM image is \(image.photometric) with \(image.samplesPerPixel) samples per pixel; this decoder reads monochrome CT only.")
    }
    guard image.bitsAllocated == 8 || image.bitsAllocated == 16 else {
        throw DICOMError(code: AFFINITY_E_UNSUPPORTED, message: "The DICOM image has \(image.bitsAllocated) bits allocated; this decoder reads 8 or 16.")
    }
    if image.bitsStored == 0 || image.bitsStored > image.bitsAllocated { image.bitsStored = image.bitsAllocated }
    let needed = image.rows * image.columns * image.bitsAllocated / 8
    guard image.pixelLength >= needed, image.pixelOffset + needed <= bytes.count else {
        throw DICOMError(code: AFFINITY_E_CORRUPT, message: "The DICOM pixel data holds \(min(image.pixelLength, bytes.count - image.pixelOffset)) bytes; a \(image.columns)×\(image.rows) image of \(image.bitsAllocated) bits needs \(needed). The file is truncated or damaged.")
    }
    return image
}

private func fillInfo(_ image: DICOMImage, _ out: UnsafeMutablePointer<affinity_image_info>?) {
    guard let out else { return }
    var v = affinity_image_info()
    v.struct_size = UInt32(MemoryLayout<affinity_image_info>.size)
    v.width = UInt32(image.columns)
    v.height = UInt32(image.rows)
    v.channels = UInt32(image.samplesPerPixel)
    v.bits = UInt32(image.bitsStored)
    v.pixel_spacing_x = image.spacingColumn
    v.pixel_spacing_y = image.spacingRow
    let hostSize = Int(out.pointee.struct_size)
    let n = hostSize > 0 && hostSize < MemoryLayout<affinity_image_info>.size ? hostSize : MemoryLayout<affinity_image_info>.size
    v.struct_size = UInt32(n)
    withUnsafeBytes(of: &v) { UnsafeMutableRawPointer(out).copyMemory(from: $0.baseAddress!, byteCount: n) }
}

private let probe: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32 = { bytes, length in
    guard let bytes, length >= 132 else { return 0 }
    return bytes[128] == 0x44 && bytes[129] == 0x49 && bytes[130] == 0x43 && bytes[131] == 0x4D ? 100 : 0
}

private let info: @convention(c) (UnsafePointer<UInt8>?, Int, UnsafePointer<CChar>?, UnsafeMutablePointer<affinity_image_info>?,
                                  UnsafeMutablePointer<affinity_error>?) -> Int32 = { bytes, length, _, out, errorOut in
    guard let bytes, out != nil else { return fail(errorOut, AFFINITY_E_INVALID_ARGUMENT, "dicom: info() needs bytes and an output struct.") }
    do {
        fillInfo(try parse(UnsafeBufferPointer(start: bytes, count: length)), out)
        return AFFINITY_OK
    } catch let e as DICOMError {
        return fail(errorOut, e.code, e.message)
    } catch {
        return fail(errorOut, AFFINITY_E_FAILED, "The DICOM file cannot be read.")
    }
}

private let decode: @convention(c) (UnsafePointer<UInt8>?, Int, UnsafePointer<CChar>?, UnsafeMutablePointer<Float>?, Int,
                                    UnsafeMutablePointer<affinity_image_info>?, UnsafeMutablePointer<affinity_error>?) -> Int32 = {
    bytes, length, optionsJSON, pixels, capacity, out, errorOut in
    guard let bytes, let pixels else { return fail(errorOut, AFFINITY_E_INVALID_ARGUMENT, "dicom: decode() needs bytes and a pixel buffer.") }
    let centre: Double, width: Double
    do {
        let options = try parseOptions(optionsJSON)
        try checkKeys(options, allowed: ["window_center", "window_width"], plugin: "dicom")
        centre = try numberOption(options, "window_center", -600)
        width = try numberOption(options, "window_width", 1500)
    } catch let e as OptionsError {
        return fail(errorOut, AFFINITY_E_INVALID_ARGUMENT, e.message)
    } catch {
        return fail(errorOut, AFFINITY_E_INVALID_ARGUMENT, "The options cannot be read.")
    }
    guard width > 0, width.isFinite, centre.isFinite else {
        return fail(errorOut, AFFINITY_E_INVALID_ARGUMENT, "The window width must be positive and the centre finite, got centre \(centre), width \(width).")
    }
    do {
        let buffer = UnsafeBufferPointer(start: bytes, count: length)
        let image = try parse(buffer)
        let n = image.rows * image.columns
        guard capacity >= n else {
            return fail(errorOut, AFFINITY_E_TOO_LARGE, "The host's buffer holds \(capacity) pixels; the DICOM image needs \(n).")
        }
        let low = centre - width / 2
        let invert = image.photometric == "MONOCHROME1"
        let signed = image.pixelRepresentation == 1
        let storedMask = image.bitsStored >= 32 ? UInt32.max : (UInt32(1) << UInt32(image.bitsStored)) - 1
        let signBit = UInt32(1) << UInt32(image.bitsStored - 1)
        let base = image.pixelOffset
        for i in 0..<n {
            var raw: UInt32
            if image.bitsAllocated == 16 {
                raw = UInt32(buffer[base + 2 * i]) | UInt32(buffer[base + 2 * i + 1]) << 8
            } else {
                raw = UInt32(buffer[base + i])
            }
            raw &= storedMask
            let stored = signed && raw & signBit != 0 ? Int(raw) - Int(storedMask) - 1 : Int(raw)
            let hu = Double(stored) * image.slope + image.intercept
            var v = (hu - low) / width
            v = v < 0 ? 0 : (v > 1 ? 1 : v)
            pixels[i] = Float(invert ? 1 - v : v)
        }
        fillInfo(image, out)
        return AFFINITY_OK
    } catch let e as DICOMError {
        return fail(errorOut, e.code, e.message)
    } catch {
        return fail(errorOut, AFFINITY_E_FAILED, "The DICOM file cannot be read.")
    }
}

private let decoderTable: UnsafePointer<affinity_image_decoder> = {
    let t = UnsafeMutablePointer<affinity_image_decoder>.allocate(capacity: 1)
    t.initialize(to: affinity_image_decoder(struct_size: UInt32(MemoryLayout<affinity_image_decoder>.size), reserved: 0,
                                            probe: probe, info: info, decode: decode))
    return UnsafePointer(t)
}()

private let descriptor = makeDescriptor(
    id: "dicom", version: "1.0.0",
    description: "Image decoder: uncompressed CT DICOM (implicit/explicit VR little endian), rescaled to HU, lung window.",
    kind: AFFINITY_KIND_IMAGE_DECODER, decoder: decoderTable)

@_cdecl("affinity_plugin_entry")
public func affinityPluginEntry(_ hostABIVersion: UInt32) -> UnsafePointer<affinity_plugin>? { descriptor }
