// affinityd with plugins: ListPlugins over D-Bus (loaded and failed), Analyse of a JPEG through the
// jpeg decoder plugin.
import Affinity
import Bus
import Foundation
import TestSupport
import Glibc
import Imaging
import NN
import PluginHost
import Service
import Tensor
import Testing

enum PluginFixtures {
    /// The folder with the package's plugin libraries: beside affinityd (SwiftPM puts dynamic
    /// library products in the same folder), else `$AFFINITY_PLUGIN_DIR`.
    static var buildFolder: String? {
        var candidates: [String] = []
        if let exe = Paths.affinityd { candidates.append(URL(fileURLWithPath: exe).deletingLastPathComponent().path) }
        if let env = ProcessInfo.processInfo.environment["AFFINITY_PLUGIN_DIR"] { candidates.append(env) }
        return candidates.first { FileManager.default.fileExists(atPath: $0 + "/libaffinity-meanpool.so") }
    }

    /// A decoder plugin built for ABI version 99, compiled with `cc -shared`: the loader refuses it.
    static func compileWrongABIPlugin(in directory: URL) throws -> String {
        let source = """
        #include "affinity_plugin.h"
        static int32_t probe_(const uint8_t *b, size_t n) { (void)b; (void)n; return 0; }
        static int32_t info_(const uint8_t *b, size_t n, const char *o, affinity_image_info *i, affinity_error *e) {
            (void)b; (void)n; (void)o; (void)i; (void)e; return AFFINITY_E_FAILED;
        }
        static int32_t decode_(const uint8_t *b, size_t n, const char *o, float *p, size_t c, affinity_image_info *i, affinity_error *e) {
            (void)b; (void)n; (void)o; (void)p; (void)c; (void)i; (void)e; return AFFINITY_E_FAILED;
        }
        static const affinity_image_decoder table = { sizeof(affinity_image_decoder), 0, probe_, info_, decode_ };
        static const affinity_plugin plugin = { 99, sizeof(affinity_plugin), "future", "0.1", "built for another ABI",
            AFFINITY_KIND_IMAGE_DECODER, 0, &table, 0, 0 };
        __attribute__((visibility("default"))) const affinity_plugin *affinity_plugin_entry(uint32_t v) { (void)v; return &plugin; }
        """
        let c = directory.appendingPathComponent("future.c").path, so = directory.appendingPathComponent("libfuture.so").path
        try source.write(toFile: c, atomically: true, encoding: .utf8)
        let r = try runTool("env", ["cc", "-shared", "-fPIC", "-O0", "-I", Paths.repository.path + "/plugins/include", "-o", so, c])
        guard r.status == 0 else { throw BusError.failed("cc failed: \(r.stderr)") }
        return so
    }

    /// A gray JPEG through the jpeg plugin's own encoder (an extra symbol of that library).
    static func jpeg(_ gray: [UInt8], width: Int, height: Int, folder: String) throws -> [UInt8] {
        typealias Encode = @convention(c) (UnsafePointer<UInt8>?, UInt32, UInt32, UInt32, Int32,
                                           UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>?, UnsafeMutablePointer<Int>?, UnsafeMutableRawPointer?) -> Int32
        typealias Free = @convention(c) (UnsafeMutablePointer<UInt8>?) -> Void
        guard let handle = dlopen(folder + "/libaffinity-jpeg.so", RTLD_NOW | RTLD_LOCAL),
              let e = dlsym(handle, "affinity_jpeg_encode"), let f = dlsym(handle, "affinity_jpeg_free") else {
            throw BusError.failed("the jpeg plugin's encoder is not available")
        }
        let encode = unsafeBitCast(e, to: Encode.self), free = unsafeBitCast(f, to: Free.self)
        var out: UnsafeMutablePointer<UInt8>?
        var length = 0
        let status = gray.withUnsafeBufferPointer { encode($0.baseAddress, UInt32(width), UInt32(height), 1, 92, &out, &length, nil) }
        guard status == 0, let out else { throw BusError.failed("JPEG encoding failed (\(status))") }
        defer { free(out) }
        return Array(UnsafeBufferPointer(start: out, count: length))
    }
}

@Suite("affinityd with plugins", .serialized)
struct PluginDaemonTests {
    typealias D = DaemonProcess

    @Test func listPluginsAndAnalyseAJPEG() throws {
        let folder = try #require(PluginFixtures.buildFolder, "the plugin libraries are not built (swift build first)")
        let dir = try Paths.temporaryDirectory("plugins")
        defer { try? FileManager.default.removeItem(at: dir) }
        let extra = dir.appendingPathComponent("extra")
        try FileManager.default.createDirectory(at: extra, withIntermediateDirectories: true)
        let broken = try PluginFixtures.compileWrongABIPlugin(in: extra)
        let bus = try PrivateBus()
        defer { bus.stop() }
        let daemon = try DaemonProcess(bus: bus, stateDirectory: dir.appendingPathComponent("state"),
                                       arguments: ["--plugin-dir", folder, "--plugin-dir", extra.path])
        defer { daemon.stop() }
        let client = try bus.connect()
        defer { client.close() }
        func call(_ method: String, _ args: [DBusValue]) throws -> [DBusValue] { try DaemonTests.call(client, method, args) }

        // ListPlugins: every plugin of the package, with its version, kind, description and file;
        // the broken library with the reason.
        let list = try call("ListPlugins", [.vardict([:])])[0].asVardicts()
        var loaded: [String: [String: DBusValue]] = [:]
        for p in list where p["state"] == .string("loaded") { loaded[try p["id"]!.asString()] = p }
        let expectedKinds = ["jpeg": "image-decoder", "dicom": "image-decoder", "meanpool": "head", "attention": "head",
                             "covidx-ct": "dataset-reader", "cncb-seg": "dataset-reader", "ictcf": "dataset-reader"]
        for (id, kind) in expectedKinds {
            let p = try #require(loaded[id], "\(id) missing from \(list)")
            #expect(p["kind"] == .string(kind))
            #expect(p["version"] == .string(id == "dicom" ? "2.0.0" : "1.0.0"))
            #expect(!(try p["description"]?.asString() ?? "").isEmpty)
            #expect(try p["path"]?.asString().hasPrefix(folder + "/libaffinity-") == true)
        }
        let failed = list.filter { $0["state"] == .string("failed") }
        #expect(failed.count == 1, "\(failed)")
        #expect(failed.first?["path"] == .string(extra.path + "/libfuture.so"), "\(failed) vs \(broken)")
        let reason = try failed.first?["error"]?.asString() ?? ""
        #expect(reason.contains("ABI version 99") && reason.contains("version 1"), "\(reason)")
        // The same through busctl (not our client).
        let viaBusctl = try busctl(bus, ["call", D.name, D.root, D.manager, "ListPlugins", "a{sv}", "0"])
        #expect(viaBusctl.status == 0 && viaBusctl.stdout.contains("\"meanpool\"") && viaBusctl.stdout.contains("ABI version 99"),
                "\(viaBusctl)")

        // Analyse a JPEG slice: decoded by the jpeg plugin, recorded in the result, the same
        // prediction as predictImage on the plugin's decoding.
        let (modelBytes, modelURL) = try Fixtures.smallModel(in: dir)
        let modelPath = try call("ImportModel", [try DaemonTests.memfd(modelBytes), .vardict([:])])[0].asObjectPath()
        _ = try call("SetDefaultModel", [.objectPath(modelPath), .vardict([:])])
        let slice = PhantomGenerator(seed: 11, size: 512).slice(index: 4, class: .covid).pixelImage
        let gray = slice.grayImage().pixels.map { UInt8(max(0, min(255, ($0 * 255).rounded()))) }
        let jpeg = try PluginFixtures.jpeg(gray, width: slice.width, height: slice.height, folder: folder)
        let r = try call("Analyse", [try DaemonTests.memfd(jpeg), .vardict([:])])[0].asVardict()
        #expect(try r["plugins"]?.asStrings() == ["jpeg 1.0.0"], "\(String(describing: r["plugins"]))")
        #expect(r["image_width"] == .uint32(512) && r["image_height"] == .uint32(512))
        let registry = PluginRegistry(mode: .development)
        try registry.load(path: folder + "/libaffinity-jpeg.so")
        let decoded = try registry.decodeImage(jpeg)
        let model = try ModelLoader.load(contentsOf: modelURL)
        var rng = SeededGenerator(seed: 1)
        let expected = try model.predictImage(try Tensor(shape: [1, 3, 512, 512], values: Preprocessing.modelInput(decoded.image)), rng: &rng)
        let scores = try r["scores"]?.asDoubles() ?? []
        #expect(try r["class_index"]?.asUInt32() == UInt32(expected.classIndex))
        #expect(scores.count == 3)
        for (a, b) in zip(scores, expected.logits.map(Double.init)) {
            #expect(abs(a - b) <= 1e-4 * max(1, abs(b)), "daemon \(scores) vs predictImage \(expected.logits)")
        }
        // A PNG records no plugin; a damaged JPEG is InvalidImage with the decoder's reason.
        let png = try call("Analyse", [try DaemonTests.memfd(try Fixtures.slicePNG()), .vardict(["detections": .boolean(false)])])[0].asVardict()
        #expect(try png["plugins"]?.asStrings() == [])
        let damaged = DaemonTests.error { try call("Analyse", [try DaemonTests.memfd(Array(jpeg.prefix(40))), .vardict([:])]) }
        #expect(damaged?.name == "org.lesionaffinity.Affinity1.Error.InvalidImage" && damaged?.message.contains("jpeg") == true,
                "\(String(describing: damaged))")
        #expect(daemon.process.isRunning)
    }

    /// A model whose head is the meanpool plugin, seeded, saved as a model file: (bytes, path).
    static func meanpoolModel(registry: PluginRegistry, in dir: URL) throws -> ([UInt8], URL) {
        let head = try #require(try registry.makeHead(id: "meanpool", config: "{\"hidden\": 16}", seed: 5))
        let m = AffinityModel(head: head)
        var rng = SeededGenerator(seed: 5)
        m.initialize(rng: &rng)
        let url = dir.appendingPathComponent("meanpool.safetensors")
        try ModelLoader.save(m, to: url)
        return ([UInt8](try Data(contentsOf: url)), url)
    }

    @Test func modelStoreWithAndWithoutTheHeadPlugin() throws {
        let folder = try #require(PluginFixtures.buildFolder, "the plugin libraries are not built (swift build first)")
        let dir = try Paths.temporaryDirectory("store-heads")
        defer { try? FileManager.default.removeItem(at: dir) }
        let registry = PluginRegistry(mode: .development)
        try registry.load(path: folder + "/libaffinity-meanpool.so")
        let (bytes, _) = try Self.meanpoolModel(registry: registry, in: dir)

        // Without a head factory: a named refusal that names the plugin; nothing is stored.
        let bare = try ModelStore(stateDirectory: dir.appendingPathComponent("bare"))
        do {
            _ = try bare.importModel(bytes: bytes, name: "mp")
            Issue.record("a plugin-head model imported without its plugin")
        } catch let e as ServiceError {
            #expect(e.kind == .unsupportedFormat && e.message.contains("meanpool"), "\(e)")
        }
        #expect(bare.models.isEmpty)
        // C' does not apply to a plugin head.
        let store = try ModelStore(stateDirectory: dir.appendingPathComponent("state"), heads: registry)
        #expect(throws: ServiceError.self) { try store.importModel(bytes: bytes, name: "mp", affinities: 8) }
        #expect(store.models.isEmpty)

        // With the registry: the card names the head and records the plugin; the model loads and predicts.
        let card = try store.importModel(bytes: bytes, name: "mp")
        #expect(card.head == "meanpool" && card.affinities == 0)
        #expect(card.plugins == [ModelCard.Plugin(id: "meanpool", version: "1.0.0")])
        let (model, loadedCard) = try store.loadModel(card.id)
        #expect(loadedCard == card && model.head.headID == "meanpool")
        var rng = SeededGenerator(seed: 1)
        let slice = PhantomGenerator(seed: 11, size: 512).slice(index: 4, class: .covid).pixelImage
        let p = try model.predictImage(try Tensor(shape: [1, 3, 512, 512], values: Preprocessing.modelInput(slice)), withDetections: false, rng: &rng)
        #expect(p.logits.count == 3 && p.logits.allSatisfy(\.isFinite))
        // A card that names another head than the weights is refused.
        #expect(throws: ServiceError.self) { try store.importModel(bytes: bytes, name: "x", head: "attention") }

        // The same store reopened without the plugin lists the model but cannot load it (ModelNotReady).
        let reopened = try ModelStore(stateDirectory: dir.appendingPathComponent("state"))
        #expect(reopened.card(card.id) == card)
        do {
            _ = try reopened.loadModel(card.id)
            Issue.record("a plugin-head model loaded without its plugin")
        } catch let e as ServiceError {
            #expect(e.kind == .modelNotReady && e.message.contains("meanpool"), "\(e)")
        }
    }

    /// Train over D-Bus with a plugin head, then analyse with the new model: the model records the
    /// plugin (Head, Plugins), so does every result; the head's errors are the caller's.
    @Test func trainAndAnalyseWithAPluginHead() throws {
        let folder = try #require(PluginFixtures.buildFolder, "the plugin libraries are not built (swift build first)")
        let dir = try Paths.temporaryDirectory("plugin-head-train")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = dir.appendingPathComponent("set")
        try PhantomDataset.write(to: data.path, count: 6, seed: 3, size: 128)
        let session = try DaemonSession(stateDirectory: dir.appendingPathComponent("state"), arguments: ["--plugin-dir", folder])
        defer { session.stop() }
        let call = session.call, client = session.client
        let E = "org.lesionaffinity.Affinity1.Error."
        let base: [String: DBusValue] = ["dataset": .string(data.path), "epochs": .uint32(1), "iterations_per_epoch": .uint32(2),
                                         "image_size": .uint32(128), "seed": .uint64(3), "learning_rate": .double(1e-4)]

        // Refused before a job exists: an unknown head, a config the plugin refuses, a bad rate.
        let unknown = DaemonTests.error { try call("Train", [.vardict(base.merging(["head": .string("nosuch")]) { a, _ in a })]) }
        #expect(unknown?.name == E + "InvalidArgument" && unknown?.message.contains("nosuch") == true, "\(String(describing: unknown))")
        let badConfig = DaemonTests.error {
            try call("Train", [.vardict(base.merging(["head": .string("meanpool"), "head_config": .string("{\"hidden\": \"many\"}")]) { a, _ in a })])
        }
        #expect(badConfig?.name == E + "PluginFailed" && badConfig?.message.contains("meanpool") == true, "\(String(describing: badConfig))")
        let badRate = DaemonTests.error {
            try call("Train", [.vardict(base.merging(["head": .string("meanpool"), "head_learning_rate": .double(-1)]) { a, _ in a })])
        }
        #expect(badRate?.name == E + "InvalidArgument", "\(String(describing: badRate))")
        let runs = dir.appendingPathComponent("state/runs").path
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: runs)) ?? []).isEmpty, "a refused Train made a job")

        // Train a meanpool-head model.
        let options = base.merging(["head": .string("meanpool"), "head_config": .string("{\"hidden\": 32}"),
                                    "head_learning_rate": .double(1e-3), "name": .string("pooled")]) { a, _ in a }
        let (result, props) = try session.runJob("Train", [.vardict(options)])
        let modelPath = try #require(try result["model"]?.asObjectPath())
        #expect(props["Head"] == .string("meanpool") && props["Name"] == .string("pooled"), "\(props)")
        #expect(props["Plugins"] == .strings(["meanpool 1.0.0"]), "\(props)")
        #expect(props["Affinities"] == .uint32(0))
        let id = String(modelPath.split(separator: "/").last!)
        let file = try SafeTensorsFile(contentsOf: dir.appendingPathComponent("state/models/\(id)/weights.safetensors"))
        #expect(file.headID == "meanpool" && file.metadata["head_config"]?.contains("32") == true, "\(file.metadata)")

        // Analyse with it: the result records the head plugin; the logits are the stored model's.
        let png = try Fixtures.slicePNG()
        let r = try call("Analyse", [try DaemonTests.memfd(png), .vardict(["model": .objectPath(modelPath), "detections": .boolean(false)])])[0].asVardict()
        #expect(try r["plugins"]?.asStrings() == ["meanpool 1.0.0"], "\(String(describing: r["plugins"]))")
        #expect(r["model"] == .objectPath(modelPath))
        let registry = PluginRegistry(mode: .development)
        try registry.load(path: folder + "/libaffinity-meanpool.so")
        let model = try ModelLoader.load(file, heads: registry)
        var rng = SeededGenerator(seed: 1)
        let image = try PNG.decode(png)
        let expected = try model.predictImage(try Tensor(shape: [1, 3, 512, 512], values: Preprocessing.modelInput(image)), withDetections: false, rng: &rng)
        let scores = try r["scores"]?.asDoubles() ?? []
        #expect(scores.count == 3)
        for (a, b) in zip(scores, expected.logits.map(Double.init)) {
            #expect(abs(a - b) <= 1e-4 * max(1, abs(b)), "daemon \(scores) vs predictImage \(expected.logits)")
        }
        // A plugin head has no affinity matrix to draw; Finetune keeps the base model's head.
        let out = try FileDescriptor.sealedMemfd(name: "out", contents: [])
        let matrix = DaemonTests.error {
            try client.call(destination: D.name, path: modelPath, interface: D.model, method: "ExportAffinityMatrix",
                            [try DaemonTests.memfd(png), .unixFD(out), .vardict([:])], timeout: .seconds(120))
        }
        #expect(matrix?.name == E + "UnsupportedFormat" && matrix?.message.contains("meanpool") == true, "\(String(describing: matrix))")
        let finetune = DaemonTests.error {
            try call("Finetune", [.objectPath(modelPath), .vardict(base.merging(["head": .string("attention")]) { a, _ in a })])
        }
        #expect(finetune?.name == E + "InvalidArgument", "\(String(describing: finetune))")
        #expect(session.daemon.process.isRunning)
    }
}
