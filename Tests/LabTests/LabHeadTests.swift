// affinity-lab with a head plugin, run as the built binary: train --head meanpool (and resume,
// and the bad inputs), predict and finetune of the model it writes, evaluate through the reader
// plugins (--data-format / --segmentation-format).
import Affinity
import Foundation
import Imaging
import NN
import PluginHost
import Tensor
import Testing

/// One `train --head meanpool` run, made once and shared by the tests of this file.
final class MeanpoolRun: @unchecked Sendable {
    let dir: String
    let out: String
    let data: String
    let result: LabRun

    static let config = #"{"hidden": 16}"#

    init() throws {
        dir = try Lab.temporaryDirectory("head")
        data = dir + "/phantoms"
        out = dir + "/run"
        try PhantomDataset.write(to: data, count: 6, seed: 3, size: 128, slicesPerPatient: 1)
        result = try Lab.run(["train", "--data", data, "--head", "meanpool", "--head-config", Self.config, "--out", out,
                              "--epochs", "2", "--image-size", "64", "--seed", "7", "--max-iterations", "3", "--json"])
    }

    var model: String { out + "/model.safetensors" }
    var checkpoint: String { out + "/checkpoint.safetensors" }

    static let shared: Result<MeanpoolRun, Error> = {
        let r = Result { try MeanpoolRun() }
        if case .success(let run) = r { HeadRunCleanup.dir = run.dir; atexit { if let d = HeadRunCleanup.dir { Lab.remove(d) } } }
        return r
    }()
}

enum HeadRunCleanup { nonisolated(unsafe) static var dir: String? }

/// A registry with the package's plugins (the binary's folder).
func labTestRegistry() throws -> PluginRegistry {
    let r = PluginRegistry(mode: .development)
    _ = try r.loadDirectory(LabPlugins.folder)
    return r
}

@Suite("affinity-lab with a head plugin", .serialized)
struct LabHeadTests {
    @Test("train --head meanpool writes head.meanpool.* with the head in the metadata; resume keeps the head; bad heads are named errors")
    func trainWithHead() throws {
        let run = try MeanpoolRun.shared.get()
        #expect(run.result.status == 0, "\(run.result.stderr)")
        let summary = try run.result.json()
        #expect(summary["head"] as? String == "meanpool" && summary["total_iterations"] as? Int == 3, "\(summary)")
        let ck = try SafeTensorsFile(contentsOf: URL(fileURLWithPath: run.checkpoint))
        #expect(ck.metadata["head"] == "meanpool" && ck.metadata["head_version"] == "1.0.0" && ck.metadata["head_config"] == MeanpoolRun.config)
        #expect((ck.metadata["plugins"] ?? "").contains("meanpool 1.0.0"), "\(ck.metadata)")
        // The head's weights and its Adam moments.
        #expect(ck.names.contains("head.meanpool.fc1.weight") && ck.names.contains("optimizer.head.meanpool.fc1.weight.exp_avg"))
        #expect(!ck.names.contains { $0.hasPrefix("affinity_layer.") || $0.hasPrefix("s2new.") })
        let metrics = try String(contentsOfFile: run.out + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
            .compactMap { try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        let lcls = metrics.filter { $0["type"] as? String == "iteration" }.compactMap { $0["l_cls"] as? Double }
        #expect(lcls.count == 3 && lcls.allSatisfy { $0.isFinite && $0 > 0 }, "\(lcls)")
        // The model file: the registry makes its head with the recorded config (hidden 16).
        let model = try ModelLoader.load(contentsOf: URL(fileURLWithPath: run.model), heads: try labTestRegistry())
        #expect(model.head.headID == "meanpool" && model.head.parameters.first { $0.name == "head.meanpool.fc1.weight" }?.shape == [16, 256])

        // Resume without --head: the checkpoint's head and config.
        let resumed = try Lab.run(["train", "--data", run.data, "--out", run.out, "--image-size", "64", "--resume", run.checkpoint,
                                   "--max-iterations", "4", "--json"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        let rs = try resumed.json()
        #expect(rs["head"] as? String == "meanpool" && rs["total_iterations"] as? Int == 4, "\(rs)")
        // Resume with another head: refused by name.
        let other = try Lab.run(["train", "--data", run.data, "--out", run.dir + "/other", "--image-size", "64", "--resume", run.checkpoint,
                                 "--head", "attention", "--max-iterations", "5"])
        #expect(other.status == 5 && other.stderr.contains("\"meanpool\" classification head"), "\(other.stderr)")

        let unknown = try Lab.run(["train", "--data", run.data, "--head", "nosuch", "--out", run.dir + "/x", "--image-size", "64", "--max-iterations", "1"])
        #expect(unknown.status == 1 && unknown.stderr.contains("[unknown-head]") && unknown.stderr.contains("meanpool")
                    && unknown.stderr.contains("attention"), "\(unknown.stderr)")
        let refused = try Lab.run(["train", "--data", run.data, "--head", "meanpool", "--head-config", #"{"hidden": 0}"#, "--out", run.dir + "/y",
                                   "--image-size", "64", "--max-iterations", "1"])
        #expect(refused.status == 7 && refused.stderr.contains("[bad-head-config]"), "\(refused.stderr)")
        let misplaced = try Lab.run(["train", "--data", run.data, "--head-config", "{}", "--out", run.dir + "/z", "--max-iterations", "1"])
        #expect(misplaced.status == 64 && misplaced.stderr.contains("--head-config"), "\(misplaced.stderr)")
        let withC = try Lab.run(["train", "--data", run.data, "--head", "meanpool", "--affinities", "8", "--out", run.dir + "/w", "--max-iterations", "1"])
        #expect(withC.status == 64 && withC.stderr.contains("--affinities"), "\(withC.stderr)")
    }

    @Test("predict and finetune load a meanpool model through the plugins; without them a named error")
    func predictAndFinetune() throws {
        let run = try MeanpoolRun.shared.get()
        try #require(run.result.status == 0, "\(run.result.stderr)")
        let image = Lab.fixtures.image512
        let r = try Lab.run(["predict", "--weights", run.model, "--json", image])
        #expect(r.status == 0, "\(r.stderr)")
        let o = try r.json()
        #expect(o["plugins"] as? [String] == ["meanpool 1.0.0"], "\(o)")
        let model = try ModelLoader.load(contentsOf: URL(fileURLWithPath: run.model), heads: try labTestRegistry())
        var rng = SeededGenerator(seed: 1)
        let expected = try model.predictImage(try Tensor(shape: [1, 3, 512, 512], values: Preprocessing.modelInput(try PNG.read(path: image))),
                                              rng: &rng)
        let logits = doubles(o["logits"])
        #expect(logits.count == 3)
        for (a, b) in zip(logits, expected.logits.map(Double.init)) { #expect(abs(a - b) <= 1e-4 * max(1, abs(b)), "\(logits) vs \(expected.logits)") }

        let text = try Lab.run(["predict", "--weights", run.model, image])
        #expect(text.status == 0 && text.stdout.contains("[head meanpool 1.0.0]") && !text.stdout.contains("decoded by"), "\(text.stdout)")

        let empty = try Lab.temporaryDirectory("noplugins")
        defer { Lab.remove(empty) }
        let missing = try Lab.run(["predict", "--weights", run.model, "--plugin-dir", empty, image])
        #expect(missing.status == 5 && missing.stderr.contains("[missing-head-plugin]") && missing.stderr.contains("\"meanpool\""), "\(missing.stderr)")

        let ft = run.dir + "/finetune"
        let f = try Lab.run(["finetune", "--weights", run.model, "--data", run.data, "--no-segmentation", "--out", ft, "--image-size", "64",
                             "--max-iterations", "2", "--json"])
        #expect(f.status == 0, "\(f.stderr)")
        #expect(try f.json()["head"] as? String == "meanpool")
        let fm = try SafeTensorsFile(contentsOf: URL(fileURLWithPath: ft + "/model.safetensors"))
        #expect(fm.metadata["head"] == "meanpool" && fm.metadata["finetuned_from"] == run.model)
        let fmiss = try Lab.run(["finetune", "--weights", run.model, "--data", run.data, "--no-segmentation", "--out", ft + "2",
                                 "--plugin-dir", empty, "--max-iterations", "1"])
        #expect(fmiss.status == 5 && fmiss.stderr.contains("[missing-head-plugin]"), "\(fmiss.stderr)")
    }

    @Test("evaluate --data-format covidx-ct --segmentation-format cncb-seg reads through the readers: same logits as the built-in layout")
    func evaluateThroughReaders() throws {
        let run = try MeanpoolRun.shared.get()
        try #require(run.result.status == 0, "\(run.result.stderr)")
        let viaPlugins = run.dir + "/eval-plugins", builtIn = run.dir + "/eval-builtin"
        let r = try Lab.run(["evaluate", "--weights", run.model, "--classification-data", run.data, "--segmentation-data", run.data,
                             "--data-format", "covidx-ct", "--segmentation-format", "cncb-seg", "--split", "test", "--out", viaPlugins, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let j = try r.json()
        #expect(j["head"] as? String == "meanpool" && j["data_format"] as? String == "covidx-ct" && j["segmentation_format"] as? String == "cncb-seg")
        let plugins = (j["plugins"] as? [String]) ?? []
        #expect(plugins.contains("covidx-ct 1.0.0") && plugins.contains("cncb-seg 1.0.0") && plugins.contains("meanpool 1.0.0"), "\(plugins)")
        let rows = ((j["classification"] as? [String: Any])?["confusion"] as? [String: Any])?["rows"] as? [[Int]] ?? []
        #expect(rows.flatMap { $0 }.reduce(0, +) == 3, "three test slices: \(rows)")
        let seg = try #require(j["segmentation"] as? [String: Any])
        #expect((seg["images"] as? Int ?? 0) > 0 && (seg["author_mask_ap"] as? [String: Any])?["mAP"] != nil, "\(seg)")

        // The same classification set through the built-in layout: the same images, the same logits.
        let b = try Lab.run(["evaluate", "--weights", run.model, "--classification-data", run.data, "--split", "test", "--out", builtIn, "--json"])
        #expect(b.status == 0, "\(b.stderr)")
        func logitsByImage(_ dir: String) throws -> [String: [Double]] {
            var out: [String: [Double]] = [:]
            for line in try String(contentsOfFile: dir + "/predictions.jsonl", encoding: .utf8).split(separator: "\n") {
                guard let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], o["set"] as? String == "classification",
                      let image = o["image"] as? String else { continue }
                out[(image as NSString).lastPathComponent] = doubles(o["logits"])
            }
            return out
        }
        let p = try logitsByImage(viaPlugins), q = try logitsByImage(builtIn)
        #expect(p.count == 3 && Set(p.keys) == Set(q.keys), "\(p.keys) vs \(q.keys)")
        for (k, v) in p {
            let w = q[k] ?? []
            #expect(v.count == 3 && w.count == 3 && zip(v, w).allSatisfy { abs($0 - $1) <= 1e-5 }, "\(k): \(v) vs \(w)")
        }
        // An unknown reader id: a named data error.
        let bad = try Lab.run(["evaluate", "--weights", run.model, "--classification-data", run.data, "--data-format", "nope", "--out", run.dir + "/e3"])
        #expect(bad.status == 6 && bad.stderr.contains("covidx-ct"), "\(bad.stderr)")
    }
}
