import Foundation
import NN
import Tensor
import Testing
import TestSupport

/// Layers: gradients through the parameter-owning wrappers and their bookkeeping.
@Suite struct LayerTests {
    @Test func layersMarkGradientsAndAccumulate() throws {
        let ws = Workspace()
        let conv = Conv2d("c", ConvGeometry(2, 3, kernel: 3, padding: 1), bias: true)
        var rng = SeededGenerator(seed: 1)
        Init.kaimingNormalFanOut(conv.weight.value, rng: &rng)
        let x = randomTensor([1, 2, 5, 5], seed: 2)
        let y = try conv(x, workspace: ws)
        let dy = randomTensor(y.shape, seed: 3)
        #expect(!conv.weight.hasGradient)
        _ = try conv.backward(dy, input: x, workspace: ws)
        let once = conv.weight.grad.array
        _ = try conv.backward(dy, input: x, workspace: ws, inputGradient: false)
        #expect(conv.weight.hasGradient)
        for (a, b) in zip(conv.weight.grad.array, once) { #expect(abs(a - 2 * b) <= 1e-5 * max(1, abs(b))) }
        conv.zeroGrad()
        #expect(!conv.weight.hasGradient && conv.weight.grad.maxAbs == 0)
    }

    @Test func batchNormCountsBatchesAndUsesRunningStatsInEval() throws {
        let bn = BatchNorm2d("bn", 2)
        let x = randomTensor([4, 2, 3, 3], seed: 4, scale: 3)
        _ = try bn(x, training: true)
        _ = try bn(x, training: true)
        #expect(bn.numBatchesTracked.value == 2)
        let (y, _) = try bn(x, training: false)
        // Eval output equals the affine map with the running statistics.
        let m = bn.runningMean[0], v = bn.runningVar[0]
        #expect(abs(y[0, 0, 1, 1] - (x[0, 0, 1, 1] - m) / (v + 1e-5).squareRoot()) < 1e-5)
        #expect(bn.numBatchesTracked.value == 2)
    }

    @Test func kaimingStd() {
        var rng = SeededGenerator(seed: 9)
        let t = Tensor(shape: [128, 256, 2, 2])
        Init.kaimingNormalFanOut(t, rng: &rng)
        var s = 0.0
        for i in 0..<t.count { s += Double(t.data[i] * t.data[i]) }
        let std = (s / Double(t.count)).squareRoot()
        #expect(abs(std - 0.0625) < 0.001, "MODEL.md §6.6: std √(2/512) = 0.0625, got \(std)")
    }
}
