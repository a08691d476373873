// The daemon: the Service objects exported on the bus as the API of DESIGN.md §3.
import Affinity
import AffinityAPI
import Bus
import Foundation
import Imaging
import PluginHost
import Service

/// The daemon's own version (the Manager's Version property).
let affinitydVersion = "0.1.0"

/// Any error as the API's named error with a sentence.
func apiError(_ error: Error) -> BusError {
    switch error {
    case let e as ServiceError:
        return BusError(name: API.errorPrefix + e.kind.rawValue, message: e.message)
    case let e as BusError:
        if e.name == BusError.Name.invalidArgs { return BusError(name: API.errorName(.invalidArgument), message: e.message) }
        if e.name.hasPrefix(API.errorPrefix) { return e }
        return BusError(name: API.errorName(.failed), message: e.message)
    default:
        let e = ServiceError(error)
        return BusError(name: API.errorPrefix + e.kind.rawValue, message: e.message)
    }
}

// @unchecked Sendable: its mutable state (config, starting/stopping, the last properties emitted, result files) is under `lock`; the services it holds are thread-safe.
final class Daemon: @unchecked Sendable {
    let bus: BusConnection
    let store: ModelStore
    let engine: AnalyseEngine
    let jobs: JobManager
    /// The plugins loaded at start (never unloaded), and the folders that could not be listed.
    let plugins: PluginRegistry
    let pluginFolderFailures: [[String: String]]
    var config: DaemonConfig
    let configFile: String?
    let usePolkit: Bool
    let xmlDirectory: String?
    let lock = NSLock()
    var starting = true
    var stopping = false
    var preloadError: String?
    var lastManager: [String: DBusValue] = [:]
    var exportedModels = Set<String>()
    var lastJobProps: [Int: [String: DBusValue]] = [:]
    var lastJobEmit: [Int: Double] = [:]
    var jobFlushScheduled = Set<Int>()
    /// Sealed memfds of jobs' result files (AnalyseScan's label volume), by job and key.
    var resultFiles: [Int: [String: FileDescriptor]] = [:]
    var watchdogTimer: DispatchSourceTimer?

    init(config: DaemonConfig, configFile: String?, bus: BusConnection) throws {
        self.config = config
        self.configFile = configFile
        self.bus = bus
        usePolkit = (config.authorization ?? (config.bus == "system" ? "polkit" : "none")) == "polkit"
        // The plugins first: the store makes the heads of plugin-head models with them.
        (plugins, pluginFolderFailures) = Daemon.loadPlugins(config.pluginDirectories)
        store = try ModelStore(stateDirectory: URL(fileURLWithPath: config.stateDirectory), heads: plugins)
        engine = AnalyseEngine(store: store, workers: config.analyseWorkers, queueLimit: config.analyseQueueLimit,
                               limits: ImageLimits(maxBytes: config.maxImageBytes, maxDimension: config.maxImageDimension),
                               decoder: Daemon.decoderHook(plugins))
        jobs = JobManager(store: store, engine: engine, autoResume: config.autoResume)
        jobs.defaultCheckpointInterval = Double(config.checkpointInterval)
        jobs.defaultCheckpointIterations = config.checkpointIterations
        jobs.dataReader = Daemon.dataReaderHook(plugins)
        xmlDirectory = Daemon.findInterfaces(config.interfacesDirectory)
    }

    /// Loads the plugins: the system folder (root-owned check) when no development folder is
    /// configured, else the development folders. A folder that cannot be listed (or, in system
    /// mode, is not root-owned) is reported; a missing system folder is not an error.
    static func loadPlugins(_ developmentFolders: [String]) -> (PluginRegistry, [[String: String]]) {
        let registry = PluginRegistry(mode: developmentFolders.isEmpty ? .system : .development)
        var folderFailures: [[String: String]] = []
        let folders = developmentFolders.isEmpty ? [PluginRegistry.systemDirectory] : developmentFolders
        for folder in folders {
            if developmentFolders.isEmpty && !FileManager.default.fileExists(atPath: folder) { continue }
            do { try registry.loadDirectory(folder) } catch {
                Log.error("Plugin folder \(folder) not used: \(error)")
                folderFailures.append(["state": "failed", "path": folder, "error": "\(error)"])
            }
        }
        for p in registry.plugins { Log.info("Plugin \(p.record) (\(p.kind.rawValue)) loaded from \(p.path).") }
        for f in registry.failures { Log.warn("Plugin \(f.path) not loaded: \(f.reason)") }
        return (registry, folderFailures)
    }

    /// Analyse's reader for what is not a PNG: the loaded decoder plugin that probes highest, its
    /// header checked against the limits before the pixels are allocated. nil when none claims the bytes.
    static func decoderHook(_ registry: PluginRegistry) -> ImageDecoderHook {
        return { bytes, limits in
            let ranked = registry.decoders.map { ($0, $0.probe(bytes)) }.filter { $0.1 > 0 }.sorted { $0.1 > $1.1 }
            guard let best = ranked.first?.0 else { return nil }
            do {
                let g = try best.geometry(bytes)
                guard g.width <= limits.maxDimension, g.height <= limits.maxDimension else {
                    throw ServiceError.invalidImage("The image is \(g.width)×\(g.height) pixels (\(best.plugin.record)); the limit is \(limits.maxDimension) per side")
                }
                let decoded = try best.decode(bytes)
                return ExternallyDecodedImage(image: decoded.image, decoder: decoded.decoder)
            } catch let e as PluginError {
                if case .callFailed(_, _, let code, _) = e, statusName(code) == "unsupported" {
                    throw ServiceError(.unsupportedFormat, e.description)
                }
                throw ServiceError.invalidImage(e.description)
            }
        }
    }

    /// Train's and Finetune's reader of data sets through the loaded dataset-reader plugins
    /// (`data_format`, `segmentation_format`): the set under the data set's `classification/`
    /// (`segmentation/`) folder when there is one, else the data set itself, with `data_options`
    /// or `{"split": …}` (the job's split for classification, train for segmentation).
    static func dataReaderHook(_ registry: PluginRegistry) -> (TrainingSpec) throws -> ReaderTrainingData {
        return { spec in
            do {
                var sets: [PluginDataSet] = []
                func read(_ format: String?, _ subfolder: String, split: String) throws -> PluginDataSet? {
                    guard let format else { return nil }
                    let set = try PluginDataSet(format: format, directory: spec.dataset.path, subfolder: subfolder,
                                                options: spec.dataOptions ?? PluginDataSet.defaultOptions(reader: format, split: split),
                                                registry: registry)
                    sets.append(set)
                    return set
                }
                let classification = try read(spec.dataFormat, "classification", split: spec.split)
                let segmentation = try read(spec.segmentationFormat, "segmentation", split: "train")
                let data = try PluginTrainingData(classification: classification, segmentation: segmentation, side: spec.imageSize)
                let plugins = sets.flatMap(\.plugins).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
                let skipped = sets.flatMap { set in set.broken.map { "\($0.name) (\(set.format)): \($0.reason)" } }
                return ReaderTrainingData(data: data, plugins: plugins, skipped: skipped)
            } catch let e as PluginDataSetError {
                switch e {
                case .unknownReader, .refusedOptions, .invalidSide: throw ServiceError.invalidArgument(e.description)
                default: throw ServiceError.datasetInvalid(e.description)
                }
            }
        }
    }

    /// The directory holding org.lesionaffinity.Affinity1.Manager.xml: the configured one, a
    /// `data/dbus` above the executable (a build tree), or /usr/share/dbus-1/interfaces.
    static func findInterfaces(_ configured: String?) -> String? {
        let file = "org.lesionaffinity.Affinity1.Manager.xml"
        if let configured { return configured }
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<6 {
            let candidate = dir.appendingPathComponent("data/dbus")
            if FileManager.default.fileExists(atPath: candidate.appendingPathComponent(file).path) { return candidate.path }
            dir = dir.deletingLastPathComponent()
        }
        let installed = "/usr/share/dbus-1/interfaces"
        return FileManager.default.fileExists(atPath: installed + "/" + file) ? installed : nil
    }

    func xml(_ interface: String) -> String? {
        guard let dir = xmlDirectory else { return nil }
        return try? String(contentsOfFile: dir + "/" + interface + ".xml", encoding: .utf8)
    }

}

extension BusInterface {
    /// Declares one of the API's properties with its name, type and change signalling.
    mutating func property<P: APIProperty>(_ property: P, get: @escaping () throws -> DBusValue) {
        self.property(property.name, property.signature, emitsChangedSignal: property.emitsChangedSignal, get: get)
    }
}

extension Dictionary where Key == String, Value == DBusValue {
    /// The value of an API option, converted (nil when absent).
    func option<O: APIOption, T>(_ key: O, _ convert: (DBusValue) throws -> T) throws -> T? {
        try option(key.key, convert)
    }
}
