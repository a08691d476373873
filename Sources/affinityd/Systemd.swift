// sd_notify and journald logging (stderr with <N> priority prefixes when not under journald).
import CSystemd
import Foundation

/// sd_notify(3) messages to the service manager (no-ops without NOTIFY_SOCKET).
enum Notify {
    private static let lock = NSLock()
    // nonisolated(unsafe): read and written under `lock` only.
    nonisolated(unsafe) private static var lastStatus = ""

    static func send(_ state: String) {
        _ = sd_notify(0, state)
    }

    /// STATUS=…, sent only when it changes.
    static func status(_ text: String) {
        let changed = lock.withLock { () -> Bool in
            if text == lastStatus { return false }
            lastStatus = text
            return true
        }
        if changed { send("STATUS=" + text) }
    }

    /// The watchdog interval in microseconds when WatchdogSec is set for this process, else nil.
    static var watchdogMicroseconds: UInt64? {
        var usec: UInt64 = 0
        return sd_watchdog_enabled(0, &usec) > 0 && usec > 0 ? usec : nil
    }
}

/// A test-only way to stall the bus thread (issue 17, `scripts/system-test`): with
/// `AFFINITY_DEBUG_WATCHDOG_STALL=1` in the environment, SIGUSR1 makes the next watchdog ping's
/// reply block the bus thread for good, so that no call is served and no `WATCHDOG=1` is sent: the
/// service manager's watchdog then kills the daemon. `affinityd.service` never sets the variable;
/// without it nothing is installed and SIGUSR1 keeps its default action.
enum WatchdogStall {
    static let environmentVariable = "AFFINITY_DEBUG_WATCHDOG_STALL"
    /// Set by the SIGUSR1 handler (a plain word: the only thing a handler may touch).
    nonisolated(unsafe) static var requested: sig_atomic_t = 0

    /// Installs the SIGUSR1 handler when the environment asks for it.
    static func installIfEnabled() {
        guard ProcessInfo.processInfo.environment[environmentVariable] == "1" else { return }
        requested = 0
        signal(SIGUSR1) { _ in WatchdogStall.requested = 1 }
        Log.log(Log.warning, "\(environmentVariable)=1: SIGUSR1 will stall the bus thread (a test switch, not for production).")
    }

    /// Called on the bus thread: never returns once SIGUSR1 has arrived.
    static func stallIfRequested() {
        guard requested != 0 else { return }
        Log.log(Log.warning, "SIGUSR1: stalling the bus thread (\(environmentVariable)); the watchdog will end the daemon.")
        while true { sleep(3600) }
    }
}

/// Log lines: to journald with structured fields when JOURNAL_STREAM is set (we run under
/// systemd), otherwise to stderr as `<priority>message` (sd-daemon(3) prefixes).
enum Log {
    /// syslog priorities.
    static let err = 3, warning = 4, notice = 5, info = 6, debug = 7
    nonisolated(unsafe) static var maxPriority = 6
    static let toJournal = ProcessInfo.processInfo.environment["JOURNAL_STREAM"] != nil
    private static let lock = NSLock()

    /// Logs `message` with extra journal fields (e.g. `JOB_ID`, `MODEL_ID`).
    static func log(_ priority: Int, _ message: String, _ fields: [String: String] = [:]) {
        guard priority <= maxPriority else { return }
        if toJournal {
            var lines = ["MESSAGE=" + message, "PRIORITY=\(priority)", "SYSLOG_IDENTIFIER=affinityd"]
            for (k, v) in fields.sorted(by: { $0.key < $1.key }) { lines.append("\(k)=\(v)") }
            let buffers = lines.map { Array($0.utf8) }
            var ok: Int32 = -1
            var pointers: [UnsafeMutableRawPointer] = []
            for b in buffers {
                let p = UnsafeMutableRawPointer.allocate(byteCount: max(b.count, 1), alignment: 1)
                b.withUnsafeBytes { p.copyMemory(from: $0.baseAddress!, byteCount: b.count) }
                pointers.append(p)
            }
            var iov = zip(pointers, buffers).map { iovec(iov_base: $0.0, iov_len: $0.1.count) }
            ok = iov.withUnsafeMutableBufferPointer { sd_journal_sendv($0.baseAddress, Int32($0.count)) }
            for p in pointers { p.deallocate() }
            if ok >= 0 { return }
        }
        let extra = fields.isEmpty ? "" : " [" + fields.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ") + "]"
        let line = "<\(priority)>\(message)\(extra)\n"
        lock.withLock { FileHandle.standardError.write(Data(line.utf8)) }
    }

    static func error(_ m: String, _ f: [String: String] = [:]) { log(err, m, f) }
    static func warn(_ m: String, _ f: [String: String] = [:]) { log(warning, m, f) }
    static func info(_ m: String, _ f: [String: String] = [:]) { log(info, m, f) }
}
