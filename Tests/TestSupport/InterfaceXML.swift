// The interface files of data/dbus, read as the source of truth of the D-Bus API: methods with
// their argument signatures and documentation, properties with their types and change signalling,
// signals. (A reader of these well-formed files, not a general XML parser.)
import Foundation

/// One interface of `data/dbus/<name>.xml`.
public struct InterfaceXML: Sendable {
    public struct Method: Sendable {
        public var name: String
        public var inSignature: String
        public var outSignature: String
        /// The comment above the method (its documentation: @options, Errors, …).
        public var documentation: String
    }

    public struct Property: Sendable {
        public var name: String
        public var type: String
        /// False when annotated EmitsChangedSignal=const.
        public var emitsChangedSignal: Bool
    }

    public var name: String
    public var methods: [Method] = []
    public var properties: [Property] = []
    public var signals: [String: String] = [:]
    /// Every comment of the file, joined.
    public var comments: String = ""

    /// `data/dbus` of this repository.
    public static let directory = TestPaths.root.appendingPathComponent("data/dbus")

    /// Reads `data/dbus/<interface>.xml`.
    public static func read(_ interface: String) throws -> InterfaceXML {
        let text = try String(contentsOf: directory.appendingPathComponent(interface + ".xml"), encoding: .utf8)
        return try InterfaceXML(name: interface, text: text)
    }

    public init(name: String, text: String) throws {
        self.name = name
        func attribute(_ a: String, in tag: String) -> String? {
            guard let r = tag.range(of: a + "=\"") else { return nil }
            let rest = tag[r.upperBound...]
            return rest.firstIndex(of: "\"").map { String(rest[..<$0]) }
        }
        func matches(_ pattern: String, _ s: String) throws -> [[String]] {
            let re = try NSRegularExpression(pattern: pattern, options: [.dotMatchesLineSeparators])
            return re.matches(in: s, range: NSRange(s.startIndex..., in: s)).map { m in
                (0..<m.numberOfRanges).map { i in Range(m.range(at: i), in: s).map { String(s[$0]) } ?? "" }
            }
        }
        comments = try matches(#"<!--(.*?)-->"#, text).map { $0[1] }.joined(separator: "\n")
        for m in try matches(#"(?:<!--((?:(?!-->).)*)-->\s*)?<method name="(\w+)">(.*?)</method>"#, text) {
            var ins = "", outs = ""
            for arg in try matches(#"<arg [^>]*/>"#, m[3]).map({ $0[0] }) {
                let type = attribute("type", in: arg) ?? ""
                if attribute("direction", in: arg) == "out" { outs += type } else { ins += type }
            }
            methods.append(Method(name: m[2], inSignature: ins, outSignature: outs, documentation: m[1]))
        }
        for m in try matches(#"<property ([^>]*?)(/>|>(.*?)</property>)"#, text) {
            let tag = m[1]
            let constant = m[3].contains("EmitsChangedSignal") && m[3].contains("value=\"const\"")
            properties.append(Property(name: attribute("name", in: tag) ?? "", type: attribute("type", in: tag) ?? "",
                                       emitsChangedSignal: !constant))
        }
        for m in try matches(#"<signal name="(\w+)">(.*?)</signal>"#, text) {
            signals[m[1]] = try matches(#"<arg [^>]*/>"#, m[2]).map { attribute("type", in: $0[0]) ?? "" }.joined()
        }
    }

    /// The option keys and their types documented for `method` ("@options: key (type, …), …");
    /// "as <Other>'s" refers to another method's options.
    public func documentedOptions(of method: String) throws -> [String: String] {
        guard let m = methods.first(where: { $0.name == method }) else { return [:] }
        guard let start = m.documentation.range(of: "@options:") else { return [:] }
        var text = String(m.documentation[start.upperBound...])
        if let end = text.range(of: "\n      @") ?? text.range(of: "\n      Errors:") ?? text.range(of: "\n      The ") { text = String(text[..<end.lowerBound]) }
        if let r = text.range(of: #"as (\w+)'s"#, options: .regularExpression) {
            let other = text[r].dropFirst(3).dropLast(2)
            return try documentedOptions(of: String(other))
        }
        let flat = text.replacingOccurrences(of: "\n", with: " ")
        // A key is a lower-case word followed by " (" and a type code, at the top level of the list.
        // A key is a lower-case word followed by " (" and its type code, after a comma or at the start.
        let re = try NSRegularExpression(pattern: #"(?:^\s*|,\s+)([a-z_]+) \(([a-z{}]+)[,:)]"#)
        var out: [String: String] = [:]
        for m in re.matches(in: flat, range: NSRange(flat.startIndex..., in: flat)) {
            guard let k = Range(m.range(at: 1), in: flat), let t = Range(m.range(at: 2), in: flat) else { continue }
            out[String(flat[k])] = String(flat[t])
        }
        return out
    }

    /// The error names listed after "Errors:" in every method's documentation.
    public var documentedErrors: Set<String> {
        var names = Set<String>()
        for m in methods {
            guard let r = m.documentation.range(of: "Errors:") else { continue }
            let text = m.documentation[r.upperBound...].replacingOccurrences(of: "\n", with: " ")
            var depth = 0
            var word = ""
            for c in text + " " {
                if c == "(" { depth += 1 } else if c == ")" { depth -= 1 }
                if depth == 0, c.isLetter { word.append(c); continue }
                if !word.isEmpty, word.first!.isUppercase { names.insert(word) }
                word = ""
            }
        }
        return names
    }
}
