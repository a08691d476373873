// The real affinityd on a private bus, called by busctl/gdbus and by our Bus client (fd passing).
import Affinity
import Bus
import Foundation
import TestSupport
import Imaging
import NN
import Service
import Tensor
import Testing

@Suite("affinityd on a private bus", .serialized)
struct DaemonTests {
    typealias D = DaemonProcess

    static func call(_ c: BusConnection, _ method: String, _ args: [DBusValue], timeout: Duration = .seconds(120)) throws -> [DBusValue] {
        try c.call(destination: D.name, path: D.root, interface: D.manager, method: method, args, timeout: timeout)
    }

    static func memfd(_ bytes: [UInt8]) throws -> DBusValue { .unixFD(try FileDescriptor.sealedMemfd(name: "test", contents: bytes)) }

    /// The error a call fails with (nil if it succeeds).
    static func error(_ body: () throws -> Any) -> BusError? {
        do { _ = try body(); return nil } catch let e as BusError { return e } catch { return BusError(error) }
    }

    @Test func analyseImportAndBadInput() throws {
        let dir = try Paths.temporaryDirectory("analyse")
        defer { try? FileManager.default.removeItem(at: dir) }
        let bus = try PrivateBus()
        defer { bus.stop() }
        let daemon = try DaemonProcess(bus: bus, stateDirectory: dir.appendingPathComponent("state"))
        defer { daemon.stop() }
        let client = try bus.connect()
        defer { client.close() }
        let E = "org.lesionaffinity.Affinity1.Error."
        let png = try Fixtures.slicePNG()

        // No model yet: the daemon runs, degraded, and says so.
        #expect(daemon.notify.lines.contains("READY=1"))
        #expect(daemon.notify.lines.contains { $0.hasPrefix("STATUS=degraded") }, "\(daemon.notify.lines)")
        let state = try busctl(bus, ["get-property", D.name, D.root, D.manager, "State"])
        #expect(state.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "s \"degraded\"", "\(state)")
        let notReady = Self.error { try Self.call(client, "Analyse", [try Self.memfd(png), .vardict([:])]) }
        #expect(notReady?.name == E + "ModelNotReady" && notReady?.message.hasSuffix(".") == true, "\(String(describing: notReady))")

        // ImportModel (fd), SetDefaultModel (gdbus, not ours), ListModels (busctl).
        let (modelBytes, modelURL) = try Fixtures.smallModel(in: dir)
        let imported = try Self.call(client, "ImportModel", [try Self.memfd(modelBytes), .vardict(["name": .string("small")])])
        let modelPath = try imported[0].asObjectPath()
        #expect(modelPath.hasPrefix(D.root + "/models/"))
        let setDefault = try runTool("gdbus", ["call", "--address", bus.address, "--dest", D.name, "--object-path", D.root,
                                               "--method", D.manager + ".SetDefaultModel", modelPath, "{}"])
        #expect(setDefault.status == 0, "\(setDefault.stderr)")
        let list = try busctl(bus, ["call", D.name, D.root, D.manager, "ListModels", "a{sv}", "0"])
        #expect(list.stdout.contains(modelPath), "\(list)")
        let props = try client.getAllProperties(destination: D.name, path: modelPath, interface: D.model)
        #expect(props["Name"] == .string("small") && props["Affinities"] == .uint32(8))
        #expect(props["Sha256"] == .string(sha256Hex(modelBytes)))
        #expect(try client.getProperty(destination: D.name, path: D.root, interface: D.manager, name: "DefaultModel") == .objectPath(modelPath))
        #expect(waitUntil { (try? client.getProperty(destination: D.name, path: D.root, interface: D.manager, name: "State")) == .string("ready") })
        let managed = try client.call(destination: D.name, path: D.root, interface: "org.freedesktop.DBus.ObjectManager",
                                      method: "GetManagedObjects", expecting: "a{oa{sa{sv}}}")
        #expect(try managed[0].asDictionary().contains { (try? $0.0.asObjectPath()) == modelPath })
        // The introspection data is the XML file, verbatim.
        let xml = try busctl(bus, ["call", D.name, D.root, "org.freedesktop.DBus.Introspectable", "Introspect"])
        #expect(xml.stdout.contains("Analyse: segments the lesions"), "\(xml.stdout.prefix(300))")

        // Analyse: the result equals predictImage's on the same weights and image.
        let reply = try Self.call(client, "Analyse", [try Self.memfd(png), .vardict([:])])
        let r = try reply[0].asVardict()
        let model = try ModelLoader.load(contentsOf: modelURL)
        let input = try Tensor(shape: [1, 3, 512, 512], values: Preprocessing.modelInput(try PNG.decode(png)))
        var rng = SeededGenerator(seed: 1)
        let expected = try model.predictImage(input, rng: &rng)
        #expect(try r["class_index"]?.asUInt32() == UInt32(expected.classIndex))
        #expect(try r["class"]?.asString() == expected.className)
        // Equal up to float summation order (OpenBLAS may split a GEMM differently between processes).
        let scores = try r["scores"]?.asDoubles() ?? []
        #expect(scores.count == 3)
        for (a, b) in zip(scores, expected.logits.map(Double.init)) {
            #expect(abs(a - b) <= 1e-4 * max(1, abs(b)), "daemon \(scores) vs predictImage \(expected.logits)")
        }
        #expect(try r["model"]?.asObjectPath() == modelPath)
        #expect(try r["model_sha256"]?.asString() == sha256Hex(modelBytes))
        let lesions = try r["lesions"]?.asVardicts() ?? []
        #expect(lesions.count == expected.detections.count)
        let mask = try #require(try r["mask_png"]?.asFileDescriptor())
        #expect(mask.isSealed)
        let labelMap = try PNG.decode(try mask.readAll())
        #expect(labelMap.width == 512 && labelMap.height == 512 && labelMap.format == .gray)
        let maxLabel = Int(labelMap.samples.max() ?? 0)
        #expect(maxLabel <= lesions.count)
        for (i, l) in lesions.enumerated() {
            let area = Int(try l["area"]?.asUInt32() ?? 0)
            #expect(area == labelMap.samples.filter { Int($0) == i + 1 }.count)
        }
        #expect(try (r["timings"]?.asDoubleDict()["total"] ?? 0) > 0)

        // Bad input: each a named error with a sentence; the daemon goes on.
        func expectError(_ name: String, _ what: String, _ body: () throws -> Any) {
            let e = Self.error(body)
            #expect(e?.name == name, "\(what): \(String(describing: e))")
            #expect((e?.message.count ?? 0) > 10 && e?.message.hasSuffix(".") == true, "\(what): \(String(describing: e))")
        }
        let wrongSig = try busctl(bus, ["call", D.name, D.root, D.manager, "Analyse", "s", "x"])
        #expect(wrongSig.status != 0 && wrongSig.stderr.contains("expects arguments of signature 'ha{sv}'"), "\(wrongSig)")
        expectError(E + "InvalidArgument", "wrong signature") {
            try Self.call(client, "Analyse", [.string("/tmp/x.png"), .vardict([:])])
        }
        expectError(E + "InvalidArgument", "unknown option") {
            try Self.call(client, "Analyse", [try Self.memfd(png), .vardict(["colour": .string("blue")])])
        }
        let (readEnd, writeEnd) = try FileDescriptor.pipe()
        readEnd.close()
        expectError(E + "InvalidImage", "a write-only fd") { try Self.call(client, "Analyse", [.unixFD(writeEnd), .vardict([:])]) }
        let (emptyRead, emptyWrite) = try FileDescriptor.pipe()
        emptyWrite.close()
        expectError(E + "InvalidImage", "an fd at end of file") { try Self.call(client, "Analyse", [.unixFD(emptyRead), .vardict([:])]) }
        var g = SeededGenerator(seed: 5)
        let random = (0..<5000).map { _ in UInt8(truncatingIfNeeded: g.next()) }
        expectError(E + "UnsupportedFormat", "random bytes") { try Self.call(client, "Analyse", [try Self.memfd(random), .vardict([:])]) }
        expectError(E + "InvalidImage", "100000×100000 header") {
            try Self.call(client, "Analyse", [try Self.memfd(Fixtures.hugeHeaderPNG()), .vardict([:])])
        }
        expectError(E + "InvalidImage", "truncated PNG") {
            try Self.call(client, "Analyse", [try Self.memfd(Array(png.prefix(png.count / 2))), .vardict([:])])
        }
        expectError(E + "ModelNotFound", "unknown model in Analyse") {
            try Self.call(client, "Analyse", [try Self.memfd(png), .vardict(["model": .objectPath(D.root + "/models/0123456789abcdef")])])
        }
        let noModel = try runTool("gdbus", ["call", "--address", bus.address, "--dest", D.name, "--object-path", D.root,
                                            "--method", D.manager + ".SetDefaultModel", D.root + "/models/nope", "{}"])
        #expect(noModel.status != 0 && noModel.stderr.contains(E + "ModelNotFound"), "\(noModel.stderr)")
        expectError(E + "UnsupportedFormat", "import of random bytes") {
            try Self.call(client, "ImportModel", [try Self.memfd(random), .vardict([:])])
        }
        expectError(E + "DatasetInvalid", "train without a data set") { try Self.call(client, "Train", [.vardict(["dataset": .string("")])]) }
        expectError(E + "DatasetInvalid", "train on an empty directory") {
            try Self.call(client, "Train", [.vardict(["dataset": .string(dir.path)])])
        }
        expectError(E + "InvalidArgument", "train with an unknown option") {
            try Self.call(client, "Train", [.vardict(["dataset": .string(dir.path), "speed": .uint32(9)])])
        }
        let cancel = try busctl(bus, ["call", D.name, D.root + "/jobs/999", D.job, "Cancel", "a{sv}", "0"])
        #expect(cancel.status != 0 && cancel.stderr.contains("No object at path"), "\(cancel)")
        let finetune = Self.error { try Self.call(client, "Finetune", [.objectPath(D.root + "/models/nope"), .vardict(["dataset": .string(dir.path)])]) }
        #expect(finetune?.name == E + "ModelNotFound", "\(String(describing: finetune))")

        // Still serving.
        let version = try busctl(bus, ["get-property", D.name, D.root, D.manager, "Version"])
        #expect(version.status == 0 && version.stdout.contains("\""), "\(version)")
        #expect(daemon.process.isRunning)
    }

    @Test func trainPublishesAModelAndCancelKeepsTheCheckpoint() throws {
        let dir = try Paths.temporaryDirectory("train")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = dir.appendingPathComponent("set")
        try PhantomDataset.write(to: data.path, count: 6, seed: 3, size: 128)
        let bus = try PrivateBus()
        defer { bus.stop() }
        let state = dir.appendingPathComponent("state")
        let daemon = try DaemonProcess(bus: bus, stateDirectory: state)
        defer { daemon.stop() }
        let client = try bus.connect()
        defer { client.close() }
        let completed = Collected<ReceivedSignal>()
        let sub = try client.subscribe(MatchRule(interface: D.job, member: "Completed")) { completed.append($0) }
        defer { sub.cancel() }
        let changes = Collected<ReceivedSignal>()
        let sub2 = try client.subscribe(.propertiesChanged(pathNamespace: D.root + "/jobs")) { changes.append($0) }
        defer { sub2.cancel() }

        let options: [String: DBusValue] = ["dataset": .string(data.path), "epochs": .uint32(1), "iterations_per_epoch": .uint32(2),
                                            "image_size": .uint32(128), "affinities": .uint32(8), "seed": .uint64(3),
                                            "learning_rate": .double(1e-4), "name": .string("tiny")]
        let job = try Self.call(client, "Train", [.vardict(options)])[0].asObjectPath()
        #expect(job.hasPrefix(D.root + "/jobs/"))
        #expect(waitUntil(600) { !completed.all.isEmpty }, "no Completed signal")
        let signal = try #require(completed.all.first)
        #expect(signal.path == job)
        #expect(try signal.arguments[0].asBool() == true, "\(signal.arguments)")
        let result = try signal.arguments[2].asVardict()
        let modelPath = try #require(try result["model"]?.asObjectPath())
        let props = try client.getAllProperties(destination: D.name, path: job, interface: D.job)
        #expect(props["State"] == .string("completed") && props["Progress"] == .double(1))
        #expect(props["Operation"] == .string("train") && props["TotalEpochs"] == .uint32(1) && props["Epoch"] == .uint32(1))
        #expect(props["StartedByUID"] == .uint32(getuid()))
        #expect(try (props["Metrics"]?.asDoubleDict()["epoch_loss_total"] ?? -1) >= 0)
        #expect(!changes.all.isEmpty)
        let busctlState = try busctl(bus, ["get-property", D.name, job, D.job, "State"])
        #expect(busctlState.stdout.contains("completed"), "\(busctlState)")
        // The model is in the store and on the bus, with its card.
        let models = try Self.call(client, "ListModels", [.vardict([:])])[0].asObjectPaths()
        #expect(models.contains(modelPath))
        let mprops = try client.getAllProperties(destination: D.name, path: modelPath, interface: D.model)
        #expect(mprops["Name"] == .string("tiny") && mprops["TrainedOn"] == .string(data.path) && mprops["Affinities"] == .uint32(8))
        let id = String(modelPath.split(separator: "/").last!)
        let weights = state.appendingPathComponent("models/\(id)/weights.safetensors")
        #expect(try ModelLoader.load(contentsOf: weights).affinities == 8)
        let jobID = String(job.split(separator: "/").last!)
        let run = state.appendingPathComponent("runs/\(jobID)")
        #expect(FileManager.default.fileExists(atPath: run.appendingPathComponent("checkpoint.safetensors").path))
        #expect(try String(contentsOf: run.appendingPathComponent("metrics.jsonl"), encoding: .utf8).contains("\"epoch\": 1"))

        // A long job, cancelled after its first epoch: it ends within an iteration, the checkpoint stays whole.
        var long = options
        long["epochs"] = .uint32(50)
        long["iterations_per_epoch"] = .uint32(1)
        let job2 = try Self.call(client, "Train", [.vardict(long)])[0].asObjectPath()
        let run2 = state.appendingPathComponent("runs/\(job2.split(separator: "/").last!)")
        let checkpoint = run2.appendingPathComponent("checkpoint.safetensors")
        #expect(waitUntil(600) { FileManager.default.fileExists(atPath: checkpoint.path) })
        _ = try client.call(destination: D.name, path: job2, interface: D.job, method: "Cancel", [.vardict([:])])
        #expect(waitUntil(120) { completed.all.count >= 2 })
        let cancelled = try #require(completed.all.last)
        #expect(try cancelled.arguments[0].asBool() == false)
        #expect(try client.getProperty(destination: D.name, path: job2, interface: D.job, name: "State") == .string("cancelled"))
        let file = try SafeTensorsFile(contentsOf: checkpoint)
        #expect(file.metadata["trainer_state"] != nil && Int(file.metadata["epoch"] ?? "") ?? 0 >= 1)
        let again = Self.error { try client.call(destination: D.name, path: job2, interface: D.job, method: "Cancel", [.vardict([:])]) }
        #expect(again?.name == "org.lesionaffinity.Affinity1.Error.Failed")
        #expect(daemon.stop() == 0)
    }

    @Test func polkitSignalsAndNotify() throws {
        let dir = try Paths.temporaryDirectory("polkit")
        defer { try? FileManager.default.removeItem(at: dir) }
        let bus = try PrivateBus()
        defer { bus.stop() }
        let polkit = try FakePolkit(bus: bus, allowed: [])
        defer { polkit.close() }
        let config = "# test\nanalyse_queue_limit = 4\nlog_level = info\n"
        let daemon = try DaemonProcess(bus: bus, stateDirectory: dir.appendingPathComponent("state"),
                                       arguments: ["--authorization", "polkit"], configText: config,
                                       environment: ["WATCHDOG_USEC": "400000"])
        defer { daemon.stop() }
        let client = try bus.connect()
        defer { client.close() }
        let (bytes, _) = try Fixtures.smallModel(in: dir)

        let denied = Self.error { try Self.call(client, "ImportModel", [try Self.memfd(bytes), .vardict([:])]) }
        #expect(denied?.name == "org.lesionaffinity.Affinity1.Error.NotAuthorized", "\(String(describing: denied))")
        #expect(polkit.actionsAsked == ["org.lesionaffinity.affinity1.import-model"])
        let trainDenied = Self.error { try Self.call(client, "Train", [.vardict(["dataset": .string(dir.path)])]) }
        #expect(trainDenied?.name == "org.lesionaffinity.Affinity1.Error.NotAuthorized")
        polkit.allow("org.lesionaffinity.affinity1.import-model")
        let model = try Self.call(client, "ImportModel", [try Self.memfd(bytes), .vardict([:])])[0].asObjectPath()
        let setDenied = Self.error { try Self.call(client, "SetDefaultModel", [.objectPath(model), .vardict([:])]) }
        #expect(setDenied?.name == "org.lesionaffinity.Affinity1.Error.NotAuthorized")
        // Unprivileged calls need no authorization.
        #expect(try Self.call(client, "ListModels", [.vardict([:])])[0].asObjectPaths() == [model])
        #expect(try Self.call(client, "ListPlugins", [.vardict([:])]).count == 1)

        // The watchdog is fed; SIGHUP reloads; SIGTERM stops cleanly.
        #expect(waitUntil(5) { daemon.notify.lines.filter { $0 == "WATCHDOG=1" }.count >= 2 }, "\(daemon.notify.lines)")
        kill(daemon.process.processIdentifier, SIGHUP)
        #expect(waitUntil(10) { daemon.notify.lines.contains("RELOADING=1") && daemon.notify.lines.filter { $0 == "READY=1" }.count >= 2 },
                "\(daemon.notify.lines)")
        #expect(try client.getProperty(destination: D.name, path: D.root, interface: D.manager, name: "ApiVersion") == .uint32(1))
        let status = daemon.stop()
        #expect(status == 0)
        #expect(daemon.notify.lines.contains("STOPPING=1"), "\(daemon.notify.lines)")
        #expect(daemon.notify.lines.contains { $0.hasPrefix("STATUS=") })
    }
}
