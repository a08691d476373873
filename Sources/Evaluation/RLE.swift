// COCO's run-length encoding of binary masks: encode, decode, area, box, compressed strings,
// merge and IoU. Written from the documented format (column-major runs, first run = zeros).

/// A binary mask in COCO's run-length encoding.
///
/// The mask is read **column-major** (x outer, y inner: pixel index `x * height + y`), as COCO does
/// (Fortran order of an H×W array). `counts` alternates runs of 0s and 1s and always starts with a
/// run of 0s, which may be empty: an all-ones 2×2 mask is `[0, 4]`, an all-zero one `[4]`.
/// Masks encoded here are canonical (no empty run except possibly the first); counts read from a
/// file are kept as given, and every operation below is defined on them as COCO defines it.
public struct RLE: Hashable, Sendable {
    /// Number of rows of the mask.
    public let height: Int
    /// Number of columns of the mask.
    public let width: Int
    /// Alternating run lengths (0s, 1s, 0s, …) in column-major order; they sum to `height * width`.
    public let counts: [UInt32]

    /// Creates an RLE from run lengths, checking them.
    /// - Throws: `EvaluationError.invalidRLE` when a count is negative or above `UInt32.max`, or the
    ///   counts do not sum to `height * width`.
    public init(height: Int, width: Int, counts: [Int]) throws {
        guard height >= 0, width >= 0 else { throw EvaluationError.invalidRLE("negative size \(height)×\(width)") }
        var c = [UInt32]()
        c.reserveCapacity(counts.count)
        var sum = 0
        for v in counts {
            guard v >= 0, v <= Int(UInt32.max) else { throw EvaluationError.invalidRLE("count \(v) out of range") }
            c.append(UInt32(v))
            sum += v
        }
        guard sum == height * width else {
            throw EvaluationError.invalidRLE("counts sum to \(sum), expected \(height)×\(width) = \(height * width)")
        }
        self.height = height
        self.width = width
        self.counts = c
    }

    /// Creates an RLE from unsigned run lengths, checking their sum.
    /// - Throws: `EvaluationError.invalidRLE` when the counts do not sum to `height * width`.
    public init(height: Int, width: Int, counts: [UInt32]) throws {
        guard height >= 0, width >= 0 else { throw EvaluationError.invalidRLE("negative size \(height)×\(width)") }
        var sum = 0
        for v in counts { sum += Int(v) }
        guard sum == height * width else {
            throw EvaluationError.invalidRLE("counts sum to \(sum), expected \(height)×\(width) = \(height * width)")
        }
        self.height = height
        self.width = width
        self.counts = counts
    }

    /// Trusted initializer for counts produced by this module.
    init(unchecked height: Int, _ width: Int, _ counts: [UInt32]) {
        self.height = height
        self.width = width
        self.counts = counts
    }

    /// The empty (all-zero) mask of the given size.
    public static func empty(height: Int, width: Int) -> RLE {
        RLE(unchecked: height, width, [UInt32(height * width)])
    }

    // MARK: Encode / decode

    /// Encodes a binary mask (row-major in memory, column-major runs as COCO).
    public init(mask: BinaryMask) {
        self = mask.pixels.withUnsafeBufferPointer { RLE(rowMajor: $0, height: mask.height, width: mask.width) }
    }

    /// Encodes a row-major `height × width` buffer of 0/nonzero bytes.
    /// - Precondition: `pixels.count == height * width`.
    public init(rowMajor pixels: UnsafeBufferPointer<UInt8>, height: Int, width: Int) {
        precondition(height >= 0 && width >= 0 && pixels.count == height * width, "RLE: buffer size mismatch")
        var runs = [UInt32]()
        runs.reserveCapacity(64)
        guard let base = pixels.baseAddress, height > 0, width > 0 else {
            self.init(unchecked: height, width, [UInt32(height * width)])
            return
        }
        var current: UInt8 = 0
        var run: UInt32 = 0
        for x in 0..<width {
            var p = base + x
            for _ in 0..<height {
                let v: UInt8 = p.pointee != 0 ? 1 : 0
                if v != current {
                    runs.append(run)
                    run = 0
                    current = v
                }
                run &+= 1
                p += width
            }
        }
        runs.append(run)
        self.init(unchecked: height, width, runs)
    }

    /// Encodes a column-major buffer (pixel `x * height + y`), the layout COCO and NumPy's Fortran order use.
    /// - Precondition: `pixels.count == height * width`.
    public init(columnMajor pixels: UnsafeBufferPointer<UInt8>, height: Int, width: Int) {
        precondition(height >= 0 && width >= 0 && pixels.count == height * width, "RLE: buffer size mismatch")
        var runs = [UInt32]()
        runs.reserveCapacity(64)
        var current: UInt8 = 0
        var run: UInt32 = 0
        for i in 0..<pixels.count {
            let v: UInt8 = pixels[i] != 0 ? 1 : 0
            if v != current {
                runs.append(run)
                run = 0
                current = v
            }
            run &+= 1
        }
        runs.append(run)
        self.init(unchecked: height, width, runs)
    }

    /// Decodes to a row-major binary mask.
    public func decode() -> BinaryMask {
        guard height > 0, width > 0 else { return BinaryMask(height: height, width: width) }
        let h = height, w = width
        var pixels = [UInt8](repeating: 0, count: h * w)
        pixels.withUnsafeMutableBufferPointer { out in
            let base = out.baseAddress!
            counts.withUnsafeBufferPointer { cnt in
                var pos = 0  // column-major position
                for j in 0..<cnt.count {
                    let n = Int(cnt[j])
                    if j & 1 == 1 {
                        // Ones from column-major pos ..< pos+n: walk column by column.
                        var x = pos / h, y = pos - x * h
                        var left = n
                        while left > 0 {
                            let take = min(left, h - y)
                            var p = base + y * w + x
                            for _ in 0..<take { p.pointee = 1; p += w }
                            left -= take
                            x += 1
                            y = 0
                        }
                    }
                    pos += n
                }
            }
        }
        return BinaryMask(unchecked: h, w, pixels)
    }

    /// Decodes to a column-major byte buffer (pixel `x * height + y`), COCO's layout.
    public func decodeColumnMajor() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: height * width)
        out.withUnsafeMutableBufferPointer { o in
            var pos = 0
            for (j, c) in counts.enumerated() {
                let n = Int(c)
                if j & 1 == 1 { for i in pos..<(pos + n) { o[i] = 1 } }
                pos += n
            }
        }
        return out
    }

    // MARK: Measures

    /// Number of pixels set to 1 (the sum of the odd-indexed runs).
    public var area: Int {
        var s = 0
        var j = 1
        while j < counts.count { s += Int(counts[j]); j += 2 }
        return s
    }

    /// The bounding box `[x, y, w, h]` of the set pixels in pixel units (`w = xmax − xmin + 1`), as
    /// COCO's `toBbox`; `[0, 0, 0, 0]` for an empty mask.
    ///
    /// Computed from run boundaries: a run's first and last pixel extend the box, and a run that
    /// crosses a column boundary spans every row. A trailing run of zeros is skipped.
    public var boundingBox: BoundingBox {
        let h = height
        let m = counts.count & ~1
        guard m > 0, h > 0, width > 0 else { return BoundingBox(x: 0, y: 0, width: 0, height: 0) }
        var xs = width, ys = h, xe = 0, ye = 0
        var cc = 0
        var startColumn = 0
        for j in 0..<m {
            cc += Int(counts[j])
            let t = cc - (j & 1)  // even j: first pixel of the next 1-run; odd j: last pixel of this 1-run
            let x = t / h, y = t - (t / h) * h
            if j & 1 == 0 {
                startColumn = x
            } else if startColumn < x {
                ys = 0
                ye = h - 1
            }
            xs = min(xs, x); xe = max(xe, x)
            ys = min(ys, y); ye = max(ye, y)
        }
        return BoundingBox(x: Double(xs), y: Double(ys), width: Double(xe - xs + 1), height: Double(ye - ys + 1))
    }

    // MARK: Compressed counts (COCO's string form)

    /// The counts in COCO's compressed string form.
    ///
    /// Each count from the fourth on is stored as its difference to the count two places before; each
    /// value is written in little-endian groups of 5 bits, one character (`48 + group`) per group, bit
    /// `0x20` set on every group but the last, and the last group's bit `0x10` carrying the sign.
    public var compressedCounts: String {
        var out = [UInt8]()
        out.reserveCapacity(counts.count * 2)
        for i in 0..<counts.count {
            var x = Int(counts[i])
            if i > 2 { x -= Int(counts[i - 2]) }
            var more = true
            while more {
                var c = x & 0x1f
                x >>= 5  // arithmetic shift: negative values stay negative
                more = (c & 0x10) != 0 ? x != -1 : x != 0
                if more { c |= 0x20 }
                out.append(UInt8(c + 48))
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes COCO's compressed count string (see `compressedCounts`).
    /// - Throws: `EvaluationError.invalidRLE` for characters outside `'0'...'o'`, a truncated value,
    ///   counts out of range, or counts that do not sum to `height * width`.
    public init(compressedCounts string: String, height: Int, width: Int) throws {
        var values = [Int]()
        let bytes = Array(string.utf8)
        var p = 0
        while p < bytes.count {
            var x = 0, k = 0, more = true
            while more {
                guard p < bytes.count else { throw EvaluationError.invalidRLE("truncated compressed counts") }
                let c = Int(bytes[p]) - 48
                guard c >= 0, c < 64 else { throw EvaluationError.invalidRLE("character \(bytes[p]) outside the count alphabet") }
                guard k < 12 else { throw EvaluationError.invalidRLE("compressed count too long") }
                x |= (c & 0x1f) << (5 * k)
                more = (c & 0x20) != 0
                p += 1
                k += 1
                if !more && (c & 0x10) != 0 { x |= -1 << (5 * k) }
            }
            if values.count > 2 { x += values[values.count - 2] }
            values.append(x)
        }
        try self.init(height: height, width: width, counts: values)
    }

    // MARK: Set operations

    /// The union of RLEs of one size (COCO `merge`, intersect = false); the result is canonical.
    /// A single input is returned unchanged.
    /// - Throws: `EvaluationError.shapeMismatch` when sizes differ or the list is empty.
    public static func union(_ rles: [RLE]) throws -> RLE {
        try combineAll(rles, intersect: false)
    }

    /// The intersection of RLEs of one size (COCO `merge`, intersect = true); the result is canonical.
    /// - Throws: `EvaluationError.shapeMismatch` when sizes differ or the list is empty.
    public static func intersection(_ rles: [RLE]) throws -> RLE {
        try combineAll(rles, intersect: true)
    }

    private static func combineAll(_ rles: [RLE], intersect: Bool) throws -> RLE {
        guard let first = rles.first else { throw EvaluationError.shapeMismatch("merge of no masks") }
        for r in rles where r.height != first.height || r.width != first.width {
            throw EvaluationError.shapeMismatch("merge of \(first.height)×\(first.width) and \(r.height)×\(r.width)")
        }
        var acc = first
        for r in rles.dropFirst() { acc = combine(acc, r, intersect: intersect) }
        return acc
    }

    /// Pixelwise OR (or AND) of two same-size RLEs, canonical output.
    static func combine(_ a: RLE, _ b: RLE, intersect: Bool) -> RLE {
        let total = a.height * a.width
        var out = [UInt32]()
        out.reserveCapacity(a.counts.count + b.counts.count)
        a.counts.withUnsafeBufferPointer { ca in
            b.counts.withUnsafeBufferPointer { cb in
                var ia = 0, ib = 0
                var ra = ca.isEmpty ? 0 : Int(ca[0]), rb = cb.isEmpty ? 0 : Int(cb[0])
                var va = false, vb = false
                var current = false
                var run = 0
                var pos = 0
                while pos < total {
                    while ra == 0 && ia + 1 < ca.count { ia += 1; ra = Int(ca[ia]); va.toggle() }
                    while rb == 0 && ib + 1 < cb.count { ib += 1; rb = Int(cb[ib]); vb.toggle() }
                    let step = min(ra, rb)
                    if step == 0 { break }  // unreachable for valid counts
                    let v = intersect ? (va && vb) : (va || vb)
                    if v != current {
                        out.append(UInt32(run))
                        run = 0
                        current = v
                    }
                    run += step
                    pos += step
                    ra -= step
                    rb -= step
                }
                out.append(UInt32(run))
            }
        }
        return RLE(unchecked: a.height, a.width, out)
    }

    /// Number of pixels set in both masks (same size assumed).
    static func intersectionArea(_ a: RLE, _ b: RLE) -> Int {
        var inter = 0
        a.counts.withUnsafeBufferPointer { ca in
            b.counts.withUnsafeBufferPointer { cb in
                guard !ca.isEmpty, !cb.isEmpty else { return }
                var ia = 0, ib = 0
                var ra = Int(ca[0]), rb = Int(cb[0])
                var va = false, vb = false
                while true {
                    while ra == 0 && ia + 1 < ca.count { ia += 1; ra = Int(ca[ia]); va.toggle() }
                    while rb == 0 && ib + 1 < cb.count { ib += 1; rb = Int(cb[ib]); vb.toggle() }
                    let step = min(ra, rb)
                    if step == 0 { break }
                    if va && vb { inter += step }
                    ra -= step
                    rb -= step
                }
            }
        }
        return inter
    }

    // MARK: IoU

    /// IoU of a detection `dt` with a ground truth `gt`, as COCO's `maskUtils.iou`.
    ///
    /// `|dt ∩ gt| / |dt ∪ gt|`, or `|dt ∩ gt| / |dt|` when `gt` is a crowd region. 0 when the boxes
    /// of the two masks do not overlap or the intersection is empty; −1 when the sizes differ (and the
    /// boxes overlap), which never matches any threshold.
    public static func iou(_ dt: RLE, _ gt: RLE, gtIsCrowd: Bool = false) -> Double {
        iou(dt, gt, gtIsCrowd: gtIsCrowd, dtArea: dt.area, gtArea: gt.area, dtBox: dt.boundingBox, gtBox: gt.boundingBox)
    }

    static func iou(_ dt: RLE, _ gt: RLE, gtIsCrowd: Bool, dtArea: Int, gtArea: Int, dtBox: BoundingBox, gtBox: BoundingBox) -> Double {
        if BoundingBox.iou(dtBox, gtBox, gtIsCrowd: gtIsCrowd) <= 0 { return 0 }
        if dt.height != gt.height || dt.width != gt.width { return -1 }
        let i = intersectionArea(dt, gt)
        if i == 0 { return 0 }
        let u = gtIsCrowd ? dtArea : dtArea + gtArea - i
        return Double(i) / Double(u)
    }

    /// The D×G IoU matrix of detections against ground truths (`result[d][g]`), as COCO's `maskUtils.iou`.
    /// - Precondition: `gtIsCrowd.count == groundTruths.count`.
    public static func iouMatrix(detections: [RLE], groundTruths: [RLE], gtIsCrowd: [Bool]) -> [[Double]] {
        precondition(gtIsCrowd.count == groundTruths.count, "iouMatrix: one crowd flag per ground truth")
        let dA = detections.map(\.area), gA = groundTruths.map(\.area)
        let dB = detections.map(\.boundingBox), gB = groundTruths.map(\.boundingBox)
        return detections.indices.map { d in
            groundTruths.indices.map { g in
                iou(detections[d], groundTruths[g], gtIsCrowd: gtIsCrowd[g], dtArea: dA[d], gtArea: gA[g], dtBox: dB[d], gtBox: gB[g])
            }
        }
    }
}

// MARK: - JSON form

extension RLE: Codable {
    private enum CodingKeys: String, CodingKey { case size, counts }

    /// Reads `{"size": [h, w], "counts": "<compressed>"}` or `{"size": [h, w], "counts": [n, …]}`.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let size = try c.decode([Int].self, forKey: .size)
        guard size.count == 2 else {
            throw DecodingError.dataCorruptedError(forKey: .size, in: c, debugDescription: "size must be [height, width]")
        }
        do {
            if let s = try? c.decode(String.self, forKey: .counts) {
                try self.init(compressedCounts: s, height: size[0], width: size[1])
            } else {
                let list = try c.decode([Int].self, forKey: .counts)
                try self.init(height: size[0], width: size[1], counts: list)
            }
        } catch let e as EvaluationError {
            throw DecodingError.dataCorruptedError(forKey: .counts, in: c, debugDescription: e.description)
        }
    }

    /// Writes `{"size": [h, w], "counts": "<compressed>"}`.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode([height, width], forKey: .size)
        try c.encode(compressedCounts, forKey: .counts)
    }
}
