// cncb-seg — dataset reader for the CNCB-NCOV lesion-segmentation slices (MODEL.md §1.2).
//
// Layout (read by AffinityPluginSupport's CNCBSeg, which the host's built-in reader uses too):
// <root>/imgs/<patient>_<slice>.{jpg,png} and <root>/masks/<stem>.png, the label map of the
// slice with the same stem (0 background, 1 lung, 2 GGO, 3 consolidation); a slice without a mask
// file is a negative. The reader pairs the files; the host decodes them and derives the instances
// by the §1.2 rule (values ≥ 2 merged, 8-connected components of more than 100 pixels) with the one
// implementation it has (Detection.lesionInstances), so the rule is not duplicated here.
// Options (JSON): "split" ("train" or "test": the names of <root>/<split>_split_segmentation.txt) or
// "split_file" (a path relative to the root or absolute); without either, every image of imgs/,
// sorted by name. Samples carry no class label (-1).
// Broken entries: a listed image that does not exist, a mask that is not a regular file, a mask
// without its image (reported, since it usually means a misnamed slice).
import AffinityPluginSupport
import CAffinityPlugin
import Foundation

private let openCNCB: ReaderOpen = { rootPointer, optionsJSON, out, errorOut in
    openReader(rootPointer, optionsJSON, out, errorOut, plugin: "cncb-seg", allowed: ["split", "split_file"]) { root, options in
        let split = try stringOption(options, "split"), splitFile = try stringOption(options, "split_file")
        if let split, !CNCBSeg.splits.contains(split) {
            throw OptionsError(message: "The split \"\(split)\" is not one of \(CNCBSeg.splits.joined(separator: ", ")).")
        }
        let file = splitFile.map { resolvedPath($0, under: root) } ?? split.map { CNCBSeg.splitFile(in: root, split: $0) }
        let read = try CNCBSeg.read(folder: root, splitFile: file, checkFiles: true)
        // Every slice listed: a mask left over means a misnamed or missing slice.
        return file == nil ? LayoutListing(entries: read.listing.entries, broken: read.listing.broken + read.unpairedMasks) : read.listing
    }
}

private let descriptor = makeReaderDescriptor(id: "cncb-seg", version: "1.0.0", open: openCNCB,
                                              description: "Dataset reader: CNCB-NCOV segmentation slices, imgs/ with label-map masks/ of the same stem (MODEL.md §1.2).")

@_cdecl("affinity_plugin_entry")
public func affinityPluginEntry(_ hostABIVersion: UInt32) -> UnsafePointer<affinity_plugin>? { descriptor }
