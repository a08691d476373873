import Detection
import Foundation
import NN
import Tensor

/// A classification training sample: a normalised [1, 3, H, W] image and its class (0, 1, 2).
public struct ClassificationSample {
    /// The normalised image [1, 3, H, W].
    public var image: Tensor
    /// The class: 0 normal, 1 common pneumonia, 2 COVID-19.
    public var label: Int
    /// A sample of `image` labelled `label`.
    public init(image: Tensor, label: Int) { self.image = image; self.label = label }
}

/// A segmentation training sample: a normalised image and its lesion instances (none for a negative).
public struct SegmentationSample {
    /// The normalised image [1, 3, H, W].
    public var image: Tensor
    /// Its lesion boxes and masks (no boxes: the segmentation step skips the sample).
    public var targets: SegmentationTargets
    /// A sample of `image` with `targets`.
    public init(image: Tensor, targets: SegmentationTargets) { self.image = image; self.targets = targets }
}

/// Where the trainer reads its data from (a data set reader, phantoms in memory, …).
public protocol TrainingData {
    /// The number of classification samples (one epoch visits each once).
    var classificationCount: Int { get }
    /// The number of segmentation samples (each iteration draws one at random).
    var segmentationCount: Int { get }
    /// Classification sample `i`, 0 ≤ i < `classificationCount`.
    /// - Throws: when the sample cannot be read.
    func classificationSample(_ i: Int) throws -> ClassificationSample
    /// Segmentation sample `i`, 0 ≤ i < `segmentationCount`.
    /// - Throws: when the sample cannot be read.
    func segmentationSample(_ i: Int) throws -> SegmentationSample
}

/// When the segmentation branches are copied into the classification ones (MODEL.md §8.2 step 4).
public enum CopyRule: String, Codable, Sendable, CaseIterable {
    /// Paper Algorithm 1 / the LSTM-Attention loop: L_SEG(t) < L_SEG of the previous segmentation step (initially 1000).
    case previous
    /// The SSM loop: L_SEG(t) < the best L_SEG so far (initially 10000).
    case best
}

/// Everything the paper varies, and the seeds.
public struct TrainingConfig: Codable, Sendable, Equatable {
    /// C' of the built-in head; it must equal the model's (not checked for a plugin head).
    public var affinities = 128
    /// Epochs to train; an epoch is one pass over the classification samples.
    public var epochs = 100
    /// Adam's learning rate.
    public var learningRate: Float = 1e-5
    /// Adam's L2 weight decay.
    public var weightDecay: Float = 1e-3
    /// When the segmentation branches are copied into the `_s2` ones.
    public var copyRule: CopyRule = .previous
    /// Train `mask_predictor_s2.conv_reduce` with L_CLS (default: frozen at its initial values, Eq. 8).
    public var trainConvReduce = false
    /// Run the segmentation step (fine-tuning may switch it off).
    public var segmentationStep = true
    /// Run the classification step (segmentation pre-training switches it off: L_SEG only, the
    /// classification branches still receive their copies).
    public var classificationStep = true
    /// Learning rate of the head's parameters (Θ3, and `conv_reduce` when trained) in the
    /// classification step; nil: `learningRate`, as in the paper. The backbone's L_CLS update and
    /// the segmentation step keep `learningRate` (a fresh head next to pre-trained features learns
    /// at a higher rate than the features it reads).
    public var headLearningRate: Float? = nil
    /// Seeds the run's four generators (shuffle, segmentation pick, sampling, padding).
    public var seed: UInt64 = 1
    /// Slices whose gradients each process averages before a step (gradient accumulation; 1: one
    /// slice per step, as the paper). With several processes (`OneShotTrainer.replicas`) a step
    /// takes accumulate × processes slices (DataParallel.swift).
    public var accumulate = 1
    /// The paper's settings.
    public init() {}

    enum CodingKeys: String, CodingKey {
        case affinities, epochs, learningRate, weightDecay, copyRule, trainConvReduce, segmentationStep, classificationStep, headLearningRate, seed
        case accumulate
    }

    /// Decodes the configuration of any checkpoint version: keys added later take their defaults.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        affinities = try c.decode(Int.self, forKey: .affinities)
        epochs = try c.decode(Int.self, forKey: .epochs)
        learningRate = try c.decode(Float.self, forKey: .learningRate)
        weightDecay = try c.decode(Float.self, forKey: .weightDecay)
        copyRule = try c.decode(CopyRule.self, forKey: .copyRule)
        trainConvReduce = try c.decode(Bool.self, forKey: .trainConvReduce)
        segmentationStep = try c.decode(Bool.self, forKey: .segmentationStep)
        classificationStep = try c.decodeIfPresent(Bool.self, forKey: .classificationStep) ?? true
        headLearningRate = try c.decodeIfPresent(Float.self, forKey: .headLearningRate)
        seed = try c.decode(UInt64.self, forKey: .seed)
        accumulate = try c.decodeIfPresent(Int.self, forKey: .accumulate) ?? 1
    }
}

/// The state of a training run that a checkpoint must carry to resume exactly.
public struct TrainerState: Codable, Sendable, Equatable {
    /// Epochs finished.
    public var epoch = 0
    /// Iterations done in the current epoch.
    public var iteration = 0
    /// Iterations done over the whole run.
    public var totalIterations = 0
    /// The current epoch's order of classification samples.
    public var order: [Int] = []
    /// The state of the generator that shuffles the classification samples at each epoch's start.
    public var shuffleRNG: [UInt64]
    /// The state of the generator that draws each iteration's segmentation sample.
    public var segmentationPickRNG: [UInt64]
    /// The state of the generator of the segmentation step's anchor and RoI sampling.
    public var samplingRNG: [UInt64]
    /// The state of the generator of the classification step's RoI-batch padding.
    public var paddingRNG: [UInt64]
    /// The copy rule's reference L_SEG.
    public var copyReference: Double
    /// How many times the segmentation branches were copied.
    public var copies = 0
    /// Sums over the current epoch.
    public var epochSegSum = 0.0, epochSegCount = 0, epochClsSum = 0.0
    /// Mean L_Total, L_SEG and L_CLS of every finished epoch.
    public var epochTotals: [Double] = []
    /// Mean L_SEG of every finished epoch (over the iterations that ran a segmentation step).
    public var epochSeg: [Double] = []
    /// Mean L_CLS of every finished epoch.
    public var epochCls: [Double] = []
    /// The finished epoch with the lowest mean L_Total (the earliest on ties); nil before the first.
    public var bestEpoch: Int? = nil
}

/// The losses of one Algorithm 1 iteration.
public struct IterationResult: Sendable {
    /// The epoch and the iteration within it (both from 0).
    public var epoch: Int, iteration: Int
    /// nil when the drawn segmentation sample had no lesion (the step is skipped).
    public var segmentation: SegmentationLosses?
    /// L_CLS of the classification step (0 when that step is switched off).
    public var classification: Double
    /// Whether the segmentation step copied its branches into the classification ones.
    public var copied: Bool
    /// Classification slices of the step (accumulate × processes, fewer at an epoch's end).
    public var slices = 1
    /// L_Total = L_SEG + L_CLS (a step that did not run counts 0).
    public var total: Double { (segmentation?.total ?? 0) + classification }
}

/// Errors of training and checkpoints.
public enum TrainingError: Error, CustomStringConvertible, Equatable {
    /// The trainer cannot start: no classification samples, both steps off, the segmentation step on
    /// without segmentation samples, or a C' that differs from the model's.
    case emptyData(String)
    /// The file cannot be resumed from: no trainer state, another C', or invalid generator states.
    case badCheckpoint(String)
    /// A setting out of range (an accumulation below 1).
    case invalidSettings(String)
    /// The processes of a data-parallel run do not hold the same trainer state.
    case replicasDiverged(String)

    /// A one-line message naming the problem.
    public var description: String {
        switch self {
        case .emptyData(let s): return "cannot train: \(s)"
        case .badCheckpoint(let s): return "cannot resume: \(s)"
        case .invalidSettings(let s): return "cannot train: \(s)"
        case .replicasDiverged(let s): return "cannot train in parallel: \(s)"
        }
    }
}

/// Algorithm 1 of the paper (MODEL.md §8): per iteration one segmentation step on a randomly drawn
/// segmentation sample (skipped when it has no lesion) and one classification step on the next
/// classification sample; one Adam over all parameters, each step updating only its subset.
public final class OneShotTrainer {
    /// The model being trained (in place).
    public let model: AffinityModel
    /// The run's settings.
    public let config: TrainingConfig
    /// The one optimizer over all parameters; each step updates only its own subset.
    public let adam: Adam
    /// Progress, losses and generator states; `resume(from:)` replaces it.
    public internal(set) var state: TrainerState
    /// The samples.
    public let data: TrainingData
    /// The processes training this model together (data parallelism, DataParallel.swift); nil or
    /// one process: this process alone. Set before the first step, then `synchronizeReplicas()`.
    public var replicas: TrainingReplicas? = nil
    /// The step buffer of steps of several slices.
    let parallel = DataParallelScratch()

    /// A trainer at the start of a run: Adam with `config`'s learning rate and weight decay, the four
    /// generators seeded from `config.seed`, the copy reference at 1000 (`.previous`) or 10000 (`.best`).
    /// - Parameters:
    ///   - model: The model to train, initialised or loaded.
    ///   - data: The samples.
    ///   - config: The run's settings.
    /// - Throws: `TrainingError.emptyData` when there is no classification sample, both steps are off,
    ///   the segmentation step is on without segmentation samples, or the model's built-in head has
    ///   another C' than `config.affinities`.
    public init(model: AffinityModel, data: TrainingData, config: TrainingConfig) throws {
        guard data.classificationCount > 0 else { throw TrainingError.emptyData("the classification set is empty") }
        guard config.accumulate >= 1 else { throw TrainingError.invalidSettings("accumulate must be at least 1, got \(config.accumulate)") }
        guard config.segmentationStep || config.classificationStep else { throw TrainingError.emptyData("both the segmentation and the classification step are switched off") }
        guard !config.segmentationStep || data.segmentationCount > 0 else { throw TrainingError.emptyData("the segmentation set is empty") }
        if model.affinityHead != nil, config.affinities != model.affinities {
            throw TrainingError.emptyData("config has C' = \(config.affinities), model \(model.affinities)")
        }
        self.model = model; self.data = data; self.config = config
        adam = Adam(learningRate: config.learningRate, weightDecay: config.weightDecay)
        let s = config.seed
        state = TrainerState(shuffleRNG: SeededGenerator(seed: s &* 4 &+ 1).state, segmentationPickRNG: SeededGenerator(seed: s &* 4 &+ 2).state,
                             samplingRNG: SeededGenerator(seed: s &* 4 &+ 3).state, paddingRNG: SeededGenerator(seed: s &* 4 &+ 4).state,
                             copyReference: config.copyRule == .previous ? 1000 : 10000)
    }

    /// Θ1 ∪ Θ2: what the segmentation step updates.
    public var segmentationParameters: [Parameter] { model.segmentation.parameters }
    /// Θ1 ∪ Θ3: what the classification step updates (Θ3: the head — the affinity layer and the
    /// classifier, or the plugin head in their place).
    public var classificationParameters: [Parameter] {
        model.backbone.parameters + model.head.parameters
            + (config.trainConvReduce ? model.maskPredictorS2.convReduce.parameters : [])
    }

    /// The part of the classification subset that `headLearningRate` applies to: Θ3 (and
    /// `conv_reduce` when it is trained).
    public var headParameters: [Parameter] {
        model.head.parameters + (config.trainConvReduce ? model.maskPredictorS2.convReduce.parameters : [])
    }

    /// Whether `config.epochs` epochs have finished.
    public var isFinished: Bool { state.epoch >= config.epochs }

    /// Runs one iteration (starting a new epoch, with a new shuffle, when needed).
    public func step() throws -> IterationResult {
        if slicesPerStep > 1 { return try batchedStep() }
        if state.order.isEmpty || state.iteration >= state.order.count {
            var r = SeededGenerator(state: state.shuffleRNG)!
            state.order = r.permutation(data.classificationCount)
            state.shuffleRNG = r.state
            state.iteration = 0
        }
        var sampling = SeededGenerator(state: state.samplingRNG)!
        var padding = SeededGenerator(state: state.paddingRNG)!
        defer { state.samplingRNG = sampling.state; state.paddingRNG = padding.state }

        // Segmentation step.
        var seg: SegmentationLosses? = nil
        var copied = false
        if config.segmentationStep {
            var pick = SeededGenerator(state: state.segmentationPickRNG)!
            let j = Int(pick.next() % UInt64(data.segmentationCount))
            state.segmentationPickRNG = pick.state
            let s = try data.segmentationSample(j)
            if !s.targets.boxes.isEmpty {
                model.zeroGrad()
                let l = try model.segmentation.segmentationForwardBackward(image: s.image, targets: s.targets, rng: &sampling)
                if l.total < state.copyReference {
                    try model.copySegmentationWeights()
                    copied = true
                    state.copies += 1
                }
                switch config.copyRule {
                case .previous: state.copyReference = l.total
                case .best: state.copyReference = min(state.copyReference, l.total)
                }
                adam.step(segmentationParameters)
                seg = l
                state.epochSegSum += l.total; state.epochSegCount += 1
            }
        }

        // Classification step.
        var cls = 0.0
        if config.classificationStep {
            let c = try data.classificationSample(state.order[state.iteration])
            model.zeroGrad()
            (cls, _) = try model.classificationForwardBackward(image: c.image, label: c.label, trainReduce: config.trainConvReduce, rng: &padding)
            if let headRate = config.headLearningRate {
                let head = headParameters
                let names = Set(head.map(\.name))
                adam.step(classificationParameters.filter { !names.contains($0.name) })
                adam.learningRate = headRate
                adam.step(head)
                adam.learningRate = config.learningRate
            } else {
                adam.step(classificationParameters)
            }
            state.epochClsSum += cls
        }

        let result = IterationResult(epoch: state.epoch, iteration: state.iteration, segmentation: seg, classification: cls, copied: copied)
        state.iteration += 1
        state.totalIterations += 1
        if state.iteration >= state.order.count { finishEpoch() }
        return result
    }

    func finishEpoch() {
        let n = Double(max(state.order.count, 1))
        let segMean = state.epochSegCount > 0 ? state.epochSegSum / Double(state.epochSegCount) : 0
        let clsMean = state.epochClsSum / n
        state.epochSeg.append(segMean); state.epochCls.append(clsMean); state.epochTotals.append(segMean + clsMean)
        if let b = state.bestEpoch, state.epochTotals[b] <= segMean + clsMean {} else { state.bestEpoch = state.epochTotals.count - 1 }
        state.epoch += 1
        state.iteration = 0
        state.order = []
        state.epochSegSum = 0; state.epochSegCount = 0; state.epochClsSum = 0
    }

    /// Whether the epoch that just ended is the best so far (lowest mean L_Total).
    public var lastEpochIsBest: Bool { state.bestEpoch != nil && state.bestEpoch == state.epochTotals.count - 1 }

    // MARK: - Checkpoints

    /// Writes the model (original key layout, aliases included), Adam's moments and step counters,
    /// and the trainer state, atomically.
    public func saveCheckpoint(to url: URL, extraMetadata: [String: String] = [:]) throws {
        var w = SafeTensorsWriter()
        model.addState(to: &w, aliases: model.originalAliases)
        let (moments, steps) = adam.stateTensors()
        for (name, t) in moments { w.add("optimizer." + name, t) }
        let enc = JSONEncoder(); enc.outputFormatting = [.sortedKeys]
        w.metadata = extraMetadata.filter { !ModelLoader.headKeys.contains($0.key) }.merging(model.headMetadata) { _, b in b }.merging([
            "format": "lesionaffinity-checkpoint-1",
            "anchor_sizes": model.segmentation.config.anchorSizes.map { String($0) }.joined(separator: ","),
            "aspect_ratios": model.segmentation.config.aspectRatios.map { String($0) }.joined(separator: ","),
            "epoch": String(state.epoch),
            "trainer_state": String(data: try enc.encode(state), encoding: .utf8)!,
            "training_config": String(data: try enc.encode(config), encoding: .utf8)!,
            "optimizer_steps": String(data: try enc.encode(steps), encoding: .utf8)!,
        ]) { a, _ in a }
        // A checksum of the tensor bytes: the format checks shapes and offsets, not values, and a
        // damaged weight or moment would otherwise resume silently into another run.
        w.metadata[Self.checksumKey] = Self.payloadChecksum(try w.serialized())
        try w.write(to: url)
    }

    /// The metadata key of a checkpoint's tensor-data checksum (`payloadChecksum`).
    public static let checksumKey = "data_checksum"

    /// `fnv1a64:<16 hex digits>`: FNV-1a over the little-endian 64-bit words of a safetensors file's
    /// data section (the bytes after the header), the last partial word zero-padded. It catches
    /// damage (a flipped, zeroed or lost byte), not deliberate edits.
    /// - Parameter file: a whole safetensors file (8-byte header length, header, data).
    public static func payloadChecksum(_ file: Data) -> String {
        var n: UInt64 = 0
        for i in 0..<min(8, file.count) { n |= UInt64(file[file.startIndex + i]) << (8 * UInt64(i)) }
        let start = min(UInt64(file.count), 8 &+ n)
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        file.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            let body = UnsafeRawBufferPointer(rebasing: raw[Int(start)...])
            let words = body.count / 8
            for i in 0..<words {
                h = (h ^ UInt64(littleEndian: body.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))) &* 0x100_0000_01b3
            }
            if body.count % 8 != 0 {
                var last: UInt64 = 0
                for (k, b) in body[(8 * words)...].enumerated() { last |= UInt64(b) << (8 * UInt64(k)) }
                h = (h ^ last) &* 0x100_0000_01b3
            }
            h = (h ^ UInt64(body.count)) &* 0x100_0000_01b3
        }
        let hex = String(h, radix: 16)
        return "fnv1a64:" + String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// Reads a checkpoint of `saveCheckpoint`: the file parsed and, when it carries a checksum (every
    /// checkpoint written since it was added), its tensor data checked against it.
    /// - Throws: `CheckpointError` (unreadable, too large, not safetensors) or
    ///   `TrainingError.badCheckpoint` (the tensor data does not match the checksum).
    public static func readCheckpoint(_ url: URL, limit: Int = SafeTensorsFile.defaultByteLimit) throws -> SafeTensorsFile {
        let bytes: Data
        do {
            let size = (try FileManager.default.attributesOfItem(atPath: url.path)[.size] as? NSNumber)?.intValue ?? 0
            guard size <= limit else {
                throw CheckpointError.io("cannot read \(url.path): the file is \(size) bytes, larger than the limit of \(limit) bytes")
            }
            bytes = try Data(contentsOf: url)
        } catch let e as CheckpointError { throw e } catch {
            throw CheckpointError.io("cannot read \(url.path): \((error as NSError).localizedDescription)")
        }
        let f = try SafeTensorsFile(data: bytes)
        if let recorded = f.metadata[checksumKey], recorded != payloadChecksum(bytes) {
            throw TrainingError.badCheckpoint("\(url.lastPathComponent) is damaged: its tensor data does not match the checksum written with it")
        }
        return f
    }

    /// The trainer state a checkpoint would resume at, read and checked against its checksum
    /// (`readCheckpoint`), without a model: for a caller that decides whether a run can resume.
    /// - Throws: as `readCheckpoint`, and `TrainingError.badCheckpoint` when it has no trainer state.
    public static func checkpointState(_ url: URL) throws -> TrainerState {
        let f = try readCheckpoint(url)
        guard let ts = f.metadata["trainer_state"], let st = try? JSONDecoder().decode(TrainerState.self, from: Data(ts.utf8)) else {
            throw TrainingError.badCheckpoint("\(url.lastPathComponent) has no trainer state (is it a model file rather than a training checkpoint?)")
        }
        return st
    }

    /// The trainer state recorded in a checkpoint's header, read without the tensors (a few kB
    /// however large the file): where a resume from it would continue. Nothing else is checked;
    /// `resume(from:)` checks the whole file.
    /// - Throws: `CheckpointError` (unreadable, no safetensors header) or
    ///   `TrainingError.badCheckpoint` (no trainer state in the header).
    public static func checkpointHeaderState(_ url: URL) throws -> TrainerState {
        guard let h = FileHandle(forReadingAtPath: url.path) else { throw CheckpointError.io("cannot open \(url.path)") }
        defer { try? h.close() }
        let prefix = (try? h.read(upToCount: 8)) ?? Data()
        guard prefix.count == 8 else { throw CheckpointError.truncated("\(url.lastPathComponent) has no header length") }
        var n: UInt64 = 0
        for i in 0..<8 { n |= UInt64(prefix[prefix.startIndex + i]) << (8 * UInt64(i)) }
        guard n <= 100 << 20 else { throw CheckpointError.corrupt("\(url.lastPathComponent) declares a header of \(n) bytes") }
        let header = (try? h.read(upToCount: Int(n))) ?? Data()
        guard header.count == Int(n), let json = try? JSONSerialization.jsonObject(with: header) as? [String: Any] else {
            throw CheckpointError.corrupt("\(url.lastPathComponent) has no readable header")
        }
        guard let meta = json["__metadata__"] as? [String: Any], let ts = meta["trainer_state"] as? String,
              let st = try? JSONDecoder().decode(TrainerState.self, from: Data(ts.utf8)) else {
            throw TrainingError.badCheckpoint("\(url.lastPathComponent) has no trainer state")
        }
        return st
    }

    /// Restores model weights, optimizer and trainer state from `saveCheckpoint`'s file.
    ///
    /// All or nothing: the whole file is checked first (trainer state, head, C', every weight's
    /// shape, the optimizer's moments and step counts against the parameters), and only then are
    /// weights, optimizer and trainer state replaced. A file that is refused changes nothing.
    /// - Throws: `TrainingError.badCheckpoint` (no or invalid trainer state, another C', tensor data
    ///   that does not match the file's checksum),
    ///   `ClassificationHeadError.headMismatch` (a checkpoint of another head), `OptimizerStateError`
    ///   (moments or step counts that do not fit the parameters) or `CheckpointError` naming what is
    ///   wrong.
    public func resume(from url: URL) throws {
        let f = try Self.readCheckpoint(url)
        guard let ts = f.metadata["trainer_state"], let st = try? JSONDecoder().decode(TrainerState.self, from: Data(ts.utf8)),
              let ss = f.metadata["optimizer_steps"], let steps = try? JSONDecoder().decode([String: Int].self, from: Data(ss.utf8)) else {
            throw TrainingError.badCheckpoint("\(url.lastPathComponent) has no trainer state (is it a model file rather than a training checkpoint?)")
        }
        guard f.headID == model.head.headID else {
            throw ClassificationHeadError.headMismatch(file: f.headID, model: model.head.headID)
        }
        if model.affinityHead != nil, let cs = f.metadata["training_config"], let c = try? JSONDecoder().decode(TrainingConfig.self, from: Data(cs.utf8)),
           c.affinities != config.affinities {
            throw TrainingError.badCheckpoint("checkpoint has C' = \(c.affinities), this run \(config.affinities)")
        }
        try checkResumable(st)
        let aliases = Dictionary(uniqueKeysWithValues: model.originalAliases.map { ($0.alias, $0.of) })
        let optimizerKeys = f.names.filter { $0.hasPrefix("optimizer.") }
        let loadAliases = aliases.merging(optimizerKeys.map { ($0, $0) }) { a, _ in a }
        try model.checkLoad(from: f, aliases: loadAliases)
        var moments: [String: Tensor] = [:]
        for k in optimizerKeys { moments[String(k.dropFirst("optimizer.".count))] = try f.tensor(k) }
        let optimizerState = try Adam.checkState(tensors: moments, steps: steps, parameters: model.parameters)
        // Everything is checked: apply. `load` checks again and cannot fail where `checkLoad` passed.
        try model.load(from: f, aliases: loadAliases)
        adam.restore(optimizerState)
        state = st
    }

    /// Checks a trainer state from a file before it replaces `state`: valid generator states, and
    /// every number `step()` and the callers use as an index within range (the epoch order indexes
    /// the classification samples, the iteration the order, `bestEpoch` the epoch means, whose three
    /// lists have one value per finished epoch).
    /// - Throws: `TrainingError.badCheckpoint` naming the first problem.
    private func checkResumable(_ st: TrainerState) throws {
        func bad(_ s: String) -> TrainingError { .badCheckpoint(s) }
        guard SeededGenerator(state: st.shuffleRNG) != nil, SeededGenerator(state: st.samplingRNG) != nil,
              SeededGenerator(state: st.paddingRNG) != nil, SeededGenerator(state: st.segmentationPickRNG) != nil else {
            throw bad("random generator states are invalid")
        }
        let n = data.classificationCount
        if let i = st.order.first(where: { $0 < 0 || $0 >= n }) {
            throw bad("the epoch's sample order names sample \(i), but the data has \(n) classification samples")
        }
        guard st.iteration >= 0, st.iteration <= st.order.count else {
            throw bad("iteration \(st.iteration) lies outside the epoch's order of \(st.order.count) samples")
        }
        guard st.epoch >= 0, st.totalIterations >= 0, st.copies >= 0, st.epochSegCount >= 0 else {
            throw bad("a counter of the trainer state is negative")
        }
        guard st.epochTotals.count == st.epoch, st.epochSeg.count == st.epoch, st.epochCls.count == st.epoch else {
            throw bad("the state has \(st.epoch) finished epochs but \(st.epochTotals.count), \(st.epochSeg.count) and \(st.epochCls.count) epoch means")
        }
        if let b = st.bestEpoch, b < 0 || b >= st.epochTotals.count {
            throw bad("the best epoch \(b) is not one of the \(st.epochTotals.count) finished epochs")
        }
    }
}
