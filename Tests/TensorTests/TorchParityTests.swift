import Foundation
import Testing
import Tensor
import TestSupport

/// Kernel outputs and gradients against PyTorch 2.13 (CPU, float32).
/// Expected values: `tools/make_kernel_fixtures.py` → Tests/Fixtures/kernels.safetensors.
@Suite struct TorchParityTests {
    let fx = KernelFixtures.shared

    func expectClose(_ a: Tensor, _ name: String, tol: Float = 1e-5, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let e = try fx.tensor(name)
        let c = compare(a, e)
        #expect(c.maxAbsError <= tol * max(1, c.maxExpectedMagnitude), "\(name): \(c)", sourceLocation: sourceLocation)
    }

    @Test func conv2d() throws {
        let cases = fx.cases("conv2d")
        #expect(cases.count >= 6)
        let ws = Workspace()
        for c in cases {
            let n = c["name"] as! String
            let g = ConvGeometry(c["cin"] as! Int, c["cout"] as! Int, kernel: c["k"] as! Int, stride: c["stride"] as! Int,
                                 padding: c["pad"] as! Int, dilation: c["dilation"] as! Int)
            let x = try fx.tensor("\(n).input"), w = try fx.tensor("\(n).weight")
            let b = (c["bias"] as! Bool) ? try fx.tensor("\(n).bias") : nil
            let expected = try fx.tensor("\(n).out")
            let out = Tensor(shape: expected.shape)
            try conv2dForward(out: out, input: x, weight: w, bias: b, geometry: g, workspace: ws)
            try expectClose(out, "\(n).out")
            let dx = Tensor(shape: x.shape), dw = Tensor(shape: w.shape), db = b.map { Tensor(shape: $0.shape) }
            try conv2dBackward(dInput: dx, dWeight: dw, dBias: db, dOut: try fx.tensor("\(n).dout"), input: x, weight: w, geometry: g, workspace: ws)
            try expectClose(dx, "\(n).dinput")
            try expectClose(dw, "\(n).dweight")
            if let db { try expectClose(db, "\(n).dbias") }
        }
    }

    @Test func convTranspose2d() throws {
        let cases = fx.cases("conv_transpose2d")
        #expect(cases.count >= 4)
        let ws = Workspace()
        for c in cases {
            let n = c["name"] as! String
            let g = ConvGeometry(c["cin"] as! Int, c["cout"] as! Int, kernel: c["k"] as! Int, stride: c["stride"] as! Int,
                                 padding: c["pad"] as! Int, dilation: c["dilation"] as! Int)
            let op = c["output_padding"] as! Int
            let x = try fx.tensor("\(n).input"), w = try fx.tensor("\(n).weight")
            let b = (c["bias"] as! Bool) ? try fx.tensor("\(n).bias") : nil
            let expected = try fx.tensor("\(n).out")
            let out = Tensor(shape: expected.shape)
            try convTranspose2dForward(out: out, input: x, weight: w, bias: b, geometry: g, outputPadding: (op, op), workspace: ws)
            try expectClose(out, "\(n).out")
            let dx = Tensor(shape: x.shape), dw = Tensor(shape: w.shape), db = b.map { Tensor(shape: $0.shape) }
            try convTranspose2dBackward(dInput: dx, dWeight: dw, dBias: db, dOut: try fx.tensor("\(n).dout"), input: x, weight: w,
                                        geometry: g, outputPadding: (op, op), workspace: ws)
            try expectClose(dx, "\(n).dinput")
            try expectClose(dw, "\(n).dweight")
            if let db { try expectClose(db, "\(n).dbias") }
        }
    }

    @Test func batchNorm2d() throws {
        let cases = fx.cases("batch_norm2d")
        #expect(cases.count == 3)
        for c in cases {
            let n = c["name"] as! String, training = c["training"] as! Bool
            let x = try fx.tensor("\(n).input"), g = try fx.tensor("\(n).weight"), b = try fx.tensor("\(n).bias")
            let rm = try fx.tensor("\(n).running_mean"), rv = try fx.tensor("\(n).running_var")
            let out = Tensor(shape: x.shape)
            let saved = try batchNorm2dForward(out: out, input: x, gamma: g, beta: b, runningMean: rm, runningVar: rv, training: training)
            try expectClose(out, "\(n).out")
            try expectClose(rm, "\(n).new_running_mean")
            try expectClose(rv, "\(n).new_running_var")
            let dx = Tensor(shape: x.shape), dg = Tensor(shape: g.shape), db = Tensor(shape: b.shape)
            try batchNorm2dBackward(dInput: dx, dGamma: dg, dBeta: db, dOut: try fx.tensor("\(n).dout"), input: x, gamma: g, saved: saved)
            try expectClose(dx, "\(n).dinput", tol: 2e-5)
            try expectClose(dg, "\(n).dweight")
            try expectClose(db, "\(n).dbias")
        }
    }

    @Test func maxPool2d() throws {
        for c in fx.cases("max_pool2d") {
            let n = c["name"] as! String
            let x = try fx.tensor("\(n).input"), expected = try fx.tensor("\(n).out")
            let out = Tensor(shape: expected.shape)
            var idx = [Int32](repeating: 0, count: out.count)
            try maxPool2dForward(out: out, indices: &idx, input: x, kernel: c["k"] as! Int, stride: c["stride"] as! Int, padding: c["pad"] as! Int)
            try expectClose(out, "\(n).out", tol: 0)
            let fast = Tensor(shape: expected.shape)  // the inference version, without indices
            try maxPool2dForward(out: fast, input: x, kernel: c["k"] as! Int, stride: c["stride"] as! Int, padding: c["pad"] as! Int)
            try expectClose(fast, "\(n).out", tol: 0)
            let dx = Tensor(shape: x.shape)
            try maxPool2dBackward(dInput: dx, dOut: try fx.tensor("\(n).dout"), indices: idx)
            try expectClose(dx, "\(n).dinput", tol: 0)
        }
    }

    /// Both max pools (with indices, for training; without, for inference) against PyTorch's scan
    /// written out plainly — rows then columns, a value wins when larger or NaN — with many ties and
    /// NaNs, on odd sizes and several geometries: the same values and the same argmax.
    @Test func maxPool2dTiesAndNaN() throws {
        for (k, st, pad, h, w) in [(3, 2, 1, 11, 9), (2, 2, 0, 8, 7), (3, 1, 1, 5, 6), (3, 3, 0, 10, 10), (1, 1, 0, 3, 4), (3, 2, 1, 2, 2),
                                   (3, 2, 1, 37, 70), (3, 2, 1, 20, 33), (2, 2, 0, 9, 40)] {  // the last three: eight outputs at a time
            let x = randomTensor([2, 3, h, w], seed: 41)
            for i in 0..<x.count { x.data[i] = (x.data[i] * 2).rounded() }  // many ties
            for i in stride(from: 7, to: x.count, by: 23) { x.data[i] = .nan }
            let oh = (h + 2 * pad - k) / st + 1, ow = (w + 2 * pad - k) / st + 1
            let indexed = Tensor(shape: [2, 3, oh, ow]), fast = Tensor(shape: indexed.shape)
            var idx = [Int32](repeating: 0, count: indexed.count)
            try maxPool2dForward(out: indexed, indices: &idx, input: x, kernel: k, stride: st, padding: pad)
            try maxPool2dForward(out: fast, input: x, kernel: k, stride: st, padding: pad)
            var wrongValue = 0, wrongIndex = 0, nans = 0
            for p in 0..<6 {
                for oy in 0..<oh {
                    for ox in 0..<ow {
                        var best = -Float.infinity, bi = max(oy * st - pad, 0) * w + max(ox * st - pad, 0)
                        for yy in max(oy * st - pad, 0)..<min(oy * st - pad + k, h) {
                            for xx in max(ox * st - pad, 0)..<min(ox * st - pad + k, w) {
                                let v = x.data[p * h * w + yy * w + xx]
                                if v > best || v.isNaN { best = v; bi = yy * w + xx }
                            }
                        }
                        let o = p * oh * ow + oy * ow + ox
                        func same(_ a: Float) -> Bool { a == best || (a.isNaN && best.isNaN) }
                        if best.isNaN { nans += 1 }
                        if !same(indexed.data[o]) || !same(fast.data[o]) { wrongValue += 1 }
                        if idx[o] != Int32(bi) { wrongIndex += 1 }
                    }
                }
            }
            #expect(nans > 0 && wrongValue == 0 && wrongIndex == 0,
                    "k\(k) s\(st) p\(pad) \(h)×\(w): \(wrongValue) values and \(wrongIndex) indices wrong, \(nans) NaN")
        }
    }

    @Test func bilinearResize() throws {
        for c in fx.cases("bilinear") {
            let n = c["name"] as! String
            let x = try fx.tensor("\(n).input"), expected = try fx.tensor("\(n).out")
            let out = Tensor(shape: expected.shape)
            try bilinearResizeForward(out: out, input: x)
            try expectClose(out, "\(n).out")
            let dx = Tensor(shape: x.shape)
            try bilinearResizeBackward(dInput: dx, dOut: try fx.tensor("\(n).dout"))
            try expectClose(dx, "\(n).dinput")
        }
    }

    @Test func linear() throws {
        let x = try fx.tensor("linear.0.input"), w = try fx.tensor("linear.0.weight"), b = try fx.tensor("linear.0.bias")
        let out = Tensor(shape: [x.shape[0], w.shape[0]])
        try linearForward(out: out, input: x, weight: w, bias: b)
        try expectClose(out, "linear.0.out")
        let dx = Tensor(shape: x.shape), dw = Tensor(shape: w.shape), db = Tensor(shape: b.shape)
        try linearBackward(dInput: dx, dWeight: dw, dBias: db, dOut: try fx.tensor("linear.0.dout"), input: x, weight: w)
        try expectClose(dx, "linear.0.dinput"); try expectClose(dw, "linear.0.dweight"); try expectClose(db, "linear.0.dbias")
    }

    @Test(arguments: ["sigmoid", "softmax", "relu"])
    func activation(_ op: String) throws {
        let x = try fx.tensor("\(op).0.input"), dout = try fx.tensor("\(op).0.dout")
        let out = Tensor(shape: x.shape), dx = Tensor(shape: x.shape)
        switch op {
        case "sigmoid": try sigmoidForward(out: out, input: x); try sigmoidBackward(dInput: dx, dOut: dout, output: out)
        case "softmax": try softmaxForward(out: out, input: x); try softmaxBackward(dInput: dx, dOut: dout, output: out)
        default: try reluForward(out: out, input: x); try reluBackward(dInput: dx, dOut: dout, output: out)
        }
        try expectClose(out, "\(op).0.out")
        try expectClose(dx, "\(op).0.dinput")
    }

    @Test func losses() throws {
        func check(_ name: String, _ f: (Tensor, Tensor, Tensor) throws -> Double) throws {
            let x = try fx.tensor("\(name).input"), t = try fx.tensor("\(name).target")
            let g = Tensor(shape: x.shape)
            let l = try f(x, t, g)
            let expected = try fx.tensor("\(name).loss")[0]
            #expect(abs(Float(l) - expected) <= 1e-5 * max(1, abs(expected)), "\(name): \(l) vs \(expected)")
            try expectClose(g, "\(name).dinput")
        }
        try check("bce.0") { try bceWithLogitsLoss(logits: $0, targets: $1, grad: $2) }
        try check("ce.0") { x, t, g in try crossEntropyLoss(logits: x, targets: t.array.map { Int($0) }, grad: g) }
        try check("smoothl1.0") { try smoothL1Loss(input: $0, target: $1, grad: $2) }
        try check("l1.0") { try l1Loss(input: $0, target: $1, grad: $2) }
    }
}
