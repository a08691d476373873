// The box of detections, targets and overlays (one type for Detection and Imaging).

/// An axis-aligned box `(x1, y1, x2, y2)` in continuous pixel coordinates (x = column, y = row).
///
/// torchvision convention: no "+1" in widths, `width = x2 − x1`.
public struct Box: Equatable, Sendable, Codable, CustomStringConvertible {
    /// Left edge (column).
    public var x1: Float
    /// Top edge (row).
    public var y1: Float
    /// Right edge (column).
    public var x2: Float
    /// Bottom edge (row).
    public var y2: Float

    /// A box from its edges; no order is enforced (`x2 < x1` gives a negative width).
    @inline(__always)
    public init(_ x1: Float, _ y1: Float, _ x2: Float, _ y2: Float) {
        self.x1 = x1; self.y1 = y1; self.x2 = x2; self.y2 = y2
    }

    /// `x2 − x1` (may be negative for a degenerate box).
    @inline(__always) public var width: Float { x2 - x1 }
    /// `y2 − y1`.
    @inline(__always) public var height: Float { y2 - y1 }
    /// `width · height`, computed as torchvision's `box_area`.
    @inline(__always) public var area: Float { (x2 - x1) * (y2 - y1) }

    /// The box with every coordinate multiplied by `s` (image ↔ feature-map coordinates).
    public func scaled(by s: Float) -> Box { Box(x1 * s, y1 * s, x2 * s, y2 * s) }

    /// A box with corners `(x1, y1)` and `(x2, y2)`.
    public init(x1: Float, y1: Float, x2: Float, y2: Float) {
        self.init(x1, y1, x2, y2)
    }

    /// `Box(x1, y1, x2, y2)`.
    public var description: String { "Box(\(x1), \(y1), \(x2), \(y2))" }
}
