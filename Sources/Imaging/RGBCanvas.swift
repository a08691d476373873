/// An 8-bit RGB drawing surface for the figures (overlays, heatmaps, confusion matrices).
///
/// Shape: `pixels` holds `height × width × 3` bytes, row-major, RGB interleaved. Every drawing call
/// clips to the canvas, so callers may pass coordinates partly outside it.
public struct RGBCanvas: Sendable {
    /// An 8-bit colour.
    public struct Color: Equatable, Sendable {
        /// Red, green, blue.
        public var r: UInt8, g: UInt8, b: UInt8
        /// A colour from its components.
        public init(_ r: UInt8, _ g: UInt8, _ b: UInt8) {
            self.r = r
            self.g = g
            self.b = b
        }

        /// (255, 255, 255).
        public static let white = Color(255, 255, 255)
        /// (0, 0, 0).
        public static let black = Color(0, 0, 0)

        /// Linear interpolation `(1 − t)·a + t·b`, t clamped to [0, 1], rounded.
        public static func mix(_ a: Color, _ b: Color, _ t: Float) -> Color {
            let t = t.isNaN ? 0 : min(max(t, 0), 1)
            func lerp(_ x: UInt8, _ y: UInt8) -> UInt8 { UInt8((Float(x) + (Float(y) - Float(x)) * t).rounded()) }
            return Color(lerp(a.r, b.r), lerp(a.g, b.g), lerp(a.b, b.b))
        }
    }

    /// Columns.
    public let width: Int
    /// Rows.
    public let height: Int
    /// `height × width × 3` bytes.
    public var pixels: [UInt8]

    /// A canvas filled with `background`.
    /// - Precondition: `width, height > 0`.
    public init(width: Int, height: Int, background: Color = .white) {
        precondition(width > 0 && height > 0, "canvas size must be positive, got \(width)×\(height)")
        self.width = width
        self.height = height
        pixels = [UInt8](repeating: 0, count: width * height * 3)
        fill(x: 0, y: 0, width: width, height: height, color: background)
    }

    /// A canvas showing a gray image (values in [0, 1] → 0…255, clamped, rounded).
    public init(gray: GrayImage) {
        width = gray.width
        height = gray.height
        let n = gray.width * gray.height
        pixels = [UInt8](unsafeUninitializedCapacity: 3 * n) { out, count in
            gray.pixels.withUnsafeBufferPointer { src in
                for i in 0..<n {
                    let v = src[i]
                    let byte = UInt8((v.isNaN ? 0 : min(max(v, 0), 1) * 255).rounded())
                    out[3 * i] = byte
                    out[3 * i + 1] = byte
                    out[3 * i + 2] = byte
                }
            }
            count = 3 * n
        }
    }

    /// The colour at column `x`, row `y`.
    /// - Precondition: the point is on the canvas.
    public func color(x: Int, y: Int) -> Color {
        precondition(x >= 0 && x < width && y >= 0 && y < height, "(\(x), \(y)) is outside \(width)×\(height)")
        let i = 3 * (y * width + x)
        return Color(pixels[i], pixels[i + 1], pixels[i + 2])
    }

    /// Sets one pixel (ignored outside the canvas).
    public mutating func set(x: Int, y: Int, _ color: Color) {
        guard x >= 0, x < width, y >= 0, y < height else { return }
        let i = 3 * (y * width + x)
        pixels[i] = color.r
        pixels[i + 1] = color.g
        pixels[i + 2] = color.b
    }

    /// Fills a rectangle (columns `x..<x+width`, rows `y..<y+height`, clipped).
    public mutating func fill(x: Int, y: Int, width w: Int, height h: Int, color: Color) {
        let x0 = max(0, x), x1 = min(width, x + w), y0 = max(0, y), y1 = min(height, y + h)
        guard x0 < x1, y0 < y1 else { return }
        let stride = width
        pixels.withUnsafeMutableBufferPointer { p in
            for row in y0..<y1 {
                let base = p.baseAddress! + 3 * row * stride
                for col in x0..<x1 {
                    base[3 * col] = color.r
                    base[3 * col + 1] = color.g
                    base[3 * col + 2] = color.b
                }
            }
        }
    }

    /// Outlines a rectangle with lines `thickness` pixels wide, drawn inside its bounds.
    public mutating func strokeRect(x: Int, y: Int, width w: Int, height h: Int, thickness: Int = 1, color: Color) {
        guard w > 0, h > 0 else { return }
        let t = max(1, min(thickness, (min(w, h) + 1) / 2))
        fill(x: x, y: y, width: w, height: t, color: color)
        fill(x: x, y: y + h - t, width: w, height: t, color: color)
        fill(x: x, y: y, width: t, height: h, color: color)
        fill(x: x + w - t, y: y, width: t, height: h, color: color)
    }

    /// Draws text with the 5×7 `BitmapFont`, top-left corner at `(x, y)`, each font pixel a
    /// `scale × scale` block.
    public mutating func drawText(_ text: String, x: Int, y: Int, scale: Int = 1, color: Color) {
        let scale = max(1, scale)
        var penX = x
        for character in text {
            let rows = BitmapFont.glyph(for: character)
            for (r, bits) in rows.enumerated() where bits != 0 {
                for c in 0..<BitmapFont.glyphWidth where bits & (0x10 >> UInt8(c)) != 0 {
                    fill(x: penX + c * scale, y: y + r * scale, width: scale, height: scale, color: color)
                }
            }
            penX += BitmapFont.advance * scale
        }
    }

    /// Draws text centred on `(centerX, centerY)`.
    public mutating func drawText(_ text: String, centerX: Int, centerY: Int, scale: Int = 1, color: Color) {
        drawText(text, x: centerX - BitmapFont.width(of: text, scale: scale) / 2,
                 y: centerY - BitmapFont.height(scale: scale) / 2, scale: scale, color: color)
    }

    /// The canvas as an 8-bit RGB `PixelImage`, ready for `PNG.write`.
    public var pixelImage: PixelImage {
        // Sizes are consistent by construction.
        try! PixelImage(bytes: pixels, width: width, height: height, format: .rgb)
    }
}
