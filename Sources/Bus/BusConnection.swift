// BusConnection: the public face of a connection — open, name, send, call, subscribe, export.
import CDBus
import Dispatch

/// A connection to a D-Bus message bus, served by its own thread.
///
/// One thread owns the libdbus connection and runs a poll loop over libdbus's watches and
/// timeouts and an eventfd. Every other thread hands work to it through a queue (sends, calls,
/// signal emission); replies and errors come back through completions or by waiting. Method
/// handlers of exported objects run on that thread, on a worker queue, or reply later.
///
/// `close()` (or dropping the last reference) flushes what is queued, closes the connection and
/// ends the thread.
// @unchecked Sendable: immutable references to the core (ConnectionCore), whose shared state is locked; every call goes through it.
public final class BusConnection: @unchecked Sendable {
    /// The well-known message buses.
    public enum WellKnownBus: Sendable {
        /// The system bus (`DBUS_SYSTEM_BUS_ADDRESS` or `/run/dbus/system_bus_socket`).
        case system
        /// The user's session bus (`DBUS_SESSION_BUS_ADDRESS`).
        case session
    }

    let core: ConnectionCore

    /// Connects to the system or the session bus (a private connection, registered).
    /// - Parameter workerQueue: where `.onWorker` handlers run; a concurrent queue by default.
    /// - Throws: `BusError` from libdbus (e.g. `org.freedesktop.DBus.Error.FileNotFound`,
    ///   `NoServer`) if the bus cannot be reached.
    public init(_ bus: WellKnownBus, workerQueue: DispatchQueue? = nil) throws {
        _ = libdbusThreadsInitialised
        let err = CError()
        let type = bus == .system ? DBUS_BUS_SYSTEM : DBUS_BUS_SESSION
        guard let c = dbus_bus_get_private(type, err.raw) else {
            throw err.isSet ? err.busError("Cannot connect to the bus.")
                : BusError(name: "org.freedesktop.DBus.Error.NoServer", message: "Cannot connect to the \(bus) bus.")
        }
        core = try ConnectionCore(connection: c, workerQueue: workerQueue)
    }

    /// Connects to a bus (or, with `register: false`, a peer) at a D-Bus address such as
    /// `unix:path=/tmp/dbus-XYZ,guid=…`.
    /// - Parameters:
    ///   - address: the server address.
    ///   - register: whether to say `Hello` to a message bus (true for a bus, false for a peer).
    ///   - workerQueue: where `.onWorker` handlers run; a concurrent queue by default.
    /// - Throws: `BusError` from libdbus if the address is bad or nobody listens there.
    public init(address: String, register: Bool = true, workerQueue: DispatchQueue? = nil) throws {
        _ = libdbusThreadsInitialised
        guard hasNoNUL(address) else { throw BusError.invalidArgs("The bus address contains a NUL character.") }
        let err = CError()
        guard let c = dbus_connection_open_private(address, err.raw) else {
            throw err.isSet ? err.busError("Cannot connect to \(address).")
                : BusError(name: "org.freedesktop.DBus.Error.NoServer", message: "Cannot connect to \(address).")
        }
        dbus_connection_set_exit_on_disconnect(c, 0)
        if register {
            guard dbus_bus_register(c, err.raw) != 0 else {
                dbus_connection_close(c)
                dbus_connection_unref(c)
                throw err.isSet ? err.busError("Cannot register with the bus.") : BusError.failed("Cannot register with the bus at \(address).")
            }
        }
        core = try ConnectionCore(connection: c, workerQueue: workerQueue)
    }

    deinit { core.close() }

    // MARK: State

    /// Our unique name on the bus (`:1.42`); nil on a peer-to-peer connection.
    public var uniqueName: String? { core.uniqueName }

    /// Whether the connection is open (not closed by us and not lost).
    public var isOpen: Bool { core.isOpen }

    /// Whether the bus thread is still running (false once `close()` returned).
    public var isThreadRunning: Bool { core.isRunning }

    /// Whether libdbus has finalized the connection (no reference to it is left anywhere).
    public var isFinalized: Bool { core.finalized.isSet }

    /// Whether Unix file descriptors (`h`) can be passed (`dbus_connection_can_send_type`).
    public var canPassUnixFDs: Bool { core.canPassUnixFDs }

    /// Where `.onWorker` method handlers run.
    public var workerQueue: DispatchQueue { core.workerQueue }

    /// Called once, on a global queue, if the connection is lost (not after `close()`).
    public var onDisconnect: (@Sendable () -> Void)? {
        get { core.disconnectHandler }
        set { core.setDisconnectHandler(newValue) }
    }

    /// Flushes queued messages, closes the connection and waits for the bus thread to end
    /// (unless called on the bus thread itself, which then ends after the current work).
    /// Outstanding calls fail with `org.freedesktop.DBus.Error.Disconnected`. Idempotent.
    public func close() { core.close() }

    // MARK: Names

    /// Requests the well-known `name`, failing if another connection owns it.
    /// - Parameters:
    ///   - allowReplacement: let a later requester with `replaceExisting` take the name.
    ///   - replaceExisting: take the name from an owner that allowed replacement.
    /// - Throws: `BusError` named `org.lesionaffinity.Bus.Error.NameTaken` when the name is
    ///   owned by someone else; the bus driver's error (e.g. `AccessDenied`) otherwise.
    public func requestName(_ name: String, allowReplacement: Bool = false, replaceExisting: Bool = false,
                            timeout: Duration = .seconds(25)) throws {
        guard Names.isValidBusName(name), !name.hasPrefix(":") else {
            throw BusError.invalidArgs("'\(name)' is not a valid well-known bus name.")
        }
        var flags: UInt32 = UInt32(DBUS_NAME_FLAG_DO_NOT_QUEUE)
        if allowReplacement { flags |= UInt32(DBUS_NAME_FLAG_ALLOW_REPLACEMENT) }
        if replaceExisting { flags |= UInt32(DBUS_NAME_FLAG_REPLACE_EXISTING) }
        let reply = try core.busDriverCall("RequestName", [.string(name), .uint32(flags)], expecting: "u", timeout: timeout)
        let code = try reply[0].asUInt32()
        switch code {
        case UInt32(DBUS_REQUEST_NAME_REPLY_PRIMARY_OWNER), UInt32(DBUS_REQUEST_NAME_REPLY_ALREADY_OWNER):
            return
        default:
            var owner = "another connection"
            if let o = try? core.busDriverCall("GetNameOwner", [.string(name)], expecting: "s", timeout: timeout),
               case .string(let s)? = o.first { owner = s }
            throw BusError(name: BusError.Name.nameTaken, message: "The bus name '\(name)' is already owned by \(owner).")
        }
    }

    /// Releases a well-known name we own (quietly does nothing if we do not own it).
    /// - Throws: `BusError` from the bus driver.
    public func releaseName(_ name: String, timeout: Duration = .seconds(25)) throws {
        _ = try core.busDriverCall("ReleaseName", [.string(name)], expecting: "u", timeout: timeout)
    }

    /// The unique name owning `name`, or nil if it has no owner.
    /// - Throws: `BusError` from the bus driver other than `NameHasNoOwner`.
    public func nameOwner(_ name: String, timeout: Duration = .seconds(25)) throws -> String? {
        do {
            return try core.busDriverCall("GetNameOwner", [.string(name)], expecting: "s", timeout: timeout)[0].asString()
        } catch let e as BusError where e.name == BusError.Name.nameHasNoOwner {
            return nil
        }
    }

    // MARK: Sending and calling

    /// Queues a message for sending (from any thread).
    /// - Throws: `BusError` (`Disconnected`) if the connection is closed.
    public func send(_ message: Message) throws { try core.send(message) }

    /// Calls a method and waits for the reply (not from the bus thread).
    /// - Parameters:
    ///   - expecting: the reply signature to check, or nil to accept any.
    /// - Returns: the reply's values.
    /// - Throws: the remote `BusError` (with its name and message); `NoReply` after `timeout`;
    ///   `InvalidArgs` if the reply's signature is not `expecting`.
    public func call(destination: String?, path: String, interface: String?, method: String,
                     _ arguments: [DBusValue] = [], expecting: String? = nil,
                     timeout: Duration = .seconds(25)) throws -> [DBusValue] {
        let m = try Message.methodCall(destination: destination, path: path, interface: interface, member: method)
        try m.append(arguments)
        let reply = try core.call(m, timeout: timeout)
        if let expecting { return try reply.arguments(expecting: expecting) }
        return try reply.arguments()
    }

    /// Sends a prepared method call and waits for the reply message (not from the bus thread).
    /// - Throws: the remote `BusError`, `NoReply` after `timeout`, or `Disconnected`.
    public func call(_ message: Message, timeout: Duration = .seconds(25)) throws -> Message {
        try core.call(message, timeout: timeout)
    }

    /// Calls a method without waiting; `completion` runs on the bus thread (keep it short).
    public func callAsync(destination: String?, path: String, interface: String?, method: String,
                          _ arguments: [DBusValue] = [], timeout: Duration = .seconds(25),
                          completion: @escaping (Result<[DBusValue], BusError>) -> Void) {
        do {
            let m = try Message.methodCall(destination: destination, path: path, interface: interface, member: method)
            try m.append(arguments)
            core.callAsync(m, timeoutMs: clampedMilliseconds(timeout)) { result in
                completion(result.flatMap { reply in
                    Result { try reply.arguments() }.mapError { BusError($0) }
                })
            }
        } catch {
            completion(.failure(BusError(error)))
        }
    }

    // MARK: Properties (client side)

    /// Reads one property of a remote object (`org.freedesktop.DBus.Properties.Get`).
    /// - Throws: the remote `BusError`, or `InvalidArgs` if the reply is not a variant.
    public func getProperty(destination: String?, path: String, interface: String, name: String,
                            timeout: Duration = .seconds(25)) throws -> DBusValue {
        let r = try call(destination: destination, path: path, interface: StandardInterface.properties, method: "Get",
                         [.string(interface), .string(name)], expecting: "v", timeout: timeout)
        return try r[0].asVariant()
    }

    /// Reads all properties of one interface of a remote object (`GetAll`).
    /// - Throws: the remote `BusError`, or `InvalidArgs` if the reply is not `a{sv}`.
    public func getAllProperties(destination: String?, path: String, interface: String,
                                 timeout: Duration = .seconds(25)) throws -> [String: DBusValue] {
        let r = try call(destination: destination, path: path, interface: StandardInterface.properties, method: "GetAll",
                         [.string(interface)], expecting: "a{sv}", timeout: timeout)
        return try r[0].asVardict()
    }

    /// Writes one property of a remote object (`Set`).
    /// - Throws: the remote `BusError` (e.g. `PropertyReadOnly`, `InvalidArgs`).
    public func setProperty(destination: String?, path: String, interface: String, name: String, value: DBusValue,
                            timeout: Duration = .seconds(25)) throws {
        _ = try call(destination: destination, path: path, interface: StandardInterface.properties, method: "Set",
                     [.string(interface), .string(name), .variant(value)], expecting: "", timeout: timeout)
    }

    // MARK: Signals

    /// Subscribes to signals matching `rule`: the rule is added on the bus (`AddMatch`) before
    /// this returns, and each matching signal is handed to `handler` on `queue` (a private
    /// serial queue by default, so a subscription sees its signals in order).
    /// - Returns: a token; the subscription lasts until `cancel()` or the connection closes.
    /// - Throws: `BusError` (`MatchRuleInvalid`, `LimitsExceeded`, `InvalidArgs`, …).
    public func subscribe(_ rule: MatchRule, queue: DispatchQueue? = nil,
                          _ handler: @escaping @Sendable (ReceivedSignal) -> Void) throws -> SignalSubscription {
        let q = queue ?? DispatchQueue(label: "org.lesionaffinity.Bus.signal")
        let id = try core.subscribe(rule, queue: q, handler: handler)
        return SignalSubscription(core: core, id: id)
    }

    /// Emits a signal from `path` (queued behind messages sent before it).
    /// - Parameter destination: a unicast target, or nil to broadcast.
    /// - Throws: `BusError` (`InvalidArgs`) for bad names or values, `Disconnected` if closed.
    public func emitSignal(path: String, interface: String, name: String, _ arguments: [DBusValue] = [],
                           destination: String? = nil) throws {
        try core.emit(path: path, interface: interface, member: name, arguments, destination: destination)
    }

    /// Emits `org.freedesktop.DBus.Properties.PropertiesChanged` for one interface of `path`.
    /// - Throws: `BusError` (`InvalidArgs`) for bad names or values, `Disconnected` if closed.
    public func emitPropertiesChanged(path: String, interface: String, changed: [String: DBusValue],
                                      invalidated: [String] = []) throws {
        try core.emitPropertiesChanged(path: path, interface: interface, changed: changed, invalidated: invalidated)
    }

    // MARK: Export

    /// Exports an object at `path` implementing `interfaces` (plus Properties, Introspectable
    /// and Peer); an ObjectManager above it announces it with `InterfacesAdded`.
    /// - Throws: `BusError` (`ObjectPathInUse` if taken, `InvalidArgs` for bad names or signatures).
    public func export(path: String, interfaces: [BusInterface]) throws {
        try core.export(path, interfaces)
    }

    /// Removes the object at `path` (announced with `InterfacesRemoved`); unknown paths are ignored.
    public func unexport(path: String) { core.unexport(path) }

    /// Makes `path` an `org.freedesktop.DBus.ObjectManager` for every object exported below it.
    /// - Throws: `BusError` (`InvalidArgs`) for an invalid path.
    public func addObjectManager(at path: String) throws {
        try Message.checkPath(path)
        core.registry.addManager(path)
    }

    // MARK: Credentials

    /// The Unix user id of the connection `sender` (a unique name), from the bus driver
    /// (`GetConnectionUnixUser`), waiting for the answer; not from the bus thread.
    /// - Throws: the bus driver's `BusError` (e.g. `NameHasNoOwner`).
    public func unixUser(of sender: String, timeout: Duration = .seconds(25)) throws -> UInt32 {
        try core.unixUser(of: sender, timeout: timeout)
    }

    /// The Unix user id of `sender`, delivered to `completion` on the bus thread.
    public func unixUser(of sender: String, completion: @escaping (Result<UInt32, BusError>) -> Void) {
        core.unixUser(of: sender, completion: completion)
    }

    /// The process id of the connection `sender` (`GetConnectionUnixProcessID`); not from the bus thread.
    /// - Throws: the bus driver's `BusError`.
    public func unixProcessID(of sender: String, timeout: Duration = .seconds(25)) throws -> UInt32 {
        try core.busDriverCall("GetConnectionUnixProcessID", [.string(sender)], expecting: "u", timeout: timeout)[0].asUInt32()
    }
}

/// A signal subscription; `cancel()` removes it (it also ends when the connection closes).
// @unchecked Sendable: immutable (the core and an id); cancel() goes through the core's lock.
public final class SignalSubscription: @unchecked Sendable {
    private let core: ConnectionCore
    private let id: Int

    init(core: ConnectionCore, id: Int) {
        self.core = core
        self.id = id
    }

    /// Stops delivery and removes the match rule from the bus.
    public func cancel() { core.unsubscribe(id) }
}
