// affinityd's Train reading its data set through dataset-reader plugins (data_format,
// segmentation_format, data_options): the refusals before a job exists, a broken entry skipped and
// logged, the readers recorded in the model's Plugins; and PluginTrainingData against the built-in
// layout's numbers.
import Affinity
import Bus
import Foundation
import Imaging
import PluginHost
import Service
import Tensor
import TestSupport
import Testing

@Suite("affinityd trains through dataset-reader plugins", .serialized)
struct PluginDataDaemonTests {
    typealias D = DaemonProcess

    /// The covidx-ct reader over a phantom set gives the built-in layout's classification samples:
    /// the same labels in the same order, the same model inputs (side 128).
    @Test func readerSamplesAreTheBuiltInLayoutsSamples() throws {
        let folder = try #require(PluginFixtures.buildFolder, "the plugin libraries are not built (swift build first)")
        let dir = try Paths.temporaryDirectory("reader-samples")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = dir.appendingPathComponent("set")
        try PhantomDataset.write(to: data.path, count: 6, seed: 3, size: 128)
        let registry = PluginRegistry(mode: .development)
        try registry.load(path: folder + "/libaffinity-covidx-ct.so")
        try registry.load(path: folder + "/libaffinity-cncb-seg.so")

        let set = try PluginDataSet(format: "covidx-ct", directory: data.path, subfolder: "classification",
                                    options: PluginDataSet.defaultOptions(reader: "covidx-ct", split: "train"), registry: registry)
        #expect(set.root == data.path + "/classification" && set.plugins == ["covidx-ct 1.0.0"] && set.broken.isEmpty, "\(set.plugins) \(set.broken)")
        let viaReader = try PluginTrainingData(classification: set, segmentation: nil, side: 128)
        let builtIn = try PhantomLayoutData(root: data, split: "train", side: 128)
        #expect(viaReader.classificationCount == 6 && builtIn.classificationCount == 6)
        #expect(viaReader.segmentationCount == 0)
        for i in 0..<min(viaReader.classificationCount, builtIn.classificationCount) {
            let a = try viaReader.classificationSample(i), b = try builtIn.classificationSample(i)
            #expect(a.label == b.label, "sample \(i)")
            #expect(a.image.shape == [1, 3, 128, 128] && b.image.shape == [1, 3, 128, 128])
            let worst = zip(a.image.array, b.image.array).map { abs($0 - $1) }.max() ?? .infinity
            #expect(worst <= 1e-5, "sample \(i): the inputs differ by \(worst)")
        }
        // Beyond the set, and a set that was not given: named errors, not a crash.
        #expect(throws: PluginDataSetError.noSample(set: "classification", index: 6, count: 6)) { try viaReader.classificationSample(6) }
        #expect(throws: PluginDataSetError.noSample(set: "segmentation", index: 0, count: 0)) { try viaReader.segmentationSample(0) }

        // The segmentation set through cncb-seg: the slices with a mask have lesion instances.
        let seg = try PluginDataSet(format: "cncb-seg", directory: data.path, subfolder: "segmentation",
                                    options: PluginDataSet.defaultOptions(reader: "cncb-seg", split: "train"), registry: registry)
        let segData = try PluginTrainingData(classification: nil, segmentation: seg, side: 128)
        #expect(segData.segmentationCount == seg.samples.count && segData.segmentationCount > 0)
        let withMask = seg.samples.indices.filter { seg.samples[$0].labelMap != nil && !seg.samples[$0].instances.isEmpty }
        let first = try #require(withMask.first, "no phantom slice with a lesion mask")
        #expect(try segData.segmentationSample(first).targets.boxes.count > 0)

        // Unknown reader, missing folder, a root the reader cannot open, refused options.
        do {
            _ = try PluginDataSet(format: "nosuch", directory: data.path, options: "{}", registry: registry)
            Issue.record("an unknown reader opened a set")
        } catch let e as PluginDataSetError {
            #expect(e == .unknownReader(id: "nosuch", loaded: ["cncb-seg", "covidx-ct"]), "\(e)")
        }
        #expect(throws: PluginDataSetError.missingDirectory(path: data.path + "/nope")) {
            try PluginDataSet(format: "covidx-ct", directory: data.path + "/nope", options: "{}", registry: registry)
        }
        do {
            _ = try PluginDataSet(format: "covidx-ct", directory: dir.path, options: #"{"split": "train"}"#, registry: registry)
            Issue.record("covidx-ct opened a folder without split files")
        } catch let e as PluginDataSetError {
            guard case .unusableRoot(let reader, _, let reason) = e else { Issue.record("\(e)"); return }
            #expect(reader == "covidx-ct" && reason.contains("covidx-ct 1.0.0") && reason.contains("does not exist"), "\(reason)")
        }
        do {
            _ = try PluginDataSet(format: "covidx-ct", directory: data.path, subfolder: "classification", options: #"{"colour": 1}"#, registry: registry)
            Issue.record("covidx-ct took an unknown option")
        } catch let e as PluginDataSetError {
            guard case .refusedOptions = e else { Issue.record("\(e)"); return }
            #expect(e.description.contains("colour"), "\(e)")
        }
    }

    @Test func trainThroughDatasetReaders() throws {
        let folder = try #require(PluginFixtures.buildFolder, "the plugin libraries are not built (swift build first)")
        let dir = try Paths.temporaryDirectory("reader-train")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = dir.appendingPathComponent("set")
        try PhantomDataset.write(to: data.path, count: 6, seed: 3, size: 128)
        // A broken entry: the first image listed in the train split is deleted. The built-in
        // layout refuses the whole set for it; the reader skips it.
        let split = data.appendingPathComponent("classification/train_COVIDx_CT.txt")
        let firstLine = try #require(try String(contentsOf: split, encoding: .utf8).split(separator: "\n").first)
        let missing = String(firstLine.split(separator: " ")[0])
        try FileManager.default.removeItem(at: data.appendingPathComponent("classification/images/" + missing))
        // A folder where the reader finds its split file but no image it lists.
        let hollow = dir.appendingPathComponent("hollow")
        try FileManager.default.createDirectory(at: hollow.appendingPathComponent("images"), withIntermediateDirectories: true)
        try "gone_1.png 0 0 0 10 10\ngone_2.png 2 0 0 10 10\n".write(to: hollow.appendingPathComponent("train_COVIDx_CT.txt"),
                                                                   atomically: true, encoding: .utf8)
        let empty = dir.appendingPathComponent("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)

        let session = try DaemonSession(stateDirectory: dir.appendingPathComponent("state"), arguments: ["--plugin-dir", folder])
        defer { session.stop() }
        let call = session.call
        let E = "org.lesionaffinity.Affinity1.Error."
        let base: [String: DBusValue] = ["dataset": .string(data.path), "epochs": .uint32(1), "iterations_per_epoch": .uint32(2),
                                         "image_size": .uint32(128), "affinities": .uint32(8), "seed": .uint64(3)]
        func with(_ extra: [String: DBusValue]) -> [String: DBusValue] { base.merging(extra) { _, b in b } }

        // Refused before a job exists.
        let builtIn = DaemonTests.error { try call("Train", [.vardict(base)]) }
        #expect(builtIn?.name == E + "DatasetInvalid" && builtIn?.message.contains(missing) == true, "\(String(describing: builtIn))")
        let unknown = DaemonTests.error { try call("Train", [.vardict(with(["data_format": .string("nosuch")]))]) }
        #expect(unknown?.name == E + "InvalidArgument" && unknown?.message.contains("nosuch") == true
                && unknown?.message.contains("covidx-ct") == true && unknown?.message.contains("ictcf") == true, "\(String(describing: unknown))")
        let notJSON = DaemonTests.error {
            try call("Train", [.vardict(with(["data_format": .string("covidx-ct"), "data_options": .string("split=train")]))])
        }
        #expect(notJSON?.name == E + "InvalidArgument" && notJSON?.message.contains("data_options") == true, "\(String(describing: notJSON))")
        let refused = DaemonTests.error {
            try call("Train", [.vardict(with(["data_format": .string("covidx-ct"), "data_options": .string(#"{"colour": 1}"#)]))])
        }
        #expect(refused?.name == E + "InvalidArgument" && refused?.message.contains("colour") == true, "\(String(describing: refused))")
        let unopenable = DaemonTests.error {
            try call("Train", [.vardict(with(["dataset": .string(empty.path), "data_format": .string("covidx-ct"),
                                              "segmentation_format": .string("cncb-seg")]))])
        }
        #expect(unopenable?.name == E + "DatasetInvalid" && unopenable?.message.contains("covidx-ct 1.0.0") == true
                && unopenable?.message.contains("does not exist") == true, "\(String(describing: unopenable))")
        let nothingUsable = DaemonTests.error {
            try call("Train", [.vardict(with(["dataset": .string(hollow.path), "data_format": .string("covidx-ct"),
                                              "segmentation_step": .boolean(false)]))])
        }
        #expect(nothingUsable?.name == E + "DatasetInvalid" && nothingUsable?.message.contains("no usable sample") == true
                && nothingUsable?.message.contains("gone_1.png") == true, "\(String(describing: nothingUsable))")
        let runs = dir.appendingPathComponent("state/runs").path
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: runs)) ?? []).isEmpty, "a refused Train made a job")

        /// Trains with `options`; the job's result and the new model's properties.
        func train(_ options: [String: DBusValue]) throws -> (result: [String: DBusValue], model: [String: DBusValue]) {
            try session.runJob("Train", [.vardict(options)])
        }

        // The classification set through covidx-ct (the segmentation step on the built-in layout):
        // the broken entry is skipped, the model records the reader.
        let viaCovidx = try train(with(["data_format": .string("covidx-ct"), "name": .string("via covidx-ct")]))
        #expect(viaCovidx.model["Plugins"] == .strings(["covidx-ct 1.0.0"]), "\(viaCovidx.model)")
        #expect(viaCovidx.model["Name"] == .string("via covidx-ct") && viaCovidx.model["TrainedOn"] == .string(data.path), "\(viaCovidx.model)")
        #expect(viaCovidx.result["skipped_entries"] == .uint64(1), "\(viaCovidx.result)")

        // Both sets through readers, with explicit options.
        let both = try train(with(["data_format": .string("covidx-ct"), "segmentation_format": .string("cncb-seg"),
                                   "data_options": .string(#"{"split": "train"}"#), "seed": .uint64(4)]))
        let plugins = try both.model["Plugins"]?.asStrings() ?? []
        #expect(plugins == ["covidx-ct 1.0.0", "cncb-seg 1.0.0"], "\(plugins)")
        #expect(both.result["skipped_entries"] == .uint64(1), "\(both.result)")

        // A fine-tune through covidx-ct alone: its card keeps the base model's readers too.
        let baseModel = try #require(try both.result["model"]?.asObjectPath())
        let tuned = try session.runJob("Finetune", [.objectPath(baseModel), .vardict(with(["data_format": .string("covidx-ct"),
                                                                                           "seed": .uint64(5)]))])
        #expect(tuned.model["Plugins"] == .strings(["covidx-ct 1.0.0", "cncb-seg 1.0.0"]), "\(tuned.model)")
        #expect(session.daemon.process.isRunning)

        // The skipped entry is in the job's log, with the reader's reason.
        session.daemon.stop()
        let log = session.daemon.stderrText
        #expect(log.contains("skipped the broken entry") && log.contains(missing) && log.contains("covidx-ct"), "\(log)")
    }
}
