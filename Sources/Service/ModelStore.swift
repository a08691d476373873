// ModelStore: models in the state directory, published atomically, and the default model.
import Affinity
import Foundation
import NN
import SystemIO

/// What the store knows about one model (`models/<id>/card.json`).
public struct ModelCard: Codable, Sendable, Equatable {
    /// A plugin recorded in the card (id and version).
    public struct Plugin: Codable, Sendable, Equatable {
        public var id: String
        public var version: String
        public init(id: String, version: String) { self.id = id; self.version = version }
    }
    /// The store's id (the first 16 hex digits of the weights' SHA-256).
    public var id: String
    public var name: String
    /// C', the number of affinities.
    public var affinities: Int
    /// SHA-256 of `weights.safetensors`, hex.
    public var sha256: String
    /// Microseconds since the Unix epoch.
    public var created: UInt64
    /// What the model was trained on ("" when imported without saying).
    public var trainedOn: String
    public var metrics: [String: Double]
    /// The image-classification head ("affinity" for the built-in one).
    public var head: String
    public var plugins: [Plugin]
    /// Which of torchvision's FPN key namings the imported weights were found in
    /// (`TorchvisionNaming`'s raw value: "pre-0.13" or "0.13+"); nil in cards written before it
    /// was recorded.
    public var torchvisionNaming: String? = nil

    enum CodingKeys: String, CodingKey {
        case id, name, affinities, sha256, created, trainedOn = "trained_on", metrics, head, plugins
        case torchvisionNaming = "torchvision_naming"
    }
}

/// Microseconds since the Unix epoch, now.
public func unixMicroseconds(_ date: Date = Date()) -> UInt64 {
    UInt64(max(0, date.timeIntervalSince1970 * 1_000_000))
}

/// The model store under `<state>/models`: one directory per model holding `weights.safetensors`
/// and `card.json`. A model appears by renaming a complete temporary directory into place, so a
/// reader (or a restart after a crash) sees either the whole model or nothing. The default model's
/// id is kept in `<state>/default-model`, written atomically. Thread-safe.
// @unchecked Sendable: the cards and the default id are under `lock`; files change only by atomic rename.
public final class ModelStore: @unchecked Sendable {
    public let stateDirectory: URL
    public var modelsDirectory: URL { stateDirectory.appendingPathComponent("models") }
    private let lock = NSLock()
    private var cards: [String: ModelCard] = [:]
    private var defaultID: String?
    /// Makes the heads of models whose classification head is a plugin (the daemon's plugin
    /// registry); nil: only models with the built-in affinity head import and load.
    public let heads: (any ClassificationHeadFactory)?

    /// Opens (creating if needed) the store in `stateDirectory`; leftovers of an interrupted
    /// publish (`models/.tmp-*`) are removed, models without a readable card are skipped.
    /// - Parameter heads: makes plugin heads (see `heads`).
    /// - Throws: `ServiceError.failed` if the directories cannot be created.
    public init(stateDirectory: URL, heads: (any ClassificationHeadFactory)? = nil) throws {
        self.stateDirectory = stateDirectory
        self.heads = heads
        let fm = FileManager.default
        do {
            try fm.createDirectory(at: stateDirectory.appendingPathComponent("models"), withIntermediateDirectories: true)
        } catch {
            throw ServiceError.failed("Cannot create the model store in \(stateDirectory.path): \(error.localizedDescription)")
        }
        for name in (try? fm.contentsOfDirectory(atPath: modelsDirectory.path)) ?? [] {
            let dir = modelsDirectory.appendingPathComponent(name)
            if name.hasPrefix(".tmp-") { try? fm.removeItem(at: dir); continue }
            guard let data = try? Data(contentsOf: dir.appendingPathComponent("card.json")),
                  let card = try? JSONDecoder().decode(ModelCard.self, from: data), card.id == name,
                  fm.fileExists(atPath: dir.appendingPathComponent("weights.safetensors").path) else { continue }
            cards[name] = card
        }
        // An interrupted atomic write of default-model leaves `.default-model.tmp-*`.
        for name in (try? fm.contentsOfDirectory(atPath: stateDirectory.path)) ?? [] where name.hasPrefix(".") && name.contains(".tmp-") {
            try? fm.removeItem(at: stateDirectory.appendingPathComponent(name))
        }
        if let text = try? String(contentsOf: defaultFile, encoding: .utf8) {
            let id = text.trimmingCharacters(in: .whitespacesAndNewlines)
            if cards[id] != nil { defaultID = id }
        }
    }

    private var defaultFile: URL { stateDirectory.appendingPathComponent("default-model") }

    /// Every model's card, sorted by creation time then id.
    public var models: [ModelCard] {
        lock.withLock { cards.values.sorted { ($0.created, $0.id) < ($1.created, $1.id) } }
    }

    /// The card of model `id`, or nil.
    public func card(_ id: String) -> ModelCard? { lock.withLock { cards[id] } }

    /// The default model's id, or nil when none is set.
    public var defaultModelID: String? { lock.withLock { defaultID } }

    /// The weights file of model `id`.
    public func weightsURL(_ id: String) -> URL {
        modelsDirectory.appendingPathComponent(id).appendingPathComponent("weights.safetensors")
    }

    /// Makes `id` the default model (written atomically).
    /// - Throws: `ModelNotFound` for an unknown id; `Failed` if the file cannot be written.
    public func setDefault(_ id: String) throws {
        try lock.withLock {
            guard cards[id] != nil else { throw ServiceError.modelNotFound("There is no model '\(id)' in the store") }
            do { try CheckpointError.mappingFileErrors { try AtomicFile.write(Data((id + "\n").utf8), to: defaultFile) } } catch {
                throw ServiceError.failed("Cannot record the default model: \(error)")
            }
            defaultID = id
        }
    }

    /// Checks that `bytes` are model weights (our layout or the original state dict, its FPN keys
    /// in either of torchvision's namings, which the card records) and adds them to the store
    /// unchanged; the same weights imported twice give the same model. A file
    /// whose head is a plugin (`head` metadata) loads only when `heads` makes that head; the card
    /// then names the head and records its plugin's id and version.
    /// - Parameters:
    ///   - affinities: C' when the file does not say (it must agree with the file when both do;
    ///     it does not apply to a plugin head).
    ///   - metrics, trainedOn, plugins: recorded in the card. `head` is checked against the file's.
    /// - Returns: the model's card (the existing one if these weights are already stored).
    /// - Throws: `UnsupportedFormat` naming what is wrong when the bytes are not loadable weights;
    ///   `InvalidArgument` for a bad name or C'; `Failed` if the store cannot be written.
    @discardableResult
    public func importModel(bytes: [UInt8], name: String?, affinities: Int? = nil, trainedOn: String = "",
                            metrics: [String: Double] = [:], head: String = "affinity",
                            plugins: [ModelCard.Plugin] = [], created: UInt64? = nil) throws -> ModelCard {
        if let a = affinities, a <= 0 || a > 4096 {
            throw ServiceError.invalidArgument("The number of affinities must be between 1 and 4096, got \(a)")
        }
        if let name, name.count > 200 || name.contains("\n") {
            throw ServiceError.invalidArgument("A model name is one line of at most 200 characters")
        }
        guard bytes.count >= 8 else {
            throw ServiceError(.unsupportedFormat, "The weights are \(bytes.count) bytes long, too short for a safetensors file")
        }
        let data = Data(bytes)
        let model: AffinityModel
        let naming: TorchvisionNaming
        do {
            let file = try SafeTensorsFile(data: data)
            model = try ModelLoader.load(file, affinities: affinities, heads: heads)
            naming = try ModelLoader.torchvisionNaming(of: file)
        } catch let e as ClassificationHeadError {
            throw ServiceError(.unsupportedFormat, "The weights cannot be used: \(e.description)")
        } catch let e as TorchvisionNamingError {
            throw ServiceError(.unsupportedFormat, "The weights cannot be used: \(e.description)")
        } catch let e as CheckpointError {
            throw ServiceError(.unsupportedFormat, "The weights are not a usable safetensors model file: \(e.description)")
        } catch {
            throw ServiceError(.unsupportedFormat, "The weights are not a usable safetensors model file: \(error)")
        }
        let fileHead = model.head.headID
        guard head == fileHead || head == AffinityHead.id else {
            throw ServiceError(.unsupportedFormat, "The card names the head '\(head)', but the weights were made for the head '\(fileHead)'")
        }
        var plugins = plugins
        if model.affinityHead == nil, !plugins.contains(where: { $0.id == fileHead }) {
            plugins.append(ModelCard.Plugin(id: fileHead, version: model.head.headVersion))
        }
        let digest = sha256Hex(bytes)
        let id = String(digest.prefix(16))
        if let existing = card(id) { return existing }
        let card = ModelCard(id: id, name: name ?? "model \(id.prefix(8))", affinities: model.affinityHead == nil ? 0 : model.affinities,
                             sha256: digest, created: created ?? unixMicroseconds(), trainedOn: trainedOn, metrics: metrics,
                             head: fileHead, plugins: plugins, torchvisionNaming: naming.rawValue)
        try publish(card: card, weights: data)
        return card
    }

    /// Imports a bundled model directory (`weights.safetensors`, `card.json` with `ModelCard`'s
    /// fields, of which `id`, `sha256` and `created` may be absent and are then computed) with its
    /// card's name, C', training data, metrics, head and plugins.
    /// - Returns: the model's card (the existing one if these weights are already stored).
    /// - Throws: `Failed` when the files cannot be read; `UnsupportedFormat` when the card is not
    ///   valid JSON of that schema, names another SHA-256 than the weights have, or the weights do
    ///   not load.
    @discardableResult
    public func importBundled(_ directory: URL) throws -> ModelCard {
        let weightsURL = directory.appendingPathComponent("weights.safetensors")
        let cardURL = directory.appendingPathComponent("card.json")
        let bytes: [UInt8]
        do { bytes = [UInt8](try Data(contentsOf: weightsURL)) } catch {
            throw ServiceError.failed("Cannot read the bundled model's weights \(weightsURL.path): \(error.localizedDescription)")
        }
        var card = BundledCard()
        if FileManager.default.fileExists(atPath: cardURL.path) {
            do { card = try JSONDecoder().decode(BundledCard.self, from: try Data(contentsOf: cardURL)) } catch {
                throw ServiceError(.unsupportedFormat, "The bundled model card \(cardURL.path) is not a model card: \(error)")
            }
        }
        let digest = sha256Hex(bytes)
        if let expected = card.sha256, expected.lowercased() != digest {
            throw ServiceError(.unsupportedFormat, "The bundled model card \(cardURL.path) gives SHA-256 \(expected), but the weights have \(digest)")
        }
        return try importModel(bytes: bytes, name: card.name ?? directory.lastPathComponent, affinities: card.affinities,
                               trainedOn: card.trainedOn ?? "", metrics: card.metrics ?? [:], head: card.head ?? "affinity",
                               plugins: card.plugins ?? [], created: card.created)
    }

    /// What `installBundled` did.
    public enum BundledInstall: Equatable, Sendable {
        /// The bundled model became the default (the store had none, or had an earlier bundled model).
        case installed(ModelCard, replaced: String?)
        /// The default stays: it is this bundled model already, or a model the user chose.
        case kept(String)
    }

    private var bundledFile: URL { stateDirectory.appendingPathComponent("bundled-model") }

    /// Makes the bundled model in `directory` the default when the store has no default, or when
    /// the default is an earlier bundled model (recorded in `<state>/bundled-model`; a store from
    /// before that record counts a default with the bundled card's name) whose weights differ: a
    /// newer release's demo model replaces the older one, a model the user imported or chose is
    /// never replaced. The earlier model stays in the store.
    /// - Throws: as `importBundled`; `Failed` if the default cannot be recorded.
    public func installBundled(_ directory: URL) throws -> BundledInstall {
        if let current = defaultModelID, let card = card(current) {
            let recorded = (try? String(contentsOf: bundledFile, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
            let bundledCard = try? JSONDecoder().decode(BundledCard.self, from: Data(contentsOf: directory.appendingPathComponent("card.json")))
            let wasBundled = recorded.map { $0 == current } ?? (bundledCard?.name != nil && bundledCard?.name == card.name)
            guard wasBundled else { return .kept(current) }
            if let sha = bundledCard?.sha256?.lowercased(), sha == card.sha256 { return .kept(current) }
            let installed = try importBundled(directory)
            guard installed.id != current else { return .kept(current) }
            try setDefault(installed.id)
            try recordBundled(installed.id)
            return .installed(installed, replaced: current)
        }
        let installed = try importBundled(directory)
        try setDefault(installed.id)
        try recordBundled(installed.id)
        return .installed(installed, replaced: nil)
    }

    private func recordBundled(_ id: String) throws {
        do { try CheckpointError.mappingFileErrors { try AtomicFile.write(Data((id + "\n").utf8), to: bundledFile) } } catch {
            throw ServiceError.failed("Cannot record the bundled model: \(error)")
        }
    }

    /// `card.json` of a bundled model: `ModelCard`'s fields, every one optional.
    struct BundledCard: Decodable {
        var id: String?
        var name: String?
        var affinities: Int?
        var sha256: String?
        var created: UInt64?
        var trainedOn: String?
        var metrics: [String: Double]?
        var head: String?
        var plugins: [ModelCard.Plugin]?
        enum CodingKeys: String, CodingKey {
            case id, name, affinities, sha256, created, trainedOn = "trained_on", metrics, head, plugins
        }
    }

    /// Writes weights and card into `models/.tmp-…/`, fsyncs them, and renames the directory to
    /// `models/<id>`.
    private func publish(card: ModelCard, weights: Data) throws {
        let fm = FileManager.default
        let tmp = modelsDirectory.appendingPathComponent(".tmp-\(card.id)-\(UUID().uuidString)")
        do {
            try fm.createDirectory(at: tmp, withIntermediateDirectories: false)
            try CheckpointError.mappingFileErrors { try AtomicFile.write(weights, to: tmp.appendingPathComponent("weights.safetensors")) }
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            let cardData = try enc.encode(card)
            try CheckpointError.mappingFileErrors { try AtomicFile.write(cardData, to: tmp.appendingPathComponent("card.json")) }
        } catch {
            try? fm.removeItem(at: tmp)
            throw ServiceError.failed("Cannot write the model to the store: \(error)")
        }
        try lock.withLock {
            let final = modelsDirectory.appendingPathComponent(card.id)
            if cards[card.id] != nil { try? fm.removeItem(at: tmp); return }
            if fm.fileExists(atPath: final.path) { try? fm.removeItem(at: final) }  // an unreadable leftover
            guard rename(tmp.path, final.path) == 0 else {
                let reason = String(cString: strerror(errno))
                try? fm.removeItem(at: tmp)
                throw ServiceError.failed("Cannot publish the model: \(reason)")
            }
            let dfd = Descriptors.open(modelsDirectory.path, O_RDONLY | O_DIRECTORY)
            if dfd >= 0 { fsync(dfd); Descriptors.close(dfd) }
            cards[card.id] = card
        }
    }

    /// A fresh model instance with model `id`'s weights.
    /// - Throws: `ModelNotFound` for an unknown id; `Failed` if the stored weights do not load.
    public func loadModel(_ id: String) throws -> (AffinityModel, ModelCard) {
        guard let card = card(id) else { throw ServiceError.modelNotFound("There is no model '\(id)' in the store") }
        do {
            let affinities = card.head == AffinityHead.id && card.affinities > 0 ? card.affinities : nil
            return (try ModelLoader.load(contentsOf: weightsURL(id), affinities: affinities, heads: heads), card)
        } catch let e as ClassificationHeadError {
            throw ServiceError(.modelNotReady, "Model '\(id)' cannot be loaded: \(e.description)")
        } catch {
            throw ServiceError.failed("The stored weights of model '\(id)' do not load: \(error)")
        }
    }
}
