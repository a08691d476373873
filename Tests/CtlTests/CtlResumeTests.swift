// Issue 23 from the client's side: `affinityctl job watch` follows a training job across a kill
// and restart of affinityd (it waits for the daemon and says "resumed from iteration K"), `jobs`
// shows the resumes, and `job resume` continues a cancelled job or names why it cannot.
import Bus
import Foundation
import Testing

@Suite("affinityctl and resumed training jobs", .serialized)
struct CtlResumeTests {
    /// The iteration a job's Metrics report (nil when unreadable).
    static func iteration(_ client: BusConnection, _ job: Int) -> Int? {
        guard let m = try? client.getProperty(destination: "org.lesionaffinity.Affinity1", path: "/org/lesionaffinity/Affinity1/jobs/\(job)",
                                              interface: "org.lesionaffinity.Affinity1.Job", name: "Metrics", timeout: .seconds(5)).asDoubleDict()
        else { return nil }
        return m["iteration"].map(Int.init)
    }

    @Test func watchFollowsAJobAcrossAKillAndRestartAndResumeContinuesACancelledJob() throws {
        let dir = try CtlPaths.temporaryDirectory("resume")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = try CtlFixtures.dataset(in: dir)
        let state = dir.appendingPathComponent("state")
        let bus = try CtlBus()
        defer { bus.stop() }
        // 3 epochs of 3 iterations, a checkpoint after every iteration.
        let train = ["train", "--dataset", data.path, "--epochs", "3", "--iterations-per-epoch", "3", "--image-size", "128",
                     "--affinities", "8", "--seed", "3", "--checkpoint-iterations", "1", "--no-wait", "--json"]

        var daemon = try CtlDaemon(bus: bus, stateDirectory: state)
        let started = try ctl(bus, train)
        #expect(started.status == 0, "\(started)")
        let job = try #require(started.json["job"] as? Int, "\(started)")
        let (watch, outPipe, errPipe) = try startCtl(["job", "watch", String(job), "--reconnect-timeout", "180", "--bus", bus.address])
        let out = Output(outPipe), err = Output(errPipe)
        let client = try BusConnection(address: bus.address)
        defer { client.close() }
        // Killed once the job has done an iteration and the watch shows it running.
        #expect(eventually(300) { (Self.iteration(client, job) ?? 0) >= 1 && out.text.contains("running") }, "\(out.text)")
        let before = Self.iteration(client, job) ?? 0
        kill(daemon.process.processIdentifier, SIGKILL)
        daemon.process.waitUntilExit()
        #expect(eventually(60) { out.text.contains("affinityd is not reachable") }, "\(out.text)")
        #expect(watch.isRunning, "the watch waits for the daemon: \(out.text) \(err.text)")

        daemon = try CtlDaemon(bus: bus, stateDirectory: state)
        defer { daemon.stop() }
        #expect(eventually(300) { !watch.isRunning }, "\(out.text)")
        watch.waitUntilExit()
        let text = out.rest()
        _ = err.rest()
        #expect(watch.terminationStatus == 0, "\(text)\n\(err.text)")
        #expect(text.contains("affinityd is back"), "\(text)")
        let resumedLine = try #require(text.split(separator: "\n").first { $0.contains("resumed from iteration") }, "\(text)")
        let from = Int(resumedLine.split(separator: " ").last { Int($0.trimmingCharacters(in: .punctuationCharacters)) != nil }?
            .trimmingCharacters(in: .punctuationCharacters) ?? "") ?? -1
        #expect(from >= before && from < 9, "resumed from \(from), the job had reported \(before): \(text)")
        #expect(text.contains("job \(job) (train): completed"), "\(text)")

        // jobs: the resume is shown, in both modes.
        let jobs = try ctl(bus, ["jobs", "--json"])
        let entry = (jobs.json["jobs"] as? [[String: Any]] ?? []).first { $0["job"] as? Int == job }
        #expect(entry?["resumed"] as? Int == 1 && entry?["state"] as? String == "completed", "\(jobs)")
        let table = try ctl(bus, ["jobs"])
        #expect(table.stdout.contains("RESUMED") && table.stdout.contains(" 1@\(from) "), "\(table)")

        // job resume: a completed job and an unknown one are refused, with their exit codes.
        let done = try ctl(bus, ["job", "resume", String(job), "--json"])
        #expect(done.status == 1 && done.json["error"] as? String == "org.lesionaffinity.Affinity1.Error.Failed", "\(done)")
        let unknown = try ctl(bus, ["job", "resume", "999"])
        #expect(unknown.status == 4 && unknown.stderr.contains("There is no job 999."), "\(unknown)")

        // A cancelled job: cancel --wait (3), then job resume waits for it to complete (0).
        let second = try ctl(bus, train)
        let job2 = try #require(second.json["job"] as? Int, "\(second)")
        #expect(eventually(300) { (Self.iteration(client, job2) ?? 0) >= 1 })
        let cancel = try ctl(bus, ["job", "cancel", String(job2), "--wait"])
        #expect(cancel.status == 3, "\(cancel)")
        let resume = try ctl(bus, ["job", "resume", String(job2)])
        #expect(resume.status == 0 && resume.stdout.contains("Resumed job \(job2) (resumed from iteration"), "\(resume)")
        #expect(resume.stdout.contains("job \(job2) (train): completed"), "\(resume)")
        let after = try ctl(bus, ["job", "watch", String(job2), "--json"])
        #expect(after.jsonLines.last?["resumed"] as? Int == 1, "\(after)")
    }
}
