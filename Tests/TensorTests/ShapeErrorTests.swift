import Testing
import Tensor
import TestSupport

/// Every public entry checks its shapes and throws an error that names them.
@Suite struct ShapeErrorTests {
    @Test func convRejectsWrongChannels() {
        let g = ConvGeometry(3, 4, kernel: 3, padding: 1)
        let x = Tensor(shape: [1, 2, 8, 8]), w = Tensor(shape: [4, 3, 3, 3]), out = Tensor(shape: [1, 4, 8, 8])
        #expect(throws: TensorError.self) { try conv2dForward(out: out, input: x, weight: w, bias: nil, geometry: g, workspace: Workspace()) }
        do {
            try conv2dForward(out: out, input: x, weight: w, bias: nil, geometry: g, workspace: Workspace())
        } catch {
            #expect("\(error)".contains("[1, 2, 8, 8]"))
        }
    }

    @Test func convRejectsWrongOutputAndTinyInput() {
        let g = ConvGeometry(1, 1, kernel: 7, stride: 2)
        let w = Tensor(shape: [1, 1, 7, 7])
        #expect(throws: TensorError.self) {
            try conv2dForward(out: Tensor(shape: [1, 1, 1, 1]), input: Tensor(shape: [1, 1, 3, 3]), weight: w, bias: nil, geometry: g, workspace: Workspace())
        }
        #expect(throws: TensorError.self) {
            try conv2dForward(out: Tensor(shape: [1, 1, 6, 6]), input: Tensor(shape: [1, 1, 16, 16]), weight: w, bias: nil, geometry: g, workspace: Workspace())
        }
    }

    @Test func noSilentBroadcast() {
        #expect(throws: TensorError.self) { try addForward(out: Tensor(shape: [2, 3]), Tensor(shape: [2, 3]), Tensor(shape: [1, 3])) }
        #expect(throws: TensorError.self) { try linearForward(out: Tensor(shape: [2, 4]), input: Tensor(shape: [2, 3]), weight: Tensor(shape: [4, 5]), bias: nil) }
        #expect(throws: TensorError.self) { try bceWithLogitsLoss(logits: Tensor(shape: [3]), targets: Tensor(shape: [4])) }
        #expect(throws: TensorError.self) { try crossEntropyLoss(logits: Tensor(shape: [2, 3]), targets: [0, 3]) }
    }

    @Test func badGeometryAndShapes() {
        #expect(throws: TensorError.self) { try Tensor(checkedShape: [2, -1]) }
        #expect(throws: TensorError.self) { try Tensor(checkedShape: [1 << 30, 1 << 30]) }
        #expect(throws: TensorError.self) { try Tensor(shape: [2, 2], values: [1, 2, 3]) }
        #expect(throws: TensorError.self) { try Tensor(shape: [2, 3]).reshaped([4, 2]) }
        let g = ConvGeometry(1, 1, kernel: 3, stride: 0)
        #expect(throws: TensorError.self) {
            try conv2dForward(out: Tensor(shape: [1, 1, 1, 1]), input: Tensor(shape: [1, 1, 3, 3]), weight: Tensor(shape: [1, 1, 3, 3]), bias: nil, geometry: g, workspace: Workspace())
        }
        // Training-mode batch norm with one value per channel has no variance to use.
        #expect(throws: TensorError.self) {
            _ = try batchNorm2dForward(out: Tensor(shape: [1, 2, 1, 1]), input: Tensor(shape: [1, 2, 1, 1]), gamma: Tensor(shape: [2]),
                                       beta: Tensor(shape: [2]), runningMean: Tensor(shape: [2]), runningVar: Tensor(shape: [2]), training: true)
        }
    }

    @Test func seededGeneratorIsReproducibleAndRestorable() {
        var a = SeededGenerator(seed: 42), b = SeededGenerator(seed: 42)
        let xs = (0..<5).map { _ in a.next() }
        #expect(xs == (0..<5).map { _ in b.next() })
        let saved = a.state
        let next = a.next()
        var c = SeededGenerator(state: saved)!
        #expect(c.next() == next)
        #expect(SeededGenerator(state: [0, 0, 0, 0]) == nil)
        var d = SeededGenerator(seed: 1)
        #expect(Set(d.permutation(10)) == Set(0..<10))
    }
}
