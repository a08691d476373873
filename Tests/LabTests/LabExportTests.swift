// affinity-lab export: model files from checkpoints or model files, F32 or F16.

import Affinity
import Foundation
import NN
import Tensor
import Testing

@Suite("affinity-lab export", .serialized)
struct LabExportTests {
    let fx = Lab.fixtures

    @Test("export --dtype f16 halves the file, keeps every weight to half precision and merges the metadata")
    func exportF16() throws {
        let tmp = try Lab.temporaryDirectory("export"), out = tmp + "/m16.safetensors"
        defer { Lab.remove(tmp) }
        let r = try Lab.run(["export", "--weights", fx.weights, "--out", out, "--dtype", "f16",
                             "--metadata", "name=demo", "--metadata", "notice=not for diagnosis", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let j = try r.json()
        #expect(j["dtype"] as? String == "F16")
        #expect(j["affinities"] as? Int == 8)

        let source = try SafeTensorsFile(contentsOf: URL(fileURLWithPath: fx.weights))
        let half = try SafeTensorsFile(contentsOf: URL(fileURLWithPath: out))
        #expect(half.metadata["name"] == "demo")
        #expect(half.metadata["notice"] == "not for diagnosis")
        #expect(half.metadata["affinity"] == "8")
        #expect(Set(half.names) == Set(source.names), "the same keys, aliases included")
        let sourceBytes = try FileManager.default.attributesOfItem(atPath: fx.weights)[.size] as! Int
        let halfBytes = try FileManager.default.attributesOfItem(atPath: out)[.size] as! Int
        #expect(Double(halfBytes) < 0.55 * Double(sourceBytes))

        var floatEntries = 0
        for name in source.names where source.entries[name]!.dtype == .f32 {
            floatEntries += 1
            #expect(half.entries[name]!.dtype == .f16, "\(name) is not F16")
            let a = try source.tensor(name).array, b = try half.tensor(name).array
            var worst: Float = 0
            for i in a.indices {
                // Half precision: 11 significant bits; tiny values become subnormal (absolute 6e-8).
                let allowed = max(abs(a[i]) * 0.0005, 6e-8)
                worst = max(worst, abs(a[i] - b[i]) / allowed)
            }
            #expect(worst <= 1, "\(name): worst error \(worst) × the half-precision bound")
        }
        #expect(floatEntries > 100)

        // The F16 file loads as a model (every key present, widened to F32).
        let m16 = try ModelLoader.load(contentsOf: URL(fileURLWithPath: out))
        #expect(m16.affinities == 8)
    }

    @Test("export refuses a bad --dtype or --metadata (usage, 64) and a missing or non-model input (named errors)")
    func exportErrors() throws {
        let tmp = try Lab.temporaryDirectory("export-bad")
        defer { Lab.remove(tmp) }
        let badType = try Lab.run(["export", "--weights", fx.weights, "--out", tmp + "/x", "--dtype", "f8"])
        #expect(badType.status == 64)
        #expect(badType.stderr.contains("f32 or f16"))
        let badMeta = try Lab.run(["export", "--weights", fx.weights, "--out", tmp + "/x", "--metadata", "=v"])
        #expect(badMeta.status == 64)
        let missing = try Lab.run(["export", "--weights", tmp + "/nothing.safetensors", "--out", tmp + "/x"])
        #expect(missing.status == 3)
        #expect(missing.stderr.contains("[missing-file]"))
        let junk = tmp + "/junk.safetensors"
        try Data((0..<300).map { UInt8($0 % 251) }).write(to: URL(fileURLWithPath: junk))
        let bad = try Lab.run(["export", "--weights", junk, "--out", tmp + "/x"])
        #expect(bad.status == 5)
        #expect(bad.stderr.contains("[bad-weights]"))
        #expect(!FileManager.default.fileExists(atPath: tmp + "/x"), "nothing written on failure")
    }
}
