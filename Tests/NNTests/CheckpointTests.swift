import Foundation
import NN
import Tensor
import Testing
import TestSupport

/// safetensors read/write, load-by-name with shape checks, and damaged files.
@Suite struct CheckpointTests {
    final class Tiny: Module {
        let conv = Conv2d("backbone.body.conv1", ConvGeometry(3, 4, kernel: 3, padding: 1), bias: false)
        let bn = BatchNorm2d("backbone.body.bn1", 4)
        let fc = Linear("s2new.fc_l1", 8, 3)
        var parameters: [Parameter] { conv.parameters + bn.parameters + fc.parameters }
        var stateEntries: [StateEntry] { conv.stateEntries + bn.stateEntries + fc.stateEntries }
    }

    func tempDir() -> URL {
        let u = FileManager.default.temporaryDirectory.appendingPathComponent("la-ckpt-\(UUID().uuidString)")
        try? FileManager.default.createDirectory(at: u, withIntermediateDirectories: true)
        return u
    }

    func filled() -> Tiny {
        let m = Tiny()
        var rng = SeededGenerator(seed: 3)
        for e in m.stateEntries { if case .float(let t) = e.value { Init.normal(t, std: 1, rng: &rng) } }
        m.bn.numBatchesTracked.value = 17
        return m
    }

    @Test func namesAreStateDictKeys() {
        let m = Tiny()
        #expect(m.stateEntries.map(\.name) == [
            "backbone.body.conv1.weight", "backbone.body.bn1.weight", "backbone.body.bn1.bias", "backbone.body.bn1.running_mean",
            "backbone.body.bn1.running_var", "backbone.body.bn1.num_batches_tracked", "s2new.fc_l1.weight", "s2new.fc_l1.bias"])
        #expect(m.parameter(named: "backbone.body.conv1.weight")?.shape == [4, 3, 3, 3])
    }

    @Test(arguments: [DType.f32, DType.f16, DType.bf16])
    func roundTrip(_ dtype: DType) throws {
        let m = filled(), dir = tempDir()
        var w = SafeTensorsWriter(metadata: ["affinity": "128", "epoch": "3"])
        m.addState(to: &w, dtype: dtype)
        let url = dir.appendingPathComponent("m.safetensors")
        try w.write(to: url)
        let f = try SafeTensorsFile(contentsOf: url)
        #expect(f.metadata["affinity"] == "128")
        #expect(f.entries["backbone.body.bn1.num_batches_tracked"]?.dtype == .i64)
        let m2 = Tiny()
        try m2.load(from: f)
        #expect(m2.bn.numBatchesTracked.value == 17)
        let tol: Float = dtype == .f32 ? 0 : (dtype == .f16 ? 2e-3 : 1e-2)
        for (a, b) in zip(m.stateEntries, m2.stateEntries) {
            guard case .float(let x) = a.value, case .float(let y) = b.value else { continue }
            let c = compare(y, x)
            #expect(c.maxAbsError <= tol * max(1, c.maxExpectedMagnitude), "\(a.name) \(c)")
        }
        // No temporary file is left beside the checkpoint.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["m.safetensors"])
    }

    @Test func readsTheReferenceWeightsLayout() throws {
        // The shared reference tensors file is a safetensors file written by PyTorch's side.
        let f = try SafeTensorsFile(contentsOf: TestPaths.reference("tensors_2_covid_000.safetensors"))
        #expect(try f.tensor("fpn_out").shape == [1, 256, 32, 32])
    }

    @Test func loadNamesEveryMissingUnexpectedAndMisShapedKey() throws {
        var w = SafeTensorsWriter()
        let m = filled()
        w.add("backbone.body.conv1.weight", Tensor(shape: [4, 3, 5, 5]))  // mis-shaped
        w.add("backbone.body.bn1.weight", m.bn.weight.value)
        w.add("extra.key", Tensor(shape: [1]))
        let f = try SafeTensorsFile(data: try w.serialized())
        let target = Tiny()
        let before = target.conv.weight.value.array
        do {
            try target.load(from: f)
            Issue.record("load must fail")
        } catch let e as CheckpointError {
            guard case .stateMismatch(let missing, let unexpected, let misShaped) = e else { Issue.record("\(e)"); return }
            #expect(missing.contains("s2new.fc_l1.bias") && missing.contains("backbone.body.bn1.running_var"))
            #expect(unexpected == ["extra.key"])
            #expect(misShaped.count == 1 && misShaped[0].contains("backbone.body.conv1.weight"))
            #expect("\(e)".contains("extra.key"))
        }
        let unchanged = target.conv.weight.value.array == before
        #expect(unchanged, "a failed load changes nothing")
    }

    @Test func aliasesAreAccepted() throws {
        let m = filled()
        var w = SafeTensorsWriter()
        m.addState(to: &w, aliases: [(alias: "s2new.pars.0", of: "s2new.fc_l1.weight")])
        let f = try SafeTensorsFile(data: try w.serialized())
        #expect(f.entries["s2new.pars.0"] != nil)
        #expect(throws: CheckpointError.self) { try Tiny().load(from: f) }
        try Tiny().load(from: f, aliases: ["s2new.pars.0": "s2new.fc_l1.weight"])
    }

    @Test func damagedFilesGiveErrorsNotCrashes() throws {
        let m = filled()
        var w = SafeTensorsWriter()
        m.addState(to: &w)
        let good = try w.serialized()
        // Truncated at many points.
        for cut in [0, 4, 8, 20, good.count / 2, good.count - 1] {
            #expect(throws: CheckpointError.self, "cut at \(cut)") { _ = try SafeTensorsFile(data: good.prefix(cut)) }
        }
        // Flipped bytes in the header and a huge header length.
        var bad = good; bad[12] ^= 0xFF; bad[13] = UInt8(ascii: "}")
        #expect(throws: CheckpointError.self) { _ = try SafeTensorsFile(data: bad) }
        var huge = good; huge[7] = 0x7F
        #expect(throws: CheckpointError.self) { _ = try SafeTensorsFile(data: huge) }
        // A header whose offsets do not fit the shape.
        let hdr = #"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#
        var d = Data(); var n = UInt64(hdr.utf8.count).littleEndian
        withUnsafeBytes(of: &n) { d.append(contentsOf: $0) }; d.append(Data(hdr.utf8)); d.append(Data(count: 8))
        #expect(throws: CheckpointError.self) { _ = try SafeTensorsFile(data: d) }
        // Unknown dtype.
        let hdr2 = #"{"a":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}}"#
        var d2 = Data(); var n2 = UInt64(hdr2.utf8.count).littleEndian
        withUnsafeBytes(of: &n2) { d2.append(contentsOf: $0) }; d2.append(Data(hdr2.utf8)); d2.append(Data(count: 8))
        #expect(throws: CheckpointError.self) { _ = try SafeTensorsFile(data: d2) }
        // A missing file.
        #expect(throws: CheckpointError.self) { _ = try SafeTensorsFile(contentsOf: URL(fileURLWithPath: "/nonexistent/x.safetensors")) }
    }

    @Test func aFailedWriteIsACheckpointIOErrorAndLeavesNoFile() throws {
        // The atomic write itself is SystemIO's (Tests/SystemIOTests/AtomicFileTests.swift); the
        // writer reports its failures as CheckpointError.io, as it always has.
        let dir = tempDir()
        var w = SafeTensorsWriter()
        w.add("x", Tensor(shape: [2]))
        do {
            try w.write(to: dir.appendingPathComponent("no/such/file.safetensors"))
            Issue.record("the write must fail")
        } catch let e as CheckpointError {
            guard case .io(let message) = e else { Issue.record("expected .io, got \(e)"); return }
            #expect(message.contains("no/such/file.safetensors"))
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == [])
    }
}
