// covidx-ct — dataset reader for COVIDx-CT classification data (MODEL.md §1.1).
//
// Two layouts under the root:
//  - split files: "<split>_COVIDx_CT-1.txt" (the release's name) or "<split>_COVIDx_CT.txt", one
//    "<filename> <class> <xmin> <ymin> <xmax> <ymax>" per line, images in the image folder; the box
//    is checked for form and ignored (the model does not crop);
//  - the author's renamed layout: every "<class>_<patient>_<scan>_<slice>.png|jpg" of the image
//    folder, sorted by name, label = the number before the first "_".
// Options (JSON): "split" ("train", "val", "test"), "split_file" (a path, relative to the root or
// absolute), "images" (the image folder relative to the root; default "images" if it exists, else
// "2A_images", else the root), "layout" ("split" or "renamed"; default "split" when a split is
// named, else "renamed").
// Lines with a wrong field count or a class other than 0, 1, 2, names without a class prefix and
// files that do not exist are set aside as broken entries with a reason.
import AffinityPluginSupport
import CAffinityPlugin
import Foundation

private let imageExtensions = [".png", ".jpg", ".jpeg"]

private func openCovidx(_ rootPointer: UnsafePointer<CChar>?, _ optionsJSON: UnsafePointer<CChar>?,
                        _ out: UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                        _ errorOut: UnsafeMutablePointer<affinity_error>?) -> Int32 {
    guard let rootPointer, let out else { return fail(errorOut, AFFINITY_E_INVALID_ARGUMENT, "open() needs a root and an output handle.") }
    out.pointee = nil
    let root = String(cString: rootPointer)
    guard isDirectory(root) else { return fail(errorOut, AFFINITY_E_IO, "The data-set root \(root) is not a folder.") }
    let options: [String: Any]
    let split: String?, splitFile: String?, imagesOption: String?, layoutOption: String?
    do {
        options = try parseOptions(optionsJSON)
        try checkKeys(options, allowed: ["split", "split_file", "images", "layout"], plugin: "covidx-ct")
        split = try stringOption(options, "split")
        splitFile = try stringOption(options, "split_file")
        imagesOption = try stringOption(options, "images")
        layoutOption = try stringOption(options, "layout")
    } catch let e as OptionsError {
        return fail(errorOut, AFFINITY_E_INVALID_ARGUMENT, e.message)
    } catch {
        return fail(errorOut, AFFINITY_E_INVALID_ARGUMENT, "The options cannot be read.")
    }
    if let split, !["train", "val", "test"].contains(split) {
        return fail(errorOut, AFFINITY_E_INVALID_ARGUMENT, "The split \"\(split)\" is not one of train, val, test.")
    }
    let layout = layoutOption ?? ((split != nil || splitFile != nil) ? "split" : "renamed")
    guard layout == "split" || layout == "renamed" else {
        return fail(errorOut, AFFINITY_E_INVALID_ARGUMENT, "The layout \"\(layout)\" is not one of split, renamed.")
    }
    let imageFolderName = imagesOption ?? (isDirectory(root + "/images") ? "images" : (isDirectory(root + "/2A_images") ? "2A_images" : ""))
    let imageFolder = imageFolderName.isEmpty ? root : root + "/" + imageFolderName
    guard isDirectory(imageFolder) else { return fail(errorOut, AFFINITY_E_IO, "The image folder \(imageFolder) does not exist.") }
    let prefix = imageFolderName.isEmpty ? "" : imageFolderName + "/"
    let state = ReaderState()

    if layout == "split" {
        var path: String
        if let splitFile {
            path = splitFile.hasPrefix("/") ? splitFile : root + "/" + splitFile
        } else if let split {
            path = root + "/\(split)_COVIDx_CT-1.txt"
            if !isFile(path) { path = root + "/\(split)_COVIDx_CT.txt" }
        } else {
            return fail(errorOut, AFFINITY_E_INVALID_ARGUMENT, "The split layout needs a \"split\" or a \"split_file\" option.")
        }
        guard isFile(path) else { return fail(errorOut, AFFINITY_E_IO, "The split file \(path) does not exist.") }
        let lines: [String]
        do { lines = try readLines(path) } catch let e as OptionsError { return fail(errorOut, AFFINITY_E_IO, e.message) } catch { return AFFINITY_E_IO }
        let splitName = (path as NSString).lastPathComponent
        for (number, line) in lines.enumerated() where !line.isEmpty {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            let label = "\(splitName) line \(number + 1)"
            guard fields.count == 6 else {
                state.broken.append((label, "expected 6 fields \"<file> <class> <xmin> <ymin> <xmax> <ymax>\", found \(fields.count)."))
                continue
            }
            guard let cls = Int32(fields[1]), (0...2).contains(cls) else {
                state.broken.append((prefix + fields[0], "the class label \"\(fields[1])\" on \(label) is not 0, 1 or 2."))
                continue
            }
            guard fields[2...5].allSatisfy({ Int($0) != nil }) else {
                state.broken.append((prefix + fields[0], "the box on \(label) is not four integers."))
                continue
            }
            let imagePath = imageFolder + "/" + fields[0]
            guard isFile(imagePath) else {
                state.broken.append((prefix + fields[0], "the image file does not exist."))
                continue
            }
            state.entries.append(ReaderEntry(name: prefix + fields[0], imagePath: imagePath, maskPath: nil, label: cls))
        }
    } else {
        let names: [String]
        do { names = try listDirectory(imageFolder) } catch let e as OptionsError { return fail(errorOut, AFFINITY_E_IO, e.message) } catch { return AFFINITY_E_IO }
        for name in names where imageExtensions.contains(where: { name.lowercased().hasSuffix($0) }) {
            let head = name.split(separator: "_", maxSplits: 1).first.map(String.init) ?? ""
            guard name.contains("_"), let cls = Int32(head) else {
                state.broken.append((prefix + name, "the name does not start with a class id (\"<class>_<patient>_<scan>_<slice>\")."))
                continue
            }
            guard (0...2).contains(cls) else {
                state.broken.append((prefix + name, "the class label \(cls) is not 0, 1 or 2."))
                continue
            }
            guard isFile(imageFolder + "/" + name) else {
                state.broken.append((prefix + name, "it is not a regular file."))
                continue
            }
            state.entries.append(ReaderEntry(name: prefix + name, imagePath: imageFolder + "/" + name, maskPath: nil, label: cls))
        }
    }
    out.pointee = state.handle
    return AFFINITY_OK
}

private let descriptor = makeDescriptor(
    id: "covidx-ct", version: "1.0.0",
    description: "Dataset reader: COVIDx-CT split files or the author's renamed <class>_<patient>_<scan>_<slice> layout.",
    kind: AFFINITY_KIND_DATASET_READER, reader: makeReaderTable(open: openCovidx))

@_cdecl("affinity_plugin_entry")
public func affinityPluginEntry(_ hostABIVersion: UInt32) -> UnsafePointer<affinity_plugin>? { descriptor }
