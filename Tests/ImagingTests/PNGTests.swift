import Foundation
import Imaging
import SystemIO
import Testing

@Suite("PNG reading and writing")
struct PNGTests {
    // MARK: Round trips through libpng

    @Test("encode → decode returns the same samples", arguments: [
        (PixelFormat.gray, 8), (.gray, 16), (.grayAlpha, 8), (.grayAlpha, 16), (.rgb, 8), (.rgb, 16), (.rgba, 8), (.rgba, 16),
    ])
    func roundTrip(format: PixelFormat, bitDepth: Int) throws {
        let maxValue = bitDepth == 16 ? 65535 : 255
        let samples = testPattern(width: 37, height: 23, channels: format.channels, maxValue: maxValue).map {
            bitDepth == 16 ? UInt16((Int($0) * 257 + 11) % 65536) : $0
        }
        let image = try PixelImage(width: 37, height: 23, format: format, bitDepth: bitDepth, samples: samples)
        for interlaced in [false, true] {
            let bytes = try PNG.encode(image, interlaced: interlaced)
            let header = try PNG.header(of: bytes)
            #expect(header.width == 37 && header.height == 23 && header.bitDepth == bitDepth)
            #expect(header.interlaced == interlaced)
            let decoded = try PNG.decode(bytes)
            #expect(decoded == image)
        }
    }

    @Test("16-bit samples keep full precision")
    func sixteenBitPrecision() throws {
        let values: [UInt16] = [0, 1, 255, 256, 257, 32767, 32768, 65534, 65535, 12345, 54321, 4660]
        let image = try PixelImage(gray16: values, width: 4, height: 3)
        let decoded = try PNG.decode(PNG.encode(image))
        #expect(decoded.bitDepth == 16)
        #expect(decoded.samples == values)
        let rgb = decoded.rgbImage()
        #expect(rgb.planes[0] == 0)
        #expect(rgb.planes[1] == Float(1) / 65535)
        #expect(rgb.planes[8] == 1)
        #expect(rgb.planes[12 + 3] == Float(256) / 65535)  // green plane equals gray
    }

    @Test("the hand-built and libpng paths agree on an interlaced file")
    func interlacedMatchesProgressive() throws {
        let image = try PixelImage(bytes: testPattern(width: 19, height: 13, channels: 3, maxValue: 255).map { UInt8($0) },
                                   width: 19, height: 13, format: .rgb)
        let a = try PNG.decode(PNG.encode(image, interlaced: true))
        let b = try PNG.decode(PNG.encode(image, interlaced: false))
        #expect(a == b)
        #expect(a == image)
    }

    // MARK: Every colour type and bit depth, built without libpng

    @Test("1/2/4-bit gray expands to 0…255 like PIL", arguments: [1, 2, 4])
    func lowBitGray(bitDepth: Int) throws {
        let width = 11, height = 3, levels = 1 << bitDepth
        var rows: [[UInt8]] = []
        var values: [Int] = []
        for y in 0..<height {
            let row = (0..<width).map { (x: Int) in (x + y) % levels }
            values += row
            rows.append(RawPNG.pack(row, bitDepth: bitDepth))
        }
        let image = try PNG.decode(RawPNG.file(width: width, height: height, bitDepth: bitDepth, colorType: 0, rows: rows))
        #expect(image.format == .gray && image.bitDepth == 8)
        let scale = 255 / (levels - 1)
        #expect(image.samples == values.map { UInt16($0 * scale) })
        let rgb = image.rgbImage()
        #expect(rgb.planes[1] == Float(scale) / 255)
    }

    @Test("8-bit palette, with and without tRNS")
    func palette() throws {
        let palette: [UInt8] = [10, 20, 30, 200, 100, 50, 0, 255, 128, 255, 255, 255]
        let indices = [0, 1, 2, 3, 3, 2, 1, 0]
        let rows = [indices.map(UInt8.init)]
        let opaque = try PNG.decode(RawPNG.file(width: 8, height: 1, bitDepth: 8, colorType: 3, rows: rows, palette: palette))
        #expect(opaque.format == .rgb)
        #expect(opaque.samples == indices.flatMap { i in (0..<3).map { UInt16(palette[3 * i + $0]) } })
        let clear = try PNG.decode(RawPNG.file(width: 8, height: 1, bitDepth: 8, colorType: 3, rows: rows, palette: palette,
                                               transparency: [0, 128]))
        #expect(clear.format == .rgba)
        #expect(clear.sample(x: 0, y: 0, channel: 3) == 0)
        #expect(clear.sample(x: 1, y: 0, channel: 3) == 128)
        #expect(clear.sample(x: 2, y: 0, channel: 3) == 255)
        // convert('RGB') drops alpha without compositing.
        let rgb = clear.rgbImage()
        #expect(rgb.planes[0] == 10 / 255 && rgb.planes[8] == 20 / 255 && rgb.planes[16] == 30 / 255)
    }

    @Test("2-bit palette")
    func lowBitPalette() throws {
        let palette: [UInt8] = [0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255]
        let indices = [3, 2, 1, 0, 1]
        let file = RawPNG.file(width: 5, height: 1, bitDepth: 2, colorType: 3, rows: [RawPNG.pack(indices, bitDepth: 2)],
                               palette: palette)
        let image = try PNG.decode(file)
        #expect(image.samples == indices.flatMap { i in (0..<3).map { UInt16(palette[3 * i + $0]) } })
    }

    @Test("gray+alpha, RGB, RGBA at 8 and 16 bits from raw bytes")
    func rawColourTypes() throws {
        // 16-bit RGB: big-endian samples.
        let rgb16: [UInt16] = [0x0102, 0xFFFE, 0x8000, 0x0001, 0x7FFF, 0xABCD]
        let row = rgb16.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] }
        let image = try PNG.decode(RawPNG.file(width: 2, height: 1, bitDepth: 16, colorType: 2, rows: [row]))
        #expect(image.format == .rgb && image.bitDepth == 16 && image.samples == rgb16)

        let ga = try PNG.decode(RawPNG.file(width: 2, height: 1, bitDepth: 8, colorType: 4, rows: [[7, 200, 9, 100]]))
        #expect(ga.format == .grayAlpha && ga.samples == [7, 200, 9, 100])
        let a: Float = 7 / 255, b: Float = 9 / 255
        #expect(ga.grayImage().pixels == [a, b])
        #expect(ga.rgbImage().planes == [a, b, a, b, a, b])

        let rgba = try PNG.decode(RawPNG.file(width: 1, height: 2, bitDepth: 8, colorType: 6, rows: [[1, 2, 3, 4], [250, 251, 252, 0]]))
        #expect(rgba.format == .rgba && rgba.samples == [1, 2, 3, 4, 250, 251, 252, 0])
        let expected: [Float] = [1, 250, 2, 251, 3, 252].map { Float($0) / 255 }
        #expect(rgba.rgbImage().planes == expected)
    }

    @Test("gray of colour uses the ITU-R 601 luma weights")
    func lumaGray() throws {
        let image = try PixelImage(bytes: [255, 0, 0, 0, 255, 0, 0, 0, 255, 100, 100, 100], width: 4, height: 1, format: .rgb)
        let gray = image.grayImage().pixels
        #expect(abs(gray[0] - 0.299) < 1e-6 && abs(gray[1] - 0.587) < 1e-6 && abs(gray[2] - 0.114) < 1e-6)
        #expect(abs(gray[3] - 100 / 255) < 1e-6)
    }

    // MARK: Sources: path, descriptor, pipe

    @Test("read from a path, a file descriptor (offset untouched) and a pipe")
    func sources() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanup() }
        let image = try PixelImage(bytes: (0..<(16 * 16)).map { UInt8($0 % 256) }, width: 16, height: 16, format: .gray)
        let path = directory.path + "/a.png"
        try PNG.write(image, to: path)
        #expect(try PNG.read(path: path) == image)

        let fd = Descriptors.open(path, O_RDONLY)
        #expect(fd >= 0)
        defer { Descriptors.close(fd) }
        _ = lseek(fd, 5, SEEK_SET)
        #expect(try PNG.read(fileDescriptor: fd) == image)
        #expect(lseek(fd, 0, SEEK_CUR) == 5)

        var ends: [Int32] = [0, 0]
        #expect(pipe(&ends) == 0)
        Descriptors.adopt(ends[0])
        Descriptors.adopt(ends[1])
        let bytes = try PNG.encode(image)
        #expect(bytes.count < 4096)  // fits in the pipe buffer
        try PNG.write(image, toFileDescriptor: ends[1])
        Descriptors.close(ends[1])
        defer { Descriptors.close(ends[0]) }
        #expect(try PNG.read(fileDescriptor: ends[0]) == image)
    }

    @Test("a missing file is an io error naming the path")
    func missingFile() throws {
        #expect(throws: ImageError.self) { try PNG.read(path: "/nonexistent/dir/x.png") }
        do {
            _ = try PNG.read(path: "/nonexistent/dir/x.png")
        } catch let error as ImageError {
            guard case .io(let path, _) = error else {
                Issue.record("expected .io, got \(error)")
                return
            }
            #expect(path == "/nonexistent/dir/x.png")
            #expect(error.description.contains("/nonexistent/dir/x.png"))
        }
    }

    // MARK: Broken files

    func goodFile() throws -> [UInt8] {
        let image = try PixelImage(bytes: testPattern(width: 64, height: 48, channels: 1, maxValue: 255).map { UInt8($0) },
                                   width: 64, height: 48, format: .gray)
        return try PNG.encode(image, compressionLevel: 9)
    }

    func decodeError(_ bytes: [UInt8], options: PNGReadOptions = PNGReadOptions()) -> ImageError? {
        do {
            _ = try PNG.decode(bytes, options: options)
            return nil
        } catch let error as ImageError {
            return error
        } catch {
            return .corrupt("unexpected error type \(error)")
        }
    }

    @Test("not a PNG")
    func notPNG() throws {
        #expect(decodeError([]) == .notPNG)
        #expect(decodeError(Array("GIF89a and more bytes to make it long enough for a header".utf8)) == .notPNG)
        var bytes = try goodFile()
        bytes[1] ^= 0x20  // 'P' → 'p'
        #expect(decodeError(bytes) == .notPNG)
        #expect(ImageError.notPNG.description.hasSuffix("."))
    }

    @Test("truncated anywhere is .truncated")
    func truncated() throws {
        let bytes = try goodFile()
        let idat = RawPNG.chunks(bytes).first { $0.type == "IDAT" }!
        let cuts = [4, 8, 20, 32, 33 + 4, idat.offset + 6, idat.offset + 8 + idat.length / 2, bytes.count - 12, bytes.count - 1]
        for cut in cuts {
            #expect(decodeError(Array(bytes[0..<cut])) == .truncated, "cut at \(cut) of \(bytes.count)")
        }
        // The same through a real file on disk and its descriptor.
        let directory = try TemporaryDirectory()
        defer { directory.cleanup() }
        let path = directory.path + "/cut.png"
        try AtomicFile.write(Array(bytes[0..<(bytes.count / 2)]), to: path)
        #expect(throws: ImageError.truncated) { try PNG.read(path: path) }
        let fd = Descriptors.open(path, O_RDONLY)
        defer { Descriptors.close(fd) }
        #expect(throws: ImageError.truncated) { try PNG.read(fileDescriptor: fd) }
    }

    @Test("a flipped byte in the image data is .corrupt", arguments: [0, 1, 2, 3])
    func flippedByte(position: Int) throws {
        // libpng inflates IDAT data as it reads it and checks the CRC at the chunk's end, so the
        // reason is zlib's complaint or the CRC mismatch, whichever comes first.
        var bytes = try goodFile()
        let idat = RawPNG.chunks(bytes).first { $0.type == "IDAT" }!
        let offsets = [idat.offset + 8 + 2, idat.offset + 8 + idat.length / 2, idat.offset + 8 + idat.length - 2,
                       idat.offset + 8 + idat.length - 1]
        bytes[offsets[position]] ^= 0x55
        let error = decodeError(bytes)
        guard case .corrupt(let reason) = error else {
            Issue.record("expected .corrupt, got \(String(describing: error))")
            return
        }
        #expect(!reason.isEmpty)
    }

    @Test("damaged zlib data with a correct CRC is still caught")
    func badDeflateWithGoodCRC() throws {
        var bytes = try goodFile()
        let idat = RawPNG.chunks(bytes).first { $0.type == "IDAT" }!
        for k in 0..<8 { bytes[idat.offset + 8 + 2 + k * 7] ^= 0xFF }
        RawPNG.fixCRC(&bytes, chunkAt: idat.offset)
        guard case .corrupt = decodeError(bytes) else {
            Issue.record("expected .corrupt, got \(String(describing: decodeError(bytes)))")
            return
        }
    }

    @Test("CRC damage in IDAT, IEND and IHDR")
    func crcDamage() throws {
        let good = try goodFile()
        for chunk in RawPNG.chunks(good) where ["IHDR", "IDAT", "IEND"].contains(chunk.type) {
            var bytes = good
            bytes[chunk.offset + 8 + chunk.length] ^= 0x01  // first CRC byte
            guard case .corrupt(let reason) = decodeError(bytes) else {
                Issue.record("\(chunk.type): expected .corrupt, got \(String(describing: decodeError(bytes)))")
                continue
            }
            #expect(reason.lowercased().contains("crc"), "\(chunk.type): \(reason)")
        }
    }

    @Test("IHDR width 100000 with a correct CRC is .tooLarge, checked before allocation")
    func tooLarge() throws {
        var bytes = try goodFile()
        bytes.replaceSubrange(16..<20, with: RawPNG.be32(100_000))
        RawPNG.fixCRC(&bytes, chunkAt: 8)
        #expect(decodeError(bytes) == .tooLarge(width: 100_000, height: 48, limit: 8192))
        #expect(ImageError.tooLarge(width: 100_000, height: 48, limit: 8192).description.contains("100000×48"))
        // The limit is configurable, and applies to each side.
        let good = try goodFile()
        #expect(decodeError(good, options: PNGReadOptions(maxDimension: 50)) == .tooLarge(width: 64, height: 48, limit: 50))
        #expect(decodeError(good, options: PNGReadOptions(maxDimension: 64)) == nil)
        // A height of 2^31 − 1 with a valid CRC: rejected from the header, no allocation attempted.
        var tall = good
        tall.replaceSubrange(20..<24, with: RawPNG.be32(0x7FFF_FFFF))
        RawPNG.fixCRC(&tall, chunkAt: 8)
        #expect(decodeError(tall) == .tooLarge(width: 64, height: 0x7FFF_FFFF, limit: 8192))
    }

    @Test("zero width or height is .zeroSize")
    func zeroSize() throws {
        for field in [16, 20] {
            var bytes = try goodFile()
            bytes.replaceSubrange(field..<field + 4, with: RawPNG.be32(0))
            RawPNG.fixCRC(&bytes, chunkAt: 8)
            #expect(decodeError(bytes) == .zeroSize)
        }
    }

    @Test("invalid header fields are .corrupt with libpng's reason")
    func invalidHeader() throws {
        var bytes = try goodFile()
        bytes[24] = 3  // bit depth 3 does not exist
        RawPNG.fixCRC(&bytes, chunkAt: 8)
        guard case .corrupt(let reason) = decodeError(bytes) else {
            Issue.record("expected .corrupt, got \(String(describing: decodeError(bytes)))")
            return
        }
        #expect(!reason.isEmpty)
    }

    @Test("file byte limit")
    func fileLimit() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanup() }
        let bytes = try goodFile()
        try AtomicFile.write(bytes, to: directory.path + "/f.png")
        #expect(throws: ImageError.fileTooLarge(bytes: bytes.count, limit: 100)) {
            try PNG.read(path: directory.path + "/f.png", options: PNGReadOptions(maxFileBytes: 100))
        }
    }

    @Test("random damage never crashes and never returns a different image")
    func fuzz() throws {
        let good = try goodFile()
        let reference = try PNG.decode(good)
        var rng = SeededGenerator(seed: 99)
        for _ in 0..<300 {
            var bytes = good
            for _ in 0..<rng.int(1...4) { bytes[rng.int(0...(bytes.count - 1))] = UInt8(truncatingIfNeeded: rng.next()) }
            if rng.chance(0.3) { bytes.removeLast(rng.int(0...(bytes.count - 1))) }
            if let image = try? PNG.decode(bytes) {
                // Damage only in places libpng may ignore (ancillary data, bytes after IEND): same image.
                #expect(image == reference)
            }
        }
    }

    // MARK: Writing

    @Test("writes replace the file; a failed write is ImageError.io naming the path")
    func writeReplacesAndReportsImageErrors() throws {
        // The atomic write itself (temporary file, fsync, rename) is SystemIO's AtomicFile, tested
        // in Tests/SystemIOTests/AtomicFileTests.swift; here: PNG.write uses it and keeps its errors.
        let directory = try TemporaryDirectory()
        defer { directory.cleanup() }
        let path = directory.path + "/out.png"
        let first = try PixelImage(bytes: [1, 2, 3, 4], width: 2, height: 2, format: .gray)
        let second = try PixelImage(bytes: [9, 8, 7, 6, 5, 4], width: 3, height: 2, format: .gray)
        try PNG.write(first, to: path)
        try PNG.write(second, to: path)
        #expect(try PNG.read(path: path) == second)
        let missing = directory.path + "/missing/out.png"
        do {
            try PNG.write(first, to: missing)
            Issue.record("the write must fail")
        } catch let error as ImageError {
            guard case .io(let errorPath, _) = error else { Issue.record("expected .io, got \(error)"); return }
            #expect(errorPath == missing)
            #expect(error.description.hasPrefix("Could not access \(missing): "))
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == ["out.png"])
    }

    @Test("invalid images are refused up front")
    func invalidImages() {
        #expect(throws: ImageError.self) { try PixelImage(width: 2, height: 2, format: .gray, bitDepth: 8, samples: [1, 2, 3]) }
        #expect(throws: ImageError.self) { try PixelImage(width: 1, height: 1, format: .gray, bitDepth: 8, samples: [256]) }
        #expect(throws: ImageError.self) { try PixelImage(width: 1, height: 1, format: .gray, bitDepth: 12, samples: [1]) }
        #expect(throws: ImageError.self) { try PixelImage(width: 0, height: 1, format: .gray, bitDepth: 8, samples: []) }
        #expect(throws: ImageError.self) {
            try PNG.encode(PixelImage(bytes: [1], width: 1, height: 1, format: .gray), compressionLevel: 10)
        }
    }

    @Test("reads the reference phantoms")
    func referenceFixtures() throws {
        let image = try PNG.read(path: sharedDirectory() + "/fixtures/reference/phantoms/imgs/0_normal_004.png")
        #expect(image.width == 512 && image.height == 512 && image.format == .gray && image.bitDepth == 8)
    }
}
