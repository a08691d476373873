// Test support: a private dbus-daemon, the real affinityd binary on it with a NOTIFY_SOCKET the
// test owns, a fake polkit authority, a small model, test images, and the D-Bus tools.
import Affinity
import Bus
import Foundation
import TestSupport
import Testing
import Imaging
import NN
import Tensor

enum Paths {
    /// The repository root (Tests/ServiceTests/<file> → ../..).
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The affinityd built with these tests: next to the test bundle (the build folder of this
    /// `swift test`), else `.build-daemon/release` or `.build/release` of the repository.
    static var affinityd: String? {
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var candidates = [exe.deletingLastPathComponent().appendingPathComponent("affinityd").path]
        for b in [".build-daemon", ".build"] { candidates.append(repository.appendingPathComponent("\(b)/release/affinityd").path) }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static func temporaryDirectory(_ tag: String) throws -> URL {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("affinityd-test-\(tag)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        return d
    }
}

/// A datagram socket the test owns, given to the daemon as NOTIFY_SOCKET; collects the messages.
///
/// The socket is a `FileDescriptor`, its only owner; `close()` is idempotent and waits for the
/// receiving thread to leave before the descriptor is closed (`stop()` may run twice: an explicit
/// call and a `defer`; a second raw close here once closed another test's descriptor: issue 21).
final class NotifySocket: @unchecked Sendable {
    // @unchecked Sendable: `received` and `open` are accessed under `lock` only; `socket` is a
    // FileDescriptor (itself thread-safe); `finished` is a semaphore.
    let path: String
    private let socket: FileDescriptor
    private let lock = NSLock()
    private var received: [String] = []
    private var open = true
    private let finished = DispatchSemaphore(value: 0)

    init() throws {
        path = "/tmp/affinityd-notify-\(UUID().uuidString.prefix(12))"
        let raw = Glibc.socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard raw >= 0 else { throw BusError.failed("Cannot create the notify socket: \(String(cString: strerror(errno))).") }
        socket = FileDescriptor(taking: raw)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in path.utf8.enumerated() { raw[i] = b }
        }
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(raw, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard r == 0 else { throw BusError.failed("Cannot bind the notify socket \(path).") }
        var tv = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(raw, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let t = Thread { [self] in
            var buf = [UInt8](repeating: 0, count: 4096)
            while lock.withLock({ open }) {
                let n = recv(raw, &buf, buf.count, 0)
                if n > 0 {
                    let text = String(decoding: buf[0..<n], as: UTF8.self)
                    lock.withLock { received.append(text) }
                }
            }
            finished.signal()
        }
        t.start()
    }

    /// Every message, each possibly several `KEY=value` lines.
    var messages: [String] { lock.withLock { received } }
    /// Every `KEY=value` line, in order.
    /// (Split under the lock: ThreadSanitizer saw the receiving thread's append race with a
    /// reader's copy of the array, issue 16.)
    var lines: [String] { lock.withLock { received.flatMap { $0.split(separator: "\n").map(String.init) } } }

    /// Stops the receiving thread, then closes the socket (idempotent).
    func close() {
        let wasOpen: Bool = lock.withLock {
            let o = open
            open = false
            return o
        }
        guard wasOpen else { return }
        finished.wait()  // the thread leaves within one receive timeout (100 ms)
        socket.close()
        unlink(path)
    }
}

/// The real affinityd on a private bus.
final class DaemonProcess: @unchecked Sendable {
    let process = Process()
    let notify: NotifySocket
    let stateDirectory: URL
    let stderrPipe = Pipe()
    static let name = "org.lesionaffinity.Affinity1"
    static let root = "/org/lesionaffinity/Affinity1"
    static let manager = "org.lesionaffinity.Affinity1.Manager"
    static let job = "org.lesionaffinity.Affinity1.Job"
    static let model = "org.lesionaffinity.Affinity1.Model"

    /// Starts affinityd and waits for READY=1 (or fails after `timeout` seconds).
    init(bus: PrivateBus, stateDirectory: URL, arguments: [String] = [], configText: String? = nil,
         environment: [String: String] = [:], timeout: Double = 60) throws {
        guard let exe = Paths.affinityd else { throw BusError.failed("affinityd is not built (run swift build first).") }
        notify = try NotifySocket()
        self.stateDirectory = stateDirectory
        process.executableURL = URL(fileURLWithPath: exe)
        var args = ["--bus", bus.address, "--state-dir", stateDirectory.path]
        if let configText {
            let file = stateDirectory.deletingLastPathComponent().appendingPathComponent("affinityd-\(UUID().uuidString.prefix(6)).conf")
            try configText.write(to: file, atomically: true, encoding: .utf8)
            args += ["--config", file.path]
        }
        process.arguments = args + arguments
        // No bundled model unless the test gives one: an empty AFFINITY_BUNDLED_MODELS folder (else
        // the daemon would find models/phantom-demo above the build folder and import it).
        let noBundled = stateDirectory.deletingLastPathComponent().appendingPathComponent("no-bundled-models-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: noBundled, withIntermediateDirectories: true)
        var env = ["PATH": "/usr/bin:/bin", "NOTIFY_SOCKET": notify.path, "LANG": "C.UTF-8", "AFFINITY_BUNDLED_MODELS": noBundled.path]
        env.merge(descriptorCheckEnvironment) { _, b in b }
        env.merge(environment) { _, b in b }
        process.environment = env
        process.standardOutput = FileHandle.nullDevice
        process.standardError = stderrPipe
        try process.run()
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline && !notify.lines.contains("READY=1") && process.isRunning { usleep(20_000) }
        guard notify.lines.contains("READY=1") else {
            stop()
            throw BusError.failed("affinityd did not send READY=1: \(stderrText)")
        }
    }

    var stderrText: String {
        if process.isRunning { return "(still running)" }
        return String(decoding: stderrPipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
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
        notify.close()
        return process.terminationStatus
    }
}

/// A fake polkit authority on the private bus: answers CheckAuthorization with yes for the
/// action ids in `allowed`, no otherwise, and records the action ids asked about.
final class FakePolkit: @unchecked Sendable {
    let connection: BusConnection
    private let lock = NSLock()
    private var allowedActions: Set<String>
    private var asked: [String] = []

    init(bus: PrivateBus, allowed: Set<String>) throws {
        allowedActions = allowed
        connection = try bus.connect()
        var i = BusInterface("org.freedesktop.PolicyKit1.Authority")
        i.method("CheckAuthorization", in: "(sa{sv})sa{ss}us", out: "(bba{ss})") { [self] call in
            let action = try call.argument(1).asString()
            let ok = lock.withLock { asked.append(action); return allowedActions.contains(action) }
            return [.structure([.boolean(ok), .boolean(false), .dictionary(keySignature: "s", valueSignature: "s", [])])]
        }
        try connection.export(path: "/org/freedesktop/PolicyKit1/Authority", interfaces: [i])
        try connection.requestName("org.freedesktop.PolicyKit1")
    }

    var actionsAsked: [String] { lock.withLock { asked } }
    func allow(_ action: String) { lock.withLock { _ = allowedActions.insert(action) } }
    func close() { connection.close() }
}

/// busctl against the private bus.
func busctl(_ bus: PrivateBus, _ args: [String]) throws -> ToolResult {
    try runTool("busctl", ["--address=\(bus.address)"] + args)
}

enum Fixtures {
    /// A model with C' = 8, seeded initial weights, saved in our layout: (file bytes, path).
    static func smallModel(in dir: URL, seed: UInt64 = 7) throws -> (bytes: [UInt8], url: URL) {
        let m = AffinityModel(affinities: 8)
        var rng = SeededGenerator(seed: seed)
        m.initialize(rng: &rng)
        let url = dir.appendingPathComponent("small-\(seed).safetensors")
        try ModelLoader.save(m, to: url)
        return ([UInt8](try Data(contentsOf: url)), url)
    }

    /// A 512×512 phantom chest slice of class COVID-19 as PNG bytes.
    static func slicePNG(index: Int = 4) throws -> [UInt8] {
        try PNG.encode(PhantomGenerator(seed: 11, size: 512).slice(index: index, class: .covid).pixelImage)
    }

    /// A PNG signature and a valid IHDR declaring width × height, then nothing.
    static func hugeHeaderPNG(width: UInt32 = 100_000, height: UInt32 = 100_000) -> [UInt8] {
        func be(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)] }
        let chunk: [UInt8] = Array("IHDR".utf8) + be(width) + be(height) + [8, 0, 0, 0, 0]
        var bytes = PNG.signature + be(13) + chunk + be(crc32(chunk))
        bytes += be(0) + Array("IEND".utf8) + be(crc32(Array("IEND".utf8)))
        return bytes
    }

    static func crc32(_ data: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in data {
            c ^= UInt32(b)
            for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        }
        return c ^ 0xFFFF_FFFF
    }
}

/// affinityd with its own state directory on a private bus, a client connection, and the Completed
/// signals of its jobs: what the daemon tests that run jobs start from. `stop()` ends all three
/// (the test defers it); `daemon` stays reachable for its log and for stopping it early.
final class DaemonSession: @unchecked Sendable {
    let bus: PrivateBus
    let daemon: DaemonProcess
    let client: BusConnection
    private let completed = Collected<ReceivedSignal>()
    private var subscription: SignalSubscription?

    init(stateDirectory: URL, arguments: [String] = []) throws {
        bus = try PrivateBus()
        do {
            daemon = try DaemonProcess(bus: bus, stateDirectory: stateDirectory, arguments: arguments)
        } catch {
            bus.stop()
            throw error
        }
        do {
            client = try bus.connect()
            subscription = try client.subscribe(MatchRule(interface: DaemonProcess.job, member: "Completed")) { [completed] in
                completed.append($0)
            }
        } catch {
            daemon.stop(); bus.stop()
            throw error
        }
    }

    /// A Manager method.
    func call(_ method: String, _ args: [DBusValue]) throws -> [DBusValue] { try DaemonTests.call(client, method, args) }

    /// Starts a job with the Manager method (Train, Finetune), waits for its Completed signal and
    /// expects success; returns the job's result and the properties of the model it published.
    func runJob(_ method: String, _ args: [DBusValue], sourceLocation: SourceLocation = #_sourceLocation) throws
        -> (result: [String: DBusValue], model: [String: DBusValue]) {
        let before = completed.all.count
        let job = try call(method, args)[0].asObjectPath()
        #expect(waitUntil(600) { completed.all.count > before }, "no Completed signal", sourceLocation: sourceLocation)
        let signal = try #require(completed.all.last, sourceLocation: sourceLocation)
        #expect(signal.path == job, sourceLocation: sourceLocation)
        #expect(try signal.arguments[0].asBool() == true, "\(signal.arguments)", sourceLocation: sourceLocation)
        let result = try signal.arguments[2].asVardict()
        let modelPath = try #require(try result["model"]?.asObjectPath(), "\(result)", sourceLocation: sourceLocation)
        return (result, try client.getAllProperties(destination: DaemonProcess.name, path: modelPath, interface: DaemonProcess.model))
    }

    func stop() {
        subscription?.cancel()
        client.close()
        daemon.stop()
        bus.stop()
    }
}
