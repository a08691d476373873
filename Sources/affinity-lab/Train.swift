import Affinity
import ArgumentParser
import Detection
import Distributed
import Foundation
import Imaging
import NN
import PluginHost
import Tensor

/// Options shared by `train` and `finetune`.
struct TrainRunOptions: ParsableArguments {
    @Option(help: "Run directory: checkpoint.safetensors (every epoch, atomic), model.safetensors (best epoch), metrics.jsonl.")
    var out: String

    @Option(help: "Learning rate (default 1e-5).")
    var lr: Float?

    @Option(name: .customLong("head-lr"), help: "Learning rate of the head (affinity layer and classifier, or a head plugin) in the classification step (default: --lr, as the paper).")
    var headLR: Float?

    @Option(name: .customLong("weight-decay"), help: "L2 weight decay added to the gradient (default 1e-3).")
    var weightDecay: Float?

    @Option(help: "Seed of the shuffles, samplers and model initialisation (default 1).")
    var seed: UInt64?

    @Option(help: "Continue from a training checkpoint (weights, Adam moments, generators, epoch, iteration).")
    var resume: String?

    @Option(name: .customLong("max-iterations"), help: "Stop once this many iterations (counted over the whole run, resumes included) are done; a checkpoint is written.")
    var maxIterations: Int?

    @Option(name: .customLong("image-size"), help: "Side the slices are resized to before standardisation (512 as the paper; multiples of 16, smaller for quick runs).")
    var imageSize = 512

    @Option(help: "Threads for OpenBLAS and the parallel loops (default: all cores, or AFFINITY_THREADS; under mpirun give each rank its share).")
    var threads: Int?

    @Option(help: "Slices whose gradients are averaged before each Adam step (gradient accumulation, default 1 as the paper; a resumed run keeps the checkpoint's). With --distributed each rank accumulates this many: a step takes accumulate × ranks slices.")
    var accumulate: Int?

    @Flag(help: "Data-parallel training over the processes of an MPI job (started by mpirun -np N or srun --mpi=pmix): every rank holds the model, takes its own slices of each step and the gradients are averaged before every Adam step, so a step takes N × accumulate slices (the effective batch; the model's metadata records it). Rank 0 writes the run directory. Without an MPI launcher: one process.")
    var distributed = false

    @Flag(help: "Print a JSON summary at the end (and no progress bar).")
    var json = false

    func validate() throws {
        try requirePositive(maxIterations, "--max-iterations")
        try requirePositive(accumulate, "--accumulate")
        try requirePositive(threads, "--threads")
        if imageSize < 32 || imageSize % 16 != 0 { throw ValidationError("--image-size must be a multiple of 16 and at least 32, got \(imageSize)") }
        if let lr, !(lr > 0) { throw ValidationError("--lr must be positive") }
        if let headLR, !(headLR > 0) { throw ValidationError("--head-lr must be positive") }
        if let weightDecay, !(weightDecay >= 0) { throw ValidationError("--weight-decay must not be negative") }
    }
}

/// Parses `previous` / `best`.
func parseCopyRule(_ s: String?) throws -> CopyRule? {
    guard let s else { return nil }
    guard let r = CopyRule(rawValue: s) else { throw ValidationError("--copy-rule must be previous or best, got \(s)") }
    return r
}

/// `--head` and `--head-config` of `train`.
struct HeadOptions: ParsableArguments {
    @Option(help: "Classification head: affinity (the built-in affinity layer + classifier, default) or the id of a head plugin (meanpool, attention, …) from the plugin folders.")
    var head: String?

    @Option(name: .customLong("head-config"), help: "JSON config of a head plugin (e.g. {\"hidden\": 64}; default {}).")
    var headConfig: String?

    func validate() throws {
        if let h = head, h.isEmpty { throw ValidationError("--head must not be empty") }
        if headConfig != nil && (head ?? AffinityHead.id) == AffinityHead.id {
            throw ValidationError("--head-config applies to a head plugin (--head ID), not to the built-in affinity head")
        }
    }
}

/// The head recorded in a checkpoint's metadata: id and config (the built-in head: `affinity`, `{}`).
func checkpointHead(_ path: String) throws -> (id: String, config: String) {
    guard fileExists(path) else { throw LabError.missingFile(path) }
    do {
        let f = try SafeTensorsFile(contentsOf: URL(fileURLWithPath: path))
        return (f.headID, f.metadata["head_config"] ?? "{}")
    } catch { throw LabError.badWeights(path, String(describing: error)) }
}

/// A fresh model with the head `id`: the built-in affinity head with C' = `affinities`, or a head
/// plugin from `registry` made from `config`. The parameters are drawn by `model.initialize`.
func labMakeModel(head id: String, config: String, affinities: Int, seed: UInt64, plugins: PluginOptions) throws -> AffinityModel {
    if id == AffinityHead.id { return AffinityModel(affinities: affinities) }
    let registry = try plugins.registry()
    let head: (any ClassificationHead)?
    do { head = try registry.makeHead(id: id, config: config, seed: seed) } catch {
        throw LabError(name: "bad-head-config", message: "The head \(id) refuses the config \(config): \(sentence(String(describing: error)))", code: 7)
    }
    guard let head else {
        let known = [AffinityHead.id] + registry.plugins.filter { $0.kind == .head }.map(\.id).sorted()
        throw LabError(name: "unknown-head", message: "No head plugin with the id \"\(id)\" is loaded. Heads available: \(known.joined(separator: ", ")).", code: 1)
    }
    return AffinityModel(head: head)
}

/// The training configuration stored in a checkpoint's metadata.
func checkpointConfig(_ path: String) throws -> TrainingConfig {
    guard fileExists(path) else { throw LabError.missingFile(path) }
    let f: SafeTensorsFile
    do { f = try SafeTensorsFile(contentsOf: URL(fileURLWithPath: path)) } catch { throw LabError.badWeights(path, String(describing: error)) }
    guard let s = f.metadata["training_config"], let c = try? JSONDecoder().decode(TrainingConfig.self, from: Data(s.utf8)) else {
        throw LabError.badWeights(path, "it is not a training checkpoint (no training_config metadata)")
    }
    return c
}

/// Runs Algorithm 1 to the end (or to --max-iterations): metrics.jsonl, a checkpoint per epoch,
/// the best epoch's model, a progress bar on a terminal. With --distributed under an MPI launcher
/// every rank trains its shard of each step (DataParallel.swift) and rank 0 alone writes the run
/// directory and prints.
func runTraining(kind: String, model: AffinityModel, data: TrainingData, config: TrainingConfig, options o: TrainRunOptions,
                 extraMetadata: [String: String]) throws {
    if let t = o.threads { Engine.threads = t }
    let world = try LabCluster.world(requireLauncher: o.distributed)
    if world.size > 1 && !o.distributed {
        throw LabError(name: "distributed-required",
                       message: "This process is rank \(world.rank) of an MPI job of \(world.size); give --distributed to train the ranks together (without it each would train alone into the same run directory).",
                       code: 64)
    }
    if o.distributed && !world.usesMPI && world.isRoot && !o.json {
        FileHandle.standardError.write(Data("note: --distributed without an MPI launcher (mpirun, srun --mpi=pmix): training as one process.\n".utf8))
    }
    let root = world.isRoot
    if root { try labMakeDirectory(o.out) }
    let trainer: OneShotTrainer
    do { trainer = try OneShotTrainer(model: model, data: data, config: config) } catch { throw LabError.badData(String(describing: error)) }
    if world.size > 1 { trainer.replicas = world }
    if let r = o.resume {
        guard fileExists(r) else { throw LabError.missingFile(r) }
        do { try trainer.resume(from: URL(fileURLWithPath: r)) } catch { throw LabError.badWeights(r, String(describing: error)) }
        guard trainer.state.order.isEmpty || trainer.state.order.count == data.classificationCount else {
            throw LabError.badData("the checkpoint's epoch covers \(trainer.state.order.count) classification images, the data set has \(data.classificationCount)")
        }
    }
    // Every rank starts from rank 0's weights (and checks that all resumed from the same state).
    do { try trainer.synchronizeReplicas() } catch let e as TrainingError {
        throw LabError(name: "ranks-disagree", message: sentence(e.description), code: 1)
    } catch { throw LabCluster.labError(error) }
    let checkpointURL = URL(fileURLWithPath: o.out + "/checkpoint.safetensors")
    let modelURL = URL(fileURLWithPath: o.out + "/model.safetensors")
    let metricsPath = o.out + "/metrics.jsonl"
    var metrics: FileHandle? = nil
    if root {
        if o.resume == nil || !fileExists(metricsPath) { _ = FileManager.default.createFile(atPath: metricsPath, contents: nil) }  // the open below reports a failure
        guard let h = FileHandle(forWritingAtPath: metricsPath) else {
            throw LabError(name: "io", message: "Cannot open \(metricsPath) for writing.", code: 1)
        }
        h.seekToEndOfFile()
        metrics = h
    }
    defer { try? metrics?.close() }
    func log(_ object: [String: Any]) { metrics?.write(Data((jsonText(object) + "\n").utf8)) }

    var meta = extraMetadata
    meta["kind"] = kind
    if let h = model.headRecord {
        let used = (meta["plugins"] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        meta["plugins"] = (used.contains(h) ? used : used + [h]).joined(separator: ", ")
    }
    meta["image_size"] = String(o.imageSize)
    // The effective batch: slices per Adam step (processes × accumulate).
    meta["slices_per_step"] = String(trainer.slicesPerStep)
    meta["processes"] = String(world.size)
    meta["training_batch"] = "\(trainer.slicesPerStep) slice(s) per Adam step: \(world.size) process(es) × accumulate \(config.accumulate)"
    func saveCheckpoint() throws {
        guard root else { return }
        do { try trainer.saveCheckpoint(to: checkpointURL, extraMetadata: meta) } catch {
            throw LabError(name: "io", message: "Cannot write \(checkpointURL.path): \(sentence(String(describing: error)))", code: 1)
        }
    }
    func saveModel(_ selected: String) throws {
        guard root else { return }
        var m = meta
        m["epoch"] = String(trainer.state.epoch); m["selected"] = selected
        if let b = trainer.state.bestEpoch { m["best_epoch"] = String(b); m["best_epoch_mean_l_total"] = String(trainer.state.epochTotals[b]) }
        do { try ModelLoader.save(model, to: modelURL, metadata: m) } catch {
            throw LabError(name: "io", message: "Cannot write \(modelURL.path): \(sentence(String(describing: error)))", code: 1)
        }
    }

    let itersPerEpoch = data.classificationCount
    let target = min(config.epochs * trainer.stepsPerEpoch, o.maxIterations ?? Int.max)
    let bar = ProgressBar(total: target, label: kind)
    let showBar = root && !o.json && bar.enabled
    let startIterations = trainer.state.totalIterations
    let t0 = DispatchTime.now().uptimeNanoseconds
    var savedAfterLastStep = false
    var last: IterationResult? = nil
    while !trainer.isFinished && trainer.state.totalIterations < (o.maxIterations ?? Int.max) {
        let ts = DispatchTime.now().uptimeNanoseconds
        let r: IterationResult
        do { r = try trainer.step() } catch let e as LabError { throw e } catch let e as DistributedError { throw LabCluster.labError(e) } catch {
            throw LabError.failed("training step failed: \(error)")
        }
        last = r
        savedAfterLastStep = false
        var line: [String: Any] = [
            "type": "iteration", "epoch": r.epoch, "iteration": r.iteration, "total_iterations": trainer.state.totalIterations,
            "l_cls": jsonNumber(r.classification), "l_total": jsonNumber(r.total), "copied": r.copied, "seconds": secondsSince(ts),
            "slices": r.slices,
        ]
        if let s = r.segmentation {
            line["l_seg"] = jsonNumber(s.total)
            line["l_seg_terms"] = ["loss_classifier": jsonNumber(s.classifier), "loss_box_reg": jsonNumber(s.boxReg), "loss_mask": jsonNumber(s.mask),
                                   "loss_objectness": jsonNumber(s.objectness), "loss_rpn_box_reg": jsonNumber(s.rpnBoxReg)]
        } else {
            line["l_seg"] = NSNull()
        }
        log(line)
        if trainer.state.epoch > r.epoch {
            let e = trainer.state.epochTotals.count - 1
            log(["type": "epoch", "epoch": e, "mean_l_total": jsonNumber(trainer.state.epochTotals[e]), "mean_l_seg": jsonNumber(trainer.state.epochSeg[e]),
                 "mean_l_cls": jsonNumber(trainer.state.epochCls[e]), "best_epoch": trainer.state.bestEpoch ?? NSNull(), "copies": trainer.state.copies])
            try saveCheckpoint()
            if trainer.lastEpochIsBest { try saveModel("best epoch (lowest mean L_Total)") }
            savedAfterLastStep = true
            if root && !showBar && !o.json {
                print(String(format: "epoch %d: mean L_Total %.5f (L_SEG %.5f, L_CLS %.5f)", e, trainer.state.epochTotals[e], trainer.state.epochSeg[e],
                             trainer.state.epochCls[e]) + (trainer.lastEpochIsBest ? " — best so far" : ""))
            }
        }
        if showBar {
            bar.update(trainer.state.totalIterations, note: String(format: "epoch %d  L_CLS %.4f  L_SEG ", r.epoch, r.classification)
                                                                    + (r.segmentation.map { String(format: "%.4f", $0.total) } ?? "skip"))
        }
    }
    if showBar { bar.finish() }
    if !savedAfterLastStep && last != nil { try saveCheckpoint() }
    if root && !fileExists(modelURL.path) { try saveModel("last (no epoch finished yet)") }
    guard root else { return }
    let summary: [String: Any] = [
        "kind": kind, "out": o.out, "affinities": config.affinities, "head": model.head.headID,
        "iterations": trainer.state.totalIterations - startIterations, "total_iterations": trainer.state.totalIterations,
        "epoch": trainer.state.epoch, "iteration_in_epoch": trainer.state.iteration, "finished": trainer.isFinished,
        "epoch_mean_l_total": trainer.state.epochTotals.map { jsonNumber($0) }, "best_epoch": trainer.state.bestEpoch ?? NSNull(),
        "copies": trainer.state.copies, "last_l_cls": last.map { jsonNumber($0.classification) } ?? NSNull(),
        "last_l_seg": last?.segmentation.map { jsonNumber($0.total) } ?? NSNull(),
        "checkpoint": checkpointURL.path, "model": modelURL.path, "metrics": metricsPath, "seconds": secondsSince(t0),
        "processes": world.size, "slices_per_step": trainer.slicesPerStep, "accumulate": config.accumulate,
        "allreduce_seconds": world.stats.allreduceSeconds, "allreduce_bytes": world.stats.allreduceBytes,
    ]
    if o.json {
        print(jsonText(summary))
    } else {
        print("\(kind) (head \(model.headRecord ?? AffinityHead.id)): \(trainer.state.totalIterations - startIterations) iteration(s) in \(String(format: "%.1f", secondsSince(t0))) s; "
              + "epoch \(trainer.state.epoch) of \(config.epochs), iteration \(trainer.state.iteration) of \(itersPerEpoch)\(trainer.isFinished ? " (finished)" : "")"
              + (trainer.slicesPerStep > 1 ? "; \(trainer.slicesPerStep) slices per step (\(world.size) process(es) × accumulate \(config.accumulate))" : ""))
        print("  checkpoint \(checkpointURL.path)\n  model      \(modelURL.path)\n  metrics    \(metricsPath)")
    }
}

/// `affinity-lab train`: Algorithm 1 from scratch (or resumed).
struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train the One Shot Affinity Model with Algorithm 1 (segmentation + classification step per iteration).",
        discussion: """
        --data is a phantom root (classification/ and segmentation/) or any directory with both; \
        --classification-data / --segmentation-data name them separately (train splits are read). \
        An epoch is one pass over the shuffled classification set; metrics.jsonl gets one line per \
        iteration ({"type":"iteration",...}) and per epoch ({"type":"epoch",...}). With --resume the \
        run continues exactly (settings default to the checkpoint's; --epochs may extend it). \
        The backbone starts from random initialisation (no ImageNet weights are bundled). \
        --head ID trains a head plugin (from --plugin-dir or the executable's folder) in place of the \
        affinity layer and classifier; its parameters are saved as head.<id>.* and the metadata \
        records head, head_version and head_config. \
        --accumulate N averages the gradients of N slices before each Adam step; --distributed under \
        mpirun -np P (or srun --mpi=pmix) trains on P processes, each taking its own slices of every \
        step, with the gradients averaged over the processes before each step: the effective batch \
        is P × N slices per step (recorded as slices_per_step in the checkpoint and the model file), \
        an iteration in metrics.jsonl is one such step and its "iteration" is the place of its first \
        slice in the epoch. Rank 0 writes the run directory. A run resumes with any number of \
        processes: it continues at the same slice of the same epoch order, with the new batch.
        """)

    @Option(help: "Data root: a phantom set (affinity-lab phantoms) or a directory with classification/ and segmentation/.")
    var data: String?

    @Option(name: .customLong("classification-data"), help: "Classification set (COVIDx-CT split files or class-prefixed images).")
    var classificationData: String?

    @Option(name: .customLong("segmentation-data"), help: "Segmentation set (imgs/ + masks/).")
    var segmentationData: String?

    @Option(help: "Number of affinities C' (default 128).")
    var affinities: Int?

    @Option(help: "Epochs (default 100).")
    var epochs: Int?

    @Option(name: .customLong("copy-rule"), help: "When segmentation weights are copied to the classification branches: previous (Algorithm 1, default) or best.")
    var copyRule: String?

    @Flag(name: .customLong("train-conv-reduce"), help: "Train mask_predictor_s2.conv_reduce with L_CLS (default: frozen at its initial values, Eq. 8).")
    var trainConvReduce = false

    @Flag(name: .customLong("segmentation-only"), help: "Segmentation pre-training: only the segmentation step of each iteration (the classification branches still get their copies); continue with finetune for Algorithm 1.")
    var segmentationOnly = false

    @OptionGroup var headOptions: HeadOptions

    @OptionGroup var options: TrainRunOptions

    @OptionGroup var formats: DataFormatOptions

    func validate() throws {
        try requirePositive(affinities, "--affinities")
        if affinities != nil, let h = headOptions.head, h != AffinityHead.id {
            throw ValidationError("--affinities applies to the built-in affinity head, not to the head plugin \(h)")
        }
        try requirePositive(epochs, "--epochs")
        _ = try parseCopyRule(copyRule)
        if data == nil && (classificationData == nil || segmentationData == nil) {
            throw ValidationError("give --data, or both --classification-data and --segmentation-data")
        }
    }

    func run() throws {
        try labRun {
            var config = TrainingConfig()
            var headID = headOptions.head ?? AffinityHead.id, headConfig = headOptions.headConfig ?? "{}"
            if let r = options.resume {
                config = try checkpointConfig(r)
                // The head of the checkpoint, unless --head names another (resume then refuses it).
                let h = try checkpointHead(r)
                if headOptions.head == nil { headID = h.id }
                if headOptions.headConfig == nil && headID == h.id { headConfig = h.config }
            }
            if let v = affinities { config.affinities = v }
            if let v = epochs { config.epochs = v }
            if let v = options.lr { config.learningRate = v }
            if let v = options.headLR { config.headLearningRate = v }
            if let v = options.weightDecay { config.weightDecay = v }
            if let v = try parseCopyRule(copyRule) { config.copyRule = v }
            if trainConvReduce { config.trainConvReduce = true }
            if let v = options.seed { config.seed = v }
            if let v = options.accumulate { config.accumulate = v }
            config.segmentationStep = true
            if segmentationOnly { config.classificationStep = false }
            let (trainingData, meta) = try labTrainingData(classificationDirectory: classificationData ?? data!,
                                                           segmentationDirectory: segmentationData ?? data!, formats: formats,
                                                           side: options.imageSize)
            let model = try labMakeModel(head: headID, config: headConfig, affinities: config.affinities, seed: config.seed,
                                         plugins: formats.plugins)
            if model.affinityHead == nil { config.affinities = 0 }
            var rng = SeededGenerator(seed: config.seed)
            model.initialize(rng: &rng)
            try runTraining(kind: "train", model: model, data: trainingData, config: config, options: options, extraMetadata: meta)
        }
    }
}

/// `affinity-lab finetune`: MODEL.md §8.6 — from a model or checkpoint, on a new classification set.
struct Finetune: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fine-tune a trained model on a new classification set (MODEL.md §8.6); the head keeps 3 outputs.",
        discussion: """
        Starts from --weights (a model file or checkpoint; a fresh optimizer), runs --epochs epochs of \
        Algorithm 1 over the classification set (train split; images named 0_…/2_… as iCTCF, or COVIDx \
        split files), with the segmentation step on --segmentation-data (or the data root's \
        segmentation/ folder) unless --no-segmentation is given.
        """)

    @Option(help: "Starting weights (model file, checkpoint or converted original).")
    var weights: String

    @Option(help: "Classification set (or a data root with classification/ and segmentation/).")
    var data: String

    @Option(name: .customLong("segmentation-data"), help: "Segmentation set for the segmentation step (default: the data root's segmentation/).")
    var segmentationData: String?

    @Flag(name: .customLong("no-segmentation"), help: "Skip the segmentation step (classification steps only).")
    var noSegmentation = false

    @Option(help: "Epochs (default 20).")
    var epochs: Int?

    @Option(name: .customLong("copy-rule"), help: "previous (default) or best.")
    var copyRule: String?

    @Flag(name: .customLong("train-conv-reduce"), help: "Train mask_predictor_s2.conv_reduce with L_CLS.")
    var trainConvReduce = false

    @OptionGroup var options: TrainRunOptions

    @OptionGroup var formats: DataFormatOptions

    func validate() throws {
        try requirePositive(epochs, "--epochs")
        _ = try parseCopyRule(copyRule)
    }

    func run() throws {
        try labRun {
            let model = try labLoadModel(weights, pluginDirectories: formats.plugins.pluginDirectories)
            var config = TrainingConfig()
            if let r = options.resume { config = try checkpointConfig(r) } else { config.epochs = 20 }
            config.affinities = model.affinities
            if let v = epochs { config.epochs = v }
            if let v = options.lr { config.learningRate = v }
            if let v = options.headLR { config.headLearningRate = v }
            if let v = options.weightDecay { config.weightDecay = v }
            if let v = try parseCopyRule(copyRule) { config.copyRule = v }
            if trainConvReduce { config.trainConvReduce = true }
            if let v = options.seed { config.seed = v }
            if let v = options.accumulate { config.accumulate = v }
            config.segmentationStep = !noSegmentation
            var segmentationDirectory: String? = nil
            if !noSegmentation {
                let dir = segmentationData ?? data
                guard segmentationData != nil || formats.segmentationFormat != nil || directoryExists(dir + "/segmentation")
                        || directoryExists(dir + "/imgs") else {
                    throw LabError.badData("no segmentation set: give --segmentation-data or --no-segmentation")
                }
                segmentationDirectory = dir
            }
            var (trainingData, meta) = try labTrainingData(classificationDirectory: data, segmentationDirectory: segmentationDirectory,
                                                           formats: formats, side: options.imageSize)
            meta["finetuned_from"] = weights
            try runTraining(kind: "finetune", model: model, data: trainingData, config: config, options: options, extraMetadata: meta)
        }
    }
}

/// The training data of `train` / `finetune`: the built-in layouts, or reader plugins for the sets
/// named by `--data-format` / `--segmentation-format`; the checkpoint metadata records the roots
/// and the plugins used (`plugins`: "id version" list, comma-separated).
func labTrainingData(classificationDirectory: String, segmentationDirectory: String?, formats: DataFormatOptions,
                     side: Int) throws -> (TrainingData, [String: String]) {
    var meta: [String: String] = [:]
    let registry = formats.usesPlugins ? try formats.plugins.registry() : nil
    var pluginCls: PluginSet? = nil, pluginSeg: PluginSet? = nil
    var diskCls: ClassificationSet? = nil, diskSeg: SegmentationSet? = nil
    if let f = formats.dataFormat {
        pluginCls = try PluginSet(format: f, directory: classificationDirectory, subfolder: "classification", split: .train,
                                  options: formats.dataOptions, registry: registry!)
        meta["classification_data"] = pluginCls!.root
        meta["data_format"] = f
    } else {
        diskCls = try ClassificationSet(directory: classificationDirectory, split: .train)
        meta["classification_data"] = diskCls!.root
    }
    if let dir = segmentationDirectory {
        if let f = formats.segmentationFormat {
            pluginSeg = try PluginSet(format: f, directory: dir, subfolder: "segmentation", split: .train,
                                      options: formats.dataOptions, registry: registry!)
            meta["segmentation_data"] = pluginSeg!.root
            meta["segmentation_format"] = f
        } else {
            diskSeg = try SegmentationSet(directory: dir, split: .train)
            meta["segmentation_data"] = diskSeg!.root
        }
    } else {
        meta["segmentation_data"] = ""
    }
    let used = ((pluginCls?.plugins ?? []) + (pluginSeg?.plugins ?? [])).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
    if !used.isEmpty { meta["plugins"] = used.joined(separator: ", ") }
    let data = try LabTrainingData(disk: diskCls, classification: pluginCls, diskSegmentation: diskSeg, segmentation: pluginSeg, side: side)
    return (data, meta)
}
