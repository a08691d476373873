import Foundation
import NN
import Tensor

/// The image-classification head of the model: from the lesion-mask-feature batch
/// [B, 256, 28, 28] to the 3 image logits [1, 3] (0 normal, 1 common pneumonia, 2 COVID-19).
///
/// The built-in head is the affinity layer + classifier of the paper (`AffinityHead`); others come
/// from plugins (PluginHost's `PluginHead`). A head's parameters are ordinary `Parameter`s with
/// their state-dict names, so the trainer's Adam and the checkpoints handle them like any other.
public protocol ClassificationHead: Module {
    /// The head's id: `affinity` for the built-in head, the plugin id otherwise.
    var headID: String { get }
    /// The head's version (the plugin's version; the built-in head: `builtin`).
    var headVersion: String { get }
    /// The JSON config the head was made from (`{}` for the built-in head).
    var headConfig: String { get }
    /// Duplicate keys of the state dict, accepted on load and written on save (alias → key).
    var originalAliases: [(alias: String, of: String)] { get }
    /// Draws fresh parameter values from `rng`.
    func initialize(rng: inout SeededGenerator)
    /// logits [1, 3] from the lesion mask features [B, channels, 28, 28].
    func forward(lesionMaskFeatures: Tensor, workspace: Workspace) throws -> ClassificationHeadOutput
    /// As `forward(lesionMaskFeatures:workspace:)`; with `forBackward: false` (inference) the head
    /// may keep less of what only a backward pass needs (by default, the same forward).
    func forward(lesionMaskFeatures: Tensor, workspace: Workspace, forBackward: Bool) throws -> ClassificationHeadOutput
    /// Adds ∂L/∂parameter into every parameter's gradient from ∂L/∂logits [1, 3], and returns
    /// ∂L/∂(lesion mask features), for the `output` of this head's most recent forward.
    func backward(logitsGradient: Tensor, output: ClassificationHeadOutput, workspace: Workspace) throws -> Tensor
}

extension ClassificationHead {
    public func forward(lesionMaskFeatures: Tensor, workspace: Workspace, forBackward: Bool) throws -> ClassificationHeadOutput {
        try forward(lesionMaskFeatures: lesionMaskFeatures, workspace: workspace)
    }
}

/// What a head's forward produced.
public struct ClassificationHeadOutput {
    /// The image logits [1, 3].
    public var logits: Tensor
    /// The affinity layer's intermediate results (built-in head only).
    public var affinity: AffinityLayer.Output?
    /// What the head's backward needs (its own type).
    public var saved: Any?

    /// An output with the given logits and, optionally, the affinity results and backward state.
    public init(logits: Tensor, affinity: AffinityLayer.Output? = nil, saved: Any? = nil) {
        self.logits = logits; self.affinity = affinity; self.saved = saved
    }
}

/// Makes classification heads by id (PluginHost's `PluginRegistry` is one: it makes the heads of its
/// loaded head plugins).
public protocol ClassificationHeadFactory {
    /// A head with fresh parameters drawn from `seed`, made from `config`; nil when this factory
    /// does not know `id`.
    /// - Throws: when the factory knows `id` but cannot make the head (e.g. a bad config).
    func makeHead(id: String, config: String, seed: UInt64) throws -> (any ClassificationHead)?
}

/// Why a model with a given classification head cannot be made, loaded or trained.
public enum ClassificationHeadError: Error, CustomStringConvertible, Equatable {
    /// The weights use a plugin head and no head factory for that id was supplied.
    case headUnavailable(id: String, version: String)
    /// The weights (or checkpoint) were made for another head than the model has.
    case headMismatch(file: String, model: String)
    /// Something that exists only for the built-in affinity head (e.g. C') was asked of another head.
    case notAffinityHead(id: String, detail: String)
    /// An id that cannot be a head's id.
    case invalidID(String)
    /// The weights were made by another major version of the head plugin than the one loaded
    /// (semantic versioning: a new major version may read the same parameters differently).
    case versionMismatch(id: String, file: String, loaded: String)

    /// A message for the user that names the head and, where there is one, the remedy.
    public var description: String {
        switch self {
        case .headUnavailable(let id, let version):
            return "The weights use the classification head plugin \"\(id)\"\(version.isEmpty ? "" : " \(version)"), "
                + "and no head factory for that id was supplied; load the plugin (e.g. with --plugin-dir) to use them."
        case .headMismatch(let file, let model):
            return "The weights were made for the \"\(file)\" classification head, but the model has the \"\(model)\" head."
        case .notAffinityHead(let id, let detail):
            return "The model's classification head is the plugin \"\(id)\", not the built-in affinity head: \(detail)."
        case .invalidID(let id):
            return "\"\(id)\" is not a valid classification head id (lower-case letters, digits, '.', '_' and '-')."
        case .versionMismatch(let id, let file, let loaded):
            return "The weights were made with version \(file) of the head plugin \"\(id)\", but version \(loaded) is loaded; "
                + "a different major version may not read them the same way."
        }
    }
}

/// The built-in head: the affinity layer (MODEL.md §6) followed by the image classifier `s2new`,
/// with the original state-dict keys (`affinity_layer.*`, `s2new.*`).
public final class AffinityHead: ClassificationHead {
    /// The id recorded for the built-in head.
    public static let id = "affinity"
    /// The affinity layer (`affinity_layer.*`).
    public let layer: AffinityLayer
    /// The image classifier (`s2new.*`).
    public let classifier: ImageClassifier

    /// A built-in head with zero weights; call `initialize(rng:)` or load weights.
    /// - Parameters:
    ///   - affinities: C'.
    ///   - batchSize: B, the RoIs per batch.
    public init(affinities: Int, batchSize: Int = 8) {
        layer = AffinityLayer(affinities: affinities, batchSize: batchSize)
        classifier = ImageClassifier()
    }

    /// C' of the affinity layer.
    public var affinities: Int { layer.affinities }
    /// Always `affinity` (`AffinityHead.id`).
    public var headID: String { Self.id }
    /// Always `builtin`.
    public var headVersion: String { "builtin" }
    /// Always `{}`: the head's one setting, C', is recorded as the `affinity` metadata instead.
    public var headConfig: String { "{}" }
    /// The affinity layer's parameters, then the classifier's.
    public var parameters: [Parameter] { layer.parameters + classifier.parameters }
    /// The affinity layer's state entries, then the classifier's.
    public var stateEntries: [StateEntry] { layer.stateEntries + classifier.stateEntries }
    /// The affinity layer's duplicate keys (`sieve.1`, `sieve.2`, `pars.0`, `pars.1`).
    public var originalAliases: [(alias: String, of: String)] { layer.originalAliases }

    /// The affinity layer first, then the classifier (the order of MODEL.md §13).
    public func initialize(rng: inout SeededGenerator) {
        layer.initialize(rng: &rng)
        classifier.initialize(rng: &rng)
    }

    struct Saved { var layer: AffinityLayer.Saved; var classifier: ImageClassifier.Saved }

    /// The affinity layer, then the classifier: lesion mask features [B, 256, 28, 28] → logits [1, 3],
    /// with X1, X2 and x3 in `affinity`. The layer's BatchNorms normalise with the batch statistics
    /// and update their running statistics (MODEL.md §6.5), also at inference.
    /// - Throws: `TensorError` when the features are not [B, 256, 28, 28].
    public func forward(lesionMaskFeatures: Tensor, workspace: Workspace) throws -> ClassificationHeadOutput {
        try forward(lesionMaskFeatures: lesionMaskFeatures, workspace: workspace, forBackward: true)
    }

    /// With `forBackward: false` the affinity layer keeps none of its sieve's intermediate results
    /// (about 70 MB at B = 8), and `backward` refuses the output.
    public func forward(lesionMaskFeatures: Tensor, workspace: Workspace, forBackward: Bool) throws -> ClassificationHeadOutput {
        let (aff, asaved) = try layer.forward(lesionMaskFeatures, workspace: workspace, keep: forBackward)
        let (logits, csaved) = try classifier.forward(aff.x3)
        return ClassificationHeadOutput(logits: logits, affinity: aff, saved: Saved(layer: asaved, classifier: csaved))
    }

    /// Backpropagates ∂L/∂logits [1, 3] through the classifier and the affinity layer, accumulating
    /// their gradients.
    /// - Returns: ∂L/∂(lesion mask features) [B, 256, 28, 28].
    /// - Throws: `AffinityError.invalidArgument` when `output` did not come from this head's
    ///   `forward`; `TensorError` for mismatched shapes.
    public func backward(logitsGradient: Tensor, output: ClassificationHeadOutput, workspace: Workspace) throws -> Tensor {
        guard let s = output.saved as? Saved else {
            throw AffinityError.invalidArgument("the affinity head's backward needs the output of its own forward")
        }
        let dx3 = try classifier.backward(logitsGradient, saved: s.classifier)
        return try layer.backward(dx3, saved: s.layer, workspace: workspace)
    }
}

/// Head ids: the plugin-id alphabet (`[a-z0-9._-]`, 1…64 characters).
func isValidHeadID(_ id: String) -> Bool {
    !id.isEmpty && id.count <= 64 && id.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || "._-".unicodeScalars.contains($0) }
}

public extension AffinityModel {
    /// The safetensors metadata that names the model's head: `affinity` = C' for the built-in head
    /// (the files of the original layout carry nothing else); `head`, `head_version` and
    /// `head_config` for a plugin head.
    var headMetadata: [String: String] {
        if let a = affinityHead { return ["affinity": String(a.affinities)] }
        return ["head": head.headID, "head_version": head.headVersion, "head_config": head.headConfig]
    }

    /// The head's `id version` for result records; nil for the built-in head.
    var headRecord: String? { affinityHead == nil ? "\(head.headID) \(head.headVersion)" : nil }
}

public extension SafeTensorsFile {
    /// The head id a weights file was made for (`affinity` when the metadata names none).
    var headID: String { metadata["head"] ?? AffinityHead.id }
}
