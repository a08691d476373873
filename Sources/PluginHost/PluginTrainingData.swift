// Training data read through dataset-reader plugins: a data set decoded into memory
// (`PluginDataSet`) and the trainer's view of one or two of them (`PluginTrainingData`). Used by
// affinity-lab (`--data-format`, `--segmentation-format`) and by affinityd (Train's `data_format`,
// `segmentation_format`).
import Affinity
import Detection
import Foundation
import Imaging
import Tensor

/// Why a data set cannot be read through a dataset-reader plugin, or a sample cannot be made from
/// it. `description` is a sentence that can be shown to a person as it is.
public enum PluginDataSetError: Error, Equatable, CustomStringConvertible, Sendable {
    /// The data-set directory does not exist.
    case missingDirectory(path: String)
    /// No loaded dataset-reader plugin has this id; `loaded` are the ids of the readers that are.
    case unknownReader(id: String, loaded: [String])
    /// The reader refuses the JSON options (a key it does not know, a value of the wrong kind, …).
    case refusedOptions(reader: String, options: String, reason: String)
    /// The reader cannot open the root (no split file, not its layout, …); `reason` is its sentence.
    case unusableRoot(reader: String, root: String, reason: String)
    /// The reader opened the root, but not one sample decodes.
    case noUsableSample(reader: String, root: String, broken: [BrokenEntry])
    /// A classification set whose samples carry no class label.
    case noLabelledSample(root: String)
    /// A sample without a class label asked for as a classification sample.
    case unlabelledSample(name: String)
    /// The side the samples are resized to is not positive.
    case invalidSide(Int)
    /// A sample index outside the set (`count` 0: no such set was given).
    case noSample(set: String, index: Int, count: Int)

    public var description: String {
        switch self {
        case .missingDirectory(let path):
            return "The directory \(path) does not exist."
        case .unknownReader(let id, let loaded):
            return "No dataset reader plugin with the id \"\(id)\" is loaded. Readers loaded: \(loaded.isEmpty ? "none" : loaded.joined(separator: ", "))."
        case .refusedOptions(_, let options, let reason):
            return "The options \(options) are refused: \(reason)"
        case .unusableRoot(_, _, let reason):
            return reason
        case .noUsableSample(let reader, let root, let broken):
            let shown = broken.prefix(3).map(\.description).joined(separator: "; ")
            let more = broken.count > 3 ? "; and \(broken.count - 3) more" : ""
            return "The \(reader) reader found no usable sample in \(root) (\(broken.count) broken\(broken.isEmpty ? "" : ": " + shown + more))."
        case .noLabelledSample(let root):
            return "The data set \(root) has no labelled sample."
        case .unlabelledSample(let name):
            return "The sample \(name) has no class label."
        case .invalidSide(let side):
            return "The training image side must be positive, got \(side)."
        case .noSample(let set, let index, let count):
            return count == 0 ? "No \(set) set was given." : "There is no \(set) sample \(index); the set has \(count)."
        }
    }
}

/// A data set read through a dataset-reader plugin and decoded into memory: every sample the
/// reader lists is read (images through the registry's decoders, masks as label maps); the entries
/// that cannot be used are kept aside with their reasons instead of failing the whole set.
public struct PluginDataSet: Sendable {
    /// The reader's id.
    public let format: String
    /// The folder the reader opened.
    public let root: String
    /// The reader's `id version`, then the decoder plugins that read its images (sorted; the
    /// built-in PNG reader is not listed).
    public let plugins: [String]
    /// The usable samples, in the reader's order.
    public let samples: [DatasetSample]
    /// The entries set aside: the reader's own and the samples that did not decode.
    public let broken: [BrokenEntry]

    /// The reader options used when none are given: `{"split": split}` for the readers with
    /// splits (covidx-ct, cncb-seg) when `split` is given, `{}` otherwise.
    public static func defaultOptions(reader: String, split: String?) -> String {
        guard let split, ["covidx-ct", "cncb-seg"].contains(reader) else { return "{}" }
        let quoted = String(data: try! JSONEncoder().encode(split), encoding: .utf8)!
        return "{\"split\": \(quoted)}"
    }

    /// Opens `directory` (or its `subfolder` when that exists, e.g. the `classification/` folder
    /// of a phantom root) with the reader `format` of `registry`, and decodes every sample.
    /// - Parameter options: the reader's JSON options (see `defaultOptions(reader:split:)`).
    /// - Throws: `PluginDataSetError`: `missingDirectory`, `unknownReader` (naming the readers
    ///   loaded), `refusedOptions`, `unusableRoot` (the reader's reason), `noUsableSample`.
    public init(format: String, directory: String, subfolder: String? = nil, options: String, registry: PluginRegistry) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw PluginDataSetError.missingDirectory(path: directory)
        }
        var dir = directory
        if let subfolder, FileManager.default.fileExists(atPath: dir + "/" + subfolder, isDirectory: &isDirectory), isDirectory.boolValue {
            dir += "/" + subfolder
        }
        let reader: DatasetReaderPlugin
        do { reader = try registry.reader(id: format) } catch {
            throw PluginDataSetError.unknownReader(id: format,
                                                   loaded: registry.plugins.filter { $0.kind == .datasetReader }.map(\.id).sorted())
        }
        let dataset: PluginDataset
        do { dataset = try reader.open(root: dir, options: options) } catch let e as PluginError {
            if case .callFailed(_, _, let code, _) = e, statusName(code) == "invalid argument" {
                throw PluginDataSetError.refusedOptions(reader: format, options: options, reason: e.description)
            }
            throw PluginDataSetError.unusableRoot(reader: format, root: dir, reason: e.description)
        }
        let (samples, broken) = dataset.loadAll(registry: registry)
        guard !samples.isEmpty else { throw PluginDataSetError.noUsableSample(reader: format, root: dir, broken: broken) }
        self.format = format
        root = dir
        self.samples = samples
        self.broken = broken
        plugins = [reader.plugin.record] + Set(samples.map(\.decoder)).filter { !$0.hasSuffix("(built in)") }.sorted()
    }

    /// The samples with a class label (classification).
    public var labelled: [DatasetSample] { samples.filter { $0.label != nil } }
}

/// The trainer's data from plugin-read sets: classification samples from one set's labelled
/// samples, segmentation samples from another's (or the same), each image preprocessed to
/// `side × side` (MODEL.md §1.4; `Preprocessing.modelInput` exactly at 512), segmentation targets
/// from the label maps resized (nearest) to that side. A set not given counts 0 samples.
public final class PluginTrainingData: TrainingData {
    public let classificationCount: Int
    public let segmentationCount: Int
    /// The side of the samples.
    public let side: Int
    private let classificationItems: [DatasetSample]
    private let segmentationItems: [DatasetSample]

    /// - Throws: `PluginDataSetError.noLabelledSample` when `classification` has no labelled
    ///   sample; `invalidSide` for a side below 1.
    public init(classification: PluginDataSet?, segmentation: PluginDataSet?, side: Int) throws {
        guard side >= 1 else { throw PluginDataSetError.invalidSide(side) }
        self.side = side
        if let classification {
            classificationItems = classification.labelled
            guard !classificationItems.isEmpty else { throw PluginDataSetError.noLabelledSample(root: classification.root) }
        } else {
            classificationItems = []
        }
        segmentationItems = segmentation?.samples ?? []
        classificationCount = classificationItems.count
        segmentationCount = segmentationItems.count
    }

    public func classificationSample(_ i: Int) throws -> ClassificationSample {
        guard i >= 0, i < classificationItems.count else {
            throw PluginDataSetError.noSample(set: "classification", index: i, count: classificationItems.count)
        }
        return try Self.classificationSample(classificationItems[i], side: side)
    }

    public func segmentationSample(_ i: Int) throws -> SegmentationSample {
        guard i >= 0, i < segmentationItems.count else {
            throw PluginDataSetError.noSample(set: "segmentation", index: i, count: segmentationItems.count)
        }
        return try Self.segmentationSample(segmentationItems[i], side: side)
    }

    /// A labelled sample as a classification sample at `side × side`.
    /// - Throws: `PluginDataSetError.unlabelledSample` for a sample without a class label.
    public static func classificationSample(_ sample: DatasetSample, side: Int) throws -> ClassificationSample {
        guard let label = sample.label else { throw PluginDataSetError.unlabelledSample(name: sample.name) }
        return ClassificationSample(image: try modelInput(sample.image, side: side), label: label)
    }

    /// A sample as a segmentation sample at `side × side`: the lesion instances (MODEL.md §1.2:
    /// values ≥ 2 merged, 8-connected, area > 100 at that side) of its label map resized nearest;
    /// none (a negative) without a label map.
    public static func segmentationSample(_ sample: DatasetSample, side: Int) throws -> SegmentationSample {
        let input = try modelInput(sample.image, side: side)
        guard let map = sample.labelMap else {
            return SegmentationSample(image: input, targets: SegmentationTargets(boxes: [], masks: [], height: side, width: side))
        }
        let lesions = map.map { $0 >= 2 ? UInt8(2) : 0 }
        let resized = resizeLabelMapNearest(lesions, width: sample.image.width, height: sample.image.height, to: side)
        let instances = resized.withUnsafeBufferPointer { lesionInstances(labelMap: $0.baseAddress!, width: side, height: side) }
        return SegmentationSample(image: input, targets: SegmentationTargets(instances: instances, height: side, width: side))
    }

    /// The model input [1, 3, side, side] of a gray image (MODEL.md §1.4): bilinear resize to
    /// `side × side`, per-image standardisation, the plane three times; `Preprocessing.modelInput`
    /// exactly at side 512.
    public static func modelInput(_ gray: GrayImage, side: Int) throws -> Tensor {
        if side == Preprocessing.modelSide {
            return try Tensor(shape: [1, 3, side, side], values: Preprocessing.modelInput(gray))
        }
        var plane = Preprocessing.resized(gray, height: side, width: side).pixels
        plane.withUnsafeMutableBufferPointer { Preprocessing.standardize($0.baseAddress!, count: side * side) }
        return try Tensor(shape: [1, 3, side, side], values: plane + plane + plane)
    }
}
