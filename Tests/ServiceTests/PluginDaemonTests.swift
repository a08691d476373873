// affinityd with plugins: ListPlugins over D-Bus (loaded and failed), Analyse of a JPEG through the
// jpeg decoder plugin.
import Affinity
import Bus
import Foundation
import TestSupport
import Glibc
import Imaging
import PluginHost
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
        func call(_ method: String, _ args: [DBusValue]) throws -> [DBusValue] {
            try client.call(destination: D.name, path: D.root, interface: D.manager, method: method, args, timeout: .seconds(120))
        }

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
            #expect(p["version"] == .string("1.0.0"))
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
}
