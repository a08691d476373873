// Client: the bus to talk on, the daemon's names, and the mapping of errors to exit codes.
import AffinityAPI
import Bus
import Foundation

/// The documented exit codes (sysexits.h where one fits).
enum Exit {
    static let ok: Int32 = 0
    /// The operation failed (bad image, data set, model that does not load, job failed, …).
    static let failed: Int32 = 1
    /// The job or call was cancelled.
    static let cancelled: Int32 = 3
    /// No such file, model or job.
    static let notFound: Int32 = 4
    /// Bad usage: unknown option, bad value (EX_USAGE).
    static let usage: Int32 = 64
    /// The daemon or the bus cannot be reached (EX_UNAVAILABLE).
    static let unavailable: Int32 = 69
    /// Not authorized (EX_NOPERM).
    static let notAuthorized: Int32 = 77
    /// Ctrl-C while waiting on a job: detached, the job goes on (128 + SIGINT).
    static let interrupted: Int32 = 130
}

/// An error of this tool: the exit code, the D-Bus error name when there is one, and a sentence.
struct CtlError: Error, CustomStringConvertible {
    var code: Int32
    var name: String?
    var message: String

    init(_ code: Int32, _ message: String, name: String? = nil) {
        self.code = code
        self.message = message
        self.name = name
    }

    var description: String { message }

    /// The exit code for a D-Bus error name.
    static func exitCode(forErrorName name: String) -> Int32 {
        if name.hasPrefix(API.errorPrefix) {
            switch API.ErrorName(rawValue: String(name.dropFirst(API.errorPrefix.count))) {
            case .cancelled: return Exit.cancelled
            case .notAuthorized: return Exit.notAuthorized
            case .modelNotFound: return Exit.notFound
            case .invalidArgument: return Exit.usage
            case .failed, .invalidImage, .unsupportedFormat, .modelNotReady, .busy, .queueFull, .datasetInvalid, .pluginFailed, nil:
                return Exit.failed
            }
        }
        switch name {
        case "org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner",
             "org.freedesktop.DBus.Error.NoServer", "org.freedesktop.DBus.Error.FileNotFound",
             "org.freedesktop.DBus.Error.Disconnected", "org.freedesktop.DBus.Error.NoReply",
             "org.freedesktop.DBus.Error.TimedOut", "org.freedesktop.DBus.Error.BadAddress",
             "org.freedesktop.DBus.Error.NoNetwork", "org.freedesktop.DBus.Error.AuthFailed",
             "org.freedesktop.DBus.Error.LimitsExceeded":
            return Exit.unavailable
        case "org.freedesktop.DBus.Error.AccessDenied", "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired",
             "org.freedesktop.PolicyKit1.Error.NotAuthorized":
            return Exit.notAuthorized
        case "org.freedesktop.DBus.Error.UnknownObject":
            return Exit.notFound
        case "org.freedesktop.DBus.Error.InvalidArgs":
            return Exit.usage
        default:
            return name.hasPrefix("org.freedesktop.DBus.Error.Spawn") ? Exit.unavailable : Exit.failed
        }
    }

    /// A bus error as a tool error, with the exit code of its name.
    init(_ e: BusError, context: String? = nil) {
        let code = CtlError.exitCode(forErrorName: e.name)
        var text = e.message
        if code == Exit.unavailable, !text.contains("affinityd") {
            text += " Is affinityd running? (--local starts a private one.)"
        }
        if e.name == "org.freedesktop.DBus.Error.UnknownObject", let context { text = context }
        self.init(code, text, name: e.name)
    }

    /// Any error as a tool error.
    static func wrap(_ error: Error, context: String? = nil) -> CtlError {
        switch error {
        case let e as CtlError: return e
        case let e as BusError: return CtlError(e, context: context)
        default: return CtlError(Exit.failed, String(describing: error))
        }
    }
}

/// Which bus to use: `--bus`, else `AFFINITY_BUS_ADDRESS`, else the system bus.
enum BusChoice: Equatable, CustomStringConvertible {
    case system, session, address(String)

    init(_ text: String?) {
        switch text?.trimmingCharacters(in: .whitespaces) {
        case nil, "", "system": self = .system
        case "session": self = .session
        case let a?: self = .address(a)
        }
    }

    /// `--bus` if given, else the environment's `AFFINITY_BUS_ADDRESS`, else the system bus.
    static func resolve(_ option: String?, environment: [String: String] = ProcessInfo.processInfo.environment) -> BusChoice {
        BusChoice(option ?? environment["AFFINITY_BUS_ADDRESS"])
    }

    var description: String {
        switch self {
        case .system: return "the system bus"
        case .session: return "the session bus"
        case .address(let a): return a
        }
    }

    /// Opens a connection.
    /// - Throws: `CtlError` with exit code 69 when the bus cannot be reached.
    func connect() throws -> BusConnection {
        do {
            switch self {
            case .system: return try BusConnection(.system)
            case .session: return try BusConnection(.session)
            case .address(let a): return try BusConnection(address: a)
            }
        } catch let e as BusError {
            throw CtlError(Exit.unavailable, "Cannot connect to \(self): \(e.message)", name: e.name)
        }
    }
}

/// A connection to the daemon with the calls the commands need.
final class Client {
    private(set) var connection: BusConnection
    let bus: BusChoice

    init(connection: BusConnection, bus: BusChoice) {
        self.connection = connection
        self.bus = bus
    }

    /// Calls a method of the daemon; bus errors become `CtlError`s.
    /// - Parameter context: the message for `UnknownObject` (e.g. "There is no job 7.").
    func call(_ path: String = API.root, _ interface: String = API.manager, _ method: String, _ args: [DBusValue] = [],
              expecting: String? = nil, timeout: Duration = .seconds(120), context: String? = nil) throws -> [DBusValue] {
        do {
            return try connection.call(destination: API.busName, path: path, interface: interface, method: method, args,
                                       expecting: expecting, timeout: timeout)
        } catch {
            throw CtlError.wrap(error, context: context)
        }
    }

    /// All properties of one interface of a daemon object.
    func properties(_ path: String, _ interface: String, context: String? = nil) throws -> [String: DBusValue] {
        do {
            return try connection.getAllProperties(destination: API.busName, path: path, interface: interface, timeout: .seconds(30))
        } catch {
            throw CtlError.wrap(error, context: context)
        }
    }

    /// Whether the daemon owns its name (or the bus can start it on demand).
    func isServed() -> Bool {
        if (try? connection.nameOwner(API.busName, timeout: .seconds(5))) ?? nil != nil { return true }
        if let names = try? connection.call(destination: "org.freedesktop.DBus", path: "/org/freedesktop/DBus",
                                            interface: "org.freedesktop.DBus", method: "ListActivatableNames",
                                            expecting: "as", timeout: .seconds(5)),
           let list = try? names[0].asStrings() {
            return list.contains(API.busName)
        }
        return false
    }

    /// Replaces the connection with a new one to the same bus (after the bus itself went away).
    /// - Throws: `CtlError` 69 when the bus cannot be reached.
    func reconnect() throws {
        let fresh = try bus.connect()
        connection.close()
        connection = fresh
    }

    func close() { connection.close() }
}
