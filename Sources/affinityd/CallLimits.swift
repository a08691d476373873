// The API's interfaces as the bus sees them: every error a method or property answers is one of
// org.lesionaffinity.Affinity1.Error.* (issue 16: a wrong signature, arguments that cannot be read,
// a handler that forgot to answer used to come back with org.freedesktop.DBus.Error names), and
// the size of a call is bounded per method before its values are built.
import AffinityAPI
import Bus
import Service

extension BusInterface {
    /// An interface of the API: errors through `apiError`, arguments bounded by `Daemon.maxArgumentValues`.
    static func api(_ name: String, introspectionXML: String?) -> BusInterface {
        var i = BusInterface(name, introspectionXML: introspectionXML)
        i.errorMapper = { apiError($0) }
        i.maxArgumentValues = Daemon.maxArgumentValues
        return i
    }
}

extension Daemon {
    /// The most values one call's arguments may hold (every basic value and element counts):
    /// enough for the largest batch with its options, far below what a 128 MiB message of bytes
    /// would otherwise make the daemon build.
    static let maxArgumentValues = 8192

    /// The most images one AnalyseBatch may name.
    static let maxBatchImages = 1024

    /// Refuses a batch of more than `maxBatchImages` images (or of none).
    static func checkBatch(_ count: Int) throws {
        guard count > 0 else { throw ServiceError.invalidArgument("AnalyseBatch needs at least one image") }
        guard count <= maxBatchImages else {
            throw ServiceError.invalidArgument("AnalyseBatch takes at most \(maxBatchImages) images per call, not \(count); split the batch")
        }
    }

    /// Who asks, for the analyse queue's per-caller share: the caller's unique bus name (none on a
    /// peer-to-peer connection).
    static func owner(_ call: MethodCall) -> String? { call.sender.isEmpty ? nil : call.sender }
}
