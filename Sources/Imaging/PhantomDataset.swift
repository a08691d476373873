import SystemIO

/// Writes phantom data sets to disk in the layouts of the real data (MODEL.md §1.1, §1.2), so the
/// data-set readers and the trainer run unchanged on a fresh machine.
///
/// Layout under `root`:
/// ```
/// classification/images/<Normal|CP|NCP>_<patient>_<scan>_<slice 4 digits>.png   8-bit gray
/// classification/{train,val,test}_COVIDx_CT.txt    "<filename> <class> <xmin> <ymin> <xmax> <ymax>"
/// segmentation/imgs/<patient>_<slice>.png           8-bit gray (the same slices)
/// segmentation/masks/<patient>_<slice>.png          label maps 0/1/2/3; only for slices with lesions
/// segmentation/{train,test}_split_segmentation.txt  one image file name per line
/// phantoms.json                                     generator settings and per-slice ground truth
/// ```
/// Slices are grouped into patients of `slicesPerPatient` consecutive slices; patient `p` (from 0)
/// has class `p mod 3` (0 Normal, 1 CP, 2 COVID-19), patient id `p + 1`, scan id `1000 + p + 1`.
/// Slice `i` of the set is `PhantomGenerator(seed:size:).slice(index: i, class:)` of its patient's
/// class. Patients, not slices, are split: per class, the first 70 % of its patients (at least one)
/// go to train, the next 15 % (rounded) to val, the rest to test; segmentation train = train + val.
/// The box on each split-file line is the body's bounding box (max exclusive).
public enum PhantomDataset {
    /// A data-set split.
    public enum Split: String, Sendable, CaseIterable {
        case train, val, test
    }

    /// Where one slice of the set goes and what it holds.
    public struct Entry: Equatable, Sendable {
        /// Slice index in the set (and the generator's `index`).
        public let index: Int
        /// Patient id (from 1).
        public let patient: Int
        /// Scan id.
        public let scan: Int
        /// Slice number within the patient (from 0).
        public let slice: Int
        /// The patient's class.
        public let phantomClass: PhantomClass
        /// The patient's split.
        public let split: Split

        /// `<Normal|CP|NCP>_<patient>_<scan>_<slice 4 digits>.png`.
        public var classificationFileName: String {
            "\(phantomClass.covidxPrefix)_\(patient)_\(scan)_\(zeroPadded(slice, 4)).png"
        }

        /// `<patient>_<slice>.png` (image and mask share it).
        public var segmentationFileName: String { "\(patient)_\(slice).png" }
    }

    /// What `write` produced.
    public struct Summary: Sendable {
        /// The data-set root.
        public let root: String
        /// One entry per slice, in index order.
        public let entries: [Entry]
        /// Lesion count of each slice, in index order.
        public let lesionCounts: [Int]
        /// Number of mask files written (slices with at least one lesion).
        public var maskCount: Int { lesionCounts.filter { $0 > 0 }.count }
    }

    /// The patient / class / split assignment of a set of `count` slices (no files touched).
    /// - Precondition: `count >= 0`, `slicesPerPatient >= 1`.
    public static func plan(count: Int, slicesPerPatient: Int = 3) -> [Entry] {
        precondition(count >= 0 && slicesPerPatient >= 1, "bad data-set plan: \(count) slices, \(slicesPerPatient) per patient")
        let patients = (count + slicesPerPatient - 1) / slicesPerPatient
        var split = [Split](repeating: .train, count: patients)
        for c in 0..<3 {
            let members = Array(stride(from: c, to: patients, by: 3))
            let n = Double(members.count)
            let train = max(1, Int((0.7 * n).rounded())), val = Int((0.15 * n).rounded())
            for (k, p) in members.enumerated() {
                split[p] = k < train ? .train : (k < train + val ? .val : .test)
            }
        }
        return (0..<count).map { i in
            let p = i / slicesPerPatient
            return Entry(index: i, patient: p + 1, scan: 1000 + p + 1, slice: i % slicesPerPatient,
                         phantomClass: PhantomClass(rawValue: p % 3)!, split: split[p])
        }
    }

    /// Generates `count` slices and writes them under `root` in both layouts (see the type's doc).
    /// Every file is written atomically; existing files of the same names are replaced.
    /// - Parameters:
    ///   - size: slice side in pixels (≥ 128; 512 like CNCB).
    ///   - slicesPerPatient: consecutive slices per patient.
    /// - Throws: `ImageError.invalidArgument` for a bad count or size, `ImageError.io` when a
    ///   directory or file cannot be written.
    @discardableResult
    public static func write(to root: String, count: Int, seed: UInt64, size: Int = 512,
                             slicesPerPatient: Int = 3) throws -> Summary {
        guard count >= 0, slicesPerPatient >= 1 else {
            throw ImageError.invalidArgument("a data set needs count ≥ 0 and slicesPerPatient ≥ 1")
        }
        guard size >= 128 else { throw ImageError.invalidArgument("phantom slices need at least 128 pixels per side, got \(size)") }
        let classification = root + "/classification", segmentation = root + "/segmentation"
        for directory in [classification + "/images", segmentation + "/imgs", segmentation + "/masks"] {
            try mappingFileErrors { try AtomicFile.makeDirectories(directory) }
        }
        let generator = PhantomGenerator(seed: seed, size: size)
        let entries = plan(count: count, slicesPerPatient: slicesPerPatient)
        var splitLines: [Split: String] = [:]
        var segmentationLines: [Split: String] = [:]
        var lesionCounts: [Int] = []
        var manifest = "{\n  \"generator\": \"LesionAffinity PhantomGenerator\",\n  \"seed\": \(seed),\n  \"size\": \(size),\n"
        manifest += "  \"count\": \(count),\n  \"slices_per_patient\": \(slicesPerPatient),\n  \"slices\": [\n"
        for entry in entries {
            let slice = generator.slice(index: entry.index, class: entry.phantomClass)
            let png = try PNG.encode(slice.pixelImage)
            try mappingFileErrors { try AtomicFile.write(png, to: classification + "/images/" + entry.classificationFileName) }
            try mappingFileErrors { try AtomicFile.write(png, to: segmentation + "/imgs/" + entry.segmentationFileName) }
            if !slice.lesions.isEmpty {
                try PNG.write(slice.labelImage, to: segmentation + "/masks/" + entry.segmentationFileName)
            }
            lesionCounts.append(slice.lesions.count)
            let b = slice.bodyBox
            splitLines[entry.split, default: ""] +=
                "\(entry.classificationFileName) \(entry.phantomClass.rawValue) \(b.xmin) \(b.ymin) \(b.xmax) \(b.ymax)\n"
            segmentationLines[entry.split == .test ? .test : .train, default: ""] += entry.segmentationFileName + "\n"

            let lesions = slice.lesions.map { l in
                "{\"side\": \"\(l.side == .left ? "left" : "right")\", \"kind\": \"\(l.kind == .groundGlass ? "ggo" : "consolidation")\", "
                    + "\"area\": \(l.area), \"box\": [\(l.box.xmin), \(l.box.ymin), \(l.box.xmax), \(l.box.ymax)]}"
            }
            manifest += "    {\"index\": \(entry.index), \"class\": \(entry.phantomClass.rawValue), \"patient\": \(entry.patient), "
            manifest += "\"scan\": \(entry.scan), \"slice\": \(entry.slice), \"split\": \"\(entry.split.rawValue)\", "
            manifest += "\"classification\": \"classification/images/\(entry.classificationFileName)\", "
            manifest += "\"segmentation_image\": \"segmentation/imgs/\(entry.segmentationFileName)\", "
            manifest += "\"segmentation_mask\": " + (slice.lesions.isEmpty ? "null" : "\"segmentation/masks/\(entry.segmentationFileName)\"") + ", "
            manifest += "\"body_box\": [\(b.xmin), \(b.ymin), \(b.xmax), \(b.ymax)], \"lesions\": [\(lesions.joined(separator: ", "))]}"
            manifest += entry.index + 1 < entries.count ? ",\n" : "\n"
        }
        manifest += "  ]\n}\n"
        for split in Split.allCases {
            try mappingFileErrors { try AtomicFile.write(text: splitLines[split] ?? "", to: classification + "/\(split.rawValue)_COVIDx_CT.txt") }
        }
        try mappingFileErrors { try AtomicFile.write(text: segmentationLines[.train] ?? "", to: segmentation + "/train_split_segmentation.txt") }
        try mappingFileErrors { try AtomicFile.write(text: segmentationLines[.test] ?? "", to: segmentation + "/test_split_segmentation.txt") }
        try mappingFileErrors { try AtomicFile.write(text: manifest, to: root + "/phantoms.json") }
        return Summary(root: root, entries: entries, lesionCounts: lesionCounts)
    }
}

/// `value` in decimal with at least `digits` digits (leading zeros).
func zeroPadded(_ value: Int, _ digits: Int) -> String {
    var text = String(value)
    while text.count < digits { text = "0" + text }
    return text
}
