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

private let imageExtensions = [".png", ".jpg", ".jpeg"]

private func openICTCF(_ rootPointer: UnsafePointer<CChar>?, _ optionsJSON: UnsafePointer<CChar>?,
                       _ out: UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                       _ errorOut: UnsafeMutablePointer<affinity_error>?) -> Int32 {
    guard let rootPointer, let out else { return fail(errorOut, AFFINITY_E_INVALID_ARGUMENT, "open() needs a root and an output handle.") }
    out.pointee = nil
    let root = String(cString: rootPointer)
    let splitFile: String?, images: String?
    do {
        let options = try parseOptions(optionsJSON)
        try checkKeys(options, allowed: ["split_file", "images"], plugin: "ictcf")
        splitFile = try stringOption(options, "split_file")
        images = try stringOption(options, "images")
    } catch let e as OptionsError {
        return fail(errorOut, AFFINITY_E_INVALID_ARGUMENT, e.message)
    } catch {
        return fail(errorOut, AFFINITY_E_INVALID_ARGUMENT, "The options cannot be read.")
    }
    let folder = images.map { root + "/" + $0 } ?? root
    guard isDirectory(folder) else { return fail(errorOut, AFFINITY_E_IO, "The image folder \(folder) does not exist.") }
    let prefix = images.map { $0 + "/" } ?? ""
    let state = ReaderState()
    let names: [String]
    do {
        if let splitFile {
            let path = splitFile.hasPrefix("/") ? splitFile : root + "/" + splitFile
            guard isFile(path) else { return fail(errorOut, AFFINITY_E_IO, "The split file \(path) does not exist.") }
            names = try readLines(path).filter { !$0.isEmpty }
        } else {
            names = try listDirectory(folder).filter { n in imageExtensions.contains { n.lowercased().hasSuffix($0) } }
        }
    } catch let e as OptionsError {
        return fail(errorOut, AFFINITY_E_IO, e.message)
    } catch { return AFFINITY_E_IO }
    for name in names {
        let label: Int32
        if name.hasPrefix("0_nCT") { label = 0 } else if name.hasPrefix("2_pCT") { label = 2 } else {
            state.broken.append((prefix + name, "the name does not start with 0_nCT (negative) or 2_pCT (COVID-19), so its label is unknown."))
            continue
        }
        let path = folder + "/" + name
        guard isFile(path) else {
            state.broken.append((prefix + name, "the image file does not exist."))
            continue
        }
        state.entries.append(ReaderEntry(name: prefix + name, imagePath: path, maskPath: nil, label: label))
    }
    out.pointee = state.handle
    return AFFINITY_OK
}

private let descriptor = makeDescriptor(
    id: "ictcf", version: "1.0.0",
    description: "Dataset reader: iCTCF-CT slices named 0_nCT<N> (negative) and 2_pCT<N> (COVID-19).",
    kind: AFFINITY_KIND_DATASET_READER, reader: makeReaderTable(open: openICTCF))

@_cdecl("affinity_plugin_entry")
public func affinityPluginEntry(_ hostABIVersion: UInt32) -> UnsafePointer<affinity_plugin>? { descriptor }
