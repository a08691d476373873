// Winograd F(2×2, 3×3) against the im2col + GEMM convolution it replaces: forward (odd and even
// sides, batches, bias) and the input gradient (accumulated), to float rounding.
@testable import Tensor
import Testing
import TestSupport

@Suite("Winograd 3×3 convolution", .serialized)
struct WinogradTests {
    /// Runs `body` with Winograd forced on, then off (passed down, not set process-wide: other
    /// suites run at the same time).
    static func both<T>(_ body: (Bool) throws -> T) rethrows -> (winograd: T, im2col: T) {
        (try body(true), try body(false))
    }

    @Test(arguments: [(1, 3, 5, 7, 7), (2, 8, 16, 14, 14), (1, 64, 32, 33, 20), (3, 17, 9, 1, 6), (1, 5, 4, 2, 2)])
    func forwardAgreesWithIm2col(_ n: Int, _ cin: Int, _ cout: Int, _ h: Int, _ w: Int) throws {
        let g = ConvGeometry(cin, cout, kernel: 3, padding: 1)
        #expect(g.isWinogradEligible)
        let x = randomTensor([n, cin, h, w], seed: 1)
        let wt = randomTensor([cout, cin, 3, 3], seed: 2, scale: 0.3)
        let bias = randomTensor([cout], seed: 3)
        let ws = Workspace()
        let (a, b) = try Self.both { (winograd: Bool) throws -> Tensor in
            let out = Tensor(shape: [n, cout, h, w])
            out.fill(99)  // overwritten, not accumulated
            try conv2dForward(out: out, input: x, weight: wt, bias: bias, geometry: g, workspace: ws, winograd: winograd)
            return out
        }
        let c = compare(a, b)
        #expect(c.maxAbsError <= 1e-5 * max(1, c.maxExpectedMagnitude), "\(c)")
        let finite = a.array.allSatisfy { $0.isFinite }
        #expect(finite)
    }

    @Test(arguments: [(1, 6, 4, 9, 8), (2, 16, 24, 14, 14), (1, 3, 5, 1, 1)])
    func inputGradientAgreesWithIm2col(_ n: Int, _ cin: Int, _ cout: Int, _ h: Int, _ w: Int) throws {
        let g = ConvGeometry(cin, cout, kernel: 3, padding: 1)
        let x = randomTensor([n, cin, h, w], seed: 4)
        let wt = randomTensor([cout, cin, 3, 3], seed: 5, scale: 0.3)
        let dy = randomTensor([n, cout, h, w], seed: 6)
        let start = randomTensor([n, cin, h, w], seed: 7)  // the gradient is accumulated onto this
        let ws = Workspace()
        let (a, b) = try Self.both { (winograd: Bool) throws -> (Tensor, Tensor) in
            let dx = Tensor(shape: x.shape)
            for i in 0..<dx.count { dx.data[i] = start.data[i] }
            let dw = Tensor(shape: wt.shape)
            try conv2dBackward(dInput: dx, dWeight: dw, dBias: nil, dOut: dy, input: x, weight: wt, geometry: g, workspace: ws,
                               winograd: winograd)
            return (dx, dw)
        }
        let cx = compare(a.0, b.0), cw = compare(a.1, b.1)
        #expect(cx.maxAbsError <= 1e-5 * max(1, cx.maxExpectedMagnitude), "dInput: \(cx)")
        #expect(cw.maxAbsError == 0, "dWeight takes the same path either way: \(cw)")
    }

    @Test func otherGeometriesKeepIm2col() {
        #expect(!ConvGeometry(8, 8, kernel: 3, stride: 2, padding: 1).isWinogradEligible)
        #expect(!ConvGeometry(8, 8, kernel: 3, padding: 0).isWinogradEligible)
        #expect(!ConvGeometry(8, 8, kernel: 3, padding: 2, dilation: 2).isWinogradEligible)
        #expect(!ConvGeometry(8, 8, kernel: 1).isWinogradEligible)
    }
}
