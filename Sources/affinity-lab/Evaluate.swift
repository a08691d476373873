import Affinity
import ArgumentParser
import Detection
import Distributed
import Evaluation
import Foundation
import Imaging
import PluginHost
import SystemIO
import Tensor

/// A classification image to evaluate: a file (read by path) or a sample a reader plugin decoded.
struct EvaluationImage {
    var name: String
    var label: Int
    var decoded: LabImage?
}

/// A segmentation image to evaluate: a file with its mask file, or a decoded sample with the
/// lesion instances its reader's label map gives (at the image's own size).
struct EvaluationSegmentationImage {
    var name: String
    var mask: String?
    var decoded: LabImage?
    var instances: [LesionInstance]?

    /// The ground-truth lesions at the image's size.
    func groundTruth(width: Int, height: Int) throws -> [LesionInstance] {
        if let instances { return instances }
        return try SegmentationSet.instances(maskPath: mask, width: width, height: height)
    }
}

/// One classification image's outcome (gathered on rank 0 under mpirun).
struct ClassificationRecord: Codable {
    var predicted: Int
    var line: String
}

/// A mask of one segmentation image: its box (x1, y1, x2, y2 in the image's pixels), area and
/// score (ground truth: the lesion's pixel count and 0; detections: 0 and the score) and COCO
/// run lengths.
struct MaskRecord: Codable {
    var box: [Float]
    var area: Double
    var score: Double
    var counts: [UInt32]

    func rle(height: Int, width: Int) throws -> RLE {
        do { return try RLE(height: height, width: width, counts: counts) } catch {
            throw LabError(name: "mpi", message: "A rank sent a mask that does not fit its \(width)×\(height) image.", code: 1)
        }
    }

    var boundingBox: BoundingBox { BoundingBox(x1: Double(box[0]), y1: Double(box[1]), x2: Double(box[2]), y2: Double(box[3])) }
}

/// One segmentation image's outcome: size, ground truth, kept detections, its predictions.jsonl line.
struct SegmentationRecord: Codable {
    var width: Int, height: Int
    var groundTruth: [MaskRecord]
    var detections: [MaskRecord]
    var line: String
}

/// `affinity-lab evaluate`: the paper's classification metrics (Table 5) and mask AP (Table 4),
/// plus the standard COCO mask AP, over on-disk data sets.
struct Evaluate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Evaluate a model: classification metrics (Table 5) and mask AP (Table 4, author's and COCO's).",
        discussion: """
        Writes to --out: metrics.json (all metrics), report.md (tables laid out like the paper's \
        Tables 4 and 5, then the F1 variants, per-class metrics and COCO stats), confusion_matrix.png, \
        predictions.jsonl (one line per image) and, with a segmentation set, coco_gt.json / \
        coco_results.json for coco-eval. The author's mask AP is a per-image mean (MODEL.md §10); \
        COCO's is dataset-level. Detections below --score-threshold are dropped before both. \
        --data-format / --segmentation-format ID read the sets through dataset-reader plugins (as \
        train does; the split is passed as {"split": …} to covidx-ct and cncb-seg unless \
        --data-options says otherwise); a model whose head is a plugin loads that plugin from the \
        plugin folders. Under mpirun -np N the images are shared out among the ranks (every N-th to \
        each) and rank 0 gathers the results and writes the same report as one process.
        """)

    @Option(help: "Weights (model file, checkpoint or converted original).")
    var weights: String

    @Option(help: "Number of affinities C' (default: from the weights file).")
    var affinities: Int?

    @Option(name: .customLong("classification-data"), help: "Classification set (COVIDx-CT split files, class-prefixed images, or a phantom root).")
    var classificationData: String?

    @Option(name: .customLong("segmentation-data"), help: "Segmentation set (imgs/ + masks/, or a phantom root).")
    var segmentationData: String?

    @Option(help: "Split to evaluate: train, val, test or all (segmentation: val reads the train split file).")
    var split: String = "test"

    @Option(name: .customLong("score-threshold"), help: "Keep detections with at least this score (model default 0.05; the SSM evaluation used 0.75).")
    var scoreThreshold: Double = 0.05

    @Option(name: .customLong("max-images"), help: "Evaluate at most this many images of each set (first in file order).")
    var maxImages: Int?

    @Option(name: .customLong("model-name"), help: "Row label in the tables (default: the weights file name).")
    var modelName: String?

    @Option(help: "Report directory.")
    var out: String = "evaluation"

    @Option(help: "Seed of the RoI-batch padding rule.")
    var seed: UInt64 = 1

    @Flag(help: "Print the metrics as one JSON object.")
    var json = false

    @OptionGroup var formats: DataFormatOptions

    func validate() throws {
        try requirePositive(affinities, "--affinities")
        try requirePositive(maxImages, "--max-images")
        guard DataSplit(rawValue: split) != nil else { throw ValidationError("--split must be train, val, test or all, got \(split)") }
        if classificationData == nil && segmentationData == nil {
            throw ValidationError("give --classification-data and/or --segmentation-data")
        }
    }

    func run() throws {
        try labRun {
            let split = DataSplit(rawValue: self.split)!
            // Check the inputs before loading the model.
            let registry = formats.usesPlugins ? try formats.plugins.registry() : nil
            var usedPlugins: [String] = []
            var cls: (root: String, items: [EvaluationImage])? = nil
            var seg: (root: String, items: [EvaluationSegmentationImage])? = nil
            if let dir = classificationData {
                if let f = formats.dataFormat {
                    let set = try PluginSet(format: f, directory: dir, subfolder: "classification", split: split, options: formats.dataOptions,
                                            registry: registry!)
                    let items = set.labelled.map { EvaluationImage(name: set.root + "/" + $0.name, label: $0.label!, decoded: .gray($0.image)) }
                    guard !items.isEmpty else { throw LabError.badData("the \(f) reader found no labelled sample in \(set.root)") }
                    cls = (set.root, items)
                    usedPlugins += set.plugins
                } else {
                    let set = try ClassificationSet(directory: dir, split: split)
                    cls = (set.root, set.items.map { EvaluationImage(name: $0.path, label: $0.label, decoded: nil) })
                }
            }
            if let dir = segmentationData {
                if let f = formats.segmentationFormat {
                    let set = try PluginSet(format: f, directory: dir, subfolder: "segmentation", split: split, options: formats.dataOptions,
                                            registry: registry!)
                    seg = (set.root, set.samples.map {
                        EvaluationSegmentationImage(name: set.root + "/" + $0.name, mask: nil, decoded: .gray($0.image), instances: $0.instances)
                    })
                    usedPlugins += set.plugins
                } else {
                    let set = try SegmentationSet(directory: dir, split: split)
                    seg = (set.root, set.items.map { EvaluationSegmentationImage(name: $0.image, mask: $0.mask, decoded: nil, instances: nil) })
                }
            }
            let world = try LabCluster.world()
            let model = try labLoadModel(weights, affinities: affinities, pluginDirectories: formats.plugins.pluginDirectories)
            if let h = model.headRecord { usedPlugins.append(h) }
            usedPlugins = usedPlugins.reduce(into: []) { if !$0.contains($1) { $0.append($1) } }
            let name = modelName ?? (weights as NSString).lastPathComponent
            if world.isRoot { try labMakeDirectory(out) }
            let t0 = DispatchTime.now().uptimeNanoseconds
            var report: [String: Any] = [
                "weights": weights, "model": name, "affinities": model.affinities, "split": self.split,
                "score_threshold": scoreThreshold, "head": model.head.headID, "plugins": usedPlugins,
            ]
            if let f = formats.dataFormat, cls != nil { report["data_format"] = f }
            if let f = formats.segmentationFormat, seg != nil { report["segmentation_format"] = f }
            var predictionLines: [String] = []
            let headText = model.headRecord.map { "head \($0)" } ?? "C' = \(model.affinities)"
            var markdown = "# Evaluation of \(name)\n\nWeights `\(weights)`, \(headText), split `\(self.split)`"
                + (usedPlugins.isEmpty ? "" : ", plugins \(usedPlugins.joined(separator: ", "))") + ".\n\n"

            // Every image is predicted first (under mpirun every size-th image on each rank, the
            // outcomes gathered on rank 0 in the images' order); rank 0 alone scores and writes.
            let clsItems = Array((cls?.items ?? []).prefix(maxImages ?? Int.max))
            let segItems = Array((seg?.items ?? []).prefix(maxImages ?? Int.max))
            let clsBar = ProgressBar(total: clsItems.count, label: "classification")
            let showClsBar = cls != nil && !json && clsBar.enabled && world.isRoot
            let clsRecords = try Self.shared(clsItems.count, world: world, bar: showClsBar ? clsBar : nil) { i in
                let item = clsItems[i]
                let r = try predictFile(item.name, model: model, seed: seed, withDetections: false, decoded: item.decoded)
                return ClassificationRecord(predicted: r.prediction.classIndex, line: jsonText([
                    "set": "classification", "image": item.name, "true_class": item.label, "class_index": r.prediction.classIndex,
                    "logits": r.prediction.logits.map { jsonNumber($0) }, "probabilities": r.prediction.probabilities.map { jsonNumber($0) },
                ] as [String: Any]))
            }
            if showClsBar { clsBar.update(clsItems.count); clsBar.finish() }
            let segBar = ProgressBar(total: segItems.count, label: "segmentation")
            let showSegBar = seg != nil && !json && segBar.enabled && world.isRoot
            // Each segmentation image's masks as run lengths and its boxes, then (below) the COCO
            // files and the APs in the images' order.
            let segRecords = try Self.shared(segItems.count, world: world, bar: showSegBar ? segBar : nil) { i in
                let item = segItems[i]
                let r = try predictFile(item.name, model: model, seed: seed, withDetections: true, keepMasks: true, decoded: item.decoded)
                let gt = try item.groundTruth(width: r.width, height: r.height)
                var record = SegmentationRecord(width: r.width, height: r.height, groundTruth: [], detections: [], line: "")
                for inst in gt {
                    let m = try BinaryMask(height: r.height, width: r.width, pixels: inst.mask)
                    record.groundTruth.append(MaskRecord(box: [inst.box.x1, inst.box.y1, inst.box.x2, inst.box.y2], area: Double(inst.area), score: 0,
                                                         counts: RLE(mask: m).counts))
                }
                var kept: [[String: Any]] = []
                for (k, d) in r.prediction.detections.enumerated() where Double(d.score) >= scoreThreshold {
                    let m = try BinaryMask(height: r.height, width: r.width, probabilities: r.masks[k], threshold: 0.5)
                    let b = r.boxes[k]
                    record.detections.append(MaskRecord(box: [b.x1, b.y1, b.x2, b.y2], area: 0, score: Double(d.score), counts: RLE(mask: m).counts))
                    kept.append(["box": jsonBox(b), "score": jsonNumber(d.score), "mask_area": r.maskAreas[k]])
                }
                record.line = jsonText([
                    "set": "segmentation", "image": item.name, "image_id": i + 1, "ground_truth_lesions": gt.count, "detections": kept,
                ] as [String: Any])
                return record
            }
            if showSegBar { segBar.update(segItems.count); segBar.finish() }
            guard let clsRecords, let segRecords else { return }

            if let cls {
                let items = clsItems
                var confusion = ConfusionMatrix(classCount: 3)
                let records = clsRecords
                for (item, record) in zip(items, records) {
                    try confusion.record(trueClass: item.label, predictedClass: record.predicted)
                    predictionLines.append(record.line)
                }
                let metrics = ClassificationMetrics(confusion: confusion)
                report["classification"] = try jsonObject(metrics)
                report["classification_data"] = cls.root
                report["classification_images"] = items.count
                markdown += Self.classificationMarkdown(name: name, metrics: metrics, images: items.count, root: cls.root)
                do {
                    try PNG.write(try ConfusionMatrixPlot.render(confusion.rows), to: out + "/confusion_matrix.png")
                } catch let e as ImageError { throw LabError(name: "io", message: e.description, code: 1) }
            }

            if let seg {
                let items = segItems
                var apImages: [(gt: [RLE], predictions: [(mask: RLE, score: Double)])] = []
                var cocoImages: [COCOImage] = [], annotations: [COCOAnnotation] = [], results: [COCOResult] = []
                let records = segRecords
                for (i, (item, record)) in zip(items, records).enumerated() {
                    let imageID = i + 1
                    cocoImages.append(COCOImage(id: imageID, width: record.width, height: record.height, fileName: (item.name as NSString).lastPathComponent))
                    var gtRLEs: [RLE] = [], predictions: [(mask: RLE, score: Double)] = []
                    for g in record.groundTruth {
                        let rle = try g.rle(height: record.height, width: record.width)
                        gtRLEs.append(rle)
                        annotations.append(COCOAnnotation(id: annotations.count + 1, imageID: imageID, categoryID: 1, segmentation: .rle(rle),
                                                          bbox: g.boundingBox, area: g.area))
                    }
                    for d in record.detections {
                        let rle = try d.rle(height: record.height, width: record.width)
                        predictions.append((rle, d.score))
                        results.append(COCOResult(imageID: imageID, categoryID: 1, score: d.score, segmentation: .rle(rle), bbox: d.boundingBox))
                    }
                    apImages.append((gtRLEs, predictions))
                    predictionLines.append(record.line)
                }
                let author = try AuthorMaskAP.evaluate(rleImages: apImages)
                let groundTruth = COCOGroundTruth(images: cocoImages, annotations: annotations, categories: [COCOCategory(id: 1, name: "lesion")])
                let cocoSegm = try COCOEvaluator(groundTruth: groundTruth, results: results, iouType: .segm).evaluate()
                let cocoBox = try COCOEvaluator(groundTruth: groundTruth, results: results, iouType: .bbox).evaluate()
                do {
                    try AtomicFile.write([UInt8](try groundTruth.jsonData()), to: out + "/coco_gt.json")
                    try AtomicFile.write([UInt8](try COCOResult.jsonData(results)), to: out + "/coco_results.json")
                } catch { throw LabError(name: "io", message: sentence(String(describing: error)), code: 1) }
                var authorJSON = try jsonObject(author) as? [String: Any] ?? [:]
                authorJSON["perImage"] = nil   // per-image values are in predictions.jsonl's order; keep the file small
                report["segmentation"] = [
                    "author_mask_ap": authorJSON, "author_ap_per_image": author.perImage,
                    "coco_segm": Self.cocoJSON(cocoSegm), "coco_bbox": Self.cocoJSON(cocoBox),
                    "images": items.count, "ground_truth_lesions": annotations.count, "detections": results.count,
                ] as [String: Any]
                report["segmentation_data"] = seg.root
                markdown += Self.segmentationMarkdown(name: name, author: author, segm: cocoSegm, bbox: cocoBox, images: items.count,
                                                      lesions: annotations.count, detections: results.count, root: seg.root)
            }
            report["seconds"] = secondsSince(t0)
            try labWriteText(jsonText(report, pretty: true) + "\n", to: out + "/metrics.json")
            try labWriteText(markdown, to: out + "/report.md")
            try labWriteText(predictionLines.joined(separator: "\n") + (predictionLines.isEmpty ? "" : "\n"), to: out + "/predictions.jsonl")
            if json {
                print(jsonText(report))
            } else {
                print(markdown)
                print("wrote \(out)/metrics.json, \(out)/report.md" + (cls != nil ? ", \(out)/confusion_matrix.png" : ""))
            }
        }
    }

    /// `body` over the items 0..<count: all of them here, or under mpirun every size-th on each
    /// rank, gathered on rank 0 in the items' order. Rank 0 gets the results, the others nil.
    static func shared<T: Codable>(_ count: Int, world: World, bar: ProgressBar?, _ body: (Int) throws -> T) throws -> [T]? {
        var mine: [IndexedResult<T>] = []
        let indices = world.size > 1 ? LabCluster.share(of: count, world: world) : Array(0..<count)
        for (k, i) in indices.enumerated() {
            bar?.update(k * world.size)
            mine.append(IndexedResult(index: i, value: try body(i)))
        }
        if world.size == 1 { return mine.map(\.value) }
        return try LabCluster.gatherInOrder(mine, world: world)
    }

    static func cocoJSON(_ s: COCOSummary) -> [String: Any] {
        var d: [String: Any] = ["stats": s.stats]
        for (n, v) in zip(COCOSummary.names, s.stats) { d[n] = v }
        return d
    }

    static func classificationMarkdown(name: String, metrics m: ClassificationMetrics, images: Int, root: String) -> String {
        let p = PaperTables.percent
        var s = "## Classification (layout of Table 5)\n\n\(images) images from `\(root)`.\n\n"
        s += PaperTables.table5([(model: name, metrics: m)])
        s += "\n### F1, four ways\n\n| F1 | value |\n|---|---:|\n"
        s += "| author's test script (weights \(m.authorF1Weights.map { String(format: "%.4g", $0) }.joined(separator: "/")), \(m.authorF1Weighting.rawValue)) | \(p(m.authorF1)) |\n"
        s += "| paper Eq. 14 (class shares) | \(p(m.paperEq14F1)) |\n| macro | \(p(m.macroF1)) |\n| support-weighted | \(p(m.weightedF1)) |\n"
        s += "\n### Per class\n\n| Class | Support | Sensitivity | Precision | Specificity | F1 |\n|---|---:|---:|---:|---:|---:|\n"
        for c in 0..<m.confusion.classCount {
            s += "| \(classNames[c]) | \(m.support[c]) | \(p(m.sensitivity[c])) | \(p(m.precision[c])) | \(p(m.specificity[c])) | \(p(m.f1[c])) |\n"
        }
        s += "\n### Confusion matrix (rows: true class, columns: predicted)\n\n| | " + classNames.joined(separator: " | ") + " |\n|---|---:|---:|---:|\n"
        for (c, row) in m.confusion.rows.enumerated() { s += "| \(classNames[c]) | " + row.map(String.init).joined(separator: " | ") + " |\n" }
        s += "\nOverall accuracy \(p(m.accuracy)) %. ![confusion matrix](confusion_matrix.png)\n\n"
        return s
    }

    static func segmentationMarkdown(name: String, author: AuthorAPResult, segm: COCOSummary, bbox: COCOSummary, images: Int, lesions: Int,
                                     detections: Int, root: String) -> String {
        var s = "## Segmentation (layout of Table 4)\n\n\(images) images from `\(root)`, \(lesions) ground-truth lesions, \(detections) detections.\n\n"
        s += "Author's per-image mask AP (MODEL.md §10):\n\n" + PaperTables.table4([(model: name, result: author)])
        s += "\nCOCO (dataset-level, 101-point):\n\n| | " + COCOSummary.names.joined(separator: " | ") + " |\n|---|" + String(repeating: "---:|", count: 12) + "\n"
        s += "| mask | " + segm.stats.map { PaperTables.percent($0 < 0 ? nil : $0) }.joined(separator: " | ") + " |\n"
        s += "| box | " + bbox.stats.map { PaperTables.percent($0 < 0 ? nil : $0) }.joined(separator: " | ") + " |\n\n"
        return s
    }
}
