// Running the built `affinity-lab` binary from the tests, and the small fixtures they share.

import Affinity
import Foundation
import Imaging
import NN
import Tensor

/// The result of one `affinity-lab` run.
struct LabRun {
    var status: Int32
    var stdout: String
    var stderr: String

    /// stdout's lines parsed as JSON objects.
    func jsonLines() throws -> [[String: Any]] {
        try stdout.split(separator: "\n").map { line in
            guard let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                throw LabTestError("not a JSON object: \(line)")
            }
            return o
        }
    }

    func json() throws -> [String: Any] {
        guard let o = try jsonLines().last else { throw LabTestError("no JSON output; stderr: \(stderr)") }
        return o
    }
}

struct LabTestError: Error, CustomStringConvertible {
    var description: String
    init(_ s: String) { description = s }
}

enum Lab {
    /// The package root (this file is Tests/LabTests/LabSupport.swift).
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The `affinity-lab` binary built beside the test bundle (or `$AFFINITY_LAB`).
    static let binary: String = {
        if let p = ProcessInfo.processInfo.environment["AFFINITY_LAB"] { return p }
        var candidates: [URL] = []
        let exe = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var dir = exe.deletingLastPathComponent()
        for _ in 0..<4 {
            candidates.append(dir.appendingPathComponent("affinity-lab"))
            dir = dir.deletingLastPathComponent()
        }
        for c in candidates where FileManager.default.isExecutableFile(atPath: c.path) { return c.path }
        return candidates[0].path
    }()

    /// Runs `affinity-lab args…` and collects its output.
    static func run(_ args: [String], environment extra: [String: String] = [:]) throws -> LabRun {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        env["OPENBLAS_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] ?? "2"
        env.merge(extra) { _, new in new }
        p.environment = env
        // stderr goes to a file, stdout through a pipe read to the end before waiting.
        let errPath = FileManager.default.temporaryDirectory.appendingPathComponent("labtests-stderr-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: errPath) }
        let out = Pipe()
        guard let err = FileHandle(forWritingAtPath: errPath) else { throw LabTestError("cannot create \(errPath)") }
        p.standardOutput = out; p.standardError = err
        try p.run()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        try? err.close()
        let errData = (try? Data(contentsOf: URL(fileURLWithPath: errPath))) ?? Data()
        return LabRun(status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self), stderr: String(decoding: errData, as: UTF8.self))
    }

    /// Removes a test's temporary directory (checkpoints are large).
    static func remove(_ path: String) { try? FileManager.default.removeItem(atPath: path) }

    /// A fresh temporary directory.
    static func temporaryDirectory(_ name: String) throws -> String {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("labtests-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        return d.path
    }

    /// Shared fixtures, made once: a C' = 8 model file, a 512×512 phantom PNG, a tiny phantom set.
    final class Fixtures: @unchecked Sendable {
        let root: String
        let weights: String
        let image512: String
        let data: String

        init() throws {
            root = try Lab.temporaryDirectory("shared")
            Lab.sharedRoot = root
            atexit { if let r = Lab.sharedRoot { Lab.remove(r) } }
            let model = AffinityModel(affinities: 8)
            var rng = SeededGenerator(seed: 11)
            model.initialize(rng: &rng)
            weights = root + "/model8.safetensors"
            try ModelLoader.save(model, to: URL(fileURLWithPath: weights))
            let slice = PhantomGenerator(seed: 4, size: 512).slice(index: 0, class: .covid)
            image512 = root + "/covid.png"
            try PNG.write(slice.pixelImage, to: image512)
            data = root + "/phantoms"
            try PhantomDataset.write(to: data, count: 6, seed: 3, size: 128, slicesPerPatient: 1)
        }
    }

    static let fixtures: Fixtures = { try! Fixtures() }()
    /// Removed when the test process exits.
    nonisolated(unsafe) static var sharedRoot: String?
}

/// Numbers of a JSON array.
func doubles(_ any: Any?) -> [Double] { (any as? [Any])?.compactMap { ($0 as? NSNumber)?.doubleValue } ?? [] }
