// Manager.AnalyseScan (issue 15): a NIfTI phantom volume (written by an independent writer) passed
// as an O_DIRECTORY descriptor and as a file descriptor, analysed as a job by affinityd with the
// bundled demo model; the job's Result is key for key the offline analysis (ScanAnalyser over the
// same files and weights), the label volume a sealed memfd holding a .nii.gz on the scan's grid;
// bad calls get named errors and the daemon goes on serving.
import Affinity
import Bus
import Foundation
import Imaging
import NIfTI
import ScanIO
import Scans
import Service
import TestSupport
import Testing

@Suite("AnalyseScan over D-Bus", .serialized)
struct ScanDaemonTests {
    static let side = 256

    /// Phantom slices with a blank slice at each end (TestSupport's writePhantomNIfTI), 1.4 mm pixels.
    static func volume(_ path: String, classes: [PhantomClass], seed: UInt64 = 9, z0: Double = 0) throws {
        try writePhantomNIfTI(path, classes: classes, side: side, seed: seed, spacing: 1.4, z0: z0)
    }

    /// affinityd on a private bus with the repository's bundled demo model as its default.
    final class Session {
        let bus: PrivateBus
        let daemon: DaemonProcess
        let client: BusConnection
        let state: URL
        init(config: String? = nil) throws {
            state = try Paths.temporaryDirectory("scan-daemon")
            bus = try PrivateBus()
            // The build folder's plugins (the DICOM decoder) beside affinityd.
            let plugins = Paths.affinityd.map { URL(fileURLWithPath: $0).deletingLastPathComponent().path } ?? "."
            do {
                daemon = try DaemonProcess(bus: bus, stateDirectory: state.appendingPathComponent("state"), arguments: ["--plugin-dir", plugins],
                                           configText: config,
                                           environment: ["AFFINITY_BUNDLED_MODELS": TestPaths.root.appendingPathComponent("models").path])
            } catch { bus.stop(); throw error }
            client = try bus.connect()
        }
        func call(_ method: String, _ args: [DBusValue]) throws -> [DBusValue] { try DaemonTests.call(client, method, args) }
        func properties(_ job: String) throws -> [String: DBusValue] {
            try client.getAllProperties(destination: DaemonProcess.name, path: job, interface: DaemonProcess.job)
        }
        /// Waits until the job ends; its properties.
        func finish(_ job: String) throws -> [String: DBusValue] {
            var p: [String: DBusValue] = [:]
            _ = waitUntil(600) {
                p = (try? properties(job)) ?? [:]
                let s = (try? p["State"]?.asString()) ?? ""
                return ["completed", "failed", "cancelled"].contains(s)
            }
            return p
        }
        func stop() {
            client.close()
            daemon.stop()
            bus.stop()
            try? FileManager.default.removeItem(at: state)
        }
    }

    static func open(_ path: String, directory: Bool = false) throws -> FileDescriptor {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC | (directory ? O_DIRECTORY : 0))  // owned by the FileDescriptor
        guard fd >= 0 else { throw BusError.failed("cannot open \(path)") }
        return FileDescriptor(taking: fd)
    }

    /// The ScanResult of the same files analysed offline with the same weights.
    static func offline(_ paths: [String], state: URL) throws -> ScanResult {
        let store = try ModelStore(stateDirectory: state)
        let bundled = try #require(BundledModel.defaultModel(environment: ["AFFINITY_BUNDLED_MODELS": TestPaths.root.appendingPathComponent("models").path]))
        try store.setDefault(try store.importBundled(bundled).id)
        let engine = AnalyseEngine(store: store, workers: 1)
        defer { engine.stop() }
        let files = try ScanFiles(paths: paths, registry: nil)  // NIfTI needs no plugin
        var assembly = SeriesAssembler.assemble(files.headers)
        assembly.setAside = files.setAside + assembly.setAside
        return try ScanAnalyser(engine: engine).analyse(try assembly.choose(nil), setAside: assembly.setAside, reader: files, request: ScanRequest())
    }

    @Test func aFolderDescriptorGivesTheOfflineResultAndALabelVolume() throws {
        let dir = try Paths.temporaryDirectory("scan-input")
        defer { try? FileManager.default.removeItem(at: dir) }
        let scanDir = dir.appendingPathComponent("study")
        try FileManager.default.createDirectory(at: scanDir, withIntermediateDirectories: true)
        let volume = scanDir.appendingPathComponent("chest.nii.gz").path
        try Self.volume(volume, classes: [.covid, .covid, .normal])
        try "not an image".write(to: scanDir.appendingPathComponent("notes.txt"), atomically: true, encoding: .utf8)

        let s = try Session()
        defer { s.stop() }
        let folder = try Self.open(scanDir.path, directory: true)
        let job = try s.call("AnalyseScan", [.fileDescriptors([folder]), .vardict([:])])[0].asObjectPath()
        folder.close()
        let p = try s.finish(job)
        #expect(try p["State"]?.asString() == "completed", "\(p)\n\(s.daemon.stderrText)")
        #expect(try p["Operation"]?.asString() == "analyse-scan")
        #expect(try p["Metrics"]?.asDoubleDict() == ["slices_done": 5, "slice_count": 5])
        let result = try #require(try p["Result"]?.asVardict())

        // Key for key the offline result (the JSON of `affinity-lab scan --json`), and the same numbers.
        let offline = try Self.offline([scanDir.path], state: dir.appendingPathComponent("offline"))
        let json = try #require(try JSONSerialization.jsonObject(with: JSONEncoder().encode(offline)) as? [String: Any])
        #expect(Set(result.keys).subtracting(["label_volume", "message"]) == Set(json.keys), "\(result.keys.sorted()) vs \(json.keys.sorted())")
        #expect(try result["slice_count"]?.asInt64() == 5)
        #expect(try result["series_uid"]?.asString() == "nifti:chest.nii.gz")
        let slices = try #require(try result["slices"]?.asVardicts())
        #expect(slices.count == 5)
        for (k, slice) in slices.enumerated() {
            let o = offline.slices[k]
            #expect(try slice["analysed"]?.asBool() == o.analysed, "slice \(k)")
            #expect((try? slice["class"]?.asString()) == o.className, "slice \(k)")
            #expect(abs(try #require(try slice["lesion_area_mm2"]?.asDouble()) - o.lesionAreaMM2) < 1e-9, "slice \(k)")
            let source = try #require(try slice["source"]?.asVardict())
            #expect(try source["file"]?.asString() == scanDir.path + "/chest.nii.gz", "\(source)")
            #expect(try source["frame"]?.asInt64() == Int64(k))
        }
        #expect(slices.map { (try? $0["analysed"]?.asBool()) ?? nil } == [false, true, true, true, false])
        let verdict = try #require(try result["verdict"]?.asVardict())
        #expect(try verdict["class"]?.asString() == offline.verdict.className && verdict["rule"] == .string("lesion-weighted"))
        #expect(abs(try #require(try result["lesion_volume_ml"]?.asDouble()) - offline.lesionVolumeML) < 1e-9)
        #expect(abs(try #require(try result["lung_volume_ml"]?.asDouble()) - offline.lungVolumeML) < 1e-9)
        #expect(offline.lungVolumeML > 0)
        #expect(try result["spacing_mm"]?.asDoubles().count == 3)
        let setAside = try #require(try result["set_aside"]?.asVardicts())
        let asideNames = setAside.compactMap { try? $0["what"]?.asString() }
        #expect(asideNames.contains(scanDir.path + "/notes.txt"), "\(setAside)")

        // The label volume: a sealed memfd holding a .nii.gz on the scan's grid and affine.
        let labelFD = try #require(try result["label_volume"]?.asFileDescriptor())
        #expect(labelFD.isSealed)
        let bytes = try labelFD.readAll()
        #expect(bytes.starts(with: [0x1f, 0x8b]))
        let labelsPath = dir.appendingPathComponent("lesions.nii.gz").path
        try Data(bytes).write(to: URL(fileURLWithPath: labelsPath))
        let labels = try NIfTIVolume(path: labelsPath)
        let scan = try NIfTIVolume(path: volume)
        #expect(labels.header.nx == Self.side && labels.header.ny == Self.side && labels.header.nz == 5 && labels.header.datatype == 2)
        for r in 0..<3 { for c in 0..<4 { #expect(abs(labels.header.affine[r][c] - scan.header.affine[r][c]) < 1e-4) } }
        for (k, o) in offline.slices.enumerated() {
            #expect(labels.slice(k).filter { $0 != 0 }.count == o.lesions.reduce(0) { $0 + $1.areaPx }, "slice \(k)")
        }

        // The volume as a file descriptor: the same slices.
        let file = try Self.open(volume)
        let job2 = try s.call("AnalyseScan", [.fileDescriptors([file]), .vardict(["label_volume": .boolean(false)])])[0].asObjectPath()
        file.close()
        let p2 = try s.finish(job2)
        #expect(try p2["State"]?.asString() == "completed", "\(p2)")
        let r2 = try #require(try p2["Result"]?.asVardict())
        #expect(r2["label_volume"] == nil)
        let slices2 = try #require(try r2["slices"]?.asVardicts())
        #expect(slices2.map { $0["class"] } == slices.map { $0["class"] })
        #expect(r2["lesion_volume_ml"] == result["lesion_volume_ml"])
    }

    @Test func badCallsGetNamedErrorsAndTheDaemonServes() throws {
        let dir = try Paths.temporaryDirectory("scan-bad")
        defer { try? FileManager.default.removeItem(at: dir) }
        let empty = dir.appendingPathComponent("no-scan")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        try "text".write(to: empty.appendingPathComponent("readme.txt"), atomically: true, encoding: .utf8)
        let two = dir.appendingPathComponent("two")
        try FileManager.default.createDirectory(at: two, withIntermediateDirectories: true)
        try Self.volume(two.appendingPathComponent("a.nii.gz").path, classes: [.normal])
        try Self.volume(two.appendingPathComponent("b.nii.gz").path, classes: [.normal], seed: 3)
        let broken = dir.appendingPathComponent("broken.nii.gz")
        let whole = try Data(contentsOf: two.appendingPathComponent("a.nii.gz"))
        try whole.prefix(whole.count / 2).write(to: broken)

        let s = try Session()
        defer { s.stop() }
        func errorName(_ args: [DBusValue]) -> String? {
            do { _ = try s.call("AnalyseScan", args); return nil } catch let e as BusError { return e.name } catch { return "\(error)" }
        }
        let prefix = "org.lesionaffinity.Affinity1.Error."
        #expect(errorName([.fileDescriptors([]), .vardict([:])]) == prefix + "InvalidArgument")
        let a = try Self.open(two.appendingPathComponent("a.nii.gz").path)
        #expect(errorName([.fileDescriptors([a]), .vardict(["bogus": .boolean(true)])]) == prefix + "InvalidArgument")
        #expect(errorName([.fileDescriptors([a]), .vardict(["rule": .string("loudest")])]) == prefix + "InvalidArgument")
        #expect(errorName([.fileDescriptors([a]), .vardict(["window_width": .double(-1)])]) == prefix + "InvalidArgument")
        #expect(errorName([.fileDescriptors([a]), .vardict(["seed": .string("one")])]) == prefix + "InvalidArgument")
        // A folder with nothing to analyse; a truncated .nii.gz.
        #expect(errorName([.fileDescriptors([try Self.open(empty.path, directory: true)]), .vardict([:])]) == prefix + "InvalidImage")
        #expect(errorName([.fileDescriptors([try Self.open(broken.path)]), .vardict([:])]) == prefix + "InvalidImage")
        // A pipe is neither a file nor a folder.
        let (r, w) = try FileDescriptor.pipe()
        #expect(errorName([.fileDescriptors([r]), .vardict([:])]) == prefix + "InvalidArgument")
        w.close()
        // Two series: refused with both named; chosen by the series option.
        let twoFD = try Self.open(two.path, directory: true)
        do {
            _ = try s.call("AnalyseScan", [.fileDescriptors([twoFD]), .vardict([:])])
            Issue.record("two series were accepted without a choice")
        } catch let e as BusError {
            #expect(e.name == prefix + "InvalidArgument" && e.message.contains("nifti:a.nii.gz") && e.message.contains("nifti:b.nii.gz"), "\(e)")
        }
        #expect(errorName([.fileDescriptors([twoFD]), .vardict(["series": .string("1.2.3")])]) == prefix + "InvalidArgument")
        let job = try s.call("AnalyseScan", [.fileDescriptors([twoFD]), .vardict(["series": .string("nifti:b.nii.gz")])])[0].asObjectPath()
        let p = try s.finish(job)
        #expect(try p["State"]?.asString() == "completed", "\(p)")
        #expect(try p["Result"]?.asVardict()["series_uid"]?.asString() == "nifti:b.nii.gz")
        // Still serving.
        let models = try s.call("ListModels", [.vardict([:])])
        #expect(try models[0].asObjectPaths().count == 1)
    }

    @Test func limitsAndDamagedFilesGetNamedErrors() throws {
        let dir = try Paths.temporaryDirectory("scan-limits")
        defer { try? FileManager.default.removeItem(at: dir) }
        let s = try Session(config: "max_scan_slices = 4\nmax_scan_voxels = 1000000\n")
        defer { s.stop() }
        let prefix = "org.lesionaffinity.Affinity1.Error."
        func call(_ fd: FileDescriptor, _ options: [String: DBusValue] = [:]) -> (job: String?, error: BusError?) {
            do { return (try s.call("AnalyseScan", [.fileDescriptors([fd]), .vardict(options)])[0].asObjectPath(), nil) } catch let e as BusError {
                return (nil, e)
            } catch { return (nil, BusError.failed("\(error)")) }
        }
        // Over max_scan_slices (5 slices), then over max_scan_voxels (3 × 1024² > 10⁶).
        let five = dir.appendingPathComponent("five.nii.gz").path
        try Self.volume(five, classes: [.normal, .normal, .normal])
        let tooMany = call(try Self.open(five))
        #expect(tooMany.error?.name == prefix + "InvalidImage" && tooMany.error?.message.contains("the limit is 4") == true, "\(String(describing: tooMany.error))")
        let wide = dir.appendingPathComponent("wide.nii")
        try writeNIfTIWithPython(wide.path, nx: 1024, ny: 1024, nz: 3, values: [Double](repeating: -1000, count: 1024 * 1024 * 3),
                                 sform: [[0.5, 0, 0, 0], [0, 0.5, 0, 0], [0, 0, 5, 0]])
        let tooBig = call(try Self.open(wide.path))
        #expect(tooBig.error?.name == prefix + "InvalidImage" && tooBig.error?.message.contains("voxels") == true, "\(String(describing: tooBig.error))")
        // A zero affine: nothing to assemble.
        let zero = dir.appendingPathComponent("zero.nii")
        try writeNIfTIWithPython(zero.path, nx: 8, ny: 8, nz: 2, values: [Double](repeating: 0, count: 128),
                                 sform: [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], pixdim: [0, 0, 0])
        let singular = call(try Self.open(zero.path))
        #expect(singular.error?.name == prefix + "InvalidImage", "\(String(describing: singular.error))")

        // A DICOM series (JPEG-LS) with one file's compressed pixel data damaged: named, never a crash.
        let lab = try #require(Paths.affinityd.map { URL(fileURLWithPath: $0).deletingLastPathComponent().appendingPathComponent("affinity-lab").path })
        let series = dir.appendingPathComponent("series")
        let made = try runTool(lab, ["phantom-scan", "--out", series.path, "--syntax", "jpeg-ls", "--slices", "3", "--size", "128", "--seed", "4"])
        #expect(made.status == 0, "\(made.stderr)")
        let victim = series.appendingPathComponent("slice-0002.dcm")
        var bytes = [UInt8](try Data(contentsOf: victim))
        for i in (bytes.count * 3 / 4)..<(bytes.count - 16) { bytes[i] = UInt8(truncatingIfNeeded: i &* 131) }
        try Data(bytes).write(to: victim)
        let damaged = call(try Self.open(series.path, directory: true))
        if let job = damaged.job {
            let p = try s.finish(job)
            let state = try p["State"]?.asString()
            let result = try p["Result"]?.asVardict() ?? [:]
            if state == "failed" {
                #expect((try? result["error"]?.asString())?.hasPrefix(prefix) == true, "\(p)")
            } else {
                #expect(state == "completed", "\(p)")
                let aside = (try? result["set_aside"]?.asVardicts()) ?? []
                #expect(aside.contains { ((try? $0["what"]?.asString()) ?? "").hasSuffix("slice-0002.dcm") }, "\(result)")
            }
        } else {
            #expect(damaged.error?.name.hasPrefix(prefix) == true, "\(String(describing: damaged.error))")
        }
        // Still serving: the intact series analyses.
        let models = try s.call("ListModels", [.vardict([:])])
        #expect(try models[0].asObjectPaths().count == 1)
    }

    @Test func cancelStopsAScanBetweenSlices() throws {
        let dir = try Paths.temporaryDirectory("scan-cancel")
        defer { try? FileManager.default.removeItem(at: dir) }
        let volume = dir.appendingPathComponent("long.nii.gz").path
        try Self.volume(volume, classes: Array(repeating: PhantomClass.covid, count: 30))
        let s = try Session()
        defer { s.stop() }
        let fd = try Self.open(volume)
        let job = try s.call("AnalyseScan", [.fileDescriptors([fd]), .vardict([:])])[0].asObjectPath()
        _ = try s.client.call(destination: DaemonProcess.name, path: job, interface: DaemonProcess.job, method: "Cancel", [.vardict([:])])
        let p = try s.finish(job)
        #expect(try p["State"]?.asString() == "cancelled", "\(p)")
        let result = try #require(try p["Result"]?.asVardict())
        #expect(try result["error"]?.asString() == "org.lesionaffinity.Affinity1.Error.Cancelled")
    }
}
