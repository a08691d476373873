// DBusValue: one D-Bus value of any type, its signature, validation and typed accessors.

/// One D-Bus value of any type.
///
/// Containers carry the signatures of their elements so that empty arrays and dictionaries have
/// a type. Build `a{sv}` option dictionaries with `DBusValue.vardict(_:)` and read them back with
/// `asVardict()`. Accessors (`asString()`, `asUInt32()`, …) throw `BusError` named
/// `org.freedesktop.DBus.Error.InvalidArgs` on a type mismatch, so a handler can let the error
/// travel back to the caller as is.
// @unchecked Sendable: a value type except for `.unixFD`, whose FileDescriptor is Sendable (its number under a lock); the compiler cannot see through the indirect cases.
public enum DBusValue: @unchecked Sendable {
    /// `y`
    case byte(UInt8)
    /// `b`
    case boolean(Bool)
    /// `n`
    case int16(Int16)
    /// `q`
    case uint16(UInt16)
    /// `i`
    case int32(Int32)
    /// `u`
    case uint32(UInt32)
    /// `x`
    case int64(Int64)
    /// `t`
    case uint64(UInt64)
    /// `d`
    case double(Double)
    /// `s` (UTF-8, no NUL)
    case string(String)
    /// `o`
    case objectPath(String)
    /// `g`
    case signature(String)
    /// `h`: an owned file descriptor.
    case unixFD(FileDescriptor)
    /// `aT`: every element must have signature `elementSignature` (a single complete type).
    indirect case array(elementSignature: String, [DBusValue])
    /// `a{KV}`: keys of basic type `keySignature`, values of type `valueSignature`; order kept.
    indirect case dictionary(keySignature: String, valueSignature: String, [(DBusValue, DBusValue)])
    /// `(…)`: one or more members.
    indirect case structure([DBusValue])
    /// `v`: a value carrying its own type.
    indirect case variant(DBusValue)

    /// The D-Bus signature of this value (one complete type).
    public var signature: String {
        switch self {
        case .byte: return "y"
        case .boolean: return "b"
        case .int16: return "n"
        case .uint16: return "q"
        case .int32: return "i"
        case .uint32: return "u"
        case .int64: return "x"
        case .uint64: return "t"
        case .double: return "d"
        case .string: return "s"
        case .objectPath: return "o"
        case .signature: return "g"
        case .unixFD: return "h"
        case .array(let e, _): return "a" + e
        case .dictionary(let k, let v, _): return "a{" + k + v + "}"
        case .structure(let members): return "(" + members.map(\.signature).joined() + ")"
        case .variant: return "v"
        }
    }

    /// The concatenated signature of a list of values (a message body's signature).
    public static func signature(of values: [DBusValue]) -> String {
        values.map(\.signature).joined()
    }

    /// Checks that the value can be sent: container elements match their declared signatures,
    /// keys are basic, strings have no NUL, paths and signatures are valid, nesting within limits.
    /// - Throws: `BusError` (`InvalidArgs`) naming the first problem.
    public func validate() throws {
        _ = try validate(depth: 0)
        guard DBusSignature.isSingleCompleteType(signature) else {
            throw BusError.invalidArgs("The value's signature '\(signature)' is not a valid D-Bus type (too long or nested too deeply).")
        }
    }

    /// The largest array payload D-Bus allows (64 MiB).
    static let maximumArrayBytes = 67_108_864

    /// Validates recursively; returns a rough (upper-bound-ish) estimate of the wire size.
    private func validate(depth: Int) throws -> Int {
        guard depth <= 64 else {
            throw BusError.invalidArgs("The value is nested more than 64 containers deep.")
        }
        switch self {
        case .byte: return 1
        case .boolean, .int32, .uint32, .unixFD:
            if case .unixFD(let fd) = self, !fd.isOpen {
                throw BusError.invalidArgs("A file descriptor value was closed before sending.")
            }
            return 4
        case .int16, .uint16: return 2
        case .int64, .uint64, .double: return 8
        case .string(let s):
            guard hasNoNUL(s) else { throw BusError.invalidArgs("A D-Bus string cannot contain a NUL character.") }
            return s.utf8.count + 5
        case .objectPath(let p):
            guard Names.isValidPath(p) else { throw BusError.invalidArgs("'\(p)' is not a valid object path.") }
            return p.utf8.count + 5
        case .signature(let g):
            guard DBusSignature.isValid(g) else { throw BusError.invalidArgs("'\(g)' is not a valid signature.") }
            return g.utf8.count + 2
        case .array(let e, let items):
            guard DBusSignature.isSingleCompleteType(e) else {
                throw BusError.invalidArgs("'\(e)' is not a single complete type for array elements.")
            }
            guard !e.hasPrefix("{") else {
                throw BusError.invalidArgs("Use .dictionary for arrays of dictionary entries (element signature '\(e)').")
            }
            var size = 0
            for item in items {
                guard item.signature == e else {
                    throw BusError.invalidArgs("An array of '\(e)' holds an element of type '\(item.signature)'.")
                }
                size += try item.validate(depth: depth + 1)
            }
            guard size <= DBusValue.maximumArrayBytes else {
                throw BusError.invalidArgs("An array of '\(e)' is larger than the 64 MiB D-Bus allows; pass big data as a file descriptor.")
            }
            return size + 8
        case .dictionary(let k, let v, let pairs):
            guard DBusSignature.isBasic(k) else {
                throw BusError.invalidArgs("Dictionary keys must be of a basic type, not '\(k)'.")
            }
            guard DBusSignature.isSingleCompleteType(v) else {
                throw BusError.invalidArgs("'\(v)' is not a single complete type for dictionary values.")
            }
            var size = 0
            for (key, value) in pairs {
                guard key.signature == k, value.signature == v else {
                    throw BusError.invalidArgs("A dictionary 'a{\(k)\(v)}' holds an entry of types '\(key.signature)' → '\(value.signature)'.")
                }
                size += try key.validate(depth: depth + 2) + value.validate(depth: depth + 2) + 8
            }
            guard size <= DBusValue.maximumArrayBytes else {
                throw BusError.invalidArgs("A dictionary is larger than the 64 MiB D-Bus allows.")
            }
            return size + 8
        case .structure(let members):
            guard !members.isEmpty else { throw BusError.invalidArgs("A D-Bus structure needs at least one member.") }
            var size = 8
            for m in members { size += try m.validate(depth: depth + 1) }
            return size
        case .variant(let inner):
            let sig = inner.signature
            return try inner.validate(depth: depth + 1) + sig.utf8.count + 2
        }
    }
}

// MARK: - Equality and description

extension DBusValue: Equatable {
    /// Structural equality; file descriptors compare equal when they are the same wrapper.
    public static func == (a: DBusValue, b: DBusValue) -> Bool {
        switch (a, b) {
        case (.byte(let x), .byte(let y)): return x == y
        case (.boolean(let x), .boolean(let y)): return x == y
        case (.int16(let x), .int16(let y)): return x == y
        case (.uint16(let x), .uint16(let y)): return x == y
        case (.int32(let x), .int32(let y)): return x == y
        case (.uint32(let x), .uint32(let y)): return x == y
        case (.int64(let x), .int64(let y)): return x == y
        case (.uint64(let x), .uint64(let y)): return x == y
        case (.double(let x), .double(let y)): return x == y || (x.isNaN && y.isNaN)
        case (.string(let x), .string(let y)): return x == y
        case (.objectPath(let x), .objectPath(let y)): return x == y
        case (.signature(let x), .signature(let y)): return x == y
        case (.unixFD(let x), .unixFD(let y)): return x === y
        case (.array(let e1, let i1), .array(let e2, let i2)): return e1 == e2 && i1 == i2
        case (.dictionary(let k1, let v1, let p1), .dictionary(let k2, let v2, let p2)):
            return k1 == k2 && v1 == v2 && p1.count == p2.count
                && zip(p1, p2).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        case (.structure(let m1), .structure(let m2)): return m1 == m2
        case (.variant(let x), .variant(let y)): return x == y
        default: return false
        }
    }
}

extension DBusValue: CustomStringConvertible {
    /// A GVariant-like text form, e.g. `{'name': <'x'>, 'n': <uint32 3>}`.
    public var description: String {
        switch self {
        case .byte(let x): return "byte \(x)"
        case .boolean(let x): return x ? "true" : "false"
        case .int16(let x): return "int16 \(x)"
        case .uint16(let x): return "uint16 \(x)"
        case .int32(let x): return "\(x)"
        case .uint32(let x): return "uint32 \(x)"
        case .int64(let x): return "int64 \(x)"
        case .uint64(let x): return "uint64 \(x)"
        case .double(let x): return "\(x)"
        case .string(let s): return "'\(s)'"
        case .objectPath(let p): return "objectpath '\(p)'"
        case .signature(let g): return "signature '\(g)'"
        case .unixFD(let fd): return "handle \(fd.rawValue)"
        case .array(let e, let items):
            return items.isEmpty ? "@a\(e) []" : "[" + items.map(\.description).joined(separator: ", ") + "]"
        case .dictionary(let k, let v, let pairs):
            return pairs.isEmpty ? "@a{\(k)\(v)} {}"
                : "{" + pairs.map { "\($0.0): \($0.1)" }.joined(separator: ", ") + "}"
        case .structure(let m): return "(" + m.map(\.description).joined(separator: ", ") + ")"
        case .variant(let inner): return "<\(inner)>"
        }
    }
}

// MARK: - Constructors for common shapes

extension DBusValue {
    /// `a{sv}` from a Swift dictionary: every value is wrapped in a variant; keys sorted.
    public static func vardict(_ d: [String: DBusValue]) -> DBusValue {
        .dictionary(keySignature: "s", valueSignature: "v",
                    d.keys.sorted().map { (.string($0), .variant(d[$0] ?? .boolean(false))) })
    }

    /// `aa{sv}` from a list of Swift dictionaries.
    public static func vardicts(_ list: [[String: DBusValue]]) -> DBusValue {
        .array(elementSignature: "a{sv}", list.map { vardict($0) })
    }

    /// `as`
    public static func strings(_ list: [String]) -> DBusValue {
        .array(elementSignature: "s", list.map { .string($0) })
    }

    /// `ao`
    public static func objectPaths(_ list: [String]) -> DBusValue {
        .array(elementSignature: "o", list.map { .objectPath($0) })
    }

    /// `ad`
    public static func doubles(_ list: [Double]) -> DBusValue {
        .array(elementSignature: "d", list.map { .double($0) })
    }

    /// `ay`
    public static func bytes(_ list: [UInt8]) -> DBusValue {
        .array(elementSignature: "y", list.map { .byte($0) })
    }

    /// `ah`
    public static func fileDescriptors(_ list: [FileDescriptor]) -> DBusValue {
        .array(elementSignature: "h", list.map { .unixFD($0) })
    }

    /// `a{sd}` from a Swift dictionary; keys sorted.
    public static func doubleDict(_ d: [String: Double]) -> DBusValue {
        .dictionary(keySignature: "s", valueSignature: "d",
                    d.keys.sorted().map { (.string($0), .double(d[$0] ?? 0)) })
    }
}

// MARK: - Typed accessors

extension DBusValue {
    /// The error thrown when a value is not of the expected type.
    static func mismatch(_ expected: String, _ value: DBusValue) -> BusError {
        BusError.invalidArgs("Expected a value of type '\(expected)' (\(DBusSignature.describe(expected))), received '\(value.signature)' (\(DBusSignature.describe(value.signature))).")
    }

    /// The `y` value. - Throws: `BusError` (`InvalidArgs`) on another type.
    public func asByte() throws -> UInt8 { if case .byte(let x) = self { return x }; throw Self.mismatch("y", self) }
    /// The `b` value. - Throws: `BusError` (`InvalidArgs`) on another type.
    public func asBool() throws -> Bool { if case .boolean(let x) = self { return x }; throw Self.mismatch("b", self) }
    /// The `n` value. - Throws: `BusError` (`InvalidArgs`) on another type.
    public func asInt16() throws -> Int16 { if case .int16(let x) = self { return x }; throw Self.mismatch("n", self) }
    /// The `q` value. - Throws: `BusError` (`InvalidArgs`) on another type.
    public func asUInt16() throws -> UInt16 { if case .uint16(let x) = self { return x }; throw Self.mismatch("q", self) }
    /// The `i` value. - Throws: `BusError` (`InvalidArgs`) on another type.
    public func asInt32() throws -> Int32 { if case .int32(let x) = self { return x }; throw Self.mismatch("i", self) }
    /// The `u` value. - Throws: `BusError` (`InvalidArgs`) on another type.
    public func asUInt32() throws -> UInt32 { if case .uint32(let x) = self { return x }; throw Self.mismatch("u", self) }
    /// The `x` value. - Throws: `BusError` (`InvalidArgs`) on another type.
    public func asInt64() throws -> Int64 { if case .int64(let x) = self { return x }; throw Self.mismatch("x", self) }
    /// The `t` value. - Throws: `BusError` (`InvalidArgs`) on another type.
    public func asUInt64() throws -> UInt64 { if case .uint64(let x) = self { return x }; throw Self.mismatch("t", self) }
    /// The `d` value. - Throws: `BusError` (`InvalidArgs`) on another type.
    public func asDouble() throws -> Double { if case .double(let x) = self { return x }; throw Self.mismatch("d", self) }
    /// The `s` value. - Throws: `BusError` (`InvalidArgs`) on another type.
    public func asString() throws -> String { if case .string(let x) = self { return x }; throw Self.mismatch("s", self) }
    /// The `o` value. - Throws: `BusError` (`InvalidArgs`) on another type.
    public func asObjectPath() throws -> String { if case .objectPath(let x) = self { return x }; throw Self.mismatch("o", self) }
    /// The `g` value. - Throws: `BusError` (`InvalidArgs`) on another type.
    public func asSignature() throws -> String { if case .signature(let x) = self { return x }; throw Self.mismatch("g", self) }
    /// The `h` value. - Throws: `BusError` (`InvalidArgs`) on another type.
    public func asFileDescriptor() throws -> FileDescriptor { if case .unixFD(let x) = self { return x }; throw Self.mismatch("h", self) }
    /// The content of a `v` value. - Throws: `BusError` (`InvalidArgs`) on another type.
    public func asVariant() throws -> DBusValue { if case .variant(let x) = self { return x }; throw Self.mismatch("v", self) }
    /// The members of a structure. - Throws: `BusError` (`InvalidArgs`) on another type.
    public func asStructure() throws -> [DBusValue] {
        if case .structure(let m) = self { return m }
        throw Self.mismatch("(…)", self)
    }

    /// The elements of an array (not a dictionary). - Throws: `BusError` (`InvalidArgs`) on another type.
    public func asArray() throws -> [DBusValue] {
        if case .array(_, let items) = self { return items }
        throw Self.mismatch("a…", self)
    }

    /// The elements of an array whose elements have signature `element`.
    /// - Throws: `BusError` (`InvalidArgs`) on another type.
    public func asArray(of element: String) throws -> [DBusValue] {
        if case .array(let e, let items) = self, e == element { return items }
        throw Self.mismatch("a" + element, self)
    }

    /// The entries of a dictionary, in wire order. - Throws: `BusError` (`InvalidArgs`) on another type.
    public func asDictionary() throws -> [(DBusValue, DBusValue)] {
        if case .dictionary(_, _, let pairs) = self { return pairs }
        throw Self.mismatch("a{…}", self)
    }

    /// An `a{sv}` as a Swift dictionary with the variants unwrapped (a repeated key keeps the last).
    /// - Throws: `BusError` (`InvalidArgs`) on another type.
    public func asVardict() throws -> [String: DBusValue] {
        guard case .dictionary("s", "v", let pairs) = self else { throw Self.mismatch("a{sv}", self) }
        var out: [String: DBusValue] = [:]
        for (k, v) in pairs { out[try k.asString()] = try v.asVariant() }
        return out
    }

    /// An `aa{sv}` as a list of Swift dictionaries. - Throws: `BusError` (`InvalidArgs`) on another type.
    public func asVardicts() throws -> [[String: DBusValue]] {
        try asArray(of: "a{sv}").map { try $0.asVardict() }
    }

    /// An `as`. - Throws: `BusError` (`InvalidArgs`) on another type.
    public func asStrings() throws -> [String] { try asArray(of: "s").map { try $0.asString() } }
    /// An `ao`. - Throws: `BusError` (`InvalidArgs`) on another type.
    public func asObjectPaths() throws -> [String] { try asArray(of: "o").map { try $0.asObjectPath() } }
    /// An `ad`. - Throws: `BusError` (`InvalidArgs`) on another type.
    public func asDoubles() throws -> [Double] { try asArray(of: "d").map { try $0.asDouble() } }
    /// An `ay`. - Throws: `BusError` (`InvalidArgs`) on another type.
    public func asBytes() throws -> [UInt8] { try asArray(of: "y").map { try $0.asByte() } }
    /// An `ah`. - Throws: `BusError` (`InvalidArgs`) on another type.
    public func asFileDescriptors() throws -> [FileDescriptor] { try asArray(of: "h").map { try $0.asFileDescriptor() } }

    /// An `a{sd}` as a Swift dictionary. - Throws: `BusError` (`InvalidArgs`) on another type.
    public func asDoubleDict() throws -> [String: Double] {
        guard case .dictionary("s", "d", let pairs) = self else { throw Self.mismatch("a{sd}", self) }
        var out: [String: Double] = [:]
        for (k, v) in pairs { out[try k.asString()] = try v.asDouble() }
        return out
    }
}

// MARK: - Options dictionaries

extension Dictionary where Key == String, Value == DBusValue {
    /// The option `key` converted with `convert`, or nil when absent.
    /// - Throws: `BusError` (`InvalidArgs`) naming the option when the conversion fails.
    public func option<T>(_ key: String, _ convert: (DBusValue) throws -> T) throws -> T? {
        guard let v = self[key] else { return nil }
        do { return try convert(v) } catch let e as BusError {
            throw BusError(name: e.name, message: "Option '\(key)': \(e.message)")
        }
    }

    /// Throws `InvalidArgs` naming the first key not in `known` (for strict option checking).
    public func rejectUnknownOptions(_ known: Set<String>) throws {
        if let bad = keys.sorted().first(where: { !known.contains($0) }) {
            throw BusError.invalidArgs("Unknown option '\(bad)'; known options: \(known.sorted().joined(separator: ", ")).")
        }
    }
}
