// `affinity-lab bench predict|train-step --roofline` (issue 18): per stage the multiply-adds, the
// time, GFLOP/s and the fraction of the SGEMM peak measured in the same run.
import Foundation
import Testing

@Suite("bench --roofline")
struct LabRooflineTests {
    static let weights = Lab.packageRoot.appendingPathComponent("models/phantom-demo/weights.safetensors").path
    static let image = Lab.packageRoot.appendingPathComponent("samples/covid-19.png").path

    /// The truncated ResNet18 (conv1..layer3) and the one-level FPN at 512×512 (MODEL.md §3):
    /// output channels × input channels × kernel area × output positions, layer by layer.
    static let conv1MACs = 64 * 3 * 49 * 256 * 256                                            // stride 2
    static let backboneMACs = conv1MACs
        + 4 * 64 * 64 * 9 * 128 * 128                                                         // layer1
        + 128 * 64 * 9 * 64 * 64 + 3 * 128 * 128 * 9 * 64 * 64 + 128 * 64 * 64 * 64           // layer2 (+ downsample)
        + 256 * 128 * 9 * 32 * 32 + 3 * 256 * 256 * 9 * 32 * 32 + 256 * 128 * 32 * 32        // layer3 (+ downsample)
        + 256 * 256 * 32 * 32 + 256 * 256 * 9 * 32 * 32                                       // FPN inner 1×1, layer 3×3

    /// The roofline object of a `--json` report, its stages by name.
    static func roofline(_ run: LabRun) throws -> (peak: Double, stages: [String: [String: Double]]) {
        #expect(run.status == 0, "\(run.stderr)")
        let r = try #require(try run.json()["roofline"] as? [String: Any])
        let peak = try #require(r["peak_gflops"] as? Double)
        #expect(peak > 0 && peak == max(r["peak_engine_gflops"] as? Double ?? 0, r["peak_openblas_gflops"] as? Double ?? 0))
        var stages: [String: [String: Double]] = [:]
        for s in try #require(r["stages"] as? [[String: Any]]) {
            let name = try #require(s["stage"] as? String)
            stages[name] = s.compactMapValues { $0 as? Double }
            let gmac = s["gmac"] as? Double ?? -1, seconds = s["seconds"] as? Double ?? -1, gflops = s["gflops"] as? Double ?? -1
            #expect(gmac >= 0 && seconds >= 0, "\(s)")
            if seconds > 0 {
                #expect(abs(gflops - 2 * gmac / seconds) <= 1e-9 * max(1, gflops), "\(s)")
                #expect(abs((s["fraction_of_peak"] as? Double ?? -1) - gflops / peak) <= 1e-9, "\(s)")
            }
        }
        return (peak, stages)
    }

    @Test("predict: the stages' multiply-adds add up to the total, and the backbone's are exactly its convolutions'")
    func predict() throws {
        // Winograd off: every convolution counts its direct multiply-adds.
        let run = try Lab.run(["bench", "predict", "--weights", Self.weights, "--image", Self.image, "--repeats", "1", "--threads", "2",
                               "--roofline", "--json"], environment: ["AFFINITY_WINOGRAD": "0"])
        let (_, stages) = try Self.roofline(run)
        #expect(Set(stages.keys).isSuperset(of: ["backbone", "proposals", "classification", "segmentation", "total"]))
        let parts = ["backbone", "proposals", "classification", "segmentation", "paste_masks"].compactMap { stages[$0]?["gmac"] }.reduce(0, +)
        let total = try #require(stages["total"]?["gmac"])
        #expect(abs(parts - total) <= 1e-9 * total)
        let backbone = try #require(stages["backbone"]?["gmac"])
        #expect(abs(backbone - Double(Self.backboneMACs) / 1e9) < 1e-12, "backbone \(backbone) GMAC")
        // The human-readable table names the peak.
        let text = try Lab.run(["bench", "predict", "--weights", Self.weights, "--image", Self.image, "--repeats", "1", "--threads", "1", "--roofline"])
        #expect(text.status == 0 && text.stdout.contains("SGEMM peak") && text.stdout.contains("of peak"), "\(text.stdout)")
    }

    @Test("train-step: the iteration's multiply-adds are the two steps' together, and a step's backward costs more than its forward")
    func trainStep() throws {
        let run = try Lab.run(["bench", "train-step", "--weights", Self.weights, "--image", Self.image, "--repeats", "1", "--threads", "2",
                               "--roofline", "--json"], environment: ["AFFINITY_WINOGRAD": "0"])
        let (_, stages) = try Self.roofline(run)
        let seg = try #require(stages["segmentation_step"]?["gmac"]), cls = try #require(stages["classification_step"]?["gmac"])
        let it = try #require(stages["iteration"]?["gmac"])
        #expect(abs(it - (seg + cls)) <= 1e-9 * it)
        // Each step runs the backbone forward and backward: its weight gradients cost what its
        // forward does, and so do its input gradients but conv1's (the image needs none); the
        // heads come on top.
        let backboneTraining = Double(3 * Self.backboneMACs - Self.conv1MACs) / 1e9
        #expect(seg > backboneTraining && cls > backboneTraining, "segmentation \(seg), classification \(cls) GMAC; backbone \(backboneTraining)")
    }
}
