// The bundled demo model: affinityd imports it into an empty store and makes it the default.
import Affinity
import Bus
import Foundation
import NN
import Service
import Tensor
import TestSupport
import Testing

@Suite("The bundled default model", .serialized)
struct BundledModelTests {
    typealias D = DaemonProcess

    /// A bundled models directory holding `phantom-demo/` with F16 weights (random, seeded) and a
    /// card without id, sha256 and created.
    static func bundledDirectory(in dir: URL, seed: UInt64 = 21, folder: String = "bundled") throws -> (models: URL, weights: [UInt8]) {
        let models = dir.appendingPathComponent(folder)
        let demo = models.appendingPathComponent(BundledModel.defaultName)
        try FileManager.default.createDirectory(at: demo, withIntermediateDirectories: true)
        let m = AffinityModel(affinities: 8)
        var rng = SeededGenerator(seed: seed)
        m.initialize(rng: &rng)
        try ModelLoader.save(m, to: demo.appendingPathComponent("weights.safetensors"), dtype: .f16)
        let card = """
            {"name": "phantom demo (test)", "affinities": 8, "trained_on": "synthetic phantoms, seed 21",
             "metrics": {"accuracy": 0.5}, "head": "affinity", "plugins": []}
            """
        try card.write(to: demo.appendingPathComponent("card.json"), atomically: true, encoding: .utf8)
        try "# test model\n".write(to: demo.appendingPathComponent("README.md"), atomically: true, encoding: .utf8)
        return (models, [UInt8](try Data(contentsOf: demo.appendingPathComponent("weights.safetensors"))))
    }

    @Test func directorySearch() throws {
        let dir = try Paths.temporaryDirectory("bundled-search")
        defer { try? FileManager.default.removeItem(at: dir) }
        // Installed layout: <prefix>/bin/x → <prefix>/share/lesionaffinity/models.
        let prefix = dir.appendingPathComponent("usr")
        let installed = prefix.appendingPathComponent("share/lesionaffinity/models")
        try FileManager.default.createDirectory(at: installed.appendingPathComponent("phantom-demo"), withIntermediateDirectories: true)
        try Data([0]).write(to: installed.appendingPathComponent("phantom-demo/weights.safetensors"))
        let bin = prefix.appendingPathComponent("bin/affinityd")
        #expect(BundledModel.directory(environment: [:], executable: bin)?.path == installed.path)
        // Build tree: <root>/.build/release/x → <root>/models.
        let root = dir.appendingPathComponent("repo")
        try FileManager.default.createDirectory(at: root.appendingPathComponent("models/phantom-demo"), withIntermediateDirectories: true)
        try Data([0]).write(to: root.appendingPathComponent("models/phantom-demo/weights.safetensors"))
        let built = root.appendingPathComponent(".build/release/affinity-lab")
        #expect(BundledModel.directory(environment: [:], executable: built)?.path == root.appendingPathComponent("models").path)
        #expect(BundledModel.defaultModel(environment: [:], executable: built)?.lastPathComponent == "phantom-demo")
        // The variable wins; an empty folder means no model.
        let empty = dir.appendingPathComponent("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        #expect(BundledModel.directory(environment: ["AFFINITY_BUNDLED_MODELS": empty.path], executable: built)?.path == empty.path)
        #expect(BundledModel.defaultModel(environment: ["AFFINITY_BUNDLED_MODELS": empty.path], executable: built) == nil)
        // Nothing anywhere: nil.
        #expect(BundledModel.directory(environment: [:], executable: dir.appendingPathComponent("nowhere/bin/x")) == nil)
    }

    @Test func storeImportsTheCardFields() throws {
        let dir = try Paths.temporaryDirectory("bundled-store")
        defer { try? FileManager.default.removeItem(at: dir) }
        let (models, weights) = try Self.bundledDirectory(in: dir)
        let store = try ModelStore(stateDirectory: dir.appendingPathComponent("state"))
        let card = try store.importBundled(models.appendingPathComponent("phantom-demo"))
        #expect(card.name == "phantom demo (test)" && card.affinities == 8 && card.trainedOn == "synthetic phantoms, seed 21")
        #expect(card.sha256 == sha256Hex(weights) && card.id == String(card.sha256.prefix(16)) && card.created > 0)
        #expect(card.metrics["accuracy"] == 0.5)
        // The F16 weights load.
        let (model, _) = try store.loadModel(card.id)
        #expect(model.affinities == 8)
        // A card naming other weights is refused with a named error.
        let bad = dir.appendingPathComponent("bad")
        try FileManager.default.createDirectory(at: bad, withIntermediateDirectories: true)
        try Data(weights).write(to: bad.appendingPathComponent("weights.safetensors"))
        try #"{"name": "x", "sha256": "00"}"#.write(to: bad.appendingPathComponent("card.json"), atomically: true, encoding: .utf8)
        #expect(throws: ServiceError.self) { try store.importBundled(bad) }
        try "{not json".write(to: bad.appendingPathComponent("card.json"), atomically: true, encoding: .utf8)
        do { try store.importBundled(bad); Issue.record("a broken card was accepted") } catch let e as ServiceError {
            #expect(e.kind == .unsupportedFormat && e.message.contains("card"))
        }
    }

    @Test func aNewerBundledModelReplacesOnlyAnEarlierBundledDefault() throws {
        let dir = try Paths.temporaryDirectory("bundled-upgrade")
        defer { try? FileManager.default.removeItem(at: dir) }
        let (v1, w1) = try Self.bundledDirectory(in: dir, seed: 21, folder: "v1")
        let (v2, w2) = try Self.bundledDirectory(in: dir, seed: 22, folder: "v2")
        let demo1 = v1.appendingPathComponent(BundledModel.defaultName), demo2 = v2.appendingPathComponent(BundledModel.defaultName)
        let id1 = String(sha256Hex(w1).prefix(16)), id2 = String(sha256Hex(w2).prefix(16))
        #expect(id1 != id2)
        let stateDir = dir.appendingPathComponent("state")
        let store = try ModelStore(stateDirectory: stateDir)
        // An empty store: installed; again: kept.
        guard case .installed(let c1, nil) = try store.installBundled(demo1) else { Issue.record("v1 not installed"); return }
        #expect(c1.id == id1 && store.defaultModelID == id1)
        #expect(try store.installBundled(demo1) == .kept(id1))
        // The next release's bundled model replaces it; the earlier one stays in the store.
        guard case .installed(let c2, let replaced) = try store.installBundled(demo2) else { Issue.record("v2 not installed"); return }
        #expect(c2.id == id2 && replaced == id1 && store.defaultModelID == id2)
        #expect(store.card(id1) != nil)
        // Reopened, the record holds: v2 is the bundled default, kept.
        #expect(try ModelStore(stateDirectory: stateDir).installBundled(demo2) == .kept(id2))
        // A default the user chose is never replaced, even by a changed bundled model.
        try store.setDefault(id1)
        #expect(try store.installBundled(demo2) == .kept(id1))
        let (userBytes, _) = try Fixtures.smallModel(in: dir, seed: 9)
        let user = try store.importModel(bytes: userBytes, name: "mine")
        try store.setDefault(user.id)
        #expect(try store.installBundled(demo2) == .kept(user.id) && store.defaultModelID == user.id)
        // A store from before the record: a default with the bundled card's name counts as bundled,
        // another name does not.
        let legacyDir = dir.appendingPathComponent("legacy")
        let legacy = try ModelStore(stateDirectory: legacyDir)
        let old = try legacy.importBundled(demo1)
        try legacy.setDefault(old.id)
        #expect(!FileManager.default.fileExists(atPath: legacyDir.appendingPathComponent("bundled-model").path))
        guard case .installed(let c3, let was) = try legacy.installBundled(demo2) else { Issue.record("legacy not upgraded"); return }
        #expect(c3.id == id2 && was == old.id && legacy.defaultModelID == id2)
        let other = try ModelStore(stateDirectory: dir.appendingPathComponent("other"))
        let mine = try other.importModel(bytes: userBytes, name: "mine")
        try other.setDefault(mine.id)
        #expect(try other.installBundled(demo2) == .kept(mine.id))
    }

    @Test func daemonStartsWithTheBundledModel() throws {
        let dir = try Paths.temporaryDirectory("bundled-daemon")
        defer { try? FileManager.default.removeItem(at: dir) }
        let (models, weights) = try Self.bundledDirectory(in: dir)
        let bus = try PrivateBus()
        defer { bus.stop() }
        let daemon = try DaemonProcess(bus: bus, stateDirectory: dir.appendingPathComponent("state"),
                                       environment: ["AFFINITY_BUNDLED_MODELS": models.path])
        let client = try bus.connect()
        defer { client.close() }
        let id = String(sha256Hex(weights).prefix(16))
        #expect(try client.getProperty(destination: D.name, path: D.root, interface: D.manager, name: "DefaultModel") == .objectPath(D.root + "/models/" + id))
        #expect(waitUntil { (try? client.getProperty(destination: D.name, path: D.root, interface: D.manager, name: "State")) == .string("ready") })
        let props = try client.getAllProperties(destination: D.name, path: D.root + "/models/" + id, interface: D.model)
        #expect(props["Name"] == .string("phantom demo (test)") && props["TrainedOn"] == .string("synthetic phantoms, seed 21"))
        // It analyses.
        let reply = try DaemonTests.call(client, "Analyse", [try DaemonTests.memfd(try Fixtures.slicePNG()), .vardict([:])])
        #expect(try reply[0].asVardict()["model"] == .objectPath(D.root + "/models/" + id))
        #expect(daemon.stop() == 0)
        #expect(daemon.stderrText.contains("phantom demo model, trained on synthetic phantoms, for demonstration, not for diagnosis"), "\(daemon.stderrText)")
        // Restarted with the bundled model gone: the store keeps it as the default.
        let empty = dir.appendingPathComponent("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        let again = try DaemonProcess(bus: bus, stateDirectory: dir.appendingPathComponent("state"),
                                      environment: ["AFFINITY_BUNDLED_MODELS": empty.path])
        defer { again.stop() }
        #expect(try client.getProperty(destination: D.name, path: D.root, interface: D.manager, name: "DefaultModel") == .objectPath(D.root + "/models/" + id))
    }

    @Test func noBundledModelOrTurnedOff() throws {
        let dir = try Paths.temporaryDirectory("bundled-none")
        defer { try? FileManager.default.removeItem(at: dir) }
        let bus = try PrivateBus()
        defer { bus.stop() }
        let client = try bus.connect()
        defer { client.close() }
        // An empty bundled folder: no model, degraded, as without the feature.
        let empty = dir.appendingPathComponent("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        let d1 = try DaemonProcess(bus: bus, stateDirectory: dir.appendingPathComponent("state1"),
                                   environment: ["AFFINITY_BUNDLED_MODELS": empty.path])
        #expect(try client.getProperty(destination: D.name, path: D.root, interface: D.manager, name: "DefaultModel") == .objectPath("/"))
        #expect(try client.getProperty(destination: D.name, path: D.root, interface: D.manager, name: "State") == .string("degraded"))
        d1.stop()
        // A bundled model, but bundled_model = no in the configuration: no model either.
        let (models, _) = try Self.bundledDirectory(in: dir)
        let d2 = try DaemonProcess(bus: bus, stateDirectory: dir.appendingPathComponent("state2"), configText: "bundled_model = no\n",
                                   environment: ["AFFINITY_BUNDLED_MODELS": models.path])
        defer { d2.stop() }
        #expect(try client.getProperty(destination: D.name, path: D.root, interface: D.manager, name: "DefaultModel") == .objectPath("/"))
        #expect(try client.getProperty(destination: D.name, path: D.root, interface: D.manager, name: "State") == .string("degraded"))
    }
}
