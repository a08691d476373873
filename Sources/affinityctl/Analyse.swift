// analyse: send slices to the daemon as file descriptors and show what it found.
import ArgumentParser
import AffinityAPI
import Bus
import Foundation
import Imaging
import SystemIO

struct Analyse: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "analyse",
        abstract: "Segments the lesions of chest-CT slices and classifies them.",
        discussion: """
            Each FILE is opened here and passed to the daemon as a file descriptor. For each slice the \
            result is the class with its probability, the number of lesions and their total area in \
            pixels and as a share of the lung field (the daemon's lung_field_area: the large dark \
            regions inside the body with what they enclose; with --json lung_field_area_px and \
            lesion_share_of_lung_field, null when the daemon does not report it or finds no lung \
            field), and the model that produced it. With several files, --overlay and --mask name directories that \
            receive <name>.overlay.png and <name>.mask.png. With --json, one JSON object per file and \
            line (JSON lines), printed as each file finishes, in the order given; a file that failed \
            gives {"file", "error", "message", "exit_code"} and the others are still analysed. The \
            exit code is the first failed file's (0 when all succeed).
            """,
        aliases: ["analyze"])

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("Chest-CT slices (PNG; other formats through the daemon's decoder plugins).", valueName: "file"))
    var files: [String]

    @Option(name: .long, help: ArgumentHelp("Write the slice with the lesions tinted and boxed (PNG).", valueName: "out.png"))
    var overlay: String?

    @Option(name: .long, help: ArgumentHelp("Write the daemon's lesion label map (8-bit PNG: 0 background, i = lesion i).",
                                            valueName: "out.png"))
    var mask: String?

    @Option(name: .long, help: ArgumentHelp("The model to use (id or object path; default: the daemon's default model).",
                                            valueName: "id"))
    var model: String?

    @Option(name: .long, help: "The seed of the RoI-batch padding (default: the daemon's, 1).")
    var seed: UInt64?

    func run() throws {
        try runCommand(global) { client in
            var options: [String: DBusValue] = [:]
            if let model { options[AnalyseOption.model.key] = .objectPath(API.modelPath(model)) }
            if let seed { options[AnalyseOption.seed.key] = .uint64(seed) }
            let several = files.count > 1
            if several {
                for dir in [overlay, mask].compactMap({ $0 }) {
                    do { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch {
                        throw CtlError(Exit.failed, "Cannot create the directory \(dir): \(error.localizedDescription)")
                    }
                }
            }
            var exitCode = Exit.ok
            for file in files {
                let stem = ((file as NSString).lastPathComponent as NSString).deletingPathExtension
                let overlayPath = overlay.map { several ? ($0 as NSString).appendingPathComponent(stem + ".overlay.png") : $0 }
                let maskPath = mask.map { several ? ($0 as NSString).appendingPathComponent(stem + ".mask.png") : $0 }
                do {
                    let r = try analyse(client, file: file, options: options, overlayPath: overlayPath, maskPath: maskPath)
                    printLine(global.json ? r.json.text : r.humanText)
                } catch {
                    let e = CtlError.wrap(error)
                    if exitCode == Exit.ok { exitCode = e.code }
                    if global.json {
                        printLine(JSON.object([("file", .string(file)), ("error", .string(e.name ?? localErrorName(e.code))),
                                               ("message", .string(e.message)), ("exit_code", .int(Int64(e.code)))]).text)
                    }
                    FileHandle.standardError.write(Data("affinityctl: \(file): \(e.message)\n".utf8))
                }
            }
            return exitCode
        }
    }

    /// Opens `file`, calls Analyse, writes the mask and overlay files asked for.
    func analyse(_ client: Client, file: String, options: [String: DBusValue], overlayPath: String?, maskPath: String?) throws -> Analysis {
        let fd = try openForReading(file)
        let reply = try client.call(API.root, API.manager, "Analyse", [.unixFD(fd), .vardict(options)], expecting: "a{sv}",
                                    timeout: .seconds(600))
        fd.close()
        var a = try Analysis(file: file, result: try reply[0].asVardict())
        if let maskPath {
            try writeFile(a.maskPNG, to: maskPath)
            a.maskPath = maskPath
        }
        if let overlayPath {
            try writeOverlay(a, to: overlayPath)
            a.overlayPath = overlayPath
        }
        return a
    }

    /// Draws the slice (decoded here) with each lesion of the label map tinted and its box drawn.
    func writeOverlay(_ a: Analysis, to path: String) throws {
        let slice: GrayImage
        do { slice = try PNG.read(path: a.file).grayImage() } catch let e as ImageError {
            throw CtlError(Exit.failed, "Cannot draw the overlay: \(a.file) cannot be read here as a PNG (\(e.description))")
        }
        let labels: PixelImage
        do { labels = try PNG.decode(a.maskPNG) } catch let e as ImageError {
            throw CtlError(Exit.failed, "The daemon's label map is not a readable PNG: \(e.description)")
        }
        guard labels.width == slice.width, labels.height == slice.height else {
            throw CtlError(Exit.failed, "The label map is \(labels.width)×\(labels.height), the slice \(slice.width)×\(slice.height).")
        }
        let n = slice.width * slice.height
        let lesions: [OverlayLesion] = a.lesions.enumerated().map { i, l in
            let label = UInt16(i + 1)
            var m = [Float](repeating: 0, count: n)
            labels.samples.withUnsafeBufferPointer { s in
                let c = labels.channels
                for p in 0..<n where s[p * c] == label { m[p] = 1 }
            }
            let b = l.box.count == 4 ? l.box.map(Float.init) : [0, 0, 0, 0]
            return OverlayLesion(mask: m, box: Box(x1: b[0], y1: b[1], x2: b[2], y2: b[3]), score: Float(l.score))
        }
        let image: PixelImage
        do { image = try Overlay.render(slice: slice, lesions: lesions) } catch {
            throw CtlError(Exit.failed, "Cannot draw the overlay: \(error)")
        }
        do { try PNG.write(image, to: path) } catch {
            throw CtlError(Exit.failed, "Cannot write \(path): \(error)")
        }
    }
}

/// Opens a file for reading to pass it as a descriptor.
/// - Throws: `CtlError` 4 when it does not exist, 77 when it may not be read, 1 otherwise.
func openForReading(_ file: String) throws -> FileDescriptor {
    let fd = Glibc.open(file, O_RDONLY | O_CLOEXEC)  // owned by the FileDescriptor below
    guard fd >= 0 else {
        let err = errno
        let why = String(cString: strerror(err))
        switch err {
        case ENOENT, ENOTDIR: throw CtlError(Exit.notFound, "\(file): no such file.")
        case EACCES, EPERM: throw CtlError(Exit.notAuthorized, "\(file): \(why).")
        default: throw CtlError(Exit.failed, "\(file): \(why).")
        }
    }
    let owned = FileDescriptor(taking: fd)
    var st = stat()
    if fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR {
        throw CtlError(Exit.failed, "\(file) is a directory, not an image file.")
    }
    return owned
}

/// Writes bytes to a file (atomically: a reader never sees half of it).
func writeFile(_ bytes: [UInt8], to path: String) throws {
    do { try AtomicFile.write(bytes, to: path) } catch {
        throw CtlError(Exit.failed, "Cannot write \(path): \(error)")
    }
}

/// One lesion of an Analyse result.
struct Lesion {
    var box: [Double]
    var score: Double
    var area: UInt64
}

/// The result of Analyse for one file, as the daemon returned it.
struct Analysis {
    var file: String
    var className: String
    var classIndex: UInt32
    var probabilities: [Double]
    var scores: [Double]
    var lesions: [Lesion]
    var maskPNG: [UInt8]
    var model: String
    var modelSHA256: String
    var imageWidth: UInt32?
    var imageHeight: UInt32?
    var lungFieldArea: UInt64?
    var timings: [String: Double]
    /// The plugins the daemon used ("id version", e.g. the decoder of a JPEG slice); empty for a PNG.
    var plugins: [String]
    var overlayPath: String?
    var maskPath: String?

    /// Reads the result dictionary (keys of data/dbus/org.lesionaffinity.Affinity1.Manager.xml).
    /// - Throws: `CtlError` (1) when a required key is missing or of another type.
    init(file: String, result r: [String: DBusValue]) throws {
        func need<T>(_ key: String, _ get: (DBusValue) throws -> T) throws -> T {
            guard let v = r[key] else { throw CtlError(Exit.failed, "The daemon's result has no '\(key)'.") }
            do { return try get(v) } catch { throw CtlError(Exit.failed, "The daemon's '\(key)' is malformed: \(error)") }
        }
        self.file = file
        className = try need("class") { try $0.asString() }
        classIndex = try need("class_index") { try $0.asUInt32() }
        probabilities = try need("probabilities") { try $0.asDoubles() }
        scores = (try? r["scores"]?.asDoubles()) ?? []
        lesions = try need("lesions") { try $0.asVardicts() }.map { l in
            Lesion(box: (try? l["box"]?.asDoubles()) ?? [], score: (try? l["score"]?.asDouble()) ?? 0,
                   area: UInt64((try? l["area"]?.asUInt32()) ?? 0))
        }
        maskPNG = try need("mask_png") { try $0.asFileDescriptor().readAll(limit: 256 << 20) }
        model = try need("model") { try $0.asObjectPath() }
        modelSHA256 = (try? r["model_sha256"]?.asString()) ?? ""
        imageWidth = try? r["image_width"]?.asUInt32()
        imageHeight = try? r["image_height"]?.asUInt32()
        // lung_field_area (u); an older daemon does not report it.
        if let v = r["lung_field_area"] {
            switch v {
            case .uint32(let x): lungFieldArea = UInt64(x)
            case .uint64(let x): lungFieldArea = x
            default: lungFieldArea = nil
            }
        }
        timings = (try? r["timings"]?.asDoubleDict()) ?? [:]
        plugins = (try? r["plugins"]?.asStrings()) ?? []
    }

    var probability: Double { Int(classIndex) < probabilities.count ? probabilities[Int(classIndex)] : .nan }
    var totalArea: UInt64 { lesions.reduce(0) { $0 + $1.area } }
    /// The lesions' share of the lung field; nil when no lung field is reported or it is empty.
    var lungShare: Double? { lungFieldArea.flatMap { $0 > 0 ? Double(totalArea) / Double($0) : nil } }
    var modelID: String { API.id(model) }

    var json: JSON {
        .object([
            ("file", .string(file)),
            ("class", .string(className)),
            ("class_index", .uint(UInt64(classIndex))),
            ("probability", .double(probability)),
            ("probabilities", .array(probabilities.map(JSON.double))),
            ("scores", .array(scores.map(JSON.double))),
            ("lesion_count", .uint(UInt64(lesions.count))),
            ("lesion_area_px", .uint(totalArea)),
            ("lung_field_area_px", lungFieldArea.map(JSON.uint) ?? .null),
            ("lesion_share_of_lung_field", lungShare.map(JSON.double) ?? .null),
            ("lesions", .array(lesions.map { l in
                .object([("box", .array(l.box.map(JSON.double))), ("score", .double(l.score)), ("area_px", .uint(l.area))])
            })),
            ("image_width", imageWidth.map { .uint(UInt64($0)) } ?? .null),
            ("image_height", imageHeight.map { .uint(UInt64($0)) } ?? .null),
            ("model", .string(modelID)),
            ("model_path", .string(model)),
            ("model_sha256", .string(modelSHA256)),
            ("timings", .object(timings.keys.sorted().map { ($0, .double(timings[$0]!)) })),
            ("plugins", .array(plugins.map(JSON.string))),
            ("overlay", overlayPath.map(JSON.string) ?? .null),
            ("mask", maskPath.map(JSON.string) ?? .null),
        ])
    }

    var humanText: String {
        var lines = ["\(file): \(className), probability \(fixed(probability, 3))"]
        var area = "\(lesions.count) lesion\(lesions.count == 1 ? "" : "s"), total area \(totalArea) px"
        if let share = lungShare { area += " (\(fixed(share * 100, 1))% of the lung field)" }
        lines.append("  " + area)
        for (i, l) in lesions.enumerated() {
            let box = l.box.map { fixed($0, 0) }.joined(separator: ",")
            lines.append("    \(i + 1): score \(fixed(l.score, 2)), \(l.area) px, box [\(box)]")
        }
        lines.append("  model \(modelID)" + (timings["total"].map { ", \(fixed($0, 2)) s" } ?? ""))
        if !plugins.isEmpty { lines.append("  plugins: " + plugins.joined(separator: ", ")) }
        if let overlayPath { lines.append("  overlay written to \(overlayPath)") }
        if let maskPath { lines.append("  label map written to \(maskPath)") }
        return lines.joined(separator: "\n")
    }
}

/// `x` with `decimals` digits after the point.
func fixed(_ x: Double, _ decimals: Int) -> String {
    guard x.isFinite else { return "-" }
    return String(format: "%.\(decimals)f", x)
}
