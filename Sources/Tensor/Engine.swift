import CBLAS
import CKernels
import Dispatch
import Foundation

/// Process-wide engine settings: the thread count shared by OpenBLAS and the Swift parallel loops.
public enum Engine {
    nonisolated(unsafe) private static var _threads: Int = {
        if let s = ProcessInfo.processInfo.environment["AFFINITY_THREADS"], let n = Int(s), n > 0 { return n }
        return ProcessInfo.processInfo.activeProcessorCount
    }()
    nonisolated(unsafe) private static var configured = false

    /// The number of threads used by GEMMs and parallel loops (default: the active cores, or
    /// `AFFINITY_THREADS`).
    public static var threads: Int {
        get { configureOnce(); return _threads }
        set { _threads = max(1, newValue); openblas_set_num_threads(Int32(_threads)); configured = true }
    }

    /// 3×3 stride-1 convolutions (forward and input gradient) by Winograd (F(2×2, 3×3), or F(4×4, 3×3)
    /// on small planes: `winogradTile`) instead of im2col + GEMM (default on; `AFFINITY_WINOGRAD=0`
    /// turns it off). The results agree to float rounding (about 1e-6 of the outputs' scale for
    /// F(2×2), 1e-5 for F(4×4)).
    nonisolated(unsafe) public static var winograd: Bool = ProcessInfo.processInfo.environment["AFFINITY_WINOGRAD"] != "0"
    /// Winograd is used when both channel counts are at least this (default 64): with fewer, its
    /// 16 GEMMs have too short an inner dimension to beat one im2col GEMM.
    nonisolated(unsafe) public static var winogradMinChannels: Int =
        Int(ProcessInfo.processInfo.environment["AFFINITY_WINOGRAD_MIN_CHANNELS"] ?? "") ?? 64
    /// … and when the convolution runs over at least this many images at once (default 1: the
    /// backbone's, the FPN's and the RPN's 3×3 convolutions on one image too). Measured with the
    /// roofline (issue 18) on a 2-core AMD EPYC: against Winograd only for the RoI batches (2, 128),
    /// the backbone took 0.086–0.093 s instead of 0.102–0.106 s (8.0 → 4.3 GMAC), inference 0.38 s
    /// instead of 0.40 s and an Algorithm 1 iteration 1.04–1.08 s instead of 1.14–1.16 s, every round.
    nonisolated(unsafe) public static var winogradMinImages: Int =
        Int(ProcessInfo.processInfo.environment["AFFINITY_WINOGRAD_MIN_IMAGES"] ?? "") ?? 1
    /// The Winograd tile: 4, F(4×4, 3×3) (36 products for 16 outputs), where the processor has
    /// AVX-512 or AVX2 (its transforms exist only in vector code); else, or with
    /// `AFFINITY_WINOGRAD_TILE=2`, 2, F(2×2, 3×3) (16 for 4).
    nonisolated(unsafe) public static var winogradTile: Int =
        ProcessInfo.processInfo.environment["AFFINITY_WINOGRAD_TILE"] == "2" || vectorISA == nil ? 2 : 4
    /// The weight gradients of the convolutions that run by Winograd by F(3×3, 2×2) too (default
    /// on; `AFFINITY_WINOGRAD_WEIGHT_GRADIENT=0`: by the GEMM, for measurements).
    nonisolated(unsafe) public static var winogradWeightGradient: Bool =
        ProcessInfo.processInfo.environment["AFFINITY_WINOGRAD_WEIGHT_GRADIENT"] != "0"
    /// F(4×4) only on planes whose larger side is at most this (default 32: the RoI heads' 14×14
    /// and 28×28), F(2×2) on larger ones (`AFFINITY_WINOGRAD4_MAX_SIDE`). F(4×4)'s rounding error is
    /// about 15 times F(2×2)'s (WinogradTests), and through the backbone's many layers and the
    /// affinity layer's batch statistics it took the six-phantom parity of X1 from 5.3e-4 to 1.35e-3 of
    /// its scale, over the suite's 1e-3; on the RoI heads alone, 6.6e-4 → 6.8e-4.
    nonisolated(unsafe) public static var winograd4MaxSide: Int =
        Int(ProcessInfo.processInfo.environment["AFFINITY_WINOGRAD4_MAX_SIDE"] ?? "") ?? 32

    /// The processor has AVX-512F: kgemm's AVX-512 micro-kernel and the vector Winograd transforms
    /// (Sources/CKernels/winograd*.c), F(4×4, 3×3) among them.
    public static let hasAVX512 = kgemm_available() == 1

    /// kgemm can run here: AVX-512, or AVX2 with FMA (Sources/CKernels/kgemm_avx2.c).
    public static let kgemmAvailable = hasAVX512 || kgemm_avx2_available() == 1

    /// The processor runs each 512-bit instruction as two 256-bit halves (AMD Zen 4): its AVX-512
    /// kernels do the same work per cycle as the AVX2 ones with larger tiles (more of the lanes of a
    /// small plane's transform wasted, a 14×32 GEMM tile against 6×16); measured there, the whole
    /// inference took 0.285 s with the AVX2 kernels against 0.315 s (`bench predict`, 2 threads).
    public static let splitsAVX512 = hasAVX512 && kgemm_avx512_split() == 1

    /// The vector kernels' instruction set (kgemm, the Winograd transforms), chosen per processor:
    /// AVX-512 where the processor has it and runs 512-bit vectors at full width (Intel, AMD Zen 5
    /// and later), AVX2 + FMA on the others (Zen 4 among them: `splitsAVX512`), else none (scalar
    /// transforms, OpenBLAS). `AFFINITY_ISA=avx2` or `avx512` overrides the choice (for comparisons).
    public static let vectorISA: VectorISA? = chooseISA(ProcessInfo.processInfo.environment["AFFINITY_ISA"])

    static func chooseISA(_ requested: String?) -> VectorISA? {
        let avx2 = kgemm_avx2_available() == 1
        switch requested {
        case "avx512" where hasAVX512: return .avx512
        case "avx2" where avx2: return .avx2
        default:
            if hasAVX512 && (!splitsAVX512 || !avx2) { return .avx512 }
            return avx2 ? .avx2 : nil
        }
    }

    /// kgemm's micro-kernel (meaningful where `kgemmAvailable`).
    public static let kgemmPath: VectorISA = vectorISA ?? .avx2

    /// GEMMs by kgemm (Sources/CKernels: the package's own micro-kernels, run on this package's
    /// threads) rather than OpenBLAS: on where the processor has AVX-512 or AVX2 with FMA, unless
    /// `AFFINITY_GEMM=openblas`. The machine's OpenBLAS is pinned to its AVX2 kernels, and its own
    /// threads spin (sched_yield) beside the Swift loops' between products: on the 2-core Zen 3 EPYC
    /// a fifth of the inference's CPU time.
    nonisolated(unsafe) public static var useKGEMM: Bool = kgemmAvailable && ProcessInfo.processInfo.environment["AFFINITY_GEMM"] != "openblas"

    /// Parallel loops on the engine's own spinning worker threads (`runConcurrently`) rather than
    /// Dispatch's, unless `AFFINITY_POOL=0`.
    nonisolated(unsafe) public static var usePool: Bool = ProcessInfo.processInfo.environment["AFFINITY_POOL"] != "0"

    /// Keeps freed tensors' memory in the process for the next ones (up to 512 MiB of it) instead
    /// of unmapping it, so that the same sizes allocated again do not fault their pages in anew
    /// (about 5% of a training iteration). For processes that run the model over and over: the
    /// tools and the daemon, which calls `releaseFreedMemory` when it goes idle.
    public static func holdFreedMemory() { affinity_heap_hold_freed() }

    /// Gives the memory `holdFreedMemory` kept back to the system.
    public static func releaseFreedMemory() { affinity_heap_release_freed() }

    @inline(__always) static func configureOnce() {
        if !configured {
            configured = true
            openblas_set_num_threads(Int32(_threads))
        }
    }
}

/// The multiply-adds of the engine's products (every `sgemm` and kgemm convolution: m·n·k each, so
/// a Winograd convolution counts its 16 smaller products, not the direct convolution's) started by
/// this thread, including what `parallelFor`'s workers did for it: for the roofline of
/// `affinity-lab bench … --roofline` (issue 18). Per thread, so analyses running at the same time in
/// one process count apart; one thread-local add per product.
public enum MultiplyAdds {
    /// This thread's count so far (the difference of two readings is the work in between).
    public static var count: Int { Int(affinity_macs_get()) }
    @inline(__always) static func add(_ m: Int, _ n: Int, _ k: Int) { affinity_macs_add(Int64(m &* n &* k)) }
}

/// Runs `body(c)` for c in 0..<chunks concurrently and returns when all have returned: on the
/// engine's spinning workers (`affinity_pool_run`, Sources/CKernels/pool.c) when they are free,
/// else (another thread's loop has them) by Dispatch. `AFFINITY_POOL=0` always uses Dispatch.
@inline(__always)
func runConcurrently(_ chunks: Int, _ body: (Int) -> Void) {
    if Engine.usePool {
        let ran = withoutActuallyEscaping(body) { body in
            withUnsafePointer(to: body) { p in
                affinity_pool_run(chunks, Int32(clamping: Engine.threads), { raw, c in
                    raw!.assumingMemoryBound(to: ((Int) -> Void).self).pointee(c)
                }, UnsafeMutableRawPointer(mutating: p))
            }
        }
        if ran != 0 { return }
    }
    DispatchQueue.concurrentPerform(iterations: chunks, execute: body)
}

/// Runs `body(i)` for i in 0..<n, split into contiguous chunks over `Engine.threads` threads.
/// Small loops (fewer than 2 · `minChunk` items) run inline, and so does a loop started inside
/// another loop's chunk (the outer loop has every thread busy already: a product of a batch of
/// products split over the threads runs whole on its thread).
@inline(__always)
public func parallelFor(_ n: Int, minChunk: Int = 1, _ body: (Int) -> Void) {
    let t = Engine.threads
    if t <= 1 || n < 2 * minChunk || affinity_in_parallel() != 0 {
        for i in 0..<n { body(i) }
        return
    }
    let chunks = min(t, (n + minChunk - 1) / minChunk)
    // Each chunk's multiply-adds go back to this thread's count (`MultiplyAdds`): a worker takes
    // its own count back to where it was and leaves the difference here.
    withUnsafeTemporaryAllocation(of: Int64.self, capacity: chunks) { found in
        withoutActuallyEscaping(body) { body in
            runConcurrently(chunks) { c in
                let before = affinity_macs_get(), wasInside = affinity_set_in_parallel(1)
                let lo = n * c / chunks, hi = n * (c + 1) / chunks
                for i in lo..<hi { body(i) }
                affinity_set_in_parallel(wasInside)
                found[c] = affinity_macs_get() &- before
                affinity_macs_set(before)
            }
        }
        var sum: Int64 = 0
        for c in 0..<chunks { sum &+= found[c] }
        affinity_macs_add(sum)
    }
}

/// Runs `body(chunk, range)` over `chunks` contiguous ranges of 0..<n, concurrently (one after
/// another inside a parallel loop's chunk, as `parallelFor`).
@inline(__always)
public func parallelChunks(_ n: Int, chunks: Int, _ body: (Int, Range<Int>) -> Void) {
    if chunks <= 1 || n <= 1 {
        body(0, 0..<n)
        return
    }
    if affinity_in_parallel() != 0 {  // inside a parallel loop's chunk: the chunks one after another
        for c in 0..<chunks { body(c, (n * c / chunks)..<(n * (c + 1) / chunks)) }
        return
    }
    withoutActuallyEscaping(body) { body in
        runConcurrently(chunks) { c in
            let wasInside = affinity_set_in_parallel(1)
            body(c, (n * c / chunks)..<(n * (c + 1) / chunks))
            affinity_set_in_parallel(wasInside)
        }
    }
}

/// Row-major single-precision GEMM through `cblas_sgemm`:
/// C[m×n] = alpha · op(A)[m×k] · op(B)[k×n] + beta · C.
/// `lda`, `ldb`, `ldc` are the row strides of A, B, C as stored.
@inline(__always)
public func sgemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                  alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                  b: UnsafePointer<Float>, ldb: Int,
                  beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
    if m == 0 || n == 0 { return }
    MultiplyAdds.add(m, n, k)
    if k == 0 {
        if beta == 0 { for i in 0..<m { (c + i * ldc).update(repeating: 0, count: n) } }
        else if beta != 1 { for i in 0..<m { for j in 0..<n { c[i * ldc + j] *= beta } } }
        return
    }
    if Engine.useKGEMM, m <= Int(Int32.max), n <= Int(Int32.max), k <= Int(Int32.max) {
        kgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
        return
    }
    openblasSGEMM(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
}

/// `sgemm` by OpenBLAS's `cblas_sgemm`, whatever `Engine.useKGEMM` says (m, n, k > 0).
func openblasSGEMM(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float, a: UnsafePointer<Float>, lda: Int,
                   b: UnsafePointer<Float>, ldb: Int, beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
    Engine.configureOnce()
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}

/// Reusable scratch memory for im2col and friends, grown on demand and never shrunk
/// (one per model instance; not thread-safe).
public final class Workspace: @unchecked Sendable {
    private var slots: [TensorStorage?] = [nil, nil, nil, nil]
    /// How many times each slot has been handed out: contents written after a hand-out stay valid
    /// while the count stays the same (`WinogradWeights`).
    private var handouts: [Int] = [0, 0, 0, 0]

    public init() {}

    /// How many times slot `slot` has been handed out by `buffer`.
    func handoutCount(_ slot: Int) -> Int { slot < handouts.count ? handouts[slot] : 0 }

    /// A buffer of at least `count` floats in slot `slot` (contents undefined).
    public func buffer(_ slot: Int, count: Int) -> UnsafeMutablePointer<Float> {
        if slot >= slots.count { slots += Array(repeating: nil, count: slot + 1 - slots.count) }
        if slot >= handouts.count { handouts += Array(repeating: 0, count: slot + 1 - handouts.count) }
        handouts[slot] += 1
        if let s = slots[slot], s.capacity >= count { return s.pointer }
        let s = TensorStorage(capacity: max(count, 1))
        slots[slot] = s
        return s.pointer
    }

    /// Total floats held.
    public var capacity: Int { slots.reduce(0) { $0 + ($1?.capacity ?? 0) } }
}

/// The vector instruction sets the package's kernels are written for: kgemm's two micro-kernels
/// (Sources/CKernels/kgemm.c and kgemm_avx2.c) and the Winograd transforms (winograd.c).
public enum VectorISA: String, Sendable {
    case avx512, avx2
    /// The register tile's rows and the packed B panel's columns.
    var tileRows: Int { self == .avx512 ? 14 : 6 }
    var panelColumns: Int { self == .avx512 ? 32 : 16 }
}

/// `sgemm` by kgemm: the C block split over `Engine.threads` threads, by columns (multiples of
/// the B panel) when C is wide, else by rows (multiples of the register tile's rows); one thread
/// when the product is small. Products of at most 4 rows without transposes (a mask predictor's
/// 2 output channels) go to `kgemm_small_m`, split by columns.
/// Each element of C is summed in the same order whatever the split, so the result does not depend
/// on `threads`.
func kgemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float, a: UnsafePointer<Float>, lda: Int,
           b: UnsafePointer<Float>, ldb: Int, beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int, threads: Int = Engine.threads,
           path: VectorISA = Engine.kgemmPath) {
    let ta: Int32 = transA ? 1 : 0, tb: Int32 = transB ? 1 : 0
    let t = threads
    func block(_ m0: Int, _ m1: Int, _ n0: Int, _ n1: Int) {
        if path == .avx512 {
            kgemm_block(ta, tb, Int32(m0), Int32(m1), Int32(n0), Int32(n1), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
        } else {
            kgemm_avx2_block(ta, tb, Int32(m0), Int32(m1), Int32(n0), Int32(n1), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
        }
    }
    if m <= Int(KGEMM_SMALL_M), !transA, !transB {  // too thin to pack (whatever the thread count)
        let chunks = t <= 1 || m * n * k < 1 << 20 ? 1 : min(t, (n + 63) / 64)
        parallelFor(chunks) { i in
            let n0 = (n + 63) / 64 * i / chunks * 64, n1 = min(n, (n + 63) / 64 * (i + 1) / chunks * 64)
            if path == .avx512 {
                kgemm_small_m(0, Int32(m), Int32(n0), Int32(n1), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
            } else {
                kgemm_avx2_small_m(0, Int32(m), Int32(n0), Int32(n1), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
            }
        }
        return
    }
    splitGEMM(m: m, n: n, k: k, threads: t, path: path, block)
}

/// kgemm with A packed whole once for several products (`kgemm_pack_a` and friends of `path`):
/// the floats the packed copy of an m × k matrix takes.
func kgemmPackedAFloats(m: Int, k: Int, path: VectorISA = Engine.kgemmPath) -> Int {
    path == .avx512 ? kgemm_packed_a_floats(Int32(m), Int32(k)) : kgemm_avx2_packed_a_floats(Int32(m), Int32(k))
}

/// Packs the m × k matrix A (row stride lda) into `ap`, or with `transposed` A stored as its k × m
/// transpose (row stride lda ≥ m): the same packed floats either way.
func kgemmPackA(m: Int, k: Int, a: UnsafePointer<Float>, lda: Int, transposed: Bool = false, into ap: UnsafeMutablePointer<Float>,
                path: VectorISA = Engine.kgemmPath) {
    switch (path, transposed) {
    case (.avx512, false): kgemm_pack_a(Int32(m), Int32(k), a, Int32(lda), ap)
    case (.avx512, true): kgemm_pack_at(Int32(m), Int32(k), a, Int32(lda), ap)
    case (.avx2, false): kgemm_avx2_pack_a(Int32(m), Int32(k), a, Int32(lda), ap)
    case (.avx2, true): kgemm_avx2_pack_at(Int32(m), Int32(k), a, Int32(lda), ap)
    }
}

/// C[m × n] (row stride ldc) = A · B on this thread, A packed by `kgemmPackA` (m rows), B k × n
/// (row stride ldb): the same bits as `kgemm` of the unpacked A. Counted in `MultiplyAdds`.
func kgemmPackedA(m: Int, n: Int, k: Int, ap: UnsafePointer<Float>, b: UnsafePointer<Float>, ldb: Int,
                  c: UnsafeMutablePointer<Float>, ldc: Int, path: VectorISA = Engine.kgemmPath) {
    MultiplyAdds.add(m, n, k)
    if path == .avx512 {
        kgemm_block_packed_a(0, Int32(m), 0, Int32(n), Int32(k), 1, ap, Int32(m), b, Int32(ldb), 0, c, Int32(ldc))
    } else {
        kgemm_avx2_block_packed_a(0, Int32(m), 0, Int32(n), Int32(k), 1, ap, Int32(m), b, Int32(ldb), 0, c, Int32(ldc))
    }
}

/// Calls `block(m0, m1, n0, n1)` over a split of C[m×n] among `threads`: one block when the
/// product is small, else by columns (multiples of the B panel) when C is wide, else by rows
/// (multiples of the register tile's rows).
private func splitGEMM(m: Int, n: Int, k: Int, threads t: Int, path: VectorISA, _ block: (Int, Int, Int, Int) -> Void) {
    if t <= 1 || m * n * k < 1 << 21 {
        block(0, m, 0, n)
        return
    }
    let nr = path.panelColumns, mr = path.tileRows
    if n >= 64 * t || n >= m {
        let panels = (n + nr - 1) / nr, chunks = min(t, panels)
        parallelFor(chunks) { i in
            let p0 = panels * i / chunks, p1 = panels * (i + 1) / chunks
            block(0, m, p0 * nr, min(n, p1 * nr))
        }
    } else {
        let tiles = (m + mr - 1) / mr, chunks = min(t, tiles)
        parallelFor(chunks) { i in
            let q0 = tiles * i / chunks, q1 = tiles * (i + 1) / chunks
            block(q0 * mr, min(m, q1 * mr), 0, n)
        }
    }
}

extension kgemm_conv {
    /// The image [channels, h, w] and `g`'s geometry as kgemm's convolution descriptor.
    init(image: UnsafePointer<Float>, channels: Int, h: Int, w: Int, g: ConvGeometry, oh: Int, ow: Int) {
        self.init(x: image, channels: Int32(channels), h: Int32(h), w: Int32(w), kh: Int32(g.kernelH), kw: Int32(g.kernelW),
                  sh: Int32(g.strideH), sw: Int32(g.strideW), ph: Int32(g.padH), pw: Int32(g.padW),
                  dh: Int32(g.dilationH), dw: Int32(g.dilationW), oh: Int32(oh), ow: Int32(ow))
    }
}

/// A convolution's weight gradient for one image by kgemm with the transposed patch matrix packed
/// straight from the image (`kgemm_convt_block`): dWeight[cout × channels·kH·kW] +=
/// dOut[cout × oh·ow] · patchesᵀ. The same result as im2col followed by `kgemm(transB: true, …, beta: 1)`,
/// bit for bit, without the patch matrix.
/// - Precondition: `Engine.kgemmAvailable`.
func kgemmWeightGradient(image: UnsafePointer<Float>, channels: Int, h: Int, w: Int, g: ConvGeometry, oh: Int, ow: Int,
                         dOut: UnsafePointer<Float>, dWeight: UnsafeMutablePointer<Float>, threads: Int = Engine.threads,
                         path: VectorISA = Engine.kgemmPath) {
    var conv = kgemm_conv(image: image, channels: channels, h: h, w: w, g: g, oh: oh, ow: ow)
    let m = g.outChannels, n = g.patchSize, k = oh * ow
    MultiplyAdds.add(m, n, k)
    withUnsafePointer(to: &conv) { cv in
        splitGEMM(m: m, n: n, k: k, threads: threads, path: path) { m0, m1, n0, n1 in
            if path == .avx512 {
                kgemm_convt_block(Int32(m0), Int32(m1), Int32(n0), Int32(n1), 1, dOut, Int32(k), cv, 1, dWeight, Int32(n))
            } else {
                kgemm_avx2_convt_block(Int32(m0), Int32(m1), Int32(n0), Int32(n1), 1, dOut, Int32(k), cv, 1, dWeight, Int32(n))
            }
        }
    }
}

/// The convolution of one [channels, h, w] image by kgemm with its patch matrix packed straight
/// from the image (`kgemm_conv_block`): out[cout × oh·ow] = weight[cout × channels·kH·kW] · patches.
/// The same result as im2col followed by `kgemm`, bit for bit, without the patch matrix.
/// - Precondition: `Engine.kgemmAvailable`.
func kgemmConvolve(image: UnsafePointer<Float>, channels: Int, h: Int, w: Int, g: ConvGeometry, oh: Int, ow: Int,
                   weight: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, threads: Int = Engine.threads,
                   path: VectorISA = Engine.kgemmPath) {
    var conv = kgemm_conv(image: image, channels: channels, h: h, w: w, g: g, oh: oh, ow: ow)
    let m = g.outChannels, n = oh * ow, k = g.patchSize
    MultiplyAdds.add(m, n, k)
    withUnsafePointer(to: &conv) { cv in
        splitGEMM(m: m, n: n, k: k, threads: threads, path: path) { m0, m1, n0, n1 in
            if path == .avx512 {
                kgemm_conv_block(Int32(m0), Int32(m1), Int32(n0), Int32(n1), 1, weight, Int32(k), cv, 0, out, Int32(n))
            } else {
                kgemm_avx2_conv_block(Int32(m0), Int32(m1), Int32(n0), Int32(n1), 1, weight, Int32(k), cv, 0, out, Int32(n))
            }
        }
    }
}
