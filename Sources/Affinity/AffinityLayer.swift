import NN
import Tensor

/// The affinity layer (`affinity_layer`, MODEL.md §6): one shared sieve block applied 9 times,
/// the learned vectorisation conv_d1 → conv_d2 → conv_d_final (each conv → ReLU → BN), then
/// X2 = W1ᵀ·X1 (C'×256) and x3 = X2ᵀ·w2 (256). Its four BatchNorms always use the statistics of
/// the current RoI batch (§6.5), in training and at inference.
public final class AffinityLayer: Module {
    /// C', the number of affinities (rows of X2).
    public let affinities: Int
    /// B, the RoIs per lesion-mask-feature batch (8 in the paper).
    public let batchSize: Int
    /// W1 [B, C'] (`batch_to_feat_mat`) and w2 [C', 1] (`batch_to_feat_vec`).
    public let w1: Parameter, w2: Parameter
    /// The shared sieve block `sieve.0`: `conv_down` (2×2, stride 2, 256 → 128) → `bn` → ReLU →
    /// `conv_up` (transposed 2×2, stride 2, 128 → 256); 28 → 14 → 28, no activation after `conv_up`.
    public let convDown: Conv2d, sieveBN: BatchNorm2d, convUp: ConvTranspose2d
    /// The vectorisation: `conv_d1` and `conv_d2` (2×2, stride 2: 28 → 14 → 7) and `conv_d_final`
    /// (7×7: 7 → 1), each followed by ReLU and then its BatchNorm `bn1`, `bn2`, `bn3`.
    public let convD1: Conv2d, bn1: BatchNorm2d, convD2: Conv2d, bn2: BatchNorm2d, convDFinal: Conv2d, bn3: BatchNorm2d
    /// How many times the shared sieve block is applied (3 stages × 3 entries of the container).
    public let sieveApplications: Int

    static let prefix = "affinity_layer"

    /// An affinity layer with zero weights (BatchNorm γ = 1) and the original keys under `affinity_layer`.
    /// - Parameters:
    ///   - affinities: C'.
    ///   - batchSize: B, the RoIs per batch.
    ///   - channels: Channels of the lesion mask features (256).
    ///   - reduced: Channels inside the sieve block (128).
    ///   - sieveApplications: How many times the sieve block runs (9).
    /// - Precondition: `affinities` and `batchSize` are positive.
    public init(affinities: Int, batchSize: Int = 8, channels: Int = 256, reduced: Int = 128, sieveApplications: Int = 9) {
        precondition(affinities > 0 && batchSize > 0)
        self.affinities = affinities; self.batchSize = batchSize; self.sieveApplications = sieveApplications
        let p = Self.prefix
        w1 = Parameter("\(p).batch_to_feat_mat", shape: [batchSize, affinities])
        w2 = Parameter("\(p).batch_to_feat_vec", shape: [affinities, 1])
        convDown = Conv2d("\(p).sieve.0.conv_down", ConvGeometry(channels, reduced, kernel: 2, stride: 2), bias: true)
        sieveBN = BatchNorm2d("\(p).sieve.0.bn", reduced)
        convUp = ConvTranspose2d("\(p).sieve.0.conv_up", ConvGeometry(reduced, channels, kernel: 2, stride: 2), bias: true)
        convD1 = Conv2d("\(p).conv_d1", ConvGeometry(channels, channels, kernel: 2, stride: 2), bias: true)
        bn1 = BatchNorm2d("\(p).bn1", channels)
        convD2 = Conv2d("\(p).conv_d2", ConvGeometry(channels, channels, kernel: 2, stride: 2), bias: true)
        bn2 = BatchNorm2d("\(p).bn2", channels)
        convDFinal = Conv2d("\(p).conv_d_final", ConvGeometry(channels, channels, kernel: 7), bias: true)
        bn3 = BatchNorm2d("\(p).bn3", channels)
    }

    private var sieveModules: [any Module] { [convDown, sieveBN, convUp] }

    /// W1, w2, the sieve block (once), then the vectorisation convs and BatchNorms.
    public var parameters: [Parameter] {
        [w1, w2] + convDown.parameters + sieveBN.parameters + convUp.parameters
            + convD1.parameters + bn1.parameters + convD2.parameters + bn2.parameters + convDFinal.parameters + bn3.parameters
    }

    /// State in the original order; the shared block appears once, as `sieve.0` (see `originalAliases`).
    public var stateEntries: [StateEntry] {
        [StateEntry(w1.name, .float(w1.value)), StateEntry(w2.name, .float(w2.value))]
            + convDown.stateEntries + sieveBN.stateEntries + convUp.stateEntries
            + convD1.stateEntries + bn1.stateEntries + convD2.stateEntries + bn2.stateEntries + convDFinal.stateEntries + bn3.stateEntries
    }

    /// The duplicate keys of the original state dict (`sieve.1/.2` share `sieve.0`; `pars.0/.1`
    /// alias W1 and w2): alias → the key it repeats.
    public var originalAliases: [(alias: String, of: String)] {
        var out: [(String, String)] = []
        for k in 1...2 {
            for e in convDown.stateEntries + sieveBN.stateEntries + convUp.stateEntries {
                out.append((e.name.replacingOccurrences(of: ".sieve.0.", with: ".sieve.\(k)."), e.name))
            }
        }
        out.append(("\(Self.prefix).pars.0", w1.name)); out.append(("\(Self.prefix).pars.1", w2.name))
        return out
    }

    /// MODEL.md §6.6: Kaiming normal (fan_out from dim 0) convs, biases 0.01, BN γ 1 / β 0.01,
    /// W1 and w2 standard normal.
    public func initialize(rng: inout SeededGenerator) {
        for c in [convDown, convD1, convD2, convDFinal] { Init.kaimingNormalFanOut(c.weight.value, rng: &rng); c.bias?.value.fill(0.01) }
        Init.kaimingNormalFanOut(convUp.weight.value, rng: &rng); convUp.bias?.value.fill(0.01)
        for b in [sieveBN, bn1, bn2, bn3] { b.weight.value.fill(1); b.bias.value.fill(0.01) }
        Init.normal(w1.value, std: 1, rng: &rng)
        Init.normal(w2.value, std: 1, rng: &rng)
    }

    /// What backward needs from one forward. The sieve works in the patch layout of its 2×2,
    /// stride-2 convolutions (`tilePatches`): x is each application's input as conv_down's patch
    /// matrix [1024, B, 14, 14], d and b conv_down's output before and after its BN + ReLU, channels
    /// first [128, B, 14, 14].
    public struct Saved {
        var sieve: [(x: Tensor, d: Tensor, s: BatchNormSaved, b: Tensor)] = []
        /// The last application's output, as conv_d1's patch matrix.
        var sievePatches: Tensor
        var c1: Tensor, s1: BatchNormSaved, c2: Tensor, s2: BatchNormSaved, c3: Tensor, s3: BatchNormSaved
        var h1: Tensor, h2: Tensor
        /// X1 [B, 256] of the forward.
        public var x1: Tensor
        /// X2 [C', 256] of the forward.
        public var x2: Tensor
    }

    /// The intermediate results a caller may want to look at.
    public struct Output {
        /// The sieve's output after its last application as conv_d1's patch matrix [1024, B, 14, 14].
        public var sievePatches: Tensor
        /// The sieve's output after its last application [B, 256, 28, 28] (laid out on demand).
        public var sieveOut: Tensor { get throws { try untilePatches(sievePatches, kernel: 2) } }
        /// X1 [B, 256], X2 [C', 256], x3 [1, 256].
        public var x1: Tensor, x2: Tensor, x3: Tensor
    }

    /// [B, 256, 28, 28] lesion mask features → x3 [1, 256].
    ///
    /// conv_down, conv_up and conv_d1 have kernel = stride = 2, so the nine sieve applications and
    /// conv_d1 run on the features' patch layout (`tiledConv2dForward`, `tiledConvTranspose2dForward`):
    /// conv_up's product is the next conv_down's patch matrix as it stands. The same values as the
    /// layers' own forward passes (tested).
    /// `keep: false` (inference): the sieve's intermediate results are not kept (each application's
    /// input is freed as the next one starts), and `backward` refuses the returned `Saved`.
    public func forward(_ features: Tensor, workspace ws: Workspace, keep: Bool = true) throws -> (Output, Saved) {
        try features.expectShape([batchSize, convDown.geometry.inChannels, 28, 28], "affinity layer", "lesion mask features")
        var x = try tilePatches(features, kernel: 2)
        var sieve: [(Tensor, Tensor, BatchNormSaved, Tensor)] = []
        for _ in 0..<sieveApplications {
            let d = try tiledConv2dForward(patches: x, weight: convDown.weight.value, bias: convDown.bias?.value)
            let (b, s) = try sieveBN(d, training: true, relu: true, channelsFirst: true)
            let up = try tiledConvTranspose2dForward(b, weight: convUp.weight.value, bias: convUp.bias?.value)
            if keep { sieve.append((x, d, s, b)) }
            x = up
        }
        let c1 = try swapLeadingAxes(try tiledConv2dForward(patches: x, weight: convD1.weight.value, bias: convD1.bias?.value, relu: true))
        let (h1, s1) = try bn1(c1, training: true)
        let c2 = try convD2(h1, workspace: ws, relu: true)
        let (h2, s2) = try bn2(c2, training: true)
        let c3 = try convDFinal(h2, workspace: ws, relu: true)
        let (h3, s3) = try bn3(c3, training: true)
        let x1 = try h3.reshaped([batchSize, h3.shape[1]])
        let n = x1.shape[1], k = affinities
        let x2 = Tensor(shape: [k, n])
        sgemm(transA: true, m: k, n: n, k: batchSize, a: w1.value.data, lda: k, b: x1.data, ldb: n, c: x2.data, ldc: n)
        let x3 = Tensor(shape: [1, n])
        sgemm(transA: true, m: n, n: 1, k: k, a: x2.data, lda: n, b: w2.value.data, ldb: 1, c: x3.data, ldc: 1)
        let saved = Saved(sieve: sieve.map { (x: $0.0, d: $0.1, s: $0.2, b: $0.3) }, sievePatches: x, c1: c1, s1: s1, c2: c2, s2: s2,
                          c3: c3, s3: s3, h1: h1, h2: h2, x1: x1, x2: x2)
        return (Output(sievePatches: x, x1: x1, x2: x2, x3: x3), saved)
    }

    /// Accumulates parameter gradients from dL/dx3 [1, 256] and returns dL/d(features).
    public func backward(_ dx3: Tensor, saved s: Saved, workspace ws: Workspace) throws -> Tensor {
        let n = s.x1.shape[1], k = affinities, b = batchSize
        try dx3.expectShape([1, n], "affinity layer backward", "dx3")
        guard s.sieve.count == sieveApplications else {
            throw TensorError.invalidArgument(op: "affinity layer backward", detail: "the forward was run for inference (keep: false) and kept nothing for backward")
        }
        // x3 = X2ᵀ w2: dX2 = w2 · dx3, dw2 += X2 · dx3ᵀ.
        let dX2 = Tensor(shape: [k, n])
        sgemm(m: k, n: n, k: 1, a: w2.value.data, lda: 1, b: dx3.data, ldb: n, c: dX2.data, ldc: n)
        sgemm(m: k, n: 1, k: n, a: s.x2.data, lda: n, b: dx3.data, ldb: 1, beta: 1, c: w2.grad.data, ldc: 1)
        // X2 = W1ᵀ X1: dW1 += X1 · dX2ᵀ, dX1 = W1 · dX2.
        sgemm(transB: true, m: b, n: k, k: n, a: s.x1.data, lda: n, b: dX2.data, ldb: n, beta: 1, c: w1.grad.data, ldc: k)
        let dX1 = Tensor(shape: [b, n, 1, 1])
        sgemm(m: b, n: n, k: k, a: w1.value.data, lda: k, b: dX2.data, ldb: n, c: dX1.data, ldc: n)
        w1.hasGradient = true; w2.hasGradient = true
        // The vectorisation, in reverse (BN input = ReLU output).
        var d = try bn3.backward(dX1, input: s.c3, saved: s.s3)!
        d = try convDFinal.backward(try reluGradient(d, output: s.c3), input: s.h2, workspace: ws)!
        d = try bn2.backward(d, input: s.c2, saved: s.s2)!
        d = try convD2.backward(try reluGradient(d, output: s.c2), input: s.h1, workspace: ws)!
        d = try bn1.backward(d, input: s.c1, saved: s.s1)!
        // conv_d1 and the sieve's 9 backward passes through the one block, in the patch layout.
        d = try tiledConv2dBackward(dOut: try swapLeadingAxes(try reluGradient(d, output: s.c1)), patches: s.sievePatches,
                                    weight: convD1.weight.value, dWeight: convD1.weight.grad, dBias: convD1.bias?.grad)!
        for e in s.sieve.reversed() {
            let db = try tiledConvTranspose2dBackward(dOut: d, input: e.b, weight: convUp.weight.value, dWeight: convUp.weight.grad,
                                                      dBias: convUp.bias?.grad)!
            let dd = try sieveBN.backward(db, input: e.d, saved: e.s, reluOutput: e.b)!
            d = try tiledConv2dBackward(dOut: dd, patches: e.x, weight: convDown.weight.value, dWeight: convDown.weight.grad,
                                        dBias: convDown.bias?.grad)!
        }
        for c in [convD1, convDown] as [Conv2d] { c.weight.hasGradient = true; c.bias?.hasGradient = true }
        convUp.weight.hasGradient = true; convUp.bias?.hasGradient = true
        return try untilePatches(d, kernel: 2)
    }
}

/// The image classifier `s2new`: fc_l1 256→128 → ReLU → fc_l2 128→128 → ReLU → class_predict_logits 128→3.
public final class ImageClassifier: Module {
    /// `s2new.fc_l1` (256 → 128), `s2new.fc_l2` (128 → 128) and `s2new.class_predict_logits` (128 → 3).
    public let fc1: Linear, fc2: Linear, logits: Linear

    /// What backward needs from one forward: the input and both ReLU outputs.
    public struct Saved { var x: Tensor, h1: Tensor, h2: Tensor }

    /// A classifier with zero parameters and the keys `s2new.*`.
    /// - Parameters:
    ///   - inFeatures: The width of x3.
    ///   - hidden: The width of the two hidden layers.
    ///   - classes: The number of logits.
    public init(inFeatures: Int = 256, hidden: Int = 128, classes: Int = 3) {
        fc1 = Linear("s2new.fc_l1", inFeatures, hidden)
        fc2 = Linear("s2new.fc_l2", hidden, hidden)
        logits = Linear("s2new.class_predict_logits", hidden, classes)
    }

    /// `fc_l1`, `fc_l2`, then `class_predict_logits` parameters.
    public var parameters: [Parameter] { fc1.parameters + fc2.parameters + logits.parameters }
    /// The parameters as state entries, in state-dict order.
    public var stateEntries: [StateEntry] { fc1.stateEntries + fc2.stateEntries + logits.stateEntries }

    /// PyTorch's default Linear initialisation for the three layers, in order: weight and bias
    /// U(±1/√in) from `rng`.
    public func initialize(rng: inout SeededGenerator) {
        for l in [fc1, fc2, logits] {
            let b = 1 / Float(l.inFeatures).squareRoot()
            Init.uniform(l.weight.value, bound: b, rng: &rng)
            if let bias = l.bias { Init.uniform(bias.value, bound: b, rng: &rng) }
        }
    }

    /// [1, 256] → logits [1, 3].
    public func forward(_ x: Tensor) throws -> (Tensor, Saved) {
        let h1 = try fc1(x); reluInPlace(h1)
        let h2 = try fc2(h1); reluInPlace(h2)
        return (try logits(h2), Saved(x: x, h1: h1, h2: h2))
    }

    /// Accumulates the three layers' gradients and returns dL/dx.
    /// - Parameters:
    ///   - dLogits: The gradient of the logits [1, 3].
    ///   - s: What the forward returned.
    /// - Returns: dL/dx [1, 256].
    /// - Throws: `TensorError` for mismatched shapes.
    public func backward(_ dLogits: Tensor, saved s: Saved) throws -> Tensor {
        var d = try logits.backward(dLogits, input: s.h2)!
        d = try fc2.backward(try reluGradient(d, output: s.h2), input: s.h1)!
        return try fc1.backward(try reluGradient(d, output: s.h1), input: s.x)!
    }
}

