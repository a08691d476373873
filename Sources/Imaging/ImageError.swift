/// Why an image could not be read, written or processed.
///
/// Every failure of the PNG reader and writer, the renderers and the data-set writer is one of
/// these cases; `description` is a sentence that can be shown to a person as it is. A failed read
/// never returns a partial image.
public enum ImageError: Error, Equatable, CustomStringConvertible, Sendable {
    /// The data does not start with the 8-byte PNG signature (this includes empty input).
    case notPNG
    /// The data ends before the PNG is complete (cut-off download, partial copy).
    case truncated
    /// The PNG is damaged: CRC mismatch, bad zlib stream, invalid header fields, missing chunks.
    /// The reason is libpng's (or our header check's) message.
    case corrupt(String)
    /// The IHDR declares a width or height of zero.
    case zeroSize
    /// The IHDR declares a width or height above the reader's limit (checked before any pixel
    /// memory is allocated).
    case tooLarge(width: Int, height: Int, limit: Int)
    /// The file is a valid PNG that this reader or writer does not handle, or a writer was asked
    /// for a combination PNG cannot store (e.g. a 16-bit palette).
    case unsupported(String)
    /// The input file is larger than the reader's byte limit.
    case fileTooLarge(bytes: Int, limit: Int)
    /// The image would decode to more bytes of pixels than the reader's limit (a decompression
    /// bomb: a small file naming a huge image), checked before any pixel memory is allocated.
    case decodedTooLarge(bytes: Int, limit: Int)
    /// A caller passed inconsistent arguments (sample count does not match the dimensions, masks of
    /// the wrong size, …).
    case invalidArgument(String)
    /// An operating-system call failed while reading or writing `path` (or a descriptor).
    case io(path: String, message: String)

    /// A sentence for people, ending with a full stop.
    public var description: String {
        switch self {
        case .notPNG:
            return "The data is not a PNG image (it does not start with the PNG signature)."
        case .truncated:
            return "The PNG data ends early; the file is truncated."
        case .corrupt(let reason):
            return "The PNG image is damaged: \(reason)."
        case .zeroSize:
            return "The PNG image has a width or height of zero."
        case .tooLarge(let width, let height, let limit):
            return "The PNG image is \(width)×\(height) pixels, larger than the limit of \(limit) pixels per side."
        case .unsupported(let reason):
            return "The PNG image is not supported: \(reason)."
        case .fileTooLarge(let bytes, let limit):
            return "The file is \(bytes) bytes, larger than the limit of \(limit) bytes."
        case .decodedTooLarge(let bytes, let limit):
            return "The PNG image would decode to \(bytes) bytes of pixels, more than the limit of \(limit) bytes."
        case .invalidArgument(let reason):
            return "Invalid argument: \(reason)."
        case .io(let path, let message):
            return "Could not access \(path): \(message)."
        }
    }
}
