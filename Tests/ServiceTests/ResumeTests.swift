// Issue 23: training jobs survive a restart of the daemon. The real affinityd trains a small model
// with frequent checkpoints; it is killed (SIGKILL) or stopped (SIGTERM) in the middle of an epoch
// and started again on the same state directory, and the job finishes by itself (or on Job.Resume
// with auto_resume = no) with the model of the same job run without interruption. The bad cases
// (a checkpoint deleted or damaged while the daemon was down, the data set moved away, Resume of a
// completed or unknown job) get named errors, and the daemon starts and serves regardless.
import Affinity
import AffinityAPI
import Bus
import Foundation
import Imaging
import NN
import TestSupport
import Testing

/// A small training job through the daemon and what the resume tests compare.
enum ResumeFixture {
    typealias D = DaemonProcess
    static let E = "org.lesionaffinity.Affinity1.Error."
    /// Classification iterations per epoch; two epochs.
    static let perEpoch = 4
    static let epochs = 2
    static var total: Int { perEpoch * epochs }

    /// A phantom data set (9 training slices, 128 px).
    static func dataset(in dir: URL) throws -> URL {
        let data = dir.appendingPathComponent("set")
        try PhantomDataset.write(to: data.path, count: 12, seed: 3, size: 128)
        return data
    }

    /// Train's options: the same run every time (seed 5), plus `extra` (checkpoint settings, which
    /// must not change the run).
    static func options(_ data: URL, _ extra: [String: DBusValue] = [:]) -> [String: DBusValue] {
        ["dataset": .string(data.path), "epochs": .uint32(UInt32(epochs)), "iterations_per_epoch": .uint32(UInt32(perEpoch)),
         "image_size": .uint32(128), "affinities": .uint32(8), "seed": .uint64(5), "learning_rate": .double(1e-4),
         "name": .string("resumable")].merging(extra) { _, b in b }
    }

    static func call(_ c: BusConnection, _ method: String, _ args: [DBusValue]) throws -> [DBusValue] {
        try c.call(destination: D.name, path: D.root, interface: D.manager, method: method, args, timeout: .seconds(120))
    }

    static func resume(_ c: BusConnection, _ job: String, _ options: [String: DBusValue] = [:]) throws {
        _ = try c.call(destination: D.name, path: job, interface: D.job, method: "Resume", [.vardict(options)], timeout: .seconds(120))
    }

    /// The error a call fails with (nil if it succeeds).
    static func error(_ body: () throws -> Any) -> BusError? {
        do { _ = try body(); return nil } catch let e as BusError { return e } catch { return BusError(error) }
    }

    static func props(_ c: BusConnection, _ job: String) throws -> [String: DBusValue] {
        try c.getAllProperties(destination: D.name, path: job, interface: D.job)
    }

    static func result(_ p: [String: DBusValue]) -> [String: DBusValue] { (try? p["Result"]?.asVardict()) ?? [:] }

    /// Waits until the job has ended (or `seconds` pass); its properties then.
    static func waitForEnd(_ c: BusConnection, _ job: String, seconds: Double = 900) -> [String: DBusValue]? {
        var last: [String: DBusValue]?
        let ended = waitUntil(seconds) {
            last = try? props(c, job)
            guard case .string(let s)? = last?["State"] else { return false }
            return ["completed", "failed", "cancelled"].contains(s)
        }
        return ended ? last : nil
    }

    /// Waits until the running job has done at least `minimum` iterations and stands inside an epoch
    /// with the next iteration inside it too (so that a signal sent now lands mid-epoch, not at an
    /// epoch's end); returns the iteration its Metrics report.
    static func waitForMidEpoch(_ c: BusConnection, _ job: String, minimum: Int = 1, seconds: Double = 600) -> Int? {
        var done: Int?
        _ = waitUntil(seconds) {
            guard let m = try? c.getProperty(destination: D.name, path: job, interface: D.job, name: "Metrics").asDoubleDict(),
                  let i = m["iteration"].map(Int.init) else { return false }
            if i >= minimum && i % perEpoch != 0 && i % perEpoch != perEpoch - 1 && i < total { done = i; return true }
            return false
        }
        return done
    }

    /// The record the daemon keeps of a job (runs/<n>/job.json).
    static func record(_ state: URL, _ job: String) throws -> [String: Any] {
        let url = state.appendingPathComponent("runs/\(API.id(job))/job.json")
        return try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any] ?? [:]
    }

    static func checkpoint(_ state: URL, _ job: String) -> URL {
        state.appendingPathComponent("runs/\(API.id(job))/checkpoint.safetensors")
    }

    /// The trainer state a checkpoint file holds.
    static func checkpointState(_ url: URL) throws -> TrainerState { try OneShotTrainer.checkpointState(url) }

    /// Every tensor of a published model (its weights file in the store), by name.
    static func weights(_ state: URL, model: String) throws -> [String: [Float]] {
        let file = try SafeTensorsFile(contentsOf: state.appendingPathComponent("models/\(API.id(model))/weights.safetensors"))
        var out: [String: [Float]] = [:]
        for name in file.names {
            switch file.entries[name]?.dtype {
            case .f32?: out[name] = try file.tensor(name).array
            default: out[name] = try file.int64Values(name).map(Float.init)
            }
        }
        return out
    }

    /// The model the job makes when nothing interrupts it (computed once, by the daemon itself).
    private static let referenceLock = NSLock()
    nonisolated(unsafe) private static var cached: [String: [Float]]?
    static func reference() throws -> [String: [Float]] {
        try referenceLock.withLock {
            if let cached { return cached }
            let dir = try Paths.temporaryDirectory("resume-reference")
            defer { try? FileManager.default.removeItem(at: dir) }
            let data = try dataset(in: dir)
            let state = dir.appendingPathComponent("state")
            let session = try DaemonSession(stateDirectory: state)
            defer { session.stop() }
            let (result, _) = try session.runJob("Train", [.vardict(options(data))])
            let model = try #require(try result["model"]?.asObjectPath())
            let w = try weights(state, model: model)
            cached = w
            return w
        }
    }

    /// Expects `model` (published in `state`) to equal the uninterrupted run's model: every tensor
    /// within 1e-6 of its scale (its largest magnitude).
    static func expectReferenceModel(_ state: URL, _ p: [String: DBusValue], sourceLocation: SourceLocation = #_sourceLocation) throws {
        let model = try #require(try result(p)["model"]?.asObjectPath(), "\(p)", sourceLocation: sourceLocation)
        let got = try weights(state, model: model)
        let want = try reference()
        #expect(Set(got.keys) == Set(want.keys), sourceLocation: sourceLocation)
        var worst = (name: "", relative: Float(0))
        for (name, a) in want {
            guard let b = got[name], b.count == a.count else { Issue.record("\(name) differs in size", sourceLocation: sourceLocation); continue }
            let scale = a.reduce(Float(0)) { max($0, abs($1)) }
            let diff = zip(a, b).reduce(Float(0)) { max($0, abs($1.0 - $1.1)) }
            let relative = scale > 0 ? diff / scale : diff
            if relative > worst.relative { worst = (name, relative) }
        }
        #expect(worst.relative <= 1e-6, "the resumed model differs from the uninterrupted one: \(worst.name) by \(worst.relative) of its scale",
                sourceLocation: sourceLocation)
        // Trained for the whole run (the card's metrics come from the trainer state).
        let card = try #require(try? JSONSerialization.jsonObject(with: Data(contentsOf: state.appendingPathComponent("models/\(API.id(model))/card.json"))) as? [String: Any],
                                sourceLocation: sourceLocation)
        let metrics = card["metrics"] as? [String: Any] ?? [:]
        #expect((metrics["iterations"] as? NSNumber)?.intValue == total, "\(card)", sourceLocation: sourceLocation)
    }
}

@Suite("Training jobs survive a daemon restart (issue 23)", .serialized)
struct ResumeTests {
    typealias D = DaemonProcess
    typealias F = ResumeFixture

    @Test func sigkillMidEpochThenRestartResumesAndMatchesTheUninterruptedRun() throws {
        _ = try F.reference()
        let dir = try Paths.temporaryDirectory("resume-kill")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = try F.dataset(in: dir)
        let state = dir.appendingPathComponent("state")
        let bus = try PrivateBus()
        defer { bus.stop() }

        // A checkpoint after every iteration; kill -9 in the middle of the first epoch.
        let daemon = try DaemonProcess(bus: bus, stateDirectory: state)
        let client = try bus.connect()
        let job = try F.call(client, "Train", [.vardict(F.options(data, ["checkpoint_iterations": .uint32(1)]))])[0].asObjectPath()
        let done = try #require(F.waitForMidEpoch(client, job, minimum: 2), "the job did not reach the middle of an epoch")
        kill(daemon.process.processIdentifier, SIGKILL)
        daemon.process.waitUntilExit()
        client.close()
        daemon.stop()
        #expect(daemon.process.terminationReason == .uncaughtSignal)
        let before = try F.record(state, job)
        #expect(before["state"] as? String == "running", "\(before)")
        // Once Metrics said iteration `done`, its checkpoint existed: the kill lost at most the iteration in progress.
        let onDisk = try F.checkpointState(F.checkpoint(state, job))
        #expect(onDisk.totalIterations >= done && onDisk.totalIterations < F.total, "checkpoint at \(onDisk.totalIterations), reported \(done)")
        #expect(onDisk.iteration != 0, "the checkpoint is inside an epoch, not at its end")

        // Restart: the job resumes by itself, with its number and object path, and completes.
        let daemon2 = try DaemonProcess(bus: bus, stateDirectory: state)
        let client2 = try bus.connect()
        defer { client2.close() }
        let resumed = try F.props(client2, job)
        #expect(resumed["Resumed"] == .uint32(1), "\(resumed)")
        #expect(try F.result(resumed)["resumed_from_iteration"]?.asUInt64() == UInt64(onDisk.totalIterations), "\(resumed)")
        let end = try #require(F.waitForEnd(client2, job), "the resumed job did not end")
        #expect(end["State"] == .string("completed"), "\(end)")
        #expect(end["Resumed"] == .uint32(1) && end["Progress"] == .double(1))
        try F.expectReferenceModel(state, end)
        let models = try F.call(client2, "ListModels", [.vardict([:])])[0].asObjectPaths()
        #expect(models.count == 1, "one model published: \(models)")
        let after = try F.record(state, job)
        #expect(after["state"] as? String == "completed" && after["resumed"] as? Int == 1, "\(after)")
        #expect(daemon2.stop() == 0)
        let log = daemon2.stderrText
        #expect(log.contains("Job \(API.id(job)) (train) was interrupted when the daemon stopped; resuming it from its checkpoint at iteration"), "\(log)")
        #expect(log.contains("Job \(API.id(job)) resumed from iteration \(onDisk.totalIterations) of \(F.total)"), "\(log)")
    }

    @Test func sigtermWritesACheckpointWhereTheJobStandsAndTheJobResumes() throws {
        _ = try F.reference()
        let dir = try Paths.temporaryDirectory("resume-term")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = try F.dataset(in: dir)
        let state = dir.appendingPathComponent("state")
        let bus = try PrivateBus()
        defer { bus.stop() }

        // No periodic checkpoints at all: the only one inside the epoch is the one SIGTERM writes.
        let daemon = try DaemonProcess(bus: bus, stateDirectory: state)
        let client = try bus.connect()
        let job = try F.call(client, "Train", [.vardict(F.options(data, ["checkpoint_iterations": .uint32(0),
                                                                          "checkpoint_interval": .uint32(0)]))])[0].asObjectPath()
        let done = try #require(F.waitForMidEpoch(client, job, minimum: 1), "the job did not reach the middle of an epoch")
        let completed = Collected<ReceivedSignal>()
        let sub = try client.subscribe(MatchRule(interface: D.job, member: "Completed")) { completed.append($0) }
        if done < F.perEpoch {
            #expect(!FileManager.default.fileExists(atPath: F.checkpoint(state, job).path), "no checkpoint before the epoch's end")
        }
        #expect(daemon.stop() == 0, "SIGTERM: a clean exit")
        sub.cancel()
        client.close()
        // The job did not end (no Completed): it stopped at a checkpoint and is still running in its record.
        #expect(completed.all.isEmpty, "\(completed.all)")
        let record = try F.record(state, job)
        #expect(record["state"] as? String == "running", "\(record)")
        let onDisk = try F.checkpointState(F.checkpoint(state, job))
        #expect(onDisk.totalIterations >= done && onDisk.iteration != 0, "SIGTERM's checkpoint at \(onDisk.totalIterations), reported \(done)")
        #expect(record["checkpointIteration"] as? Int == onDisk.totalIterations, "\(record)")
        #expect(daemon.stderrText.contains("stopped by the service shutdown at iteration \(onDisk.totalIterations)"), "\(daemon.stderrText)")

        let daemon2 = try DaemonProcess(bus: bus, stateDirectory: state)
        defer { daemon2.stop() }
        let client2 = try bus.connect()
        defer { client2.close() }
        let end = try #require(F.waitForEnd(client2, job), "the resumed job did not end")
        #expect(end["State"] == .string("completed") && end["Resumed"] == .uint32(1), "\(end)")
        #expect(try F.result(end)["resumed_from_iteration"]?.asUInt64() == UInt64(onDisk.totalIterations), "\(end)")
        try F.expectReferenceModel(state, end)
    }

    @Test func withAutoResumeOffTheJobWaitsForResumeWhichIsPrivilegedAndExact() throws {
        _ = try F.reference()
        let dir = try Paths.temporaryDirectory("resume-manual")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = try F.dataset(in: dir)
        let state = dir.appendingPathComponent("state")
        let bus = try PrivateBus()
        defer { bus.stop() }
        // The configuration's defaults: no auto-resume, a checkpoint after every iteration.
        let config = "auto_resume = no\ncheckpoint_iterations = 1\n"

        let daemon = try DaemonProcess(bus: bus, stateDirectory: state, configText: config)
        let client = try bus.connect()
        let job = try F.call(client, "Train", [.vardict(F.options(data))])[0].asObjectPath()
        let done = try #require(F.waitForMidEpoch(client, job, minimum: 1))
        kill(daemon.process.processIdentifier, SIGKILL)
        daemon.process.waitUntilExit()
        client.close()
        daemon.stop()
        let onDisk = try F.checkpointState(F.checkpoint(state, job))
        #expect(onDisk.totalIterations >= done, "the configuration's checkpoint_iterations = 1 applied")

        // Not resumed: failed, saying how to continue; Resume is privileged like Train.
        let polkit = try FakePolkit(bus: bus, allowed: [])
        defer { polkit.close() }
        let daemon2 = try DaemonProcess(bus: bus, stateDirectory: state, arguments: ["--authorization", "polkit"], configText: config)
        defer { daemon2.stop() }
        let client2 = try bus.connect()
        defer { client2.close() }
        let stopped = try F.props(client2, job)
        #expect(stopped["State"] == .string("failed") && stopped["Resumed"] == .uint32(0), "\(stopped)")
        let message = (try? F.result(stopped)["message"]?.asString()) ?? ""
        #expect(message.contains("Resume") && message.contains("iteration \(onDisk.totalIterations)"), "\(message)")
        #expect(try F.result(stopped)["error"]?.asString() == F.E + "Failed")
        let denied = F.error { try F.resume(client2, job) }
        #expect(denied?.name == F.E + "NotAuthorized", "\(String(describing: denied))")
        #expect(polkit.actionsAsked == [API.Action.train], "\(polkit.actionsAsked)")
        #expect(try F.props(client2, job)["State"] == .string("failed"), "a refused Resume changes nothing")
        polkit.allow(API.Action.train)
        let unknownOption = F.error { try F.resume(client2, job, ["from": .uint32(0)]) }
        #expect(unknownOption?.name == F.E + "InvalidArgument", "\(String(describing: unknownOption))")

        try F.resume(client2, job)
        let again = F.error { try F.resume(client2, job) }
        #expect(again?.name == F.E + "Failed" && again?.message.contains("only a failed or cancelled job") == true, "\(String(describing: again))")
        #expect(try F.props(client2, job)["Resumed"] == .uint32(1))

        // Cancelled in the next epoch: it writes a checkpoint where it stands, and Resume continues from there.
        let second = try #require(F.waitForMidEpoch(client2, job, minimum: F.perEpoch + 1))
        _ = try client2.call(destination: D.name, path: job, interface: D.job, method: "Cancel", [.vardict([:])])
        let cancelled = try #require(F.waitForEnd(client2, job))
        #expect(cancelled["State"] == .string("cancelled"), "\(cancelled)")
        let atCancel = try F.checkpointState(F.checkpoint(state, job))
        #expect(atCancel.totalIterations >= second && atCancel.iteration != 0, "\(atCancel.totalIterations) vs \(second)")
        try F.resume(client2, job)
        let end = try #require(F.waitForEnd(client2, job))
        #expect(end["State"] == .string("completed") && end["Resumed"] == .uint32(2), "\(end)")
        #expect(try F.result(end)["resumed_from_iteration"]?.asUInt64() == UInt64(atCancel.totalIterations))
        try F.expectReferenceModel(state, end)

        // Resume of a completed job, of a job that does not exist: named errors; the daemon serves on.
        let completedJob = F.error { try F.resume(client2, job) }
        #expect(completedJob?.name == F.E + "Failed" && completedJob?.message.contains("has completed") == true, "\(String(describing: completedJob))")
        let unknown = F.error { try F.resume(client2, D.root + "/jobs/999") }
        #expect(unknown?.name == BusError.Name.unknownObject, "\(String(describing: unknown))")
        #expect(try F.call(client2, "ListModels", [.vardict([:])])[0].asObjectPaths().count == 1)
    }

    @Test func checkpointDeletedOrDamagedOrDataSetMovedGetNamedErrorsAndNothingIsLost() throws {
        _ = try F.reference()
        let dir = try Paths.temporaryDirectory("resume-bad")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = try F.dataset(in: dir)
        let state = dir.appendingPathComponent("state")
        let bus = try PrivateBus()
        defer { bus.stop() }
        let every: [String: DBusValue] = ["checkpoint_iterations": .uint32(1)]

        /// Starts a daemon, runs `body` with a client, and stops it with SIGKILL.
        func killed<T>(_ body: (BusConnection) throws -> T) throws -> T {
            let daemon = try DaemonProcess(bus: bus, stateDirectory: state)
            let client = try bus.connect()
            defer {
                client.close()
                kill(daemon.process.processIdentifier, SIGKILL)
                daemon.process.waitUntilExit()
                daemon.stop()
            }
            return try body(client)
        }
        /// A new job, killed in the middle of its first epoch.
        func interruptedJob(_ c: BusConnection) throws -> String {
            let job = try F.call(c, "Train", [.vardict(F.options(data, every))])[0].asObjectPath()
            _ = try #require(F.waitForMidEpoch(c, job, minimum: 1))
            return job
        }

        // 1. The checkpoint is deleted while the daemon is down: the job fails with the reason at
        //    start, the daemon starts and serves, and Resume says so too.
        let job1 = try killed { try interruptedJob($0) }
        try FileManager.default.removeItem(at: F.checkpoint(state, job1))
        // 2. The checkpoint is damaged (one byte of the tensor data) while the daemon is down.
        let job2 = try killed { c -> String in
            let p = try #require(F.waitForEnd(c, job1, seconds: 120))
            #expect(p["State"] == .string("failed") && p["Resumed"] == .uint32(1), "\(p)")
            let message = (try? F.result(p)["message"]?.asString()) ?? ""
            #expect(message.contains("checkpoint") && message.contains("missing"), "\(message)")
            #expect(try F.result(p)["error"]?.asString() == F.E + "Failed")
            let again = F.error { try F.resume(c, job1) }
            #expect(again?.name == F.E + "Failed" && again?.message.contains("missing") == true, "\(String(describing: again))")
            #expect(try F.props(c, job1)["State"] == .string("failed"))
            return try interruptedJob(c)
        }
        var bytes = try Data(contentsOf: F.checkpoint(state, job2))
        bytes[bytes.count - 4096] ^= 0x01
        try bytes.write(to: F.checkpoint(state, job2))
        // 3. The data set is moved away while the daemon is down.
        let job3 = try killed { c -> String in
            let p = try #require(F.waitForEnd(c, job2, seconds: 120))
            #expect(p["State"] == .string("failed"), "\(p)")
            let message = (try? F.result(p)["message"]?.asString()) ?? ""
            #expect(message.contains("damaged"), "\(message)")
            let again = F.error { try F.resume(c, job2) }
            #expect(again?.name == F.E + "Failed" && again?.message.contains("damaged") == true, "\(String(describing: again))")
            return try interruptedJob(c)
        }
        let checkpoint3 = try F.checkpointState(F.checkpoint(state, job3))
        let moved = dir.appendingPathComponent("moved-away")
        try FileManager.default.moveItem(at: data, to: moved)

        let daemon = try DaemonProcess(bus: bus, stateDirectory: state)
        defer { daemon.stop() }
        let client = try bus.connect()
        defer { client.close() }
        let p3 = try #require(F.waitForEnd(client, job3, seconds: 120))
        #expect(p3["State"] == .string("failed") && p3["Resumed"] == .uint32(1), "\(p3)")
        #expect(try F.result(p3)["error"]?.asString() == F.E + "DatasetInvalid", "\(p3)")
        let missing = F.error { try F.resume(client, job3) }
        #expect(missing?.name == F.E + "DatasetInvalid" && missing?.message.contains(data.path) == true, "\(String(describing: missing))")
        // The earlier failures stay failed, and the store and the daemon are fine.
        #expect(try F.props(client, job1)["State"] == .string("failed") && F.props(client, job2)["State"] == .string("failed"))
        #expect(try F.call(client, "ListModels", [.vardict([:])])[0].asObjectPaths().isEmpty)

        // Nothing was lost: with the data set back, Resume continues job 3 from its checkpoint, to the same model.
        #expect(FileManager.default.fileExists(atPath: F.checkpoint(state, job3).path))
        try FileManager.default.moveItem(at: moved, to: data)
        try F.resume(client, job3)
        let end = try #require(F.waitForEnd(client, job3))
        #expect(end["State"] == .string("completed") && end["Resumed"] == .uint32(2), "\(end)")
        #expect(try F.result(end)["resumed_from_iteration"]?.asUInt64() == UInt64(checkpoint3.totalIterations))
        try F.expectReferenceModel(state, end)
    }
}
