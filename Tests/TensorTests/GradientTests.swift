import Foundation
import Testing
import Tensor
import TestSupport

/// Finite-difference checks of every kernel's backward, on several shapes.
@Suite struct GradientTests {
    struct ConvCase: CustomStringConvertible, Sendable {
        var g: ConvGeometry
        var h: Int, w: Int, n: Int
        var bias: Bool
        var description: String { "\(g) on \(n)×\(h)×\(w)" }
    }

    static let convCases: [ConvCase] = [
        ConvCase(g: ConvGeometry(3, 4, kernel: 3, stride: 1, padding: 1), h: 9, w: 7, n: 1, bias: true),
        ConvCase(g: ConvGeometry(3, 2, kernel: 7, stride: 2, padding: 3), h: 11, w: 9, n: 2, bias: false),
        ConvCase(g: ConvGeometry(4, 3, kernel: 1, stride: 2), h: 9, w: 8, n: 1, bias: false),
        ConvCase(g: ConvGeometry(2, 3, kernel: 3, stride: 2, padding: 2, dilation: 2), h: 9, w: 11, n: 1, bias: true),
        ConvCase(g: ConvGeometry(3, 2, kernel: 2, stride: 2), h: 8, w: 6, n: 2, bias: true),
        ConvCase(g: ConvGeometry(3, 3, kernel: 1), h: 5, w: 4, n: 1, bias: true),
    ]

    @Test(arguments: convCases)
    func conv2d(_ c: ConvCase) throws {
        let ws = Workspace()
        let x = randomTensor([c.n, c.g.inChannels, c.h, c.w], seed: 1)
        let wt = randomTensor([c.g.outChannels, c.g.inChannels, c.g.kernelH, c.g.kernelW], seed: 2, scale: 0.3)
        let b = c.bias ? randomTensor([c.g.outChannels], seed: 3) : nil
        let (oh, ow) = c.g.outputSize(h: c.h, w: c.w)
        let report = try GradCheck.run(inputs: [x, wt] + (b.map { [$0] } ?? []), forward: {
            let o = Tensor(shape: [c.n, c.g.outChannels, oh, ow])
            try conv2dForward(out: o, input: x, weight: wt, bias: b, geometry: c.g, workspace: ws)
            return o
        }, backward: { dy in
            let dx = Tensor(shape: x.shape), dw = Tensor(shape: wt.shape), db = b.map { Tensor(shape: $0.shape) }
            try conv2dBackward(dInput: dx, dWeight: dw, dBias: db, dOut: dy, input: x, weight: wt, geometry: c.g, workspace: ws)
            return [dx, dw] + (db.map { [$0] } ?? [])
        }, step: 0.1)
        #expect(report.checked > 0)
        #expect(report.maxRelativeError < 1e-3, "\(report)")
    }

    static let transposedCases: [ConvCase] = [
        ConvCase(g: ConvGeometry(4, 3, kernel: 2, stride: 2), h: 5, w: 4, n: 2, bias: true),
        ConvCase(g: ConvGeometry(3, 2, kernel: 3, stride: 2, padding: 1), h: 4, w: 5, n: 1, bias: true),
        ConvCase(g: ConvGeometry(2, 3, kernel: 3, stride: 1, padding: 1, dilation: 2), h: 5, w: 5, n: 1, bias: false),
    ]

    @Test(arguments: transposedCases)
    func convTranspose2d(_ c: ConvCase) throws {
        let ws = Workspace()
        let x = randomTensor([c.n, c.g.inChannels, c.h, c.w], seed: 4)
        let wt = randomTensor([c.g.inChannels, c.g.outChannels, c.g.kernelH, c.g.kernelW], seed: 5, scale: 0.3)
        let b = c.bias ? randomTensor([c.g.outChannels], seed: 6) : nil
        let (oh, ow) = c.g.transposedOutputSize(h: c.h, w: c.w)
        let report = try GradCheck.run(inputs: [x, wt] + (b.map { [$0] } ?? []), forward: {
            let o = Tensor(shape: [c.n, c.g.outChannels, oh, ow])
            try convTranspose2dForward(out: o, input: x, weight: wt, bias: b, geometry: c.g, workspace: ws)
            return o
        }, backward: { dy in
            let dx = Tensor(shape: x.shape), dw = Tensor(shape: wt.shape), db = b.map { Tensor(shape: $0.shape) }
            try convTranspose2dBackward(dInput: dx, dWeight: dw, dBias: db, dOut: dy, input: x, weight: wt, geometry: c.g, workspace: ws)
            return [dx, dw] + (db.map { [$0] } ?? [])
        }, step: 0.1)
        #expect(report.maxRelativeError < 1e-3, "\(report)")
    }

    @Test func linear() throws {
        let x = randomTensor([4, 6], seed: 7), w = randomTensor([3, 6], seed: 8), b = randomTensor([3], seed: 9)
        let report = try GradCheck.run(inputs: [x, w, b], forward: {
            let o = Tensor(shape: [4, 3]); try linearForward(out: o, input: x, weight: w, bias: b); return o
        }, backward: { dy in
            let dx = Tensor(shape: x.shape), dw = Tensor(shape: w.shape), db = Tensor(shape: b.shape)
            try linearBackward(dInput: dx, dWeight: dw, dBias: db, dOut: dy, input: x, weight: w)
            return [dx, dw, db]
        }, step: 0.1)
        #expect(report.maxRelativeError < 1e-3, "\(report)")
    }

    @Test(arguments: [[2, 3, 5, 4], [8, 4, 1, 1], [1, 2, 3, 3]], [true, false])
    func batchNorm(_ shape: [Int], _ training: Bool) throws {
        let c = shape[1]
        let x = randomTensor(shape, seed: 10, scale: 2), g = randomTensor([c], seed: 11), b = randomTensor([c], seed: 12)
        let rm = randomTensor([c], seed: 13, scale: 0.1), rv = Tensor(shape: [c], repeating: 1.3)
        var saved: BatchNormSaved?
        let report = try GradCheck.run(inputs: [x, g, b], forward: {
            let o = Tensor(shape: shape)
            // Running statistics must not drift during the check: restore them each time.
            let m = rm.clone(), v = rv.clone()
            saved = try batchNorm2dForward(out: o, input: x, gamma: g, beta: b, runningMean: m, runningVar: v, training: training)
            return o
        }, backward: { dy in
            let o = Tensor(shape: shape)
            let s = try batchNorm2dForward(out: o, input: x, gamma: g, beta: b, runningMean: rm.clone(), runningVar: rv.clone(), training: training)
            let dx = Tensor(shape: x.shape), dg = Tensor(shape: [c]), db = Tensor(shape: [c])
            try batchNorm2dBackward(dInput: dx, dGamma: dg, dBeta: db, dOut: dy, input: x, gamma: g, saved: s)
            return [dx, dg, db]
        }, step: 1e-2)
        _ = saved
        #expect(report.maxRelativeError < 5e-3, "\(report)")
    }

    /// BatchNorm with the following ReLU in the same pass gives the bits of BatchNorm then
    /// `reluForward`, training (also the same running statistics) and eval, in place and not.
    @Test(arguments: [true, false], [true, false])
    func batchNormWithFusedReLU(_ training: Bool, _ inPlace: Bool) throws {
        let shape = [2, 5, 7, 6], c = 5
        let x = randomTensor(shape, seed: 20, scale: 2), g = randomTensor([c], seed: 21), b = randomTensor([c], seed: 22)
        let rm = randomTensor([c], seed: 23, scale: 0.1), rv = Tensor(shape: [c], repeating: 1.3)
        let (m1, v1, m2, v2) = (rm.clone(), rv.clone(), rm.clone(), rv.clone())
        let plain = Tensor(shape: shape)
        let s1 = try batchNorm2dForward(out: plain, input: x, gamma: g, beta: b, runningMean: m1, runningVar: v1, training: training)
        try reluForward(out: plain, input: plain)
        let xin = x.clone()
        let fused = inPlace ? xin : Tensor(shape: shape)
        let s2 = try batchNorm2dForward(out: fused, input: xin, gamma: g, beta: b, runningMean: m2, runningVar: v2, training: training, relu: true)
        var differing = 0, zeros = 0
        for i in 0..<plain.count {
            if plain.data[i] != fused.data[i] { differing += 1 }
            if fused.data[i] == 0 { zeros += 1 }
        }
        #expect(differing == 0 && zeros > 0 && zeros < plain.count, "\(differing) differ, \(zeros) zeros")
        #expect(s1.mean == s2.mean && s1.invStd == s2.invStd)
        for i in 0..<c { #expect(m1.data[i] == m2.data[i] && v1.data[i] == v2.data[i]) }
    }

    @Test(arguments: [(3, 2, 1, [2, 2, 9, 8]), (2, 2, 0, [1, 3, 6, 7]), (3, 1, 1, [1, 1, 5, 5])])
    func maxPool(_ k: Int, _ s: Int, _ p: Int, _ shape: [Int]) throws {
        let x = randomTensor(shape, seed: 14)
        let oh = (shape[2] + 2 * p - k) / s + 1, ow = (shape[3] + 2 * p - k) / s + 1
        var idx = [Int32](repeating: 0, count: shape[0] * shape[1] * oh * ow)
        let report = try GradCheck.run(inputs: [x], forward: {
            let o = Tensor(shape: [shape[0], shape[1], oh, ow])
            try maxPool2dForward(out: o, indices: &idx, input: x, kernel: k, stride: s, padding: p)
            return o
        }, backward: { dy in
            let o = Tensor(shape: [shape[0], shape[1], oh, ow])
            try maxPool2dForward(out: o, indices: &idx, input: x, kernel: k, stride: s, padding: p)
            let dx = Tensor(shape: shape)
            try maxPool2dBackward(dInput: dx, dOut: dy, indices: idx)
            return [dx]
        }, step: 1e-3, samples: 40, kinkTolerance: 0.01)
        #expect(report.checked > 10)
        #expect(report.maxRelativeError < 1e-2, "\(report)")
    }

    @Test(arguments: [([1, 2, 5, 7], 9, 4), ([1, 1, 6, 6], 13, 17), ([2, 1, 30, 30], 37, 23)])
    func bilinear(_ shape: [Int], _ oh: Int, _ ow: Int) throws {
        let x = randomTensor(shape, seed: 15)
        let report = try GradCheck.run(inputs: [x], forward: {
            let o = Tensor(shape: [shape[0], shape[1], oh, ow]); try bilinearResizeForward(out: o, input: x); return o
        }, backward: { dy in
            let dx = Tensor(shape: shape); try bilinearResizeBackward(dInput: dx, dOut: dy); return [dx]
        }, step: 0.1)
        #expect(report.maxRelativeError < 1e-3, "\(report)")
    }

    @Test func elementwise() throws {
        let x = randomTensor([3, 5], seed: 16, scale: 2), y = randomTensor([3, 5], seed: 17)
        var r = try GradCheck.run(inputs: [x], forward: {
            let o = Tensor(shape: x.shape); try sigmoidForward(out: o, input: x); return o
        }, backward: { dy in
            let o = Tensor(shape: x.shape); try sigmoidForward(out: o, input: x)
            let dx = Tensor(shape: x.shape); try sigmoidBackward(dInput: dx, dOut: dy, output: o); return [dx]
        }, step: 1e-2)
        #expect(r.maxRelativeError < 5e-3, "sigmoid \(r)")
        r = try GradCheck.run(inputs: [x], forward: {
            let o = Tensor(shape: x.shape); try softmaxForward(out: o, input: x); return o
        }, backward: { dy in
            let o = Tensor(shape: x.shape); try softmaxForward(out: o, input: x)
            let dx = Tensor(shape: x.shape); try softmaxBackward(dInput: dx, dOut: dy, output: o); return [dx]
        }, step: 1e-2)
        #expect(r.maxRelativeError < 5e-3, "softmax \(r)")
        r = try GradCheck.run(inputs: [x], forward: {
            let o = Tensor(shape: x.shape); try reluForward(out: o, input: x); return o
        }, backward: { dy in
            let o = Tensor(shape: x.shape); try reluForward(out: o, input: x)
            let dx = Tensor(shape: x.shape); try reluBackward(dInput: dx, dOut: dy, output: o); return [dx]
        }, step: 1e-2, kinkTolerance: 0.01)
        #expect(r.maxRelativeError < 1e-3, "relu \(r)")
        r = try GradCheck.run(inputs: [x, y], forward: {
            let o = Tensor(shape: x.shape); try addForward(out: o, x, y); return o
        }, backward: { dy in
            let dx = Tensor(shape: x.shape), dyy = Tensor(shape: y.shape); try addBackward(dA: dx, dB: dyy, dOut: dy); return [dx, dyy]
        }, step: 0.1)
        #expect(r.maxRelativeError < 1e-3, "add \(r)")
    }

    @Test func losses() throws {
        let x = randomTensor([4, 3], seed: 18, scale: 2)
        let t = try Tensor(shape: [4, 3], values: [1, 0, 0, 0, 1, 1, 0.3, 0, 1, 1, 1, 0])
        // Each loss as a 1-element "output" so the generic checker applies.
        func scalar(_ f: @escaping (Tensor?) throws -> Double) -> (() throws -> Tensor, (Tensor) throws -> [Tensor]) {
            ({ try Tensor(shape: [1], values: [Float(try f(nil))]) },
             { dy in let g = Tensor(shape: x.shape); _ = try f(g); for i in 0..<g.count { g.data[i] *= dy.data[0] }; return [g] })
        }
        let cases: [(String, (Tensor?) throws -> Double)] = [
            ("bce", { try bceWithLogitsLoss(logits: x, targets: t, grad: $0) }),
            ("ce", { try crossEntropyLoss(logits: x, targets: [0, 2, 1, 1], grad: $0) }),
            ("smoothl1", { try smoothL1Loss(input: x, target: t, grad: $0) }),
            ("l1", { try l1Loss(input: x, target: t, grad: $0) }),
        ]
        for (name, f) in cases {
            let (fw, bw) = scalar(f)
            let r = try GradCheck.run(inputs: [x], forward: fw, backward: bw, step: 1e-2, kinkTolerance: 0.05)
            #expect(r.checked > 6, "\(name) \(r)")
            #expect(r.maxRelativeError < 5e-3, "\(name) \(r)")
        }
    }
}
