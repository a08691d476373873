// affinityctl: the command-line client of affinityd (DESIGN.md §6). It speaks D-Bus only.
import ArgumentParser
import Bus
import Foundation

/// The client's own version.
let clientVersion = "0.1.0"

@main
struct Affinityctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "affinityctl",
        abstract: "Talks to affinityd, the LesionAffinity daemon, over D-Bus.",
        discussion: """
            affinityctl sends chest-CT slices to affinityd for lesion segmentation and COVID-19 / common \
            pneumonia / normal classification, starts and watches training jobs, and manages the daemon's \
            models. Images travel as file descriptors; the daemon never opens your files by name.

            The bus is the one named by --bus, else AFFINITY_BUS_ADDRESS, else the system bus. With --local, \
            when no daemon is reachable there, affinityctl starts a private dbus-daemon and affinityd for \
            this one command (state in $XDG_STATE_HOME/affinity, or ~/.local/state/affinity) and stops \
            both afterwards.

            Every command takes --json: one JSON object on stdout, or JSON lines (one object per line) for \
            `analyse` (one per file) and `job watch` (one per update).

            Training jobs survive a restart of the daemon. A job writes a checkpoint at each epoch's end, \
            every --checkpoint-interval seconds and every --checkpoint-iterations iterations (defaults: the \
            daemon's checkpoint_interval, 15 minutes, and checkpoint_iterations), when cancelled, and when \
            the daemon stops: a kill loses at most one interval of work. When affinityd starts again (systemctl \
            restart, an upgrade, a reboot, a crash), every training job it left queued or running resumes \
            from its last checkpoint under the same number and ends with the model it would have made \
            uninterrupted; `jobs` counts the resumes and `job watch` waits for the daemon to come back and \
            says "resumed from iteration K". With auto_resume = no in affinityd.conf (and with --local) such \
            a job is failed instead, and `job resume N` continues it, as it does a cancelled job.

            Exit codes: 0 ok; 1 failed (bad image or data set, job failed, model does not load); \
            3 cancelled; 4 not found (file, model or job); 64 usage; 69 daemon or bus unavailable; \
            77 not authorized; 130 interrupted while waiting on a job (the job goes on).
            """,
        version: clientVersion,
        subcommands: [
            Analyse.self, AnalyseScan.self, Train.self, Finetune.self, Jobs.self, JobCommand.self, Models.self, Plugins.self,
            Status.self, Version.self,
        ])

    /// Parses with the global options (--bus, --json, --local) accepted before the subcommand too:
    /// `affinityctl --bus X status` is read as `affinityctl status --bus X`.
    static func main() {
        let args = hoistingGlobalOptions(Array(CommandLine.arguments.dropFirst()))
        do {
            var command = try parseAsRoot(args)
            try command.run()
        } catch {
            exit(withError: error)
        }
    }

    /// Moves the global options that come before the subcommand to just after it.
    static func hoistingGlobalOptions(_ args: [String]) -> [String] {
        var globals: [String] = []
        var i = 0
        while i < args.count {
            let a = args[i]
            if a == "--json" || a == "--local" || a.hasPrefix("--bus=") {
                globals.append(a)
                i += 1
            } else if a == "--bus", i + 1 < args.count {
                globals += [a, args[i + 1]]
                i += 2
            } else {
                break
            }
        }
        guard !globals.isEmpty, i < args.count else { return args }
        var path = [args[i]]
        var j = i + 1
        if let group = configuration.subcommands.first(where: { $0._commandName == args[i] }),
           j < args.count, group.configuration.subcommands.contains(where: { $0._commandName == args[j] }) {
            path.append(args[j])
            j += 1
        }
        return path + globals + Array(args[j...])
    }
}

/// Options every command takes.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("system, session, or a D-Bus address (default: AFFINITY_BUS_ADDRESS, else system).",
                                            valueName: "bus"))
    var bus: String?

    @Flag(name: .long, help: "Print JSON instead of text: one object, or one per line for analyse (per file) and job watch.")
    var json = false

    @Flag(name: .long, help: "If no daemon is reachable, run a private dbus-daemon and affinityd for this command.")
    var local = false
}

/// Runs a command body against the daemon and turns its errors into messages and exit codes.
///
/// The body returns its exit code. Errors are printed on stderr (and, with `--json`, as
/// `{"error": …, "message": …, "exit_code": …}` on stdout) and end the process with their code.
func runCommand(_ global: GlobalOptions, _ body: (Client) throws -> Int32) throws {
    var local: LocalDaemon?
    var client: Client?
    let code: Int32
    // A signal while a private daemon starts or runs stops it before the exit.
    let pending = PendingLocal()
    Interrupt.shared.install { pending.stop() }
    do {
        let choice = BusChoice.resolve(global.bus)
        if global.local {
            let probe = try? choice.connect()
            let probeClient = probe.map { Client(connection: $0, bus: choice) }
            if let probeClient, probeClient.isServed() {
                client = probeClient
            } else {
                probeClient?.close()
                let l = try LocalDaemon.start(quiet: global.json, started: { pending.set($0) })
                local = l
                client = Client(connection: try BusChoice.address(l.address).connect(), bus: .address(l.address))
            }
        } else {
            client = Client(connection: try choice.connect(), bus: choice)
        }
        code = try body(client!)
    } catch {
        let e = CtlError.wrap(error)
        report(e, json: global.json)
        client?.close()
        local?.stop()
        throw ExitCode(e.code)
    }
    client?.close()
    local?.stop()
    if code != 0 { throw ExitCode(code) }
}

/// The private daemon of `--local`, as soon as its processes exist (for the signal handler).
// @unchecked Sendable: the one reference is set and read under `lock`.
final class PendingLocal: @unchecked Sendable {
    private let lock = NSLock()
    private var local: LocalDaemon?
    func set(_ l: LocalDaemon) { lock.withLock { local = l } }
    func stop() { lock.withLock { local }?.stop() }
}

/// Prints an error for people on stderr and, with `--json`, as an object on stdout.
func report(_ e: CtlError, json: Bool) {
    if json {
        var o: [(String, JSON)] = [("error", e.name.map(JSON.string) ?? .null), ("message", .string(e.message)),
                                   ("exit_code", .int(Int64(e.code)))]
        if e.name == nil { o[0].1 = .string(localErrorName(e.code)) }
        printLine(JSON.object(o).text)
    }
    FileHandle.standardError.write(Data(("affinityctl: " + e.message + "\n").utf8))
}

/// A name for errors found on this side (no D-Bus error name).
func localErrorName(_ code: Int32) -> String {
    switch code {
    case Exit.notFound: return "NotFound"
    case Exit.usage: return "Usage"
    case Exit.unavailable: return "Unavailable"
    case Exit.notAuthorized: return "NotAuthorized"
    case Exit.cancelled: return "Cancelled"
    default: return "Failed"
    }
}

/// Writes a line to stdout and flushes (so pipes and terminals see it at once).
func printLine(_ s: String) {
    FileHandle.standardOutput.write(Data((s + "\n").utf8))
}

/// Writes text to stdout without a newline.
func printRaw(_ s: String) {
    FileHandle.standardOutput.write(Data(s.utf8))
}

/// Whether stdout is a terminal.
var stdoutIsTerminal: Bool { isatty(1) == 1 }
