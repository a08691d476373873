// The convolution paths that must agree: small images sharing one GEMM (`imagesPerGEMM`) give what
// their images give one by one, forward and backward, for convolutions and transposed convolutions;
// a large image's patches packed straight from the image by kgemm give what im2col gives.
@testable import Tensor
import Testing
import TestSupport

@Suite struct ConvBatchingTests {
    struct Case: CustomStringConvertible, Sendable {
        var g: ConvGeometry
        var n: Int, h: Int, w: Int
        var description: String { "\(g) on \(n)×\(h)×\(w)" }
    }

    /// Image i of a batch as a batch of one.
    static func image(_ t: Tensor, _ i: Int) -> Tensor {
        let one = Tensor(shape: [1] + t.shape.dropFirst())
        one.data.update(from: t.data + i * one.count, count: one.count)
        return one
    }

    /// The batch's result against the images' results laid one after the other: equal bit for bit
    /// when `exact` and kgemm runs the GEMMs (OpenBLAS may pick other kernels for other shapes),
    /// else within float rounding.
    static func expectSame(_ batched: Tensor, _ single: [Tensor], exact: Bool, _ what: String,
                           sourceLocation: SourceLocation = #_sourceLocation) {
        let joined = Tensor(shape: batched.shape)
        for (i, t) in single.enumerated() { (joined.data + i * t.count).update(from: t.data, count: t.count) }
        if exact && Engine.useKGEMM {
            var differing = 0
            for i in 0..<joined.count where joined.data[i] != batched.data[i] { differing += 1 }
            #expect(differing == 0, "\(what): \(differing) of \(joined.count) values differ", sourceLocation: sourceLocation)
        }
        let c = compare(batched, joined)
        #expect(c.maxAbsError <= 1e-5 * max(1, c.maxExpectedMagnitude), "\(what): \(c)", sourceLocation: sourceLocation)
    }

    static let convCases: [Case] = [
        Case(g: ConvGeometry(16, 8, kernel: 3, padding: 1), n: 25, h: 14, w: 14),  // 3 GEMMs of 11, 11, 3 images
        Case(g: ConvGeometry(12, 6, kernel: 7), n: 9, h: 7, w: 7),                 // a 1×1 output per image
        Case(g: ConvGeometry(8, 4, kernel: 2, stride: 2), n: 6, h: 14, w: 14),
        Case(g: ConvGeometry(8, 3, kernel: 1), n: 5, h: 28, w: 28),                 // pointwise, 2 GEMMs
    ]

    @Test(arguments: convCases)
    func convolution(_ c: Case) throws {
        #expect(imagesPerGEMM(images: c.n, plane: c.g.outputSize(h: c.h, w: c.w).h * c.g.outputSize(h: c.h, w: c.w).w,
                              rows: c.g.patchSize) > 1)
        let ws = Workspace()
        let (oh, ow) = c.g.outputSize(h: c.h, w: c.w)
        let x = randomTensor([c.n, c.g.inChannels, c.h, c.w], seed: 11)
        let wt = randomTensor([c.g.outChannels, c.g.inChannels, c.g.kernelH, c.g.kernelW], seed: 12, scale: 0.3)
        let bias = randomTensor([c.g.outChannels], seed: 13)
        let dy = randomTensor([c.n, c.g.outChannels, oh, ow], seed: 14)

        func run(_ x: Tensor, _ dy: Tensor) throws -> (Tensor, Tensor, Tensor, Tensor) {
            let out = Tensor(shape: [x.shape[0], c.g.outChannels, oh, ow])
            out.fill(7)  // overwritten
            try conv2dForward(out: out, input: x, weight: wt, bias: bias, geometry: c.g, workspace: ws, winograd: false)
            let dx = Tensor(shape: x.shape, repeating: 0.5), dw = Tensor(shape: wt.shape), db = Tensor(shape: bias.shape)
            try conv2dBackward(dInput: dx, dWeight: dw, dBias: db, dOut: dy, input: x, weight: wt, geometry: c.g,
                               workspace: ws, winograd: false)
            return (out, dx, dw, db)
        }
        let (out, dx, dw, db) = try run(x, dy)
        let singles = try (0..<c.n).map { try run(Self.image(x, $0), Self.image(dy, $0)) }
        Self.expectSame(out, singles.map(\.0), exact: true, "output")
        Self.expectSame(dx, singles.map(\.1), exact: true, "input gradient (accumulated onto 0.5)")
        // The weight and bias gradients sum over the images: compare with the sum of the images' own.
        let dwSum = Tensor(shape: wt.shape), dbSum = Tensor(shape: bias.shape)
        for s in singles {
            for i in 0..<dwSum.count { dwSum.data[i] += s.2.data[i] }
            for i in 0..<dbSum.count { dbSum.data[i] += s.3.data[i] }
        }
        Self.expectSame(dw, [dwSum], exact: false, "weight gradient")
        Self.expectSame(db, [dbSum], exact: false, "bias gradient")
    }

    static let transposedCases: [Case] = [
        Case(g: ConvGeometry(6, 5, kernel: 2, stride: 2), n: 25, h: 14, w: 14),  // 3 GEMMs
        Case(g: ConvGeometry(4, 3, kernel: 3, stride: 2, padding: 1), n: 4, h: 5, w: 5),
    ]

    @Test(arguments: transposedCases)
    func transposedConvolution(_ c: Case) throws {
        let ws = Workspace()
        let (oh, ow) = c.g.transposedOutputSize(h: c.h, w: c.w)
        #expect(imagesPerGEMM(images: c.n, plane: c.h * c.w, rows: c.g.outChannels * c.g.kernelH * c.g.kernelW) > 1)
        let x = randomTensor([c.n, c.g.inChannels, c.h, c.w], seed: 21)
        let wt = randomTensor([c.g.inChannels, c.g.outChannels, c.g.kernelH, c.g.kernelW], seed: 22, scale: 0.3)
        let bias = randomTensor([c.g.outChannels], seed: 23)
        let dy = randomTensor([c.n, c.g.outChannels, oh, ow], seed: 24)

        func run(_ x: Tensor, _ dy: Tensor) throws -> (Tensor, Tensor, Tensor) {
            let out = Tensor(shape: [x.shape[0], c.g.outChannels, oh, ow])
            out.fill(7)
            try convTranspose2dForward(out: out, input: x, weight: wt, bias: bias, geometry: c.g, workspace: ws)
            let dx = Tensor(shape: x.shape, repeating: 0.5), dw = Tensor(shape: wt.shape)
            try convTranspose2dBackward(dInput: dx, dWeight: dw, dBias: nil, dOut: dy, input: x, weight: wt, geometry: c.g,
                                        workspace: ws)
            return (out, dx, dw)
        }
        let (out, dx, dw) = try run(x, dy)
        let singles = try (0..<c.n).map { try run(Self.image(x, $0), Self.image(dy, $0)) }
        Self.expectSame(out, singles.map(\.0), exact: true, "output")
        Self.expectSame(dx, singles.map(\.1), exact: true, "input gradient (accumulated onto 0.5)")
        let dwSum = Tensor(shape: wt.shape)
        for s in singles { for i in 0..<dwSum.count { dwSum.data[i] += s.2.data[i] } }
        Self.expectSame(dw, [dwSum], exact: false, "weight gradient")
    }

    /// `relu: true` is the plain output through reluForward, on the kernel-tiles path (kernel =
    /// stride, written once per pixel) and on the folding path, image by image and batched.
    @Test(arguments: transposedCases + [Case(g: ConvGeometry(6, 5, kernel: 2, stride: 2), n: 1, h: 5, w: 3)])
    func transposedConvolutionWithReLU(_ c: Case) throws {
        let ws = Workspace()
        let (oh, ow) = c.g.transposedOutputSize(h: c.h, w: c.w)
        let x = randomTensor([c.n, c.g.inChannels, c.h, c.w], seed: 31)
        let wt = randomTensor([c.g.inChannels, c.g.outChannels, c.g.kernelH, c.g.kernelW], seed: 32, scale: 0.3)
        let bias = randomTensor([c.g.outChannels], seed: 33)
        let plain = Tensor(shape: [c.n, c.g.outChannels, oh, ow]), fused = Tensor(shape: plain.shape)
        try convTranspose2dForward(out: plain, input: x, weight: wt, bias: bias, geometry: c.g, workspace: ws)
        try convTranspose2dForward(out: fused, input: x, weight: wt, bias: bias, geometry: c.g, workspace: ws, relu: true)
        let expected = Tensor(shape: plain.shape)
        try reluForward(out: expected, input: plain)
        var negatives = 0, differing = 0
        for i in 0..<plain.count {
            if plain.data[i] < 0 { negatives += 1 }
            if fused.data[i] != expected.data[i] { differing += 1 }
        }
        #expect(negatives > 0, "the case must have negative outputs for the ReLU to act on")
        #expect(differing == 0, "\(differing) of \(plain.count) values differ")
    }

    static let implicitCases: [Case] = [
        Case(g: ConvGeometry(3, 20, kernel: 7, stride: 2, padding: 3), n: 1, h: 70, w: 66),  // 35×33: panels cross rows
        Case(g: ConvGeometry(40, 130, kernel: 3, padding: 1), n: 2, h: 40, w: 64),          // k > 256, m > 126
        Case(g: ConvGeometry(4, 16, kernel: 3, stride: 2, padding: 1), n: 1, h: 64, w: 64),   // stride 2, whole panels
        Case(g: ConvGeometry(16, 8, kernel: 3, padding: 1), n: 1, h: 32, w: 64),              // stride 1, whole panels
        Case(g: ConvGeometry(6, 5, kernel: 3, padding: 2, dilation: 2), n: 1, h: 33, w: 35),
        Case(g: ConvGeometry(16, 8, kernel: 1, stride: 2), n: 1, h: 64, w: 70),
        Case(g: ConvGeometry(5, 7, kernel: 3, stride: 3, padding: 1), n: 1, h: 100, w: 100),  // stride 3: the general packing
    ]

    @Test(arguments: implicitCases)
    func implicitPatchesMatchIm2col(_ c: Case) throws {
        guard Engine.useKGEMM else { return }  // OpenBLAS always goes through im2col
        let (oh, ow) = c.g.outputSize(h: c.h, w: c.w)
        #expect(oh * ow >= 1024 && imagesPerGEMM(images: c.n, plane: oh * ow, rows: c.g.patchSize) == 1)  // the implicit path
        let ws = Workspace()
        let x = randomTensor([c.n, c.g.inChannels, c.h, c.w], seed: 51)
        let wt = randomTensor([c.g.outChannels, c.g.inChannels, c.g.kernelH, c.g.kernelW], seed: 52, scale: 0.3)
        let bias = randomTensor([c.g.outChannels], seed: 53)
        let implicit = Tensor(shape: [c.n, c.g.outChannels, oh, ow]), explicit = Tensor(shape: implicit.shape)
        try conv2dForward(out: implicit, input: x, weight: wt, bias: bias, geometry: c.g, workspace: ws, winograd: false)
        try conv2dForward(out: explicit, input: x, weight: wt, bias: bias, geometry: c.g, workspace: ws, winograd: false,
                          implicitPatches: false)
        Self.expectSame(implicit, [explicit], exact: true, "\(c)")
    }

    /// Each of kgemm's kernels this processor has (AVX-512 and AVX2 on an AVX-512 machine) packs the
    /// patches from the image to the same bits as its GEMM over im2col's patch matrix.
    @Test(arguments: implicitCases)
    func implicitPatchesMatchIm2colOnEveryKernel(_ c: Case) throws {
        let paths: [VectorISA] = Engine.hasAVX512 ? [.avx512, .avx2] : Engine.kgemmAvailable ? [.avx2] : []
        let (oh, ow) = c.g.outputSize(h: c.h, w: c.w)
        let x = randomTensor([c.g.inChannels, c.h, c.w], seed: 61)
        let wt = randomTensor([c.g.outChannels, c.g.inChannels, c.g.kernelH, c.g.kernelW], seed: 62, scale: 0.3)
        let k = c.g.patchSize, plane = oh * ow
        let col = Tensor(shape: [k, plane])
        im2col(x.data, channels: c.g.inChannels, h: c.h, w: c.w, g: c.g, oh: oh, ow: ow, col: col.data)
        for path in paths {
            for threads in [1, 2] {
                let implicit = Tensor(shape: [c.g.outChannels, plane]), explicit = Tensor(shape: implicit.shape)
                kgemmConvolve(image: x.data, channels: c.g.inChannels, h: c.h, w: c.w, g: c.g, oh: oh, ow: ow,
                              weight: wt.data, out: implicit.data, threads: threads, path: path)
                kgemm(transA: false, transB: false, m: c.g.outChannels, n: plane, k: k, alpha: 1, a: wt.data, lda: k,
                      b: col.data, ldb: plane, beta: 0, c: explicit.data, ldc: plane, threads: threads, path: path)
                var differing = 0
                for i in 0..<implicit.count where implicit.data[i] != explicit.data[i] { differing += 1 }
                #expect(differing == 0, "\(path), \(threads) threads, \(c): \(differing) of \(implicit.count) differ")
            }
        }
    }

    /// The weight gradient with the transposed patches packed from the image gives what im2col and
    /// the transposed product give, accumulated onto what was there, bit for bit (the input gradient
    /// too, which does not change).
    @Test(arguments: implicitCases)
    func implicitWeightGradientMatchesIm2col(_ c: Case) throws {
        guard Engine.useKGEMM else { return }
        let (oh, ow) = c.g.outputSize(h: c.h, w: c.w)
        let ws = Workspace()
        let x = randomTensor([c.n, c.g.inChannels, c.h, c.w], seed: 71)
        let wt = randomTensor([c.g.outChannels, c.g.inChannels, c.g.kernelH, c.g.kernelW], seed: 72, scale: 0.3)
        let dy = randomTensor([c.n, c.g.outChannels, oh, ow], seed: 73)
        var results: [(Tensor, Tensor)] = []
        for implicit in [true, false] {
            let dw = Tensor(shape: wt.shape, repeating: 0.125), dx = Tensor(shape: x.shape)
            try conv2dBackward(dInput: dx, dWeight: dw, dBias: nil, dOut: dy, input: x, weight: wt, geometry: c.g, workspace: ws,
                               winograd: false, implicitPatches: implicit)
            results.append((dw, dx))
        }
        Self.expectSame(results[0].0, [results[1].0], exact: true, "weight gradient, \(c)")
        Self.expectSame(results[0].1, [results[1].1], exact: true, "input gradient, \(c)")
    }

    /// Each kernel this processor has, on one and two threads: kgemmWeightGradient against
    /// im2col + kgemm(transB), bit for bit.
    @Test(arguments: implicitCases)
    func implicitWeightGradientOnEveryKernel(_ c: Case) throws {
        let paths: [VectorISA] = Engine.hasAVX512 ? [.avx512, .avx2] : Engine.kgemmAvailable ? [.avx2] : []
        let (oh, ow) = c.g.outputSize(h: c.h, w: c.w)
        let x = randomTensor([c.g.inChannels, c.h, c.w], seed: 81)
        let dy = randomTensor([c.g.outChannels, oh * ow], seed: 82)
        let k = c.g.patchSize, plane = oh * ow
        let col = Tensor(shape: [k, plane])
        im2col(x.data, channels: c.g.inChannels, h: c.h, w: c.w, g: c.g, oh: oh, ow: ow, col: col.data)
        for path in paths {
            for threads in [1, 2] {
                let implicit = Tensor(shape: [c.g.outChannels, k], repeating: -0.5), explicit = Tensor(shape: implicit.shape, repeating: -0.5)
                kgemmWeightGradient(image: x.data, channels: c.g.inChannels, h: c.h, w: c.w, g: c.g, oh: oh, ow: ow,
                                    dOut: dy.data, dWeight: implicit.data, threads: threads, path: path)
                kgemm(transA: false, transB: true, m: c.g.outChannels, n: k, k: plane, alpha: 1, a: dy.data, lda: plane,
                      b: col.data, ldb: plane, beta: 1, c: explicit.data, ldc: k, threads: threads, path: path)
                var differing = 0
                for i in 0..<implicit.count where implicit.data[i] != explicit.data[i] { differing += 1 }
                #expect(differing == 0, "\(path), \(threads) threads, \(c): \(differing) of \(implicit.count) differ")
            }
        }
    }

    @Test func batchingRule() {
        #expect(imagesPerGEMM(images: 1, plane: 196, rows: 1024) == 1)
        #expect(imagesPerGEMM(images: 100, plane: 4096, rows: 576) == 1)      // wide enough alone
        #expect(imagesPerGEMM(images: 100, plane: 196, rows: 1024) == 11)     // about 2,048 columns
        #expect(imagesPerGEMM(images: 8, plane: 1, rows: 12544) == 8)
        #expect(imagesPerGEMM(images: 100, plane: 1024 + 1, rows: 4096) == 1) // patch matrix cap
    }
}
