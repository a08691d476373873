// Descriptors: one owner per file descriptor, and a checked close that says so loudly when the rule
// is broken (a descriptor closed twice, or closed by code that does not own it).
//
// Every descriptor the package opens has exactly one owner: a `FileDescriptor` (Bus), or the scope
// that opened it with `Descriptors.open` / `Descriptors.adopt` and closes it with `Descriptors.close`
// in a `defer` beside the open. With checking on (`AFFINITY_CHECK_DESCRIPTORS=1`, which
// `scripts/test` sets for the test process and the daemons and clients it starts), a registry
// remembers which numbers are owned and by whom, and a close that breaks the rule stops the
// process with a message naming the descriptor, its owner and the offending call. A number closed
// by a non-owner is reused by the next `open` on any thread, so the bug shows up far from its
// cause, as another request's data under the wrong descriptor; the registry catches it at the
// close. With checking off (production), the functions are plain `open`/`close` calls.
import CSystemIO
#if canImport(Glibc)
import Glibc
#endif

/// The descriptor registry and the checked open and close.
public enum Descriptors {
    /// Who owns a registered descriptor.
    public enum Owner: Equatable, Sendable, CustomStringConvertible {
        /// A wrapper object (a `FileDescriptor`), identified by its address.
        case wrapper(UInt)
        /// The scope that opened it (a `defer { Descriptors.close(fd) }` beside the open).
        case scope(String)

        public var description: String {
            switch self {
            case .wrapper(let id): return "a FileDescriptor (0x\(String(id, radix: 16)))"
            case .scope(let site): return "the scope that opened it (\(site))"
            }
        }
    }

    /// Whether the registry checks ownership: `AFFINITY_CHECK_DESCRIPTORS=1` in the environment
    /// when the process starts, or `enableChecking()`.
    public static var isChecking: Bool { state.withLock { $0.checking } }

    /// Turns checking on for the rest of the process (descriptors opened before are unknown to it,
    /// so it is turned on before any is opened, or by the environment variable).
    public static func enableChecking() {
        state.withLock { $0.checking = true }
        csio_set_close_check(closeCheck)
    }

    /// close(2) by the registered owner of `fd` (a system call: an interposed `close`, which checks
    /// everybody else's, is not involved). For `FileDescriptor`; scopes use `close(_:)`.
    public static func ownerClose(_ fd: Int32) -> Int32 { csio_owner_close(fd) }

    /// The environment variable that turns checking on, for passing to child processes.
    public static let environmentVariable = "AFFINITY_CHECK_DESCRIPTORS"

    /// The number of descriptors the registry knows as owned (0 when checking is off).
    public static var ownedCount: Int { state.withLock { $0.owners.count } }

    /// The owner the registry knows for `fd`, if checking is on and it is registered.
    public static func owner(of fd: Int32) -> Owner? { state.withLock { $0.owners[fd] } }

    /// `open(2)` with `O_CLOEXEC` added; the descriptor is owned by the calling scope, which closes
    /// it with `close(_:)`. Returns -1 and leaves `errno` set on failure.
    public static func open(_ path: String, _ flags: Int32, _ mode: mode_t = 0, site: String = #fileID, line: Int = #line) -> Int32 {
        let fd = Glibc.open(path, flags | O_CLOEXEC, mode)
        if fd >= 0 { register(fd, .scope("\(site):\(line)"), site: "\(site):\(line)") }
        return fd
    }

    /// Records that the calling scope owns `fd`, which it got from a call that made a new
    /// descriptor (`socket`, `pipe2`, a plugin's sample, …); it closes it with `close(_:)`.
    public static func adopt(_ fd: Int32, site: String = #fileID, line: Int = #line) {
        guard fd >= 0 else { return }
        register(fd, .scope("\(site):\(line)"), site: "\(site):\(line)")
    }

    /// Closes a descriptor the calling scope owns (from `open` or `adopt`). With checking on, closing
    /// a descriptor that is not registered (closed already, or never ours) or that a wrapper owns
    /// stops the process with a message.
    public static func close(_ fd: Int32, site: String = #fileID, line: Int = #line) {
        guard fd >= 0 else { return }
        release(fd, site: site, line: line)
        let r = csio_owner_close(fd)
        if r != 0 && errno == EBADF && isChecking {
            violation("descriptor \(fd) closed at \(site):\(line) was not open (EBADF): someone else closed it")
        }
    }

    /// `close(_:)` that reports whether close(2) succeeded (a failed close of a written file is an
    /// I/O error the writer reports; `errno` is left as close(2) set it).
    public static func closeReportingError(_ fd: Int32, site: String = #fileID, line: Int = #line) -> Bool {
        guard fd >= 0 else { return true }
        release(fd, site: site, line: line)
        let r = csio_owner_close(fd)
        let code = errno
        if r != 0 && code == EBADF && isChecking {
            violation("descriptor \(fd) closed at \(site):\(line) was not open (EBADF): someone else closed it")
        }
        errno = code
        return r == 0
    }

    /// Registers `fd` as owned by a wrapper (`FileDescriptor.init(taking:)`).
    public static func registerWrapper(_ fd: Int32, id: UInt, site: String = #fileID, line: Int = #line) {
        guard fd >= 0 else { return }
        register(fd, .wrapper(id), site: "\(site):\(line)")
    }

    /// Forgets a wrapper's descriptor before the wrapper closes it or gives it away (`release()`).
    public static func unregisterWrapper(_ fd: Int32, id: UInt, closing: Bool, site: String = #fileID, line: Int = #line) {
        guard fd >= 0 else { return }
        let problem: String? = state.withLock { s in
            guard s.checking else { return nil }
            switch s.owners[fd] {
            case .wrapper(let owner)? where owner == id:
                s.owners[fd] = nil
                return nil
            case let other?:
                return "descriptor \(fd) is \(closing ? "closed" : "released") by a FileDescriptor (0x\(String(id, radix: 16))) but \(other) owns it"
            case nil:
                // A wrapper made before checking was turned on: nothing is known of it.
                return nil
            }
        }
        if let problem { violation(problem) }
    }

    /// The close(2) result check of a wrapper: EBADF means someone else closed its descriptor.
    public static func checkWrapperClose(result: Int32, errno code: Int32, fd: Int32) {
        if result != 0 && code == EBADF && isChecking {
            violation("descriptor \(fd) owned by a FileDescriptor was not open when it closed it (EBADF): someone else closed it")
        }
    }

    // MARK: private

    /// The ownership check of a scope's close: the number must be registered to a scope.
    private static func release(_ fd: Int32, site: String, line: Int) {
        let problem: String? = state.withLock { s in
            guard s.checking else { return nil }
            switch s.owners[fd] {
            case nil:
                return "descriptor \(fd) is closed at \(site):\(line), but no scope owns it: it was closed already (a double close) or was never opened through Descriptors"
            case .wrapper(let id)?:
                return "descriptor \(fd) is closed at \(site):\(line) while \(Owner.wrapper(id)) owns it"
            case .scope?:
                s.owners[fd] = nil
                return nil
            }
        }
        if let problem { violation(problem) }
    }

    private static func register(_ fd: Int32, _ owner: Owner, site: String) {
        let problem: String? = state.withLock { s in
            guard s.checking else { return nil }
            if let previous = s.owners[fd] {
                // The kernel handed out a number the registry still thinks is owned: its owner's
                // descriptor was closed behind its back.
                s.owners[fd] = owner
                return "descriptor \(fd) is new at \(site), but \(previous) still owns that number: someone closed it behind its owner's back"
            }
            s.owners[fd] = owner
            return nil
        }
        if let problem { violation(problem) }
    }

    /// How a violation ends: by default, the process stops with the message (tests see it in the
    /// crash report; nothing goes on with a descriptor that may name another caller's file).
    private static func violation(_ message: String) -> Never {
        csio_fail("affinity: descriptor ownership violated: \(message).\n")
    }

    /// The check of an interposed close(2) (Tests/CloseGuard links one into the test process):
    /// nobody but an owner closes a registered descriptor, and nobody closes a number that is not open.
    private static let closeCheck: csio_close_check = { fd, phase in
        if phase == 0 {
            guard let owner = state.withLock({ $0.checking ? $0.owners[fd] : nil }) else { return }
            violation("close(2) of descriptor \(fd) by code that does not own it, while \(owner) owns it")
        } else if Descriptors.isChecking {
            violation("close(2) of descriptor \(fd), which is not open: a double close (once the number is reused, it closes somebody else's descriptor)")
        }
    }

    private struct State {
        var checking: Bool
        var owners: [Int32: Owner] = [:]
    }

    private static let state: Locked<State> = {
        let value = getenv(environmentVariable).map { String(cString: $0) }
        let checking = value == "1" || value == "yes" || value == "true"
        if checking { csio_set_close_check(closeCheck) }
        return Locked(State(checking: checking))
    }()
}

/// A minimal mutex-protected box (pthread mutex; the package targets Swift 5 and 6 modes alike).
final class Locked<Value>: @unchecked Sendable {
    // Safe: every access to `value` happens inside `withLock`, under `mutex`.
    private var mutex = pthread_mutex_t()
    private var value: Value

    init(_ value: Value) {
        self.value = value
        pthread_mutex_init(&mutex, nil)
    }

    deinit { pthread_mutex_destroy(&mutex) }

    func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return try body(&value)
    }
}
