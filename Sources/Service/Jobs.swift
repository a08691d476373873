// Jobs: long operations (train, finetune, batch analyse) as objects with progress and cancellation.
import Affinity
import Foundation
import Imaging
import NN
import Scans
import SystemIO
import Tensor

/// A value in a job's result (transport-free; the daemon maps `model` to an object path and
/// `file` to a sealed memfd).
public enum JobValue: Sendable, Equatable {
    case string(String)
    case double(Double)
    case uint(UInt64)
    case int(Int64)
    case bool(Bool)
    case model(String)
    case list([[String: JobValue]])
    case doubles([Double])
    case strings([String])
    case dictionary([String: JobValue])
    /// A list whose elements are not all dictionaries (nor all numbers or strings).
    case values([JobValue])
    /// A file's bytes handed to the client (a label volume).
    case file(name: String, bytes: [UInt8])
}

/// One long operation. Properties change on the job's thread; readers take a snapshot.
// @unchecked Sendable: its snapshot, flags and observers are read and changed under `lock`; id, operation and uid never change.
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
        /// How many times the job was resumed (after a daemon restart, or by `JobManager.resume`).
        public var resumed: Int
    }

    public let id: Int
    /// "train", "finetune" or "analyse-batch".
    public let operation: String
    public let startedByUID: UInt32
    private let lock = NSLock()
    private var snap: Snapshot
    private var cancelFlag = false
    private var cancelledByRequest = false
    private var stopFlag = false
    private var observers: [(Snapshot, _ finished: Bool) -> Void] = []

    init(id: Int, operation: String, startedByUID: UInt32, totalEpochs: Int) {
        self.id = id
        self.operation = operation
        self.startedByUID = startedByUID
        snap = Snapshot(state: .queued, progress: 0, epoch: 0, totalEpochs: totalEpochs, metrics: [:], startTime: 0,
                        expectedEndTime: 0, cancelable: true, result: [:], message: "", resumed: 0)
    }

    public var snapshot: Snapshot { lock.withLock { snap } }

    /// Changes the snapshot (the caller holds `lock`) into new storage rather than in place.
    /// Readers copy `snapshot` under the lock and read its dictionaries after they let go of it; a
    /// change in place (the dictionaries' storage is unique again once a reader dropped its copy) is
    /// correct, but ThreadSanitizer cannot see the Swift runtime's reference counting that makes it
    /// so, and reports a race (issue 16; a 20-line program of that pattern reproduces the report
    /// every time, and this way silences it). A job changes a few times a second: the copy is free.
    private func change(_ body: (inout Snapshot) -> Void) {
        var next = snap
        body(&next)
        snap = next
    }

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
            default: cancelFlag = true; cancelledByRequest = true; return true
            }
        }
    }

    /// Like `cancel`, for a service shutdown: a training job writes a checkpoint where it stands
    /// and is suspended (`suspend`), to resume at the next start; other jobs end as cancelled.
    func stopForShutdown() { lock.withLock { stopFlag = true; cancelFlag = true } }

    private var suspendedFlag = false
    /// Marks a job that a shutdown stopped without ending it (a training job, after its checkpoint):
    /// its state stays queued or running, here and in its record, and it resumes at the next start.
    func suspend() { lock.withLock { suspendedFlag = true } }
    /// Whether the job ended or a shutdown suspended it.
    var isSettled: Bool {
        lock.withLock {
            switch snap.state { case .completed, .failed, .cancelled: return true; default: return suspendedFlag }
        }
    }

    /// Makes the job queued again to resume it: `resumed` counts one more, the message and error of
    /// its end are cleared, the result says where it resumes (`resumed_from_iteration`).
    /// - Parameter onlyIfEnded: refuse (false) unless the job is failed or cancelled, checked and
    ///   changed under one lock, so that two Resume calls cannot both queue it.
    /// - Returns: whether the job was reopened.
    func reopen(resumedFrom iteration: Int, onlyIfEnded: Bool) -> Bool {
        let changed = lock.withLock { () -> (Snapshot, [(Snapshot, Bool) -> Void])? in
            if onlyIfEnded && snap.state != .failed && snap.state != .cancelled { return nil }
            change { snap in
                snap.state = .queued
                snap.cancelable = true
                snap.message = ""
                snap.expectedEndTime = 0
                snap.resumed += 1
                snap.result["error"] = nil
                snap.result["resumed_from_iteration"] = .uint(UInt64(max(0, iteration)))
            }
            cancelFlag = false; cancelledByRequest = false; stopFlag = false; suspendedFlag = false
            return (snap, observers)
        }
        guard let (s, obs) = changed else { return false }
        for o in obs { o(s, false) }
        return true
    }

    var isCancelRequested: Bool { lock.withLock { cancelFlag } }
    /// Whether `cancel` was called (a shutdown's stop is not a cancel: a training job resumes after it).
    var isCancelledByRequest: Bool { lock.withLock { cancelledByRequest } }
    var isShutdownRequested: Bool { lock.withLock { stopFlag } }
    public var isFinished: Bool {
        switch snapshot.state { case .completed, .failed, .cancelled: return true; default: return false }
    }

    func update(_ body: (inout Snapshot) -> Void) {
        let (s, obs) = lock.withLock { () -> (Snapshot, [(Snapshot, Bool) -> Void]) in
            change(body)
            return (snap, observers)
        }
        for o in obs { o(s, false) }
    }

    func finish(_ state: State, message: String, result: [String: JobValue] = [:]) {
        let (s, obs) = lock.withLock { () -> (Snapshot, [(Snapshot, Bool) -> Void]) in
            change { snap in
                snap.state = state
                snap.message = message
                snap.cancelable = false
                snap.expectedEndTime = unixMicroseconds()
                if state == .completed { snap.progress = 1 }
                snap.result.merge(result) { _, b in b }
            }
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
    /// A checkpoint every this many seconds of training as well as at each epoch's end (0: none
    /// by time; nil: `JobManager.defaultCheckpointInterval`).
    public var checkpointInterval: Double?
    /// A checkpoint every this many iterations as well (0: none by count; nil:
    /// `JobManager.defaultCheckpointIterations`).
    public var checkpointIterations: Int?
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

/// A job's options as its record (`runs/<job>/job.json`) keeps them, to resume it after a restart.
/// Keys that are absent take their defaults, so a record stays readable when options are added.
extension TrainingSpec: Codable {
    enum CodingKeys: String, CodingKey {
        case dataset, split, epochs, imageSize, iterationsPerEpoch, seed, affinities, learningRate, headLearningRate
        case weightDecay, head, headConfig, copyRule, segmentationStep, name, baseModelID, dataFormat, segmentationFormat
        case dataOptions, checkpointInterval, checkpointIterations
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(dataset: URL(fileURLWithPath: try c.decode(String.self, forKey: .dataset)))
        split = try c.decodeIfPresent(String.self, forKey: .split) ?? split
        epochs = try c.decodeIfPresent(Int.self, forKey: .epochs) ?? epochs
        imageSize = try c.decodeIfPresent(Int.self, forKey: .imageSize) ?? imageSize
        iterationsPerEpoch = try c.decodeIfPresent(Int.self, forKey: .iterationsPerEpoch)
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? seed
        affinities = try c.decodeIfPresent(Int.self, forKey: .affinities) ?? affinities
        learningRate = try c.decodeIfPresent(Float.self, forKey: .learningRate) ?? learningRate
        headLearningRate = try c.decodeIfPresent(Float.self, forKey: .headLearningRate)
        weightDecay = try c.decodeIfPresent(Float.self, forKey: .weightDecay) ?? weightDecay
        head = try c.decodeIfPresent(String.self, forKey: .head) ?? head
        headConfig = try c.decodeIfPresent(String.self, forKey: .headConfig) ?? headConfig
        copyRule = try c.decodeIfPresent(CopyRule.self, forKey: .copyRule) ?? copyRule
        segmentationStep = try c.decodeIfPresent(Bool.self, forKey: .segmentationStep) ?? segmentationStep
        name = try c.decodeIfPresent(String.self, forKey: .name)
        baseModelID = try c.decodeIfPresent(String.self, forKey: .baseModelID)
        dataFormat = try c.decodeIfPresent(String.self, forKey: .dataFormat)
        segmentationFormat = try c.decodeIfPresent(String.self, forKey: .segmentationFormat)
        dataOptions = try c.decodeIfPresent(String.self, forKey: .dataOptions)
        checkpointInterval = try c.decodeIfPresent(Double.self, forKey: .checkpointInterval)
        checkpointIterations = try c.decodeIfPresent(Int.self, forKey: .checkpointIterations)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(dataset.path, forKey: .dataset)
        try c.encode(split, forKey: .split)
        try c.encode(epochs, forKey: .epochs)
        try c.encode(imageSize, forKey: .imageSize)
        try c.encodeIfPresent(iterationsPerEpoch, forKey: .iterationsPerEpoch)
        try c.encode(seed, forKey: .seed)
        try c.encode(affinities, forKey: .affinities)
        try c.encode(learningRate, forKey: .learningRate)
        try c.encodeIfPresent(headLearningRate, forKey: .headLearningRate)
        try c.encode(weightDecay, forKey: .weightDecay)
        try c.encode(head, forKey: .head)
        try c.encode(headConfig, forKey: .headConfig)
        try c.encode(copyRule, forKey: .copyRule)
        try c.encode(segmentationStep, forKey: .segmentationStep)
        try c.encodeIfPresent(name, forKey: .name)
        try c.encodeIfPresent(baseModelID, forKey: .baseModelID)
        try c.encodeIfPresent(dataFormat, forKey: .dataFormat)
        try c.encodeIfPresent(segmentationFormat, forKey: .segmentationFormat)
        try c.encodeIfPresent(dataOptions, forKey: .dataOptions)
        try c.encodeIfPresent(checkpointInterval, forKey: .checkpointInterval)
        try c.encodeIfPresent(checkpointIterations, forKey: .checkpointIterations)
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
/// `job.json` (its state and options), `checkpoint.safetensors` (written atomically at every epoch's
/// end, every checkpoint interval, on cancel and on shutdown: model, Adam's moments, trainer
/// position and generator states) and `metrics.jsonl` (one line per epoch). At the end the model
/// is published to the store. A training job the daemon stopped or lost (SIGTERM, a crash) resumes
/// from its last checkpoint: at the next start (`autoResume`, `resumeInterruptedJobs`) or on
/// request (`resume`), and ends as the same run uninterrupted would have.
// @unchecked Sendable: the jobs, the queue and the runs are under `cond`; the callbacks are set once by the owner before any job starts.
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
    /// What a training job needs to run again, by job id (under `cond`).
    private var runs: [Int: TrainingRun] = [:]
    /// Interrupted training jobs found at start, for `resumeInterruptedJobs` (under `cond`).
    private var interruptedAtStart: [Int] = []
    /// Whether training jobs found interrupted at start are resumed (`resumeInterruptedJobs`) or
    /// reported as failed (and left for `resume`).
    public let autoResume: Bool
    /// A training job's checkpoint interval in seconds when its spec sets none (0: by time never).
    public var defaultCheckpointInterval: Double = 900
    /// A training job's checkpoint every-N-iterations when its spec sets none (0: never by count).
    public var defaultCheckpointIterations = 0
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

    /// Reads the jobs of earlier runs from `runs/*/job.json`. A training job recorded as queued or
    /// running was interrupted (the daemon stopped or crashed while it ran): with `autoResume` it
    /// stays so until `resumeInterruptedJobs()` queues it again; without, or when its record lacks
    /// its options (an earlier affinityd's), it is reported as failed, its checkpoint kept (and
    /// `resume` continues it).
    public init(store: ModelStore, engine: AnalyseEngine, autoResume: Bool = false) {
        self.store = store
        self.engine = engine
        self.autoResume = autoResume
        try? FileManager.default.createDirectory(at: runsDirectory, withIntermediateDirectories: true)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: runsDirectory.path)) ?? []
        for name in names {
            guard let n = Int(name), n > 0 else { continue }
            nextID = max(nextID, n + 1)
            removeAtomicWriteLeftovers(in: runsDirectory.appendingPathComponent(name))
            guard let data = try? Data(contentsOf: runsDirectory.appendingPathComponent(name).appendingPathComponent("job.json")),
                  var rec = try? JSONDecoder().decode(JobRecord.self, from: data) else { continue }
            let job = Job(id: n, operation: rec.operation, startedByUID: rec.uid, totalEpochs: rec.totalEpochs)
            let state = Job.State(rawValue: rec.state) ?? .failed
            let training = Self.isTraining(rec.operation)
            if training && (state == .queued || state == .running) {
                // The checkpoint's own header says where it stands (the record may lag by one
                // checkpoint: a kill between the two writes); the record alone says that one was written.
                rec.checkpointIteration = Self.checkpointIteration(n, recorded: rec.checkpointIteration, in: runsDirectory)
            }
            job.update { s in
                s.epoch = rec.epoch; s.progress = rec.progress; s.metrics = rec.metrics; s.startTime = rec.startTime
                s.state = state
                s.resumed = rec.resumed ?? 0
                if training { s.result["run_directory"] = .string(runDirectory(n).path) }
                if let k = rec.checkpointIteration { s.result["checkpoint_iteration"] = .uint(UInt64(k)) }
                if let k = rec.resumedFromIteration { s.result["resumed_from_iteration"] = .uint(UInt64(k)) }
            }
            if training { runs[n] = TrainingRun(spec: rec.spec, checkpointIteration: rec.checkpointIteration) }
            var result: [String: JobValue] = [:]
            if let m = rec.model { result["model"] = .model(m) }
            if let e = rec.error { result["error"] = .string(e) }
            if state == .queued || state == .running {
                if autoResume && training && rec.spec != nil {
                    interruptedAtStart.append(n)  // as recorded until resumeInterruptedJobs() queues it
                } else {
                    job.finish(.failed, message: interruptedMessage(n, rec),
                               result: ["error": .string("org.lesionaffinity.Affinity1.Error.\(ServiceError.Kind.failed.rawValue)")])
                    record(job)  // job.json says failed too, not still running
                }
            } else {
                job.finish(state, message: rec.message, result: result)
            }
            if training { job.observe { [weak self] _, finished in if finished { self?.record(job) } } }
            jobs[n] = job
            order.append(n)
        }
        order.sort()
        interruptedAtStart.sort()
        let t = Thread { [weak self] in self?.trainingLoop() }
        t.name = "training"
        t.stackSize = 16 << 20
        t.start()
    }

    /// Why an interrupted training job that is not resumed at start failed (its record's message).
    private func interruptedMessage(_ n: Int, _ rec: JobRecord) -> String {
        let dir = runDirectory(n).path
        guard rec.spec != nil else {
            return "The daemon stopped while this job ran; its last checkpoint is kept in \(dir)/ (recorded by an earlier affinityd without its options: it cannot be resumed)."
        }
        if let k = rec.checkpointIteration {
            return "The daemon stopped while this job ran; its last checkpoint (iteration \(k)) is kept in \(dir)/, and Resume continues from it."
        }
        return "The daemon stopped while this job ran, before its first checkpoint; Resume starts it again."
    }

    /// Queues the training jobs that `init` found interrupted (with `autoResume`), in id order, to
    /// continue from their last checkpoints; each keeps its id, counts one more `resumed`, and is
    /// logged. Call it once, after setting the hooks (`log`, `dataReader`, `onModelPublished`) and
    /// before taking new jobs. Nothing is read here: a job whose checkpoint, data set or base model
    /// is gone fails when its turn comes, with the reason, and the rest go on.
    public func resumeInterruptedJobs() {
        let ids = cond.withLock { () -> [Int] in
            defer { interruptedAtStart = [] }
            return interruptedAtStart
        }
        for id in ids {
            guard let job = job(id), let run = cond.withLock({ runs[id] }), let spec = run.spec else { continue }
            _ = job.reopen(resumedFrom: run.checkpointIteration ?? 0, onlyIfEnded: false)
            record(job)
            let from = run.checkpointIteration.map { "from its checkpoint at iteration \($0)" } ?? "from the start (it had written no checkpoint)"
            log?(5, "Job \(id) (\(job.operation)) was interrupted when the daemon stopped; resuming it \(from), resume \(job.snapshot.resumed).", id)
            enqueue(job, spec, nil)
        }
    }

    /// Job.Resume: queues a failed or cancelled training job again, to continue from its last
    /// checkpoint (from the start when it wrote none), keeping its id. Everything is checked first:
    /// on an error the job stays as it was (and its files stay: a later call may succeed).
    /// - Throws: `InvalidArgument` (not a training job); `Failed` (completed, queued or running,
    ///   recorded without its options, its checkpoint missing or damaged, the service stopping);
    ///   `ModelNotFound` (a fine-tune's base model is gone); `DatasetInvalid` (the data set is gone
    ///   or broken).
    public func resume(_ job: Job) throws {
        guard Self.isTraining(job.operation) else {
            throw ServiceError.invalidArgument("Job \(job.id) is an \(job.operation) job; only training jobs (train, finetune) can be resumed")
        }
        switch job.snapshot.state {
        case .completed: throw ServiceError.failed("Job \(job.id) has completed; there is nothing to resume")
        case .queued, .running: throw ServiceError.failed("Job \(job.id) is \(job.snapshot.state.rawValue); only a failed or cancelled job can be resumed")
        case .failed, .cancelled: break
        }
        let (run, isStopping) = cond.withLock { (runs[job.id], stopping) }
        guard !isStopping else { throw ServiceError.failed("The service is stopping") }
        guard let spec = run?.spec else {
            throw ServiceError.failed("Job \(job.id) was recorded by an earlier affinityd without its training options; it cannot be resumed (start a new job with Train)")
        }
        if let base = spec.baseModelID, store.card(base) == nil {
            throw ServiceError.modelNotFound("The base model '\(base)' of job \(job.id) is no longer in the store")
        }
        let data = try jobData(spec)
        let from = try checkedCheckpoint(job.id, recorded: run?.checkpointIteration)
        guard job.reopen(resumedFrom: from ?? 0, onlyIfEnded: true) else {
            throw ServiceError.failed("Job \(job.id) is \(job.snapshot.state.rawValue); only a failed or cancelled job can be resumed")
        }
        record(job)
        log?(5, "Job \(job.id) (\(job.operation)) resumed on request " + (from.map { "from its checkpoint at iteration \($0)" } ?? "from the start (it has no checkpoint)")
             + ", resume \(job.snapshot.resumed).", job.id)
        enqueue(job, spec, spec.usesReaders ? data : nil)
    }

    /// Appends a training job to the queue; while the service stops, suspends it instead (it stays
    /// queued in its record and resumes at the next start).
    private func enqueue(_ job: Job, _ spec: TrainingSpec, _ data: JobData?) {
        let queued = cond.withLock { () -> Bool in
            guard !stopping else { return false }
            trainingQueue.append((job, spec, data))
            cond.signal()
            return true
        }
        if !queued { job.suspend() }
    }

    /// The iteration a training job resumes at: its checkpoint's, read and checked (checksum,
    /// trainer state); nil when it has none and none was recorded (it starts from the beginning).
    /// - Throws: `Failed` naming the file when a recorded checkpoint is missing or one is damaged.
    private func checkedCheckpoint(_ id: Int, recorded: Int?) throws -> Int? {
        let url = checkpointURL(id)
        guard FileManager.default.fileExists(atPath: url.path) else {
            if let k = recorded {
                throw ServiceError.failed("The checkpoint \(url.path) (iteration \(k)) is missing; the job cannot continue where it stopped")
            }
            return nil
        }
        do { return try OneShotTrainer.checkpointState(url).totalIterations } catch {
            throw ServiceError.failed("The checkpoint \(url.path) cannot be resumed from: \(Self.checkpointProblem(error))")
        }
    }

    /// A checkpoint error as a phrase for a sentence.
    static func checkpointProblem(_ error: Error) -> String {
        switch error {
        case TrainingError.badCheckpoint(let why): return why
        case let e as CheckpointError: return e.description
        default: return String(describing: error)
        }
    }

    /// The iteration of job `n`'s checkpoint as its header says (read without the tensors), else
    /// `recorded` (the file is missing or unreadable: the resume reports it).
    static func checkpointIteration(_ n: Int, recorded: Int?, in runs: URL) -> Int? {
        let url = runs.appendingPathComponent(String(n)).appendingPathComponent("checkpoint.safetensors")
        guard FileManager.default.fileExists(atPath: url.path), let st = try? OneShotTrainer.checkpointHeaderState(url) else { return recorded }
        return max(st.totalIterations, recorded ?? 0)
    }

    /// Whether jobs of this operation are training jobs (recorded, resumable).
    static func isTraining(_ operation: String) -> Bool { operation == "train" || operation == "finetune" }

    func checkpointURL(_ id: Int) -> URL { runDirectory(id).appendingPathComponent("checkpoint.safetensors") }

    /// Every job, in id order.
    public var allJobs: [Job] { cond.withLock { order.compactMap { jobs[$0] } } }
    public func job(_ id: Int) -> Job? { cond.withLock { jobs[id] } }
    /// Whether a job is queued or running.
    public var hasActiveJobs: Bool { allJobs.contains { !$0.isFinished } }

    /// The most jobs one user may have queued or running at once (0: no limit), so that one caller
    /// cannot fill the service with jobs (batch and scan jobs each run a thread): past it a new job
    /// is refused with `QueueFull`.
    public var maxActiveJobsPerUser = 8

    private func makeJob(_ operation: String, uid: UInt32, epochs: Int) throws -> Job {
        // Counted outside `cond` (a job's state has its own lock).
        if maxActiveJobsPerUser > 0 {
            let active = allJobs.filter { $0.startedByUID == uid && !$0.isFinished }.count
            if active >= maxActiveJobsPerUser {
                throw ServiceError(.queueFull, "You already have \(active) jobs queued or running; one user may have at most \(maxActiveJobsPerUser) at a time. Wait for one to finish or cancel one")
            }
        }
        return try cond.withLock {
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
        var spec = spec
        if let i = spec.checkpointInterval, !(i >= 0 && i <= 7 * 86400) {
            throw ServiceError.invalidArgument("checkpoint_interval must be between 0 and 604800 seconds, got \(i)")
        }
        if let n = spec.checkpointIterations, n < 0 { throw ServiceError.invalidArgument("checkpoint_iterations must not be negative") }
        // The defaults as they are now: the record keeps them for a resume after a restart.
        spec.checkpointInterval = spec.checkpointInterval ?? defaultCheckpointInterval
        spec.checkpointIterations = spec.checkpointIterations ?? defaultCheckpointIterations
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
        cond.withLock { runs[job.id] = TrainingRun(spec: spec) }
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
        enqueue(job, spec, spec.usesReaders ? data : nil)
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
    public func startBatch(_ sources: [ImageSource], request: AnalyseRequest, uid: UInt32, keepAlive: (any Sendable)? = nil) throws -> Job {
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

    /// What an AnalyseScan job reads and writes. @unchecked Sendable: it is handed to the job's
    /// thread once (`startScan`) and used there only; the sink is not touched anywhere else.
    public struct ScanJob: @unchecked Sendable {
        public var series: AssembledSeries
        public var setAside: [SetAside]
        public var reader: ScanSliceReader
        public var request: ScanRequest
        /// Receives the label volume (nil: none is made).
        public var sink: LabelVolumeSink?
        /// Called once the analysis has succeeded: the label volume's name and bytes for the result.
        public var labelVolume: (@Sendable () throws -> (name: String, bytes: [UInt8]))?
        /// Gives the result the names the client knows (descriptor paths → its file names).
        public var rename: (@Sendable (ScanResult) -> ScanResult)?
        /// Kept until the job ends (the client's descriptors); `cleanup` runs then.
        public var keepAlive: (any Sendable)?
        public var cleanup: (@Sendable () -> Void)?
        public init(series: AssembledSeries, setAside: [SetAside], reader: ScanSliceReader, request: ScanRequest) {
            self.series = series
            self.setAside = setAside
            self.reader = reader
            self.request = request
        }
    }

    /// Queues a whole-scan analysis (operation "analyse-scan"): progress per slice, cancellable
    /// between slices; the result holds the `ScanResult`'s keys (as its JSON has them) and, with a
    /// sink, `label_volume` (the file).
    /// - Throws: `ModelNotReady` without a model; `Failed` while the service stops.
    public func startScan(_ scan: ScanJob, uid: UInt32) throws -> Job {
        guard scan.request.modelID != nil || store.defaultModelID != nil else {
            throw ServiceError(.modelNotReady, "No model is installed; import one with ImportModel or train one")
        }
        let job = try makeJob("analyse-scan", uid: uid, epochs: 1)
        onJobCreated?(job)
        let t = Thread { [weak self] in
            defer { scan.cleanup?() }
            guard let self else { return }
            withExtendedLifetime(scan.keepAlive) { self.runScan(job, scan) }
        }
        t.name = "scan-\(job.id)"
        t.start()
        return job
    }

    private func runScan(_ job: Job, _ scan: ScanJob) {
        let start = unixMicroseconds()
        let total = scan.series.count
        job.update { $0.state = .running; $0.startTime = start; $0.metrics = ["slices_done": 0, "slice_count": Double(total)] }
        do {
            var result = try ScanAnalyser(engine: engine).analyse(
                scan.series, setAside: scan.setAside, reader: scan.reader, request: scan.request, sink: scan.sink,
                progress: { done, count in
                    let fraction = Double(done) / Double(max(1, count))
                    let elapsed = Double(unixMicroseconds() - start)
                    job.update { s in
                        s.progress = fraction
                        s.metrics = ["slices_done": Double(done), "slice_count": Double(count)]
                        s.expectedEndTime = fraction > 0 ? start + UInt64(elapsed / fraction) : 0
                    }
                },
                isCancelled: { job.isCancelRequested })
            if let rename = scan.rename { result = rename(result) }
            var values = try JobValueEncoder().encodeDictionary(result)
            values["model"] = .model(result.modelID)
            if let label = scan.labelVolume {
                let (name, bytes) = try label()
                values["label_volume"] = .file(name: name, bytes: bytes)
            }
            let v = result.verdict
            job.finish(.completed, message: "Analysed \(result.analysedSlices) of \(result.sliceCount) slices: \(v.className) (\(v.rule)), \(String(format: "%.1f", result.opacityPercent))% opacity.",
                       result: values)
        } catch {
            let e = ServiceError(error)
            job.finish(e.kind == .cancelled ? .cancelled : .failed, message: e.message,
                       result: ["error": .string("org.lesionaffinity.Affinity1.Error.\(e.kind.rawValue)")])
        }
    }

    /// Cancels every job and waits until they end, at most `timeout` seconds; training jobs instead
    /// write a checkpoint where they stand and are suspended (queued and running in their records),
    /// to resume at the next start.
    public func shutdown(timeout: TimeInterval = 60) {
        let all = cond.withLock { () -> [Job] in
            stopping = true
            cond.broadcast()
            return order.compactMap { jobs[$0] }
        }
        for j in all where !j.isFinished { j.stopForShutdown() }
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline && all.contains(where: { !$0.isSettled }) { usleep(20_000) }
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
            let serviceStopping = stopping
            cond.unlock()
            if (serviceStopping || job.isShutdownRequested) && !job.isCancelledByRequest {
                job.suspend()  // queued in its record: it starts at the next start
                continue
            }
            if job.isCancelRequested {
                job.finish(.cancelled, message: "Cancelled before it started.")
                continue
            }
            runTraining(job, spec, data)
        }
    }

    /// Runs a training job on `prepared` (the data read when the job was queued) or, without it,
    /// on its data set opened again; from its checkpoint when its run directory has one (a resumed
    /// job). Checkpoints are written at each epoch's end, every `checkpointInterval` seconds and
    /// every `checkpointIterations` iterations, and where it stands when it is cancelled or the
    /// service stops (then it is suspended, to resume at the next start).
    private func runTraining(_ job: Job, _ spec: TrainingSpec, _ prepared: JobData?) {
        let sessionStart = unixMicroseconds()
        let dir = runDirectory(job.id)
        let checkpoint = checkpointURL(job.id)
        let recorded = cond.withLock { runs[job.id]?.checkpointIteration }
        job.update { s in
            s.state = .running
            if s.startTime == 0 { s.startTime = sessionStart }  // a resumed job keeps its first start
        }
        record(job)
        log?(6, "Job \(job.id) (\(job.operation)) \(job.snapshot.resumed > 0 ? "continues" : "started") on \(spec.dataset.path).", job.id)
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
            // A resumed job continues exactly where its checkpoint was taken: weights, Adam's
            // moments, the epoch's order, the position in it and the generators' states.
            if FileManager.default.fileExists(atPath: checkpoint.path) {
                do { try trainer.resume(from: checkpoint) } catch {
                    throw ServiceError.failed("The checkpoint \(checkpoint.path) cannot be resumed from: \(Self.checkpointProblem(error))")
                }
                let k = trainer.state.totalIterations
                job.update { s in
                    s.result["resumed_from_iteration"] = .uint(UInt64(k))
                    s.epoch = trainer.state.epoch
                    s.progress = min(1, Double(k) / Double(max(total, 1)))
                    s.metrics["iteration"] = Double(k)
                }
                cond.withLock { runs[job.id]?.checkpointIteration = k }
                log?(5, "Job \(job.id) resumed from iteration \(k) of \(total) (epoch \(min(trainer.state.epoch + 1, spec.epochs)) of \(spec.epochs)).", job.id)
            } else if let k = recorded {
                throw ServiceError.failed("The checkpoint \(checkpoint.path) (iteration \(k)) is missing; the job cannot continue where it stopped")
            }
            let firstIteration = trainer.state.totalIterations
            var metricsLines = Self.metricsLines(existing: dir.appendingPathComponent("metrics.jsonl"), state: trainer.state)
            let interval = spec.checkpointInterval ?? defaultCheckpointInterval
            let every = spec.checkpointIterations ?? defaultCheckpointIterations
            var lastCheckpointTime = Date()
            var checkpointedAt = FileManager.default.fileExists(atPath: checkpoint.path) ? firstIteration : -1
            func writeCheckpoint() throws {
                try trainer.saveCheckpoint(to: checkpoint, extraMetadata: ["job": String(job.id)])
                let k = trainer.state.totalIterations
                checkpointedAt = k
                lastCheckpointTime = Date()
                cond.withLock { runs[job.id]?.checkpointIteration = k }
                job.update { $0.result["checkpoint_iteration"] = .uint(UInt64(k)) }
                record(job)  // before the progress is reported: the record knows the checkpoint first
            }
            while !trainer.isFinished {
                if job.isCancelRequested {
                    let k = trainer.state.totalIterations
                    if k != checkpointedAt { try writeCheckpoint() }
                    if job.isShutdownRequested && !job.isCancelledByRequest {
                        record(job)  // still running in job.json: it resumes at the next start
                        // The log line before `suspend`: once the job is settled the service may
                        // exit, and a line logged after that would be lost.
                        log?(5, "Job \(job.id) stopped by the service shutdown at iteration \(k) of \(total); its checkpoint is written and it resumes at the next start.", job.id)
                        job.suspend()
                    } else {
                        log?(5, "Job \(job.id) cancelled at iteration \(k) of \(total).", job.id)
                        job.finish(.cancelled, message: "Cancelled at iteration \(k) of \(total); its checkpoint is kept and Resume continues from it.")
                    }
                    return
                }
                let r = try trainer.step()
                let done = trainer.state.totalIterations
                let epochEnded = trainer.state.iteration == 0
                // The checkpoint first: once Metrics says iteration k, a checkpoint of k exists (when
                // one was due), and a kill loses nothing that was reported.
                if epochEnded || (every > 0 && done % every == 0) || (interval > 0 && Date().timeIntervalSince(lastCheckpointTime) >= interval) {
                    try writeCheckpoint()
                }
                let now = unixMicroseconds()
                let fraction = Double(done) / Double(max(total, 1))
                let rate = Double(now - sessionStart) / Double(max(done - firstIteration, 1))  // µs per iteration, this session
                job.update { s in
                    s.progress = min(1, fraction)
                    s.epoch = trainer.state.epoch
                    s.metrics["loss_classification"] = r.classification
                    if let seg = r.segmentation { s.metrics["loss_segmentation"] = seg.total }
                    s.metrics["iteration"] = Double(done)
                    s.metrics["copies"] = Double(trainer.state.copies)
                    s.expectedEndTime = now + UInt64(rate * Double(max(total - done, 0)))
                }
                if epochEnded {
                    let e = trainer.state.epoch - 1
                    metricsLines.append(Self.metricsLine(epoch: e, trainer.state))
                    try CheckpointError.mappingFileErrors {
                        try AtomicFile.write(Data(metricsLines.joined().utf8), to: dir.appendingPathComponent("metrics.jsonl"))
                    }
                    job.update { s in
                        s.metrics["epoch_loss_total"] = trainer.state.epochTotals[e]
                        s.metrics["epoch_loss_segmentation"] = trainer.state.epochSeg[e]
                        s.metrics["epoch_loss_classification"] = trainer.state.epochCls[e]
                    }
                    record(job)
                    log?(6, "Job \(job.id): epoch \(e + 1)/\(spec.epochs), L_total \(trainer.state.epochTotals[e]).", job.id)
                } else if checkpointedAt == done {
                    log?(7, "Job \(job.id): checkpoint at iteration \(done) of \(total).", job.id)
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

    /// A training job's `job.json`. The fields after `model` were added for resuming (issue 23): an
    /// older record decodes without them (and its job cannot be resumed: its options are unknown).
    struct JobRecord: Codable {
        var operation: String, uid: UInt32, state: String, epoch: Int, totalEpochs: Int, progress: Double
        var metrics: [String: Double], startTime: UInt64, message: String, model: String?
        /// The job's options (checkpoint defaults resolved), to run it again.
        var spec: TrainingSpec? = nil
        /// How many times it was resumed.
        var resumed: Int? = nil
        /// The run's total iterations at its last checkpoint (nil: none written).
        var checkpointIteration: Int? = nil
        /// Where its latest resume continued from.
        var resumedFromIteration: Int? = nil
        /// The error name of a failed job.
        var error: String? = nil

        enum CodingKeys: String, CodingKey {
            case operation, uid, state, epoch, totalEpochs, progress, metrics, startTime, message, model
            case spec, resumed, checkpointIteration, resumedFromIteration, error
        }

        init(operation: String, uid: UInt32, state: String, epoch: Int, totalEpochs: Int, progress: Double,
             metrics: [String: Double], startTime: UInt64, message: String, model: String?) {
            self.operation = operation; self.uid = uid; self.state = state; self.epoch = epoch; self.totalEpochs = totalEpochs
            self.progress = progress; self.metrics = metrics; self.startTime = startTime; self.message = message; self.model = model
        }

        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            operation = try c.decode(String.self, forKey: .operation)
            uid = try c.decode(UInt32.self, forKey: .uid)
            state = try c.decode(String.self, forKey: .state)
            epoch = try c.decode(Int.self, forKey: .epoch)
            totalEpochs = try c.decode(Int.self, forKey: .totalEpochs)
            progress = try c.decode(Double.self, forKey: .progress)
            metrics = try c.decode([String: Double].self, forKey: .metrics)
            startTime = try c.decode(UInt64.self, forKey: .startTime)
            message = try c.decode(String.self, forKey: .message)
            model = try c.decodeIfPresent(String.self, forKey: .model)
            // Options that do not decode leave the job listed but not resumable (never unlisted).
            spec = try? c.decodeIfPresent(TrainingSpec.self, forKey: .spec)
            resumed = try? c.decodeIfPresent(Int.self, forKey: .resumed)
            checkpointIteration = try? c.decodeIfPresent(Int.self, forKey: .checkpointIteration)
            resumedFromIteration = try? c.decodeIfPresent(Int.self, forKey: .resumedFromIteration)
            error = try? c.decodeIfPresent(String.self, forKey: .error)
        }
    }

    /// What a training job needs to run again besides its `Job`.
    struct TrainingRun {
        var spec: TrainingSpec?
        /// The run's total iterations at its last checkpoint (nil: none written yet).
        var checkpointIteration: Int? = nil
    }

    /// Serialises the writes of `job.json` (each writes the snapshot taken under it: the last write
    /// is the newest state).
    private let recordLock = NSLock()

    private func record(_ job: Job) {
        guard job.operation != "analyse-batch" && job.operation != "analyse-scan" else { return }
        let run = cond.withLock { runs[job.id] }
        recordLock.withLock {
            let s = job.snapshot
            var model: String? = nil
            if case .model(let m)? = s.result["model"] { model = m }
            var rec = JobRecord(operation: job.operation, uid: job.startedByUID, state: s.state.rawValue, epoch: s.epoch,
                                totalEpochs: s.totalEpochs, progress: s.progress, metrics: s.metrics, startTime: s.startTime,
                                message: s.message, model: model)
            rec.spec = run?.spec
            rec.resumed = s.resumed
            rec.checkpointIteration = run?.checkpointIteration
            if case .uint(let k)? = s.result["resumed_from_iteration"] { rec.resumedFromIteration = Int(k) }
            if case .string(let e)? = s.result["error"] { rec.error = e }
            guard let data = try? JSONEncoder().encode(rec) else { return }
            try? AtomicFile.write(data, to: runDirectory(job.id).appendingPathComponent("job.json"))
        }
    }

    /// One `metrics.jsonl` line: epoch `e`'s mean losses and the copies so far.
    static func metricsLine(epoch e: Int, _ state: TrainerState) -> String {
        "{\"epoch\": \(e + 1), \"loss_total\": \(state.epochTotals[e]), \"loss_segmentation\": \(state.epochSeg[e]), \"loss_classification\": \(state.epochCls[e]), \"copies\": \(state.copies)}\n"
    }

    /// The `metrics.jsonl` lines of the epochs a (resumed) trainer state has finished: the file's
    /// lines for them, and lines made from the state for any the file lacks (a kill between the
    /// checkpoint and the metrics write; their copies are the state's count).
    static func metricsLines(existing url: URL, state: TrainerState) -> [String] {
        let text = (try? String(contentsOf: url, encoding: .utf8)) ?? ""
        var lines = text.split(separator: "\n").map { String($0) + "\n" }.prefix(state.epoch).map { $0 }
        while lines.count < state.epoch { lines.append(metricsLine(epoch: lines.count, state)) }
        return lines
    }
}
