// ServiceError: the service's failures, one case per D-Bus error name of DESIGN.md §3.
import AffinityAPI
import Foundation
import Scans
import Imaging
import NN

/// Why a service request failed: a kind (the last component of the D-Bus error name
/// `org.lesionaffinity.Affinity1.Error.<kind>`) and one sentence for people.
public struct ServiceError: Error, Equatable, CustomStringConvertible, Sendable {
    /// The error kinds: the API's error names (AffinityAPI, checked against data/dbus).
    public typealias Kind = API.ErrorName

    public var kind: Kind
    /// One sentence, ending with a full stop.
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = ServiceError.sentence(message)
    }

    public var description: String { "\(kind.rawValue): \(message)" }

    public static func failed(_ m: String) -> ServiceError { ServiceError(.failed, m) }
    public static func invalidArgument(_ m: String) -> ServiceError { ServiceError(.invalidArgument, m) }
    public static func invalidImage(_ m: String) -> ServiceError { ServiceError(.invalidImage, m) }
    public static func modelNotFound(_ m: String) -> ServiceError { ServiceError(.modelNotFound, m) }
    public static func datasetInvalid(_ m: String) -> ServiceError { ServiceError(.datasetInvalid, m) }

    /// Any error as a service error: service errors pass through, image and checkpoint errors get
    /// their kind, anything else is `Failed` with its description.
    public init(_ error: Error) {
        switch error {
        case let e as ServiceError: self = e
        case let e as ImageError:
            switch e {
            case .unsupported: self.init(.unsupportedFormat, e.description)
            case .io, .invalidArgument: self.init(.invalidImage, e.description)
            default: self.init(.invalidImage, e.description)
            }
        case let e as CheckpointError:
            // A file that cannot be read or written (a full disk writing metrics.jsonl or a
            // checkpoint) is the service failing, not a weights file of the wrong format.
            if case .io = e { self.init(.failed, e.description) } else {
                self.init(.unsupportedFormat, "The weights cannot be used: \(e.description)")
            }
        case let e as ScanError:
            switch e {
            // The caller must choose (or chose what is not there).
            case .severalSeries, .seriesNotFound: self.init(.invalidArgument, e.description)
            case .noSeries, .tooLarge, .badGeometry: self.init(.invalidImage, e.description)
            }
        default: self.init(.failed, String(describing: error))
        }
    }

    /// Capitalises the first letter and ends the text with a full stop.
    static func sentence(_ s: String) -> String {
        var t = s.trimmingCharacters(in: .whitespacesAndNewlines)
        if t.isEmpty { t = "Unknown error" }
        t = t.prefix(1).uppercased() + t.dropFirst()
        if let last = t.last, !".!?".contains(last) { t += "." }
        return t
    }
}
