// The built-in layouts as the host reads them (BuiltInLayout: PhantomLayoutData and affinity-lab's
// --data), one test of each layout: the reader is the one the covidx-ct and cncb-seg plugins use
// (ReaderTests cover the plugins' options, strict lines and decoding), here in the host's way —
// lenient lines, every split, the renamed layout, no file checks unless asked.
import Foundation
import Service
import Testing

@Suite("Built-in layouts")
struct BuiltInLayoutTests {
    private func write(_ text: String, _ path: String) throws {
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }

    @Test func covidxCTFolder() throws {
        let dir = try Paths.temporaryDirectory("covidx-layout")
        defer { try? FileManager.default.removeItem(at: dir) }
        let folder = dir.path + "/classification"
        for name in ["a.png", "b.png", "c.png"] { try write("", folder + "/images/" + name) }
        // Every split file of the split, sorted by name; `<file> <class>` is enough, tabs and
        // blank lines are fine.
        try write("a.png 0 1 2 3 4\n\nb.png\t2\n", folder + "/train_COVIDx_CT-1.txt")
        try write("c.png 1\n", folder + "/train_COVIDx_CT.txt")
        try write("a.png 1 0 0 1 1\n", folder + "/val_COVIDx_CT.txt")
        let train = try BuiltInLayout.classification(folder: folder, split: "train", checkFiles: false)
        #expect(train.entries.map(\.name) == ["images/a.png", "images/b.png", "images/c.png"])
        #expect(train.entries.map(\.label) == [0, 2, 1] && train.entries.allSatisfy { $0.mask == nil })
        #expect(train.entries[0].image == folder + "/images/a.png" && train.broken.isEmpty)
        #expect(try BuiltInLayout.classification(folder: folder, split: nil, checkFiles: false).entries.map(\.label) == [0, 2, 1, 1])
        #expect(try BuiltInLayout.classification(folder: folder, split: "train", limit: 2).entries.count == 2)
        let noTest = #expect(throws: ServiceError.self) { try BuiltInLayout.classification(folder: folder, split: "test") }
        #expect(noTest?.message == "The split file \(folder)/test_COVIDx_CT.txt does not exist, nor any other test_COVIDx_CT*.txt.")

        // Broken entries, in file order, with the layout's sentences.
        try write("a.png 1 0 0 1 1\nd.png 7\nlonely.png\ngone.png 2\n", folder + "/val_COVIDx_CT.txt")
        let val = try BuiltInLayout.classification(folder: folder, split: "val")
        #expect(val.entries.map(\.name) == ["images/a.png"])
        #expect(val.broken == ["images/d.png: the class label \"7\" on val_COVIDx_CT.txt line 2 is not 0, 1 or 2.",
                               "val_COVIDx_CT.txt line 3: expected at least 2 fields \"<file> <class> …\", found 1.",
                               "images/gone.png: the image file does not exist."], "\(val.broken)")
        // Without file checks a missing image is listed (affinity-lab reports it when it reads it).
        #expect(try BuiltInLayout.classification(folder: folder, split: "val", checkFiles: false).entries.count == 2)

        // The renamed layout: a folder without split files, classes from the names.
        let renamed = dir.path + "/renamed"
        for name in ["0_1_1001_0.png", "CP_2_1002_0.JPEG", "NCP_3_1003_0.jpg", "Normal_4_1004_0.png", "2_5_1005_0.png",
                     "5_6_1006_0.png", "slice.png", "notes.txt"] {
            try write("", renamed + "/" + name)
        }
        let listing = try BuiltInLayout.classification(folder: renamed, split: "train", renamedWithoutSplitFiles: true)
        #expect(listing.entries.map(\.name) == ["0_1_1001_0.png", "2_5_1005_0.png", "CP_2_1002_0.JPEG", "NCP_3_1003_0.jpg", "Normal_4_1004_0.png"])
        #expect(listing.entries.map(\.label) == [0, 2, 1, 2, 0])
        #expect(listing.broken == ["5_6_1006_0.png: the class label 5 is not 0, 1 or 2.",
                                   "slice.png: the name does not start with a class: 0_, 1_, 2_ (\"<class>_<patient>_<scan>_<slice>\"), Normal_, CP_ or NCP_."],
                "\(listing.broken)")
        // Without the renamed layout such a folder has no split file.
        #expect(throws: ServiceError.self) { try BuiltInLayout.classification(folder: renamed, split: "train") }
    }

    @Test func cncbSegFolder() throws {
        let dir = try Paths.temporaryDirectory("cncb-layout")
        defer { try? FileManager.default.removeItem(at: dir) }
        let folder = dir.path + "/segmentation"
        for name in ["imgs/a.png", "imgs/b.jpg", "imgs/c.png", "masks/a.png", "masks/c.png", "masks/z.png"] { try write("", folder + "/" + name) }
        // Without a split file: every image of imgs/, sorted, each with the mask of its stem.
        let all = try BuiltInLayout.segmentation(folder: folder, splitFile: nil)
        #expect(all.entries.map(\.name) == ["imgs/a.png", "imgs/b.jpg", "imgs/c.png"])
        #expect(all.entries.map(\.mask) == [folder + "/masks/a.png", nil, folder + "/masks/c.png"])
        #expect(all.entries.allSatisfy { $0.label == nil } && all.broken.isEmpty)
        // A split file chooses and orders the slices; a listed slice that is not there is set aside.
        let splitFile = BuiltInLayout.segmentationSplitFile(in: folder, split: "train")
        #expect(splitFile == folder + "/train_split_segmentation.txt")
        try write("c.png\n a.png \n\nx.png\n", splitFile)
        let train = try BuiltInLayout.segmentation(folder: folder, splitFile: splitFile)
        #expect(train.entries.map(\.name) == ["imgs/c.png", "imgs/a.png"])
        #expect(train.broken == ["imgs/x.png: the image file does not exist."])
        #expect(try BuiltInLayout.segmentation(folder: folder, splitFile: splitFile, checkFiles: false).entries.count == 3)
        // Unusable folders.
        let noSplit = #expect(throws: ServiceError.self) {
            try BuiltInLayout.segmentation(folder: folder, splitFile: BuiltInLayout.segmentationSplitFile(in: folder, split: "test"))
        }
        #expect(noSplit?.message == "The split file \(folder)/test_split_segmentation.txt does not exist.")
        let noImgs = #expect(throws: ServiceError.self) { try BuiltInLayout.segmentation(folder: dir.path, splitFile: nil) }
        #expect(noImgs?.message == "The data-set folder \(dir.path) has no imgs/ folder.")
    }
}
