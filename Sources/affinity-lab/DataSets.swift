import Affinity
import Detection
import Foundation
import Imaging
import Tensor

/// Which part of a data set to read.
enum DataSplit: String, CaseIterable {
    case train, val, test, all
}

/// A classification set on disk (MODEL.md §1.1), in either layout:
/// - COVIDx-CT: a directory with `<split>_COVIDx_CT*.txt` split files (`<file> <class> <4 ints>`)
///   and the images in `images/` (or beside the split files);
/// - the author's: a flat directory of images whose names start with the class, `0_…`, `1_…`,
///   `2_…` (or with the COVIDx prefixes `Normal_`, `CP_`, `NCP_`); all images, sorted by name.
/// A phantom root (`phantoms` output) is accepted too: its `classification/` folder is used.
struct ClassificationSet {
    var root: String
    /// (image path, class) in file order.
    var items: [(path: String, label: Int)]

    init(directory: String, split: DataSplit) throws {
        var dir = directory
        guard directoryExists(dir) else { throw LabError.missingDirectory(dir) }
        if directoryExists(dir + "/classification") { dir += "/classification" }
        root = dir
        let files = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        let splitFiles = files.filter { $0.contains("_COVIDx_CT") && $0.hasSuffix(".txt") }.sorted()
        if !splitFiles.isEmpty {
            let imageDir = directoryExists(dir + "/images") ? dir + "/images" : dir
            let wanted = split == .all ? splitFiles : splitFiles.filter { $0.hasPrefix(split.rawValue + "_") }
            guard !wanted.isEmpty else { throw LabError.badData("\(dir) has no \(split.rawValue) split file (\(split.rawValue)_COVIDx_CT*.txt)") }
            var items: [(String, Int)] = []
            for f in wanted {
                let text: String
                do { text = try String(contentsOfFile: dir + "/" + f, encoding: .utf8) } catch {
                    throw LabError.badData("cannot read the split file \(dir)/\(f)")
                }
                for (n, line) in text.split(separator: "\n").enumerated() {
                    let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
                    if fields.isEmpty { continue }
                    guard fields.count >= 2, let c = Int(fields[1]), (0...2).contains(c) else {
                        throw LabError.badData("\(dir)/\(f) line \(n + 1) is not `<file> <class 0|1|2> …`")
                    }
                    items.append((imageDir + "/" + fields[0], c))
                }
            }
            self.items = items
        } else {
            let images = files.filter { Self.isImage($0) }.sorted()
            var items: [(String, Int)] = []
            for name in images {
                guard let c = Self.classOfName(name) else {
                    throw LabError.badData("cannot tell the class of \(dir)/\(name): names must start with 0_, 1_, 2_, Normal_, CP_ or NCP_")
                }
                items.append((dir + "/" + name, c))
            }
            self.items = items
        }
        guard !items.isEmpty else { throw LabError.badData("the classification set \(dir) (\(split.rawValue)) has no images") }
    }

    static func isImage(_ name: String) -> Bool {
        let l = name.lowercased()
        return l.hasSuffix(".png") || l.hasSuffix(".jpg") || l.hasSuffix(".jpeg")
    }

    /// The class of an image name: the first `_` field as 0/1/2, or a COVIDx prefix.
    static func classOfName(_ name: String) -> Int? {
        guard let first = name.split(separator: "_").first else { return nil }
        switch first {
        case "0", "Normal": return 0
        case "1", "CP": return 1
        case "2", "NCP": return 2
        default: return nil
        }
    }
}

/// A segmentation set on disk (MODEL.md §1.2): `imgs/` with slices and `masks/` with label maps of
/// the same stem (0 background, 1 lung, 2 GGO, 3 consolidation; no mask file = negative image);
/// the split files `train_split_segmentation.txt` / `test_split_segmentation.txt` choose the images
/// (without them, or for split `all`, every image in `imgs/`). A phantom root is accepted too.
struct SegmentationSet {
    var root: String
    /// (image path, mask path if it exists).
    var items: [(image: String, mask: String?)]

    init(directory: String, split: DataSplit) throws {
        var dir = directory
        guard directoryExists(dir) else { throw LabError.missingDirectory(dir) }
        if directoryExists(dir + "/segmentation") { dir += "/segmentation" }
        root = dir
        guard directoryExists(dir + "/imgs") else { throw LabError.badData("the segmentation set \(dir) has no imgs/ folder") }
        let splitName = split == .test ? "test" : "train"
        let splitFile = dir + "/\(splitName)_split_segmentation.txt"
        var names: [String]
        if split != .all, fileExists(splitFile) {
            let text: String
            do { text = try String(contentsOfFile: splitFile, encoding: .utf8) } catch {
                throw LabError.badData("cannot read the split file \(splitFile)")
            }
            names = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        } else {
            names = ((try? FileManager.default.contentsOfDirectory(atPath: dir + "/imgs")) ?? []).filter { ClassificationSet.isImage($0) }.sorted()
        }
        items = names.map { name in
            let stem = (name as NSString).deletingPathExtension
            let mask = dir + "/masks/" + stem + ".png"
            return (dir + "/imgs/" + name, fileExists(mask) ? mask : nil)
        }
        guard !items.isEmpty else { throw LabError.badData("the segmentation set \(dir) (\(split.rawValue)) has no images") }
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
