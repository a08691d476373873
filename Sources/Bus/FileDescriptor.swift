// FileDescriptor: an owned Unix file descriptor, as carried by D-Bus `h` values.
import CDBus
@_exported import SystemIO
#if canImport(Glibc)
import Glibc
#endif

/// An owned Unix file descriptor that is closed when the wrapper goes away.
///
/// Values of type `h` received from the bus arrive as descriptors libdbus duplicated for us; the
/// wrapper owns that duplicate. Appending a descriptor to a message makes libdbus duplicate it
/// again, so the wrapper keeps ownership of its own copy after sending.
///
/// A wrapper is the only owner of its number: nothing else closes it (with checking on, the
/// registry in `Descriptors` stops the process when something does, and when a number is taken by
/// two wrappers).
// @unchecked Sendable: the only mutable state, `fd`, is read and written under `lock`.
public final class FileDescriptor: @unchecked Sendable, CustomStringConvertible {
    private let lock = Lock()
    private var fd: Int32

    /// Takes ownership of `fd` (it will be closed by this wrapper).
    public init(taking fd: Int32) {
        self.fd = fd
        Descriptors.registerWrapper(fd, id: ownerID)
    }

    private var ownerID: UInt { UInt(bitPattern: ObjectIdentifier(self).hashValue) }

    /// Duplicates `fd` (close-on-exec) and owns the duplicate; the caller keeps `fd`.
    /// - Throws: `BusError` (`IOError`) if `dup` fails.
    public convenience init(duplicating fd: Int32) throws {
        let d = cdbus_dup_cloexec(fd)
        guard d >= 0 else { throw FileDescriptor.ioError("cannot duplicate file descriptor \(fd)") }
        self.init(taking: d)
    }

    deinit { close() }

    /// The descriptor number, or -1 once closed or released.
    public var rawValue: Int32 { lock.withLock { fd } }

    /// Whether the descriptor is still open (owned by this wrapper).
    public var isOpen: Bool { rawValue >= 0 }

    /// `fd N`.
    public var description: String { "fd \(rawValue)" }

    /// Closes the descriptor now (idempotent).
    public func close() {
        let old: Int32 = lock.withLock {
            let o = fd
            fd = -1
            return o
        }
        guard old >= 0 else { return }
        Descriptors.unregisterWrapper(old, id: ownerID, closing: true)
        let r = Descriptors.ownerClose(old)
        Descriptors.checkWrapperClose(result: r, errno: errno, fd: old)
    }

    /// Gives up ownership and returns the descriptor; the wrapper will no longer close it.
    public func release() -> Int32 {
        let old: Int32 = lock.withLock {
            let o = fd
            fd = -1
            return o
        }
        Descriptors.unregisterWrapper(old, id: ownerID, closing: false)
        return old
    }

    /// A new wrapper owning a duplicate of this descriptor.
    /// - Throws: `BusError` (`IOError`) if the descriptor is closed or `dup` fails.
    public func duplicate() throws -> FileDescriptor {
        let current = rawValue
        guard current >= 0 else { throw FileDescriptor.ioError("the file descriptor is closed") }
        return try FileDescriptor(duplicating: current)
    }

    /// Reads the whole content: from offset 0 with `pread` for files and memfds (whatever the
    /// shared file offset is), or to end-of-file with `read` for pipes and sockets.
    /// - Parameter limit: the largest number of bytes accepted.
    /// - Throws: `BusError` (`IOError`) on a read error, a closed descriptor, or more than `limit` bytes.
    public func readAll(limit: Int = 1 << 30) throws -> [UInt8] {
        let current = rawValue
        guard current >= 0 else { throw FileDescriptor.ioError("the file descriptor is closed") }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        var offset: off_t = 0
        var seekable = true
        while true {
            let n: Int = chunk.withUnsafeMutableBytes { buf -> Int in
                while true {
                    let r: Int
                    if seekable {
                        r = pread(current, buf.baseAddress, buf.count, offset)
                        if r < 0 && errno == ESPIPE {
                            seekable = false
                            continue
                        }
                    } else {
                        r = read(current, buf.baseAddress, buf.count)
                    }
                    if r < 0 && errno == EINTR { continue }
                    return r
                }
            }
            if n < 0 { throw FileDescriptor.ioError("read failed: \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            out.append(contentsOf: chunk[0..<n])
            offset += off_t(n)
            if out.count > limit { throw FileDescriptor.ioError("more than \(limit) bytes to read") }
        }
        return out
    }

    /// Writes all of `bytes` at the current offset.
    /// - Throws: `BusError` (`IOError`) on a write error or a closed descriptor.
    public func write(_ bytes: [UInt8]) throws {
        let current = rawValue
        guard current >= 0 else { throw FileDescriptor.ioError("the file descriptor is closed") }
        var written = 0
        try bytes.withUnsafeBytes { buf in
            guard let base = buf.baseAddress else { return }
            while written < buf.count {
                let r = Glibc.write(current, base + written, buf.count - written)
                if r < 0 {
                    if errno == EINTR { continue }
                    throw FileDescriptor.ioError("write failed: \(String(cString: strerror(errno)))")
                }
                written += r
            }
        }
    }

    /// Whether the descriptor is a memfd sealed against writing, growing and shrinking.
    public var isSealed: Bool {
        let current = rawValue
        guard current >= 0 else { return false }
        let seals = cdbus_memfd_get_seals(current)
        return seals >= 0 && (seals & (0x0002 | 0x0004 | 0x0008)) == (0x0002 | 0x0004 | 0x0008)
    }

    /// A memfd holding `contents`, sealed against writing, growing, shrinking and further seals.
    ///
    /// This is how a caller hands bytes to a service that must not open the caller's files.
    /// - Throws: `BusError` (`IOError`) if the memfd cannot be created, written or sealed.
    public static func sealedMemfd(name: String, contents: [UInt8]) throws -> FileDescriptor {
        let fd = name.withCString { cdbus_memfd_create($0) }
        guard fd >= 0 else { throw ioError("memfd_create failed: \(String(cString: strerror(errno)))") }
        let owned = FileDescriptor(taking: fd)
        try owned.write(contents)
        guard cdbus_memfd_seal(fd) == 0 else {
            throw ioError("sealing the memfd failed: \(String(cString: strerror(errno)))")
        }
        return owned
    }

    /// A new pipe (both ends close-on-exec).
    /// - Throws: `BusError` (`IOError`) if `pipe2` fails.
    public static func pipe() throws -> (read: FileDescriptor, write: FileDescriptor) {
        var fds: [Int32] = [-1, -1]
        guard cdbus_pipe_cloexec(&fds) == 0 else {
            throw ioError("pipe2 failed: \(String(cString: strerror(errno)))")
        }
        return (FileDescriptor(taking: fds[0]), FileDescriptor(taking: fds[1]))
    }

    static func ioError(_ message: String) -> BusError {
        BusError(name: BusError.Name.ioError, message: message.prefix(1).uppercased() + message.dropFirst() + ".")
    }
}
