// Object export: interfaces with method handlers and properties, the object registry, and the
// routing of incoming method calls (including the standard interfaces).
import CDBus
import Dispatch

/// Where a method handler runs and how it answers.
public enum MethodHandler {
    /// Runs on the bus thread and returns the reply values; must be quick and must not make
    /// synchronous D-Bus calls (they would deadlock and throw instead).
    case onBusThread(@Sendable (MethodCall) throws -> [DBusValue])
    /// Runs on the connection's worker queue; the bus thread keeps serving meanwhile. The queue
    /// is a concurrent Dispatch queue, which on Linux runs about one block per core at a time:
    /// for work that takes seconds and may queue up, prefer `.deferred` with your own queue.
    case onWorker(@Sendable (MethodCall) throws -> [DBusValue])
    /// Runs on the bus thread and answers later, from any thread, through the `PendingReply`
    /// (e.g. hand the call to a job queue and reply when the job finishes).
    case deferred(@Sendable (MethodCall, PendingReply) -> Void)
}

/// One method of an exported interface.
public struct BusMethod {
    /// The arguments' signature, or nil to accept any arguments.
    public let inSignature: String?
    /// The reply's signature, or nil to reply with any values.
    public let outSignature: String?
    /// The handler.
    public let handler: MethodHandler
}

/// One property of an exported interface.
public struct BusProperty {
    /// The property's type (one complete type).
    public let signature: String
    /// Reads the current value (on the bus thread, or on the thread that exports an object).
    public let get: () throws -> DBusValue
    /// Writes a new value (on the bus thread); nil for a read-only property.
    public let set: ((DBusValue) throws -> Void)?
    /// Whether a successful `Set` over D-Bus emits `PropertiesChanged` with the new value.
    public let emitsChangedSignal: Bool
}

/// An interface to export: methods, properties, declared signals and its introspection XML.
///
/// The XML (one `<interface>` element, optionally wrapped in a `<node>` document, as kept in
/// `data/dbus/`) is served verbatim inside the object's introspection; without it, an interface
/// element is generated from the declared members.
public struct BusInterface {
    /// The interface name, e.g. `org.lesionaffinity.Affinity1.Manager`.
    public let name: String
    /// The introspection XML served for this interface, verbatim.
    public var introspectionXML: String?
    /// Methods by name.
    public private(set) var methods: [String: BusMethod] = [:]
    /// Properties by name.
    public private(set) var properties: [String: BusProperty] = [:]
    /// Reads every property at once, for `GetAll`: the values of one moment (a job's `State` and
    /// its `Result` from the same snapshot). nil: each property's getter in turn. A property it
    /// leaves out is read by its own getter.
    public var getAll: (() throws -> [String: DBusValue])?
    /// Signals by name, with their signatures (for generated introspection).
    public private(set) var signals: [String: String] = [:]
    /// Makes the error every method of this interface answers with — a handler's, a call of the
    /// wrong signature, arguments that cannot be read or are too many, a reply of the wrong
    /// signature, a handler that never answered — and the errors of its properties' getters and
    /// setters: e.g. a service's own error names for all of them. nil: `BusError(error)`.
    public var errorMapper: (@Sendable (Error) -> BusError)?
    /// The most values a call's arguments may hold (each basic value, container and element counts
    /// one; a `v` holding `ay` of a million bytes is a million values), checked while they are read,
    /// before they are built: larger calls get `InvalidArgs` (through `errorMapper`).
    public var maxArgumentValues = 1 << 20
    private(set) var methodOrder: [String] = []
    private(set) var propertyOrder: [String] = []
    private(set) var signalOrder: [String] = []

    /// An interface with no members yet.
    public init(_ name: String, introspectionXML: String? = nil) {
        self.name = name
        self.introspectionXML = introspectionXML
    }

    /// Adds (or replaces) a method with an explicit handler kind.
    public mutating func addMethod(_ name: String, in inSignature: String?, out outSignature: String?, _ handler: MethodHandler) {
        if methods[name] == nil { methodOrder.append(name) }
        methods[name] = BusMethod(inSignature: inSignature, outSignature: outSignature, handler: handler)
    }

    /// Adds a method answered on the bus thread (quick methods: lists, setters).
    public mutating func method(_ name: String, in inSignature: String?, out outSignature: String?,
                                _ body: @escaping @Sendable (MethodCall) throws -> [DBusValue]) {
        addMethod(name, in: inSignature, out: outSignature, .onBusThread(body))
    }

    /// Adds a method answered from the worker queue (slow methods: seconds of work).
    public mutating func workerMethod(_ name: String, in inSignature: String?, out outSignature: String?,
                                      _ body: @escaping @Sendable (MethodCall) throws -> [DBusValue]) {
        addMethod(name, in: inSignature, out: outSignature, .onWorker(body))
    }

    /// Adds a method whose handler answers later through a `PendingReply`.
    public mutating func deferredMethod(_ name: String, in inSignature: String?, out outSignature: String?,
                                        _ body: @escaping @Sendable (MethodCall, PendingReply) -> Void) {
        addMethod(name, in: inSignature, out: outSignature, .deferred(body))
    }

    /// Adds (or replaces) a property; read-only when `set` is nil.
    public mutating func property(_ name: String, _ signature: String, emitsChangedSignal: Bool = true,
                                  get: @escaping () throws -> DBusValue, set: ((DBusValue) throws -> Void)? = nil) {
        if properties[name] == nil { propertyOrder.append(name) }
        properties[name] = BusProperty(signature: signature, get: get, set: set, emitsChangedSignal: emitsChangedSignal)
    }

    /// Declares a signal (for generated introspection; emitting uses `BusConnection.emitSignal`).
    public mutating func signal(_ name: String, _ signature: String) {
        if signals[name] == nil { signalOrder.append(name) }
        signals[name] = signature
    }

    /// Checks names and signatures.
    /// - Throws: `BusError` (`InvalidArgs`) naming the first invalid one.
    func validate() throws {
        try Message.checkInterface(name)
        for (m, def) in methods {
            try Message.checkMember(m)
            for s in [def.inSignature, def.outSignature].compactMap({ $0 }) where !DBusSignature.isValid(s) {
                throw BusError.invalidArgs("Method \(name).\(m) has an invalid signature '\(s)'.")
            }
        }
        for (p, def) in properties {
            try Message.checkMember(p)
            guard DBusSignature.isSingleCompleteType(def.signature) else {
                throw BusError.invalidArgs("Property \(name).\(p) has an invalid type '\(def.signature)'.")
            }
        }
        for (s, sig) in signals {
            try Message.checkMember(s)
            guard DBusSignature.isValid(sig) else {
                throw BusError.invalidArgs("Signal \(name).\(s) has an invalid signature '\(sig)'.")
            }
        }
    }

    /// The current values of the readable properties whose getters succeed with the declared type.
    func currentProperties() -> [String: DBusValue] {
        var out: [String: DBusValue] = [:]
        for (name, p) in properties {
            if let v = try? p.get(), v.signature == p.signature { out[name] = v }
        }
        return out
    }
}

/// An incoming method call, as handed to a handler.
// @unchecked Sendable: immutable; the message is not mutated once received, and the core is thread-safe.
public struct MethodCall: @unchecked Sendable {
    /// The whole message.
    public let message: Message
    /// The caller's unique bus name (`""` on a peer-to-peer connection).
    public let sender: String
    /// The object path called.
    public let path: String
    /// The interface the method was found on.
    public let interface: String
    /// The method name.
    public let member: String
    /// The arguments (their signature already checked against the method's).
    public let arguments: [DBusValue]
    let core: ConnectionCore

    /// The caller's Unix user id, asked from the bus driver (`GetConnectionUnixUser`); cached.
    ///
    /// Waits for the bus driver, so call it from a worker (`.onWorker` handlers), never on the
    /// bus thread: there it throws instead of deadlocking. Use the completion form there.
    /// - Throws: `BusError` from the bus driver, or on the bus thread.
    public func senderUnixUser(timeout: Duration = .seconds(25)) throws -> UInt32 {
        try core.unixUser(of: sender, timeout: timeout)
    }

    /// The caller's Unix user id, delivered to `completion` on the bus thread.
    public func senderUnixUser(_ completion: @escaping (Result<UInt32, BusError>) -> Void) {
        core.unixUser(of: sender, completion: completion)
    }

    /// The argument at `index`, or an `InvalidArgs` error naming the missing position.
    public func argument(_ index: Int) throws -> DBusValue {
        guard arguments.indices.contains(index) else {
            throw BusError.invalidArgs("\(interface).\(member) expects an argument at position \(index).")
        }
        return arguments[index]
    }
}

/// The reply to a method call, sent once, from any thread, possibly much later.
///
/// Dropping it without replying answers the caller with `org.freedesktop.DBus.Error.Failed`,
/// so a forgotten path never leaves a caller waiting for its timeout.
// @unchecked Sendable: the one mutable fact, whether it has replied, is checked and set under `lock`; the reply is sent through the thread-safe core.
public final class PendingReply: @unchecked Sendable {
    private let core: ConnectionCore
    private let call: Message
    private let outSignature: String?
    private let what: String
    private let mapError: (Error) -> BusError
    private let lock = Lock()
    private var done = false

    init(core: ConnectionCore, call: Message, outSignature: String?, what: String, errorMapper: ((Error) -> BusError)? = nil) {
        self.core = core
        self.call = call
        self.outSignature = outSignature
        self.what = what
        self.mapError = errorMapper ?? { BusError($0) }
    }

    deinit {
        if !done {
            core.answer(call, error: mapError(BusError.failed("\(what) finished without a reply.")))
        }
    }

    /// Whether a reply or error was sent already.
    public var isCompleted: Bool { lock.withLock { done } }

    private func claim() -> Bool {
        lock.withLock {
            if done { return false }
            done = true
            return true
        }
    }

    /// Sends the reply values (checked against the method's declared reply signature).
    public func reply(_ values: [DBusValue] = []) {
        guard claim() else { return }
        if let outSignature, DBusValue.signature(of: values) != outSignature {
            core.answer(call, error: mapError(BusError.failed(
                "\(what) produced a reply of signature '\(DBusValue.signature(of: values))' but declares '\(outSignature)'.")))
            return
        }
        core.answer(call, values: values)
    }

    /// Sends an error reply: the interface's `errorMapper`'s error, or without one, a `BusError`
    /// as it is and anything else as `Failed`.
    public func fail(_ error: Error) {
        guard claim() else { return }
        core.answer(call, error: mapError(error))
    }

    /// Runs `body` and replies with its values or its error.
    public func complete(_ body: () throws -> [DBusValue]) {
        do { reply(try body()) } catch { fail(error) }
    }
}

/// The exported objects and ObjectManager roots of one connection (thread-safe).
// @unchecked Sendable: the exported objects are read and changed under `lock`.
final class ObjectRegistry: @unchecked Sendable {
    private let lock = Lock()
    private var objects: [String: [BusInterface]] = [:]
    private var managers: Set<String> = []

    func add(_ path: String, _ interfaces: [BusInterface]) throws {
        try lock.withLock {
            guard objects[path] == nil else {
                throw BusError(name: BusError.Name.objectPathInUse, message: "An object is already exported at '\(path)'.")
            }
            objects[path] = interfaces
        }
    }

    /// Forgets every object and ObjectManager root.
    func removeAll() {
        lock.withLock {
            objects = [:]
            managers = []
        }
    }

    func remove(_ path: String) -> [BusInterface]? {
        lock.withLock { objects.removeValue(forKey: path) }
    }

    func interfaces(at path: String) -> [BusInterface]? {
        lock.withLock { objects[path] }
    }

    func addManager(_ path: String) { _ = lock.withLock { managers.insert(path) } }

    func isManager(_ path: String) -> Bool { lock.withLock { managers.contains(path) } }

    /// ObjectManager roots that `path` lies strictly below.
    func managerRoots(above path: String) -> [String] {
        lock.withLock { managers.filter { ObjectRegistry.isStrictlyBelow(path, $0) }.sorted() }
    }

    /// Exported objects strictly below `root`, sorted by path.
    func objects(below root: String) -> [(String, [BusInterface])] {
        lock.withLock {
            objects.filter { ObjectRegistry.isStrictlyBelow($0.key, root) }.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        }
    }

    /// The names of the nodes directly below `path` that lead to exported objects.
    func children(of path: String) -> [String] {
        let prefix = path == "/" ? "/" : path + "/"
        return lock.withLock {
            var names = Set<String>()
            for p in objects.keys where p != path && p.hasPrefix(prefix) {
                if let first = p.dropFirst(prefix.count).split(separator: "/").first { names.insert(String(first)) }
            }
            return names.sorted()
        }
    }

    static func isStrictlyBelow(_ path: String, _ root: String) -> Bool {
        if path == root { return false }
        return root == "/" ? path.hasPrefix("/") : path.hasPrefix(root + "/")
    }
}

/// The machine id libdbus reports (for `org.freedesktop.DBus.Peer.GetMachineId`).
let localMachineID: String? = {
    let err = CError()
    guard let p = dbus_try_get_local_machine_id(err.raw) else { return nil }
    defer { dbus_free(p) }
    return String(cString: p)
}()

/// Standard interface names.
enum StandardInterface {
    static let peer = "org.freedesktop.DBus.Peer"
    static let introspectable = "org.freedesktop.DBus.Introspectable"
    static let properties = "org.freedesktop.DBus.Properties"
    static let objectManager = "org.freedesktop.DBus.ObjectManager"
}

// MARK: - Routing (bus thread)

extension ConnectionCore {
    /// Sends an error reply to `call` (unless it asked for none).
    func answer(_ call: Message, error: BusError) {
        guard !call.noReplyExpected, let m = try? Message.errorReply(replyingTo: call, error) else { return }
        perform { [self] in _ = sendNow(m) }
    }

    /// Sends a reply with `values` to `call`; if the values cannot be sent, an error reply.
    func answer(_ call: Message, values: [DBusValue]) {
        guard !call.noReplyExpected else { return }
        do {
            let m = try Message.methodReturn(replyingTo: call)
            try m.append(values)
            perform { [self] in
                if let e = sendNow(m) { answer(call, error: e) }
            }
        } catch {
            answer(call, error: BusError(error))
        }
    }

    /// Emits a signal from `path` (queued behind earlier messages).
    func emit(path: String, interface: String, member: String, _ args: [DBusValue], destination: String? = nil) throws {
        let m = try Message.signal(path: path, interface: interface, member: member)
        if let destination {
            guard Names.isValidBusName(destination) else { throw BusError.invalidArgs("'\(destination)' is not a valid bus name.") }
            _ = dbus_message_set_destination(m.raw, destination)
        }
        try m.append(args)
        try send(m)
    }

    /// Emits `PropertiesChanged(s, a{sv}, as)` from `path`.
    func emitPropertiesChanged(path: String, interface: String, changed: [String: DBusValue], invalidated: [String]) throws {
        try emit(path: path, interface: StandardInterface.properties, member: "PropertiesChanged",
                 [.string(interface), .vardict(changed), .strings(invalidated)])
    }

    /// `a{sa{sv}}`: interface name → properties, for ObjectManager.
    static func interfacesAndProperties(_ ifaces: [BusInterface]) -> DBusValue {
        .dictionary(keySignature: "s", valueSignature: "a{sv}",
                    ifaces.map { (.string($0.name), .vardict($0.currentProperties())) })
    }

    /// Exports `interfaces` at `path` and announces them to the ObjectManager roots above it.
    func export(_ path: String, _ interfaces: [BusInterface]) throws {
        try Message.checkPath(path)
        guard !interfaces.isEmpty else { throw BusError.invalidArgs("Export at least one interface at '\(path)'.") }
        var seen = Set<String>()
        for i in interfaces {
            try i.validate()
            guard seen.insert(i.name).inserted else { throw BusError.invalidArgs("Interface \(i.name) is listed twice for '\(path)'.") }
            let standard = [StandardInterface.peer, StandardInterface.introspectable, StandardInterface.properties, StandardInterface.objectManager]
            guard !standard.contains(i.name) else { throw BusError.invalidArgs("\(i.name) is provided by the library.") }
        }
        try registry.add(path, interfaces)
        for root in registry.managerRoots(above: path) {
            try? emit(path: root, interface: StandardInterface.objectManager, member: "InterfacesAdded",
                      [.objectPath(path), ConnectionCore.interfacesAndProperties(interfaces)])
        }
    }

    /// Removes the object at `path` and announces it to the ObjectManager roots above it.
    func unexport(_ path: String) {
        guard let removed = registry.remove(path) else { return }
        for root in registry.managerRoots(above: path) {
            try? emit(path: root, interface: StandardInterface.objectManager, member: "InterfacesRemoved",
                      [.objectPath(path), .strings(removed.map(\.name))])
        }
    }

    /// Routes one incoming method call; every call gets exactly one answer (unless it asked for none).
    func handleMethodCall(_ call: Message) {
        guard let path = call.path, let member = call.member else {
            answer(call, error: BusError(name: BusError.Name.unknownMethod, message: "A method call without a path or member."))
            return
        }
        let iface = call.interface
        let signature = call.signature
        let object = registry.interfaces(at: path)
        let children = registry.children(of: path)
        let isManager = registry.isManager(path)
        let exists = object != nil || !children.isEmpty || isManager || path == "/"

        func expect(_ sig: String, _ what: String) -> Bool {
            if signature == sig { return true }
            answer(call, error: BusError.invalidArgs(
                "\(what) expects arguments of signature '\(sig)', received '\(signature)'."))
            return false
        }
        func userMethodNamed(_ m: String) -> Bool { object?.contains { $0.methods[m] != nil } ?? false }

        // org.freedesktop.DBus.Peer (libdbus answers most Peer calls itself, before this point).
        if iface == StandardInterface.peer || (iface == nil && (member == "Ping" || member == "GetMachineId") && !userMethodNamed(member)) {
            switch member {
            case "Ping":
                if expect("", "org.freedesktop.DBus.Peer.Ping") { answer(call, values: []) }
            case "GetMachineId":
                guard expect("", "org.freedesktop.DBus.Peer.GetMachineId") else { return }
                if let id = localMachineID { answer(call, values: [.string(id)]) } else {
                    answer(call, error: BusError.failed("The machine id is not available."))
                }
            default:
                answer(call, error: BusError(name: BusError.Name.unknownMethod,
                                             message: "Interface org.freedesktop.DBus.Peer has no method '\(member)'."))
            }
            return
        }

        // org.freedesktop.DBus.Introspectable
        if iface == StandardInterface.introspectable || (iface == nil && member == "Introspect" && !userMethodNamed(member)) {
            guard member == "Introspect" else {
                answer(call, error: BusError(name: BusError.Name.unknownMethod,
                                             message: "Interface org.freedesktop.DBus.Introspectable has no method '\(member)'."))
                return
            }
            guard exists else { unknownObject(call, path); return }
            guard expect("", "org.freedesktop.DBus.Introspectable.Introspect") else { return }
            answer(call, values: [.string(Introspection.document(interfaces: object, children: children, isManager: isManager))])
            return
        }

        guard object != nil || isManager else {
            unknownObject(call, path)
            return
        }

        // org.freedesktop.DBus.ObjectManager
        if iface == StandardInterface.objectManager || (iface == nil && member == "GetManagedObjects" && isManager && !userMethodNamed(member)) {
            guard isManager else { unknownInterface(call, path, StandardInterface.objectManager); return }
            guard member == "GetManagedObjects" else {
                answer(call, error: BusError(name: BusError.Name.unknownMethod,
                                             message: "Interface org.freedesktop.DBus.ObjectManager has no method '\(member)'."))
                return
            }
            guard expect("", "org.freedesktop.DBus.ObjectManager.GetManagedObjects") else { return }
            let managed = registry.objects(below: path).map { (DBusValue.objectPath($0.0), ConnectionCore.interfacesAndProperties($0.1)) }
            answer(call, values: [.dictionary(keySignature: "o", valueSignature: "a{sa{sv}}", managed)])
            return
        }

        guard let object else {
            if let iface { unknownInterface(call, path, iface) } else { unknownObject(call, path) }
            return
        }

        // org.freedesktop.DBus.Properties
        if iface == StandardInterface.properties || (iface == nil && ["Get", "GetAll", "Set"].contains(member) && !userMethodNamed(member)) {
            handleProperties(call, path: path, member: member, object: object, expect: expect)
            return
        }

        // The exporter's interfaces.
        let found: (BusInterface, BusMethod)?
        if let iface {
            guard let i = object.first(where: { $0.name == iface }) else { unknownInterface(call, path, iface); return }
            found = i.methods[member].map { (i, $0) }
            if found == nil {
                answer(call, error: BusError(name: BusError.Name.unknownMethod,
                                             message: "Interface \(iface) has no method '\(member)' (object '\(path)')."))
                return
            }
        } else {
            found = object.lazy.compactMap { i in i.methods[member].map { (i, $0) } }.first
            if found == nil {
                answer(call, error: BusError(name: BusError.Name.unknownMethod,
                                             message: "Object '\(path)' has no method '\(member)'."))
                return
            }
        }
        guard let (interface, method) = found else { return }
        let what = "\(interface.name).\(member)"
        let mapError = interface.errorMapper ?? { BusError($0) }
        if let inSig = method.inSignature, signature != inSig {
            answer(call, error: mapError(BusError.invalidArgs("\(what) expects arguments of signature '\(inSig)', received '\(signature)'.")))
            return
        }
        let args: [DBusValue]
        do { args = try call.arguments(maxValues: interface.maxArgumentValues) } catch {
            answer(call, error: mapError(BusError.invalidArgs("The arguments of \(what) cannot be read: \(BusError(error).message)")))
            return
        }
        let context = MethodCall(message: call, sender: call.sender ?? "", path: path, interface: interface.name,
                                 member: member, arguments: args, core: self)
        let reply = PendingReply(core: self, call: call, outSignature: method.outSignature, what: what, errorMapper: interface.errorMapper)
        switch method.handler {
        case .onBusThread(let body):
            reply.complete { try body(context) }
        case .onWorker(let body):
            workerQueue.async { reply.complete { try body(context) } }
        case .deferred(let body):
            body(context, reply)
        }
    }

    private func unknownObject(_ call: Message, _ path: String) {
        answer(call, error: BusError(name: BusError.Name.unknownObject, message: "No object at path '\(path)'."))
    }

    private func unknownInterface(_ call: Message, _ path: String, _ iface: String) {
        answer(call, error: BusError(name: BusError.Name.unknownInterface,
                                     message: "Object '\(path)' does not implement interface \(iface)."))
    }

    private func handleProperties(_ call: Message, path: String, member: String, object: [BusInterface],
                                  expect: (String, String) -> Bool) {
        func lookup(_ ifaceName: String) -> BusInterface? {
            if let i = object.first(where: { $0.name == ifaceName }) { return i }
            unknownInterface(call, path, ifaceName)
            return nil
        }
        func property(_ i: BusInterface, _ name: String) -> BusProperty? {
            if let p = i.properties[name] { return p }
            answer(call, error: BusError(name: BusError.Name.unknownProperty,
                                         message: "Interface \(i.name) has no property '\(name)'."))
            return nil
        }
        // Get, GetAll and Set take two strings and a value: a few thousand values are plenty.
        guard let args = try? call.arguments(maxValues: 1 << 16) else {
            answer(call, error: BusError.invalidArgs("The arguments of org.freedesktop.DBus.Properties.\(member) cannot be read."))
            return
        }
        // A property's getter or setter error, as its interface reports errors.
        func failed(_ i: BusInterface, _ error: Error) -> BusError { i.errorMapper?(error) ?? BusError(error) }
        switch member {
        case "Get":
            guard expect("ss", "org.freedesktop.DBus.Properties.Get"),
                  case .string(let ifaceName) = args[0], case .string(let name) = args[1],
                  let i = lookup(ifaceName), let p = property(i, name) else { return }
            do {
                let v = try p.get()
                guard v.signature == p.signature else {
                    throw BusError.failed("Property \(i.name).\(name) produced type '\(v.signature)' but declares '\(p.signature)'.")
                }
                answer(call, values: [.variant(v)])
            } catch {
                answer(call, error: failed(i, error))
            }
        case "GetAll":
            guard expect("s", "org.freedesktop.DBus.Properties.GetAll"), case .string(let ifaceName) = args[0] else { return }
            var values: [String: DBusValue] = [:]
            let selected: [BusInterface]
            if ifaceName.isEmpty { selected = object } else {
                guard let i = lookup(ifaceName) else { return }
                selected = [i]
            }
            for i in selected {
                do {
                    let together = try i.getAll?() ?? [:]
                    for (name, p) in i.properties {
                        let v = try together[name] ?? p.get()
                        guard v.signature == p.signature else {
                            throw BusError.failed("Property \(i.name).\(name) produced type '\(v.signature)' but declares '\(p.signature)'.")
                        }
                        values[name] = v
                    }
                } catch {
                    answer(call, error: failed(i, error))
                    return
                }
            }
            answer(call, values: [.vardict(values)])
        case "Set":
            guard expect("ssv", "org.freedesktop.DBus.Properties.Set"),
                  case .string(let ifaceName) = args[0], case .string(let name) = args[1], case .variant(let value) = args[2],
                  let i = lookup(ifaceName), let p = property(i, name) else { return }
            guard let setter = p.set else {
                answer(call, error: BusError(name: BusError.Name.propertyReadOnly,
                                             message: "Property \(i.name).\(name) is read-only."))
                return
            }
            guard value.signature == p.signature else {
                answer(call, error: BusError.invalidArgs(
                    "Property \(i.name).\(name) has type '\(p.signature)', received a value of type '\(value.signature)'."))
                return
            }
            do {
                try setter(value)
                answer(call, values: [])
                if p.emitsChangedSignal, let now = try? p.get(), now.signature == p.signature {
                    try? emitPropertiesChanged(path: path, interface: i.name, changed: [name: now], invalidated: [])
                }
            } catch {
                answer(call, error: failed(i, error))
            }
        default:
            answer(call, error: BusError(name: BusError.Name.unknownMethod,
                                         message: "Interface org.freedesktop.DBus.Properties has no method '\(member)'."))
        }
    }
}
