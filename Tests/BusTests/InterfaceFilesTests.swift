// The interface XML in data/dbus: parsed, matched against DESIGN.md §3, served and read by gdbus.
import Bus
import Foundation
import TestSupport
import Testing

/// `data/dbus` in this repository (found from this file's path).
let interfaceDirectory = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("data/dbus")

/// One interface of DESIGN.md §3: its members as `name(in)→out` for methods, `name:type` for
/// properties, `!name(sig)` for signals.
struct DesignedInterface: CustomStringConvertible, Sendable {
    var name: String
    var members: [String]
    var description: String { name }

    static let all = [
        DesignedInterface(name: "org.lesionaffinity.Affinity1.Manager", members: [
            "Analyse(ha{sv})→a{sv}", "AnalyseBatch(aha{sv})→o",
            // Issue 15: whole CT scans.
            "AnalyseScan(aha{sv})→o", "Train(a{sv})→o", "Finetune(oa{sv})→o",
            "ImportModel(ha{sv})→o", "ListModels(a{sv})→ao", "SetDefaultModel(oa{sv})→", "ListPlugins(a{sv})→aa{sv}",
            "Version:s", "ApiVersion:u", "State:s", "DefaultModel:o", "QueueLength:u", "Device:s",
        ]),
        DesignedInterface(name: "org.lesionaffinity.Affinity1.Model", members: [
            "ExportAffinityMatrix(hha{sv})→", "Name:s", "Affinities:u", "Sha256:s", "CreatedAt:t", "TrainedOn:s",
            "Metrics:a{sd}", "Head:s",
            // Beyond DESIGN.md §3: the plugins a model needs (issue #7: model cards record them).
            "Plugins:as",
        ]),
        DesignedInterface(name: "org.lesionaffinity.Affinity1.Job", members: [
            "Cancel(a{sv})→", "!Completed(bsa{sv})", "Operation:s", "State:s", "Progress:d", "Epoch:u", "TotalEpochs:u",
            "Metrics:a{sd}", "StartTime:t", "ExpectedEndTime:t", "StartedByUID:u", "Cancelable:b", "Result:a{sv}",
            // Issue 23: training jobs resume after a restart of the daemon.
            "Resume(a{sv})→", "Resumed:u",
        ]),
    ]

    /// A `BusInterface` declaring exactly these members, with placeholder handlers.
    func declared(xml: String) -> BusInterface {
        var i = BusInterface(name, introspectionXML: xml)
        for m in members {
            if m.hasPrefix("!") {
                let parts = m.dropFirst().split(separator: "(", maxSplits: 1)
                i.signal(String(parts[0]), String(parts[1].dropLast()))
            } else if let open = m.firstIndex(of: "(") {
                let close = m.firstIndex(of: ")") ?? m.endIndex
                let input = String(m[m.index(after: open)..<close])
                let output = String(m[m.index(close, offsetBy: 2)...])
                i.method(String(m[..<open]), in: input, out: output) { _ in
                    throw BusError(name: "org.lesionaffinity.Affinity1.Error.Failed", message: "Not implemented in this test.")
                }
            } else {
                let parts = m.split(separator: ":")
                i.property(String(parts[0]), String(parts[1]), get: {
                    throw BusError(name: "org.lesionaffinity.Affinity1.Error.Failed", message: "Not implemented in this test.")
                })
            }
        }
        return i
    }
}

@Suite("Interface files in data/dbus")
struct InterfaceFilesTests {
    @Test(arguments: DesignedInterface.all)
    func fileMatchesTheDesign(_ design: DesignedInterface) throws {
        let url = interfaceDirectory.appendingPathComponent(design.name + ".xml")
        let xml = try String(contentsOf: url, encoding: .utf8)
        let problems = design.declared(xml: xml).introspectionMismatches()
        #expect(problems.isEmpty, "\(design.name): \(problems)")
    }

    @Test func filesAreServedVerbatimAndParsedByGDBus() throws {
        let bus = try PrivateBus()
        let service = try bus.connect()
        defer { service.close() }
        let root = "/org/lesionaffinity/Affinity1"
        try service.addObjectManager(at: root)
        var served: [(String, String)] = []
        for (design, path) in zip(DesignedInterface.all, [root, root + "/models/m1", root + "/jobs/1"]) {
            let xml = try String(contentsOf: interfaceDirectory.appendingPathComponent(design.name + ".xml"), encoding: .utf8)
            try service.export(path: path, interfaces: [design.declared(xml: xml)])
            served.append((path, design.name))
        }
        try service.requestName("org.lesionaffinity.Affinity1")
        for (path, name) in served {
            let out = try runTool("gdbus", ["introspect", "--address", bus.address, "--dest", "org.lesionaffinity.Affinity1",
                                            "--object-path", path])
            #expect(out.status == 0, "\(out.stderr)")
            #expect(out.stdout.contains("interface \(name) {"), "\(out.stdout)")
            #expect(out.stdout.contains("interface org.freedesktop.DBus.Properties {"))
        }
        let manager = try runTool("gdbus", ["introspect", "--address", bus.address, "--dest", "org.lesionaffinity.Affinity1",
                                            "--object-path", root])
        #expect(manager.stdout.contains("Analyse(in  h image,"), "\(manager.stdout)")
        #expect(manager.stdout.contains("interface org.freedesktop.DBus.ObjectManager {"))
        // A declared method answers with its named error; a wrong signature is InvalidArgs.
        let client = try bus.connect()
        defer { client.close() }
        let e = #expect(throws: BusError.self) {
            try client.call(destination: "org.lesionaffinity.Affinity1", path: root, interface: "org.lesionaffinity.Affinity1.Manager",
                            method: "ListModels", [.vardict([:])])
        }
        #expect(e?.name == "org.lesionaffinity.Affinity1.Error.Failed")
        let w = #expect(throws: BusError.self) {
            try client.call(destination: "org.lesionaffinity.Affinity1", path: root, interface: "org.lesionaffinity.Affinity1.Manager",
                            method: "ListModels")
        }
        #expect(w?.name == BusError.Name.invalidArgs)
        #expect(w?.message.contains("'a{sv}'") == true && w?.message.contains("''") == true)
    }
}
