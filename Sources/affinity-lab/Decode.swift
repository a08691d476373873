import ArgumentParser
import Foundation
import Imaging
import PluginHost
import SystemIO

/// What `decode` asks of a source besides the file: the frame whose header is described and the
/// window the decoder is to report (and apply, in other commands).
struct DecodeRequest {
    var frame: Int = 0
    var windowCenter: Double?
    var windowWidth: Double?
    var pluginDirectories: [String] = []
}

/// One file as a source reads it: the JSON fields `decode` prints, and the Modality-LUT values.
struct DecodedFile {
    /// The keys of `Decode`'s JSON object this source knows (the command fills the rest with null).
    var fields: [String: Any]
    var width: Int
    var height: Int
    var frames: Int
    /// The values of every frame (float32, frames in order, rows top to bottom, columns left to
    /// right as stored), read when --values asks for them.
    var values: () throws -> [Float]
}

/// A reader of files for `decode`. `open` returns nil when the file is not its format, so that the
/// next source in `Decode.sources` gets it; it throws `LabError` (exit 4, a named code) when the file
/// is its format but cannot be read.
///
/// To add a format, write a source (as `NIfTIDecodeSource` does for NIfTI) and put it into `Decode.sources` before
/// `PluginDecodeSource`, which takes whatever a decoder plugin recognises and refuses the rest.
protocol DecodeSource {
    func open(path: String, bytes: [UInt8], request: DecodeRequest) throws -> DecodedFile?
}

/// `affinity-lab decode`: the decoder's view of one file.
struct Decode: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show how a file decodes: its geometry and metadata as JSON, and (--values) its Modality-LUT values.",
        discussion: """
        The file is read by the first source that recognises it: PNG with the built-in reader, \
        NIfTI volumes (.nii, .nii.gz) with nifticlib — each axial slice a frame, in display \
        orientation (the patient's right on the image's left, anterior up), the geometry that of the \
        displayed slice —, anything else (DICOM, JPEG) with the decoder plugin that probes highest \
        (from --plugin-dir or the executable's folder). --json prints one JSON object: file, width, height, frames, \
        modality, photometric, transfer_syntax, pixel_spacing ([row, column] mm), slice_thickness, \
        image_position, image_orientation (of --frame, default 0), instance_number, \
        sop_instance_uid, series_instance_uid, study_instance_uid, bits, signed, rescale_slope, \
        rescale_intercept, window ([centre, width]: the window the decoder applies, the lung \
        window unless --window-center/--window-width say otherwise), decoder ("id version"); \
        what a file does not say is null. --values OUT writes the Modality-LUT values (stored · \
        slope + intercept: Hounsfield units for CT; not windowed) of every frame as little-endian \
        float32, frames in order, rows top to bottom, columns left to right as stored (a PNG: its \
        gray samples, colour as BT.601 luma; a NIfTI volume: \
        scl_slope and scl_inter applied, each slice in display orientation). \
        Exit codes: 3 missing file, 4 a file that cannot be decoded (the code in brackets says why: \
        unsupported-format, damaged-image, image-too-large, unknown-format, bad-image), 1 other failures.
        """)

    @Argument(help: "The file: DICOM, NIfTI (.nii, .nii.gz), PNG, or any format a decoder plugin reads.")
    var file: String

    @Flag(help: "Print one JSON object (the default output is the same fields as text).")
    var json = false

    @Option(name: .customLong("values"), help: "Write the Modality-LUT values of every frame to this file (little-endian float32).")
    var valuesPath: String?

    @Option(help: "The frame whose geometry is described (0-based).")
    var frame = 0

    @Option(name: .customLong("window-center"), help: "The window centre the decoder is to apply (default: the decoder's; DICOM: -600 HU).")
    var windowCenter: Double?

    @Option(name: .customLong("window-width"), help: "The window width the decoder is to apply (default: the decoder's; DICOM: 1500 HU).")
    var windowWidth: Double?

    @OptionGroup var plugins: PluginOptions

    /// The sources, in the order they are asked.
    static let sources: [DecodeSource] = [PNGDecodeSource(), NIfTIDecodeSource(), PluginDecodeSource()]

    /// The keys of the JSON object, every one present (null when the source does not know it).
    static let keys = ["file", "width", "height", "frames", "modality", "photometric", "transfer_syntax", "pixel_spacing", "slice_thickness",
                       "image_position", "image_orientation", "instance_number", "sop_instance_uid", "series_instance_uid",
                       "study_instance_uid", "bits", "signed", "rescale_slope", "rescale_intercept", "window", "decoder"]

    func validate() throws {
        if frame < 0 { throw ValidationError("--frame must be 0 or more") }
        if let w = windowWidth, !(w > 0) { throw ValidationError("--window-width must be positive") }
    }

    func run() throws {
        try labRun {
            guard fileExists(file) else { throw LabError.missingFile(file) }
            let bytes: [UInt8]
            do { bytes = try AtomicFile.read(path: file) } catch {
                throw LabError(name: "io", message: "Cannot read \(file): \(sentence(String(describing: error)))", code: 1)
            }
            let request = DecodeRequest(frame: frame, windowCenter: windowCenter, windowWidth: windowWidth,
                                        pluginDirectories: plugins.pluginDirectories)
            var decoded: DecodedFile?
            for source in Self.sources {
                if let d = try quietStandardError({ try source.open(path: file, bytes: bytes, request: request) }) { decoded = d; break }
            }
            guard let d = decoded else {
                throw LabError(name: "unknown-format", message: "Cannot decode \(file): no reader recognises it.", code: 4)
            }
            var object: [String: Any] = [:]
            for key in Self.keys { object[key] = d.fields[key] ?? NSNull() }
            object["file"] = file
            if let out = valuesPath {
                let values = try quietStandardError(d.values)
                guard values.count == d.width * d.height * d.frames else {
                    throw LabError.failed("the decoder returned \(values.count) values for \(d.frames) frame(s) of \(d.width)×\(d.height)")
                }
                do {
                    let littleEndian = values.map { $0.bitPattern.littleEndian }
                    try littleEndian.withUnsafeBytes { try AtomicFile.write(buffer: $0, to: out) }
                } catch {
                    throw LabError(name: "io", message: "Cannot write \(out): \(sentence(String(describing: error)))", code: 1)
                }
            }
            if json {
                print(jsonText(object))
            } else {
                for key in Self.keys { print("\(key): \(Self.text(object[key]))") }
            }
        }
    }

    /// A JSON value as a line of text.
    static func text(_ value: Any?) -> String {
        switch value {
        case nil, is NSNull: return "-"
        case let s as String: return s
        case let a as [Any]: return a.map { text($0) }.joined(separator: ", ")
        default: return jsonText([value!]).dropFirst().dropLast().description
        }
    }
}

/// Runs `body` with the process's standard error pointed at /dev/null. The decoders' libraries
/// (libjpeg and OpenJPEG inside GDCM) print their own warnings about damaged data there, which would
/// break this command's promise of exactly one error line; the decoder's sentence says what matters.
func quietStandardError<T>(_ body: () throws -> T) rethrows -> T {
    fflush(stderr)
    let saved = dup(2)
    guard saved >= 0 else { return try body() }
    Descriptors.adopt(saved)
    let null = Descriptors.open("/dev/null", O_WRONLY)
    if null >= 0 {
        _ = dup2(null, 2)
        Descriptors.close(null)
    }
    defer {
        fflush(stderr)
        _ = dup2(saved, 2)
        Descriptors.close(saved)
    }
    return try body()
}

/// PNG through the built-in reader: one frame, the gray samples as values (colour: BT.601 luma).
struct PNGDecodeSource: DecodeSource {
    func open(path: String, bytes: [UInt8], request: DecodeRequest) throws -> DecodedFile? {
        guard bytes.count >= 8, Array(bytes[0..<8]) == PNG.signature else { return nil }
        let png: PixelImage
        do { png = try PNG.decode(bytes) } catch let e as ImageError {
            throw LabError(name: "damaged-image", message: "Cannot decode \(path) (PNG): \(sentence(e.description))", code: 4)
        }
        if request.frame != 0 {
            throw LabError(name: "bad-image", message: "Cannot decode \(path): a PNG has one frame; frame \(request.frame) does not exist.", code: 4)
        }
        let colour = png.format == .rgb || png.format == .rgba
        let fields: [String: Any] = [
            "width": png.width, "height": png.height, "frames": 1, "photometric": colour ? "RGB" : "MONOCHROME2",
            "bits": png.bitDepth, "signed": false, "rescale_slope": 1.0, "rescale_intercept": 0.0, "decoder": "png (built in)",
        ]
        return DecodedFile(fields: fields, width: png.width, height: png.height, frames: 1) {
            let gray = png.grayImage()
            let scale = Float(png.maxValue)
            return gray.pixels.map { $0 * scale }
        }
    }
}

/// Everything else: the decoder plugin that probes highest.
struct PluginDecodeSource: DecodeSource {
    func open(path: String, bytes: [UInt8], request: DecodeRequest) throws -> DecodedFile? {
        let registry = try labPluginRegistry(request.pluginDirectories)
        guard let decoder = registry.decoder(for: bytes) else {
            throw LabError(name: "unknown-format",
                           message: "Cannot decode \(path): it is not a PNG, and no loaded decoder plugin recognises it (it starts with "
                               + "\(PluginRegistry.firstBytes(bytes))).", code: 4)
        }
        var options: [String: Any] = [:]
        if request.frame != 0 { options["frame"] = request.frame }
        if let c = request.windowCenter { options["window_center"] = c }
        if let w = request.windowWidth { options["window_width"] = w }
        let infoOptions = jsonText(options)
        options["frame"] = nil
        let valueOptions = jsonText(options)
        let g: ImageGeometry
        do { g = try decoder.geometry(bytes, options: infoOptions) } catch let e as PluginError { throw Self.labError(e, path) }
        var fields: [String: Any] = [
            "width": g.width, "height": g.height, "frames": g.frames, "bits": g.bits, "decoder": decoder.plugin.record,
        ]
        if g.pixelSpacingX > 0 || g.pixelSpacingY > 0 { fields["pixel_spacing"] = [g.pixelSpacingY, g.pixelSpacingX] }
        if let m = g.metadata {
            func text(_ s: String) -> Any { s.isEmpty ? NSNull() : s }
            fields["modality"] = text(m.modality)
            fields["photometric"] = text(m.photometric)
            fields["transfer_syntax"] = text(m.transferSyntax)
            fields["pixel_spacing"] = m.pixelSpacing.map { [$0.row, $0.column] as Any } ?? NSNull()
            fields["slice_thickness"] = jsonNumber(m.sliceThickness)
            fields["image_position"] = m.imagePosition.map { $0.map { jsonNumber($0) } as Any } ?? NSNull()
            fields["image_orientation"] = m.imageOrientation.map { $0.map { jsonNumber($0) } as Any } ?? NSNull()
            fields["instance_number"] = m.instanceNumber.map { $0 as Any } ?? NSNull()
            fields["sop_instance_uid"] = text(m.sopInstanceUID)
            fields["series_instance_uid"] = text(m.seriesInstanceUID)
            fields["study_instance_uid"] = text(m.studyInstanceUID)
            fields["signed"] = m.isSigned
            fields["rescale_slope"] = jsonNumber(m.rescaleSlope)
            fields["rescale_intercept"] = jsonNumber(m.rescaleIntercept)
            fields["window"] = m.window.map { [jsonNumber($0.center), jsonNumber($0.width)] as Any } ?? NSNull()
        }
        return DecodedFile(fields: fields, width: g.width, height: g.height, frames: g.frames) {
            do {
                guard decoder.hasValues else {
                    throw LabError(name: "unsupported-format",
                                   message: "Cannot write the values of \(path): the decoder \(decoder.plugin.record) predates plugin ABI 1.1 and has no Modality-LUT values.",
                                   code: 4)
                }
                // All frames in one call when they fit the host's limit, else frame by frame.
                let framePixels = g.width * g.height
                let step = max(1, min(g.frames, maxDecodedValues / framePixels))
                var all: [Float] = []
                all.reserveCapacity(framePixels * g.frames)
                var first = 0
                while first < g.frames {
                    let range = first..<min(g.frames, first + step)
                    all += try decoder.values(bytes, frames: range, options: valueOptions).values
                    first = range.upperBound
                }
                return all
            } catch let e as PluginError {
                throw Self.labError(e, path)
            }
        }
    }

    /// A decoder's failure as the lab's error: exit 4, the code naming the kind of failure.
    static func labError(_ e: PluginError, _ path: String) -> LabError {
        guard case .callFailed(let plugin, _, let code, let message) = e else {
            return LabError(name: "bad-image", message: "Cannot decode \(path): \(sentence(e.description))", code: 4)
        }
        let name: String
        switch statusName(code) {
        case "unsupported": name = "unsupported-format"
        case "corrupt data": name = "damaged-image"
        case "too large": name = "image-too-large"
        default: name = "bad-image"
        }
        let reason = message.isEmpty ? "it gave no reason" : message
        return LabError(name: name, message: "Cannot decode \(path) (\(plugin)): \(sentence(reason))", code: 4)
    }
}
