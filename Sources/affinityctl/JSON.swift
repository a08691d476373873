// JSON: a small ordered JSON value and writer, so that `--json` output keeps a stable key order.
import Bus

/// A JSON value whose objects keep their keys in the order they were built.
enum JSON: Equatable {
    case null
    case bool(Bool)
    case int(Int64)
    case uint(UInt64)
    case double(Double)
    case string(String)
    case array([JSON])
    case object([(String, JSON)])

    static func == (a: JSON, b: JSON) -> Bool { a.text == b.text }

    /// The value on one line (no spaces), as written by `--json`.
    var text: String {
        var out = ""
        write(to: &out)
        return out
    }

    private func write(to out: inout String) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .uint(let u): out += String(u)
        case .double(let d):
            // JSON has no NaN or infinity; Swift's shortest round-trip form otherwise (1.0, 0.25, 1e-05).
            if !d.isFinite { out += "null" } else { out += "\(d)" }
        case .string(let s): JSON.quote(s, into: &out)
        case .array(let items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                item.write(to: &out)
            }
            out += "]"
        case .object(let pairs):
            out += "{"
            for (i, (k, v)) in pairs.enumerated() {
                if i > 0 { out += "," }
                JSON.quote(k, into: &out)
                out += ":"
                v.write(to: &out)
            }
            out += "}"
        }
    }

    /// Writes `s` as a JSON string literal.
    static func quote(_ s: String, into out: inout String) {
        out += "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 {
                    let hex = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        out += "\""
    }

    /// A D-Bus value as JSON: numbers as numbers, strings and object paths as strings, `a{s…}`
    /// as objects (keys sorted), arrays as arrays, variants unwrapped; file descriptors as null.
    init(_ value: DBusValue) {
        switch value {
        case .byte(let x): self = .uint(UInt64(x))
        case .boolean(let x): self = .bool(x)
        case .int16(let x): self = .int(Int64(x))
        case .uint16(let x): self = .uint(UInt64(x))
        case .int32(let x): self = .int(Int64(x))
        case .uint32(let x): self = .uint(UInt64(x))
        case .int64(let x): self = .int(x)
        case .uint64(let x): self = .uint(x)
        case .double(let x): self = .double(x)
        case .string(let s), .objectPath(let s), .signature(let s): self = .string(s)
        case .unixFD: self = .null
        case .array(_, let items): self = .array(items.map(JSON.init))
        case .dictionary(_, _, let pairs):
            let entries = pairs.map { (k, v) -> (String, JSON) in
                let key: String
                switch k {
                case .string(let s), .objectPath(let s): key = s
                default: key = JSON(k).text
                }
                return (key, JSON(v))
            }
            self = .object(entries.sorted { $0.0 < $1.0 })
        case .structure(let members): self = .array(members.map(JSON.init))
        case .variant(let inner): self = JSON(inner)
        }
    }

    /// A property map as a JSON object with sorted keys.
    static func sorted(_ d: [String: DBusValue]) -> JSON {
        .object(d.keys.sorted().map { ($0, JSON(d[$0]!)) })
    }
}
