import Foundation
import Glibc
import PluginHost
import Testing

/// A tiny decoder plugin in C; `tweak` edits the descriptor before it is returned.
private func decoderSource(id: String, abi: String = "AFFINITY_PLUGIN_ABI_VERSION", entry: String = "affinity_plugin_entry",
                           structSize: String = "sizeof(affinity_plugin)", decodeFunction: String = "decode_") -> String {
    """
    #include <string.h>
    #include "affinity_plugin.h"
    static int32_t probe_(const uint8_t *b, size_t n) { return n >= 4 && memcmp(b, "TEST", 4) == 0 ? 50 : 0; }
    static int32_t info_(const uint8_t *b, size_t n, const char *o, affinity_image_info *i, affinity_error *e) {
        (void)b; (void)n; (void)o;
        if (n < 5) { if (e) strcpy(e->message, "The test image is too short."); return AFFINITY_E_CORRUPT; }
        i->width = 2; i->height = 1; i->channels = 1; i->bits = 8; return AFFINITY_OK;
    }
    static int32_t decode_(const uint8_t *b, size_t n, const char *o, float *p, size_t c, affinity_image_info *i, affinity_error *e) {
        int32_t s = info_(b, n, o, i, e); if (s) return s;
        (void)c; p[0] = 0.25f; p[1] = 0.75f; return AFFINITY_OK;
    }
    static const affinity_image_decoder table = { sizeof(affinity_image_decoder), 0, probe_, info_, \(decodeFunction) };
    static const affinity_plugin plugin = { \(abi), \(structSize), "\(id)", "0.1", "test decoder",
        AFFINITY_KIND_IMAGE_DECODER, 0, &table, 0, 0 };
    __attribute__((visibility("default"))) const affinity_plugin *\(entry)(uint32_t v) { (void)v; return &plugin; }
    """
}

@Suite("Plugin loader", .serialized)
struct LoaderTests {
    @Test func everyPackagePluginLoads() throws {
        let r = sharedRegistry
        #expect(r.failures.isEmpty, "\(r.failures.map(\.reason))")
        let kinds = Dictionary(uniqueKeysWithValues: r.plugins.map { ($0.id, $0.kind) })
        #expect(kinds == ["meanpool": .head, "attention": .head, "jpeg": .imageDecoder, "dicom": .imageDecoder,
                          "covidx-ct": .datasetReader, "cncb-seg": .datasetReader, "ictcf": .datasetReader])
        for p in r.plugins {
            let version = p.id == "dicom" ? "2.0.0" : "1.0.0"   // dicom 2: the GDCM decoder
            #expect(p.version == version)
            #expect(!p.summary.isEmpty)
            #expect(p.record == "\(p.id) \(version)")
        }
        #expect(r.listing.count == 7 && r.listing.allSatisfy { $0["state"] == "loaded" })
        #expect(throws: PluginError.notFound(id: "jpeg", kind: "head")) { try r.head(id: "jpeg") }
    }

    @Test func errorPaths() throws {
        let dir = try temporaryDirectory("loader")
        defer { removeTree(dir) }
        let good = try compilePlugin(source: decoderSource(id: "test-decoder"), name: "good", in: dir)
        let wrongABI = try compilePlugin(source: decoderSource(id: "wrong-abi", abi: "2u"), name: "wrongabi", in: dir)
        let noEntry = try compilePlugin(source: decoderSource(id: "no-entry", entry: "some_other_symbol"), name: "noentry", in: dir)
        let duplicate = try compilePlugin(source: decoderSource(id: "test-decoder"), name: "duplicate", in: dir)
        let small = try compilePlugin(source: decoderSource(id: "small", structSize: "8"), name: "small", in: dir)
        let noDecode = try compilePlugin(source: decoderSource(id: "no-decode", decodeFunction: "0"), name: "nodecode", in: dir)
        let badID = try compilePlugin(source: decoderSource(id: "Bad Id!"), name: "badid", in: dir)
        let notLibrary = dir + "/text.so"
        try "not a library".write(toFile: notLibrary, atomically: true, encoding: .utf8)

        let r = PluginRegistry(mode: .development)
        let loaded = try r.load(path: good)
        #expect(loaded.id == "test-decoder" && loaded.kind == .imageDecoder)
        #expect(throws: PluginError.abiMismatch(path: wrongABI, found: 2, expected: 1)) { try r.load(path: wrongABI) }
        #expect(throws: PluginError.missingEntry(path: noEntry)) { try r.load(path: noEntry) }
        #expect(throws: PluginError.duplicateId(id: "test-decoder", path: duplicate, loadedFrom: good)) { try r.load(path: duplicate) }
        #expect(throws: PluginError.structTooSmall(path: small, structure: "plugin descriptor", size: 8, minimum: 64)) { try r.load(path: small) }
        #expect(throws: PluginError.badDescriptor(path: noDecode, reason: "its decoder table lacks a required function")) { try r.load(path: noDecode) }
        do {
            try r.load(path: badID)
            Issue.record("a plugin with a bad id loaded")
        } catch let e as PluginError {
            guard case .badDescriptor = e else { Issue.record("unexpected \(e)"); return }
        }
        do {
            try r.load(path: notLibrary)
            Issue.record("a text file loaded as a plugin")
        } catch let e as PluginError {
            guard case .openFailed(let path, _) = e else { Issue.record("unexpected \(e)"); return }
            #expect(path == notLibrary)
            #expect(e.description.hasPrefix("Could not load the plugin \(notLibrary): ") && e.description.hasSuffix("."))
        }
        // Every failure is listed with its sentence; the good plugin still works.
        #expect(r.plugins.map(\.id) == ["test-decoder"])
        #expect(r.failures.count == 7)
        #expect(r.failures.allSatisfy { $0.reason.hasSuffix(".") })
        #expect(r.listing.filter { $0["state"] == "failed" }.count == 7)
        let decoded = try r.decodeImage(Array("TEST!".utf8))
        #expect(decoded.image.pixels == [0.25, 0.75] && decoded.decoder == "test-decoder 0.1")
        // A failing decoder call is an error with the plugin's sentence, not a crash.
        do {
            _ = try r.decodeImage(Array("TEST".utf8))
            Issue.record("a failing decoder returned an image")
        } catch let e as PluginError {
            #expect(e == .callFailed(plugin: "test-decoder 0.1", operation: "info", code: -4, message: "The test image is too short."))
            #expect(e.description == "The plugin test-decoder 0.1 failed in info (corrupt data): The test image is too short.")
        }
    }

    @Test func directoryLoadSkipsBrokenFiles() throws {
        let dir = try temporaryDirectory("loaddir")
        defer { removeTree(dir) }
        _ = try compilePlugin(source: decoderSource(id: "a-decoder"), name: "a", in: dir)
        _ = try compilePlugin(source: decoderSource(id: "b-decoder", abi: "7u"), name: "b", in: dir)
        _ = try compilePlugin(source: decoderSource(id: "c-decoder"), name: "c", in: dir)
        let r = PluginRegistry(mode: .development)
        let loaded = try r.loadDirectory(dir)
        #expect(loaded.map(\.id) == ["a-decoder", "c-decoder"])
        #expect(r.failures.map(\.path) == [dir + "/b.so"])
        #expect(r.failures.first?.reason.contains("plugin ABI version 7") == true)
    }

    @Test func systemModeRefusesUntrustedLocations() throws {
        let dir = try temporaryDirectory("system")
        defer { removeTree(dir) }
        let so = try compilePlugin(source: decoderSource(id: "sys-decoder"), name: "sys", in: dir)
        let r = PluginRegistry(mode: .system)
        // /tmp is writable by everyone, so nothing under it is trusted.
        #expect(throws: PluginError.self) { try r.loadDirectory(dir) }
        #expect(throws: PluginError.self) { try r.load(path: so) }
        #expect(r.plugins.isEmpty)
        if geteuid() == 0 {
            // A folder in a root-owned, non-writable chain: trusted only while root owns everything.
            let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .deletingLastPathComponent().path + "/.build-plugins"
            guard chainIsTrusted(root) else { return }
            let trusted = root + "/system-mode-test-\(getpid())"
            try FileManager.default.createDirectory(atPath: trusted, withIntermediateDirectories: false)
            defer { removeTree(trusted) }
            chmod(trusted, 0o755)
            let copy = trusted + "/sys.so"
            try FileManager.default.copyItem(atPath: so, toPath: copy)
            chmod(copy, 0o755)
            let ok = PluginRegistry(mode: .system)
            #expect(try ok.loadDirectory(trusted).map(\.id) == ["sys-decoder"])
            // Owned by someone else: refused.
            chown(copy, 65534, 65534)
            let refused = PluginRegistry(mode: .system)
            #expect(try refused.loadDirectory(trusted).isEmpty)
            #expect(refused.failures.first?.reason.contains("is owned by uid 65534, not root") == true)
            // Group-writable folder: refused before anything is opened.
            chown(copy, 0, 0)
            chmod(trusted, 0o775)
            #expect(throws: PluginError.self) { try PluginRegistry(mode: .system).loadDirectory(trusted) }
        }
    }

    private func chainIsTrusted(_ path: String) -> Bool {
        var current = path
        while true {
            var info = stat()
            guard stat(current, &info) == 0, info.st_uid == 0, info.st_mode & (S_IWGRP | S_IWOTH) == 0 else { return false }
            if current == "/" { return true }
            current = (current as NSString).deletingLastPathComponent
            if current.isEmpty { current = "/" }
        }
    }
}
