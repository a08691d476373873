// Named errors of the Evaluation module.

/// An error raised by the evaluation code: every malformed input is reported by name, never by a crash.
///
/// Tests and callers match on the case; `description` gives a sentence for people.
public enum EvaluationError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Two arrays or masks that must agree in size or shape do not.
    case shapeMismatch(String)
    /// A class label lies outside `0..<classCount`, or a count is negative.
    case invalidLabel(String)
    /// Run-length counts are negative, too large, do not sum to height × width, or a compressed
    /// count string is not in COCO's character encoding.
    case invalidRLE(String)
    /// A segmentation is neither polygons nor RLE, or its polygons cannot be rasterised.
    case invalidSegmentation(String)
    /// A JSON document could not be decoded; the text names the offending field.
    case malformedJSON(String)
    /// A file could not be read.
    case unreadableFile(String)
    /// A result or annotation refers to an image id that the ground truth does not list.
    case unknownImage(Int)
    /// Two ground-truth images or annotations share an id.
    case duplicateID(String)
    /// A required field (for example a result's score or a box for bbox evaluation) is missing.
    case missingField(String)
    /// A parameter is out of its domain (for example an empty list of IoU thresholds).
    case invalidParameter(String)

    public var description: String {
        switch self {
        case .shapeMismatch(let s): return "shape mismatch: \(s)"
        case .invalidLabel(let s): return "invalid label: \(s)"
        case .invalidRLE(let s): return "invalid RLE: \(s)"
        case .invalidSegmentation(let s): return "invalid segmentation: \(s)"
        case .malformedJSON(let s): return "malformed JSON: \(s)"
        case .unreadableFile(let s): return "unreadable file: \(s)"
        case .unknownImage(let id): return "unknown image id \(id): not in the ground truth"
        case .duplicateID(let s): return "duplicate id: \(s)"
        case .missingField(let s): return "missing field: \(s)"
        case .invalidParameter(let s): return "invalid parameter: \(s)"
        }
    }
}
