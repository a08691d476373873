// Whole-scan analysis: the slices of an assembled series go through the model one at a time
// (memory independent of the number of slices), slices without a lung field are skipped, and the
// slice results become a scan result: a verdict by a written-down rule, lesion and lung volumes,
// the percentage of opacity for both lungs and each lung, the slice of greatest involvement, and
// a label volume of the lesions in the scan's stored voxel layout.
import Affinity
import Foundation
import Imaging
import Scans

/// How slice results become the scan's verdict.
public enum VerdictRule: String, Sendable, CaseIterable, Codable {
    /// The slices' class probabilities averaged with each slice's lesion area as its weight (slices
    /// with more lesion count more); when no slice has a lesion, the plain mean. The default: a
    /// scan is judged by its involved slices, not outvoted by the many slices a lesion misses.
    case lesionWeighted = "lesion-weighted"
    /// The plain mean of the analysed slices' class probabilities.
    case mean
    /// The class most analysed slices get (ties: the more severe class, COVID-19 over common
    /// pneumonia over normal); its probabilities are the share of slices per class.
    case majority

    /// One sentence, as the result reports it.
    public var explanation: String {
        switch self {
        case .lesionWeighted:
            return "mean of the analysed slices' class probabilities weighted by each slice's lesion area (plain mean when no slice has a lesion); the verdict is the most probable class"
        case .mean: return "mean of the analysed slices' class probabilities; the verdict is the most probable class"
        case .majority: return "the class most analysed slices get (ties go to the more severe class); probabilities are the share of slices per class"
        }
    }
}

/// The settings of one scan analysis.
public struct ScanRequest: Sendable {
    public var modelID: String?
    public var seed: UInt64 = 1
    public var rule: VerdictRule = .lesionWeighted
    /// The window that maps HU to the model's [0, 1] input: centre and width (the lung window).
    public var windowCentre: Double = -600
    public var windowWidth: Double = 1500
    /// Slices with a lung field smaller than this (mm²) are not analysed.
    public var minimumLungAreaMM2: Double = 100
    /// Limits: slices per scan and voxels per scan.
    public var maxSlices = 2000
    public var maxVoxels = 2000 * 1024 * 1024
    public init() {}
}

/// One lesion of one slice.
public struct ScanLesion: Sendable, Codable, Equatable {
    /// [x1, y1, x2, y2] in the slice's display-orientation pixels.
    public var box: [Double]
    public var score: Double
    public var areaPx: Int
    public var areaMM2: Double
    enum CodingKeys: String, CodingKey { case box, score, areaPx = "area_px", areaMM2 = "area_mm2" }
}

/// One slice's result.
public struct ScanSliceResult: Sendable, Codable {
    public var index: Int
    public var positionMM: Double
    public var source: SliceSource
    /// False for a slice without a lung field (not given to the model).
    public var analysed: Bool
    public var classIndex: Int?
    public var className: String?
    public var probabilities: [Double]?
    public var lesions: [ScanLesion]
    public var lesionAreaMM2: Double
    public var lungAreaMM2: Double
    /// The patient's left and right lung (display orientation: the right lung on the image's left).
    public var lesionAreaLeftMM2: Double
    public var lesionAreaRightMM2: Double
    public var lungAreaLeftMM2: Double
    public var lungAreaRightMM2: Double

    enum CodingKeys: String, CodingKey {
        case index, positionMM = "position_mm", source, analysed, classIndex = "class_index", className = "class", probabilities, lesions
        case lesionAreaMM2 = "lesion_area_mm2", lungAreaMM2 = "lung_area_mm2"
        case lesionAreaLeftMM2 = "lesion_area_left_mm2", lesionAreaRightMM2 = "lesion_area_right_mm2"
        case lungAreaLeftMM2 = "lung_area_left_mm2", lungAreaRightMM2 = "lung_area_right_mm2"
    }
}

/// The scan's verdict.
public struct ScanVerdict: Sendable, Codable, Equatable {
    public var className: String
    public var classIndex: Int
    public var probabilities: [Double]
    public var rule: String
    public var explanation: String
    enum CodingKeys: String, CodingKey { case className = "class", classIndex = "class_index", probabilities, rule, explanation }
}

/// The result of a scan analysis (the keys of the JSON and of the D-Bus job's Result).
public struct ScanResult: Sendable, Codable {
    public var seriesUID: String
    public var sliceCount: Int
    public var analysedSlices: Int
    public var slices: [ScanSliceResult]
    public var verdict: ScanVerdict
    public var lesionVolumeML: Double
    public var lungVolumeML: Double
    public var opacityPercent: Double
    public var opacityPercentLeft: Double
    public var opacityPercentRight: Double
    /// The index (in `slices`) of the slice with the largest share of its lung field affected;
    /// nil when no slice has a lesion.
    public var maxInvolvementSlice: Int?
    /// [row, column, slice] mm.
    public var spacingMM: [Double]
    public var warnings: [String]
    public var setAside: [SetAside]
    public var modelID: String
    public var timings: [String: Double]

    enum CodingKeys: String, CodingKey {
        case seriesUID = "series_uid", sliceCount = "slice_count", analysedSlices = "analysed_slices", slices, verdict
        case lesionVolumeML = "lesion_volume_ml", lungVolumeML = "lung_volume_ml", opacityPercent = "opacity_percent"
        case opacityPercentLeft = "opacity_percent_left", opacityPercentRight = "opacity_percent_right"
        case maxInvolvementSlice = "max_involvement_slice", spacingMM = "spacing_mm", warnings, setAside = "set_aside"
        case modelID = "model", timings
    }
}

/// Analyses assembled series with an `AnalyseEngine`.
public struct ScanAnalyser {
    public let engine: AnalyseEngine
    public init(engine: AnalyseEngine) { self.engine = engine }

    /// What every slice of one analysis shares, checked once: geometry, window, the engine's request.
    struct Plan {
        var first: SliceHeader
        var transform: DisplayTransform
        var displayWidth: Int, displayHeight: Int
        var pixelMM2: Double, sliceMM: Double
        var warnings: [String]
        var analyseRequest: AnalyseRequest
        var lo: Double, scale: Double
    }

    /// Checks `series` and `request` against the limits and works out the geometry.
    /// - Throws: as `analyse`.
    func plan(_ series: AssembledSeries, request: ScanRequest) throws -> Plan {
        guard let first = series.slices.first else { throw ScanError.noSeries("the series has no slices") }
        guard series.count <= request.maxSlices else {
            throw ScanError.tooLarge("\(series.count) slices; the limit is \(request.maxSlices)")
        }
        let voxels = series.count * first.rows * first.columns
        guard first.rows > 0, first.columns > 0, voxels <= request.maxVoxels else {
            throw ScanError.tooLarge("\(first.columns)×\(first.rows)×\(series.count) voxels; the limit is \(request.maxVoxels)")
        }
        guard request.windowWidth > 0, request.windowWidth.isFinite, request.windowCentre.isFinite else {
            throw ServiceError.invalidArgument("The window width must be positive and finite, got centre \(request.windowCentre), width \(request.windowWidth)")
        }
        let transform = DisplayTransform(orientation: first.orientation)
        let (dw, dh) = transform.size(width: first.columns, height: first.rows)
        // mm per display pixel along x and y (the stored row/column spacing, swapped by a transpose).
        let spacingX = transform.transpose ? series.spacing[0] : series.spacing[1]
        let spacingY = transform.transpose ? series.spacing[1] : series.spacing[0]
        var warnings = series.warnings
        if let n = first.normal, abs(n.z) < 0.8 {
            warnings.append("The slices are not axial (normal \(n.array.map { (($0 * 100).rounded() / 100) })); the model was trained on axial slices.")
        }
        var analyseRequest = AnalyseRequest(modelID: request.modelID, seed: request.seed)
        analyseRequest.withDetections = true
        analyseRequest.withLungField = false  // segmented below, where the mask is needed
        return Plan(first: first, transform: transform, displayWidth: dw, displayHeight: dh, pixelMM2: spacingX * spacingY,
                    sliceMM: series.spacing[2], warnings: warnings, analyseRequest: analyseRequest,
                    lo: request.windowCentre - request.windowWidth / 2, scale: 1 / request.windowWidth)
    }

    /// Analyses `series` slice by slice.
    /// - Parameters:
    ///   - reader: gives each slice's HU values.
    ///   - sink: receives the label volume (nil: none is made).
    ///   - progress: called after each slice with (slices done, slice count).
    ///   - isCancelled: polled between slices; true ends the analysis with `Cancelled`.
    /// - Throws: `ScanError.tooLarge` over the limits; `ServiceError` (model, cancelled); what the
    ///   reader or the sink throws.
    public func analyse(_ series: AssembledSeries, setAside: [SetAside] = [], reader: ScanSliceReader, request: ScanRequest,
                        sink: LabelVolumeSink? = nil, progress: (Int, Int) -> Void = { _, _ in },
                        isCancelled: () -> Bool = { false }) throws -> ScanResult {
        let t0 = Date()
        let plan = try plan(series, request: request)
        try sink?.begin(series: series, columns: plan.first.columns, rows: plan.first.rows)
        var slices: [ScanSliceResult] = []
        slices.reserveCapacity(series.count)
        var modelID = request.modelID ?? engine.store.defaultModelID ?? ""
        for index in series.slices.indices {
            if isCancelled() { throw ServiceError(.cancelled, "The scan analysis was cancelled after \(index) of \(series.count) slices") }
            let (result, labels, model) = try analyseSlice(index, of: series, plan: plan, reader: reader, request: request)
            if let model { modelID = model }
            try sink?.append(slice: labels)
            slices.append(result)
            progress(index + 1, series.count)
        }
        try sink?.finish()
        return Self.summarise(series: series, slices: slices, setAside: setAside, warnings: plan.warnings, rule: request.rule,
                              sliceMM: plan.sliceMM, modelID: modelID, seconds: Date().timeIntervalSince(t0))
    }

    /// One slice of a scan shared by several processes (affinity-lab under mpirun): its result and
    /// its label slice (stored layout), as `analyse` computes them.
    public struct SliceOutcome: Sendable {
        public var result: ScanSliceResult
        public var labels: [UInt8]
        /// The model that analysed it (nil: the slice had no lung field).
        public var modelID: String?
    }

    /// Analyses the slices `indices` of `series` only (each as `analyse` does); `combine` makes the
    /// scan's result from every slice's outcome.
    /// - Throws: as `analyse`.
    public func analyseSlices(_ series: AssembledSeries, indices: [Int], reader: ScanSliceReader, request: ScanRequest,
                              progress: (Int) -> Void = { _ in }) throws -> [SliceOutcome] {
        let plan = try plan(series, request: request)
        var out: [SliceOutcome] = []
        for (k, index) in indices.enumerated() {
            guard series.slices.indices.contains(index) else { throw ScanError.noSeries("the series has no slice \(index)") }
            let (result, labels, model) = try analyseSlice(index, of: series, plan: plan, reader: reader, request: request)
            out.append(SliceOutcome(result: result, labels: labels, modelID: model))
            progress(k + 1)
        }
        return out
    }

    /// The scan's result from the outcomes of all its slices, in the series' order (as `analyse`
    /// returns it), the label slices written to `sink` in that order.
    /// - Parameters:
    ///   - labels: each slice's label slice (stored layout), read when `sink` is given.
    ///   - seconds: the analysis's wall time.
    /// - Throws: `ScanError.noSeries` when the outcomes do not cover the series; what the sink throws.
    public func combine(_ series: AssembledSeries, results: [ScanSliceResult], modelIDs: [String?], labels: (Int) -> [UInt8],
                        setAside: [SetAside] = [], request: ScanRequest, sink: LabelVolumeSink? = nil, seconds: Double) throws -> ScanResult {
        let plan = try plan(series, request: request)
        guard results.count == series.count, results.map(\.index) == Array(series.slices.indices) else {
            throw ScanError.noSeries("the slice results cover \(results.count) of the series' \(series.count) slices")
        }
        if let sink {
            try sink.begin(series: series, columns: plan.first.columns, rows: plan.first.rows)
            for i in results.indices { try sink.append(slice: labels(i)) }
            try sink.finish()
        }
        let modelID = modelIDs.compactMap { $0 }.last ?? request.modelID ?? engine.store.defaultModelID ?? ""
        return Self.summarise(series: series, slices: results, setAside: setAside, warnings: plan.warnings, rule: request.rule,
                              sliceMM: plan.sliceMM, modelID: modelID, seconds: seconds)
    }

    /// One slice: HU → window → lung field → (when the lung field is large enough) the model;
    /// the result, the label slice in the stored layout, and the model's id (nil when not analysed).
    private func analyseSlice(_ index: Int, of series: AssembledSeries, plan: Plan, reader: ScanSliceReader,
                              request: ScanRequest) throws -> (ScanSliceResult, [UInt8], String?) {
        let header = series.slices[index], first = plan.first
        let dw = plan.displayWidth, dh = plan.displayHeight, pixelMM2 = plan.pixelMM2
        guard header.rows == first.rows, header.columns == first.columns else {
            throw ScanError.badGeometry("slice \(header.source) is \(header.columns)×\(header.rows), the series' first slice \(first.columns)×\(first.rows)")
        }
        let hu = try reader.values(of: header)
        guard hu.count == header.rows * header.columns else {
            throw ScanError.badGeometry("slice \(header.source) has \(hu.count) values for \(header.columns)×\(header.rows) pixels")
        }
        let display = plan.transform.apply(hu, width: header.columns, height: header.rows)
        let lo = plan.lo, scale = plan.scale
        let gray = GrayImage(width: dw, height: dh, pixels: display.map { v in
            let x = (Double(v) - lo) * scale
            return Float(x.isNaN ? 0 : min(1, max(0, x)))
        })
        let lung = LungField.segment(gray)
        let midline = Self.midline(lung)
        var lungLeft = 0, lungRight = 0
        for y in 0..<dh {
            let row = y * dw
            for x in 0..<dw where lung.pixels[row + x] != 0 {
                // Display orientation: columns left of the midline are the patient's right lung.
                if x < midline { lungRight += 1 } else { lungLeft += 1 }
            }
        }
        var result = ScanSliceResult(index: index, positionMM: series.positions[index], source: header.source, analysed: false,
                                     classIndex: nil, className: nil, probabilities: nil, lesions: [], lesionAreaMM2: 0,
                                     lungAreaMM2: Double(lung.area) * pixelMM2, lesionAreaLeftMM2: 0, lesionAreaRightMM2: 0,
                                     lungAreaLeftMM2: Double(lungLeft) * pixelMM2, lungAreaRightMM2: Double(lungRight) * pixelMM2)
        var labels = [UInt8](repeating: 0, count: dw * dh)
        var modelID: String? = nil
        if Double(lung.area) * pixelMM2 >= request.minimumLungAreaMM2 {
            let r = try engine.analyseAndWait(.gray(gray), plan.analyseRequest)
            modelID = r.modelID
            labels = r.labelMap
            var lesionLeft = 0, lesionRight = 0
            for y in 0..<dh {
                let row = y * dw
                for x in 0..<dw where labels[row + x] != 0 {
                    if x < midline { lesionRight += 1 } else { lesionLeft += 1 }
                }
            }
            result.analysed = true
            result.classIndex = r.prediction.classIndex
            result.className = r.prediction.className
            result.probabilities = r.prediction.probabilities.map(Double.init)
            result.lesions = r.lesions.map { ScanLesion(box: $0.box, score: $0.score, areaPx: $0.area, areaMM2: Double($0.area) * pixelMM2) }
            result.lesionAreaMM2 = Double(lesionLeft + lesionRight) * pixelMM2
            result.lesionAreaLeftMM2 = Double(lesionLeft) * pixelMM2
            result.lesionAreaRightMM2 = Double(lesionRight) * pixelMM2
        }
        return (result, plan.transform.invert(labels, width: header.columns, height: header.rows), modelID)
    }

    /// The column between the two lungs: the middle of the lung field's extent (the image's middle
    /// when there is no lung field).
    static func midline(_ lung: LungField.Mask) -> Int {
        var minX = lung.width, maxX = -1
        for y in 0..<lung.height {
            let row = y * lung.width
            for x in 0..<lung.width where lung.pixels[row + x] != 0 {
                minX = min(minX, x)
                maxX = max(maxX, x)
            }
        }
        return maxX >= minX ? (minX + maxX + 1) / 2 : lung.width / 2
    }

    /// The scan-level numbers from the slice results.
    static func summarise(series: AssembledSeries, slices: [ScanSliceResult], setAside: [SetAside], warnings: [String], rule: VerdictRule,
                          sliceMM: Double, modelID: String, seconds: Double) -> ScanResult {
        let analysed = slices.filter(\.analysed)
        let classes = classNames.count
        var probabilities = [Double](repeating: 0, count: classes)
        switch rule {
        case .mean, .lesionWeighted:
            var weights = analysed.map { rule == .lesionWeighted ? $0.lesionAreaMM2 : 1 }
            if weights.reduce(0, +) <= 0 { weights = analysed.map { _ in 1 } }
            let total = weights.reduce(0, +)
            if total > 0 {
                for (s, w) in zip(analysed, weights) {
                    for c in 0..<classes { probabilities[c] += w * (s.probabilities?[c] ?? 0) / total }
                }
            }
        case .majority:
            for s in analysed { if let c = s.classIndex { probabilities[c] += 1 / Double(analysed.count) } }
        }
        // The most probable class; ties go to the more severe (higher index) class.
        var verdict = 0
        for c in 1..<classes where probabilities[c] >= probabilities[verdict] { verdict = c }
        if analysed.isEmpty { verdict = 0 }
        let ml = sliceMM / 1000
        let lesion = slices.reduce(0) { $0 + $1.lesionAreaMM2 } * ml
        let lung = slices.reduce(0) { $0 + $1.lungAreaMM2 } * ml
        let lesionL = slices.reduce(0) { $0 + $1.lesionAreaLeftMM2 } * ml, lungL = slices.reduce(0) { $0 + $1.lungAreaLeftMM2 } * ml
        let lesionR = slices.reduce(0) { $0 + $1.lesionAreaRightMM2 } * ml, lungR = slices.reduce(0) { $0 + $1.lungAreaRightMM2 } * ml
        func percent(_ a: Double, _ b: Double) -> Double { b > 0 ? 100 * a / b : 0 }
        let maxSlice = slices.filter { $0.lesionAreaMM2 > 0 }
            .max { percent($0.lesionAreaMM2, $0.lungAreaMM2) < percent($1.lesionAreaMM2, $1.lungAreaMM2) }?.index
        var allWarnings = warnings
        if analysed.isEmpty { allWarnings.append("No slice has a lung field: nothing was analysed, and the verdict is normal by default.") }
        return ScanResult(seriesUID: series.seriesUID, sliceCount: slices.count, analysedSlices: analysed.count, slices: slices,
                          verdict: ScanVerdict(className: classNames[verdict], classIndex: verdict, probabilities: probabilities,
                                               rule: rule.rawValue, explanation: rule.explanation),
                          lesionVolumeML: lesion, lungVolumeML: lung, opacityPercent: percent(lesion, lung),
                          opacityPercentLeft: percent(lesionL, lungL), opacityPercentRight: percent(lesionR, lungR),
                          maxInvolvementSlice: maxSlice, spacingMM: series.spacing, warnings: allWarnings, setAside: setAside,
                          modelID: modelID, timings: ["total": seconds, "per_slice": slices.isEmpty ? 0 : seconds / Double(slices.count)])
    }
}
