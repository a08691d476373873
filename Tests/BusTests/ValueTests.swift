import TestSupport
// Offline tests: values, signatures, the message builder and reader, malformed input.
import Bus
import Testing

/// One value of every type, nested containers included (no file descriptors: they do not marshal).
let everyValue: [DBusValue] = [
    .byte(200), .boolean(true), .boolean(false), .int16(-12345), .uint16(54321), .int32(-7), .uint32(4_000_000_000),
    .int64(-9_000_000_000_000), .uint64(18_000_000_000_000_000_000), .double(-0.125), .double(.infinity),
    .string(""), .string("héllo wörld ✓"), .objectPath("/org/lesionaffinity/Affinity1/jobs/7"), .signature("a{sv}(ii)"),
    .vardict(["name": .string("x"), "n": .uint32(3), "nested": .vardict(["deep": .doubles([1, 2.5])])]),
    .vardicts([["box": .doubles([1, 2, 3, 4]), "score": .double(0.9), "area": .uint32(12)], [:]]),
    .objectPaths(["/a", "/a/b"]), .objectPaths([]),
    .doubles([0.1, -2, 1e300]), .doubles([]),
    .strings(["a", "b'c"]), .bytes([0, 1, 255]),
    .array(elementSignature: "i", [.int32(1), .int32(-1)]),
    .array(elementSignature: "x", [.int64(1)]), .array(elementSignature: "t", [.uint64(2)]),
    .array(elementSignature: "n", [.int16(3)]), .array(elementSignature: "q", [.uint16(4)]),
    .array(elementSignature: "u", [.uint32(5)]), .array(elementSignature: "b", [.boolean(true), .boolean(false)]),
    .array(elementSignature: "(sd)", [.structure([.string("a"), .double(1)])]),
    .array(elementSignature: "aai", [.array(elementSignature: "ai", [.array(elementSignature: "i", [.int32(9)])])]),
    .doubleDict(["dice": 0.5]),
    .dictionary(keySignature: "u", valueSignature: "as", [(.uint32(1), .strings(["x"])), (.uint32(2), .strings([]))]),
    .dictionary(keySignature: "o", valueSignature: "a{sa{sv}}", [(.objectPath("/x"), .dictionary(
        keySignature: "s", valueSignature: "a{sv}", [(.string("org.x.I"), .vardict(["p": .boolean(true)]))]))]),
    .structure([.int32(1), .string("two"), .structure([.double(3), .variant(.bytes([4]))])]),
    .variant(.variant(.string("twice wrapped"))), .variant(.structure([.uint16(1)])),
]

@Suite("Values and messages")
struct ValueTests {
    @Test func signaturesOfNestedValues() {
        #expect(DBusValue.vardict([:]).signature == "a{sv}")
        #expect(DBusValue.vardicts([]).signature == "aa{sv}")
        #expect(DBusValue.structure([.int32(1), .doubles([])]).signature == "(iad)")
        #expect(DBusValue.signature(of: [.unixFD(FileDescriptor(taking: -1)), .vardict([:])]) == "ha{sv}")
        #expect(DBusSignature.split("sa{sv}(ii)aah") == ["s", "a{sv}", "(ii)", "aah"])
        #expect(DBusSignature.split("a{vs}") == nil)
        #expect(DBusSignature.split("(") == nil)
    }

    @Test func invalidValuesAreRejectedBeforeTouchingAMessage() throws {
        let m = try Message.methodCall(destination: nil, path: "/", interface: "org.x.I", member: "M")
        let bad: [DBusValue] = [
            .array(elementSignature: "i", [.int32(1), .string("no")]),
            .dictionary(keySignature: "as", valueSignature: "s", []),
            .string("nul\0inside"),
            .objectPath("not/a/path"),
            .signature("a{"),
            .structure([]),
            .array(elementSignature: "{sv}", []),
        ]
        for v in bad {
            #expect(throws: BusError.self) { try m.append(v) }
        }
        #expect(m.signature == "")
        #expect(throws: BusError.self) { try Message.methodCall(destination: nil, path: "//", interface: nil, member: "M") }
        #expect(throws: BusError.self) { try Message.methodCall(destination: nil, path: "/", interface: "nodots", member: "M") }
    }

    @Test func everyTypeSurvivesMarshalling() throws {
        let m = try Message.methodCall(destination: "org.x.Dest", path: "/p", interface: "org.x.I", member: "M")
        try m.append(everyValue)
        #expect(m.signature == DBusValue.signature(of: everyValue))
        let back = try Message(marshalled: try m.marshal())
        #expect(back.member == "M" && back.path == "/p" && back.interface == "org.x.I")
        let values = try back.arguments(expecting: DBusValue.signature(of: everyValue))
        #expect(values == everyValue)
    }

    @Test func readingChecksTheSignature() throws {
        let m = try Message.methodCall(destination: nil, path: "/", interface: nil, member: "M")
        try m.append([.string("a"), .uint32(1)])
        let e = #expect(throws: BusError.self) { try m.arguments(expecting: "h") }
        #expect(e?.name == "org.freedesktop.DBus.Error.InvalidArgs")
        #expect(e?.message.contains("'h'") == true && e?.message.contains("'su'") == true)
    }

    @Test func accessorsThrowNamedErrors() throws {
        let e = #expect(throws: BusError.self) { try DBusValue.int32(1).asString() }
        #expect(e?.name == BusError.Name.invalidArgs)
        #expect(e?.message.contains("'s'") == true && e?.message.contains("'i'") == true)
        #expect(throws: BusError.self) { try DBusValue.strings(["a"]).asDoubles() }
        #expect(throws: BusError.self) { try DBusValue.doubleDict([:]).asVardict() }
        let options = try DBusValue.vardict(["count": .string("three")]).asVardict()
        let oe = #expect(throws: BusError.self) { try options.option("count") { try $0.asUInt32() } }
        #expect(oe?.message.hasPrefix("Option 'count'") == true)
        #expect(try options.option("absent") { try $0.asUInt32() } == nil)
        #expect(throws: BusError.self) { try options.rejectUnknownOptions(["name"]) }
    }

    @Test func malformedMessagesNeverTrap() throws {
        let m = try Message.methodCall(destination: "org.x.D", path: "/p", interface: "org.x.I", member: "M")
        try m.append(everyValue)
        let good = try m.marshal()
        #expect(throws: BusError.self) { try Message(marshalled: []) }
        #expect(throws: BusError.self) { try Message(marshalled: [UInt8](repeating: 0xff, count: 64)) }
        #expect(throws: BusError.self) { try Message(marshalled: Array(good.prefix(good.count / 2))) }
        // Flip bytes all over the message: each result either fails to parse or reads cleanly.
        var generator = SplitMix(seed: 42)
        var parsed = 0
        for _ in 0..<2000 {
            var bytes = good
            for _ in 0..<3 {
                let i = Int(generator.next() % UInt64(bytes.count))
                bytes[i] = UInt8(truncatingIfNeeded: generator.next())
            }
            if let mm = try? Message(marshalled: bytes) {
                parsed += 1
                _ = try? mm.arguments()
                _ = mm.signature
            }
        }
        #expect(parsed > 0)
        // A message announcing a file descriptor that is not there: reading fails cleanly.
        let withFD = try Message.methodCall(destination: nil, path: "/", interface: nil, member: "M")
        let fd = try FileDescriptor.sealedMemfd(name: "x", contents: [1])
        try withFD.append([.unixFD(fd), .string("after")])
        if let back = try? Message(marshalled: try withFD.marshal()) {
            #expect(throws: BusError.self) { try back.arguments() }
        }
    }

    @Test func oversizedArraysAreRefused() throws {
        let m = try Message.methodCall(destination: nil, path: "/", interface: nil, member: "M")
        let big = DBusValue.doubles([Double](repeating: 0, count: 8_388_609))
        let e = #expect(throws: BusError.self) { try m.append(big) }
        #expect(e?.message.contains("64 MiB") == true)
        #expect(throws: BusError.self) { try Message.signal(path: "/org/freedesktop/DBus/Local", interface: "org.x.I", member: "S") }
    }

    @Test func namesOfErrorsSurviveAnErrorReply() throws {
        let call = try Message.methodCall(destination: nil, path: "/", interface: nil, member: "M")
        // A call that was never sent has no serial: no reply can be built (libdbus would abort).
        #expect(throws: BusError.self) { try Message.errorReply(replyingTo: call, .failed("x")) }
        let received = try Message(marshalled: try call.marshal())
        let r = try Message.errorReply(replyingTo: received, BusError(name: "org.lesionaffinity.Affinity1.Error.InvalidImage", message: "Not a PNG."))
        #expect(r.error == BusError(name: "org.lesionaffinity.Affinity1.Error.InvalidImage", message: "Not a PNG."))
        let bad = try Message.errorReply(replyingTo: received, BusError(name: "not valid", message: "m"))
        #expect(bad.error?.name == BusError.Name.failed)
        #expect(bad.error?.message.contains("not valid") == true)
        // Appending to a marshalled (locked) message is refused rather than aborting in libdbus.
        #expect(throws: BusError.self) { try call.append(.int32(1)) }
    }

    @Test func introspectionXMLIsComparedWithTheHandlers() {
        var good = BusInterface(TestService.interface, introspectionXML: TestService.xml)
        good.method("Add", in: "ii", out: "i") { _ in [.int32(0)] }
        good.property("Counter", "u", get: { .uint32(0) }, set: { _ in })
        #expect(good.introspectionMismatches() == [])

        var drifted = good
        drifted.method("Add", in: "iu", out: "i") { _ in [.int32(0)] }
        drifted.property("Counter", "u", get: { .uint32(0) })
        drifted.method("Extra", in: "", out: "") { _ in [] }
        let problems = drifted.introspectionMismatches()
        #expect(problems.count == 3, "\(problems)")
        #expect(problems.contains { $0.contains("'iu'") && $0.contains("'ii'") })
        #expect(problems.contains { $0.contains("Counter") && $0.contains("readwrite") })
        #expect(problems.contains { $0.contains("Extra") })

        let renamed = BusInterface("org.lesionaffinity.Other1", introspectionXML: TestService.xml)
        #expect(renamed.introspectionMismatches().contains { $0.contains("no interface named org.lesionaffinity.Other1") })
        #expect(BusInterface("org.x.Generated").introspectionMismatches().isEmpty)
    }

    @Test func connectingToAMissingBusThrows() {
        #expect(throws: BusError.self) { try BusConnection(address: "unix:path=/nonexistent/bus-socket") }
        #expect(throws: BusError.self) { try BusConnection(address: "not an address") }
        // The system bus may or may not exist here: either way no crash, and a named error if absent.
        do {
            let system = try BusConnection(.system)
            #expect(system.uniqueName != nil)
            system.close()
        } catch let e as BusError {
            #expect(!e.name.isEmpty)
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test func sealedMemfdAndPipe() throws {
        let fd = try FileDescriptor.sealedMemfd(name: "t", contents: Array("lesion".utf8))
        #expect(fd.isSealed)
        #expect(try fd.readAll() == Array("lesion".utf8))
        #expect(throws: BusError.self) { try fd.write([1]) }
        let (r, w) = try FileDescriptor.pipe()
        try w.write([1, 2, 3])
        w.close()
        #expect(try r.readAll() == [1, 2, 3])
        #expect(!w.isOpen)
    }
}

/// A tiny deterministic generator (SplitMix64) for the fuzz loop.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
