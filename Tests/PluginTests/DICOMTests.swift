// The dicom decoder plugin (GDCM) against files made by dcmtk and gdcmconv at test time, with the
// values checked against what was put in (the stored values of a raw file) or against dcmtk's own
// decompression (dcmdjpeg, dcmdjpls + dcmdump +W) for the lossy syntaxes.
//
// Tolerances: lossless syntaxes exact; JPEG baseline/extended (dcmcjpeg q85) within 1 stored unit of
// dcmdjpeg's result (both IJG; in practice identical); JPEG-LS near-lossless (NEAR 3) identical to
// dcmdjpls and within 3 of the original; JPEG 2000 lossy (gdcmconv -q 80; no independent decoder
// here) within 2 % of the stored range per pixel and 0.25 % on average of the original. The expected
// Modality-LUT values use the slope and intercept dcmdump reads from each file.

import Foundation
import Glibc
import PluginHost
import Testing

private let dicomRecord = "dicom 2.0.0"

private func dicomDecoder() throws -> ImageDecoderPlugin { try sharedRegistry.decoder(id: "dicom") }

/// The window the decoder applies: clamp((v − (c − w/2)) / w, 0, 1), inverted for MONOCHROME1.
private func windowed(_ values: [Float], centre: Double = -600, width: Double = 1500, inverted: Bool) -> [Float] {
    values.map { v in
        let t = min(1, max(0, (Double(v) - (centre - width / 2)) / width))
        return Float(inverted ? 1 - t : t)
    }
}

/// The largest absolute difference, and its index.
private func maxDifference(_ a: [Float], _ b: [Float]) -> (Float, Int) {
    var worst: Float = 0, at = -1
    for i in 0..<min(a.count, b.count) where abs(a[i] - b[i]) > worst || a[i].isNaN { worst = abs(a[i] - b[i]); at = i }
    return (worst, at)
}

/// The decoder's failure: (code, message), or a recorded issue when it decoded or failed otherwise.
private func failure(_ body: () throws -> Any, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) -> (Int32, String)? {
    do {
        _ = try body()
        Issue.record("\(what): decoded instead of failing", sourceLocation: sourceLocation)
    } catch let e as PluginError {
        guard case .callFailed(let plugin, _, let code, let message) = e else {
            Issue.record("\(what): \(e)", sourceLocation: sourceLocation)
            return nil
        }
        #expect(plugin == dicomRecord, sourceLocation: sourceLocation)
        #expect(!message.isEmpty && e.description.hasSuffix("."), "\(what): \(message)", sourceLocation: sourceLocation)
        return (code, message)
    } catch {
        Issue.record("\(what): \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

@Suite("DICOM decoder (GDCM)")
struct DICOMDecoderTests {
    /// Writes `image`, converts it with each encoding, and checks header, values of all frames and of
    /// one frame, and the windowed decode of the first and last frame.
    private func check(_ image: TestImage, name: String, _ encodings: [DICOMEncoding]) throws {
        let dicom = try dicomDecoder()
        let dir = try temporaryDirectory("dicom-\(name)")
        defer { removeTree(dir) }
        let base = try image.write(in: dir, name: name)
        // The fixture itself, as dcmtk reads it back.
        #expect(try dcmtkStoredValues(base, decompressor: nil, image: image, directory: dir) == image.stored, "\(name): dump2dcm wrote other values")
        let original = image.expectedValues()
        for encoding in encodings {
            let what = "\(name) as \(encoding)"
            let file = try encoding.encode(base)
            #expect(try transferSyntaxOf(file) == encoding.uid, "\(what)")
            let bytes = try readFile(file)
            #expect(dicom.probe(bytes) == 100)
            // Header.
            let g = try dicom.geometry(bytes)
            #expect(g.width == image.columns && g.height == image.rows && g.frames == image.frames && g.channels == 1, "\(what): \(g)")
            #expect(g.bits == image.bitsStored, "\(what): \(g.bits) bits")
            let m = try #require(g.metadata, "\(what): no metadata")
            #expect(m.isSigned == image.signed && m.photometric == image.photometric && m.modality == image.modality, "\(what): \(m)")
            #expect(m.transferSyntax == encoding.uid && m.seriesInstanceUID == image.series && m.studyInstanceUID == image.study, "\(what): \(m)")
            #expect(m.pixelSpacing?.row == 0.75 && m.pixelSpacing?.column == 0.5 && g.pixelSpacingY == 0.75 && g.pixelSpacingX == 0.5, "\(what)")
            #expect(m.sliceThickness == 1.25 && m.imagePosition == [-100.5, -120.25, 30] && m.imageOrientation == [1, 0, 0, 0, 1, 0], "\(what)")
            #expect(m.instanceNumber == 7 && !m.sopInstanceUID.isEmpty, "\(what)")
            // The Modality LUT as dcmtk reads it from this file (dcmcjpeg's lossy modes rescale the data
            // into the codec's range and write a new slope and intercept).
            let (slope, intercept) = try rescaleOf(file)
            #expect(m.rescaleSlope == slope ?? 1 && m.rescaleIntercept == intercept ?? 0, "\(what): \(m.rescaleSlope) \(m.rescaleIntercept)")
            #expect(m.hasRescale == (image.slope != nil) && m.window?.center == -600 && m.window?.width == 1500, "\(what)")
            // Values: against the stored values put in, or dcmtk's decompression for lossy syntaxes.
            let decoded = try dicom.values(bytes, frames: 0..<image.frames)
            #expect(decoded.values.count == original.count && decoded.decoder == dicomRecord)
            let fileSlope = Float(slope ?? 1)
            if let decompressor = encoding.decompressor {
                let stored = try dcmtkStoredValues(file, decompressor: decompressor, image: image, directory: dir)
                let reference = stored.map { Float(Double($0) * (slope ?? 1) + (intercept ?? 0)) }
                let (d, at) = maxDifference(decoded.values, reference)
                #expect(d <= Float(encoding.tolerance) * fileSlope, "\(what): \(d) from \(decompressor) at \(at)")
                if encoding.name == "jpeg-ls-near" {
                    #expect(maxDifference(decoded.values, original).0 <= 3 * fileSlope, "\(what): beyond NEAR of the original")
                }
            } else if encoding.lossy {
                let span = Float(image.range.upperBound - image.range.lowerBound) * fileSlope
                let diffs = zip(decoded.values, original).map { abs($0 - $1) }
                #expect(diffs.max()! <= 0.02 * span && diffs.reduce(0, +) / Float(diffs.count) <= 0.0025 * span,
                        "\(what): max \(diffs.max()!), mean \(diffs.reduce(0, +) / Float(diffs.count)) of \(span)")
            } else {
                let (d, at) = maxDifference(decoded.values, original)
                #expect(d == 0, "\(what): \(d) at \(at): \(at >= 0 ? "\(decoded.values[at]) vs \(original[at])" : "")")
            }
            // One frame alone, and the windowed decode of the first and the last frame.
            let n = image.pixelsPerFrame, last = image.frames - 1
            let lastFrame = try dicom.values(bytes, frame: last)
            #expect(lastFrame.values == Array(decoded.values[(last * n)...]) && lastFrame.frames == last..<image.frames, "\(what): frame \(last)")
            let inverted = image.photometric == "MONOCHROME1"
            let first = try dicom.decode(bytes)
            #expect(maxDifference(first.image.pixels, windowed(Array(decoded.values[0..<n]), inverted: inverted)).0 < 1e-5, "\(what): window")
            let soft = try dicom.decode(bytes, options: #"{"frame": \#(last), "window_center": 40, "window_width": 400}"#)
            #expect(maxDifference(soft.image.pixels, windowed(lastFrame.values, centre: 40, width: 400, inverted: inverted)).0 < 1e-5,
                    "\(what): frame \(last), soft-tissue window")
            #expect(soft.geometry.metadata?.window?.center == 40 && soft.geometry.metadata?.window?.width == 400)
        }
    }

    @Test func signed16BitCTMultiFrameInEveryLosslessSyntax() throws {
        var image = TestImage()
        image.fill()
        try check(image, name: "ct16s", [.explicitLE, .implicitLE, .bigEndian, .deflated, .jpegLossless, .jpegLosslessSV1,
                                         .jpegLosslessFragments, .jpegLSLossless, .gdcmJPEGLS, .rle, .gdcmRLE, .j2kLossless])
        // (dcmcjpls writes near-lossless JPEG-LS for unsigned images only: see the unsigned cases.)
    }

    @Test func unsigned12BitMonochrome1WithSlope() throws {
        var image = TestImage()
        image.frames = 2
        image.bitsStored = 12
        image.signed = false
        image.photometric = "MONOCHROME1"
        image.slope = "2.5"
        image.intercept = "-100"
        image.fill()
        try check(image, name: "mono1-12u", [.explicitLE, .bigEndian, .jpegExtended, .jpegLossless, .jpegLSLossless, .jpegLSNear, .rle,
                                             .j2kLossless])
    }

    @Test func unsigned8BitWithoutRescale() throws {
        var image = TestImage()
        image.frames = 1
        image.bitsAllocated = 8
        image.bitsStored = 8
        image.signed = false
        image.modality = "OT"
        image.sopClass = "=SecondaryCaptureImageStorage"
        image.slope = nil
        image.intercept = nil
        image.fill(extremes: false)
        try check(image, name: "ot8u", [.explicitLE, .implicitLE, .deflated, .jpegBaseline, .jpegExtended, .jpegLosslessSV1, .jpegLSLossless,
                                        .rle, .j2kLossless])
    }

    @Test func signed8BitAndUnsigned16Bit() throws {
        var s8 = TestImage()
        s8.frames = 2
        s8.bitsAllocated = 8
        s8.bitsStored = 8
        s8.fill()
        try check(s8, name: "ct8s", [.explicitLE, .bigEndian, .rle])
        var u16 = TestImage()
        u16.frames = 2
        u16.signed = false
        u16.modality = "MR"
        u16.sopClass = "=MRImageStorage"
        u16.slope = "1"
        u16.intercept = "0"
        u16.fill()
        try check(u16, name: "mr16u", [.explicitLE, .bigEndian, .jpegLossless, .jpegLSLossless, .rle, .j2kLossless])
    }

    @Test func lossyJPEG2000WithinTolerance() throws {
        var image = TestImage()
        image.frames = 2
        image.bitsStored = 12
        image.signed = false
        image.fill(extremes: false)
        try check(image, name: "j2k-lossy", [.j2kLossy])
    }

    /// An enhanced CT (functional groups): spacing and orientation shared, position and rescale per
    /// frame; in four transfer syntaxes, with sequences of defined and undefined length.
    @Test func enhancedCTFunctionalGroupsPerFrame() throws {
        let dicom = try dicomDecoder()
        let dir = try temporaryDirectory("dicom-enhanced")
        defer { removeTree(dir) }
        let rows = 5, columns = 6
        let stored = (0..<(2 * rows * columns)).map { ($0 * 13) % 2000 - 500 }
        var raw: [UInt8] = []
        for v in stored { let u = UInt16(bitPattern: Int16(v)); raw += [UInt8(u & 0xFF), UInt8(u >> 8)] }
        try writeFile(dir + "/enh.raw", raw)
        func sequence(_ tag: String, _ items: [[String]]) -> [String] {
            ["\(tag) SQ (Sequence with undefined length)"] + items.flatMap { ["(fffe,e000) na (Item with undefined length)"] + $0 + ["(fffe,e00d) na (ItemDelimitationItem)"] }
                + ["(fffe,e0dd) na (SequenceDelimitationItem)"]
        }
        func frame(_ z: String, _ intercept: String, _ slope: String) -> [String] {
            sequence("(0020,9113)", [["(0020,0032) DS [-10\\-20\\\(z)]"]]) + sequence("(0028,9145)", [["(0028,1052) DS [\(intercept)]", "(0028,1053) DS [\(slope)]"]])
        }
        let lines = ["(0002,0010) UI =LittleEndianExplicit", "(0008,0016) UI =EnhancedCTImageStorage", "(0008,0018) UI [1.2.826.0.1.3680043.2.1125.6.1]",
                     "(0008,0060) CS [CT]", "(0020,000d) UI [1.2.826.0.1.3680043.2.1125.6.2]", "(0020,000e) UI [1.2.826.0.1.3680043.2.1125.6.3]",
                     "(0020,0013) IS [1]", "(0028,0002) US 1", "(0028,0004) CS [MONOCHROME2]", "(0028,0008) IS [2]", "(0028,0010) US \(rows)",
                     "(0028,0011) US \(columns)", "(0028,0100) US 16", "(0028,0101) US 16", "(0028,0102) US 15", "(0028,0103) US 1"]
            + sequence("(5200,9229)", [sequence("(0020,9116)", [["(0020,0037) DS [1\\0\\0\\0\\0.6\\-0.8]"]])
                + sequence("(0028,9110)", [["(0018,0050) DS [3]", "(0028,0030) DS [0.8\\0.9]"]])])
            + sequence("(5200,9230)", [frame("-30", "-1024", "1"), frame("-27", "-1000", "2")])
            + ["(7fe0,0010) OW =\(dir)/enh.raw"]
        try (lines.joined(separator: "\n") + "\n").write(toFile: dir + "/enh.dump", atomically: true, encoding: .utf8)
        try DICOMTools.run("dump2dcm", ["-e", dir + "/enh.dump", dir + "/enh.dcm"])       // undefined lengths
        try DICOMTools.run("dcmconv", ["+ti", "+e", dir + "/enh.dcm", dir + "/enh-implicit.dcm"])   // defined lengths, implicit VR
        try DICOMTools.run("dcmconv", ["+tb", dir + "/enh.dcm", dir + "/enh-big.dcm"])
        try DICOMTools.run("dcmconv", ["+td", dir + "/enh-implicit.dcm", dir + "/enh-deflated.dcm"])
        for name in ["enh", "enh-implicit", "enh-big", "enh-deflated"] {
            let bytes = try readFile(dir + "/\(name).dcm")
            for (k, z, intercept, slope) in [(0, -30.0, -1024.0, 1.0), (1, -27.0, -1000.0, 2.0)] {
                let g = try dicom.geometry(bytes, options: #"{"frame": \#(k)}"#)
                let m = try #require(g.metadata)
                #expect(g.frames == 2 && m.imagePosition == [-10, -20, z] && m.imageOrientation == [1, 0, 0, 0, 0.6, -0.8], "\(name) frame \(k): \(m)")
                #expect(m.pixelSpacing?.row == 0.8 && m.pixelSpacing?.column == 0.9 && m.sliceThickness == 3, "\(name) frame \(k): \(m)")
                #expect(m.rescaleIntercept == intercept && m.rescaleSlope == slope && m.hasRescale, "\(name) frame \(k): \(m)")
                let values = try dicom.values(bytes, frame: k).values
                let expected = stored[(k * rows * columns)..<((k + 1) * rows * columns)].map { Float(Double($0) * slope + intercept) }
                #expect(values == expected, "\(name) frame \(k)")
            }
            // All frames in one call: each with its own rescale.
            let all = try dicom.values(bytes, frames: 0..<2).values
            #expect(all == (0..<stored.count).map { i in Float(i < rows * columns ? Double(stored[i]) - 1024 : Double(stored[i]) * 2 - 1000) }, "\(name)")
        }
    }

    @Test func framesOptionsAndRanges() throws {
        let dicom = try dicomDecoder()
        let dir = try temporaryDirectory("dicom-options")
        defer { removeTree(dir) }
        var image = TestImage()
        image.fill()
        let bytes = try readFile(try image.write(in: dir, name: "ct"))
        #expect(dicom.hasValues)
        #expect(try dicom.geometry(bytes, options: #"{"frame": 2}"#).frames == 3)
        // Frames outside the file, options it does not know, a window that is not one.
        for (options, what) in [(#"{"frame": 3}"#, "frame 3"), (#"{"frame": -1}"#, "frame -1"), (#"{"frame": 1.5}"#, "frame 1.5"),
                                (#"{"window_width": 0}"#, "zero width"), (#"{"windowwidth": 300}"#, "unknown key"),
                                (#"{"window_center": "x"}"#, "a string"), ("{", "bad JSON"), (#"{"frame": 0} x"#, "trailing text")] {
            let f = failure({ try dicom.decode(bytes, options: options) }, what)
            #expect(f?.0 == -2, "\(what): \(String(describing: f))")
        }
        #expect(failure({ try dicom.values(bytes, frames: 2..<4) }, "frames 2..<4")?.0 == -2)
        #expect(failure({ try dicom.values(bytes, frame: 0, options: #"{"frame": 1}"#) }, "a frame option to values")?.0 == -2)
        // The JPEG decoder predates values: the host says so instead of calling it.
        let jpeg = try sharedRegistry.decoder(id: "jpeg")
        #expect(!jpeg.hasValues)
        #expect(throws: PluginError.self) { try jpeg.values(try encodeJPEG([1, 2, 3, 4], width: 2, height: 2), frame: 0) }
    }

    /// A dump2dcm object: meta + data set lines, with pixel data from `pixels` (VR `vr`) when given.
    private func object(_ lines: [String], pixels: [UInt8]? = nil, vr: String = "OB", in dir: String, name: String) throws -> [UInt8] {
        var all = ["(0002,0010) UI =LittleEndianExplicit"] + lines
        if let pixels {
            try writeFile(dir + "/\(name).raw", pixels)
            all.append("(7fe0,0010) \(vr) =\(dir)/\(name).raw")
        }
        try (all.joined(separator: "\n") + "\n").write(toFile: dir + "/\(name).dump", atomically: true, encoding: .utf8)
        try DICOMTools.run("dump2dcm", [dir + "/\(name).dump", dir + "/\(name).dcm"])
        return try readFile(dir + "/\(name).dcm")
    }

    @Test func colourImagesAndNonImageObjectsAreNamedUnsupported() throws {
        let dicom = try dicomDecoder()
        let dir = try temporaryDirectory("dicom-unsupported")
        defer { removeTree(dir) }
        func image(_ sop: String, _ modality: String, samples: Int, photometric: String, bits: Int, rows: Int = 8, columns: Int = 8,
                   extra: [String] = []) -> [String] {
            ["(0008,0016) UI \(sop)", "(0008,0018) UI [1.2.826.0.1.3680043.2.1125.8.\(bits)]", "(0008,0060) CS [\(modality)]",
             "(0028,0002) US \(samples)", "(0028,0004) CS [\(photometric)]"] + (samples > 1 ? ["(0028,0006) US 0"] : [])
                + ["(0028,0010) US \(rows)", "(0028,0011) US \(columns)", "(0028,0100) US \(bits)", "(0028,0101) US \(bits)",
                   "(0028,0102) US \(bits - 1)", "(0028,0103) US 0"] + extra
        }
        let rgb = try object(image("=SecondaryCaptureImageStorage", "OT", samples: 3, photometric: "RGB", bits: 8),
                             pixels: (0..<192).map { UInt8($0) }, in: dir, name: "rgb")
        try DICOMTools.run("dcmcjpeg", ["+eb", dir + "/rgb.dcm", dir + "/ybr.dcm"])   // lossy colour JPEG: YBR_FULL_422
        let ybr = try readFile(dir + "/ybr.dcm")
        let palette = try object(image("=SecondaryCaptureImageStorage", "OT", samples: 1, photometric: "PALETTE COLOR", bits: 8,
                                       extra: ["(0028,1101) US 256\\0\\16", "(0028,1102) US 256\\0\\16", "(0028,1103) US 256\\0\\16"]),
                                 pixels: [UInt8](repeating: 3, count: 64), in: dir, name: "palette")
        let sr = try object(["(0008,0016) UI =ComprehensiveSRStorage", "(0008,0018) UI [1.2.826.0.1.3680043.2.1125.8.1]", "(0008,0060) CS [SR]",
                             "(0040,a040) CS [CONTAINER]", "(0040,a050) CS [SEPARATE]"], in: dir, name: "sr")
        let plan = try object(["(0008,0016) UI =RTPlanStorage", "(0008,0018) UI [1.2.826.0.1.3680043.2.1125.8.2]", "(0008,0060) CS [RTPLAN]",
                               "(300a,0002) SH [PLAN1]", "(300a,000c) CS [PATIENT]"], in: dir, name: "plan")
        let ecg = try object(["(0008,0016) UI =TwelveLeadECGWaveformStorage", "(0008,0018) UI [1.2.826.0.1.3680043.2.1125.8.3]",
                              "(0008,0060) CS [ECG]"], in: dir, name: "ecg")
        let seg = try object(image("=SegmentationStorage", "SEG", samples: 1, photometric: "MONOCHROME2", bits: 1, extra: ["(0028,0008) IS [1]"]),
                             pixels: [UInt8](repeating: 0x0F, count: 8), in: dir, name: "seg")
        let dose = try object(image("=RTDoseStorage", "RTDOSE", samples: 1, photometric: "MONOCHROME2", bits: 32, rows: 4, columns: 4),
                              pixels: [UInt8](repeating: 1, count: 64), vr: "OW", in: dir, name: "dose")
        let cases: [(String, [UInt8], [String])] = [
            ("RGB", rgb, ["colour image", "RGB", "3 samples"]),
            ("YBR", ybr, ["colour image", "YBR_FULL_422"]),
            ("palette", palette, ["palette-colour image", "PALETTE COLOR"]),
            ("SR", sr, ["Comprehensive SR", "modality SR", "not an image"]),
            ("RT plan", plan, ["RT Plan", "modality RTPLAN", "not an image"]),
            ("ECG", ecg, ["ECG", "not an image"]),
            ("SEG", seg, ["Segmentation", "1-bit"]),
            ("RT dose", dose, ["RT Dose", "32-bit"]),
        ]
        for (what, bytes, words) in cases {
            #expect(dicom.probe(bytes) == 100)
            for call in ["info", "decode", "values"] {
                let f = failure({
                    switch call {
                    case "info": return try dicom.geometry(bytes)
                    case "decode": return try dicom.decode(bytes)
                    default: return try dicom.values(bytes, frame: 0)
                    }
                }, "\(what) \(call)")
                #expect(f?.0 == -3, "\(what) \(call): \(String(describing: f))")
                for w in words { #expect(f?.1.contains(w) == true, "\(what) \(call): \(f?.1 ?? "") lacks \"\(w)\"") }
            }
        }
    }

    @Test func truncatedAndDamagedFilesAreNamedErrors() throws {
        let dicom = try dicomDecoder()
        let dir = try temporaryDirectory("dicom-damaged")
        defer { removeTree(dir) }
        var image = TestImage()
        image.frames = 2
        image.fill()
        let base = try image.write(in: dir, name: "ct")
        var files: [String: [UInt8]] = ["explicit": try readFile(base)]
        for e in [DICOMEncoding.deflated, .bigEndian, .jpegLosslessSV1, .jpegLSLossless, .rle, .j2kLossless] { files[e.name] = try readFile(try e.encode(base)) }
        // Cut anywhere: always a named error (corrupt data), never a crash or an image.
        for (name, bytes) in files.sorted(by: { $0.key < $1.key }) {
            let cuts = Set(stride(from: 0, to: bytes.count, by: max(1, bytes.count / 60)).map { $0 } + [131, 132, 140, bytes.count - 1, bytes.count - 2])
            for cut in cuts.sorted() where cut < bytes.count {
                let f = failure({ try dicom.values(Array(bytes.prefix(cut)), frame: 0) }, "\(name) cut at \(cut)")
                #expect(f?.0 == -4, "\(name) cut at \(cut): \(String(describing: f))")
            }
        }
        // Damaged codestreams inside a valid file: named errors.
        func damaged(_ name: String, _ edit: (inout [UInt8], Int, Int) -> Void, expect words: [String]) {
            var bytes = files[name]!
            guard let (offset, length) = firstFragment(bytes) else { Issue.record("\(name): no fragment found"); return }
            edit(&bytes, offset, length)
            let f = failure({ try dicom.values(bytes, frame: 0) }, "damaged \(name)")
            #expect(f?.0 == -4, "damaged \(name): \(String(describing: f))")
            for w in words { #expect(f?.1.contains(w) == true, "damaged \(name): \(f?.1 ?? "") lacks \"\(w)\"") }
        }
        func find(_ bytes: [UInt8], _ pattern: [UInt8], from: Int) -> Int? {
            (from...(bytes.count - pattern.count)).first { Array(bytes[$0..<($0 + pattern.count)]) == pattern }
        }
        // JPEG: the frame header's height, a marker in the middle of the scan, the end-of-image marker gone.
        damaged("jpeg-lossless-sv1", { b, o, _ in if let sof = find(b, [0xFF, 0xC3], from: o) { b[sof + 5] ^= 0x01 } },
                expect: ["JPEG data of frame 1 is damaged", "DICOM header says"])
        damaged("jpeg-lossless-sv1", { b, o, n in b[o + n / 2] = 0xFF; b[o + n / 2 + 1] = 0x01 }, expect: ["JPEG data of frame 1 is damaged"])
        damaged("jpeg-lossless-sv1", { b, o, n in
            for i in stride(from: o + n - 1, to: o + n - 6, by: -1) where b[i] == 0xD9 && b[i - 1] == 0xFF { b[i] = 0; b[i - 1] = 0; break }
        }, expect: ["ends early"])
        // JPEG-LS: the frame header's width.
        damaged("jpeg-ls", { b, o, _ in if let sof = find(b, [0xFF, 0xF7], from: o) { b[sof + 8] ^= 0x04 } }, expect: ["JPEG-LS data of frame 1", "DICOM header says"])
        // JPEG 2000: the image width in SIZ (GDCM would overrun its buffer), and a cut tile-part.
        damaged("j2k", { b, o, _ in b[o + 11] ^= 0x10 }, expect: ["JPEG 2000 data of frame 1", "DICOM header says"])
        damaged("j2k", { b, o, n in for i in (o + n / 2)..<(o + n) { b[i] = 0 } }, expect: ["JPEG 2000 data of frame 1"])
        // RLE: a header announcing 3 segments for a 16-bit image.
        damaged("rle", { b, o, _ in b[o] = 3 }, expect: ["RLE header of frame 1", "3 segments"])
        // Flipped bytes anywhere in a JPEG-LS, a JPEG and a JPEG 2000 file: an image or a named error, never a crash.
        for name in ["jpeg-lossless-sv1", "jpeg-ls", "j2k", "deflated"] {
            let good = files[name]!
            for i in stride(from: 128, to: good.count, by: 5) {
                var bytes = good
                bytes[i] ^= 0xFF
                do { _ = try dicom.values(bytes, frames: 0..<2) } catch let e as PluginError {
                    guard case .callFailed(_, _, let code, let message) = e else { Issue.record("\(name) flip \(i): \(e)"); continue }
                    #expect([-2, -3, -4].contains(code) && message.hasSuffix("."), "\(name) flip \(i): \(code) \(message)")
                }
            }
        }
        // A VR the dictionary does not allow ((0028,0010) Rows as "IS"), and a file that is not DICOM at all.
        var badVR = files["explicit"]!
        if let at = find(badVR, [0x28, 0x00, 0x10, 0x00, 0x55, 0x53], from: 132) { badVR[at + 4] = 0x49; badVR[at + 5] = 0x53 }
        #expect(failure({ try dicom.geometry(badVR) }, "bad VR")?.1.contains("data dictionary") == true)
        #expect(dicom.probe(Array("not a DICOM file".utf8)) == 0)
        #expect(failure({ try dicom.decode([UInt8](repeating: 0, count: 200)) }, "no DICM")?.0 == -4)
    }

    /// A decoder written for ABI 1.0 — its function table and info struct end where 1.0's did —
    /// still loads and decodes with this host; the host reads nothing past what it wrote and says
    /// that it has no values.
    @Test func decoderOfABI10KeepsWorking() throws {
        let source = """
        #include <string.h>
        #include "affinity_plugin.h"
        /* The image-decoder structs as ABI 1.0 released them (the fields up to pixel_spacing_y and decode). */
        typedef struct { uint32_t struct_size, width, height, channels, bits, reserved; double pixel_spacing_x, pixel_spacing_y; } info_1_0;
        typedef struct {
            uint32_t struct_size, reserved;
            int32_t (*probe)(const uint8_t *, size_t);
            int32_t (*info)(const uint8_t *, size_t, const char *, affinity_image_info *, affinity_error *);
            int32_t (*decode)(const uint8_t *, size_t, const char *, float *, size_t, affinity_image_info *, affinity_error *);
        } decoder_1_0;
        static int32_t probe_(const uint8_t *b, size_t n) { return n >= 4 && memcmp(b, "OLD!", 4) == 0 ? 60 : 0; }
        static int32_t info_(const uint8_t *b, size_t n, const char *o, affinity_image_info *out, affinity_error *e) {
            (void)b; (void)n; (void)o; (void)e;
            info_1_0 v = { sizeof(info_1_0), 3, 2, 1, 8, 0, 0.5, 0.25 };
            size_t k = out->struct_size && out->struct_size < sizeof v ? out->struct_size : sizeof v;
            memcpy(out, &v, k);
            out->struct_size = (uint32_t)k;
            return AFFINITY_OK;
        }
        static int32_t decode_(const uint8_t *b, size_t n, const char *o, float *p, size_t c, affinity_image_info *i, affinity_error *e) {
            if (c < 6) return AFFINITY_E_TOO_LARGE;
            for (int k = 0; k < 6; k++) p[k] = k / 5.0f;
            return info_(b, n, o, i, e);
        }
        static const decoder_1_0 table = { sizeof(decoder_1_0), 0, probe_, info_, decode_ };
        static const affinity_plugin plugin = { AFFINITY_PLUGIN_ABI_VERSION, sizeof(affinity_plugin), "old-decoder", "1.0", "an ABI 1.0 decoder",
            AFFINITY_KIND_IMAGE_DECODER, 0, (const affinity_image_decoder *)&table, 0, 0 };
        __attribute__((visibility("default"))) const affinity_plugin *affinity_plugin_entry(uint32_t v) { (void)v; return &plugin; }
        """
        let dir = try temporaryDirectory("abi10")
        defer { removeTree(dir) }
        let r = PluginRegistry(mode: .development)
        let loaded = try r.load(path: try compilePlugin(source: source, name: "old", in: dir))
        #expect(loaded.record == "old-decoder 1.0")
        let old = try r.decoder(id: "old-decoder")
        #expect(!old.hasValues)
        let bytes = Array("OLD!".utf8)
        let g = try old.geometry(bytes)
        #expect(g.width == 3 && g.height == 2 && g.pixelSpacingX == 0.5 && g.pixelSpacingY == 0.25 && g.metadata == nil && g.frames == 1)
        let decoded = try r.decodeImage(bytes)
        #expect(decoded.image.pixels == (0..<6).map { Float($0) / 5 } && decoded.decoder == "old-decoder 1.0")
        do {
            _ = try old.values(bytes, frame: 0)
            Issue.record("an ABI 1.0 decoder returned values")
        } catch let e as PluginError {
            guard case .callFailed(_, let operation, let code, let message) = e else { Issue.record("\(e)"); return }
            #expect(operation == "values" && code == -3 && message.contains("predates plugin ABI 1.1"), "\(e)")
        }
    }
}
