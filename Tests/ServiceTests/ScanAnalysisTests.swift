// Whole-scan analysis (issue 15) through the real engine and the bundled demo model: a series
// made of phantom slices (their gray values mapped back to HU through the lung window), slices
// without a lung field skipped, each analysed slice equal to a single-slice analysis, the scan
// numbers equal to the sums of the slice numbers, a mirrored storage giving the same results, the
// label volume in the stored layout, and the limits and cancellation as named errors.
import Affinity
import Foundation
import Imaging
import Scans
import Service
import TestSupport
import Testing

/// HU values by slice, in memory (a test reader).
final class MemoryScan: ScanSliceReader, @unchecked Sendable {
    // @unchecked Sendable: `values` is written once, before the reader is shared.
    var values: [SliceSource: [Float]] = [:]
    func values(of slice: SliceHeader) throws -> [Float] {
        guard let v = values[slice.source] else { throw ScanError.badGeometry("no slice \(slice.source)") }
        return v
    }
}

/// A label volume kept in memory (a test sink).
final class MemorySink: LabelVolumeSink {
    var slices: [[UInt8]] = []
    var began = false, finished = false
    func begin(series: AssembledSeries, columns: Int, rows: Int) throws { began = true }
    func append(slice labels: [UInt8]) throws { slices.append(labels) }
    func finish() throws { finished = true }
}

@Suite("Scan analysis", .serialized)
struct ScanAnalysisTests {
    /// HU from the lung window's [0, 1] (centre −600, width 1500): the inverse of the scan's window.
    static func hu(_ gray: [Float]) -> [Float] { gray.map { $0 * 1500 - 1350 } }

    /// A series of `classes.count` phantom slices (512×512) plus two blank slices (air), stored with
    /// `orientation`; the reader holds the slices' HU as stored.
    static func series(_ classes: [PhantomClass], orientation: (row: Vector3, column: Vector3), seed: UInt64 = 5)
        -> (headers: [SliceHeader], reader: MemoryScan, display: [GrayImage]) {
        let reader = MemoryScan()
        var headers: [SliceHeader] = []
        var display: [GrayImage] = []
        let generator = PhantomGenerator(seed: seed, size: 512)
        let transform = DisplayTransform(orientation: orientation)
        let blank = GrayImage(width: 512, height: 512, pixels: [Float](repeating: 0, count: 512 * 512))
        let images = [blank] + classes.enumerated().map { generator.slice(index: $0.offset, class: $0.element).pixelImage.grayImage() } + [blank]
        for (k, image) in images.enumerated() {
            let source = SliceSource(file: "slice-\(k).dcm")
            // Stored = the display image put back into the stored layout.
            reader.values[source] = hu(transform.invert(image.pixels, width: 512, height: 512))
            headers.append(SliceHeader(source: source, rows: 512, columns: 512, seriesUID: "1.2.826.0.1", instanceNumber: k + 1,
                                       position: Vector3(-180, -180, Double(k) * 5), orientation: orientation, pixelSpacing: (0.7, 0.7),
                                       sliceThickness: 5))
            display.append(image)
        }
        return (headers.shuffled(), reader, display)
    }

    static func engine(in dir: URL) throws -> AnalyseEngine {
        let store = try ModelStore(stateDirectory: dir.appendingPathComponent("state"))
        let card = try store.importBundled(TestPaths.root.appendingPathComponent("models/phantom-demo"))
        try store.setDefault(card.id)
        return AnalyseEngine(store: store, workers: 1)
    }

    @Test func aSeriesOfPhantomSlices() throws {
        let dir = try Paths.temporaryDirectory("scan")
        defer { try? FileManager.default.removeItem(at: dir) }
        let engine = try Self.engine(in: dir)
        defer { engine.stop() }
        let axial = (row: Vector3(1, 0, 0), column: Vector3(0, 1, 0))
        let (headers, reader, display) = Self.series([.covid, .covid, .normal, .pneumonia], orientation: axial)
        let series = try SeriesAssembler.assemble(headers).choose(nil)
        let sink = MemorySink()
        var progress: [Int] = []
        let result = try ScanAnalyser(engine: engine).analyse(series, reader: reader, request: ScanRequest(), sink: sink) { done, _ in progress.append(done) }

        #expect(result.sliceCount == 6 && result.slices.map(\.index) == Array(0..<6))
        #expect(progress == Array(1...6))
        #expect(result.slices.map(\.positionMM) == [0, 5, 10, 15, 20, 25])
        // The blank (air) slices have no lung field: not analysed.
        #expect(result.slices.map(\.analysed) == [false, true, true, true, true, false], "\(result.slices.map(\.lungAreaMM2))")
        #expect(result.analysedSlices == 4)
        // Each analysed slice is the single-slice analysis of the same image.
        for k in 1...4 {
            // The same window as the scan's: HU (float) → (HU − (−1350)) / 1500, clamped.
            let windowed = Self.hu(display[k].pixels).map { h in Float(min(1, max(0, (Double(h) + 1350) * (1 / 1500.0)))) }
            let single = try engine.analyseAndWait(.gray(GrayImage(width: 512, height: 512, pixels: windowed)), AnalyseRequest())
            let s = result.slices[k]
            #expect(s.classIndex == single.prediction.classIndex && s.lesions.count == single.lesions.count, "slice \(k)")
            #expect(s.lesions.map(\.areaPx) == single.lesions.map(\.area), "slice \(k)")
            #expect(s.lesions.allSatisfy { abs($0.areaMM2 - Double($0.areaPx) * 0.49) < 1e-9 })
        }
        // COVID-19 slices with lesions: the scan verdict follows them.
        #expect(result.verdict.className == "COVID-19" && result.verdict.rule == "lesion-weighted", "\(result.verdict)")
        #expect(abs(result.verdict.probabilities.reduce(0, +) - 1) < 1e-6)
        // Volumes are the slice areas times the 5 mm spacing.
        let lesionML = result.slices.reduce(0) { $0 + $1.lesionAreaMM2 } * 5 / 1000
        let lungML = result.slices.reduce(0) { $0 + $1.lungAreaMM2 } * 5 / 1000
        #expect(abs(result.lesionVolumeML - lesionML) < 1e-9 && abs(result.lungVolumeML - lungML) < 1e-9)
        #expect(result.lesionVolumeML > 0 && result.lungVolumeML > result.lesionVolumeML)
        #expect(abs(result.opacityPercent - 100 * lesionML / lungML) < 1e-9)
        for s in result.slices {
            #expect(abs(s.lesionAreaLeftMM2 + s.lesionAreaRightMM2 - s.lesionAreaMM2) < 1e-6)
            #expect(abs(s.lungAreaLeftMM2 + s.lungAreaRightMM2 - s.lungAreaMM2) < 1e-6)
            let lesionPixels = s.lesions.reduce(0) { $0 + $1.areaPx }
            #expect(abs(Double(lesionPixels) * 0.49 - s.lesionAreaMM2) < 1e-6, "slice \(s.index)")
        }
        // Both lungs are found on a phantom slice, about equally large.
        let lungs = result.slices[2]
        #expect(lungs.lungAreaLeftMM2 > 0.5 * lungs.lungAreaRightMM2 && lungs.lungAreaRightMM2 > 0.5 * lungs.lungAreaLeftMM2)
        if let m = result.maxInvolvementSlice {
            let share = { (s: ScanSliceResult) in s.lungAreaMM2 > 0 ? s.lesionAreaMM2 / s.lungAreaMM2 : 0 }
            #expect(result.slices.allSatisfy { share($0) <= share(result.slices[m]) })
        } else {
            Issue.record("no slice with a lesion in a series with COVID-19 phantom slices")
        }
        // The label volume: one stored-layout slice per slice, labels no higher than the lesion count.
        #expect(sink.began && sink.finished && sink.slices.count == 6)
        for (k, labels) in sink.slices.enumerated() {
            #expect(labels.count == 512 * 512)
            #expect(Int(labels.max() ?? 0) <= result.slices[k].lesions.count)
            #expect(labels.filter { $0 != 0 }.count == result.slices[k].lesions.reduce(0) { $0 + $1.areaPx })
        }
        // The JSON keys of the issue.
        let json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(result)) as? [String: Any] ?? [:]
        for key in ["series_uid", "slice_count", "slices", "verdict", "lesion_volume_ml", "lung_volume_ml", "opacity_percent",
                    "opacity_percent_left", "opacity_percent_right", "max_involvement_slice", "spacing_mm", "warnings", "set_aside"] {
            #expect(json[key] != nil, "no \(key)")
        }
        let slice = (json["slices"] as? [[String: Any]])?[1] ?? [:]
        for key in ["index", "position_mm", "source", "analysed", "class", "class_index", "probabilities", "lesions", "lesion_area_mm2", "lung_area_mm2"] {
            #expect(slice[key] != nil, "no slices[].\(key)")
        }

        // The same scan stored mirrored and upside down (rows along −x, columns along −y): the
        // same slice results in display orientation, the label volume in its own stored layout.
        let flipped = (row: Vector3(-1, 0, 0), column: Vector3(0, -1, 0))
        let (h2, r2, _) = Self.series([.covid, .covid, .normal, .pneumonia], orientation: flipped)
        let sink2 = MemorySink()
        let mirrored = try ScanAnalyser(engine: engine).analyse(try SeriesAssembler.assemble(h2).choose(nil), reader: r2, request: ScanRequest(), sink: sink2)
        #expect(mirrored.slices.map(\.classIndex) == result.slices.map(\.classIndex))
        #expect(mirrored.slices.map { $0.lesions.map(\.areaPx) } == result.slices.map { $0.lesions.map(\.areaPx) })
        #expect(abs(mirrored.lesionVolumeML - result.lesionVolumeML) < 1e-9)
        let t = DisplayTransform(orientation: flipped)
        for k in 0..<6 { #expect(t.apply(sink2.slices[k], width: 512, height: 512) == sink.slices[k], "slice \(k)") }

        // The other rules.
        var request = ScanRequest()
        request.rule = .majority
        let majority = try ScanAnalyser(engine: engine).analyse(series, reader: reader, request: request)
        #expect(majority.verdict.rule == "majority" && abs(majority.verdict.probabilities.reduce(0, +) - 1) < 1e-9)
        #expect(majority.verdict.probabilities[2] >= 0.5, "\(majority.verdict)")
    }

    @Test func limitsAndCancellationAreNamedErrors() throws {
        let dir = try Paths.temporaryDirectory("scan-limits")
        defer { try? FileManager.default.removeItem(at: dir) }
        let engine = try Self.engine(in: dir)
        defer { engine.stop() }
        let axial = (row: Vector3(1, 0, 0), column: Vector3(0, 1, 0))
        let (headers, reader, _) = Self.series([.covid], orientation: axial)
        let series = try SeriesAssembler.assemble(headers).choose(nil)
        var few = ScanRequest()
        few.maxSlices = 2
        #expect(throws: ScanError.tooLarge("3 slices; the limit is 2")) { try ScanAnalyser(engine: engine).analyse(series, reader: reader, request: few) }
        var small = ScanRequest()
        small.maxVoxels = 1000
        #expect(throws: ScanError.self) { try ScanAnalyser(engine: engine).analyse(series, reader: reader, request: small) }
        var badWindow = ScanRequest()
        badWindow.windowWidth = 0
        #expect(throws: ServiceError.self) { try ScanAnalyser(engine: engine).analyse(series, reader: reader, request: badWindow) }
        do {
            _ = try ScanAnalyser(engine: engine).analyse(series, reader: reader, request: ScanRequest(), isCancelled: { true })
            Issue.record("a cancelled analysis finished")
        } catch let e as ServiceError {
            #expect(e.kind == .cancelled && e.message.contains("0 of 3"), "\(e)")
        }
        // A slice whose values do not fit its size.
        reader.values[series.slices[1].source] = [0, 1, 2]
        #expect(throws: ScanError.self) { try ScanAnalyser(engine: engine).analyse(series, reader: reader, request: ScanRequest()) }
    }
}
