// PhantomLayoutData: Algorithm 1's training data read from a data set on disk in the COVIDx-CT /
// CNCB layout that `PhantomDataset.write` produces (and the real data sets use). BuiltInLayout: the
// host's reader of those layouts (PhantomLayoutData's and affinity-lab's), which is the layouts'
// one implementation in AffinityPluginSupport, the one the covidx-ct and cncb-seg plugins read
// through.
import Affinity
import AffinityPluginSupport
import Detection
import Foundation
import Imaging
import SystemIO
import Tensor

/// The built-in data-set layouts as the host reads them: a COVIDx-CT classification folder and a
/// CNCB segmentation folder, listed (not decoded) by the one reader of each layout
/// (AffinityPluginSupport's `COVIDxCT` and `CNCBSeg`, which the covidx-ct and cncb-seg plugins
/// use too): the same entries in the same order, the same sentences for the broken ones. The
/// host's split-file lines are `<file> <class>` and anything after (the box is not read).
public enum BuiltInLayout {
    /// An entry of a listed folder.
    public struct Entry: Sendable, Equatable {
        /// The image's path relative to the folder (reports).
        public var name: String
        public var image: String
        /// The label map; nil without one (a negative slice, and every classification entry).
        public var mask: String?
        /// 0 Normal, 1 CP, 2 COVID-19; nil in a segmentation set.
        public var label: Int?
    }

    /// A listed folder: the usable entries in the layout's order, and the ones set aside as
    /// "name: reason" (the name relative to `folder`).
    public struct Listing: Sendable {
        public var folder: String
        public var entries: [Entry]
        public var broken: [String]
    }

    /// A COVIDx-CT classification folder: the entries of the split files of `split` (nil: of every
    /// split), at most `limit`; or, with `renamedWithoutSplitFiles` and no split file of any split
    /// in the folder, the renamed layout (every image of the folder itself, named by its class).
    /// - Parameter checkFiles: set aside the entries whose image is not a regular file.
    /// - Throws: `ServiceError.datasetInvalid` with the layout's sentence: no split file of
    ///   `split`, a split file that cannot be read, a folder that cannot be listed.
    public static func classification(folder: String, split: String?, renamedWithoutSplitFiles: Bool = false,
                                      checkFiles: Bool = true, limit: Int? = nil) throws -> Listing {
        try listing(folder) {
            if renamedWithoutSplitFiles, try COVIDxCT.splitFiles(in: folder, split: nil).isEmpty {
                return try COVIDxCT.readRenamed(images: (folder, ""), checkFiles: checkFiles)
            }
            return try COVIDxCT.readSplitFiles(try COVIDxCT.splitFiles(in: folder, split: split), images: try COVIDxCT.imageFolder(in: folder),
                                               requireBox: false, checkFiles: checkFiles, limit: limit)
        }
    }

    /// A CNCB segmentation folder: the slices `splitFile` names (nil: every image of `imgs/`), each
    /// with the mask of its stem in `masks/` if there is one.
    /// - Parameter checkFiles: set aside the slices whose image or mask is not a regular file.
    /// - Throws: `ServiceError.datasetInvalid` with the layout's sentence: no `imgs/` folder, a
    ///   split file that does not exist or cannot be read, a folder that cannot be listed.
    public static func segmentation(folder: String, splitFile: String?, checkFiles: Bool = true) throws -> Listing {
        try listing(folder) { try CNCBSeg.read(folder: folder, splitFile: splitFile, checkFiles: checkFiles).listing }
    }

    /// The split file of `split` (train or test) in a segmentation folder.
    public static func segmentationSplitFile(in folder: String, split: String) -> String {
        CNCBSeg.splitFile(in: folder, split: split)
    }

    /// The sentence for a folder that lists no image (in `split`, when given).
    public static func noImages(in folder: String, split: String?) -> String {
        "The data-set folder \(folder) lists no images" + (split.map { " in the \($0) split" } ?? "") + "."
    }

    private static func listing(_ folder: String, _ read: () throws -> LayoutListing) throws -> Listing {
        let listing: LayoutListing
        do { listing = try read() } catch let e as LayoutError { throw ServiceError.datasetInvalid(e.message) }
        return Listing(folder: folder,
                       entries: listing.entries.map {
                           Entry(name: $0.name, image: $0.imagePath, mask: $0.maskPath, label: $0.label >= 0 ? Int($0.label) : nil)
                       },
                       broken: listing.broken.map { "\($0.name): \($0.reason)" })
    }
}

/// Training data from a data-set directory:
/// ```
/// classification/<split>_COVIDx_CT.txt   "<file> <class> <xmin> <ymin> <xmax> <ymax>" per line
/// classification/images/<file>           8-bit gray PNG
/// segmentation/<train|test>_split_segmentation.txt   one file name per line
/// segmentation/imgs/<file>, segmentation/masks/<file> (label map 0 = background; a slice
///                                         without a mask file has no lesion)
/// ```
/// read by `BuiltInLayout` (the split files of the split; the segmentation slices of the train
/// split file). Every entry is checked when the data is opened (the layout's checks, then: the file
/// is a PNG whose header reads, a mask has its image's size); samples are decoded when the trainer
/// asks. Images are resized (bilinear, torch semantics) to `side`×`side` and standardised per image
/// like `Preprocessing.modelInput` (identical to it for `side` = 512); masks are resized nearest.
// @unchecked Sendable: immutable after init (the checked entry lists); samples are decoded into new values on each call.
public final class PhantomLayoutData: TrainingData, @unchecked Sendable {
    public let root: URL
    public let side: Int
    /// (file, class) of the classification samples used (at most `limit`).
    public let classification: [(url: URL, label: Int)]
    /// (image, mask or nil) of the segmentation samples.
    public let segmentation: [(image: URL, mask: URL?)]

    /// Opens and validates a data set.
    /// - Parameters:
    ///   - split: the classification split to train on (train, val or test).
    ///   - side: the side the samples are resized to (64…1024).
    ///   - limit: at most this many classification samples (the first ones of the split file):
    ///     with Algorithm 1 this is the number of iterations per epoch.
    ///   - readClassification, readSegmentation: read (and check) that part of the layout; the
    ///     other part counts 0 samples (a job that reads it through a dataset-reader plugin).
    /// - Throws: `ServiceError` `DatasetInvalid` with a sentence naming up to five broken entries.
    public init(root: URL, split: String = "train", side: Int = Preprocessing.modelSide, limit: Int? = nil,
                readClassification: Bool = true, readSegmentation: Bool = true) throws {
        guard ["train", "val", "test"].contains(split) else {
            throw ServiceError.invalidArgument("The split must be train, val or test, not '\(split)'")
        }
        guard (64...1024).contains(side) else {
            throw ServiceError.invalidArgument("The image size must be between 64 and 1024 pixels, got \(side)")
        }
        self.root = root
        self.side = side
        var isDir: ObjCBool = false
        guard !root.path.isEmpty, FileManager.default.fileExists(atPath: root.path, isDirectory: &isDir), isDir.boolValue else {
            throw ServiceError.datasetInvalid("The data set directory '\(root.path)' does not exist")
        }
        var problems: [String] = []
        func note(_ problem: String) { problems.append(problem.hasSuffix(".") ? String(problem.dropLast()) : problem) }
        /// The PNG header of an entry's file, or nil with the problem noted.
        func header(_ path: String, _ name: String) -> PNGHeader? {
            let fd = Descriptors.open(path, O_RDONLY)
            guard fd >= 0 else {
                note("\(name): the file cannot be opened (\(String(cString: strerror(errno))))")
                return nil
            }
            var prefix = [UInt8](repeating: 0, count: 64)
            let n = prefix.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, $0.count, 0) }
            Descriptors.close(fd)
            do { return try PNG.header(of: Array(prefix.prefix(max(n, 0)))) } catch {
                note("\(name): the file is not a readable PNG (\(String(describing: error).dropLast()))")
                return nil
            }
        }
        func list(_ listing: () throws -> BuiltInLayout.Listing) -> BuiltInLayout.Listing? {
            do { return try listing() } catch let e as ServiceError { note(e.message) } catch { note("\(error)") }
            return nil
        }
        let classificationFolder = root.path + "/classification", segmentationFolder = root.path + "/segmentation"
        var cls: [(URL, Int)] = []
        if readClassification, let listing = list({ try BuiltInLayout.classification(folder: classificationFolder, split: split, limit: limit) }) {
            listing.broken.forEach { note("classification/" + $0) }
            for e in listing.entries where header(e.image, "classification/" + e.name) != nil {
                cls.append((URL(fileURLWithPath: e.image), e.label ?? 0))
            }
        }
        var seg: [(URL, URL?)] = []
        let segmentationSplitFile = BuiltInLayout.segmentationSplitFile(in: segmentationFolder, split: "train")
        if readSegmentation, let listing = list({ try BuiltInLayout.segmentation(folder: segmentationFolder, splitFile: segmentationSplitFile) }) {
            listing.broken.forEach { note("segmentation/" + $0) }
            for e in listing.entries {
                guard let ih = header(e.image, "segmentation/" + e.name) else { continue }
                guard let mask = e.mask else {
                    seg.append((URL(fileURLWithPath: e.image), nil))
                    continue
                }
                guard let mh = header(mask, "segmentation/masks/" + (mask as NSString).lastPathComponent) else { continue }
                guard mh.width == ih.width, mh.height == ih.height else {
                    note("segmentation/\(e.name): the mask is \(mh.width)×\(mh.height) but the image is \(ih.width)×\(ih.height)")
                    continue
                }
                seg.append((URL(fileURLWithPath: e.image), URL(fileURLWithPath: mask)))
            }
        }
        if readClassification && problems.isEmpty && cls.isEmpty { note(BuiltInLayout.noImages(in: classificationFolder, split: split)) }
        if readSegmentation && problems.isEmpty && seg.isEmpty { note(BuiltInLayout.noImages(in: segmentationFolder, split: "train")) }
        if !problems.isEmpty {
            let shown = problems.prefix(5).joined(separator: "; ")
            let more = problems.count > 5 ? " (and \(problems.count - 5) more)" : ""
            throw ServiceError.datasetInvalid("The data set '\(root.path)' has \(problems.count) broken "
                + (problems.count == 1 ? "entry" : "entries") + ": \(shown)\(more)")
        }
        classification = cls.map { (url: $0.0, label: $0.1) }
        segmentation = seg.map { (image: $0.0, mask: $0.1) }
    }

    public var classificationCount: Int { classification.count }
    public var segmentationCount: Int { segmentation.count }

    public func classificationSample(_ i: Int) throws -> ClassificationSample {
        let (url, label) = classification[i]
        return ClassificationSample(image: try input(try decode(url)), label: label)
    }

    public func segmentationSample(_ i: Int) throws -> SegmentationSample {
        let (url, maskURL) = segmentation[i]
        let gray = try decode(url)
        let image = try input(gray)
        guard let maskURL else {
            return SegmentationSample(image: image, targets: SegmentationTargets(boxes: [], masks: [], height: side, width: side))
        }
        let mask = try readPNG(maskURL)
        guard mask.width == gray.width, mask.height == gray.height else {
            throw ServiceError.datasetInvalid("The mask \(maskURL.lastPathComponent) does not have its image's size")
        }
        // Nearest-neighbour resize of the label map to side × side.
        var labels = [UInt8](repeating: 0, count: side * side)
        let channels = mask.channels
        for y in 0..<side {
            let sy = min(mask.height - 1, y * mask.height / side)
            for x in 0..<side {
                let sx = min(mask.width - 1, x * mask.width / side)
                labels[y * side + x] = UInt8(truncatingIfNeeded: mask.samples[(sy * mask.width + sx) * channels])
            }
        }
        let minArea = max(4, 100 * side * side / (512 * 512))
        let instances = labels.withUnsafeBufferPointer {
            lesionInstances(labelMap: $0.baseAddress!, width: side, height: side, minArea: minArea)
        }
        return SegmentationSample(image: image, targets: SegmentationTargets(instances: instances, height: side, width: side))
    }

    private func readPNG(_ url: URL) throws -> PixelImage {
        do { return try PNG.read(path: url.path) } catch {
            throw ServiceError.datasetInvalid("\(url.lastPathComponent) cannot be read: \(error)")
        }
    }

    private func decode(_ url: URL) throws -> GrayImage { try readPNG(url).grayImage() }

    /// [1, 3, side, side]: resized, standardised, replicated to three channels.
    private func input(_ gray: GrayImage) throws -> Tensor {
        if side == Preprocessing.modelSide {
            return try Tensor(shape: [1, 3, side, side], values: Preprocessing.modelInput(gray))
        }
        let plane = side * side
        var out = [Float](repeating: 0, count: 3 * plane)
        gray.pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                let d = dst.baseAddress!
                Preprocessing.resizeBilinear(input: src.baseAddress!, inHeight: gray.height, inWidth: gray.width,
                                             output: d, outHeight: side, outWidth: side)
                Preprocessing.standardize(d, count: plane)
                (d + plane).update(from: d, count: plane)
                (d + 2 * plane).update(from: d, count: plane)
            }
        }
        return try Tensor(shape: [1, 3, side, side], values: out)
    }
}
