// Crash safety: the real affinityd is killed with SIGKILL in the middle of a training job and
// restarted on the same state directory; the store, the checkpoint and the job's record survive.
import Affinity
import Bus
import Foundation
import TestSupport
import Imaging
import NN
import Service
import Tensor
import Testing

@Suite("affinityd crash safety", .serialized)
struct CrashSafetyTests {
    typealias D = DaemonProcess

    static func call(_ c: BusConnection, _ method: String, _ args: [DBusValue]) throws -> [DBusValue] {
        try c.call(destination: D.name, path: D.root, interface: D.manager, method: method, args, timeout: .seconds(120))
    }

    /// Every regular file under `dir`, recursively (hidden files included).
    static func allFiles(_ dir: URL) -> [URL] {
        guard let e = FileManager.default.enumerator(at: dir, includingPropertiesForKeys: [.isRegularFileKey]) else { return [] }
        return e.compactMap { $0 as? URL }.filter { (try? $0.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true }
    }

    @Test func killDuringTrainingThenRestart() throws {
        let dir = try Paths.temporaryDirectory("crash")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = dir.appendingPathComponent("set")
        try PhantomDataset.write(to: data.path, count: 6, seed: 3, size: 128)
        let state = dir.appendingPathComponent("state")
        let bus = try PrivateBus()
        defer { bus.stop() }

        // 1. Daemon, imported model, a long training job.
        let daemon = try DaemonProcess(bus: bus, stateDirectory: state)
        let client = try bus.connect()
        let (modelBytes, _) = try Fixtures.smallModel(in: dir)
        let digest = sha256Hex(modelBytes)
        let modelPath = try Self.call(client, "ImportModel", [.unixFD(try FileDescriptor.sealedMemfd(name: "m", contents: modelBytes)),
                                                              .vardict(["name": .string("small")])])[0].asObjectPath()
        let modelID = String(modelPath.split(separator: "/").last!)
        let options: [String: DBusValue] = ["dataset": .string(data.path), "epochs": .uint32(50), "iterations_per_epoch": .uint32(1),
                                            "image_size": .uint32(128), "affinities": .uint32(8), "seed": .uint64(3),
                                            "learning_rate": .double(1e-4), "name": .string("crashy")]
        let jobPath = try Self.call(client, "Train", [.vardict(options)])[0].asObjectPath()
        let jobID = String(jobPath.split(separator: "/").last!)
        let run = state.appendingPathComponent("runs/\(jobID)")
        let checkpoint = run.appendingPathComponent("checkpoint.safetensors")
        #expect(waitUntil(600) { FileManager.default.fileExists(atPath: checkpoint.path) }, "no checkpoint was written")
        #expect(try client.getProperty(destination: D.name, path: jobPath, interface: D.job, name: "State") == .string("running"))
        client.close()

        // 2. kill -9 mid-training (the job has 50 epochs; it is in its second or later).
        let pid = daemon.process.processIdentifier
        #expect(daemon.process.isRunning)
        kill(pid, SIGKILL)
        daemon.process.waitUntilExit()
        #expect(daemon.process.terminationReason == .uncaughtSignal && daemon.process.terminationStatus == SIGKILL)
        daemon.stop()

        // The job record on disk says it was running when the daemon died.
        let recordBefore = try JSONSerialization.jsonObject(with: Data(contentsOf: run.appendingPathComponent("job.json"))) as? [String: Any]
        #expect(recordBefore?["state"] as? String == "running", "\(String(describing: recordBefore))")

        // A kill can also land inside an atomic write (temporary file written, not yet renamed) or a
        // model publish (temporary directory not yet renamed): plant such leftovers, half-written.
        let half = Array(try Data(contentsOf: checkpoint).prefix(1000))
        let planted = [run.appendingPathComponent(".checkpoint.safetensors.tmp-\(pid)-12345"),
                       state.appendingPathComponent(".default-model.tmp-\(pid)-6789"),
                       state.appendingPathComponent("models/.tmp-\(modelID)-crash/weights.safetensors")]
        try FileManager.default.createDirectory(at: planted[2].deletingLastPathComponent(), withIntermediateDirectories: true)
        for p in planted { try Data(half).write(to: p) }

        // 3. Restart on the same state directory, without auto-resume (ResumeTests resume such jobs):
        //    the job stays as the kill left it, for this test to look at.
        let daemon2 = try DaemonProcess(bus: bus, stateDirectory: state, configText: "auto_resume = no\n")
        defer { daemon2.stop() }
        let client2 = try bus.connect()
        defer { client2.close() }

        // The model store is intact: listed, same sha256, weights load, no temporaries visible.
        let models = try Self.call(client2, "ListModels", [.vardict([:])])[0].asObjectPaths()
        #expect(models.contains(modelPath), "\(models)")
        let mprops = try client2.getAllProperties(destination: D.name, path: modelPath, interface: D.model)
        #expect(mprops["Sha256"] == .string(digest) && mprops["Name"] == .string("small"))
        let weights = state.appendingPathComponent("models/\(modelID)/weights.safetensors")
        #expect(sha256Hex([UInt8](try Data(contentsOf: weights))) == digest)
        #expect(try ModelLoader.load(contentsOf: weights).affinities == 8)
        let leftovers = Self.allFiles(state).map(\.path).filter { $0.contains(".tmp-") }
        #expect(leftovers.isEmpty, "temporaries left after restart: \(leftovers)")
        let modelDirs = try FileManager.default.contentsOfDirectory(atPath: state.appendingPathComponent("models").path)
        #expect(!modelDirs.contains { $0.hasPrefix(".tmp-") }, "\(modelDirs)")

        // No half-written safetensors anywhere in the state directory.
        let tensorFiles = Self.allFiles(state).filter { $0.lastPathComponent.hasSuffix(".safetensors") }
        #expect(tensorFiles.count >= 2, "\(tensorFiles)")
        for f in tensorFiles {
            #expect(throws: Never.self, "\(f.path) does not parse") { _ = try SafeTensorsFile(contentsOf: f) }
        }

        // The last checkpoint loads and a trainer resumes from it.
        let file = try SafeTensorsFile(contentsOf: checkpoint)
        let epoch = Int(file.metadata["epoch"] ?? "") ?? 0
        #expect(epoch >= 1 && file.metadata["job"] == jobID && file.metadata["trainer_state"] != nil, "\(file.metadata.keys)")
        let fresh = AffinityModel(affinities: 8)
        var config = TrainingConfig()
        config.affinities = 8
        config.epochs = 50
        config.seed = 3
        let trainer = try OneShotTrainer(model: fresh, data: try PhantomLayoutData(root: data, side: 128, limit: 1), config: config)
        try trainer.resume(from: checkpoint)
        #expect(trainer.state.epoch == epoch && trainer.state.totalIterations >= 1)
        _ = try trainer.step()  // it goes on training from there
        #expect(trainer.state.totalIterations >= 2)

        // The job is reported as failed (auto_resume = no), on the bus and in job.json, with its checkpoint kept.
        let jprops = try client2.getAllProperties(destination: D.name, path: jobPath, interface: D.job)
        #expect(jprops["State"] == .string("failed") && jprops["Cancelable"] == .boolean(false), "\(jprops)")
        #expect(jprops["Operation"] == .string("train") && jprops["TotalEpochs"] == .uint32(50))
        let record = try JSONSerialization.jsonObject(with: Data(contentsOf: run.appendingPathComponent("job.json"))) as? [String: Any]
        #expect(record?["state"] as? String == "failed", "\(String(describing: record))")
        let message = record?["message"] as? String ?? ""
        #expect(message.contains("checkpoint"), "\(message)")
        let cancel = try? client2.call(destination: D.name, path: jobPath, interface: D.job, method: "Cancel", [.vardict([:])])
        #expect(cancel == nil, "a dead job cannot be cancelled")

        // The daemon goes on serving, and a new job gets a new id (the old run directory is not reused).
        var short = options
        short["epochs"] = .uint32(1)
        let job2 = try Self.call(client2, "Train", [.vardict(short)])[0].asObjectPath()
        #expect(job2 != jobPath && Int(job2.split(separator: "/").last!) ?? 0 > Int(jobID)!)
        _ = try client2.call(destination: D.name, path: job2, interface: D.job, method: "Cancel", [.vardict([:])])
        #expect(FileManager.default.fileExists(atPath: checkpoint.path))
        #expect(daemon2.stop() == 0)
    }
}
