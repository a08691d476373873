// Descriptors under load (issue 21): many callers in this process and in others analyse images of
// different sizes at once, while training jobs read a data set through a reader plugin and models
// are imported. Every mask a caller gets back must be a sealed memfd holding *its* image's label
// map: its size, no label above its lesion count, each lesion's area equal to its label's pixels.
// A descriptor closed by a non-owner anywhere (daemon or this process) hands one caller's file to
// another, and shows up here as a wrong size, a wrong area or an unsealed descriptor; with the
// ownership check on (scripts/test), as a stopped process naming the close.
//
// AFFINITY_STRESS_ROUNDS sets the analyses per caller (default 3); bench/descriptor_stress.sh runs
// it longer.
import Affinity
import Bus
import Foundation
import Imaging
import Service
import TestSupport
import Testing

@Suite("Descriptors under load", .serialized)
struct DescriptorStressTests {
    typealias D = DaemonProcess

    /// One caller's image: its size and PNG bytes (a phantom slice with lesions).
    struct CallerImage: Sendable {
        let width: Int, height: Int
        let png: [UInt8]
        let file: URL
    }

    /// What went wrong, collected from every thread.
    final class Failures: @unchecked Sendable {
        // @unchecked Sendable: `items` is only touched under `lock`.
        private let lock = NSLock()
        private var items: [String] = []
        func add(_ s: String) { lock.withLock { items.append(s) } }
        var all: [String] { lock.withLock { items } }
    }

    /// The checks every caller makes on its label map.
    static func checkLabelMap(_ png: [UInt8], lesionAreas: [Int], image: CallerImage, who: String) -> String? {
        let map: PixelImage
        do { map = try PNG.decode(png) } catch { return "\(who): the mask is not a PNG: \(error)" }
        guard map.width == image.width, map.height == image.height, map.format == .gray else {
            return "\(who): the mask is \(map.width)×\(map.height) \(map.format), its image \(image.width)×\(image.height)"
        }
        var counts = [Int](repeating: 0, count: 256)
        for v in map.samples { counts[Int(v)] += 1 }
        let maxLabel = counts.lastIndex { $0 > 0 } ?? 0
        guard maxLabel <= lesionAreas.count else {
            return "\(who): label \(maxLabel) in the mask but \(lesionAreas.count) lesions"
        }
        for (i, area) in lesionAreas.enumerated() where counts[i + 1] != area {
            return "\(who): lesion \(i + 1) has area \(area) but \(counts[i + 1]) pixels in the mask"
        }
        return nil
    }

    @Test func everyCallerGetsItsOwnMask() throws {
        let folder = try #require(PluginFixtures.buildFolder, "the plugin libraries are not built (swift build first)")
        let pythonMissing = PythonClientTests.dbusPythonMissing()
        #expect(pythonMissing == nil, "\(pythonMissing ?? "")")
        let rounds = Int(ProcessInfo.processInfo.environment["AFFINITY_STRESS_ROUNDS"] ?? "") ?? 3
        let dir = try Paths.temporaryDirectory("fd-stress")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = dir.appendingPathComponent("set")
        try PhantomDataset.write(to: data.path, count: 6, seed: 3, size: 128)

        // Images of different sizes, one per caller (the demo model finds lesions in them).
        let sizes = [(512, 512), (384, 448), (640, 512), (256, 320), (448, 384), (320, 256)]
        let images: [CallerImage] = try sizes.enumerated().map { i, wh in
            let png = try PNG.encode(PhantomGenerator(seed: UInt64(20 + i), width: wh.0, height: wh.1).slice(index: i, class: .covid).pixelImage)
            let file = dir.appendingPathComponent("caller-\(i).png")
            try Data(png).write(to: file)
            return CallerImage(width: wh.0, height: wh.1, png: png, file: file)
        }

        let bus = try PrivateBus()
        defer { bus.stop() }
        let daemon = try DaemonProcess(bus: bus, stateDirectory: dir.appendingPathComponent("state"),
                                       arguments: ["--plugin-dir", folder],
                                       environment: ["AFFINITY_BUNDLED_MODELS": Paths.repository.appendingPathComponent("models").path])
        defer { daemon.stop() }
        let control = try bus.connect()
        defer { control.close() }
        #expect(waitUntil(120) { (try? control.getProperty(destination: D.name, path: D.root, interface: D.manager, name: "State")) == .string("ready") })

        let failures = Failures()
        let trainings = Counter(), imports = Counter(), lesionsSeen = Counter()
        let done = DispatchGroup()
        let loadFinished = ManagedFlag()
        var analyses = 0

        // In-process callers: four connections, each with its own image size.
        let inProcess = 4
        for c in 0..<inProcess {
            analyses += rounds
            let image = images[c]
            done.enter()
            Thread.detachNewThread {
                defer { done.leave() }
                do {
                    let client = try bus.connect()
                    defer { client.close() }
                    for r in 0..<rounds {
                        let who = "in-process caller \(c) round \(r)"
                        let reply = try DaemonTests.call(client, "Analyse", [try DaemonTests.memfd(image.png), .vardict([:])])
                        let result = try reply[0].asVardict()
                        guard let mask = try result["mask_png"]?.asFileDescriptor() else { failures.add("\(who): no mask"); continue }
                        if !mask.isSealed { failures.add("\(who): \(mask) is not a sealed memfd") }
                        if Descriptors.isChecking, case .wrapper? = Descriptors.owner(of: mask.rawValue) {} else if Descriptors.isChecking {
                            failures.add("\(who): the registry does not know \(mask) as a FileDescriptor's")
                        }
                        let areas = try (result["lesions"]?.asVardicts() ?? []).map { Int(try $0["area"]?.asUInt32() ?? 0) }
                        if areas.contains(where: { $0 > 0 }) { lesionsSeen.increment() }
                        if let problem = Self.checkLabelMap(try mask.readAll(), lesionAreas: areas, image: image, who: who) {
                            failures.add(problem)
                        }
                        mask.close()
                    }
                } catch {
                    failures.add("in-process caller \(c): \(error)")
                }
            }
        }

        // Out-of-process callers: the Python client (its own process per call), two at a time.
        if pythonMissing == nil {
            for c in inProcess..<images.count {
                analyses += rounds
                let image = images[c]
                done.enter()
                Thread.detachNewThread {
                    defer { done.leave() }
                    for r in 0..<rounds {
                        let who = "out-of-process caller \(c) round \(r)"
                        let maskFile = dir.appendingPathComponent("mask-\(c)-\(r).png")
                        do {
                            let (status, json, raw) = try PythonClientTests.python(bus, ["analyse", image.file.path, "--mask", maskFile.path])
                            guard status == 0 else { failures.add("\(who): \(raw)"); continue }
                            if json["mask_sealed"] as? Bool != true { failures.add("\(who): the mask descriptor was not sealed: \(raw.stdout.prefix(300))") }
                            let areas = (json["lesions"] as? [[String: Any]] ?? []).map { $0["area"] as? Int ?? -1 }
                            if areas.contains(where: { $0 > 0 }) { lesionsSeen.increment() }
                            let png = [UInt8](try Data(contentsOf: maskFile))
                            if let problem = Self.checkLabelMap(png, lesionAreas: areas, image: image, who: who) { failures.add(problem) }
                        } catch {
                            failures.add("\(who): \(error)")
                        }
                    }
                }
            }
        }

        // Meanwhile: training jobs that read the set through the covidx-ct reader (each Train opens
        // and reads every sample's files before the job exists), cancelled once they run; and
        // model imports (the weights arrive as a descriptor).
        let background = DispatchGroup()
        background.enter()
        Thread.detachNewThread {
            defer { background.leave() }
            do {
                let client = try bus.connect()
                defer { client.close() }
                let options: [String: DBusValue] = ["dataset": .string(data.path), "data_format": .string("covidx-ct"),
                                                    "segmentation_format": .string("cncb-seg"), "epochs": .uint32(1),
                                                    "iterations_per_epoch": .uint32(1000), "image_size": .uint32(128),
                                                    "affinities": .uint32(8), "seed": .uint64(3)]
                while !loadFinished.isSet {
                    let job = try DaemonTests.call(client, "Train", [.vardict(options)])[0].asObjectPath()
                    trainings.increment()
                    _ = waitUntil(20) {
                        loadFinished.isSet || (try? client.getProperty(destination: D.name, path: job, interface: D.job, name: "Progress")
                            .asDouble()).map { $0 > 0 } == true
                    }
                    _ = try? client.call(destination: D.name, path: job, interface: D.job, method: "Cancel", [.vardict([:])], timeout: .seconds(60))
                    _ = waitUntil(60) {
                        let state = try? client.getProperty(destination: D.name, path: job, interface: D.job, name: "State").asString()
                        return state != nil && state != "running" && state != "queued"
                    }
                }
            } catch {
                failures.add("trainer: \(error)")
            }
        }
        background.enter()
        Thread.detachNewThread {
            defer { background.leave() }
            do {
                let client = try bus.connect()
                defer { client.close() }
                var seed: UInt64 = 30
                while !loadFinished.isSet {
                    let (bytes, _) = try Fixtures.smallModel(in: dir, seed: seed)
                    let path = try DaemonTests.call(client, "ImportModel", [try DaemonTests.memfd(bytes), .vardict(["name": .string("stress \(seed)")])])[0]
                        .asObjectPath()
                    let sha = try client.getProperty(destination: D.name, path: path, interface: D.model, name: "Sha256")
                    if sha != .string(sha256Hex(bytes)) { failures.add("import \(seed): the stored model is not the bytes sent") }
                    imports.increment()
                    seed += 1
                    usleep(200_000)
                }
            } catch {
                failures.add("importer: \(error)")
            }
        }

        let finished = done.wait(timeout: .now() + 900) == .success
        loadFinished.set()
        _ = background.wait(timeout: .now() + 180)
        #expect(finished, "the callers did not finish in 15 minutes")
        #expect(failures.all.isEmpty, "\(failures.all.joined(separator: "\n"))")
        // The label checks are not empty: most phantom slices have lesions the demo model finds.
        #expect(lesionsSeen.value * 2 >= analyses, "\(lesionsSeen.value) of \(analyses) analyses found a lesion")
        #expect(trainings.value >= 1 && imports.value >= 1,
                "\(trainings.value) training jobs and \(imports.value) imports ran beside \(analyses) analyses")
        #expect(daemon.process.isRunning, "the daemon stopped: \(daemon.stderrText)")
        // The daemon with the check on would have stopped at a bad close; it stops cleanly.
        #expect(daemon.stop() == 0, "\(daemon.stderrText)")
    }
}

/// A flag set once, read from any thread.
final class ManagedFlag: @unchecked Sendable {
    // @unchecked Sendable: `value` is only touched under `lock`.
    private let lock = NSLock()
    private var value = false
    func set() { lock.withLock { value = true } }
    var isSet: Bool { lock.withLock { value } }
}

/// A count incremented from any thread.
final class Counter: @unchecked Sendable {
    // @unchecked Sendable: `count` is only touched under `lock`.
    private let lock = NSLock()
    private var count = 0
    func increment() { lock.withLock { count += 1 } }
    var value: Int { lock.withLock { count } }
}
