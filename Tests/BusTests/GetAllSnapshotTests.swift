// GetAll reads an interface's properties from one moment when the interface says how
// (`BusInterface.getAll`): a job's State and Result must never come from two different moments
// (the daemon's scan-cancel test once saw State "cancelled" beside a running job's Result).
import Bus
import Foundation
import TestSupport
import Testing

@Suite("GetAll from one snapshot")
struct GetAllSnapshotTests {
    static let name = "org.lesionaffinity.SnapshotTest"
    static let path = "/org/lesionaffinity/SnapshotTest"
    static let iface = "org.lesionaffinity.SnapshotTest1"

    /// A state that moves on every time anything reads it, so that two separate reads always differ.
    final class Moving: @unchecked Sendable {
        private let lock = NSLock()
        private var tick = 0
        func next() -> Int { lock.withLock { tick += 1; return tick } }
    }

    static func interface(_ m: Moving, together: Bool, wrongType: Bool = false) -> BusInterface {
        var i = BusInterface(iface)
        i.property("Stage", "u") { .uint32(UInt32(m.next())) }
        i.property("Outcome", "u") { .uint32(UInt32(m.next())) }
        i.property("Constant", "s") { .string("by its own getter") }
        if together {
            i.getAll = {
                let t = UInt32(m.next())
                // Constant left out: its own getter answers for it.
                return wrongType ? ["Stage": .string("x"), "Outcome": .uint32(t)] : ["Stage": .uint32(t), "Outcome": .uint32(t)]
            }
        }
        return i
    }

    func serve(_ i: BusInterface, _ body: (BusConnection) throws -> Void) throws {
        let bus = try PrivateBus()
        defer { bus.stop() }
        let service = try bus.connect()
        defer { service.close() }
        try service.export(path: Self.path, interfaces: [i])
        try service.requestName(Self.name)
        let client = try bus.connect()
        defer { client.close() }
        try body(client)
    }

    @Test func getAllUsesTheInterfacesSnapshot() throws {
        try serve(Self.interface(Moving(), together: true)) { client in
            for _ in 0..<5 {
                let all = try client.getAllProperties(destination: Self.name, path: Self.path, interface: Self.iface)
                #expect(all.count == 3)
                #expect(all["Stage"] != nil && all["Stage"] == all["Outcome"], "\(all)")
                #expect(all["Constant"] == .string("by its own getter"))
            }
            // Get still reads one property by its own getter.
            let a = try client.getProperty(destination: Self.name, path: Self.path, interface: Self.iface, name: "Stage")
            let b = try client.getProperty(destination: Self.name, path: Self.path, interface: Self.iface, name: "Stage")
            #expect(a != b)
        }
    }

    @Test func withoutASnapshotEachGetterReadsItsOwnMoment() throws {
        // The contrast that makes the test above mean something: the getters alone disagree.
        try serve(Self.interface(Moving(), together: false)) { client in
            let all = try client.getAllProperties(destination: Self.name, path: Self.path, interface: Self.iface)
            #expect(all.count == 3)
            #expect(all["Stage"] != all["Outcome"], "\(all)")
        }
    }

    @Test func aSnapshotValueOfTheWrongTypeIsAnError() throws {
        try serve(Self.interface(Moving(), together: true, wrongType: true)) { client in
            let e = #expect(throws: BusError.self) {
                try client.getAllProperties(destination: Self.name, path: Self.path, interface: Self.iface)
            }
            #expect(e?.name == BusError.Name.failed, "\(String(describing: e))")
            #expect(e?.message.contains("Stage") == true)
        }
    }
}
