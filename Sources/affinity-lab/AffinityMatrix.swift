import Affinity
import ArgumentParser
import Foundation
import Imaging
import Tensor

/// `affinity-lab affinity-matrix`: the affinity matrix X2 (C' × 256) of one slice as a diverging
/// heatmap (blue negative, white zero, red positive, like the paper's Fig. 3) and as CSV.
struct AffinityMatrixCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "affinity-matrix",
        abstract: "Render the affinity matrix X2 (C'×256) of a slice as a heatmap PNG (and CSV).")

    @Option(help: "Weights (model file, checkpoint or converted original).")
    var weights: String

    @Option(help: "Number of affinities C' (default: from the weights file).")
    var affinities: Int?

    @Option(help: "Output PNG (rows = affinities, columns = the 256 features).")
    var out: String

    @Option(help: "Also write the matrix as CSV (one row per affinity).")
    var csv: String?

    @Option(name: .customLong("cell-size"), help: "Pixels per matrix cell.")
    var cellSize = 4

    @Option(help: "Seed of the RoI-batch padding rule.")
    var seed: UInt64 = 1

    @Flag(help: "Print a JSON summary.")
    var json = false

    @Argument(help: "PNG slice.")
    var image: String

    func validate() throws {
        try requirePositive(affinities, "--affinities")
        try requirePositive(cellSize, "--cell-size")
    }

    func run() throws {
        try labRun {
            let model = try labLoadModel(weights, affinities: affinities)
            let r = try predictFile(image, model: model, seed: seed, withDetections: false)
            let x2 = r.prediction.affinityMatrix
            guard x2.shape.count == 2 else { throw LabError.failed("the affinity matrix has shape \(x2.shape), expected [C', 256]") }
            let rows = x2.shape[0], cols = x2.shape[1]
            let values = x2.array
            do {
                try PNG.write(try Heatmap.render(values, rows: rows, cols: cols, cellSize: cellSize), to: out)
                if let csv { try Heatmap.writeCSV(values, rows: rows, cols: cols, to: csv) }
            } catch let e as ImageError {
                throw LabError(name: "io", message: e.description, code: 1)
            }
            let finite = values.filter { $0.isFinite }
            let lo = finite.min() ?? 0, hi = finite.max() ?? 0
            if json {
                print(jsonText(["image": image, "rows": rows, "cols": cols, "min": jsonNumber(lo), "max": jsonNumber(hi),
                                "class": r.prediction.className, "class_index": r.prediction.classIndex, "png": out, "csv": csv ?? NSNull()] as [String: Any]))
            } else {
                print("X2 \(rows)×\(cols), values in [\(lo), \(hi)] → \(out)\(csv.map { " and \($0)" } ?? "") (predicted \(r.prediction.className))")
            }
        }
    }
}
