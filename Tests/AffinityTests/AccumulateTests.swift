// Gradient accumulation (issue 19, DataParallel.swift): a step of A slices on one process. The
// data-parallel step over MPI ranks runs the same code, and LabTests' LabDistributedTests checks
// that two ranks train the weights of one process accumulating two slices.
import Affinity
import Detection
import Foundation
import NN
import Tensor
import Testing

@Suite(.serialized) struct AccumulateTests {
    @Test("a step of 2 slices leaves the mean of the slices' gradients in Adam's first moment")
    func meanGradient() throws {
        let data = TinyData()
        var config = TrainingTests.config(seed: 4)
        config.segmentationStep = false
        config.weightDecay = 0
        config.accumulate = 2
        let trainer = try OneShotTrainer(model: TrainingTests.model(seed: 21), data: data, config: config)
        #expect(trainer.slicesPerStep == 2)
        let r = try trainer.step()
        #expect(r.slices == 2 && r.iteration == 0 && trainer.state.iteration == 2)

        // The same two slices one by one on an identical model: the epoch order's first two, each
        // with the generator seeded by the step's padding draw and the slice's place.
        let other = TrainingTests.model(seed: 21)
        var shuffle = SeededGenerator(seed: config.seed &* 4 &+ 1)
        let order = shuffle.permutation(data.classificationCount)
        var padding = SeededGenerator(seed: config.seed &* 4 &+ 4)
        let paddingSeed = padding.next()
        let names = trainer.classificationParameters.map(\.name)
        var sums: [String: [Float]] = [:]
        var loss = 0.0
        for slot in 0..<2 {
            other.zeroGrad()
            var rng = SeededGenerator(seed: SplitMix64.mix(paddingSeed, UInt64(slot)))
            let s = try data.classificationSample(order[slot])
            loss += try other.classificationForwardBackward(image: s.image, label: s.label, rng: &rng).loss
            for p in other.parameters where names.contains(p.name) {
                let g = p.grad.array
                sums[p.name] = sums[p.name].map { zip($0, g).map { $0 + $1 } } ?? g
            }
        }
        #expect(abs(r.classification - loss / 2) <= 1e-9 * max(1, abs(loss)))
        var worst = 0.0, at = ""
        for name in names {
            let m = try #require(trainer.adam.slots[name], "\(name) was not stepped").m.array
            let mean = sums[name]!.map { $0 / 2 }
            let scale = Double(mean.map { abs($0) }.max() ?? 0) + 1e-12
            for (x, g) in zip(m, mean) {
                let d = Double(abs(x - (1 - trainer.adam.beta1) * g)) / (Double(1 - trainer.adam.beta1) * scale)
                if d > worst { worst = d; at = name }
            }
        }
        #expect(worst <= 1e-5, "\(at): Adam's first moment differs from 0.1 × the mean gradient by \(worst) of its scale")
    }

    @Test("accumulate A: steps of A slices, the epoch's last one the rest; epoch means per slice")
    func epochOfSteps() throws {
        let data = TinyData(classification: 5)
        var config = TrainingTests.config(seed: 6)
        config.accumulate = 2
        let trainer = try OneShotTrainer(model: TrainingTests.model(seed: 5), data: data, config: config)
        #expect(trainer.stepsPerEpoch == 3)
        var slices: [Int] = [], positions: [Int] = [], clsSum = 0.0
        for _ in 0..<3 {
            let r = try trainer.step()
            slices.append(r.slices); positions.append(r.iteration)
            clsSum += r.classification * Double(r.slices)
        }
        #expect(slices == [2, 2, 1] && positions == [0, 2, 4])
        #expect(trainer.state.epoch == 1 && trainer.state.totalIterations == 3)
        #expect(abs(trainer.state.epochCls[0] - clsSum / 5) <= 1e-12)
    }

    @Test("accumulate below 1 is refused by name; a configuration saved without it reads as 1")
    func settings() throws {
        var config = TrainingTests.config()
        config.accumulate = 0
        #expect(throws: TrainingError.invalidSettings("accumulate must be at least 1, got 0")) {
            _ = try OneShotTrainer(model: TrainingTests.model(seed: 1), data: TinyData(), config: config)
        }
        config.accumulate = 3
        var json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(config)) as! [String: Any]
        #expect(json["accumulate"] as? Int == 3)
        json["accumulate"] = nil
        let old = try JSONDecoder().decode(TrainingConfig.self, from: JSONSerialization.data(withJSONObject: json))
        #expect(old.accumulate == 1)
    }
}
