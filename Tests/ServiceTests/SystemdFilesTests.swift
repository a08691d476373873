// The systemd unit passes `systemd-analyze verify`; scripts/install stages every file.
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
        for key in ["Type=dbus", "BusName=org.lesionaffinity.Affinity1", "User=affinity", "StateDirectory=affinity",
                    "ConfigurationDirectory=affinity", "CacheDirectory=affinity", "ProtectSystem=strict", "ProtectHome=yes",
                    "PrivateNetwork=yes", "NoNewPrivileges=yes", "WatchdogSec=", "ExecReload=/bin/kill -HUP $MAINPID"] {
            #expect(unit.contains(key), "missing \(key)")
        }
        let file = dir.appendingPathComponent("affinityd.service")
        try unit.replacingOccurrences(of: "/usr/bin/affinityd", with: exe).write(to: file, atomically: true, encoding: .utf8)
        let r = try runTool("systemd-analyze", ["verify", "--man=no", file.path])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        #expect(!r.stderr.contains("affinityd.service:"), "\(r.stderr)")
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
