// State dicts saved with torchvision 0.13+ (FPN convolutions `…inner_blocks.0.0.weight`) load like
// the author's (`…inner_blocks.0.weight`); a file with both namings is refused.
import Affinity
import Foundation
import NN
import Tensor
import Testing
import TestSupport

@Suite("torchvision FPN key namings", .serialized)
struct TorchvisionNamingTests {
    /// A seeded C' = 8 model and its file (our layout: torchvision's pre-0.13 names).
    static let source: (model: AffinityModel, file: SafeTensorsFile) = {
        let m = AffinityModel(affinities: 8)
        var rng = SeededGenerator(seed: 23)
        m.initialize(rng: &rng)
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("naming-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        try! ModelLoader.save(m, to: url)
        return (m, try! SafeTensorsFile(data: Data(contentsOf: url)))
    }()

    /// Every state entry of `a` equals `b`'s (same names, values and counters).
    static func sameState(_ a: AffinityModel, _ b: AffinityModel) -> Bool {
        let ea = a.stateEntries, eb = b.stateEntries
        guard ea.count == eb.count else { return false }
        for (x, y) in zip(ea, eb) {
            guard x.name == y.name else { return false }
            switch (x.value, y.value) {
            case (.float(let s), .float(let t)): if s.shape != t.shape || s.array != t.array { return false }
            case (.int64(let s), .int64(let t)): if s.value != t.value { return false }
            default: return false
            }
        }
        return true
    }

    @Test("a state dict in either naming loads the same weights, and says which naming it had")
    func bothNamingsLoad() throws {
        let (model, file) = Self.source
        let old = try SafeTensorsFile(data: StateDictFixtures.rewritten(file) { $0 })
        let new = try SafeTensorsFile(data: StateDictFixtures.torchvision013(file))
        #expect(new.entries["backbone.fpn.inner_blocks.0.0.weight"] != nil && new.entries["backbone.fpn.inner_blocks.0.weight"] == nil)
        #expect(old.names.count == new.names.count)

        #expect(try ModelLoader.torchvisionNaming(of: old) == .pre0_13)
        #expect(try ModelLoader.torchvisionNaming(of: new) == .since0_13)
        let a = try ModelLoader.load(old), b = try ModelLoader.load(new)
        #expect(Self.sameState(a, model), "pre-0.13 names: the saved weights")
        #expect(Self.sameState(b, model), "0.13+ names: the same weights")
        #expect(a.backbone.fpnInner.weight.value.array == b.backbone.fpnInner.weight.value.array)
        #expect(b.backbone.fpnLayer.bias?.value.array == model.backbone.fpnLayer.bias?.value.array)
    }

    @Test("a converted file (pre-0.13 keys) keeps the naming of its .pth from the torchvision_naming metadata")
    func convertedFileNaming() throws {
        let (_, file) = Self.source
        var meta = file.metadata
        meta[ModelLoader.torchvisionNamingKey] = "0.13+"
        let converted = try SafeTensorsFile(data: StateDictFixtures.rewritten(file, metadata: meta) { $0 })
        #expect(try ModelLoader.torchvisionNaming(of: converted) == .since0_13)
        // Unknown values are not believed; the keys decide.
        meta[ModelLoader.torchvisionNamingKey] = "0.99"
        let odd = try SafeTensorsFile(data: StateDictFixtures.rewritten(file, metadata: meta) { $0 })
        #expect(try ModelLoader.torchvisionNaming(of: odd) == .pre0_13)
    }

    @Test("a state dict that mixes the namings is refused with a named error")
    func mixedNamingsRefused() throws {
        let (_, file) = Self.source
        // inner_blocks in the new naming, layer_blocks in the old.
        let half = try SafeTensorsFile(data: StateDictFixtures.rewritten(file) { k in
            k.hasPrefix("backbone.fpn.inner_blocks.") ? StateDictFixtures.torchvision013Names[k] ?? k : k
        })
        let e = #expect(throws: TorchvisionNamingError.self) { try ModelLoader.load(half) }
        guard case .mixed(let old, let new)? = e else { Issue.record("no mixed error"); return }
        #expect(old == ["backbone.fpn.layer_blocks.0.bias", "backbone.fpn.layer_blocks.0.weight"])
        #expect(new == ["backbone.fpn.inner_blocks.0.0.bias", "backbone.fpn.inner_blocks.0.0.weight"])
        #expect(e?.description.contains("mixes torchvision's two FPN key namings") == true, "\(String(describing: e))")
        #expect(throws: TorchvisionNamingError.self) { try ModelLoader.torchvisionNaming(of: half) }
        // Both names of one tensor: ambiguous too.
        let both = try SafeTensorsFile(data: StateDictFixtures.rewritten(file, extra: ["backbone.fpn.inner_blocks.0.0.weight": "backbone.fpn.inner_blocks.0.weight"]) { $0 })
        #expect(throws: TorchvisionNamingError.self) { try ModelLoader.load(both) }
    }

    @Test("a 0.13+ file that lacks a key names it in its own naming")
    func missingKeyInNewNaming() throws {
        let (_, file) = Self.source
        let short = try SafeTensorsFile(data: StateDictFixtures.rewritten(file) { k in
            k == "backbone.fpn.layer_blocks.0.bias" ? nil : StateDictFixtures.torchvision013Names[k] ?? k
        })
        let e = #expect(throws: CheckpointError.self) { try ModelLoader.load(short) }
        #expect(e == .stateMismatch(missing: ["backbone.fpn.layer_blocks.0.0.bias"], unexpected: [], misShaped: []), "\(String(describing: e))")
    }

    @Test func keyRenaming() {
        #expect(ModelLoader.originalKey("backbone.fpn.inner_blocks.0.weight", naming: .since0_13) == "backbone.fpn.inner_blocks.0.0.weight")
        #expect(ModelLoader.originalKey("backbone.fpn.layer_blocks.3.bias", naming: .since0_13) == "backbone.fpn.layer_blocks.3.0.bias")
        #expect(ModelLoader.originalKey("backbone.fpn.inner_blocks.0.weight", naming: .pre0_13) == "backbone.fpn.inner_blocks.0.weight")
        for other in ["backbone.body.conv1.weight", "backbone.fpn.inner_blocks.0.0.weight", "rpn.head.conv.weight"] {
            #expect(ModelLoader.originalKey(other, naming: .since0_13) == other)
        }
        #expect(TorchvisionNaming.pre0_13.rawValue == "pre-0.13" && TorchvisionNaming.since0_13.rawValue == "0.13+")
    }
}
