// Convolutions with kernel = stride on the patch layout (TiledConvolution.swift) give what the
// convolution layers give on images, bit for bit when kgemm runs the products (one GEMM over all the
// images on both sides), forward and backward; BatchNorm on channels-first tensors gives what it gives
// on images first.
@testable import Tensor
import Testing
import TestSupport

@Suite struct TiledConvolutionTests {
    /// Equal bit for bit under kgemm, else within float rounding.
    static func expectSame(_ a: Tensor, _ b: Tensor, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(a.shape == b.shape, "\(what): \(a.shape) vs \(b.shape)", sourceLocation: sourceLocation)
        guard a.shape == b.shape else { return }
        if Engine.useKGEMM {
            var differing = 0
            for i in 0..<a.count where a.data[i] != b.data[i] { differing += 1 }
            #expect(differing == 0, "\(what): \(differing) of \(a.count) values differ", sourceLocation: sourceLocation)
        }
        let c = compare(a, b)
        #expect(c.maxAbsError <= 1e-5 * max(1, c.maxExpectedMagnitude), "\(what): \(c)", sourceLocation: sourceLocation)
    }

    struct Case: CustomStringConvertible, Sendable {
        var cin: Int, cout: Int, k: Int, n: Int, h: Int, w: Int
        var description: String { "\(cin)→\(cout) \(k)×\(k)/\(k) on \(n)×\(h)×\(w)" }
    }

    // Every image in one GEMM on the layers' side too (imagesPerGEMM), so the weight gradients are
    // the same single product.
    static let cases: [Case] = [
        Case(cin: 16, cout: 8, k: 2, n: 6, h: 14, w: 14),
        Case(cin: 5, cout: 7, k: 3, n: 3, h: 9, w: 12),
        Case(cin: 12, cout: 20, k: 2, n: 1, h: 6, w: 4),
    ]

    @Test(arguments: cases)
    func patchesAreTheConvolutionsPatchMatrix(_ c: Case) throws {
        let g = ConvGeometry(c.cin, c.cout, kernel: c.k, stride: c.k)
        let x = randomTensor([c.n, c.cin, c.h, c.w], seed: 1)
        let p = try tilePatches(x, kernel: c.k)
        let oh = c.h / c.k, ow = c.w / c.k, width = c.n * oh * ow
        #expect(p.shape == [c.cin * c.k * c.k, c.n, oh, ow])
        let col = Tensor(shape: [g.patchSize, width])
        for i in 0..<c.n {
            im2col(x.data + i * c.cin * c.h * c.w, channels: c.cin, h: c.h, w: c.w, g: g, oh: oh, ow: ow, col: col.data + i * oh * ow, ld: width)
        }
        #expect(Array(UnsafeBufferPointer(start: p.data, count: p.count)) == Array(UnsafeBufferPointer(start: col.data, count: col.count)))
        let back = try untilePatches(p, kernel: c.k)
        #expect(back.shape == x.shape)
        #expect(Array(UnsafeBufferPointer(start: back.data, count: back.count)) == Array(UnsafeBufferPointer(start: x.data, count: x.count)))
    }

    @Test(arguments: cases)
    func convolutionMatchesTheLayer(_ c: Case) throws {
        let g = ConvGeometry(c.cin, c.cout, kernel: c.k, stride: c.k)
        let ws = Workspace()
        let oh = c.h / c.k, ow = c.w / c.k
        let x = randomTensor([c.n, c.cin, c.h, c.w], seed: 11)
        let wt = randomTensor([c.cout, c.cin, c.k, c.k], seed: 12, scale: 0.3)
        let bias = randomTensor([c.cout], seed: 13)
        let dy = randomTensor([c.n, c.cout, oh, ow], seed: 14)
        let p = try tilePatches(x, kernel: c.k)
        for relu in [false, true] {
            let out = Tensor(shape: [c.n, c.cout, oh, ow])
            try conv2dForward(out: out, input: x, weight: wt, bias: bias, geometry: g, workspace: ws, winograd: false, relu: relu)
            let tiled = try tiledConv2dForward(patches: p, weight: wt, bias: bias, relu: relu)
            Self.expectSame(try swapLeadingAxes(tiled), out, "output, relu \(relu)")
        }
        let dx = Tensor(shape: x.shape), dw = Tensor(shape: wt.shape, repeating: 0.25), db = Tensor(shape: [c.cout], repeating: 0.5)
        try conv2dBackward(dInput: dx, dWeight: dw, dBias: db, dOut: dy, input: x, weight: wt, geometry: g, workspace: ws, winograd: false)
        let tdw = Tensor(shape: wt.shape, repeating: 0.25), tdb = Tensor(shape: [c.cout], repeating: 0.5)
        let dp = try tiledConv2dBackward(dOut: try swapLeadingAxes(dy), patches: p, weight: wt, dWeight: tdw, dBias: tdb)!
        Self.expectSame(try untilePatches(dp, kernel: c.k), dx, "input gradient")
        Self.expectSame(tdw, dw, "weight gradient (accumulated onto 0.25)")
        Self.expectSame(tdb, db, "bias gradient (accumulated onto 0.5)")
        #expect(try tiledConv2dBackward(dOut: try swapLeadingAxes(dy), patches: p, weight: wt, dWeight: nil, dBias: nil,
                                        patchesGradient: false) == nil)
    }

    @Test(arguments: cases)
    func transposedConvolutionMatchesTheLayer(_ c: Case) throws {
        let g = ConvGeometry(c.cin, c.cout, kernel: c.k, stride: c.k)
        let ws = Workspace()
        let x = randomTensor([c.n, c.cin, c.h, c.w], seed: 21)
        let wt = randomTensor([c.cin, c.cout, c.k, c.k], seed: 22, scale: 0.3)
        let bias = randomTensor([c.cout], seed: 23)
        let dy = randomTensor([c.n, c.cout, c.h * c.k, c.w * c.k], seed: 24)
        let xcf = try swapLeadingAxes(x)
        for relu in [false, true] {
            let out = Tensor(shape: [c.n, c.cout, c.h * c.k, c.w * c.k])
            try convTranspose2dForward(out: out, input: x, weight: wt, bias: bias, geometry: g, workspace: ws, relu: relu)
            let tiled = try tiledConvTranspose2dForward(xcf, weight: wt, bias: bias, relu: relu)
            #expect(tiled.shape == [c.cout * c.k * c.k, c.n, c.h, c.w])
            Self.expectSame(try untilePatches(tiled, kernel: c.k), out, "output, relu \(relu)")
        }
        let dx = Tensor(shape: x.shape), dw = Tensor(shape: wt.shape, repeating: 0.25), db = Tensor(shape: [c.cout], repeating: 0.5)
        try convTranspose2dBackward(dInput: dx, dWeight: dw, dBias: db, dOut: dy, input: x, weight: wt, geometry: g, workspace: ws)
        let tdw = Tensor(shape: wt.shape, repeating: 0.25), tdb = Tensor(shape: [c.cout], repeating: 0.5)
        let tdx = try tiledConvTranspose2dBackward(dOut: try tilePatches(dy, kernel: c.k), input: xcf, weight: wt, dWeight: tdw, dBias: tdb)!
        Self.expectSame(try swapLeadingAxes(tdx), dx, "input gradient")
        Self.expectSame(tdw, dw, "weight gradient (accumulated onto 0.25)")
        Self.expectSame(tdb, db, "bias gradient (accumulated onto 0.5)")
    }

    @Test func batchNormChannelsFirst() throws {
        let x = randomTensor([5, 6, 7, 3], seed: 31), dy = randomTensor([5, 6, 7, 3], seed: 32)
        let gamma = randomTensor([6], seed: 33), beta = randomTensor([6], seed: 34)
        for training in [true, false] {
            for relu in [false, true] {
                let rm = randomTensor([6], seed: 35), rv = Tensor(shape: [6], repeating: 1.5)
                let rmCF = randomTensor([6], seed: 35), rvCF = Tensor(shape: [6], repeating: 1.5)
                let out = Tensor(shape: x.shape)
                let saved = try batchNorm2dForward(out: out, input: x, gamma: gamma, beta: beta, runningMean: rm, runningVar: rv,
                                                   training: training, relu: relu)
                let xcf = try swapLeadingAxes(x), outCF = Tensor(shape: xcf.shape)
                let savedCF = try batchNorm2dForward(out: outCF, input: xcf, gamma: gamma, beta: beta, runningMean: rmCF, runningVar: rvCF,
                                                     training: training, relu: relu, channelsFirst: true)
                #expect(savedCF.channelsFirst && !saved.channelsFirst)
                #expect(saved.mean == savedCF.mean && saved.invStd == savedCF.invStd)
                Self.expectSame(try swapLeadingAxes(outCF), out, "output, training \(training), relu \(relu)")
                Self.expectSame(rmCF, rm, "running mean"); Self.expectSame(rvCF, rv, "running variance")
                let dx = Tensor(shape: x.shape), dg = Tensor(shape: [6]), dbeta = Tensor(shape: [6])
                try batchNorm2dBackward(dInput: dx, dGamma: dg, dBeta: dbeta, dOut: dy, input: x, gamma: gamma, saved: saved)
                let dxCF = Tensor(shape: xcf.shape), dgCF = Tensor(shape: [6]), dbetaCF = Tensor(shape: [6])
                try batchNorm2dBackward(dInput: dxCF, dGamma: dgCF, dBeta: dbetaCF, dOut: try swapLeadingAxes(dy), input: xcf, gamma: gamma,
                                        saved: savedCF)
                Self.expectSame(try swapLeadingAxes(dxCF), dx, "input gradient, training \(training)")
                Self.expectSame(dgCF, dg, "γ gradient"); Self.expectSame(dbetaCF, dbeta, "β gradient")
            }
        }
    }

    /// The product over a biased, ReLU'd matrix read as it goes against the matrix written out and
    /// `sgemm` (kgemm's small-row product): bit for bit, with NaN and −0 in the matrix and widths off
    /// the 24-column blocks.
    @Test(arguments: [(1, 100), (2, 64), (4, 37), (3, 1), (2, 1000)])
    func reluBiasedProductMatchesTheProduct(m: Int, width: Int) throws {
        guard Engine.kgemmAvailable else { return }
        let rows = 19
        let x = randomTensor([rows, width], seed: 61), w = randomTensor([m, rows], seed: 62), bias = randomTensor([rows], seed: 63)
        for i in stride(from: 5, to: x.count, by: 41) { x.data[i] = .nan }
        for i in stride(from: 7, to: x.count, by: 37) { x.data[i] = -0.0 }
        for withBias in [true, false] {
            let relu = Tensor(shape: [rows, width])
            for r in 0..<rows {
                for j in 0..<width { let v = withBias ? x.data[r * width + j] + bias.data[r] : x.data[r * width + j]; relu.data[r * width + j] = v > 0 ? v : 0 }
            }
            let expected = Tensor(shape: [m, width]), fused = Tensor(shape: [m, width])
            sgemm(m: m, n: width, k: rows, a: w.data, lda: rows, b: relu.data, ldb: width, c: expected.data, ldc: width)
            reluBiasedProduct(m: m, rows: rows, width: width, weight: w.data, x: x.data, bias: withBias ? UnsafePointer(bias.data) : nil,
                              out: fused.data)
            Self.expectSame(fused, expected, "m \(m), width \(width), bias \(withBias)")
        }
    }

    @Test func badShapesAreNamedErrors() throws {
        let x = Tensor(shape: [1, 4, 5, 6])
        #expect(throws: TensorError.self) { try tilePatches(x, kernel: 2) }        // 5 rows do not tile by 2
        #expect(throws: TensorError.self) { try untilePatches(Tensor(shape: [6, 1, 2, 2]), kernel: 2) }
        let p = Tensor(shape: [16, 1, 2, 3])
        #expect(throws: TensorError.self) { try tiledConv2dForward(patches: p, weight: Tensor(shape: [3, 5, 2, 2]), bias: nil) }
        #expect(throws: TensorError.self) { try tiledConv2dForward(patches: p, weight: Tensor(shape: [3, 4, 2, 2]), bias: Tensor(shape: [4])) }
        #expect(throws: TensorError.self) {
            try tiledConvTranspose2dForward(Tensor(shape: [4, 1, 2, 3]), weight: Tensor(shape: [5, 3, 2, 2]), bias: nil)
        }
        #expect(throws: TensorError.self) {
            try tiledConvTranspose2dBackward(dOut: Tensor(shape: [11, 1, 2, 3]), input: Tensor(shape: [4, 1, 2, 3]),
                                             weight: Tensor(shape: [4, 3, 2, 2]), dWeight: nil, dBias: nil)
        }
        #expect(throws: TensorError.self) { try swapLeadingAxes(Tensor(shape: [2, 3])) }
    }
}
