// AffinityAPI against data/dbus/*.xml (the source of truth): every property's name, type and
// change signalling, every method's option keys and types, every documented error name.
import AffinityAPI
import Foundation
import TestSupport
import Testing

@Suite("AffinityAPI names agree with data/dbus")
struct APINamesTests {
    static func properties<P: APIProperty>(_ type: P.Type) -> [String: (String, Bool)] {
        Dictionary(uniqueKeysWithValues: P.allCases.map { ($0.name, ($0.signature, $0.emitsChangedSignal)) })
    }

    static func check(_ interface: String, _ declared: [String: (String, Bool)]) throws {
        let xml = try InterfaceXML.read(interface)
        let fromXML = Dictionary(uniqueKeysWithValues: xml.properties.map { ($0.name, ($0.type, $0.emitsChangedSignal)) })
        #expect(Set(fromXML.keys) == Set(declared.keys), "\(interface): properties \(fromXML.keys.sorted()) in the XML, \(declared.keys.sorted()) in AffinityAPI")
        for (name, (type, emits)) in fromXML {
            guard let d = declared[name] else { continue }
            #expect(d.0 == type, "\(interface).\(name): type \(type) in the XML, \(d.0) in AffinityAPI")
            #expect(d.1 == emits, "\(interface).\(name): emits changes \(emits) in the XML, \(d.1) in AffinityAPI")
        }
    }

    @Test func interfaceNames() throws {
        for name in [API.manager, API.model, API.job] {
            let xml = try InterfaceXML.read(name)
            #expect(!xml.methods.isEmpty && !xml.properties.isEmpty, "\(name).xml read as empty")
        }
        #expect(API.manager.hasPrefix(API.busName + ".") && API.errorPrefix == API.busName + ".Error.")
        #expect(API.modelPath("abc") == API.root + "/models/abc" && API.modelPath("/x/y") == "/x/y")
        #expect(API.jobPath(7) == API.root + "/jobs/7" && API.jobPath("7") == API.jobPath(7) && API.id(API.jobPath(7)) == "7")
    }

    @Test func properties() throws {
        try Self.check(API.manager, Self.properties(ManagerProperty.self))
        try Self.check(API.model, Self.properties(ModelProperty.self))
        try Self.check(API.job, Self.properties(JobProperty.self))
    }

    static func options<O: APIOption>(_ type: O.Type) -> [String: String] {
        Dictionary(uniqueKeysWithValues: O.allCases.map { ($0.key, $0.signature) })
    }

    @Test(arguments: [("Analyse", options(AnalyseOption.self)), ("AnalyseBatch", options(AnalyseOption.self)),
                      ("Train", options(TrainOption.self)), ("Finetune", options(TrainOption.self)),
                      ("ImportModel", options(ImportOption.self)), ("AnalyseScan", options(ScanOption.self))])
    func optionKeys(_ method: String, _ declared: [String: String]) throws {
        let documented = try InterfaceXML.read(API.manager).documentedOptions(of: method)
        #expect(documented == declared, "\(method): \(documented.sorted { $0.key < $1.key }) in the XML, \(declared.sorted { $0.key < $1.key }) in AffinityAPI")
    }

    @Test func errorNames() throws {
        var documented = Set<String>()
        for name in [API.manager, API.model, API.job] { documented.formUnion(try InterfaceXML.read(name).documentedErrors) }
        let declared = Set(API.ErrorName.allCases.map(\.rawValue))
        #expect(documented.isSubset(of: declared), "documented but not in API.ErrorName: \(documented.subtracting(declared).sorted())")
        // Each declared error is documented somewhere (the Manager's header lists them all).
        let header = try InterfaceXML.read(API.manager).comments
        for e in declared { #expect(header.contains(e), "\(e) is not in the interface documentation") }
    }
}
