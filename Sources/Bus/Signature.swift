// D-Bus type signatures: validation and splitting into single complete types.
import CDBus

/// Helpers for D-Bus type signatures (`a{sv}`, `(ii)`, `ah`, ...).
public enum DBusSignature {
    /// Type codes of the basic types (the only ones allowed as dictionary keys).
    static let basicCodes: Set<UInt8> = Set("ybnqiuxtdsogh".utf8)
    /// Type codes of the fixed-size basic types.
    static let fixedCodes: Set<UInt8> = Set("ybnqiuxtdh".utf8)

    /// Whether `signature` is a valid signature (zero or more complete types, nesting limits kept).
    public static func isValid(_ signature: String) -> Bool {
        hasNoNUL(signature) && dbus_signature_validate(signature, nil) != 0
    }

    /// Whether `signature` is exactly one valid complete type.
    public static func isSingleCompleteType(_ signature: String) -> Bool {
        hasNoNUL(signature) && dbus_signature_validate_single(signature, nil) != 0
    }

    /// Whether `signature` is a single basic type (usable as a dictionary key).
    public static func isBasic(_ signature: String) -> Bool {
        let u = Array(signature.utf8)
        return u.count == 1 && basicCodes.contains(u[0])
    }

    /// Splits a valid signature into its complete types (`"sa{sv}(ii)"` → `["s", "a{sv}", "(ii)"]`).
    /// - Returns: nil if `signature` is not valid.
    public static func split(_ signature: String) -> [String]? {
        guard isValid(signature) else { return nil }
        let bytes = Array(signature.utf8)
        var parts: [String] = []
        var i = 0
        while i < bytes.count {
            guard let end = endOfCompleteType(bytes, from: i) else { return nil }
            parts.append(String(decoding: bytes[i..<end], as: UTF8.self))
            i = end
        }
        return parts
    }

    /// The index one past the complete type that starts at `start`, or nil if malformed.
    static func endOfCompleteType(_ b: [UInt8], from start: Int) -> Int? {
        guard start < b.count else { return nil }
        switch b[start] {
        case UInt8(ascii: "a"):
            if start + 1 < b.count, b[start + 1] == UInt8(ascii: "{") {
                // a{KV}: a basic key, one complete value type, then '}'.
                let keyStart = start + 2
                guard keyStart < b.count, basicCodes.contains(b[keyStart]) else { return nil }
                guard let valueEnd = endOfCompleteType(b, from: keyStart + 1),
                      valueEnd < b.count, b[valueEnd] == UInt8(ascii: "}") else { return nil }
                return valueEnd + 1
            }
            return endOfCompleteType(b, from: start + 1)
        case UInt8(ascii: "("):
            var i = start + 1
            var members = 0
            while i < b.count, b[i] != UInt8(ascii: ")") {
                guard let e = endOfCompleteType(b, from: i) else { return nil }
                i = e
                members += 1
            }
            guard i < b.count, members > 0 else { return nil }
            return i + 1
        case UInt8(ascii: "v"):
            return start + 1
        default:
            return basicCodes.contains(b[start]) ? start + 1 : nil
        }
    }

    /// The key and value signatures of a dictionary entry signature `{KV}`.
    static func dictEntryParts(_ entry: String) -> (key: String, value: String)? {
        let b = Array(entry.utf8)
        guard b.count >= 4, b.first == UInt8(ascii: "{"), b.last == UInt8(ascii: "}"),
              basicCodes.contains(b[1]) else { return nil }
        let value = String(decoding: b[2..<(b.count - 1)], as: UTF8.self)
        return (String(decoding: b[1..<2], as: UTF8.self), value)
    }

    /// A short English name of the type a signature stands for (for error messages).
    public static func describe(_ signature: String) -> String {
        switch signature {
        case "y": return "byte"
        case "b": return "boolean"
        case "n": return "int16"
        case "q": return "uint16"
        case "i": return "int32"
        case "u": return "uint32"
        case "x": return "int64"
        case "t": return "uint64"
        case "d": return "double"
        case "s": return "string"
        case "o": return "object path"
        case "g": return "signature"
        case "h": return "file descriptor"
        case "v": return "variant"
        case "": return "no value"
        default:
            if signature.hasPrefix("a{") { return "dictionary" }
            if signature.hasPrefix("a") { return "array" }
            if signature.hasPrefix("(") { return "structure" }
            return "value"
        }
    }
}
