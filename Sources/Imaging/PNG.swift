import CPNG
import SystemIO

/// Limits a PNG read enforces before it allocates pixel memory.
public struct PNGReadOptions: Sendable, Equatable {
    /// Largest accepted width and height, in pixels (default 8192).
    public var maxDimension: Int
    /// Largest accepted file, in bytes (default 256 MiB), checked before a file is read.
    public var maxFileBytes: Int
    /// Largest decoded image, in bytes of samples as libpng delivers them (width × height ×
    /// channels × 1 or 2; default 256 MiB: an 8192² RGBA 8-bit or gray 16-bit image), checked from
    /// the header before any pixel memory is allocated.
    public var maxDecodedBytes: Int

    /// Limits with the given values.
    public init(maxDimension: Int = 8192, maxFileBytes: Int = 256 << 20, maxDecodedBytes: Int = 256 << 20) {
        self.maxDimension = maxDimension
        self.maxFileBytes = maxFileBytes
        self.maxDecodedBytes = maxDecodedBytes
    }
}

/// The fields of a PNG's IHDR chunk, as stored in the file (before any expansion).
public struct PNGHeader: Sendable, Equatable {
    /// PNG colour types (IHDR byte 9).
    public enum ColorType: UInt8, Sendable {
        case gray = 0, rgb = 2, palette = 3, grayAlpha = 4, rgba = 6
    }

    /// Columns.
    public let width: Int
    /// Rows.
    public let height: Int
    /// Bits per sample (or per palette index): 1, 2, 4, 8 or 16.
    public let bitDepth: Int
    /// Colour type; `nil` when the byte is not a valid PNG colour type (libpng then rejects the file).
    public let colorType: ColorType?
    /// Whether the image is Adam7-interlaced.
    public let interlaced: Bool
}

/// PNG reading and writing through libpng.
///
/// Reading accepts every PNG colour type and bit depth (1/2/4/8/16-bit gray, gray+alpha, RGB, RGBA,
/// palette; interlaced or not) and returns a `PixelImage` of 8- or 16-bit samples (16-bit kept at
/// full precision). Before libpng sees the data, the signature and IHDR (its CRC included) are
/// checked here, so a zero or over-limit size is reported without allocating pixel memory. All
/// libpng errors are caught in C (see `Sources/CPNG/shim.h`) and come back as `ImageError`; a
/// failed read never returns a partial image.
public enum PNG {
    /// The 8-byte signature every PNG file starts with.
    public static let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

    // MARK: Reading

    /// Reads and decodes the PNG file at `path`.
    /// - Throws: `ImageError` (`.io` when the file cannot be read, `.fileTooLarge`, and every decode
    ///   error of `decode(_:options:)`).
    public static func read(path: String, options: PNGReadOptions = PNGReadOptions()) throws -> PixelImage {
        let bytes = try mappingFileErrors { try AtomicFile.read(path: path, limit: options.maxFileBytes) }
        return try decode(bytes, options: options)
    }

    /// Reads and decodes the PNG held by a descriptor (a regular file or memfd is read from offset
    /// 0 without moving its offset; a pipe is read to its end). The descriptor stays open.
    /// - Throws: `ImageError` as `read(path:options:)`.
    public static func read(fileDescriptor fd: Int32, options: PNGReadOptions = PNGReadOptions()) throws -> PixelImage {
        let bytes = try mappingFileErrors { try AtomicFile.read(fileDescriptor: fd, limit: options.maxFileBytes) }
        return try decode(bytes, options: options)
    }

    /// Decodes a PNG held in memory.
    /// - Throws: `ImageError.notPNG`, `.truncated`, `.corrupt(reason)` (CRC errors, bad zlib data,
    ///   invalid header fields), `.zeroSize`, `.tooLarge`, `.unsupported`.
    public static func decode(_ bytes: [UInt8], options: PNGReadOptions = PNGReadOptions()) throws -> PixelImage {
        try bytes.withUnsafeBytes { try decode(buffer: $0, options: options) }
    }

    /// Decodes a PNG held in a raw buffer (see `decode(_:options:)`).
    /// - Throws: `ImageError` as `decode(_:options:)`.
    public static func decode(buffer: UnsafeRawBufferPointer, options: PNGReadOptions = PNGReadOptions()) throws -> PixelImage {
        let header = try self.header(of: buffer)
        guard header.width <= options.maxDimension, header.height <= options.maxDimension else {
            throw ImageError.tooLarge(width: header.width, height: header.height, limit: options.maxDimension)
        }
        try checkInflation(header, buffer: buffer, options: options)
        let reader = UnsafeMutablePointer<la_png_reader>.allocate(capacity: 1)
        reader.initialize(to: la_png_reader())
        defer {
            la_png_read_destroy(reader)
            reader.deinitialize(count: 1)
            reader.deallocate()
        }
        reader.pointee.data = buffer.baseAddress?.assumingMemoryBound(to: UInt8.self)
        reader.pointee.size = buffer.count

        let limit = png_uint_32(clamping: max(options.maxDimension, 1))
        var width: png_uint_32 = 0, height: png_uint_32 = 0
        var fileDepth: Int32 = 0, colorType: Int32 = 0, interlace: Int32 = 0
        guard la_png_read_header(reader, limit, limit, &width, &height, &fileDepth, &colorType, &interlace) == 0 else {
            throw readError(reader)
        }
        var channels: Int32 = 0, depth: Int32 = 0, rowbytes = 0
        guard la_png_read_configure(reader, &channels, &depth, &rowbytes) == 0 else { throw readError(reader) }
        let w = Int(width), h = Int(height)
        guard let format = PixelFormat(rawValue: Int(channels)), depth == 8 || depth == 16,
              rowbytes == w * Int(channels) * Int(depth) / 8 else {
            throw ImageError.unsupported("libpng produced \(channels) channels of \(depth) bits, \(rowbytes) bytes per row")
        }
        let sampleCount = w * h * Int(channels)
        var failed = false
        let samples: [UInt16]
        if depth == 16 {
            // libpng writes host-order 16-bit samples (png_set_swap on little-endian hosts).
            samples = [UInt16](unsafeUninitializedCapacity: sampleCount) { out, count in
                out.baseAddress!.withMemoryRebound(to: UInt8.self, capacity: sampleCount * 2) { raw in
                    failed = la_png_read_image(reader, raw, rowbytes, height) != 0
                }
                count = failed ? 0 : sampleCount
            }
        } else {
            var raw = [UInt8](repeating: 0, count: sampleCount)
            failed = raw.withUnsafeMutableBufferPointer { la_png_read_image(reader, $0.baseAddress!, rowbytes, height) != 0 }
            samples = failed ? [] : [UInt16](unsafeUninitializedCapacity: sampleCount) { out, count in
                raw.withUnsafeBufferPointer { src in
                    for i in 0..<sampleCount { out[i] = UInt16(src[i]) }
                }
                count = sampleCount
            }
        }
        if failed { throw readError(reader) }
        return PixelImage(unchecked: w, height: h, format: format, bitDepth: Int(depth), samples: samples)
    }

    /// Checks the signature and the IHDR chunk (length, type, CRC, non-zero size) and returns its fields.
    /// - Throws: `ImageError.notPNG`, `.truncated`, `.corrupt`, `.zeroSize`.
    public static func header(of bytes: [UInt8]) throws -> PNGHeader {
        try bytes.withUnsafeBytes { try header(of: $0) }
    }

    /// Checks the signature and the IHDR chunk of a raw buffer (see `header(of:)`).
    /// - Throws: `ImageError.notPNG`, `.truncated`, `.corrupt`, `.zeroSize`.
    public static func header(of buffer: UnsafeRawBufferPointer) throws -> PNGHeader {
        let n = buffer.count
        let prefix = min(n, 8)
        for i in 0..<prefix where buffer[i] != signature[i] { throw ImageError.notPNG }
        if n == 0 { throw ImageError.notPNG }
        // Signature (8) + IHDR length (4) + type (4) + 13 data bytes + CRC (4).
        guard n >= 33 else { throw ImageError.truncated }
        func be32(_ at: Int) -> UInt32 {
            UInt32(buffer[at]) << 24 | UInt32(buffer[at + 1]) << 16 | UInt32(buffer[at + 2]) << 8 | UInt32(buffer[at + 3])
        }
        let isIHDR = buffer[12] == 0x49 && buffer[13] == 0x48 && buffer[14] == 0x44 && buffer[15] == 0x52
        guard be32(8) == 13, isIHDR else { throw ImageError.corrupt("the first chunk is not a 13-byte IHDR") }
        let crc = CRC32.checksum(UnsafeRawBufferPointer(rebasing: buffer[12..<29]))
        guard crc == be32(29) else { throw ImageError.corrupt("CRC error in the IHDR chunk") }
        let width = be32(16), height = be32(20)
        guard width != 0, height != 0 else { throw ImageError.zeroSize }
        guard width <= 0x7FFF_FFFF, height <= 0x7FFF_FFFF else {
            throw ImageError.corrupt("IHDR size \(width)×\(height) exceeds the PNG maximum of 2^31−1")
        }
        return PNGHeader(width: Int(width), height: Int(height), bitDepth: Int(buffer[24]),
                         colorType: PNGHeader.ColorType(rawValue: buffer[25]), interlaced: buffer[28] == 1)
    }

    /// The largest expansion of a zlib (deflate) stream, RFC 1951: a 258-byte match costs at least
    /// two bits, so the data inflates at most 1032-fold.
    static let deflateRatio = 1032

    /// Refuses, before any pixel memory is allocated, an image that would decode to more than
    /// `options.maxDecodedBytes`, and one whose compressed data (the IDAT chunks) is too short to
    /// hold its pixels even at deflate's best ratio: a truncated or forged file that names a large
    /// size, for which libpng would otherwise have the whole image allocated before it found the
    /// data missing (a few hundred bytes making the process allocate half a gigabyte).
    /// - Throws: `ImageError.decodedTooLarge`, `.truncated`, `.corrupt`.
    static func checkInflation(_ header: PNGHeader, buffer: UnsafeRawBufferPointer, options: PNGReadOptions) throws {
        // What libpng delivers: palette → RGB, < 8 bits → 8 (a tRNS chunk adds an alpha channel).
        guard let colorType = header.colorType else { return }  // libpng refuses the file
        let depth = header.bitDepth == 16 ? 2 : 1
        let channels: Int, fileChannels: Int
        switch colorType {
        case .gray: channels = 1; fileChannels = 1
        case .grayAlpha: channels = 2; fileChannels = 2
        case .rgb: channels = 3; fileChannels = 3
        case .palette: channels = 3; fileChannels = 1
        case .rgba: channels = 4; fileChannels = 4
        }
        let limit = options.maxDecodedBytes
        let (pixels, o1) = header.width.multipliedReportingOverflow(by: header.height)
        let (decoded, o2) = pixels.multipliedReportingOverflow(by: channels * depth)
        guard !o1, !o2, decoded <= limit else { throw ImageError.decodedTooLarge(bytes: o1 || o2 ? Int.max : decoded, limit: limit) }
        // The zlib stream inflates to at least height × (1 + ⌈width · samples · bits / 8⌉) bytes
        // (the filtered rows; Adam7 has more filter bytes, never fewer pixel bytes).
        let rowBits = header.width.multipliedReportingOverflow(by: fileChannels * max(header.bitDepth, 1))
        guard !rowBits.overflow else { throw ImageError.decodedTooLarge(bytes: Int.max, limit: limit) }
        let filtered = header.height.multipliedReportingOverflow(by: 1 + (rowBits.partialValue + 7) / 8)
        guard !filtered.overflow else { throw ImageError.decodedTooLarge(bytes: Int.max, limit: limit) }
        // The IDAT chunks' lengths, as far as the buffer holds them.
        var compressed = 0, at = 8, complete = false
        while at + 8 <= buffer.count {
            let length = Int(UInt32(buffer[at]) << 24 | UInt32(buffer[at + 1]) << 16 | UInt32(buffer[at + 2]) << 8 | UInt32(buffer[at + 3]))
            let isIDAT = buffer[at + 4] == 0x49 && buffer[at + 5] == 0x44 && buffer[at + 6] == 0x41 && buffer[at + 7] == 0x54
            let available = min(length, buffer.count - at - 8)
            if isIDAT { compressed += available }
            if buffer[at + 4] == 0x49 && buffer[at + 5] == 0x45 && buffer[at + 6] == 0x4E && buffer[at + 7] == 0x44 { complete = true; break }  // IEND
            guard length <= buffer.count - at - 8 else { break }
            at += 12 + length
        }
        // The zlib header (2 bytes) and Adler-32 (4) hold no data; deflate's blocks at least 3 bits.
        let capacity = compressed.multipliedReportingOverflow(by: deflateRatio)
        if !capacity.overflow, filtered.partialValue > capacity.partialValue + deflateRatio {
            if !complete { throw ImageError.truncated }  // the file ends before its IEND chunk
            throw ImageError.corrupt("\(compressed) bytes of compressed data cannot hold a \(header.width)×\(header.height) image "
                                     + "(\(filtered.partialValue) bytes; zlib expands at most \(deflateRatio):1), so the data is cut short or forged")
        }
    }

    private static func readError(_ reader: UnsafeMutablePointer<la_png_reader>) -> ImageError {
        if reader.pointee.hit_end != 0 { return .truncated }
        let message = String(cString: la_png_reader_message(reader))
        if message.lowercased().contains("unknown critical chunk") { return .unsupported(message) }
        return .corrupt(message.isEmpty ? "libpng reported an error" : message)
    }

    // MARK: Writing

    /// Encodes an image as PNG bytes. Any `PixelFormat` at 8 or 16 bits is written as the matching
    /// PNG colour type (gray, gray+alpha, RGB, RGBA).
    /// - Parameters:
    ///   - interlaced: write Adam7-interlaced (larger; mostly for tests).
    ///   - compressionLevel: zlib level 0 (none) … 9 (smallest), default 6.
    /// - Throws: `ImageError.invalidArgument` for a bad compression level, `.corrupt` if libpng
    ///   refuses the data (not expected for a valid `PixelImage`).
    public static func encode(_ image: PixelImage, interlaced: Bool = false, compressionLevel: Int = 6) throws -> [UInt8] {
        guard (0...9).contains(compressionLevel) else {
            throw ImageError.invalidArgument("zlib compression level must be 0…9, got \(compressionLevel)")
        }
        let colorType: Int32
        switch image.format {
        case .gray: colorType = PNG_COLOR_TYPE_GRAY
        case .grayAlpha: colorType = PNG_COLOR_TYPE_GRAY_ALPHA
        case .rgb: colorType = PNG_COLOR_TYPE_RGB
        case .rgba: colorType = PNG_COLOR_TYPE_RGB_ALPHA
        }
        let writer = UnsafeMutablePointer<la_png_writer>.allocate(capacity: 1)
        writer.initialize(to: la_png_writer())
        defer {
            la_png_write_free(writer)
            writer.deinitialize(count: 1)
            writer.deallocate()
        }
        let rowbytes = image.width * image.channels * image.bitDepth / 8
        let status: Int32
        if image.bitDepth == 16 {
            status = image.samples.withUnsafeBytes { raw in
                la_png_write(writer, raw.baseAddress!.assumingMemoryBound(to: UInt8.self), rowbytes,
                             png_uint_32(image.width), png_uint_32(image.height), 16, colorType,
                             interlaced ? 1 : 0, Int32(compressionLevel))
            }
        } else {
            let bytes = image.bytes
            status = bytes.withUnsafeBufferPointer { raw in
                la_png_write(writer, raw.baseAddress!, rowbytes, png_uint_32(image.width), png_uint_32(image.height),
                             8, colorType, interlaced ? 1 : 0, Int32(compressionLevel))
            }
        }
        guard status == 0 else {
            throw ImageError.corrupt("libpng could not encode the image: \(String(cString: la_png_writer_message(writer)))")
        }
        return Array(UnsafeBufferPointer(start: writer.pointee.data, count: writer.pointee.size))
    }

    /// Encodes an image and writes it to `path` atomically (temporary file in the same directory,
    /// fsync, rename): the path holds the old file or the complete new one, never a partial PNG.
    /// - Throws: `ImageError` from `encode` and `AtomicFile.write` (`.io`).
    public static func write(_ image: PixelImage, to path: String, interlaced: Bool = false, compressionLevel: Int = 6) throws {
        let bytes = try encode(image, interlaced: interlaced, compressionLevel: compressionLevel)
        try mappingFileErrors { try AtomicFile.write(bytes, to: path) }
    }

    /// Encodes an image and writes it to a descriptor at its current offset (e.g. a memfd that is
    /// sealed afterwards). The descriptor stays open.
    /// - Throws: `ImageError` from `encode`, `.io` when a write fails.
    public static func write(_ image: PixelImage, toFileDescriptor fd: Int32, interlaced: Bool = false, compressionLevel: Int = 6) throws {
        let bytes = try encode(image, interlaced: interlaced, compressionLevel: compressionLevel)
        try mappingFileErrors { try bytes.withUnsafeBytes { try AtomicFile.writeAll(fd: fd, buffer: $0, path: "file descriptor \(fd)") } }
    }
}

/// CRC-32 (ISO-HDLC, polynomial 0xEDB88320) as PNG chunks use it.
enum CRC32 {
    static let table: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    /// The CRC of a byte range.
    static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        table.withUnsafeBufferPointer { t in
            for b in bytes { c = t[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        }
        return c ^ 0xFFFF_FFFF
    }
}
