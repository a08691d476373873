import Foundation
import NN
import Tensor
import Testing
import TestSupport

/// Adam against `torch.optim.Adam` (lr 1e-2, weight decay 1e-2, three steps; the second parameter
/// has no gradient in step 2). Expected values: `tools/make_kernel_fixtures.py`.
@Suite struct AdamTests {
    let fx = KernelFixtures.shared

    @Test func matchesTorchIncludingSkippedParameter() throws {
        let p1 = Parameter("p1", try fx.tensor("adam.p1_init")), p2 = Parameter("p2", try fx.tensor("adam.p2_init"))
        let adam = Adam(learningRate: 1e-2, weightDecay: 1e-2)
        for step in 0..<3 {
            p1.zeroGrad(); p2.zeroGrad()
            try p1.grad.copy(from: try fx.tensor("adam.g1_\(step)")); p1.hasGradient = true
            if step != 1 { try p2.grad.copy(from: try fx.tensor("adam.g2_\(step)")); p2.hasGradient = true }
            let before2 = p2.value.clone()
            adam.step([p1, p2])
            let c1 = compare(p1.value, try fx.tensor("adam.p1_\(step)")), c2 = compare(p2.value, try fx.tensor("adam.p2_\(step)"))
            #expect(c1.maxAbsError < 1e-6, "step \(step) p1: \(c1)")
            #expect(c2.maxAbsError < 1e-6, "step \(step) p2: \(c2)")
            if step == 1 { let same = p2.value.array == before2.array; #expect(same, "a parameter without gradient must be untouched") }
        }
        #expect(adam.slots["p1"]?.step == 3)
        #expect(adam.slots["p2"]?.step == 2)
    }

    @Test func stateRoundTripContinuesIdentically() throws {
        let a = Parameter("w", randomTensor([6], seed: 1)), b = Parameter("w", a.value.clone())
        let o1 = Adam(learningRate: 1e-2, weightDecay: 1e-3), o2 = Adam(learningRate: 1e-2, weightDecay: 1e-3)
        func grad(_ p: Parameter, _ s: UInt64) throws { p.zeroGrad(); try p.grad.copy(from: randomTensor([6], seed: s)); p.hasGradient = true }
        try grad(a, 5); o1.step([a])
        let (ts, steps) = o1.stateTensors()
        try o2.restore(tensors: Dictionary(uniqueKeysWithValues: ts), steps: steps)
        try b.value.copy(from: a.value)
        try grad(a, 6); o1.step([a])
        try grad(b, 6); o2.step([b])
        let same = a.value.array == b.value.array
        #expect(same)
    }
}
