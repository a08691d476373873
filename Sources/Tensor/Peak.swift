import CBLAS
import Foundation

/// The machine's measured single-precision GEMM rate, the roof of `affinity-lab bench …
/// --roofline` (issue 18): the best of `repeats` runs of one large product C[n×n] = A·B, by the
/// engine's `sgemm` (kgemm where the processor has AVX-512 or AVX2) and by OpenBLAS, on `threads` threads.
public struct SGEMMPeak: Sendable {
    /// GFLOP/s (2 flops per multiply-add) of the engine's `sgemm` and of OpenBLAS's `cblas_sgemm`.
    public var engine: Double, openblas: Double
    /// The larger of the two: the roof the stages are measured against.
    public var best: Double { max(engine, openblas) }
    /// The product's side.
    public var size: Int

    /// Measures both on `threads` threads (Engine.threads is restored afterwards).
    public static func measure(size n: Int = 1536, repeats: Int = 5, threads: Int = Engine.threads) -> SGEMMPeak {
        let saved = Engine.threads
        Engine.threads = threads
        defer { Engine.threads = saved }
        let a = Tensor(shape: [n, n]), b = Tensor(shape: [n, n]), c = Tensor(shape: [n, n])
        for i in 0..<(n * n) {
            a.data[i] = Float(i % 17) * 0.01 - 0.08
            b.data[i] = Float(i % 13) * 0.01 - 0.06
        }
        func best(_ product: () -> Void) -> Double {
            product()  // warm-up: packing buffers, OpenBLAS's threads
            var fastest = Double.infinity
            for _ in 0..<max(repeats, 1) {
                let t0 = DispatchTime.now().uptimeNanoseconds
                product()
                fastest = min(fastest, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
            }
            return 2 * Double(n) * Double(n) * Double(n) / fastest / 1e9
        }
        let engine = best { sgemm(m: n, n: n, k: n, a: a.data, lda: n, b: b.data, ldb: n, c: c.data, ldc: n) }
        let openblas = best { openblasSGEMM(transA: false, transB: false, m: n, n: n, k: n, alpha: 1, a: a.data, lda: n, b: b.data, ldb: n, beta: 0, c: c.data, ldc: n) }
        return SGEMMPeak(engine: engine, openblas: openblas, size: n)
    }
}
