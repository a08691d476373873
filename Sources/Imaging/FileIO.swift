import SystemIO

// Whole-file reads and atomic writes are SystemIO's `AtomicFile`; Imaging's public functions
// report its failures as `ImageError`, with the same sentences.

public extension ImageError {
    /// The image error for a failed file read or write: `.io` with the same path and reason, or
    /// `.fileTooLarge` with the same sizes (the descriptions are the same sentences).
    init(_ error: FileIOError) {
        switch error {
        case .io(let path, let message): self = .io(path: path, message: message)
        case .fileTooLarge(let bytes, let limit): self = .fileTooLarge(bytes: bytes, limit: limit)
        }
    }
}

/// Runs `body`; a `FileIOError` it throws comes out as the equivalent `ImageError`.
@inline(__always)
func mappingFileErrors<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch let e as FileIOError { throw ImageError(e) }
}
