// datasets: the data-set readers' inputs — the options JSON a Train call passes (data_options)
// and the split file of each layout — through the plugin ABI's reader plumbing (openReader, read,
// broken_entry with small host buffers, close) and the layouts of DataSetLayouts.swift exactly
// as the covidx-ct, cncb-seg and ictcf readers call them. Input: byte 0 picks the reader and the
// options the host sends; then the options JSON up to a NUL byte, then the split file's bytes.
import AffinityPluginSupport
import CAffinityPlugin
import Foundation

let fuzzDataSetRoot = fuzzScratch + "/dataset"

func dataSetsSetUp() {
    let fm = FileManager.default
    for folder in ["images", "imgs", "masks", "2A_images"] {
        try? fm.createDirectory(atPath: fuzzDataSetRoot + "/" + folder, withIntermediateDirectories: true)
    }
    for file in ["images/0_1_1_1.png", "images/a.png", "images/NCP_3.jpg", "imgs/p1_1.png", "imgs/p1_2.jpg", "masks/p1_1.png",
                 "masks/orphan.png", "0_nCT1.jpg", "2_pCT7.png", "other.png"] {
        _ = fm.createFile(atPath: fuzzDataSetRoot + "/" + file, contents: Data([0x89, 0x50]))
    }
}

private let openCovidx: ReaderOpen = { root, options, out, error in
    openReader(root, options, out, error, plugin: "covidx-ct", allowed: ["split", "split_file", "images", "layout"]) { root, options in
        let split = try stringOption(options, "split"), splitFile = try stringOption(options, "split_file")
        let layout = try stringOption(options, "layout") ?? ((split != nil || splitFile != nil) ? "split" : "renamed")
        let images = try COVIDxCT.imageFolder(in: root, named: try stringOption(options, "images"))
        guard layout == "split" else { return try COVIDxCT.readRenamed(images: images, checkFiles: true) }
        let files = try splitFile.map { [resolvedPath($0, under: root)] } ?? COVIDxCT.splitFiles(in: root, split: split ?? "train")
        return try COVIDxCT.readSplitFiles(files, images: images, requireBox: split != "val", checkFiles: true, limit: split == "test" ? 3 : nil)
    }
}

private let openCNCB: ReaderOpen = { root, options, out, error in
    openReader(root, options, out, error, plugin: "cncb-seg", allowed: ["split", "split_file"]) { root, options in
        let split = try stringOption(options, "split"), splitFile = try stringOption(options, "split_file")
        let file = splitFile.map { resolvedPath($0, under: root) } ?? split.map { CNCBSeg.splitFile(in: root, split: $0) }
        let read = try CNCBSeg.read(folder: root, splitFile: file, checkFiles: true)
        return file == nil ? LayoutListing(entries: read.listing.entries, broken: read.listing.broken + read.unpairedMasks) : read.listing
    }
}

private let openICTCF: ReaderOpen = { root, options, out, error in
    openReader(root, options, out, error, plugin: "ictcf", allowed: ["split_file", "images"]) { root, options in
        let images = try subfolder(try stringOption(options, "images"), of: root)
        let splitFile = try stringOption(options, "split_file").map { resolvedPath($0, under: root) }
        var listing = LayoutListing()
        for name in try imageNames(in: images.path, splitFile: splitFile) {
            let label: Int32 = name.hasPrefix("0_nCT") ? 0 : name.hasPrefix("2_pCT") ? 2 : -1
            if label < 0 { listing.broken.append((images.prefix + name, "unknown label")); continue }
            if let problem = imageFileProblem(images.path + "/" + name) { listing.broken.append((images.prefix + name, problem)); continue }
            listing.entries.append(ReaderEntry(name: images.prefix + name, imagePath: images.path + "/" + name, maskPath: nil, label: label))
        }
        return listing
    }
}

func fuzzDataSets(_ bytes: UnsafeRawBufferPointer) {
    var r = FuzzReader(bytes)
    let selector = r.byte()
    let rest = r.rest()
    let cut = rest.firstIndex(of: 0) ?? rest.count
    let options = Array(rest[..<cut])
    let split = Array(rest[min(cut + 1, rest.count)...])
    // The split file, under each name a layout looks for.
    let splitNames = ["train_COVIDx_CT.txt", "val_COVIDx_CT-1.txt", "train_split_segmentation.txt", "list.txt"]
    let splitName = splitNames[Int(selector >> 2) % splitNames.count]
    for name in splitNames { unlink(fuzzDataSetRoot + "/" + name) }
    _ = FileManager.default.createFile(atPath: fuzzDataSetRoot + "/" + splitName, contents: Data(split))
    let open: ReaderOpen = [openCovidx, openCNCB, openICTCF][Int(selector & 3) % 3]
    var handle: UnsafeMutableRawPointer?
    var error = affinity_error()
    let status = (options + [0]).withUnsafeBufferPointer { json in
        json.baseAddress!.withMemoryRebound(to: CChar.self, capacity: json.count) { open(fuzzDataSetRoot, $0, &handle, &error) }
    }
    fuzzCheck(withUnsafeBytes(of: &error.message) { $0.contains(0) }, "the error message is not NUL-terminated")
    guard status == AFFINITY_OK, let handle else { return }
    defer { readerClose(handle) }
    let count = readerCount(handle)
    for index in [0, count - 1, count, -1] where count > 0 || index < 0 {
        var sample = affinity_sample()
        sample.struct_size = selector & 16 != 0 ? 12 : UInt32(MemoryLayout<affinity_sample>.size)
        sample.image_fd = -1
        sample.mask_fd = -1
        let s = readerRead(handle, index, &sample, &error)
        if s == AFFINITY_OK {
            fuzzCheck(sample.image_fd >= 0 || sample.struct_size < 12, "read() succeeded without an image descriptor")
            if sample.image_fd >= 0 { close(sample.image_fd) }
            if sample.mask_fd >= 0 { close(sample.mask_fd) }
        }
    }
    let broken = readerBrokenCount(handle)
    var name = [CChar](repeating: 0x7F, count: 9), reason = [CChar](repeating: 0x7F, count: 3)
    for index in [0, broken - 1, broken] where broken > 0 {
        let size = Int(selector >> 5)  // 0…7: buffers smaller than the text, and empty ones
        _ = readerBrokenEntry(handle, index, &name, min(size, name.count), &reason, min(size, reason.count))
    }
}
