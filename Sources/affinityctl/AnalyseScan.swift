// analyse-scan: a whole CT scan (a DICOM series in files or a folder, or a NIfTI volume) sent to
// the daemon as file descriptors and analysed as a job, with a progress bar and a summary.
import ArgumentParser
import AffinityAPI
import Bus
import Foundation
import SystemIO

struct AnalyseScan: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "analyse-scan",
        abstract: "Analyses a whole CT scan (DICOM series or NIfTI volume): a verdict, lesion and lung volumes, and a label volume.",
        discussion: """
            Each PATH is opened here and passed to the daemon as a file descriptor: a folder as one \
            O_DIRECTORY descriptor (the daemon reads its files relative to it: any names, any order, \
            other files set aside), a file as itself. The daemon groups the slices by series, sorts \
            them inferior to superior, skips slices without a lung field, and analyses the rest as a \
            job (a progress bar on a terminal; Ctrl-C cancels it). The summary gives the verdict and \
            the rule that made it from the slice results, the lesion and lung volumes in mL, the \
            opacity (lesion volume over lung volume) for both lungs and each, and the most involved \
            slice. --mask-out writes the lesion label volume (.nii.gz: uint8, 0 background, i = the \
            slice's lesion i) with the scan's affine, to overlay on the scan in 3D Slicer or ITK-SNAP. \
            --json prints the job's result as one JSON object (the keys of `affinity-lab scan --json`). \
            Exit codes as for analyse: 1 failed (no volume, several series without --series: the \
            message lists them), 3 cancelled, 4 a path not found.
            """,
        aliases: ["analyze-scan"])

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("DICOM files, a folder holding a series, or a NIfTI volume (.nii, .nii.gz).", valueName: "path"))
    var paths: [String]

    @Option(name: .long, help: ArgumentHelp("The SeriesInstanceUID to analyse when the paths hold several series.", valueName: "uid"))
    var series: String?

    @Option(name: .customLong("mask-out"), help: ArgumentHelp("Write the lesion label volume here (.nii.gz).", valueName: "lesions.nii.gz"))
    var maskOut: String?

    @Option(name: .long, help: ArgumentHelp("How slice results become the verdict: lesion-weighted (default), mean or majority.", valueName: "rule"))
    var rule: String?

    @Option(name: .customLong("window-center"), help: ArgumentHelp("Centre of the HU window that maps the slices to the model's input (default -600).", valueName: "HU"))
    var windowCenter: Double?

    @Option(name: .customLong("window-width"), help: ArgumentHelp("Width of that window (default 1500).", valueName: "HU"))
    var windowWidth: Double?

    @Option(name: .long, help: ArgumentHelp("The model to use (id or object path; default: the daemon's default model).", valueName: "id"))
    var model: String?

    @Option(name: .long, help: "The seed of the RoI-batch padding (default: the daemon's, 1).")
    var seed: UInt64?

    func validate() throws {
        if paths.isEmpty { throw ValidationError("give at least one file or folder") }
        if let maskOut, !maskOut.hasSuffix(".nii.gz") {
            throw ValidationError("--mask-out must end in .nii.gz (the daemon writes the label volume compressed)")
        }
        if let rule, !["lesion-weighted", "mean", "majority"].contains(rule) {
            throw ValidationError("--rule must be lesion-weighted, mean or majority")
        }
        if let windowWidth, !(windowWidth > 0) { throw ValidationError("--window-width must be positive") }
    }

    func run() throws {
        try runCommand(global) { client in
            var options: [String: DBusValue] = [:]
            if let model { options[ScanOption.model.key] = .objectPath(API.modelPath(model)) }
            if let seed { options[ScanOption.seed.key] = .uint64(seed) }
            if let series { options[ScanOption.series.key] = .string(series) }
            if let rule { options[ScanOption.rule.key] = .string(rule) }
            if let windowCenter { options[ScanOption.windowCenter.key] = .double(windowCenter) }
            if let windowWidth { options[ScanOption.windowWidth.key] = .double(windowWidth) }
            options[ScanOption.labelVolume.key] = .boolean(maskOut != nil)
            let fds = try paths.map(Self.open)
            let reply = try client.call(API.root, API.manager, "AnalyseScan", [.fileDescriptors(fds), .vardict(options)],
                                        expecting: "o", timeout: .seconds(600))
            for fd in fds { fd.close() }
            let path = try reply[0].asObjectPath()
            let style: WatchStyle = global.json ? .silent : (stdoutIsTerminal ? .bar : .silent)
            let (snapshot, detached) = try waitForJob(client, path, style: style, cancelOnInterrupt: true)
            if detached { return Exit.interrupted }
            guard snapshot.state == "completed" else {
                let name = (try? snapshot.result["error"]?.asString()) ?? ""
                throw CtlError(snapshot.exitCode, snapshot.message.isEmpty ? "The scan analysis \(snapshot.state)." : snapshot.message,
                               name: name.isEmpty ? nil : name)
            }
            var result = snapshot.result
            if let maskOut {
                guard let fd = try? result["label_volume"]?.asFileDescriptor() else {
                    throw CtlError(Exit.failed, "The daemon's result holds no label volume.")
                }
                try writeFile(try fd.readAll(), to: maskOut)
                result["label_volume"] = .string(maskOut)
            } else {
                result["label_volume"] = nil
            }
            result["message"] = nil
            // The daemon names files by the descriptors' real paths; show them as given here.
            let names = Self.nameMapping(paths)
            result = result.mapValues { Self.renamingFiles($0, names) }
            let json = JSON.sorted(result)
            if global.json {
                printLine(json.text)
            } else {
                let object = (try? JSONSerialization.jsonObject(with: Data(json.text.utf8))) as? [String: Any] ?? [:]
                printLine(Self.summary(object, job: snapshot.number, maskOut: maskOut))
            }
            return Exit.ok
        }
    }

    /// A folder as one O_DIRECTORY descriptor, a file as itself.
    static func open(_ path: String) throws -> FileDescriptor {
        var st = stat()
        guard stat(path, &st) == 0 else {
            let err = errno
            if err == ENOENT || err == ENOTDIR { throw CtlError(Exit.notFound, "\(path): no such file or folder.") }
            throw CtlError(Exit.failed, "\(path): \(String(cString: strerror(err))).")
        }
        if (st.st_mode & S_IFMT) != S_IFDIR { return try openForReading(path) }
        let fd = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)  // owned by the FileDescriptor below
        guard fd >= 0 else {
            let err = errno
            if err == EACCES || err == EPERM { throw CtlError(Exit.notAuthorized, "\(path): \(String(cString: strerror(err))).") }
            throw CtlError(Exit.failed, "\(path): \(String(cString: strerror(err))).")
        }
        return FileDescriptor(taking: fd)
    }

    /// (real path + "/", the path as given + "/") for each folder given, and (real path, as given) for each file.
    static func nameMapping(_ paths: [String]) -> [(String, String)] {
        paths.compactMap { p in
            guard let real = realpath(p, nil) else { return nil }
            defer { free(real) }
            let r = String(cString: real)
            var st = stat()
            if stat(p, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR {
                return (r.hasSuffix("/") ? r : r + "/", p.hasSuffix("/") ? p : p + "/")
            }
            return (r, p)
        }
    }

    /// `value` with the strings under the keys `file` (a slice's source) and `what` (a set-aside
    /// entry) renamed by `names`.
    static func renamingFiles(_ value: DBusValue, _ names: [(String, String)], key: String? = nil) -> DBusValue {
        switch value {
        case .string(let s) where key == "file" || key == "what":
            for (real, given) in names {
                if s == real { return .string(given) }
                if real.hasSuffix("/"), s.hasPrefix(real) { return .string(given + s.dropFirst(real.count)) }
            }
            return value
        case .variant(let inner): return .variant(renamingFiles(inner, names, key: key))
        case .array(let e, let items): return .array(elementSignature: e, items.map { renamingFiles($0, names) })
        case .dictionary(let k, let v, let pairs):
            return .dictionary(keySignature: k, valueSignature: v, pairs.map { pair in
                let name = (try? pair.0.asString()) ?? nil
                return (pair.0, renamingFiles(pair.1, names, key: name))
            })
        default: return value
        }
    }

    /// The readable summary of a scan result (its JSON object).
    static func summary(_ r: [String: Any], job: String, maskOut: String?) -> String {
        func d(_ v: Any?) -> Double { (v as? NSNumber)?.doubleValue ?? 0 }
        func f(_ x: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", x) }
        let verdict = r["verdict"] as? [String: Any] ?? [:]
        let probabilities = (verdict["probabilities"] as? [Any] ?? []).map(d)
        let classIndex = Int(d(verdict["class_index"]))
        let spacing = (r["spacing_mm"] as? [Any] ?? []).map { f(d($0), 2) }.joined(separator: " × ")
        var lines = [
            "series \(r["series_uid"] as? String ?? "?"): \(Int(d(r["slice_count"]))) slices (\(Int(d(r["analysed_slices"]))) with a lung field), spacing \(spacing) mm",
            "  verdict: \(verdict["class"] as? String ?? "?"), probability \(f(classIndex < probabilities.count ? probabilities[classIndex] : 0, 3)) (\(verdict["rule"] as? String ?? "?"))",
            "  lesions \(f(d(r["lesion_volume_ml"]))) mL of \(f(d(r["lung_volume_ml"]))) mL lung: \(f(d(r["opacity_percent"])))% opacity (left \(f(d(r["opacity_percent_left"])))%, right \(f(d(r["opacity_percent_right"])))%)",
        ]
        let slices = r["slices"] as? [[String: Any]] ?? []
        if let m = (r["max_involvement_slice"] as? NSNumber)?.intValue, m >= 0, m < slices.count {
            let s = slices[m]
            let lung = d(s["lung_area_mm2"]), lesion = d(s["lesion_area_mm2"])
            let source = s["source"] as? [String: Any] ?? [:]
            lines.append("  most involved: slice \(m + 1) at \(f(d(s["position_mm"]))) mm (\(source["file"] as? String ?? "?")), \(f(lung > 0 ? 100 * lesion / lung : 0))% of its lung field")
        }
        for w in r["warnings"] as? [Any] ?? [] { lines.append("  warning: \(w)") }
        let setAside = r["set_aside"] as? [[String: Any]] ?? []
        for s in setAside.prefix(10) { lines.append("  set aside: \(s["what"] as? String ?? "?"): \(s["reason"] as? String ?? "?")") }
        if setAside.count > 10 { lines.append("  set aside: \(setAside.count - 10) more") }
        if let maskOut { lines.append("  label volume written to \(maskOut)") }
        let timings = r["timings"] as? [String: Any] ?? [:]
        let model = (r["model"] as? String).map { API.id($0) } ?? "?"
        // Job and model first, the time last (a line that ends in seconds).
        lines.append("  job \(job), model \(model), \(f(d(timings["total"]))) s")
        return lines.joined(separator: "\n")
    }
}
