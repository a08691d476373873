// The data-set layouts, each read by one implementation: the COVIDx-CT classification folder
// (MODEL.md §1.1), the CNCB-NCOV segmentation folder (MODEL.md §1.2), and "the names of a split
// file, or every image of a folder" that the iCTCF reader uses too. The covidx-ct, cncb-seg and
// ictcf plugins read through this, and so does the host's built-in reader (Service's
// `BuiltInLayout`, behind PhantomLayoutData and affinity-lab's `--data`), so a set is listed the
// same way, with the same sentences for what is wrong with it, whichever way it is read.
// Foundation and stat(2) only: no C ABI, no descriptor of its own.
import Foundation

/// A folder that cannot be read in a layout at all (no split file, no imgs/ folder, a split file
/// that cannot be read): a sentence.
public struct LayoutError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// What a layout reader found in a folder: the usable entries in the layout's order, and the
/// entries it set aside, each named by its path relative to the folder (or its split-file line)
/// with a sentence saying why.
public struct LayoutListing {
    public var entries: [ReaderEntry]
    public var broken: [(name: String, reason: String)]
    public init(entries: [ReaderEntry] = [], broken: [(name: String, reason: String)] = []) {
        self.entries = entries; self.broken = broken
    }
}

/// Whether a regular file exists at `path`.
public func isFile(_ path: String) -> Bool {
    var info = stat()
    return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG
}

/// Whether a directory exists at `path`.
public func isDirectory(_ path: String) -> Bool {
    var info = stat()
    return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
}

/// `path` as given when absolute, else relative to `root`.
public func resolvedPath(_ path: String, under root: String) -> String {
    path.hasPrefix("/") ? path : root + "/" + path
}

/// The names in a directory, sorted (byte order, like Python's `sorted(os.listdir())`).
/// - Throws: `LayoutError` when the folder cannot be listed.
public func listDirectory(_ path: String) throws -> [String] {
    guard let names = try? FileManager.default.contentsOfDirectory(atPath: path) else {
        throw LayoutError(isDirectory(path) ? "The folder \(path) cannot be listed." : "The folder \(path) does not exist.")
    }
    return names.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
}

/// Whether a file name is an image a layout lists: `.png`, `.jpg` or `.jpeg`, in any case.
public func isImageName(_ name: String) -> Bool {
    let lower = name.lowercased()
    return lower.hasSuffix(".png") || lower.hasSuffix(".jpg") || lower.hasSuffix(".jpeg")
}

/// The lines of a split file, whitespace (and a CR) trimmed; blank lines are kept as empty strings
/// so that line numbers stay right.
/// - Throws: `LayoutError` when the file does not exist or is not UTF-8 text.
public func readSplitFile(_ path: String) throws -> [String] {
    guard isFile(path) else {
        throw LayoutError(FileManager.default.fileExists(atPath: path) ? "The split file \(path) is not a regular file."
                                                                       : "The split file \(path) does not exist.")
    }
    guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
        throw LayoutError("The split file \(path) cannot be read as UTF-8 text.")
    }
    var lines = text.components(separatedBy: "\n")
    if lines.last == "" { lines.removeLast() }
    return lines.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
}

/// The image names of a set: the non-blank lines of `splitFile`, in its order, or without one
/// every image of `folder` (`isImageName`), sorted by name.
/// - Throws: `LayoutError` (a split file that does not exist or cannot be read, a folder that
///   cannot be listed).
public func imageNames(in folder: String, splitFile: String?) throws -> [String] {
    if let splitFile { return try readSplitFile(splitFile).filter { !$0.isEmpty } }
    return try listDirectory(folder).filter(isImageName)
}

/// A folder of a set: `name` relative to `root` (which must exist), or `root` itself; `prefix` is
/// what the names of its entries start with.
/// - Throws: `LayoutError` when the named folder does not exist.
public func subfolder(_ name: String?, of root: String) throws -> (path: String, prefix: String) {
    guard let name, !name.isEmpty else { return (root, "") }
    let path = root + "/" + name
    guard isDirectory(path) else { throw LayoutError("The image folder \(path) does not exist.") }
    return (path, name + "/")
}

/// Why the image at `path` cannot be an entry, or nil when it is a regular file.
public func imageFileProblem(_ path: String) -> String? {
    var info = stat()
    guard stat(path, &info) == 0 else { return "the image file does not exist." }
    return (info.st_mode & S_IFMT) == S_IFREG ? nil : "the image is not a regular file."
}

/// The COVIDx-CT classification layout (MODEL.md §1.1): split files `<split>_COVIDx_CT….txt` with
/// one `<file> <class> <xmin> <ymin> <xmax> <ymax>` per line and the images in an image folder; or
/// the renamed layout, a folder of images whose names start with their class.
public enum COVIDxCT {
    /// The splits of the split files.
    public static let splits = ["train", "val", "test"]

    /// The split files of `split` in `folder` (nil: of every split), sorted by name: the names
    /// that start with `<split>_`, hold `_COVIDx_CT` and end in `.txt` (the release's
    /// `train_COVIDx_CT-1.txt`, the phantoms' `train_COVIDx_CT.txt`, …). A folder that does not
    /// exist has none.
    /// - Throws: `LayoutError` when `split` is named and has no split file, or the folder cannot
    ///   be listed.
    public static func splitFiles(in folder: String, split: String?) throws -> [String] {
        let names = isDirectory(folder) ? try listDirectory(folder) : []
        let all = names.filter { $0.contains("_COVIDx_CT") && $0.hasSuffix(".txt") }
        guard let split else { return all.map { folder + "/" + $0 } }
        let wanted = all.filter { $0.hasPrefix(split + "_") }
        guard !wanted.isEmpty else {
            throw LayoutError("The split file \(folder)/\(split)_COVIDx_CT.txt does not exist, nor any other \(split)_COVIDx_CT*.txt.")
        }
        return wanted.map { folder + "/" + $0 }
    }

    /// The image folder of `folder`: `name` when given, else `images/`, else `2A_images/` (COVIDx
    /// CT-2A), else `folder` itself.
    /// - Throws: `LayoutError` when the named folder does not exist.
    public static func imageFolder(in folder: String, named name: String? = nil) throws -> (path: String, prefix: String) {
        let fallback = ["images", "2A_images"].first { isDirectory(folder + "/" + $0) }
        return try subfolder(name ?? fallback, of: folder)
    }

    /// The entries the split files list, file after file, line after line: at most `limit` of
    /// them (the lines after the last one are not read). With `requireBox` a line is the
    /// release's six fields and the box must be four integers (it is not used: the model does not
    /// crop); without, `<file> <class>` and anything after. Set aside: a line with too few fields,
    /// a class other than 0, 1, 2, a bad box, and with `checkFiles` an image that is not a regular
    /// file. Names are the images' paths relative to the set.
    /// - Throws: `LayoutError` when a split file cannot be read.
    public static func readSplitFiles(_ paths: [String], images: (path: String, prefix: String), requireBox: Bool,
                                      checkFiles: Bool, limit: Int? = nil) throws -> LayoutListing {
        var listing = LayoutListing()
        for path in paths {
            let splitName = (path as NSString).lastPathComponent
            for (number, line) in try readSplitFile(path).enumerated() where !line.isEmpty {
                if let limit, listing.entries.count >= limit { return listing }
                let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
                let at = "\(splitName) line \(number + 1)"
                if requireBox ? fields.count != 6 : fields.count < 2 {
                    let form = requireBox ? "6 fields \"<file> <class> <xmin> <ymin> <xmax> <ymax>\"" : "at least 2 fields \"<file> <class> …\""
                    listing.broken.append((at, "expected \(form), found \(fields.count)."))
                    continue
                }
                let name = images.prefix + fields[0]
                guard let label = Int32(fields[1]), (0...2).contains(label) else {
                    listing.broken.append((name, "the class label \"\(fields[1])\" on \(at) is not 0, 1 or 2."))
                    continue
                }
                if requireBox && !fields[2...5].allSatisfy({ Int($0) != nil }) {
                    listing.broken.append((name, "the box on \(at) is not four integers."))
                    continue
                }
                let imagePath = images.path + "/" + fields[0]
                if checkFiles, let problem = imageFileProblem(imagePath) {
                    listing.broken.append((name, problem))
                    continue
                }
                listing.entries.append(ReaderEntry(name: name, imagePath: imagePath, maskPath: nil, label: label))
            }
        }
        return listing
    }

    /// The renamed layout: every image of `images` (`isImageName`), sorted by name, its class from
    /// the start of its name (`classOfName`). Set aside: a name without a class, and with
    /// `checkFiles` an image that is not a regular file.
    /// - Throws: `LayoutError` when the folder cannot be listed.
    public static func readRenamed(images: (path: String, prefix: String), checkFiles: Bool) throws -> LayoutListing {
        var listing = LayoutListing()
        for name in try listDirectory(images.path) where isImageName(name) {
            guard let label = classOfName(name) else {
                let head = name.split(separator: "_").first.map(String.init) ?? name
                let numeric = name.contains("_") && !head.isEmpty && head.allSatisfy(\.isASCII) && head.allSatisfy(\.isNumber)
                listing.broken.append((images.prefix + name, numeric ? "the class label \(head) is not 0, 1 or 2."
                    : "the name does not start with a class: 0_, 1_, 2_ (\"<class>_<patient>_<scan>_<slice>\"), Normal_, CP_ or NCP_."))
                continue
            }
            let imagePath = images.path + "/" + name
            if checkFiles, let problem = imageFileProblem(imagePath) {
                listing.broken.append((images.prefix + name, problem))
                continue
            }
            listing.entries.append(ReaderEntry(name: images.prefix + name, imagePath: imagePath, maskPath: nil, label: label))
        }
        return listing
    }

    /// The class of a renamed slice from the first `_` field of its name: `0`, `1`, `2` (the
    /// author's `<class>_<patient>_<scan>_<slice>`) or COVIDx's `Normal`, `CP`, `NCP`.
    public static func classOfName(_ name: String) -> Int32? {
        guard let first = name.split(separator: "_").first else { return nil }
        switch first {
        case "0", "Normal": return 0
        case "1", "CP": return 1
        case "2", "NCP": return 2
        default: return nil
        }
    }
}

/// The CNCB-NCOV segmentation layout (MODEL.md §1.2): `imgs/` with the slices and `masks/` with the
/// label map of each slice that has lesions (`<stem>.png`, 0 background, 1 lung, 2 GGO,
/// 3 consolidation; a slice without one is a negative), and `<split>_split_segmentation.txt`
/// naming the slices of a split.
public enum CNCBSeg {
    /// The splits of the split files.
    public static let splits = ["train", "test"]

    /// The split file of `split` in `folder`.
    public static func splitFile(in folder: String, split: String) -> String {
        folder + "/\(split)_split_segmentation.txt"
    }

    /// The slices of `folder`: the names `splitFile` lists, or without one every image of `imgs/`
    /// sorted by name, each with the mask of its stem in `masks/` if there is one. Set aside with
    /// `checkFiles`: an image that is not a regular file, a mask that is not. `unpairedMasks`: the
    /// masks no listed slice has, set aside by the same rule (a misnamed slice, usually).
    /// - Throws: `LayoutError` when the folder has no `imgs/` folder, or the split file does not
    ///   exist or cannot be read, or a folder cannot be listed.
    public static func read(folder: String, splitFile: String?, checkFiles: Bool) throws
        -> (listing: LayoutListing, unpairedMasks: [(name: String, reason: String)]) {
        let imgs = folder + "/imgs", masks = folder + "/masks"
        guard isDirectory(imgs) else { throw LayoutError("The data-set folder \(folder) has no imgs/ folder.") }
        let maskNames = isDirectory(masks) ? try listDirectory(masks).filter { $0.lowercased().hasSuffix(".png") } : []
        var maskByStem: [String: String] = [:]
        for m in maskNames { maskByStem[stem(m)] = m }
        var listing = LayoutListing()
        var used = Set<String>()
        for name in try imageNames(in: imgs, splitFile: splitFile) {
            let imagePath = imgs + "/" + name
            if checkFiles, let problem = imageFileProblem(imagePath) {
                listing.broken.append(("imgs/" + name, problem))
                continue
            }
            var maskPath: String?
            if let m = maskByStem[stem(name)] {
                used.insert(m)
                if checkFiles && !isFile(masks + "/" + m) {
                    listing.broken.append(("imgs/" + name, "its mask masks/\(m) is not a regular file."))
                    continue
                }
                maskPath = masks + "/" + m
            }
            listing.entries.append(ReaderEntry(name: "imgs/" + name, imagePath: imagePath, maskPath: maskPath, label: -1))
        }
        let unpaired = maskNames.filter { !used.contains($0) }.map { ("masks/" + $0, "the mask has no image of the same stem in imgs/.") }
        return (listing, unpaired)
    }

    /// A file name without its extension.
    static func stem(_ name: String) -> String {
        guard let dot = name.lastIndex(of: ".") else { return name }
        return String(name[..<dot])
    }
}
