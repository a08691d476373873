// The inference's mask probabilities straight from the mask head's output (conv_mask on the patch
// layout, every class's logits in one product) against conv_mask + ReLU laid out as images and the
// per-detection product of `labelProbabilities(_:…)`: the same bits when kgemm runs the products.
@testable import Detection
import NN
import Primitives
import Tensor
import Testing
import TestSupport

@Suite struct MaskPredictorTests {
    @Test(arguments: [(2, 5), (3, 1), (2, 24), (6, 3), (5, 9)])
    func fusedProbabilitiesMatchTheLayers(classes: Int, count: Int) throws {
        let predictor = MaskPredictor("roi_heads.mask_predictor", channels: 16, classes: classes)
        var rng = SeededGenerator(seed: 9)
        HeadInit.kaimingConv(predictor.convMask.weight, bias: predictor.convMask.bias, rng: &rng)
        HeadInit.kaimingConv(predictor.logits.weight, bias: predictor.logits.bias, rng: &rng)
        let x = randomTensor([count, 16, 14, 14], seed: 5)
        let box = Box(x1: 1, y1: 2, x2: 30, y2: 40)
        let dets = (0..<count + 2).map { Detection(box: box, score: 0.5, label: $0 % classes, mask28: []) }
        let range = 1..<(count + 1)  // not starting at 0
        var plain = dets, fused = dets
        let up = try predictor.convMask(x, workspace: Workspace(), relu: true)
        try predictor.labelProbabilities(up, detections: &plain, range: range)
        try predictor.labelProbabilities(fromHead: x, detections: &fused, range: range)
        for d in range {
            #expect(fused[d].mask28.count == 28 * 28)
            if Engine.useKGEMM {
                #expect(fused[d].mask28 == plain[d].mask28, "detection \(d) (label \(dets[d].label)) differs")
            } else {
                let worst = zip(fused[d].mask28, plain[d].mask28).map { abs($0 - $1) }.max() ?? 1
                #expect(worst <= 1e-6, "detection \(d): \(worst)")
            }
        }
        #expect(fused[0].mask28.isEmpty && fused[count + 1].mask28.isEmpty)
        // A label outside the classes is a named error, not a crash.
        var bad = dets
        bad[1].label = classes
        #expect(throws: TensorError.self) { try predictor.labelProbabilities(fromHead: x, detections: &bad, range: range) }
        #expect(throws: TensorError.self) { try predictor.labelProbabilities(fromHead: randomTensor([count, 8, 14, 14], seed: 1),
                                                                             detections: &fused, range: range) }
    }
}
