import Affinity
import Detection
import Foundation
import Imaging
import Service
import Tensor

/// Which part of a data set to read.
enum DataSplit: String, CaseIterable {
    case train, val, test, all

    /// The split's name for the layouts; nil for `all`.
    var name: String? { self == .all ? nil : rawValue }
}

/// A classification set on disk (MODEL.md §1.1), in either layout, read by the built-in reader
/// (`BuiltInLayout`, the one the daemon and the covidx-ct plugin read through too):
/// - COVIDx-CT: a directory with `<split>_COVIDx_CT*.txt` split files (`<file> <class> <4 ints>`)
///   and the images in `images/` (or `2A_images/`, or beside the split files);
/// - the author's: a flat directory of images whose names start with the class, `0_…`, `1_…`,
///   `2_…` (or with the COVIDx prefixes `Normal_`, `CP_`, `NCP_`); all images, sorted by name.
/// A phantom root (`phantoms` output) is accepted too: its `classification/` folder is used.
/// A broken entry (a bad line, an image named without a class) is an error; the images are read
/// (and a missing one reported) when a sample is made.
struct ClassificationSet {
    var root: String
    /// (image path, class) in file order.
    var items: [(path: String, label: Int)]

    init(directory: String, split: DataSplit) throws {
        var dir = directory
        guard directoryExists(dir) else { throw LabError.missingDirectory(dir) }
        if directoryExists(dir + "/classification") { dir += "/classification" }
        root = dir
        let listing = try labListing("classification", split: split) {
            try BuiltInLayout.classification(folder: dir, split: split.name, renamedWithoutSplitFiles: true, checkFiles: false)
        }
        items = listing.entries.map { (path: $0.image, label: $0.label ?? 0) }
    }
}

/// A segmentation set on disk (MODEL.md §1.2), read by the built-in reader: `imgs/` with slices
/// and `masks/` with label maps of the same stem (0 background, 1 lung, 2 GGO, 3 consolidation;
/// no mask file = negative image); the split files `train_split_segmentation.txt` /
/// `test_split_segmentation.txt` choose the images (`val` reads the train one; without it, or for
/// split `all`, every image in `imgs/`). A phantom root is accepted too.
struct SegmentationSet {
    var root: String
    /// (image path, mask path if it exists).
    var items: [(image: String, mask: String?)]

    init(directory: String, split: DataSplit) throws {
        var dir = directory
        guard directoryExists(dir) else { throw LabError.missingDirectory(dir) }
        if directoryExists(dir + "/segmentation") { dir += "/segmentation" }
        root = dir
        let splitFile = BuiltInLayout.segmentationSplitFile(in: dir, split: split == .test ? "test" : "train")
        let listing = try labListing("segmentation", split: split) {
            try BuiltInLayout.segmentation(folder: dir, splitFile: split != .all && fileExists(splitFile) ? splitFile : nil, checkFiles: false)
        }
        items = listing.entries.map { (image: $0.image, mask: $0.mask) }
    }

    /// The lesion label map of an item (0 background/lung, 1 lesion = value ≥ 2, MODEL.md §1.2
    /// "recommended" rule), or nil for a negative image without a mask file.
    static func lesionMap(maskPath: String) throws -> (map: [UInt8], width: Int, height: Int) {
        let m = try labReadPNG(maskPath)
        let gray = m.format == .gray || m.format == .grayAlpha
        guard gray else { throw LabError.badImage(maskPath, "a mask must be a single-channel label PNG.") }
        var map = [UInt8](repeating: 0, count: m.width * m.height)
        let ch = m.channels
        for i in 0..<map.count { map[i] = m.samples[i * ch] >= 2 ? 2 : 0 }
        return (map, m.width, m.height)
    }

    /// Ground-truth lesion instances of an item at the mask's own size (components > 100 px, 8-connected).
    static func instances(maskPath: String?, width: Int, height: Int) throws -> [LesionInstance] {
        guard let maskPath else { return [] }
        let (map, w, h) = try lesionMap(maskPath: maskPath)
        guard w == width, h == height else {
            throw LabError.badData("the mask \(maskPath) is \(w)×\(h) but its image is \(width)×\(height)")
        }
        return map.withUnsafeBufferPointer { lesionInstances(labelMap: $0.baseAddress!, width: w, height: h) }
    }
}

/// A folder listed by the built-in reader, the lab's way: a folder that cannot be read, a broken
/// entry (the first is named) or no entry at all is bad data (exit 6).
private func labListing(_ set: String, split: DataSplit, _ list: () throws -> BuiltInLayout.Listing) throws -> BuiltInLayout.Listing {
    let listing: BuiltInLayout.Listing
    do { listing = try list() } catch let e as ServiceError { throw LabError.badData(e.message) }
    if let broken = listing.broken.first { throw LabError.badData("in the \(set) set \(listing.folder), \(broken)") }
    guard !listing.entries.isEmpty else { throw LabError.badData(BuiltInLayout.noImages(in: listing.folder, split: split.name)) }
    return listing
}

/// The trainer's data read from disk: classification and segmentation sets, each image
/// preprocessed to `side × side` (512 as the paper; smaller for quick runs), segmentation targets
/// from the label maps resized (nearest) to the same side.
final class DiskTrainingData: TrainingData {
    let classification: ClassificationSet
    let segmentation: SegmentationSet?
    let side: Int

    init(classification: ClassificationSet, segmentation: SegmentationSet?, side: Int) {
        self.classification = classification; self.segmentation = segmentation; self.side = side
    }

    var classificationCount: Int { classification.items.count }
    var segmentationCount: Int { segmentation?.items.count ?? 0 }

    func classificationSample(_ i: Int) throws -> ClassificationSample {
        let item = classification.items[i]
        return ClassificationSample(image: try labModelInput(try labReadPNG(item.path), side: side), label: item.label)
    }

    func segmentationSample(_ i: Int) throws -> SegmentationSample {
        guard let segmentation else { throw LabError.badData("no segmentation set was given") }
        return try Self.segmentationSample(segmentation, i, side: side)
    }

    /// Item `i` of an on-disk segmentation set at `side × side`.
    static func segmentationSample(_ segmentation: SegmentationSet, _ i: Int, side: Int) throws -> SegmentationSample {
        let item = segmentation.items[i]
        let image = try labReadPNG(item.image)
        let input = try labModelInput(image, side: side)
        guard let maskPath = item.mask else {
            return SegmentationSample(image: input, targets: SegmentationTargets(boxes: [], masks: [], height: side, width: side))
        }
        let (map, w, h) = try SegmentationSet.lesionMap(maskPath: maskPath)
        guard w == image.width, h == image.height else {
            throw LabError.badData("the mask \(maskPath) is \(w)×\(h) but its image is \(image.width)×\(image.height)")
        }
        let resized = resizeLabelMapNearest(map, width: w, height: h, to: side)
        let inst = resized.withUnsafeBufferPointer { lesionInstances(labelMap: $0.baseAddress!, width: side, height: side) }
        return SegmentationSample(image: input, targets: SegmentationTargets(instances: inst, height: side, width: side))
    }
}
