import Affinity
import ArgumentParser
import Detection
import Distributed
import Foundation
import Imaging
import NN
import Tensor

/// The input every model benchmark uses, the same as `bench/torch_reference.py`: the reference's
/// normalised `2_covid_000.png` (`--tensors`) or any PNG (`--image`), and for training steps three
/// lesion targets made from the reference detections (boxes at least 4 px wide, rectangular masks).
struct BenchInput: ParsableArguments {
    @Option(help: "Weights (safetensors; our layout or the original state dict).")
    var weights: String

    @Option(help: "Number of affinities C' (default: from the weights file).")
    var affinities: Int?

    @Option(help: "A PNG slice to run on.")
    var image: String?

    @Option(help: "The reference tensors file (input_normalized, det_boxes), as bench/torch_reference.py uses.")
    var tensors: String?

    func load() throws -> (AffinityModel, Tensor, SegmentationTargets) {
        let model = try ModelLoader.load(contentsOf: URL(fileURLWithPath: weights), affinities: affinities)
        let img: Tensor
        var boxes: [Box] = []
        if let tensors {
            let f = try SafeTensorsFile(contentsOf: URL(fileURLWithPath: tensors))
            img = try f.tensor("input_normalized").reshaped([1, 3, 512, 512])
            if f.entries["det_boxes"] != nil {
                let d = try f.tensor("det_boxes")
                for i in 0..<min(3, d.shape[0]) {
                    let x1 = d[i, 0], y1 = d[i, 1]
                    boxes.append(Box(x1, y1, max(d[i, 2], x1 + 4), max(d[i, 3], y1 + 4)))
                }
            }
        } else if let image {
            let px = try PNG.read(path: image)
            img = try Tensor(shape: [1, 3, 512, 512], values: Preprocessing.modelInput(px))
        } else {
            throw ValidationError("give --tensors or --image")
        }
        if boxes.isEmpty { boxes = [Box(200, 200, 240, 230), Box(300, 260, 330, 300), Box(120, 300, 150, 330)] }
        var masks: [[UInt8]] = []
        for b in boxes {
            var m = [UInt8](repeating: 0, count: 512 * 512)
            let x1 = Int(b.x1.rounded()), y1 = Int(b.y1.rounded()), x2 = Int(b.x2.rounded()), y2 = Int(b.y2.rounded())
            for y in max(0, y1)..<min(512, y2) { for x in max(0, x1)..<min(512, x2) { m[y * 512 + x] = 1 } }
            masks.append(m)
        }
        return (model, img, SegmentationTargets(boxes: boxes, masks: masks, height: 512, width: 512))
    }
}

/// Peak resident memory of this process in MB.
func peakRSSMegabytes() -> Double {
    var u = rusage()
    getrusage(RUSAGE_SELF.rawValue, &u)
    return Double(u.ru_maxrss) / 1024
}

func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

func printStages(_ title: String, _ stages: [String: Double], extra: [(String, String)] = []) {
    print(title)
    for (k, v) in stages.sorted(by: { $0.key < $1.key }) { print("  \(k.padding(toLength: 30, withPad: " ", startingAt: 0)) \(String(format: "%8.4f s", v))") }
    for (k, v) in extra { print("  \(k.padding(toLength: 30, withPad: " ", startingAt: 0)) \(v)") }
}

/// `affinity-lab bench segmentation`: per-stage timings of the segmentation half at 512×512 and one
/// segmentation training step, with peak memory.
struct BenchSegmentation: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "segmentation", abstract: "Segmentation stages and one training step at 512×512.")
    @OptionGroup var input: BenchInput
    @OptionGroup var options: BenchOptions

    func run() throws {
        if let t = options.threads { Engine.threads = t }
        let (model, image, targets) = try input.load()
        let seg = model.segmentation
        let ws = seg.workspace
        var stages: [String: Double] = [:]
        let (features, _) = try seg.backbone.forward(image, training: false, workspace: ws, keep: false)
        stages["backbone"] = try medianSeconds(repeats: options.repeats) { _ = try seg.backbone.forward(image, training: false, workspace: ws, keep: false) }
        var props = Proposals(boxes: [], logits: [])
        stages["rpn"] = try medianSeconds(repeats: options.repeats) {
            let (o, d, _) = try seg.rpn.forward(features, workspace: ws)
            props = seg.proposals(objectness: o, deltas: d, imageHeight: 512, imageWidth: 512)
        }
        var dets: [Detection] = []
        stages["roi_box_branch"] = try medianSeconds(repeats: options.repeats) {
            let pooled = try roiAlignForward(features: features, boxes: props.boxes, outputSize: 7, spatialScale: 1.0 / 16, samplingRatio: 2)
            let (rep, _) = try seg.boxHead.forward(pooled)
            let (l, r) = try seg.boxPredictor.forward(rep)
            dets = seg.postprocess(proposals: props.boxes, logits: l, regression: r, imageHeight: 512, imageWidth: 512)
        }
        stages["mask_head_\(dets.count)"] = try medianSeconds(repeats: options.repeats) { try seg.addMasks(&dets, features: features) }
        stages["paste_masks"] = medianSeconds(repeats: options.repeats) {
            for d in dets { _ = d.mask28.withUnsafeBufferPointer { pastedArea($0.baseAddress!, box: d.box, imageHeight: 512, imageWidth: 512) } }
        }
        // One segmentation training step: forward with targets, L_SEG, backward.
        var rng = SeededGenerator(seed: 1)
        stages["segmentation_step"] = try medianSeconds(repeats: options.repeats) {
            seg.zeroGrad()
            _ = try seg.segmentationForwardBackward(image: image, targets: targets, rng: &rng)
        }
        let peak = peakRSSMegabytes()
        if options.json {
            printJSON(["threads": Engine.threads, "repeats": options.repeats, "detections": dets.count, "stages": stages, "peak_rss_mb": peak])
        } else {
            printStages("segmentation at 512×512, threads \(Engine.threads), median of \(options.repeats)", stages,
                        extra: [("detections", "\(dets.count)"), ("peak RSS", String(format: "%.0f MB", peak))])
        }
    }
}

/// `affinity-lab bench predict`: one full inference (model loaded once), median of N.
struct BenchPredict: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "predict", abstract: "Full inference at 512×512 (classification + detections).")
    @OptionGroup var input: BenchInput
    @OptionGroup var options: BenchOptions

    @Flag(help: "Also print the roofline: per stage the multiply-adds, the time, GFLOP/s and the fraction of the SGEMM peak measured in the same run.")
    var roofline = false

    func run() throws {
        if let t = options.threads { Engine.threads = t }
        let (model, image, _) = try input.load()
        var rng = SeededGenerator(seed: 0)
        var last: Prediction? = nil
        var times: [Double] = []
        _ = try model.predictImage(image, rng: &rng)
        var stageSum: [String: [Double]] = [:]
        for _ in 0..<max(options.repeats, 1) {
            let t0 = now()
            let p = try model.predictImage(image, rng: &rng)
            times.append(now() - t0)
            for (k, v) in p.timings { stageSum[k, default: []].append(v) }
            last = p
        }
        times.sort()
        let stages = stageSum.mapValues { $0.sorted()[$0.count / 2] }
        let peak = peakRSSMegabytes()
        let report = roofline ? Roofline.measure(rows: ["backbone", "proposals", "classification", "segmentation", "paste_masks", "total"].compactMap { k in
            stages[k].map { Roofline.Row(stage: k, multiplyAdds: last?.multiplyAdds[k] ?? 0, seconds: $0) }
        }) : nil
        if options.json {
            var j: [String: Any] = ["median_s": times[times.count / 2], "min_s": times[0], "peak_rss_mb": peak, "stages": stages,
                                    "class_index": last?.classIndex ?? -1, "detections": last?.detections.count ?? 0, "threads": Engine.threads]
            if let report { j["roofline"] = report.json }
            printJSON(j)
        } else {
            printStages("predict at 512×512, threads \(Engine.threads), median of \(options.repeats)", stages,
                        extra: [("median", String(format: "%.4f s", times[times.count / 2])), ("min", String(format: "%.4f s", times[0])),
                                ("peak RSS", String(format: "%.0f MB", peak)), ("class", last?.className ?? "?")])
            report?.print()
        }
    }
}

/// `affinity-lab bench train-step`: one Algorithm 1 iteration (segmentation step + classification
/// step, each with its Adam update) at 512×512; with --distributed, one data-parallel step of the
/// MPI job's ranks (one slice per rank), with the allreduce's time and volume.
struct BenchTrainStep: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train-step", abstract: "One Algorithm 1 iteration at 512×512 (--distributed: one data-parallel step over the MPI job's ranks).",
        discussion: """
        --distributed, under mpirun -np N (one thread per rank: --threads 1), times steps of N slices \
        (one per rank; each rank's slice is the same image) with the gradients summed over the ranks by \
        one allreduce per step and Adam step, and reports (rank 0) the median step time, the slices per \
        second, the allreduce time per step and the bytes each rank contributes to it. A ring allreduce \
        sends and receives 2 (N − 1) / N times those bytes per rank. The scaling efficiency is the \
        N-rank slices/s over N × the one-rank slices/s (run it with -np 1 and -np N; \
        bench/distributed_scaling.sh does both).
        """)
    @OptionGroup var input: BenchInput
    @OptionGroup var options: BenchOptions

    @Flag(help: "Time data-parallel steps over the ranks of an MPI job (one slice per rank).")
    var distributed = false

    @Flag(help: "Also print the roofline of the two steps: multiply-adds, time, GFLOP/s and the fraction of the SGEMM peak measured in the same run.")
    var roofline = false

    struct OneSample: TrainingData {
        var image: Tensor, targets: SegmentationTargets
        var count = 1
        var classificationCount: Int { count }
        var segmentationCount: Int { 1 }
        func classificationSample(_ i: Int) throws -> ClassificationSample { ClassificationSample(image: image, label: 2) }
        func segmentationSample(_ i: Int) throws -> SegmentationSample { SegmentationSample(image: image, targets: targets) }
    }

    func run() throws {
        if let t = options.threads { Engine.threads = t }
        if distributed { return try labRun { try runDistributed() } }
        let (model, image, targets) = try input.load()
        var config = TrainingConfig()
        config.affinities = model.affinities
        let trainer = try OneShotTrainer(model: model, data: OneSample(image: image, targets: targets), config: config)
        _ = try trainer.step()
        var times: [Double] = [], seg: [Double] = [], cls: [Double] = []
        for _ in 0..<max(options.repeats, 1) {
            let t0 = now()
            let r = try trainer.step()
            times.append(now() - t0)
            _ = r
        }
        // The two steps separately.
        var rng = SeededGenerator(seed: 2)
        var segMACs = 0, clsMACs = 0
        for _ in 0..<max(options.repeats, 1) {
            var t0 = now(), c0 = MultiplyAdds.count
            model.zeroGrad(); _ = try model.segmentation.segmentationForwardBackward(image: image, targets: targets, rng: &rng)
            seg.append(now() - t0)
            segMACs = MultiplyAdds.count - c0
            t0 = now(); c0 = MultiplyAdds.count
            model.zeroGrad(); _ = try model.classificationForwardBackward(image: image, label: 2, rng: &rng)
            cls.append(now() - t0)
            clsMACs = MultiplyAdds.count - c0
        }
        times.sort(); seg.sort(); cls.sort()
        let stages = ["segmentation_step": seg[seg.count / 2], "classification_step": cls[cls.count / 2]]
        let peak = peakRSSMegabytes()
        // (The two steps' forward and backward passes; the iteration adds the Adam updates.)
        let report = roofline ? Roofline.measure(rows: [
            Roofline.Row(stage: "segmentation_step", multiplyAdds: segMACs, seconds: stages["segmentation_step"]!),
            Roofline.Row(stage: "classification_step", multiplyAdds: clsMACs, seconds: stages["classification_step"]!),
            Roofline.Row(stage: "iteration", multiplyAdds: segMACs + clsMACs, seconds: times[times.count / 2]),
        ]) : nil
        if options.json {
            var j: [String: Any] = ["median_s": times[times.count / 2], "min_s": times[0], "peak_rss_mb": peak, "stages": stages, "threads": Engine.threads]
            if let report { j["roofline"] = report.json }
            printJSON(j)
        } else {
            printStages("Algorithm 1 iteration at 512×512, threads \(Engine.threads), median of \(options.repeats)", stages,
                        extra: [("median", String(format: "%.4f s", times[times.count / 2])), ("min", String(format: "%.4f s", times[0])),
                                ("peak RSS", String(format: "%.0f MB", peak))])
            report?.print()
        }
    }

    /// Data-parallel steps: every rank one slice per step, the gradients summed by one allreduce.
    func runDistributed() throws {
        let world = try LabCluster.world(requireLauncher: true)
        let (model, image, targets) = try input.load()
        var config = TrainingConfig()
        config.affinities = model.affinities
        let repeats = max(options.repeats, 1)
        let data = OneSample(image: image, targets: targets, count: world.size * (repeats + 1))
        let trainer = try OneShotTrainer(model: model, data: data, config: config)
        if world.size > 1 { trainer.replicas = world }
        do { try trainer.synchronizeReplicas() } catch { throw LabCluster.labError(error) }
        do { _ = try trainer.step() } catch { throw LabCluster.labError(error) }   // warm-up
        var times: [Double] = [], reduceTimes: [Double] = [], bytes: [Int] = []
        for _ in 0..<repeats {
            let before = world.stats.allreduceSeconds
            let t0 = now()
            do { _ = try trainer.step() } catch { throw LabCluster.labError(error) }
            times.append(now() - t0)
            reduceTimes.append(world.stats.allreduceSeconds - before)
            bytes.append(trainer.lastStepReducedBytes)
        }
        func median(_ v: [Double]) -> Double { let s = v.sorted(); return s[s.count / 2] }
        // The slowest rank's median sets the pace; every rank reports its own.
        let mine: [Double] = [median(times), median(reduceTimes), peakRSSMegabytes()]
        let all: [[Double]]?
        do { all = try world.gather(mine) } catch { throw LabCluster.labError(error) }
        guard let all else { return }
        let stepSeconds = all.map { $0[0] }.max() ?? mine[0]
        let slicesPerSecond = Double(trainer.slicesPerStep) / stepSeconds
        let perStepBytes = bytes.max() ?? 0
        let ringFactor = world.size > 1 ? 2 * Double(world.size - 1) / Double(world.size) : 0
        let report: [String: Any] = [
            "processes": world.size, "threads_per_process": Engine.threads, "slices_per_step": trainer.slicesPerStep, "repeats": repeats,
            "median_step_s": stepSeconds, "slices_per_s": slicesPerSecond,
            "allreduce_s_per_step": all.map { $0[1] }.max() ?? 0, "allreduce_bytes_per_step": perStepBytes,
            "ring_bytes_sent_per_rank_per_step": Int(ringFactor * Double(perStepBytes)),
            "per_rank": all.enumerated().map { ["rank": $0.offset, "median_step_s": $0.element[0], "allreduce_s": $0.element[1], "peak_rss_mb": $0.element[2]] },
            "host": world.processorName,
        ]
        if options.json {
            printJSON(report)
        } else {
            print("data-parallel Algorithm 1 step at 512×512: \(world.size) rank(s) × \(Engine.threads) thread(s), median of \(repeats)")
            print(String(format: "  step            %8.4f s (%d slice(s): %.3f slices/s)", stepSeconds, trainer.slicesPerStep, slicesPerSecond))
            print(String(format: "  allreduce       %8.4f s per step, %.1f MB per rank (ring: %.1f MB sent per rank)",
                         all.map { $0[1] }.max() ?? 0, Double(perStepBytes) / 1e6, ringFactor * Double(perStepBytes) / 1e6))
        }
    }
}
