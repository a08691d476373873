import CAffinityPlugin
import Imaging

/// What a decoder reports about a file besides its pixels.
public struct ImageGeometry: Sendable, Equatable {
    public var width: Int
    public var height: Int
    /// Channels stored in the file (the decoded image is gray).
    public var channels: Int
    /// Bits per stored sample.
    public var bits: Int
    /// Millimetres per column / row; 0 when the format does not say.
    public var pixelSpacingX: Double
    public var pixelSpacingY: Double
}

/// A decoded image and where it came from.
public struct DecodedImage: Sendable {
    /// Gray, [0, 1], height × width.
    public var image: GrayImage
    public var geometry: ImageGeometry
    /// `png (built in)` or the decoder plugin's `id version`.
    public var decoder: String
}

/// The largest image (in pixels) the host allocates for a decoder.
public let maxDecodedPixels = 16384 * 16384

/// A loaded image-decoder plugin.
public struct ImageDecoderPlugin: Sendable {
    public let plugin: LoadedPlugin
    private var table: affinity_image_decoder { plugin.descriptor.pointee.decoder!.pointee }

    init(_ plugin: LoadedPlugin) { self.plugin = plugin }

    /// How sure the decoder is (0–100) that the bytes are its format.
    public func probe(_ bytes: [UInt8]) -> Int {
        bytes.withUnsafeBufferPointer { Int(table.probe!($0.baseAddress, $0.count)) }
    }

    /// The header's geometry.
    /// - Throws: `PluginError.callFailed` with the decoder's sentence.
    public func geometry(_ bytes: [UInt8], options: String = "{}") throws -> ImageGeometry {
        var info = affinity_image_info()
        info.struct_size = UInt32(MemoryLayout<affinity_image_info>.size)
        var error = makeErrorBuffer()
        let status = bytes.withUnsafeBufferPointer { table.info!($0.baseAddress, $0.count, options, &info, &error) }
        guard status == AFFINITY_OK else {
            throw PluginError.callFailed(plugin: plugin.record, operation: "info", code: status, message: message(of: &error))
        }
        return ImageGeometry(width: Int(info.width), height: Int(info.height), channels: Int(info.channels), bits: Int(info.bits),
                             pixelSpacingX: info.pixel_spacing_x, pixelSpacingY: info.pixel_spacing_y)
    }

    /// Decodes to a gray image in [0, 1]: header first, then a host buffer of exactly its size.
    /// - Throws: `PluginError.callFailed` (damaged, unsupported, too large).
    public func decode(_ bytes: [UInt8], options: String = "{}") throws -> DecodedImage {
        let g = try geometry(bytes, options: options)
        guard g.width > 0, g.height > 0, g.width <= 16384, g.height <= 16384, g.width * g.height <= maxDecodedPixels else {
            throw PluginError.callFailed(plugin: plugin.record, operation: "info", code: AFFINITY_E_TOO_LARGE,
                                         message: "the decoder reported an image of \(g.width)×\(g.height) pixels, outside 1…16384 per side")
        }
        var pixels = [Float](repeating: 0, count: g.width * g.height)
        var info = affinity_image_info()
        info.struct_size = UInt32(MemoryLayout<affinity_image_info>.size)
        var error = makeErrorBuffer()
        let status = bytes.withUnsafeBufferPointer { src in
            pixels.withUnsafeMutableBufferPointer { dst in
                table.decode!(src.baseAddress, src.count, options, dst.baseAddress, dst.count, &info, &error)
            }
        }
        guard status == AFFINITY_OK else {
            throw PluginError.callFailed(plugin: plugin.record, operation: "decode", code: status, message: message(of: &error))
        }
        guard Int(info.width) == g.width, Int(info.height) == g.height else {
            throw PluginError.callFailed(plugin: plugin.record, operation: "decode", code: AFFINITY_E_FAILED,
                                         message: "the decoder changed its mind about the size (\(g.width)×\(g.height), then \(info.width)×\(info.height))")
        }
        return DecodedImage(image: GrayImage(width: g.width, height: g.height, pixels: pixels), geometry: g, decoder: plugin.record)
    }
}

public extension PluginRegistry {
    /// Decodes an image file's bytes: PNG with the host's own reader, anything else with the loaded
    /// decoder plugin that probes highest.
    /// - Parameter options: JSON options for the decoder plugin (DICOM window, …).
    /// - Throws: `ImageError` for a damaged PNG, `PluginError.callFailed` from a decoder,
    ///   `PluginError.unknownImageFormat` when no decoder claims the bytes.
    func decodeImage(_ bytes: [UInt8], options: String = "{}") throws -> DecodedImage {
        if bytes.count >= 8, Array(bytes[0..<8]) == PNG.signature {
            let png = try PNG.decode(bytes)
            let g = ImageGeometry(width: png.width, height: png.height, channels: png.channels, bits: png.bitDepth,
                                  pixelSpacingX: 0, pixelSpacingY: 0)
            return DecodedImage(image: png.grayImage(), geometry: g, decoder: "png (built in)")
        }
        let ranked = decoders.map { ($0, $0.probe(bytes)) }.filter { $0.1 > 0 }.sorted { $0.1 > $1.1 }
        guard let best = ranked.first?.0 else {
            let head = bytes.prefix(4).map { String($0, radix: 16) }.joined(separator: " ")
            throw PluginError.unknownImageFormat(firstBytes: head.isEmpty ? "nothing: it is empty" : "the bytes " + head)
        }
        return try best.decode(bytes, options: options)
    }
}
