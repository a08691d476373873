import ArgumentParser
import Evaluation
import Foundation

/// `affinity-lab coco-eval`: standard COCO metrics of any COCO-format results against COCO-format
/// ground truth (pycocotools' COCOeval: evaluate, accumulate, summarize).
struct CocoEval: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coco-eval",
        abstract: "Score COCO-format results against COCO-format ground truth (AP, AP50, AP75, APs/m/l, AR1/10/100, ARs/m/l).")

    @Option(help: "Ground-truth file (COCO instances JSON).")
    var gt: String

    @Option(help: "Results file (COCO results JSON: a list of {image_id, category_id, score, segmentation|bbox}).")
    var dt: String

    @Option(name: .customLong("iou-type"), help: "segm (mask IoU) or bbox.")
    var iouType: String = "segm"

    @Flag(help: "Print one JSON object.")
    var json = false

    func validate() throws {
        guard COCOIoUType(rawValue: iouType) == .segm || COCOIoUType(rawValue: iouType) == .bbox else {
            throw ValidationError("--iou-type must be segm or bbox, got \(iouType)")
        }
    }

    func run() throws {
        try labRun {
            let type = COCOIoUType(rawValue: iouType)!
            let summary = try Self.evaluate(gtPath: gt, dtPath: dt, iouType: type)
            if json {
                var stats: [String: Any] = [:]
                for (n, v) in zip(COCOSummary.names, summary.stats) { stats[n] = v }
                print(jsonText(["iou_type": iouType, "stats": summary.stats, "named": stats, "gt": gt, "dt": dt] as [String: Any]))
            } else {
                print(Self.text(summary, iouType: iouType))
            }
        }
    }

    static func evaluate(gtPath: String, dtPath: String, iouType: COCOIoUType) throws -> COCOSummary {
        for p in [gtPath, dtPath] where !fileExists(p) { throw LabError.missingFile(p) }
        let gt: COCOGroundTruth, dt: [COCOResult]
        do { gt = try COCOGroundTruth(contentsOf: URL(fileURLWithPath: gtPath)) } catch { throw LabError.badJSON(gtPath, String(describing: error)) }
        do { dt = try COCOResult.list(contentsOf: URL(fileURLWithPath: dtPath)) } catch { throw LabError.badJSON(dtPath, String(describing: error)) }
        do { return try COCOEvaluator(groundTruth: gt, results: dt, iouType: iouType).evaluate() } catch {
            throw LabError.badData(String(describing: error))
        }
    }

    /// pycocotools' `summarize()` lines.
    static func text(_ s: COCOSummary, iouType: String) -> String {
        let rows: [(String, String, String, String)] = [
            ("Average Precision", "(AP)", "0.50:0.95", "all"), ("Average Precision", "(AP)", "0.50", "all"),
            ("Average Precision", "(AP)", "0.75", "all"), ("Average Precision", "(AP)", "0.50:0.95", "small"),
            ("Average Precision", "(AP)", "0.50:0.95", "medium"), ("Average Precision", "(AP)", "0.50:0.95", "large"),
            ("Average Recall", "(AR)", "0.50:0.95", "all"), ("Average Recall", "(AR)", "0.50:0.95", "all"),
            ("Average Recall", "(AR)", "0.50:0.95", "all"), ("Average Recall", "(AR)", "0.50:0.95", "small"),
            ("Average Recall", "(AR)", "0.50:0.95", "medium"), ("Average Recall", "(AR)", "0.50:0.95", "large"),
        ]
        let maxDets = [100, 100, 100, 100, 100, 100, 1, 10, 100, 100, 100, 100]
        var lines = ["iouType \(iouType)"]
        for (i, r) in rows.enumerated() {
            let area = r.3.padding(toLength: 6, withPad: " ", startingAt: 0)
            let iou = r.2.padding(toLength: 9, withPad: " ", startingAt: 0)
            let md = String(maxDets[i]).padding(toLength: 3, withPad: " ", startingAt: 0)
            lines.append(" \(r.0.padding(toLength: 17, withPad: " ", startingAt: 0)) \(r.1) @[ IoU=\(iou) | area=\(area) | maxDets=\(md) ] = "
                         + String(format: "%.3f", s.stats[i]))
        }
        return lines.joined(separator: "\n")
    }
}
