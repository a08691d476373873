// The affinity layer runs its sieve and conv_d1 on the patch layout of their 2×2, stride-2
// convolutions (tiledConv2dForward & co.). Its forward and backward must give what its modules give
// applied one after the other on images (Conv2d, BatchNorm2d, ConvTranspose2d), bit for bit when
// kgemm runs the products.
@testable import Affinity
import NN
import Tensor
import Testing
import TestSupport

@Suite struct AffinityLayerLayoutTests {
    static func differing(_ a: Tensor, _ b: Tensor) -> Int {
        guard a.shape == b.shape else { return max(a.count, b.count) }
        var n = 0
        for i in 0..<a.count where a.data[i] != b.data[i] { n += 1 }
        return n
    }

    static func expectSame(_ a: Tensor, _ b: Tensor, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(a.shape == b.shape, "\(what): \(a.shape) vs \(b.shape)", sourceLocation: sourceLocation)
        guard a.shape == b.shape else { return }
        if Engine.useKGEMM {
            #expect(differing(a, b) == 0, "\(what): \(differing(a, b)) of \(a.count) values differ", sourceLocation: sourceLocation)
        }
        let c = compare(a, b)
        #expect(c.maxAbsError <= 1e-4 * max(1, c.maxExpectedMagnitude), "\(what): \(c)", sourceLocation: sourceLocation)
    }

    @Test func forwardAndBackwardMatchTheModulesOnImages() throws {
        let layer = AffinityLayer(affinities: 5, batchSize: 3, channels: 16, reduced: 8, sieveApplications: 4)
        var rng = SeededGenerator(seed: 3)
        layer.initialize(rng: &rng)
        let ws = Workspace()
        let features = randomTensor([3, 16, 28, 28], seed: 41)
        let dx3 = randomTensor([1, 16], seed: 42)

        // The modules on images, as the layer computed before it kept the patch layout.
        var x = features
        var sieve: [(x: Tensor, d: Tensor, s: BatchNormSaved, b: Tensor)] = []
        for _ in 0..<layer.sieveApplications {
            let d = try layer.convDown(x, workspace: ws)
            let (b, s) = try layer.sieveBN(d, training: true, relu: true)
            let up = try layer.convUp(b, workspace: ws)
            sieve.append((x, d, s, b))
            x = up
        }
        let c1 = try layer.convD1(x, workspace: ws, relu: true)

        let (out, saved) = try layer.forward(features, workspace: ws)
        Self.expectSame(try out.sieveOut, x, "sieve output")
        Self.expectSame(saved.c1, c1, "conv_d1 after its ReLU")
        #expect(saved.sieve.count == sieve.count)

        // Backward: from conv_d1's output gradient the layer's own way, then the modules' way.
        let parameters = layer.parameters
        layer.zeroGrad()
        let dFeatures = try layer.backward(dx3, saved: saved, workspace: ws)
        let gradients = parameters.map { $0.grad.clone() }
        let flags = parameters.map(\.hasGradient)

        layer.zeroGrad()
        // The vectorisation and the affinity products: the same code as the layer's.
        let n = saved.x1.shape[1], k = layer.affinities, b = layer.batchSize
        let dX2 = Tensor(shape: [k, n])
        sgemm(m: k, n: n, k: 1, a: layer.w2.value.data, lda: 1, b: dx3.data, ldb: n, c: dX2.data, ldc: n)
        sgemm(m: k, n: 1, k: n, a: saved.x2.data, lda: n, b: dx3.data, ldb: 1, beta: 1, c: layer.w2.grad.data, ldc: 1)
        sgemm(transB: true, m: b, n: k, k: n, a: saved.x1.data, lda: n, b: dX2.data, ldb: n, beta: 1, c: layer.w1.grad.data, ldc: k)
        let dX1 = Tensor(shape: [b, n, 1, 1])
        sgemm(m: b, n: n, k: k, a: layer.w1.value.data, lda: k, b: dX2.data, ldb: n, c: dX1.data, ldc: n)
        layer.w1.hasGradient = true; layer.w2.hasGradient = true
        var d = try layer.bn3.backward(dX1, input: saved.c3, saved: saved.s3)!
        d = try layer.convDFinal.backward(try reluGradient(d, output: saved.c3), input: saved.h2, workspace: ws)!
        d = try layer.bn2.backward(d, input: saved.c2, saved: saved.s2)!
        d = try layer.convD2.backward(try reluGradient(d, output: saved.c2), input: saved.h1, workspace: ws)!
        d = try layer.bn1.backward(d, input: saved.c1, saved: saved.s1)!
        // conv_d1 and the sieve on images.
        d = try layer.convD1.backward(try reluGradient(d, output: c1), input: x, workspace: ws)!
        for e in sieve.reversed() {
            let db = try layer.convUp.backward(d, input: e.b, workspace: ws)!
            let dd = try layer.sieveBN.backward(try reluGradient(db, output: e.b), input: e.d, saved: e.s)!
            d = try layer.convDown.backward(dd, input: e.x, workspace: ws)!
        }
        Self.expectSame(dFeatures, d, "gradient of the lesion mask features")
        for (i, p) in parameters.enumerated() {
            Self.expectSame(gradients[i], p.grad, "gradient of \(p.name)")
            #expect(flags[i] == p.hasGradient, "\(p.name): has a gradient \(flags[i]) vs \(p.hasGradient)")
        }
        #expect(parameters.allSatisfy { $0.hasGradient })

        // For inference: the same outputs without the sieve's intermediate results, and a backward
        // through them is a named error.
        let (lean, leanSaved) = try layer.forward(features, workspace: ws, keep: false)
        for (a, b, what) in [(lean.x1, out.x1, "X1"), (lean.x2, out.x2, "X2"), (lean.x3, out.x3, "x3"), (try lean.sieveOut, try out.sieveOut, "sieve")] {
            #expect(Self.differing(a, b) == 0, "\(what) differs without keeping")
        }
        #expect(leanSaved.sieve.isEmpty)
        #expect(throws: TensorError.self) { try layer.backward(dx3, saved: leanSaved, workspace: ws) }
    }
}
