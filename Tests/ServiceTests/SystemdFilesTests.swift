// The systemd unit passes `systemd-analyze verify` and keeps its hardening (its exposure score, read
// offline from the file); the polkit actions let the unprivileged daemon ask about its callers;
// scripts/install stages every file. scripts/system-test runs all of it under a real systemd.
import Foundation
import TestSupport
import Testing

@Suite("systemd files")
struct SystemdFilesTests {
    static let analyze = "/usr/bin/systemd-analyze"

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: analyze), "systemd-analyze is not installed (apt install systemd)"))
    func unitVerifies() throws {
        let exe = try #require(Paths.affinityd, "affinityd is not built")
        let dir = try Paths.temporaryDirectory("unit")
        defer { try? FileManager.default.removeItem(at: dir) }
        // The unit as installed, with ExecStart pointing at the built binary (verify checks it exists).
        let unit = try String(contentsOf: Paths.repository.appendingPathComponent("systemd/affinityd.service"), encoding: .utf8)
        for key in ["Type=notify", "BusName=org.lesionaffinity.Affinity1", "User=affinity", "StateDirectory=affinity",
                    "ConfigurationDirectory=affinity", "CacheDirectory=affinity", "ProtectSystem=strict", "ProtectHome=yes",
                    "PrivateNetwork=yes", "NoNewPrivileges=yes", "WatchdogSec=", "ExecReload=/bin/kill -HUP $MAINPID",
                    "SystemCallErrorNumber=EPERM", "MemoryDenyWriteExecute=yes", "ProtectProc=invisible", "ProcSubset=pid",
                    "IPAddressDeny=any", "UMask=0077", "RestrictAddressFamilies=AF_UNIX\n", "CapabilityBoundingSet=\n"] {
            #expect(unit.contains(key), "missing \(key)")
        }
        // The test switch that stalls the bus thread is never set by the unit.
        #expect(!unit.contains("AFFINITY_DEBUG"))
        let file = dir.appendingPathComponent("affinityd.service")
        try unit.replacingOccurrences(of: "/usr/bin/affinityd", with: exe).write(to: file, atomically: true, encoding: .utf8)
        let r = try runTool("systemd-analyze", ["verify", "--man=no", file.path])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        #expect(!r.stderr.contains("affinityd.service:"), "\(r.stderr)")
        // The exposure score of the file (1.1 before issue 17; the running unit scores the same 0.2).
        let security = try runTool("systemd-analyze", ["security", "--offline=yes", "--no-pager", file.path])
        let overall = security.stdout.split(separator: "\n").first { $0.contains("Overall exposure level") }
        let score = overall.flatMap { $0.components(separatedBy: "affinityd.service: ").last?.split(separator: " ").first }
            .flatMap { Double($0) }
        #expect(score != nil && score! <= 0.2, "\(overall.map(String.init) ?? security.stdout + security.stderr)")
    }

    /// polkitd answers CheckAuthorization about another user's process only to root or to an owner
    /// of the action; affinityd runs as affinity, so every action names it as an owner.
    @Test func everyPolkitActionIsOwnedByTheDaemonsUser() throws {
        let policy = try String(contentsOf: Paths.repository.appendingPathComponent("systemd/org.lesionaffinity.affinity1.policy"),
                                encoding: .utf8)
        let actions = policy.components(separatedBy: "<action id=").dropFirst()
        #expect(actions.count == 5)
        for action in actions {
            #expect(action.contains(#"<annotate key="org.freedesktop.policykit.owner">unix-user:affinity</annotate>"#),
                    "\(action.prefix(60))")
        }
    }

    @Test func installStagesEveryFileAndTheConfigParses() throws {
        let exe = try #require(Paths.affinityd, "affinityd is not built")
        let stage = try Paths.temporaryDirectory("stage")
        defer { try? FileManager.default.removeItem(at: stage) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = [Paths.repository.appendingPathComponent("scripts/install").path]
        p.environment = ["PATH": "/usr/bin:/bin", "DESTDIR": stage.path,
                         "BUILD_DIR": URL(fileURLWithPath: exe).deletingLastPathComponent().deletingLastPathComponent().path]
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        for path in ["usr/bin/affinityd", "usr/lib/systemd/system/affinityd.service",
                     "usr/share/dbus-1/system-services/org.lesionaffinity.Affinity1.service",
                     "usr/share/dbus-1/system.d/org.lesionaffinity.Affinity1.conf",
                     "usr/share/polkit-1/actions/org.lesionaffinity.affinity1.policy",
                     "usr/lib/sysusers.d/affinity.conf", "usr/lib/tmpfiles.d/affinity.conf",
                     "usr/share/dbus-1/interfaces/org.lesionaffinity.Affinity1.Manager.xml",
                     "etc/affinity/affinityd.conf"] {
            #expect(FileManager.default.fileExists(atPath: stage.appendingPathComponent(path).path), "\(path) not installed")
        }
        // The plugins built beside the daemon, in the folder it loads from.
        let built = URL(fileURLWithPath: exe).deletingLastPathComponent()
        for name in try FileManager.default.contentsOfDirectory(atPath: built.path)
        where name.hasPrefix("libaffinity-") && name.hasSuffix(".so") {
            #expect(FileManager.default.fileExists(atPath: stage.appendingPathComponent("usr/lib/affinity/plugins/\(name)").path),
                    "\(name) not installed")
        }
        // The shipped configuration is accepted by the daemon's parser (a bad key would exit 78).
        let bad = stage.appendingPathComponent("bad.conf")
        try "no_such_key = 1\n".write(to: bad, atomically: true, encoding: .utf8)
        let d = Process()
        d.executableURL = URL(fileURLWithPath: exe)
        d.arguments = ["--config", bad.path, "--bus", "unix:path=/nonexistent"]
        let err = Pipe()
        d.standardError = err
        try d.run()
        d.waitUntilExit()
        #expect(d.terminationStatus == 78)
        #expect(String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).contains("unknown key 'no_such_key'"))
        let good = Process()
        good.executableURL = URL(fileURLWithPath: exe)
        good.arguments = ["--config", stage.appendingPathComponent("etc/affinity/affinityd.conf").path, "--bus", "unix:path=/nonexistent"]
        good.standardError = FileHandle.nullDevice
        try good.run()
        good.waitUntilExit()
        #expect(good.terminationStatus == 69, "the shipped configuration parses; only the bus is unreachable")
    }
}
