import Affinity
import ArgumentParser
import Detection
import Evaluation
import Foundation
import Imaging
import NN
import SystemIO
import Tensor

/// One image run through the full inference of the original test script, with the detections
/// mapped back to the image's own size (torchvision's `postprocess`).
struct ImagePrediction {
    var path: String
    var width: Int, height: Int
    var prediction: Prediction
    /// Detection boxes in the image's own pixels (identical to the model's for 512×512 inputs).
    var boxes: [Box]
    /// Pasted mask probabilities of each detection at the image's own size, H×W row-major.
    var masks: [[Float]]
    /// Pixels > 0.5 of each pasted mask.
    var maskAreas: [Int]
    var timings: [String: Double]
    /// Plugins used (`id version`): the decoder of a non-PNG image.
    var plugins: [String] = []
    /// The model's head plugin (`id version`), nil for the built-in affinity head.
    var head: String? = nil
}

/// Reads, preprocesses and predicts one image: a PNG, or (with `reader`) any format a decoder
/// plugin recognises, or (with `decoded`) an image already decoded (e.g. by a dataset reader).
func predictFile(_ path: String, model: AffinityModel, seed: UInt64, withDetections: Bool = true, keepMasks: Bool = false,
                 reader: LabImageReader? = nil, decoded: LabImage? = nil) throws -> ImagePrediction {
    let t0 = DispatchTime.now().uptimeNanoseconds
    let image: LabImage
    var plugins: [String] = []
    if let decoded {
        image = decoded
    } else if let reader {
        let r = try reader.read(path)
        image = r.image
        plugins = r.plugin.map { [$0] } ?? []
    } else {
        image = .png(try labReadPNG(path))
    }
    let tRead = secondsSince(t0)
    let t1 = DispatchTime.now().uptimeNanoseconds
    let input = try image.modelInput()
    let tPre = secondsSince(t1)
    var rng = SeededGenerator(seed: seed)
    let p: Prediction
    do { p = try model.predictImage(input, withDetections: withDetections, rng: &rng) } catch {
        throw LabError.failed("inference failed on \(path): \(error)")
    }
    let t2 = DispatchTime.now().uptimeNanoseconds
    let side = Float(Preprocessing.modelSide)
    let sx = Float(image.width) / side, sy = Float(image.height) / side
    var boxes: [Box] = [], masks: [[Float]] = [], areas: [Int] = []
    for d in p.detections {
        let b = Box(d.box.x1 * sx, d.box.y1 * sy, d.box.x2 * sx, d.box.y2 * sy)
        boxes.append(b)
        let pasted = d.mask28.withUnsafeBufferPointer { pasteMask($0.baseAddress!, size: 28, box: b, imageHeight: image.height, imageWidth: image.width) }
        areas.append(pasted.reduce(0) { $0 + ($1 > 0.5 ? 1 : 0) })
        if keepMasks { masks.append(pasted) }
    }
    var timings = p.timings
    timings[plugins.isEmpty ? "read_png" : "read_image"] = tRead
    timings["preprocess"] = tPre
    if withDetections { timings["rescale_masks"] = secondsSince(t2) }
    return ImagePrediction(path: path, width: image.width, height: image.height, prediction: p, boxes: boxes, masks: masks,
                           maskAreas: areas, timings: timings, plugins: plugins, head: model.headRecord)
}

/// One image's output of `predict`: its line and its COCO results (gathered on rank 0 under mpirun).
struct PredictOutput: Codable {
    var line: String
    var coco: [COCOResult]
}

/// `affinity-lab predict`: the full inference of the original test script on PNG slices.
struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Classify chest-CT slices (normal / common pneumonia / COVID-19) and detect lesions.",
        discussion: """
        Each image is read (PNG built in; JPEG, DICOM and other formats through the decoder plugin \
        that recognises the bytes, from --plugin-dir or the executable's folder), made gray → 3 channels, resized to 512×512 and standardised per image \
        (MODEL.md §1.4), then run through the model. --json prints one JSON object per image and line: \
        image, logits, class_index, class, probabilities, roi_batch {boxes, scores}, detections \
        [{box, score, mask_area}], timings (seconds per stage), plus image_size, image_id, plugins (the decoder plugin's "id version", if one was used). RoI boxes \
        are in the 512×512 model input; detection boxes and mask areas in the image's own pixels. \
        Without --weights the bundled demo model is used (trained on synthetic phantoms, for \
        demonstration, not for diagnosis); a note on stderr says so. \
        Under mpirun -np N the images are shared out among the ranks (every N-th to each) and rank 0 \
        prints every line in the images' order and writes --coco-out: the output of one process. \
        Exit codes: 3 missing file or no model (no --weights and no bundled model), 4 unreadable image, \
        5 unusable weights, 1 other failures.
        """)

    @Option(help: "Weights: a model file, a training checkpoint, or a converted original (safetensors). Default: the bundled demo model (models/phantom-demo; $AFFINITY_BUNDLED_MODELS overrides where it is looked for).")
    var weights: String?

    @Option(help: "Number of affinities C' (default: from the weights file).")
    var affinities: Int?

    @Flag(help: "Print one JSON object per image, one per line.")
    var json = false

    @Option(name: .customLong("coco-out"), help: "Write the detections as COCO results (RLE masks of pasted probabilities > 0.5) to this file.")
    var cocoOut: String?

    @Option(help: "Seed of the RoI-batch padding rule (used only when fewer than 8 RoIs survive).")
    var seed: UInt64 = 1

    @OptionGroup var plugins: PluginOptions

    @Argument(help: "Images: PNG, or any format a decoder plugin reads (JPEG, DICOM).")
    var images: [String]

    func validate() throws {
        try requirePositive(affinities, "--affinities")
        if images.isEmpty { throw ValidationError("give at least one image") }
    }

    func run() throws {
        try labRun {
            let world = try LabCluster.world()
            let model = try labLoadModel(try Self.weightsPath(weights, quiet: !world.isRoot), affinities: affinities, pluginDirectories: plugins.pluginDirectories)
            var results: [COCOResult] = []
            let reader = LabImageReader(folders: plugins.pluginDirectories)
            /// Image `i`'s output: its line (JSON or text) and its COCO results.
            func predictOne(_ i: Int) throws -> PredictOutput {
                let path = images[i]
                let r = try predictFile(path, model: model, seed: seed, keepMasks: cocoOut != nil, reader: reader)
                let imageID = i + 1
                var coco: [COCOResult] = []
                if cocoOut != nil {
                    for (k, d) in r.prediction.detections.enumerated() {
                        let mask = try BinaryMask(height: r.height, width: r.width, probabilities: r.masks[k], threshold: 0.5)
                        let b = r.boxes[k]
                        coco.append(COCOResult(imageID: imageID, categoryID: 1, score: Double(d.score), segmentation: .rle(RLE(mask: mask)),
                                               bbox: BoundingBox(x1: Double(b.x1), y1: Double(b.y1), x2: Double(b.x2), y2: Double(b.y2))))
                    }
                }
                return PredictOutput(line: json ? jsonText(Self.jsonLine(r, imageID: imageID)) : Self.text(r), coco: coco)
            }
            if world.size > 1 {
                // Under mpirun every size-th image goes to each rank; rank 0 prints every line in
                // the images' order and writes the COCO file, as one process would.
                let mine = try LabCluster.share(of: images.count, world: world).map { IndexedResult(index: $0, value: try predictOne($0)) }
                guard let all = try LabCluster.gatherInOrder(mine, world: world) else { return }
                for o in all { print(o.line); results += o.coco }
            } else {
                for i in images.indices {
                    let o = try predictOne(i)
                    print(o.line)
                    results += o.coco
                }
            }
            if let out = cocoOut {
                do {
                    let data = try COCOResult.jsonData(results)
                    try AtomicFile.write([UInt8](data), to: out)
                } catch {
                    throw LabError(name: "io", message: "Cannot write \(out): \(sentence(String(describing: error)))", code: 1)
                }
            }
        }
    }

    /// `--weights`, or the bundled demo model's weights (with a note on stderr).
    /// - Throws: `no-model` (exit 3) when neither is available.
    static func weightsPath(_ given: String?, quiet: Bool = false) throws -> String {
        if let given { return given }
        guard let dir = BundledModel.defaultModel() else {
            let configured = ProcessInfo.processInfo.environment[BundledModel.environmentVariable].map { " (\(BundledModel.environmentVariable)=\($0))" } ?? ""
            throw LabError(name: "no-model",
                           message: "No --weights given and no bundled model found\(configured); pass --weights FILE or install models/\(BundledModel.defaultName).",
                           code: 3)
        }
        let path = BundledModel.weights(dir).path
        if !quiet { FileHandle.standardError.write(Data("note: no --weights: using the bundled model \(dir.path), \(BundledModel.disclaimer).\n".utf8)) }
        return path
    }

    /// The JSON object of issue 4 item 8 (plus image_size and image_id).
    static func jsonLine(_ r: ImagePrediction, imageID: Int) -> [String: Any] {
        let p = r.prediction
        let dets: [[String: Any]] = p.detections.indices.map { k in
            ["box": jsonBox(r.boxes[k]), "score": jsonNumber(p.detections[k].score), "mask_area": r.maskAreas[k]]
        }
        return [
            "image": r.path,
            "image_id": imageID,
            "image_size": [r.width, r.height],
            "logits": p.logits.map { jsonNumber($0) },
            "class_index": p.classIndex,
            "class": p.className,
            "probabilities": p.probabilities.map { jsonNumber($0) },
            "roi_batch": ["boxes": p.roiBoxes.map { jsonBox($0) }, "scores": p.roiScores.map { jsonNumber($0) }],
            "detections": dets,
            "timings": r.timings,
            "plugins": r.plugins + (r.head.map { [$0] } ?? []),
        ]
    }

    static func text(_ r: ImagePrediction) -> String {
        let p = r.prediction
        func f(_ v: Float) -> String { String(format: "%.4f", v) }
        var lines = ["\(r.path): \(p.className) (class \(p.classIndex))" + (r.plugins.isEmpty ? "" : " [decoded by \(r.plugins.joined(separator: ", "))]")
            + (r.head.map { " [head \($0)]" } ?? "")]
        lines.append("  probabilities normal \(f(p.probabilities[0])), common pneumonia \(f(p.probabilities[1])), COVID-19 \(f(p.probabilities[2]))")
        lines.append("  logits [\(p.logits.map(f).joined(separator: ", "))]")
        lines.append("  RoI batch scores [\(p.roiScores.map(f).joined(separator: ", "))]")
        lines.append("  \(p.detections.count) lesion detection(s)")
        for k in p.detections.indices.prefix(10) {
            let b = r.boxes[k]
            lines.append(String(format: "    score %.3f  box (%.1f, %.1f, %.1f, %.1f)  mask area %d px", p.detections[k].score, b.x1, b.y1, b.x2, b.y2, r.maskAreas[k]))
        }
        if p.detections.count > 10 { lines.append("    …") }
        lines.append(String(format: "  %.3f s", r.timings["total"] ?? 0))
        return lines.joined(separator: "\n")
    }
}
