/// The lung field of a chest-CT slice: the large dark (aerated) regions inside the body, with what
/// lies enclosed in them (vessels, lesions) filled in.
///
/// A slice in a lung window (the phantoms use −1000…400 HU → 0…1) has three intensity groups: air
/// outside the body and aerated lung near 0–0.15, soft tissue and fat near 0.6–0.8, bone above.
/// The steps:
/// 1. threshold at Otsu's level of the whole slice (it falls between the air/lung group and the
///    soft-tissue group, near the −400 HU that separates aerated lung from tissue in this window);
///    the level is kept within `LungField.thresholdRange` so that an odd histogram cannot put it
///    inside one of the groups;
/// 2. dark pixels connected to the image border (4-connected) are the air around the body: dropped;
/// 3. the remaining dark 8-connected components are kept when they cover at least
///    `minimumAreaFraction` of the slice (drops the trachea, bowel gas specks and noise);
/// 4. holes in what is kept (4-connected non-field regions not reaching the border) are filled when
///    smaller than `maximumHoleFraction` of the field: vessels, bronchial walls and lesions inside
///    the lung, but not the mediastinum should both lungs happen to enclose it.
///
/// On the phantoms the field matches the lung and lesion labels with IoU ≥ 0.95 on normal and
/// COVID-19 slices. A consolidation against the chest wall is as dense as the wall and is not
/// enclosed by aerated lung, so it is left out: on such pneumonia slices the field misses the
/// lesion's bite (IoU ≈ 0.7–0.9) and the share of the lung field is then overstated.
public enum LungField {
    /// The result of a segmentation at the size it was computed at.
    public struct Mask: Sendable {
        public let width: Int
        public let height: Int
        /// `height × width` bytes, 1 on the lung field, 0 elsewhere.
        public let pixels: [UInt8]
        /// The number of pixels set.
        public let area: Int
        /// The threshold used (values below it are dark), or nil when the slice has no contrast.
        public let threshold: Float?
    }

    /// The range the threshold is kept in (values in [0, 1]); in the −1000…400 HU lung window this
    /// is −860…−160 HU, between aerated lung and soft tissue whatever the histogram.
    public static let thresholdRange: ClosedRange<Float> = 0.1...0.6
    /// Dark components inside the body smaller than this share of the slice are not lung.
    public static let minimumAreaFraction = 0.005
    /// Enclosed holes up to this share of the lung field are filled.
    public static let maximumHoleFraction = 0.2
    /// Slices with more pixels are segmented at a reduced size (box-averaged by an integer factor)
    /// and the area scaled back.
    public static let maximumSegmentationPixels = 1024 * 1024

    /// Segments the lung field of `image` at its own size.
    ///
    /// Shape: the mask is `image.height × image.width`. A slice without contrast (all black, all
    /// white) or without dark regions inside a body gives an empty mask.
    public static func segment(_ image: GrayImage) -> Mask {
        segment(pixels: image.pixels, width: image.width, height: image.height)
    }

    /// The lung-field area of `image` in pixels of its own size. Slices larger than
    /// `maximumSegmentationPixels` are segmented at a reduced size and the count scaled to the
    /// original size.
    public static func area(_ image: GrayImage) -> Int {
        let n = image.width * image.height
        guard n > maximumSegmentationPixels else { return segment(image).area }
        var factor = 2
        while (image.width / factor) * (image.height / factor) > maximumSegmentationPixels { factor += 1 }
        let w = max(1, image.width / factor), h = max(1, image.height / factor)
        var small = [Float](repeating: 0, count: w * h)
        let scale = 1 / Float(factor * factor)
        image.pixels.withUnsafeBufferPointer { src in
            for y in 0..<h {
                for x in 0..<w {
                    var sum: Float = 0
                    for dy in 0..<factor {
                        let row = (y * factor + dy) * image.width + x * factor
                        for dx in 0..<factor { sum += src[row + dx] }
                    }
                    small[y * w + x] = sum * scale
                }
            }
        }
        let m = segment(pixels: small, width: w, height: h)
        return Int((Double(m.area) * Double(n) / Double(w * h)).rounded())
    }

    /// Otsu's threshold of values in [0, 1] on a 256-bin histogram, or nil when every value falls
    /// in one bin (no contrast).
    public static func otsuThreshold(_ pixels: [Float]) -> Float? {
        var histogram = [Int](repeating: 0, count: 256)
        for v in pixels { histogram[bin(v)] += 1 }
        let total = Double(pixels.count)
        guard total > 0, histogram.filter({ $0 > 0 }).count > 1 else { return nil }
        var sumAll = 0.0
        for i in 0..<256 { sumAll += Double(i) * Double(histogram[i]) }
        var weightBelow = 0.0, sumBelow = 0.0
        var best = -1.0, bestBin = 0
        for t in 0..<255 {
            weightBelow += Double(histogram[t])
            sumBelow += Double(t) * Double(histogram[t])
            let weightAbove = total - weightBelow
            if weightBelow == 0 || weightAbove == 0 { continue }
            let meanBelow = sumBelow / weightBelow, meanAbove = (sumAll - sumBelow) / weightAbove
            let between = weightBelow * weightAbove * (meanBelow - meanAbove) * (meanBelow - meanAbove)
            if between > best { best = between; bestBin = t }
        }
        // Dark is `bin <= bestBin`: the level is the upper edge of that bin.
        return Float(bestBin + 1) / 256
    }

    @inline(__always)
    static func bin(_ v: Float) -> Int {
        guard v > 0 else { return 0 }  // also NaN
        return min(255, Int(v * 256))
    }

    /// Segments a `height × width` plane of values in [0, 1].
    static func segment(pixels: [Float], width w: Int, height h: Int) -> Mask {
        let n = w * h
        let empty = Mask(width: w, height: h, pixels: [UInt8](repeating: 0, count: n), area: 0, threshold: nil)
        guard w > 2, h > 2, let otsu = otsuThreshold(pixels) else { return empty }
        let t = min(max(otsu, thresholdRange.lowerBound), thresholdRange.upperBound)
        // 0 bright, 1 dark (candidate), 2 outside air, 3 kept lung field.
        var state = [UInt8](repeating: 0, count: n)
        for i in 0..<n where pixels[i] < t { state[i] = 1 }  // NaN compares false: bright
        var stack: [Int] = []
        stack.reserveCapacity(1024)

        // Outside air: dark pixels 4-connected to the border.
        func flood4(from seeds: [Int], where value: UInt8, set newValue: UInt8) {
            stack.removeAll(keepingCapacity: true)
            for s in seeds where state[s] == value { state[s] = newValue; stack.append(s) }
            while let i = stack.popLast() {
                let x = i % w, y = i / w
                if x > 0, state[i - 1] == value { state[i - 1] = newValue; stack.append(i - 1) }
                if x < w - 1, state[i + 1] == value { state[i + 1] = newValue; stack.append(i + 1) }
                if y > 0, state[i - w] == value { state[i - w] = newValue; stack.append(i - w) }
                if y < h - 1, state[i + w] == value { state[i + w] = newValue; stack.append(i + w) }
            }
        }
        var border: [Int] = []
        border.reserveCapacity(2 * (w + h))
        for x in 0..<w { border.append(x); border.append((h - 1) * w + x) }
        for y in 1..<(h - 1) { border.append(y * w); border.append(y * w + w - 1) }
        flood4(from: border, where: 1, set: 2)

        // Dark components inside the body (8-connected): kept (3) when large enough, else dropped (0).
        let minimumArea = max(1, Int((Double(n) * minimumAreaFraction).rounded(.up)))
        var component: [Int] = []
        var area = 0
        for start in 0..<n where state[start] == 1 {
            floodFill8(&state, width: w, height: h, start: start, from: 1, to: 4, visited: &component)
            let keep = component.count >= minimumArea
            for i in component { state[i] = keep ? 3 : 0 }
            if keep { area += component.count }
        }
        guard area > 0 else { return empty }

        // Holes: non-field regions (4-connected) that do not reach the border.
        var isField = [UInt8](repeating: 0, count: n)
        for i in 0..<n where state[i] == 3 { isField[i] = 1 }
        // 0 unvisited non-field, 1 field, 2 visited non-field.
        let maximumHole = Int(Double(area) * maximumHoleFraction)
        var filled = area
        for start in 0..<n where isField[start] == 0 {
            component.removeAll(keepingCapacity: true)
            isField[start] = 2
            component.append(start)
            var touchesBorder = false
            var head = 0
            while head < component.count {
                let i = component[head]
                head += 1
                let x = i % w, y = i / w
                if x == 0 || y == 0 || x == w - 1 || y == h - 1 { touchesBorder = true }
                if x > 0, isField[i - 1] == 0 { isField[i - 1] = 2; component.append(i - 1) }
                if x < w - 1, isField[i + 1] == 0 { isField[i + 1] = 2; component.append(i + 1) }
                if y > 0, isField[i - w] == 0 { isField[i - w] = 2; component.append(i - w) }
                if y < h - 1, isField[i + w] == 0 { isField[i + w] = 2; component.append(i + w) }
            }
            if !touchesBorder && component.count <= maximumHole {
                for i in component { state[i] = 3 }
                filled += component.count
            }
        }
        var mask = [UInt8](repeating: 0, count: n)
        for i in 0..<n where state[i] == 3 { mask[i] = 1 }
        return Mask(width: w, height: h, pixels: mask, area: filled, threshold: t)
    }
}
