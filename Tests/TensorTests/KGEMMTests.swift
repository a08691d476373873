// kgemm (the AVX-512 GEMM) against OpenBLAS's cblas_sgemm: every transpose case, odd shapes that
// leave partial register tiles, panels and 16×16 transposes, the thin-product path (≤ 4 rows),
// alpha, beta (beta = 0 never reads C), one thread and two.
@testable import Tensor
import Testing
import TestSupport

@Suite("kgemm against OpenBLAS", .serialized)
struct KGEMMTests {
    struct Case: CustomStringConvertible, Sendable {
        var m: Int, n: Int, k: Int, transA: Bool, transB: Bool, alpha: Float, beta: Float
        var description: String { "\(m)×\(n)×\(k) tA=\(transA) tB=\(transB) α=\(alpha) β=\(beta)" }
    }

    static let cases: [Case] = [
        Case(m: 1, n: 1, k: 1, transA: false, transB: false, alpha: 1, beta: 0),
        Case(m: 13, n: 31, k: 7, transA: false, transB: false, alpha: 1, beta: 0),
        Case(m: 64, n: 1000, k: 576, transA: false, transB: false, alpha: 1, beta: 0),
        Case(m: 200, n: 1030, k: 600, transA: false, transB: true, alpha: 1, beta: 1),
        Case(m: 129, n: 77, k: 300, transA: true, transB: false, alpha: 0.5, beta: 0),
        Case(m: 57, n: 65, k: 513, transA: true, transB: true, alpha: 2, beta: -1),
        Case(m: 300, n: 40, k: 1100, transA: false, transB: false, alpha: 1, beta: 0.25),
        Case(m: 15, n: 2049, k: 260, transA: false, transB: true, alpha: 1, beta: 0),
        // At most 4 rows and no transposes: kgemm_small_m, unpacked.
        Case(m: 2, n: 2352, k: 256, transA: false, transB: false, alpha: 1, beta: 0),
        Case(m: 3, n: 70, k: 600, transA: false, transB: false, alpha: 0.5, beta: 1),
        Case(m: 4, n: 5000, k: 300, transA: false, transB: false, alpha: 1, beta: -0.5),
        Case(m: 2, n: 33, k: 40, transA: false, transB: true, alpha: 1, beta: 0),
    ]

    @Test(arguments: cases, [1, 2])
    func agreesWithOpenBLAS(_ c: Case, _ threads: Int) throws {
        guard Engine.kgemmAvailable else {
            // Without AVX-512 every GEMM is OpenBLAS's; nothing else to compare.
            #expect(!Engine.useKGEMM)
            return
        }
        let (m, n, k) = (c.m, c.n, c.k)
        let a = randomTensor(c.transA ? [k, m] : [m, k], seed: 1)
        let b = randomTensor(c.transB ? [n, k] : [k, n], seed: 2)
        let c0 = randomTensor([m, n], seed: 3)
        let lda = c.transA ? m : k, ldb = c.transB ? k : n
        // Both GEMMs called directly: the process-wide settings stay as they are (other suites run
        // at the same time).
        func run(_ useKGEMM: Bool) -> Tensor {
            let out = Tensor(shape: [m, n])
            if c.beta == 0 { out.fill(.nan) } else { for i in 0..<out.count { out.data[i] = c0.data[i] } }
            if useKGEMM {
                kgemm(transA: c.transA, transB: c.transB, m: m, n: n, k: k, alpha: c.alpha, a: a.data, lda: lda,
                      b: b.data, ldb: ldb, beta: c.beta, c: out.data, ldc: n, threads: threads)
            } else {
                openblasSGEMM(transA: c.transA, transB: c.transB, m: m, n: n, k: k, alpha: c.alpha, a: a.data, lda: lda,
                              b: b.data, ldb: ldb, beta: c.beta, c: out.data, ldc: n)
            }
            return out
        }
        let ours = run(true), reference = run(false)
        let cmp = compare(ours, reference)
        #expect(cmp.maxAbsError <= 1e-5 * max(1, cmp.maxExpectedMagnitude), "\(c), \(threads) threads: \(cmp)")
        var finite = true
        for i in 0..<ours.count where !ours.data[i].isFinite { finite = false }
        #expect(finite, "beta = 0 must not read C (it held NaN)")
    }

    @Test func sameResultForAnyThreadCount() throws {
        guard Engine.kgemmAvailable else { return }
        let a = randomTensor([100, 700], seed: 4), b = randomTensor([700, 300], seed: 5)
        let x = Tensor(shape: [100, 300]), y = Tensor(shape: [100, 300])
        kgemm(transA: false, transB: false, m: 100, n: 300, k: 700, alpha: 1, a: a.data, lda: 700, b: b.data, ldb: 300,
              beta: 0, c: x.data, ldc: 300, threads: 1)
        kgemm(transA: false, transB: false, m: 100, n: 300, k: 700, alpha: 1, a: a.data, lda: 700, b: b.data, ldb: 300,
              beta: 0, c: y.data, ldc: 300, threads: 2)
        var same = true
        for i in 0..<x.count where x.data[i] != y.data[i] { same = false }
        #expect(same, "a GEMM's result must not depend on the thread split (resumed training relies on it)")
    }
}
