// covidx-ct — dataset reader for COVIDx-CT classification data (MODEL.md §1.1).
//
// Two layouts under the root, read by the one reader of the layout (AffinityPluginSupport's
// COVIDxCT, which the host's built-in reader uses too):
//  - split files: every "<split>_…COVIDx_CT….txt" (the release's "<split>_COVIDx_CT-1.txt", the
//    phantoms' "<split>_COVIDx_CT.txt"), one "<filename> <class> <xmin> <ymin> <xmax> <ymax>" per
//    line, images in the image folder; the box is checked for form and ignored (the model does
//    not crop);
//  - the renamed layout: every "<class>_<patient>_<scan>_<slice>.png|jpg" of the image folder
//    (or COVIDx's "Normal_", "CP_", "NCP_" names), sorted by name, label = the class before the
//    first "_".
// Options (JSON): "split" ("train", "val", "test"), "split_file" (a path, relative to the root or
// absolute), "images" (the image folder relative to the root; default "images" if it exists, else
// "2A_images", else the root), "layout" ("split" or "renamed"; default "split" when a split is
// named, else "renamed").
// Lines with a wrong field count or a class other than 0, 1, 2, names without a class prefix and
// files that do not exist are set aside as broken entries with a reason.
import AffinityPluginSupport
import CAffinityPlugin
import Foundation

private let openCovidx: ReaderOpen = { rootPointer, optionsJSON, out, errorOut in
    openReader(rootPointer, optionsJSON, out, errorOut, plugin: "covidx-ct", allowed: ["split", "split_file", "images", "layout"]) { root, options in
        let split = try stringOption(options, "split"), splitFile = try stringOption(options, "split_file")
        if let split, !COVIDxCT.splits.contains(split) {
            throw OptionsError(message: "The split \"\(split)\" is not one of \(COVIDxCT.splits.joined(separator: ", ")).")
        }
        let layout = try stringOption(options, "layout") ?? ((split != nil || splitFile != nil) ? "split" : "renamed")
        guard layout == "split" || layout == "renamed" else {
            throw OptionsError(message: "The layout \"\(layout)\" is not one of split, renamed.")
        }
        let images = try COVIDxCT.imageFolder(in: root, named: try stringOption(options, "images"))
        guard layout == "split" else { return try COVIDxCT.readRenamed(images: images, checkFiles: true) }
        let splitFiles: [String]
        if let splitFile {
            splitFiles = [resolvedPath(splitFile, under: root)]
        } else if let split {
            splitFiles = try COVIDxCT.splitFiles(in: root, split: split)
        } else {
            throw OptionsError(message: "The split layout needs a \"split\" or a \"split_file\" option.")
        }
        return try COVIDxCT.readSplitFiles(splitFiles, images: images, requireBox: true, checkFiles: true)
    }
}

private let descriptor = makeReaderDescriptor(id: "covidx-ct", version: "1.0.0", open: openCovidx,
                                              description: "Dataset reader: COVIDx-CT split files or the author's renamed <class>_<patient>_<scan>_<slice> layout.")

@_cdecl("affinity_plugin_entry")
public func affinityPluginEntry(_ hostABIVersion: UInt32) -> UnsafePointer<affinity_plugin>? { descriptor }
