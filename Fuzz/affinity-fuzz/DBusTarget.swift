// dbus: a serialized D-Bus message, as the bus delivers a caller's method call, through libdbus's
// demarshaller (Message(marshalled:)), the values (Message.arguments), and the argument and option
// checks every API method makes before it acts: the method's signature, each argument's type, the
// a{sv} options refused when unknown and converted to the type AffinityAPI declares, model and job
// object paths. Oracle: arguments that were read re-marshal and read back equal.
import AffinityAPI
import Bus
import Foundation

/// An API method: its input signature and the options its trailing a{sv} may hold (key → type).
struct FuzzMethod {
    let name: String
    let signature: String
    let options: [String: String]
}

func fuzzOptionTypes<O: APIOption>(_: O.Type) -> [String: String] {
    Dictionary(uniqueKeysWithValues: O.allCases.map { ($0.key, $0.signature) })
}

let fuzzMethods: [FuzzMethod] = [
    FuzzMethod(name: "Analyse", signature: "ha{sv}", options: fuzzOptionTypes(AnalyseOption.self)),
    FuzzMethod(name: "AnalyseBatch", signature: "aha{sv}", options: fuzzOptionTypes(AnalyseOption.self)),
    FuzzMethod(name: "AnalyseScan", signature: "aha{sv}", options: fuzzOptionTypes(ScanOption.self)),
    FuzzMethod(name: "Train", signature: "a{sv}", options: fuzzOptionTypes(TrainOption.self)),
    FuzzMethod(name: "Finetune", signature: "oa{sv}", options: fuzzOptionTypes(TrainOption.self)),
    FuzzMethod(name: "ImportModel", signature: "ha{sv}", options: fuzzOptionTypes(ImportOption.self)),
    FuzzMethod(name: "ListModels", signature: "a{sv}", options: [:]),
    FuzzMethod(name: "SetDefaultModel", signature: "oa{sv}", options: [:]),
    FuzzMethod(name: "ListPlugins", signature: "a{sv}", options: [:]),
    FuzzMethod(name: "ExportAffinityMatrix", signature: "hha{sv}", options: [:]),
    FuzzMethod(name: "Cancel", signature: "a{sv}", options: [:]),
    FuzzMethod(name: "Resume", signature: "a{sv}", options: [:]),
]

/// Converts an option value as the daemon does for a key of type `signature`.
func fuzzConvert(_ value: DBusValue, _ signature: String) throws {
    switch signature {
    case "s": _ = try value.asString()
    case "o": _ = try value.asObjectPath()
    case "b": _ = try value.asBool()
    case "u": _ = try value.asUInt32()
    case "t": _ = try value.asUInt64()
    case "d": _ = try value.asDouble()
    case "as": _ = try value.asStrings()
    default: fuzzCheck(false, "option type \(signature) has no conversion in the fuzz target")
    }
}

func fuzzDBus(_ bytes: UnsafeRawBufferPointer) {
    let message: Message
    do { message = try Message(marshalled: Array(bytes)) } catch { return }
    _ = (message.kind, message.path, message.interface, message.member, message.sender, message.destination,
         message.errorName, message.serial, message.replySerial, message.noReplyExpected, message.error)
    let arguments: [DBusValue]
    do { arguments = try message.arguments() } catch { return }
    fuzzCheck(DBusValue.signature(of: arguments) == message.signature, "read \(DBusValue.signature(of: arguments)) from a '\(message.signature)' body")
    for a in arguments { _ = a.description; try? a.validate() }
    // Every method whose signature the body has: the checks it makes before acting.
    for method in fuzzMethods where method.signature == message.signature {
        do {
            let options = try arguments[arguments.count - 1].asVardict()
            try options.rejectUnknownOptions(Set(method.options.keys))
            for (key, type) in method.options { _ = try options.option(key) { try fuzzConvert($0, type) } }
            for a in arguments.dropLast() {
                switch a.signature {
                case "o":
                    let path = try a.asObjectPath()
                    _ = path.hasPrefix(API.modelsPrefix) ? API.id(path) : API.id(path)
                case "ah": _ = try a.asFileDescriptors()
                case "h": _ = try a.asFileDescriptor()
                default: break
                }
            }
        } catch let e as BusError {
            fuzzCheck(!e.message.isEmpty && e.name == BusError.Name.invalidArgs, "an argument check failed with \(e.name): \(e.message)")
        } catch {
            fuzzCheck(false, "an argument check threw \(error)")
        }
    }
    // Round trip: the values are sent back as they were read.
    guard !arguments.isEmpty, (try? arguments.forEach { try $0.validate() }) != nil,
          let call = try? Message.methodCall(destination: nil, path: "/f", interface: nil, member: "F") else { return }
    do {
        try call.append(arguments)
        let again = try Message(marshalled: try call.marshal()).arguments()
        fuzzCheck(again == arguments, "values changed in a round trip: \(arguments) → \(again)")
    } catch {
        fuzzCheck(false, "values that were read cannot be sent back: \(error)")
    }
}

/// The seed corpus (Fuzz/make-seeds): one marshalled call of every API method with every option at
/// its type, the same with an unknown option and with wrongly typed ones, and a few other messages.
func dbusSeeds(_ directory: String) throws {
    var count = 0
    func write(_ message: Message, _ name: String) throws {
        let bytes = try message.marshal()
        try Data(bytes).write(to: URL(fileURLWithPath: directory + "/" + name))
        count += 1
    }
    func sample(_ signature: String, wrong: Bool = false) throws -> DBusValue {
        switch wrong ? (signature == "s" ? "u" : "s") : signature {
        case "s": return .string("x")
        case "o": return .objectPath(API.modelsPrefix + "0123456789abcdef")
        case "b": return .boolean(true)
        case "u": return .uint32(3)
        case "t": return .uint64(42)
        case "d": return .double(0.5)
        case "as": return .strings(["a", "b"])
        case "h": return .unixFD(try FileDescriptor(duplicating: 0))
        case "ah": return .array(elementSignature: "h", [.unixFD(try FileDescriptor(duplicating: 0)), .unixFD(try FileDescriptor(duplicating: 0))])
        default: return .string(signature)
        }
    }
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    for method in fuzzMethods {
        let interface = ["Cancel", "Resume"].contains(method.name) ? API.job : method.name == "ExportAffinityMatrix" ? API.model : API.manager
        let path = interface == API.job ? API.jobPath(7) : interface == API.model ? API.modelsPrefix + "0123456789abcdef" : API.root
        var leading: [DBusValue] = []
        var rest = Substring(method.signature.dropLast(5))  // without the trailing a{sv}
        while !rest.isEmpty {
            let one = rest.hasPrefix("a") ? String(rest.prefix(2)) : String(rest.prefix(1))
            leading.append(try sample(one))
            rest = rest.dropFirst(one.count)
        }
        for variant in ["all", "unknown", "wrong", "empty"] {
            var options: [String: DBusValue] = [:]
            if variant != "empty" {
                for (key, type) in method.options.sorted(by: { $0.key < $1.key }) { options[key] = try sample(type, wrong: variant == "wrong") }
            }
            if variant == "unknown" { options["colour"] = .string("blue") }
            let m = try Message.methodCall(destination: API.busName, path: path, interface: interface, member: method.name)
            try m.append(leading + [.vardict(options)])
            try write(m, "\(method.name)-\(variant)")
        }
    }
    let get = try Message.methodCall(destination: API.busName, path: API.root, interface: "org.freedesktop.DBus.Properties", member: "Get")
    try get.append([.string(API.manager), .string("State")])
    try write(get, "Properties.Get")
    let nested = try Message.methodCall(destination: API.busName, path: API.root, interface: API.manager, member: "Train")
    try nested.append([.vardict(["data_options": .variant(.structure([.array(elementSignature: "a{sd}", [.doubleDict(["x": 1])]), .byte(1)]))])])
    try write(nested, "Train-nested-variant")
    let signal = try Message.signal(path: API.jobPath(3), interface: API.job, member: "Completed")
    try signal.append([.boolean(true), .string("done"), .vardict(["images_done": .uint32(2)])])
    try write(signal, "Job.Completed")
    FileHandle.standardError.write(Data("affinity-fuzz: \(count) dbus seeds in \(directory)\n".utf8))
}
