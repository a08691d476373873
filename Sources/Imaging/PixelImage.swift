/// How the channels of a `PixelImage` are laid out (interleaved, in this order).
public enum PixelFormat: Int, Sendable, CaseIterable {
    /// One gray channel.
    case gray = 1
    /// Gray, then alpha.
    case grayAlpha = 2
    /// Red, green, blue.
    case rgb = 3
    /// Red, green, blue, alpha.
    case rgba = 4

    /// Samples per pixel.
    public var channels: Int { rawValue }

    /// Whether the last channel is alpha.
    public var hasAlpha: Bool { self == .grayAlpha || self == .rgba }
}

/// An integer image as a PNG stores it: interleaved samples, 8 or 16 bits per sample.
///
/// Shape: `samples` holds `height × width × format.channels` values, row-major, channels
/// interleaved (`samples[(y·width + x)·channels + c]`). 8-bit samples are 0…255 and 16-bit samples
/// 0…65535, both stored as `UInt16`, so one type carries either depth at full precision.
/// Decoded PNGs arrive expanded: palette → RGB(A), 1/2/4-bit gray → 8-bit gray (scaled to 0…255 as
/// libpng and PIL do: 1-bit 0/255, 2-bit ×85, 4-bit ×17), a tRNS chunk → an alpha channel.
public struct PixelImage: Equatable, Sendable {
    /// Columns.
    public let width: Int
    /// Rows.
    public let height: Int
    /// Channel layout.
    public let format: PixelFormat
    /// Bits per sample: 8 or 16.
    public let bitDepth: Int
    /// `height × width × channels` interleaved samples.
    public var samples: [UInt16]

    /// Samples per pixel.
    public var channels: Int { format.channels }
    /// Largest sample value for the bit depth (255 or 65535).
    public var maxValue: Int { bitDepth == 16 ? 65535 : 255 }

    /// Wraps samples as an image.
    /// - Throws: `ImageError.invalidArgument` when a dimension is not positive, the bit depth is not
    ///   8 or 16, the sample count is not `width·height·channels`, or an 8-bit sample exceeds 255.
    public init(width: Int, height: Int, format: PixelFormat, bitDepth: Int, samples: [UInt16]) throws {
        guard width > 0, height > 0 else {
            throw ImageError.invalidArgument("image dimensions must be positive, got \(width)×\(height)")
        }
        guard bitDepth == 8 || bitDepth == 16 else {
            throw ImageError.invalidArgument("bit depth must be 8 or 16, got \(bitDepth)")
        }
        guard samples.count == width * height * format.channels else {
            throw ImageError.invalidArgument(
                "expected \(width * height * format.channels) samples for \(width)×\(height)×\(format.channels), got \(samples.count)")
        }
        if bitDepth == 8, let bad = samples.first(where: { $0 > 255 }) {
            throw ImageError.invalidArgument("8-bit sample value \(bad) exceeds 255")
        }
        self.init(unchecked: width, height: height, format: format, bitDepth: bitDepth, samples: samples)
    }

    init(unchecked width: Int, height: Int, format: PixelFormat, bitDepth: Int, samples: [UInt16]) {
        self.width = width
        self.height = height
        self.format = format
        self.bitDepth = bitDepth
        self.samples = samples
    }

    /// An 8-bit image from bytes (`height × width × channels`, interleaved).
    /// - Throws: `ImageError.invalidArgument` on a size mismatch.
    public init(bytes: [UInt8], width: Int, height: Int, format: PixelFormat) throws {
        guard width > 0, height > 0, bytes.count == width * height * format.channels else {
            throw ImageError.invalidArgument(
                "expected \(max(0, width * height * format.channels)) bytes for \(width)×\(height)×\(format.channels), got \(bytes.count)")
        }
        let samples = [UInt16](unsafeUninitializedCapacity: bytes.count) { out, count in
            bytes.withUnsafeBufferPointer { src in
                for i in 0..<src.count { out[i] = UInt16(src[i]) }
            }
            count = bytes.count
        }
        self.init(unchecked: width, height: height, format: format, bitDepth: 8, samples: samples)
    }

    /// A 16-bit gray image from `height × width` samples.
    /// - Throws: `ImageError.invalidArgument` on a size mismatch.
    public init(gray16: [UInt16], width: Int, height: Int) throws {
        try self.init(width: width, height: height, format: .gray, bitDepth: 16, samples: gray16)
    }

    /// The samples narrowed to bytes (8-bit images only; 16-bit samples are shifted right by 8).
    /// Shape: `height × width × channels`.
    public var bytes: [UInt8] {
        let shift: UInt16 = bitDepth == 16 ? 8 : 0
        return [UInt8](unsafeUninitializedCapacity: samples.count) { out, count in
            samples.withUnsafeBufferPointer { src in
                for i in 0..<src.count { out[i] = UInt8(truncatingIfNeeded: src[i] >> shift) }
            }
            count = samples.count
        }
    }

    /// The sample at column `x`, row `y`, channel `channel`.
    /// - Precondition: the coordinates are inside the image.
    public func sample(x: Int, y: Int, channel: Int = 0) -> UInt16 {
        precondition(x >= 0 && x < width && y >= 0 && y < height && channel >= 0 && channel < channels,
                     "pixel (\(x), \(y), \(channel)) outside \(width)×\(height)×\(channels)")
        return samples[(y * width + x) * channels + channel]
    }
}

/// A gray image of floats in [0, 1]: the model-facing form of a single-channel slice.
///
/// Shape: `pixels` holds `height × width` values, row-major (`pixels[y·width + x]`).
public struct GrayImage: Equatable, Sendable {
    /// Columns.
    public let width: Int
    /// Rows.
    public let height: Int
    /// `height × width` values, nominally in [0, 1].
    public var pixels: [Float]

    /// Wraps pixel values.
    /// - Precondition: `width, height > 0` and `pixels.count == width·height`.
    public init(width: Int, height: Int, pixels: [Float]) {
        precondition(width > 0 && height > 0 && pixels.count == width * height,
                     "GrayImage \(width)×\(height) needs \(max(0, width * height)) pixels, got \(pixels.count)")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// A black image.
    /// - Precondition: `width, height > 0`.
    public init(width: Int, height: Int) {
        self.init(width: width, height: height, pixels: [Float](repeating: 0, count: width * height))
    }

    /// The image from 8-bit gray bytes, each divided by 255 (as `ToTensor` does).
    /// - Precondition: `bytes.count == width·height`.
    public init(bytes: [UInt8], width: Int, height: Int) {
        precondition(width > 0 && height > 0 && bytes.count == width * height,
                     "GrayImage \(width)×\(height) needs \(max(0, width * height)) bytes, got \(bytes.count)")
        let pixels = [Float](unsafeUninitializedCapacity: bytes.count) { out, count in
            bytes.withUnsafeBufferPointer { src in
                for i in 0..<src.count { out[i] = Float(src[i]) / 255 }
            }
            count = bytes.count
        }
        self.init(width: width, height: height, pixels: pixels)
    }

    /// The value at column `x`, row `y`.
    public subscript(x: Int, y: Int) -> Float {
        get { pixels[y * width + x] }
        set { pixels[y * width + x] = newValue }
    }

    /// The gray replicated into three identical planes (what `convert('RGB')` does to a gray slice).
    public var rgb: RGBImage {
        var planes = [Float]()
        planes.reserveCapacity(3 * pixels.count)
        for _ in 0..<3 { planes.append(contentsOf: pixels) }
        return RGBImage(width: width, height: height, planes: planes)
    }

    /// An 8-bit gray `PixelImage`: each value clamped to [0, 1], times 255, rounded to nearest.
    public var pixelImage8: PixelImage {
        quantized(maxValue: 255, bitDepth: 8)
    }

    /// A 16-bit gray `PixelImage`: each value clamped to [0, 1], times 65535, rounded to nearest.
    public var pixelImage16: PixelImage {
        quantized(maxValue: 65535, bitDepth: 16)
    }

    private func quantized(maxValue: Float, bitDepth: Int) -> PixelImage {
        let samples = [UInt16](unsafeUninitializedCapacity: pixels.count) { out, count in
            pixels.withUnsafeBufferPointer { src in
                for i in 0..<src.count {
                    let v = src[i]
                    let c: Float = v.isNaN ? 0 : min(max(v, 0), 1)
                    out[i] = UInt16((c * maxValue).rounded())
                }
            }
            count = pixels.count
        }
        return PixelImage(unchecked: width, height: height, format: .gray, bitDepth: bitDepth, samples: samples)
    }
}

/// A three-channel float image in planar layout: what PIL `convert('RGB')` + torchvision
/// `ToTensor()` hand to the model.
///
/// Shape: `planes` holds `3 × height × width` values (`planes[(c·height + y)·width + x]`, c = 0 red,
/// 1 green, 2 blue), nominally in [0, 1].
public struct RGBImage: Equatable, Sendable {
    /// Columns.
    public let width: Int
    /// Rows.
    public let height: Int
    /// `3 × height × width` values.
    public var planes: [Float]

    /// Wraps planar values.
    /// - Precondition: `width, height > 0` and `planes.count == 3·width·height`.
    public init(width: Int, height: Int, planes: [Float]) {
        precondition(width > 0 && height > 0 && planes.count == 3 * width * height,
                     "RGBImage \(width)×\(height) needs \(max(0, 3 * width * height)) values, got \(planes.count)")
        self.width = width
        self.height = height
        self.planes = planes
    }

    /// One channel as a gray image (0 red, 1 green, 2 blue).
    /// - Precondition: `channel` is 0, 1 or 2.
    public func channel(_ channel: Int) -> GrayImage {
        precondition((0..<3).contains(channel), "channel \(channel) is not 0, 1 or 2")
        let n = width * height
        return GrayImage(width: width, height: height, pixels: Array(planes[channel * n..<(channel + 1) * n]))
    }
}

extension PixelImage {
    /// The image as the model's loader sees it: PIL `convert('RGB')` then `ToTensor()`.
    ///
    /// Shape: 3 × height × width planar floats. Gray is replicated to three equal planes; alpha is
    /// dropped without compositing (as PIL's conversion does). Each 8-bit sample becomes
    /// `Float(v) / 255`, bit-identical to `ToTensor`. 16-bit samples become `Float(v) / 65535`, full
    /// precision — PIL itself would first reduce them to 8 bits, so for 16-bit inputs this is the
    /// exact value the 8-bit pipeline approximates, not a bit-identical copy of it.
    public func rgbImage() -> RGBImage {
        let n = width * height
        let channels = self.channels
        let scale = Float(maxValue)
        let colour = format == .rgb || format == .rgba
        let planes = [Float](unsafeUninitializedCapacity: 3 * n) { out, count in
            samples.withUnsafeBufferPointer { src in
                let s = src.baseAddress!
                let r = out.baseAddress!, g = r + n, b = g + n
                if colour {
                    for i in 0..<n {
                        let p = s + i * channels
                        r[i] = Float(p[0]) / scale
                        g[i] = Float(p[1]) / scale
                        b[i] = Float(p[2]) / scale
                    }
                } else {
                    for i in 0..<n {
                        let v = Float(s[i * channels]) / scale
                        r[i] = v
                        g[i] = v
                        b[i] = v
                    }
                }
            }
            count = 3 * n
        }
        return RGBImage(width: width, height: height, planes: planes)
    }

    /// The image as one gray float plane in [0, 1] (a convenience for display and phantoms; the
    /// model path is `rgbImage()`).
    ///
    /// Shape: height × width. Gray (± alpha) samples are divided by 255 or 65535, alpha dropped.
    /// Colour samples are reduced with the ITU-R 601-2 luma weights PIL's `convert('L')` uses,
    /// `0.299·R + 0.587·G + 0.114·B`, kept in float (PIL rounds to 8 bits).
    public func grayImage() -> GrayImage {
        let n = width * height
        let channels = self.channels
        let scale = Float(maxValue)
        let colour = format == .rgb || format == .rgba
        let pixels = [Float](unsafeUninitializedCapacity: n) { out, count in
            samples.withUnsafeBufferPointer { src in
                let s = src.baseAddress!
                if colour {
                    for i in 0..<n {
                        let p = s + i * channels
                        out[i] = (0.299 * Float(p[0]) + 0.587 * Float(p[1]) + 0.114 * Float(p[2])) / scale
                    }
                } else {
                    for i in 0..<n { out[i] = Float(s[i * channels]) / scale }
                }
            }
            count = n
        }
        return GrayImage(width: width, height: height, pixels: pixels)
    }
}
