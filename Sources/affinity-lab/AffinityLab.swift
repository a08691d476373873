import ArgumentParser
import Tensor
import Foundation

/// The offline tool for research and scripting: benchmarks now; predict, train, finetune,
/// evaluate, phantoms and affinity-matrix as the model lands.
@main
struct AffinityLab: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "affinity-lab",
        abstract: "Offline tool for the One Shot Affinity Model: benchmarks, prediction, training, evaluation.",
        subcommands: [Bench.self, Predict.self, Phantoms.self, Train.self, Finetune.self, AffinityMatrixCommand.self, Evaluate.self,
                      CocoEval.self, Plugins.self, Export.self, Decode.self, Scan.self, PhantomScan.self])

    static func main() {
        Engine.holdFreedMemory()
        do {
            var command = try parseAsRoot()
            try command.run()
            LabCluster.finish(exitCode: nil)
        } catch {
            // A rank of several that fails ends the whole job (MPI_Abort), not only itself.
            LabCluster.finish(exitCode: exitCode(for: error).rawValue)
            exit(withError: error)
        }
    }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure the engine and the model (figures, not tests).",
        subcommands: [BenchKernels.self, BenchSegmentation.self, BenchPredict.self, BenchTrainStep.self, BenchAllreduce.self])
}

/// Options shared by the benchmarks.
struct BenchOptions: ParsableArguments {
    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    @Option(help: "Timed repetitions per measurement (the median is reported).")
    var repeats = 5

    @Option(help: "Threads for OpenBLAS and the parallel loops (default: all cores).")
    var threads: Int?
}

/// Writes a JSON value to stdout with sorted keys.
func printJSON(_ value: Any) {
    if let d = try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys]), let s = String(data: d, encoding: .utf8) {
        print(s)
    }
}

/// Median wall time of `repeats` runs of `body` after one warm-up run.
func medianSeconds(repeats: Int, _ body: () throws -> Void) rethrows -> Double {
    try body()
    var times: [Double] = []
    for _ in 0..<max(repeats, 1) {
        let t0 = DispatchTime.now().uptimeNanoseconds
        try body()
        times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
    }
    times.sort()
    return times[times.count / 2]
}
