import Detection
import Foundation
import NN
import Tensor

/// Class names by index (MODEL.md §1.1).
public let classNames = ["normal", "common pneumonia", "COVID-19"]

/// The result of one full inference of the original test script, plus the segmentation output.
public struct Prediction: Sendable {
    /// The three raw logits (0 normal, 1 common pneumonia, 2 COVID-19).
    public var logits: [Float]
    /// The predicted class: the index of the largest logit (the first on ties).
    public var classIndex: Int
    /// The name of `classIndex` in `classNames`.
    public var className: String { classNames[classIndex] }
    /// Softmax of the logits.
    public var probabilities: [Float]
    /// The B selected RoI boxes in rank order and their lesion scores.
    public var roiBoxes: [Box]
    /// The lesion scores of `roiBoxes`, same order.
    public var roiScores: [Float]
    /// Segmentation detections (score > 0.05, NMS 0.5, ≤ 100), each with its 28×28 mask probabilities.
    public var detections: [Detection]
    /// Pixels > 0.5 of each detection's pasted mask (same order as `detections`).
    public var maskAreas: [Int]
    /// The affinity matrix X2 [C', 256], for inspection; [0, 256] (empty) for a model whose head is
    /// not the built-in affinity head.
    public var affinityMatrix: Tensor
    /// Seconds per stage.
    public var timings: [String: Double]
    /// The multiply-adds of each stage of `timings` (Tensor's `MultiplyAdds`: the products done,
    /// after Winograd), for the roofline report.
    public var multiplyAdds: [String: Int] = [:]
}

/// Loads weights into an affinity model: our checkpoints, model files, or the original state dict
/// (with its `sieve.1/.2` and `pars.*` duplicates, its FPN keys in either of torchvision's namings,
/// `TorchvisionNaming`, renamed here, the one place every reader goes through). The file's `head` metadata names its
/// classification head: none (or `affinity`) is the built-in affinity head, whose C' comes from the
/// `affinity` metadata or from the shape of `affinity_layer.batch_to_feat_mat`; any other id is a
/// plugin head, made by the head factory from the file's `head_config` before the weights load.
public enum ModelLoader {
    /// The largest number of affinities C' a weights file may name (checked before allocation).
    public static let maxAffinities = 4096

    /// The number of affinities a weights file was made for.
    /// - Throws: `ClassificationHeadError.notAffinityHead` for a file with a plugin head.
    public static func affinities(of file: SafeTensorsFile) throws -> Int {
        guard file.headID == AffinityHead.id else {
            throw ClassificationHeadError.notAffinityHead(id: file.headID, detail: "the weights have no affinity count")
        }
        if let s = file.metadata["affinity"], let k = Int(s), k > 0 { return k }
        if let e = file.entries["affinity_layer.batch_to_feat_mat"], e.shape.count == 2, e.shape[1] > 0 { return e.shape[1] }
        throw CheckpointError.corrupt("the file names no affinity count and has no affinity_layer.batch_to_feat_mat")
    }

    /// The head a weights file needs, with fresh parameters (the caller loads the weights).
    /// - Throws: `ClassificationHeadError.headUnavailable` when the file's head is a plugin and
    ///   `heads` is nil or does not know its id; `.versionMismatch` when the file's `head_version`
    ///   and the loaded plugin's version differ in their major version; `ClassificationHeadError.notAffinityHead` when
    ///   `affinities` is given for a plugin head; the factory's error for a config it refuses.
    public static func head(for file: SafeTensorsFile, affinities: Int? = nil,
                            heads: (any ClassificationHeadFactory)? = nil) throws -> any ClassificationHead {
        let id = file.headID
        if id == AffinityHead.id {
            let k = try affinities ?? Self.affinities(of: file)
            // Checked before the head is allocated: a file naming a huge C' must not make the
            // process allocate it (the paper's C' is 128; the store accepts 1…4096).
            guard (1...Self.maxAffinities).contains(k) else {
                throw CheckpointError.corrupt("the number of affinities must be 1…\(Self.maxAffinities), the file names \(k)")
            }
            return AffinityHead(affinities: k)
        }
        guard isValidHeadID(id) else { throw ClassificationHeadError.invalidID(id) }
        if affinities != nil {
            throw ClassificationHeadError.notAffinityHead(id: id, detail: "a number of affinities does not apply to it")
        }
        let version = file.metadata["head_version"] ?? ""
        guard let heads, let head = try heads.makeHead(id: id, config: file.metadata["head_config"] ?? "{}", seed: 0) else {
            throw ClassificationHeadError.headUnavailable(id: id, version: version)
        }
        guard head.headID == id else { throw ClassificationHeadError.headMismatch(file: id, model: head.headID) }
        // Same major version (the part before the first '.'), or either version unknown.
        func major(_ v: String) -> Substring { v.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false).first ?? "" }
        if !version.isEmpty, !head.headVersion.isEmpty, major(version) != major(head.headVersion) {
            throw ClassificationHeadError.versionMismatch(id: id, file: version, loaded: head.headVersion)
        }
        return head
    }

    /// A model with the file's weights. `affinities` overrides (and must agree with) the file;
    /// `heads` makes the head of a file whose head is a plugin. The FPN's convolutions may be named
    /// in either of torchvision's namings (`TorchvisionNaming`); a file that mixes them is refused.
    /// - Throws: `ClassificationHeadError` (see `head(for:affinities:heads:)`),
    ///   `TorchvisionNamingError.mixed` for a file with FPN keys in both namings, `CheckpointError`
    ///   naming missing, unexpected or mis-shaped keys (in the file's naming).
    public static func load(_ file: SafeTensorsFile, affinities: Int? = nil, config: DetectionConfig = DetectionConfig(),
                            heads: (any ClassificationHeadFactory)? = nil) throws -> AffinityModel {
        let naming = try keyNaming(of: file)
        let model = AffinityModel(head: try head(for: file, affinities: affinities, heads: heads), config: config)
        var aliases = Dictionary(uniqueKeysWithValues: model.originalAliases.map { ($0.alias, $0.of) })
        for name in file.names where name.hasPrefix("optimizer.") { aliases[name] = name }
        if naming == .since0_13 {
            try RenamedState(model, rename: { originalKey($0, naming: .since0_13) }).load(from: file, aliases: aliases)
        } else {
            try model.load(from: file, aliases: aliases)
        }
        return model
    }

    /// Reads a safetensors file and loads it as `load(_:affinities:config:heads:)` does, with the
    /// default `DetectionConfig`.
    /// - Parameters:
    ///   - url: A model file, training checkpoint or converted original state dict.
    ///   - affinities: C' to build the built-in head with; nil: from the file.
    ///   - heads: Makes the head of a file whose head is a plugin.
    /// - Returns: The model with the file's weights.
    /// - Throws: `CheckpointError` when the file cannot be read or does not fit the model;
    ///   `TorchvisionNamingError` when it mixes torchvision's FPN namings;
    ///   `ClassificationHeadError` as `head(for:affinities:heads:)`.
    public static func load(contentsOf url: URL, affinities: Int? = nil, heads: (any ClassificationHeadFactory)? = nil) throws -> AffinityModel {
        try load(try SafeTensorsFile(contentsOf: url), affinities: affinities, heads: heads)
    }

    /// The metadata key that records which of torchvision's FPN namings the original state dict
    /// used (`TorchvisionNaming`'s raw values, `pre-0.13` or `0.13+`). `tools/convert_pth.py`
    /// writes it, with the keys renamed to the pre-0.13 names; `affinity-lab export` keeps it.
    public static let torchvisionNamingKey = "torchvision_naming"

    /// Which of torchvision's FPN namings the weights were found in: `.since0_13` when the file's
    /// keys use the 0.13+ names, else the file's `torchvision_naming` metadata (a converted file
    /// keeps the naming of the `.pth` it came from), else `.pre0_13`.
    /// - Throws: `TorchvisionNamingError.mixed` when the file's keys use both namings.
    public static func torchvisionNaming(of file: SafeTensorsFile) throws -> TorchvisionNaming {
        if try keyNaming(of: file) == .since0_13 { return .since0_13 }
        return file.metadata[torchvisionNamingKey].flatMap(TorchvisionNaming.init(rawValue:)) ?? .pre0_13
    }

    /// The naming of the file's FPN keys: nil when it has none.
    /// - Throws: `TorchvisionNamingError.mixed` when it has keys in both namings.
    static func keyNaming(of file: SafeTensorsFile) throws -> TorchvisionNaming? {
        var found: [TorchvisionNaming: [String]] = [:]
        for name in file.names {
            if let n = fpnKeyNaming(name) { found[n, default: []].append(name) }
        }
        if let old = found[.pre0_13], let new = found[.since0_13] {
            throw TorchvisionNamingError.mixed(pre0_13: old.sorted(), since0_13: new.sorted())
        }
        return found.keys.first
    }

    /// The naming of an FPN convolution key (`backbone.fpn.{inner,layer}_blocks.<i>.{weight,bias}`
    /// before 0.13, `….<i>.0.{weight,bias}` since), nil for any other key.
    static func fpnKeyNaming(_ key: String) -> TorchvisionNaming? {
        let prefix = "backbone.fpn."
        guard key.hasPrefix(prefix) else { return nil }
        let parts = key.dropFirst(prefix.count).split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3 || parts.count == 4, parts[0] == "inner_blocks" || parts[0] == "layer_blocks",
              !parts[1].isEmpty, parts[1].allSatisfy(\.isASCII), parts[1].allSatisfy(\.isNumber),
              let leaf = parts.last, leaf == "weight" || leaf == "bias" else { return nil }
        if parts.count == 3 { return .pre0_13 }
        return parts[2] == "0" ? .since0_13 : nil
    }

    /// A state-dict key of the original layout (our names, which are torchvision's before 0.13)
    /// as `naming` names it: `backbone.fpn.inner_blocks.0.weight` becomes
    /// `backbone.fpn.inner_blocks.0.0.weight` for `.since0_13`; other keys are unchanged.
    public static func originalKey(_ key: String, naming: TorchvisionNaming) -> String {
        guard naming == .since0_13, fpnKeyNaming(key) == .pre0_13, let dot = key.lastIndex(of: ".") else { return key }
        return String(key[..<dot]) + ".0" + String(key[dot...])
    }

    /// The metadata keys that describe a model's head; the model's own values replace any given.
    static let headKeys: Set<String> = ["affinity", "head", "head_version", "head_config"]

    /// Writes a model file (original key layout with its aliases, so PyTorch's `load_state_dict`
    /// reads it) atomically. `dtype` .f16 halves the size. The metadata records the head
    /// (`AffinityModel.headMetadata`).
    public static func save(_ model: AffinityModel, to url: URL, dtype: DType = .f32, metadata: [String: String] = [:]) throws {
        var meta = metadata.filter { !headKeys.contains($0.key) }.merging(model.headMetadata) { _, b in b }
        meta["format"] = meta["format"] ?? "lesionaffinity-model-1"
        var w = SafeTensorsWriter(metadata: meta)
        model.addState(to: &w, dtype: dtype, aliases: model.originalAliases)
        try w.write(to: url)
    }
}

/// torchvision's two namings of the FPN's convolutions in a state dict. Before 0.13 they are
/// `backbone.fpn.inner_blocks.0.{weight,bias}` and `backbone.fpn.layer_blocks.0.{weight,bias}` (the
/// names of the author's checkpoints and of our files); torchvision 0.13 wraps each in a
/// `Conv2dNormActivation`, which adds a `.0`: `backbone.fpn.inner_blocks.0.0.weight`. The raw values
/// are what the `torchvision_naming` metadata and model cards record.
public enum TorchvisionNaming: String, Sendable, CaseIterable {
    /// `backbone.fpn.inner_blocks.0.weight`: torchvision before 0.13, and our files.
    case pre0_13 = "pre-0.13"
    /// `backbone.fpn.inner_blocks.0.0.weight`: torchvision 0.13 and later.
    case since0_13 = "0.13+"
}

/// A state dict that cannot be read because of how it names the FPN's convolutions.
public enum TorchvisionNamingError: Error, CustomStringConvertible, Equatable {
    /// The file names FPN convolutions in both of torchvision's namings (`TorchvisionNaming`), so
    /// which tensor is meant is ambiguous; the keys of each naming are listed.
    case mixed(pre0_13: [String], since0_13: [String])

    /// A one-line message naming the keys of both namings.
    public var description: String {
        switch self {
        case .mixed(let old, let new):
            return "the state dict mixes torchvision's two FPN key namings: \(old.count) key(s) named as before 0.13 ("
                + old.prefix(4).joined(separator: ", ") + ") and \(new.count) as since 0.13 (" + new.prefix(4).joined(separator: ", ")
                + "); a state dict must use one naming"
        }
    }
}

/// A module's state under other names (the same tensors and counters): loading a file through it
/// fills the module. `ModelLoader` reads a file in torchvision's 0.13+ naming this way.
final class RenamedState: Module {
    let base: any Module
    let rename: (String) -> String
    init(_ base: any Module, rename: @escaping (String) -> String) { self.base = base; self.rename = rename }
    var parameters: [Parameter] { base.parameters }
    var stateEntries: [StateEntry] { base.stateEntries.map { StateEntry(rename($0.name), $0.value) } }
}

public extension AffinityModel {
    /// The full inference on a normalised [1, 3, H, W] image (MODEL.md §9): class logits from the
    /// classification path and the segmentation detections with pasted-mask areas.
    /// `rng` drives the RoI-batch padding rule (only used when fewer than 8 RoIs survive).
    ///
    /// Like the original test script, the affinity layer's BatchNorms run in training mode: they
    /// normalise with the RoI batch's statistics and update their running statistics.
    /// - Parameters:
    ///   - image: The image [1, 3, H, W], normalised as Imaging's `Preprocessing.modelInput` does;
    ///     H and W multiples of 16, at least 32 (512×512 from `Preprocessing.modelInput`).
    ///   - withDetections: Whether to run the segmentation detections and their masks (false leaves
    ///     `detections` and `maskAreas` empty).
    ///   - rng: The generator of the padding rule; a fixed seed makes the result reproducible.
    /// - Returns: The logits, class, probabilities, RoI batch, detections, mask areas, the affinity
    ///   matrix and per-stage timings in seconds (`backbone`, `proposals`, `classification`, `total`;
    ///   with detections also `segmentation`, `paste_masks`).
    /// - Throws: `AffinityError.invalidImage` for an image of the wrong shape,
    ///   `AffinityError.noRegionsOfInterest` when no RoI survives the selection, `TensorError` from
    ///   the layers.
    func predictImage(_ image: Tensor, withDetections: Bool = true, rng: inout SeededGenerator) throws -> Prediction {
        try Self.checkImage(image)
        var timings: [String: Double] = [:]
        var macs: [String: Int] = [:]
        func timed<T>(_ name: String, _ f: () throws -> T) rethrows -> T {
            let t0 = DispatchTime.now().uptimeNanoseconds, c0 = MultiplyAdds.count
            let r = try f()
            timings[name, default: 0] += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            macs[name, default: 0] += MultiplyAdds.count - c0
            return r
        }
        let h = image.shape[2], w = image.shape[3]
        let t0 = DispatchTime.now().uptimeNanoseconds, c0 = MultiplyAdds.count
        let (features, _) = try timed("backbone") { try backbone.forward(image, training: false, workspace: segmentation.workspace, keep: false) }
        // The RPN, its proposals and their pooling serve both the classification path and the detections.
        let stage = try timed("proposals") { try segmentation.proposalStage(features: features, imageHeight: h, imageWidth: w) }
        let (out, _) = try timed("classification") {
            try classify(features: features, imageHeight: h, imageWidth: w, rng: &rng, stage: stage, forBackward: false)
        }
        var dets: [Detection] = [], areas: [Int] = []
        if withDetections {
            dets = try timed("segmentation") { try segmentation.inference(features: features, imageHeight: h, imageWidth: w, stage: stage).detections }
            areas = timed("paste_masks") {
                var a = [Int](repeating: 0, count: dets.count)
                a.withUnsafeMutableBufferPointer { out in
                    let o = out.baseAddress!
                    parallelFor(dets.count, minChunk: 4) { i in
                        o[i] = dets[i].mask28.withUnsafeBufferPointer { pastedArea($0.baseAddress!, box: dets[i].box, imageHeight: h, imageWidth: w) }
                    }
                }
                return a
            }
        }
        timings["total"] = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        macs["total"] = MultiplyAdds.count - c0
        let logits = out.logits.array
        let m = logits.max() ?? 0
        let e = logits.map { expf($0 - m) }
        let s = e.reduce(0, +)
        let cls = logits.indices.max { logits[$0] < logits[$1] } ?? 0
        return Prediction(logits: logits, classIndex: cls, probabilities: e.map { $0 / s }, roiBoxes: out.roiBatch.boxes,
                          roiScores: out.roiBatch.scores, detections: dets, maskAreas: areas, affinityMatrix: out.affinity?.x2 ?? Tensor(shape: [0, out.lesionMaskFeatures.shape[1]]), timings: timings,
                          multiplyAdds: macs)
    }
}

/// The number of pixels > 0.5 of a 28×28 probability map pasted into an H×W image (§5.2.4).
public func pastedArea(_ probs: UnsafePointer<Float>, box: Box, imageHeight: Int, imageWidth: Int) -> Int {
    pastedMaskArea(probs, size: 28, box: box, imageHeight: imageHeight, imageWidth: imageWidth)
}
