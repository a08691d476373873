import Affinity
import ArgumentParser
import Detection
import Evaluation
import Foundation
import Imaging
import Tensor

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
        COCO's is dataset-level. Detections below --score-threshold are dropped before both.
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
            let cls = try classificationData.map { try ClassificationSet(directory: $0, split: split) }
            let seg = try segmentationData.map { try SegmentationSet(directory: $0, split: split) }
            let model = try labLoadModel(weights, affinities: affinities)
            let name = modelName ?? (weights as NSString).lastPathComponent
            try labMakeDirectory(out)
            let t0 = DispatchTime.now().uptimeNanoseconds
            var report: [String: Any] = [
                "weights": weights, "model": name, "affinities": model.affinities, "split": self.split,
                "score_threshold": scoreThreshold,
            ]
            var predictionLines: [String] = []
            var markdown = "# Evaluation of \(name)\n\nWeights `\(weights)`, C' = \(model.affinities), split `\(self.split)`.\n\n"

            if let cls {
                let items = Array(cls.items.prefix(maxImages ?? Int.max))
                var confusion = ConfusionMatrix(classCount: 3)
                let bar = ProgressBar(total: items.count, label: "classification")
                let showBar = !json && bar.enabled
                for (i, item) in items.enumerated() {
                    if showBar { bar.update(i) }
                    let r = try predictFile(item.path, model: model, seed: seed, withDetections: false)
                    try confusion.record(trueClass: item.label, predictedClass: r.prediction.classIndex)
                    predictionLines.append(jsonText([
                        "set": "classification", "image": item.path, "true_class": item.label, "class_index": r.prediction.classIndex,
                        "logits": r.prediction.logits.map { jsonNumber($0) }, "probabilities": r.prediction.probabilities.map { jsonNumber($0) },
                    ] as [String: Any]))
                }
                if showBar { bar.update(items.count); bar.finish() }
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
                let items = Array(seg.items.prefix(maxImages ?? Int.max))
                var apImages: [AuthorAPImage] = []
                var cocoImages: [COCOImage] = [], annotations: [COCOAnnotation] = [], results: [COCOResult] = []
                let bar = ProgressBar(total: items.count, label: "segmentation")
                let showBar = !json && bar.enabled
                for (i, item) in items.enumerated() {
                    if showBar { bar.update(i) }
                    let r = try predictFile(item.image, model: model, seed: seed, withDetections: true, keepMasks: true)
                    let imageID = i + 1
                    cocoImages.append(COCOImage(id: imageID, width: r.width, height: r.height, fileName: (item.image as NSString).lastPathComponent))
                    let gt = try SegmentationSet.instances(maskPath: item.mask, width: r.width, height: r.height)
                    var gtMasks: [BinaryMask] = []
                    for inst in gt {
                        let m = try BinaryMask(height: r.height, width: r.width, pixels: inst.mask)
                        gtMasks.append(m)
                        annotations.append(COCOAnnotation(id: annotations.count + 1, imageID: imageID, categoryID: 1, segmentation: .rle(RLE(mask: m)),
                                                          bbox: BoundingBox(x1: Double(inst.box.x1), y1: Double(inst.box.y1), x2: Double(inst.box.x2), y2: Double(inst.box.y2)),
                                                          area: Double(inst.area)))
                    }
                    var preds: [ScoredMask] = []
                    var kept: [[String: Any]] = []
                    for (k, d) in r.prediction.detections.enumerated() where Double(d.score) >= scoreThreshold {
                        let m = try BinaryMask(height: r.height, width: r.width, probabilities: r.masks[k], threshold: 0.5)
                        preds.append(ScoredMask(mask: m, score: Double(d.score)))
                        let b = r.boxes[k]
                        results.append(COCOResult(imageID: imageID, categoryID: 1, score: Double(d.score), segmentation: .rle(RLE(mask: m)),
                                                  bbox: BoundingBox(x1: Double(b.x1), y1: Double(b.y1), x2: Double(b.x2), y2: Double(b.y2))))
                        kept.append(["box": jsonBox(b), "score": jsonNumber(d.score), "mask_area": r.maskAreas[k]])
                    }
                    apImages.append(AuthorAPImage(groundTruth: gtMasks, predictions: preds))
                    predictionLines.append(jsonText([
                        "set": "segmentation", "image": item.image, "image_id": imageID, "ground_truth_lesions": gt.count, "detections": kept,
                    ] as [String: Any]))
                }
                if showBar { bar.update(items.count); bar.finish() }
                let author = try AuthorMaskAP.evaluate(images: apImages)
                let groundTruth = COCOGroundTruth(images: cocoImages, annotations: annotations, categories: [COCOCategory(id: 1, name: "lesion")])
                let cocoSegm = try COCOEvaluator(groundTruth: groundTruth, results: results, iouType: .segm).evaluate()
                let cocoBox = try COCOEvaluator(groundTruth: groundTruth, results: results, iouType: .bbox).evaluate()
                do {
                    try Imaging.AtomicFile.write([UInt8](try groundTruth.jsonData()), to: out + "/coco_gt.json")
                    try Imaging.AtomicFile.write([UInt8](try COCOResult.jsonData(results)), to: out + "/coco_results.json")
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
