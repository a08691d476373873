// The `Data`/`URL` forms of `AtomicFile` (checkpoints, JSON records), for callers that work in
// Foundation types. They use the same implementation as the byte-array forms.
import Foundation

public extension AtomicFile {
    /// Writes `data` to the file URL `url` atomically (see `write(_:to:)`).
    /// - Throws: `FileIOError.io` naming the path and the failing call; the temporary file is removed.
    static func write(_ data: Data, to url: URL) throws {
        try data.withUnsafeBytes { try write(buffer: $0, to: url.path) }
    }

    /// Reads the whole file at the file URL `url` (see `read(path:limit:)`), without mapping it:
    /// a file that another process truncates or rewrites meanwhile cannot change or fault the bytes
    /// once they are read.
    /// - Parameter limit: the largest accepted file size in bytes.
    /// - Throws: `FileIOError.io`, `FileIOError.fileTooLarge`.
    static func read(contentsOf url: URL, limit: Int = Int.max) throws -> Data {
        try readFile(path: url.path, limit: limit, as: Data.self)
    }
}

extension Data: ByteStorage {
    init(zeroedCount count: Int) { self.init(count: count) }
    mutating func withMutableRawBytes(_ body: (UnsafeMutableRawBufferPointer) throws -> Void) throws { try withUnsafeMutableBytes(body) }
    mutating func removeLastBytes(_ k: Int) { removeLast(k) }
    mutating func appendBytes(_ bytes: UnsafeRawBufferPointer) { append(contentsOf: bytes) }
}
