// Series assembly: slices from any number of files (any names, any order) become volumes.
//
// Slices are grouped by SeriesInstanceUID and, within a series, by orientation (a series may hold
// a localizer in another plane); each group is sorted along the slice normal from
// ImagePositionPatient and ImageOrientationPatient (InstanceNumber only when a position is
// missing), inferior to superior, and its slice spacing is measured. Single stray images and
// localizers are set aside and reported; duplicate positions, missing slices and uneven spacing are
// warnings of the volume.

/// Where one slice comes from: a file and a frame in it (0 for single-frame files and PNGs).
public struct SliceSource: Sendable, Hashable, Codable, CustomStringConvertible {
    public var file: String
    public var frame: Int
    public init(file: String, frame: Int = 0) { self.file = file; self.frame = frame }
    public var description: String { frame == 0 ? file : "\(file) (frame \(frame + 1))" }
}

/// What a decoder reports of one slice: its place in the patient and in its series.
public struct SliceHeader: Sendable, Equatable {
    public var source: SliceSource
    public var rows: Int
    public var columns: Int
    public var modality: String
    public var seriesUID: String
    public var studyUID: String
    public var sopUID: String
    public var instanceNumber: Int?
    /// ImagePositionPatient: the centre of the first stored pixel, mm (LPS).
    public var position: Vector3?
    /// ImageOrientationPatient: the direction of increasing column index, then of increasing row
    /// index (unit vectors, LPS).
    public var orientation: (row: Vector3, column: Vector3)?
    /// PixelSpacing: mm between rows, mm between columns.
    public var pixelSpacing: (row: Double, column: Double)?
    public var sliceThickness: Double?
    /// ImageType values (e.g. ORIGINAL, PRIMARY, AXIAL; LOCALIZER for a scout), when known.
    public var imageType: [String]

    public init(source: SliceSource, rows: Int, columns: Int, modality: String = "CT", seriesUID: String = "", studyUID: String = "",
                sopUID: String = "", instanceNumber: Int? = nil, position: Vector3? = nil,
                orientation: (row: Vector3, column: Vector3)? = nil, pixelSpacing: (row: Double, column: Double)? = nil,
                sliceThickness: Double? = nil, imageType: [String] = []) {
        self.source = source
        self.rows = rows
        self.columns = columns
        self.modality = modality
        self.seriesUID = seriesUID
        self.studyUID = studyUID
        self.sopUID = sopUID
        self.instanceNumber = instanceNumber
        self.position = position
        self.orientation = orientation
        self.pixelSpacing = pixelSpacing
        self.sliceThickness = sliceThickness
        self.imageType = imageType
    }

    public static func == (a: SliceHeader, b: SliceHeader) -> Bool {
        a.source == b.source && a.rows == b.rows && a.columns == b.columns && a.modality == b.modality && a.seriesUID == b.seriesUID
            && a.studyUID == b.studyUID && a.sopUID == b.sopUID && a.instanceNumber == b.instanceNumber && a.position == b.position
            && a.orientation?.row == b.orientation?.row && a.orientation?.column == b.orientation?.column
            && a.pixelSpacing?.row == b.pixelSpacing?.row && a.pixelSpacing?.column == b.pixelSpacing?.column
            && a.sliceThickness == b.sliceThickness && a.imageType == b.imageType
    }

    /// The slice normal, row direction × column direction (nil without an orientation).
    public var normal: Vector3? { orientation.map { $0.row.cross($0.column).normalized } }
}

/// A file or a series that is not part of the volume analysed, and why.
public struct SetAside: Sendable, Equatable, Codable {
    /// The file (and frame), or `series <UID>`.
    public var what: String
    public var reason: String
    public init(what: String, reason: String) { self.what = what; self.reason = reason }
}

/// One volume: the slices of a series in one orientation, inferior to superior.
public struct AssembledSeries: Sendable {
    public var seriesUID: String
    public var slices: [SliceHeader]
    /// Each slice's position along the normal, mm, ascending (inferior to superior for axial).
    public var positions: [Double]
    /// [row, column, slice] spacing in mm; the slice spacing is the median gap between positions
    /// (the slice thickness, or 1 mm, for a single slice).
    public var spacing: [Double]
    /// Duplicate positions, missing slices, uneven spacing, mixed sizes.
    public var warnings: [String]

    /// The slice count.
    public var count: Int { slices.count }
}

/// The result of assembling a set of slices.
public struct Assembly: Sendable {
    /// The volumes found, largest first.
    public var series: [AssembledSeries]
    /// What was not used, with the reasons.
    public var setAside: [SetAside]

    /// The volume to analyse: the one named by `uid`, or the only one.
    /// - Throws: `ScanError.noSeries` when there is none, `.seriesNotFound` for an unknown UID,
    ///   `.severalSeries` (listing them) when there are several and none is named.
    public func choose(_ uid: String?) throws -> AssembledSeries {
        guard !series.isEmpty else {
            throw ScanError.noSeries(setAside.isEmpty ? "no slices were given" : setAside.prefix(5).map { "\($0.what): \($0.reason)" }.joined(separator: "; "))
        }
        if let uid {
            guard let s = series.first(where: { $0.seriesUID == uid }) else {
                throw ScanError.seriesNotFound(uid: uid, available: series.map { "\($0.seriesUID) (\($0.count) slices)" })
            }
            return s
        }
        guard series.count == 1 else { throw ScanError.severalSeries(series.map { "\($0.seriesUID) (\($0.count) slices)" }) }
        return series[0]
    }
}

/// Groups, sorts and checks slices (see the file's comment).
public enum SeriesAssembler {
    /// Two orientations are the same when their direction cosines differ by less than this.
    public static let orientationTolerance = 1e-3
    /// Two positions are the same slice when they are closer than this (mm).
    public static let duplicateTolerance = 1e-3
    /// Gaps more than this fraction away from the median spacing are uneven.
    public static let unevenTolerance = 0.1

    public static func assemble(_ headers: [SliceHeader]) -> Assembly {
        var setAside: [SetAside] = []
        var bySeries: [String: [SliceHeader]] = [:]
        var order: [String] = []
        for h in headers {
            if h.imageType.contains(where: { $0.uppercased() == "LOCALIZER" }) {
                setAside.append(SetAside(what: h.source.description, reason: "a localizer (scout) image"))
                continue
            }
            let key = h.seriesUID.isEmpty ? "(no SeriesInstanceUID)" : h.seriesUID
            if bySeries[key] == nil { order.append(key) }
            bySeries[key, default: []].append(h)
        }
        var volumes: [AssembledSeries] = []
        for uid in order {
            let slices = bySeries[uid]!
            // Groups by orientation (slices without one form their own group).
            var groups: [[SliceHeader]] = []
            for s in slices {
                if let i = groups.firstIndex(where: { sameOrientation($0[0], s) }) { groups[i].append(s) } else { groups.append([s]) }
            }
            groups.sort { $0.count > $1.count }
            for (gi, group) in groups.enumerated() {
                if gi > 0 {
                    for s in group {
                        setAside.append(SetAside(what: s.source.description,
                                                 reason: "its orientation differs from the rest of series \(uid) (a localizer or a reformat)"))
                    }
                    continue
                }
                if group.count == 1 && headers.count > 1 {
                    setAside.append(SetAside(what: group[0].source.description, reason: "a single image of series \(uid), not a volume"))
                    continue
                }
                volumes.append(build(uid: uid, group))
            }
        }
        volumes.sort { $0.count > $1.count }
        return Assembly(series: volumes, setAside: setAside)
    }

    static func sameOrientation(_ a: SliceHeader, _ b: SliceHeader) -> Bool {
        switch (a.orientation, b.orientation) {
        case (nil, nil): return true
        case let (x?, y?):
            return x.row.maxDifference(y.row) < orientationTolerance && x.column.maxDifference(y.column) < orientationTolerance
        default: return false
        }
    }

    static func build(uid: String, _ group: [SliceHeader]) -> AssembledSeries {
        var warnings: [String] = []
        // The sort key: position along the normal, signed so that it grows towards the head (+z in
        // LPS) for axial slices; InstanceNumber when a slice lacks a position or orientation.
        let normal = group[0].normal
        let sign: Double = (normal?.z ?? 1) < 0 ? -1 : 1
        var positioned = group.allSatisfy { $0.position != nil } && normal != nil
        var keyed: [(SliceHeader, Double)] = []
        if positioned {
            keyed = group.map { ($0, sign * $0.position!.dot(normal!)) }
            // Positions that are not numbers, or so far out that their gaps are not (a damaged or
            // forged header: found by fuzzing, a spacing of infinity made `Int(ratio)` trap), cannot
            // order the slices: they are ordered as without positions.
            if !keyed.allSatisfy({ $0.1.isFinite && abs($0.1) < 1e9 }) {
                positioned = false
                warnings.append("Some slices have an ImagePositionPatient or ImageOrientationPatient that is not a usable number: they are ordered by InstanceNumber and the slice spacing is the slice thickness.")
            }
        } else {
            warnings.append("Some slices have no ImagePositionPatient or ImageOrientationPatient: they are ordered by InstanceNumber and the slice spacing is the slice thickness.")
        }
        if !positioned {
            keyed = group.map { ($0, Double($0.instanceNumber ?? 0)) }
        }
        keyed.sort { $0.1 != $1.1 ? $0.1 < $1.1 : ($0.0.instanceNumber ?? 0) < ($1.0.instanceNumber ?? 0) }
        let slices = keyed.map(\.0)
        var positions = keyed.map(\.1)
        let first = slices[0]
        if slices.contains(where: { $0.rows != first.rows || $0.columns != first.columns }) {
            warnings.append("The slices are not all \(first.columns)×\(first.rows) pixels.")
        }
        var sliceSpacing = first.sliceThickness ?? 1
        if positioned && slices.count > 1 {
            let gaps = zip(positions.dropFirst(), positions).map { $0 - $1 }
            let duplicates = gaps.filter { $0 < duplicateTolerance }.count
            if duplicates > 0 {
                warnings.append("\(duplicates) slice\(duplicates == 1 ? " has" : "s have") the position of another slice (duplicates).")
            }
            let real = gaps.filter { $0 >= duplicateTolerance }.sorted()
            if !real.isEmpty {
                let median = real[real.count / 2]
                sliceSpacing = median
                var missing = 0
                var uneven = 0
                for g in real {
                    let ratio = g / median
                    if ratio > 1.5 { missing += Int((ratio - 1).rounded()) } else if abs(ratio - 1) > unevenTolerance { uneven += 1 }
                }
                if missing > 0 { warnings.append("About \(missing) slice\(missing == 1 ? " is" : "s are") missing (gaps of more than 1.5 × the \(format(median)) mm spacing).") }
                if uneven > 0 { warnings.append("The spacing is uneven: \(uneven) gap\(uneven == 1 ? "" : "s") differ from the median \(format(median)) mm by more than \(Int(unevenTolerance * 100)) %.") }
            }
        } else if !positioned {
            positions = (0..<slices.count).map { Double($0) * sliceSpacing }
        }
        let spacing = [first.pixelSpacing?.row ?? 1, first.pixelSpacing?.column ?? 1, sliceSpacing]
        if first.pixelSpacing == nil { warnings.append("The slices have no PixelSpacing: 1 mm is assumed, so areas and volumes are in pixel units.") }
        return AssembledSeries(seriesUID: uid, slices: slices, positions: positions, spacing: spacing, warnings: warnings)
    }

    static func format(_ x: Double) -> String {
        let r = (x * 100).rounded() / 100
        return r == r.rounded() ? String(Int(r)) : String(r)
    }
}

/// Why a scan cannot be assembled or analysed.
public enum ScanError: Error, Equatable, CustomStringConvertible, Sendable {
    /// No volume could be made (the reason lists what was set aside).
    case noSeries(String)
    /// Several volumes and none chosen.
    case severalSeries([String])
    /// The chosen series is not among those found.
    case seriesNotFound(uid: String, available: [String])
    /// The volume exceeds a limit (slices or voxels).
    case tooLarge(String)
    /// The geometry cannot be used (a zero or singular affine, inconsistent sizes).
    case badGeometry(String)

    public var description: String {
        switch self {
        case .noSeries(let why): return "No volume can be assembled: \(why)."
        case .severalSeries(let list): return "The input holds \(list.count) series; choose one by its SeriesInstanceUID: \(list.joined(separator: ", "))."
        case .seriesNotFound(let uid, let available):
            return "There is no series \(uid) in the input; it holds \(available.isEmpty ? "none" : available.joined(separator: ", "))."
        case .tooLarge(let why): return "The scan is too large: \(why)."
        case .badGeometry(let why): return "The scan's geometry cannot be used: \(why)."
        }
    }
}
