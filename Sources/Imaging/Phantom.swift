#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The three image classes of the model (MODEL.md §1.1): 0 Normal, 1 common pneumonia (CP),
/// 2 COVID-19 (NCP).
public enum PhantomClass: Int, CaseIterable, Sendable, CustomStringConvertible {
    case normal = 0
    case pneumonia = 1
    case covid = 2

    /// The COVIDx-CT file-name prefix: `Normal`, `CP` or `NCP`.
    public var covidxPrefix: String {
        switch self {
        case .normal: return "Normal"
        case .pneumonia: return "CP"
        case .covid: return "NCP"
        }
    }

    /// "normal", "common pneumonia" or "COVID-19".
    public var description: String {
        switch self {
        case .normal: return "normal"
        case .pneumonia: return "common pneumonia"
        case .covid: return "COVID-19"
        }
    }
}

/// The appearance of a lesion: faint ground-glass opacity (label 2) or dense consolidation (label 3).
public enum LesionKind: Sendable, Equatable {
    case groundGlass
    case consolidation
}

/// Which half of the image a lesion lies in (image left / image right; in the radiological
/// convention image left is the patient's right lung).
public enum ImageSide: Sendable, Equatable {
    case left
    case right

    /// The other side.
    public var opposite: ImageSide { self == .left ? .right : .left }
}

/// An axis-aligned pixel box: columns `xmin..<xmax`, rows `ymin..<ymax` (the max is exclusive, as
/// scikit-image's regionprops bbox and the Mask R-CNN targets of MODEL.md §1.2 use it).
public struct PixelBox: Equatable, Sendable {
    /// First column.
    public var xmin: Int
    /// First row.
    public var ymin: Int
    /// Last column + 1.
    public var xmax: Int
    /// Last row + 1.
    public var ymax: Int

    /// A box with the given bounds (max exclusive).
    public init(xmin: Int, ymin: Int, xmax: Int, ymax: Int) {
        self.xmin = xmin
        self.ymin = ymin
        self.xmax = xmax
        self.ymax = ymax
    }

    /// `xmax − xmin`.
    public var width: Int { xmax - xmin }
    /// `ymax − ymin`.
    public var height: Int { ymax - ymin }
}

/// One lesion instance of a phantom slice.
public struct PhantomLesion: Equatable, Sendable {
    /// The lung it lies in.
    public let side: ImageSide
    /// Dominant appearance: `.groundGlass` for the COVID-19-like lesions, `.consolidation` for the
    /// pneumonia-like ones (either may contain some pixels of the other label).
    public let kind: LesionKind
    /// Pixels in the instance (always > 100: one 8-connected component).
    public let area: Int
    /// Pixels labelled 2 (GGO).
    public let groundGlassPixels: Int
    /// Pixels labelled 3 (consolidation).
    public let consolidationPixels: Int
    /// Bounding box (max exclusive).
    public let box: PixelBox
    /// Centroid column.
    public let centroidX: Double
    /// Centroid row.
    public let centroidY: Double
}

/// One generated chest-CT slice with its ground truth.
///
/// Shapes: `image`, `labels`, `instances` are `height × width` bytes, row-major.
public struct PhantomSlice: Sendable {
    /// Columns.
    public let width: Int
    /// Rows.
    public let height: Int
    /// The image class.
    public let phantomClass: PhantomClass
    /// The slice, 8-bit gray (a lung window of −1000…400 HU mapped to 0…255).
    public let image: [UInt8]
    /// Label map (MODEL.md §1.2): 0 background (air, body, mediastinum, bone), 1 lung field,
    /// 2 ground-glass opacity, 3 consolidation.
    public let labels: [UInt8]
    /// Instance map: 0 outside lesions, `i + 1` on the pixels of `lesions[i]`.
    public let instances: [UInt8]
    /// The lesion instances, in instance-map order.
    public let lesions: [PhantomLesion]
    /// Bounding box of the body (what COVIDx-CT split files record; max exclusive).
    public let bodyBox: PixelBox

    /// The slice as floats in [0, 1] (`byte / 255`).
    public var grayImage: GrayImage { GrayImage(bytes: image, width: width, height: height) }

    /// The slice as an 8-bit gray `PixelImage`, ready for `PNG.write`.
    public var pixelImage: PixelImage {
        // The sizes are consistent by construction.
        try! PixelImage(bytes: image, width: width, height: height, format: .gray)
    }

    /// The label map as an 8-bit gray `PixelImage` (values 0…3).
    public var labelImage: PixelImage {
        try! PixelImage(bytes: labels, width: width, height: height, format: .gray)
    }

    /// The binary mask (0/1, `height × width`) of lesion `index`.
    /// - Precondition: `index` is a valid lesion index.
    public func mask(ofLesion index: Int) -> [UInt8] {
        precondition(lesions.indices.contains(index), "lesion \(index) of \(lesions.count)")
        let id = UInt8(index + 1)
        return instances.map { $0 == id ? 1 : 0 }
    }

    /// All instance masks, one `height × width` 0/1 array per lesion.
    public var instanceMasks: [[UInt8]] { lesions.indices.map { mask(ofLesion: $0) } }
}

/// Procedural chest-CT phantoms: the built-in data set, so that training, evaluation and demos run
/// on a fresh machine without the CNCB / COVIDx-CT images.
///
/// A slice is a thorax in a lung window: elliptical body with subcutaneous fat and muscle, two
/// lungs (dark, textured, denser posteriorly) with branching vessels and small bronchi, heart (on
/// most slices), aorta, vertebra with spinal canal, ribs, sternum and a central airway, plus image
/// noise. Everything is drawn in Hounsfield units and windowed to 8 bits at the end.
///
/// Lesion statistics per class (measured over 300 seeded 512² slices per class; the tests check
/// them on 30):
/// - **normal (0)**: no lesion.
/// - **common pneumonia (1)**: one lesion (70 %) or two (30 %); dense consolidation (label 3)
///   anywhere in the lung with a posterior bias, large (lobar: radii 5.5–8.5 % of the width, clipped
///   by the lung; 5th–95th percentile area ≈ 1,000–5,400 px, median ≈ 2,900), about half with a
///   ground-glass halo (label 2), often with air bronchograms. Unilateral: a second lesion goes to
///   the same lung 80 % of the time (≈ 7 % of CP slices are bilateral).
/// - **COVID-19 (2)**: two to six lesions (drawn with weights 20/25/25/18/12 %), faint ground-glass
///   patches (label 2; +200…330 HU over the lung), subpleural — each lies within 3 px of the lung
///   boundary on the chest-wall side — and elongated along it; bilateral in ≈ 85–90 % (both lungs
///   then hold at least one); ≈ 20 % of lesions have a small consolidation core (label 3).
///   Area ≈ 330–1,100 px (5th–95th percentile), median ≈ 625.
///
/// A lesion that does not fit its lung after 120 tries (crowding) goes to the other lung. Below
/// 256² the lungs get crowded: lesions are near the size floor (110–150 px) and a 128² COVID-19
/// slice holds at most about five; the class minimum (1 CP, 2 COVID-19 lesions) was met in every
/// one of 300 seeded 128² slices, but is not a hard guarantee at that size.
///
/// The classes overlap on purpose (two-lesion slices of both classes, unilateral COVID-19, bilateral
/// CP, GGO in CP halos and consolidation in COVID cores) but differ in density, count, position
/// and laterality. Every lesion is one 8-connected component of more than 100 px inside the lungs,
/// separated from the others by at least 3 px, so MODEL.md §1.2's target derivation recovers
/// exactly `lesions` from `labels`.
///
/// Determinism: a slice depends only on `(seed, size, index, class)`. The anatomy and the image
/// noise depend on `(seed, size, index)` alone, so the same index rendered as different classes differs
/// only inside the lesions. Generation uses `SeededGenerator`, never the system generator.
/// - Precondition (init): width and height at least 128 (lesions of > 100 px need lungs of a few
///   thousand pixels).
public struct PhantomGenerator: Sendable {
    /// The data-set seed.
    public let seed: UInt64
    /// Columns of every slice.
    public let width: Int
    /// Rows of every slice.
    public let height: Int

    /// A generator of square `size × size` slices (512 by default, the CNCB size).
    /// - Precondition: `size >= 128`.
    public init(seed: UInt64, size: Int = 512) {
        self.init(seed: seed, width: size, height: size)
    }

    /// A generator of `width × height` slices.
    /// - Precondition: `width, height >= 128`.
    public init(seed: UInt64, width: Int, height: Int) {
        precondition(width >= 128 && height >= 128, "phantom slices need at least 128×128 pixels, got \(width)×\(height)")
        self.seed = seed
        self.width = width
        self.height = height
    }

    /// Generates slice number `index` of class `class`.
    ///
    /// Shapes: the slice's image, labels and instances are `height × width`.
    public func slice(index: Int, class phantomClass: PhantomClass) -> PhantomSlice {
        let builder = PhantomBuilder(width: width, height: height)
        var anatomyRNG = SeededGenerator(seed: SplitMix64.mix(seed, UInt64(bitPattern: Int64(index)), 0xA7A7))
        var lesionRNG = SeededGenerator(seed: SplitMix64.mix(seed, UInt64(bitPattern: Int64(index)),
                                                        UInt64(phantomClass.rawValue), 0x1E51))
        var noiseRNG = SeededGenerator(seed: SplitMix64.mix(seed, UInt64(bitPattern: Int64(index)), 0x0153))
        builder.drawAnatomy(rng: &anatomyRNG)
        switch phantomClass {
        case .normal: break
        case .pneumonia: builder.addPneumonia(rng: &lesionRNG)
        case .covid: builder.addCovid(rng: &lesionRNG)
        }
        builder.addNoise(sigma: 9, rng: &noiseRNG)
        return builder.finish(phantomClass: phantomClass)
    }
}

// MARK: - Drawing

/// Geometry of one lung: a rotated ellipse whose radius is modulated by a few harmonics.
struct LungShape {
    var cx: Float, cy: Float, ax: Float, ay: Float
    var cosA: Float, sinA: Float
    var harmonics: RadialHarmonics
    var side: ImageSide

    /// Normalized radius: < 1 inside.
    @inline(__always)
    func rho(_ x: Float, _ y: Float) -> Float {
        let dx = x - cx, dy = y - cy
        let u = (cosA * dx + sinA * dy) / ax
        let v = (-sinA * dx + cosA * dy) / ay
        let r = (u * u + v * v).squareRoot()
        guard r > 0 else { return 0 }
        return r / harmonics.factor(cos: u / r, sin: v / r)
    }

    /// Largest extent from the center (for bounding boxes).
    var reach: Float {
        max(ax, ay) * (1 + harmonics.total) + 2
    }
}

/// A radius modulation `1 + Σ a_k sin(kθ + φ_k)` over k = 2, 3, …, evaluated from (cos θ, sin θ)
/// by complex powers, so per-pixel shape tests need no trigonometric calls.
struct RadialHarmonics {
    private var amplitudes: [Float] = []
    private var cosPhases: [Float] = []
    private var sinPhases: [Float] = []

    /// Harmonics k = 2, 3, … with the given amplitudes and phases.
    init(amplitudes: [Float], phases: [Float]) {
        self.amplitudes = amplitudes
        cosPhases = phases.map { cosf($0) }
        sinPhases = phases.map { sinf($0) }
    }

    /// `count` random harmonics (k = 2 … count + 1), amplitudes uniform in [0, maxAmplitude).
    init(count: Int, maxAmplitude: Double, rng: inout SeededGenerator) {
        var amplitudes: [Float] = [], phases: [Float] = []
        for _ in 0..<count {
            amplitudes.append(Float(rng.uniform(0, maxAmplitude)))
            phases.append(Float(rng.uniform(0, 2 * .pi)))
        }
        self.init(amplitudes: amplitudes, phases: phases)
    }

    /// Σ a_k: the largest possible relative growth of the radius.
    var total: Float { amplitudes.reduce(0, +) }

    /// The modulation factor at the angle whose cosine and sine are given.
    @inline(__always)
    func factor(cos c: Float, sin s: Float) -> Float {
        var ck = c * c - s * s, sk = 2 * c * s  // cos 2θ, sin 2θ
        var m: Float = 1
        for j in 0..<amplitudes.count {
            if j > 0 { (ck, sk) = (ck * c - sk * s, sk * c + ck * s) }
            m += amplitudes[j] * (sk * cosPhases[j] + ck * sinPhases[j])
        }
        return m
    }
}

/// The working buffers of one slice (Hounsfield units, labels, instances, lesion spacing).
final class PhantomBuilder {
    let w: Int, h: Int
    let hu: UnsafeMutablePointer<Float>
    let label: UnsafeMutablePointer<UInt8>
    let instance: UnsafeMutablePointer<UInt8>
    /// Non-zero where a new lesion may not go (existing lesions dilated by the gap).
    let blocked: UnsafeMutablePointer<UInt8>
    /// Small-feature scale: `min(w, h) / 512`.
    let s: Float
    var lungs: [LungShape] = []
    var bodyBox = PixelBox(xmin: 0, ymin: 0, xmax: 0, ymax: 0)
    var lesions: [PhantomLesion] = []
    /// Lesion texture, created on first use.
    var texture: [Float] = []

    static let lesionGap = 3

    init(width: Int, height: Int) {
        w = width
        h = height
        let n = width * height
        hu = .allocate(capacity: n)
        hu.initialize(repeating: -1000, count: n)
        label = .allocate(capacity: n)
        label.initialize(repeating: 0, count: n)
        instance = .allocate(capacity: n)
        instance.initialize(repeating: 0, count: n)
        blocked = .allocate(capacity: n)
        blocked.initialize(repeating: 0, count: n)
        s = Float(min(width, height)) / 512
    }

    deinit {
        hu.deallocate()
        label.deallocate()
        instance.deallocate()
        blocked.deallocate()
    }

    // MARK: Primitives

    /// Paints an axis-aligned superellipse `|dx/a|^p + |dy/b|^p ≤ 1` with value `value`
    /// (anti-aliased over about one pixel); `setLabel` overwrites the label where coverage ≥ ½.
    func paintSuperellipse(cx: Float, cy: Float, a: Float, b: Float, p: Float, value: Float, setLabel: UInt8? = nil) {
        let x0 = max(0, Int(cx - a - 2)), x1 = min(w - 1, Int(cx + a + 2))
        let y0 = max(0, Int(cy - b - 2)), y1 = min(h - 1, Int(cy + b + 2))
        guard x0 <= x1, y0 <= y1 else { return }
        // Separable: S(x, y) = A[x] + B[y]; ρ = S^(1/p).
        var colTerm = [Float](repeating: 0, count: x1 - x0 + 1)
        for x in x0...x1 { colTerm[x - x0] = powf(abs((Float(x) + 0.5 - cx) / a), p) }
        let scale = min(a, b)
        let inner = powf(max(0, 1 - 1 / scale), p), outer = powf(1 + 1 / scale, p)
        colTerm.withUnsafeBufferPointer { col in
            for y in y0...y1 {
                let rowTerm = powf(abs((Float(y) + 0.5 - cy) / b), p)
                let base = y * w
                for x in x0...x1 {
                    let sum = col[x - x0] + rowTerm
                    if sum >= outer { continue }
                    var coverage: Float = 1
                    if sum > inner {
                        let distance = (powf(sum, 1 / p) - 1) * scale
                        coverage = min(max(0.5 - distance, 0), 1)
                    }
                    let i = base + x
                    hu[i] += (value - hu[i]) * coverage
                    if let l = setLabel, coverage >= 0.5 { label[i] = l }
                }
            }
        }
    }

    /// Paints a rotated ellipse (axes `a` along the angle, `b` across) with value `value`.
    func paintEllipse(cx: Float, cy: Float, a: Float, b: Float, angle: Float = 0, value: Float, setLabel: UInt8? = nil,
                      onlyLabel: UInt8? = nil) {
        let reach = max(a, b) + 2
        let x0 = max(0, Int(cx - reach)), x1 = min(w - 1, Int(cx + reach))
        let y0 = max(0, Int(cy - reach)), y1 = min(h - 1, Int(cy + reach))
        guard x0 <= x1, y0 <= y1 else { return }
        let c = cosf(angle), sn = sinf(angle)
        let scale = min(a, b)
        for y in y0...y1 {
            let dy = Float(y) + 0.5 - cy
            for x in x0...x1 {
                let i = y * w + x
                if let only = onlyLabel, label[i] != only { continue }
                let dx = Float(x) + 0.5 - cx
                let u = (c * dx + sn * dy) / a, v = (-sn * dx + c * dy) / b
                let r = (u * u + v * v).squareRoot()
                let distance = (r - 1) * scale
                if distance >= 0.5 { continue }
                let coverage = min(0.5 - distance, 1)
                hu[i] += (value - hu[i]) * coverage
                if let l = setLabel, coverage >= 0.5 { label[i] = l }
            }
        }
    }

    /// Blends a soft disc (Gaussian-edged) toward `value`, only on pixels labelled `onlyLabel`.
    @inline(__always)
    func stampDisc(cx: Float, cy: Float, radius: Float, value: Float, strength: Float, onlyLabel: UInt8) {
        let reach = radius + 1.5
        let x0 = max(0, Int(cx - reach)), x1 = min(w - 1, Int(cx + reach))
        let y0 = max(0, Int(cy - reach)), y1 = min(h - 1, Int(cy + reach))
        guard x0 <= x1, y0 <= y1 else { return }
        for y in y0...y1 {
            let dy = Float(y) + 0.5 - cy
            for x in x0...x1 {
                let i = y * w + x
                if label[i] != onlyLabel { continue }
                let dx = Float(x) + 0.5 - cx
                let d = (dx * dx + dy * dy).squareRoot()
                let coverage = min(max(radius + 0.5 - d, 0), 1)
                if coverage > 0 { hu[i] += (value - hu[i]) * coverage * strength }
            }
        }
    }

    // MARK: Anatomy

    func drawAnatomy(rng: inout SeededGenerator) {
        let W = Float(w), H = Float(h), m = Float(min(w, h))
        func u(_ lo: Float, _ hi: Float) -> Float { Float(rng.uniform(Double(lo), Double(hi))) }

        // Body: superellipse of soft tissue inside a rim of subcutaneous fat.
        let cx = W * (0.5 + 0.008 * Float(rng.normal()))
        let cy = H * (0.5 + 0.008 * Float(rng.normal()))
        let a = W * u(0.40, 0.45), b = H * u(0.30, 0.35), p = u(2.1, 2.6)
        let fat = m * u(0.015, 0.035)
        paintSuperellipse(cx: cx, cy: cy, a: a, b: b, p: p, value: -100)
        paintSuperellipse(cx: cx, cy: cy, a: a - fat, b: b - fat, p: p, value: 45)
        bodyBox = PixelBox(xmin: max(0, Int((cx - a).rounded(.down))), ymin: max(0, Int((cy - b).rounded(.down))),
                           xmax: min(w, Int((cx + a).rounded(.up))), ymax: min(h, Int((cy + b).rounded(.up))))
        // Inside test of the muscle region, for fitting the lungs.
        let innerA = a - fat, innerB = b - fat
        func insideMuscle(_ x: Float, _ y: Float, margin: Float) -> Bool {
            powf(abs((x - cx) / innerA), p) + powf(abs((y - cy) / innerB), p) < powf(margin, p)
        }

        // Lungs: rotated, harmonically perturbed ellipses either side of the mediastinum.
        var ay = H * u(0.19, 0.23), ax = W * u(0.115, 0.14)
        let ly = cy - H * u(0.0, 0.04)
        let gap = W * u(0.03, 0.05)
        var shapes: [LungShape] = []
        for side in [ImageSide.left, .right] {
            let sign: Float = side == .left ? -1 : 1
            let harmonics = RadialHarmonics(count: 3, maxAmplitude: 0.035, rng: &rng)
            let angle = sign * u(0.03, 0.12)
            shapes.append(LungShape(cx: 0, cy: ly, ax: ax, ay: ay, cosA: cosf(angle), sinA: sinf(angle),
                                    harmonics: harmonics, side: side))
        }
        // Shrink until both lungs (with their perturbation) sit well inside the muscle.
        for _ in 0..<20 {
            var fits = true
            for j in 0..<2 {
                let sign: Float = shapes[j].side == .left ? -1 : 1
                shapes[j].ax = ax
                shapes[j].ay = ay
                shapes[j].cx = cx + sign * (ax * 1.1 + gap)
                let reach = 1 + shapes[j].harmonics.total
                for t in stride(from: Float(0), to: 2 * .pi, by: .pi / 18) {
                    let x = shapes[j].cx + cosf(t) * ax * reach, y = shapes[j].cy + sinf(t) * ay * reach
                    if !insideMuscle(x, y, margin: 0.9) { fits = false }
                }
            }
            if fits { break }
            ax *= 0.96
            ay *= 0.96
        }
        lungs = shapes

        // Paint the lungs: HU with a posterior density gradient, label 1.
        for lung in lungs {
            let reach = lung.reach
            let x0 = max(0, Int(lung.cx - reach)), x1 = min(w - 1, Int(lung.cx + reach))
            let y0 = max(0, Int(lung.cy - reach)), y1 = min(h - 1, Int(lung.cy + reach))
            let edge = min(lung.ax, lung.ay)
            for y in y0...y1 {
                let fy = Float(y) + 0.5
                let gradient = 40 * (1 + min(max((fy - lung.cy) / lung.ay, -1), 1))
                let value = -875 + gradient
                for x in x0...x1 {
                    let r = lung.rho(Float(x) + 0.5, fy)
                    let distance = (r - 1) * edge
                    if distance >= 0.5 { continue }
                    let coverage = min(0.5 - distance, 1)
                    let i = y * w + x
                    hu[i] += (value - hu[i]) * coverage
                    if coverage >= 0.5 { label[i] = 1 }
                }
            }
        }

        // Mediastinum and bones, painted over the lungs where they meet (label back to 0).
        let heart = rng.chance(0.65)
        if heart {
            let hx = cx + W * u(0.03, 0.05), hy = cy - H * u(0.05, 0.08)
            let ha = W * u(0.11, 0.13), hb = H * u(0.09, 0.11), angle = u(-0.4, -0.1)
            paintEllipse(cx: hx, cy: hy, a: ha * 1.12, b: hb * 1.15, angle: angle, value: -90, setLabel: 0)
            paintEllipse(cx: hx, cy: hy, a: ha, b: hb, angle: angle, value: 40, setLabel: 0)
        }
        // Vertebra (cortical rim, cancellous body), spinal canal, spinous process.
        let vr = m * u(0.045, 0.055)
        let vy = cy + b - m * 0.17
        paintEllipse(cx: cx, cy: vy, a: vr, b: vr * 0.92, value: 900, setLabel: 0)
        paintEllipse(cx: cx, cy: vy, a: vr - 2.5 * s, b: vr * 0.92 - 2.5 * s, value: 330)
        paintEllipse(cx: cx, cy: vy + vr * 1.45, a: m * 0.02, b: m * 0.017, value: 20, setLabel: 0)
        paintEllipse(cx: cx, cy: vy + vr * 2.35, a: m * 0.03, b: m * 0.011, angle: .pi / 2, value: 700, setLabel: 0)
        // Descending aorta, left-anterior of the spine.
        paintEllipse(cx: cx + m * u(0.04, 0.06), cy: vy - vr * 1.4, a: m * 0.028, b: m * 0.028, value: 50, setLabel: 0)
        // Central airway (air with a wall).
        let airwayY = heart ? vy - vr * 2.6 : ly - ay * u(0.3, 0.5)
        let airwayR = m * u(0.016, 0.022)
        paintEllipse(cx: cx, cy: airwayY, a: airwayR + 2 * s, b: airwayR + 2 * s, value: 10, setLabel: 0)
        paintEllipse(cx: cx, cy: airwayY, a: airwayR, b: airwayR, value: -1000, setLabel: 0)
        // Sternum and ribs just inside the fat.
        paintEllipse(cx: cx, cy: cy - innerB + m * 0.02, a: m * 0.03, b: m * 0.012, value: 650, setLabel: 0)
        for degrees: Float in [20, 45, 135, 160, 200, 225, 250, 290, 315, 340] {
            let t = (degrees + u(-6, 6)) * .pi / 180
            let rx = cx + cosf(t) * (innerA - m * 0.018), ry = cy + sinf(t) * (innerB - m * 0.018)
            paintEllipse(cx: rx, cy: ry, a: m * 0.016, b: m * 0.009, angle: t + .pi / 2, value: 800, setLabel: 0)
        }

        // Lung texture: two octaves of smooth noise on the parenchyma.
        var texture = [Float](repeating: 0, count: w * h)
        texture.withUnsafeMutableBufferPointer { t in
            ValueNoise.add(to: t.baseAddress!, width: w, height: h, cell: 12 * s, amplitude: 16, rng: &rng)
            ValueNoise.add(to: t.baseAddress!, width: w, height: h, cell: 4 * s, amplitude: 9, rng: &rng)
            for i in 0..<(w * h) where label[i] == 1 { hu[i] += t[i] }
        }

        for lung in lungs {
            drawVessels(lung: lung, rng: &rng)
            drawBronchi(lung: lung, rng: &rng)
        }
    }

    /// A random lung pixel (rejection sampling in the lung's box), or nil after many misses.
    func randomLungPoint(_ lung: LungShape, maxRho: Float, posteriorBias: Float, rng: inout SeededGenerator) -> (Float, Float)? {
        let reach = lung.reach
        for _ in 0..<400 {
            let x = lung.cx + Float(rng.uniform(-1, 1)) * reach
            let y = lung.cy + Float(rng.uniform(-1, 1)) * reach
            let xi = Int(x), yi = Int(y)
            guard xi >= 0, xi < w, yi >= 0, yi < h, label[yi * w + xi] == 1, lung.rho(x, y) < maxRho else { continue }
            let posterior = min(max((y - lung.cy) / lung.ay, -1), 1)
            if rng.unit() > Double(1 - posteriorBias * (1 - posterior) / 2) { continue }
            return (x, y)
        }
        return nil
    }

    /// Branching vessels from the hilum plus end-on vessel dots.
    func drawVessels(lung: LungShape, rng: inout SeededGenerator) {
        let medial: Float = lung.side == .left ? 1 : -1
        let hilumX = lung.cx + medial * lung.ax * 0.55, hilumY = lung.cy + lung.ay * 0.05
        let lateral: Float = lung.side == .left ? .pi : 0
        struct Branch { var x: Float, y: Float, angle: Float, radius: Float }
        var stack: [Branch] = []
        let count = rng.int(4...6)
        for _ in 0..<count {
            let angle = lateral + Float(rng.uniform(-1.9, 1.9))
            stack.append(Branch(x: hilumX, y: hilumY, angle: angle, radius: Float(rng.uniform(1.8, 2.8)) * s))
        }
        var budget = 4000
        while var b = stack.popLast(), budget > 0 {
            while b.radius > 0.55 * s, budget > 0 {
                budget -= 1
                stampDisc(cx: b.x, cy: b.y, radius: b.radius, value: 20, strength: 0.75, onlyLabel: 1)
                let step = max(0.6, min(1.5 * s, b.radius * 0.8))
                b.angle += Float(rng.normal()) * 0.1
                b.x += cosf(b.angle) * step
                b.y += sinf(b.angle) * step
                b.radius *= 1 - 0.02 * step / s
                if lung.rho(b.x, b.y) > 0.97 { break }
                if rng.chance(0.03) {
                    stack.append(Branch(x: b.x, y: b.y, angle: b.angle + Float(rng.uniform(0.35, 0.8)) * (rng.chance(0.5) ? 1 : -1),
                                        radius: b.radius * 0.75))
                }
            }
        }
        // End-on vessels: dots, larger toward the hilum.
        let dots = Int(Float(rng.int(35...55)) * (lung.ax * lung.ay) / (66 * 108 * s * s))
        for _ in 0..<dots {
            guard let (x, y) = randomLungPoint(lung, maxRho: 0.95, posteriorBias: 0, rng: &rng) else { break }
            let distance = ((x - hilumX) * (x - hilumX) + (y - hilumY) * (y - hilumY)).squareRoot() / max(lung.ax, lung.ay)
            let radius = (Float(rng.uniform(0.7, 1.4)) + max(0, 1.2 - distance)) * s
            stampDisc(cx: x, cy: y, radius: radius, value: 30, strength: 0.85, onlyLabel: 1)
        }
    }

    /// Small bronchi seen end-on: air lumen with a thin bright wall.
    func drawBronchi(lung: LungShape, rng: inout SeededGenerator) {
        let count = rng.int(2...5)
        for _ in 0..<count {
            guard let (x, y) = randomLungPoint(lung, maxRho: 0.7, posteriorBias: 0, rng: &rng) else { return }
            let radius = Float(rng.uniform(1.5, 3.2)) * s
            stampDisc(cx: x, cy: y, radius: radius + 1.1 * s, value: -150, strength: 0.8, onlyLabel: 1)
            stampDisc(cx: x, cy: y, radius: radius, value: -990, strength: 1, onlyLabel: 1)
        }
    }

    // MARK: Lesions

    /// A lesion shape: a rotated ellipse with a harmonically perturbed radius. `outer` > 1 adds a
    /// ground-glass halo (`1 ≤ ρ < outer`); `core` > 0 makes `ρ < core` consolidation.
    struct LesionShape {
        var cx: Float, cy: Float, rx: Float, ry: Float
        var cosA: Float, sinA: Float
        var harmonics: RadialHarmonics
        var kind: LesionKind
        var outer: Float
        var core: Float
        var delta: Float      // GGO: HU added at full strength
        var density: Float    // consolidation: target HU
        var bronchograms: [(x0: Float, y0: Float, x1: Float, y1: Float, width: Float)]

        init(cx: Float, cy: Float, rx: Float, ry: Float, angle: Float, harmonics: RadialHarmonics, kind: LesionKind,
             outer: Float, core: Float, delta: Float, density: Float,
             bronchograms: [(x0: Float, y0: Float, x1: Float, y1: Float, width: Float)]) {
            self.cx = cx
            self.cy = cy
            self.rx = rx
            self.ry = ry
            cosA = cosf(angle)
            sinA = sinf(angle)
            self.harmonics = harmonics
            self.kind = kind
            self.outer = outer
            self.core = core
            self.delta = delta
            self.density = density
            self.bronchograms = bronchograms
        }

        /// Normalized radius: < 1 inside the lesion proper, < `outer` inside its halo.
        @inline(__always)
        func rho(_ x: Float, _ y: Float) -> Float {
            let dx = x - cx, dy = y - cy
            let u = (cosA * dx + sinA * dy) / rx, v = (-sinA * dx + cosA * dy) / ry
            let r = (u * u + v * v).squareRoot()
            guard r > 0 else { return 0 }
            return r / harmonics.factor(cos: u / r, sin: v / r)
        }

        var reach: Float { max(rx, ry) * outer * (1 + harmonics.total) + 2 }
    }

    /// Seeds the lesion texture; set from the lesion generator before the first lesion.
    var textureRNG = SeededGenerator(seed: 0)

    /// Creates the lesion texture field (two octaves of fine value noise) on first use.
    func ensureTexture() {
        guard texture.isEmpty else { return }
        var field = [Float](repeating: 0, count: w * h)
        field.withUnsafeMutableBufferPointer { t in
            ValueNoise.add(to: t.baseAddress!, width: w, height: h, cell: 3 * s, amplitude: 0.6, rng: &textureRNG)
            ValueNoise.add(to: t.baseAddress!, width: w, height: h, cell: 9 * s, amplitude: 0.4, rng: &textureRNG)
        }
        texture = field
    }

    /// Rasterizes a lesion into the lung, keeping its largest 8-connected piece. Returns false (and
    /// changes nothing) when it would touch another lesion's spacing zone or come out too small.
    func place(_ shape: LesionShape, side: ImageSide, minimumArea: Int) -> Bool {
        let reach = shape.reach
        let x0 = max(0, Int(shape.cx - reach)), x1 = min(w - 1, Int(shape.cx + reach))
        let y0 = max(0, Int(shape.cy - reach)), y1 = min(h - 1, Int(shape.cy + reach))
        guard x0 < x1, y0 < y1 else { return false }
        let bw = x1 - x0 + 1, bh = y1 - y0 + 1
        // Local candidate map: 0 no, 1 candidate; ρ kept for shading.
        var local = [UInt8](repeating: 0, count: bw * bh)
        var rhos = [Float](repeating: 0, count: bw * bh)
        var candidates = 0
        for y in y0...y1 {
            for x in x0...x1 {
                let i = y * w + x
                guard label[i] == 1 else { continue }
                let r = shape.rho(Float(x) + 0.5, Float(y) + 0.5)
                guard r < shape.outer else { continue }
                if blocked[i] != 0 { return false }
                let j = (y - y0) * bw + (x - x0)
                local[j] = 1
                rhos[j] = r
                candidates += 1
            }
        }
        guard candidates >= minimumArea else { return false }
        // Largest 8-connected component (labels 2, 3, … in `local`).
        var best: UInt8 = 0, bestSize = 0, next: UInt8 = 2
        var queue: [Int] = []
        for start in 0..<(bw * bh) where local[start] == 1 {
            let id = next
            next = next == 255 ? 2 : next + 1
            floodFill8(&local, width: bw, height: bh, start: start, from: 1, to: id, visited: &queue)
            if queue.count > bestSize {
                bestSize = queue.count
                best = id
            }
            if next == 2 { break }  // more than 253 pieces: keep the best so far
        }
        guard bestSize >= minimumArea else { return false }

        ensureTexture()
        let id = UInt8(lesions.count + 1)
        var area = 0, ggo = 0, cons = 0
        var sx = 0.0, sy = 0.0
        var box = PixelBox(xmin: Int.max, ymin: Int.max, xmax: Int.min, ymax: Int.min)
        let gap = Self.lesionGap
        for ly in 0..<bh {
            for lx in 0..<bw where local[ly * bw + lx] == best {
                let x = x0 + lx, y = y0 + ly, i = y * w + x
                let r = rhos[ly * bw + lx]
                let tex = texture[i]
                var consolidated = false
                if shape.kind == .consolidation {
                    consolidated = r < 1
                } else {
                    consolidated = r < shape.core
                }
                if consolidated {
                    // Dense: blend most of the way to soft-tissue density, denser inside.
                    let weight = 0.62 + 0.38 * smoothstep(1, 0.7, r) + 0.06 * tex
                    hu[i] += (shape.density - hu[i]) * min(max(weight, 0), 1)
                    for bronchus in shape.bronchograms
                    where segmentDistance(Float(x) + 0.5, Float(y) + 0.5, bronchus) < bronchus.width {
                        hu[i] += (-930 - hu[i]) * 0.85
                    }
                    label[i] = 3
                    cons += 1
                } else {
                    // Faint: a raise that fades toward the edge but stays visible on it.
                    let zoneEdge = shape.kind == .consolidation ? shape.outer : 1
                    let profile = 0.35 + 0.65 * smoothstep(zoneEdge, zoneEdge - 0.3, r)
                    let strength = shape.kind == .consolidation ? shape.delta * 0.8 : shape.delta
                    hu[i] += strength * profile * (1 + 0.35 * tex)
                    label[i] = 2
                    ggo += 1
                }
                instance[i] = id
                area += 1
                sx += Double(x)
                sy += Double(y)
                box.xmin = min(box.xmin, x)
                box.ymin = min(box.ymin, y)
                box.xmax = max(box.xmax, x + 1)
                box.ymax = max(box.ymax, y + 1)
                for by in max(0, y - gap)...min(h - 1, y + gap) {
                    let row = blocked + by * w
                    for bx in max(0, x - gap)...min(w - 1, x + gap) { row[bx] = 1 }
                }
            }
        }
        lesions.append(PhantomLesion(side: side, kind: shape.kind, area: area, groundGlassPixels: ggo,
                                     consolidationPixels: cons, box: box,
                                     centroidX: sx / Double(area), centroidY: sy / Double(area)))
        return true
    }

    func lung(_ side: ImageSide) -> LungShape { lungs[side == .left ? 0 : 1] }

    /// Distance from the lung center to its boundary along `angle` (marching over lung pixels).
    func boundaryDistance(_ lung: LungShape, angle: Float) -> Float {
        let dx = cosf(angle), dy = sinf(angle)
        var t: Float = 0
        while t < lung.reach {
            let x = Int(lung.cx + dx * t), y = Int(lung.cy + dy * t)
            if x < 0 || x >= w || y < 0 || y >= h || label[y * w + x] == 0 { break }
            t += 0.5
        }
        return t
    }

    /// Placement attempts per lung before a lesion moves to the other lung.
    static let attemptsPerLung = 120

    /// Common pneumonia: one or two large, dense consolidations, usually in one lung.
    func addPneumonia(rng: inout SeededGenerator) {
        textureRNG = SeededGenerator(seed: rng.next())
        let count = rng.chance(0.7) ? 1 : 2
        let first: ImageSide = rng.chance(0.5) ? .left : .right
        let W = Float(w)
        for n in 0..<count {
            let preferred = n == 0 ? first : (rng.chance(0.8) ? first : first.opposite)
            for attempt in 0..<(2 * Self.attemptsPerLung) {
                // Later attempts relax the size floor; the second half tries the other lung.
                let side = attempt < Self.attemptsPerLung ? preferred : preferred.opposite
                let relax = Float(attempt % Self.attemptsPerLung) / Float(Self.attemptsPerLung)
                let lung = self.lung(side)
                guard let (x, y) = randomLungPoint(lung, maxRho: 0.75, posteriorBias: 0.6, rng: &rng) else { continue }
                let large = n == 0
                let rx = max(W * Float(large ? rng.uniform(0.055, 0.085) : rng.uniform(0.035, 0.055)), 10)
                let ry = max(rx * Float(rng.uniform(0.6, 0.95)), 8)
                let angle = Float(rng.uniform(0, .pi))
                var bronchograms: [(x0: Float, y0: Float, x1: Float, y1: Float, width: Float)] = []
                if rng.chance(0.6) {
                    for _ in 0..<rng.int(1...2) {
                        let a = Float(rng.uniform(0, 2 * .pi)), len = rx * Float(rng.uniform(0.5, 0.9))
                        let ox = x + Float(rng.uniform(-0.3, 0.3)) * rx, oy = y + Float(rng.uniform(-0.3, 0.3)) * ry
                        bronchograms.append((ox, oy, ox + cosf(a) * len, oy + sinf(a) * len, max(Float(rng.uniform(1.2, 1.8)) * s, 1)))
                    }
                }
                let shape = LesionShape(cx: x, cy: y, rx: rx, ry: ry, angle: angle,
                                        harmonics: RadialHarmonics(count: 4, maxAmplitude: 0.05, rng: &rng), kind: .consolidation,
                                        outer: rng.chance(0.5) ? Float(rng.uniform(1.15, 1.3)) : 1, core: 0,
                                        delta: Float(rng.uniform(120, 200)), density: Float(rng.uniform(-80, 10)),
                                        bronchograms: bronchograms)
                if place(shape, side: side, minimumArea: relax < 0.5 ? 150 : 110) { break }
            }
        }
    }

    /// COVID-19: two to six faint subpleural ground-glass patches, usually in both lungs.
    func addCovid(rng: inout SeededGenerator) {
        textureRNG = SeededGenerator(seed: rng.next())
        let count = 2 + rng.pick(weights: [20, 25, 25, 18, 12])
        let bilateral = rng.chance(0.85)
        let first: ImageSide = rng.chance(0.5) ? .left : .right
        let W = Float(w)
        for n in 0..<count {
            let preferred: ImageSide
            if !bilateral {
                preferred = first
            } else if n < 2 {
                preferred = n == 0 ? first : first.opposite
            } else {
                preferred = rng.chance(0.5) ? .left : .right
            }
            for attempt in 0..<(2 * Self.attemptsPerLung) {
                // Later attempts move the lesion further in and relax the size floor (crowded or
                // small lungs); the second half tries the other lung.
                let side = attempt < Self.attemptsPerLung ? preferred : preferred.opposite
                let relax = Float(attempt % Self.attemptsPerLung) / Float(Self.attemptsPerLung)
                let lung = self.lung(side)
                let lateral: Float = side == .left ? .pi : 0
                let theta = lateral + Float(rng.uniform(-1.4, 1.4))
                let radial = boundaryDistance(lung, angle: theta)
                let rx = max(W * Float(rng.uniform(0.028, 0.05)), 9)
                let ry = max(rx * Float(rng.uniform(0.55, 0.85)), 7)
                let inset = ry * min(0.9, Float(rng.uniform(0.35, 0.75)) + 0.3 * relax)
                let cx = lung.cx + cosf(theta) * (radial - inset), cy = lung.cy + sinf(theta) * (radial - inset)
                let shape = LesionShape(cx: cx, cy: cy, rx: rx, ry: ry, angle: theta + .pi / 2 + Float(rng.normal()) * 0.25,
                                        harmonics: RadialHarmonics(count: 4, maxAmplitude: 0.06, rng: &rng), kind: .groundGlass, outer: 1,
                                        core: rng.chance(0.2) ? Float(rng.uniform(0.35, 0.5)) : 0,
                                        delta: Float(rng.uniform(200, 330)), density: Float(rng.uniform(-120, -30)),
                                        bronchograms: [])
                if place(shape, side: side, minimumArea: relax < 0.5 ? 150 : 110) { break }
            }
        }
    }

    // MARK: Finish

    func addNoise(sigma: Float, rng: inout SeededGenerator) {
        for i in 0..<(w * h) { hu[i] += sigma * rng.fastNormal() }
    }

    func finish(phantomClass: PhantomClass) -> PhantomSlice {
        let n = w * h
        let image = [UInt8](unsafeUninitializedCapacity: n) { out, count in
            let scale: Float = 255 / 1400
            for i in 0..<n {
                // Round half up; the clamp keeps the conversion in range.
                let v = (hu[i] + 1000) * scale + 0.5
                out[i] = UInt8(min(max(v, 0), 255.5))
            }
            count = n
        }
        return PhantomSlice(width: w, height: h, phantomClass: phantomClass, image: image,
                            labels: Array(UnsafeBufferPointer(start: label, count: n)),
                            instances: Array(UnsafeBufferPointer(start: instance, count: n)),
                            lesions: lesions, bodyBox: bodyBox)
    }
}

@inline(__always)
func smoothstep(_ edge0: Float, _ edge1: Float, _ x: Float) -> Float {
    let t = min(max((x - edge0) / (edge1 - edge0), 0), 1)
    return t * t * (3 - 2 * t)
}

@inline(__always)
func segmentDistance(_ px: Float, _ py: Float, _ seg: (x0: Float, y0: Float, x1: Float, y1: Float, width: Float)) -> Float {
    let vx = seg.x1 - seg.x0, vy = seg.y1 - seg.y0
    let length2 = vx * vx + vy * vy
    var t = length2 > 0 ? ((px - seg.x0) * vx + (py - seg.y0) * vy) / length2 : 0
    t = min(max(t, 0), 1)
    let dx = px - (seg.x0 + t * vx), dy = py - (seg.y0 + t * vy)
    return (dx * dx + dy * dy).squareRoot()
}
