// affinityctl end to end: the built binary against the real affinityd on a private bus.
import Bus
import Foundation
import Imaging
import Testing

/// Collects a pipe's output as it arrives.
final class Output: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    convenience init(_ pipe: Pipe) {
        self.init(pipe: pipe)
        pipe.fileHandleForReading.readabilityHandler = { [self] h in
            let d = h.availableData
            lock.withLock { data.append(d) }
        }
    }
    private let pipe: Pipe
    init(pipe: Pipe) { self.pipe = pipe }
    var text: String { lock.withLock { String(decoding: data, as: UTF8.self) } }

    /// Everything, once the writer has exited: stops the handler and reads what is left.
    func rest() -> String {
        pipe.fileHandleForReading.readabilityHandler = nil
        let tail = pipe.fileHandleForReading.readDataToEndOfFile()
        lock.withLock { data.append(tail) }
        return text
    }
}

@Suite("affinityctl without a daemon")
struct CtlWithoutDaemonTests {
    static let nowhere = "unix:path=/tmp/ctl-test-nobody-listens-here"

    @Test(arguments: [["status"], ["jobs"], ["models", "list"], ["plugins"], ["job", "watch", "1"]])
    func daemonAbsentIsUnavailable(_ command: [String]) throws {
        let human = try ctl(command + ["--bus", Self.nowhere])
        #expect(human.status == 69, "\(human)")
        #expect(human.stderr.contains("Cannot connect to \(Self.nowhere)"), "\(human)")
        #expect(human.stdout.isEmpty)
        // Global options also before the subcommand; the error as one JSON object.
        let json = try ctl(["--json", "--bus", Self.nowhere] + command)
        #expect(json.status == 69, "\(json)")
        #expect(json.json["exit_code"] as? Int == 69 && (json.json["message"] as? String)?.isEmpty == false, "\(json)")
    }

    @Test func busWithoutAffinitydAndEnvironment() throws {
        let bus = try CtlBus()
        defer { bus.stop() }
        let r = try ctl(bus, ["status"])
        #expect(r.status == 69 && r.stderr.contains("affinityd"), "\(r)")
        let j = try ctl(bus, ["status", "--json"])
        #expect(j.status == 69 && j.json["error"] as? String == "org.freedesktop.DBus.Error.ServiceUnknown", "\(j)")
        // AFFINITY_BUS_ADDRESS names the bus when --bus is absent.
        let file = try CtlPaths.temporaryDirectory("env")
        defer { try? FileManager.default.removeItem(at: file) }
        let slice = try CtlFixtures.slice(in: file)
        let env = try ctl(["analyse", slice.path, "--json"], environment: ["AFFINITY_BUS_ADDRESS": bus.address])
        #expect(env.status == 69, "\(env)")
        // One JSON line per file, the failed file's carrying its error.
        let images = env.jsonLines
        #expect(images.count == 1 && images.first?["file"] as? String == slice.path, "\(env)")
        #expect(images.first?["error"] as? String == "org.freedesktop.DBus.Error.ServiceUnknown", "\(env)")
        #expect(images.first?["exit_code"] as? Int == 69, "\(env)")
        // version answers without a daemon.
        let v = try ctl(bus, ["version", "--json"])
        #expect(v.status == 0 && v.json["client"] as? String == "0.1.0" && v.json["daemon"] is NSNull, "\(v)")
        let vh = try ctl(bus, ["version"])
        #expect(vh.status == 0 && vh.stdout.contains("affinityctl 0.1.0") && vh.stdout.contains("not reachable"), "\(vh)")
    }

    @Test(arguments: [["job", "watch", "abc"], ["analyse"], ["frobnicate"], ["models", "show"], ["train"], ["status", "--colour"]])
    func usageErrors(_ args: [String]) throws {
        let r = try ctl(args + ["--bus", Self.nowhere])
        #expect(r.status == 64, "\(r)")
    }
}

@Suite("affinityctl against affinityd", .serialized)
struct CtlDaemonTests {
    @Test func statusModelsAndAnalyse() throws {
        let dir = try CtlPaths.temporaryDirectory("analyse")
        defer { try? FileManager.default.removeItem(at: dir) }
        let bus = try CtlBus()
        defer { bus.stop() }
        let daemon = try CtlDaemon(bus: bus, stateDirectory: dir.appendingPathComponent("state"))
        defer { daemon.stop() }
        let slice = try CtlFixtures.slice(in: dir)

        // status and plugins, both modes, before any model.
        let status = try ctl(bus, ["status", "--json"])
        #expect(status.status == 0 && status.json["state"] as? String == "degraded" && status.json["default_model"] is NSNull, "\(status)")
        #expect(status.json["api_version"] as? Int == 1 && (status.json["device"] as? String)?.contains("CPU") == true)
        let statusText = try ctl(bus, ["status"])
        #expect(statusText.status == 0 && statusText.stdout.contains("state:          degraded")
                && statusText.stdout.contains("default model:  none"), "\(statusText)")
        // Plugins: whatever the daemon loaded (none, or the build folder's), the same in both modes.
        let plugins = try ctl(bus, ["plugins", "--json"])
        let pluginList = plugins.json["plugins"] as? [[String: Any]]
        #expect(plugins.status == 0 && pluginList != nil, "\(plugins)")
        let pluginsText = try ctl(bus, ["plugins"])
        #expect(pluginsText.status == 0, "\(pluginsText)")
        if let pluginList, !pluginList.isEmpty {
            #expect(pluginsText.stdout.split(separator: "\n").count == pluginList.count, "\(pluginsText)")
            for p in pluginList { if let id = p["id"] as? String { #expect(pluginsText.stdout.contains(id)) } }
        } else {
            #expect(pluginsText.stdout == "No plugins loaded.\n", "\(pluginsText)")
        }
        let empty = try ctl(bus, ["models", "--json"])
        #expect(empty.status == 0 && (empty.json["models"] as? [Any])?.isEmpty == true, "\(empty)")
        let emptyText = try ctl(bus, ["models", "list"])
        #expect(emptyText.status == 0 && emptyText.stdout.hasPrefix("No models."), "\(emptyText)")
        // No model yet: ModelNotReady, a failure (1).
        let notReady = try ctl(bus, ["analyse", slice.path, "--json"])
        #expect(notReady.status == 1, "\(notReady)")
        #expect(notReady.jsonLines.count == 1 && notReady.jsonLines.first?["error"] as? String == "org.lesionaffinity.Affinity1.Error.ModelNotReady",
                "\(notReady)")

        // models import (JSON and text), set-default, show, list.
        let modelA = try CtlFixtures.smallModel(in: dir, seed: 7)
        let modelB = try CtlFixtures.smallModel(in: dir, seed: 8)
        let imported = try ctl(bus, ["models", "import", modelA.path, "--name", "small-a", "--json"])
        #expect(imported.status == 0 && imported.json["name"] as? String == "small-a" && imported.json["affinities"] as? Int == 8, "\(imported)")
        let idA = try #require(imported.json["id"] as? String)
        #expect(imported.json["default"] as? Bool == false)
        let importedText = try ctl(bus, ["models", "import", modelB.path, "--name", "small-b", "--set-default"])
        #expect(importedText.status == 0 && importedText.stdout.contains("Imported model") && importedText.stdout.contains("now the default"),
                "\(importedText)")
        let setA = try ctl(bus, ["models", "set-default", idA, "--json"])
        #expect(setA.status == 0 && setA.json["default"] as? String == idA, "\(setA)")
        let list = try ctl(bus, ["models", "list", "--json"])
        let models = list.json["models"] as? [[String: Any]] ?? []
        #expect(list.status == 0 && models.count == 2 && list.json["default"] as? String == idA, "\(list)")
        let idB = try #require(models.first { $0["id"] as? String != idA }?["id"] as? String)
        let listText = try ctl(bus, ["models"])
        #expect(listText.stdout.contains("* \(idA)") && listText.stdout.contains("  \(idB)") && listText.stdout.contains("small-b"), "\(listText)")
        let show = try ctl(bus, ["models", "show", idB, "--json"])
        #expect(show.status == 0 && show.json["name"] as? String == "small-b" && (show.json["sha256"] as? String)?.count == 64, "\(show)")
        let showText = try ctl(bus, ["models", "show", idA])
        #expect(showText.status == 0 && showText.stdout.contains("name:        small-a") && showText.stdout.contains("(default)"), "\(showText)")
        let setText = try ctl(bus, ["models", "set-default", idB])
        #expect(setText.status == 0 && setText.stdout.contains("default model is now \(idB)"), "\(setText)")
        // Unknown models: not found (4), in both modes.
        for args in [["models", "show", "0123456789abcdef"], ["models", "set-default", "0123456789abcdef"]] {
            let r = try ctl(bus, args)
            #expect(r.status == 4, "\(args): \(r)")
            let j = try ctl(bus, args + ["--json"])
            #expect(j.status == 4 && j.json["exit_code"] as? Int == 4, "\(args): \(j)")
        }

        // analyse --json with the label map and the overlay (one Analyse call).
        let overlay = dir.appendingPathComponent("overlay.png").path
        let mask = dir.appendingPathComponent("mask.png").path
        let a = try ctl(bus, ["analyse", slice.path, "--model", idA, "--overlay", overlay, "--mask", mask, "--json"])
        #expect(a.status == 0, "\(a)")
        #expect(a.jsonLines.count == 1 && a.stdout.split(separator: "\n").count == 1, "\(a)")
        let r = try #require(a.jsonLines.first)
        #expect(r["file"] as? String == slice.path && r["error"] == nil, "\(r)")
        let probabilities = r["probabilities"] as? [Double] ?? []
        let index = r["class_index"] as? Int ?? -1
        #expect(probabilities.count == 3 && abs(probabilities.reduce(0, +) - 1) < 1e-4, "\(r)")
        #expect((r["class"] as? String)?.isEmpty == false, "\(r)")
        #expect(index >= 0 && index < 3 && r["probability"] as? Double == probabilities[index])
        #expect(r["model"] as? String == idA && (r["model_sha256"] as? String)?.count == 64)
        let lesions = r["lesions"] as? [[String: Any]] ?? []
        #expect(r["lesion_count"] as? Int == lesions.count)
        let areas = lesions.map { $0["area_px"] as? Int ?? 0 }
        #expect(r["lesion_area_px"] as? Int == areas.reduce(0, +))
        // The lung field the daemon reports is LungField's for this slice; the share is lesions over it.
        let lung = r["lung_field_area_px"] as? Int ?? -1
        #expect(lung == LungField.area(try PNG.read(path: slice.path).grayImage()) && lung > 10_000, "\(r)")
        let share = r["lesion_share_of_lung_field"] as? Double ?? -1
        #expect(abs(share - Double(areas.reduce(0, +)) / Double(max(lung, 1))) < 1e-9, "\(r)")
        // The label map on disk is the daemon's: each label's pixel count is that lesion's area.
        let labels = try PNG.read(path: mask)
        #expect(labels.width == 512 && labels.height == 512 && labels.format == .gray)
        for (i, area) in areas.enumerated() {
            #expect(labels.samples.filter { Int($0) == i + 1 }.count == area)
        }
        #expect(labels.samples.filter { $0 != 0 }.count == areas.reduce(0, +))
        // The overlay: the slice in colour; tinted where lesions are, gray elsewhere.
        let drawn = try PNG.read(path: overlay)
        #expect(drawn.width == 512 && drawn.height == 512 && drawn.format == .rgb)
        let original = try PNG.read(path: slice.path)
        var tinted = 0
        for p in 0..<(512 * 512) where labels.samples[p] != 0 {
            let (rr, gg, bb) = (drawn.samples[3 * p], drawn.samples[3 * p + 1], drawn.samples[3 * p + 2])
            if rr != gg || gg != bb { tinted += 1 }
        }
        // (Score labels, drawn in black above the boxes, may cover a few lesion pixels.)
        let lesionPixels = labels.samples.filter { $0 != 0 }.count
        #expect(Double(tinted) >= 0.9 * Double(lesionPixels), "\(tinted) of \(lesionPixels)")
        if let far = (0..<(512 * 512)).first(where: { p in
            let x = p % 512, y = p / 512
            return lesions.allSatisfy { l in
                let b = l["box"] as? [Double] ?? [0, 0, 0, 0]
                return Double(x) < b[0] - 20 || Double(x) > b[2] + 20 || Double(y) < b[1] - 20 || Double(y) > b[3] + 20
            }
        }) {
            #expect(drawn.samples[3 * far] == drawn.samples[3 * far + 1] && Int(drawn.samples[3 * far]) == Int(original.samples[far * original.channels]))
        }

        // analyse for people (a second Analyse call, with the default model).
        let text = try ctl(bus, ["analyse", slice.path])
        #expect(text.status == 0, "\(text)")
        #expect(text.stdout.hasPrefix("\(slice.path): ") && (text.stdout.contains("probability 0.") || text.stdout.contains("probability 1.")), "\(text)")
        #expect(text.stdout.contains("total area") && text.stdout.contains("model \(idB)"), "\(text)")
        #expect(text.stdout.contains("% of the lung field)"), "\(text)")

        // Missing file: not found (4); not an image: failed (1); both reported, the first failure's code wins.
        let junk = dir.appendingPathComponent("notes.txt")
        try Data("these are not pixels\n".utf8).write(to: junk)
        let missing = try ctl(bus, ["analyse", dir.appendingPathComponent("absent.png").path])
        #expect(missing.status == 4 && missing.stderr.contains("no such file"), "\(missing)")
        let notImage = try ctl(bus, ["analyse", junk.path])
        #expect(notImage.status == 1 && notImage.stderr.contains("notes.txt"), "\(notImage)")
        let both = try ctl(bus, ["analyse", dir.appendingPathComponent("absent.png").path, junk.path, "--json"])
        let items = both.jsonLines
        #expect(both.status == 4 && items.count == 2 && both.stdout.split(separator: "\n").count == 2, "\(both)")
        #expect(items.first?["exit_code"] as? Int == 4 && items.last?["error"] as? String == "org.lesionaffinity.Affinity1.Error.UnsupportedFormat",
                "\(both)")
        // JSON lines, in the order given: failures and results mixed, one object per file.
        let mixed = try ctl(bus, ["analyse", slice.path, dir.appendingPathComponent("absent.png").path, "--json"])
        let lines = mixed.jsonLines
        #expect(mixed.status == 4 && lines.count == 2 && mixed.stdout.split(separator: "\n").count == 2, "\(mixed)")
        #expect(lines.map { $0["file"] as? String ?? "" } == [slice.path, dir.appendingPathComponent("absent.png").path], "\(mixed)")
        #expect(lines.first?["class"] is String && lines.first?["error"] == nil, "\(mixed)")
        #expect(lines.last?["error"] as? String == "NotFound" && lines.last?["exit_code"] as? Int == 4, "\(mixed)")
        let unknownModel = try ctl(bus, ["analyse", slice.path, "--model", "0123456789abcdef"])
        #expect(unknownModel.status == 4, "\(unknownModel)")
        let directory = try ctl(bus, ["analyse", dir.path])
        #expect(directory.status == 1 && directory.stderr.contains("is a directory"), "\(directory)")
    }

    @Test func trainWatchCancelDetach() throws {
        let dir = try CtlPaths.temporaryDirectory("jobs")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = try CtlFixtures.dataset(in: dir)
        let bus = try CtlBus()
        defer { bus.stop() }
        let daemon = try CtlDaemon(bus: bus, stateDirectory: dir.appendingPathComponent("state"))
        defer { daemon.stop() }
        let small = ["--dataset", data.path, "--epochs", "1", "--iterations-per-epoch", "2", "--image-size", "128", "--seed", "3"]

        // train waits for the job; --json prints one object at the end.
        let train = try ctl(bus, ["train"] + small + ["--affinities", "8", "--name", "tiny", "--json"])
        #expect(train.status == 0 && train.json["state"] as? String == "completed" && train.json["detached"] as? Bool == false, "\(train)")
        let job1 = try #require(train.json["job"] as? Int)
        let model = try #require((train.json["result"] as? [String: Any])?["model"] as? String)
        let modelID = String(model.split(separator: "/").last!)
        #expect(train.json["operation"] as? String == "train" && train.json["total_epochs"] as? Int == 1)
        // Not on a terminal: plain lines, no bar.
        let finetune = try ctl(bus, ["finetune", modelID] + small)
        #expect(finetune.status == 0 && finetune.stdout.contains("(finetune): completed"), "\(finetune)")
        #expect(!finetune.stdout.contains("\r") && !finetune.stdout.contains("[#"), "\(finetune)")

        // jobs, both modes.
        let jobs = try ctl(bus, ["jobs", "--json"])
        let list = jobs.json["jobs"] as? [[String: Any]] ?? []
        #expect(jobs.status == 0 && list.count == 2 && list.first?["job"] as? Int == job1, "\(jobs)")
        #expect(list.map { $0["operation"] as? String ?? "" } == ["train", "finetune"])
        let jobsText = try ctl(bus, ["jobs"])
        #expect(jobsText.status == 0 && jobsText.stdout.contains("JOB") && jobsText.stdout.contains("completed"), "\(jobsText)")
        // job watch on a finished job: JSON lines / one line, exit 0.
        let watch = try ctl(bus, ["job", "watch", String(job1), "--json"])
        #expect(watch.status == 0 && watch.jsonLines.last?["state"] as? String == "completed", "\(watch)")
        let watchText = try ctl(bus, ["job", "watch", String(job1)])
        #expect(watchText.status == 0 && watchText.stdout.contains("job \(job1) (train): completed"), "\(watchText)")
        // Unknown job: not found (4), both modes.
        for args in [["job", "watch", "999"], ["job", "cancel", "999"]] {
            let r = try ctl(bus, args)
            #expect(r.status == 4 && r.stderr.contains("There is no job 999."), "\(args): \(r)")
            let j = try ctl(bus, args + ["--json"])
            #expect(j.status == 4 && j.json["exit_code"] as? Int == 4, "\(args): \(j)")
        }
        let unknownModel = try ctl(bus, ["finetune", "0123456789abcdef"] + small)
        #expect(unknownModel.status == 4, "\(unknownModel)")
        let badDataset = try ctl(bus, ["train", "--dataset", dir.appendingPathComponent("nothing").path, "--json"])
        #expect(badDataset.status == 1 && badDataset.json["error"] as? String == "org.lesionaffinity.Affinity1.Error.DatasetInvalid", "\(badDataset)")

        // A long job: Ctrl-C while train waits detaches (130) and the job goes on.
        let long = ["--dataset", data.path, "--epochs", "200", "--iterations-per-epoch", "1", "--image-size", "128", "--affinities", "8"]
        let (p, outPipe, errPipe) = try startCtl(["train"] + long + ["--bus", bus.address])
        let out = Output(outPipe)
        _ = Output(errPipe)
        #expect(eventually { out.text.contains("Started job") }, "\(out.text)")
        #expect(eventually { out.text.contains("running") }, "\(out.text)")
        kill(p.processIdentifier, SIGINT)
        p.waitUntilExit()
        _ = out.rest()
        #expect(p.terminationStatus == 130, "\(out.text)")
        #expect(out.text.contains("Detached from job"), "\(out.text)")
        let job3 = try #require(out.text.split(separator: "\n").first { $0.hasPrefix("Started job ") }
            .flatMap { Int($0.dropFirst("Started job ".count).prefix { $0.isNumber }) })
        let state = try ctl(bus, ["jobs", "--json"]).json["jobs"] as? [[String: Any]] ?? []
        #expect(state.first { $0["job"] as? Int == job3 }?["state"] as? String == "running", "\(state)")

        // job watch --json while it runs: JSON lines; with --cancel-on-interrupt, Ctrl-C cancels: exit 3.
        let (w, wOutPipe, wErrPipe) = try startCtl(["job", "watch", String(job3), "--json", "--cancel-on-interrupt", "--bus", bus.address])
        let wOut = Output(wOutPipe)
        _ = Output(wErrPipe)
        #expect(eventually { wOut.text.split(separator: "\n").count >= 2 }, "\(wOut.text)")
        kill(w.processIdentifier, SIGINT)
        w.waitUntilExit()
        _ = wOut.rest()
        #expect(w.terminationStatus == 3, "\(wOut.text)")
        let lines = wOut.text.split(separator: "\n").compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any]
        }
        #expect(lines.count >= 2 && lines.allSatisfy { $0["job"] as? Int == job3 }, "\(wOut.text)")
        #expect(lines.first?["state"] as? String == "running" && lines.last?["state"] as? String == "cancelled", "\(wOut.text)")
        let cancelled = try ctl(bus, ["job", "watch", String(job3)])
        #expect(cancelled.status == 3 && cancelled.stdout.contains("cancelled"), "\(cancelled)")

        // job cancel: another long job, cancelled with --wait (3); cancelling it again fails (1).
        let started = try ctl(bus, ["train"] + long + ["--no-wait", "--json"])
        let job4 = try #require(started.json["job"] as? Int, "\(started)")
        #expect(started.status == 0 && ["queued", "running"].contains(started.json["state"] as? String ?? ""), "\(started)")
        let cancel = try ctl(bus, ["job", "cancel", String(job4), "--wait", "--json"])
        #expect(cancel.status == 3 && cancel.json["state"] as? String == "cancelled", "\(cancel)")
        let again = try ctl(bus, ["job", "cancel", String(job4)])
        #expect(again.status == 1 && again.stderr.contains("already finished"), "\(again)")
        let watchCancelled = try ctl(bus, ["job", "watch", String(job4), "--json"])
        #expect(watchCancelled.status == 3 && watchCancelled.jsonLines.last?["state"] as? String == "cancelled", "\(watchCancelled)")
        // The same in text: train --no-wait, job cancel, then job watch sees it cancelled.
        let startedText = try ctl(bus, ["train"] + long + ["--no-wait"])
        let job5 = try #require(startedText.stdout.split(separator: " ").dropFirst(2).first.flatMap { Int($0) }, "\(startedText)")
        #expect(startedText.status == 0 && startedText.stdout.contains("affinityctl job watch \(job5)"), "\(startedText)")
        let cancelText = try ctl(bus, ["job", "cancel", String(job5)])
        #expect(cancelText.status == 0 && cancelText.stdout == "Cancel requested for job \(job5).\n", "\(cancelText)")
        let watch5 = try ctl(bus, ["job", "watch", String(job5), "--json"])
        #expect(watch5.status == 3 && watch5.jsonLines.last?["state"] as? String == "cancelled", "\(watch5)")
        // finetune --no-wait --json, then watched to its end.
        let ft = try ctl(bus, ["finetune", modelID] + small + ["--no-wait", "--json"])
        let job6 = try #require(ft.json["job"] as? Int, "\(ft)")
        #expect(ft.json["operation"] as? String == "finetune", "\(ft)")
        let watch6 = try ctl(bus, ["job", "watch", String(job6)])
        #expect(watch6.status == 0 && watch6.stdout.contains("job \(job6) (finetune): completed"), "\(watch6)")
        #expect(daemon.process.isRunning)
    }

    @Test func progressBarOnATerminal() throws {
        let dir = try CtlPaths.temporaryDirectory("tty")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = try CtlFixtures.dataset(in: dir)
        let bus = try CtlBus()
        defer { bus.stop() }
        let daemon = try CtlDaemon(bus: bus, stateDirectory: dir.appendingPathComponent("state"))
        defer { daemon.stop() }
        let args = ["--bus", bus.address, "train", "--dataset", data.path, "--epochs", "3", "--iterations-per-epoch", "2",
                    "--image-size", "128", "--affinities", "8", "--seed", "5"]
        let tty = try ctlOnTerminal(args)
        #expect(tty.status == 0, "\(tty)")
        // Frames are redrawn in place: carriage return, bar, clear to end of line.
        let frames = tty.stdout.components(separatedBy: "\r").filter { $0.hasPrefix("job 1 [") }
        #expect(frames.count >= 3, "\(tty.stdout.debugDescription)")
        #expect(tty.stdout.contains("\u{1B}[K"))
        let running = frames.filter { $0.contains("#") && !$0.contains("100%") }
        #expect(running.contains { $0.contains("loss 0.") || $0.contains("loss 1.") }, "\(frames)")
        #expect(running.contains { $0.range(of: #"ETA \d+:\d\d"#, options: .regularExpression) != nil }, "\(frames)")
        #expect(frames.contains { $0.contains("epoch 1/3") } && frames.contains { $0.contains("100%") && $0.contains("epoch 3/3") }, "\(frames)")
        #expect(tty.stdout.contains("job 1 (train): completed"), "\(tty.stdout.debugDescription)")
        // The same kind of command through a pipe: no bar, no carriage returns.
        let piped = try ctl(bus, ["job", "watch", "1"])
        #expect(piped.status == 0 && !piped.stdout.contains("\r") && !piped.stdout.contains("[#"), "\(piped)")
    }

    @Test func localRunStartsAndStopsAPrivateDaemon() throws {
        let dir = try CtlPaths.temporaryDirectory("local")
        defer { try? FileManager.default.removeItem(at: dir) }
        let state = dir.appendingPathComponent("xdg")
        let env = ["XDG_STATE_HOME": state.path, "AFFINITY_BUS_ADDRESS": "unix:path=\(dir.path)/no-bus-here"]
        let model = try CtlFixtures.smallModel(in: dir)
        let slice = try CtlFixtures.slice(in: dir)
        func leftovers() -> [String] {
            let procs = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
            return procs.compactMap { pid -> String? in
                guard Int(pid) != nil, let cmd = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline")) else { return nil }
                let text = String(decoding: cmd, as: UTF8.self).replacingOccurrences(of: "\0", with: " ")
                return text.contains(state.path) && !text.contains("affinityctl") ? text : nil
            }
        }
        let imported = try ctl(["--local", "models", "import", model.path, "--set-default", "--name", "local", "--json"], environment: env)
        #expect(imported.status == 0 && imported.json["default"] as? Bool == true, "\(imported)")
        #expect(FileManager.default.fileExists(atPath: state.appendingPathComponent("affinity/models").path))
        #expect(leftovers().isEmpty, "\(leftovers())")
        // The state persists to the next run; status shows the private bus.
        let status = try ctl(["status", "--local", "--json"], environment: env)
        #expect(status.status == 0 && status.json["default_model"] as? String == imported.json["id"] as? String, "\(status)")
        #expect((status.json["bus"] as? String)?.contains("affinityctl-") == true, "\(status)")
        let analysed = try ctl(["analyse", slice.path, "--local"], environment: env)
        #expect(analysed.status == 0 && analysed.stdout.contains("model \(imported.json["id"] as? String ?? "?")"), "\(analysed)")
        #expect(analysed.stderr.contains("started a private affinityd"), "\(analysed)")
        #expect(leftovers().isEmpty, "\(leftovers())")
        // With a daemon reachable, --local uses it.
        let bus = try CtlBus()
        defer { bus.stop() }
        let daemon = try CtlDaemon(bus: bus, stateDirectory: dir.appendingPathComponent("state"))
        defer { daemon.stop() }
        let reach = try ctl(["status", "--local", "--json", "--bus", bus.address], environment: env)
        #expect(reach.status == 0 && reach.json["bus"] as? String == bus.address && reach.stderr.isEmpty, "\(reach)")
    }

    @Test func notAuthorized() throws {
        let dir = try CtlPaths.temporaryDirectory("polkit")
        defer { try? FileManager.default.removeItem(at: dir) }
        let bus = try CtlBus()
        defer { bus.stop() }
        let polkit = try DenyingPolkit(bus: bus)
        defer { polkit.close() }
        let daemon = try CtlDaemon(bus: bus, stateDirectory: dir.appendingPathComponent("state"), authorization: "polkit")
        defer { daemon.stop() }
        let model = try CtlFixtures.smallModel(in: dir)
        let denied = try ctl(bus, ["models", "import", model.path])
        #expect(denied.status == 77, "\(denied)")
        let deniedJSON = try ctl(bus, ["train", "--dataset", dir.path, "--json"])
        #expect(deniedJSON.status == 77 && deniedJSON.json["error"] as? String == "org.lesionaffinity.Affinity1.Error.NotAuthorized", "\(deniedJSON)")
        // Unprivileged calls still work.
        #expect(try ctl(bus, ["models", "list"]).status == 0)
        // A file this user may not read (unless running as root, who reads everything).
        if getuid() != 0 {
            let locked = dir.appendingPathComponent("locked.png")
            try Data([0]).write(to: locked)
            chmod(locked.path, 0)
            #expect(try ctl(bus, ["analyse", locked.path]).status == 77)
        }
    }
}

@Suite("affinityctl generated documentation")
struct CtlDocsTests {
    @Test(arguments: [("bash", "affinityctl.bash"), ("zsh", "_affinityctl"), ("fish", "affinityctl.fish")])
    func completionsAreCurrent(_ shell: String, _ file: String) throws {
        let r = try ctl(["--generate-completion-script", shell])
        let committed = try String(contentsOf: CtlPaths.repository.appendingPathComponent("completions/\(file)"), encoding: .utf8)
        #expect(r.status == 0 && r.stdout == committed, "completions/\(file) is stale: run scripts/generate-docs")
    }

    @Test func manPageNamesEveryCommandAndExitCode() throws {
        let man = try String(contentsOf: CtlPaths.repository.appendingPathComponent("man/affinityctl.1"), encoding: .utf8)
        for command in ["analyse", "train", "finetune", "jobs", "job watch", "job cancel", "job resume", "models list", "models show",
                        "models import", "models set\\-default", "plugins", "status", "version"] {
            #expect(man.contains(".SS \(command)\n"), "man/affinityctl.1 has no section for \(command)")
        }
        for code in ["0", "1", "3", "4", "64", "69", "77", "130"] { #expect(man.contains(".TP\n.B \(code)\n")) }
        #expect(man.contains("\\-\\-cancel\\-on\\-interrupt") && man.contains("AFFINITY_BUS_ADDRESS"))
    }
}
