// Small internals: a pthread mutex, the monotonic clock, libdbus error and string helpers.
import CDBus
#if canImport(Glibc)
import Glibc
#endif

/// A mutual-exclusion lock over a heap-allocated pthread mutex.
// @unchecked Sendable: a pthread mutex, allocated once and never moved; that is the point of it.
final class Lock: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    /// Creates an unlocked mutex.
    init() { pthread_mutex_init(mutex, nil) }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` with the mutex held.
    @inline(__always)
    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}

/// Milliseconds on the monotonic clock (for libdbus timeouts and deadlines).
func monotonicMilliseconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}

/// Milliseconds in a Duration, clamped to the range libdbus accepts for timeouts.
func clampedMilliseconds(_ d: Duration) -> Int32 {
    let (seconds, attoseconds) = d.components
    if seconds < 0 { return 0 }
    if seconds >= 2_000_000 { return Int32(CDBUS_TIMEOUT_INFINITE) }
    let ms = seconds * 1000 + attoseconds / 1_000_000_000_000_000
    return Int32(min(ms, Int64(CDBUS_TIMEOUT_INFINITE)))
}

/// Calls `dbus_threads_init_default` once, before any other libdbus use in this process.
let libdbusThreadsInitialised: Bool = {
    dbus_threads_init_default() != 0
}()

/// A libdbus `DBusError` on the heap (it must not move while libdbus writes to it).
final class CError {
    /// The underlying C struct.
    let raw = UnsafeMutablePointer<CDBus.DBusError>.allocate(capacity: 1)

    init() {
        raw.initialize(to: CDBus.DBusError())
        dbus_error_init(raw)
    }

    deinit {
        dbus_error_free(raw)
        raw.deinitialize(count: 1)
        raw.deallocate()
    }

    /// Whether libdbus set an error.
    var isSet: Bool { dbus_error_is_set(raw) != 0 }

    /// The error as a `BusError`, using `fallback` for the message if libdbus gave none.
    func busError(_ fallback: String) -> BusError {
        let name = raw.pointee.name.map { String(cString: $0) } ?? BusError.Name.failed
        let message = raw.pointee.message.map { String(cString: $0) } ?? fallback
        return BusError(name: name, message: message)
    }
}

/// A Swift string from a C string that may be NULL.
@inline(__always)
func optionalString(_ p: UnsafePointer<CChar>?) -> String? {
    guard let p else { return nil }
    return String(cString: p)
}

/// Whether a Swift string can travel as a D-Bus string (no NUL bytes).
@inline(__always)
func hasNoNUL(_ s: String) -> Bool { !s.utf8.contains(0) }

/// D-Bus name validation, wrapping libdbus's validators (which never abort).
enum Names {
    /// Whether `s` is a valid object path (`/`, `/a/b_1`).
    static func isValidPath(_ s: String) -> Bool {
        hasNoNUL(s) && dbus_validate_path(s, nil) != 0
    }
    /// Whether `s` is a valid interface name (`org.example.Iface`).
    static func isValidInterface(_ s: String) -> Bool {
        hasNoNUL(s) && dbus_validate_interface(s, nil) != 0
    }
    /// Whether `s` is a valid member name (`Method`).
    static func isValidMember(_ s: String) -> Bool {
        hasNoNUL(s) && dbus_validate_member(s, nil) != 0
    }
    /// Whether `s` is a valid error name (same rules as interface names).
    static func isValidErrorName(_ s: String) -> Bool {
        hasNoNUL(s) && dbus_validate_error_name(s, nil) != 0
    }
    /// Whether `s` is a valid unique or well-known bus name.
    static func isValidBusName(_ s: String) -> Bool {
        hasNoNUL(s) && dbus_validate_bus_name(s, nil) != 0
    }
}
