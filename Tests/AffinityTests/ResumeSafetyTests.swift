import Affinity
import Detection
import Foundation
import NN
import Tensor
import Testing
import TestSupport

/// `OneShotTrainer.resume(from:)` with damaged checkpoints: every part of the file is checked before
/// anything is applied, so a refused file leaves model, optimizer and trainer state as they were.
@Suite(.serialized) struct ResumeSafetyTests {
    static func directory() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("la-resume-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    /// A checkpoint after one iteration (so it has optimizer moments and step counts).
    static func checkpoint(in dir: URL) throws -> URL {
        let a = try OneShotTrainer(model: TrainingTests.model(seed: 9), data: TinyData(classification: 3, segmentation: 2),
                                   config: TrainingTests.config())
        _ = try a.step()
        let url = dir.appendingPathComponent("run.safetensors")
        try a.saveCheckpoint(to: url)
        return url
    }

    /// Copies `url` to a new file, letting `metadata` edit the metadata and `tensor` replace (or,
    /// returning nil, drop) float entries.
    static func damaged(_ url: URL, _ name: String, metadata: (inout [String: String]) throws -> Void = { _ in },
                        tensor: (String, Tensor) -> Tensor? = { $1 }) throws -> URL {
        let f = try SafeTensorsFile(contentsOf: url)
        var meta = f.metadata
        try metadata(&meta)
        var w = SafeTensorsWriter(metadata: meta)
        for key in f.names {
            let e = f.entries[key]!
            if e.dtype == .i64 {
                w.addInt64(key, try f.int64Values(key), shape: e.shape)
            } else if let t = tensor(key, try f.tensor(key)) {
                w.add(key, t)
            }
        }
        let out = url.deletingLastPathComponent().appendingPathComponent(name)
        try w.write(to: out)
        return out
    }

    /// Edits the trainer state of the metadata (decoded and encoded as `saveCheckpoint` does).
    static func editState(_ meta: inout [String: String], _ edit: (inout TrainerState) -> Void) throws {
        var state = try JSONDecoder().decode(TrainerState.self, from: Data(meta["trainer_state"]!.utf8))
        edit(&state)
        let enc = JSONEncoder(); enc.outputFormatting = [.sortedKeys]
        meta["trainer_state"] = String(data: try enc.encode(state), encoding: .utf8)!
    }

    /// A fresh trainer, and a check that a refused resume changed nothing of it.
    struct Target {
        let trainer: OneShotTrainer
        let weights: [String: [Float]]
        let counters: [String: Int64]
        let state: TrainerState

        init() throws {
            trainer = try OneShotTrainer(model: TrainingTests.model(seed: 1234), data: TinyData(classification: 3, segmentation: 2),
                                         config: TrainingTests.config())
            var w: [String: [Float]] = [:], c: [String: Int64] = [:]
            for e in trainer.model.stateEntries {
                switch e.value {
                case .float(let t): w[e.name] = t.array
                case .int64(let k): c[e.name] = k.value
                }
            }
            weights = w; counters = c; state = trainer.state
        }

        func expectUnchanged(_ context: String, sourceLocation: SourceLocation = #_sourceLocation) {
            var changed: [String] = []
            for e in trainer.model.stateEntries {
                switch e.value {
                case .float(let t): if t.array != weights[e.name] { changed.append(e.name) }
                case .int64(let k): if k.value != counters[e.name] { changed.append(e.name) }
                }
            }
            let weightsKept = changed.isEmpty, noOptimizerState = trainer.adam.slots.isEmpty
            #expect(weightsKept, "\(context): a refused resume changed \(changed.count) weights, e.g. \(changed.prefix(3))",
                    sourceLocation: sourceLocation)
            #expect(noOptimizerState, "\(context): a refused resume installed optimizer state for \(trainer.adam.slots.count) parameters",
                    sourceLocation: sourceLocation)
            let sameState = trainer.state == state
            #expect(sameState, "\(context): a refused resume changed the trainer state", sourceLocation: sourceLocation)
        }
    }

    @Test("invalid generator states: refused, and model and optimizer stay as they were")
    func invalidGeneratorStatesChangeNothing() throws {
        let dir = try Self.directory()
        let good = try Self.checkpoint(in: dir)
        let bad = try Self.damaged(good, "rng.safetensors", metadata: { m in
            try Self.editState(&m) { $0.paddingRNG = [0, 0, 0, 0] }
        })
        let target = try Target()
        #expect(throws: TrainingError.self) { try target.trainer.resume(from: bad) }
        target.expectUnchanged("invalid generator state")
        // An undamaged copy (made by the same helper) resumes into the same trainer.
        try target.trainer.resume(from: try Self.damaged(good, "copy.safetensors"))
        #expect(target.trainer.state.totalIterations == 1)
    }

    @Test("optimizer moments smaller than their parameter are refused before anything is applied")
    func smallerMomentsAreRefused() throws {
        let dir = try Self.directory()
        let good = try Self.checkpoint(in: dir)
        let f = try SafeTensorsFile(contentsOf: good)
        let moment = try #require(f.names.first { $0.hasPrefix("optimizer.") && $0.hasSuffix(".exp_avg") && (f.entries[$0]?.shape.reduce(1, *) ?? 0) > 1 })
        let base = String(moment.dropLast(".exp_avg".count))
        let bad = try Self.damaged(good, "moments.safetensors", tensor: { key, t in
            key == base + ".exp_avg" || key == base + ".exp_avg_sq" ? Tensor(shape: [1]) : t
        })
        let target = try Target()
        #expect(throws: (any Error).self) { try target.trainer.resume(from: bad) }
        target.expectUnchanged("small moments")
    }

    @Test("trainer states that index out of range are refused")
    func outOfRangeTrainerStatesAreRefused() throws {
        let dir = try Self.directory()
        let good = try Self.checkpoint(in: dir)
        let edits: [(String, (inout TrainerState) -> Void)] = [
            ("order beyond the data", { $0.order = [0, 1, 7]; $0.iteration = 1 }),
            ("negative order index", { $0.order = [0, -1, 2] }),
            ("negative iteration", { $0.iteration = -1 }),
            ("iteration beyond the order", { $0.iteration = 4 }),
            ("best epoch beyond the epochs", { $0.bestEpoch = 5 }),
            ("epoch lists of different lengths", { $0.epoch = 1; $0.epochTotals = [1.0]; $0.epochSeg = []; $0.epochCls = [1.0] }),
            ("negative counters", { $0.epochSegCount = -3 }),
        ]
        for (i, (what, edit)) in edits.enumerated() {
            let bad = try Self.damaged(good, "state-\(i).safetensors", metadata: { m in try Self.editState(&m, edit) })
            let target = try Target()
            #expect(throws: TrainingError.self, "\(what)") { try target.trainer.resume(from: bad) }
            target.expectUnchanged(what)
        }
    }

    @Test("a checkpoint whose tensor bytes changed (a flipped or zeroed byte) is refused by its checksum")
    func damagedTensorBytesAreRefused() throws {
        let dir = try Self.directory()
        let good = try Self.checkpoint(in: dir)
        let bytes = try Data(contentsOf: good)
        let f = try SafeTensorsFile(data: bytes)
        #expect(f.metadata[OneShotTrainer.checksumKey]?.hasPrefix("fnv1a64:") == true, "\(f.metadata.keys.sorted())")
        #expect(try OneShotTrainer.checkpointState(good).totalIterations == 1)
        var headerLength = 0
        for i in 0..<8 { headerLength |= Int(bytes[i]) << (8 * i) }
        let dataStart = 8 + headerLength
        // Still a valid safetensors file (the same header, shapes and offsets): only the values differ.
        for (name, offset) in [("flipped", (bytes.count - dataStart) / 2), ("last", bytes.count - dataStart - 1)] {
            var damaged = bytes
            damaged[dataStart + offset] ^= 0x10
            let bad = dir.appendingPathComponent("\(name).safetensors")
            try damaged.write(to: bad)
            #expect(throws: Never.self) { _ = try SafeTensorsFile(contentsOf: bad) }
            let target = try Target()
            let e = #expect(throws: TrainingError.self, "\(name)") { try target.trainer.resume(from: bad) }
            #expect("\(e.map { String(describing: $0) } ?? "")".contains("damaged"), "\(String(describing: e))")
            target.expectUnchanged(name)
            #expect(throws: TrainingError.self) { _ = try OneShotTrainer.checkpointState(bad) }
        }
        // A truncated file is not safetensors any more.
        let cut = dir.appendingPathComponent("cut.safetensors")
        try bytes.prefix(bytes.count - 100).write(to: cut)
        #expect(throws: CheckpointError.self) { _ = try OneShotTrainer.checkpointState(cut) }
        #expect(throws: CheckpointError.self) { _ = try OneShotTrainer.checkpointState(dir.appendingPathComponent("absent.safetensors")) }
        // The untouched file still resumes.
        let target = try Target()
        try target.trainer.resume(from: good)
        #expect(target.trainer.state.totalIterations == 1)
    }

    @Test("negative optimizer step counts are refused")
    func negativeStepCountsAreRefused() throws {
        let dir = try Self.directory()
        let good = try Self.checkpoint(in: dir)
        let bad = try Self.damaged(good, "steps.safetensors", metadata: { m in
            var steps = try JSONDecoder().decode([String: Int].self, from: Data(m["optimizer_steps"]!.utf8))
            let first = try #require(steps.keys.sorted().first)
            steps[first] = -1
            m["optimizer_steps"] = String(data: try JSONEncoder().encode(steps), encoding: .utf8)!
        })
        let target = try Target()
        #expect(throws: (any Error).self) { try target.trainer.resume(from: bad) }
        target.expectUnchanged("negative step count")
    }
}

/// `AffinityModel.paddingOrder` for every count and batch size, including none.
@Suite struct PaddingOrderEdgeTests {
    @Test func noBoxesGiveAnEmptyOrder() {
        var rng = SeededGenerator(seed: 3)
        #expect(AffinityModel.paddingOrder(count: 0, batchSize: 8, rng: &rng) == [])
        #expect(AffinityModel.paddingOrder(count: -2, batchSize: 8, rng: &rng) == [])
        #expect(AffinityModel.paddingOrder(count: 0, batchSize: 0, rng: &rng) == [])
    }

    @Test func everyPositionNamesAnExistingBox() {
        var rng = SeededGenerator(seed: 4)
        for b in -1...10 {
            for n in -1...12 {
                let o = AffinityModel.paddingOrder(count: n, batchSize: b, rng: &rng)
                #expect(o.allSatisfy { $0 >= 0 && $0 < n }, "count \(n), batch \(b): \(o)")
                if n > 0 && b > 0 { #expect(o.count == b, "count \(n), batch \(b): \(o)") } else { #expect(o.isEmpty) }
            }
        }
    }
}

/// A weights file naming a huge C' is refused before the head is allocated (a local user could
/// otherwise make the daemon allocate terabytes through ImportModel).
@Suite("Affinity count bounds")
struct AffinityCountBoundsTests {
    @Test func aHugeAffinityCountIsRefusedBeforeAllocation() throws {
        for k in ["0", "-3", "4097", "9223372036854775807"] {
            var w = SafeTensorsWriter(metadata: ["affinity": k])
            w.add("backbone.body.conv1.weight", Tensor(shape: [1]))
            let url = FileManager.default.temporaryDirectory.appendingPathComponent("huge-k-\(UUID().uuidString.prefix(6)).safetensors")
            defer { try? FileManager.default.removeItem(at: url) }
            try w.write(to: url)
            #expect(throws: (any Error).self, "C' = \(k)") { try ModelLoader.load(contentsOf: url) }
        }
        do {
            var w = SafeTensorsWriter(metadata: ["affinity": "100000"])
            w.add("backbone.body.conv1.weight", Tensor(shape: [1]))
            let url = FileManager.default.temporaryDirectory.appendingPathComponent("huge-k.safetensors")
            defer { try? FileManager.default.removeItem(at: url) }
            try w.write(to: url)
            _ = try ModelLoader.load(contentsOf: url)
            Issue.record("C' = 100000 was accepted")
        } catch let e as CheckpointError {
            #expect("\(e)".contains("1…4096"), "\(e)")
        }
    }
}
