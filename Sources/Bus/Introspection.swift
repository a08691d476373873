// Introspection XML: the standard interfaces generated here, the exporter's interfaces verbatim.

/// Builds the XML answered by `org.freedesktop.DBus.Introspectable.Introspect`.
enum Introspection {
    static let header = """
        <!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
         "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">

        """

    static let peer = """
          <interface name="org.freedesktop.DBus.Peer">
            <method name="Ping"/>
            <method name="GetMachineId">
              <arg type="s" name="machine_uuid" direction="out"/>
            </method>
          </interface>

        """

    static let introspectable = """
          <interface name="org.freedesktop.DBus.Introspectable">
            <method name="Introspect">
              <arg type="s" name="xml_data" direction="out"/>
            </method>
          </interface>

        """

    static let properties = """
          <interface name="org.freedesktop.DBus.Properties">
            <method name="Get">
              <arg type="s" name="interface_name" direction="in"/>
              <arg type="s" name="property_name" direction="in"/>
              <arg type="v" name="value" direction="out"/>
            </method>
            <method name="GetAll">
              <arg type="s" name="interface_name" direction="in"/>
              <arg type="a{sv}" name="properties" direction="out"/>
            </method>
            <method name="Set">
              <arg type="s" name="interface_name" direction="in"/>
              <arg type="s" name="property_name" direction="in"/>
              <arg type="v" name="value" direction="in"/>
            </method>
            <signal name="PropertiesChanged">
              <arg type="s" name="interface_name"/>
              <arg type="a{sv}" name="changed_properties"/>
              <arg type="as" name="invalidated_properties"/>
            </signal>
          </interface>

        """

    static let objectManager = """
          <interface name="org.freedesktop.DBus.ObjectManager">
            <method name="GetManagedObjects">
              <arg type="a{oa{sa{sv}}}" name="object_paths_interfaces_and_properties" direction="out"/>
            </method>
            <signal name="InterfacesAdded">
              <arg type="o" name="object_path"/>
              <arg type="a{sa{sv}}" name="interfaces_and_properties"/>
            </signal>
            <signal name="InterfacesRemoved">
              <arg type="o" name="object_path"/>
              <arg type="as" name="interfaces"/>
            </signal>
          </interface>

        """

    /// The document for one node: standard interfaces, the exporter's interfaces, child nodes.
    static func document(interfaces: [BusInterface]?, children: [String], isManager: Bool) -> String {
        var xml = header + "<node>\n" + peer + introspectable
        if interfaces != nil { xml += properties }
        if isManager { xml += objectManager }
        for i in interfaces ?? [] {
            if let supplied = i.introspectionXML {
                xml += fragment(from: supplied)
                if !xml.hasSuffix("\n") { xml += "\n" }
            } else {
                xml += generated(i)
            }
        }
        for c in children { xml += "  <node name=\"\(c)\"/>\n" }
        return xml + "</node>\n"
    }

    /// The part of a supplied XML text to insert: everything inside the root `<node>` element
    /// when the text is a whole document (declaration, DOCTYPE, comments and the root tags are
    /// dropped), otherwise the text itself; either way the kept part is verbatim.
    static func fragment(from xml: String) -> String {
        var rest = Substring(xml)
        // Skip the prolog: whitespace, <?xml …?>, <!DOCTYPE …>, comments.
        while true {
            let trimmed = rest.drop { $0.isWhitespace }
            if trimmed.hasPrefix("<?"), let end = trimmed.firstRange(of: "?>") {
                rest = trimmed[end.upperBound...]
            } else if trimmed.hasPrefix("<!--"), let end = trimmed.firstRange(of: "-->") {
                rest = trimmed[end.upperBound...]
            } else if trimmed.hasPrefix("<!DOCTYPE"), let end = trimmed.firstIndex(of: ">") {
                rest = trimmed[trimmed.index(after: end)...]
            } else {
                rest = trimmed
                break
            }
        }
        guard rest.hasPrefix("<node"), let open = rest.firstIndex(of: ">") else { return xml }
        if rest[..<open].hasSuffix("/") { return "" }  // <node/>: nothing inside
        let inner = rest[rest.index(after: open)...]
        guard let close = inner.ranges(of: "</node>").last else { return xml }
        var body = String(inner[..<close.lowerBound])
        // Keep indentation but drop the newline right after <node> and trailing blank space.
        if body.hasPrefix("\n") { body.removeFirst() }
        while let last = body.last, last == " " || last == "\t" { body.removeLast() }
        return body
    }

    /// An `<interface>` element generated from the declared members (arguments named argN).
    static func generated(_ i: BusInterface) -> String {
        var xml = "  <interface name=\"\(i.name)\">\n"
        for m in i.methodOrder {
            guard let def = i.methods[m] else { continue }
            let ins = def.inSignature.flatMap { DBusSignature.split($0) } ?? []
            let outs = def.outSignature.flatMap { DBusSignature.split($0) } ?? []
            if ins.isEmpty && outs.isEmpty {
                xml += "    <method name=\"\(m)\"/>\n"
                continue
            }
            xml += "    <method name=\"\(m)\">\n"
            for (n, t) in ins.enumerated() { xml += "      <arg type=\"\(t)\" name=\"arg\(n)\" direction=\"in\"/>\n" }
            for (n, t) in outs.enumerated() { xml += "      <arg type=\"\(t)\" name=\"out\(n)\" direction=\"out\"/>\n" }
            xml += "    </method>\n"
        }
        for s in i.signalOrder {
            let args = i.signals[s].flatMap { DBusSignature.split($0) } ?? []
            if args.isEmpty {
                xml += "    <signal name=\"\(s)\"/>\n"
                continue
            }
            xml += "    <signal name=\"\(s)\">\n"
            for (n, t) in args.enumerated() { xml += "      <arg type=\"\(t)\" name=\"arg\(n)\"/>\n" }
            xml += "    </signal>\n"
        }
        for p in i.propertyOrder {
            guard let def = i.properties[p] else { continue }
            let access = def.set == nil ? "read" : "readwrite"
            xml += "    <property name=\"\(p)\" type=\"\(def.signature)\" access=\"\(access)\"/>\n"
        }
        return xml + "  </interface>\n"
    }
}

/// A minimal reader for D-Bus introspection XML: enough to compare a document with handlers.
enum IntrospectionReader {
    /// One start, end or empty-element tag.
    struct Tag {
        var name: String
        var attributes: [String: String]
        var isEnd: Bool
        var isEmpty: Bool
    }

    /// What an XML text declares for one interface.
    struct Declared {
        var methods: [String: (in: String, out: String)] = [:]
        var signals: [String: String] = [:]
        var properties: [String: (type: String, access: String)] = [:]
    }

    /// The tags of `xml`, skipping comments, processing instructions, DOCTYPE and text.
    static func tags(_ xml: String) -> [Tag] {
        let c = Array(xml.unicodeScalars)
        var out: [Tag] = []
        var i = 0
        func starts(_ s: String, at k: Int) -> Bool {
            let u = Array(s.unicodeScalars)
            return k + u.count <= c.count && Array(c[k..<(k + u.count)]) == u
        }
        func skip(past s: String, from k: Int) -> Int {
            var j = k
            while j < c.count && !starts(s, at: j) { j += 1 }
            return min(c.count, j + s.unicodeScalars.count)
        }
        while i < c.count {
            guard c[i] == "<" else { i += 1; continue }
            if starts("<!--", at: i) { i = skip(past: "-->", from: i + 4); continue }
            if starts("<?", at: i) { i = skip(past: "?>", from: i + 2); continue }
            if starts("<![CDATA[", at: i) { i = skip(past: "]]>", from: i + 9); continue }
            if starts("<!", at: i) { i = skip(past: ">", from: i + 2); continue }
            // Find the closing '>' outside quotes.
            var j = i + 1
            var quote: Unicode.Scalar? = nil
            while j < c.count {
                let ch = c[j]
                if let q = quote { if ch == q { quote = nil } } else if ch == "\"" || ch == "'" { quote = ch } else if ch == ">" { break }
                j += 1
            }
            guard j < c.count else { break }
            var body = String(String.UnicodeScalarView(c[(i + 1)..<j]))
            i = j + 1
            var tag = Tag(name: "", attributes: [:], isEnd: false, isEmpty: false)
            if body.hasPrefix("/") { tag.isEnd = true; body.removeFirst() }
            if body.hasSuffix("/") { tag.isEmpty = true; body.removeLast() }
            let scalars = Array(body.unicodeScalars)
            var k = 0
            func isSpace(_ s: Unicode.Scalar) -> Bool { s == " " || s == "\n" || s == "\t" || s == "\r" }
            while k < scalars.count && !isSpace(scalars[k]) { k += 1 }
            tag.name = String(String.UnicodeScalarView(scalars[0..<k]))
            // Attributes: key = "value" | 'value'.
            while k < scalars.count {
                while k < scalars.count && isSpace(scalars[k]) { k += 1 }
                let keyStart = k
                while k < scalars.count && scalars[k] != "=" && !isSpace(scalars[k]) { k += 1 }
                let key = String(String.UnicodeScalarView(scalars[keyStart..<k]))
                while k < scalars.count && (isSpace(scalars[k]) || scalars[k] == "=") { k += 1 }
                guard k < scalars.count, scalars[k] == "\"" || scalars[k] == "'" else { break }
                let q = scalars[k]
                k += 1
                let valueStart = k
                while k < scalars.count && scalars[k] != q { k += 1 }
                let value = String(String.UnicodeScalarView(scalars[valueStart..<min(k, scalars.count)]))
                k += 1
                if !key.isEmpty { tag.attributes[key] = unescape(value) }
            }
            out.append(tag)
        }
        return out
    }

    private static func unescape(_ s: String) -> String {
        guard s.contains("&") else { return s }
        var r = s
        for (e, v) in [("&lt;", "<"), ("&gt;", ">"), ("&quot;", "\""), ("&apos;", "'"), ("&amp;", "&")] {
            r = r.split(separator: e, omittingEmptySubsequences: false).joined(separator: v)
        }
        return r
    }

    /// The interfaces an XML text declares, by name.
    static func interfaces(_ xml: String) -> [String: Declared] {
        var result: [String: Declared] = [:]
        var current: String?
        var member: (kind: String, name: String)?
        var ins = "", outs = ""
        func finishMember() {
            guard let m = member, let iface = current else { return }
            if m.kind == "method" { result[iface, default: Declared()].methods[m.name] = (ins, outs) }
            if m.kind == "signal" { result[iface, default: Declared()].signals[m.name] = ins }
            member = nil
        }
        for t in tags(xml) {
            switch (t.name, t.isEnd) {
            case ("interface", false):
                current = t.attributes["name"]
                if let current, result[current] == nil { result[current] = Declared() }
                if t.isEmpty { current = nil }
            case ("interface", true):
                finishMember()
                current = nil
            case ("method", false), ("signal", false):
                finishMember()
                member = (t.name, t.attributes["name"] ?? "")
                ins = ""
                outs = ""
                if t.isEmpty { finishMember() }
            case ("method", true), ("signal", true):
                finishMember()
            case ("arg", false):
                let type = t.attributes["type"] ?? ""
                if member?.kind == "method", t.attributes["direction"] == "out" { outs += type } else { ins += type }
            case ("property", false):
                if let iface = current, let name = t.attributes["name"] {
                    result[iface, default: Declared()].properties[name] = (t.attributes["type"] ?? "", t.attributes["access"] ?? "")
                }
            default:
                break
            }
        }
        return result
    }
}

extension BusInterface {
    /// Where the supplied introspection XML and the declared handlers disagree, one sentence each
    /// (empty when they agree, or when no XML is supplied and it is generated).
    ///
    /// Checks the interface name, every method's in/out signature (methods declared with a nil
    /// signature accept anything and are only checked for presence), property types and access,
    /// and, if any signal is declared with `signal(_:_:)`, the signals.
    public func introspectionMismatches() -> [String] {
        guard let xml = introspectionXML else { return [] }
        let all = IntrospectionReader.interfaces(Introspection.fragment(from: xml))
        var problems: [String] = []
        for other in all.keys.sorted() where other != name {
            problems.append("The XML also describes interface \(other), which would be served as part of \(name).")
        }
        guard let d = all[name] else {
            return problems + ["The XML describes no interface named \(name)."]
        }
        for m in methodOrder {
            guard let def = methods[m] else { continue }
            guard let x = d.methods[m] else {
                problems.append("Method \(m) has a handler but is not in the XML.")
                continue
            }
            if let s = def.inSignature, s != x.in {
                problems.append("Method \(m) takes '\(s)' in its handler but '\(x.in)' in the XML.")
            }
            if let s = def.outSignature, s != x.out {
                problems.append("Method \(m) returns '\(s)' in its handler but '\(x.out)' in the XML.")
            }
        }
        for m in d.methods.keys.sorted() where methods[m] == nil {
            problems.append("Method \(m) is in the XML but has no handler.")
        }
        for p in propertyOrder {
            guard let def = properties[p] else { continue }
            guard let x = d.properties[p] else {
                problems.append("Property \(p) is served but is not in the XML.")
                continue
            }
            if def.signature != x.type {
                problems.append("Property \(p) has type '\(def.signature)' but '\(x.type)' in the XML.")
            }
            let access = def.set == nil ? "read" : "readwrite"
            if access != x.access {
                problems.append("Property \(p) is \(access) but '\(x.access)' in the XML.")
            }
        }
        for p in d.properties.keys.sorted() where properties[p] == nil {
            problems.append("Property \(p) is in the XML but is not served.")
        }
        if !signals.isEmpty {
            for s in signalOrder {
                guard let sig = signals[s] else { continue }
                if let x = d.signals[s] {
                    if x != sig { problems.append("Signal \(s) has signature '\(sig)' but '\(x)' in the XML.") }
                } else {
                    problems.append("Signal \(s) is declared but is not in the XML.")
                }
            }
            for s in d.signals.keys.sorted() where signals[s] == nil {
                problems.append("Signal \(s) is in the XML but is not declared.")
            }
        }
        return problems
    }
}
