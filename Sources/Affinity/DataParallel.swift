// Algorithm 1 with more than one slice per step (issue 19): gradient accumulation on one process
// (`TrainingConfig.accumulate`) and data parallelism over several (`OneShotTrainer.replicas`).
//
// A step of N = accumulate × replicas slices: every process holds the whole model and the same
// trainer state. The epoch's shuffled order is read N slices at a time; process r takes the slices
// r·A ..< (r+1)·A of each step (A = accumulate), a disjoint shard. The segmentation step draws N
// segmentation slices from the shared generator the same way. For each of its slices a process runs
// forward and backward alone, and adds the gradients of the step's parameter subset (MODEL.md §8.2:
// Θ1 ∪ Θ2 for the segmentation step, Θ1 ∪ Θ3 for the classification step) and the change of the
// running statistics (BatchNorm) into one contiguous float buffer; one sum over the processes of that
// buffer (an allreduce), divided by the number of slices that took part, gives every process the
// same mean gradient and the same running statistics, and every process applies the same Adam step.
// The losses are summed the same way, so the copy rule (§8.2 step 4) sees the step's mean L_SEG on
// every process and every process copies or not alike.
//
// The random choices of a slice (anchor and RoI sampling, RoI-batch padding) come from a generator
// seeded by one draw of the shared generator per step and the slice's place in the step, so one
// process accumulating N slices and N processes with one slice each draw the same numbers: their
// weights agree to rounding (exactly, for two processes). A step of one slice (accumulate 1, one
// process) is `step()`'s original path, unchanged.

import Detection
import Foundation
import NN
import Tensor

/// The processes that train one model together (an MPI world, in affinity-lab). Every process
/// calls the operations in the same order with buffers of the same size.
public protocol TrainingReplicas: AnyObject {
    /// This process's index, 0..<count; process 0 writes the checkpoints.
    var rank: Int { get }
    /// The number of processes.
    var count: Int { get }
    /// Sums `buffer` element-wise over the processes, in place: every process ends with the sums.
    func sum(_ buffer: UnsafeMutableBufferPointer<Float>) throws
    /// Sums `values` element-wise over the processes, in place.
    func sum(_ values: inout [Double]) throws
    /// Copies process `root`'s `buffer` into every process's.
    func broadcast(_ buffer: UnsafeMutableBufferPointer<Float>, from root: Int) throws
    /// Process `root`'s bytes, on every process.
    func broadcast(bytes: [UInt8], from root: Int) throws -> [UInt8]
}

/// The step buffer and the list of running statistics, kept between steps.
final class DataParallelScratch {
    /// One contiguous buffer: gradients of the step's subset, one has-gradient flag per parameter,
    /// the changes of the float buffers, the changes of the counters.
    var bucket: UnsafeMutableBufferPointer<Float> = UnsafeMutableBufferPointer(start: nil, count: 0)
    /// The model's float buffers (running means and variances), each once.
    var buffers: [Tensor]? = nil
    /// The model's counters (BatchNorm's num_batches_tracked), each once.
    var counters: [CounterBuffer] = []
    /// Bytes summed over the processes in the last step (for the benchmark).
    var lastStepBytes = 0

    deinit { bucket.deallocate() }

    /// A zeroed bucket of at least `count` floats.
    func zeroedBucket(_ count: Int) -> UnsafeMutableBufferPointer<Float> {
        if bucket.count < count {
            bucket.deallocate()
            bucket = UnsafeMutableBufferPointer<Float>.allocate(capacity: count)
        }
        let b = UnsafeMutableBufferPointer(rebasing: bucket[0..<count])
        b.initialize(repeating: 0)
        return b
    }
}

/// The running statistics of a model at one moment, restored after each slice of a step.
private struct BufferSnapshot {
    var floats: [[Float]]
    var counters: [Int64]
}

extension OneShotTrainer {
    /// Classification slices per step: `config.accumulate` × the number of processes.
    public var slicesPerStep: Int { config.accumulate * (replicas?.count ?? 1) }

    /// Steps in one epoch of `data` at `slicesPerStep` (the last step of an epoch may be smaller).
    public var stepsPerEpoch: Int { (data.classificationCount + slicesPerStep - 1) / slicesPerStep }

    /// Makes every process start from process 0's model and optimizer state: the weights and running
    /// statistics and Adam's moments are broadcast, and the trainer state (progress, generators) and
    /// Adam's step counts must already agree — every process resumed from the same checkpoint, or
    /// none did.
    /// - Throws: `TrainingError.replicasDiverged` when the trainer states differ, and what the
    ///   replicas' operations throw.
    public func synchronizeReplicas() throws {
        guard let replicas, replicas.count > 1 else { return }
        let enc = JSONEncoder(); enc.outputFormatting = [.sortedKeys]
        let (moments, steps) = adam.stateTensors()
        let mine = [UInt8](try enc.encode(state)) + [0] + [UInt8](try enc.encode(steps)) + [0] + [UInt8](try enc.encode(config))
        let root = try replicas.broadcast(bytes: mine, from: 0)
        // Every process must learn whether any disagrees, or the ones that agree would wait.
        var disagree = [root == mine ? 0.0 : 1.0]
        try replicas.sum(&disagree)
        if disagree[0] > 0 {
            throw TrainingError.replicasDiverged(root == mine
                ? "\(Int(disagree[0])) other process(es) start from another trainer state than process 0 (a different checkpoint or settings)"
                : "process \(replicas.rank) starts from another trainer state than process 0 (a different checkpoint or settings)")
        }
        var tensors: [Tensor] = []
        var seen = Set<ObjectIdentifier>()
        for e in model.stateEntries {
            if case .float(let t) = e.value, seen.insert(ObjectIdentifier(t)).inserted { tensors.append(t) }
        }
        tensors += moments.map(\.1)
        for t in tensors {
            try replicas.broadcast(UnsafeMutableBufferPointer(start: t.data, count: t.count), from: 0)
        }
        let counters = stateCounters()
        var values = counters.flatMap { withUnsafeBytes(of: $0.value.littleEndian) { Array($0) } }
        values = try replicas.broadcast(bytes: values, from: 0)
        for (i, c) in counters.enumerated() {
            var v: Int64 = 0
            for k in 0..<8 { v |= Int64(values[8 * i + k]) << (8 * Int64(k)) }
            c.value = v
        }
    }

    private func stateCounters() -> [CounterBuffer] {
        var out: [CounterBuffer] = []
        var seen = Set<ObjectIdentifier>()
        for e in model.stateEntries {
            if case .int64(let c) = e.value, seen.insert(ObjectIdentifier(c)).inserted { out.append(c) }
        }
        return out
    }

    /// The model's float buffers that are not parameters, and its counters (each once).
    private func runningStatistics() -> (floats: [Tensor], counters: [CounterBuffer]) {
        if let b = parallel.buffers { return (b, parallel.counters) }
        let parameterValues = Set(model.parameters.map { ObjectIdentifier($0.value) })
        var seen = Set<ObjectIdentifier>()
        var floats: [Tensor] = []
        for e in model.stateEntries {
            if case .float(let t) = e.value, !parameterValues.contains(ObjectIdentifier(t)), seen.insert(ObjectIdentifier(t)).inserted {
                floats.append(t)
            }
        }
        parallel.buffers = floats
        parallel.counters = stateCounters()
        return (floats, parallel.counters)
    }

    private func snapshot() -> BufferSnapshot {
        let (floats, counters) = runningStatistics()
        return BufferSnapshot(floats: floats.map { Array(UnsafeBufferPointer(start: $0.data, count: $0.count)) }, counters: counters.map(\.value))
    }

    private func restore(_ s: BufferSnapshot) {
        let (floats, counters) = runningStatistics()
        for (t, v) in zip(floats, s.floats) { v.withUnsafeBufferPointer { t.data.update(from: $0.baseAddress!, count: t.count) } }
        for (c, v) in zip(counters, s.counters) { c.value = v }
    }

    /// Bytes summed over the processes in the last step (0 for a step of one slice).
    public var lastStepReducedBytes: Int { parallel.lastStepBytes }

    /// One step's shared work: run `body` on this process's slots (each after `zeroGrad`, with the
    /// running statistics as they were before the step), add each slot's gradients of `parameters`
    /// and the change of the running statistics into the bucket, sum the bucket and `scalars` over
    /// the processes, and leave the mean gradient (sum / `scalars[0]`, the slices that took part) in
    /// the parameters and the mean change in the running statistics. `body` returns nil for a slot
    /// that does not take part (a segmentation slice without lesions) or its losses, whose first
    /// value must be 1 (it counts the slice).
    /// - Returns: the summed scalars (scalars[0]: the slices that took part in the whole step).
    private func reduceStep(parameters: [Parameter], slots: Range<Int>, scalarCount: Int,
                            _ body: (Int) throws -> [Double]?) throws -> [Double] {
        let (floats, counters) = runningStatistics()
        let gradientCount = parameters.reduce(0) { $0 + $1.grad.count }
        let statisticsCount = floats.reduce(0) { $0 + $1.count }
        let total = gradientCount + parameters.count + statisticsCount + counters.count
        let bucket = parallel.zeroedBucket(total)
        let before = snapshot()
        var scalars = [Double](repeating: 0, count: scalarCount)
        for slot in slots {
            model.zeroGrad()
            guard let losses = try body(slot) else { continue }
            for (k, v) in losses.enumerated() { scalars[k] += v }
            var offset = 0
            for (i, p) in parameters.enumerated() {
                let n = p.grad.count
                if p.hasGradient {
                    let g = p.grad.data
                    let b = bucket.baseAddress! + offset
                    for j in 0..<n { b[j] += g[j] }
                    bucket[gradientCount + i] += 1
                }
                offset += n
            }
            offset = gradientCount + parameters.count
            for (t, old) in zip(floats, before.floats) {
                let b = bucket.baseAddress! + offset, x = t.data
                for j in 0..<t.count { b[j] += x[j] - old[j] }
                offset += t.count
            }
            for (c, old) in zip(counters, before.counters) {
                bucket[offset] += Float(c.value - old)
                offset += 1
            }
            restore(before)
        }
        if let replicas, replicas.count > 1 {
            try replicas.sum(bucket)
            try replicas.sum(&scalars)
            parallel.lastStepBytes += total * MemoryLayout<Float>.size + scalarCount * MemoryLayout<Double>.size
        }
        let count = scalars[0]
        guard count > 0 else { return scalars }
        let divisor = Float(count)
        var offset = 0
        for (i, p) in parameters.enumerated() {
            let n = p.grad.count
            let g = p.grad.data, b = bucket.baseAddress! + offset
            if bucket[gradientCount + i] > 0 {
                for j in 0..<n { g[j] = b[j] / divisor }
                p.hasGradient = true
            } else {
                p.zeroGrad()
            }
            offset += n
        }
        offset = gradientCount + parameters.count
        for (t, old) in zip(floats, before.floats) {
            let b = bucket.baseAddress! + offset, x = t.data
            for j in 0..<t.count { x[j] = old[j] + b[j] / divisor }
            offset += t.count
        }
        for (c, old) in zip(counters, before.counters) {
            c.value = old + Int64((Double(bucket[offset]) / count).rounded())
            offset += 1
        }
        return scalars
    }

    /// One step of `slicesPerStep` slices (see the top of this file); `step()` calls it when a step
    /// has more than one slice.
    func batchedStep() throws -> IterationResult {
        let processes = replicas?.count ?? 1, rank = replicas?.rank ?? 0
        let perProcess = config.accumulate, perStep = perProcess * processes
        if state.order.isEmpty || state.iteration >= state.order.count {
            var r = SeededGenerator(state: state.shuffleRNG)!
            state.order = r.permutation(data.classificationCount)
            state.shuffleRNG = r.state
            state.iteration = 0
        }
        parallel.lastStepBytes = 0
        let start = state.iteration
        let slices = min(perStep, state.order.count - start)
        let mySlots = (rank * perProcess)..<((rank + 1) * perProcess)
        // One draw per step from each shared generator seeds the slices' own generators.
        var sampling = SeededGenerator(state: state.samplingRNG)!, padding = SeededGenerator(state: state.paddingRNG)!
        let samplingSeed = sampling.next(), paddingSeed = padding.next()
        state.samplingRNG = sampling.state; state.paddingRNG = padding.state

        // Segmentation step: one drawn slice per slot, those with lesions take part.
        var seg: SegmentationLosses? = nil
        var copied = false
        if config.segmentationStep {
            var pick = SeededGenerator(state: state.segmentationPickRNG)!
            let picks = (0..<perStep).map { _ in Int(pick.next() % UInt64(data.segmentationCount)) }
            state.segmentationPickRNG = pick.state
            let parameters = segmentationParameters
            let sums = try reduceStep(parameters: parameters, slots: mySlots, scalarCount: 6) { slot in
                let s = try data.segmentationSample(picks[slot])
                guard !s.targets.boxes.isEmpty else { return nil }
                var rng = SeededGenerator(seed: SplitMix64.mix(samplingSeed, UInt64(slot)))
                let l = try model.segmentation.segmentationForwardBackward(image: s.image, targets: s.targets, rng: &rng)
                return [1, l.classifier, l.boxReg, l.mask, l.objectness, l.rpnBoxReg]
            }
            let n = sums[0]
            if n > 0 {
                var l = SegmentationLosses()
                l.classifier = sums[1] / n; l.boxReg = sums[2] / n; l.mask = sums[3] / n; l.objectness = sums[4] / n; l.rpnBoxReg = sums[5] / n
                if l.total < state.copyReference {
                    try model.copySegmentationWeights()
                    copied = true
                    state.copies += 1
                }
                switch config.copyRule {
                case .previous: state.copyReference = l.total
                case .best: state.copyReference = min(state.copyReference, l.total)
                }
                adam.step(parameters)
                seg = l
                state.epochSegSum += sums[1...5].reduce(0, +); state.epochSegCount += Int(n)
            }
        }

        // Classification step: the step's slices of the epoch order.
        var cls = 0.0
        if config.classificationStep {
            let sums = try reduceStep(parameters: classificationParameters, slots: mySlots.clamped(to: 0..<slices), scalarCount: 2) { slot in
                let c = try data.classificationSample(state.order[start + slot])
                var rng = SeededGenerator(seed: SplitMix64.mix(paddingSeed, UInt64(slot)))
                let (loss, _) = try model.classificationForwardBackward(image: c.image, label: c.label, trainReduce: config.trainConvReduce, rng: &rng)
                return [1, loss]
            }
            if let headRate = config.headLearningRate {
                let head = headParameters
                let names = Set(head.map(\.name))
                adam.step(classificationParameters.filter { !names.contains($0.name) })
                adam.learningRate = headRate
                adam.step(head)
                adam.learningRate = config.learningRate
            } else {
                adam.step(classificationParameters)
            }
            cls = sums[0] > 0 ? sums[1] / sums[0] : 0
            state.epochClsSum += sums[1]
        }

        let result = IterationResult(epoch: state.epoch, iteration: start, segmentation: seg, classification: cls, copied: copied, slices: slices)
        state.iteration = start + slices
        state.totalIterations += 1
        if state.iteration >= state.order.count { finishEpoch() }
        return result
    }
}
