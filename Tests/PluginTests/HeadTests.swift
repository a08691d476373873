import Foundation
import NN
import PluginHost
import Tensor
import Testing

/// A small deterministic generator for test data (splitmix64 → uniform → Box–Muller).
private struct TestRandom {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func uniform() -> Double { Double(next() >> 11) / 9_007_199_254_740_992.0 }
    mutating func normal() -> Float {
        let u1 = max(uniform(), 1e-12), u2 = uniform()
        return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }
    mutating func index(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}

/// A feature batch [8, 256, side, side] whose channels c ≡ label (mod 3) carry +0.5: a signal a
/// pooling head can find under N(0, 0.5²) noise.
private func featureBatch(label: Int, side: Int, random: inout TestRandom) -> Tensor {
    let t = Tensor(shape: [8, 256, side, side])
    let plane = side * side
    for k in 0..<8 {
        for c in 0..<256 {
            let shift: Float = c % 3 == label ? 0.5 : 0
            let row = t.data + (k * 256 + c) * plane
            for i in 0..<plane { row[i] = shift + 0.5 * random.normal() }
        }
    }
    return t
}

@Suite("Classification heads", .serialized)
struct HeadTests {
    static let heads = ["meanpool", "attention"]

    /// Finite differences through the ABI: loss = Σ logits ⊙ R, central differences on sampled
    /// coordinates of every parameter and of the features (a 2×2 map keeps the features' gradient
    /// large enough to measure in float32).
    @Test(arguments: heads)
    func gradientsMatchFiniteDifferences(_ id: String) throws {
        let head = try sharedRegistry.head(id: id).create(seed: 3)
        var random = TestRandom(state: 17)
        let features = featureBatch(label: 1, side: 2, random: &random)
        let r: [Float] = [0.7, -1.3, 0.4]
        func loss() throws -> Double {
            let logits = try head.forward(features)
            return (0..<3).reduce(0) { $0 + Double(logits.data[$1]) * Double(r[$1]) }
        }
        head.zeroGrad()
        _ = try head.forward(features)
        let featuresGradient = Tensor(shape: features.shape)
        try head.backward(logitsGradient: try Tensor(shape: [1, 3], values: r), featuresGradient: featuresGradient)
        let h: Float = 1e-3
        var worst = 0.0, checked = 0
        func check(_ pointer: UnsafeMutablePointer<Float>, _ analytic: Float, _ what: String) throws {
            let saved = pointer.pointee
            pointer.pointee = saved + h
            let plus = try loss()
            pointer.pointee = saved - h
            let minus = try loss()
            pointer.pointee = saved
            let fd = (plus - minus) / (2 * Double(h))
            let error = abs(fd - Double(analytic))
            let allowed = 1e-2 * max(abs(fd), abs(Double(analytic))) + 1e-4
            #expect(error <= allowed, "\(id) \(what): finite difference \(fd), analytic \(analytic)")
            worst = max(worst, error)
            checked += 1
        }
        for p in head.parameters {
            for _ in 0..<6 {
                let j = random.index(p.value.count)
                try check(p.value.data + j, p.grad.data[j], "\(p.name)[\(j)]")
            }
        }
        for _ in 0..<24 {
            let j = random.index(features.count)
            try check(features.data + j, featuresGradient.data[j], "features[\(j)]")
        }
        #expect(checked == head.parameters.count * 6 + 24)
        // Backward accumulates: a second backward doubles every gradient.
        let before = head.parameters[0].grad.array
        _ = try head.forward(features)
        try head.backward(logitsGradient: try Tensor(shape: [1, 3], values: r), featuresGradient: nil)
        #expect(zip(head.parameters[0].grad.array, before).allSatisfy { abs($0 - 2 * $1) <= 1e-6 * max(1, abs($1)) })
    }

    /// A few Adam steps of the head alone on fixed 8×256×28×28 batches lower L_CLS; the parameters
    /// round-trip through a safetensors checkpoint.
    @Test(arguments: heads)
    func trainsAndRoundTripsThroughACheckpoint(_ id: String) throws {
        let plugin = try sharedRegistry.head(id: id)
        let head = try plugin.create(seed: 5)
        var random = TestRandom(state: 29)
        let batches = (0..<6).map { i in (featureBatch(label: i % 3, side: 28, random: &random), i % 3) }
        let gradient = Tensor(shape: [1, 3])
        func meanLoss() throws -> Float {
            var total: Float = 0
            for (f, label) in batches { total += classificationLoss(logits: try head.forward(f), label: label, gradient: gradient) }
            return total / Float(batches.count)
        }
        let initial = try meanLoss()
        let adam = Adam(learningRate: 1e-3)
        for _ in 0..<10 {
            for (f, label) in batches {
                head.zeroGrad()
                _ = classificationLoss(logits: try head.forward(f), label: label, gradient: gradient)
                try head.backward(logitsGradient: gradient, featuresGradient: nil)
                adam.step(head.parameters)
            }
        }
        let trained = try meanLoss()
        #expect(trained < 0.7 * initial, "\(id): L_CLS \(initial) → \(trained)")

        let dir = try temporaryDirectory("ckpt")
        defer { removeTree(dir) }
        let url = URL(fileURLWithPath: dir + "/head.safetensors")
        var writer = SafeTensorsWriter(metadata: ["head": plugin.plugin.record])
        head.addState(to: &writer)
        try writer.write(to: url)
        let file = try SafeTensorsFile(contentsOf: url)
        #expect(file.metadata["head"] == "\(id) 1.0.0")
        #expect(Set(file.names) == Set(head.parameters.map(\.name)))
        let fresh = try plugin.create(seed: 77)
        let probe = batches[4].0
        #expect(try fresh.forward(probe).array != (try head.forward(probe).array))
        try fresh.load(from: file)
        #expect(try fresh.forward(probe).array == (try head.forward(probe).array))
    }

    @Test func badConfigsAndShapesAreErrors() throws {
        for id in Self.heads {
            let plugin = try sharedRegistry.head(id: id)
            #expect(throws: PluginError.self) { try plugin.create(config: #"{"hidden": 0}"#, seed: 1) }
            let head = try plugin.create(config: #"{"channels": 16, "hidden": 8}"#, seed: 1)
            #expect(head.parameters.first { $0.name == "head.\(id).fc1.weight" }?.shape == [8, 16])
            #expect(throws: PluginError.self) { try head.forward(Tensor(shape: [8, 256, 4, 4])) }
            #expect(throws: TensorError.self) { try head.backward(logitsGradient: Tensor(shape: [1, 3]), featuresGradient: nil) }
            #expect(try head.forward(Tensor(shape: [8, 16, 4, 4])).shape == [1, 3])
        }
    }
}
