// Test support for affinityctl: a private dbus-daemon, the real affinityd on it, the built
// affinityctl run as a process (pipes or a pseudo-terminal), and fixtures (model, slice, data set).
import Affinity
import Bus
import Foundation
import TestSupport
import Imaging
import Tensor

enum CtlPaths {
    /// The repository root (Tests/CtlTests/<file> → ../..).
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// A built executable: next to the test bundle (this `swift test`'s build folder), else
    /// `.build-ctl/release` or `.build/release` of the repository.
    static func executable(_ name: String) -> String? {
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var candidates = [exe.deletingLastPathComponent().appendingPathComponent(name).path]
        for b in [".build-ctl", ".build-daemon", ".build"] { candidates.append(repository.appendingPathComponent("\(b)/release/\(name)").path) }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static var affinityctl: String? { executable("affinityctl") }
    static var affinityd: String? { executable("affinityd") }

    static func temporaryDirectory(_ tag: String) throws -> URL {
        let d = URL(fileURLWithPath: "/tmp").appendingPathComponent("ctl-test-\(tag)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        return d
    }
}

/// A private message bus (`dbus-daemon --nofork`, allow-all session config). `stop()` kills it.
final class CtlBus: @unchecked Sendable {
    let address: String
    private let process = Process()
    private let directory: URL

    init() throws {
        directory = try CtlPaths.temporaryDirectory("bus")
        let config = directory.appendingPathComponent("bus.conf")
        try """
        <!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
         "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
        <busconfig>
          <type>session</type>
          <listen>unix:path=\(directory.path)/socket</listen>
          <auth>EXTERNAL</auth>
          <policy context="default">
            <allow send_destination="*" eavesdrop="true"/>
            <allow eavesdrop="true"/>
            <allow own="*"/>
          </policy>
        </busconfig>
        """.write(to: config, atomically: true, encoding: .utf8)
        process.executableURL = URL(fileURLWithPath: "/usr/bin/dbus-daemon")
        process.arguments = ["--config-file=\(config.path)", "--nofork", "--nopidfile"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        address = "unix:path=\(directory.path)/socket"
        let socket = directory.appendingPathComponent("socket").path
        // The socket file appears at bind(2), before listen(2): wait until a connection is accepted
        // (a connect in between is refused, which failed a test once).
        let deadline = Date().addingTimeInterval(20)
        var accepted = false
        while !accepted && Date() < deadline {
            if FileManager.default.fileExists(atPath: socket), let probe = try? BusConnection(address: address) {
                probe.close()
                accepted = true
            } else {
                usleep(10_000)
            }
        }
        guard accepted else {
            stop()
            throw BusError.failed("dbus-daemon did not accept connections on \(socket).")
        }
    }

    deinit { stop() }

    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: directory)
    }
}

/// The real affinityd on a private bus, without polkit; ready once its State is not "starting".
final class CtlDaemon: @unchecked Sendable {
    let process = Process()
    let stateDirectory: URL

    init(bus: CtlBus, stateDirectory: URL, authorization: String = "none", timeout: Double = 60) throws {
        guard let exe = CtlPaths.affinityd else { throw BusError.failed("affinityd is not built (run swift build first).") }
        self.stateDirectory = stateDirectory
        process.executableURL = URL(fileURLWithPath: exe)
        process.arguments = ["--bus", bus.address, "--state-dir", stateDirectory.path, "--authorization", authorization]
        // No bundled demo model (an empty AFFINITY_BUNDLED_MODELS folder): the tests start from an empty store.
        let noBundled = stateDirectory.deletingLastPathComponent().appendingPathComponent("no-bundled-models")
        try FileManager.default.createDirectory(at: noBundled, withIntermediateDirectories: true)
        process.environment = ["PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "AFFINITY_BUNDLED_MODELS": noBundled.path]
            .merging(descriptorCheckEnvironment) { a, _ in a }
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let client = try BusConnection(address: bus.address)
        defer { client.close() }
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline && process.isRunning {
            if let s = try? client.getProperty(destination: "org.lesionaffinity.Affinity1", path: "/org/lesionaffinity/Affinity1",
                                               interface: "org.lesionaffinity.Affinity1.Manager", name: "State", timeout: .seconds(2)),
               s != .string("starting") { return }
            usleep(50_000)
        }
        stop()
        throw BusError.failed("affinityd did not come up on \(bus.address).")
    }

    /// SIGTERM, wait (SIGKILL after `timeout`); returns the exit status.
    @discardableResult
    func stop(timeout: Double = 60) -> Int32 {
        if process.isRunning {
            kill(process.processIdentifier, SIGTERM)
            let deadline = Date().addingTimeInterval(timeout)
            while process.isRunning && Date() < deadline { usleep(20_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }
        return process.terminationStatus
    }
}

/// What a run of affinityctl printed and how it ended.
struct CtlResult: CustomStringConvertible {
    var status: Int32
    var stdout: String
    var stderr: String

    var description: String { "exit \(status)\nstdout: \(stdout)\nstderr: \(stderr)" }

    /// stdout parsed as one JSON object.
    var json: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(stdout.utf8))) as? [String: Any] ?? [:]
    }

    /// stdout parsed as JSON lines.
    var jsonLines: [[String: Any]] {
        stdout.split(separator: "\n").compactMap { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any] }
    }
}

/// The environment affinityctl runs with in tests: no inherited bus variables.
func ctlEnvironment(_ extra: [String: String] = [:]) -> [String: String] {
    var env = ["PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp"]
    env.merge(descriptorCheckEnvironment) { a, _ in a }
    env.merge(extra) { _, b in b }
    return env
}

/// Starts affinityctl with pipes; the caller waits.
func startCtl(_ args: [String], environment: [String: String] = [:]) throws -> (Process, Pipe, Pipe) {
    guard let exe = CtlPaths.affinityctl else { throw BusError.failed("affinityctl is not built.") }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: exe)
    p.arguments = args
    p.environment = ctlEnvironment(environment)
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    p.standardInput = FileHandle.nullDevice
    try p.run()
    return (p, out, err)
}

/// Runs affinityctl to its end with pipes (so stdout is not a terminal).
func ctl(_ args: [String], environment: [String: String] = [:]) throws -> CtlResult {
    let (p, out, err) = try startCtl(args, environment: environment)
    // Read both pipes concurrently so that neither fills up. The reader fills `stderrBox` before
    // leaving the group, and it is read only after the wait.
    final class Box: @unchecked Sendable { var data = Data() }
    let stderrBox = Box()
    let group = DispatchGroup()
    group.enter()
    DispatchQueue.global().async {
        stderrBox.data = err.fileHandleForReading.readDataToEndOfFile()
        group.leave()
    }
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    p.waitUntilExit()
    return CtlResult(status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                     stderr: String(decoding: stderrBox.data, as: UTF8.self))
}

/// affinityctl on the test bus.
func ctl(_ bus: CtlBus, _ args: [String]) throws -> CtlResult {
    try ctl(args + ["--bus", bus.address])
}

/// Runs affinityctl under `script`, so that its stdout is a pseudo-terminal; returns what the terminal received.
func ctlOnTerminal(_ args: [String]) throws -> CtlResult {
    guard let exe = CtlPaths.affinityctl else { throw BusError.failed("affinityctl is not built.") }
    let command = ([exe] + args).map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }.joined(separator: " ")
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/script")
    p.arguments = ["-qfec", command, "/dev/null"]
    p.environment = ctlEnvironment(["TERM": "xterm"])
    let out = Pipe()
    p.standardOutput = out
    p.standardError = FileHandle.nullDevice
    p.standardInput = FileHandle.nullDevice
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return CtlResult(status: p.terminationStatus, stdout: String(decoding: data, as: UTF8.self), stderr: "")
}

/// Waits until `condition` holds or `seconds` pass; returns whether it held.
func eventually(_ seconds: Double = 30, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(50_000)
    }
    return condition()
}

enum CtlFixtures {
    /// A model with C' = 8 and seeded initial weights, saved in our layout.
    static func smallModel(in dir: URL, seed: UInt64 = 7) throws -> URL {
        let m = AffinityModel(affinities: 8)
        var rng = SeededGenerator(seed: seed)
        m.initialize(rng: &rng)
        let url = dir.appendingPathComponent("small-\(seed).safetensors")
        try ModelLoader.save(m, to: url)
        return url
    }

    /// A 512×512 phantom chest slice of class COVID-19, written as a PNG file.
    static func slice(in dir: URL, index: Int = 4) throws -> URL {
        let url = dir.appendingPathComponent("slice-\(index).png")
        try PNG.write(PhantomGenerator(seed: 11, size: 512).slice(index: index, class: .covid).pixelImage, to: url.path)
        return url
    }

    /// A small phantom data set (128 px) for training jobs.
    static func dataset(in dir: URL) throws -> URL {
        let url = dir.appendingPathComponent("set")
        _ = try PhantomDataset.write(to: url.path, count: 6, seed: 3, size: 128)
        return url
    }
}

/// A polkit authority on the private bus that says no to everything (for the 77 exit code).
final class DenyingPolkit: @unchecked Sendable {
    let connection: BusConnection

    init(bus: CtlBus) throws {
        connection = try BusConnection(address: bus.address)
        var i = BusInterface("org.freedesktop.PolicyKit1.Authority")
        i.method("CheckAuthorization", in: "(sa{sv})sa{ss}us", out: "(bba{ss})") { _ in
            [.structure([.boolean(false), .boolean(false), .dictionary(keySignature: "s", valueSignature: "s", [])])]
        }
        try connection.export(path: "/org/freedesktop/PolicyKit1/Authority", interfaces: [i])
        try connection.requestName("org.freedesktop.PolicyKit1")
    }

    func close() { connection.close() }
}
