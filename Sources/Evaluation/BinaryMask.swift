// A binary H×W mask, the common currency of the segmentation metrics.

/// A binary mask of `height × width` pixels, stored row-major (`pixels[y * width + x]`), each 0 or 1.
///
/// Build one from `UInt8` (any nonzero value counts as 1) or `Bool` pixels. `RLE` converts to and
/// from COCO's column-major run-length encoding.
public struct BinaryMask: Hashable, Sendable {
    /// Number of rows (y).
    public let height: Int
    /// Number of columns (x).
    public let width: Int
    /// Row-major pixels, each 0 or 1; `pixels.count == height * width`.
    public private(set) var pixels: [UInt8]

    /// An all-zero mask.
    /// - Precondition: `height >= 0`, `width >= 0`.
    public init(height: Int, width: Int) {
        precondition(height >= 0 && width >= 0, "BinaryMask: negative size")
        self.height = height
        self.width = width
        self.pixels = [UInt8](repeating: 0, count: height * width)
    }

    /// A mask from row-major `UInt8` pixels; nonzero values become 1.
    /// - Throws: `EvaluationError.shapeMismatch` when `pixels.count != height * width` or a size is negative.
    public init(height: Int, width: Int, pixels: [UInt8]) throws {
        guard height >= 0, width >= 0, pixels.count == height * width else {
            throw EvaluationError.shapeMismatch("BinaryMask \(height)×\(width) given \(pixels.count) pixels")
        }
        self.height = height
        self.width = width
        var p = pixels
        p.withUnsafeMutableBufferPointer { b in
            for i in 0..<b.count where b[i] > 1 { b[i] = 1 }
        }
        self.pixels = p
    }

    /// Trusted initializer for 0/1 pixels produced by this module.
    init(unchecked height: Int, _ width: Int, _ pixels: [UInt8]) {
        self.height = height
        self.width = width
        self.pixels = pixels
    }

    /// A mask from row-major `Bool` pixels.
    /// - Throws: `EvaluationError.shapeMismatch` when `pixels.count != height * width` or a size is negative.
    public init(height: Int, width: Int, bools: [Bool]) throws {
        guard height >= 0, width >= 0, bools.count == height * width else {
            throw EvaluationError.shapeMismatch("BinaryMask \(height)×\(width) given \(bools.count) pixels")
        }
        self.height = height
        self.width = width
        self.pixels = bools.map { $0 ? 1 : 0 }
    }

    /// A mask from row-major probabilities: 1 where the value is strictly above `threshold`.
    ///
    /// This is how the evaluation binarises the model's pasted mask probabilities (MODEL.md §10:
    /// probability > 0.5).
    /// - Throws: `EvaluationError.shapeMismatch` when `probabilities.count != height * width`.
    public init(height: Int, width: Int, probabilities: [Float], threshold: Float = 0.5) throws {
        guard height >= 0, width >= 0, probabilities.count == height * width else {
            throw EvaluationError.shapeMismatch("BinaryMask \(height)×\(width) given \(probabilities.count) values")
        }
        self.height = height
        self.width = width
        self.pixels = probabilities.map { $0 > threshold ? 1 : 0 }
    }

    /// A mask from rows of `UInt8` (nonzero = 1); all rows must have the same length.
    /// - Throws: `EvaluationError.shapeMismatch` for ragged rows.
    public init(rows: [[UInt8]]) throws {
        let w = rows.first?.count ?? 0
        guard rows.allSatisfy({ $0.count == w }) else {
            throw EvaluationError.shapeMismatch("BinaryMask rows of unequal length")
        }
        try self.init(height: rows.count, width: w, pixels: rows.flatMap { $0 })
    }

    /// The pixel at row `y`, column `x`.
    /// - Precondition: `0 <= y < height`, `0 <= x < width`.
    public subscript(y: Int, x: Int) -> Bool {
        get {
            precondition(y >= 0 && y < height && x >= 0 && x < width, "BinaryMask index out of range")
            return pixels[y * width + x] != 0
        }
        set {
            precondition(y >= 0 && y < height && x >= 0 && x < width, "BinaryMask index out of range")
            pixels[y * width + x] = newValue ? 1 : 0
        }
    }

    /// Number of pixels set to 1.
    public var area: Int {
        pixels.withUnsafeBufferPointer { b in
            var s = 0
            for v in b { s &+= Int(v) }
            return s
        }
    }

    /// Sets every pixel of the half-open rectangle `x0..<x1 × y0..<y1` (clipped to the mask) to `value`.
    public mutating func fill(x0: Int, y0: Int, x1: Int, y1: Int, value: Bool = true) {
        let xa = max(0, x0), xb = min(width, x1), ya = max(0, y0), yb = min(height, y1)
        guard xa < xb, ya < yb else { return }
        let v: UInt8 = value ? 1 : 0
        let w = width
        pixels.withUnsafeMutableBufferPointer { b in
            for y in ya..<yb {
                let row = y * w
                for x in xa..<xb { b[row + x] = v }
            }
        }
    }
}
