import Affinity
import CAffinityPlugin
import NN
import Foundation
import Tensor

/// A loaded head plugin: makes heads.
public struct HeadPlugin: Sendable {
    public let plugin: LoadedPlugin
    var table: affinity_head { plugin.descriptor.pointee.head!.pointee }

    init(_ plugin: LoadedPlugin) { self.plugin = plugin }

    /// The state-dict prefix of this plugin's parameters in model files: `head.<id>`.
    public var statePrefix: String { "head." + plugin.id }

    /// A head with fresh parameters.
    /// - Parameters:
    ///   - config: the plugin's JSON config.
    ///   - prefix: state-dict prefix of its parameters; default `head.<id>` (e.g.
    ///     `head.meanpool.fc1.weight`), the prefix of model files and checkpoints.
    /// - Throws: `PluginError.callFailed`.
    public func create(config: String = "{}", seed: UInt64, prefix: String? = nil) throws -> PluginHead {
        try PluginHead(plugin: self, config: config, seed: seed, prefix: prefix ?? statePrefix)
    }
}

/// An image-classification head living in a plugin, as an engine layer: `forward` from the
/// lesion-mask-feature batch [rois, 256, 28, 28] to the logits [1, 3], `backward` adding into the
/// features' gradient and into the parameters' gradients.
///
/// The host's `Parameter`s are the source of truth: `forward` copies their values into the plugin's
/// buffers (so the host's Adam and checkpoint loads need not know about the plugin), and `backward`
/// adds the plugin's gradients into `Parameter.grad` and clears the plugin's. The copies are the
/// parameters' size (the MLP heads: ~50 k floats), negligible beside the 1.6 M-float feature batch.
public final class PluginHead: Module {
    public let plugin: HeadPlugin
    /// The JSON config the head was created from.
    public let config: String
    /// The state-dict prefix of the parameters.
    public let prefix: String
    public let parameters: [Parameter]
    public var stateEntries: [StateEntry] { parameters.map { StateEntry($0.name, .float($0.value)) } }
    private let handle: UnsafeMutableRawPointer
    private let buffers: [(value: UnsafeMutablePointer<Float>, gradient: UnsafeMutablePointer<Float>, count: Int)]
    private var lastShape: [Int]?
    /// Counts forwards, so that a backward can tell whether it belongs to the latest one.
    private var forwardCount = 0

    init(plugin: HeadPlugin, config: String, seed: UInt64, prefix: String) throws {
        self.plugin = plugin
        self.config = config
        self.prefix = prefix
        let record = plugin.plugin.record
        var handle: UnsafeMutableRawPointer?
        var error = makeErrorBuffer()
        let status = plugin.table.create!(config, seed, &handle, &error)
        guard status == AFFINITY_OK, let handle else {
            throw PluginError.callFailed(plugin: record, operation: "create", code: status == AFFINITY_OK ? AFFINITY_E_FAILED : status,
                                         message: message(of: &error))
        }
        var parameters: [Parameter] = []
        var buffers: [(UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, Int)] = []
        let n = Int(plugin.table.parameter_count!(handle))
        do {
            for i in 0..<n {
                var p = affinity_parameter()
                p.struct_size = UInt32(MemoryLayout<affinity_parameter>.size)
                var error = makeErrorBuffer()
                let status = plugin.table.parameter!(handle, Int32(i), &p, &error)
                guard status == AFFINITY_OK else {
                    throw PluginError.callFailed(plugin: record, operation: "parameter \(i)", code: status, message: message(of: &error))
                }
                let rank = Int(p.rank)
                let dims = withUnsafeBytes(of: p.shape) { Array($0.bindMemory(to: Int64.self)) }
                guard (1...4).contains(rank), let name = p.name, let value = p.value, let gradient = p.gradient,
                      dims.prefix(rank).allSatisfy({ $0 > 0 }), dims.prefix(rank).reduce(1, *) == p.count else {
                    throw PluginError.callFailed(plugin: record, operation: "parameter \(i)", code: AFFINITY_E_FAILED,
                                                 message: "the parameter's description is inconsistent (rank, shape, count or buffers)")
                }
                let shape = dims.prefix(rank).map { Int($0) }
                let parameter = Parameter(joinName(prefix, String(cString: name)), shape: shape)
                parameter.value.data.update(from: value, count: Int(p.count))
                parameters.append(parameter)
                buffers.append((value, gradient, Int(p.count)))
            }
        } catch {
            plugin.table.destroy!(handle)
            throw error
        }
        self.handle = handle
        self.parameters = parameters
        self.buffers = buffers
    }

    deinit { plugin.table.destroy!(handle) }

    /// logits [1, 3] ← head(features [rois, channels, height, width]).
    /// - Throws: `TensorError` for a features tensor that is not rank 4, `PluginError.callFailed`.
    public func forward(_ features: Tensor) throws -> Tensor {
        try features.expectRank(4, "PluginHead.forward", "features")
        for (p, b) in zip(parameters, buffers) { b.value.update(from: p.value.data, count: b.count) }
        let s = features.shape
        let logits = Tensor(shape: [1, 3])
        var error = makeErrorBuffer()
        let status = plugin.table.forward!(handle, features.data, Int32(s[0]), Int32(s[1]), Int32(s[2]), Int32(s[3]), logits.data, &error)
        guard status == AFFINITY_OK else {
            throw PluginError.callFailed(plugin: plugin.plugin.record, operation: "forward", code: status, message: message(of: &error))
        }
        lastShape = s
        forwardCount += 1
        return logits
    }

    /// featuresGradient += ∂L/∂features, every parameter's grad += ∂L/∂parameter, from
    /// logitsGradient [1, 3] = ∂L/∂logits of the last forward.
    /// - Throws: `TensorError` for mismatched shapes (or no forward yet), `PluginError.callFailed`.
    public func backward(logitsGradient: Tensor, featuresGradient: Tensor?) throws {
        guard let shape = lastShape else {
            throw TensorError.invalidArgument(op: "PluginHead.backward", detail: "called before forward")
        }
        try logitsGradient.expectShape([1, 3], "PluginHead.backward", "logitsGradient")
        if let g = featuresGradient { try g.expectShape(shape, "PluginHead.backward", "featuresGradient") }
        for b in buffers { b.gradient.update(repeating: 0, count: b.count) }
        var error = makeErrorBuffer()
        let status = plugin.table.backward!(handle, logitsGradient.data, featuresGradient?.data, &error)
        guard status == AFFINITY_OK else {
            throw PluginError.callFailed(plugin: plugin.plugin.record, operation: "backward", code: status, message: message(of: &error))
        }
        for (p, b) in zip(parameters, buffers) {
            let g = p.grad.data
            for i in 0..<b.count { g[i] += b.gradient[i] }
            p.hasGradient = true
        }
    }
}

/// The plugin head as the model's classification head (in place of the affinity layer + classifier).
extension PluginHead: ClassificationHead {
    public var headID: String { plugin.plugin.id }
    public var headVersion: String { plugin.plugin.version }
    public var headConfig: String { config }
    public var originalAliases: [(alias: String, of: String)] { [] }

    /// Redraws the parameters: a fresh head of the same plugin and config made from a seed drawn
    /// from `rng` gives the values. (Creation succeeded with this config once; should it fail now,
    /// the values drawn at this head's own creation stay.)
    public func initialize(rng: inout SeededGenerator) {
        let seed = rng.next()
        guard let fresh = try? PluginHead(plugin: plugin, config: config, seed: seed, prefix: prefix) else { return }
        for (p, q) in zip(parameters, fresh.parameters) where p.value.count == q.value.count {
            p.value.data.update(from: q.value.data, count: p.value.count)
        }
    }

    /// What a forward hands to the matching backward: which forward it was.
    struct ForwardToken { let index: Int }

    public func forward(lesionMaskFeatures: Tensor, workspace: Workspace) throws -> ClassificationHeadOutput {
        let logits = try forward(lesionMaskFeatures)
        return ClassificationHeadOutput(logits: logits, affinity: nil, saved: ForwardToken(index: forwardCount))
    }

    /// The plugin keeps what its last forward needs, so only the output of the latest forward can
    /// be differentiated; an older one is an error.
    public func backward(logitsGradient: Tensor, output: ClassificationHeadOutput, workspace: Workspace) throws -> Tensor {
        guard let token = output.saved as? ForwardToken, token.index == forwardCount, let shape = lastShape else {
            throw TensorError.invalidArgument(op: "PluginHead.backward", detail: "the output is not that of the head's latest forward")
        }
        let featuresGradient = Tensor(shape: shape)
        try backward(logitsGradient: logitsGradient, featuresGradient: featuresGradient)
        return featuresGradient
    }
}

/// MODEL.md §7 L_CLS: the mean over the 3 classes of BCE-with-logits against the one-hot label;
/// writes ∂L/∂logits into `gradient` ([1, 3]) and returns the loss.
public func classificationLoss(logits: Tensor, label: Int, gradient: Tensor) -> Float {
    precondition(logits.count == 3 && gradient.count == 3 && (0..<3).contains(label), "L_CLS needs 3 logits and a label in 0..<3")
    var loss: Double = 0
    for k in 0..<3 {
        let z = Double(logits.data[k]), t: Double = k == label ? 1 : 0
        // max(z, 0) − z·t + log(1 + e^−|z|), stable for any z.
        loss += max(z, 0) - z * t + log1p(exp(-abs(z)))
        let sigma = 1 / (1 + exp(-z))
        gradient.data[k] = Float((sigma - t) / 3)
    }
    return Float(loss / 3)
}

/// A registry makes the heads of its loaded head plugins (for `ModelLoader` and the trainer).
extension PluginRegistry: ClassificationHeadFactory {
    /// A head of the loaded head plugin `id` (state-dict prefix `head.<id>`), or nil when no head
    /// plugin with that id is loaded.
    /// - Throws: `PluginError.callFailed` when the plugin refuses the config.
    public func makeHead(id: String, config: String, seed: UInt64) throws -> (any ClassificationHead)? {
        guard let p = plugin(id: id), p.kind == .head else { return nil }
        return try HeadPlugin(p).create(config: config, seed: seed)
    }
}
