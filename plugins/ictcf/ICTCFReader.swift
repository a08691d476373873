// ictcf — dataset reader for the iCTCF-CT (HUST-19) slices as the author renamed them (MODEL.md §1.3):
// "0_nCT<N>.jpg" (negative, class 0) and "2_pCT<N>.jpg" (COVID-19, class 2); two classes, the
// 3-class head unchanged.
// Options (JSON): "split_file" (a list of names, e.g. train_ictcf.txt, relative to the root or
// absolute) and "images" (the image folder relative to the root; default: the root). Without a
// split file every .jpg/.jpeg/.png of the folder, sorted by name.
// Broken entries: a name whose prefix is not "0_nCT" or "2_pCT" (a bad or inconsistent label), a
// listed file that does not exist.
import AffinityPluginSupport
import CAffinityPlugin
import Foundation

private let openICTCF: ReaderOpen = { rootPointer, optionsJSON, out, errorOut in
    openReader(rootPointer, optionsJSON, out, errorOut, plugin: "ictcf", allowed: ["split_file", "images"]) { root, options in
        let images = try subfolder(try stringOption(options, "images"), of: root)
        let splitFile = try stringOption(options, "split_file").map { resolvedPath($0, under: root) }
        var listing = LayoutListing()
        for name in try imageNames(in: images.path, splitFile: splitFile) {
            let label: Int32
            if name.hasPrefix("0_nCT") { label = 0 } else if name.hasPrefix("2_pCT") { label = 2 } else {
                listing.broken.append((images.prefix + name, "the name does not start with 0_nCT (negative) or 2_pCT (COVID-19), so its label is unknown."))
                continue
            }
            let imagePath = images.path + "/" + name
            if let problem = imageFileProblem(imagePath) {
                listing.broken.append((images.prefix + name, problem))
                continue
            }
            listing.entries.append(ReaderEntry(name: images.prefix + name, imagePath: imagePath, maskPath: nil, label: label))
        }
        return listing
    }
}

private let descriptor = makeReaderDescriptor(id: "ictcf", version: "1.0.0", open: openICTCF,
                                              description: "Dataset reader: iCTCF-CT slices named 0_nCT<N> (negative) and 2_pCT<N> (COVID-19).")

@_cdecl("affinity_plugin_entry")
public func affinityPluginEntry(_ hostABIVersion: UInt32) -> UnsafePointer<affinity_plugin>? { descriptor }
