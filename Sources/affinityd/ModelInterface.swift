// org.lesionaffinity.Affinity1.Model: one object per stored model.
import Affinity
import AffinityAPI
import Bus
import Foundation
import Imaging
import PluginHost
import Service

extension Daemon {
    // MARK: Models

    func exportModel(_ card: ModelCard) {
        let fresh = lock.withLock { exportedModels.insert(card.id).inserted }
        guard fresh else { return }
        guard let i = modelInterface(id: card.id) else { return }
        do { try bus.export(path: API.modelPath(card.id), interfaces: [i]) } catch {
            Log.error("Cannot export model \(card.id): \(error)", ["MODEL_ID": card.id])
        }
    }

    func modelInterface(id: String) -> BusInterface? {
        var i = BusInterface.api(API.model, introspectionXML: xml(API.model))
        let store = self.store
        @Sendable func card() throws -> ModelCard {
            guard let c = store.card(id) else { throw ServiceError.modelNotFound("Model \(id) is no longer in the store") }
            return c
        }
        i.property(ModelProperty.name) { .string(try card().name) }
        i.property(ModelProperty.affinities) { .uint32(UInt32(try card().affinities)) }
        i.property(ModelProperty.sha256) { .string(try card().sha256) }
        i.property(ModelProperty.createdAt) { .uint64(try card().created) }
        i.property(ModelProperty.trainedOn) { .string(try card().trainedOn) }
        i.property(ModelProperty.metrics) { .doubleDict(try card().metrics) }
        i.property(ModelProperty.head) { .string(try card().head) }
        i.property(ModelProperty.plugins) { .strings(try card().plugins.map { "\($0.id) \($0.version)" }) }
        i.deferredMethod("ExportAffinityMatrix", in: "hha{sv}", out: "") { [self] call, reply in
            do {
                let head = try card().head
                guard head == AffinityHead.id else {
                    throw ServiceError(.unsupportedFormat, "Model \(id) classifies with the head plugin '\(head)', which has no affinity matrix")
                }
                let image = try call.argument(0).asFileDescriptor()
                let out = try call.argument(1).asFileDescriptor()
                var request = try analyseRequest(call.argument(2))
                request.modelID = id
                request.withDetections = false
                try engine.submit(.fileDescriptor(image.rawValue), request, owner: Self.owner(call)) { result in
                    withExtendedLifetime(image) {}
                    reply.complete {
                        do {
                            let r = try result.get()
                            try out.write(try affinityMatrixPNG(r))
                            return []
                        } catch { throw apiError(error) }
                    }
                }
            } catch {
                reply.fail(apiError(error))
            }
        }
        return i
    }
}


/// The affinity matrix X2 [C', 256] as an 8-bit gray PNG (256 wide, C' high), min–max scaled.
func affinityMatrixPNG(_ r: AnalysisResult) throws -> [UInt8] {
    let m = r.prediction.affinityMatrix
    let values = m.array
    let rows = m.shape.count == 2 ? m.shape[0] : 1
    let cols = values.count / max(rows, 1)
    let lo = values.min() ?? 0, hi = values.max() ?? 1
    let scale = hi > lo ? 255 / (hi - lo) : 0
    let bytes = values.map { UInt8(max(0, min(255, (($0 - lo) * scale).rounded()))) }
    return try PNG.encode(try PixelImage(bytes: bytes, width: cols, height: rows, format: .gray))
}
