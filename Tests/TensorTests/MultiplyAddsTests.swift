// The roofline's work counter (issue 18): every product counts m·n·k on the thread that started
// it, a Winograd convolution its 16 smaller products, parallel loops hand their workers' counts
// back, and other threads' work is not counted here.
import Foundation
@testable import Tensor
import Testing
import TestSupport

@Suite("Multiply-add counter")
struct MultiplyAddsTests {
    /// The count `body` adds on this thread.
    static func counted(_ body: () throws -> Void) rethrows -> Int {
        let before = MultiplyAdds.count
        try body()
        return MultiplyAdds.count - before
    }

    @Test func aProductCountsMTimesNTimesK() {
        let a = randomTensor([3, 7], seed: 1), b = randomTensor([7, 5], seed: 2), c = Tensor(shape: [3, 5])
        #expect(Self.counted { sgemm(m: 3, n: 5, k: 7, a: a.data, lda: 7, b: b.data, ldb: 5, c: c.data, ldc: 5) } == 105)
        #expect(Self.counted { sgemm(m: 0, n: 5, k: 7, a: a.data, lda: 7, b: b.data, ldb: 5, c: c.data, ldc: 5) } == 0)
    }

    @Test(arguments: [false, true])
    func aConvolutionCountsTheProductsItDid(winograd: Bool) throws {
        // 2 images, 8 → 4 channels, 6×6, 3×3 padding 1.
        let g = ConvGeometry(8, 4, kernel: 3, padding: 1)
        let x = randomTensor([2, 8, 6, 6], seed: 3), w = randomTensor([4, 8, 3, 3], seed: 4)
        let out = Tensor(shape: [2, 4, 6, 6])
        let n = try Self.counted { try conv2dForward(out: out, input: x, weight: w, bias: nil, geometry: g, workspace: Workspace(), winograd: winograd) }
        // Direct: 4 outputs × 72 products for each of 2·36 positions. Winograd F(2×2, 3×3): 16
        // products [4×8]·[8×18] over the 2·3·3 tiles.
        #expect(n == (winograd ? 16 * 4 * 8 * 18 : 4 * 72 * 72))
    }

    @Test func parallelLoopsHandTheirWorkersCountsBack() {
        let a = randomTensor([2, 2], seed: 5), b = randomTensor([2, 2], seed: 6)
        // (On the default thread count: the machine's cores, 2 here; one core runs the loop inline.)
        let n = Self.counted {
            parallelFor(8) { _ in
                let c = Tensor(shape: [2, 2])
                sgemm(m: 2, n: 2, k: 2, a: a.data, lda: 2, b: b.data, ldb: 2, c: c.data, ldc: 2)
            }
        }
        #expect(n == 64)
    }

    @Test func anotherThreadsWorkIsNotCountedHere() {
        let a = randomTensor([16, 16], seed: 7), b = randomTensor([16, 16], seed: 8)
        let before = MultiplyAdds.count
        let done = DispatchSemaphore(value: 0)
        final class Box: @unchecked Sendable { var count = 0 }  // written by the thread before it signals
        let theirs = Box()
        let t = Thread {
            let c = Tensor(shape: [16, 16])
            let start = MultiplyAdds.count
            sgemm(m: 16, n: 16, k: 16, a: a.data, lda: 16, b: b.data, ldb: 16, c: c.data, ldc: 16)
            theirs.count = MultiplyAdds.count - start
            done.signal()
        }
        t.start()
        done.wait()
        #expect(theirs.count == 4096)
        #expect(MultiplyAdds.count == before)
    }
}
