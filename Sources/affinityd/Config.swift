// The daemon's configuration: /etc/affinity/affinityd.conf (key = value lines), then the command line.
import Foundation

/// Settings of affinityd; see systemd/affinityd.conf for every key and its default.
struct DaemonConfig: Equatable {
    /// "system", "session" or a D-Bus address.
    var bus = "system"
    /// "polkit" or "none"; nil: polkit on the system bus, none otherwise.
    var authorization: String? = nil
    var stateDirectory = "/var/lib/affinity"
    var analyseWorkers = 1
    var analyseQueueLimit = 16
    var maxImageBytes = 64 << 20
    var maxImageDimension = 8192
    var maxImportBytes = 1 << 30
    /// AnalyseScan: the most slices of one scan, and the most voxels (slices × rows × columns).
    var maxScanSlices = 2000
    var maxScanVoxels = 1 << 30
    /// err, warning, notice, info or debug.
    var logLevel = "info"
    /// Where the interface XML files are; nil: found next to the build tree or in
    /// /usr/share/dbus-1/interfaces.
    var interfacesDirectory: String? = nil
    /// Development plugin folders (`plugin_dirs`, comma-separated; `--plugin-dir`). Empty: the
    /// system folder /usr/lib/affinity/plugins in system (root-owned) mode; otherwise these folders,
    /// in development mode (any readable library loads), and not the system folder.
    var pluginDirectories: [String] = []
    /// Whether a store without a default model gets the bundled demo model (models/phantom-demo,
    /// found as `BundledModel.directory` says) imported and made the default at start.
    var bundledModel = true
    /// Whether training jobs found interrupted at start (the daemon stopped or died while they
    /// ran) are resumed from their last checkpoints (else: failed, for Job.Resume).
    var autoResume = true
    /// Train's and Finetune's default checkpoint interval, seconds (0: none by time).
    var checkpointInterval = 900
    /// Train's and Finetune's default checkpoint every N iterations (0: none by count).
    var checkpointIterations = 0

    static let keys: Set<String> = ["bus", "authorization", "state_dir", "analyse_workers", "analyse_queue_limit",
                                    "max_image_bytes", "max_image_dimension", "max_import_bytes", "log_level", "interfaces_dir", "plugin_dirs",
                                    "bundled_model", "auto_resume", "checkpoint_interval", "checkpoint_iterations",
                                    "max_scan_slices", "max_scan_voxels"]

    /// Applies a configuration file's `key = value` lines (`#` and `;` comments, `[section]`
    /// headers ignored, values may be quoted).
    /// - Throws: a sentence naming the file, line and key on an unknown key or a bad value.
    mutating func apply(file path: String) throws {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ConfigError("Cannot read the configuration file \(path).")
        }
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") || line.hasPrefix("[") { continue }
            guard let eq = line.firstIndex(of: "=") else {
                throw ConfigError("\(path) line \(n + 1): expected 'key = value'.")
            }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces)
            var value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
            do { try set(key, value) } catch let e as ConfigError {
                throw ConfigError("\(path) line \(n + 1): \(e.message)")
            }
        }
    }

    mutating func set(_ key: String, _ value: String) throws {
        func int(_ lo: Int, _ hi: Int) throws -> Int {
            guard let v = Int(value), v >= lo, v <= hi else { throw ConfigError("\(key) must be an integer from \(lo) to \(hi), not '\(value)'.") }
            return v
        }
        func yesNo() throws -> Bool {
            switch value.lowercased() {
            case "yes", "true", "1", "on": return true
            case "no", "false", "0", "off": return false
            default: throw ConfigError("\(key) must be yes or no, not '\(value)'.")
            }
        }
        switch key {
        case "bus": bus = value
        case "authorization":
            guard ["polkit", "none"].contains(value) else { throw ConfigError("authorization must be polkit or none, not '\(value)'.") }
            authorization = value
        case "state_dir": stateDirectory = value
        case "analyse_workers": analyseWorkers = try int(1, 64)
        case "analyse_queue_limit": analyseQueueLimit = try int(0, 100_000)
        case "max_image_bytes": maxImageBytes = try int(1024, 1 << 32)
        case "max_image_dimension": maxImageDimension = try int(16, 65536)
        case "max_import_bytes": maxImportBytes = try int(1024, 1 << 34)
        case "max_scan_slices": maxScanSlices = try int(1, 100_000)
        case "max_scan_voxels": maxScanVoxels = try int(1, 1 << 36)
        case "log_level":
            guard Self.priorities[value] != nil else { throw ConfigError("log_level must be err, warning, notice, info or debug, not '\(value)'.") }
            logLevel = value
        case "interfaces_dir": interfacesDirectory = value
        case "plugin_dirs":
            pluginDirectories = value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        case "bundled_model": bundledModel = try yesNo()
        case "auto_resume": autoResume = try yesNo()
        case "checkpoint_interval": checkpointInterval = try int(0, 7 * 86400)
        case "checkpoint_iterations": checkpointIterations = try int(0, 1_000_000_000)
        default: throw ConfigError("unknown key '\(key)'; known keys: \(Self.keys.sorted().joined(separator: ", ")).")
        }
    }

    static let priorities = ["err": 3, "warning": 4, "notice": 5, "info": 6, "debug": 7]
}

struct ConfigError: Error, CustomStringConvertible {
    var message: String
    init(_ m: String) { message = m }
    var description: String { message }
}
