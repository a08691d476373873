// org.lesionaffinity.Affinity1.Job: one object per job, and its PropertiesChanged signals.
import Affinity
import AffinityAPI
import Bus
import Foundation
import Imaging
import PluginHost
import Service

extension Daemon {
    // MARK: Jobs

    func jobProperties(_ job: Job) -> [String: DBusValue] {
        let s = job.snapshot
        var p: [JobProperty: DBusValue] = [
            .operation: .string(job.operation), .state: .string(s.state.rawValue), .progress: .double(s.progress),
            .epoch: .uint32(UInt32(s.epoch)), .totalEpochs: .uint32(UInt32(s.totalEpochs)), .metrics: .doubleDict(s.metrics),
            .startTime: .uint64(s.startTime), .expectedEndTime: .uint64(s.expectedEndTime),
            .startedByUID: .uint32(job.startedByUID), .cancelable: .boolean(s.cancelable),
            .resumed: .uint32(UInt32(clamping: s.resumed)),
        ]
        p[.result] = .vardict(jobResult(s, job: job.id))
        return Dictionary(uniqueKeysWithValues: p.map { ($0.key.name, $0.value) })
    }

    func jobResult(_ s: Job.Snapshot, job: Int) -> [String: DBusValue] {
        var d = s.result.reduce(into: [String: DBusValue]()) { d, entry in
            if case .file(let name, let bytes) = entry.value {
                // One sealed memfd per job and key, made once (a new one each time would make every
                // property read a change).
                if let fd = sealedResultFile(job: job, key: entry.key, name: name, bytes: bytes) { d[entry.key] = .unixFD(fd) }
            } else {
                d[entry.key] = dbusValue(entry.value)
            }
        }
        if !s.message.isEmpty { d["message"] = .string(s.message) }
        return d
    }

    /// The sealed memfd holding a job's result file (nil when none can be made: logged).
    func sealedResultFile(job: Int, key: String, name: String, bytes: [UInt8]) -> FileDescriptor? {
        if let fd = lock.withLock({ resultFiles[job]?[key] }) { return fd }
        do {
            let fd = try FileDescriptor.sealedMemfd(name: name, contents: bytes)
            return lock.withLock {
                if let made = resultFiles[job]?[key] { return made }
                resultFiles[job, default: [:]][key] = fd
                return fd
            }
        } catch {
            Log.error("Job \(job): the result file \(name) cannot be handed out: \(error)", ["JOB_ID": String(job)])
            return nil
        }
    }

    func dbusValue(_ v: JobValue) -> DBusValue {
        switch v {
        case .string(let s): return .string(s)
        case .double(let d): return .double(d)
        case .uint(let u): return .uint64(u)
        case .int(let i): return .int64(i)
        case .bool(let b): return .boolean(b)
        case .model(let id): return .objectPath(API.modelPath(id))
        case .doubles(let a): return .doubles(a)
        case .strings(let a): return .strings(a)
        case .list(let l): return .vardicts(l.map { $0.mapValues(dbusValue) })
        case .dictionary(let d): return .vardict(d.mapValues(dbusValue))
        case .values(let a): return .array(elementSignature: "v", a.map { .variant(dbusValue($0)) })
        // Nested files are not made (only a result's top-level files are handed out).
        case .file(let name, let bytes): return .string("\(name) (\(bytes.count) bytes)")
        }
    }

    func jobInterface(_ job: Job?) -> BusInterface? {
        var i = BusInterface.api(API.job, introspectionXML: xml(API.job))
        i.signal("Completed", "bsa{sv}")
        for property in JobProperty.allCases {
            i.property(property.name, property.signature, emitsChangedSignal: property.emitsChangedSignal) { [self] in
                guard let job else { throw ServiceError.failed("No job") }
                return jobProperties(job)[property.name]!
            }
        }
        // GetAll from one snapshot: a client must never see a finished State with a running job's Result.
        i.getAll = { [self] in
            guard let job else { throw ServiceError.failed("No job") }
            return jobProperties(job)
        }
        i.deferredMethod("Cancel", in: "a{sv}", out: "") { [self] call, reply in
            guard let job else { return reply.fail(apiError(ServiceError.failed("No job"))) }
            do { _ = try strictOptions(call.argument(0), []) } catch { return reply.fail(apiError(error)) }
            let doCancel: () -> Void = {
                if job.cancel() {
                    Log.info("Job \(job.id) cancel requested.", ["JOB_ID": String(job.id)])
                    reply.reply([])
                } else {
                    reply.fail(BusError(name: API.errorName(.failed), message: "Job \(job.id) has already finished (\(job.snapshot.state.rawValue))."))
                }
            }
            call.senderUnixUser { [self] result in
                guard case .success(let uid) = result else {
                    return reply.fail(BusError(name: API.errorName(.notAuthorized), message: "The caller's user cannot be determined."))
                }
                if !usePolkit || uid == 0 || uid == job.startedByUID { doCancel(); return }
                checkAuthorization(sender: call.sender, action: API.Action.cancelOther) { ok, why in
                    if ok { doCancel() } else { reply.fail(BusError(name: API.errorName(.notAuthorized), message: why)) }
                }
            }
        }
        i.deferredMethod("Resume", in: "a{sv}", out: "") { [self] call, reply in
            guard let job else { return reply.fail(apiError(ServiceError.failed("No job"))) }
            do { _ = try strictOptions(call.argument(0), []) } catch { return reply.fail(apiError(error)) }
            // Privileged like starting the job: the train or finetune action.
            let action = job.operation == "finetune" ? API.Action.finetune : API.Action.train
            privileged(call, reply, action: action) { [self] uid in
                try jobs.resume(job)
                Log.info("Job \(job.id) resume requested by uid \(uid).", ["JOB_ID": String(job.id)])
                refreshManager()
                return []
            }
        }
        return i
    }

    func exportJob(_ job: Job) {
        guard let i = jobInterface(job) else { return }
        let path = API.jobPath(job.id)
        lock.withLock { lastJobProps[job.id] = jobProperties(job) }
        do { try bus.export(path: path, interfaces: [i]) } catch {
            Log.error("Cannot export job \(job.id): \(error)", ["JOB_ID": String(job.id)])
            return
        }
        job.observe { [weak self] snapshot, finished in
            guard let self else { return }
            self.jobChanged(job, finished: finished)
            if finished {
                let success = snapshot.state == .completed
                try? self.bus.emitSignal(path: path, interface: API.job, name: "Completed",
                                         [.boolean(success), .string(snapshot.message), .vardict(self.jobResult(snapshot, job: job.id))])
                Log.log(success ? Log.info : Log.notice, "Job \(job.id) \(snapshot.state.rawValue): \(snapshot.message)", ["JOB_ID": String(job.id)])
            }
        }
        refreshManager()
    }

    /// PropertiesChanged for a job: state changes at once, progress at most about twice a second
    /// (a change inside the window is flushed at its end).
    func jobChanged(_ job: Job, finished: Bool) {
        let now = Date().timeIntervalSince1970
        let emitNow: Bool = lock.withLock {
            let stateChanged = lastJobProps[job.id]?[JobProperty.state.name] != .string(job.snapshot.state.rawValue)
            if finished || stateChanged || now - (lastJobEmit[job.id] ?? 0) >= 0.5 { return true }
            if jobFlushScheduled.insert(job.id).inserted {
                let delay = 0.5 - (now - (lastJobEmit[job.id] ?? 0))
                DispatchQueue.global().asyncAfter(deadline: .now() + max(0.01, delay)) { [weak self] in
                    guard let self else { return }
                    _ = self.lock.withLock { self.jobFlushScheduled.remove(job.id) }
                    self.emitJob(job)
                }
            }
            return false
        }
        if emitNow { emitJob(job) }
        refreshManager()
    }

    func emitJob(_ job: Job) {
        let props = jobProperties(job)
        let changed: [String: DBusValue] = lock.withLock {
            let old = lastJobProps[job.id] ?? [:]
            lastJobProps[job.id] = props
            lastJobEmit[job.id] = Date().timeIntervalSince1970
            return props.filter { old[$0.key] != $0.value && JobProperty(rawValue: $0.key)?.emitsChangedSignal == true }
        }
        if !changed.isEmpty { try? bus.emitPropertiesChanged(path: API.jobPath(job.id), interface: API.job, changed: changed) }
    }
}
