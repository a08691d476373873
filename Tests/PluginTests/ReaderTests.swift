import Detection
import Foundation
import Imaging
import PluginHost
import Testing

@Suite("Dataset readers", .serialized)
struct ReaderTests {
    /// 9 phantom slices of 128×128 (3 patients, one per class) in both layouts.
    private func phantoms(_ tag: String) throws -> (root: String, summary: PhantomDataset.Summary) {
        let root = try temporaryDirectory(tag)
        let summary = try PhantomDataset.write(to: root, count: 9, seed: 11, size: 128, slicesPerPatient: 3)
        return (root, summary)
    }

    @Test func covidxSplitFiles() throws {
        let (root, summary) = try phantoms("covidx")
        defer { removeTree(root) }
        let base = root + "/classification"
        let reader = try sharedRegistry.reader(id: "covidx-ct")
        let train = summary.entries.filter { $0.split == .train }
        // Clean split: every entry, labels from the file.
        let clean = try reader.open(root: base, options: #"{"split": "train"}"#)
        #expect(clean.count == train.count && clean.brokenEntries.isEmpty)
        let all = clean.loadAll(registry: sharedRegistry)
        #expect(all.broken.isEmpty)
        #expect(all.samples.map(\.name) == train.map { "images/" + $0.classificationFileName })
        #expect(all.samples.map(\.label) == train.map { $0.phantomClass.rawValue })
        #expect(all.samples.allSatisfy { $0.image.width == 128 && $0.decoder == "png (built in)" && $0.instances.isEmpty })

        // Broken entries: a missing file, a bad label, a short line, a bad box, an unreadable image.
        let victim = train[0].classificationFileName
        try writeFile(base + "/images/" + victim, Array("this is not a PNG".utf8))
        var lines = try String(contentsOfFile: base + "/train_COVIDx_CT.txt", encoding: .utf8)
        lines += "NCP_99_1099_0000.png 2 0 0 10 10\n"
        lines += "\(train[1].classificationFileName) 7 0 0 10 10\n"
        lines += "just_a_name.png 1\n"
        lines += "\(train[2].classificationFileName) 1 a b c d\n"
        try lines.write(toFile: base + "/train_COVIDx_CT.txt", atomically: true, encoding: .utf8)
        let dataset = try reader.open(root: base, options: #"{"split": "train"}"#)
        let reasons = dataset.brokenEntries.map(\.reason)
        #expect(dataset.brokenEntries.count == 4, "\(dataset.brokenEntries)")
        #expect(reasons.contains("the image file does not exist."))
        #expect(reasons.contains { $0.contains("class label \"7\"") })
        #expect(reasons.contains { $0.contains("expected 6 fields") })
        #expect(reasons.contains { $0.contains("box") })
        let loaded = dataset.loadAll(registry: sharedRegistry)
        #expect(loaded.samples.count == train.count - 1)
        let unreadable = loaded.broken.first { $0.name == "images/" + victim }
        #expect(unreadable?.reason.contains("No image decoder recognises the data") == true, "\(loaded.broken)")

        // A file that vanishes after open is a broken entry at read time, not a crash.
        let vanishing = try reader.open(root: base, options: #"{"split": "train"}"#)
        try FileManager.default.removeItem(atPath: base + "/images/" + train[3].classificationFileName)
        let afterRemoval = vanishing.loadAll(registry: sharedRegistry)
        #expect(afterRemoval.samples.count == train.count - 2)
        #expect(afterRemoval.broken.contains { $0.name == "images/" + train[3].classificationFileName && $0.reason.contains("cannot be opened") },
                "\(afterRemoval.broken)")

        // Unusable roots and options are errors with sentences.
        #expect(throws: PluginError.self) { try reader.open(root: root + "/nowhere", options: #"{"split": "train"}"#) }
        #expect(throws: PluginError.self) { try reader.open(root: base, options: #"{"split": "dev"}"#) }
        #expect(throws: PluginError.self) { try reader.open(root: base, options: #"{"spilt": "train"}"#) }
        #expect(throws: PluginError.self) { try reader.open(root: base, options: "{not json") }
    }

    @Test func covidxRenamedLayout() throws {
        let (root, summary) = try phantoms("renamed")
        defer { removeTree(root) }
        let folder = root + "/renamed"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        for e in summary.entries {
            let renamed = "\(e.phantomClass.rawValue)_\(e.patient)_\(e.scan)_\(e.slice).png"
            try FileManager.default.copyItem(atPath: root + "/classification/images/" + e.classificationFileName, toPath: folder + "/" + renamed)
        }
        try FileManager.default.copyItem(atPath: folder + "/0_1_1001_0.png", toPath: folder + "/5_1_1001_9.png")
        try FileManager.default.copyItem(atPath: folder + "/0_1_1001_0.png", toPath: folder + "/slice.png")
        let dataset = try sharedRegistry.reader(id: "covidx-ct").open(root: folder)
        #expect(dataset.count == 9)
        #expect(Set(dataset.brokenEntries.map(\.name)) == ["5_1_1001_9.png", "slice.png"])
        let loaded = dataset.loadAll(registry: sharedRegistry)
        #expect(loaded.samples.map(\.label) == [0, 0, 0, 1, 1, 1, 2, 2, 2])
    }

    @Test func cncbSegmentation() throws {
        let (root, summary) = try phantoms("cncb")
        defer { removeTree(root) }
        let seg = root + "/segmentation"
        let reader = try sharedRegistry.reader(id: "cncb-seg")
        let clean = try reader.open(root: seg)
        #expect(clean.count == 9 && clean.brokenEntries.isEmpty)
        let all = clean.loadAll(registry: sharedRegistry)
        #expect(all.broken.isEmpty, "\(all.broken)")
        for s in all.samples {
            let entry = summary.entries.first { "imgs/" + $0.segmentationFileName == s.name }!
            let lesions = summary.lesionCounts[entry.index]
            #expect(s.label == nil)
            #expect((s.labelMap != nil) == (lesions > 0), "\(s.name)")
            if let map = s.labelMap {
                // The instances are the §1.2 ones of the mask.
                let direct = map.withUnsafeBufferPointer { lesionInstances(labelMap: $0.baseAddress!, width: 128, height: 128) }
                #expect(s.instances == direct)
                #expect(s.instances.allSatisfy { $0.area > 100 })
            } else {
                #expect(s.instances.isEmpty)
            }
        }
        #expect(all.samples.contains { !$0.instances.isEmpty })

        // Split file, then broken entries: an image gone (its mask left over), a mask of the wrong
        // size, an unreadable image.
        let split = try reader.open(root: seg, options: #"{"split": "test"}"#)
        #expect(split.count == summary.entries.filter { $0.split == .test }.count)
        let withMask = summary.entries.filter { summary.lesionCounts[$0.index] > 0 }
        let gone = withMask[0].segmentationFileName, small = withMask[1].segmentationFileName
        try FileManager.default.removeItem(atPath: seg + "/imgs/" + gone)
        try PNG.write(try PixelImage(bytes: [UInt8](repeating: 2, count: 64), width: 8, height: 8, format: .gray), to: seg + "/masks/" + small)
        let damaged = summary.entries.first { summary.lesionCounts[$0.index] == 0 }!.segmentationFileName
        let png = try readFile(seg + "/imgs/" + damaged)
        try writeFile(seg + "/imgs/" + damaged, Array(png.prefix(png.count / 2)))
        let dataset = try reader.open(root: seg)
        #expect(dataset.count == 8)
        #expect(dataset.brokenEntries == [BrokenEntry(name: "masks/" + gone, reason: "the mask has no image of the same stem in imgs/.")])
        let loaded = dataset.loadAll(registry: sharedRegistry)
        #expect(loaded.samples.count == 6)
        #expect(loaded.broken.contains { $0.name == "imgs/" + small && $0.reason.contains("the mask is 8×8 but the image is 128×128") }, "\(loaded.broken)")
        #expect(loaded.broken.contains { $0.name == "imgs/" + damaged && $0.reason.contains("PNG") }, "\(loaded.broken)")
        #expect(throws: PluginError.self) { try reader.open(root: root) }   // no imgs/
    }

    @Test func ictcfJPEGs() throws {
        let (root, _) = try phantoms("ictcf")
        defer { removeTree(root) }
        let folder = root + "/ictcf"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let slice = try PNG.read(path: root + "/classification/images/" + (try FileManager.default.contentsOfDirectory(atPath: root + "/classification/images").sorted()[0]))
        let jpeg = try encodeJPEG(slice.bytes, width: slice.width, height: slice.height, quality: 90)
        for name in ["0_nCT1.jpg", "0_nCT2.jpg", "2_pCT1.jpg", "2_pCT7.jpg", "1_pCT3.jpg", "2_nCT4.jpg"] {
            try writeFile(folder + "/" + name, jpeg)
        }
        try writeFile(folder + "/2_pCT9.jpg", Array(jpeg.prefix(jpeg.count / 2)))
        let reader = try sharedRegistry.reader(id: "ictcf")
        let dataset = try reader.open(root: folder)
        #expect(dataset.count == 5)
        #expect(Set(dataset.brokenEntries.map(\.name)) == ["1_pCT3.jpg", "2_nCT4.jpg"])
        let loaded = dataset.loadAll(registry: sharedRegistry)
        #expect(loaded.samples.map(\.label) == [0, 0, 2, 2])
        #expect(loaded.samples.allSatisfy { $0.decoder == "jpeg 1.0.0" && $0.image.width == 128 })
        #expect(loaded.broken.contains { $0.name == "2_pCT9.jpg" && $0.reason.contains("damaged") }, "\(loaded.broken)")
        // A split file naming a missing image.
        try "0_nCT1.jpg\n2_pCT1.jpg\n2_pCT404.jpg\n".write(toFile: folder + "/train_ictcf.txt", atomically: true, encoding: .utf8)
        let split = try reader.open(root: folder, options: #"{"split_file": "train_ictcf.txt"}"#)
        #expect(split.count == 2)
        #expect(split.brokenEntries == [BrokenEntry(name: "2_pCT404.jpg", reason: "the image file does not exist.")])
    }
}
