// The affinity-lab commands, run as the built binary (the way scripts use them).

import Affinity
import Evaluation
import Foundation
import Imaging
import NN
import Tensor
import Testing

@Suite("affinity-lab commands", .serialized)
struct LabCommandTests {
    let fx = Lab.fixtures

    // MARK: phantoms

    @Test("phantoms writes the COVIDx-CT and CNCB layouts")
    func phantomsLayout() throws {
        let tmp = try Lab.temporaryDirectory("phantoms"), out = tmp + "/set"
        defer { Lab.remove(tmp) }
        let r = try Lab.run(["phantoms", "--out", out, "--count", "6", "--seed", "9", "--size", "128", "--slices-per-patient", "1", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let j = try r.json()
        #expect(doubles(j["per_class"]) == [2, 2, 2])
        let fm = FileManager.default
        for f in ["phantoms.json", "classification/train_COVIDx_CT.txt", "classification/val_COVIDx_CT.txt", "classification/test_COVIDx_CT.txt",
                  "classification/images/Normal_1_1001_0000.png", "classification/images/CP_2_1002_0000.png", "classification/images/NCP_3_1003_0000.png",
                  "segmentation/imgs/1_0.png", "segmentation/train_split_segmentation.txt", "segmentation/test_split_segmentation.txt"] {
            #expect(fm.fileExists(atPath: out + "/" + f), "\(f) missing")
        }
        let masks = try fm.contentsOfDirectory(atPath: out + "/segmentation/masks")
        #expect(masks.count == (j["masks"] as? Int))
        #expect(!masks.contains("1_0.png"), "a normal slice has no mask")
        let img = try PNG.read(path: out + "/classification/images/CP_2_1002_0000.png")
        #expect(img.width == 128 && img.height == 128)
        let line = try String(contentsOfFile: out + "/classification/train_COVIDx_CT.txt", encoding: .utf8).split(separator: "\n").first ?? ""
        #expect(line.split(separator: " ").count == 6)
    }

    // MARK: predict

    @Test("predict --json has the fields of issue 4 and the values of predictImage on the same weights")
    func predictMatchesLibrary() throws {
        let tmp = try Lab.temporaryDirectory("predict"), coco = tmp + "/results.json"
        defer { Lab.remove(tmp) }
        let r = try Lab.run(["predict", "--weights", fx.weights, "--json", "--coco-out", coco, fx.image512])
        #expect(r.status == 0, "\(r.stderr)")
        let lines = try r.jsonLines()
        #expect(lines.count == 1)
        let j = try #require(lines.first)
        for k in ["image", "logits", "class_index", "class", "probabilities", "roi_batch", "detections", "timings"] {
            #expect(j[k] != nil, "missing \(k)")
        }
        #expect(j["image"] as? String == fx.image512)

        let model = try ModelLoader.load(contentsOf: URL(fileURLWithPath: fx.weights))
        let input = try Tensor(shape: [1, 3, 512, 512], values: Preprocessing.modelInput(try PNG.read(path: fx.image512)))
        var rng = SeededGenerator(seed: 1)
        let p = try model.predictImage(input, withDetections: true, rng: &rng)

        let logits = doubles(j["logits"])
        #expect(logits.count == 3)
        for c in 0..<3 { #expect(abs(logits[c] - Double(p.logits[c])) <= 1e-4 * max(1, abs(Double(p.logits[c]))), "logit \(c)") }
        #expect(j["class_index"] as? Int == p.classIndex)
        #expect(j["class"] as? String == p.className)
        let probs = doubles(j["probabilities"])
        #expect(probs.count == 3 && abs(probs.reduce(0, +) - 1) < 1e-5)
        for c in 0..<3 { #expect(abs(probs[c] - Double(p.probabilities[c])) < 1e-5) }

        let roi = try #require(j["roi_batch"] as? [String: Any])
        let boxes = try #require(roi["boxes"] as? [[Any]])
        #expect(boxes.count == 8 && boxes.allSatisfy { $0.count == 4 })
        #expect(doubles(roi["scores"]).count == 8)
        for (k, b) in boxes.enumerated() {
            let v = doubles(b), want = p.roiBoxes[k]
            #expect(abs(v[0] - Double(want.x1)) < 0.05 && abs(v[1] - Double(want.y1)) < 0.05
                    && abs(v[2] - Double(want.x2)) < 0.05 && abs(v[3] - Double(want.y2)) < 0.05, "RoI box \(k)")
        }
        for (k, s) in doubles(roi["scores"]).enumerated() { #expect(abs(s - Double(p.roiScores[k])) < 1e-4) }

        let dets = try #require(j["detections"] as? [[String: Any]])
        #expect(dets.count == p.detections.count)
        for (k, d) in dets.enumerated().prefix(p.detections.count) {
            #expect(abs((d["score"] as? Double ?? -1) - Double(p.detections[k].score)) < 1e-4)
            #expect(doubles(d["box"]).count == 4)
            // A 512×512 slice: detection boxes and areas are the model's own.
            #expect(abs((d["mask_area"] as? Int ?? -1) - p.maskAreas[k]) <= 2, "mask area \(k)")
        }
        let timings = try #require(j["timings"] as? [String: Any])
        #expect(timings["total"] != nil && timings["backbone"] != nil)

        let results = try COCOResult.list(contentsOf: URL(fileURLWithPath: coco))
        #expect(results.count == p.detections.count)
        #expect(results.allSatisfy { $0.imageID == 1 && $0.categoryID == 1 && $0.segmentation != nil && $0.bbox != nil })
        if let first = results.first, case .rle(let rle)? = first.segmentation {
            #expect(rle.height == 512 && rle.width == 512)
            #expect(abs(rle.area - p.maskAreas[0]) <= 2)
        }
    }

    @Test("predict text output names the class")
    func predictText() throws {
        let r = try Lab.run(["predict", "--weights", fx.weights, fx.image512])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains(fx.image512) && r.stdout.contains("probabilities"))
    }

    @Test("bad input: missing file, not a PNG, bad weights give named errors and exit codes")
    func errors() throws {
        let dir = try Lab.temporaryDirectory("errors")
        defer { Lab.remove(dir) }
        let notPNG = dir + "/notes.png"
        try "not an image".write(toFile: notPNG, atomically: true, encoding: .utf8)
        let badWeights = dir + "/bad.safetensors"
        try Data([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]).write(to: URL(fileURLWithPath: badWeights))

        let missing = try Lab.run(["predict", "--weights", fx.weights, dir + "/nope.png"])
        #expect(missing.status == 3)
        #expect(missing.stderr.contains("missing-file") && missing.stderr.contains("nope.png"))

        let notImage = try Lab.run(["predict", "--weights", fx.weights, notPNG])
        #expect(notImage.status == 4)
        #expect(notImage.stderr.contains("bad-image") && notImage.stderr.contains("not a PNG"))

        let weights = try Lab.run(["predict", "--weights", badWeights, fx.image512])
        #expect(weights.status == 5)
        #expect(weights.stderr.contains("bad-weights"))

        let noWeights = try Lab.run(["predict", "--weights", dir + "/none.safetensors", fx.image512])
        #expect(noWeights.status == 3 && noWeights.stderr.contains("missing-file"))

        // Weights made for another C'.
        let wrongK = try Lab.run(["predict", "--weights", fx.weights, "--affinities", "16", fx.image512])
        #expect(wrongK.status == 5, "\(wrongK.stderr)")

        let noData = try Lab.run(["train", "--data", dir + "/no-such-set", "--out", dir + "/run"])
        #expect(noData.status == 3 && noData.stderr.contains("missing-directory"))

        let usage = try Lab.run(["predict", "--weights", fx.weights])
        #expect(usage.status != 0)
    }

    // MARK: train, resume, finetune

    static func trainArgs(out: String, data: String, max: Int) -> [String] {
        ["train", "--data", data, "--out", out, "--affinities", "8", "--epochs", "2", "--image-size", "128", "--seed", "5",
         "--max-iterations", String(max), "--json"]
    }

    @Test("train writes checkpoint, model and metrics; a resumed run equals an uninterrupted one")
    func trainAndResume() throws {
        let dir = try Lab.temporaryDirectory("train")
        defer { Lab.remove(dir) }
        let a = dir + "/a", b = dir + "/b"
        let r1 = try Lab.run(Self.trainArgs(out: a, data: fx.data, max: 2))
        #expect(r1.status == 0, "\(r1.stderr)")
        let s1 = try r1.json()
        #expect(s1["total_iterations"] as? Int == 2)
        for f in ["checkpoint.safetensors", "model.safetensors", "metrics.jsonl"] {
            #expect(FileManager.default.fileExists(atPath: a + "/" + f), "\(f) missing")
        }
        let metrics = try String(contentsOfFile: a + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
            .compactMap { try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        let iterations = metrics.filter { $0["type"] as? String == "iteration" }
        #expect(iterations.count == 2)
        for m in iterations {
            for k in ["epoch", "iteration", "l_cls", "l_seg", "l_total", "copied"] { #expect(m[k] != nil, "metrics line lacks \(k)") }
            #expect(((m["l_cls"] as? Double) ?? .nan).isFinite)
        }
        // The checkpoint carries the trainer state; the model file loads as a C' = 8 model.
        let ck = try SafeTensorsFile(contentsOf: URL(fileURLWithPath: a + "/checkpoint.safetensors"))
        #expect(ck.metadata["trainer_state"] != nil && ck.metadata["affinity"] == "8")
        let model = try ModelLoader.load(contentsOf: URL(fileURLWithPath: a + "/model.safetensors"))
        #expect(model.affinities == 8)

        // Resume to 4 iterations (crossing the end of the 3-image epoch) vs 4 straight.
        let r2 = try Lab.run(["train", "--data", fx.data, "--out", a, "--image-size", "128", "--resume", a + "/checkpoint.safetensors",
                              "--max-iterations", "4", "--json"])
        #expect(r2.status == 0, "\(r2.stderr)")
        #expect(try r2.json()["total_iterations"] as? Int == 4)
        let r3 = try Lab.run(Self.trainArgs(out: b, data: fx.data, max: 4))
        #expect(r3.status == 0, "\(r3.stderr)")
        let fa = try SafeTensorsFile(contentsOf: URL(fileURLWithPath: a + "/checkpoint.safetensors"))
        let fb = try SafeTensorsFile(contentsOf: URL(fileURLWithPath: b + "/checkpoint.safetensors"))
        #expect(Set(fa.names) == Set(fb.names))
        var differing: [String] = []
        for n in fa.names where fa.entries[n]?.dtype == .f32 {
            if try fa.tensor(n).array != fb.tensor(n).array { differing.append(n) }
        }
        #expect(differing.isEmpty, "tensors differ after resume: \(differing.prefix(5))")
        #expect(fa.metadata["trainer_state"] == fb.metadata["trainer_state"])
        let lines = try String(contentsOfFile: a + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        #expect(lines.filter { $0.contains("\"type\":\"iteration\"") }.count == 4)
        #expect(lines.filter { $0.contains("\"type\":\"epoch\"") }.count == 1)
        // After a finished epoch the model file is the best epoch's.
        let mf = try SafeTensorsFile(contentsOf: URL(fileURLWithPath: a + "/model.safetensors"))
        #expect(mf.metadata["best_epoch"] == "0")
    }

    @Test("finetune without the segmentation step runs classification steps only")
    func finetune() throws {
        let tmp = try Lab.temporaryDirectory("finetune"), out = tmp + "/ft"
        defer { Lab.remove(tmp) }
        let r = try Lab.run(["finetune", "--weights", fx.weights, "--data", fx.data, "--out", out, "--no-segmentation", "--epochs", "1",
                             "--image-size", "128", "--max-iterations", "1", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let lines = try String(contentsOfFile: out + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 1)
        let m = try #require(try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any])
        #expect(m["l_seg"] is NSNull)
        let ck = try SafeTensorsFile(contentsOf: URL(fileURLWithPath: out + "/checkpoint.safetensors"))
        #expect(ck.metadata["kind"] == "finetune")
        #expect(try ck.tensor("s2new.class_predict_logits.weight").shape[0] == 3, "the head keeps 3 outputs")
    }

    // MARK: affinity-matrix

    @Test("affinity-matrix writes the C'×256 heatmap and CSV")
    func affinityMatrix() throws {
        let dir = try Lab.temporaryDirectory("x2")
        defer { Lab.remove(dir) }
        let r = try Lab.run(["affinity-matrix", "--weights", fx.weights, fx.image512, "--out", dir + "/x2.png", "--csv", dir + "/x2.csv", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let png = try PNG.read(path: dir + "/x2.png")
        #expect(png.width == 256 * 4 && png.height == 8 * 4)
        let rows = try String(contentsOfFile: dir + "/x2.csv", encoding: .utf8).split(separator: "\n")
        #expect(rows.count == 8 && rows.allSatisfy { $0.split(separator: ",").count == 256 })
    }

    // MARK: evaluate

    @Test("evaluate writes metrics.json, the Table 4/5 report and the confusion-matrix PNG")
    func evaluate() throws {
        let tmp = try Lab.temporaryDirectory("evaluate"), out = tmp + "/report"
        defer { Lab.remove(tmp) }
        let r = try Lab.run(["evaluate", "--weights", fx.weights, "--classification-data", fx.data, "--segmentation-data", fx.data,
                             "--split", "test", "--out", out, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let data = try Data(contentsOf: URL(fileURLWithPath: out + "/metrics.json"))
        let j = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let c = try #require(j["classification"] as? [String: Any])
        for k in ["confusion", "sensitivity", "precision", "specificity", "accuracy", "authorF1", "paperEq14F1", "macroF1", "weightedF1"] {
            #expect(c[k] != nil, "classification lacks \(k)")
        }
        let rows = try #require((c["confusion"] as? [String: Any])?["rows"] as? [[Int]])
        #expect(rows.flatMap { $0 }.reduce(0, +) == 3, "three test slices (one patient per class)")
        let s = try #require(j["segmentation"] as? [String: Any])
        let author = try #require(s["author_mask_ap"] as? [String: Any])
        for k in ["ap50", "ap75", "mAP"] { #expect(author[k] != nil, "author AP lacks \(k)") }
        let coco = try #require(s["coco_segm"] as? [String: Any])
        #expect(doubles(coco["stats"]).count == 12 && coco["AP"] != nil)
        let md = try String(contentsOfFile: out + "/report.md", encoding: .utf8)
        #expect(md.contains("| Model | COVID-19 | CP | Normal | Overall accuracy | F1 |"))
        #expect(md.contains("| Model | AP@0.5 | AP@0.75 | mAP@[0.5:0.95] |"))
        let png = try PNG.read(path: out + "/confusion_matrix.png")
        #expect(png.width > 100 && png.height > 100)
        // The COCO files it writes score the same with coco-eval.
        let again = try Lab.run(["coco-eval", "--gt", out + "/coco_gt.json", "--dt", out + "/coco_results.json", "--json"])
        #expect(again.status == 0, "\(again.stderr)")
        let a = doubles(try again.json()["stats"]), b = doubles(coco["stats"])
        #expect(a.count == 12 && zip(a, b).allSatisfy { abs($0 - $1) < 1e-12 })
    }

    // MARK: coco-eval

    @Test("coco-eval matches pycocotools' stats on the committed fixtures")
    func cocoEvalFixtures() throws {
        let dir = Lab.packageRoot.appendingPathComponent("Tests/EvaluationTests/Fixtures/coco")
        let expected = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("expected.json"))) as? [String: Any])
        let cases = try #require(expected["cases"] as? [String: [String: Any]])
        #expect(!cases.isEmpty)
        for (name, want) in cases.sorted(by: { $0.key < $1.key }) {
            for type in ["segm", "bbox"] {
                let r = try Lab.run(["coco-eval", "--gt", dir.appendingPathComponent("\(name).gt.json").path,
                                     "--dt", dir.appendingPathComponent("\(name).dt.json").path, "--iou-type", type, "--json"])
                #expect(r.status == 0, "\(name) \(type): \(r.stderr)")
                let got = doubles(try r.json()["stats"]), stats = doubles(want[type])
                #expect(got.count == 12 && stats.count == 12)
                for i in 0..<min(got.count, stats.count) {
                    #expect(abs(got[i] - stats[i]) < 1e-6, "\(name) \(type) \(COCOSummary.names[i]): \(got[i]) vs \(stats[i])")
                }
            }
        }
        let missing = try Lab.run(["coco-eval", "--gt", "/nonexistent/gt.json", "--dt", "/nonexistent/dt.json"])
        #expect(missing.status == 3)
        let text = try Lab.run(["coco-eval", "--gt", dir.appendingPathComponent("perfect.gt.json").path,
                                "--dt", dir.appendingPathComponent("perfect.dt.json").path])
        #expect(text.status == 0 && text.stdout.contains("Average Precision"))
    }

    // MARK: tools/convert_pth.py (dev time: needs torch)

    static let torchPython = "/work/venv-torch/bin/python"

    @Test("convert_pth.py turns an original-style .pth into safetensors that ModelLoader reads",
          .enabled(if: FileManager.default.isExecutableFile(atPath: LabCommandTests.torchPython)))
    func convertPth() throws {
        let dir = try Lab.temporaryDirectory("convert")
        defer { Lab.remove(dir) }
        // A fake author checkpoint: our model's state dict (original keys) with the author's dict layout.
        let maker = """
        import json, struct, sys, types, torch
        src, pth = sys.argv[1], sys.argv[2]
        raw = open(src, 'rb').read()
        n = struct.unpack('<Q', raw[:8])[0]
        header = json.loads(raw[8:8 + n]); base = 8 + n
        dt = {'F32': torch.float32, 'I64': torch.int64, 'F16': torch.float16}
        state = {}
        for k, v in header.items():
            if k == '__metadata__': continue
            a, b = v['data_offsets']
            t = torch.frombuffer(bytearray(raw[base + a:base + b]), dtype=dt[v['dtype']]) if b > a else torch.zeros(0, dtype=dt[v['dtype']])
            state[k] = t.reshape(v['shape']).clone()
        if len(sys.argv) > 3 and sys.argv[3] == '0.13+':  # torchvision 0.13+ names the FPN convs ….0.0.weight
            state = {(k[:k.rindex('.')] + '.0' + k[k.rindex('.'):] if k.startswith(('backbone.fpn.inner_blocks.', 'backbone.fpn.layer_blocks.')) else k): v
                     for k, v in state.items()}
        gen = types.SimpleNamespace(sizes=((2, 4, 8, 16, 32),), aspect_ratios=((0.1, 0.25, 0.5, 1.0, 1.5, 2.0),))
        torch.save({'model_weights': state, 'anchor_generator': gen, 'affinity': 8, 'epoch': '100', 'model_name': 'affinity'}, pth)
        """
        let makerPath = dir + "/make_pth.py", pth = dir + "/affinity_model_8.pth", out = dir + "/converted.safetensors"
        try maker.write(toFile: makerPath, atomically: true, encoding: .utf8)
        func python(_ args: [String]) throws -> (Int32, String) {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: Self.torchPython)
            p.arguments = args
            let pipe = Pipe()
            p.standardOutput = pipe; p.standardError = pipe
            try p.run()
            let d = pipe.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            return (p.terminationStatus, String(decoding: d, as: UTF8.self))
        }
        let made = try python([makerPath, fx.weights, pth])
        try #require(made.0 == 0, "\(made.1)")
        let conv = try python([Lab.packageRoot.appendingPathComponent("tools/convert_pth.py").path, pth, out])
        try #require(conv.0 == 0, "\(conv.1)")

        let f = try SafeTensorsFile(contentsOf: URL(fileURLWithPath: out))
        #expect(f.metadata["affinity"] == "8")
        #expect(f.metadata["anchor_sizes"] == "2,4,8,16,32")
        #expect(f.metadata["aspect_ratios"] == "0.1,0.25,0.5,1,1.5,2")
        #expect(f.metadata["epoch"] == "100")
        #expect(f.metadata["torchvision_naming"] == "pre-0.13")
        let original = try SafeTensorsFile(contentsOf: URL(fileURLWithPath: fx.weights))
        #expect(Set(f.names) == Set(original.names), "the original keys are kept")
        let a = try ModelLoader.load(contentsOf: URL(fileURLWithPath: out))
        let b = try ModelLoader.load(contentsOf: URL(fileURLWithPath: fx.weights))
        #expect(a.affinities == 8)
        let pa = a.parameters, pb = b.parameters
        #expect(pa.count == pb.count)
        var same = true
        for (x, y) in zip(pa, pb) where x.value.array != y.value.array { same = false }
        #expect(same, "converted weights equal the source weights")
        // And the tool predicts with it.
        let r = try Lab.run(["predict", "--weights", out, "--json", fx.image512])
        #expect(r.status == 0, "\(r.stderr)")

        // A .pth saved with torchvision 0.13+ (FPN keys ….0.0.weight): renamed to the pre-0.13
        // names, the naming recorded, the same weights.
        let pthNew = dir + "/affinity_model_8_tv013.pth", outNew = dir + "/converted_tv013.safetensors"
        let madeNew = try python([makerPath, fx.weights, pthNew, "0.13+"])
        try #require(madeNew.0 == 0, "\(madeNew.1)")
        let convNew = try python([Lab.packageRoot.appendingPathComponent("tools/convert_pth.py").path, pthNew, outNew])
        try #require(convNew.0 == 0, "\(convNew.1)")
        let fNew = try SafeTensorsFile(contentsOf: URL(fileURLWithPath: outNew))
        #expect(fNew.metadata["torchvision_naming"] == "0.13+")
        #expect(Set(fNew.names) == Set(original.names), "the FPN keys in the pre-0.13 naming")
        let c = try ModelLoader.load(fNew)
        #expect(zip(c.parameters, pb).allSatisfy { $0.value.array == $1.value.array })
    }
}
