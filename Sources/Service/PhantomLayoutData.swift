// PhantomLayoutData: Algorithm 1's training data read from a data set on disk in the COVIDx-CT /
// CNCB layout that `PhantomDataset.write` produces (and the real data sets use).
import Affinity
import Detection
import Foundation
import Imaging
import Tensor

/// Training data from a data-set directory:
/// ```
/// classification/<split>_COVIDx_CT.txt   "<file> <class> <xmin> <ymin> <xmax> <ymax>" per line
/// classification/images/<file>           8-bit gray PNG
/// segmentation/<train|test>_split_segmentation.txt   one file name per line
/// segmentation/imgs/<file>, segmentation/masks/<file> (label map 0 = background; a slice
///                                         without a mask file has no lesion)
/// ```
/// Every entry is checked when the data is opened (the file exists, is a PNG whose header reads,
/// the class is 0…2, a mask has its image's size); samples are decoded when the trainer asks.
/// Images are resized (bilinear, torch semantics) to `side`×`side` and standardised per image like
/// `Preprocessing.modelInput` (identical to it for `side` = 512); masks are resized nearest.
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
        func readLines(_ relative: String) -> [String]? {
            let url = root.appendingPathComponent(relative)
            guard let text = try? String(contentsOf: url, encoding: .utf8) else {
                problems.append("\(relative) is missing or not UTF-8 text")
                return nil
            }
            return text.split(separator: "\n", omittingEmptySubsequences: false).map {
                $0.trimmingCharacters(in: .whitespaces)
            }
        }
        func header(_ url: URL, _ what: String) -> PNGHeader? {
            guard let h = FileHandle(forReadingAtPath: url.path) else {
                problems.append("\(what) does not exist or cannot be read")
                return nil
            }
            defer { try? h.close() }
            let prefix = [UInt8](h.readData(ofLength: 64))
            do { return try PNG.header(of: prefix) } catch {
                problems.append("\(what) is not a readable PNG (\(String(describing: error).dropLast()))")
                return nil
            }
        }
        var cls: [(URL, Int)] = []
        let clsFile = "classification/\(split)_COVIDx_CT.txt"
        if readClassification, let lines = readLines(clsFile) {
            for (n, line) in lines.enumerated() where !line.isEmpty {
                if let limit, cls.count >= limit { break }
                let f = line.split(separator: " ")
                guard f.count >= 2, let label = Int(f[1]), (0...2).contains(label) else {
                    problems.append("line \(n + 1) of \(clsFile) is not '<file> <class 0-2> …'")
                    continue
                }
                let url = root.appendingPathComponent("classification/images").appendingPathComponent(String(f[0]))
                if header(url, "classification/images/\(f[0]) (line \(n + 1) of \(clsFile))") != nil { cls.append((url, label)) }
            }
        }
        var seg: [(URL, URL?)] = []
        let segFile = "segmentation/train_split_segmentation.txt"
        if readSegmentation, let lines = readLines(segFile) {
            for (n, line) in lines.enumerated() where !line.isEmpty {
                let img = root.appendingPathComponent("segmentation/imgs").appendingPathComponent(line)
                let mask = root.appendingPathComponent("segmentation/masks").appendingPathComponent(line)
                guard let ih = header(img, "segmentation/imgs/\(line) (line \(n + 1) of \(segFile))") else { continue }
                if FileManager.default.fileExists(atPath: mask.path) {
                    guard let mh = header(mask, "segmentation/masks/\(line)") else { continue }
                    guard mh.width == ih.width, mh.height == ih.height else {
                        problems.append("segmentation/masks/\(line) is \(mh.width)×\(mh.height) but its image is \(ih.width)×\(ih.height)")
                        continue
                    }
                    seg.append((img, mask))
                } else {
                    seg.append((img, nil))
                }
            }
        }
        if readClassification && problems.isEmpty && cls.isEmpty { problems.append("\(clsFile) lists no images") }
        if readSegmentation && problems.isEmpty && seg.isEmpty { problems.append("\(segFile) lists no images") }
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
