import Foundation

/// Encodes boxes as deltas `(dx, dy, dw, dh)` relative to a reference box and back (MODEL.md §4.3).
///
/// All arithmetic is Float, in the order torchvision's `BoxCoder` evaluates it, so decoded boxes
/// agree with the reference to rounding.
public struct BoxCoder: Sendable {
    /// `(wx, wy, ww, wh)`.
    public var weights: (Float, Float, Float, Float)
    /// Upper bound of the decoded `dw`, `dh` (after division by the weights): ln(1000/16).
    public var clamp: Float

    /// A coder with the given weights and the clamp ln(1000/16).
    /// - Parameter weights: `(wx, wy, ww, wh)`, the factors of dx, dy, dw, dh.
    public init(weights: (Float, Float, Float, Float)) {
        self.weights = weights
        self.clamp = Float(Foundation.log(1000.0 / 16.0))
    }

    /// The RPN coder, weights (1, 1, 1, 1).
    public static let rpn = BoxCoder(weights: (1, 1, 1, 1))
    /// The RoI-head coder, weights (10, 10, 5, 5).
    public static let roi = BoxCoder(weights: (10, 10, 5, 5))

    /// Deltas of `target` with respect to `reference`:
    /// `dx = wx·(gcx − cx)/w`, `dy = wy·(gcy − cy)/h`, `dw = ww·ln(gw/w)`, `dh = wh·ln(gh/h)`.
    @inline(__always)
    public func encode(_ target: Box, reference: Box) -> (Float, Float, Float, Float) {
        let (wx, wy, ww, wh) = weights
        let exW = reference.x2 - reference.x1, exH = reference.y2 - reference.y1
        let exCx = reference.x1 + 0.5 * exW, exCy = reference.y1 + 0.5 * exH
        let gtW = target.x2 - target.x1, gtH = target.y2 - target.y1
        let gtCx = target.x1 + 0.5 * gtW, gtCy = target.y1 + 0.5 * gtH
        return (wx * (gtCx - exCx) / exW,
                wy * (gtCy - exCy) / exH,
                ww * Foundation.log(gtW / exW),
                wh * Foundation.log(gtH / exH))
    }

    /// The box that deltas `d` describe relative to `reference`: divide by the weights, clamp dw/dh
    /// at `clamp`, `pcx = dx·w + cx`, `pw = e^dw·w`, box = `pcx ± 0.5·pw` (likewise for y).
    @inline(__always)
    public func decode(_ d: (Float, Float, Float, Float), reference: Box) -> Box {
        let (wx, wy, ww, wh) = weights
        let w = reference.x2 - reference.x1, h = reference.y2 - reference.y1
        let cx = reference.x1 + 0.5 * w, cy = reference.y1 + 0.5 * h
        let dx = d.0 / wx, dy = d.1 / wy
        let dw = min(d.2 / ww, clamp), dh = min(d.3 / wh, clamp)
        let pcx = dx * w + cx, pcy = dy * h + cy
        let pw = Foundation.exp(dw) * w, ph = Foundation.exp(dh) * h
        let hw = 0.5 * pw, hh = 0.5 * ph
        return Box(pcx - hw, pcy - hh, pcx + hw, pcy + hh)
    }
}

/// The anchor generator of MODEL.md §4.1 (one feature level).
public enum Anchors {
    /// Anchor sizes in pixels: (2, 4, 8, 16, 32).
    public static let sizes: [Float] = [2, 4, 8, 16, 32]
    /// Aspect ratios h/w: (0.1, 0.25, 0.5, 1, 1.5, 2).
    public static let aspectRatios: [Float] = [0.1, 0.25, 0.5, 1, 1.5, 2]

    /// The base anchors centred on the origin, ratio-major (`a = ratioIndex·sizes.count + sizeIndex`).
    ///
    /// For ratio r and size s: `hr = √r`, `wr = 1/hr`, `w = wr·s`, `h = hr·s` (Float), box
    /// `(−w/2, −h/2, w/2, h/2)` rounded half to even (`torch.round`).
    public static func baseAnchors(sizes: [Float], aspectRatios: [Float]) -> [Box] {
        var out: [Box] = []
        out.reserveCapacity(sizes.count * aspectRatios.count)
        for r in aspectRatios {
            let hr = r.squareRoot(), wr = 1 / hr
            for s in sizes {
                let w = wr * s, h = hr * s
                func rnd(_ v: Float) -> Float { (v / 2).rounded(.toNearestOrEven) }
                out.append(Box(rnd(-w), rnd(-h), rnd(w), rnd(h)))
            }
        }
        return out
    }

    /// All anchors of a feature map: `base[a]` shifted by `(x·strideX, y·strideY)`, index
    /// `(y·featureWidth + x)·base.count + a`, no half-stride offset. Count H·W·A.
    public static func grid(featureHeight: Int, featureWidth: Int, strideY: Int, strideX: Int, base: [Box]) -> [Box] {
        let a = base.count
        var out = [Box](repeating: Box(0, 0, 0, 0), count: featureHeight * featureWidth * a)
        for y in 0..<featureHeight {
            let sy = Float(y * strideY)
            for x in 0..<featureWidth {
                let sx = Float(x * strideX), o = (y * featureWidth + x) * a
                for k in 0..<a {
                    let b = base[k]
                    out[o + k] = Box(b.x1 + sx, b.y1 + sy, b.x2 + sx, b.y2 + sy)
                }
            }
        }
        return out
    }
}
