// MatchRule: a D-Bus match rule (for AddMatch) that is also checked locally on delivery.

/// A D-Bus match rule selecting the signals a subscription receives.
///
/// The rule is sent to the bus with `AddMatch`, and checked again on this side so that each
/// subscription only sees its own signals. A well-known `sender` is resolved to its current
/// owner when subscribing; if it has no owner then, signals from any sender pass that field.
public struct MatchRule: Hashable, Sendable, CustomStringConvertible {
    /// Message type; `signal` for subscriptions.
    public var type: String? = "signal"
    /// Sender bus name (unique or well-known).
    public var sender: String?
    /// Interface of the signal.
    public var interface: String?
    /// Member (signal name).
    public var member: String?
    /// Exact object path.
    public var path: String?
    /// Object path prefix: the path itself or anything below it.
    public var pathNamespace: String?
    /// String arguments that must be equal: index → value (arg0 … arg63).
    public var arguments: [Int: String] = [:]

    /// A signal rule; nil fields match anything.
    public init(sender: String? = nil, interface: String? = nil, member: String? = nil,
                path: String? = nil, pathNamespace: String? = nil, arguments: [Int: String] = [:]) {
        self.sender = sender
        self.interface = interface
        self.member = member
        self.path = path
        self.pathNamespace = pathNamespace
        self.arguments = arguments
    }

    /// `org.freedesktop.DBus.Properties.PropertiesChanged` from `path` (or under `pathNamespace`),
    /// optionally only for one interface (arg0).
    public static func propertiesChanged(sender: String? = nil, path: String? = nil, pathNamespace: String? = nil,
                                         interface: String? = nil) -> MatchRule {
        MatchRule(sender: sender, interface: "org.freedesktop.DBus.Properties", member: "PropertiesChanged",
                  path: path, pathNamespace: pathNamespace, arguments: interface.map { [0: $0] } ?? [:])
    }

    /// The rule's text form, as `AddMatch` expects it.
    public var description: String {
        var parts: [String] = []
        func add(_ key: String, _ value: String?) {
            guard let value else { return }
            // Inside quotes only the apostrophe needs care: close, escaped quote, reopen.
            parts.append("\(key)='" + value.replacingOccurrencesOfApostrophe() + "'")
        }
        add("type", type)
        add("sender", sender)
        add("interface", interface)
        add("member", member)
        add("path", path)
        add("path_namespace", pathNamespace)
        for (i, v) in arguments.sorted(by: { $0.key < $1.key }) { add("arg\(i)", v) }
        return parts.joined(separator: ",")
    }

    /// Checks the fields that can be checked: names, paths, argument indices, total length.
    func validate() throws {
        if let sender, !Names.isValidBusName(sender) { throw BusError.invalidArgs("'\(sender)' is not a valid bus name.") }
        if let interface { try Message.checkInterface(interface) }
        if let member { try Message.checkMember(member) }
        if let path { try Message.checkPath(path) }
        if let pathNamespace { try Message.checkPath(pathNamespace) }
        if path != nil && pathNamespace != nil {
            throw BusError.invalidArgs("A match rule cannot have both 'path' and 'path_namespace'.")
        }
        for (i, v) in arguments {
            guard (0...63).contains(i) else { throw BusError.invalidArgs("Match rule argument index \(i) is not in 0…63.") }
            guard hasNoNUL(v) else { throw BusError.invalidArgs("A match rule argument cannot contain NUL.") }
        }
        guard description.utf8.count <= 1024 else { throw BusError.invalidArgs("The match rule is longer than 1024 bytes.") }
    }

    /// Whether `message` matches, with `owner` the unique name a well-known sender resolved to.
    func matches(_ message: Message, owner: String?, arguments args: () -> [DBusValue]) -> Bool {
        if let type {
            let kind: String
            switch message.kind {
            case .signal: kind = "signal"
            case .methodCall: kind = "method_call"
            case .methodReturn: kind = "method_return"
            case .error: kind = "error"
            case .invalid: kind = ""
            }
            guard kind == type else { return false }
        }
        if let sender {
            let actual = message.sender
            if actual != sender {
                if let owner {
                    guard actual == owner else { return false }
                } else if sender.hasPrefix(":") || sender == "org.freedesktop.DBus" {
                    return false
                }
            }
        }
        if let interface, message.interface != interface { return false }
        if let member, message.member != member { return false }
        if let path, message.path != path { return false }
        if let ns = pathNamespace {
            guard let p = message.path else { return false }
            if !(ns == "/" || p == ns || p.hasPrefix(ns + "/")) { return false }
        }
        if !arguments.isEmpty {
            let values = args()
            for (i, want) in arguments {
                guard i < values.count, case .string(let s) = values[i], s == want else { return false }
            }
        }
        return true
    }
}

extension String {
    /// The string with each `'` written as `'\''` (match-rule quoting).
    fileprivate func replacingOccurrencesOfApostrophe() -> String {
        var out = ""
        for ch in self {
            if ch == "'" { out += "'\\''" } else { out.append(ch) }
        }
        return out
    }
}
