#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A seeded 3-D chest-CT phantom: a stack of axial slices in Hounsfield units whose anatomy and
/// lesions continue from slice to slice, with the exact truth (lung and lesion volumes, per lung and
/// per slice).
///
/// The volume is generated one slice at a time (`slice(_:)`): nothing of the size of the whole
/// volume is ever held, so a 512×512×300 series costs the memory of one slice. Slice `k` depends
/// only on `(seed, width, height, slices, class, k)`; the spacing sets the millimetres (and so the
/// volumes), never the voxels.
///
/// Layout: slice 0 is the most inferior, slice `slices − 1` the most superior. Within a slice, row 0
/// is anterior and column 0 is the patient's right (the radiological display orientation: DICOM
/// ImageOrientationPatient 1\0\0\0\1\0), so the lung on the image's left is the right lung. The
/// anatomy is laid out over the normalised height t = (k + ½) / slices ∈ (0, 1), whatever the
/// slice count:
/// - body: a superellipse of soft tissue (40 HU) in a rim of subcutaneous fat (−100 HU), narrowing a
///   little towards the top, in air (−1000 HU);
/// - lungs: two harmonically perturbed ellipses (the shapes of `PhantomGenerator`'s lungs) whose
///   size follows an ellipsoidal profile along t — largest near the bases, smallest at the apices
///   (never below about a third of the largest); parenchyma −875 HU, denser posteriorly (up to
///   +80 HU), with value-noise texture; vessels (tubes running roughly head to foot, seen as dots)
///   and a few air bronchi inside;
/// - mediastinum and bones: the heart (an ellipsoid in the lower half), the descending aorta, the
///   trachea above t = 0.62, the vertebra with its canal and spinous process, the sternum and ten
///   ribs whose angles drift from slice to slice; painted over the lungs where they meet;
/// - lesions: ellipsoids inside one lung each, spanning at least three slices.
///   `.covid`: two to six faint ground-glass opacities (label 2; +200…330 HU over the lung, fading
///   towards the edge), subpleural, elongated along the chest wall, both lungs in about 85 %;
///   a fifth of them with a small consolidation core (label 3). `.pneumonia`: one (70 %) or two
///   dense consolidations (label 3; −80…10 HU at the centre), large, kept at least
///   `consolidationMargin` pixels inside the lung's edge, half with a ground-glass halo (label 2).
///   `.normal`: none. Lesions never overlap (a voxel belongs to one lesion at most).
/// - image noise: Gaussian, σ = 9 HU.
///
/// Truth: a voxel is lung when its label is 1, 2 or 3 (parenchyma and lesions, vessels and bronchi
/// included: they lie inside the lung), lesion when it is 2 or 3. The lung label is set where the
/// lung's anti-aliased coverage is at least ½, which is where its HU falls below the midpoint
/// between lung and chest wall. Volumes are voxel counts times the voxel volume.
public struct PhantomVolume: Sendable {
    /// The generator seed.
    public let seed: UInt64
    /// Columns of every slice.
    public let width: Int
    /// Rows of every slice.
    public let height: Int
    /// The number of slices.
    public let slices: Int
    /// The kind of lesions.
    public let phantomClass: PhantomClass
    /// [row, column, slice] spacing in mm.
    public let spacing: [Double]
    /// The planned lesions, in instance order (instance map value `i + 1` is `lesions[i]`).
    public let lesions: [PhantomVolumeLesion]

    let plan: VolumePlan

    /// Sizes the generator accepts.
    public static let sideRange = 64...4096
    /// Slice counts the generator accepts.
    public static let sliceRange = 1...4000
    /// The field of view, mm, when no spacing is given: the width and height span 350 mm.
    public static let defaultFieldOfView = 350.0
    /// The height of the chest the slices span, mm, when no spacing is given (slice spacing =
    /// 240 mm / slices).
    public static let defaultChestLength = 240.0
    /// Consolidations keep at least this many pixels of aerated lung between them and the lung's
    /// edge.
    public static let consolidationMargin: Float = 2.5
    /// Stored HU range (what a 12-bit CT with intercept −1024 holds).
    public static let huRange: ClosedRange<Int> = -1024...3071

    /// Plans a volume.
    /// - Parameters:
    ///   - spacing: [row, column, slice] mm; nil for the default (350 mm field of view, 240 mm of
    ///     chest over the slices).
    /// - Throws: `ImageError.invalidArgument` for a side outside `sideRange`, a slice count outside
    ///   `sliceRange`, or a spacing that is not three positive finite numbers.
    public init(seed: UInt64, width: Int = 128, height: Int = 128, slices: Int = 16, class phantomClass: PhantomClass = .covid,
                spacing: [Double]? = nil) throws {
        guard Self.sideRange.contains(width), Self.sideRange.contains(height) else {
            throw ImageError.invalidArgument("a phantom volume's slices are \(Self.sideRange.lowerBound) to \(Self.sideRange.upperBound) pixels per side, not \(width)×\(height)")
        }
        guard Self.sliceRange.contains(slices) else {
            throw ImageError.invalidArgument("a phantom volume has \(Self.sliceRange.lowerBound) to \(Self.sliceRange.upperBound) slices, not \(slices)")
        }
        let s = spacing ?? [Self.defaultFieldOfView / Double(height), Self.defaultFieldOfView / Double(width), Self.defaultChestLength / Double(slices)]
        guard s.count == 3, s.allSatisfy({ $0.isFinite && $0 > 0 && $0 < 1000 }) else {
            throw ImageError.invalidArgument("the spacing is three positive numbers of mm (row, column, slice) below 1000, not \(s)")
        }
        self.seed = seed
        self.width = width
        self.height = height
        self.slices = slices
        self.phantomClass = phantomClass
        self.spacing = s
        plan = VolumePlan(seed: seed, width: width, height: height, slices: slices, phantomClass: phantomClass)
        lesions = plan.lesions.map(\.summary)
    }

    /// The volume of one voxel, mL.
    public var voxelML: Double { spacing[0] * spacing[1] * spacing[2] / 1000 }
    /// The area of one pixel, mm².
    public var pixelMM2: Double { spacing[0] * spacing[1] }

    /// Generates slice `k`.
    /// - Precondition: `0 <= k < slices`.
    public func slice(_ k: Int) -> PhantomVolumeSlice {
        precondition(k >= 0 && k < slices, "slice \(k) of \(slices)")
        return plan.render(k)
    }

    /// The truth of the whole volume, generating every slice once (one at a time).
    public func truth() -> PhantomVolumeTruth {
        var truth = PhantomVolumeTruth(volume: self)
        for k in 0..<slices { truth.add(slice(k).truth) }
        return truth
    }
}

/// One planned lesion.
public struct PhantomVolumeLesion: Sendable, Equatable, Codable {
    /// "ground-glass" or "consolidation" (the dominant label).
    public var kind: String
    /// "right" or "left": the patient's lung (the right lung is on the image's left).
    public var lung: String
    /// The centre: column, row (pixels, at the centre slice) and slice (fractional index).
    public var centre: [Double]
    /// Semi-axes: along the lesion's in-plane angle and across it (pixels), and along the slices
    /// (slices).
    public var semiAxes: [Double]
    /// The slices the ellipsoid (with its halo) reaches (first, last), before clipping by the lung.
    public var sliceRange: [Int]
}

/// One generated slice and its truth.
public struct PhantomVolumeSlice: Sendable {
    public let index: Int
    public let width: Int
    public let height: Int
    /// HU, `height × width`, row-major, rounded and clamped to `PhantomVolume.huRange`.
    public let hu: [Int16]
    /// 0 background (air, body, mediastinum, bone), 1 lung, 2 ground-glass, 3 consolidation.
    public let labels: [UInt8]
    /// 0 outside lesions, `i + 1` on lesion `i`.
    public let instances: [UInt8]
    /// Pixel counts.
    public let truth: PhantomSliceTruth
}

/// The pixel counts of one slice (right = the patient's right lung, on the image's left).
public struct PhantomSliceTruth: Sendable, Equatable {
    public var index: Int
    public var lungRight: Int
    public var lungLeft: Int
    public var lesionRight: Int
    public var lesionLeft: Int
    public var groundGlass: Int
    public var consolidation: Int
    /// Pixels of each lesion (instance order).
    public var perLesion: [Int]

    public var lung: Int { lungRight + lungLeft }
    public var lesion: Int { lesionRight + lesionLeft }
}

/// The truth of a volume: sums of the slices' counts, in mm² and mL.
public struct PhantomVolumeTruth: Sendable {
    public let spacing: [Double]
    public let lesionCount: Int
    /// One entry per slice added, in order.
    public private(set) var slices: [PhantomSliceTruth] = []

    public init(volume: PhantomVolume) {
        spacing = volume.spacing
        lesionCount = volume.lesions.count
    }

    public mutating func add(_ slice: PhantomSliceTruth) { slices.append(slice) }

    var voxelML: Double { spacing[0] * spacing[1] * spacing[2] / 1000 }
    var pixelMM2: Double { spacing[0] * spacing[1] }
    private func sum(_ f: (PhantomSliceTruth) -> Int) -> Int { slices.reduce(0) { $0 + f($1) } }

    public var lungVoxels: Int { sum(\.lung) }
    public var lesionVoxels: Int { sum(\.lesion) }
    public var lungVolumeML: Double { Double(lungVoxels) * voxelML }
    public var lesionVolumeML: Double { Double(lesionVoxels) * voxelML }
    public var lungVolumeRightML: Double { Double(sum(\.lungRight)) * voxelML }
    public var lungVolumeLeftML: Double { Double(sum(\.lungLeft)) * voxelML }
    public var lesionVolumeRightML: Double { Double(sum(\.lesionRight)) * voxelML }
    public var lesionVolumeLeftML: Double { Double(sum(\.lesionLeft)) * voxelML }
    public var groundGlassVolumeML: Double { Double(sum(\.groundGlass)) * voxelML }
    public var consolidationVolumeML: Double { Double(sum(\.consolidation)) * voxelML }
    /// Each lesion's volume, mL (instance order).
    public var lesionVolumesML: [Double] {
        (0..<lesionCount).map { i in Double(slices.reduce(0) { $0 + ($1.perLesion.count > i ? $1.perLesion[i] : 0) }) * voxelML }
    }

    private static func percent(_ a: Double, _ b: Double) -> Double { b > 0 ? 100 * a / b : 0 }
    public var opacityPercent: Double { Self.percent(lesionVolumeML, lungVolumeML) }
    public var opacityPercentRight: Double { Self.percent(lesionVolumeRightML, lungVolumeRightML) }
    public var opacityPercentLeft: Double { Self.percent(lesionVolumeLeftML, lungVolumeLeftML) }

    /// Lesion and lung areas of slice `i` (mm²).
    public func areasMM2(_ i: Int) -> (lesion: Double, lung: Double, lesionRight: Double, lesionLeft: Double, lungRight: Double, lungLeft: Double) {
        let s = slices[i], a = pixelMM2
        return (Double(s.lesion) * a, Double(s.lung) * a, Double(s.lesionRight) * a, Double(s.lesionLeft) * a,
                Double(s.lungRight) * a, Double(s.lungLeft) * a)
    }
}

// MARK: - The plan (drawn once per volume) and the rendering of one slice

/// A tube through a lung, in the lung's normalised coordinates (u, v: multiples of its semi-axes),
/// from t0 to t1.
struct LungTube {
    var u: Float, v: Float, du: Float, dv: Float
    var t0: Float, t1: Float
    var radius: Float
    var air: Bool
}

struct PlannedLesion {
    var side: ImageSide
    var kind: LesionKind
    /// Centre in the lung's normalised, unrotated coordinates at each slice, and in t.
    var u: Float, v: Float, t: Float
    /// In-plane semi-axes (pixels), angle, and the half-length in t.
    var a: Float, b: Float, angle: Float, c: Float
    var harmonics: RadialHarmonics
    /// Halo extent (normalised radius; 1 = none) and consolidation core (normalised radius; 0 = none).
    var outer: Float, core: Float
    /// GGO raise (HU) and consolidation density (HU).
    var delta: Float, density: Float
    var summary: PhantomVolumeLesion
}

struct LungPlan {
    var side: ImageSide
    var cx: Float, cy: Float, ax: Float, ay: Float, angle: Float
    var harmonics: RadialHarmonics
    /// Size profile: scale(t) = sqrt(1 − ((t − tc) / hz)²), floored.
    var tc: Float, hz: Float
    var tubes: [LungTube]

    func scale(_ t: Float) -> Float { max(0.3, (max(0, 1 - ((t - tc) / hz) * ((t - tc) / hz))).squareRoot()) }

    func shape(_ t: Float) -> LungShape {
        let f = scale(t)
        return LungShape(cx: cx, cy: cy, ax: ax * f, ay: ay * f, cosA: cosf(angle), sinA: sinf(angle), harmonics: harmonics, side: side)
    }

    /// Image coordinates of the normalised point (u, v) of the lung at t.
    func point(u: Float, v: Float, t: Float) -> (Float, Float) {
        let f = scale(t), c = cosf(angle), s = sinf(angle)
        let x = u * ax * f, y = v * ay * f
        return (cx + c * x - s * y, cy + s * x + c * y)
    }
}

struct VolumePlan: Sendable {
    let seed: UInt64
    let w: Int, h: Int, n: Int
    let phantomClass: PhantomClass
    // Body.
    let cx: Float, cy: Float, bodyA: Float, bodyB: Float, bodyP: Float, fat: Float
    let lungs: [LungPlan]
    // Mediastinum and bones.
    let heart: (x: Float, y: Float, a: Float, b: Float, angle: Float, t: Float, hz: Float)
    let vertebra: (y: Float, r: Float)
    let aorta: (x: Float, y: Float, r: Float)
    let airway: (y: Float, r: Float)
    let ribs: [(angle: Float, phase: Float)]
    let lesions: [PlannedLesion]

    init(seed: UInt64, width: Int, height: Int, slices: Int, phantomClass: PhantomClass) {
        self.seed = seed
        w = width
        h = height
        n = slices
        self.phantomClass = phantomClass
        var rng = SeededGenerator(seed: SplitMix64.mix(seed, UInt64(width), UInt64(height), UInt64(slices), 0x3D_A7A7))
        let W = Float(width), H = Float(height), m = Float(min(width, height))
        let s = m / 512
        func u(_ lo: Float, _ hi: Float) -> Float { Float(rng.uniform(Double(lo), Double(hi))) }

        cx = W * (0.5 + 0.008 * Float(rng.normal()))
        cy = H * (0.5 + 0.008 * Float(rng.normal()))
        bodyA = W * u(0.40, 0.45)
        bodyB = H * u(0.30, 0.35)
        bodyP = u(2.1, 2.6)
        fat = m * u(0.015, 0.035)

        // Lungs: sized like the 2-D phantom's, then shrunk until they sit inside the muscle at
        // every height (the body narrows upwards, the lungs follow their profile).
        var ax = W * u(0.115, 0.14), ay = H * u(0.19, 0.23)
        let ly = cy - H * u(0.0, 0.04)
        let gap = W * u(0.03, 0.05)
        var plans: [LungPlan] = []
        for side in [ImageSide.left, .right] {
            let sign: Float = side == .left ? -1 : 1
            let harmonics = RadialHarmonics(count: 3, maxAmplitude: 0.035, rng: &rng)
            plans.append(LungPlan(side: side, cx: 0, cy: ly, ax: ax, ay: ay, angle: sign * u(0.03, 0.12), harmonics: harmonics,
                                  tc: u(0.42, 0.46), hz: u(0.62, 0.68), tubes: []))
        }
        let (bodyA, bodyB, bodyP, fat, cx, cy) = (self.bodyA, self.bodyB, self.bodyP, self.fat, self.cx, self.cy)
        for _ in 0..<20 {
            var fits = true
            for j in 0..<2 {
                let sign: Float = plans[j].side == .left ? -1 : 1
                plans[j].ax = ax
                plans[j].ay = ay
                plans[j].cx = cx + sign * (ax * 1.1 + gap)
                for t: Float in [0.02, 0.25, 0.5, 0.75, 0.98] {
                    let shape = plans[j].shape(t)
                    let (a, b) = Self.bodyAxes(bodyA, bodyB, t)
                    let reach = 1 + shape.harmonics.total
                    for angle in stride(from: Float(0), to: 2 * .pi, by: .pi / 18) {
                        let x = shape.cx + cosf(angle) * shape.ax * reach, y = shape.cy + sinf(angle) * shape.ay * reach
                        let inner = powf(abs((x - cx) / (a - fat)), bodyP) + powf(abs((y - cy) / (b - fat)), bodyP)
                        if inner >= powf(0.9, bodyP) { fits = false }
                    }
                }
            }
            if fits { break }
            ax *= 0.96
            ay *= 0.96
        }
        // Vessels and bronchi: tubes in the lung's normalised coordinates, kept off the edge.
        for j in 0..<2 {
            var tubes: [LungTube] = []
            let medial: Float = plans[j].side == .left ? 1 : -1
            for index in 0..<(rng.int(28...40) + 3) {
                let air = index < 3
                var uu: Float = 0, vv: Float = 0
                repeat {
                    uu = u(-0.75, 0.75)
                    vv = u(-0.75, 0.75)
                } while uu * uu + vv * vv > 0.75 * 0.75
                let t0 = u(-0.1, 0.8)
                let hilum = max(0, 1 - ((uu - medial * 0.5) * (uu - medial * 0.5) + vv * vv).squareRoot())
                tubes.append(LungTube(u: uu, v: vv, du: u(-0.25, 0.25), dv: u(-0.25, 0.25), t0: t0, t1: t0 + u(0.15, 0.6),
                                      radius: air ? u(1.2, 2.4) * s : (u(0.7, 1.3) + 1.2 * hilum) * s, air: air))
            }
            plans[j].tubes = tubes
        }
        lungs = plans

        heart = (cx + W * u(0.03, 0.05), cy - H * u(0.05, 0.08), W * u(0.11, 0.13), H * u(0.09, 0.11), u(-0.4, -0.1), u(0.3, 0.36), u(0.28, 0.34))
        let vr = m * u(0.045, 0.055)
        vertebra = (cy + bodyB - m * 0.17, vr)
        aorta = (cx + m * u(0.04, 0.06), vertebra.y - vr * 1.4, m * 0.028)
        airway = (vertebra.y - vr * 2.6, m * u(0.016, 0.022))
        ribs = [20, 45, 135, 160, 200, 225, 250, 290, 315, 340].map { (angle: ($0 + u(-6, 6)) * .pi / 180, phase: u(0, 2 * .pi)) }

        // Lesions.
        var lesionRNG = SeededGenerator(seed: SplitMix64.mix(seed, UInt64(width), UInt64(height), UInt64(slices),
                                                             UInt64(phantomClass.rawValue), 0x3D_1E51))
        lesions = Self.planLesions(phantomClass, lungs: plans, width: width, height: height, slices: slices, rng: &lesionRNG)
    }

    static func bodyAxes(_ a: Float, _ b: Float, _ t: Float) -> (Float, Float) { (a * (1 - 0.05 * t), b * (1 - 0.07 * t)) }

    static func planLesions(_ phantomClass: PhantomClass, lungs: [LungPlan], width: Int, height: Int, slices: Int,
                            rng: inout SeededGenerator) -> [PlannedLesion] {
        let W = Float(width)
        // At least three slices: the half-length in t covers 1.6 slices either side.
        let minimumC = 1.6 / Float(slices)
        var out: [PlannedLesion] = []
        /// True when a lesion's box (in-plane reach, t half-length) meets one already planned.
        func overlaps(_ x: Float, _ y: Float, _ reach: Float, _ t: Float, _ c: Float) -> Bool {
            out.contains { o in
                let lung = lungs[o.side == .left ? 0 : 1]
                let (ox, oy) = lung.point(u: o.u, v: o.v, t: o.t)
                let oreach = max(o.a, o.b) * o.outer * (1 + o.harmonics.total)
                let gap: Float = 3
                return abs(x - ox) < reach + oreach + gap && abs(y - oy) < reach + oreach + gap && abs(t - o.t) < c + o.c + 1 / Float(slices)
            }
        }
        func describe(_ l: PlannedLesion) -> PhantomVolumeLesion {
            let lung = lungs[l.side == .left ? 0 : 1]
            let (x, y) = lung.point(u: l.u, v: l.v, t: l.t)
            let k = Double(l.t) * Double(slices) - 0.5
            let dk = Double(l.c) * Double(slices)
            // The slices whose centre lies strictly inside the lesion's reach (its halo included).
            let reach = dk * Double(l.outer)
            return PhantomVolumeLesion(kind: l.kind == .groundGlass ? "ground-glass" : "consolidation",
                                       lung: l.side == .left ? "right" : "left",
                                       centre: [Double(x), Double(y), k], semiAxes: [Double(l.a), Double(l.b), dk],
                                       sliceRange: [max(0, Int((k - reach).rounded(.down)) + 1), min(slices - 1, Int((k + reach).rounded(.up)) - 1)])
        }
        switch phantomClass {
        case .normal:
            return []
        case .covid:
            let count = 2 + rng.pick(weights: [20, 25, 25, 18, 12])
            let bilateral = rng.chance(0.85)
            let first: ImageSide = rng.chance(0.5) ? .left : .right
            for index in 0..<count {
                let preferred: ImageSide = !bilateral ? first : (index < 2 ? (index == 0 ? first : first.opposite) : (rng.chance(0.5) ? .left : .right))
                for attempt in 0..<80 {
                    let side = attempt < 40 ? preferred : preferred.opposite
                    let lung = lungs[side == .left ? 0 : 1]
                    let lateral: Float = side == .left ? .pi : 0
                    let theta = lateral + Float(rng.uniform(-1.3, 1.3))
                    let t = Float(rng.uniform(0.15, 0.85))
                    let c = max(minimumC, Float(rng.uniform(0.06, 0.13)))
                    let a = max(W * Float(rng.uniform(0.028, 0.05)), 5)
                    let b = max(a * Float(rng.uniform(0.55, 0.85)), 3.5)
                    // Subpleural: the centre a little inside the edge, the long axis along it.
                    let inset = Float(rng.uniform(0.12, 0.25))
                    let uu = cosf(theta) * (1 - inset), vv = sinf(theta) * (1 - inset)
                    let harmonics = RadialHarmonics(count: 4, maxAmplitude: 0.06, rng: &rng)
                    let core: Float = rng.chance(0.2) ? Float(rng.uniform(0.35, 0.5)) : 0
                    let delta = Float(rng.uniform(200, 330)), density = Float(rng.uniform(-120, -30))
                    let angle = theta + .pi / 2 + Float(rng.normal()) * 0.25
                    let (x, y) = lung.point(u: uu, v: vv, t: t)
                    if overlaps(x, y, max(a, b) * (1 + harmonics.total), t, c) { continue }
                    var l = PlannedLesion(side: side, kind: .groundGlass, u: uu, v: vv, t: t, a: a, b: b, angle: angle, c: c,
                                          harmonics: harmonics, outer: 1, core: core, delta: delta, density: density,
                                          summary: PhantomVolumeLesion(kind: "", lung: "", centre: [], semiAxes: [], sliceRange: []))
                    l.summary = describe(l)
                    out.append(l)
                    break
                }
            }
        case .pneumonia:
            let count = rng.chance(0.7) ? 1 : 2
            let first: ImageSide = rng.chance(0.5) ? .left : .right
            for index in 0..<count {
                let preferred = index == 0 ? first : (rng.chance(0.8) ? first : first.opposite)
                for attempt in 0..<80 {
                    let side = attempt < 40 ? preferred : preferred.opposite
                    let lung = lungs[side == .left ? 0 : 1]
                    // Inner lung, posterior bias.
                    var uu: Float = 0, vv: Float = 0
                    repeat {
                        uu = Float(rng.uniform(-0.45, 0.45))
                        vv = Float(rng.uniform(-0.3, 0.5))
                    } while uu * uu + vv * vv > 0.45 * 0.45
                    let t = Float(rng.uniform(0.12, 0.7))
                    let c = max(minimumC, Float(rng.uniform(0.1, 0.2)))
                    let large = index == 0
                    let a = max(W * Float(large ? rng.uniform(0.055, 0.085) : rng.uniform(0.035, 0.055)), 5)
                    let b = max(a * Float(rng.uniform(0.6, 0.95)), 4)
                    let harmonics = RadialHarmonics(count: 4, maxAmplitude: 0.05, rng: &rng)
                    let outer: Float = rng.chance(0.5) ? Float(rng.uniform(1.15, 1.3)) : 1
                    let delta = Float(rng.uniform(120, 200)), density = Float(rng.uniform(-80, 10))
                    let angle = Float(rng.uniform(0, .pi))
                    let (x, y) = lung.point(u: uu, v: vv, t: t)
                    if overlaps(x, y, max(a, b) * outer * (1 + harmonics.total), t, c * outer) { continue }
                    var l = PlannedLesion(side: side, kind: .consolidation, u: uu, v: vv, t: t, a: a, b: b, angle: angle, c: c,
                                          harmonics: harmonics, outer: outer, core: 0, delta: delta, density: density,
                                          summary: PhantomVolumeLesion(kind: "", lung: "", centre: [], semiAxes: [], sliceRange: []))
                    l.summary = describe(l)
                    out.append(l)
                    break
                }
            }
        }
        return out
    }

    /// Draws slice k.
    func render(_ k: Int) -> PhantomVolumeSlice {
        let b = PhantomBuilder(width: w, height: h)
        let t = (Float(k) + 0.5) / Float(n)
        let m = Float(min(w, h))
        var sliceRNG = SeededGenerator(seed: SplitMix64.mix(seed, UInt64(w), UInt64(h), UInt64(n), UInt64(k), 0x3D_0153))

        // Body.
        let (a, bb) = Self.bodyAxes(bodyA, bodyB, t)
        b.paintSuperellipse(cx: cx, cy: cy, a: a, b: bb, p: bodyP, value: -100)
        b.paintSuperellipse(cx: cx, cy: cy, a: a - fat, b: bb - fat, p: bodyP, value: 45)

        // Lungs (label 1), with which lung each pixel belongs to.
        var side = [UInt8](repeating: 0, count: w * h)
        for (j, lung) in lungs.enumerated() {
            let shape = lung.shape(t)
            let reach = shape.reach
            let x0 = max(0, Int(shape.cx - reach)), x1 = min(w - 1, Int(shape.cx + reach))
            let y0 = max(0, Int(shape.cy - reach)), y1 = min(h - 1, Int(shape.cy + reach))
            guard x0 <= x1, y0 <= y1 else { continue }
            let edge = min(shape.ax, shape.ay)
            for y in y0...y1 {
                let fy = Float(y) + 0.5
                let value = -875 + 40 * (1 + min(max((fy - shape.cy) / shape.ay, -1), 1))
                for x in x0...x1 {
                    let distance = (shape.rho(Float(x) + 0.5, fy) - 1) * edge
                    if distance >= 0.5 { continue }
                    let coverage = min(0.5 - distance, 1)
                    let i = y * w + x
                    b.hu[i] += (value - b.hu[i]) * coverage
                    if coverage >= 0.5 {
                        b.label[i] = 1
                        side[i] = UInt8(j + 1)
                    }
                }
            }
        }

        // Mediastinum and bones over the lungs (label back to 0).
        let ht = (t - heart.t) / heart.hz
        if ht * ht < 0.95 {
            let f = (1 - ht * ht).squareRoot()
            b.paintEllipse(cx: heart.x, cy: heart.y, a: heart.a * f * 1.12, b: heart.b * f * 1.15, angle: heart.angle, value: -90, setLabel: 0)
            b.paintEllipse(cx: heart.x, cy: heart.y, a: heart.a * f, b: heart.b * f, angle: heart.angle, value: 40, setLabel: 0)
        }
        let vr = vertebra.r, vy = vertebra.y, s = b.s
        b.paintEllipse(cx: cx, cy: vy, a: vr, b: vr * 0.92, value: 900, setLabel: 0)
        b.paintEllipse(cx: cx, cy: vy, a: vr - 2.5 * s, b: vr * 0.92 - 2.5 * s, value: 330)
        b.paintEllipse(cx: cx, cy: vy + vr * 1.45, a: m * 0.02, b: m * 0.017, value: 20, setLabel: 0)
        b.paintEllipse(cx: cx, cy: vy + vr * 2.35, a: m * 0.03, b: m * 0.011, angle: .pi / 2, value: 700, setLabel: 0)
        b.paintEllipse(cx: aorta.x, cy: aorta.y, a: aorta.r, b: aorta.r, value: 50, setLabel: 0)
        if t > 0.62 {
            b.paintEllipse(cx: cx, cy: airway.y, a: airway.r + 2 * s, b: airway.r + 2 * s, value: 10, setLabel: 0)
            b.paintEllipse(cx: cx, cy: airway.y, a: airway.r, b: airway.r, value: -1000, setLabel: 0)
        }
        let innerA = a - fat, innerB = bb - fat
        b.paintEllipse(cx: cx, cy: cy - innerB + m * 0.02, a: m * 0.03, b: m * 0.012, value: 650, setLabel: 0)
        for rib in ribs {
            let angle = rib.angle + 0.09 * sinf(2 * .pi * 2.5 * t + rib.phase)
            let rx = cx + cosf(angle) * (innerA - m * 0.018), ry = cy + sinf(angle) * (innerB - m * 0.018)
            b.paintEllipse(cx: rx, cy: ry, a: m * 0.016, b: m * 0.009, angle: angle + .pi / 2, value: 800, setLabel: 0)
        }
        for i in 0..<(w * h) where b.label[i] == 0 { side[i] = 0 }

        // Lung texture, vessels and bronchi.
        var texture = [Float](repeating: 0, count: w * h)
        texture.withUnsafeMutableBufferPointer { tex in
            ValueNoise.add(to: tex.baseAddress!, width: w, height: h, cell: 12 * s, amplitude: 16, rng: &sliceRNG)
            ValueNoise.add(to: tex.baseAddress!, width: w, height: h, cell: 4 * s, amplitude: 9, rng: &sliceRNG)
            for i in 0..<(w * h) where b.label[i] == 1 { b.hu[i] += tex[i] }
        }
        for lung in lungs {
            for tube in lung.tubes where t >= tube.t0 && t <= tube.t1 {
                let dt = t - tube.t0
                let (x, y) = lung.point(u: tube.u + tube.du * dt, v: tube.v + tube.dv * dt, t: t)
                if tube.air {
                    b.stampDisc(cx: x, cy: y, radius: tube.radius + 1.1 * s, value: -150, strength: 0.8, onlyLabel: 1)
                    b.stampDisc(cx: x, cy: y, radius: tube.radius, value: -990, strength: 1, onlyLabel: 1)
                } else {
                    b.stampDisc(cx: x, cy: y, radius: tube.radius, value: 30, strength: 0.85, onlyLabel: 1)
                }
            }
        }

        // Lesions.
        var perLesion = [Int](repeating: 0, count: lesions.count)
        let present = lesions.indices.filter { abs(t - lesions[$0].t) < lesions[$0].c * lesions[$0].outer }
        if !present.isEmpty {
            var lesionTexture = [Float](repeating: 0, count: w * h)
            lesionTexture.withUnsafeMutableBufferPointer { tex in
                ValueNoise.add(to: tex.baseAddress!, width: w, height: h, cell: 3 * s, amplitude: 0.6, rng: &sliceRNG)
                ValueNoise.add(to: tex.baseAddress!, width: w, height: h, cell: 9 * s, amplitude: 0.4, rng: &sliceRNG)
            }
            for index in present {
                perLesion[index] = paint(lesions[index], id: UInt8(index + 1), t: t, builder: b, texture: lesionTexture)
            }
        }

        for i in 0..<(w * h) { b.hu[i] += 9 * sliceRNG.fastNormal() }

        // Output and counts.
        let count = w * h
        var hu = [Int16](repeating: 0, count: count)
        let lo = Float(PhantomVolume.huRange.lowerBound), hi = Float(PhantomVolume.huRange.upperBound)
        for i in 0..<count { hu[i] = Int16(min(max(b.hu[i].rounded(), lo), hi)) }
        let labels = Array(UnsafeBufferPointer(start: b.label, count: count))
        var truth = PhantomSliceTruth(index: k, lungRight: 0, lungLeft: 0, lesionRight: 0, lesionLeft: 0, groundGlass: 0, consolidation: 0,
                                      perLesion: perLesion)
        for i in 0..<count where labels[i] != 0 {
            // side 1 is the lung on the image's left: the patient's right lung.
            let right = side[i] == 1
            if right { truth.lungRight += 1 } else { truth.lungLeft += 1 }
            if labels[i] >= 2 {
                if right { truth.lesionRight += 1 } else { truth.lesionLeft += 1 }
                if labels[i] == 2 { truth.groundGlass += 1 } else { truth.consolidation += 1 }
            }
        }
        return PhantomVolumeSlice(index: k, width: w, height: h, hu: hu, labels: labels,
                                  instances: Array(UnsafeBufferPointer(start: b.instance, count: count)), truth: truth)
    }

    /// Paints one lesion's cross-section at t on lung pixels (label 1) and returns its pixel count.
    func paint(_ l: PlannedLesion, id: UInt8, t: Float, builder b: PhantomBuilder, texture: [Float]) -> Int {
        let lung = lungs[l.side == .left ? 0 : 1]
        let (x0c, y0c) = lung.point(u: l.u, v: l.v, t: t)
        let wz = (t - l.t) / l.c
        let reach = max(l.a, l.b) * l.outer * (1 + l.harmonics.total) + 2
        let x0 = max(0, Int(x0c - reach)), x1 = min(w - 1, Int(x0c + reach))
        let y0 = max(0, Int(y0c - reach)), y1 = min(h - 1, Int(y0c + reach))
        guard x0 <= x1, y0 <= y1 else { return 0 }
        let c = cosf(l.angle), sn = sinf(l.angle)
        // Consolidations (halo included) keep `consolidationMargin` pixels of lung around them: no
        // pixel that is not lung within that many pixels (Chebyshev distance).
        let margin = l.kind == .consolidation ? PhantomVolume.consolidationMargin : 0
        var pixels = 0
        for y in y0...y1 {
            let dy = Float(y) + 0.5 - y0c
            for x in x0...x1 {
                let i = y * w + x
                guard b.label[i] == 1 else { continue }
                let dx = Float(x) + 0.5 - x0c
                let p = (c * dx + sn * dy) / l.a, q = (-sn * dx + c * dy) / l.b
                let rr = (p * p + q * q).squareRoot()
                let planar = rr > 0 ? rr / l.harmonics.factor(cos: p / rr, sin: q / rr) : 0
                let r = (planar * planar + wz * wz).squareRoot()
                guard r < l.outer else { continue }
                if margin > 0 && !b.surroundedByLung(x: x, y: y, radius: margin) { continue }
                let tex = texture[i]
                let consolidated = l.kind == .consolidation ? r < 1 : r < l.core
                if consolidated {
                    let weight = 0.62 + 0.38 * smoothstep(1, 0.7, r) + 0.06 * tex
                    b.hu[i] += (l.density - b.hu[i]) * min(max(weight, 0), 1)
                    b.label[i] = 3
                } else {
                    let zoneEdge = l.kind == .consolidation ? l.outer : 1
                    let profile = 0.35 + 0.65 * smoothstep(zoneEdge, zoneEdge - 0.3, r)
                    let strength = l.kind == .consolidation ? l.delta * 0.8 : l.delta
                    b.hu[i] += strength * profile * (1 + 0.35 * tex)
                    b.label[i] = 2
                }
                b.instance[i] = id
                pixels += 1
            }
        }
        return pixels
    }
}

extension PhantomBuilder {
    /// Whether every pixel within `radius` (Chebyshev distance, rounded up) of (x, y) is lung
    /// (label 1, 2 or 3) and inside the image.
    func surroundedByLung(x: Int, y: Int, radius: Float) -> Bool {
        let r = Int(radius.rounded(.up))
        guard x - r >= 0, y - r >= 0, x + r < w, y + r < h else { return false }
        for yy in (y - r)...(y + r) {
            let row = label + yy * w
            for xx in (x - r)...(x + r) where row[xx] == 0 { return false }
        }
        return true
    }
}
