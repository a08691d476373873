import Foundation
import Tensor

/// The roofline report of `bench predict --roofline` and `bench train-step --roofline` (issue 18):
/// per stage the multiply-adds the engine's products did (Tensor's `MultiplyAdds`, so after
/// Winograd), the stage's time, the rate achieved (2 flops per multiply-add) and its fraction of the
/// SGEMM peak measured in the same run on the same thread count. A stage's time includes its work
/// outside products (pooling, normalisation, sorting), which is why a stage can sit well under the roof.
struct Roofline {
    struct Row { var stage: String; var multiplyAdds: Int; var seconds: Double }
    var rows: [Row]
    var peak: SGEMMPeak

    static func measure(rows: [Row]) -> Roofline {
        Roofline(rows: rows, peak: SGEMMPeak.measure(threads: Engine.threads))
    }

    func gflops(_ r: Row) -> Double { r.seconds > 0 ? 2 * Double(r.multiplyAdds) / r.seconds / 1e9 : 0 }

    var json: [String: Any] {
        [
            "peak_gflops": peak.best, "peak_engine_gflops": peak.engine, "peak_openblas_gflops": peak.openblas,
            "peak_size": peak.size, "threads": Engine.threads,
            "stages": rows.map { r -> [String: Any] in
                ["stage": r.stage, "gmac": Double(r.multiplyAdds) / 1e9, "seconds": r.seconds, "gflops": gflops(r),
                 "fraction_of_peak": peak.best > 0 ? gflops(r) / peak.best : 0]
            },
        ]
    }

    func print() {
        Swift.print(String(format: "roofline, %d thread(s): SGEMM peak %.1f GFLOP/s (%d³: engine %.1f, OpenBLAS %.1f)",
                           Engine.threads, peak.best, peak.size, peak.engine, peak.openblas))
        Swift.print("  stage                      GMAC      time     GFLOP/s   of peak")
        for r in rows {
            Swift.print("  " + r.stage.padding(toLength: 22, withPad: " ", startingAt: 0)
                        + String(format: " %8.2f %8.4f s %9.1f %8.0f %%", Double(r.multiplyAdds) / 1e9, r.seconds, gflops(r),
                                 peak.best > 0 ? 100 * gflops(r) / peak.best : 0))
        }
    }
}
