import Affinity
import ArgumentParser
import Detection
import Foundation
import Imaging
import PluginHost
import SystemIO
import Tensor

/// `--plugin-dir`, shared by the commands that use plugins.
struct PluginOptions: ParsableArguments {
    @Option(name: .customLong("plugin-dir"),
            help: "A folder of plugin libraries (*.so; repeatable). Default: the folder of this executable, where SwiftPM puts the package's plugins.")
    var pluginDirectories: [String] = []

    /// The registry over the given folders (development mode: any readable library loads), made once.
    func registry() throws -> PluginRegistry {
        try labPluginRegistry(pluginDirectories)
    }
}

/// The folder of the running executable.
var executableFolder: String {
    URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().path
}

/// The registries made so far, by folder list (one process loads each folder once, so that the
/// data readers, decoders and heads of one command come from one registry).
nonisolated(unsafe) private var labRegistries: [[String]: PluginRegistry] = [:]

/// Loads every `*.so` of `folders` (default: the executable's folder) into a development-mode
/// registry, once per process and folder list. A folder given explicitly that cannot be listed is
/// an error; the default folder without plugins is not.
func labPluginRegistry(_ folders: [String]) throws -> PluginRegistry {
    if let r = labRegistries[folders] { return r }
    let registry = try makeLabPluginRegistry(folders)
    labRegistries[folders] = registry
    return registry
}

private func makeLabPluginRegistry(_ folders: [String]) throws -> PluginRegistry {
    let registry = PluginRegistry(mode: .development)
    if folders.isEmpty {
        _ = try? registry.loadDirectory(executableFolder)
        return registry
    }
    for f in folders {
        guard directoryExists(f) else { throw LabError.missingDirectory(f) }
        do { try registry.loadDirectory(f) } catch {
            throw LabError(name: "plugin", message: sentence(String(describing: error)), code: 1)
        }
    }
    return registry
}

/// `affinity-lab plugins`: what loads from the plugin folders, and why the rest does not.
struct Plugins: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the plugins (decoders, dataset readers, heads) found in the plugin folders.",
        discussion: """
        Each library is loaded as affinityd and the other commands load it (development mode: any \
        readable file). Loaded plugins print as `id version (kind) path` and their description; files \
        that do not load print as `failed path: reason`. --json prints {"plugins": [...]}, one object \
        per file: state "loaded" with id, version, kind, description, path, or state "failed" with \
        path and error. Exits 0 even when some files fail; 3 when a given folder does not exist.
        """)

    @OptionGroup var plugins: PluginOptions

    @Flag(help: "Print one JSON object.")
    var json = false

    func run() throws {
        try labRun {
            let registry = try plugins.registry()
            if json {
                print(jsonText(["plugins": registry.listing]))
                return
            }
            if registry.plugins.isEmpty && registry.failures.isEmpty {
                print("No plugins found in \(plugins.pluginDirectories.isEmpty ? executableFolder : plugins.pluginDirectories.joined(separator: ", ")).")
            }
            for p in registry.plugins {
                print("\(p.id) \(p.version) (\(p.kind.rawValue)) \(p.path)")
                if !p.summary.isEmpty { print("  \(p.summary)") }
            }
            for f in registry.failures { print("failed \(f.path): \(f.reason)") }
        }
    }
}

/// Reads an image file: PNG with the built-in reader, anything else with the decoder plugin that
/// probes highest (loaded from `folders` on first use).
final class LabImageReader {
    let folders: [String]
    private var registry: PluginRegistry?

    init(folders: [String]) { self.folders = folders }

    /// The image (PNG: as stored; other formats: gray) and the plugin used (nil for PNG).
    func read(_ path: String) throws -> (image: LabImage, plugin: String?) {
        guard fileExists(path) else { throw LabError.missingFile(path) }
        let bytes: [UInt8]
        do { bytes = try AtomicFile.read(path: path) } catch { throw LabError.badImage(path, sentence(String(describing: error))) }
        if bytes.count >= 8, Array(bytes[0..<8]) == PNG.signature {
            do { return (.png(try PNG.decode(bytes)), nil) } catch let e as ImageError { throw LabError.badImage(path, e.description) }
        }
        if registry == nil { registry = try labPluginRegistry(folders) }
        do {
            let d = try registry!.decodeImage(bytes)
            return (.gray(d.image), d.decoder)
        } catch let e as PluginError {
            if case .unknownImageFormat = e {
                throw LabError.badImage(path, "it is not a PNG, and no loaded decoder plugin recognises it (\(e))")
            }
            throw LabError.badImage(path, e.description)
        }
    }
}

/// A decoded image of either origin.
enum LabImage {
    case png(PixelImage)
    case gray(GrayImage)

    var width: Int { switch self { case .png(let p): return p.width; case .gray(let g): return g.width } }
    var height: Int { switch self { case .png(let p): return p.height; case .gray(let g): return g.height } }

    /// The model input [1, 3, side, side] (MODEL.md §1.4), as `labModelInput`.
    func modelInput(side: Int = Preprocessing.modelSide) throws -> Tensor {
        switch self {
        case .png(let p): return try labModelInput(p, side: side)
        case .gray(let g): return try labModelInput(g, side: side)
        }
    }
}

/// The model input of a gray image as [1, 3, side, side]; the same numbers as `labModelInput` of a
/// gray PNG with these pixels (`PluginTrainingData.modelInput`).
func labModelInput(_ gray: GrayImage, side: Int = Preprocessing.modelSide) throws -> Tensor {
    try PluginTrainingData.modelInput(gray, side: side)
}

/// A data set read through a dataset-reader plugin (`--data-format`), decoded into memory: a
/// `PluginDataSet` whose failures are `LabError`s and whose broken entries are reported on stderr.
struct PluginSet {
    let dataSet: PluginDataSet

    /// Opens `directory` (its `classification/` or `segmentation/` folder when it is a phantom
    /// root) with reader `format`; `options` defaults to `{"split": split}` for the readers that
    /// have splits. Broken entries are skipped and reported on stderr.
    init(format: String, directory: String, subfolder: String, split: DataSplit, options: String?, registry: PluginRegistry) throws {
        let opts = options ?? PluginDataSet.defaultOptions(reader: format, split: split == .all ? nil : split.rawValue)
        do {
            dataSet = try PluginDataSet(format: format, directory: directory, subfolder: subfolder, options: opts, registry: registry)
        } catch let e as PluginDataSetError {
            throw labError(e)
        }
        for b in dataSet.broken {
            FileHandle.standardError.write(Data("affinity-lab: warning: \(format): skipped \(b.name): \(b.reason)\n".utf8))
        }
    }

    var root: String { dataSet.root }
    /// The reader's `id version`, and the decoders used.
    var plugins: [String] { dataSet.plugins }
    var samples: [DatasetSample] { dataSet.samples }
    var broken: [BrokenEntry] { dataSet.broken }
    /// The labelled samples (classification).
    var labelled: [DatasetSample] { dataSet.labelled }
}

/// A plugin data-set failure as the lab's error: a missing directory (exit 3), else bad data (exit 6).
func labError(_ e: PluginDataSetError) -> LabError {
    switch e {
    case .missingDirectory(let path): return LabError.missingDirectory(path)
    case .refusedOptions(_, _, let reason): return LabError.badData(reason)
    default: return LabError.badData(e.description)
    }
}

/// Training data from any mix of on-disk sets and plugin sets.
final class LabTrainingData: TrainingData {
    let classificationCount: Int
    let segmentationCount: Int
    private let cls: (Int) throws -> ClassificationSample
    private let seg: (Int) throws -> SegmentationSample

    /// The classification set from `classification` (a plugin set) or else `disk`; the segmentation
    /// set from `segmentation` (a plugin set) or else `diskSegmentation`.
    init(disk: ClassificationSet?, classification: PluginSet?, diskSegmentation: SegmentationSet?, segmentation: PluginSet?,
         side: Int) throws {
        let plugin: PluginTrainingData
        do {
            plugin = try PluginTrainingData(classification: classification?.dataSet, segmentation: segmentation?.dataSet, side: side)
        } catch let e as PluginDataSetError {
            throw labError(e)
        }
        if classification != nil {
            classificationCount = plugin.classificationCount
            cls = plugin.classificationSample
        } else if let disk {
            let d = DiskTrainingData(classification: disk, segmentation: nil, side: side)
            classificationCount = d.classificationCount
            cls = d.classificationSample
        } else {
            throw LabError.badData("no classification set")
        }
        if segmentation != nil {
            segmentationCount = plugin.segmentationCount
            seg = plugin.segmentationSample
        } else if let diskSegmentation {
            segmentationCount = diskSegmentation.items.count
            seg = { i in try DiskTrainingData.segmentationSample(diskSegmentation, i, side: side) }
        } else {
            segmentationCount = 0
            seg = { _ in throw LabError.badData("no segmentation set was given") }
        }
    }

    func classificationSample(_ i: Int) throws -> ClassificationSample { try cls(i) }
    func segmentationSample(_ i: Int) throws -> SegmentationSample { try seg(i) }
}

/// `--data-format`, `--segmentation-format`, `--data-options` and the plugin folders, shared by
/// `train`, `finetune` and `evaluate`.
struct DataFormatOptions: ParsableArguments {
    @Option(name: .customLong("data-format"),
            help: "Read the classification set through this dataset-reader plugin (covidx-ct, cncb-seg, ictcf, …) instead of the built-in layouts.")
    var dataFormat: String?

    @Option(name: .customLong("segmentation-format"),
            help: "Read the segmentation set through this dataset-reader plugin (e.g. cncb-seg).")
    var segmentationFormat: String?

    @Option(name: .customLong("data-options"),
            help: "JSON options for the reader plugins (default {\"split\": <the split read>} for covidx-ct and cncb-seg, {} otherwise).")
    var dataOptions: String?

    @OptionGroup var plugins: PluginOptions

    var usesPlugins: Bool { dataFormat != nil || segmentationFormat != nil }
}
