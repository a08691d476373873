import Foundation
import Glibc
import PluginHost
import Testing

/// The plugin libraries of this package, by id → file name.
let pluginFiles: [String: String] = [
    "meanpool": "libaffinity-meanpool.so", "jpeg": "libaffinity-jpeg.so", "dicom": "libaffinity-dicom.so",
    "covidx-ct": "libaffinity-covidx-ct.so", "cncb-seg": "libaffinity-cncb-seg.so", "ictcf": "libaffinity-ictcf.so",
    "attention": "libaffinity-attention.so",
]

/// The folder holding the built plugin libraries: beside the test bundle (SwiftPM puts dynamic
/// library products in the same folder), else the first `.build*/release` or `.build*/debug` folder
/// of the package that has them, else `$AFFINITY_PLUGIN_DIR`.
let pluginDirectory: String = {
    let marker = "libaffinity-meanpool.so"
    var candidates: [String] = []
    if let env = ProcessInfo.processInfo.environment["AFFINITY_PLUGIN_DIR"] { candidates.append(env) }
    let bundle = Bundle.main.bundleURL
    candidates += [bundle.path, bundle.deletingLastPathComponent().path,
                   URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path]
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    if let names = try? FileManager.default.contentsOfDirectory(atPath: root.path) {
        for n in names.sorted() where n.hasPrefix(".build") {
            candidates += [root.path + "/\(n)/release", root.path + "/\(n)/debug"]
        }
    }
    return candidates.first { FileManager.default.fileExists(atPath: $0 + "/" + marker) } ?? "(plugin libraries not found; run swift build first)"
}()

func pluginPath(_ id: String) -> String { pluginDirectory + "/" + pluginFiles[id]! }

/// One registry with every plugin of the package, loaded once for the whole test run.
let sharedRegistry: PluginRegistry = {
    let r = PluginRegistry(mode: .development)
    for id in pluginFiles.keys.sorted() { _ = try? r.load(path: pluginPath(id)) }
    return r
}()

/// A fresh empty folder under /tmp.
func temporaryDirectory(_ tag: String) throws -> String {
    var template = Array("/tmp/affinity-plugin-\(tag)-XXXXXX".utf8CString)
    guard let p = mkdtemp(&template) else { throw POSIXError(.EIO) }
    return String(cString: p)
}

func removeTree(_ path: String) { try? FileManager.default.removeItem(atPath: path) }

func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

func readFile(_ path: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: path))) }

/// Compiles a C file into a shared library with the system compiler (`cc -shared -fPIC`), with the
/// ABI header on the include path.
func compilePlugin(source: String, name: String, in directory: String) throws -> String {
    let c = directory + "/\(name).c", so = directory + "/\(name).so"
    try source.write(toFile: c, atomically: true, encoding: .utf8)
    let include = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path + "/plugins/include"
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["cc", "-shared", "-fPIC", "-O0", "-I", include, "-o", so, c]
    try p.run()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else { throw CompileError(message: "cc failed for \(name) (status \(p.terminationStatus))") }
    return so
}

struct CompileError: Error { let message: String }

/// The jpeg plugin's encoder (an extra symbol of that library, not part of the ABI).
func encodeJPEG(_ samples: [UInt8], width: Int, height: Int, channels: Int = 1, quality: Int32 = 95) throws -> [UInt8] {
    typealias Encode = @convention(c) (UnsafePointer<UInt8>?, UInt32, UInt32, UInt32, Int32,
                                       UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>?, UnsafeMutablePointer<Int>?, UnsafeMutableRawPointer?) -> Int32
    typealias Free = @convention(c) (UnsafeMutablePointer<UInt8>?) -> Void
    _ = sharedRegistry
    guard let handle = dlopen(pluginPath("jpeg"), RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD),
          let e = dlsym(handle, "affinity_jpeg_encode"), let f = dlsym(handle, "affinity_jpeg_free") else {
        throw CompileError(message: "the jpeg plugin's encoder is not available")
    }
    let encode = unsafeBitCast(e, to: Encode.self), free = unsafeBitCast(f, to: Free.self)
    var out: UnsafeMutablePointer<UInt8>?
    var length = 0
    let status = samples.withUnsafeBufferPointer {
        encode($0.baseAddress, UInt32(width), UInt32(height), UInt32(channels), quality, &out, &length, nil)
    }
    guard status == 0, let out else { throw CompileError(message: "JPEG encoding failed (\(status))") }
    defer { free(out) }
    return Array(UnsafeBufferPointer(start: out, count: length))
}
