import Foundation
import Imaging
import Testing

@Suite("Phantom data sets on disk")
struct DatasetTests {
    @Test("plan: patients grouped, classes cycle, splits by patient")
    func plan() {
        let entries = PhantomDataset.plan(count: 60, slicesPerPatient: 2)
        #expect(entries.count == 60)
        #expect(entries[0].classificationFileName == "Normal_1_1001_0000.png")
        #expect(entries[3].classificationFileName == "CP_2_1002_0001.png")
        #expect(entries[5].classificationFileName == "NCP_3_1003_0001.png")
        #expect(entries[5].segmentationFileName == "3_1.png")
        var splitOfPatient: [Int: PhantomDataset.Split] = [:]
        for entry in entries {
            if let split = splitOfPatient[entry.patient] { #expect(split == entry.split) }
            splitOfPatient[entry.patient] = entry.split
        }
        // 30 patients, 10 per class: 7 train, 2 val (1.5 rounds up), 1 test each.
        for phantomClass in PhantomClass.allCases {
            let patients = Set(entries.filter { $0.phantomClass == phantomClass }.map(\.patient))
            let splits = patients.map { splitOfPatient[$0]! }
            #expect(splits.filter { $0 == .train }.count == 7)
            #expect(splits.filter { $0 == .val }.count == 2)
            #expect(splits.filter { $0 == .test }.count == 1)
        }
    }

    @Test("write: COVIDx-CT classification layout and CNCB segmentation layout")
    func write() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanup() }
        let root = directory.path + "/phantoms"
        let summary = try PhantomDataset.write(to: root, count: 18, seed: 77, size: 128, slicesPerPatient: 2)
        #expect(summary.entries.count == 18)
        let generator = PhantomGenerator(seed: 77, size: 128)

        // Split files: every image exactly once, 6 fields, class matching the prefix, body box.
        var listed: [String] = []
        for split in PhantomDataset.Split.allCases {
            let text = try String(contentsOfFile: root + "/classification/\(split.rawValue)_COVIDx_CT.txt", encoding: .utf8)
            for line in text.split(separator: "\n") {
                let fields = line.split(separator: " ").map(String.init)
                #expect(fields.count == 6)
                let name = fields[0]
                listed.append(name)
                let entry = try #require(summary.entries.first { $0.classificationFileName == name })
                #expect(entry.split == split)
                #expect(Int(fields[1]) == entry.phantomClass.rawValue)
                #expect(name.hasPrefix(entry.phantomClass.covidxPrefix + "_"))
                let slice = generator.slice(index: entry.index, class: entry.phantomClass)
                let box = slice.bodyBox
                #expect(fields[2...5].compactMap { Int($0) } == [box.xmin, box.ymin, box.xmax, box.ymax])
            }
        }
        #expect(listed.sorted() == summary.entries.map(\.classificationFileName).sorted())
        let images = try FileManager.default.contentsOfDirectory(atPath: root + "/classification/images")
        #expect(images.sorted() == listed.sorted())

        // Images are the generator's slices; masks exist exactly for slices with lesions.
        var masks = 0
        for entry in summary.entries {
            let slice = generator.slice(index: entry.index, class: entry.phantomClass)
            let classification = try PNG.read(path: root + "/classification/images/" + entry.classificationFileName)
            #expect(classification.bytes == slice.image)
            let segmentation = try PNG.read(path: root + "/segmentation/imgs/" + entry.segmentationFileName)
            #expect(segmentation == classification)
            let maskPath = root + "/segmentation/masks/" + entry.segmentationFileName
            if slice.lesions.isEmpty {
                #expect(!FileManager.default.fileExists(atPath: maskPath))
                #expect(entry.phantomClass == .normal)
            } else {
                let mask = try PNG.read(path: maskPath)
                #expect(mask.format == .gray && mask.bitDepth == 8)
                #expect(mask.bytes == slice.labels)
                masks += 1
            }
        }
        #expect(masks == summary.maskCount && masks == 12)

        let train = try String(contentsOfFile: root + "/segmentation/train_split_segmentation.txt", encoding: .utf8)
        let test = try String(contentsOfFile: root + "/segmentation/test_split_segmentation.txt", encoding: .utf8)
        let segmentationNames = (train + test).split(separator: "\n").map(String.init)
        #expect(segmentationNames.sorted() == summary.entries.map(\.segmentationFileName).sorted())

        let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: root + "/phantoms.json")))
        let slices = try #require((manifest as? [String: Any])?["slices"] as? [[String: Any]])
        #expect(slices.count == 18)

        // No temporary files anywhere.
        let all = FileManager.default.enumerator(atPath: root)!.compactMap { $0 as? String }
        #expect(!all.contains { $0.contains(".tmp-") })
    }

    @Test("bad arguments are refused")
    func badArguments() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanup() }
        #expect(throws: ImageError.self) { try PhantomDataset.write(to: directory.path, count: 3, seed: 1, size: 64) }
        #expect(throws: ImageError.self) { try PhantomDataset.write(to: directory.path, count: -1, seed: 1) }
    }
}
