// org.lesionaffinity.Affinity1.Manager at /org/lesionaffinity/Affinity1, and the checking of
// method options.
import Affinity
import AffinityAPI
import Bus
import Foundation
import Imaging
import PluginHost
import Service

extension Daemon {
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
            ManagerProperty.state.name: .string(managerState()),
            ManagerProperty.defaultModel.name: .objectPath(store.defaultModelID.map(API.modelPath) ?? "/"),
            ManagerProperty.queueLength.name: .uint32(UInt32(engine.queueLength)),
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
            if let j = jobs.allJobs.first(where: { !$0.operation.hasPrefix("analyse-") && $0.snapshot.state == .running }) {
                let s = j.snapshot
                status = "training job \(j.id): epoch \(min(s.epoch + 1, s.totalEpochs))/\(s.totalEpochs), \(Int(s.progress * 100))%"
            } else if engine.activeCount > 0 {
                status = "analysing, \(engine.queueLength) waiting, model \(store.defaultModelID ?? "none")"
            }
        }
        Notify.status(status)
    }

    func managerInterface() -> BusInterface {
        var i = BusInterface.api(API.manager, introspectionXML: xml(API.manager))
        i.deferredMethod("Analyse", in: "ha{sv}", out: "a{sv}") { [self] call, reply in
            do {
                let fd = try call.argument(0).asFileDescriptor()
                let request = try analyseRequest(call.argument(1))
                try engine.submit(.fileDescriptor(fd.rawValue), request, owner: Self.owner(call)) { [self] result in
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
                try Self.checkBatch(fds.count)
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
        addScanMethods(&i)
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
                let options = try strictOptions(call.argument(1), ImportOption.keys)
                let name = try options.option(ImportOption.name) { try $0.asString() }
                let affinities = try options.option(ImportOption.affinities) { try $0.asUInt32() }.map(Int.init)
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
        i.property(ManagerProperty.version) { .string(affinitydVersion) }
        i.property(ManagerProperty.apiVersion) { .uint32(API.apiVersion) }
        i.property(ManagerProperty.state) { [self] in .string(managerState()) }
        i.property(ManagerProperty.defaultModel) { [self] in .objectPath(store.defaultModelID.map(API.modelPath) ?? "/") }
        i.property(ManagerProperty.queueLength) { [self] in .uint32(UInt32(engine.queueLength)) }
        i.property(ManagerProperty.device) {
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
        let o = try strictOptions(value, AnalyseOption.keys)
        var r = AnalyseRequest()
        do {
            if let m = try o.option(AnalyseOption.model, { try $0.asObjectPath() }) {
                let id = try modelID(m)
                guard store.card(id) != nil else { throw ServiceError.modelNotFound("There is no model '\(id)' in the store") }
                r.modelID = id
            }
            if let s = try o.option(AnalyseOption.seed, { try $0.asUInt64() }) { r.seed = s }
            if let d = try o.option(AnalyseOption.detections, { try $0.asBool() }) { r.withDetections = d }
        } catch let e as BusError { throw ServiceError.invalidArgument(e.message) }
        return r
    }

    func trainingSpec(_ value: DBusValue, baseModel: String?) throws -> TrainingSpec {
        let o = try strictOptions(value, TrainOption.keys)
        do {
            let path = try o.option(TrainOption.dataset) { try $0.asString() } ?? ""
            guard !path.isEmpty else { throw ServiceError.datasetInvalid("The option 'dataset' (s) must name a data set directory") }
            let url = path.hasPrefix("/") ? URL(fileURLWithPath: path)
                : URL(fileURLWithPath: config.stateDirectory).appendingPathComponent("datasets").appendingPathComponent(path)
            var s = TrainingSpec(dataset: url)
            s.baseModelID = baseModel
            s.segmentationStep = baseModel == nil
            if let v = try o.option(TrainOption.split, { try $0.asString() }) { s.split = v }
            if let v = try o.option(TrainOption.epochs, { try $0.asUInt32() }) { s.epochs = Int(v) }
            if let v = try o.option(TrainOption.imageSize, { try $0.asUInt32() }) { s.imageSize = Int(v) }
            if let v = try o.option(TrainOption.iterationsPerEpoch, { try $0.asUInt32() }) { s.iterationsPerEpoch = Int(v) }
            if let v = try o.option(AnalyseOption.seed, { try $0.asUInt64() }) { s.seed = v }
            if let v = try o.option(TrainOption.affinities, { try $0.asUInt32() }) { s.affinities = Int(v) }
            if let v = try o.option(TrainOption.learningRate, { try $0.asDouble() }) { s.learningRate = Float(v) }
            if let v = try o.option(TrainOption.weightDecay, { try $0.asDouble() }) { s.weightDecay = Float(v) }
            if let v = try o.option(TrainOption.segmentationStep, { try $0.asBool() }) { s.segmentationStep = v }
            if let v = try o.option(TrainOption.name, { try $0.asString() }) { s.name = v }
            if let v = try o.option(TrainOption.head, { try $0.asString() }) { s.head = v }
            if let v = try o.option(TrainOption.headConfig, { try $0.asString() }) { s.headConfig = v }
            if let v = try o.option(TrainOption.headLearningRate, { try $0.asDouble() }) { s.headLearningRate = Float(v) }
            if let v = try o.option(TrainOption.copyRule, { try $0.asString() }) {
                try s.setCopyRule(v)
            }
            if let v = try o.option(TrainOption.dataFormat, { try $0.asString() }) { s.dataFormat = v }
            if let v = try o.option(TrainOption.segmentationFormat, { try $0.asString() }) { s.segmentationFormat = v }
            if let v = try o.option(TrainOption.checkpointInterval, { try $0.asUInt32() }) { s.checkpointInterval = Double(v) }
            if let v = try o.option(TrainOption.checkpointIterations, { try $0.asUInt32() }) { s.checkpointIterations = Int(v) }
            if let v = try o.option(TrainOption.dataOptions, { try $0.asString() }) {
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
}
