// The descriptor registry (issue 21): one owner per descriptor, and a close that breaks the rule
// stops the process. The violations run as exit tests (a child process of the test binary).
import Foundation
import Bus
import SystemIO
import TestSupport
import Testing

@Suite("Descriptor ownership")
struct DescriptorsTests {
    @Test func scopeOpenAndCloseKeepTheRegistryBalanced() throws {
        let path = NSTemporaryDirectory() + "descriptors-\(UUID().uuidString)"
        #expect(FileManager.default.createFile(atPath: path, contents: Data([1, 2, 3])))
        defer { unlink(path) }
        let fds = (0..<32).map { _ in Descriptors.open(path, O_RDONLY) }
        #expect(fds.allSatisfy { $0 >= 0 })
        if Descriptors.isChecking {
            for fd in fds { #expect(Descriptors.owner(of: fd) != nil) }
        }
        // Close-on-exec is always set by Descriptors.open.
        #expect(fds.allSatisfy { fcntl($0, F_GETFD) & FD_CLOEXEC != 0 })
        for fd in fds { Descriptors.close(fd) }
        if Descriptors.isChecking {
            for fd in fds { #expect(Descriptors.owner(of: fd) == nil) }
        }
    }

    @Test func checkingIsOnUnderTheTestScript() {
        // scripts/test exports AFFINITY_CHECK_DESCRIPTORS=1: the whole suite runs with the check.
        if ProcessInfo.processInfo.environment[Descriptors.environmentVariable] == "1" {
            #expect(Descriptors.isChecking)
        }
    }

    @Test func theTestProcessClosesThroughTheGuard() {
        // Tests/CloseGuard's close(2) is linked into this process: every library's close is checked.
        #expect(closeGuardInstalled)
    }

    @Test func aDoubleCloseStopsTheProcess() async {
        await #expect(processExitsWith: .signal(SIGABRT)) {
            Descriptors.enableChecking()
            let fd = Descriptors.open("/dev/null", O_RDONLY)
            Descriptors.close(fd)
            Descriptors.close(fd)
        }
    }

    @Test func closingANumberNobodyRegisteredStopsTheProcess() async {
        await #expect(processExitsWith: .signal(SIGABRT)) {
            Descriptors.enableChecking()
            // Opened behind the registry's back: closing it through Descriptors is a bug.
            let fd = Glibc.open("/dev/null", O_RDONLY)
            Descriptors.close(fd)
        }
    }

    @Test func aRawCloseOfAnOwnedDescriptorStopsTheProcess() async {
        await #expect(processExitsWith: .signal(SIGABRT)) {
            Descriptors.enableChecking()
            let fd = Descriptors.open("/dev/null", O_RDONLY)
            _ = Glibc.close(fd)  // not its owner: the guard's close(2) stops here
        }
    }

    @Test func aRawCloseOfAFileDescriptorsNumberStopsTheProcess() async {
        await #expect(processExitsWith: .signal(SIGABRT)) {
            Descriptors.enableChecking()
            let (r, w) = try FileDescriptor.pipe()
            _ = Glibc.close(r.rawValue)  // what the old test harness did to a mask's descriptor
            withExtendedLifetime(w) {}
        }
    }

    @Test func aRawDoubleCloseStopsTheProcess() async {
        await #expect(processExitsWith: .signal(SIGABRT)) {
            Descriptors.enableChecking()
            let fd = Glibc.open("/dev/null", O_RDONLY)
            _ = Glibc.close(fd)
            _ = Glibc.close(fd)  // EBADF: a double close
        }
    }

    @Test func aNumberTakenByTwoOwnersStopsTheProcess() async {
        await #expect(processExitsWith: .signal(SIGABRT)) {
            Descriptors.enableChecking()
            let fd = Descriptors.open("/dev/null", O_RDONLY)
            _ = FileDescriptor(taking: fd)  // a second owner of the same number
        }
    }

    @Test func ownersCloseWithoutComplaint() async {
        await #expect(processExitsWith: .success) {
            Descriptors.enableChecking()
            for _ in 0..<100 {
                let fd = Descriptors.open("/dev/null", O_RDONLY)
                let (r, w) = try FileDescriptor.pipe()
                let memfd = try FileDescriptor.sealedMemfd(name: "t", contents: [1, 2, 3])
                let copy = try memfd.duplicate()
                w.close()
                w.close()  // idempotent: the wrapper closes once
                _ = r
                Descriptors.close(fd)
                let released = copy.release()
                Descriptors.adopt(released)
                Descriptors.close(released)
            }
            exit(Descriptors.ownedCount == 0 ? 0 : 1)
        }
    }
}

/// No raw close(2) outside the owners: a descriptor is closed by its FileDescriptor or by
/// `Descriptors.close` beside the open that made it. (The plugins, separate libraries behind a C
/// ABI, close what they opened and never handed over; they are outside this rule.)
@Suite("No raw close")
struct NoRawCloseTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test func noRawCloseInSourcesOrTests() throws {
        let allowed: Set<String> = ["Sources/SystemIO/Descriptors.swift", "Sources/Bus/FileDescriptor.swift"]
        var offenders: [String] = []
        let pattern = try NSRegularExpression(pattern: #"(^|[^.\w])(Glibc\.)?close\(\s*[A-Za-z]"#)
        for folder in ["Sources", "Tests"] {
            let root = Self.repository.appendingPathComponent(folder)
            guard let walker = FileManager.default.enumerator(at: root, includingPropertiesForKeys: nil) else { continue }
            for case let url as URL in walker where url.pathExtension == "swift" {
                let relative = String(url.path.dropFirst(Self.repository.path.count + 1))
                if allowed.contains(relative) { continue }
                let text = try String(contentsOf: url, encoding: .utf8)
                if text.contains("func close(_") { continue }  // a test's own close(_:_:) comparison
                for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                    let s = String(line)
                    if s.trimmingCharacters(in: .whitespaces).hasPrefix("//") { continue }
                    if pattern.firstMatch(in: s, range: NSRange(s.startIndex..., in: s)) != nil {
                        offenders.append("\(relative):\(n + 1): \(s.trimmingCharacters(in: .whitespaces))")
                    }
                }
            }
        }
        #expect(offenders.isEmpty, "raw close calls:\n\(offenders.joined(separator: "\n"))")
    }
}
