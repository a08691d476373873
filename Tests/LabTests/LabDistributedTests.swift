// affinity-lab over Open MPI (issue 19), run as `mpirun --allow-run-as-root --oversubscribe -np N
// affinity-lab …` with one thread per rank: the collectives checked between real processes, the
// data-parallel trainer against gradient accumulation on one process, a failing or killed rank
// ending the whole job (no hang) with the last checkpoint resumable by another number of ranks,
// and the sharded predict / evaluate / scan writing what one process writes. Skipped, with a
// message, only where `mpirun` is missing (scripts/setup installs openmpi-bin).

import Affinity
import Foundation
import Imaging
import NN
import Tensor
import Testing

/// Running affinity-lab under mpirun, with a time limit (a job that hangs fails the test).
enum MPI {
    /// The mpirun on PATH, if any.
    static let mpirun: String? = {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let p = String(dir) + "/mpirun"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return nil
    }()
    static var available: Bool { mpirun != nil }
    static let missing: Comment = "mpirun is missing: the MPI tests need Open MPI (scripts/setup installs libopenmpi-dev and openmpi-bin)"

    struct Outcome {
        var run: LabRun
        var timedOut: Bool
        var seconds: Double
    }

    /// The environment of every run: one thread per process (OpenBLAS and the parallel loops).
    static func environment() -> [String: String] {
        var env = ProcessInfo.processInfo.environment
        env["AFFINITY_THREADS"] = "1"
        env["OPENBLAS_NUM_THREADS"] = "1"
        return env
    }

    /// `mpirun … -np ranks affinity-lab args…` (ranks nil: affinity-lab alone, no launcher).
    static func lab(ranks: Int?, _ args: [String], timeout: Double = 240, started: ((Process) throws -> Void)? = nil) throws -> Outcome {
        let p = Process()
        if let ranks {
            p.executableURL = URL(fileURLWithPath: mpirun!)
            p.arguments = ["--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", String(ranks), Lab.binary] + args
        } else {
            p.executableURL = URL(fileURLWithPath: Lab.binary)
            p.arguments = args
        }
        p.environment = environment()
        let dir = try Lab.temporaryDirectory("mpi-out")
        defer { Lab.remove(dir) }
        let outPath = dir + "/stdout", errPath = dir + "/stderr"
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        guard let out = FileHandle(forWritingAtPath: outPath), let err = FileHandle(forWritingAtPath: errPath) else {
            throw LabTestError("cannot create the output files in \(dir)")
        }
        p.standardOutput = out; p.standardError = err
        let t0 = Date()
        try p.run()
        try? out.close(); try? err.close()
        var timedOut = false
        do { try started?(p) } catch { p.terminate(); p.waitUntilExit(); throw error }
        while p.isRunning {
            if Date().timeIntervalSince(t0) > timeout {
                timedOut = true
                p.terminate()  // mpirun passes SIGTERM on to its ranks
                let grace = Date()
                while p.isRunning && Date().timeIntervalSince(grace) < 10 { usleep(50_000) }
                if p.isRunning { kill(p.processIdentifier, SIGKILL) }
                break
            }
            usleep(50_000)
        }
        p.waitUntilExit()
        let stdout = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
        let stderr = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
        return Outcome(run: LabRun(status: p.terminationStatus, stdout: stdout, stderr: stderr), timedOut: timedOut,
                       seconds: Date().timeIntervalSince(t0))
    }

    /// The child of `parent` that is rank `rank` of its MPI job (read from /proc).
    static func rankProcess(_ rank: Int, of parent: pid_t) -> pid_t? {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return nil }
        for e in entries {
            guard let pid = pid_t(e),
                  let stat = try? String(contentsOfFile: "/proc/\(e)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 2, pid_t(fields[1]) == parent,
                  let env = FileManager.default.contents(atPath: "/proc/\(e)/environ") else { continue }
            let vars = env.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            if vars.contains("OMPI_COMM_WORLD_RANK=\(rank)") { return pid }
        }
        return nil
    }
}

/// The float tensors of two safetensors files: the largest difference relative to each tensor's
/// scale (its largest magnitude, at least 1e-3), and where.
func relativeDifference(_ a: String, _ b: String) throws -> (worst: Double, tensor: String, compared: Int) {
    let fa = try SafeTensorsFile(contentsOf: URL(fileURLWithPath: a))
    let fb = try SafeTensorsFile(contentsOf: URL(fileURLWithPath: b))
    guard Set(fa.names) == Set(fb.names) else { throw LabTestError("the files hold different tensors") }
    var worst = 0.0, at = "", compared = 0
    for n in fa.names.sorted() where fa.entries[n]?.dtype == .f32 {
        let x = try fa.tensor(n).array, y = try fb.tensor(n).array
        guard x.count == y.count else { throw LabTestError("\(n) has \(x.count) and \(y.count) values") }
        let scale = max(1e-3, Double(x.map { abs($0) }.max() ?? 0))
        var d = 0.0
        for i in x.indices { d = max(d, Double(abs(x[i] - y[i]))) }
        if d / scale > worst { worst = d / scale; at = n }
        compared += 1
    }
    return (worst, at, compared)
}

/// The lines of a metrics.jsonl of `type` iteration, without their wall times.
func iterationLines(_ path: String) throws -> [[String: Any]] {
    try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").compactMap {
        guard var o = try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any], o["type"] as? String == "iteration" else { return nil }
        o["seconds"] = nil
        return o
    }
}

/// A JSON object's text with sorted keys (for comparing objects, nested ones included).
func canonicalJSON(_ object: Any) throws -> String {
    String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
}

@Suite("affinity-lab under mpirun", .serialized, .enabled(if: MPI.available, MPI.missing))
struct LabDistributedTests {
    let fx = Lab.fixtures

    /// The shared phantom set (6 slices of 128 pixels, 3 in the training split): its lesions survive
    /// at --image-size 128, so segmentation steps run.
    static var trainingData: String { Lab.fixtures.data }

    static func trainArgs(data: String, out: String, epochs: Int, max: Int) -> [String] {
        ["train", "--data", data, "--out", out, "--affinities", "8", "--epochs", String(epochs), "--image-size", "128", "--seed", "5",
         "--max-iterations", String(max), "--threads", "1", "--json"]
    }

    @Test("bench allreduce: sums, broadcast and gather are checked between 2 and 3 real processes")
    func collectives() throws {
        for (ranks, bucket) in [(2, nil), (3, nil), (2, "0.4")] as [(Int, String?)] {
            let o = try MPI.lab(ranks: ranks, ["bench", "allreduce", "--megabytes", "3", "--repeats", "2", "--json"]
                                    + (bucket.map { ["--bucket-megabytes", $0] } ?? []), timeout: 120)
            #expect(!o.timedOut && o.run.status == 0, "\(o.run.stderr)")
            let j = try o.run.json()
            #expect(j["processes"] as? Int == ranks && j["checked"] as? Bool == true && j["mpi"] as? Bool == true)
            #expect(j["bytes"] as? Int == 3_000_000)
            // In pieces of 0.4 MB: 8 MPI calls, every sum checked all the same.
            #expect(j["elements_per_call"] as? Int == (bucket == nil ? 750_000 : 100_000))
        }
        // Alone it is a world of one that never starts MPI.
        let alone = try MPI.lab(ranks: nil, ["bench", "allreduce", "--megabytes", "1", "--json"], timeout: 60)
        #expect(alone.run.status == 0, "\(alone.run.stderr)")
        let j = try alone.run.json()
        #expect(j["processes"] as? Int == 1 && j["mpi"] as? Bool == false)
    }

    @Test("2 ranks × 1 slice per step train the weights of 1 process accumulating 2 slices (10 steps, ≤ 1e-6 of scale)")
    func equivalence() throws {
        let dir = try Lab.temporaryDirectory("mpi-equivalence")
        defer { Lab.remove(dir) }
        let data = Self.trainingData
        // 3 training slices: 2 steps of 2 + 1 slices per epoch, 10 steps in 5 epochs.
        // The two runs side by side (their results do not depend on the machine's load).
        final class Slot: @unchecked Sendable { var outcome: Result<MPI.Outcome, Error>? }  // written before the group is left
        let background = Slot()
        let group = DispatchGroup()
        let accumulateArgs = Self.trainArgs(data: data, out: dir + "/accumulate", epochs: 5, max: 10) + ["--accumulate", "2"]
        group.enter()
        DispatchQueue.global().async {
            background.outcome = Swift.Result { try MPI.lab(ranks: nil, accumulateArgs) }
            group.leave()
        }
        let two = try MPI.lab(ranks: 2, Self.trainArgs(data: data, out: dir + "/ranks", epochs: 5, max: 10) + ["--distributed"])
        group.wait()
        let one = try #require(background.outcome).get()
        #expect(one.run.status == 0, "\(one.run.stderr)")
        #expect(!two.timedOut && two.run.status == 0, "\(two.run.stderr)")
        let s1 = try one.run.json(), s2 = try two.run.json()
        #expect(s1["slices_per_step"] as? Int == 2 && s2["slices_per_step"] as? Int == 2)
        #expect(s1["processes"] as? Int == 1 && s2["processes"] as? Int == 2)
        #expect(s2["total_iterations"] as? Int == 10 && s2["finished"] as? Bool == true)
        #expect(((s2["allreduce_bytes"] as? Int) ?? 0) > 10_000_000, "the gradients went through the allreduce")

        // Every weight, running statistic and Adam moment.
        let (worst, tensor, compared) = try relativeDifference(dir + "/accumulate/checkpoint.safetensors", dir + "/ranks/checkpoint.safetensors")
        #expect(compared > 300)
        #expect(worst <= 1e-6, "\(tensor) differs by \(worst) of its scale")
        let c1 = try SafeTensorsFile(contentsOf: URL(fileURLWithPath: dir + "/accumulate/checkpoint.safetensors"))
        let c2 = try SafeTensorsFile(contentsOf: URL(fileURLWithPath: dir + "/ranks/checkpoint.safetensors"))
        #expect(c1.metadata["trainer_state"] == c2.metadata["trainer_state"])
        #expect(c2.metadata["slices_per_step"] == "2" && c2.metadata["processes"] == "2")
        // Training happened: Adam's moments moved, segmentation steps ran and copied their branches.
        #expect(try c2.tensor("optimizer.backbone.fpn.layer_blocks.0.weight.exp_avg").array.contains { $0 != 0 })

        // The same losses at every step; every step took 2 slices (the epochs' last ones 1).
        let m1 = try iterationLines(dir + "/accumulate/metrics.jsonl"), m2 = try iterationLines(dir + "/ranks/metrics.jsonl")
        #expect(m1.count == 10 && m2.count == 10)
        for (a, b) in zip(m1, m2) {
            #expect(try canonicalJSON(a) == canonicalJSON(b))
        }
        #expect(m2.map { $0["slices"] as? Int ?? 0 } == [2, 1, 2, 1, 2, 1, 2, 1, 2, 1])
        #expect(m2.contains { !($0["l_seg"] is NSNull) } && m2.contains { $0["copied"] as? Bool == true })
        // Only rank 0 wrote the run directory and printed.
        #expect(two.run.stdout.split(separator: "\n").count == 1)
    }

    @Test("a killed rank and a rank that fails end the whole job with an error; the checkpoint before resumes on another number of ranks")
    func failures() throws {
        let dir = try Lab.temporaryDirectory("mpi-failure")
        defer { Lab.remove(dir) }
        let data = Self.trainingData
        let out = dir + "/run", checkpoint = out + "/checkpoint.safetensors"

        // A long run on 2 ranks; once the first epoch's checkpoint is written, rank 1 is killed.
        var killed: pid_t? = nil
        let run = try MPI.lab(ranks: 2, Self.trainArgs(data: data, out: out, epochs: 50, max: 1000) + ["--distributed"], timeout: 180) { p in
            let t0 = Date()
            while !FileManager.default.fileExists(atPath: checkpoint) {
                guard p.isRunning, Date().timeIntervalSince(t0) < 150 else { throw LabTestError("no checkpoint appeared") }
                usleep(100_000)
            }
            guard let rank1 = MPI.rankProcess(1, of: p.processIdentifier) else { throw LabTestError("rank 1 not found") }
            killed = rank1
            kill(rank1, SIGKILL)
        }
        #expect(killed != nil)
        #expect(!run.timedOut, "the job went on after rank 1 died")
        #expect(run.run.status != 0)
        #expect(run.run.stderr.contains("rank 1") && run.run.stderr.contains("signal 9"), "\(run.run.stderr)")
        let state = try OneShotTrainer.checkpointState(URL(fileURLWithPath: checkpoint))
        #expect(state.epoch >= 1 && state.totalIterations >= 2)
        let before = try Data(contentsOf: URL(fileURLWithPath: checkpoint))

        // A rank that cannot read its slice: the job ends with that rank's error and exit code,
        // and the checkpoint is untouched.
        let bad = dir + "/bad"
        try FileManager.default.copyItem(atPath: data, toPath: bad)
        let listed = try String(contentsOfFile: bad + "/classification/train_COVIDx_CT.txt", encoding: .utf8)
        let damaged = try #require(listed.split(separator: "\n").first?.split(separator: " ").first.map(String.init))
        try Data("not a PNG".utf8).write(to: URL(fileURLWithPath: bad + "/classification/images/" + damaged))
        let failing = try MPI.lab(ranks: 2, ["train", "--data", bad, "--out", out, "--image-size", "128", "--resume", checkpoint,
                                             "--max-iterations", String(state.totalIterations + 4), "--threads", "1", "--distributed", "--json"],
                                  timeout: 120)
        #expect(!failing.timedOut, "the job hung after a rank failed")
        #expect(failing.run.status == 4, "\(failing.run.stderr)")
        #expect(failing.run.stderr.contains("of 2 on") && failing.run.stderr.contains("error [bad-image]") && failing.run.stderr.contains(damaged),
                "\(failing.run.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: checkpoint)) == before, "the failed job changed the checkpoint")

        // The checkpoint resumes on one process (the step now takes 1 slice): the run continues at
        // the checkpoint's slice of the epoch.
        let resumed = try MPI.lab(ranks: nil, ["train", "--data", data, "--out", out, "--image-size", "128", "--resume", checkpoint,
                                               "--max-iterations", String(state.totalIterations + 1), "--threads", "1", "--json"], timeout: 120)
        #expect(resumed.run.status == 0, "\(resumed.run.stderr)")
        let s = try resumed.run.json()
        #expect(s["total_iterations"] as? Int == state.totalIterations + 1 && s["iterations"] as? Int == 1)
        #expect(s["slices_per_step"] as? Int == 1)
        let last = try #require(try iterationLines(out + "/metrics.jsonl").last)
        #expect(last["epoch"] as? Int == state.epoch && last["iteration"] as? Int == state.iteration && last["slices"] as? Int == 1)
    }

    @Test("train under mpirun without --distributed is refused by name; --accumulate 0 is a usage error")
    func refusals() throws {
        let dir = try Lab.temporaryDirectory("mpi-refusal")
        defer { Lab.remove(dir) }
        let o = try MPI.lab(ranks: 2, Self.trainArgs(data: Self.trainingData, out: dir + "/run", epochs: 1, max: 1), timeout: 120)
        #expect(!o.timedOut && o.run.status == 64, "\(o.run.stderr)")
        #expect(o.run.stderr.contains("error [distributed-required]"))
        #expect(!FileManager.default.fileExists(atPath: dir + "/run/checkpoint.safetensors"))
        let zero = try MPI.lab(ranks: nil, Self.trainArgs(data: Self.trainingData, out: dir + "/z", epochs: 1, max: 1) + ["--accumulate", "0"])
        #expect(zero.run.status == 64 && zero.run.stderr.contains("--accumulate must be positive"), "\(zero.run.stderr)")
    }

    @Test("predict, evaluate and scan on 2 ranks write what one process writes")
    func shardedAnalysis() throws {
        let dir = try Lab.temporaryDirectory("mpi-sharded")
        defer { Lab.remove(dir) }
        // predict: 3 images, 2 ranks (one takes two); JSON lines in order and the same COCO file.
        let gen = PhantomGenerator(seed: 8, size: 128)
        var images = [fx.image512]
        for (k, c) in [PhantomClass.normal, .pneumonia].enumerated() {
            let p = dir + "/slice\(k).png"
            try PNG.write(gen.slice(index: k, class: c).pixelImage, to: p)
            images.append(p)
        }
        func lines(_ r: LabRun) throws -> [String] {
            try r.jsonLines().map { var o = $0; o["timings"] = nil; return try canonicalJSON(o) }
        }
        let p1 = try MPI.lab(ranks: nil, ["predict", "--weights", fx.weights, "--json", "--coco-out", dir + "/coco1.json"] + images)
        let p2 = try MPI.lab(ranks: 2, ["predict", "--weights", fx.weights, "--json", "--coco-out", dir + "/coco2.json"] + images, timeout: 120)
        #expect(p1.run.status == 0 && p2.run.status == 0 && !p2.timedOut, "\(p1.run.stderr)\(p2.run.stderr)")
        #expect(try lines(p1.run) == lines(p2.run))
        #expect(try p2.run.jsonLines().map { $0["image"] as? String } == images)
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/coco1.json")) == Data(contentsOf: URL(fileURLWithPath: dir + "/coco2.json")))

        // evaluate: classification and segmentation sets; the same files and metrics.
        let evalArgs = ["evaluate", "--weights", fx.weights, "--classification-data", fx.data, "--segmentation-data", fx.data, "--split", "test", "--json"]
        let e1 = try MPI.lab(ranks: nil, evalArgs + ["--out", dir + "/eval1"])
        let e2 = try MPI.lab(ranks: 2, evalArgs + ["--out", dir + "/eval2"], timeout: 180)
        #expect(e1.run.status == 0 && e2.run.status == 0 && !e2.timedOut, "\(e1.run.stderr)\(e2.run.stderr)")
        for f in ["predictions.jsonl", "report.md", "coco_gt.json", "coco_results.json", "confusion_matrix.png"] {
            #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/eval1/" + f)) == Data(contentsOf: URL(fileURLWithPath: dir + "/eval2/" + f)), "\(f) differs")
        }
        func metrics(_ d: String) throws -> [String: Any] {
            var m = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: d + "/metrics.json"))) as? [String: Any])
            m["seconds"] = nil
            return m
        }
        #expect(try canonicalJSON(metrics(dir + "/eval1")) == canonicalJSON(metrics(dir + "/eval2")))
        #expect(try metrics(dir + "/eval2")["classification_images"] as? Int == 3)

        // scan: a NIfTI volume (2 blank and 2 phantom slices) with the bundled model, label volume too.
        let volume = dir + "/chest.nii.gz"
        try LabScanTests.phantomVolume(volume, classes: [.covid, .normal])
        let s1 = try MPI.lab(ranks: nil, ["scan", volume, "--json", "--mask-out", dir + "/labels1.nii.gz"])
        let s2 = try MPI.lab(ranks: 2, ["scan", volume, "--json", "--mask-out", dir + "/labels2.nii.gz"], timeout: 180)
        #expect(s1.run.status == 0 && s2.run.status == 0 && !s2.timedOut, "\(s1.run.stderr)\(s2.run.stderr)")
        var j1 = try s1.run.json(), j2 = try s2.run.json()
        j1["timings"] = nil; j2["timings"] = nil
        #expect(try canonicalJSON(j1) == canonicalJSON(j2))
        #expect(j2["slice_count"] as? Int == 4 && j2["analysed_slices"] as? Int == 2)
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/labels1.nii.gz")) == Data(contentsOf: URL(fileURLWithPath: dir + "/labels2.nii.gz")))
    }
}

@Suite("Open MPI is affinity-lab's alone")
struct MPILinkageTests {
    /// Whether an executable names libmpi among the libraries it needs (its dynamic string table
    /// holds the names of its NEEDED libraries).
    static func needsLibMPI(_ path: String) throws -> Bool {
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        return bytes.range(of: Data("libmpi.so".utf8)) != nil
    }

    @Test("affinity-lab links libmpi; the daemon and the CLI do not")
    func linkage() throws {
        let dir = URL(fileURLWithPath: Lab.binary).deletingLastPathComponent()
        #expect(try Self.needsLibMPI(Lab.binary))
        for tool in ["affinityd", "affinityctl"] {
            let path = dir.appendingPathComponent(tool).path
            try #require(FileManager.default.isExecutableFile(atPath: path), "\(tool) is not built beside affinity-lab")
            #expect(try !Self.needsLibMPI(path), "\(tool) links Open MPI")
        }
    }
}
