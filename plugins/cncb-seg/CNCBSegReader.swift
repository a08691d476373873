// cncb-seg — dataset reader for the CNCB-NCOV lesion-segmentation slices (MODEL.md §1.2).
//
// Layout: <root>/imgs/<patient>_<slice>.{jpg,png} and <root>/masks/<stem>.png, the label map of the
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

private let imageExtensions = [".png", ".jpg", ".jpeg"]

private func stem(_ name: String) -> String {
    guard let dot = name.lastIndex(of: ".") else { return name }
    return String(name[..<dot])
}

private func openCNCB(_ rootPointer: UnsafePointer<CChar>?, _ optionsJSON: UnsafePointer<CChar>?,
                      _ out: UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                      _ errorOut: UnsafeMutablePointer<affinity_error>?) -> Int32 {
    guard let rootPointer, let out else { return fail(errorOut, AFFINITY_E_INVALID_ARGUMENT, "open() needs a root and an output handle.") }
    out.pointee = nil
    let root = String(cString: rootPointer)
    let split: String?, splitFile: String?
    do {
        let options = try parseOptions(optionsJSON)
        try checkKeys(options, allowed: ["split", "split_file"], plugin: "cncb-seg")
        split = try stringOption(options, "split")
        splitFile = try stringOption(options, "split_file")
    } catch let e as OptionsError {
        return fail(errorOut, AFFINITY_E_INVALID_ARGUMENT, e.message)
    } catch {
        return fail(errorOut, AFFINITY_E_INVALID_ARGUMENT, "The options cannot be read.")
    }
    let imgs = root + "/imgs", masks = root + "/masks"
    guard isDirectory(imgs) else { return fail(errorOut, AFFINITY_E_IO, "The data-set root \(root) has no imgs/ folder.") }
    let maskNames: [String]
    do {
        maskNames = isDirectory(masks) ? try listDirectory(masks) : []
    } catch let e as OptionsError {
        return fail(errorOut, AFFINITY_E_IO, e.message)
    } catch { return AFFINITY_E_IO }
    var maskByStem: [String: String] = [:]
    for m in maskNames where m.lowercased().hasSuffix(".png") { maskByStem[stem(m)] = m }

    let state = ReaderState()
    var imageNames: [String]
    do {
        if let split, !["train", "test"].contains(split) {
            return fail(errorOut, AFFINITY_E_INVALID_ARGUMENT, "The split \"\(split)\" is not one of train, test.")
        }
        if let path = splitFile.map({ $0.hasPrefix("/") ? $0 : root + "/" + $0 }) ?? split.map({ root + "/\($0)_split_segmentation.txt" }) {
            guard isFile(path) else { return fail(errorOut, AFFINITY_E_IO, "The split file \(path) does not exist.") }
            imageNames = try readLines(path).filter { !$0.isEmpty }
        } else {
            imageNames = try listDirectory(imgs).filter { n in imageExtensions.contains { n.lowercased().hasSuffix($0) } }
        }
    } catch let e as OptionsError {
        return fail(errorOut, AFFINITY_E_IO, e.message)
    } catch { return AFFINITY_E_IO }

    var used = Set<String>()
    for name in imageNames {
        let imagePath = imgs + "/" + name
        guard isFile(imagePath) else {
            state.broken.append(("imgs/" + name, "the image file does not exist."))
            continue
        }
        var maskPath: String?
        if let m = maskByStem[stem(name)] {
            used.insert(m)
            guard isFile(masks + "/" + m) else {
                state.broken.append(("imgs/" + name, "its mask masks/\(m) is not a regular file."))
                continue
            }
            maskPath = masks + "/" + m
        }
        state.entries.append(ReaderEntry(name: "imgs/" + name, imagePath: imagePath, maskPath: maskPath, label: -1))
    }
    if split == nil && splitFile == nil {
        for m in maskNames where m.lowercased().hasSuffix(".png") && !used.contains(m) {
            state.broken.append(("masks/" + m, "the mask has no image of the same stem in imgs/."))
        }
    }
    out.pointee = state.handle
    return AFFINITY_OK
}

private let descriptor = makeDescriptor(
    id: "cncb-seg", version: "1.0.0",
    description: "Dataset reader: CNCB-NCOV segmentation slices, imgs/ with label-map masks/ of the same stem (MODEL.md §1.2).",
    kind: AFFINITY_KIND_DATASET_READER, reader: makeReaderTable(open: openCNCB))

@_cdecl("affinity_plugin_entry")
public func affinityPluginEntry(_ hostABIVersion: UInt32) -> UnsafePointer<affinity_plugin>? { descriptor }
