// models, plugins, status, version.
import ArgumentParser
import AffinityAPI
import Bus
import Foundation

/// A model's properties (org.lesionaffinity.Affinity1.Model).
struct ModelInfo {
    var path: String
    var props: [String: DBusValue]
    var isDefault: Bool

    var id: String { API.id(path) }
    var name: String { (try? props["Name"]?.asString()) ?? "" }
    var affinities: UInt32 { (try? props["Affinities"]?.asUInt32()) ?? 0 }
    var sha256: String { (try? props["Sha256"]?.asString()) ?? "" }
    var createdAt: UInt64 { (try? props["CreatedAt"]?.asUInt64()) ?? 0 }
    var trainedOn: String { (try? props["TrainedOn"]?.asString()) ?? "" }
    var head: String { (try? props["Head"]?.asString()) ?? "" }
    var plugins: [String] { (try? props["Plugins"]?.asStrings()) ?? [] }
    var metrics: [String: Double] { (try? props["Metrics"]?.asDoubleDict()) ?? [:] }

    var json: JSON {
        .object([
            ("id", .string(id)), ("path", .string(path)), ("name", .string(name)), ("default", .bool(isDefault)),
            ("affinities", .uint(UInt64(affinities))), ("sha256", .string(sha256)), ("created_at_us", .uint(createdAt)),
            ("trained_on", .string(trainedOn)), ("head", .string(head)),
            ("plugins", .array(plugins.map { .string($0) })),
            ("metrics", .object(metrics.keys.sorted().map { ($0, .double(metrics[$0]!)) })),
        ])
    }
}

/// The default model's path, or nil when there is none ("/").
func defaultModelPath(_ client: Client) throws -> String? {
    let p = try client.properties(API.root, API.manager)
    guard let d = try? p["DefaultModel"]?.asObjectPath(), d != "/" else { return nil }
    return d
}

func readModel(_ client: Client, _ path: String, defaultPath: String?) throws -> ModelInfo {
    let props = try client.properties(path, API.model, context: "There is no model \(API.id(path)).")
    return ModelInfo(path: path, props: props, isDefault: path == defaultPath)
}

struct Models: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Lists, shows, imports and selects models.",
        subcommands: [List.self, Show.self, Import.self, SetDefault.self], defaultSubcommand: List.self)

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Lists the daemon's models (* marks the default).")
        @OptionGroup var global: GlobalOptions

        func run() throws {
            try runCommand(global) { client in
                let paths = try client.call(API.root, API.manager, "ListModels", [.vardict([:])], expecting: "ao")[0].asObjectPaths()
                let def = try defaultModelPath(client)
                let models = try paths.map { try readModel(client, $0, defaultPath: def) }
                if global.json {
                    printLine(JSON.object([("default", def.map { .string(API.id($0)) } ?? .null),
                                           ("models", .array(models.map(\.json)))]).text)
                } else if models.isEmpty {
                    printLine("No models. Import one with: affinityctl models import FILE")
                } else {
                    let w = max(4, models.map(\.id.count).max() ?? 0) + 1
                    printLine("  " + pad("ID", w) + pad("NAME", 24) + pad("AFFINITIES", 11) + "CREATED")
                    for m in models {
                        printLine((m.isDefault ? "* " : "  ") + pad(m.id, w) + pad(m.name, 24) + pad(String(m.affinities), 11)
                                  + (m.createdAt > 0 ? timestamp(m.createdAt) : "-"))
                    }
                }
                return Exit.ok
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Shows one model's card.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: ArgumentHelp("The model id (or object path).", valueName: "id"))
        var model: String

        func run() throws {
            try runCommand(global) { client in
                let m = try readModel(client, API.modelPath(model), defaultPath: try defaultModelPath(client))
                if global.json {
                    printLine(m.json.text)
                } else {
                    printLine("id:          \(m.id)" + (m.isDefault ? " (default)" : ""))
                    printLine("name:        \(m.name)")
                    printLine("affinities:  \(m.affinities)")
                    printLine("head:        \(m.head)" + (m.plugins.isEmpty ? "" : " (plugins: \(m.plugins.joined(separator: ", ")))"))
                    printLine("sha256:      \(m.sha256)")
                    printLine("created:     \(m.createdAt > 0 ? timestamp(m.createdAt) : "-")")
                    printLine("trained on:  \(m.trainedOn.isEmpty ? "-" : m.trainedOn)")
                    for k in m.metrics.keys.sorted() { printLine("  \(k): \(m.metrics[k]!)") }
                }
                return Exit.ok
            }
        }
    }

    struct Import: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Imports a safetensors weights file as a new model (privileged).",
            discussion: "The file is passed to the daemon as a file descriptor; our layout and the original state-dict layout are accepted.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: ArgumentHelp("The weights (.safetensors).", valueName: "file"))
        var file: String
        @Option(name: .long, help: "The model's name.")
        var name: String?
        @Option(name: .long, help: "C', when the file does not say.")
        var affinities: UInt32?
        @Flag(name: .customLong("set-default"), help: "Make it the default model too.")
        var setDefault = false

        func run() throws {
            try runCommand(global) { client in
                let fd = try openForReading(file)
                var o: [String: DBusValue] = [:]
                if let name { o[ImportOption.name.key] = .string(name) }
                if let affinities { o[ImportOption.affinities.key] = .uint32(affinities) }
                let path = try client.call(API.root, API.manager, "ImportModel", [.unixFD(fd), .vardict(o)], expecting: "o",
                                           timeout: .seconds(600))[0].asObjectPath()
                fd.close()
                if setDefault {
                    _ = try client.call(API.root, API.manager, "SetDefaultModel", [.objectPath(path), .vardict([:])], expecting: "",
                                        timeout: .seconds(300))
                }
                let m = try readModel(client, path, defaultPath: try defaultModelPath(client))
                if global.json { printLine(m.json.text) } else {
                    printLine("Imported model \(m.id) (\(m.name), \(m.affinities) affinities)" + (m.isDefault ? ", now the default." : "."))
                }
                return Exit.ok
            }
        }
    }

    struct SetDefault: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-default", abstract: "Makes a model the one analyse uses by default (privileged).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: ArgumentHelp("The model id (or object path).", valueName: "id"))
        var model: String

        func run() throws {
            try runCommand(global) { client in
                let path = API.modelPath(model)
                _ = try client.call(API.root, API.manager, "SetDefaultModel", [.objectPath(path), .vardict([:])], expecting: "",
                                    timeout: .seconds(300), context: "There is no model \(model).")
                if global.json {
                    printLine(JSON.object([("default", .string(API.id(path))), ("path", .string(path))]).text)
                } else {
                    printLine("The default model is now \(API.id(path)).")
                }
                return Exit.ok
            }
        }
    }
}

struct Plugins: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Lists the daemon's loaded plugins.")
    @OptionGroup var global: GlobalOptions

    func run() throws {
        try runCommand(global) { client in
            let list = try client.call(API.root, API.manager, "ListPlugins", [.vardict([:])], expecting: "aa{sv}")[0].asVardicts()
            if global.json {
                printLine(JSON.object([("plugins", .array(list.map(JSON.sorted)))]).text)
            } else if list.isEmpty {
                printLine("No plugins loaded.")
            } else {
                // Each entry: state "loaded" with id, version, kind, description, path; or "failed" with path and error.
                func str(_ d: [String: DBusValue], _ k: String) -> String? {
                    guard let v = d[k] else { return nil }
                    if case .string(let s) = v { return s }
                    return JSON(v).text
                }
                for p in list {
                    if str(p, "state") == "failed" {
                        printLine("failed  \(str(p, "path") ?? "?"): \(str(p, "error") ?? "unknown error")")
                        continue
                    }
                    var line = "\(str(p, "id") ?? "?") \(str(p, "version") ?? "?") (\(str(p, "kind") ?? "?"))"
                    if let d = str(p, "description"), !d.isEmpty { line += "  " + d }
                    if let path = str(p, "path") { line += "  [\(path)]" }
                    let known: Set<String> = ["state", "id", "version", "kind", "description", "path", "error"]
                    let rest = p.keys.sorted().filter { !known.contains($0) }.map { "\($0)=\(JSON(p[$0]!).text)" }
                    if !rest.isEmpty { line += "  " + rest.joined(separator: " ") }
                    printLine(line)
                }
            }
            return Exit.ok
        }
    }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Shows the daemon's state, version, default model, queue and device.")
    @OptionGroup var global: GlobalOptions

    func run() throws {
        try runCommand(global) { client in
            let p = try client.properties(API.root, API.manager)
            let def = (try? p["DefaultModel"]?.asObjectPath()).flatMap { $0 == "/" ? nil : $0 }
            let state = (try? p["State"]?.asString()) ?? "unknown"
            let version = (try? p["Version"]?.asString()) ?? ""
            let api = (try? p["ApiVersion"]?.asUInt32()) ?? 0
            let queue = (try? p["QueueLength"]?.asUInt32()) ?? 0
            let device = (try? p["Device"]?.asString()) ?? ""
            if global.json {
                printLine(JSON.object([
                    ("state", .string(state)), ("version", .string(version)), ("api_version", .uint(UInt64(api))),
                    ("default_model", def.map { .string(API.id($0)) } ?? .null), ("queue_length", .uint(UInt64(queue))),
                    ("device", .string(device)), ("bus", .string(client.bus.description)),
                ]).text)
            } else {
                printLine("state:          \(state)")
                printLine("version:        \(version) (API \(api))")
                printLine("default model:  \(def.map(API.id) ?? "none")")
                printLine("queue:          \(queue)")
                printLine("device:         \(device)")
                printLine("bus:            \(client.bus)")
            }
            return Exit.ok
        }
    }
}

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Prints the client's version and, when it answers, the daemon's.",
        discussion: "Exits 0 even when no daemon answers (its version is then null).")
    @OptionGroup var global: GlobalOptions

    func run() throws {
        try runVersion()
    }

    private func runVersion() throws {
        // Without --local, an unreachable daemon is not an error here.
        var daemon: (String, UInt32)?
        var why = ""
        let body: (Client) throws -> Int32 = { client in
            do {
                let p = try client.properties(API.root, API.manager)
                daemon = ((try? p["Version"]?.asString()) ?? "", (try? p["ApiVersion"]?.asUInt32()) ?? 0)
            } catch {
                why = CtlError.wrap(error).message
            }
            return Exit.ok
        }
        do {
            if global.local {
                try runCommand(global, body)
            } else {
                let choice = BusChoice.resolve(global.bus)
                let c = Client(connection: try choice.connect(), bus: choice)
                _ = try body(c)
                c.close()
            }
        } catch let e as CtlError {
            why = e.message
        }
        if global.json {
            printLine(JSON.object([("client", .string(clientVersion)), ("daemon", daemon.map { .string($0.0) } ?? .null),
                                   ("api_version", daemon.map { .uint(UInt64($0.1)) } ?? .null)]).text)
        } else {
            printLine("affinityctl \(clientVersion)")
            if let daemon { printLine("affinityd \(daemon.0) (API \(daemon.1))") } else { printLine("affinityd: not reachable (\(why))") }
        }
    }
}
