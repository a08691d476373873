import Foundation
import NN
import Tensor

/// Paths of the repository and of the shared folder beside it (CI clones the repository with a
/// copy of `shared/` next to it).
public enum TestPaths {
    /// The package root (the folder holding Package.swift).
    public static let root: URL = {
        var u = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { u.deleteLastPathComponent() }
        return u
    }()

    /// `Tests/Fixtures/<name>`.
    public static func fixture(_ name: String) -> URL { root.appendingPathComponent("Tests/Fixtures").appendingPathComponent(name) }

    /// `<repo>/../shared`, the project's shared folder (spec and reference fixtures).
    public static let shared: URL = root.deletingLastPathComponent().appendingPathComponent("shared")

    /// `shared/fixtures/reference/<name>`.
    public static func reference(_ name: String) -> URL { shared.appendingPathComponent("fixtures/reference").appendingPathComponent(name) }
}

/// A deterministic tensor of N(0, scale²) values.
public func randomTensor(_ shape: [Int], seed: UInt64, scale: Float = 1) -> Tensor {
    var rng = SeededGenerator(seed: seed)
    let t = Tensor(shape: shape)
    Init.normal(t, std: scale, rng: &rng)
    return t
}

/// Comparison of a computed tensor with an expected one.
public struct Closeness: CustomStringConvertible {
    public var maxAbsError: Float
    public var maxExpectedMagnitude: Float
    public var worstIndex: Int
    /// maxAbsError / max(maxExpectedMagnitude, tiny).
    public var relativeToScale: Float { maxAbsError / max(maxExpectedMagnitude, 1e-12) }
    public var description: String { "max |Δ| = \(maxAbsError) at \(worstIndex) (scale \(maxExpectedMagnitude), relative \(relativeToScale))" }
}

/// Element-wise comparison; shapes must match (a mismatch reports an infinite error).
public func compare(_ actual: Tensor, _ expected: Tensor) -> Closeness {
    guard actual.shape == expected.shape else { return Closeness(maxAbsError: .infinity, maxExpectedMagnitude: 0, worstIndex: -1) }
    var m: Float = 0, idx = -1
    for i in 0..<actual.count {
        let d = abs(actual.data[i] - expected.data[i])
        if d > m || d.isNaN { m = d.isNaN ? .infinity : d; idx = i }
    }
    return Closeness(maxAbsError: m, maxExpectedMagnitude: expected.maxAbs, worstIndex: idx)
}

/// The result of a finite-difference gradient check.
public struct GradCheckReport: CustomStringConvertible {
    public var checked = 0
    public var skipped = 0
    /// max over checked coordinates of |numeric − analytic| / max(|numeric|, |analytic|, floor),
    /// where floor is a tenth of the RMS analytic gradient of that input.
    public var maxRelativeError: Double = 0
    public var worst = ""
    public var description: String { "checked \(checked), skipped \(skipped), max relative error \(maxRelativeError) \(worst)" }
}

/// Finite-difference gradient checks (ggml's test-backend-ops style): loss = Σ out ⊙ R for a fixed
/// random R, accumulated in Double, central differences on a sample of coordinates of each input.
public enum GradCheck {
    /// - Parameters:
    ///   - inputs: the tensors to perturb (inputs and parameters); the closures read them.
    ///   - forward: recomputes the output from the current input values.
    ///   - backward: given dOut = R, returns the analytic gradient of each input, in order.
    ///   - step: the finite-difference step (0.1 for ops linear in the argument, ~1e-2 otherwise).
    ///   - samples: coordinates checked per input (all if the input is smaller).
    ///   - kinkTolerance: if set, a coordinate whose one-sided differences disagree by more than
    ///     this fraction is treated as lying within the step of a kink and skipped.
    public static func run(inputs: [Tensor], forward: () throws -> Tensor, backward: (Tensor) throws -> [Tensor],
                           step: Float, samples: Int = 24, seed: UInt64 = 99, kinkTolerance: Double? = nil) throws -> GradCheckReport {
        let out0 = try forward()
        let r = randomTensor(out0.shape, seed: seed)
        func loss() throws -> Double {
            let o = try forward()
            var s = 0.0
            for i in 0..<o.count { s += Double(o.data[i]) * Double(r.data[i]) }
            return s
        }
        let analytic = try backward(r)
        var report = GradCheckReport()
        var rng = SeededGenerator(seed: seed &+ 1)
        for (k, x) in inputs.enumerated() {
            let g = analytic[k]
            guard g.shape == x.shape else {
                report.maxRelativeError = .infinity
                report.worst = "gradient \(k) has shape \(g.shape), input \(x.shape)"
                return report
            }
            var rms = 0.0
            for i in 0..<g.count { rms += Double(g.data[i]) * Double(g.data[i]) }
            rms = (rms / Double(max(g.count, 1))).squareRoot()
            let floor = max(0.1 * rms, 1e-4)
            let idx = x.count <= samples ? Array(0..<x.count) : (0..<samples).map { _ in Int(rng.next() % UInt64(x.count)) }
            let l0 = kinkTolerance == nil ? 0 : try loss()
            for i in idx {
                let v = x.data[i]
                x.data[i] = v + step; let lp = try loss()
                x.data[i] = v - step; let lm = try loss()
                x.data[i] = v
                if let tol = kinkTolerance {
                    let a = (lp - l0) / Double(step), b = (l0 - lm) / Double(step)
                    if abs(a - b) > tol * max(abs(a), abs(b), floor) { report.skipped += 1; continue }
                }
                let num = (lp - lm) / (2 * Double(step))
                let ana = Double(g.data[i])
                let err = abs(num - ana) / max(abs(num), abs(ana), floor)
                report.checked += 1
                if err > report.maxRelativeError {
                    report.maxRelativeError = err
                    report.worst = "(input \(k), index \(i): numeric \(num), analytic \(ana))"
                }
            }
        }
        return report
    }
}

/// The kernel goldens written by `tools/make_kernel_fixtures.py` (PyTorch 2.13, CPU, float32).
public final class KernelFixtures: @unchecked Sendable {
    public let file: SafeTensorsFile
    public let cases: [[String: Any]]

    public static let shared: KernelFixtures = {
        do { return try KernelFixtures(url: TestPaths.fixture("kernels.safetensors")) } catch {
            fatalError("Tests/Fixtures/kernels.safetensors is unreadable: \(error)")
        }
    }()

    init(url: URL) throws {
        file = try SafeTensorsFile(contentsOf: url)
        let json = file.metadata["cases"] ?? "[]"
        cases = (try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]]) ?? []
    }

    /// The cases of one op, by the `op` field.
    public func cases(_ op: String) -> [[String: Any]] { cases.filter { ($0["op"] as? String) == op } }

    public func tensor(_ name: String) throws -> Tensor { try file.tensor(name) }
    public func has(_ name: String) -> Bool { file.entries[name] != nil }
}

/// The reference weights of the shared fixtures (`make_weights.py --keys keys_K128.json --seed 7`),
/// generated once per machine with python3 + numpy into the temporary directory.
public enum ReferenceWeights {
    public enum Failure: Error, CustomStringConvertible {
        case generatorFailed(String)
        public var description: String { switch self { case .generatorFailed(let s): return "make_weights.py failed: \(s)" } }
    }

    private static let lock = NSLock()

    /// The safetensors file with the original state-dict keys (C' = 128, seed 7).
    public static func url(seed: Int = 7) throws -> URL {
        lock.lock(); defer { lock.unlock() }
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("lesionaffinity-ref-K128-seed\(seed).safetensors")
        if let f = try? SafeTensorsFile(contentsOf: out), f.entries.count >= 180 { return out }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        let tmp = out.path + ".tmp\(getpid())"
        p.arguments = ["python3", TestPaths.reference("make_weights.py").path, "--keys", TestPaths.reference("keys_K128.json").path,
                       "--seed", String(seed), "--out", tmp]
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            let msg = String(data: err.fileHandleForReading.readDataToEndOfFile(), encoding: .utf8) ?? ""
            throw Failure.generatorFailed(msg)
        }
        guard rename(tmp, out.path) == 0 else { throw Failure.generatorFailed("rename failed") }
        return out
    }

    /// The tensors the original model computed for `2_covid_000.png` (read once).
    public static func covidTensors() throws -> SafeTensorsFile {
        lock.lock(); defer { lock.unlock() }
        if let c = cachedTensors { return c }
        let f = try SafeTensorsFile(contentsOf: TestPaths.reference("tensors_2_covid_000.safetensors"))
        cachedTensors = f
        return f
    }
    nonisolated(unsafe) private static var cachedTensors: SafeTensorsFile?

    /// `run_K128_seed7.json`, the original model's outputs on the six phantoms (empty if unreadable;
    /// `result(_:)` then returns nil and the tests that need it fail with a message).
    public static let run: [String: Any] = {
        guard let d = try? Data(contentsOf: TestPaths.reference("run_K128_seed7.json")),
              let j = try? JSONSerialization.jsonObject(with: d) as? [String: Any] else { return [:] }
        return j
    }()

    /// The result entry of one image (by file name, e.g. "2_covid_000.png").
    public static func result(_ image: String) -> [String: Any]? {
        (run["results"] as? [[String: Any]])?.first { ($0["image"] as? String)?.hasSuffix(image) == true }
    }
}
