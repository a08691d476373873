// The interfaces affinityd serves agree with data/dbus/*.xml, checked from outside on a running
// daemon (this was a warning in the daemon's log at every start; a mismatch now fails a test):
// every property the XML declares is served with the XML's type, nothing else is, and every
// method answers a call without arguments with the XML's input signature.
import AffinityAPI
import Bus
import Foundation
import TestSupport
import Testing

@Suite("affinityd's interfaces against data/dbus", .serialized)
struct ServedInterfacesTests {
    typealias D = DaemonProcess

    @Test func servedInterfacesMatchTheirXML() throws {
        let dir = try Paths.temporaryDirectory("served")
        defer { try? FileManager.default.removeItem(at: dir) }
        let bus = try PrivateBus()
        defer { bus.stop() }
        let daemon = try DaemonProcess(bus: bus, stateDirectory: dir.appendingPathComponent("state"),
                                       environment: ["AFFINITY_BUNDLED_MODELS": Paths.repository.appendingPathComponent("models").path])
        defer { daemon.stop() }
        let client = try bus.connect()
        defer { client.close() }
        #expect(waitUntil(120) { (try? client.getProperty(destination: D.name, path: D.root, interface: D.manager, name: "State")) == .string("ready") })

        // One object of each interface: the root, the bundled model, a batch job.
        let modelPath = try client.getProperty(destination: API.busName, path: API.root, interface: API.manager, name: "DefaultModel").asObjectPath()
        let png = try Fixtures.slicePNG()
        let jobPath = try DaemonTests.call(client, "AnalyseBatch", [.array(elementSignature: "h", [try DaemonTests.memfd(png)]), .vardict([:])])[0]
            .asObjectPath()
        for (interface, path) in [(API.manager, API.root), (API.model, modelPath), (API.job, jobPath)] {
            let xml = try InterfaceXML.read(interface)
            let served = try client.getAllProperties(destination: API.busName, path: path, interface: interface)
            #expect(Set(served.keys) == Set(xml.properties.map(\.name)), "\(interface): served \(served.keys.sorted())")
            for p in xml.properties {
                #expect(served[p.name]?.signature == p.type, "\(interface).\(p.name): served as \(served[p.name]?.signature ?? "nothing"), declared \(p.type)")
            }
            for m in xml.methods {
                do {
                    _ = try client.call(destination: API.busName, path: path, interface: interface, method: m.name, [], timeout: .seconds(30))
                    Issue.record("\(interface).\(m.name) accepted a call without arguments")
                } catch let e as BusError {
                    #expect(e.name == API.errorName(.invalidArgument) && e.message.contains("signature '\(m.inSignature)'"),
                            "\(interface).\(m.name): \(e)")
                }
            }
        }
    }
}
