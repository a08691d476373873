// affinity-lab predict --weights with state dicts in torchvision's two FPN namings, and the key
// functions of tools/convert_pth.py (which import without torch).
import Foundation
import NN
import TestSupport
import Testing

@Suite("torchvision FPN namings in affinity-lab and convert_pth.py", .serialized)
struct LabTorchvisionNamingTests {
    let fx = Lab.fixtures

    @Test("predict --weights gives the same prediction for a pre-0.13 and a 0.13+ state dict, and refuses a mixed one")
    func predictWithEitherNaming() throws {
        let tmp = try Lab.temporaryDirectory("naming")
        defer { Lab.remove(tmp) }
        let source = try SafeTensorsFile(contentsOf: URL(fileURLWithPath: fx.weights))
        let old = tmp + "/pre013.safetensors", new = tmp + "/tv013.safetensors", mixed = tmp + "/mixed.safetensors"
        try StateDictFixtures.rewritten(source) { $0 }.write(to: URL(fileURLWithPath: old))
        try StateDictFixtures.torchvision013(source).write(to: URL(fileURLWithPath: new))
        try StateDictFixtures.rewritten(source) { k in
            k.hasSuffix(".weight") ? StateDictFixtures.torchvision013Names[k] ?? k : k
        }.write(to: URL(fileURLWithPath: mixed))
        #expect(try SafeTensorsFile(contentsOf: URL(fileURLWithPath: new)).entries["backbone.fpn.layer_blocks.0.0.weight"] != nil)

        var results: [[String: Any]] = []
        for w in [old, new] {
            let r = try Lab.run(["predict", "--weights", w, "--json", fx.image512])
            #expect(r.status == 0, "\(w): \(r.stderr)")
            results.append(try r.json())
        }
        try #require(results.count == 2)
        let (a, b) = (results[0], results[1])
        #expect(a["class_index"] as? Int == b["class_index"] as? Int)
        let la = doubles(a["logits"]), lb = doubles(b["logits"])
        #expect(la.count == 3 && lb.count == 3)
        for (x, y) in zip(la, lb) { #expect(abs(x - y) <= 1e-5 * max(1, abs(x)), "\(la) vs \(lb)") }
        let da = (a["detections"] as? [[String: Any]]) ?? [], db = (b["detections"] as? [[String: Any]]) ?? []
        #expect(da.count == db.count)
        #expect(da.map { $0["mask_area"] as? Int ?? -1 } == db.map { $0["mask_area"] as? Int ?? -1 })

        let refused = try Lab.run(["predict", "--weights", mixed, "--json", fx.image512])
        #expect(refused.status == 5, "\(refused.stderr)")
        #expect(refused.stderr.contains("[bad-weights]") && refused.stderr.contains("mixes torchvision's two FPN key namings"), "\(refused.stderr)")
        #expect(refused.stdout.isEmpty)
    }

    @Test("convert_pth.py renames 0.13+ FPN keys to the pre-0.13 ones, names the naming found, refuses a mix (no torch needed)")
    func convertPthKeyFunctions() throws {
        let script = """
        import json, sys
        sys.path.insert(0, sys.argv[1])
        import convert_pth as c
        assert 'torch' not in sys.modules
        out = {}
        new = {'backbone.body.conv1.weight': 1, 'backbone.fpn.inner_blocks.0.0.weight': 2, 'backbone.fpn.inner_blocks.0.0.bias': 3,
               'backbone.fpn.layer_blocks.0.0.weight': 4, 'backbone.fpn.layer_blocks.0.0.bias': 5, 'rpn.head.conv.weight': 6}
        state, naming = c.normalise_fpn_keys(new)
        out['new'] = [naming, state]
        old = {'backbone.fpn.inner_blocks.0.weight': 2, 'backbone.fpn.layer_blocks.0.bias': 5}
        out['old'] = list(c.normalise_fpn_keys(old))
        out['none'] = list(c.normalise_fpn_keys({'a': 1}))
        try:
            c.normalise_fpn_keys({'backbone.fpn.inner_blocks.0.weight': 1, 'backbone.fpn.layer_blocks.0.0.weight': 2})
            out['mixed'] = None
        except ValueError as e:
            out['mixed'] = str(e)
        print(json.dumps(out))
        """
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-B", "-c", script, Lab.packageRoot.appendingPathComponent("tools").path]
        let pipe = Pipe(), err = Pipe()
        p.standardOutput = pipe; p.standardError = err
        try p.run()
        let d = pipe.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        try #require(p.terminationStatus == 0, "python3: \(String(decoding: e, as: UTF8.self))")
        let out = try #require(try JSONSerialization.jsonObject(with: d) as? [String: Any])
        let new = try #require(out["new"] as? [Any])
        #expect(new[0] as? String == "0.13+")
        let state = try #require(new[1] as? [String: Int])
        #expect(state == ["backbone.body.conv1.weight": 1, "backbone.fpn.inner_blocks.0.weight": 2, "backbone.fpn.inner_blocks.0.bias": 3,
                          "backbone.fpn.layer_blocks.0.weight": 4, "backbone.fpn.layer_blocks.0.bias": 5, "rpn.head.conv.weight": 6])
        let old = try #require(out["old"] as? [Any])
        #expect(old[0] as? [String: Int] == ["backbone.fpn.inner_blocks.0.weight": 2, "backbone.fpn.layer_blocks.0.bias": 5])
        #expect(old[1] as? String == "pre-0.13")
        #expect((out["none"] as? [Any])?.last is NSNull)
        #expect((out["mixed"] as? String)?.contains("mixes torchvision's two FPN key namings") == true, "\(out)")
    }
}
