// `affinity-lab scan`: a whole CT scan (a DICOM series in any files and folders, or a NIfTI volume)
// analysed offline through the same service code as the daemon's AnalyseScan: the result is the
// same, key for key.
import Affinity
import ArgumentParser
import Foundation
import PluginHost
import ScanIO
import Scans
import Service
import Distributed

struct Scan: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Analyse a whole CT scan (DICOM series or NIfTI volume): a verdict, lesion and lung volumes, and a label volume.",
        discussion: """
        PATH… are DICOM files, folders holding them (any names, any order, other files are set aside), \
        or a .nii/.nii.gz volume. The slices are grouped by series and orientation, sorted along the \
        slice normal (inferior to superior) and analysed one at a time in display orientation (the \
        patient's right on the image's left) after the lung window; slices without a lung field are \
        skipped. The verdict comes from the slice results by --rule (lesion-weighted: the slices' class \
        probabilities weighted by their lesion area; mean; majority). Volumes are slice areas times the \
        slice spacing; the opacity is lesion volume over lung volume, for both lungs and for each. \
        --mask-out writes the lesions as a NIfTI label volume (uint8, 0 background, i = the slice's \
        lesion i) with the scan's affine. --json prints one JSON object (the keys of the daemon's \
        AnalyseScan result). Exit codes: 3 a missing path or no model, 4 nothing to analyse (no volume, \
        several series without --series, an unreadable file), 5 unusable weights, 1 other failures.
        """)

    @Option(help: "Weights: a model file or checkpoint (safetensors). Default: the bundled demo model.")
    var weights: String?

    @Option(help: "The SeriesInstanceUID to analyse when the paths hold several series.")
    var series: String?

    @Option(name: .customLong("mask-out"), help: "Write the lesion label volume here (.nii or .nii.gz).")
    var maskOut: String?

    @Option(help: "How slice results become the scan's verdict: lesion-weighted (default), mean, majority.")
    var rule: String = VerdictRule.lesionWeighted.rawValue

    @Option(name: .customLong("window-center"), help: "Centre of the window (HU) that maps the slices to the model's input (default -600, the lung window).")
    var windowCenter: Double = -600

    @Option(name: .customLong("window-width"), help: "Width of that window (HU, default 1500).")
    var windowWidth: Double = 1500

    @Option(help: "Seed of the RoI-batch padding rule.")
    var seed: UInt64 = 1

    @Flag(help: "Print one JSON object.")
    var json = false

    @OptionGroup var plugins: PluginOptions

    @Argument(help: "DICOM files or folders, or a NIfTI volume.")
    var paths: [String]

    func validate() throws {
        if paths.isEmpty { throw ValidationError("give at least one file or folder") }
        if VerdictRule(rawValue: rule) == nil {
            throw ValidationError("--rule must be one of \(VerdictRule.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if let maskOut, !(maskOut.hasSuffix(".nii") || maskOut.hasSuffix(".nii.gz")) {
            throw ValidationError("--mask-out must end in .nii or .nii.gz")
        }
    }

    func run() throws {
        try labRun {
            for p in paths where !fileExists(p) { throw LabError.missingFile(p) }
            let registry = try plugins.registry()
            let files: ScanFiles
            let assembled: AssembledSeries
            var assembly: Assembly
            do {
                files = try ScanFiles(paths: paths, registry: registry)
                assembly = SeriesAssembler.assemble(files.headers)
                // What was set aside reading the files, then assembling the series.
                assembly.setAside = files.setAside + assembly.setAside
                assembled = try assembly.choose(series)
            } catch let e as ScanError {
                throw LabError(name: "no-volume", message: e.description, code: 4)
            }
            // The service's engine over a private store holding the weights, as the daemon runs it.
            let state = FileManager.default.temporaryDirectory.appendingPathComponent("affinity-lab-scan-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
            defer { try? FileManager.default.removeItem(at: state) }
            let store = try ModelStore(stateDirectory: state)
            do {
                if let weights {
                    guard fileExists(weights) else { throw LabError.missingFile(weights) }
                    let card = try store.importModel(bytes: [UInt8](try Data(contentsOf: URL(fileURLWithPath: weights))), name: "scan")
                    try store.setDefault(card.id)
                } else {
                    guard let dir = BundledModel.defaultModel() else { _ = try Predict.weightsPath(nil); return }
                    FileHandle.standardError.write(Data("note: no --weights: using the bundled model \(dir.path), \(BundledModel.disclaimer).\n".utf8))
                    try store.setDefault(try store.importBundled(dir).id)
                }
            } catch let e as LabError {
                throw e
            } catch {
                throw LabError.badWeights(weights ?? "the bundled model", String(describing: error))
            }
            let engine = AnalyseEngine(store: store, workers: 1)
            defer { engine.stop() }
            var request = ScanRequest()
            request.seed = seed
            request.rule = VerdictRule(rawValue: rule) ?? .lesionWeighted
            request.windowCentre = windowCenter
            request.windowWidth = windowWidth
            let sink = maskOut.map { NIfTILabelSink(path: $0) }
            let bar = ProgressBar(total: assembled.count, label: "slices")
            let result: ScanResult
            // Under mpirun the slices are shared out (every size-th to each rank) and rank 0 makes
            // the result (and the label volume) from all of them: the same output as one process.
            let world = try LabCluster.world()
            do {
                if world.size > 1 {
                    guard let r = try Self.analyseSharded(assembled, setAside: assembly.setAside, files: files, engine: engine, request: request,
                                                          sink: sink, world: world, progress: { if !json { bar.update($0) } }) else { return }
                    result = r
                } else {
                    result = try ScanAnalyser(engine: engine).analyse(assembled, setAside: assembly.setAside, reader: files, request: request, sink: sink) { done, _ in
                        if !json { bar.update(done) }
                    }
                }
            } catch let e as ScanError {
                throw LabError(name: "bad-scan", message: e.description, code: 4)
            } catch let e as ServiceError {
                throw LabError(name: e.kind.rawValue, message: e.message, code: e.kind == .invalidImage || e.kind == .unsupportedFormat ? 4 : 1)
            }
            if !json { bar.finish() }
            if json {
                let data = try JSONEncoder().encode(result)
                print(String(decoding: data, as: UTF8.self))
            } else {
                print(Self.summary(result, maskOut: maskOut))
            }
        }
    }

    /// This rank's share of the slices analysed, gathered on rank 0 and combined into the scan's
    /// result there (nil on the other ranks).
    static func analyseSharded(_ series: AssembledSeries, setAside: [SetAside], files: ScanFiles, engine: AnalyseEngine, request: ScanRequest,
                               sink: LabelVolumeSink?, world: World, progress: (Int) -> Void) throws -> ScanResult? {
        let t0 = Date()
        let analyser = ScanAnalyser(engine: engine)
        let mine = LabCluster.share(of: series.count, world: world)
        let outcomes = try analyser.analyseSlices(series, indices: mine, reader: files, request: request) { done in
            if world.isRoot { progress(done * world.size) }
        }
        let shares = outcomes.map {
            IndexedResult(index: $0.result.index, value: ScanSliceShare(result: $0.result, modelID: $0.modelID,
                                                                        labels: sink == nil ? nil : LabelRuns($0.labels)))
        }
        guard let all = try LabCluster.gatherInOrder(shares, world: world) else { return nil }
        return try analyser.combine(series, results: all.map(\.result), modelIDs: all.map(\.modelID), labels: { all[$0].labels?.expanded() ?? [] },
                                    setAside: setAside, request: request, sink: sink, seconds: Date().timeIntervalSince(t0))
    }

    /// The readable summary.
    static func summary(_ r: ScanResult, maskOut: String?) -> String {
        func f(_ x: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", x) }
        var lines = ["series \(r.seriesUID): \(r.sliceCount) slices (\(r.analysedSlices) with a lung field), spacing \(r.spacingMM.map { f($0, 2) }.joined(separator: " × ")) mm",
                     "  verdict: \(r.verdict.className), probability \(f(r.verdict.probabilities[r.verdict.classIndex], 3)) (\(r.verdict.rule))",
                     "  lesions \(f(r.lesionVolumeML)) mL of \(f(r.lungVolumeML)) mL lung: \(f(r.opacityPercent))% opacity (left \(f(r.opacityPercentLeft))%, right \(f(r.opacityPercentRight))%)"]
        if let m = r.maxInvolvementSlice {
            let s = r.slices[m]
            lines.append("  most involved: slice \(m + 1) at \(f(s.positionMM)) mm (\(s.source)), \(f(s.lungAreaMM2 > 0 ? 100 * s.lesionAreaMM2 / s.lungAreaMM2 : 0))% of its lung field")
        }
        for w in r.warnings { lines.append("  warning: \(w)") }
        for s in r.setAside.prefix(10) { lines.append("  set aside: \(s.what): \(s.reason)") }
        if r.setAside.count > 10 { lines.append("  set aside: \(r.setAside.count - 10) more") }
        if let maskOut { lines.append("  label volume written to \(maskOut)") }
        lines.append("  model \(r.modelID), \(f(r.timings["total"] ?? 0, 1)) s (\(f(r.timings["per_slice"] ?? 0, 2)) s per slice)")
        return lines.joined(separator: "\n")
    }
}
