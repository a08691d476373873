#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import SystemIO

/// Whole-file reads and crash-safe whole-file writes on plain POSIX calls.
///
/// `write` puts the bytes into a temporary file in the destination's directory, fsyncs it, renames
/// it over the destination and fsyncs the directory: a reader sees the old file or the complete new
/// one, never a half-written one, also after a crash or power loss.
public enum AtomicFile {
    /// Writes `bytes` to `path` atomically (temporary file in the same directory, fsync, rename,
    /// directory fsync). The file gets mode 0644 minus the process umask.
    /// - Throws: `ImageError.io` naming the path and the failing call; the temporary file is removed.
    public static func write(_ bytes: [UInt8], to path: String) throws {
        try bytes.withUnsafeBytes { try write(buffer: $0, to: path) }
    }

    /// Writes the bytes of a UTF-8 string to `path` atomically (see `write(_:to:)`).
    /// - Throws: `ImageError.io`.
    public static func write(text: String, to path: String) throws {
        try write(Array(text.utf8), to: path)
    }

    /// Writes a raw buffer to `path` atomically (see `write(_:to:)`).
    /// - Throws: `ImageError.io`.
    public static func write(buffer: UnsafeRawBufferPointer, to path: String) throws {
        let (directory, base) = split(path)
        guard !base.isEmpty else { throw ImageError.io(path: path, message: "the path names a directory") }
        var fd: Int32 = -1
        var temporary = ""
        for _ in 0..<16 {
            temporary = directory + "/." + base + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            fd = Descriptors.open(temporary, O_WRONLY | O_CREAT | O_EXCL, 0o644)
            if fd >= 0 || errno != EEXIST { break }
        }
        guard fd >= 0 else { throw ImageError.io(path: path, message: "cannot create a temporary file: \(errnoText())") }
        do {
            try writeAll(fd: fd, buffer: buffer, path: path)
            if fsync(fd) != 0 { throw ImageError.io(path: path, message: "fsync failed: \(errnoText())") }
            let closed = fd
            fd = -1
            if !Descriptors.closeReportingError(closed) {
                throw ImageError.io(path: path, message: "close failed: \(errnoText())")
            }
            if rename(temporary, path) != 0 { throw ImageError.io(path: path, message: "rename failed: \(errnoText())") }
        } catch {
            if fd >= 0 { Descriptors.close(fd) }
            unlink(temporary)
            throw error
        }
        let dirfd = Descriptors.open(directory, O_RDONLY | O_DIRECTORY)
        if dirfd >= 0 {
            _ = fsync(dirfd)
            Descriptors.close(dirfd)
        }
    }

    /// Writes all of `buffer` to the descriptor at its current offset, retrying short writes and EINTR.
    /// - Throws: `ImageError.io` with `path` as the name used in the message.
    static func writeAll(fd: Int32, buffer: UnsafeRawBufferPointer, path: String) throws {
        var offset = 0
        while offset < buffer.count {
            let n = sysWrite(fd, buffer.baseAddress! + offset, buffer.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                throw ImageError.io(path: path, message: "write failed: \(errnoText())")
            }
            offset += n
        }
    }

    /// Reads a whole file into memory.
    /// - Parameter limit: the largest accepted file size in bytes.
    /// - Throws: `ImageError.io` when the file cannot be opened or read, `ImageError.fileTooLarge`.
    public static func read(path: String, limit: Int = Int.max) throws -> [UInt8] {
        let fd = Descriptors.open(path, O_RDONLY)
        guard fd >= 0 else { throw ImageError.io(path: path, message: errnoText()) }
        defer { Descriptors.close(fd) }
        return try read(fileDescriptor: fd, limit: limit, name: path)
    }

    /// Reads everything a descriptor holds. A seekable descriptor (regular file, memfd) is read from
    /// offset 0 with `pread`, leaving its offset unchanged; a pipe or socket is read to end of file.
    /// The descriptor is not closed.
    /// - Throws: `ImageError.io`, `ImageError.fileTooLarge`.
    public static func read(fileDescriptor fd: Int32, limit: Int = Int.max, name: String? = nil) throws -> [UInt8] {
        let label = name ?? "file descriptor \(fd)"
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw ImageError.io(path: label, message: errnoText()) }
        if (info.st_mode & S_IFMT) == S_IFREG {
            let size = Int(info.st_size)
            if size > limit { throw ImageError.fileTooLarge(bytes: size, limit: limit) }
            var bytes = [UInt8](repeating: 0, count: size)
            var offset = 0
            try bytes.withUnsafeMutableBytes { raw in
                while offset < size {
                    let n = pread(fd, raw.baseAddress! + offset, size - offset, off_t(offset))
                    if n < 0 {
                        if errno == EINTR { continue }
                        throw ImageError.io(path: label, message: "read failed: \(errnoText())")
                    }
                    if n == 0 { break }  // the file shrank while we read it
                    offset += n
                }
            }
            if offset < size { bytes.removeLast(size - offset) }
            return bytes
        }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { sysRead(fd, $0.baseAddress!, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ImageError.io(path: label, message: "read failed: \(errnoText())")
            }
            if n == 0 { break }
            if bytes.count + n > limit { throw ImageError.fileTooLarge(bytes: bytes.count + n, limit: limit) }
            bytes.append(contentsOf: chunk[0..<n])
        }
        return bytes
    }

    /// Creates a directory and its missing parents (mode 0755 minus umask).
    /// - Throws: `ImageError.io` when a component cannot be created or is not a directory.
    public static func makeDirectories(_ path: String) throws {
        var prefix = path.hasPrefix("/") ? "/" : ""
        for component in path.split(separator: "/") where !component.isEmpty {
            prefix += component
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
                throw ImageError.io(path: prefix, message: "mkdir failed: \(errnoText())")
            }
            var info = stat()
            if stat(prefix, &info) != 0 || (info.st_mode & S_IFMT) != S_IFDIR {
                throw ImageError.io(path: prefix, message: "not a directory")
            }
            prefix += "/"
        }
    }

    static func split(_ path: String) -> (directory: String, base: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let directory = String(path[..<slash])
        return (directory.isEmpty ? "/" : directory, String(path[path.index(after: slash)...]))
    }

    static func errnoText() -> String {
        String(cString: strerror(errno))
    }
}

/// The POSIX `write`, reachable from inside types that declare their own `write`.
private func sysWrite(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int {
    write(fd, buffer, count)
}

/// The POSIX `read`, reachable from inside types that declare their own `read`.
private func sysRead(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int {
    read(fd, buffer, count)
}
