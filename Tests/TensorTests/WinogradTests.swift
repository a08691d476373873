// Winograd F(2×2, 3×3) and F(4×4, 3×3) against the im2col + GEMM convolution they replace: forward
// (odd and even sides, batches, bias, fused ReLU) and the input gradient (accumulated), to float
// rounding; and the worst error of each at the mask head's size.
@testable import Tensor
import CKernels
import Testing
import TestSupport

@Suite("Winograd 3×3 convolution", .serialized)
struct WinogradTests {
    /// Runs `body` with Winograd forced on, then off (passed down, not set process-wide: other
    /// suites run at the same time).
    static func both<T>(_ body: (Bool) throws -> T) rethrows -> (winograd: T, im2col: T) {
        (try body(true), try body(false))
    }

    /// The tiles under test: F(2×2) everywhere, F(4×4) where its AVX-512 transforms exist.
    static let tiles = Engine.vectorISA != nil ? [2, 4] : [2]

    @Test(arguments: [(1, 3, 5, 7, 7), (2, 8, 16, 14, 14), (1, 64, 32, 33, 20), (3, 17, 9, 1, 6), (1, 5, 4, 2, 2), (2, 7, 6, 70, 69),
                      (1, 4, 3, 5, 3)], tiles)
    func forwardAgreesWithIm2col(_ shape: (Int, Int, Int, Int, Int), _ tile: Int) throws {
        let (n, cin, cout, h, w) = shape
        let g = ConvGeometry(cin, cout, kernel: 3, padding: 1)
        #expect(g.isWinogradEligible)
        let x = randomTensor([n, cin, h, w], seed: 1)
        let wt = randomTensor([cout, cin, 3, 3], seed: 2, scale: 0.3)
        let bias = randomTensor([cout], seed: 3)
        let ws = Workspace()
        let (a, b) = try Self.both { (winograd: Bool) throws -> Tensor in
            let out = Tensor(shape: [n, cout, h, w])
            out.fill(99)  // overwritten, not accumulated
            try conv2dForward(out: out, input: x, weight: wt, bias: bias, geometry: g, workspace: ws, winograd: winograd, winogradTile: tile)
            return out
        }
        let c = compare(a, b)
        #expect(c.maxAbsError <= (tile == 4 ? 4e-5 : 1e-5) * max(1, c.maxExpectedMagnitude), "tile \(tile): \(c)")
        let finite = a.array.allSatisfy { $0.isFinite }
        #expect(finite)
    }

    @Test(arguments: [(1, 6, 4, 9, 8), (2, 16, 24, 14, 14), (1, 3, 5, 1, 1), (1, 5, 7, 37, 18)], tiles)
    func inputAndWeightGradientsAgreeWithIm2col(_ shape: (Int, Int, Int, Int, Int), _ tile: Int) throws {
        let (n, cin, cout, h, w) = shape
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
                               winograd: winograd, winogradTile: tile)
            return (dx, dw)
        }
        let cx = compare(a.0, b.0), cw = compare(a.1, b.1)
        #expect(cx.maxAbsError <= (tile == 4 ? 4e-5 : 1e-5) * max(1, cx.maxExpectedMagnitude), "tile \(tile) dInput: \(cx)")
        // The weight gradient by F(3×3, 2×2) (with Winograd) or the GEMM (without): to float rounding.
        #expect(cw.maxAbsError <= 2e-5 * max(1, cw.maxExpectedMagnitude), "tile \(tile) dWeight: \(cw)")
    }

    /// The vector transforms this processor has (Sources/CKernels/winograd.c: AVX-512 and AVX2 on an
    /// AVX-512 processor, AVX2 on the others) against the scalar ones: the same sums in the same
    /// order, so the same bits; odd and even sides, more than 16 (8) tiles to a row, one pixel.
    @Test(arguments: [(14, 14), (28, 28), (7, 9), (1, 1), (1, 40), (35, 66), (2, 2), (17, 33)], [false, true])
    func vectorTransformsMatchScalar(_ size: (Int, Int), _ accumulate: Bool) throws {
        let isas: [VectorISA] = Engine.hasAVX512 ? [.avx512, .avx2] : Engine.vectorISA == .avx2 ? [.avx2] : []
        for isa in isas { try vectorTransformsMatchScalar(size, accumulate, isa) }
    }

    func vectorTransformsMatchScalar(_ size: (Int, Int), _ accumulate: Bool, _ isa: VectorISA) throws {
        let (h, w) = size, n = 3, cin = 5, cout = 4
        let x = randomTensor([n, cin, h, w], seed: 8)
        let wt = randomTensor([cout, cin, 3, 3], seed: 9, scale: 0.3)
        let bias = randomTensor([cout], seed: 10)
        let start = randomTensor([n, cout, h, w], seed: 11)
        let ws = Workspace()
        let u = UnsafeMutablePointer<Float>.allocate(capacity: 16 * cout * cin)
        defer { u.deallocate() }
        winogradTransformWeights(wt.data, outChannels: cout, inChannels: cin, flipped: false, u: u)
        func run(_ vector: VectorISA?) -> Tensor {
            let out = Tensor(shape: [n, cout, h, w])
            for i in 0..<out.count { out.data[i] = accumulate ? start.data[i] : .nan }
            winogradConvolve(input: x.data, images: n, inChannels: cin, h: h, w: w, u: u, outChannels: cout, bias: bias.data,
                             out: out.data, accumulate: accumulate, workspace: ws, vectorTransforms: vector)
            return out
        }
        let vector = run(isa), scalar = run(nil)
        var differing = 0, nonFinite = 0
        for i in 0..<vector.count {
            if vector.data[i] != scalar.data[i] { differing += 1 }
            if !vector.data[i].isFinite { nonFinite += 1 }
        }
        #expect(differing == 0 && nonFinite == 0, "\(isa) \(h)×\(w): \(differing) differ, \(nonFinite) not finite")
    }

    /// The vector weight transforms (AVX-512, AVX2: those the processor has) against the scalar one,
    /// plain and turned (the input gradient's).
    @Test(arguments: [(4, 5), (17, 33), (256, 256), (1, 1)], [false, true])
    func vectorWeightTransformMatchesScalar(_ channels: (Int, Int), _ flipped: Bool) {
        let isas: [VectorISA] = Engine.hasAVX512 ? [.avx512, .avx2] : Engine.vectorISA == .avx2 ? [.avx2] : []
        for isa in isas { vectorWeightTransformMatchesScalar(channels, flipped, isa) }
    }

    func vectorWeightTransformMatchesScalar(_ channels: (Int, Int), _ flipped: Bool, _ isa: VectorISA) {
        let (k, c) = channels
        let wt = randomTensor(flipped ? [c, k, 3, 3] : [k, c, 3, 3], seed: 12)
        let a = UnsafeMutablePointer<Float>.allocate(capacity: 16 * k * c), b = UnsafeMutablePointer<Float>.allocate(capacity: 16 * k * c)
        defer { a.deallocate(); b.deallocate() }
        a.update(repeating: .nan, count: 16 * k * c)
        b.update(repeating: .nan, count: 16 * k * c)
        winogradTransformWeights(wt.data, outChannels: k, inChannels: c, flipped: flipped, u: a, vector: isa)
        winogradTransformWeights(wt.data, outChannels: k, inChannels: c, flipped: flipped, u: b, vector: nil)
        var differing = 0
        for i in 0..<16 * k * c where !(a[i] == b[i]) { differing += 1 }  // NaN (a value not written) differs too
        #expect(differing == 0, "\(isa) \(k)×\(c) flipped \(flipped): \(differing) differ")
    }

    /// F(4×4)'s AVX2 transforms against its AVX-512 ones (on a processor that has both): the same
    /// operations in the same order, so the same bits, for the weights (plain and turned) and for a
    /// whole convolution, with and without accumulation and ReLU; planes of 1 to more than 8 tiles
    /// to a row (the AVX-512 code's row path among them).
    /// The AVX2 F(4×4) input transform by row loads from a padded copy of the plane and transposes
    /// gives what its masked gathers give, on planes of every shape up to larger than the stack
    /// buffer (a heap copy); and so do the AVX-512 ones (by rows, from the padded copy, by gathers).
    @Test(arguments: [(14, 14), (28, 28), (7, 9), (1, 1), (5, 61), (16, 16), (33, 3), (32, 32), (70, 90), (130, 40)])
    func winograd4InputRowsMatchGathers(_ size: (Int, Int)) throws {
        guard Engine.kgemmAvailable else { return }  // no AVX2 here: no AVX2 transforms
        let (h, w) = size
        let x = randomTensor([h, w], seed: 25)
        let tiles = ((h + 3) / 4) * ((w + 3) / 4), stride = tiles + 3
        var rows = [Float](repeating: .nan, count: 36 * stride), gathers = rows
        winograd4_input_tiles_avx2(x.data, Int32(h), Int32(w), &rows, stride)
        winograd4_input_tiles_avx2_gather(x.data, Int32(h), Int32(w), &gathers, stride)
        let differing = zip(rows, gathers).filter { !($0 == $1 || ($0.isNaN && $1.isNaN)) }.count
        #expect(differing == 0, "\(h)×\(w): \(differing) of \(rows.count) differ")
        #expect(rows.filter(\.isFinite).count == 36 * tiles, "every tile's 36 values written, nothing else")
        guard Engine.hasAVX512 else { return }
        // AVX-512: by rows, or from the padded copy (narrow planes), and by gathers: the AVX2 bits.
        var wide = [Float](repeating: .nan, count: 36 * stride), gathered = wide
        winograd4_input_tiles(x.data, Int32(h), Int32(w), &wide, stride)
        winograd4_input_tiles_gather(x.data, Int32(h), Int32(w), &gathered, stride)
        for (name, other) in [("AVX-512", wide), ("AVX-512 gathers", gathered)] {
            let d = zip(rows, other).filter { !($0 == $1 || ($0.isNaN && $1.isNaN)) }.count
            #expect(d == 0, "\(name) \(h)×\(w): \(d) of \(rows.count) differ")
        }
    }

    /// The AVX2 F(4×4) output transform through a padded plane gives what storing each tile row
    /// straight into the output gives, with and without accumulation and ReLU (NaN and −0 among the
    /// products), on planes of every shape up to larger than the stack buffer; and so do the AVX-512
    /// ones (by rows, through the padded plane, by scatters).
    @Test(arguments: [(14, 14), (28, 28), (7, 9), (1, 1), (5, 61), (16, 16), (33, 3), (32, 32), (70, 90), (130, 40)])
    func winograd4OutputThroughPaddingMatchesDirect(_ size: (Int, Int)) throws {
        guard Engine.kgemmAvailable else { return }
        let (h, w) = size
        let tiles = ((h + 3) / 4) * ((w + 3) / 4), ms = tiles + 5
        let m = randomTensor([36 * ms], seed: 26)
        for i in stride(from: 3, to: m.count, by: 97) { m.data[i] = .nan }
        for i in stride(from: 5, to: m.count, by: 89) { m.data[i] = -0.0 }
        let start = randomTensor([h, w], seed: 27)
        for accumulate in [false, true] {
            for relu in [false, true] {
                var padded = Array(UnsafeBufferPointer(start: start.data, count: h * w)), direct = padded
                winograd4_output_tiles_avx2(m.data, ms, Int32(h), Int32(w), 0.25, accumulate ? 1 : 0, relu ? 1 : 0, &padded)
                winograd4_output_tiles_avx2_direct(m.data, ms, Int32(h), Int32(w), 0.25, accumulate ? 1 : 0, relu ? 1 : 0, &direct)
                let differing = zip(padded, direct).filter { $0.bitPattern != $1.bitPattern && !($0.isNaN && $1.isNaN) }.count
                #expect(differing == 0, "\(h)×\(w), accumulate \(accumulate), relu \(relu): \(differing) of \(h * w) differ")
                guard Engine.hasAVX512 else { continue }
                // AVX-512: by rows, or through the padded plane (narrow planes), and by scatters.
                var wide = Array(UnsafeBufferPointer(start: start.data, count: h * w)), scattered = wide
                winograd4_output_tiles(m.data, ms, Int32(h), Int32(w), 0.25, accumulate ? 1 : 0, relu ? 1 : 0, &wide)
                winograd4_output_tiles_scatter(m.data, ms, Int32(h), Int32(w), 0.25, accumulate ? 1 : 0, relu ? 1 : 0, &scattered)
                for (name, other) in [("AVX-512", wide), ("AVX-512 scatters", scattered)] {
                    let d = zip(direct, other).filter { $0.bitPattern != $1.bitPattern && !($0.isNaN && $1.isNaN) }.count
                    #expect(d == 0, "\(name) \(h)×\(w), accumulate \(accumulate), relu \(relu): \(d) of \(h * w) differ")
                }
            }
        }
    }

    /// The weight gradient by Winograd F(3×3, 2×2) against the GEMM's (im2col or the patches packed
    /// from the image), accumulated onto what was there: odd and even sides, one image and batches
    /// of several chunks, to float rounding; the bias and input gradients unchanged.
    @Test(arguments: [(1, 7, 9), (3, 14, 14), (100, 14, 14), (1, 64, 70), (2, 5, 6), (1, 1, 1)])
    func weightGradientMatchesTheGEMM(_ c: (Int, Int, Int)) throws {
        let (n, h, w) = c, cin = 5, cout = 6
        let g = ConvGeometry(cin, cout, kernel: 3, padding: 1)
        let ws = Workspace()
        let x = randomTensor([n, cin, h, w], seed: 101), wt = randomTensor([cout, cin, 3, 3], seed: 102, scale: 0.3)
        let dy = randomTensor([n, cout, h, w], seed: 103)
        var results: [(Tensor, Tensor, Tensor)] = []
        for useWinograd in [true, false] {
            let dw = Tensor(shape: wt.shape, repeating: 0.25), db = Tensor(shape: [cout], repeating: 0.5), dx = Tensor(shape: x.shape)
            try conv2dBackward(dInput: dx, dWeight: dw, dBias: db, dOut: dy, input: x, weight: wt, geometry: g, workspace: ws,
                               winograd: true, winogradWeights: useWinograd)
            results.append((dw, db, dx))
        }
        let cw = compare(results[0].0, results[1].0)
        #expect(cw.maxAbsError <= 2e-5 * max(1, cw.maxExpectedMagnitude), "weight gradient \(n)×\(h)×\(w): \(cw)")
        #expect((0..<cout).allSatisfy { results[0].1.data[$0] == results[1].1.data[$0] }, "bias gradient")
        #expect((0..<x.count).allSatisfy { results[0].2.data[$0] == results[1].2.data[$0] }, "input gradient")
    }

    /// Weights transformed once (`transformForWinograd`) give what the convolution transforming them itself
    /// gives, bit for bit; transformed weights of another tensor or size are not taken.
    @Test func pretransformedWeights() throws {
        let g = ConvGeometry(64, 64, kernel: 3, padding: 1)
        let x = randomTensor([3, 64, 14, 14], seed: 91), wt = randomTensor([64, 64, 3, 3], seed: 92, scale: 0.1)
        let other = randomTensor([64, 64, 3, 3], seed: 93, scale: 0.1), bias = randomTensor([64], seed: 94)
        let ws = Workspace()
        let plain = Tensor(shape: [3, 64, 14, 14])
        try conv2dForward(out: plain, input: x, weight: wt, bias: bias, geometry: g, workspace: ws, relu: true)
        guard let t = transformForWinograd(weight: wt, geometry: g, images: 3, h: 14, w: 14, workspace: ws) else {
            #expect(!g.usesWinograd(images: 3, h: 14, w: 14), "Winograd is on, so the weights transform")
            return
        }
        // F(4×4) with kgemm: U kept packed for the GEMM (the same bits as packing it in each product).
        #expect((t.packedStride != nil) == (t.tile == 4 && Engine.useKGEMM))
        let reused = Tensor(shape: plain.shape)
        try conv2dForward(out: reused, input: x, weight: wt, bias: bias, geometry: g, workspace: ws, relu: true, transformed: t)
        #expect((0..<plain.count).allSatisfy { plain.data[$0].bitPattern == reused.data[$0].bitPattern })
        // Once the workspace's slot has been given to something else, they are not taken.
        let reusedAfter = Tensor(shape: plain.shape)
        ws.buffer(4, count: 1).update(repeating: .nan, count: 1)
        try conv2dForward(out: reusedAfter, input: x, weight: wt, bias: bias, geometry: g, workspace: ws, relu: true, transformed: t)
        #expect((0..<plain.count).allSatisfy { plain.data[$0] == reusedAfter.data[$0] })
        #expect(!t.fit(wt, g, t.tile, ws))
        // Another weight tensor with these transformed weights: its own are transformed and used.
        let mine = Tensor(shape: plain.shape), mismatched = Tensor(shape: plain.shape)
        try conv2dForward(out: mine, input: x, weight: other, bias: bias, geometry: g, workspace: ws)
        try conv2dForward(out: mismatched, input: x, weight: other, bias: bias, geometry: g, workspace: ws, transformed: t)
        #expect((0..<mine.count).allSatisfy { mine.data[$0] == mismatched.data[$0] })
        #expect((0..<mine.count).contains { mine.data[$0] != plain.data[$0] })
        // Another plane size (F(2×2) there, or another tile): its own transform.
        let big = randomTensor([1, 64, 40, 40], seed: 95), bigPlain = Tensor(shape: [1, 64, 40, 40]), bigReused = Tensor(shape: [1, 64, 40, 40])
        try conv2dForward(out: bigPlain, input: big, weight: wt, bias: bias, geometry: g, workspace: ws)
        try conv2dForward(out: bigReused, input: big, weight: wt, bias: bias, geometry: g, workspace: ws, transformed: t)
        #expect((0..<bigPlain.count).allSatisfy { bigPlain.data[$0] == bigReused.data[$0] })
    }

    @Test(arguments: [(14, 14), (28, 28), (7, 9), (1, 1), (5, 61), (16, 16), (33, 3)])
    func winograd4AVX2MatchesAVX512(_ size: (Int, Int)) throws {
        guard Engine.hasAVX512 else { return }  // one ISA only: checked against im2col above
        let (h, w) = size, n = 3, cin = 6, cout = 5
        let x = randomTensor([n, cin, h, w], seed: 21)
        let wt = randomTensor([cout, cin, 3, 3], seed: 22, scale: 0.3)
        let bias = randomTensor([cout], seed: 23)
        let start = randomTensor([n, cout, h, w], seed: 24)
        let count = winogradWeightCount(tile: 4, outChannels: cout, inChannels: cin)
        for flipped in [false, true] {
            var u: [[Float]] = []
            for isa in [VectorISA.avx512, .avx2] {
                let buf = UnsafeMutablePointer<Float>.allocate(capacity: count)
                defer { buf.deallocate() }
                buf.update(repeating: .nan, count: count)
                // Turned: wt read as [C=cout, K=cin, 3, 3].
                winogradTransformWeights(wt.data, outChannels: flipped ? cin : cout, inChannels: flipped ? cout : cin, flipped: flipped,
                                         u: buf, vector: isa, tile: 4)
                u.append(Array(UnsafeBufferPointer(start: buf, count: count)))
            }
            let differing = zip(u[0], u[1]).filter { !($0 == $1) }.count
            #expect(differing == 0, "weights flipped \(flipped): \(differing) of \(count) differ")
        }
        let ws = Workspace()
        let u = UnsafeMutablePointer<Float>.allocate(capacity: count)
        defer { u.deallocate() }
        winogradTransformWeights(wt.data, outChannels: cout, inChannels: cin, flipped: false, u: u, vector: .avx512, tile: 4)
        for accumulate in [false, true] {
            for relu in [false, true] {
                var outs: [Tensor] = []
                for isa in [VectorISA.avx512, .avx2] {
                    let out = Tensor(shape: [n, cout, h, w])
                    for i in 0..<out.count { out.data[i] = accumulate ? start.data[i] : .nan }
                    winogradConvolve(input: x.data, images: n, inChannels: cin, h: h, w: w, u: u, outChannels: cout, bias: bias.data,
                                     out: out.data, accumulate: accumulate, workspace: ws, vectorTransforms: isa, tile: 4, relu: relu)
                    outs.append(out)
                }
                var differing = 0, nonFinite = 0
                for i in 0..<outs[0].count {
                    if outs[0].data[i] != outs[1].data[i] { differing += 1 }
                    if !outs[1].data[i].isFinite { nonFinite += 1 }
                }
                #expect(differing == 0 && nonFinite == 0,
                        "\(h)×\(w) accumulate \(accumulate) relu \(relu): \(differing) differ, \(nonFinite) not finite")
            }
        }
    }

    /// ReLU fused into the convolution: the same as a ReLU pass after it, by either path.
    @Test(arguments: tiles)
    func fusedReLU(_ tile: Int) throws {
        let g = ConvGeometry(16, 12, kernel: 3, padding: 1)
        let x = randomTensor([3, 16, 14, 14], seed: 13)
        let wt = randomTensor([12, 16, 3, 3], seed: 14, scale: 0.3)
        let bias = randomTensor([12], seed: 15)
        let ws = Workspace()
        for winograd in [true, false] {
            let plain = Tensor(shape: [3, 12, 14, 14]), fused = Tensor(shape: [3, 12, 14, 14])
            try conv2dForward(out: plain, input: x, weight: wt, bias: bias, geometry: g, workspace: ws, winograd: winograd, winogradTile: tile)
            try conv2dForward(out: fused, input: x, weight: wt, bias: bias, geometry: g, workspace: ws, winograd: winograd, winogradTile: tile,
                              relu: true)
            var differing = 0, negatives = 0, zeros = 0
            for i in 0..<plain.count {
                if fused.data[i] != max(plain.data[i], 0) { differing += 1 }
                if plain.data[i] < 0 { negatives += 1 }
                if fused.data[i] == 0 { zeros += 1 }
            }
            #expect(differing == 0 && negatives > 0 && zeros == negatives, "winograd \(winograd) tile \(tile): \(differing) differ")
        }
    }

    /// The worst error of each tile against the direct (im2col) convolution at the mask head's size:
    /// 8 RoIs of 256 channels 14×14, weights of the mask head's initial scale (Kaiming fan-out,
    /// std 0.0295), inputs of ReLU'd features' scale. F(4×4) loses about three more bits than F(2×2);
    /// both stay far inside the parity suites' 1e-3 on logits.
    @Test(arguments: tiles)
    func worstErrorAtMaskHeadSize(_ tile: Int) throws {
        let g = ConvGeometry(256, 256, kernel: 3, padding: 1)
        let x = randomTensor([8, 256, 14, 14], seed: 16)
        for i in 0..<x.count { x.data[i] = max(x.data[i], 0) }
        let wt = randomTensor([256, 256, 3, 3], seed: 17, scale: 0.0295 * 1.7)
        let bias = randomTensor([256], seed: 18, scale: 0.01)
        let ws = Workspace()
        let (a, b) = try Self.both { (winograd: Bool) throws -> Tensor in
            let out = Tensor(shape: [8, 256, 14, 14])
            try conv2dForward(out: out, input: x, weight: wt, bias: bias, geometry: g, workspace: ws, winograd: winograd, winogradTile: tile)
            return out
        }
        let c = compare(a, b)
        let relative = c.maxAbsError / max(c.maxExpectedMagnitude, 1e-30)
        print("Winograd F(\(tile)×\(tile), 3×3) at [8, 256, 14, 14]: worst error \(c.maxAbsError) of outputs up to \(c.maxExpectedMagnitude) (\(relative) relative)")
        #expect(relative <= (tile == 4 ? 2e-5 : 4e-6), "tile \(tile): \(c)")
        #expect(c.maxExpectedMagnitude > 0.1)
    }

    /// A batch of several F(4×4) chunks (U packed once for all of them) gives, image for image, the
    /// bits of the same images in batches of one chunk each (U packed by each product).
    @Test func severalChunksGiveTheOneChunkBits() throws {
        guard Engine.vectorISA != nil else { return }
        let g = ConvGeometry(24, 20, kernel: 3, padding: 1)
        let n = 3 * winograd4ChunkTiles / 16 + 5  // 14×14 planes: 16 tiles each, four chunks
        let x = randomTensor([n, 24, 14, 14], seed: 31), wt = randomTensor([20, 24, 3, 3], seed: 32, scale: 0.2)
        let bias = randomTensor([20], seed: 33)
        let ws = Workspace()
        let whole = Tensor(shape: [n, 20, 14, 14])
        try conv2dForward(out: whole, input: x, weight: wt, bias: bias, geometry: g, workspace: ws, winograd: true, winogradTile: 4)
        let per = winograd4ChunkTiles / 16, plane = 24 * 196, outPlane = 20 * 196
        var first = 0, differing = 0
        while first < n {
            let count = min(per, n - first)
            let part = Tensor(shape: [count, 24, 14, 14]), out = Tensor(shape: [count, 20, 14, 14])
            part.data.update(from: x.data + first * plane, count: count * plane)
            try conv2dForward(out: out, input: part, weight: wt, bias: bias, geometry: g, workspace: ws, winograd: true, winogradTile: 4)
            for i in 0..<count * outPlane where out.data[i].bitPattern != whole.data[first * outPlane + i].bitPattern { differing += 1 }
            first += count
        }
        #expect(differing == 0, "\(differing) of \(whole.count) differ")
    }

    @Test func otherGeometriesKeepIm2col() {
        #expect(!ConvGeometry(8, 8, kernel: 3, stride: 2, padding: 1).isWinogradEligible)
        #expect(!ConvGeometry(8, 8, kernel: 3, padding: 0).isWinogradEligible)
        #expect(!ConvGeometry(8, 8, kernel: 3, padding: 2, dilation: 2).isWinogradEligible)
        #expect(!ConvGeometry(8, 8, kernel: 1).isWinogradEligible)
    }
}
