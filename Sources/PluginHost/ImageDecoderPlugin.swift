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
    /// The volume and DICOM metadata of plugin ABI 1.1; nil for the built-in PNG reader and for
    /// decoders written before ABI 1.1.
    public var metadata: ImageMetadata? = nil

    /// Frames (slices) in the file, each `width` × `height`: 1 unless the decoder says more.
    public var frames: Int { metadata?.frames ?? 1 }
}

/// The metadata a decoder of plugin ABI 1.1 reports (`affinity_image_info` beyond the geometry of
/// version 1.0). Optional fields are nil when the file does not have them; text fields are empty
/// when the decoder does not report them (a JPEG has no modality).
public struct ImageMetadata: Sendable, Equatable {
    /// Frames in the file (≥ 1).
    public var frames: Int
    /// The stored samples are signed.
    public var isSigned: Bool
    /// DICOM PixelSpacing: millimetres between rows, then between columns.
    public var pixelSpacing: (row: Double, column: Double)?
    public var sliceThickness: Double?
    /// ImagePositionPatient of the frame described: the centre of its first stored pixel, mm.
    public var imagePosition: [Double]?
    /// ImageOrientationPatient: row direction cosines, then column direction cosines.
    public var imageOrientation: [Double]?
    public var instanceNumber: Int?
    /// The Modality LUT: value = stored · slope + intercept (1 and 0 when the file has none).
    public var rescaleSlope: Double
    public var rescaleIntercept: Double
    /// The file states its Modality LUT (slope/intercept).
    public var hasRescale: Bool
    /// The window the decoder's `decode` applies with the options given (centre, width), when it
    /// windows at all.
    public var window: (center: Double, width: Double)?
    public var modality: String
    public var photometric: String
    /// The transfer syntax UID.
    public var transferSyntax: String
    public var sopInstanceUID: String
    public var seriesInstanceUID: String
    public var studyInstanceUID: String

    public static func == (a: ImageMetadata, b: ImageMetadata) -> Bool {
        a.frames == b.frames && a.isSigned == b.isSigned && a.pixelSpacing?.row == b.pixelSpacing?.row
            && a.pixelSpacing?.column == b.pixelSpacing?.column && a.sliceThickness == b.sliceThickness
            && a.imagePosition == b.imagePosition && a.imageOrientation == b.imageOrientation && a.instanceNumber == b.instanceNumber
            && a.rescaleSlope == b.rescaleSlope && a.rescaleIntercept == b.rescaleIntercept && a.hasRescale == b.hasRescale
            && a.window?.center == b.window?.center && a.window?.width == b.window?.width && a.modality == b.modality
            && a.photometric == b.photometric && a.transferSyntax == b.transferSyntax && a.sopInstanceUID == b.sopInstanceUID
            && a.seriesInstanceUID == b.seriesInstanceUID && a.studyInstanceUID == b.studyInstanceUID
    }
}

/// A decoded image and where it came from.
public struct DecodedImage: Sendable {
    /// Gray, [0, 1], height × width.
    public var image: GrayImage
    public var geometry: ImageGeometry
    /// `png (built in)` or the decoder plugin's `id version`.
    public var decoder: String
}

/// Modality-LUT values of consecutive frames (DICOM: Hounsfield units for CT).
public struct DecodedValues: Sendable {
    /// `frames.count` frames of `geometry.height` × `geometry.width` values each, frames in order,
    /// rows top to bottom, columns left to right as stored.
    public var values: [Float]
    /// The frames decoded (0-based).
    public var frames: Range<Int>
    /// The header, describing the first frame of the range.
    public var geometry: ImageGeometry
    /// The decoder plugin's `id version`.
    public var decoder: String
}

/// The largest image (in pixels) the host allocates for a decoder.
public let maxDecodedPixels = 16384 * 16384
/// The most Modality-LUT values the host allocates for one `values` call (1 GiB of floats).
public let maxDecodedValues = 1 << 28

/// A loaded image-decoder plugin.
public struct ImageDecoderPlugin: Sendable {
    public let plugin: LoadedPlugin
    /// The plugin's function table. Read through the pointer, field by field: a table written for
    /// an older header is shorter than this host's `affinity_image_decoder`.
    private var table: UnsafePointer<affinity_image_decoder> { plugin.descriptor.pointee.decoder! }

    init(_ plugin: LoadedPlugin) { self.plugin = plugin }

    /// How sure the decoder is (0–100) that the bytes are its format.
    public func probe(_ bytes: [UInt8]) -> Int {
        bytes.withUnsafeBufferPointer { Int(table.pointee.probe!($0.baseAddress, $0.count)) }
    }

    /// The plugin's `values` function (ABI 1.1): only when its table is long enough to hold it.
    private var valuesFunction: (@convention(c) (UnsafePointer<UInt8>?, Int, UnsafePointer<CChar>?, UInt32, UInt32, UnsafeMutablePointer<Float>?,
                                                 Int, UnsafeMutablePointer<affinity_image_info>?, UnsafeMutablePointer<affinity_error>?) -> Int32)? {
        let offset = MemoryLayout<affinity_image_decoder>.offset(of: \.values)!
        let size = MemoryLayout<affinity_image_decoder>.size - offset
        guard Int(table.pointee.struct_size) >= offset + size else { return nil }
        return table.pointee.values
    }

    /// Whether the decoder returns Modality-LUT values (`values(_:frames:)`), ABI 1.1.
    public var hasValues: Bool { valuesFunction != nil }

    /// The header's geometry (and, from an ABI 1.1 decoder, its metadata).
    /// - Parameter options: the decoder's options JSON (e.g. `{"frame": 3}`: the geometry of that frame).
    /// - Throws: `PluginError.callFailed` with the decoder's sentence.
    public func geometry(_ bytes: [UInt8], options: String = "{}") throws -> ImageGeometry {
        var info = Self.emptyInfo()
        var error = makeErrorBuffer()
        let status = bytes.withUnsafeBufferPointer { table.pointee.info!($0.baseAddress, $0.count, options, &info, &error) }
        guard status == AFFINITY_OK else {
            throw PluginError.callFailed(plugin: plugin.record, operation: "info", code: status, message: message(of: &error))
        }
        return Self.geometry(of: &info)
    }

    /// Decodes to a gray image in [0, 1]: header first, then a host buffer of exactly its size.
    /// - Parameter options: the decoder's options JSON (DICOM: `frame`, `window_center`, `window_width`).
    /// - Throws: `PluginError.callFailed` (damaged, unsupported, too large).
    public func decode(_ bytes: [UInt8], options: String = "{}") throws -> DecodedImage {
        let g = try geometry(bytes, options: options)
        try checkSize(g, frames: 1, operation: "info")
        var info = Self.emptyInfo()
        var error = makeErrorBuffer()
        var status: Int32 = AFFINITY_E_FAILED
        // Not zero-filled first: a large buffer is fresh pages that cost nothing until the decoder
        // writes them, so a file the decoder refuses early (a decompression bomb: a small file
        // naming a huge image) never makes the host touch memory for its size (issue 16). The
        // decoder writes every pixel when it succeeds (the ABI).
        let count = g.width * g.height
        let pixels = bytes.withUnsafeBufferPointer { src in
            [Float](unsafeUninitializedCapacity: count) { dst, initialized in
                status = table.pointee.decode!(src.baseAddress, src.count, options, dst.baseAddress, count, &info, &error)
                initialized = status == AFFINITY_OK ? count : 0
            }
        }
        guard status == AFFINITY_OK else {
            throw PluginError.callFailed(plugin: plugin.record, operation: "decode", code: status, message: message(of: &error))
        }
        try checkSame(g, Self.geometry(of: &info), operation: "decode")
        return DecodedImage(image: GrayImage(width: g.width, height: g.height, pixels: pixels), geometry: g, decoder: plugin.record)
    }

    /// The Modality-LUT values (DICOM: stored · slope + intercept, HU for CT; not windowed) of
    /// frames `frames` (0-based), in one host buffer of exactly their size.
    /// - Parameter options: the decoder's options JSON (without `frame`: the range says which).
    /// - Throws: `PluginError.callFailed`: the frames do not exist, the file is damaged or
    ///   unsupported, the values would exceed `maxDecodedValues`, or the decoder predates ABI 1.1
    ///   ("unsupported").
    public func values(_ bytes: [UInt8], frames: Range<Int>, options: String = "{}") throws -> DecodedValues {
        guard let function = valuesFunction else {
            throw PluginError.callFailed(plugin: plugin.record, operation: "values", code: AFFINITY_E_UNSUPPORTED,
                                         message: "this decoder predates plugin ABI 1.1 and has no Modality-LUT values, only decode")
        }
        let g = try geometry(bytes, options: options)
        guard !frames.isEmpty, frames.lowerBound >= 0, frames.upperBound <= g.frames else {
            throw PluginError.callFailed(plugin: plugin.record, operation: "values", code: AFFINITY_E_INVALID_ARGUMENT,
                                         message: "the frames \(frames.lowerBound)..<\(frames.upperBound) are not within the file's \(g.frames) frame(s)")
        }
        try checkSize(g, frames: frames.count, operation: "info")
        var info = Self.emptyInfo()
        var error = makeErrorBuffer()
        var status: Int32 = AFFINITY_E_FAILED
        // Not zero-filled first (see `decode`): the decoder writes every value when it succeeds.
        let count = g.width * g.height * frames.count
        let values = bytes.withUnsafeBufferPointer { src in
            [Float](unsafeUninitializedCapacity: count) { dst, initialized in
                status = function(src.baseAddress, src.count, options, UInt32(frames.lowerBound), UInt32(frames.count), dst.baseAddress, count,
                                  &info, &error)
                initialized = status == AFFINITY_OK ? count : 0
            }
        }
        guard status == AFFINITY_OK else {
            throw PluginError.callFailed(plugin: plugin.record, operation: "values", code: status, message: message(of: &error))
        }
        let described = Self.geometry(of: &info)
        try checkSame(g, described, operation: "values")
        return DecodedValues(values: values, frames: frames, geometry: described, decoder: plugin.record)
    }

    /// The values of one frame (see `values(_:frames:options:)`).
    public func values(_ bytes: [UInt8], frame: Int, options: String = "{}") throws -> DecodedValues {
        try values(bytes, frames: frame..<(frame + 1), options: options)
    }

    // MARK: - Checks and conversions

    /// Never trust a plugin's sizes: the buffers the host allocates from them have limits.
    private func checkSize(_ g: ImageGeometry, frames: Int, operation: String) throws {
        guard g.width > 0, g.height > 0, g.width <= 16384, g.height <= 16384, g.width * g.height <= maxDecodedPixels else {
            throw PluginError.callFailed(plugin: plugin.record, operation: operation, code: AFFINITY_E_TOO_LARGE,
                                         message: "the decoder reported an image of \(g.width)×\(g.height) pixels, outside 1…16384 per side")
        }
        guard frames <= maxDecodedValues / (g.width * g.height) else {
            throw PluginError.callFailed(plugin: plugin.record, operation: operation, code: AFFINITY_E_TOO_LARGE,
                                         message: "\(frames) frames of \(g.width)×\(g.height) pixels are more than the host's limit of \(maxDecodedValues) values per call; ask for fewer frames")
        }
    }

    private func checkSame(_ a: ImageGeometry, _ b: ImageGeometry, operation: String) throws {
        guard a.width == b.width, a.height == b.height, a.frames == b.frames else {
            throw PluginError.callFailed(plugin: plugin.record, operation: operation, code: AFFINITY_E_FAILED,
                                         message: "the decoder changed its mind about the size (\(a.width)×\(a.height)×\(a.frames), then \(b.width)×\(b.height)×\(b.frames))")
        }
    }

    /// A zeroed info struct announcing this host's size.
    static func emptyInfo() -> affinity_image_info {
        var info = affinity_image_info()
        info.struct_size = UInt32(MemoryLayout<affinity_image_info>.size)
        return info
    }

    /// The geometry a plugin wrote: the fields of ABI 1.1 only when its struct_size covers them.
    static func geometry(of info: inout affinity_image_info) -> ImageGeometry {
        var g = ImageGeometry(width: Int(info.width), height: Int(info.height), channels: Int(info.channels), bits: Int(info.bits),
                              pixelSpacingX: info.pixel_spacing_x, pixelSpacingY: info.pixel_spacing_y)
        guard Int(info.struct_size) >= MemoryLayout<affinity_image_info>.size else { return g }
        let flags = info.flags
        func has(_ bit: UInt32) -> Bool { flags & bit != 0 }
        let position = info.image_position, orientation = info.image_orientation
        // A plugin compiled against this header but written for 1.0 leaves the new fields zero:
        // zero frames is one frame, a zero slope without a stated rescale is the identity.
        let slope = has(AFFINITY_INFO_HAS_RESCALE) || info.rescale_slope != 0 ? info.rescale_slope : 1
        g.metadata = ImageMetadata(
            frames: max(1, Int(info.frames)),
            isSigned: info.is_signed != 0,
            pixelSpacing: has(AFFINITY_INFO_HAS_PIXEL_SPACING) ? (row: info.pixel_spacing_y, column: info.pixel_spacing_x) : nil,
            sliceThickness: has(AFFINITY_INFO_HAS_SLICE_THICKNESS) ? info.slice_thickness : nil,
            imagePosition: has(AFFINITY_INFO_HAS_POSITION) ? [position.0, position.1, position.2] : nil,
            imageOrientation: has(AFFINITY_INFO_HAS_ORIENTATION)
                ? [orientation.0, orientation.1, orientation.2, orientation.3, orientation.4, orientation.5] : nil,
            instanceNumber: has(AFFINITY_INFO_HAS_INSTANCE_NUMBER) ? Int(info.instance_number) : nil,
            rescaleSlope: slope,
            rescaleIntercept: info.rescale_intercept,
            hasRescale: has(AFFINITY_INFO_HAS_RESCALE),
            window: has(AFFINITY_INFO_HAS_WINDOW) ? (center: info.window_center, width: info.window_width) : nil,
            modality: string(fromCharArray: &info.modality),
            photometric: string(fromCharArray: &info.photometric),
            transferSyntax: string(fromCharArray: &info.transfer_syntax),
            sopInstanceUID: string(fromCharArray: &info.sop_instance_uid),
            seriesInstanceUID: string(fromCharArray: &info.series_instance_uid),
            studyInstanceUID: string(fromCharArray: &info.study_instance_uid))
        return g
    }
}

public extension PluginRegistry {
    /// The loaded decoder plugin that probes highest for these bytes, or nil when none claims them.
    func decoder(for bytes: [UInt8]) -> ImageDecoderPlugin? {
        decoders.map { ($0, $0.probe(bytes)) }.filter { $0.1 > 0 }.max { $0.1 < $1.1 }?.0
    }

    /// Decodes an image file's bytes: PNG with the host's own reader, anything else with the loaded
    /// decoder plugin that probes highest.
    /// - Parameter options: JSON options for the decoder plugin (DICOM frame and window, …).
    /// - Throws: `ImageError` for a damaged PNG, `PluginError.callFailed` from a decoder,
    ///   `PluginError.unknownImageFormat` when no decoder claims the bytes.
    func decodeImage(_ bytes: [UInt8], options: String = "{}") throws -> DecodedImage {
        if bytes.count >= 8, Array(bytes[0..<8]) == PNG.signature {
            let png = try PNG.decode(bytes)
            let g = ImageGeometry(width: png.width, height: png.height, channels: png.channels, bits: png.bitDepth,
                                  pixelSpacingX: 0, pixelSpacingY: 0)
            return DecodedImage(image: png.grayImage(), geometry: g, decoder: "png (built in)")
        }
        guard let best = decoder(for: bytes) else { throw PluginError.unknownImageFormat(firstBytes: Self.firstBytes(bytes)) }
        return try best.decode(bytes, options: options)
    }

    /// "the bytes 89 50 4e 47" or "nothing: it is empty", for `PluginError.unknownImageFormat`.
    static func firstBytes(_ bytes: [UInt8]) -> String {
        let head = bytes.prefix(4).map { String($0, radix: 16) }.joined(separator: " ")
        return head.isEmpty ? "nothing: it is empty" : "the bytes " + head
    }
}
