// affinityd: the LesionAffinity D-Bus daemon (DESIGN.md §3, §5).
import ArgumentParser
import Bus
import Foundation

@main
struct Affinityd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "affinityd",
        abstract: "Serves the One Shot Affinity Model on D-Bus as org.lesionaffinity.Affinity1.",
        discussion: """
            Settings come from the configuration file (default /etc/affinity/affinityd.conf when it exists),
            then from the options. SIGHUP reloads the file's limits, log level and checkpoint defaults;
            SIGTERM stops jobs (training jobs write a checkpoint and resume at the next start, unless
            auto_resume = no) and exits.
            """)

    @Option(name: .long, help: "system, session, or a D-Bus address (unix:path=…).")
    var bus: String?

    @Option(name: .long, help: "The configuration file.")
    var config: String?

    @Option(name: .customLong("state-dir"), help: "The state directory (models/, runs/, datasets/).")
    var stateDir: String?

    @Option(name: .long, help: "polkit or none (default: polkit on the system bus, none otherwise).")
    var authorization: String?

    @Option(name: .customLong("plugin-dir"),
            help: "A development plugin folder (repeatable; adds to plugin_dirs; the system folder is then not used).")
    var pluginDirectories: [String] = []

    @Flag(name: .customLong("no-bundled-model"),
          help: "Do not import the bundled demo model when no default model is installed (bundled_model = no).")
    var noBundledModel = false

    @Flag(name: .customLong("no-auto-resume"),
          help: "Do not resume at start the training jobs the last run left unfinished; they are failed, for Job.Resume (auto_resume = no).")
    var noAutoResume = false

    func run() throws {
        // Handle SIGTERM, SIGINT and SIGHUP on one thread with sigwait: block them before any
        // other thread starts (threads inherit the mask), whatever mask our parent gave us.
        var handled = sigset_t()
        sigemptyset(&handled)
        for s in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&handled, s) }
        pthread_sigmask(SIG_BLOCK, &handled, nil)
        signal(SIGPIPE, SIG_IGN)

        var settings = DaemonConfig()
        let defaultFile = "/etc/affinity/affinityd.conf"
        let file = config ?? (FileManager.default.fileExists(atPath: defaultFile) ? defaultFile : nil)
        do {
            if let file { try settings.apply(file: file) }
            if let bus { try settings.set("bus", bus) }
            if let stateDir { try settings.set("state_dir", stateDir) }
            if let authorization { try settings.set("authorization", authorization) }
            settings.pluginDirectories += pluginDirectories
            if noBundledModel { settings.bundledModel = false }
            if noAutoResume { settings.autoResume = false }
        } catch {
            Log.error("\(error)")
            throw ExitCode(78)  // EX_CONFIG
        }
        Log.maxPriority = DaemonConfig.priorities[settings.logLevel] ?? 6

        let connection: BusConnection
        do {
            switch settings.bus {
            case "system": connection = try BusConnection(.system)
            case "session": connection = try BusConnection(.session)
            default: connection = try BusConnection(address: settings.bus)
            }
        } catch {
            Log.error("Cannot connect to the \(settings.bus) bus: \(error)")
            throw ExitCode(69)  // EX_UNAVAILABLE
        }
        let daemon: Daemon
        do {
            daemon = try Daemon(config: settings, configFile: file, bus: connection)
            try daemon.start()
        } catch {
            Log.error("Cannot start: \(error)")
            throw ExitCode(1)
        }
        while true {
            var sig: Int32 = 0
            guard sigwait(&handled, &sig) == 0 else { continue }
            if sig == SIGHUP {
                Log.info("SIGHUP: reloading the configuration.")
                daemon.reload()
            } else {
                Log.info("Signal \(sig): stopping.")
                daemon.stop()
                return
            }
        }
    }
}
