// Scan files: paths (files and folders, any names, any order, mixed with other files) become
// slice headers — DICOM through the decoder plugin (each frame a slice), NIfTI through nifticlib
// (each k a slice) — and the slices' HU values are read back one at a time while a scan is
// analysed. What cannot be read is set aside with the reason. The label volume goes to a NIfTI
// file slice by slice.
import Foundation
import NIfTI
import PluginHost
import Scans
import SystemIO

/// Limits on what a scan may hold (checked before pixel memory is allocated).
public struct ScanLimits: Sendable {
    public var maxFiles = 5000
    public var maxFileBytes = 256 << 20
    public var nifti = NIfTILimits()
    public init() {}
}

/// The slices found in a set of paths, and a reader of their values.
public final class ScanFiles: ScanSliceReader, @unchecked Sendable {
    // @unchecked Sendable: `volumes` is filled in init and then only read under `lock`.
    public private(set) var headers: [SliceHeader] = []
    public private(set) var setAside: [SetAside] = []
    private let decoder: ImageDecoderPlugin?
    private let limits: ScanLimits
    private var volumes: [String: NIfTIVolume] = [:]
    private let lock = NSLock()

    /// Reads the headers of every file under `paths` (folders are walked, hidden files skipped).
    /// - Parameter registry: the plugins; its `dicom` decoder reads DICOM files (without one, DICOM
    ///   files are set aside).
    /// - Throws: `ScanError.tooLarge` past `limits.maxFiles`; a path that does not exist is set aside.
    public init(paths: [String], registry: PluginRegistry?, limits: ScanLimits = ScanLimits()) throws {
        self.limits = limits
        decoder = try? registry?.decoder(id: "dicom")
        var files: [String] = []
        for path in paths {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
                setAside.append(SetAside(what: path, reason: "no such file or folder"))
                continue
            }
            if isDirectory.boolValue {
                guard let walker = FileManager.default.enumerator(atPath: path) else {
                    setAside.append(SetAside(what: path, reason: "the folder cannot be listed"))
                    continue
                }
                for case let name as String in walker {
                    if (name as NSString).lastPathComponent.hasPrefix(".") { continue }
                    let full = (path as NSString).appendingPathComponent(name)
                    var dir: ObjCBool = false
                    if FileManager.default.fileExists(atPath: full, isDirectory: &dir), !dir.boolValue { files.append(full) }
                    if files.count > limits.maxFiles { throw ScanError.tooLarge("more than \(limits.maxFiles) files") }
                }
            } else {
                files.append(path)
            }
        }
        guard files.count <= limits.maxFiles else { throw ScanError.tooLarge("\(files.count) files; the limit is \(limits.maxFiles)") }
        for file in files.sorted() { read(file) }
    }

    private func read(_ file: String) {
        let lower = file.lowercased()
        if lower.hasSuffix(".nii") || lower.hasSuffix(".nii.gz") {
            do {
                let v = try NIfTIVolume(path: file, limits: limits.nifti)
                volumes[file] = v
                headers += v.sliceHeaders()
            } catch {
                setAside.append(SetAside(what: file, reason: sentenceless(error)))
            }
            return
        }
        let bytes: [UInt8]
        do { bytes = try AtomicFile.read(path: file, limit: limits.maxFileBytes) } catch {
            setAside.append(SetAside(what: file, reason: sentenceless(error)))
            return
        }
        guard let decoder, decoder.probe(bytes) > 0 else {
            setAside.append(SetAside(what: file, reason: decoder == nil ? "no DICOM decoder plugin is loaded" : "not a DICOM file"))
            return
        }
        do {
            let g = try decoder.geometry(bytes)
            guard let m = g.metadata else {
                setAside.append(SetAside(what: file, reason: "the DICOM decoder reports no slice geometry (plugin ABI before 1.1)"))
                return
            }
            for frame in 0..<max(1, m.frames) {
                // A multi-frame file: each frame's own position (the decoder reads it per frame).
                let fm = frame == 0 ? m : ((try? decoder.geometry(bytes, options: "{\"frame\": \(frame)}"))?.metadata ?? m)
                headers.append(Self.header(file: file, frame: frame, width: g.width, height: g.height, fm))
            }
        } catch {
            setAside.append(SetAside(what: file, reason: sentenceless(error)))
        }
    }

    static func header(file: String, frame: Int, width: Int, height: Int, _ m: ImageMetadata) -> SliceHeader {
        var orientation: (row: Vector3, column: Vector3)?
        if let o = m.imageOrientation, o.count == 6 {
            orientation = (Vector3(o[0], o[1], o[2]), Vector3(o[3], o[4], o[5]))
        }
        return SliceHeader(source: SliceSource(file: file, frame: frame), rows: height, columns: width, modality: m.modality,
                           seriesUID: m.seriesInstanceUID, studyUID: m.studyInstanceUID, sopUID: m.sopInstanceUID,
                           instanceNumber: m.instanceNumber, position: m.imagePosition.flatMap { Vector3($0) }, orientation: orientation,
                           pixelSpacing: m.pixelSpacing, sliceThickness: m.sliceThickness)
    }

    /// The HU values of one slice (stored layout).
    public func values(of slice: SliceHeader) throws -> [Float] {
        if let v = lock.withLock({ volumes[slice.source.file] }) { return v.slice(slice.source.frame) }
        guard let decoder else { throw ScanError.badGeometry("no DICOM decoder plugin is loaded") }
        let bytes = try AtomicFile.read(path: slice.source.file, limit: limits.maxFileBytes)
        let decoded = try decoder.values(bytes, frames: slice.source.frame..<(slice.source.frame + 1))
        return decoded.values
    }

    private func sentenceless(_ error: Error) -> String {
        var s = String(describing: error)
        while s.hasSuffix(".") { s.removeLast() }
        return s
    }
}

/// The label volume as a NIfTI file beside nothing else: the scan's affine (RAS), uint8 labels.
public final class NIfTILabelSink: LabelVolumeSink {
    public let path: String
    private var writer: NIfTILabelWriter?

    public init(path: String) { self.path = path }

    public func begin(series: AssembledSeries, columns: Int, rows: Int) throws {
        let affine: [[Double]]
        do { affine = try series.affineRAS() } catch {
            // Without a patient geometry (e.g. slices without positions): voxel sizes only.
            affine = [[series.spacing[1], 0, 0, 0], [0, series.spacing[0], 0, 0], [0, 0, series.spacing[2], 0], [0, 0, 0, 1]]
        }
        writer = try NIfTILabelWriter(path: path, columns: columns, rows: rows, slices: series.count, affine: affine)
    }

    public func append(slice labels: [UInt8]) throws { try writer?.append(labels) }
    public func finish() throws { try writer?.finish() }
}
