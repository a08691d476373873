// A private dbus-daemon per test, and running the real D-Bus tools against it (BusTests, ServiceTests).
import Bus
import CloseGuard
import Foundation
import SystemIO

/// A private message bus: `dbus-daemon --nofork` with an allow-everything session config in a
/// temporary directory. `stop()` (or deinit) kills it and removes the directory.
public final class PrivateBus: @unchecked Sendable {
    /// The address printed by the daemon (`unix:path=/tmp/dbus-…,guid=…`).
    public let address: String
    private let process: Process
    private let directory: URL

    /// Starts the daemon and reads its address from its stdout.
    public init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("bus-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let config = directory.appendingPathComponent("bus.conf")
        try """
        <!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
         "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
        <busconfig>
          <type>session</type>
          <listen>unix:tmpdir=/tmp</listen>
          <auth>EXTERNAL</auth>
          <policy context="default">
            <allow send_destination="*" eavesdrop="true"/>
            <allow eavesdrop="true"/>
            <allow own="*"/>
          </policy>
        </busconfig>
        """.write(to: config, atomically: true, encoding: .utf8)
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/dbus-daemon")
        process.arguments = ["--config-file=\(config.path)", "--print-address=1", "--nofork"]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        var buffer = Data()
        let handle = out.fileHandleForReading
        while !buffer.contains(UInt8(ascii: "\n")) {
            let chunk = handle.availableData
            if chunk.isEmpty { break }
            buffer.append(chunk)
        }
        let text = String(decoding: buffer, as: UTF8.self)
        guard let line = text.split(separator: "\n").first, line.hasPrefix("unix:") else {
            process.terminate()
            throw BusError.failed("dbus-daemon printed no address: \(text)")
        }
        address = String(line)
    }

    deinit { stop() }

    /// Kills the daemon (SIGKILL: a child spawned from a dispatch worker thread inherits a mask
    /// that blocks SIGTERM) and removes its directory (idempotent).
    public func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        // A killed daemon leaves its socket behind: remove it (unix:path=/tmp/dbus-…,guid=…).
        if let path = address.split(separator: ",").first?.split(separator: "=", maxSplits: 1).last,
           address.hasPrefix("unix:path=") {
            try? FileManager.default.removeItem(atPath: String(path))
        }
        try? FileManager.default.removeItem(at: directory)
    }

    /// A new connection to this bus.
    public func connect(workerQueue: DispatchQueue? = nil) throws -> BusConnection {
        try BusConnection(address: address, workerQueue: workerQueue)
    }
}

/// The result of running a command-line tool.
public struct ToolResult {
    public var status: Int32
    public var stdout: String
    public var stderr: String
}

/// Runs `/usr/bin/<tool> args…` (or `tool` itself, an absolute path), optionally with `stdin`
/// from a file descriptor, and waits.
public func runTool(_ tool: String, _ args: [String], stdin: FileHandle? = nil) throws -> ToolResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: tool.hasPrefix("/") ? tool : "/usr/bin/" + tool)
    p.arguments = args
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    if let stdin { p.standardInput = stdin }
    p.environment = ["PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "SYSTEMD_COLORS": "0", "NO_COLOR": "1"]
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return ToolResult(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self),
                      stderr: String(decoding: e, as: UTF8.self))
}

/// Waits until `condition` holds or `seconds` pass; returns whether it held.
public func waitUntil(_ seconds: Double = 10, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(5_000)
    }
    return condition()
}

/// A thread-safe list that signal handlers append to.
public final class Collected<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [T] = []
    public init() {}
    public func append(_ x: T) { lock.lock(); items.append(x); lock.unlock() }
    public var all: [T] { lock.lock(); defer { lock.unlock() }; return items }
}

/// The environment that turns the descriptor-ownership check on in a child process (the daemon,
/// the CLI) when it is on in the test process (`scripts/test` sets AFFINITY_CHECK_DESCRIPTORS=1),
/// and passes on the sanitizers' options (`scripts/test --sanitize`, issue 16), so that a child
/// built with a sanitizer reports as the test process does.
public var descriptorCheckEnvironment: [String: String] {
    var env = Descriptors.isChecking ? [Descriptors.environmentVariable: "1"] : [:]
    let own = ProcessInfo.processInfo.environment
    for key in ["ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS"] { env[key] = own[key] }
    return env
}

/// Whether Tests/CloseGuard's checking close(2) is linked into this process (it always is: this
/// reference keeps its object in the test binary).
public let closeGuardInstalled: Bool = closeguard_installed() == 1
