// Message: an owned DBusMessage, with a builder and a reader over DBusMessageIter.
import CDBus

/// An owned libdbus message (method call, reply, error or signal).
///
/// Arguments are appended and read as `DBusValue`s through `DBusMessageIter` (no variadic C
/// calls). A message is built on one thread and then handed over; it is not mutated after it has
/// been given to a connection to send.
// @unchecked Sendable: a message is built on one thread and handed over; after that it is only read (libdbus reads of a locked message are thread-safe), and its iterator state is under `lock`.
public final class Message: @unchecked Sendable {
    /// The kind of a message.
    public enum Kind: Sendable, Equatable {
        /// A method call.
        case methodCall
        /// A successful reply.
        case methodReturn
        /// An error reply.
        case error
        /// A signal.
        case signal
        /// Anything else.
        case invalid
    }

    /// The underlying `DBusMessage *` (one reference owned by this wrapper).
    let raw: OpaquePointer
    private let stateLock = Lock()
    /// Set once libdbus locked the message (sent, marshalled, or received): libdbus aborts the
    /// process on an append to a locked message, so `append` checks this first.
    private var locked: Bool

    /// Wraps a message whose reference the caller hands over; `locked` unless freshly built here.
    init(owning raw: OpaquePointer, locked: Bool = true) {
        self.raw = raw
        self.locked = locked
    }

    /// Wraps a received message, taking a new reference.
    init(retaining raw: OpaquePointer) {
        dbus_message_ref(raw)
        self.raw = raw
        self.locked = true
    }

    /// Marks the message as handed to libdbus for sending (it is locked from then on).
    func markLocked() { stateLock.withLock { locked = true } }

    /// Whether the message can no longer be appended to.
    var isLocked: Bool { stateLock.withLock { locked } }

    deinit { dbus_message_unref(raw) }

    // MARK: Construction

    /// A method call to `member` on `interface` at `path` of `destination`.
    /// - Throws: `BusError` (`InvalidArgs`) if a name is not valid.
    public static func methodCall(destination: String?, path: String, interface: String?, member: String) throws -> Message {
        _ = libdbusThreadsInitialised
        if let destination, !Names.isValidBusName(destination) {
            throw BusError.invalidArgs("'\(destination)' is not a valid bus name.")
        }
        try checkPath(path)
        if let interface { try checkInterface(interface) }
        try checkMember(member)
        guard let m = dbus_message_new_method_call(destination, path, interface, member) else {
            throw BusError(name: BusError.Name.noMemory, message: "Out of memory building a method call.")
        }
        return Message(owning: m, locked: false)
    }

    /// A signal `member` of `interface` emitted from `path`.
    /// - Throws: `BusError` (`InvalidArgs`) if a name is not valid.
    public static func signal(path: String, interface: String, member: String) throws -> Message {
        _ = libdbusThreadsInitialised
        try checkPath(path)
        try checkInterface(interface)
        try checkMember(member)
        guard let m = dbus_message_new_signal(path, interface, member) else {
            throw BusError(name: BusError.Name.noMemory, message: "Out of memory building a signal.")
        }
        return Message(owning: m, locked: false)
    }

    /// A method return answering `call`.
    /// - Throws: `BusError` if `call` is not a method call or memory runs out.
    public static func methodReturn(replyingTo call: Message) throws -> Message {
        guard call.kind == .methodCall, call.serial != 0 else {
            throw BusError.failed("Cannot build a reply to a message that is not a received method call.")
        }
        guard let m = dbus_message_new_method_return(call.raw) else {
            throw BusError(name: BusError.Name.noMemory, message: "Out of memory building a reply.")
        }
        return Message(owning: m, locked: false)
    }

    /// An error reply answering `call`; an invalid error name is replaced by `Failed`.
    /// - Throws: `BusError` if `call` is not a method call or memory runs out.
    public static func errorReply(replyingTo call: Message, _ error: BusError) throws -> Message {
        var name = error.name
        var text = error.message
        if !Names.isValidErrorName(name) {
            text = "\(name): \(text)"
            name = BusError.Name.failed
        }
        if !hasNoNUL(text) { text = String(text.unicodeScalars.filter { $0 != "\0" }) }
        guard call.kind == .methodCall, call.serial != 0 else {
            throw BusError.failed("Cannot build an error reply to a message that is not a received method call.")
        }
        guard let m = dbus_message_new_error(call.raw, name, text) else {
            throw BusError(name: BusError.Name.noMemory, message: "Out of memory building an error reply.")
        }
        return Message(owning: m, locked: false)
    }

    /// Parses a message from its wire form (as produced by `marshal()`).
    /// - Throws: `BusError` (`InvalidArgs`) if the bytes are not a valid D-Bus message.
    public convenience init(marshalled bytes: [UInt8]) throws {
        _ = libdbusThreadsInitialised
        let err = CError()
        let m: OpaquePointer? = bytes.withUnsafeBufferPointer { buf in
            buf.baseAddress.flatMap { base in
                base.withMemoryRebound(to: CChar.self, capacity: buf.count) {
                    dbus_message_demarshal($0, Int32(clamping: buf.count), err.raw)
                }
            }
        }
        guard let m else {
            let e = err.isSet ? err.busError("") : BusError.invalidArgs("Empty message.")
            throw BusError.invalidArgs("Not a valid D-Bus message: \(e.message)")
        }
        self.init(owning: m)
    }

    /// The message in wire form (header and body; file descriptors are not included).
    ///
    /// A message never sent gets serial 1 first (the wire form needs one). The message is
    /// locked afterwards: nothing more can be appended.
    /// - Throws: `BusError` (`NoMemory`) if libdbus cannot allocate.
    public func marshal() throws -> [UInt8] {
        stateLock.withLock {
            if !locked && dbus_message_get_serial(raw) == 0 { dbus_message_set_serial(raw, 1) }
            locked = true
        }
        var p: UnsafeMutablePointer<CChar>? = nil
        var n: Int32 = 0
        guard dbus_message_marshal(raw, &p, &n) != 0, let p else {
            throw BusError(name: BusError.Name.noMemory, message: "Out of memory marshalling a message.")
        }
        defer { dbus_free(p) }
        return p.withMemoryRebound(to: UInt8.self, capacity: Int(n)) { Array(UnsafeBufferPointer(start: $0, count: Int(n))) }
    }

    // MARK: Header fields

    /// The kind of message.
    public var kind: Kind {
        switch dbus_message_get_type(raw) {
        case Int32(DBUS_MESSAGE_TYPE_METHOD_CALL): return .methodCall
        case Int32(DBUS_MESSAGE_TYPE_METHOD_RETURN): return .methodReturn
        case Int32(DBUS_MESSAGE_TYPE_ERROR): return .error
        case Int32(DBUS_MESSAGE_TYPE_SIGNAL): return .signal
        default: return .invalid
        }
    }

    /// The object path (calls and signals).
    public var path: String? { optionalString(dbus_message_get_path(raw)) }
    /// The interface (calls and signals; optional on calls).
    public var interface: String? { optionalString(dbus_message_get_interface(raw)) }
    /// The member: method or signal name.
    public var member: String? { optionalString(dbus_message_get_member(raw)) }
    /// The sender's unique bus name (set by the bus).
    public var sender: String? { optionalString(dbus_message_get_sender(raw)) }
    /// The destination bus name.
    public var destination: String? { optionalString(dbus_message_get_destination(raw)) }
    /// The error name of an error reply.
    public var errorName: String? { optionalString(dbus_message_get_error_name(raw)) }
    /// The body's signature (`""` for no arguments).
    public var signature: String { optionalString(dbus_message_get_signature(raw)) ?? "" }
    /// The serial number assigned when sent (0 before).
    public var serial: UInt32 { dbus_message_get_serial(raw) }
    /// The serial of the call this message answers.
    public var replySerial: UInt32 { dbus_message_get_reply_serial(raw) }
    /// Whether the caller asked for no reply.
    public var noReplyExpected: Bool { dbus_message_get_no_reply(raw) != 0 }
    /// Whether the body carries file descriptors.
    public var containsUnixFDs: Bool { dbus_message_contains_unix_fds(raw) != 0 }

    /// For an error reply, the error it carries (name and first string argument).
    public var error: BusError? {
        guard kind == .error else { return nil }
        let name = errorName ?? BusError.Name.failed
        var text = ""
        if let args = try? arguments(), case .string(let s)? = args.first { text = s }
        return BusError(name: name, message: text)
    }

    // MARK: Writing

    /// Appends `values` to the body, after validating all of them.
    /// - Throws: `BusError` (`InvalidArgs`) for a value that cannot be sent (nothing is appended
    ///   then); `NoMemory` if libdbus runs out of memory (the message must then be discarded).
    public func append(_ values: [DBusValue]) throws {
        for v in values { try v.validate() }
        try stateLock.withLock {
            guard !locked else {
                throw BusError.failed("Cannot append to a message that was already sent, marshalled or received.")
            }
            var it = DBusMessageIter()
            dbus_message_iter_init_append(raw, &it)
            for v in values { try Message.append(v, to: &it) }
        }
    }

    /// Appends one value (validated).
    public func append(_ value: DBusValue) throws { try append([value]) }

    private static func oom() -> BusError {
        BusError(name: BusError.Name.noMemory, message: "Out of memory appending to a message.")
    }

    private static func appendBasic<T>(_ type: Int32, _ value: T, to it: inout DBusMessageIter) throws {
        var v = value
        let ok = withUnsafePointer(to: &v) { dbus_message_iter_append_basic(&it, type, UnsafeRawPointer($0)) }
        guard ok != 0 else { throw oom() }
    }

    private static func appendString(_ type: Int32, _ s: String, to it: inout DBusMessageIter) throws {
        let ok = s.withCString { cstr -> dbus_bool_t in
            var p: UnsafePointer<CChar>? = cstr
            return dbus_message_iter_append_basic(&it, type, &p)
        }
        guard ok != 0 else { throw oom() }
    }

    private static func withContainer(_ type: Int32, _ contained: String?, in it: inout DBusMessageIter,
                                      _ body: (inout DBusMessageIter) throws -> Void) throws {
        var sub = DBusMessageIter()
        let opened: dbus_bool_t
        if let contained {
            opened = contained.withCString { dbus_message_iter_open_container(&it, type, $0, &sub) }
        } else {
            opened = dbus_message_iter_open_container(&it, type, nil, &sub)
        }
        guard opened != 0 else { throw oom() }
        do {
            try body(&sub)
        } catch {
            dbus_message_iter_abandon_container(&it, &sub)
            throw error
        }
        guard dbus_message_iter_close_container(&it, &sub) != 0 else { throw oom() }
    }

    /// Appends a validated value at `it`.
    static func append(_ value: DBusValue, to it: inout DBusMessageIter) throws {
        switch value {
        case .byte(let x): try appendBasic(Int32(CDBUS_TYPE_BYTE), x, to: &it)
        case .boolean(let x): try appendBasic(Int32(CDBUS_TYPE_BOOLEAN), dbus_bool_t(x ? 1 : 0), to: &it)
        case .int16(let x): try appendBasic(Int32(CDBUS_TYPE_INT16), x, to: &it)
        case .uint16(let x): try appendBasic(Int32(CDBUS_TYPE_UINT16), x, to: &it)
        case .int32(let x): try appendBasic(Int32(CDBUS_TYPE_INT32), x, to: &it)
        case .uint32(let x): try appendBasic(Int32(CDBUS_TYPE_UINT32), x, to: &it)
        case .int64(let x): try appendBasic(Int32(CDBUS_TYPE_INT64), x, to: &it)
        case .uint64(let x): try appendBasic(Int32(CDBUS_TYPE_UINT64), x, to: &it)
        case .double(let x): try appendBasic(Int32(CDBUS_TYPE_DOUBLE), x, to: &it)
        case .string(let s): try appendString(Int32(CDBUS_TYPE_STRING), s, to: &it)
        case .objectPath(let s): try appendString(Int32(CDBUS_TYPE_OBJECT_PATH), s, to: &it)
        case .signature(let s): try appendString(Int32(CDBUS_TYPE_SIGNATURE), s, to: &it)
        case .unixFD(let fd):
            // libdbus duplicates the descriptor; the wrapper keeps its own.
            let n = fd.rawValue
            guard n >= 0 else { throw BusError.invalidArgs("A file descriptor value was closed before sending.") }
            try appendBasic(Int32(CDBUS_TYPE_UNIX_FD), n, to: &it)
        case .array(let e, let items):
            try withContainer(Int32(CDBUS_TYPE_ARRAY), e, in: &it) { sub in
                if try !appendFixedArray(e, items, to: &sub) {
                    for item in items { try append(item, to: &sub) }
                }
            }
        case .dictionary(let k, let v, let pairs):
            try withContainer(Int32(CDBUS_TYPE_ARRAY), "{" + k + v + "}", in: &it) { sub in
                for (key, val) in pairs {
                    try withContainer(Int32(CDBUS_TYPE_DICT_ENTRY), nil, in: &sub) { entry in
                        try append(key, to: &entry)
                        try append(val, to: &entry)
                    }
                }
            }
        case .structure(let members):
            try withContainer(Int32(CDBUS_TYPE_STRUCT), nil, in: &it) { sub in
                for m in members { try append(m, to: &sub) }
            }
        case .variant(let inner):
            try withContainer(Int32(CDBUS_TYPE_VARIANT), inner.signature, in: &it) { sub in
                try append(inner, to: &sub)
            }
        }
    }

    /// Appends an array of fixed-size numbers in one call; false if `element` has no fast path.
    private static func appendFixedArray(_ element: String, _ items: [DBusValue], to it: inout DBusMessageIter) throws -> Bool {
        func put<T>(_ type: Int32, _ xs: [T]) throws {
            let ok = xs.withUnsafeBufferPointer { buf -> dbus_bool_t in
                // An empty array needs no elements at all.
                guard let base = buf.baseAddress, buf.count > 0 else { return 1 }
                var p: UnsafeRawPointer? = UnsafeRawPointer(base)
                return dbus_message_iter_append_fixed_array(&it, type, &p, Int32(buf.count))
            }
            guard ok != 0 else { throw oom() }
        }
        switch element {
        case "y": try put(Int32(CDBUS_TYPE_BYTE), items.compactMap { if case .byte(let x) = $0 { return x }; return nil })
        case "n": try put(Int32(CDBUS_TYPE_INT16), items.compactMap { if case .int16(let x) = $0 { return x }; return nil })
        case "q": try put(Int32(CDBUS_TYPE_UINT16), items.compactMap { if case .uint16(let x) = $0 { return x }; return nil })
        case "i": try put(Int32(CDBUS_TYPE_INT32), items.compactMap { if case .int32(let x) = $0 { return x }; return nil })
        case "u": try put(Int32(CDBUS_TYPE_UINT32), items.compactMap { if case .uint32(let x) = $0 { return x }; return nil })
        case "x": try put(Int32(CDBUS_TYPE_INT64), items.compactMap { if case .int64(let x) = $0 { return x }; return nil })
        case "t": try put(Int32(CDBUS_TYPE_UINT64), items.compactMap { if case .uint64(let x) = $0 { return x }; return nil })
        case "d": try put(Int32(CDBUS_TYPE_DOUBLE), items.compactMap { if case .double(let x) = $0 { return x }; return nil })
        default: return false
        }
        return true
    }

    // MARK: Reading

    /// All arguments of the body.
    /// - Throws: `BusError` (`InvalidArgs`) if the body cannot be read (it never traps).
    public func arguments() throws -> [DBusValue] {
        try arguments(maxValues: Int.max)
    }

    /// All arguments of the body, refusing a body that holds more than `maxValues` values (every
    /// basic value, container and element counts one) before it builds them: a 100 MB byte array
    /// in a variant would otherwise become billions of bytes of `DBusValue`s.
    /// - Throws: `BusError` (`InvalidArgs`) if the body cannot be read or is too large.
    public func arguments(maxValues: Int) throws -> [DBusValue] {
        var it = DBusMessageIter()
        guard dbus_message_iter_init(raw, &it) != 0 else { return [] }
        var out: [DBusValue] = []
        var budget = maxValues
        while dbus_message_iter_get_arg_type(&it) != Int32(CDBUS_TYPE_INVALID) {
            out.append(try Message.read(&it, depth: 0, budget: &budget))
            _ = dbus_message_iter_next(&it)
        }
        return out
    }

    /// All arguments, after checking that the body's signature is `expected`.
    /// - Throws: `BusError` (`InvalidArgs`) with a sentence naming both signatures on a mismatch.
    public func arguments(expecting expected: String) throws -> [DBusValue] {
        let actual = signature
        guard actual == expected else {
            throw BusError.invalidArgs("Expected arguments of signature '\(expected)', received '\(actual)'.")
        }
        return try arguments()
    }

    private static func readString(_ it: inout DBusMessageIter) -> String {
        var p: UnsafePointer<CChar>? = nil
        dbus_message_iter_get_basic(&it, &p)
        return optionalString(p) ?? ""
    }

    private static func readBasic<T>(_ it: inout DBusMessageIter, _ zero: T) -> T {
        var v = zero
        withUnsafeMutablePointer(to: &v) { dbus_message_iter_get_basic(&it, UnsafeMutableRawPointer($0)) }
        return v
    }

    /// Reads the value at `it`.
    static func read(_ it: inout DBusMessageIter, depth: Int) throws -> DBusValue {
        var budget = Int.max
        return try read(&it, depth: depth, budget: &budget)
    }

    /// Reads the value at `it`, counting it and everything in it against `budget`.
    static func read(_ it: inout DBusMessageIter, depth: Int, budget: inout Int) throws -> DBusValue {
        guard depth <= 70 else { throw BusError.invalidArgs("The message is nested too deeply.") }
        func spend(_ n: Int) throws {
            guard n <= budget else { throw BusError.invalidArgs("The message holds more values than this method accepts.") }
            budget -= n
        }
        try spend(1)
        let type = dbus_message_iter_get_arg_type(&it)
        switch type {
        case Int32(CDBUS_TYPE_BYTE): return .byte(readBasic(&it, UInt8(0)))
        case Int32(CDBUS_TYPE_BOOLEAN): return .boolean(readBasic(&it, dbus_bool_t(0)) != 0)
        case Int32(CDBUS_TYPE_INT16): return .int16(readBasic(&it, Int16(0)))
        case Int32(CDBUS_TYPE_UINT16): return .uint16(readBasic(&it, UInt16(0)))
        case Int32(CDBUS_TYPE_INT32): return .int32(readBasic(&it, Int32(0)))
        case Int32(CDBUS_TYPE_UINT32): return .uint32(readBasic(&it, UInt32(0)))
        case Int32(CDBUS_TYPE_INT64): return .int64(readBasic(&it, Int64(0)))
        case Int32(CDBUS_TYPE_UINT64): return .uint64(readBasic(&it, UInt64(0)))
        case Int32(CDBUS_TYPE_DOUBLE): return .double(readBasic(&it, Double(0)))
        case Int32(CDBUS_TYPE_STRING): return .string(readString(&it))
        case Int32(CDBUS_TYPE_OBJECT_PATH): return .objectPath(readString(&it))
        case Int32(CDBUS_TYPE_SIGNATURE): return .signature(readString(&it))
        case Int32(CDBUS_TYPE_UNIX_FD):
            // libdbus hands out a duplicate that we own.
            let fd = readBasic(&it, Int32(-1))
            guard fd >= 0 else {
                throw BusError.invalidArgs("A file descriptor in the message could not be received (the connection may not support fd passing).")
            }
            return .unixFD(FileDescriptor(taking: fd))
        case Int32(CDBUS_TYPE_VARIANT):
            var sub = DBusMessageIter()
            dbus_message_iter_recurse(&it, &sub)
            guard dbus_message_iter_get_arg_type(&sub) != Int32(CDBUS_TYPE_INVALID) else {
                throw BusError.invalidArgs("An empty variant in the message.")
            }
            return .variant(try read(&sub, depth: depth + 1, budget: &budget))
        case Int32(CDBUS_TYPE_STRUCT):
            var sub = DBusMessageIter()
            dbus_message_iter_recurse(&it, &sub)
            var members: [DBusValue] = []
            while dbus_message_iter_get_arg_type(&sub) != Int32(CDBUS_TYPE_INVALID) {
                members.append(try read(&sub, depth: depth + 1, budget: &budget))
                _ = dbus_message_iter_next(&sub)
            }
            guard !members.isEmpty else { throw BusError.invalidArgs("An empty structure in the message.") }
            return .structure(members)
        case Int32(CDBUS_TYPE_ARRAY):
            guard let sigPtr = dbus_message_iter_get_signature(&it) else {
                throw BusError(name: BusError.Name.noMemory, message: "Out of memory reading a message.")
            }
            let full = String(cString: sigPtr)
            dbus_free(sigPtr)
            let element = String(full.dropFirst())
            var sub = DBusMessageIter()
            dbus_message_iter_recurse(&it, &sub)
            if element.hasPrefix("{") {
                guard let (k, v) = DBusSignature.dictEntryParts(element) else {
                    throw BusError.invalidArgs("Malformed dictionary signature '\(full)'.")
                }
                var pairs: [(DBusValue, DBusValue)] = []
                while dbus_message_iter_get_arg_type(&sub) == Int32(CDBUS_TYPE_DICT_ENTRY) {
                    var entry = DBusMessageIter()
                    dbus_message_iter_recurse(&sub, &entry)
                    let key = try read(&entry, depth: depth + 2, budget: &budget)
                    guard dbus_message_iter_next(&entry) != 0 else {
                        throw BusError.invalidArgs("A dictionary entry without a value.")
                    }
                    let value = try read(&entry, depth: depth + 2, budget: &budget)
                    pairs.append((key, value))
                    _ = dbus_message_iter_next(&sub)
                }
                return .dictionary(keySignature: k, valueSignature: v, pairs)
            }
            if let fixed = try readFixedArray(element, &sub, budget: &budget) { return .array(elementSignature: element, fixed) }
            var items: [DBusValue] = []
            while dbus_message_iter_get_arg_type(&sub) != Int32(CDBUS_TYPE_INVALID) {
                items.append(try read(&sub, depth: depth + 1, budget: &budget))
                _ = dbus_message_iter_next(&sub)
            }
            return .array(elementSignature: element, items)
        default:
            throw BusError.invalidArgs("Unsupported type code \(type) in the message.")
        }
    }

    /// Reads an array of fixed-size numbers in one call, counting its elements against `budget`
    /// before they are built; nil if `element` has no fast path.
    private static func readFixedArray(_ element: String, _ sub: inout DBusMessageIter, budget: inout Int) throws -> [DBusValue]? {
        func get<T>(_ type: T.Type, _ wrap: (T) -> DBusValue) throws -> [DBusValue] {
            guard dbus_message_iter_get_arg_type(&sub) != Int32(CDBUS_TYPE_INVALID) else { return [] }
            var p: UnsafeRawPointer? = nil
            var n: Int32 = 0
            dbus_message_iter_get_fixed_array(&sub, &p, &n)
            guard let p, n > 0 else { return [] }
            guard Int(n) <= budget else { throw BusError.invalidArgs("The message holds more values than this method accepts.") }
            budget -= Int(n)
            let buf = UnsafeBufferPointer(start: p.assumingMemoryBound(to: T.self), count: Int(n))
            return buf.map(wrap)
        }
        switch element {
        case "y": return try get(UInt8.self) { .byte($0) }
        case "n": return try get(Int16.self) { .int16($0) }
        case "q": return try get(UInt16.self) { .uint16($0) }
        case "i": return try get(Int32.self) { .int32($0) }
        case "u": return try get(UInt32.self) { .uint32($0) }
        case "x": return try get(Int64.self) { .int64($0) }
        case "t": return try get(UInt64.self) { .uint64($0) }
        case "d": return try get(Double.self) { .double($0) }
        default: return nil
        }
    }

    // MARK: Validation helpers

    static func checkPath(_ p: String) throws {
        guard Names.isValidPath(p) else { throw BusError.invalidArgs("'\(p)' is not a valid object path.") }
        // The bus disconnects a client that sends from or to the reserved local path.
        guard p != "/org/freedesktop/DBus/Local" else { throw BusError.invalidArgs("'\(p)' is reserved by D-Bus.") }
    }

    static func checkInterface(_ i: String) throws {
        guard Names.isValidInterface(i) else { throw BusError.invalidArgs("'\(i)' is not a valid interface name.") }
        guard i != "org.freedesktop.DBus.Local" else { throw BusError.invalidArgs("'\(i)' is reserved by D-Bus.") }
    }

    static func checkMember(_ m: String) throws {
        guard Names.isValidMember(m) else { throw BusError.invalidArgs("'\(m)' is not a valid member name.") }
    }
}
