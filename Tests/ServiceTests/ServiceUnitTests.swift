// Service without a bus: model store, data-set validation.
import Affinity
import Foundation
import TestSupport
import Imaging
import NN
import Service
import Testing

@Suite("Service", .serialized)
struct ServiceUnitTests {
    @Test func sha256MatchesKnownDigests() {
        #expect(sha256Hex([UInt8]()) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(sha256Hex(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let long = Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
        #expect(sha256Hex(long) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    }

    @Test func storeImportsRefusesAndPublishesAtomically() throws {
        let dir = try Paths.temporaryDirectory("store")
        defer { try? FileManager.default.removeItem(at: dir) }
        let (bytes, _) = try Fixtures.smallModel(in: dir)
        let state = dir.appendingPathComponent("state")
        let store = try ModelStore(stateDirectory: state)
        #expect(store.models.isEmpty && store.defaultModelID == nil)

        let card = try store.importModel(bytes: bytes, name: "small", trainedOn: "nothing")
        #expect(card.affinities == 8 && card.name == "small" && card.sha256 == sha256Hex(bytes))
        #expect(card.id == String(card.sha256.prefix(16)))
        let stored = [UInt8](try Data(contentsOf: store.weightsURL(card.id)))
        #expect(stored == bytes)
        // The same weights again: the same model, nothing new.
        #expect(try store.importModel(bytes: bytes, name: "again").id == card.id)
        #expect(store.models.count == 1)

        // Files that are not model weights: named errors, nothing stored.
        for bad in [[UInt8](repeating: 7, count: 3), (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 31) }, Array(bytes.prefix(bytes.count / 2))] {
            let e = #expect(throws: ServiceError.self) { try store.importModel(bytes: bad, name: nil) }
            #expect(e?.kind == .unsupportedFormat, "\(String(describing: e))")
            #expect(e?.message.hasSuffix(".") == true)
        }
        #expect(store.models.count == 1)
        let wrongK = #expect(throws: ServiceError.self) { try store.importModel(bytes: bytes, name: nil, affinities: 16) }
        #expect(wrongK?.kind == .unsupportedFormat)

        let unknown = #expect(throws: ServiceError.self) { try store.setDefault("0000000000000000") }
        #expect(unknown?.kind == .modelNotFound)
        try store.setDefault(card.id)

        // A half-published model (a crash before the rename) is invisible and cleaned up.
        let leftover = store.modelsDirectory.appendingPathComponent(".tmp-deadbeef-1")
        try FileManager.default.createDirectory(at: leftover, withIntermediateDirectories: true)
        try Data([1, 2, 3]).write(to: leftover.appendingPathComponent("weights.safetensors"))
        let reopened = try ModelStore(stateDirectory: state)
        #expect(reopened.models.map(\.id) == [card.id])
        #expect(reopened.defaultModelID == card.id)
        #expect(!FileManager.default.fileExists(atPath: leftover.path))
        let (model, c2) = try reopened.loadModel(card.id)
        #expect(model.affinities == 8 && c2 == card)
    }

    @Test func datasetValidationNamesBrokenEntries() throws {
        let dir = try Paths.temporaryDirectory("data")
        defer { try? FileManager.default.removeItem(at: dir) }
        let root = dir.appendingPathComponent("set")
        let summary = try PhantomDataset.write(to: root.path, count: 6, seed: 3, size: 128)
        let data = try PhantomLayoutData(root: root, side: 128, limit: 2)
        #expect(data.classificationCount == 2)
        #expect(data.segmentationCount == 6)
        let c = try data.classificationSample(0)
        #expect(c.image.shape == [1, 3, 128, 128])
        // A slice with lesions gives targets at the training size.
        let withLesion = try #require(summary.lesionCounts.firstIndex { $0 > 0 })
        let name = summary.entries[withLesion].segmentationFileName
        let j = try #require(data.segmentation.firstIndex { $0.image.lastPathComponent == name })
        let s = try data.segmentationSample(j)
        #expect(s.targets.height == 128 && !s.targets.boxes.isEmpty)

        // Empty and missing directories.
        let empty = dir.appendingPathComponent("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        let e1 = #expect(throws: ServiceError.self) { try PhantomLayoutData(root: empty) }
        #expect(e1?.kind == .datasetInvalid)
        #expect(e1?.message.contains("classification/train_COVIDx_CT.txt") == true, "\(String(describing: e1))")
        let e2 = #expect(throws: ServiceError.self) { try PhantomLayoutData(root: dir.appendingPathComponent("nope")) }
        #expect(e2?.kind == .datasetInvalid)

        // Broken entries: a missing image, a corrupt image, a bad class.
        let images = root.appendingPathComponent("classification/images")
        let first = summary.entries[0].classificationFileName, second = summary.entries[1].classificationFileName
        try FileManager.default.removeItem(at: images.appendingPathComponent(first))
        try Data("not a png".utf8).write(to: images.appendingPathComponent(second))
        let split = root.appendingPathComponent("classification/train_COVIDx_CT.txt")
        try (try String(contentsOf: split, encoding: .utf8) + "whatever.png 9 0 0 1 1\n").write(to: split, atomically: true, encoding: .utf8)
        let e3 = #expect(throws: ServiceError.self) { try PhantomLayoutData(root: root, side: 128) }
        #expect(e3?.kind == .datasetInvalid)
        let m = e3?.message ?? ""
        #expect(m.contains("3 broken entries") && m.contains(first) && m.contains(second) && m.contains("the class label \"9\" on train_COVIDx_CT.txt line"), "\(m)")
    }
}
