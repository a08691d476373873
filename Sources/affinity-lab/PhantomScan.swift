// `affinity-lab phantom-scan`: a seeded 3-D chest-CT phantom (Imaging's PhantomVolume) written as a
// DICOM CT series through GDCM (CDICOMWriter; uncompressed or a lossless JPEG, JPEG-LS or JPEG 2000
// syntax) or as a NIfTI volume (nifticlib), slice by slice, with its truth as JSON.
import ArgumentParser
import CDICOMWriter
import Foundation
import Imaging
import NIfTI
import SystemIO

struct PhantomScan: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "phantom-scan",
        abstract: "Write a seeded 3-D chest-CT phantom as a DICOM CT series or a NIfTI volume, with its truth (lesion and lung volumes).",
        discussion: """
        The phantom: an axial chest CT in Hounsfield units (air −1000, lung about −850, soft tissue \
        about 40, bone a few hundred) with two lungs, heart, aorta, airway, vertebra, ribs, vessels \
        and lesions that continue across neighbouring slices (--class covid: two to six subpleural \
        ground-glass ellipsoids; pneumonia: one or two dense consolidations; normal: none). It is \
        generated one slice at a time (the memory of one slice, whatever --slices). \
        --format dicom writes one CT Image Storage file per slice into --out (slice-0001.dcm …, \
        MONOCHROME2, signed 16-bit stored values, HU = stored − 1024, instance 1 the most \
        inferior slice) in --syntax explicit (Explicit VR Little Endian), jpeg-lossless (JPEG \
        process 14, selection value 1), jpeg-ls (JPEG-LS lossless) or j2k (JPEG 2000 lossless), \
        through GDCM. --format nifti writes one volume (--out FILE.nii[.gz], or phantom.nii.gz in \
        the folder --out): int16 with scl_slope 1 and scl_inter −1024, the same geometry as the \
        DICOM series (its affine is the series' in RAS). UIDs are derived from the settings, so the \
        same settings give the same series. --truth writes the truth as JSON: lesion and lung \
        volumes (mL; both lungs, right and left — the patient's), opacity percentages, each lesion, \
        and per slice the lesion and lung areas (mm²), keyed as `affinity-lab scan --json` reports \
        them. --labels writes the truth's label volume (NIfTI, uint8: 0 background, 1 lung, 2 \
        ground glass, 3 consolidation) on the series' grid. Files are written under temporary \
        names, synced and renamed. Exit codes: 1 a file \
        that cannot be written or an --out folder that is not empty, 64 bad options.
        """)

    enum Format: String, CaseIterable, ExpressibleByArgument { case dicom, nifti }

    enum Syntax: String, CaseIterable, ExpressibleByArgument {
        case explicit
        case jpegLossless = "jpeg-lossless"
        case jpegLS = "jpeg-ls"
        case j2k

        var c: cdw_syntax {
            switch self {
            case .explicit: return CDW_EXPLICIT_LITTLE_ENDIAN
            case .jpegLossless: return CDW_JPEG_LOSSLESS_SV1
            case .jpegLS: return CDW_JPEG_LS_LOSSLESS
            case .j2k: return CDW_JPEG_2000_LOSSLESS
            }
        }

        var uid: String { String(cString: cdw_syntax_uid(c)) }
    }

    @Option(help: "Where to write: a folder (created if needed; it must be empty) or, with --format nifti, a .nii/.nii.gz file.")
    var out: String

    @Option(help: "dicom (one file per slice) or nifti (one volume).")
    var format: Format = .dicom

    @Option(help: "DICOM transfer syntax: explicit, jpeg-lossless, jpeg-ls or j2k (all lossless).")
    var syntax: Syntax = .explicit

    @Option(help: "Slice side in pixels (64 to 4096).")
    var size = 128

    @Option(help: "Number of slices.")
    var slices = 16

    @Option(help: "Generator seed (same seed and settings, same voxels and UIDs).")
    var seed: UInt64 = 1

    @Option(name: .customLong("class"), help: "Lesions: covid (ground-glass), pneumonia (consolidation) or normal (none).")
    var phantomClass = "covid"

    @Option(help: "Voxel spacing in mm: ROW,COLUMN,SLICE (default: a 350 mm field of view and 240 mm of chest over the slices).")
    var spacing: String?

    @Option(help: "Write the truth (volumes, per-slice areas) to this JSON file.")
    var truth: String?

    @Option(help: "Write the truth's label volume here (.nii or .nii.gz; uint8: 0 background, 1 lung, 2 ground glass, 3 consolidation; the series' affine).")
    var labels: String?

    @Flag(help: "Print one JSON object (the truth's totals and what was written).")
    var json = false

    static let classes: [String: PhantomClass] = ["covid": .covid, "pneumonia": .pneumonia, "normal": .normal]

    /// The spacing option as [row, column, slice], or nil when not given.
    func parsedSpacing() throws -> [Double]? {
        guard let spacing else { return nil }
        let parts = spacing.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
        guard parts.count == 3, parts.allSatisfy({ $0 != nil && $0!.isFinite && $0! > 0 && $0! < 1000 }) else {
            throw ValidationError("--spacing must be three positive numbers of mm below 1000, ROW,COLUMN,SLICE (e.g. 0.7,0.7,1.25), not \(spacing)")
        }
        return parts.map { $0! }
    }

    func validate() throws {
        if !PhantomVolume.sideRange.contains(size) {
            throw ValidationError("--size must be \(PhantomVolume.sideRange.lowerBound) to \(PhantomVolume.sideRange.upperBound), got \(size)")
        }
        if !PhantomVolume.sliceRange.contains(slices) {
            throw ValidationError("--slices must be \(PhantomVolume.sliceRange.lowerBound) to \(PhantomVolume.sliceRange.upperBound), got \(slices)")
        }
        if Self.classes[phantomClass] == nil { throw ValidationError("--class must be covid, pneumonia or normal, got \(phantomClass)") }
        _ = try parsedSpacing()
        if format == .nifti && syntax != .explicit { throw ValidationError("--syntax is for --format dicom") }
        if let truth, !truth.lowercased().hasSuffix(".json") { throw ValidationError("--truth must name a .json file") }
        if let labels, !(labels.lowercased().hasSuffix(".nii") || labels.lowercased().hasSuffix(".nii.gz")) {
            throw ValidationError("--labels must end in .nii or .nii.gz")
        }
    }

    func run() throws {
        try labRun {
            let t0 = DispatchTime.now().uptimeNanoseconds
            let volume: PhantomVolume
            do {
                volume = try PhantomVolume(seed: seed, width: size, height: size, slices: slices, class: Self.classes[phantomClass]!,
                                           spacing: try parsedSpacing())
            } catch let e as ImageError {
                throw LabError(name: "bad-argument", message: e.description, code: 64)
            }
            let geometry = PhantomScanGeometry(volume)
            var truthSum = PhantomVolumeTruth(volume: volume)
            let labelWriter: NIfTIVolumeWriter?
            do {
                labelWriter = try labels.map {
                    try NIfTIVolumeWriter(path: $0, columns: size, rows: size, slices: slices, affine: geometry.affineRAS, voxelType: .uint8,
                                          description: "LesionAffinity phantom truth labels")
                }
            } catch let e as NIfTIError {
                throw LabError(name: "io", message: e.description, code: 1)
            }
            /// Adds a slice to the truth and to the label volume.
            func record(_ slice: PhantomVolumeSlice) throws {
                truthSum.add(slice.truth)
                do { try labelWriter?.append(slice.labels) } catch let e as NIfTIError {
                    throw LabError(name: "io", message: e.description, code: 1)
                }
            }
            var files: [String] = []
            var bytes = 0
            switch format {
            case .dicom:
                try prepareFolder(out)
                let writer = DICOMSliceWriter(geometry: geometry, volume: volume, syntax: syntax)
                let digits = max(4, String(slices).count)
                for k in 0..<slices {
                    let slice = volume.slice(k)
                    try record(slice)
                    let encoded = try writer.encode(slice)
                    let name = "slice-" + String(repeating: "0", count: max(0, digits - String(k + 1).count)) + String(k + 1) + ".dcm"
                    let path = (out as NSString).appendingPathComponent(name)
                    do { try AtomicFile.write(encoded, to: path) } catch {
                        throw LabError(name: "io", message: "Cannot write \(path): \(sentence(String(describing: error)))", code: 1)
                    }
                    files.append(name)
                    bytes += encoded.count
                }
            case .nifti:
                let path: String
                let lower = out.lowercased()
                if lower.hasSuffix(".nii") || lower.hasSuffix(".nii.gz") {
                    path = out
                    let parent = (out as NSString).deletingLastPathComponent
                    if !parent.isEmpty && !directoryExists(parent) { throw LabError.missingDirectory(parent) }
                } else {
                    try prepareFolder(out)
                    path = (out as NSString).appendingPathComponent("phantom.nii.gz")
                }
                do {
                    let writer = try NIfTIVolumeWriter(path: path, columns: size, rows: size, slices: slices, affine: geometry.affineRAS,
                                                       voxelType: .int16(slope: 1, intercept: Double(PhantomScanGeometry.rescaleIntercept)),
                                                       description: "LesionAffinity phantom seed \(seed) \(phantomClass)")
                    for k in 0..<slices {
                        let slice = volume.slice(k)
                        try record(slice)
                        try writer.append(slice.hu.map { $0 - Int16(PhantomScanGeometry.rescaleIntercept) })
                    }
                    try writer.finish()
                } catch let e as NIfTIError {
                    throw LabError(name: "io", message: e.description, code: 1)
                }
                files.append((path as NSString).lastPathComponent)
                bytes = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
            }
            do { try labelWriter?.finish() } catch let e as NIfTIError {
                throw LabError(name: "io", message: e.description, code: 1)
            }
            var object = truthObject(volume: volume, truth: truthSum, geometry: geometry, files: files)
            if let truth {
                do { try AtomicFile.write(text: jsonText(object, pretty: true) + "\n", to: truth) } catch {
                    throw LabError(name: "io", message: "Cannot write \(truth): \(sentence(String(describing: error)))", code: 1)
                }
            }
            let seconds = secondsSince(t0)
            if json {
                object["slices"] = nil
                object["out"] = out
                object["bytes"] = bytes
                object["seconds"] = seconds
                if let truth { object["truth_file"] = truth }
                if let labels { object["labels_file"] = labels }
                print(jsonText(object))
            } else {
                let what = format == .dicom ? "\(slices) DICOM files (\(syntax.rawValue), \(syntax.uid))" : "a NIfTI volume (\(files[0]))"
                print("wrote \(what) of a \(size)×\(size)×\(slices) \(phantomClass) phantom (seed \(seed)) to \(out): \(bytes) bytes, \(String(format: "%.1f", seconds)) s")
                print("  spacing \(volume.spacing.map { String(format: "%.4g", $0) }.joined(separator: " × ")) mm; series \(geometry.seriesUID)")
                print(String(format: "  lungs %.1f mL (right %.1f, left %.1f); lesions %.2f mL in %d lesion(s); opacity %.2f%% (right %.2f%%, left %.2f%%)",
                             truthSum.lungVolumeML, truthSum.lungVolumeRightML, truthSum.lungVolumeLeftML, truthSum.lesionVolumeML,
                             volume.lesions.count, truthSum.opacityPercent, truthSum.opacityPercentRight, truthSum.opacityPercentLeft))
                if let truth { print("  truth written to \(truth)") }
                if let labels { print("  truth labels written to \(labels)") }
            }
        }
    }

    /// Creates `path` if needed; refuses a folder that holds anything (a mixed folder would mix series).
    func prepareFolder(_ path: String) throws {
        if fileExists(path) {
            guard directoryExists(path) else {
                throw LabError(name: "io", message: "\(path) is a file; --out names a folder (or, with --format nifti, a .nii/.nii.gz file).", code: 1)
            }
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
            guard entries.isEmpty else {
                throw LabError(name: "out-not-empty", message: "The folder \(path) is not empty (\(entries.count) entries); phantom-scan writes into an empty or new folder.", code: 1)
            }
        } else {
            do { try AtomicFile.makeDirectories(path) } catch {
                throw LabError(name: "io", message: "Cannot create \(path): \(sentence(String(describing: error)))", code: 1)
            }
        }
    }

    func truthObject(volume: PhantomVolume, truth: PhantomVolumeTruth, geometry: PhantomScanGeometry, files: [String]) -> [String: Any] {
        func r(_ x: Double, _ digits: Double = 1e6) -> Double { (x * digits).rounded() / digits }
        let volumes = truth.lesionVolumesML
        let lesions: [[String: Any]] = volume.lesions.enumerated().map { i, l in
            ["kind": l.kind, "lung": l.lung, "centre": l.centre.map { r($0, 1000) }, "semi_axes": l.semiAxes.map { r($0, 1000) },
             "slices": l.sliceRange, "volume_ml": r(volumes[i])]
        }
        let slices: [[String: Any]] = truth.slices.enumerated().map { k, s in
            let a = truth.areasMM2(k)
            var o: [String: Any] = [
                "index": k, "position_mm": r(geometry.positionMM(k)), "lesion_area_mm2": r(a.lesion), "lung_area_mm2": r(a.lung),
                "lesion_area_right_mm2": r(a.lesionRight), "lesion_area_left_mm2": r(a.lesionLeft),
                "lung_area_right_mm2": r(a.lungRight), "lung_area_left_mm2": r(a.lungLeft),
                "lesion_pixels": s.lesion, "lung_pixels": s.lung,
            ]
            if files.count == truth.slices.count { o["file"] = files[k] }
            return o
        }
        var object: [String: Any] = [
            "generator": "affinity-lab phantom-scan", "seed": seed, "class": phantomClass, "size": [size, size], "slice_count": slices,
            "spacing_mm": volume.spacing, "format": format.rawValue,
            "series_uid": geometry.seriesUID, "study_uid": geometry.studyUID,
            "rescale_intercept": PhantomScanGeometry.rescaleIntercept, "rescale_slope": 1,
            "lesion_volume_ml": r(truth.lesionVolumeML), "lung_volume_ml": r(truth.lungVolumeML),
            "lesion_volume_right_ml": r(truth.lesionVolumeRightML), "lesion_volume_left_ml": r(truth.lesionVolumeLeftML),
            "lung_volume_right_ml": r(truth.lungVolumeRightML), "lung_volume_left_ml": r(truth.lungVolumeLeftML),
            "ground_glass_volume_ml": r(truth.groundGlassVolumeML), "consolidation_volume_ml": r(truth.consolidationVolumeML),
            "opacity_percent": r(truth.opacityPercent), "opacity_percent_right": r(truth.opacityPercentRight),
            "opacity_percent_left": r(truth.opacityPercentLeft),
            "lesion_voxels": truth.lesionVoxels, "lung_voxels": truth.lungVoxels, "voxel_ml": volume.voxelML,
            "lesions": lesions, "slices": slices, "files": files,
            "convention": "right and left are the patient's (the right lung is on the image's left); slice 0 (instance 1) is the most inferior; lung = parenchyma and lesions (label 1, 2, 3), lesion = label 2 (ground glass) or 3 (consolidation); volumes are voxel counts × voxel volume",
        ]
        if format == .dicom { object["transfer_syntax"] = syntax.uid; object["syntax"] = syntax.rawValue }
        return object
    }
}

/// The patient geometry and identity of a phantom series: axial, ImageOrientationPatient
/// 1\0\0\0\1\0 (rows towards the patient's left, columns towards posterior), centred on the origin,
/// slice k at z = (k − (n − 1)/2) · slice spacing (inferior to superior).
struct PhantomScanGeometry {
    static let rescaleIntercept = -1024
    let volume: PhantomVolume
    let seriesUID: String
    let studyUID: String
    let frameOfReferenceUID: String
    /// What the UIDs are derived from: every setting that changes the voxels or the geometry.
    let key: [UInt64]

    init(_ volume: PhantomVolume) {
        self.volume = volume
        let key = [volume.seed, UInt64(volume.width), UInt64(volume.height), UInt64(volume.slices), UInt64(volume.phantomClass.rawValue)]
            + volume.spacing.map(\.bitPattern)
        self.key = key
        studyUID = Self.uid(key + [1])
        seriesUID = Self.uid(key + [2])
        frameOfReferenceUID = Self.uid(key + [3])
    }

    /// A UID under 2.25 (UUID-derived, ITU-T X.667): a version-8 (custom) UUID made from the key's
    /// hash, as one decimal integer.
    static func uid(_ key: [UInt64]) -> String {
        var hi = SplitMix64.mix(0x5A17_0001, key.count > 0 ? key[0] : 0)
        var lo = SplitMix64.mix(0x5A17_0002, hi)
        for v in key.dropFirst() {
            hi = SplitMix64.mix(hi, v)
            lo = SplitMix64.mix(lo, v, hi)
        }
        hi = (hi & ~0xF000) | 0x8000           // version 8
        lo = (lo & ~(0b11 << 62)) | (0b10 << 62)  // variant 10
        return "2.25." + String(UInt128(hi) << 64 | UInt128(lo))
    }

    func sopInstanceUID(_ k: Int) -> String { Self.uid(key + [4, UInt64(k)]) }

    /// ImagePositionPatient of slice k (LPS mm): the centre of its first pixel.
    func position(_ k: Int) -> [Double] {
        let s = volume.spacing
        return [-Double(volume.width - 1) / 2 * s[1], -Double(volume.height - 1) / 2 * s[0], positionMM(k)]
    }

    /// Slice k's position along the normal (z, mm).
    func positionMM(_ k: Int) -> Double { (Double(k) - Double(volume.slices - 1) / 2) * volume.spacing[2] }

    /// The voxel (i column, j row, k slice) → RAS affine, row-major (the series' affine).
    var affineRAS: [[Double]] {
        let s = volume.spacing, p = position(0)
        return [[-s[1], 0, 0, -p[0]], [0, -s[0], 0, -p[1]], [0, 0, s[2], p[2]], [0, 0, 0, 1]]
    }
}

/// Encodes phantom slices as DICOM files through CDICOMWriter (GDCM).
struct DICOMSliceWriter {
    let geometry: PhantomScanGeometry
    let volume: PhantomVolume
    let syntax: PhantomScan.Syntax

    func encode(_ slice: PhantomVolumeSlice) throws -> [UInt8] {
        let k = slice.index
        let stored = slice.hu.map { $0 - Int16(PhantomScanGeometry.rescaleIntercept) }
        let strings = [geometry.sopInstanceUID(k), geometry.seriesUID, geometry.studyUID, geometry.frameOfReferenceUID,
                       "Phantom^Seed\(volume.seed)", "PHANTOM-\(volume.seed)", "LesionAffinity phantom (\(volume.phantomClass))", "20260101", "120000"]
        let c = strings.map { strdup($0) }
        defer { c.forEach { free($0) } }
        let position = geometry.position(k)
        var s = cdw_slice()
        s.rows = Int32(volume.height)
        s.columns = Int32(volume.width)
        s.pixel_spacing_row = volume.spacing[0]
        s.pixel_spacing_column = volume.spacing[1]
        s.slice_thickness = volume.spacing[2]
        s.position = (position[0], position[1], position[2])
        s.orientation = (1, 0, 0, 0, 1, 0)
        s.rescale_intercept = Double(PhantomScanGeometry.rescaleIntercept)
        s.rescale_slope = 1
        s.window_center = -600
        s.window_width = 1500
        s.instance_number = Int32(k + 1)
        s.series_number = 1
        s.sop_instance_uid = UnsafePointer(c[0])
        s.series_instance_uid = UnsafePointer(c[1])
        s.study_instance_uid = UnsafePointer(c[2])
        s.frame_of_reference_uid = UnsafePointer(c[3])
        s.patient_name = UnsafePointer(c[4])
        s.patient_id = UnsafePointer(c[5])
        s.series_description = UnsafePointer(c[6])
        s.study_date = UnsafePointer(c[7])
        s.study_time = UnsafePointer(c[8])
        var out: UnsafeMutablePointer<UInt8>?
        var length = 0
        var error = [CChar](repeating: 0, count: 512)
        let status = stored.withUnsafeBufferPointer { px in
            error.withUnsafeMutableBufferPointer { e in cdw_encode(&s, px.baseAddress, syntax.c, &out, &length, e.baseAddress, e.count) }
        }
        guard status == 0, let out else {
            let reason = String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw LabError(name: "dicom-write", message: "Cannot encode slice \(k + 1) (\(syntax.rawValue)): \(sentence(reason))", code: 1)
        }
        defer { cdw_free(out) }
        return Array(UnsafeBufferPointer(start: out, count: length))
    }
}
