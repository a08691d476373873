#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Primitives
import SystemIO

/// One detection to draw on an overlay.
public struct OverlayLesion: Sendable {
    /// Full-image mask, `height × width`: probabilities in [0, 1] or binary 0/1; nil for a box only.
    public var mask: [Float]?
    /// The detection box.
    public var box: Box
    /// Detection score in [0, 1]; sets the colour (yellow at 0 → red at 1) and the label.
    public var score: Float

    /// A detection with an optional full-image mask.
    public init(mask: [Float]?, box: Box, score: Float) {
        self.mask = mask
        self.box = box
        self.score = score
    }
}

/// Lesion overlays: a gray slice with each detected lesion tinted, outlined and boxed.
public enum Overlay {
    /// The colour for a score: yellow (255, 255, 0) at 0 through orange to red (255, 0, 0) at 1.
    public static func color(forScore score: Float) -> RGBCanvas.Color {
        let s = score.isNaN ? 0 : min(max(score, 0), 1)
        return RGBCanvas.Color(255, UInt8((255 * (1 - s)).rounded()), 0)
    }

    /// Renders the overlay as an RGB image of the slice's size.
    ///
    /// Each mask's pixels with value ≥ `threshold` are alpha-blended with the lesion's colour
    /// (`out = (1 − alpha)·gray + alpha·colour`), the mask's edge pixels drawn in full colour, the box
    /// outlined (1 px per 256 px of image side, at least 1) and, with `showScores`, the score printed
    /// above the box with the bitmap font. Lower scores are drawn first, so higher ones end on top.
    /// Shapes: `slice` H × W; each mask H × W.
    /// - Throws: `ImageError.invalidArgument` when a mask is not H × W.
    public static func render(slice: GrayImage, lesions: [OverlayLesion], alpha: Float = 0.45,
                              threshold: Float = 0.5, showScores: Bool = true) throws -> PixelImage {
        try canvas(slice: slice, lesions: lesions, alpha: alpha, threshold: threshold, showScores: showScores).pixelImage
    }

    /// The overlay as a canvas (see `render`), for callers that draw more on it.
    /// - Throws: `ImageError.invalidArgument` when a mask is not H × W.
    public static func canvas(slice: GrayImage, lesions: [OverlayLesion], alpha: Float = 0.45,
                              threshold: Float = 0.5, showScores: Bool = true) throws -> RGBCanvas {
        let w = slice.width, h = slice.height
        for (i, lesion) in lesions.enumerated() {
            if let mask = lesion.mask, mask.count != w * h {
                throw ImageError.invalidArgument("mask \(i) has \(mask.count) values, the slice has \(w)×\(h) = \(w * h)")
            }
        }
        var canvas = RGBCanvas(gray: slice)
        let a = min(max(alpha, 0), 1)
        let order = lesions.indices.sorted { lesions[$0].score < lesions[$1].score }
        for index in order {
            let lesion = lesions[index]
            let colour = color(forScore: lesion.score)
            if let mask = lesion.mask {
                tint(&canvas, mask: mask, colour: colour, alpha: a, threshold: threshold)
            }
            let thickness = max(1, min(w, h) / 256)
            let x0 = Int(lesion.box.x1.rounded(.down)), y0 = Int(lesion.box.y1.rounded(.down))
            let x1 = Int(lesion.box.x2.rounded(.up)), y1 = Int(lesion.box.y2.rounded(.up))
            canvas.strokeRect(x: x0, y: y0, width: x1 - x0, height: y1 - y0, thickness: thickness, color: colour)
            if showScores {
                let text = formatScore(lesion.score)
                let scale = max(1, min(w, h) / 512)
                let tw = BitmapFont.width(of: text, scale: scale) + 2 * scale
                let th = BitmapFont.height(scale: scale) + 2 * scale
                let ty = y0 - th >= 0 ? y0 - th : min(y1, h - th)
                canvas.fill(x: x0, y: ty, width: tw, height: th, color: .black)
                canvas.drawText(text, x: x0 + scale, y: ty + scale, scale: scale, color: colour)
            }
        }
        return canvas
    }

    private static func tint(_ canvas: inout RGBCanvas, mask: [Float], colour: RGBCanvas.Color, alpha: Float, threshold: Float) {
        let w = canvas.width, h = canvas.height
        let cr = Float(colour.r) * alpha, cg = Float(colour.g) * alpha, cb = Float(colour.b) * alpha
        let keep = 1 - alpha
        mask.withUnsafeBufferPointer { m in
            canvas.pixels.withUnsafeMutableBufferPointer { px in
                let p = px.baseAddress!, mp = m.baseAddress!
                for y in 0..<h {
                    let row = mp + y * w
                    for x in 0..<w where row[x] >= threshold {
                        let o = p + 3 * (y * w + x)
                        let edge = x == 0 || x == w - 1 || y == 0 || y == h - 1
                            || row[x - 1] < threshold || row[x + 1] < threshold
                            || row[x - w] < threshold || row[x + w] < threshold
                        if edge {
                            o[0] = colour.r
                            o[1] = colour.g
                            o[2] = colour.b
                        } else {
                            o[0] = UInt8((keep * Float(o[0]) + cr).rounded())
                            o[1] = UInt8((keep * Float(o[1]) + cg).rounded())
                            o[2] = UInt8((keep * Float(o[2]) + cb).rounded())
                        }
                    }
                }
            }
        }
    }

    /// A score as two decimals ("0.93"; "1.00"; "-" when not finite).
    static func formatScore(_ score: Float) -> String {
        guard score.isFinite else { return "-" }
        return fixed(Double(score), decimals: 2)
    }
}

/// Diverging heatmaps and CSV export for matrices (e.g. the C'×256 affinity matrix).
public enum Heatmap {
    /// Colour of the negative end.
    public static let negativeColor = RGBCanvas.Color(33, 102, 172)
    /// Colour of zero.
    public static let zeroColor = RGBCanvas.Color.white
    /// Colour of the positive end.
    public static let positiveColor = RGBCanvas.Color(178, 24, 43)
    /// Colour of NaN and infinite cells.
    public static let invalidColor = RGBCanvas.Color(128, 128, 128)

    /// The colour of `value` on a symmetric scale `[−scale, scale]`: blue below zero, white at zero,
    /// red above, linear in between; values beyond the scale saturate; non-finite → gray.
    public static func color(_ value: Float, scale: Float) -> RGBCanvas.Color {
        guard value.isFinite else { return invalidColor }
        guard scale > 0 else { return zeroColor }
        let t = value / scale
        return t < 0 ? .mix(zeroColor, negativeColor, -t) : .mix(zeroColor, positiveColor, t)
    }

    /// Renders a rows × cols matrix, each cell a `cellSize × cellSize` block, on the symmetric
    /// scale `max |v|` over the finite values.
    /// Shape: `values` rows × cols row-major; output (rows·cellSize) × (cols·cellSize) RGB.
    /// - Throws: `ImageError.invalidArgument` when the count is not rows·cols, a size is not
    ///   positive, or the image would exceed 16384 pixels per side.
    public static func render(_ values: [Float], rows: Int, cols: Int, cellSize: Int = 4) throws -> PixelImage {
        try check(values, rows: rows, cols: cols)
        guard cellSize > 0, rows * cellSize <= 16384, cols * cellSize <= 16384 else {
            throw ImageError.invalidArgument("cell size \(cellSize) gives a \(cols * cellSize)×\(rows * cellSize) image")
        }
        let scale = values.reduce(Float(0)) { $1.isFinite ? max($0, abs($1)) : $0 }
        var canvas = RGBCanvas(width: cols * cellSize, height: rows * cellSize)
        for r in 0..<rows {
            for c in 0..<cols {
                canvas.fill(x: c * cellSize, y: r * cellSize, width: cellSize, height: cellSize,
                            color: color(values[r * cols + c], scale: scale))
            }
        }
        return canvas.pixelImage
    }

    /// The matrix as CSV: one line per row, values separated by commas, each printed with Swift's
    /// shortest round-trip representation (`Float.description`; `nan`, `inf`, `-inf` as such).
    /// - Throws: `ImageError.invalidArgument` when the count is not rows·cols.
    public static func csv(_ values: [Float], rows: Int, cols: Int) throws -> String {
        try check(values, rows: rows, cols: cols)
        var text = ""
        text.reserveCapacity(rows * cols * 12)
        for r in 0..<rows {
            for c in 0..<cols {
                if c > 0 { text += "," }
                text += values[r * cols + c].description
            }
            text += "\n"
        }
        return text
    }

    /// Writes `csv(values, rows:, cols:)` to `path` atomically.
    /// - Throws: `ImageError.invalidArgument`, `ImageError.io`.
    public static func writeCSV(_ values: [Float], rows: Int, cols: Int, to path: String) throws {
        let text = try csv(values, rows: rows, cols: cols)
        try mappingFileErrors { try AtomicFile.write(text: text, to: path) }
    }

    private static func check(_ values: [Float], rows: Int, cols: Int) throws {
        guard rows > 0, cols > 0, values.count == rows * cols else {
            throw ImageError.invalidArgument("a \(rows)×\(cols) matrix needs \(max(0, rows * cols)) values, got \(values.count)")
        }
    }
}

/// Confusion-matrix figures: cells shaded by the row-normalised value, with counts and row
/// percentages printed in the 5×7 bitmap font.
public enum ConfusionMatrixPlot {
    /// Colour of a cell holding the whole row (value 1); value 0 is white.
    public static let fullColor = RGBCanvas.Color(8, 48, 107)

    /// Geometry of a rendered figure, for tests and for callers that annotate it.
    public struct Layout: Equatable, Sendable {
        /// Left edge of the cell grid.
        public var gridX: Int
        /// Top edge of the cell grid.
        public var gridY: Int
        /// Side of one cell.
        public var cellSize: Int
        /// Classes (rows = true class, columns = predicted class).
        public var classes: Int

        /// The centre of cell (row, column).
        public func cellCenter(row: Int, column: Int) -> (x: Int, y: Int) {
            (gridX + column * cellSize + cellSize / 2, gridY + row * cellSize + cellSize / 2)
        }
    }

    /// The layout `render` uses for these class names and cell size.
    public static func layout(classNames: [String], cellSize: Int) -> Layout {
        let labelWidth = classNames.map { BitmapFont.width(of: $0, scale: 2) }.max() ?? 0
        let gridX = max(labelWidth, BitmapFont.width(of: "TRUE", scale: 2)) + 24
        let gridY = BitmapFont.height(scale: 2) * 2 + 30
        return Layout(gridX: gridX, gridY: gridY, cellSize: cellSize, classes: classNames.count)
    }

    /// Renders an n × n confusion matrix (rows = true class, columns = predicted class).
    ///
    /// Each cell is shaded from white (0) to dark blue (1) by `counts[r][c] / Σ_c counts[r][c]`
    /// and shows the count and that fraction as a percentage (one decimal); text is white on dark
    /// cells. Column titles ("PREDICTED", class names) on top, row titles ("TRUE", class names) on
    /// the left.
    /// - Throws: `ImageError.invalidArgument` when `counts` is not square with one row per class
    ///   name, a count is negative, or `cellSize < 40`.
    public static func render(_ counts: [[Int]], classNames: [String] = ["NORMAL", "CP", "COVID"],
                              cellSize: Int = 96) throws -> PixelImage {
        let n = classNames.count
        guard n > 0, counts.count == n, counts.allSatisfy({ $0.count == n }) else {
            throw ImageError.invalidArgument("the confusion matrix must be \(n)×\(n), one row and column per class name")
        }
        guard counts.allSatisfy({ $0.allSatisfy { $0 >= 0 } }) else {
            throw ImageError.invalidArgument("confusion-matrix counts must not be negative")
        }
        guard cellSize >= 40 else { throw ImageError.invalidArgument("cell size must be at least 40 pixels, got \(cellSize)") }
        let layout = self.layout(classNames: classNames, cellSize: cellSize)
        let width = layout.gridX + n * cellSize + 12
        let height = layout.gridY + n * cellSize + 12
        var canvas = RGBCanvas(width: width, height: height)
        let ink = RGBCanvas.Color(30, 30, 30)
        canvas.drawText("PREDICTED", centerX: layout.gridX + n * cellSize / 2, centerY: 6 + BitmapFont.height(scale: 2) / 2,
                        scale: 2, color: ink)
        canvas.drawText("TRUE", x: 8, y: layout.gridY - BitmapFont.height(scale: 2) - 10, scale: 2, color: ink)
        for (i, name) in classNames.enumerated() {
            canvas.drawText(name, centerX: layout.gridX + i * cellSize + cellSize / 2,
                            centerY: layout.gridY - 8 - BitmapFont.height(scale: 2) / 2, scale: 2, color: ink)
            canvas.drawText(name, x: 8, y: layout.gridY + i * cellSize + cellSize / 2 - BitmapFont.height(scale: 2) / 2,
                            scale: 2, color: ink)
        }
        let countScale = cellSize >= 90 ? 3 : 2
        let percentScale = cellSize >= 90 ? 2 : 1
        for r in 0..<n {
            let total = counts[r].reduce(0, +)
            for c in 0..<n {
                let value: Float = total > 0 ? Float(counts[r][c]) / Float(total) : 0
                let x = layout.gridX + c * cellSize, y = layout.gridY + r * cellSize
                canvas.fill(x: x, y: y, width: cellSize, height: cellSize, color: .mix(.white, fullColor, value))
                let text: RGBCanvas.Color = value > 0.5 ? .white : ink
                let center = layout.cellCenter(row: r, column: c)
                canvas.drawText(String(counts[r][c]), centerX: center.x, centerY: center.y - cellSize / 8,
                                scale: countScale, color: text)
                let percent = total > 0 ? fixed(Double(value) * 100, decimals: 1) + "%" : "-"
                canvas.drawText(percent, centerX: center.x, centerY: center.y + cellSize / 4, scale: percentScale, color: text)
            }
        }
        // Grid lines.
        let line = RGBCanvas.Color(160, 160, 160)
        for i in 0...n {
            canvas.fill(x: layout.gridX + i * cellSize, y: layout.gridY, width: 1, height: n * cellSize + 1, color: line)
            canvas.fill(x: layout.gridX, y: layout.gridY + i * cellSize, width: n * cellSize + 1, height: 1, color: line)
        }
        return canvas.pixelImage
    }
}

/// `value` printed with exactly `decimals` digits after the point (round half away from zero).
func fixed(_ value: Double, decimals: Int) -> String {
    guard value.isFinite else { return value.description }
    var factor = 1.0
    for _ in 0..<decimals { factor *= 10 }
    let scaled = (abs(value) * factor).rounded()
    let integer = Int(scaled / factor)
    let fraction = Int(scaled - Double(integer) * factor)
    var digits = String(fraction)
    while digits.count < decimals { digits = "0" + digits }
    let sign = value < 0 && scaled != 0 ? "-" : ""
    return decimals > 0 ? "\(sign)\(integer).\(digits)" : "\(sign)\(integer)"
}
