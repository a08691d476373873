// LocalDaemon: a private dbus-daemon and affinityd for one command (`--local`).
import AffinityAPI
import Bus
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A private message bus and an affinityd on it, started for one command and stopped after it.
///
/// Both run in their own process group, so a Ctrl-C at the terminal reaches only affinityctl,
/// which then stops them in order: affinityd first (SIGTERM: jobs are cancelled, training jobs
/// write a checkpoint, for `job resume`), then the bus. The bus socket lives in a temporary directory that is
/// removed afterwards; the daemon's state lives in the per-user state directory.
final class LocalDaemon {
    let address: String
    let stateDirectory: String
    private let runtimeDirectory: String
    private var busPID: pid_t
    private var daemonPID: pid_t
    private var stopped = false
    private let stopLock = NSLock()

    private init(address: String, stateDirectory: String, runtimeDirectory: String, busPID: pid_t, daemonPID: pid_t) {
        self.address = address
        self.stateDirectory = stateDirectory
        self.runtimeDirectory = runtimeDirectory
        self.busPID = busPID
        self.daemonPID = daemonPID
    }

    /// `$XDG_STATE_HOME/affinity`, else `~/.local/state/affinity`.
    static func defaultStateDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let x = environment["XDG_STATE_HOME"], x.hasPrefix("/") { return x + "/affinity" }
        let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
        return home + "/.local/state/affinity"
    }

    /// The affinityd next to this executable, else the first on PATH.
    static func findAffinityd(environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        var candidates: [String] = []
        if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            candidates.append((exe as NSString).deletingLastPathComponent + "/affinityd")
        }
        for dir in (environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":") where !dir.isEmpty {
            candidates.append(String(dir) + "/affinityd")
        }
        for dir in ["/usr/libexec", "/usr/lib/affinity"] { candidates.append(dir + "/affinityd") }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Starts the bus and the daemon and waits until the daemon answers (at most `timeout` seconds).
    /// - Throws: `CtlError` (69) when a program is missing or does not come up.
    /// - Parameter started: called with the daemon as soon as the bus process runs (so a signal
    ///   handler can stop it while it comes up).
    static func start(quiet: Bool, timeout: Double = 120, started: (LocalDaemon) -> Void = { _ in }) throws -> LocalDaemon {
        guard let affinityd = findAffinityd() else {
            throw CtlError(Exit.unavailable, "--local needs affinityd, next to affinityctl or on PATH; it was not found.")
        }
        let dbusDaemon = ["/usr/bin/dbus-daemon", "/bin/dbus-daemon"].first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let dbusDaemon else {
            throw CtlError(Exit.unavailable, "--local needs dbus-daemon (Debian package dbus-daemon); it was not found.")
        }
        let state = defaultStateDirectory()
        do {
            try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        } catch {
            throw CtlError(Exit.failed, "Cannot create the state directory \(state): \(error.localizedDescription)")
        }
        var tmp = ProcessInfo.processInfo.environment["TMPDIR"].flatMap { $0.hasPrefix("/") ? $0 : nil } ?? "/tmp"
        while tmp.count > 1 && tmp.hasSuffix("/") { tmp.removeLast() }
        var template = Array((tmp + "/affinityctl-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else {
            throw CtlError(Exit.failed, "Cannot create a temporary directory: \(String(cString: strerror(errno))).")
        }
        let runtime = String(cString: made)
        let socket = runtime + "/bus"
        let config = runtime + "/bus.conf"
        let configText = """
            <!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
             "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
            <busconfig>
              <type>session</type>
              <listen>unix:path=\(socket)</listen>
              <auth>EXTERNAL</auth>
              <policy context="default">
                <allow send_destination="*" eavesdrop="true"/>
                <allow eavesdrop="true"/>
                <allow own="*"/>
              </policy>
            </busconfig>
            """
        do { try configText.write(toFile: config, atomically: true, encoding: .utf8) } catch {
            try? FileManager.default.removeItem(atPath: runtime)
            throw CtlError(Exit.failed, "Cannot write \(config): \(error.localizedDescription)")
        }
        let address = "unix:path=" + socket
        let busPID: pid_t
        do { busPID = try spawn(dbusDaemon, ["--config-file=\(config)", "--nofork", "--nopidfile"], log: nil) } catch {
            try? FileManager.default.removeItem(atPath: runtime)
            throw error
        }
        let local = LocalDaemon(address: address, stateDirectory: state, runtimeDirectory: runtime, busPID: busPID, daemonPID: 0)
        started(local)
        let deadline = Date().addingTimeInterval(timeout)
        while !FileManager.default.fileExists(atPath: socket) {
            if Date() > deadline || !isAlive(busPID) {
                local.stop()
                throw CtlError(Exit.unavailable, "The private dbus-daemon did not start.")
            }
            usleep(10_000)
        }
        let log = state + "/affinityd-local.log"
        do {
            // No auto-resume: a private daemon lives for one command, and a training job it resumed
            // would stop again with it; `affinityctl --local job resume N` continues one in the foreground.
            local.daemonPID = try spawn(affinityd, ["--bus", address, "--state-dir", state, "--authorization", "none", "--no-auto-resume"]
                                            + pluginArguments(affinityd: affinityd),
                                        log: log)
        } catch {
            local.stop()
            throw error
        }
        if !quiet {
            FileHandle.standardError.write(Data("affinityctl: started a private affinityd (\(affinityd)), state in \(state)\n".utf8))
        }
        // Ready once it owns its name and has left the starting state (the default model is loaded).
        let connection: BusConnection
        do { connection = try BusConnection(address: address) } catch {
            local.stop()
            throw CtlError(Exit.unavailable, "Cannot connect to the private bus: \(error)")
        }
        defer { connection.close() }
        while true {
            if let state = try? connection.getProperty(destination: API.busName, path: API.root, interface: API.manager,
                                                       name: "State", timeout: .seconds(5)),
               case .string(let s) = state, s != "starting" {
                break
            }
            if Date() > deadline || !local.isDaemonAlive {
                let tail = (try? String(contentsOfFile: log, encoding: .utf8)).map { String($0.suffix(1500)) } ?? ""
                local.stop()
                throw CtlError(Exit.unavailable, "The private affinityd did not come up (log: \(log)).\n\(tail)")
            }
            usleep(50_000)
        }
        return local
    }

    var isDaemonAlive: Bool { daemonPID > 0 && LocalDaemon.isAlive(daemonPID) }

    /// Stops affinityd (SIGTERM, SIGKILL after 60 s), then the bus, and removes the socket directory. Idempotent.
    func stop() {
        stopLock.lock()
        defer { stopLock.unlock() }
        guard !stopped else { return }
        stopped = true
        if daemonPID > 0 { LocalDaemon.terminate(daemonPID, grace: 60) }
        if busPID > 0 { LocalDaemon.terminate(busPID, grace: 5) }
        daemonPID = 0
        busPID = 0
        try? FileManager.default.removeItem(atPath: runtimeDirectory)
    }

    deinit { stop() }

    // MARK: Processes

    static func isAlive(_ pid: pid_t) -> Bool {
        var status: Int32 = 0
        return waitpid(pid, &status, WNOHANG) == 0
    }

    /// SIGTERM, wait up to `grace` seconds, then SIGKILL; reaps the child.
    static func terminate(_ pid: pid_t, grace: Double) {
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) != 0 { return }
        kill(pid, SIGTERM)
        let deadline = Date().addingTimeInterval(grace)
        while Date() < deadline {
            if waitpid(pid, &status, WNOHANG) != 0 { return }
            usleep(20_000)
        }
        kill(pid, SIGKILL)
        _ = waitpid(pid, &status, 0)
    }

    /// `--plugin-dir <folder>` when affinityd runs from a build folder that holds the package's
    /// plugin libraries (where SwiftPM puts them, beside the executables), so that a --local daemon
    /// decodes DICOM and JPEG as an installed one does with /usr/lib/affinity/plugins.
    static func pluginArguments(affinityd: String) -> [String] {
        let folder = (URL(fileURLWithPath: affinityd).resolvingSymlinksInPath().path as NSString).deletingLastPathComponent
        guard !folder.hasPrefix("/usr/"),
              let names = try? FileManager.default.contentsOfDirectory(atPath: folder),
              names.contains(where: { $0.hasPrefix("libaffinity-") && $0.hasSuffix(".so") }) else { return [] }
        return ["--plugin-dir", folder]
    }

    /// Starts `path args…` in a process group of its own, stdin from /dev/null, stdout and
    /// stderr to `log` (truncated) or /dev/null, with default signal handling.
    /// - Throws: `CtlError` (69) when the program cannot be started.
    static func spawn(_ path: String, _ args: [String], log: String?) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        let out = log ?? "/dev/null"
        posix_spawn_file_actions_addopen(&actions, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for s in [SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGQUIT] { sigaddset(&defaults, s) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigdefault(&attr, &defaults)
        posix_spawnattr_setsigmask(&attr, &empty)
        posix_spawnattr_setpgroup(&attr, 0)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + args).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var env = ProcessInfo.processInfo.environment
        env["NOTIFY_SOCKET"] = nil
        env["LISTEN_FDS"] = nil
        env["LISTEN_PID"] = nil
        let envp: [UnsafeMutablePointer<CChar>?] = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for p in envp { free(p) } }
        var pid: pid_t = 0
        let r = posix_spawn(&pid, path, &actions, &attr, argv, envp)
        guard r == 0 else {
            throw CtlError(Exit.unavailable, "Cannot start \(path): \(String(cString: strerror(r))).")
        }
        return pid
    }
}
