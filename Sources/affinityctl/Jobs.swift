// Jobs: train, finetune, jobs, job watch, job cancel, job resume — and waiting on a job with a
// progress bar, across a restart of the daemon.
import ArgumentParser
import AffinityAPI
import Bus
import Foundation

/// A job's properties (org.lesionaffinity.Affinity1.Job) as read from the bus.
struct JobSnapshot: Equatable {
    var path: String
    var operation: String
    var state: String
    var progress: Double
    var epoch: UInt32
    var totalEpochs: UInt32
    var metrics: [String: Double]
    var startTime: UInt64
    var expectedEndTime: UInt64
    var startedByUID: UInt32
    var cancelable: Bool
    var result: [String: DBusValue]
    /// How many times the daemon resumed the job (after a restart, or by Resume).
    var resumed: UInt32

    init(path: String, _ p: [String: DBusValue]) {
        self.path = path
        operation = (try? p["Operation"]?.asString()) ?? ""
        state = (try? p["State"]?.asString()) ?? "unknown"
        progress = (try? p["Progress"]?.asDouble()) ?? 0
        epoch = (try? p["Epoch"]?.asUInt32()) ?? 0
        totalEpochs = (try? p["TotalEpochs"]?.asUInt32()) ?? 0
        metrics = (try? p["Metrics"]?.asDoubleDict()) ?? [:]
        startTime = (try? p["StartTime"]?.asUInt64()) ?? 0
        expectedEndTime = (try? p["ExpectedEndTime"]?.asUInt64()) ?? 0
        startedByUID = (try? p["StartedByUID"]?.asUInt32()) ?? 0
        cancelable = (try? p["Cancelable"]?.asBool()) ?? false
        result = (try? p["Result"]?.asVardict()) ?? [:]
        resumed = (try? p["Resumed"]?.asUInt32()) ?? 0
    }

    static func == (a: JobSnapshot, b: JobSnapshot) -> Bool { a.json == b.json }

    var number: String { API.id(path) }
    var isFinished: Bool { ["completed", "failed", "cancelled"].contains(state) }
    var message: String { (try? result["message"]?.asString()) ?? "" }
    /// Where the latest resume continued (Result's resumed_from_iteration), once resumed.
    var resumedFrom: UInt64? { resumed > 0 ? try? result["resumed_from_iteration"]?.asUInt64() : nil }
    /// "resumed from iteration K" (nil when the job was never resumed).
    var resumedPhrase: String? {
        guard resumed > 0 else { return nil }
        let times = resumed == 1 ? "" : " (\(resumed) resumes)"
        return resumedFrom.map { "resumed from iteration \($0)\(times)" } ?? "resumed\(times)"
    }

    /// The epoch being worked on (1-based) while running; the epochs done once finished.
    var displayEpoch: UInt32 { isFinished || totalEpochs == 0 ? epoch : min(epoch + 1, totalEpochs) }

    /// The latest training loss: the last step's classification loss, else the last epoch's total.
    var loss: Double? { metrics["loss_classification"] ?? metrics["epoch_loss_total"] ?? metrics["loss_total"] }

    /// Seconds until ExpectedEndTime, nil when unknown.
    var etaSeconds: Double? {
        guard expectedEndTime > 0, state == "running" else { return nil }
        return max(0, Double(expectedEndTime) / 1e6 - Date().timeIntervalSince1970)
    }

    /// The exit code for a finished job: 0 completed, 3 cancelled, else the code of its error name (1).
    var exitCode: Int32 {
        switch state {
        case "completed": return Exit.ok
        case "cancelled": return Exit.cancelled
        default:
            if let name = try? result["error"]?.asString() { return CtlError.exitCode(forErrorName: name) }
            return Exit.failed
        }
    }

    var json: JSON {
        .object([
            ("job", .uint(UInt64(number) ?? 0)),
            ("path", .string(path)),
            ("operation", .string(operation)),
            ("state", .string(state)),
            ("progress", .double(progress)),
            ("epoch", .uint(UInt64(epoch))),
            ("total_epochs", .uint(UInt64(totalEpochs))),
            ("metrics", .object(metrics.keys.sorted().map { ($0, .double(metrics[$0]!)) })),
            ("start_time_us", .uint(startTime)),
            ("expected_end_time_us", .uint(expectedEndTime)),
            ("started_by_uid", .uint(UInt64(startedByUID))),
            ("cancelable", .bool(cancelable)),
            ("resumed", .uint(UInt64(resumed))),
            ("result", JSON.sorted(result)),
        ])
    }

    /// One line for people: `job 3 (train): running, 45%, epoch 2/5, loss 0.6931`.
    var summaryLine: String {
        var parts = ["job \(number) (\(operation)): \(state)"]
        if !isFinished { parts.append("\(Int((progress * 100).rounded(.down)))%") }
        if let done = metrics["slices_done"], let count = metrics["slice_count"] {
            parts.append("slice \(Int(done))/\(Int(count))")
        } else if totalEpochs > 0 { parts.append("epoch \(displayEpoch)/\(totalEpochs)") }
        if let loss { parts.append("loss \(fixed(loss, 4))") }
        if let eta = etaSeconds { parts.append("ETA \(formatDuration(eta))") }
        if let r = resumedPhrase { parts.append(r) }
        var line = parts.joined(separator: ", ")
        if isFinished, !message.isEmpty { line += ": " + message }
        if let model = try? result["model"]?.asObjectPath() { line += " (model \(API.id(model)))" }
        return line
    }

    /// The progress bar: `[#########-----------]  45%  epoch 2/5  loss 0.6931  ETA 1:23`.
    func bar(width: Int = 24) -> String {
        let p = min(max(progress, 0), 1)
        let filled = Int((p * Double(width)).rounded(.down))
        var s = "job \(number) [" + String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled) + "] "
        s += String(repeating: " ", count: max(0, 3 - String(Int(p * 100)).count)) + "\(Int(p * 100))%"
        if let done = metrics["slices_done"], let count = metrics["slice_count"] {
            s += "  slice \(Int(done))/\(Int(count))"  // an AnalyseScan job
        } else {
            s += "  epoch \(displayEpoch)/\(totalEpochs)"
            s += "  loss " + (loss.map { fixed($0, 4) } ?? "-")
        }
        s += "  ETA " + (etaSeconds.map(formatDuration) ?? "--:--")
        if state == "queued" { s += "  (queued)" }
        if let r = resumedFrom { s += "  (resumed from \(r))" }
        return s
    }
}

/// The width of the terminal on stdout, nil when unknown.
func terminalColumns() -> Int? {
    var ws = winsize()
    guard ioctl(1, UInt(TIOCGWINSZ), &ws) == 0, ws.ws_col > 0 else { return nil }
    return Int(ws.ws_col)
}

/// `m:ss` or `h:mm:ss`.
func formatDuration(_ seconds: Double) -> String {
    let t = Int(seconds.rounded())
    let h = t / 3600, m = (t % 3600) / 60, s = t % 60
    return h > 0 ? String(format: "%d:%02d:%02d", h, m, s) : String(format: "%d:%02d", m, s)
}

/// Reads a job's properties.
/// - Throws: `CtlError` 4 when there is no such job.
func readJob(_ client: Client, _ path: String) throws -> JobSnapshot {
    let props = try client.properties(path, API.job, context: "There is no job \(API.id(path)).")
    return JobSnapshot(path: path, props)
}

/// How to show a job while waiting on it.
enum WatchStyle {
    /// JSON lines, one per change.
    case jsonLines
    /// Nothing until the end (one JSON object then).
    case silent
    /// A progress bar redrawn in place (stdout is a terminal).
    case bar
    /// A plain line per state or epoch change and every 10 %.
    case lines
}

/// How long a watch waits for affinityd to come back when it goes away, in seconds (a restart
/// loads the model first; training jobs then resume from their checkpoints).
let defaultReconnectTimeout: Double = 300

/// Waits until a job finishes, showing its progress; Ctrl-C detaches (or cancels, then waits).
///
/// When the daemon goes away meanwhile (a restart, an upgrade, a crash) and `reconnectTimeout`
/// is positive, it waits up to that many seconds for the daemon to come back, reconnecting to
/// the bus if that went too, and goes on following the job; when the daemon resumed the job
/// (Resumed grew), it says "resumed from iteration K".
/// - Returns: the final (or, when detached, the latest) snapshot and whether we detached.
/// - Throws: `CtlError` 69 when the daemon does not come back in time.
func waitForJob(_ client: Client, _ path: String, style: WatchStyle, cancelOnInterrupt: Bool,
                reconnectTimeout: Double = 0) throws -> (JobSnapshot, detached: Bool) {
    let wake = DispatchSemaphore(value: 0)
    // Subscribe before the first read, so that no change falls between the two (and again on a
    // new connection when the bus itself went away).
    var subscriptions: [SignalSubscription] = []
    func subscribe() {
        for s in subscriptions { s.cancel() }
        subscriptions = [
            try? client.connection.subscribe(.propertiesChanged(path: path, interface: API.job)) { _ in wake.signal() },
            try? client.connection.subscribe(MatchRule(interface: API.job, member: "Completed", path: path)) { _ in wake.signal() },
        ].compactMap { $0 }
    }
    subscribe()
    defer { for s in subscriptions { s.cancel() } }
    Interrupt.shared.beginWaiting { wake.signal() }
    defer { Interrupt.shared.endWaiting() }

    var snapshot = try readJob(client, path)
    var lastShown: JobSnapshot?
    var lastLineKey = ""
    var cancelRequested = false
    var handledInterrupts = 0
    func show(_ s: JobSnapshot) {
        switch style {
        case .silent: return
        case .jsonLines:
            if s != lastShown { printLine(s.json.text) }
        case .bar:
            // One terminal line: a bar that wraps could not be redrawn in place.
            var line = s.bar()
            if let columns = terminalColumns(), line.count >= columns { line = String(line.prefix(max(1, columns - 1))) }
            printRaw("\r" + line + "\u{1B}[K")
        case .lines:
            let key = "\(s.state) \(s.displayEpoch) \(Int(s.progress * 10)) \(s.resumed)"
            if key != lastLineKey { printLine(s.summaryLine) }
            lastLineKey = key
        }
        lastShown = s
    }
    /// A sentence for people: its own line on stdout, on stderr in the JSON modes.
    func notice(_ text: String) {
        switch style {
        case .silent, .jsonLines: FileHandle.standardError.write(Data("affinityctl: \(text)\n".utf8))
        case .bar: printRaw("\r\u{1B}[K"); printLine(text)
        case .lines: printLine(text)
        }
    }
    /// Waits for the daemon to answer for the job again; nil when Ctrl-C detaches meanwhile.
    func awaitDaemon(_ first: CtlError) throws -> JobSnapshot? {
        let deadline = Date().addingTimeInterval(reconnectTimeout)
        var last = first
        while Date() < deadline {
            _ = wake.wait(timeout: .now() + .seconds(1))
            let interrupts = Interrupt.shared.interrupts
            if interrupts > handledInterrupts {
                handledInterrupts = interrupts
                return nil
            }
            if !client.connection.isOpen {
                do { try client.reconnect(); subscribe() } catch {
                    last = CtlError.wrap(error)
                    continue
                }
            }
            do { return try readJob(client, path) } catch let e as CtlError where e.code == Exit.unavailable { last = e }
        }
        throw CtlError(Exit.unavailable, "affinityd did not come back within \(formatDuration(reconnectTimeout)): \(last.message)", name: last.name)
    }
    while true {
        show(snapshot)
        if snapshot.isFinished { break }
        _ = wake.wait(timeout: .now() + .milliseconds(style == .bar ? 500 : 1000))
        let interrupts = Interrupt.shared.interrupts
        if interrupts > handledInterrupts {
            handledInterrupts = interrupts
            if cancelOnInterrupt && !cancelRequested {
                cancelRequested = true
                if style == .bar { printRaw("\n") }
                if style != .jsonLines && style != .silent { printLine("Cancelling job \(snapshot.number)…") }
                do { _ = try client.call(path, API.job, "Cancel", [.vardict([:])], expecting: "") } catch {
                    let e = CtlError.wrap(error)
                    FileHandle.standardError.write(Data("affinityctl: cannot cancel job \(snapshot.number): \(e.message)\n".utf8))
                }
            } else {
                if style == .bar { printRaw("\n") }
                return (snapshot, true)
            }
        }
        var next: JobSnapshot
        do { next = try readJob(client, path) } catch let e as CtlError where e.code == Exit.unavailable && reconnectTimeout > 0 {
            notice("job \(snapshot.number): affinityd is not reachable (\(e.message)); waiting up to \(formatDuration(reconnectTimeout)) for it to come back.")
            guard let back = try awaitDaemon(e) else {
                if style == .bar { printRaw("\n") }
                return (snapshot, true)
            }
            notice("job \(back.number): affinityd is back; the job is \(back.state).")
            next = back
        }
        if next.resumed > snapshot.resumed {
            notice("job \(next.number): " + (next.resumedFrom.map { "resumed from iteration \($0)" } ?? "resumed") + ".")
        }
        snapshot = next
    }
    if style == .bar { printRaw("\n") }
    return (snapshot, false)
}

/// Options shared by train and finetune (the keys of Train's options in the Manager XML).
struct TrainingOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The data set directory (COVIDx-CT/CNCB layout); a relative path that does not exist here is taken relative to the daemon's datasets/.", valueName: "dir"))
    var dataset: String

    @Option(name: .long, help: "train, val or test (default: train).")
    var split: String?

    @Option(name: .long, help: "Epochs (default: 1).")
    var epochs: UInt32?

    @Option(name: .customLong("image-size"), help: "Training image side, 64-1024 (default: 512).")
    var imageSize: UInt32?

    @Option(name: .customLong("iterations-per-epoch"), help: "At most this many classification samples per epoch.")
    var iterationsPerEpoch: UInt32?

    @Option(name: .long, help: "The seed of every random choice.")
    var seed: UInt64?

    @Option(name: .customLong("learning-rate"), help: "Adam's learning rate (default: 1e-5).")
    var learningRate: Double?

    @Option(name: .customLong("weight-decay"), help: "Weight decay (default: 1e-3).")
    var weightDecay: Double?

    @Option(name: .customLong("copy-rule"), help: "previous or best.")
    var copyRule: String?

    @Option(name: .customLong("segmentation-step"), help: ArgumentHelp("Run the segmentation step (default: true for train, false for finetune).", valueName: "true|false"))
    var segmentationStep: Bool?

    @Option(name: .long, help: "The new model's name.")
    var name: String?

    @Option(name: .customLong("head-learning-rate"), help: "The learning rate of the classification head's own parameters (default: --learning-rate).")
    var headLearningRate: Double?

    @Option(name: .customLong("data-format"), help: ArgumentHelp("Read the classification set through this dataset-reader plugin of the daemon (covidx-ct, ictcf, …; see affinityctl plugins) instead of the built-in layout.", valueName: "reader"))
    var dataFormat: String?

    @Option(name: .customLong("segmentation-format"), help: ArgumentHelp("Read the segmentation set through this dataset-reader plugin (e.g. cncb-seg).", valueName: "reader"))
    var segmentationFormat: String?

    @Option(name: .customLong("data-options"), help: ArgumentHelp("JSON options for the reader plugins (default: {\"split\": <--split>} for covidx-ct, {\"split\": \"train\"} for cncb-seg, {} otherwise).", valueName: "json"))
    var dataOptions: String?

    @Option(name: .customLong("checkpoint-interval"), help: ArgumentHelp("Seconds of training between checkpoints, besides each epoch's end; 0: none by time (default: the daemon's checkpoint_interval, 900).", valueName: "seconds"))
    var checkpointInterval: UInt32?

    @Option(name: .customLong("checkpoint-iterations"), help: ArgumentHelp("A checkpoint every this many iterations as well; 0: none (default: the daemon's checkpoint_iterations, 0).", valueName: "n"))
    var checkpointIterations: UInt32?

    @Flag(name: .customLong("no-wait"), help: "Print the job and return at once instead of waiting for it.")
    var noWait = false

    @Flag(name: .customLong("cancel-on-interrupt"), help: "Ctrl-C cancels the job instead of detaching from it.")
    var cancelOnInterrupt = false

    /// The a{sv} options of Train / Finetune.
    func dictionary() -> [String: DBusValue] {
        var o: [String: DBusValue] = [:]
        // The daemon resolves relative paths against its own datasets/; a path that exists here is meant as ours.
        var path = dataset
        if !path.hasPrefix("/"), FileManager.default.fileExists(atPath: path) {
            path = URL(fileURLWithPath: path).standardizedFileURL.path
        }
        o[TrainOption.dataset.key] = .string(path)
        if let split { o[TrainOption.split.key] = .string(split) }
        if let epochs { o[TrainOption.epochs.key] = .uint32(epochs) }
        if let imageSize { o[TrainOption.imageSize.key] = .uint32(imageSize) }
        if let iterationsPerEpoch { o[TrainOption.iterationsPerEpoch.key] = .uint32(iterationsPerEpoch) }
        if let seed { o[TrainOption.seed.key] = .uint64(seed) }
        if let learningRate { o[TrainOption.learningRate.key] = .double(learningRate) }
        if let weightDecay { o[TrainOption.weightDecay.key] = .double(weightDecay) }
        if let copyRule { o[TrainOption.copyRule.key] = .string(copyRule) }
        if let segmentationStep { o[TrainOption.segmentationStep.key] = .boolean(segmentationStep) }
        if let name { o[TrainOption.name.key] = .string(name) }
        if let headLearningRate { o[TrainOption.headLearningRate.key] = .double(headLearningRate) }
        if let dataFormat { o[TrainOption.dataFormat.key] = .string(dataFormat) }
        if let segmentationFormat { o[TrainOption.segmentationFormat.key] = .string(segmentationFormat) }
        if let dataOptions { o[TrainOption.dataOptions.key] = .string(dataOptions) }
        if let checkpointInterval { o[TrainOption.checkpointInterval.key] = .uint32(checkpointInterval) }
        if let checkpointIterations { o[TrainOption.checkpointIterations.key] = .uint32(checkpointIterations) }
        return o
    }
}

/// Starts a job and, unless --no-wait, waits for it; returns the exit code.
func startAndFollow(_ client: Client, global: GlobalOptions, options: TrainingOptions, start: () throws -> String) throws -> Int32 {
    let path = try start()
    if options.noWait {
        let s = try readJob(client, path)
        if global.json { printLine(s.json.text) } else { printLine("Started job \(s.number) (\(s.operation)): affinityctl job watch \(s.number)") }
        return Exit.ok
    }
    if !global.json { printLine("Started job \(API.id(path)). Ctrl-C " + (options.cancelOnInterrupt ? "cancels it." : "detaches; the job goes on.")) }
    return try follow(client, path, global: global, jsonLines: false, cancelOnInterrupt: options.cancelOnInterrupt)
}

/// Waits on a job and prints its end; the exit code is the job's (or 130 when detached).
func follow(_ client: Client, _ path: String, global: GlobalOptions, jsonLines: Bool, cancelOnInterrupt: Bool,
            reconnectTimeout: Double = defaultReconnectTimeout) throws -> Int32 {
    let style: WatchStyle = global.json ? (jsonLines ? .jsonLines : .silent) : (stdoutIsTerminal ? .bar : .lines)
    // A private --local daemon does not come back once gone: no waiting for it.
    let privateDaemon = global.local && client.bus != BusChoice.resolve(global.bus)
    let (s, detached) = try waitForJob(client, path, style: style, cancelOnInterrupt: cancelOnInterrupt,
                                       reconnectTimeout: privateDaemon ? 0 : reconnectTimeout)
    if global.json {
        if !jsonLines || detached {
            if case .object(var pairs) = s.json {
                pairs.append(("detached", .bool(detached)))
                printLine(JSON.object(pairs).text)
            }
        }
    } else if detached {
        if global.local && client.bus != BusChoice.resolve(global.bus) {
            printLine("Detached from job \(s.number); the private --local daemon stops with this command, which stops the job at a checkpoint. Continue it with: affinityctl --local job resume \(s.number)")
        } else {
            printLine("Detached from job \(s.number); it goes on. Follow it with: affinityctl job watch \(s.number)")
        }
    } else if style == .bar {
        printLine(s.summaryLine)
    }
    if detached { return Exit.interrupted }
    return s.exitCode
}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Trains a new model as a daemon job (privileged).",
        discussion: "Waits for the job with a progress bar on a terminal; Ctrl-C detaches unless --cancel-on-interrupt. The exit code is the job's: 0 completed, 1 failed, 3 cancelled.")

    @OptionGroup var global: GlobalOptions
    @OptionGroup var options: TrainingOptions

    @Option(name: .long, help: "C', the number of affinities (default: 128).")
    var affinities: UInt32?

    @Option(name: .long, help: "The classification head: affinity (the paper's, default) or the id of a head plugin the daemon has loaded (see: affinityctl plugins).")
    var head: String?

    @Option(name: .customLong("head-config"), help: ArgumentHelp("The head plugin's JSON configuration.", valueName: "json"))
    var headConfig: String?

    func run() throws {
        try runCommand(global) { client in
            var o = options.dictionary()
            if let affinities { o[TrainOption.affinities.key] = .uint32(affinities) }
            if let head { o[TrainOption.head.key] = .string(head) }
            if let headConfig { o[TrainOption.headConfig.key] = .string(headConfig) }
            return try startAndFollow(client, global: global, options: options) {
                try client.call(API.root, API.manager, "Train", [.vardict(o)], expecting: "o")[0].asObjectPath()
            }
        }
    }
}

struct Finetune: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fine-tunes an existing model as a daemon job (privileged).",
        discussion: "As train; the model keeps its number of affinities and the segmentation step is off unless --segmentation-step true.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("The model to start from (id or object path).", valueName: "model"))
    var model: String

    @OptionGroup var options: TrainingOptions

    func run() throws {
        try runCommand(global) { client in
            let path = API.modelPath(model)
            return try startAndFollow(client, global: global, options: options) {
                try client.call(API.root, API.manager, "Finetune", [.objectPath(path), .vardict(options.dictionary())],
                                expecting: "o", context: "There is no model \(model).")[0].asObjectPath()
            }
        }
    }
}

struct Jobs: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Lists the daemon's jobs.",
        discussion: "RESUMED: how many times a training job was resumed after a restart of the daemon (or by job resume), and @K the iteration its latest resume continued from.")

    @OptionGroup var global: GlobalOptions

    func run() throws {
        try runCommand(global) { client in
            let reply = try client.call(API.root, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects",
                                        expecting: "a{oa{sa{sv}}}")
            var jobs: [JobSnapshot] = []
            for (pathValue, interfaces) in try reply[0].asDictionary() {
                let path = try pathValue.asObjectPath()
                guard path.hasPrefix(API.jobsPrefix) else { continue }
                for (name, props) in try interfaces.asDictionary() where try name.asString() == API.job {
                    jobs.append(JobSnapshot(path: path, try props.asVardict()))
                }
            }
            jobs.sort { (UInt64($0.number) ?? 0) < (UInt64($1.number) ?? 0) }
            if global.json {
                printLine(JSON.object([("jobs", .array(jobs.map(\.json)))]).text)
            } else if jobs.isEmpty {
                printLine("No jobs.")
            } else {
                printLine(pad("JOB", 5) + pad("OPERATION", 15) + pad("STATE", 11) + pad("PROGRESS", 10) + pad("EPOCH", 8)
                          + pad("RESUMED", 9) + "STARTED")
                for j in jobs {
                    let started = j.startTime > 0 ? timestamp(j.startTime) : "-"
                    // RESUMED: how many times, and from which iteration the latest resume continued.
                    let resumed = j.resumed == 0 ? "-" : "\(j.resumed)" + (j.resumedFrom.map { "@\($0)" } ?? "")
                    printLine(pad(j.number, 5) + pad(j.operation, 15) + pad(j.state, 11) + pad("\(Int(j.progress * 100))%", 10)
                              + pad(j.totalEpochs > 0 ? "\(j.displayEpoch)/\(j.totalEpochs)" : "-", 8) + pad(resumed, 9) + started)
                }
            }
            return Exit.ok
        }
    }
}

/// `s` padded with spaces to `width` (at least one space after).
func pad(_ s: String, _ width: Int) -> String { s.count >= width ? s + " " : s + String(repeating: " ", count: width - s.count) }

/// Microseconds since the Unix epoch as local `yyyy-MM-dd HH:mm:ss`.
func timestamp(_ microseconds: UInt64) -> String {
    let f = DateFormatter()
    f.dateFormat = "yyyy-MM-dd HH:mm:ss"
    return f.string(from: Date(timeIntervalSince1970: Double(microseconds) / 1e6))
}

/// Checks a job argument: a number or an object path under /org/lesionaffinity/Affinity1/jobs.
func validateJob(_ job: String) throws {
    if job.hasPrefix("/") {
        guard job.hasPrefix(API.jobsPrefix), UInt64(API.id(job)) != nil else {
            throw ValidationError("'\(job)' is not a job object path (\(API.jobsPrefix)N).")
        }
    } else if UInt64(job) == nil {
        throw ValidationError("'\(job)' is not a job number.")
    }
}

struct JobCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "job", abstract: "Watches, cancels or resumes one job.", subcommands: [Watch.self, Cancel.self, Resume.self])

    struct Watch: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Follows a job until it ends.",
            discussion: "A progress bar (epoch, loss, ETA) on a terminal, plain lines otherwise, JSON lines with --json. Ctrl-C detaches unless --cancel-on-interrupt. When affinityd goes away while the job runs (a restart, an upgrade, a crash), the watch waits for it to come back, up to --reconnect-timeout, and goes on following the job, which the daemon resumes from its last checkpoint (\"resumed from iteration K\"). The exit code is the job's: 0 completed, 1 failed, 3 cancelled; 69 when the daemon does not come back.")

        @OptionGroup var global: GlobalOptions

        @Argument(help: ArgumentHelp("The job number (or object path).", valueName: "n"))
        var job: String

        @Flag(name: .customLong("cancel-on-interrupt"), help: "Ctrl-C cancels the job instead of detaching from it.")
        var cancelOnInterrupt = false

        @Option(name: .customLong("reconnect-timeout"), help: ArgumentHelp("How long to wait for affinityd to come back when it goes away during the watch; 0: do not wait.", valueName: "seconds"))
        var reconnectTimeout: UInt32 = UInt32(defaultReconnectTimeout)

        func validate() throws { try validateJob(job) }

        func run() throws {
            try runCommand(global) { client in
                try follow(client, API.jobPath(job), global: global, jsonLines: true, cancelOnInterrupt: cancelOnInterrupt,
                           reconnectTimeout: Double(reconnectTimeout))
            }
        }
    }

    struct Resume: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Resumes a failed or cancelled training job from its last checkpoint (privileged).",
            discussion: "The job keeps its number and continues where its checkpoint was taken (from the start when it wrote none); training jobs that the daemon's restart interrupted resume by themselves unless auto_resume = no. Then waits for the job as train does, unless --no-wait. Errors: the job completed or runs (1), its checkpoint is missing or damaged (1), its data set is gone (1), no such job (4).")

        @OptionGroup var global: GlobalOptions

        @Argument(help: ArgumentHelp("The job number (or object path).", valueName: "n"))
        var job: String

        @Flag(name: .customLong("no-wait"), help: "Print the job and return at once instead of waiting for it.")
        var noWait = false

        @Flag(name: .customLong("cancel-on-interrupt"), help: "Ctrl-C cancels the job instead of detaching from it.")
        var cancelOnInterrupt = false

        func validate() throws { try validateJob(job) }

        func run() throws {
            try runCommand(global) { client in
                let path = API.jobPath(job)
                _ = try client.call(path, API.job, "Resume", [.vardict([:])], expecting: "", context: "There is no job \(API.id(path)).")
                let s = try readJob(client, path)
                if noWait {
                    if global.json { printLine(s.json.text) } else { printLine("Resumed job \(s.number) (\(s.resumedPhrase ?? "resumed")): affinityctl job watch \(s.number)") }
                    return Exit.ok
                }
                if !global.json {
                    printLine("Resumed job \(s.number) (\(s.resumedPhrase ?? "resumed")). Ctrl-C " + (cancelOnInterrupt ? "cancels it." : "detaches; the job goes on."))
                }
                return try follow(client, path, global: global, jsonLines: false, cancelOnInterrupt: cancelOnInterrupt)
            }
        }
    }

    struct Cancel: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Asks a job to stop (another user's job needs authorization).",
            discussion: "With --wait, waits until it has stopped; the exit code is then the job's (3 when cancelled).")

        @OptionGroup var global: GlobalOptions

        @Argument(help: ArgumentHelp("The job number (or object path).", valueName: "n"))
        var job: String

        @Flag(name: .long, help: "Wait until the job has stopped.")
        var wait = false

        func validate() throws { try validateJob(job) }

        func run() throws {
            try runCommand(global) { client in
                let path = API.jobPath(job)
                _ = try client.call(path, API.job, "Cancel", [.vardict([:])], expecting: "", context: "There is no job \(API.id(path)).")
                if wait {
                    let (s, detached) = try waitForJob(client, path, style: .silent, cancelOnInterrupt: false)
                    if global.json {
                        if case .object(var pairs) = s.json {
                            pairs.append(("cancel_requested", .bool(true)))
                            printLine(JSON.object(pairs).text)
                        }
                    } else {
                        printLine(s.summaryLine)
                    }
                    return detached ? Exit.interrupted : s.exitCode
                }
                if global.json {
                    printLine(JSON.object([("job", .uint(UInt64(API.id(path)) ?? 0)), ("path", .string(path)),
                                           ("cancel_requested", .bool(true))]).text)
                } else {
                    printLine("Cancel requested for job \(API.id(path)).")
                }
                return Exit.ok
            }
        }
    }
}
