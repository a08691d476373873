// AtomicFile: the package's one whole-file reader and atomic writer (temporary file in the same
// folder, write all, fsync, close, rename, fsync of the folder).
import Foundation
import SystemIO
import Testing

@Suite("Atomic file")
struct AtomicFileTests {
    /// A fresh empty directory.
    static func directory() throws -> String {
        let path = NSTemporaryDirectory() + "atomicfile-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
        return path
    }

    static func contents(_ dir: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
    }

    @Test func writesReplaceTheFileAndLeaveNoTemporary() throws {
        let dir = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/a.bin"
        try AtomicFile.write([1, 2, 3], to: path)
        #expect(try AtomicFile.read(path: path) == [1, 2, 3])
        try AtomicFile.write(text: "second", to: path)
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "second")
        try AtomicFile.write(Data("third".utf8), to: URL(fileURLWithPath: path))
        #expect(try AtomicFile.read(contentsOf: URL(fileURLWithPath: path)) == Data("third".utf8))
        try [UInt8]([9, 9]).withUnsafeBytes { try AtomicFile.write(buffer: $0, to: path) }
        #expect(try AtomicFile.read(path: path) == [9, 9])
        try AtomicFile.write([], to: path)
        #expect(try AtomicFile.read(path: path) == [])
        #expect(try Self.contents(dir) == ["a.bin"])
        // 0644 minus the umask: never executable, never writable by others.
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int ?? 0
        #expect(mode & 0o133 == 0, "mode \(String(mode, radix: 8))")
    }

    @Test func aFailedWriteNamesThePathAndTheCallAndLeavesNoTemporary() throws {
        let dir = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try AtomicFile.write(text: "old", to: dir + "/keep")
        // No directory to create the temporary file in.
        let missing = dir + "/no/such/file"
        #expect(throws: FileIOError.self) { try AtomicFile.write(text: "x", to: missing) }
        do { try AtomicFile.write(text: "x", to: missing) } catch let e as FileIOError {
            guard case .io(let path, let message) = e else { Issue.record("\(e)"); return }
            #expect(path == missing)
            #expect(message.hasPrefix("cannot create a temporary file: "))
            #expect(e.description == "Could not access \(missing): \(message).")
        }
        // The rename fails (the destination is a non-empty directory): the temporary is removed.
        try FileManager.default.createDirectory(atPath: dir + "/occupied/inner", withIntermediateDirectories: true)
        do {
            try AtomicFile.write(text: "x", to: dir + "/occupied")
            Issue.record("the rename must fail")
        } catch let e as FileIOError {
            guard case .io(_, let message) = e else { Issue.record("\(e)"); return }
            #expect(message.hasPrefix("rename failed: "))
        }
        // A path that names no file.
        #expect(throws: FileIOError.io(path: dir + "/", message: "the path names a directory")) {
            try AtomicFile.write(text: "x", to: dir + "/")
        }
        #expect(try Self.contents(dir) == ["keep", "occupied"])
        #expect(try String(contentsOfFile: dir + "/keep", encoding: .utf8) == "old")
    }

    @Test func readsHonourTheLimitAndNameTheFile() throws {
        let dir = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/f"
        try AtomicFile.write([UInt8](repeating: 7, count: 1000), to: path)
        #expect(try AtomicFile.read(path: path, limit: 1000).count == 1000)
        #expect(throws: FileIOError.fileTooLarge(bytes: 1000, limit: 999)) { try AtomicFile.read(path: path, limit: 999) }
        #expect(throws: FileIOError.fileTooLarge(bytes: 1000, limit: 10)) {
            try AtomicFile.read(contentsOf: URL(fileURLWithPath: path), limit: 10)
        }
        #expect(FileIOError.fileTooLarge(bytes: 1000, limit: 10).description == "The file is 1000 bytes, larger than the limit of 10 bytes.")
        do { _ = try AtomicFile.read(path: dir + "/missing") } catch let e as FileIOError {
            guard case .io(let p, _) = e else { Issue.record("\(e)"); return }
            #expect(p == dir + "/missing")
        }
        // By descriptor: a regular file from offset 0, its offset left alone.
        let fd = Descriptors.open(path, O_RDONLY)
        #expect(fd >= 0)
        defer { Descriptors.close(fd) }
        #expect(lseek(fd, 10, SEEK_SET) == 10)
        #expect(try AtomicFile.read(fileDescriptor: fd).count == 1000)
        #expect(lseek(fd, 0, SEEK_CUR) == 10)
    }

    @Test func readsAPipeToItsEndWithinTheLimit() throws {
        for (count, limit) in [(100_000, Int.max), (100_000, 70_000)] {
            var ends: [Int32] = [0, 0]
            #expect(pipe(&ends) == 0)
            let readEnd = ends[0], writeEnd = ends[1]
            Descriptors.adopt(readEnd); Descriptors.adopt(writeEnd)
            defer { Descriptors.close(readEnd) }
            let writer = Thread {
                let bytes = [UInt8](repeating: 3, count: count)
                try? bytes.withUnsafeBytes { try AtomicFile.writeAll(fd: writeEnd, buffer: $0, path: "pipe") }
                Descriptors.close(writeEnd)
            }
            writer.start()
            if limit >= count {
                #expect(try AtomicFile.read(fileDescriptor: readEnd, limit: limit, name: "pipe") == [UInt8](repeating: 3, count: count))
            } else {
                #expect(throws: FileIOError.self) { try AtomicFile.read(fileDescriptor: readEnd, limit: limit, name: "pipe") }
                // Drain, so that the writer finishes.
                var sink = [UInt8](repeating: 0, count: 65536)
                while sink.withUnsafeMutableBytes({ Glibc.read(readEnd, $0.baseAddress!, $0.count) }) > 0 {}
            }
            while !writer.isFinished { usleep(1000) }
        }
    }

    @Test func makeDirectoriesCreatesParentsAndRefusesFiles() throws {
        let dir = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try AtomicFile.makeDirectories(dir + "/a/b/c")
        try AtomicFile.makeDirectories(dir + "/a/b/c")  // existing: fine
        var isDirectory: ObjCBool = false
        #expect(FileManager.default.fileExists(atPath: dir + "/a/b/c", isDirectory: &isDirectory) && isDirectory.boolValue)
        try AtomicFile.write(text: "", to: dir + "/file")
        #expect(throws: FileIOError.io(path: dir + "/file", message: "not a directory")) { try AtomicFile.makeDirectories(dir + "/file/sub") }
    }
}
