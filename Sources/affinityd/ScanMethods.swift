// Manager.AnalyseScan: a whole CT scan (DICOM series or NIfTI volume) from the caller's file
// descriptors, analysed as a job.
import AffinityAPI
import Bus
import Foundation
import ScanIO
import Scans
import Service
import SystemIO

extension Daemon {
    /// Adds AnalyseScan to the Manager interface.
    func addScanMethods(_ i: inout BusInterface) {
        i.deferredMethod("AnalyseScan", in: "aha{sv}", out: "o") { [self] call, reply in
            do {
                let fds = try call.argument(0).asFileDescriptors()
                guard !fds.isEmpty else {
                    throw ServiceError.invalidArgument("AnalyseScan needs at least one file descriptor: DICOM files, a NIfTI volume, or one folder opened with O_DIRECTORY")
                }
                let options = try scanOptions(call.argument(1))
                call.senderUnixUser { [self] uid in
                    // Reading every file's header takes a moment: off the bus thread.
                    DispatchQueue.global().async { [self] in
                        do {
                            let job = try startScan(fds, options, uid: try uid.get())
                            Log.info("Job \(job.id): scan of \(fds.count) descriptor(s) requested by uid \(job.startedByUID).", ["JOB_ID": String(job.id)])
                            reply.reply([.objectPath(API.jobPath(job.id))])
                        } catch {
                            reply.fail(apiError(error))
                        }
                    }
                }
            } catch {
                reply.fail(apiError(error))
            }
        }
    }

    struct ScanOptions {
        var request = ScanRequest()
        var series: String?
        var labelVolume = true
    }

    func scanOptions(_ value: DBusValue) throws -> ScanOptions {
        let o = try strictOptions(value, ScanOption.keys)
        var s = ScanOptions()
        do {
            if let m = try o.option(ScanOption.model, { try $0.asObjectPath() }) {
                let id = try modelID(m)
                guard store.card(id) != nil else { throw ServiceError.modelNotFound("There is no model '\(id)' in the store") }
                s.request.modelID = id
            }
            if let v = try o.option(ScanOption.seed, { try $0.asUInt64() }) { s.request.seed = v }
            if let v = try o.option(ScanOption.series, { try $0.asString() }) {
                guard !v.isEmpty else { throw ServiceError.invalidArgument("The option 'series' must name a SeriesInstanceUID") }
                s.series = v
            }
            if let v = try o.option(ScanOption.rule, { try $0.asString() }) {
                guard let rule = VerdictRule(rawValue: v) else {
                    throw ServiceError.invalidArgument("The option 'rule' must be one of \(VerdictRule.allCases.map(\.rawValue).joined(separator: ", ")), not '\(v)'")
                }
                s.request.rule = rule
            }
            if let v = try o.option(ScanOption.windowCenter, { try $0.asDouble() }) {
                guard v.isFinite else { throw ServiceError.invalidArgument("The option 'window_center' must be finite") }
                s.request.windowCentre = v
            }
            if let v = try o.option(ScanOption.windowWidth, { try $0.asDouble() }) {
                guard v.isFinite, v > 0 else { throw ServiceError.invalidArgument("The option 'window_width' must be positive and finite, not \(v)") }
                s.request.windowWidth = v
            }
            if let v = try o.option(ScanOption.labelVolume, { try $0.asBool() }) { s.labelVolume = v }
        } catch let e as BusError { throw ServiceError.invalidArgument(e.message) }
        return s
    }

    /// Reads the descriptors' files, assembles the series and starts the job.
    /// - Throws: `InvalidArgument` (several series, an unknown series, a descriptor that is neither
    ///   a regular file nor a folder), `InvalidImage` (no volume, over the limits), `ModelNotReady`.
    func startScan(_ fds: [FileDescriptor], _ options: ScanOptions, uid: UInt32) throws -> Job {
        var inputs: [ScanInput] = []
        for (n, fd) in fds.enumerated() {
            let raw = fd.rawValue
            var info = stat()
            guard fstat(raw, &info) == 0 else {
                throw ServiceError.invalidArgument("Descriptor \(n + 1) of \(fds.count) cannot be examined: \(String(cString: strerror(errno)))")
            }
            let name = Self.clientName(of: raw) ?? "descriptor \(n + 1)"
            switch info.st_mode & S_IFMT {
            case S_IFDIR: inputs.append(.directory(descriptor: raw, name: name))
            case S_IFREG: inputs.append(.file(descriptor: raw, name: name))
            default:
                throw ServiceError.invalidArgument("Descriptor \(n + 1) of \(fds.count) (\(name)) is neither a regular file nor a folder")
            }
        }
        let (maxBytes, maxSlices, maxVoxels) = lock.withLock { (config.maxImageBytes, config.maxScanSlices, config.maxScanVoxels) }
        var request = options.request
        request.maxSlices = maxSlices
        request.maxVoxels = maxVoxels
        var limits = ScanLimits()
        limits.maxFileBytes = maxBytes
        limits.maxFiles = max(limits.maxFiles, maxSlices)
        limits.nifti.maxSlices = maxSlices
        limits.nifti.maxVoxels = maxVoxels
        let files = try ScanFiles(inputs: inputs, registry: plugins, limits: limits)
        var assembly = SeriesAssembler.assemble(files.headers)
        assembly.setAside = files.setAside + assembly.setAside
        let series = try assembly.choose(options.series)
        // Over the limits: refused now, not as a failed job.
        if let first = series.slices.first {
            guard series.count <= maxSlices else { throw ScanError.tooLarge("\(series.count) slices; the limit is \(maxSlices) (max_scan_slices)") }
            let (voxels, overflow) = series.count.multipliedReportingOverflow(by: first.rows * first.columns)
            guard !overflow, voxels <= maxVoxels else {
                throw ScanError.tooLarge("\(first.columns)×\(first.rows)×\(series.count) voxels; the limit is \(maxVoxels) (max_scan_voxels)")
            }
        }
        var job = JobManager.ScanJob(series: series, setAside: assembly.setAside, reader: files, request: request)
        job.keepAlive = fds
        if options.labelVolume {
            var template = Array((NSTemporaryDirectory() + "/affinityd-scan-XXXXXX").utf8CString)
            guard let made = mkdtemp(&template) else {
                throw ServiceError.failed("No temporary folder for the label volume can be made: \(String(cString: strerror(errno)))")
            }
            let folder = String(cString: made)
            let path = folder + "/lesions.nii.gz"
            job.sink = NIfTILabelSink(path: path)
            job.labelVolume = { ("lesions.nii.gz", try AtomicFile.read(path: path)) }
            job.cleanup = { try? FileManager.default.removeItem(atPath: folder) }
        }
        do { return try jobs.startScan(job, uid: uid) } catch {
            job.cleanup?()
            throw error
        }
    }

    /// The name the client's descriptor had (its path as the daemon's /proc shows it).
    static func clientName(of fd: Int32) -> String? {
        guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)"), target.hasPrefix("/") else {
            return nil
        }
        return target
    }
}
