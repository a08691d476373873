// Jobs: long operations (train, finetune, batch analyse) as objects with progress and cancellation.
import Affinity
import Foundation
import Imaging
import NN
import SystemIO
import Tensor

/// A value in a job's result (transport-free; the daemon maps `model` to an object path).
public enum JobValue: Sendable, Equatable {
    case string(String)
    case double(Double)
    case uint(UInt64)
    case model(String)
    case list([[String: JobValue]])
    case doubles([Double])
}

/// One long operation. Properties change on the job's thread; readers take a snapshot.
public final class Job: @unchecked Sendable {
    public enum State: String, Sendable { case queued, running, completed, failed, cancelled }

    /// A consistent copy of the job's properties.
    public struct Snapshot: Sendable {
        public var state: State
        public var progress: Double
        public var epoch: Int
        public var totalEpochs: Int
        public var metrics: [String: Double]
        /// Microseconds since the Unix epoch (0 until it starts).
        public var startTime: UInt64
        /// Microseconds since the Unix epoch; 0 when unknown.
        public var expectedEndTime: UInt64
        public var cancelable: Bool
        public var result: [String: JobValue]
        public var message: String
    }

    public let id: Int
    /// "train", "finetune" or "analyse-batch".
    public let operation: String
    public let startedByUID: UInt32
    private let lock = NSLock()
    private var snap: Snapshot
    private var cancelFlag = false
    private var stopFlag = false
    private var observers: [(Snapshot, _ finished: Bool) -> Void] = []

    init(id: Int, operation: String, startedByUID: UInt32, totalEpochs: Int) {
        self.id = id
        self.operation = operation
        self.startedByUID = startedByUID
        snap = Snapshot(state: .queued, progress: 0, epoch: 0, totalEpochs: totalEpochs, metrics: [:], startTime: 0,
                        expectedEndTime: 0, cancelable: true, result: [:], message: "")
    }

    public var snapshot: Snapshot { lock.withLock { snap } }

    /// Calls `observer` after every change (on the job's thread), with `finished` true once.
    public func observe(_ observer: @escaping (Snapshot, _ finished: Bool) -> Void) {
        lock.withLock { observers.append(observer) }
    }

    /// Asks the job to stop: it ends as `cancelled` within one iteration (one image for a batch).
    /// - Returns: false if the job had already finished.
    @discardableResult
    public func cancel() -> Bool {
        lock.withLock {
            switch snap.state {
            case .completed, .failed, .cancelled: return false
            default: cancelFlag = true; return true
            }
        }
    }

    /// Like `cancel`, for a service shutdown: a training job writes a checkpoint where it stands.
    func stopForShutdown() { lock.withLock { stopFlag = true; cancelFlag = true } }

    var isCancelRequested: Bool { lock.withLock { cancelFlag } }
    var isShutdownRequested: Bool { lock.withLock { stopFlag } }
    public var isFinished: Bool {
        switch snapshot.state { case .completed, .failed, .cancelled: return true; default: return false }
    }

    func update(_ body: (inout Snapshot) -> Void) {
        let (s, obs) = lock.withLock { () -> (Snapshot, [(Snapshot, Bool) -> Void]) in
            body(&snap)
            return (snap, observers)
        }
        for o in obs { o(s, false) }
    }

    func finish(_ state: State, message: String, result: [String: JobValue] = [:]) {
        let (s, obs) = lock.withLock { () -> (Snapshot, [(Snapshot, Bool) -> Void]) in
            snap.state = state
            snap.message = message
            snap.cancelable = false
            snap.expectedEndTime = unixMicroseconds()
            if state == .completed { snap.progress = 1 }
            snap.result.merge(result) { _, b in b }
            return (snap, observers)
        }
        for o in obs { o(s, true) }
        Engine.releaseFreedMemory()  // a job's tensors, kept while it ran (Engine.holdFreedMemory)
    }
}

/// What a Train or Finetune job does.
public struct TrainingSpec: Sendable {
    /// The data-set directory (PhantomLayoutData's layout).
    public var dataset: URL
    public var split = "train"
    public var epochs = 1
    /// Side of the training images (512 as the model's input; smaller for quick runs).
    public var imageSize = 512
    /// At most this many iterations (classification samples) per epoch.
    public var iterationsPerEpoch: Int?
    public var seed: UInt64 = 1
    /// C' of a new model (Train); ignored by Finetune (the base model's).
    public var affinities = 128
    public var learningRate: Float = 1e-5
    /// The learning rate of the classification head's own parameters (nil: `learningRate`).
    public var headLearningRate: Float?
    public var weightDecay: Float = 1e-3
    /// Train: the classification head of the new model, by id ("affinity", the built-in affinity
    /// layer and classifier, or a loaded head plugin's id); Finetune: the base model's head.
    public var head = AffinityHead.id
    /// The head plugin's JSON configuration (Train with a plugin head).
    public var headConfig = "{}"
    public var copyRule: CopyRule = .previous
    public var segmentationStep = true
    /// The new model's name (default: "trained by job N").
    public var name: String?
    /// Finetune: the model to start from.
    public var baseModelID: String?
    /// Read the classification set through this dataset-reader plugin (e.g. "covidx-ct") instead
    /// of the built-in layout (`JobManager.dataReader`).
    public var dataFormat: String?
    /// Read the segmentation set through this dataset-reader plugin (e.g. "cncb-seg").
    public var segmentationFormat: String?
    /// The readers' JSON options (nil: `{"split": split}` for the readers with splits).
    public var dataOptions: String?
    public init(dataset: URL) { self.dataset = dataset }

    /// Whether a dataset-reader plugin reads part of the data set.
    public var usesReaders: Bool { dataFormat != nil || segmentationFormat != nil }

    /// Sets the copy rule by name ("previous" or "best").
    /// - Throws: `InvalidArgument` for another name.
    public mutating func setCopyRule(_ name: String) throws {
        guard let rule = CopyRule(rawValue: name) else {
            throw ServiceError.invalidArgument("copy_rule must be 'previous' or 'best', not '\(name)'")
        }
        copyRule = rule
    }
}

/// A Train or Finetune data set read through dataset-reader plugins (what `JobManager.dataReader`
/// returns): the classification samples when the spec's `dataFormat` is set, the segmentation
/// samples when its `segmentationFormat` is set (the other count is 0: that part comes from the
/// built-in layout).
public struct ReaderTrainingData {
    public var data: any TrainingData
    /// `id version` of each plugin used (the readers, then the decoders of their images).
    public var plugins: [String]
    /// The entries the readers skipped, each `name: reason`.
    public var skipped: [String]
    public init(data: any TrainingData, plugins: [String], skipped: [String] = []) {
        self.data = data; self.plugins = plugins; self.skipped = skipped
    }
}

/// A job's training data: plugin-read and built-in parts together, at most `limit`
/// classification samples (the first ones).
private struct CombinedTrainingData: TrainingData {
    let classification: any TrainingData
    let segmentation: any TrainingData
    let limit: Int?
    var classificationCount: Int { min(classification.classificationCount, limit ?? Int.max) }
    var segmentationCount: Int { segmentation.segmentationCount }
    func classificationSample(_ i: Int) throws -> ClassificationSample { try classification.classificationSample(i) }
    func segmentationSample(_ i: Int) throws -> SegmentationSample { try segmentation.segmentationSample(i) }
}

/// A job's data, read and checked, with what the model card records.
private struct JobData {
    var data: any TrainingData
    /// The plugins that read it (`id version`).
    var plugins: [String]
    var skipped: [String]
}

/// Runs jobs: training jobs (Train, Finetune) one at a time on one thread, in order; batch analyses
/// on their own threads through the analyse engine. Each training job keeps `runs/<job>/`:
/// `job.json` (its state), `checkpoint.safetensors` (written atomically after every epoch and on
/// shutdown) and `metrics.jsonl` (one line per epoch). At the end the model is published to the store.
public final class JobManager: @unchecked Sendable {
    public let store: ModelStore
    public let engine: AnalyseEngine
    public var runsDirectory: URL { store.stateDirectory.appendingPathComponent("runs") }
    private let cond = NSCondition()
    private var jobs: [Int: Job] = [:]
    private var order: [Int] = []
    private var nextID = 1
    private var trainingQueue: [(Job, TrainingSpec, JobData?)] = []
    private var stopping = false
    /// Called when a job is created (before it starts).
    public var onJobCreated: ((Job) -> Void)?
    /// Called when a model is published by a job.
    public var onModelPublished: ((ModelCard) -> Void)?
    /// Log lines from jobs: (priority 0–7, message, job id).
    public var log: ((Int, String, Int) -> Void)?
    /// Reads a data set through dataset-reader plugins, for a job whose spec sets `dataFormat` or
    /// `segmentationFormat` (the daemon's plugin registry; nil: only the built-in layout is read).
    /// It throws `InvalidArgument` for an unknown reader id or refused options and
    /// `DatasetInvalid` for a root the reader cannot open or without a usable sample; broken
    /// entries are not errors but come back in `skipped`.
    public var dataReader: ((TrainingSpec) throws -> ReaderTrainingData)?

    /// Reads the jobs of earlier runs from `runs/*/job.json`: a job recorded as queued or running
    /// (the daemon stopped or crashed) is reported as failed; its last checkpoint stays.
    public init(store: ModelStore, engine: AnalyseEngine) {
        self.store = store
        self.engine = engine
        try? FileManager.default.createDirectory(at: runsDirectory, withIntermediateDirectories: true)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: runsDirectory.path)) ?? []
        for name in names {
            guard let n = Int(name), n > 0 else { continue }
            nextID = max(nextID, n + 1)
            removeAtomicWriteLeftovers(in: runsDirectory.appendingPathComponent(name))
            guard let data = try? Data(contentsOf: runsDirectory.appendingPathComponent(name).appendingPathComponent("job.json")),
                  let rec = try? JSONDecoder().decode(JobRecord.self, from: data) else { continue }
            let job = Job(id: n, operation: rec.operation, startedByUID: rec.uid, totalEpochs: rec.totalEpochs)
            let state = Job.State(rawValue: rec.state) ?? .failed
            job.update { s in
                s.epoch = rec.epoch; s.progress = rec.progress; s.metrics = rec.metrics; s.startTime = rec.startTime
                s.state = state
            }
            var result: [String: JobValue] = [:]
            if let m = rec.model { result["model"] = .model(m) }
            if state == .queued || state == .running {
                job.finish(.failed, message: "The daemon stopped while this job ran; its last checkpoint is kept in runs/\(n)/.")
                record(job)  // job.json says failed too, not still running
            } else {
                job.finish(state, message: rec.message, result: result)
            }
            jobs[n] = job
            order.append(n)
        }
        order.sort()
        let t = Thread { [weak self] in self?.trainingLoop() }
        t.name = "training"
        t.stackSize = 16 << 20
        t.start()
    }

    /// Every job, in id order.
    public var allJobs: [Job] { cond.withLock { order.compactMap { jobs[$0] } } }
    public func job(_ id: Int) -> Job? { cond.withLock { jobs[id] } }
    /// Whether a job is queued or running.
    public var hasActiveJobs: Bool { allJobs.contains { !$0.isFinished } }

    private func makeJob(_ operation: String, uid: UInt32, epochs: Int) throws -> Job {
        try cond.withLock {
            guard !stopping else { throw ServiceError.failed("The service is stopping") }
            let job = Job(id: nextID, operation: operation, startedByUID: uid, totalEpochs: epochs)
            nextID += 1
            jobs[job.id] = job
            order.append(job.id)
            return job
        }
    }

    /// Validates the data set (and the base model for Finetune) and queues a training job.
    /// - Throws: `DatasetInvalid`, `ModelNotFound`, `InvalidArgument` before any job exists.
    public func startTraining(_ spec: TrainingSpec, uid: UInt32) throws -> Job {
        guard spec.epochs >= 1, spec.epochs <= 10000 else { throw ServiceError.invalidArgument("epochs must be between 1 and 10000, got \(spec.epochs)") }
        if let n = spec.iterationsPerEpoch, n < 1 { throw ServiceError.invalidArgument("iterations_per_epoch must be at least 1") }
        guard spec.affinities >= 1, spec.affinities <= 4096 else { throw ServiceError.invalidArgument("affinities must be between 1 and 4096") }
        guard spec.learningRate > 0, spec.learningRate.isFinite else { throw ServiceError.invalidArgument("learning_rate must be positive") }
        if let h = spec.headLearningRate, !(h > 0 && h.isFinite) { throw ServiceError.invalidArgument("head_learning_rate must be positive") }
        if spec.head != AffinityHead.id {
            guard spec.baseModelID == nil else {
                throw ServiceError.invalidArgument("Finetune keeps the base model's head; 'head' applies to Train only")
            }
            _ = try makeHead(spec)  // an unknown head or a refused config is the caller's error
        }
        if let base = spec.baseModelID, store.card(base) == nil {
            throw ServiceError.modelNotFound("There is no model '\(base)' to fine-tune")
        }
        guard !spec.dataset.path.isEmpty, spec.dataset.path != "/" || false else {
            throw ServiceError.datasetInvalid("No data set path was given")
        }
        // Validate up front: a broken data set is the caller's error, not a failed job. A set read
        // through plugins is decoded here once and handed to the job.
        let data = try jobData(spec)
        let job = try makeJob(spec.baseModelID == nil ? "train" : "finetune", uid: uid, epochs: spec.epochs)
        job.update { $0.result["run_directory"] = .string(runDirectory(job.id).path) }
        try? FileManager.default.createDirectory(at: runDirectory(job.id), withIntermediateDirectories: true)
        record(job)
        job.observe { [weak self] _, finished in if finished { self?.record(job) } }
        onJobCreated?(job)
        if spec.usesReaders {
            let readers = [spec.dataFormat.map { "\($0) (classification)" }, spec.segmentationFormat.map { "\($0) (segmentation)" }]
            log?(6, "Job \(job.id) reads \(spec.dataset.path) through \(readers.compactMap { $0 }.joined(separator: " and ")): "
                 + "\(data.data.classificationCount) classification and \(data.data.segmentationCount) segmentation samples, "
                 + "\(data.skipped.count) broken \(data.skipped.count == 1 ? "entry" : "entries") skipped.", job.id)
            for s in data.skipped.prefix(20) { log?(4, "Job \(job.id): skipped the broken entry \(s)", job.id) }
            if data.skipped.count > 20 { log?(4, "Job \(job.id): and \(data.skipped.count - 20) more broken entries skipped.", job.id) }
            job.update { $0.result["skipped_entries"] = .uint(UInt64(data.skipped.count)) }
        }
        cond.withLock {
            trainingQueue.append((job, spec, spec.usesReaders ? data : nil))
            cond.signal()
        }
        return job
    }

    /// The data of a job: the built-in layout (`PhantomLayoutData`), or, when the spec names
    /// reader plugins, their sets through `dataReader` with the built-in layout for the part they
    /// do not read (segmentation only when the segmentation step runs).
    /// - Throws: `DatasetInvalid`, `InvalidArgument`.
    private func jobData(_ spec: TrainingSpec) throws -> JobData {
        guard spec.usesReaders else {
            let data = try PhantomLayoutData(root: spec.dataset, split: spec.split, side: spec.imageSize, limit: spec.iterationsPerEpoch)
            return JobData(data: data, plugins: [], skipped: [])
        }
        guard ["train", "val", "test"].contains(spec.split) else {
            throw ServiceError.invalidArgument("The split must be train, val or test, not '\(spec.split)'")
        }
        guard (64...1024).contains(spec.imageSize) else {
            throw ServiceError.invalidArgument("The image size must be between 64 and 1024 pixels, got \(spec.imageSize)")
        }
        for (option, id) in [("data_format", spec.dataFormat), ("segmentation_format", spec.segmentationFormat)] {
            if let id, id.isEmpty { throw ServiceError.invalidArgument("The option '\(option)' names no reader plugin") }
        }
        guard let dataReader else {
            throw ServiceError.invalidArgument("This service reads data sets in the built-in layout only; "
                + "data_format and segmentation_format need its dataset-reader plugins")
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: spec.dataset.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ServiceError.datasetInvalid("The data set directory '\(spec.dataset.path)' does not exist")
        }
        let read = try dataReader(spec)
        let needsBuiltIn = spec.dataFormat == nil || (spec.segmentationFormat == nil && spec.segmentationStep)
        let builtIn: (any TrainingData)? = needsBuiltIn
            ? try PhantomLayoutData(root: spec.dataset, split: spec.split, side: spec.imageSize, limit: spec.iterationsPerEpoch,
                                    readClassification: spec.dataFormat == nil,
                                    readSegmentation: spec.segmentationFormat == nil && spec.segmentationStep)
            : nil
        let data = CombinedTrainingData(classification: spec.dataFormat != nil ? read.data : builtIn!,
                                        segmentation: spec.segmentationFormat != nil ? read.data : (builtIn ?? read.data),
                                        limit: spec.iterationsPerEpoch)
        guard data.classificationCount > 0 else {
            throw ServiceError.datasetInvalid("The data set '\(spec.dataset.path)' has no usable classification sample")
        }
        if spec.segmentationStep && data.segmentationCount == 0 {
            throw ServiceError.datasetInvalid("The data set '\(spec.dataset.path)' has no usable segmentation sample for the segmentation step")
        }
        return JobData(data: data, plugins: read.plugins, skipped: read.skipped)
    }

    /// Queues a batch analysis of `sources` (each descriptor kept open by `keepAlive` until done).
    public func startBatch(_ sources: [ImageSource], request: AnalyseRequest, uid: UInt32, keepAlive: Any? = nil) throws -> Job {
        guard !sources.isEmpty else { throw ServiceError.invalidArgument("AnalyseBatch needs at least one image") }
        guard request.modelID != nil || store.defaultModelID != nil else {
            throw ServiceError(.modelNotReady, "No model is installed; import one with ImportModel or train one")
        }
        let job = try makeJob("analyse-batch", uid: uid, epochs: 1)
        onJobCreated?(job)
        let t = Thread { [weak self] in
            guard let self else { return }
            withExtendedLifetime(keepAlive) { self.runBatch(job, sources, request) }
        }
        t.name = "batch-\(job.id)"
        t.start()
        return job
    }

    /// Cancels every job and waits until they end (training jobs write a checkpoint first).
    public func shutdown(timeout: TimeInterval = 60) {
        let all = cond.withLock { () -> [Job] in
            stopping = true
            cond.broadcast()
            return order.compactMap { jobs[$0] }
        }
        for j in all where !j.isFinished { j.stopForShutdown() }
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline && all.contains(where: { !$0.isFinished }) { usleep(20_000) }
    }

    func runDirectory(_ id: Int) -> URL { runsDirectory.appendingPathComponent(String(id)) }

    /// A fresh plugin head for a Train job (`spec.head`, `spec.headConfig`, seeded by `spec.seed`).
    /// - Throws: `InvalidArgument` when no loaded head plugin has that id; `PluginFailed` when the
    ///   plugin refuses the configuration.
    private func makeHead(_ spec: TrainingSpec) throws -> any ClassificationHead {
        let made: (any ClassificationHead)?
        do { made = try store.heads?.makeHead(id: spec.head, config: spec.headConfig, seed: spec.seed) } catch {
            throw ServiceError(.pluginFailed, "The head plugin '\(spec.head)' refuses the configuration \(spec.headConfig): \(error)")
        }
        guard let made else {
            throw ServiceError.invalidArgument("No head plugin with the id '\(spec.head)' is loaded (the built-in head is '\(AffinityHead.id)')")
        }
        return made
    }

    // MARK: Batch

    private func runBatch(_ job: Job, _ sources: [ImageSource], _ request: AnalyseRequest) {
        let start = unixMicroseconds()
        job.update { $0.state = .running; $0.startTime = start }
        var items: [[String: JobValue]] = []
        var failures = 0
        for (i, source) in sources.enumerated() {
            if job.isCancelRequested {
                job.finish(.cancelled, message: "Cancelled after \(i) of \(sources.count) images.", result: ["images": .list(items)])
                return
            }
            do {
                let r = try engine.analyseAndWait(source, request)
                items.append(["class": .string(r.prediction.className), "class_index": .uint(UInt64(r.prediction.classIndex)),
                              "scores": .doubles(r.prediction.logits.map(Double.init)),
                              "probabilities": .doubles(r.prediction.probabilities.map(Double.init)),
                              "lesion_count": .uint(UInt64(r.lesions.count)), "model": .model(r.modelID)]
                             .merging(r.plugins.isEmpty ? [:] : ["plugins": .string(r.plugins.joined(separator: ", "))]) { a, _ in a })
            } catch {
                let e = ServiceError(error)
                failures += 1
                items.append(["error": .string("org.lesionaffinity.Affinity1.Error.\(e.kind.rawValue)"), "message": .string(e.message)])
            }
            let done = Double(i + 1) / Double(sources.count)
            let elapsed = Double(unixMicroseconds() - start)
            job.update { s in
                s.progress = done
                s.metrics = ["images_done": Double(i + 1), "images_failed": Double(failures)]
                s.expectedEndTime = start + UInt64(elapsed / done)
            }
        }
        job.finish(.completed, message: "Analysed \(sources.count - failures) of \(sources.count) images.", result: ["images": .list(items)])
    }

    // MARK: Training

    private func trainingLoop() {
        while true {
            cond.lock()
            while trainingQueue.isEmpty && !stopping { cond.wait() }
            if trainingQueue.isEmpty { cond.unlock(); return }
            let (job, spec, data) = trainingQueue.removeFirst()
            cond.unlock()
            if job.isCancelRequested {
                job.finish(.cancelled, message: "Cancelled before it started.")
                continue
            }
            runTraining(job, spec, data)
        }
    }

    /// Runs a training job on `prepared` (the data read when the job was queued) or, without it,
    /// on its data set opened again.
    private func runTraining(_ job: Job, _ spec: TrainingSpec, _ prepared: JobData?) {
        let start = unixMicroseconds()
        let dir = runDirectory(job.id)
        let checkpoint = dir.appendingPathComponent("checkpoint.safetensors")
        job.update { $0.state = .running; $0.startTime = start }
        record(job)
        log?(6, "Job \(job.id) (\(job.operation)) started on \(spec.dataset.path).", job.id)
        do {
            let jobData = try prepared ?? self.jobData(spec)
            let data = jobData.data
            let model: AffinityModel
            var config = TrainingConfig()
            if let base = spec.baseModelID {
                model = try store.loadModel(base).0
            } else if spec.head != AffinityHead.id {
                model = AffinityModel(head: try makeHead(spec))
                var rng = SeededGenerator(seed: spec.seed)
                model.initialize(rng: &rng)
            } else {
                model = AffinityModel(affinities: spec.affinities)
                var rng = SeededGenerator(seed: spec.seed)
                model.initialize(rng: &rng)
            }
            config.affinities = model.affinities
            config.epochs = spec.epochs
            config.learningRate = spec.learningRate
            config.weightDecay = spec.weightDecay
            config.headLearningRate = spec.headLearningRate
            config.copyRule = spec.copyRule
            config.segmentationStep = spec.segmentationStep
            config.seed = spec.seed
            let trainer = try OneShotTrainer(model: model, data: data, config: config)
            let perEpoch = data.classificationCount
            let total = perEpoch * spec.epochs
            var metricsLines = ""
            while !trainer.isFinished {
                if job.isCancelRequested {
                    if job.isShutdownRequested {
                        try trainer.saveCheckpoint(to: checkpoint, extraMetadata: ["job": String(job.id)])
                        job.finish(.cancelled, message: "Stopped by a service shutdown at iteration \(trainer.state.totalIterations) of \(total); a checkpoint was written.")
                    } else {
                        job.finish(.cancelled, message: "Cancelled at iteration \(trainer.state.totalIterations) of \(total); the last epoch checkpoint is kept.")
                    }
                    log?(5, "Job \(job.id) cancelled.", job.id)
                    return
                }
                let r = try trainer.step()
                let done = trainer.state.totalIterations
                let elapsed = Double(unixMicroseconds() - start)
                let fraction = Double(done) / Double(max(total, 1))
                job.update { s in
                    s.progress = min(1, fraction)
                    s.epoch = trainer.state.epoch
                    s.metrics["loss_classification"] = r.classification
                    if let seg = r.segmentation { s.metrics["loss_segmentation"] = seg.total }
                    s.metrics["iteration"] = Double(done)
                    s.metrics["copies"] = Double(trainer.state.copies)
                    s.expectedEndTime = start + UInt64(elapsed / max(fraction, 1e-9))
                }
                if trainer.state.iteration == 0 {  // an epoch just ended
                    let e = trainer.state.epoch - 1
                    try trainer.saveCheckpoint(to: checkpoint, extraMetadata: ["job": String(job.id)])
                    let line = "{\"epoch\": \(e + 1), \"loss_total\": \(trainer.state.epochTotals[e]), \"loss_segmentation\": \(trainer.state.epochSeg[e]), \"loss_classification\": \(trainer.state.epochCls[e]), \"copies\": \(trainer.state.copies)}\n"
                    metricsLines += line
                    try CheckpointError.mappingFileErrors { try AtomicFile.write(Data(metricsLines.utf8), to: dir.appendingPathComponent("metrics.jsonl")) }
                    job.update { s in
                        s.metrics["epoch_loss_total"] = trainer.state.epochTotals[e]
                        s.metrics["epoch_loss_segmentation"] = trainer.state.epochSeg[e]
                        s.metrics["epoch_loss_classification"] = trainer.state.epochCls[e]
                    }
                    record(job)
                    log?(6, "Job \(job.id): epoch \(e + 1)/\(spec.epochs), L_total \(trainer.state.epochTotals[e]).", job.id)
                }
            }
            // Publish: the model file is written in the run directory, then imported into the store.
            let modelFile = dir.appendingPathComponent("model.safetensors")
            try ModelLoader.save(model, to: modelFile, metadata: ["job": String(job.id)])
            let bytes = [UInt8](try Data(contentsOf: modelFile))
            let s = trainer.state
            var metrics: [String: Double] = ["epochs": Double(s.epochTotals.count), "iterations": Double(s.totalIterations)]
            if let last = s.epochTotals.last { metrics["loss_total"] = last }
            if let last = s.epochCls.last { metrics["loss_classification"] = last }
            if let last = s.epochSeg.last { metrics["loss_segmentation"] = last }
            // The plugins that made it: this job's readers, then what the base model's card records
            // (a fine-tuned model descends from the data its base was trained on).
            var plugins = jobData.plugins.map(Self.cardPlugin)
            if let base = spec.baseModelID, let baseCard = store.card(base) {
                for p in baseCard.plugins where !plugins.contains(p) { plugins.append(p) }
            }
            let card = try store.importModel(bytes: bytes, name: spec.name ?? "trained by job \(job.id)",
                                             affinities: model.affinityHead == nil ? nil : model.affinities,
                                             trainedOn: spec.dataset.path, metrics: metrics, plugins: plugins)
            try? FileManager.default.removeItem(at: modelFile)
            onModelPublished?(card)
            job.finish(.completed, message: "Trained \(s.epochTotals.count) epochs; published model \(card.id).",
                       result: ["model": .model(card.id), "model_sha256": .string(card.sha256)])
            log?(6, "Job \(job.id) completed: model \(card.id).", job.id)
        } catch {
            let e = ServiceError(error)
            job.finish(.failed, message: e.message, result: ["error": .string("org.lesionaffinity.Affinity1.Error.\(e.kind.rawValue)")])
            log?(3, "Job \(job.id) failed: \(e.message)", job.id)
        }
    }

    /// A plugin's `id version` as a card's plugin record (the version is what follows the last space).
    static func cardPlugin(_ record: String) -> ModelCard.Plugin {
        guard let space = record.lastIndex(of: " ") else { return ModelCard.Plugin(id: record, version: "") }
        return ModelCard.Plugin(id: String(record[..<space]), version: String(record[record.index(after: space)...]))
    }

    // MARK: Records

    /// Removes `.<name>.tmp-*` files that an `AtomicFile.write` interrupted by a crash left in `dir`.
    func removeAtomicWriteLeftovers(in dir: URL) {
        for f in (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? [] where f.hasPrefix(".") && f.contains(".tmp-") {
            try? FileManager.default.removeItem(at: dir.appendingPathComponent(f))
        }
    }

    struct JobRecord: Codable {
        var operation: String, uid: UInt32, state: String, epoch: Int, totalEpochs: Int, progress: Double
        var metrics: [String: Double], startTime: UInt64, message: String, model: String?
    }

    private func record(_ job: Job) {
        guard job.operation != "analyse-batch" else { return }
        let s = job.snapshot
        var model: String? = nil
        if case .model(let m)? = s.result["model"] { model = m }
        let rec = JobRecord(operation: job.operation, uid: job.startedByUID, state: s.state.rawValue, epoch: s.epoch,
                            totalEpochs: s.totalEpochs, progress: s.progress, metrics: s.metrics, startTime: s.startTime,
                            message: s.message, model: model)
        guard let data = try? JSONEncoder().encode(rec) else { return }
        try? AtomicFile.write(data, to: runDirectory(job.id).appendingPathComponent("job.json"))
    }
}
