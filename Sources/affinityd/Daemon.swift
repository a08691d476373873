// The daemon: the Service objects exported on the bus as the API of DESIGN.md §3.
import Affinity
import Bus
import Foundation
import Imaging
import PluginHost
import Service

/// Names of the API.
enum API {
    static let busName = "org.lesionaffinity.Affinity1"
    static let root = "/org/lesionaffinity/Affinity1"
    static let manager = "org.lesionaffinity.Affinity1.Manager"
    static let model = "org.lesionaffinity.Affinity1.Model"
    static let job = "org.lesionaffinity.Affinity1.Job"
    static let errorPrefix = "org.lesionaffinity.Affinity1.Error."
    static let version = "0.1.0"
    static func modelPath(_ id: String) -> String { root + "/models/" + id }
    static func jobPath(_ id: Int) -> String { root + "/jobs/\(id)" }
    /// polkit action ids (systemd/org.lesionaffinity.affinity1.policy).
    enum Action {
        static let train = "org.lesionaffinity.affinity1.train"
        static let finetune = "org.lesionaffinity.affinity1.finetune"
        static let importModel = "org.lesionaffinity.affinity1.import-model"
        static let setDefault = "org.lesionaffinity.affinity1.set-default-model"
        static let cancelOther = "org.lesionaffinity.affinity1.cancel-other-job"
    }
}

/// Any error as the API's named error with a sentence.
func apiError(_ error: Error) -> BusError {
    switch error {
    case let e as ServiceError:
        return BusError(name: API.errorPrefix + e.kind.rawValue, message: e.message)
    case let e as BusError:
        if e.name == BusError.Name.invalidArgs { return BusError(name: API.errorPrefix + "InvalidArgument", message: e.message) }
        if e.name.hasPrefix(API.errorPrefix) { return e }
        return BusError(name: API.errorPrefix + "Failed", message: e.message)
    default:
        let e = ServiceError(error)
        return BusError(name: API.errorPrefix + e.kind.rawValue, message: e.message)
    }
}

final class Daemon: @unchecked Sendable {
    let bus: BusConnection
    let store: ModelStore
    let engine: AnalyseEngine
    let jobs: JobManager
    /// The plugins loaded at start (never unloaded), and the folders that could not be listed.
    let plugins: PluginRegistry
    let pluginFolderFailures: [[String: String]]
    private(set) var config: DaemonConfig
    let configFile: String?
    let usePolkit: Bool
    let xmlDirectory: String?
    private let lock = NSLock()
    private var starting = true
    private var stopping = false
    private var preloadError: String?
    private var lastManager: [String: DBusValue] = [:]
    private var exportedModels = Set<String>()
    private var lastJobProps: [Int: [String: DBusValue]] = [:]
    private var lastJobEmit: [Int: Double] = [:]
    private var jobFlushScheduled = Set<Int>()
    private var watchdogTimer: DispatchSourceTimer?

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
        jobs = JobManager(store: store, engine: engine)
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

    // MARK: Start and stop

    func start() throws {
        if config.bundledModel { installBundledModel() }
        try bus.addObjectManager(at: API.root)
        let manager = managerInterface()
        for i in [manager, modelInterface(id: "x"), jobInterface(nil)].compactMap({ $0 }) {
            for p in i.introspectionMismatches() { Log.warn("Interface \(i.name): \(p)") }
        }
        try bus.export(path: API.root, interfaces: [manager])
        for card in store.models { exportModel(card) }
        for job in jobs.allJobs { exportJob(job) }
        jobs.onJobCreated = { [weak self] job in self?.exportJob(job) }
        jobs.onModelPublished = { [weak self] card in self?.exportModel(card); self?.refreshManager() }
        jobs.log = { priority, message, id in Log.log(priority, message, ["JOB_ID": String(id)]) }
        engine.onQueueChange = { [weak self] in self?.refreshManager() }
        bus.onDisconnect = {
            Log.error("The connection to the bus was lost; exiting.")
            exit(1)
        }
        try bus.requestName(API.busName)
        Log.info("affinityd \(API.version) on \(config.bus), state in \(config.stateDirectory), authorization \(usePolkit ? "polkit" : "none").")
        refreshManager()
        startWatchdog()
        // Load the default model, then tell systemd we are ready.
        DispatchQueue.global().async { [self] in
            var error: String? = nil
            if let id = store.defaultModelID {
                do { try engine.preload(id) } catch let e {
                    error = ServiceError(e).message
                    Log.error("The default model does not load: \(error!)", ["MODEL_ID": id])
                }
            }
            lock.withLock { starting = false; preloadError = error }
            refreshManager()
            Notify.send("READY=1")
        }
    }

    /// With no default model, or with an earlier bundled model as the default: imports the
    /// bundled demo model (when one is found) into the store and makes it the default
    /// (`ModelStore.installBundled`). A failure is logged; the daemon then starts as without it.
    func installBundledModel() {
        guard let dir = BundledModel.defaultModel() else {
            if store.defaultModelID == nil {
                Log.info("No default model, and no bundled model was found (\(BundledModel.environmentVariable) or share/lesionaffinity/models).")
            }
            return
        }
        do {
            switch try store.installBundled(dir) {
            case .kept: return
            case .installed(let card, let replaced):
                let why = replaced.map { "The bundled model has changed (the default was its earlier version, \($0)): using" }
                    ?? "No default model was installed: using"
                Log.log(Log.notice, "\(why) the bundled model \(card.name) (\(card.id)) from \(dir.path), "
                        + "the phantom demo model, \(BundledModel.disclaimer).", ["MODEL_ID": card.id])
            }
        } catch {
            Log.error("The bundled model in \(dir.path) was not installed: \(ServiceError(error).message)")
        }
    }

    private func startWatchdog() {
        guard let usec = Notify.watchdogMicroseconds else { return }
        let t = DispatchSource.makeTimerSource(queue: DispatchQueue.global())
        let interval = max(usec / 2, 1000)
        t.schedule(deadline: .now(), repeating: .microseconds(Int(interval)))
        t.setEventHandler { [weak self] in
            guard let self, let me = self.bus.uniqueName else { return }
            // A round trip through the bus thread: WATCHDOG=1 only while it serves.
            self.bus.callAsync(destination: me, path: "/", interface: "org.freedesktop.DBus.Peer", method: "Ping",
                               timeout: .microseconds(Int64(interval))) { result in
                if case .success = result { Notify.send("WATCHDOG=1") }
            }
        }
        t.resume()
        watchdogTimer = t
    }

    /// SIGHUP: re-reads the configuration file (limits and log level; bus, state directory and
    /// workers need a restart). The model and the jobs are kept.
    func reload() {
        Notify.send("RELOADING=1")
        Notify.status("reloading the configuration")
        if let configFile {
            var c = DaemonConfig()
            do {
                try c.apply(file: configFile)
                lock.withLock {
                    config.analyseQueueLimit = c.analyseQueueLimit
                    config.maxImageBytes = c.maxImageBytes
                    config.maxImageDimension = c.maxImageDimension
                    config.maxImportBytes = c.maxImportBytes
                    config.logLevel = c.logLevel
                }
                engine.queueLimit = c.analyseQueueLimit
                engine.limits = ImageLimits(maxBytes: c.maxImageBytes, maxDimension: c.maxImageDimension)
                Log.maxPriority = DaemonConfig.priorities[c.logLevel] ?? 6
                Log.info("Configuration reloaded from \(configFile).")
            } catch {
                Log.error("The configuration was not reloaded: \(error)")
            }
        }
        Notify.status("")
        refreshManager()
        Notify.send("READY=1")
    }

    /// SIGTERM: refuses new work, cancels jobs (training writes a checkpoint), then STOPPING=1.
    func stop() {
        lock.withLock { stopping = true }
        refreshManager()
        Log.info("Stopping: cancelling jobs.")
        engine.stop()
        jobs.shutdown()
        Notify.send("STOPPING=1")
        Notify.status("stopping")
        try? bus.releaseName(API.busName, timeout: .seconds(2))
        bus.onDisconnect = nil
        bus.close()
        Log.info("Stopped.")
    }

    // MARK: Manager

    func managerState() -> String {
        let (s, st, err) = lock.withLock { (starting, stopping, preloadError) }
        if st { return "stopping" }
        if s { return "starting" }
        if store.defaultModelID == nil || err != nil { return "degraded" }
        if jobs.hasActiveJobs || engine.activeCount > 0 { return "busy" }
        return "ready"
    }

    func managerProperties() -> [String: DBusValue] {
        [
            "State": .string(managerState()),
            "DefaultModel": .objectPath(store.defaultModelID.map(API.modelPath) ?? "/"),
            "QueueLength": .uint32(UInt32(engine.queueLength)),
        ]
    }

    /// Emits PropertiesChanged for the manager's changed properties and updates STATUS=.
    func refreshManager() {
        let now = managerProperties()
        let changed: [String: DBusValue] = lock.withLock {
            let c = now.filter { lastManager[$0.key] != $0.value }
            lastManager = now
            return c
        }
        if !changed.isEmpty { try? bus.emitPropertiesChanged(path: API.root, interface: API.manager, changed: changed) }
        let state = managerState()
        var status: String
        switch state {
        case "degraded": status = store.defaultModelID == nil ? "degraded: no model installed" : "degraded: the default model does not load"
        case "starting": status = "starting: loading the model"
        case "stopping": status = "stopping"
        default:
            status = "\(state), model \(store.defaultModelID ?? "none")"
            if let j = jobs.allJobs.first(where: { $0.operation != "analyse-batch" && $0.snapshot.state == .running }) {
                let s = j.snapshot
                status = "training job \(j.id): epoch \(min(s.epoch + 1, s.totalEpochs))/\(s.totalEpochs), \(Int(s.progress * 100))%"
            } else if engine.activeCount > 0 {
                status = "analysing, \(engine.queueLength) waiting, model \(store.defaultModelID ?? "none")"
            }
        }
        Notify.status(status)
    }

    func managerInterface() -> BusInterface {
        var i = BusInterface(API.manager, introspectionXML: xml(API.manager))
        i.deferredMethod("Analyse", in: "ha{sv}", out: "a{sv}") { [self] call, reply in
            do {
                let fd = try call.argument(0).asFileDescriptor()
                let request = try analyseRequest(call.argument(1))
                try engine.submit(.fileDescriptor(fd.rawValue), request) { [self] result in
                    withExtendedLifetime(fd) {}
                    switch result {
                    case .success(let r):
                        do { reply.reply([.vardict(try analysisDictionary(r))]) } catch { reply.fail(apiError(error)) }
                    case .failure(let e):
                        reply.fail(apiError(e))
                    }
                }
            } catch {
                reply.fail(apiError(error))
            }
        }
        i.deferredMethod("AnalyseBatch", in: "aha{sv}", out: "o") { [self] call, reply in
            do {
                let fds = try call.argument(0).asFileDescriptors()
                let request = try analyseRequest(call.argument(1))
                call.senderUnixUser { [self] uid in
                    DispatchQueue.global().async { [self] in
                        reply.complete {
                            let job = try jobs.startBatch(fds.map { .fileDescriptor($0.rawValue) }, request: request,
                                                          uid: try uid.get(), keepAlive: fds)
                            return [.objectPath(API.jobPath(job.id))]
                        }
                        if reply.isCompleted {} // replied either way
                    }
                }
            } catch {
                reply.fail(apiError(error))
            }
        }
        i.deferredMethod("Train", in: "a{sv}", out: "o") { [self] call, reply in
            privileged(call, reply, action: API.Action.train) { [self] uid in
                let spec = try trainingSpec(call.argument(0), baseModel: nil)
                let job = try jobs.startTraining(spec, uid: uid)
                Log.info("Job \(job.id): train on \(spec.dataset.path) requested by uid \(uid).", ["JOB_ID": String(job.id)])
                return [.objectPath(API.jobPath(job.id))]
            }
        }
        i.deferredMethod("Finetune", in: "oa{sv}", out: "o") { [self] call, reply in
            privileged(call, reply, action: API.Action.finetune) { [self] uid in
                let id = try modelID(call.argument(0).asObjectPath())
                let spec = try trainingSpec(call.argument(1), baseModel: id)
                let job = try jobs.startTraining(spec, uid: uid)
                Log.info("Job \(job.id): finetune of \(id) requested by uid \(uid).", ["JOB_ID": String(job.id), "MODEL_ID": id])
                return [.objectPath(API.jobPath(job.id))]
            }
        }
        i.deferredMethod("ImportModel", in: "ha{sv}", out: "o") { [self] call, reply in
            privileged(call, reply, action: API.Action.importModel) { [self] uid in
                let fd = try call.argument(0).asFileDescriptor()
                let options = try strictOptions(call.argument(1), ["name", "affinities"])
                let name = try options.option("name") { try $0.asString() }
                let affinities = try options.option("affinities") { try $0.asUInt32() }.map(Int.init)
                let limit = lock.withLock { config.maxImportBytes }
                let bytes: [UInt8]
                do { bytes = try fd.readAll(limit: limit) } catch let e as BusError {
                    throw ServiceError.invalidArgument("The weights cannot be read from the file descriptor: \(e.message)")
                }
                let card = try store.importModel(bytes: bytes, name: name, affinities: affinities)
                exportModel(card)
                Log.info("Model \(card.id) imported by uid \(uid) (\(card.affinities) affinities).", ["MODEL_ID": card.id])
                refreshManager()
                return [.objectPath(API.modelPath(card.id))]
            }
        }
        i.method("ListModels", in: "a{sv}", out: "ao") { [self] call in
            _ = try strictOptions(call.argument(0), [])
            return [.objectPaths(store.models.map { API.modelPath($0.id) })]
        }
        i.deferredMethod("SetDefaultModel", in: "oa{sv}", out: "") { [self] call, reply in
            privileged(call, reply, action: API.Action.setDefault) { [self] _ in
                let id = try modelID(call.argument(0).asObjectPath())
                _ = try strictOptions(call.argument(1), [])
                guard store.card(id) != nil else { throw ServiceError.modelNotFound("There is no model '\(id)' in the store") }
                // Load it before making it the default, so that Analyse never meets a model that does not load.
                do { try engine.preload(id) } catch {
                    let e = ServiceError(error)
                    throw ServiceError(.modelNotReady, "Model \(id) does not load: \(e.message)")
                }
                try store.setDefault(id)
                lock.withLock { preloadError = nil }
                Log.info("Default model set to \(id).", ["MODEL_ID": id])
                refreshManager()
                return []
            }
        }
        i.method("ListPlugins", in: "a{sv}", out: "aa{sv}") { [self] call in
            _ = try strictOptions(call.argument(0), [])
            // Loaded plugins (state, id, version, kind, description, path), then what failed to
            // load (state "failed", path, error): files, then folders.
            let entries = plugins.listing + pluginFolderFailures
            return [.vardicts(entries.map { $0.mapValues { DBusValue.string($0) } })]
        }
        i.property("Version", "s", emitsChangedSignal: false) { .string(API.version) }
        i.property("ApiVersion", "u", emitsChangedSignal: false) { .uint32(1) }
        i.property("State", "s") { [self] in .string(managerState()) }
        i.property("DefaultModel", "o") { [self] in .objectPath(store.defaultModelID.map(API.modelPath) ?? "/") }
        i.property("QueueLength", "u") { [self] in .uint32(UInt32(engine.queueLength)) }
        i.property("Device", "s") {
            .string("CPU (OpenBLAS), \(ProcessInfo.processInfo.activeProcessorCount) cores")
        }
        return i
    }

    // MARK: Options

    func strictOptions(_ value: DBusValue, _ known: Set<String>) throws -> [String: DBusValue] {
        let o = try value.asVardict()
        do { try o.rejectUnknownOptions(known) } catch let e as BusError {
            throw ServiceError.invalidArgument(e.message)
        }
        return o
    }

    func modelID(_ path: String) throws -> String {
        let prefix = API.root + "/models/"
        guard path.hasPrefix(prefix), path.count > prefix.count else {
            throw ServiceError.modelNotFound("'\(path)' is not a model object path (\(prefix)<id>)")
        }
        return String(path.dropFirst(prefix.count))
    }

    func analyseRequest(_ value: DBusValue) throws -> AnalyseRequest {
        let o = try strictOptions(value, ["model", "seed", "detections"])
        var r = AnalyseRequest()
        do {
            if let m = try o.option("model", { try $0.asObjectPath() }) {
                let id = try modelID(m)
                guard store.card(id) != nil else { throw ServiceError.modelNotFound("There is no model '\(id)' in the store") }
                r.modelID = id
            }
            if let s = try o.option("seed", { try $0.asUInt64() }) { r.seed = s }
            if let d = try o.option("detections", { try $0.asBool() }) { r.withDetections = d }
        } catch let e as BusError { throw ServiceError.invalidArgument(e.message) }
        return r
    }

    func trainingSpec(_ value: DBusValue, baseModel: String?) throws -> TrainingSpec {
        let o = try strictOptions(value, ["dataset", "split", "epochs", "image_size", "iterations_per_epoch", "seed", "affinities",
                                          "learning_rate", "weight_decay", "copy_rule", "segmentation_step", "name",
                                          "head", "head_config", "head_learning_rate", "data_format", "segmentation_format",
                                          "data_options"])
        do {
            let path = try o.option("dataset") { try $0.asString() } ?? ""
            guard !path.isEmpty else { throw ServiceError.datasetInvalid("The option 'dataset' (s) must name a data set directory") }
            let url = path.hasPrefix("/") ? URL(fileURLWithPath: path)
                : URL(fileURLWithPath: config.stateDirectory).appendingPathComponent("datasets").appendingPathComponent(path)
            var s = TrainingSpec(dataset: url)
            s.baseModelID = baseModel
            s.segmentationStep = baseModel == nil
            if let v = try o.option("split", { try $0.asString() }) { s.split = v }
            if let v = try o.option("epochs", { try $0.asUInt32() }) { s.epochs = Int(v) }
            if let v = try o.option("image_size", { try $0.asUInt32() }) { s.imageSize = Int(v) }
            if let v = try o.option("iterations_per_epoch", { try $0.asUInt32() }) { s.iterationsPerEpoch = Int(v) }
            if let v = try o.option("seed", { try $0.asUInt64() }) { s.seed = v }
            if let v = try o.option("affinities", { try $0.asUInt32() }) { s.affinities = Int(v) }
            if let v = try o.option("learning_rate", { try $0.asDouble() }) { s.learningRate = Float(v) }
            if let v = try o.option("weight_decay", { try $0.asDouble() }) { s.weightDecay = Float(v) }
            if let v = try o.option("segmentation_step", { try $0.asBool() }) { s.segmentationStep = v }
            if let v = try o.option("name", { try $0.asString() }) { s.name = v }
            if let v = try o.option("head", { try $0.asString() }) { s.head = v }
            if let v = try o.option("head_config", { try $0.asString() }) { s.headConfig = v }
            if let v = try o.option("head_learning_rate", { try $0.asDouble() }) { s.headLearningRate = Float(v) }
            if let v = try o.option("copy_rule", { try $0.asString() }) {
                try s.setCopyRule(v)
            }
            if let v = try o.option("data_format", { try $0.asString() }) { s.dataFormat = v }
            if let v = try o.option("segmentation_format", { try $0.asString() }) { s.segmentationFormat = v }
            if let v = try o.option("data_options", { try $0.asString() }) {
                guard (try? JSONSerialization.jsonObject(with: Data(v.utf8))) is [String: Any] else {
                    throw ServiceError.invalidArgument("The option 'data_options' must be a JSON object, not '\(v)'")
                }
                guard s.usesReaders else {
                    throw ServiceError.invalidArgument("The option 'data_options' applies to the reader plugins of data_format and segmentation_format; neither is given")
                }
                s.dataOptions = v
            }
            return s
        } catch let e as BusError { throw ServiceError.invalidArgument(e.message) }
    }

    func analysisDictionary(_ r: AnalysisResult) throws -> [String: DBusValue] {
        let p = r.prediction
        let lesions: [[String: DBusValue]] = r.lesions.map {
            ["box": .doubles($0.box), "score": .double($0.score), "area": .uint32(UInt32($0.area))]
        }
        let mask = try FileDescriptor.sealedMemfd(name: "affinity-label-map", contents: r.labelMapPNG)
        return [
            "class": .string(p.className),
            "class_index": .uint32(UInt32(p.classIndex)),
            "scores": .doubles(p.logits.map(Double.init)),
            "probabilities": .doubles(p.probabilities.map(Double.init)),
            "lesions": .vardicts(lesions),
            "mask_png": .unixFD(mask),
            "model": .objectPath(API.modelPath(r.modelID)),
            "model_sha256": .string(r.modelSHA256),
            "timings": .doubleDict(r.timings),
            "image_width": .uint32(UInt32(r.imageWidth)),
            "image_height": .uint32(UInt32(r.imageHeight)),
            "plugins": .strings(r.plugins),
            "lung_field_area": .uint32(UInt32(clamping: r.lungFieldArea)),
        ]
    }

    // MARK: Authorization

    /// Looks up the caller's uid, checks `action` with polkit (unless authorization is off), then
    /// runs `body` on a worker queue and replies with its values or its error.
    func privileged(_ call: MethodCall, _ reply: PendingReply, action: String, _ body: @escaping (UInt32) throws -> [DBusValue]) {
        let run: (UInt32) -> Void = { uid in
            DispatchQueue.global().async { reply.complete { do { return try body(uid) } catch { throw apiError(error) } } }
        }
        call.senderUnixUser { [self] result in
            switch result {
            case .failure(let e):
                reply.fail(BusError(name: API.errorPrefix + "NotAuthorized", message: "The caller's user cannot be determined: \(e.message)"))
            case .success(let uid):
                if !usePolkit { run(uid); return }
                checkAuthorization(sender: call.sender, action: action) { allowed, why in
                    if allowed { run(uid) } else {
                        Log.log(Log.notice, "uid \(uid) is not authorized for \(action): \(why)")
                        reply.fail(BusError(name: API.errorPrefix + "NotAuthorized", message: why))
                    }
                }
            }
        }
    }

    /// org.freedesktop.PolicyKit1.Authority.CheckAuthorization for the bus name `sender`.
    func checkAuthorization(sender: String, action: String, completion: @escaping (Bool, String) -> Void) {
        let subject = DBusValue.structure([.string("system-bus-name"), .vardict(["name": .string(sender)])])
        bus.callAsync(destination: "org.freedesktop.PolicyKit1", path: "/org/freedesktop/PolicyKit1/Authority",
                      interface: "org.freedesktop.PolicyKit1.Authority", method: "CheckAuthorization",
                      [subject, .string(action), .dictionary(keySignature: "s", valueSignature: "s", []), .uint32(1), .string("")],
                      timeout: .seconds(120)) { result in
            switch result {
            case .success(let values):
                if let s = try? values.first?.asStructure(), s.count >= 2, let ok = try? s[0].asBool() {
                    completion(ok, ok ? "" : "The caller is not authorized for \(action) (polkit said no).")
                } else {
                    completion(false, "polkit gave an unexpected answer for \(action).")
                }
            case .failure(let e):
                completion(false, "The authorization for \(action) could not be checked with polkit: \(e.message)")
            }
        }
    }

    // MARK: Models

    func exportModel(_ card: ModelCard) {
        let fresh = lock.withLock { exportedModels.insert(card.id).inserted }
        guard fresh else { return }
        guard let i = modelInterface(id: card.id) else { return }
        do { try bus.export(path: API.modelPath(card.id), interfaces: [i]) } catch {
            Log.error("Cannot export model \(card.id): \(error)", ["MODEL_ID": card.id])
        }
    }

    func modelInterface(id: String) -> BusInterface? {
        var i = BusInterface(API.model, introspectionXML: xml(API.model))
        let store = self.store
        func card() throws -> ModelCard {
            guard let c = store.card(id) else { throw ServiceError.modelNotFound("Model \(id) is no longer in the store") }
            return c
        }
        i.property("Name", "s", emitsChangedSignal: false) { .string(try card().name) }
        i.property("Affinities", "u", emitsChangedSignal: false) { .uint32(UInt32(try card().affinities)) }
        i.property("Sha256", "s", emitsChangedSignal: false) { .string(try card().sha256) }
        i.property("CreatedAt", "t", emitsChangedSignal: false) { .uint64(try card().created) }
        i.property("TrainedOn", "s", emitsChangedSignal: false) { .string(try card().trainedOn) }
        i.property("Metrics", "a{sd}", emitsChangedSignal: false) { .doubleDict(try card().metrics) }
        i.property("Head", "s", emitsChangedSignal: false) { .string(try card().head) }
        i.property("Plugins", "as", emitsChangedSignal: false) { .strings(try card().plugins.map { "\($0.id) \($0.version)" }) }
        i.deferredMethod("ExportAffinityMatrix", in: "hha{sv}", out: "") { [self] call, reply in
            do {
                let head = try card().head
                guard head == AffinityHead.id else {
                    throw ServiceError(.unsupportedFormat, "Model \(id) classifies with the head plugin '\(head)', which has no affinity matrix")
                }
                let image = try call.argument(0).asFileDescriptor()
                let out = try call.argument(1).asFileDescriptor()
                var request = try analyseRequest(call.argument(2))
                request.modelID = id
                request.withDetections = false
                try engine.submit(.fileDescriptor(image.rawValue), request) { result in
                    withExtendedLifetime(image) {}
                    reply.complete {
                        do {
                            let r = try result.get()
                            try out.write(try affinityMatrixPNG(r))
                            return []
                        } catch { throw apiError(error) }
                    }
                }
            } catch {
                reply.fail(apiError(error))
            }
        }
        return i
    }

    // MARK: Jobs

    func jobProperties(_ job: Job) -> [String: DBusValue] {
        let s = job.snapshot
        return [
            "Operation": .string(job.operation), "State": .string(s.state.rawValue), "Progress": .double(s.progress),
            "Epoch": .uint32(UInt32(s.epoch)), "TotalEpochs": .uint32(UInt32(s.totalEpochs)), "Metrics": .doubleDict(s.metrics),
            "StartTime": .uint64(s.startTime), "ExpectedEndTime": .uint64(s.expectedEndTime),
            "StartedByUID": .uint32(job.startedByUID), "Cancelable": .boolean(s.cancelable),
            "Result": .vardict(jobResult(s)),
        ]
    }

    func jobResult(_ s: Job.Snapshot) -> [String: DBusValue] {
        var d = s.result.mapValues(dbusValue)
        if !s.message.isEmpty { d["message"] = .string(s.message) }
        return d
    }

    func dbusValue(_ v: JobValue) -> DBusValue {
        switch v {
        case .string(let s): return .string(s)
        case .double(let d): return .double(d)
        case .uint(let u): return .uint64(u)
        case .model(let id): return .objectPath(API.modelPath(id))
        case .doubles(let a): return .doubles(a)
        case .list(let l): return .vardicts(l.map { $0.mapValues(dbusValue) })
        }
    }

    func jobInterface(_ job: Job?) -> BusInterface? {
        var i = BusInterface(API.job, introspectionXML: xml(API.job))
        i.signal("Completed", "bsa{sv}")
        for name in ["Operation", "State", "Progress", "Epoch", "TotalEpochs", "Metrics", "StartTime", "ExpectedEndTime",
                     "StartedByUID", "Cancelable", "Result"] {
            let sig: String
            switch name {
            case "Operation", "State": sig = "s"
            case "Progress": sig = "d"
            case "Epoch", "TotalEpochs", "StartedByUID": sig = "u"
            case "Metrics": sig = "a{sd}"
            case "StartTime", "ExpectedEndTime": sig = "t"
            case "Cancelable": sig = "b"
            default: sig = "a{sv}"
            }
            i.property(name, sig, emitsChangedSignal: !["Operation", "StartedByUID"].contains(name)) { [self] in
                guard let job else { throw ServiceError.failed("No job") }
                return jobProperties(job)[name]!
            }
        }
        i.deferredMethod("Cancel", in: "a{sv}", out: "") { [self] call, reply in
            guard let job else { return reply.fail(apiError(ServiceError.failed("No job"))) }
            do { _ = try strictOptions(call.argument(0), []) } catch { return reply.fail(apiError(error)) }
            let doCancel: () -> Void = {
                if job.cancel() {
                    Log.info("Job \(job.id) cancel requested.", ["JOB_ID": String(job.id)])
                    reply.reply([])
                } else {
                    reply.fail(BusError(name: API.errorPrefix + "Failed", message: "Job \(job.id) has already finished (\(job.snapshot.state.rawValue))."))
                }
            }
            call.senderUnixUser { [self] result in
                guard case .success(let uid) = result else {
                    return reply.fail(BusError(name: API.errorPrefix + "NotAuthorized", message: "The caller's user cannot be determined."))
                }
                if !usePolkit || uid == 0 || uid == job.startedByUID { doCancel(); return }
                checkAuthorization(sender: call.sender, action: API.Action.cancelOther) { ok, why in
                    if ok { doCancel() } else { reply.fail(BusError(name: API.errorPrefix + "NotAuthorized", message: why)) }
                }
            }
        }
        return i
    }

    func exportJob(_ job: Job) {
        guard let i = jobInterface(job) else { return }
        let path = API.jobPath(job.id)
        lock.withLock { lastJobProps[job.id] = jobProperties(job) }
        do { try bus.export(path: path, interfaces: [i]) } catch {
            Log.error("Cannot export job \(job.id): \(error)", ["JOB_ID": String(job.id)])
            return
        }
        job.observe { [weak self] snapshot, finished in
            guard let self else { return }
            self.jobChanged(job, finished: finished)
            if finished {
                let success = snapshot.state == .completed
                try? self.bus.emitSignal(path: path, interface: API.job, name: "Completed",
                                         [.boolean(success), .string(snapshot.message), .vardict(self.jobResult(snapshot))])
                Log.log(success ? Log.info : Log.notice, "Job \(job.id) \(snapshot.state.rawValue): \(snapshot.message)", ["JOB_ID": String(job.id)])
            }
        }
        refreshManager()
    }

    /// PropertiesChanged for a job: state changes at once, progress at most about twice a second
    /// (a change inside the window is flushed at its end).
    func jobChanged(_ job: Job, finished: Bool) {
        let now = Date().timeIntervalSince1970
        let emitNow: Bool = lock.withLock {
            let stateChanged = lastJobProps[job.id]?["State"] != .string(job.snapshot.state.rawValue)
            if finished || stateChanged || now - (lastJobEmit[job.id] ?? 0) >= 0.5 { return true }
            if jobFlushScheduled.insert(job.id).inserted {
                let delay = 0.5 - (now - (lastJobEmit[job.id] ?? 0))
                DispatchQueue.global().asyncAfter(deadline: .now() + max(0.01, delay)) { [weak self] in
                    guard let self else { return }
                    _ = self.lock.withLock { self.jobFlushScheduled.remove(job.id) }
                    self.emitJob(job)
                }
            }
            return false
        }
        if emitNow { emitJob(job) }
        refreshManager()
    }

    private func emitJob(_ job: Job) {
        let props = jobProperties(job)
        let changed: [String: DBusValue] = lock.withLock {
            let old = lastJobProps[job.id] ?? [:]
            lastJobProps[job.id] = props
            lastJobEmit[job.id] = Date().timeIntervalSince1970
            return props.filter { old[$0.key] != $0.value && $0.key != "Operation" && $0.key != "StartedByUID" }
        }
        if !changed.isEmpty { try? bus.emitPropertiesChanged(path: API.jobPath(job.id), interface: API.job, changed: changed) }
    }
}

/// The affinity matrix X2 [C', 256] as an 8-bit gray PNG (256 wide, C' high), min–max scaled.
func affinityMatrixPNG(_ r: AnalysisResult) throws -> [UInt8] {
    let m = r.prediction.affinityMatrix
    let values = m.array
    let rows = m.shape.count == 2 ? m.shape[0] : 1
    let cols = values.count / max(rows, 1)
    let lo = values.min() ?? 0, hi = values.max() ?? 1
    let scale = hi > lo ? 255 / (hi - lo) : 0
    let bytes = values.map { UInt8(max(0, min(255, (($0 - lo) * scale).rounded()))) }
    return try PNG.encode(try PixelImage(bytes: bytes, width: cols, height: rows, format: .gray))
}
