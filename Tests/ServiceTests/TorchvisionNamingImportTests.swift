// ImportModel takes state dicts in either of torchvision's FPN namings (before 0.13:
// `backbone.fpn.inner_blocks.0.weight`; 0.13+: `backbone.fpn.inner_blocks.0.0.weight`), records
// which in the card, and refuses a file that mixes them.
import Affinity
import AffinityAPI
import Bus
import Foundation
import Imaging
import NN
import Service
import TestSupport
import Testing

@Suite("Import of state dicts in torchvision's FPN namings", .serialized)
struct TorchvisionNamingImportTests {
    typealias D = DaemonProcess

    /// The small model's bytes in the pre-0.13 naming (our files), in the 0.13+ naming, and mixed.
    static func fixtures(in dir: URL) throws -> (old: [UInt8], new: [UInt8], mixed: [UInt8]) {
        let (old, _) = try Fixtures.smallModel(in: dir, seed: 5)
        let file = try SafeTensorsFile(data: Data(old))
        let new = try StateDictFixtures.torchvision013(file)
        let mixed = try StateDictFixtures.rewritten(file) { k in
            k.hasPrefix("backbone.fpn.layer_blocks.") ? StateDictFixtures.torchvision013Names[k] ?? k : k
        }
        return (old, [UInt8](new), [UInt8](mixed))
    }

    @Test("the store imports both namings, records which in the card, and loads the same weights")
    func storeImportsBothNamings() throws {
        let dir = try Paths.temporaryDirectory("naming-store")
        defer { try? FileManager.default.removeItem(at: dir) }
        let (old, new, mixed) = try Self.fixtures(in: dir)
        let state = dir.appendingPathComponent("state")
        let store = try ModelStore(stateDirectory: state)
        let a = try store.importModel(bytes: old, name: "old")
        let b = try store.importModel(bytes: new, name: "new")
        #expect(a.torchvisionNaming == "pre-0.13" && b.torchvisionNaming == "0.13+")
        #expect(a.id != b.id && b.affinities == 8)
        #expect([UInt8](try Data(contentsOf: store.weightsURL(b.id))) == new, "stored unchanged")
        let cardText = try String(contentsOf: store.modelsDirectory.appendingPathComponent("\(b.id)/card.json"), encoding: .utf8)
        #expect(cardText.contains("\"torchvision_naming\" : \"0.13+\""), "\(cardText)")

        // Reopened: the cards keep the naming; both stored files load to the same weights.
        let reopened = try ModelStore(stateDirectory: state)
        #expect(reopened.card(b.id)?.torchvisionNaming == "0.13+")
        let (ma, _) = try reopened.loadModel(a.id), (mb, _) = try reopened.loadModel(b.id)
        let pa = ma.parameters, pb = mb.parameters
        #expect(pa.count == pb.count && pa.map(\.name) == pb.map(\.name))
        #expect(zip(pa, pb).allSatisfy { $0.value.array == $1.value.array }, "the same weights under either naming")

        // A file with both namings: refused, nothing stored.
        let e = #expect(throws: ServiceError.self) { try store.importModel(bytes: mixed, name: "mixed") }
        #expect(e?.kind == .unsupportedFormat && e?.message.contains("mixes torchvision's two FPN key namings") == true, "\(String(describing: e))")
        #expect(store.models.count == 2)

        // A card written before the naming was recorded still reads (no naming).
        let cardURL = store.modelsDirectory.appendingPathComponent("\(a.id)/card.json")
        var json = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: cardURL)) as? [String: Any])
        json.removeValue(forKey: "torchvision_naming")
        try JSONSerialization.data(withJSONObject: json).write(to: cardURL)
        let older = try ModelStore(stateDirectory: state)
        #expect(older.card(a.id) != nil && older.card(a.id)?.torchvisionNaming == nil)
    }

    @Test("ImportModel over D-Bus takes a 0.13+ state dict, whose model then analyses like the pre-0.13 one")
    func importModelOverTheBus() throws {
        let dir = try Paths.temporaryDirectory("naming-daemon")
        defer { try? FileManager.default.removeItem(at: dir) }
        let (old, new, mixed) = try Self.fixtures(in: dir)
        let session = try DaemonSession(stateDirectory: dir.appendingPathComponent("state"))
        defer { session.stop() }
        let E = "org.lesionaffinity.Affinity1.Error."

        let oldPath = try session.call("ImportModel", [try DaemonTests.memfd(old), .vardict(["name": .string("old")])])[0].asObjectPath()
        let newPath = try session.call("ImportModel", [try DaemonTests.memfd(new), .vardict(["name": .string("new")])])[0].asObjectPath()
        #expect(oldPath != newPath)
        let card = dir.appendingPathComponent("state/models/\(API.id(newPath))/card.json")
        let cardJSON = try JSONSerialization.jsonObject(with: Data(contentsOf: card)) as? [String: Any]
        #expect(cardJSON?["torchvision_naming"] as? String == "0.13+", "\(String(describing: cardJSON))")

        let refused = DaemonTests.error { try session.call("ImportModel", [try DaemonTests.memfd(mixed), .vardict([:])]) }
        #expect(refused?.name == E + "UnsupportedFormat" && refused?.message.contains("FPN key namings") == true, "\(String(describing: refused))")

        // The same slice through each model: the same result.
        let png = try Fixtures.slicePNG()
        func scores(_ model: String) throws -> [Double] {
            let r = try session.call("Analyse", [try DaemonTests.memfd(png), .vardict(["model": .objectPath(model)])])[0].asVardict()
            #expect(try r["model"]?.asObjectPath() == model)
            return try r["scores"]?.asDoubles() ?? []
        }
        let s0 = try scores(oldPath), s1 = try scores(newPath)
        #expect(s0.count == 3 && s1.count == 3)
        for (x, y) in zip(s0, s1) { #expect(abs(x - y) <= 1e-4 * max(1, abs(x)), "\(s0) vs \(s1)") }
    }
}
