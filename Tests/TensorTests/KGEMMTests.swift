// kgemm (the package's GEMM: its AVX-512 and its AVX2 micro-kernels, each where the processor has
// it) against OpenBLAS's cblas_sgemm: every transpose case, odd shapes that leave partial register
// tiles, panels and 16×16 transposes, the thin-product path (≤ 4 rows), alpha, beta (beta = 0 never
// reads C), one thread and two.
import Foundation
import CKernels
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

    /// The kernels this processor can run (every AVX-512 processor has AVX2 and FMA too).
    static let paths: [VectorISA] = Engine.hasAVX512 ? [.avx512, .avx2] : Engine.kgemmAvailable ? [.avx2] : []

    @Test func pathFollowsTheProcessor() {
        if Engine.kgemmAvailable { #expect(Self.paths.contains(Engine.kgemmPath)) }
        if !Engine.kgemmAvailable { #expect(!Engine.useKGEMM) }
    }

    /// The processor as /proc/cpuinfo describes it: vendor, family, whether it has AVX-512F.
    static func cpuinfo() throws -> (vendor: String, family: Int, avx512: Bool) {
        let text = try String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)
        func field(_ name: String) -> String? {
            text.split(separator: "\n").first { $0.hasPrefix(name) }.flatMap { $0.split(separator: ":", maxSplits: 1).last }
                .map { $0.trimmingCharacters(in: .whitespaces) }
        }
        let flags = field("flags")?.split(separator: " ") ?? []
        return (field("vendor_id") ?? "", Int(field("cpu family") ?? "") ?? -1, flags.contains("avx512f"))
    }

    @Test func instructionSetChosenPerProcessor() throws {
        let cpu = try Self.cpuinfo()
        #expect(Engine.hasAVX512 == cpu.avx512)
        // Zen 4 (AMD family 25 with AVX-512) splits 512-bit instructions; Intel and later AMD do not.
        #expect(Engine.splitsAVX512 == (cpu.vendor == "AuthenticAMD" && cpu.family == 25 && cpu.avx512), "\(cpu)")
        guard Engine.kgemmAvailable else { #expect(Engine.chooseISA(nil) == nil); return }
        #expect(Engine.chooseISA(nil) == (cpu.avx512 && !Engine.splitsAVX512 ? .avx512 : .avx2))
        #expect(Engine.chooseISA("avx2") == .avx2)
        #expect(Engine.chooseISA("avx512") == (cpu.avx512 ? .avx512 : Engine.chooseISA(nil)))
        #expect(Engine.chooseISA("something else") == Engine.chooseISA(nil))
        // The process's own choice (the suite runs without AFFINITY_ISA, or with one of the two).
        let requested = ProcessInfo.processInfo.environment["AFFINITY_ISA"]
        #expect(Engine.vectorISA == Engine.chooseISA(requested))
    }

    @Test(arguments: cases, [1, 2])
    func agreesWithOpenBLAS(_ c: Case, _ threads: Int) throws {
        for path in Self.paths { try agrees(c, threads, path) }
    }

    func agrees(_ c: Case, _ threads: Int, _ path: VectorISA) throws {
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
                      b: b.data, ldb: ldb, beta: c.beta, c: out.data, ldc: n, threads: threads, path: path)
            } else {
                openblasSGEMM(transA: c.transA, transB: c.transB, m: m, n: n, k: k, alpha: c.alpha, a: a.data, lda: lda,
                              b: b.data, ldb: ldb, beta: c.beta, c: out.data, ldc: n)
            }
            return out
        }
        let ours = run(true), reference = run(false)
        let cmp = compare(ours, reference)
        #expect(cmp.maxAbsError <= 1e-5 * max(1, cmp.maxExpectedMagnitude), "\(path) \(c), \(threads) threads: \(cmp)")
        var finite = true
        for i in 0..<ours.count where !ours.data[i].isFinite { finite = false }
        #expect(finite, "beta = 0 must not read C (it held NaN)")
    }

    /// A packed once (kgemm_pack_a) and used for a product gives kgemm_block's bits: partial panels,
    /// several k blocks, beta 0 and 1.
    @Test(arguments: paths)
    func prepackedAGivesTheSameBits(_ path: VectorISA) throws {
        for (m, n, k, beta) in [(13, 31, 7, Float(0)), (256, 600, 256, Float(0)), (301, 70, 700, Float(1)), (5, 1100, 513, Float(1))] {
            let a = randomTensor([m, k], seed: 7), b = randomTensor([k, n], seed: 8), c0 = randomTensor([m, n], seed: 9)
            let x = Tensor(shape: [m, n]), y = Tensor(shape: [m, n])
            for i in 0..<x.count { x.data[i] = c0.data[i]; y.data[i] = c0.data[i] }
            let floats = path == .avx512 ? kgemm_packed_a_floats(Int32(m), Int32(k)) : kgemm_avx2_packed_a_floats(Int32(m), Int32(k))
            #expect(floats >= m * k)
            let ap = UnsafeMutablePointer<Float>.allocate(capacity: floats)
            defer { ap.deallocate() }
            if path == .avx512 {
                kgemm_pack_a(Int32(m), Int32(k), a.data, Int32(k), ap)
                kgemm_block(0, 0, 0, Int32(m), 0, Int32(n), Int32(k), 1.5, a.data, Int32(k), b.data, Int32(n), beta, x.data, Int32(n))
                kgemm_block_packed_a(0, Int32(m), 0, Int32(n), Int32(k), 1.5, ap, Int32(m), b.data, Int32(n), beta, y.data, Int32(n))
            } else {
                kgemm_avx2_pack_a(Int32(m), Int32(k), a.data, Int32(k), ap)
                kgemm_avx2_block(0, 0, 0, Int32(m), 0, Int32(n), Int32(k), 1.5, a.data, Int32(k), b.data, Int32(n), beta, x.data, Int32(n))
                kgemm_avx2_block_packed_a(0, Int32(m), 0, Int32(n), Int32(k), 1.5, ap, Int32(m), b.data, Int32(n), beta, y.data, Int32(n))
            }
            let differing = (0..<x.count).filter { x.data[$0].bitPattern != y.data[$0].bitPattern }.count
            #expect(differing == 0, "\(path) \(m)×\(n)×\(k): \(differing) of \(x.count) differ")
            let scale = (0..<x.count).map { abs(x.data[$0]) }.max() ?? 0
            #expect(scale > 0.1, "the product is not trivially zero")
            // Packed from A stored transposed (k × m, a wider row stride m + 3): the same packed
            // floats, panel padding aside — the product from it the same bits.
            let at = Tensor(shape: [k, m + 3])
            for i in 0..<m { for p in 0..<k { at.data[p * (m + 3) + i] = a.data[i * k + p] } }
            let apt = UnsafeMutablePointer<Float>.allocate(capacity: floats)
            defer { apt.deallocate() }
            let z = Tensor(shape: [m, n])
            for i in 0..<z.count { z.data[i] = c0.data[i] }
            if path == .avx512 {
                kgemm_pack_at(Int32(m), Int32(k), at.data, Int32(m + 3), apt)
                kgemm_block_packed_a(0, Int32(m), 0, Int32(n), Int32(k), 1.5, apt, Int32(m), b.data, Int32(n), beta, z.data, Int32(n))
            } else {
                kgemm_avx2_pack_at(Int32(m), Int32(k), at.data, Int32(m + 3), apt)
                kgemm_avx2_block_packed_a(0, Int32(m), 0, Int32(n), Int32(k), 1.5, apt, Int32(m), b.data, Int32(n), beta, z.data, Int32(n))
            }
            let differingT = (0..<x.count).filter { x.data[$0].bitPattern != z.data[$0].bitPattern }.count
            #expect(differingT == 0, "\(path) \(m)×\(n)×\(k), A packed from Aᵀ: \(differingT) of \(x.count) differ")
        }
    }

    @Test(arguments: paths)
    func sameResultForAnyThreadCount(_ path: VectorISA) throws {
        // Wide (split by columns) and tall (split by rows), beta 0 and 1.
        for (m, n, beta) in [(100, 300, Float(0)), (301, 70, Float(1))] {
            let a = randomTensor([m, 700], seed: 4), b = randomTensor([700, n], seed: 5), c0 = randomTensor([m, n], seed: 6)
            let x = Tensor(shape: [m, n]), y = Tensor(shape: [m, n])
            for i in 0..<x.count { x.data[i] = c0.data[i]; y.data[i] = c0.data[i] }
            kgemm(transA: false, transB: false, m: m, n: n, k: 700, alpha: 1, a: a.data, lda: 700, b: b.data, ldb: n,
                  beta: beta, c: x.data, ldc: n, threads: 1, path: path)
            kgemm(transA: false, transB: false, m: m, n: n, k: 700, alpha: 1, a: a.data, lda: 700, b: b.data, ldb: n,
                  beta: beta, c: y.data, ldc: n, threads: 2, path: path)
            var same = true
            for i in 0..<x.count where x.data[i] != y.data[i] { same = false }
            #expect(same, "\(path) \(m)×\(n): a GEMM's result must not depend on the thread split (resumed training relies on it)")
        }
    }
}
