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
        try o2.restore(tensors: Dictionary(uniqueKeysWithValues: ts), steps: steps, parameters: [b])
        try b.value.copy(from: a.value)
        try grad(a, 6); o1.step([a])
        try grad(b, 6); o2.step([b])
        let same = a.value.array == b.value.array
        #expect(same)
    }

    /// The state `stateTensors` gives for one parameter of `shape` after one step.
    static func savedState(_ shape: [Int]) -> (Parameter, [String: Tensor], [String: Int]) {
        let p = Parameter("w", randomTensor(shape, seed: 1))
        let o = Adam(learningRate: 1e-2)
        p.hasGradient = true
        for i in 0..<p.grad.count { p.grad.data[i] = 0.5 }
        o.step([p])
        let (ts, steps) = o.stateTensors()
        return (p, Dictionary(uniqueKeysWithValues: ts), steps)
    }

    @Test func restoreChecksMomentsAgainstTheParameterShape() throws {
        let (p, tensors, steps) = Self.savedState([6])
        // Moments of the same (smaller) shape as each other, but not the parameter's: the step that
        // follows would read and write past them.
        var small = tensors
        small["w.exp_avg"] = Tensor(shape: [2]); small["w.exp_avg_sq"] = Tensor(shape: [2])
        let o = Adam()
        #expect(throws: OptimizerStateError.shapeMismatch(moment: "w.exp_avg", shape: [2], parameter: [6])) {
            try o.restore(tensors: small, steps: steps, parameters: [p])
        }
        #expect(o.slots.isEmpty, "a refused restore installs nothing")
        // Only the second moment wrong.
        var wrongV = tensors
        wrongV["w.exp_avg_sq"] = Tensor(shape: [3, 2])
        #expect(throws: OptimizerStateError.shapeMismatch(moment: "w.exp_avg_sq", shape: [3, 2], parameter: [6])) {
            try o.restore(tensors: wrongV, steps: steps, parameters: [p])
        }
        // The good state restores.
        try o.restore(tensors: tensors, steps: steps, parameters: [p])
        #expect(o.slots["w"]?.step == 1 && o.slots["w"]?.m.shape == [6])
    }

    @Test func restoreRefusesStateThatFitsNoParameterOrNoRun() throws {
        let (p, tensors, steps) = Self.savedState([4])
        let o = Adam()
        func refuses(_ t: [String: Tensor], _ s: [String: Int], _ expected: OptimizerStateError, _ what: String) {
            do {
                try o.restore(tensors: t, steps: s, parameters: [p])
                Issue.record("\(what): restore must fail")
            } catch let e as OptimizerStateError {
                #expect(e == expected, "\(what)")
                #expect(e.description.hasSuffix("."), "\(what): a sentence")
            } catch {
                Issue.record("\(what): \(error)")
            }
            #expect(o.slots.isEmpty, "\(what): nothing installed")
        }
        refuses(tensors, ["w": -1], .badStep(parameter: "w", step: -1), "negative step")
        refuses(tensors, ["w": Int.max], .badStep(parameter: "w", step: Int.max), "step that overflows")
        refuses(tensors, ["w": 1, "v": 1], .unknownParameter("v"), "a step count of no parameter")
        refuses(["w.exp_avg": tensors["w.exp_avg"]!], steps, .missingMoments(parameter: "w"), "a missing moment")
        var extra = tensors
        extra["gone.exp_avg"] = Tensor(shape: [1])
        refuses(extra, steps, .orphanMoments(["gone.exp_avg"]), "a moment without a step count")
        let negative = tensors["w.exp_avg_sq"]!.clone()
        negative.data[2] = -1
        var badV = tensors
        badV["w.exp_avg_sq"] = negative
        refuses(badV, steps, .badMoment(moment: "w.exp_avg_sq", value: -1), "a negative second moment")
    }
}
