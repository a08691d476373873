/// The model's input pipeline (spec/MODEL.md §1.1, §1.4, §1.5): image → 3×512×512 standardized floats.
///
/// Steps, in the order the original code applies them:
/// 1. gray → three identical channels (PIL `convert('RGB')`), values in [0, 1] (`ToTensor`);
/// 2. resize to exactly 512×512 with bilinear interpolation, `align_corners = false` semantics of
///    `torch.nn.functional.interpolate` (identity for 512×512 inputs, which CNCB slices are).
///    The original loader resizes the 8-bit PIL image with PIL's filter; this pipeline resizes the
///    floats with torch's formula instead (no rounding to 8 bits, no antialias when shrinking);
/// 3. per image, per channel `(x − mean) / std` with the unbiased (N − 1) standard deviation,
///    accumulated in Double.
///
/// The model's own `GeneralizedRCNNTransform` is then the identity (`transformSize` gives 512×512).
public enum Preprocessing {
    /// Side of the square model input.
    public static let modelSide = 512

    /// The model input for an RGB image: resized, standardized per channel.
    ///
    /// Shape: input 3 × H × W; output `[Float]` of 3 × 512 × 512, planar (channel, row, column).
    /// A channel with zero variance (a blank image) becomes all zeros instead of torch's NaNs.
    public static func modelInput(_ image: RGBImage) -> [Float] {
        let side = modelSide
        let plane = side * side
        let inPlane = image.width * image.height
        var out = [Float](repeating: 0, count: 3 * plane)
        image.planes.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for c in 0..<3 {
                    let s = src.baseAddress! + c * inPlane, d = dst.baseAddress! + c * plane
                    resizeBilinear(input: s, inHeight: image.height, inWidth: image.width,
                                   output: d, outHeight: side, outWidth: side)
                    standardize(d, count: plane)
                }
            }
        }
        return out
    }

    /// The model input for a gray image: the gray resized and standardized once, replicated to
    /// three channels (identical to `modelInput(image.rgb)`, a third of the work).
    ///
    /// Shape: input H × W; output `[Float]` of 3 × 512 × 512, planar.
    public static func modelInput(_ image: GrayImage) -> [Float] {
        let side = modelSide
        let plane = side * side
        var out = [Float](repeating: 0, count: 3 * plane)
        image.pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                let d = dst.baseAddress!
                resizeBilinear(input: src.baseAddress!, inHeight: image.height, inWidth: image.width,
                               output: d, outHeight: side, outWidth: side)
                standardize(d, count: plane)
                (d + plane).update(from: d, count: plane)
                (d + 2 * plane).update(from: d, count: plane)
            }
        }
        return out
    }

    /// The model input for a decoded PNG (`PixelImage.rgbImage()` then `modelInput`; gray PNGs take
    /// the single-plane path).
    ///
    /// Shape: output 3 × 512 × 512, planar.
    public static func modelInput(_ image: PixelImage) -> [Float] {
        switch image.format {
        case .gray, .grayAlpha: return modelInput(image.grayImage())
        case .rgb, .rgba: return modelInput(image.rgbImage())
        }
    }

    /// Resizes one plane with bilinear interpolation, `align_corners = false` (torch semantics):
    /// `src = (dst + 0.5)·in/out − 0.5`, clamped below at 0; `x0 = ⌊src⌋`, `x1 = min(x0 + 1, in − 1)`;
    /// weights `1 − λ`, `λ = src − x0`. Equal sizes copy the plane unchanged.
    ///
    /// Shape: input inHeight × inWidth, output outHeight × outWidth, both row-major.
    /// - Precondition: all sizes positive; the buffers do not overlap.
    public static func resizeBilinear(input: UnsafePointer<Float>, inHeight: Int, inWidth: Int,
                                      output: UnsafeMutablePointer<Float>, outHeight: Int, outWidth: Int) {
        precondition(inHeight > 0 && inWidth > 0 && outHeight > 0 && outWidth > 0, "resize sizes must be positive")
        if inHeight == outHeight && inWidth == outWidth {
            output.update(from: input, count: inHeight * inWidth)
            return
        }
        let xTaps = taps(input: inWidth, output: outWidth)
        let yTaps = taps(input: inHeight, output: outHeight)
        xTaps.withUnsafeBufferPointer { xt in
            for oy in 0..<outHeight {
                let ty = yTaps[oy]
                let r0 = input + ty.i0 * inWidth, r1 = input + ty.i1 * inWidth
                let o = output + oy * outWidth
                let wy0 = ty.w0, wy1 = ty.w1
                for ox in 0..<outWidth {
                    let t = xt[ox]
                    o[ox] = wy0 * (t.w0 * r0[t.i0] + t.w1 * r0[t.i1]) + wy1 * (t.w0 * r1[t.i0] + t.w1 * r1[t.i1])
                }
            }
        }
    }

    /// Resizes a gray image (see `resizeBilinear(input:…)`).
    /// - Precondition: `height, width > 0`.
    public static func resized(_ image: GrayImage, height: Int, width: Int) -> GrayImage {
        var out = [Float](repeating: 0, count: height * width)
        image.pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                resizeBilinear(input: src.baseAddress!, inHeight: image.height, inWidth: image.width,
                               output: dst.baseAddress!, outHeight: height, outWidth: width)
            }
        }
        return GrayImage(width: width, height: height, pixels: out)
    }

    private struct Tap {
        var i0: Int, i1: Int, w0: Float, w1: Float
    }

    private static func taps(input: Int, output: Int) -> [Tap] {
        let scale = Float(input) / Float(output)
        return (0..<output).map { o in
            let src = max((Float(o) + 0.5) * scale - 0.5, 0)
            let i0 = min(Int(src), input - 1)
            let i1 = i0 < input - 1 ? i0 + 1 : i0
            let lambda = src - Float(i0)
            return Tap(i0: i0, i1: i1, w0: 1 - lambda, w1: lambda)
        }
    }

    /// Standardizes `count` values in place: `(x − mean) / std`, unbiased std, sums in Double.
    /// Zero variance (or `count < 2`) leaves `x − mean`, i.e. zeros.
    /// - Precondition: `count > 0`.
    public static func standardize(_ values: UnsafeMutablePointer<Float>, count: Int) {
        precondition(count > 0, "cannot standardize an empty plane")
        var sum = 0.0
        for i in 0..<count { sum += Double(values[i]) }
        let mean = sum / Double(count)
        var squares = 0.0
        for i in 0..<count {
            let d = Double(values[i]) - mean
            squares += d * d
        }
        let std = count > 1 ? (squares / Double(count - 1)).squareRoot() : 0
        let inverse = std > 0 ? 1 / std : 1
        for i in 0..<count { values[i] = Float((Double(values[i]) - mean) * inverse) }
    }

    /// The size `GeneralizedRCNNTransform` resizes an H × W image to (MODEL.md §1.5, min_size =
    /// max_size = 512): `scale = min(512 / min(H, W), 512 / max(H, W))`, computed in Float32 as
    /// torchvision does, output side `⌊side · scale⌋` (in Double, as `interpolate` with
    /// `recompute_scale_factor=True`). The float32 scale can make a side one pixel short
    /// (400 → 511), exactly as in the original.
    /// - Precondition: `height, width > 0`.
    public static func transformSize(height: Int, width: Int, minSize: Int = 512, maxSize: Int = 512) -> (height: Int, width: Int) {
        precondition(height > 0 && width > 0, "image size must be positive")
        let shortSide = Float(min(height, width)), longSide = Float(max(height, width))
        let scale = min(Float(minSize) / shortSide, Float(maxSize) / longSide)
        let s = Double(scale)
        return (Int((Double(height) * s).rounded(.down)), Int((Double(width) * s).rounded(.down)))
    }
}
