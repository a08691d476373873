import Affinity
import ArgumentParser
import Foundation
import NN

/// `affinity-lab export`: a model file (weights only, the original key layout) from a training
/// checkpoint or another model file, optionally in half precision, with extra metadata.
struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a model file from a checkpoint or model file (F32 or F16, optimizer state dropped).",
        discussion: """
        The output holds the model's weights in the original state-dict layout (PyTorch's \
        load_state_dict reads it) and the input's metadata, minus the training state, plus every \
        --metadata KEY=VALUE. F16 halves the file; the weights are rounded to the nearest half.
        """)

    @Option(help: "Input: a training checkpoint or a model file (safetensors).")
    var weights: String

    @Option(help: "Output model file (written atomically).")
    var out: String

    @Option(help: "Storage type of the weights: f32 or f16.")
    var dtype: String = "f32"

    @Option(name: .customLong("metadata"), help: "Extra metadata KEY=VALUE (repeatable).")
    var metadata: [String] = []

    @Flag(help: "Print a JSON summary.")
    var json = false

    func validate() throws {
        guard ["f32", "f16"].contains(dtype.lowercased()) else { throw ValidationError("--dtype must be f32 or f16, not '\(dtype)'.") }
        for m in metadata where (m.firstIndex(of: "=") ?? m.startIndex) == m.startIndex {
            throw ValidationError("--metadata takes KEY=VALUE, got '\(m)'.")
        }
    }

    func run() throws { try labRun(body) }

    /// Metadata keys of a training checkpoint that describe the training position, not the model.
    static let trainingOnlyKeys: Set<String> = ["trainer_state", "optimizer_steps", "format", OneShotTrainer.checksumKey]

    private func body() throws {
        let type: DType = dtype.lowercased() == "f16" ? .f16 : .f32
        var extra: [String: String] = [:]
        for m in metadata {
            let eq = m.firstIndex(of: "=")!
            extra[String(m[..<eq])] = String(m[m.index(after: eq)...])
        }
        guard fileExists(weights) else { throw LabError.missingFile(weights) }
        let file: SafeTensorsFile
        let model: AffinityModel
        do {
            file = try SafeTensorsFile(contentsOf: URL(fileURLWithPath: weights))
            model = try ModelLoader.load(file)
        } catch { throw LabError.badWeights(weights, String(describing: error)) }
        var meta = file.metadata.filter { !Self.trainingOnlyKeys.contains($0.key) }
        meta.merge(extra) { _, new in new }
        meta["dtype"] = type.rawValue
        do { try ModelLoader.save(model, to: URL(fileURLWithPath: out), dtype: type, metadata: meta) } catch {
            throw LabError(name: "io", message: "Cannot write \(out): \(sentence(String(describing: error)))", code: 1)
        }
        let size = (try? FileManager.default.attributesOfItem(atPath: out)[.size] as? Int) ?? 0
        if json {
            printJSON(["out": out, "dtype": type.rawValue, "bytes": size, "affinities": model.affinities])
        } else {
            print("wrote \(out) (\(type.rawValue), \(size) bytes, C' = \(model.affinities))")
        }
    }
}
