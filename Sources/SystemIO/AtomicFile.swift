// AtomicFile: whole-file reads with a size limit and crash-safe whole-file writes, on plain POSIX
// calls, every descriptor opened and closed through `Descriptors`. The one implementation of the
// package: NN's checkpoints, Imaging's PNGs and figures, the service's records and the tools'
// outputs all go through it (each maps `FileIOError` to its own error type where it has one).
#if canImport(Glibc)
import Glibc
#endif

/// Why a whole-file read or an atomic write failed. `description` is a sentence for people.
public enum FileIOError: Error, Equatable, Sendable, CustomStringConvertible {
    /// An operating-system call failed while reading or writing `path` (or a descriptor);
    /// `message` names the call and the system's reason, e.g. `rename failed: No such file or directory`.
    case io(path: String, message: String)
    /// The file is larger than the reader's byte limit.
    case fileTooLarge(bytes: Int, limit: Int)

    /// A sentence for people, ending with a full stop.
    public var description: String {
        switch self {
        case .io(let path, let message): return "Could not access \(path): \(message)."
        case .fileTooLarge(let bytes, let limit): return "The file is \(bytes) bytes, larger than the limit of \(limit) bytes."
        }
    }
}

/// Whole-file reads and crash-safe whole-file writes.
///
/// `write` puts the bytes into a temporary file in the destination's directory, writes them all,
/// fsyncs and closes it, renames it over the destination and fsyncs the directory: a reader sees
/// the old file or the complete new one, never a half-written one, also after a crash or power
/// loss. A failed write removes its temporary file. Temporary names are `.<name>.tmp-<pid>-<random>`
/// (a crash can leave one behind; the service removes such leftovers).
public enum AtomicFile {
    /// Writes `bytes` to `path` atomically. The file gets mode 0644 minus the process umask.
    /// - Throws: `FileIOError.io` naming the path and the failing call; the temporary file is removed.
    public static func write(_ bytes: [UInt8], to path: String) throws {
        try bytes.withUnsafeBytes { try write(buffer: $0, to: path) }
    }

    /// Writes the bytes of a UTF-8 string to `path` atomically (see `write(_:to:)`).
    /// - Throws: `FileIOError.io`.
    public static func write(text: String, to path: String) throws {
        try write(Array(text.utf8), to: path)
    }

    /// Writes a raw buffer to `path` atomically (see `write(_:to:)`).
    /// - Throws: `FileIOError.io`.
    public static func write(buffer: UnsafeRawBufferPointer, to path: String) throws {
        let (directory, base) = split(path)
        guard !base.isEmpty else { throw FileIOError.io(path: path, message: "the path names a directory") }
        var fd: Int32 = -1
        var temporary = ""
        for _ in 0..<16 {
            temporary = directory + "/." + base + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            fd = Descriptors.open(temporary, O_WRONLY | O_CREAT | O_EXCL, 0o644)
            if fd >= 0 || errno != EEXIST { break }
        }
        guard fd >= 0 else { throw FileIOError.io(path: path, message: "cannot create a temporary file: \(errnoText())") }
        do {
            try writeAll(fd: fd, buffer: buffer, path: path)
            if fsync(fd) != 0 { throw FileIOError.io(path: path, message: "fsync failed: \(errnoText())") }
            let closed = fd
            fd = -1
            if !Descriptors.closeReportingError(closed) {
                throw FileIOError.io(path: path, message: "close failed: \(errnoText())")
            }
            if rename(temporary, path) != 0 { throw FileIOError.io(path: path, message: "rename failed: \(errnoText())") }
        } catch {
            if fd >= 0 { Descriptors.close(fd) }
            unlink(temporary)
            throw error
        }
        // The rename is durable once the directory is; a directory that cannot be opened or
        // fsynced (some file systems refuse) leaves the new file in place, so it is not an error.
        let dirfd = Descriptors.open(directory, O_RDONLY | O_DIRECTORY)
        if dirfd >= 0 {
            _ = fsync(dirfd)
            Descriptors.close(dirfd)
        }
    }

    /// Writes all of `buffer` to the descriptor at its current offset, retrying short writes and EINTR.
    /// The descriptor is not closed.
    /// - Parameter path: the name used in error messages.
    /// - Throws: `FileIOError.io`.
    public static func writeAll(fd: Int32, buffer: UnsafeRawBufferPointer, path: String) throws {
        var offset = 0
        while offset < buffer.count {
            let n = sysWrite(fd, buffer.baseAddress! + offset, buffer.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                throw FileIOError.io(path: path, message: "write failed: \(errnoText())")
            }
            offset += n
        }
    }

    /// Reads a whole file into memory.
    /// - Parameter limit: the largest accepted file size in bytes.
    /// - Throws: `FileIOError.io` when the file cannot be opened or read, `FileIOError.fileTooLarge`.
    public static func read(path: String, limit: Int = Int.max) throws -> [UInt8] {
        try readFile(path: path, limit: limit, as: [UInt8].self)
    }

    /// Reads everything a descriptor holds. A regular file (or memfd) is read from offset 0 with
    /// `pread`, leaving its offset unchanged; a pipe or socket is read to end of file. The descriptor
    /// is not closed.
    /// - Parameters:
    ///   - limit: the largest accepted size in bytes (checked before a regular file is read, and as
    ///     a pipe's bytes arrive).
    ///   - name: the name used in error messages (default: `file descriptor <fd>`).
    /// - Throws: `FileIOError.io`, `FileIOError.fileTooLarge`.
    public static func read(fileDescriptor fd: Int32, limit: Int = Int.max, name: String? = nil) throws -> [UInt8] {
        try readAll(fileDescriptor: fd, limit: limit, label: name ?? "file descriptor \(fd)", as: [UInt8].self)
    }

    /// Creates a directory and its missing parents (mode 0755 minus umask).
    /// - Throws: `FileIOError.io` when a component cannot be created or is not a directory.
    public static func makeDirectories(_ path: String) throws {
        var prefix = path.hasPrefix("/") ? "/" : ""
        for component in path.split(separator: "/") where !component.isEmpty {
            prefix += component
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
                throw FileIOError.io(path: prefix, message: "mkdir failed: \(errnoText())")
            }
            var info = stat()
            if stat(prefix, &info) != 0 || (info.st_mode & S_IFMT) != S_IFDIR {
                throw FileIOError.io(path: prefix, message: "not a directory")
            }
            prefix += "/"
        }
    }

    // MARK: internal

    /// `read(path:limit:)` into any byte storage (an array, or `Data` for the Foundation overload).
    static func readFile<Bytes: ByteStorage>(path: String, limit: Int, as: Bytes.Type) throws -> Bytes {
        let fd = Descriptors.open(path, O_RDONLY)
        guard fd >= 0 else { throw FileIOError.io(path: path, message: errnoText()) }
        defer { Descriptors.close(fd) }
        return try readAll(fileDescriptor: fd, limit: limit, label: path, as: Bytes.self)
    }

    static func readAll<Bytes: ByteStorage>(fileDescriptor fd: Int32, limit: Int, label: String, as: Bytes.Type) throws -> Bytes {
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw FileIOError.io(path: label, message: errnoText()) }
        if (info.st_mode & S_IFMT) == S_IFREG {
            let size = Int(info.st_size)
            if size > limit { throw FileIOError.fileTooLarge(bytes: size, limit: limit) }
            var bytes = Bytes(zeroedCount: size)
            var offset = 0
            try bytes.withMutableRawBytes { raw in
                while offset < size {
                    let n = pread(fd, raw.baseAddress! + offset, size - offset, off_t(offset))
                    if n < 0 {
                        if errno == EINTR { continue }
                        throw FileIOError.io(path: label, message: "read failed: \(errnoText())")
                    }
                    if n == 0 { break }  // the file shrank while we read it
                    offset += n
                }
            }
            if offset < size { bytes.removeLastBytes(size - offset) }
            return bytes
        }
        var bytes = Bytes(zeroedCount: 0)
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { sysRead(fd, $0.baseAddress!, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw FileIOError.io(path: label, message: "read failed: \(errnoText())")
            }
            if n == 0 { break }
            if n > limit - bytes.count { throw FileIOError.fileTooLarge(bytes: bytes.count + n, limit: limit) }
            chunk.withUnsafeBytes { bytes.appendBytes(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        }
        return bytes
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

/// Contiguous bytes a whole-file read fills: `[UInt8]` here, `Data` in the Foundation overloads.
protocol ByteStorage {
    /// `count` zero bytes.
    init(zeroedCount count: Int)
    /// The number of bytes.
    var count: Int { get }
    /// Runs `body` on the bytes, writable in place.
    mutating func withMutableRawBytes(_ body: (UnsafeMutableRawBufferPointer) throws -> Void) throws
    /// Drops the last `k` bytes.
    mutating func removeLastBytes(_ k: Int)
    /// Appends a copy of `bytes`.
    mutating func appendBytes(_ bytes: UnsafeRawBufferPointer)
}

extension Array: ByteStorage where Element == UInt8 {
    init(zeroedCount count: Int) { self.init(repeating: 0, count: count) }
    mutating func withMutableRawBytes(_ body: (UnsafeMutableRawBufferPointer) throws -> Void) throws { try withUnsafeMutableBytes(body) }
    mutating func removeLastBytes(_ k: Int) { removeLast(k) }
    mutating func appendBytes(_ bytes: UnsafeRawBufferPointer) { append(contentsOf: bytes) }
}

/// The POSIX `write`, reachable from inside a type that declares its own `write`.
private func sysWrite(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int {
    Glibc.write(fd, buffer, count)
}

/// The POSIX `read`, reachable from inside a type that declares its own `read`.
private func sysRead(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int {
    Glibc.read(fd, buffer, count)
}
