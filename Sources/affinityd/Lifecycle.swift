// The daemon's life: start (export, name, bundled model, watchdog), reload, stop.
import Affinity
import AffinityAPI
import Bus
import Foundation
import Imaging
import PluginHost
import Service

extension Daemon {
    // MARK: Start and stop

    func start() throws {
        if config.bundledModel { installBundledModel() }
        try bus.addObjectManager(at: API.root)
        // The interfaces' agreement with data/dbus/*.xml is checked by the tests
        // (DaemonTests.servedInterfacesMatchTheirXML), not at every start.
        let manager = managerInterface()
        try bus.export(path: API.root, interfaces: [manager])
        for card in store.models { exportModel(card) }
        for job in jobs.allJobs { exportJob(job) }
        jobs.onJobCreated = { [weak self] job in self?.exportJob(job) }
        jobs.onModelPublished = { [weak self] card in self?.exportModel(card); self?.refreshManager() }
        jobs.log = { priority, message, id in Log.log(priority, message, ["JOB_ID": String(id)]) }
        engine.onQueueChange = { [weak self] in self?.refreshManager() }
        // Training jobs the last run left unfinished continue where their checkpoints stand, before
        // the name is taken (so no new job queues ahead of them); nothing here waits on their files.
        if config.autoResume { jobs.resumeInterruptedJobs() }
        bus.onDisconnect = {
            Log.error("The connection to the bus was lost; exiting.")
            exit(1)
        }
        try bus.requestName(API.busName)
        Log.info("affinityd \(affinitydVersion) on \(config.bus), state in \(config.stateDirectory), authorization \(usePolkit ? "polkit" : "none").")
        refreshManager()
        startWatchdog()
        // Load the default model, then tell systemd we are ready.
        DispatchQueue.global().async { [self] in
            var error: String? = nil
            if let id = store.defaultModelID {
                do { try engine.preload(id) } catch let e {
                    error = ServiceError(e).message
                    Log.error("The default model does not load: \(error!)", ["MODEL_ID": id])
                }
            }
            lock.withLock { starting = false; preloadError = error }
            refreshManager()
            Notify.send("READY=1")
        }
    }

    /// With no default model, or with an earlier bundled model as the default: imports the
    /// bundled demo model (when one is found) into the store and makes it the default
    /// (`ModelStore.installBundled`). A failure is logged; the daemon then starts as without it.
    func installBundledModel() {
        guard let dir = BundledModel.defaultModel() else {
            if store.defaultModelID == nil {
                Log.info("No default model, and no bundled model was found (\(BundledModel.environmentVariable) or share/lesionaffinity/models).")
            }
            return
        }
        do {
            switch try store.installBundled(dir) {
            case .kept: return
            case .installed(let card, let replaced):
                let why = replaced.map { "The bundled model has changed (the default was its earlier version, \($0)): using" }
                    ?? "No default model was installed: using"
                Log.log(Log.notice, "\(why) the bundled model \(card.name) (\(card.id)) from \(dir.path), "
                        + "the phantom demo model, \(BundledModel.disclaimer).", ["MODEL_ID": card.id])
            }
        } catch {
            Log.error("The bundled model in \(dir.path) was not installed: \(ServiceError(error).message)")
        }
    }

    func startWatchdog() {
        guard let usec = Notify.watchdogMicroseconds else { return }
        WatchdogStall.installIfEnabled()
        let t = DispatchSource.makeTimerSource(queue: DispatchQueue.global())
        let interval = max(usec / 2, 1000)
        t.schedule(deadline: .now(), repeating: .microseconds(Int(interval)))
        t.setEventHandler { [weak self] in
            guard let self, let me = self.bus.uniqueName else { return }
            // A round trip through the bus thread: WATCHDOG=1 only while it serves.
            self.bus.callAsync(destination: me, path: "/", interface: "org.freedesktop.DBus.Peer", method: "Ping",
                               timeout: .microseconds(Int64(interval))) { result in
                WatchdogStall.stallIfRequested()
                if case .success = result { Notify.send("WATCHDOG=1") }
            }
        }
        t.resume()
        watchdogTimer = t
    }

    /// SIGHUP: re-reads the configuration file (limits, log level and the checkpoint defaults of
    /// new training jobs; bus, state directory, workers and auto_resume need a restart). The model
    /// and the jobs are kept.
    func reload() {
        Notify.send("RELOADING=1")
        Notify.status("reloading the configuration")
        if let configFile {
            var c = DaemonConfig()
            do {
                try c.apply(file: configFile)
                lock.withLock {
                    config.analyseQueueLimit = c.analyseQueueLimit
                    config.maxImageBytes = c.maxImageBytes
                    config.maxImageDimension = c.maxImageDimension
                    config.maxImportBytes = c.maxImportBytes
                    config.maxScanSlices = c.maxScanSlices
                    config.maxScanVoxels = c.maxScanVoxels
                    config.logLevel = c.logLevel
                    config.checkpointInterval = c.checkpointInterval
                    config.checkpointIterations = c.checkpointIterations
                }
                jobs.defaultCheckpointInterval = Double(c.checkpointInterval)
                jobs.defaultCheckpointIterations = c.checkpointIterations
                engine.queueLimit = c.analyseQueueLimit
                engine.limits = ImageLimits(maxBytes: c.maxImageBytes, maxDimension: c.maxImageDimension)
                Log.maxPriority = DaemonConfig.priorities[c.logLevel] ?? 6
                Log.info("Configuration reloaded from \(configFile).")
            } catch {
                Log.error("The configuration was not reloaded: \(error)")
            }
        }
        Notify.status("")
        refreshManager()
        Notify.send("READY=1")
    }

    /// SIGTERM: refuses new work, cancels jobs (training writes a checkpoint), then STOPPING=1.
    func stop() {
        lock.withLock { stopping = true }
        refreshManager()
        Log.info("Stopping: cancelling jobs.")
        engine.stop()
        jobs.shutdown()
        Notify.send("STOPPING=1")
        Notify.status("stopping")
        try? bus.releaseName(API.busName, timeout: .seconds(2))
        bus.onDisconnect = nil
        bus.close()
        Log.info("Stopped.")
    }
}
