import Affinity
import ArgumentParser
import Detection
import Evaluation
import Foundation
import Imaging
import NN
import PluginHost
import SystemIO
import Tensor

#if canImport(Glibc)
import Glibc
#endif

/// A failure of an affinity-lab command: a short name for scripts, a sentence for people, and the
/// process exit code.
///
/// Exit codes: 1 internal / other, 3 a file or directory is missing, 4 an image cannot be read
/// (not a PNG, damaged, unsupported), 5 a weights or checkpoint file is unusable, 6 a data set is
/// malformed or empty, 7 a JSON input is malformed. Usage errors exit with 64 (argument parser).
struct LabError: Error, CustomStringConvertible {
    var name: String
    var message: String
    var code: Int32

    var description: String { "\(name): \(message)" }

    static func missingFile(_ path: String) -> LabError {
        LabError(name: "missing-file", message: "The file \(path) does not exist.", code: 3)
    }
    static func missingDirectory(_ path: String) -> LabError {
        LabError(name: "missing-directory", message: "The directory \(path) does not exist.", code: 3)
    }
    static func badImage(_ path: String, _ reason: String) -> LabError {
        LabError(name: "bad-image", message: "Cannot read the image \(path): \(reason)", code: 4)
    }
    static func badWeights(_ path: String, _ reason: String) -> LabError {
        LabError(name: "bad-weights", message: "Cannot load the weights \(path): \(sentence(reason))", code: 5)
    }
    static func badData(_ reason: String) -> LabError {
        LabError(name: "bad-data", message: sentence(reason), code: 6)
    }
    static func badJSON(_ path: String, _ reason: String) -> LabError {
        LabError(name: "bad-json", message: "Cannot read \(path): \(sentence(reason))", code: 7)
    }
    static func failed(_ reason: String) -> LabError {
        LabError(name: "failed", message: sentence(reason), code: 1)
    }
}

/// `s` with a capital first letter and a final full stop.
func sentence(_ s: String) -> String {
    var t = s.trimmingCharacters(in: .whitespacesAndNewlines)
    if let f = t.first, f.isLowercase { t = f.uppercased() + t.dropFirst() }
    if !(t.hasSuffix(".") || t.hasSuffix("!") || t.hasSuffix("?")) { t += "." }
    return t
}

/// Runs a command body; a `LabError` (or any other error) is printed to stderr as
/// `affinity-lab: error [name]: sentence` and becomes its exit code.
func labRun(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let e as LabError {
        FileHandle.standardError.write(Data("affinity-lab: \(LabCluster.messagePrefix)error [\(e.name)]: \(e.message)\n".utf8))
        throw ExitCode(e.code)
    } catch let e as ExitCode {
        throw e
    } catch {
        let e = LabError.failed(String(describing: error))
        FileHandle.standardError.write(Data("affinity-lab: \(LabCluster.messagePrefix)error [\(e.name)]: \(e.message)\n".utf8))
        throw ExitCode(e.code)
    }
}

/// Whether stdout is a terminal (progress bars only then).
var stdoutIsTerminal: Bool { isatty(STDOUT_FILENO) != 0 }

/// A one-line progress bar redrawn with `\r`, drawn only when stdout is a terminal.
struct ProgressBar {
    var total: Int
    var label: String
    let enabled = stdoutIsTerminal
    private var start = DispatchTime.now().uptimeNanoseconds

    init(total: Int, label: String) { self.total = max(total, 1); self.label = label }

    func update(_ done: Int, note: String = "") {
        guard enabled else { return }
        let width = 30
        let f = min(max(Double(done) / Double(total), 0), 1)
        let filled = Int(f * Double(width))
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        let eta = done > 0 ? elapsed / Double(done) * Double(total - done) : 0
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        let line = "\r\(label) [\(bar)] \(done)/\(total) \(String(format: "%.0fs, eta %.0fs", elapsed, eta)) \(note)"
        FileHandle.standardOutput.write(Data((line + "\u{1B}[K").utf8))
    }

    func finish() {
        guard enabled else { return }
        FileHandle.standardOutput.write(Data("\n".utf8))
    }
}

/// Seconds since `t0` (a `DispatchTime` uptime in nanoseconds).
func secondsSince(_ t0: UInt64) -> Double { Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9 }

func fileExists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

func directoryExists(_ path: String) -> Bool {
    var isDir: ObjCBool = false
    return FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue
}

/// Makes a directory (and its parents).
func labMakeDirectory(_ path: String) throws {
    do { try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) } catch {
        throw LabError(name: "io", message: "Cannot create the directory \(path): \(error.localizedDescription)", code: 1)
    }
}

/// Writes text to a file atomically (temporary file, rename).
func labWriteText(_ text: String, to path: String) throws {
    do { try AtomicFile.write(text: text, to: path) } catch {
        throw LabError(name: "io", message: sentence(String(describing: error)), code: 1)
    }
}

/// Reads a PNG, naming the failure (missing file, not a PNG, damaged).
func labReadPNG(_ path: String) throws -> PixelImage {
    guard fileExists(path) else { throw LabError.missingFile(path) }
    do { return try PNG.read(path: path) } catch let e as ImageError {
        throw LabError.badImage(path, e.description)
    }
}

/// The model input of a PNG file as [1, 3, side, side] (MODEL.md §1.4): gray → 3 channels,
/// bilinear resize to side × side, per-image per-channel standardisation. Side 512 is
/// `Preprocessing.modelInput` exactly.
func labModelInput(_ image: PixelImage, side: Int = Preprocessing.modelSide) throws -> Tensor {
    if side == Preprocessing.modelSide {
        return try Tensor(shape: [1, 3, side, side], values: Preprocessing.modelInput(image))
    }
    let gray = Preprocessing.resized(image.grayImage(), height: side, width: side)
    var plane = gray.pixels
    plane.withUnsafeMutableBufferPointer { Preprocessing.standardize($0.baseAddress!, count: side * side) }
    return try Tensor(shape: [1, 3, side, side], values: plane + plane + plane)
}

/// Loads a weights file (model file, training checkpoint or converted original), naming the failure.
/// A file whose classification head is a plugin loads only when `pluginDirectories` is given (the
/// folders to load head plugins from; empty: the executable's folder) and the plugin is there.
func labLoadModel(_ path: String, affinities: Int? = nil, pluginDirectories: [String]? = nil) throws -> AffinityModel {
    guard fileExists(path) else { throw LabError.missingFile(path) }
    do {
        let file = try SafeTensorsFile(contentsOf: URL(fileURLWithPath: path))
        var heads: PluginRegistry? = nil
        if file.headID != AffinityHead.id {
            guard let dirs = pluginDirectories else {
                throw LabError(name: "unsupported-head",
                               message: "Cannot use the weights \(path): their classification head is the plugin \"\(file.headID)\"; "
                                   + "this command works with the built-in affinity head only.", code: 5)
            }
            heads = try labPluginRegistry(dirs)
        }
        return try ModelLoader.load(file, affinities: affinities, heads: heads)
    } catch let e as LabError {
        throw e
    } catch let e as ClassificationHeadError {
        if case .headUnavailable = e {
            throw LabError(name: "missing-head-plugin", message: "Cannot load the weights \(path): \(sentence(e.description))", code: 5)
        }
        throw LabError.badWeights(path, e.description)
    } catch {
        throw LabError.badWeights(path, String(describing: error))
    }
}

/// Checks that `value` is positive (for ArgumentParser `validate()`).
func requirePositive(_ value: Int?, _ name: String) throws {
    if let v = value, v <= 0 { throw ValidationError("\(name) must be positive, got \(v)") }
}

/// A JSON object of an Encodable value (via JSONEncoder, then JSONSerialization).
func jsonObject<T: Encodable>(_ value: T) throws -> Any {
    let d = try JSONEncoder().encode(value)
    return try JSONSerialization.jsonObject(with: d, options: [.fragmentsAllowed])
}

/// JSON text with sorted keys (pretty when asked).
func jsonText(_ value: Any, pretty: Bool = false) -> String {
    var options: JSONSerialization.WritingOptions = [.sortedKeys]
    if pretty { options.insert(.prettyPrinted) }
    guard let d = try? JSONSerialization.data(withJSONObject: value, options: options), let s = String(data: d, encoding: .utf8) else {
        return "{}"
    }
    return s
}

/// A float as a JSON number (NaN and infinities become null, which JSON cannot hold otherwise).
func jsonNumber(_ v: Float) -> Any { v.isFinite ? Double(v) : NSNull() }
func jsonNumber(_ v: Double) -> Any { v.isFinite ? v : NSNull() }
func jsonNumber(_ v: Double?) -> Any { v.map { jsonNumber($0) } ?? NSNull() }

/// A box as [x1, y1, x2, y2].
func jsonBox(_ b: Box) -> [Any] { [jsonNumber(b.x1), jsonNumber(b.y1), jsonNumber(b.x2), jsonNumber(b.y2)] }
