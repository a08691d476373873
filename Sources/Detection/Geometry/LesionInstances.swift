/// One lesion instance of a segmentation target (MODEL.md §1.2).
public struct LesionInstance: Sendable, Equatable {
    /// `(minCol, minRow, maxCol + 1, maxRow + 1)` of the component.
    public var box: Box
    /// [height, width] row-major, 1 exactly on the component's pixels.
    public var mask: [UInt8]
    /// The component's pixel count.
    public var area: Int

    /// An instance from its parts (not checked against each other).
    public init(box: Box, mask: [UInt8], area: Int) {
        self.box = box; self.mask = mask; self.area = area
    }
}

/// §1.2 segmentation targets: a label map (0 bg, 1 lung, 2 GGO, 3 consolidation) → lesion instances: pixels ≥ 2 merged, 8-connected components with area > minArea, box = (minCol, minRow, maxCol+1, maxRow+1), label 1, mask 0/1.
///
/// `labelMap` is [height, width] row-major. Instances come in the order of each component's first
/// pixel in a row-major scan (scikit-image `label` numbering). Components of `minArea` pixels or
/// fewer are dropped. (The original loader's quirk of dropping lesions from a mask with no lung pixel
/// is not reproduced; MODEL.md recommends lesion = value ≥ 2.)
public func lesionInstances(labelMap: UnsafePointer<UInt8>, width: Int, height: Int, minArea: Int = 100) -> [LesionInstance] {
    let n = width * height
    if n <= 0 { return [] }
    // 0: not lesion, 1: lesion not yet visited, 2: visited.
    var state = [UInt8](repeating: 0, count: n)
    for i in 0..<n where labelMap[i] >= 2 { state[i] = 1 }
    var result: [LesionInstance] = []
    var stack: [Int] = []
    var pixels: [Int] = []
    for start in 0..<n where state[start] == 1 {
        state[start] = 2
        stack.append(start)
        pixels.removeAll(keepingCapacity: true)
        var minR = Int.max, maxR = -1, minC = Int.max, maxC = -1
        while let p = stack.popLast() {
            pixels.append(p)
            let r = p / width, c = p % width
            minR = min(minR, r); maxR = max(maxR, r); minC = min(minC, c); maxC = max(maxC, c)
            for dr in -1...1 {
                let rr = r + dr
                if rr < 0 || rr >= height { continue }
                for dc in -1...1 {
                    let cc = c + dc
                    if cc < 0 || cc >= width || (dr == 0 && dc == 0) { continue }
                    let q = rr * width + cc
                    if state[q] == 1 { state[q] = 2; stack.append(q) }
                }
            }
        }
        if pixels.count > minArea {
            var mask = [UInt8](repeating: 0, count: n)
            for p in pixels { mask[p] = 1 }
            result.append(LesionInstance(box: Box(Float(minC), Float(minR), Float(maxC + 1), Float(maxR + 1)),
                                         mask: mask, area: pixels.count))
        }
    }
    return result
}

/// Nearest-neighbour resize of a width × height label map to side × side (torchvision's mask
/// resize in GeneralizedRCNNTransform): output pixel (x, y) takes input pixel
/// (⌊x·width/side⌋, ⌊y·height/side⌋), clamped. Returns `map` itself when no resize is needed.
public func resizeLabelMapNearest(_ map: [UInt8], width: Int, height: Int, to side: Int) -> [UInt8] {
    if width == side && height == side { return map }
    var out = [UInt8](repeating: 0, count: side * side)
    for y in 0..<side {
        let sy = min(Int(Float(y) * Float(height) / Float(side)), height - 1)
        for x in 0..<side {
            let sx = min(Int(Float(x) * Float(width) / Float(side)), width - 1)
            out[y * side + x] = map[sy * width + sx]
        }
    }
    return out
}
