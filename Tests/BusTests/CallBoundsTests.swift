// An interface's error mapper and argument bound (issue 16): every error a method answers — its
// handler's, a wrong signature, arguments that are too many, a reply never sent — goes through the
// interface's `errorMapper` (affinityd's API names), and a call holding more values than
// `maxArgumentValues` is refused while it is read, before its values are built.
import Bus
import Foundation
import TestSupport
import Testing

@Suite("Call bounds and error mapping")
struct CallBoundsTests {
    static let name = "org.lesionaffinity.BoundsTest"
    static let path = "/org/lesionaffinity/BoundsTest"
    static let interface = "org.lesionaffinity.BoundsTest1"
    static let mapped = "org.lesionaffinity.BoundsTest1.Error."

    static func service(on bus: PrivateBus) throws -> BusConnection {
        var i = BusInterface(interface)
        i.errorMapper = { error in
            let e = BusError(error)
            return BusError(name: mapped + (e.name == BusError.Name.invalidArgs ? "InvalidArgument" : "Failed"), message: e.message)
        }
        i.maxArgumentValues = 100
        i.method("Count", in: "av", out: "u") { call in [.uint32(UInt32(try call.argument(0).asArray().count))] }
        i.method("Throw", in: "", out: "") { _ in throw CocoaError(.fileNoSuchFile) }
        i.deferredMethod("Forget", in: "", out: "") { _, _ in }
        i.property("Broken", "s") { throw BusError.failed("The getter failed.") }
        let c = try bus.connect()
        try c.export(path: path, interfaces: [i])
        try c.requestName(name)
        return c
    }

    @Test func everyErrorGoesThroughTheMapper() throws {
        let bus = try PrivateBus()
        let service = try Self.service(on: bus)
        let client = try bus.connect()
        defer { client.close(); service.close() }
        func call(_ method: String, _ args: [DBusValue] = []) -> BusError? {
            do { _ = try client.call(destination: Self.name, path: Self.path, interface: Self.interface, method: method, args); return nil } catch {
                return error as? BusError
            }
        }
        #expect(call("Count", [.string("x")])?.name == Self.mapped + "InvalidArgument")          // wrong signature
        #expect(call("Throw")?.name == Self.mapped + "Failed")                                      // a Swift error
        #expect(call("Forget")?.name == Self.mapped + "Failed")                                     // never answered
        let values = (0..<99).map { DBusValue.variant(.byte(UInt8($0 & 0x7F))) }
        #expect(call("Count", [.array(elementSignature: "v", Array(values.prefix(40)))]) == nil)
        // 1 array + 99 variants + 99 bytes: past the bound of 100.
        let big = call("Count", [.array(elementSignature: "v", values)])
        #expect(big?.name == Self.mapped + "InvalidArgument" && big?.message.contains("more values") == true, "\(String(describing: big))")
        let property = #expect(throws: BusError.self) {
            try client.getProperty(destination: Self.name, path: Self.path, interface: Self.interface, name: "Broken")
        }
        #expect(property?.name == Self.mapped + "Failed")
        // Still serving.
        #expect(try client.call(destination: Self.name, path: Self.path, interface: Self.interface, method: "Count",
                                [.array(elementSignature: "v", [])]) == [.uint32(0)])
    }

    @Test func aMessageTooLargeForTheBoundIsRefusedWhileRead() throws {
        let m = try Message.methodCall(destination: nil, path: "/", interface: nil, member: "M")
        try m.append([.bytes([UInt8](repeating: 1, count: 1000)), .vardict(["k": .doubles([1, 2, 3])])])
        let wire = try Message(marshalled: try m.marshal())
        #expect(try wire.arguments(maxValues: 1008).count == 2)  // 1 + 1000, then 1 + (1 + 1 + 1 + 3)
        let e = #expect(throws: BusError.self) { try wire.arguments(maxValues: 1007) }
        #expect(e?.name == BusError.Name.invalidArgs)
    }
}
