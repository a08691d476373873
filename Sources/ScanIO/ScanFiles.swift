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
    /// Where a NIfTI volume passed as a descriptor is copied for nifticlib, which reads by name
    /// (a private folder is made in it and removed once the volume is read).
    public var temporaryDirectory = FileManager.default.temporaryDirectory.path
    public init() {}
}

/// One thing a scan is read from.
public enum ScanInput: Sendable {
    /// A file or folder by name.
    case path(String)
    /// An open file (read with pread from offset 0; the caller keeps it open while the `ScanFiles`
    /// is used); `name` is how results name it.
    case file(descriptor: Int32, name: String)
    /// An open folder (O_DIRECTORY): its files are opened relative to it, so a sandboxed reader
    /// reads a folder it cannot see by name. Symbolic links inside it are not followed.
    case directory(descriptor: Int32, name: String)
}

/// The slices found in a set of paths, and a reader of their values.
public final class ScanFiles: ScanSliceReader, @unchecked Sendable {
    // @unchecked Sendable: `volumes` and `files` are filled in init and then only read under `lock`.
    public private(set) var headers: [SliceHeader] = []
    public private(set) var setAside: [SetAside] = []
    private let decoder: ImageDecoderPlugin?
    private let limits: ScanLimits
    private var volumes: [String: NIfTIVolume] = [:]
    /// How each file (by the name results give it) is opened again.
    private var files: [String: FileRef] = [:]
    private let lock = NSLock()

    private enum FileRef {
        case path(String)
        case descriptor(Int32)
        /// A path of components below an open folder.
        case relative(directory: Int32, components: [String])
    }

    /// Reads the headers of every file under `paths` (folders are walked, hidden files skipped).
    /// - Parameter registry: the plugins; its `dicom` decoder reads DICOM files (without one, DICOM
    ///   files are set aside).
    /// - Throws: `ScanError.tooLarge` past `limits.maxFiles`; a path that does not exist is set aside.
    public convenience init(paths: [String], registry: PluginRegistry?, limits: ScanLimits = ScanLimits()) throws {
        try self.init(inputs: paths.map { .path($0) }, registry: registry, limits: limits)
    }

    /// Reads the headers of every file of `inputs` (folders are walked, hidden files skipped).
    /// - Throws: `ScanError.tooLarge` past `limits.maxFiles`; what cannot be read is set aside.
    public init(inputs: [ScanInput], registry: PluginRegistry?, limits: ScanLimits = ScanLimits()) throws {
        self.limits = limits
        decoder = try? registry?.decoder(id: "dicom")
        var found: [(name: String, ref: FileRef)] = []
        func add(_ name: String, _ ref: FileRef) throws {
            var unique = name
            var n = 2
            while files[unique] != nil { unique = "\(name) #\(n)"; n += 1 }
            files[unique] = ref
            found.append((unique, ref))
            if found.count > limits.maxFiles { throw ScanError.tooLarge("more than \(limits.maxFiles) files") }
        }
        for input in inputs {
            switch input {
            case .path(let path):
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
                        if FileManager.default.fileExists(atPath: full, isDirectory: &dir), !dir.boolValue { try add(full, .path(full)) }
                    }
                } else {
                    try add(path, .path(path))
                }
            case .file(let fd, let name):
                try add(name, .descriptor(fd))
            case .directory(let fd, let name):
                do {
                    try Self.walk(fd, [], limit: limits.maxFiles) { components in
                        try add(([name] + components).joined(separator: "/"), .relative(directory: fd, components: components))
                    }
                } catch let e as ScanError {
                    throw e
                } catch {
                    setAside.append(SetAside(what: name, reason: sentenceless(error)))
                }
            }
        }
        for (name, ref) in found.sorted(by: { $0.name < $1.name }) { read(name, ref) }
    }

    /// Calls `body` with the path components of every regular file below the open folder `fd`
    /// (hidden entries skipped, symbolic links not followed, at most 32 levels deep).
    private static func walk(_ fd: Int32, _ prefix: [String], limit: Int, depth: Int = 0, _ body: ([String]) throws -> Void) throws {
        guard depth < 32 else { return }
        // Not registered with `Descriptors`: fdopendir takes it over and closedir closes it.
        let dirFD = prefix.isEmpty ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : openBelow(fd, prefix, directory: true, register: false)
        guard dirFD >= 0 else { throw FileIOError.io(path: prefix.joined(separator: "/"), message: "the folder cannot be opened: \(String(cString: strerror(errno)))") }
        // fdopendir owns dirFD from here on; closedir closes it.
        guard let dir = fdopendir(dirFD) else {
            let code = errno
            _ = Descriptors.ownerClose(dirFD)
            throw FileIOError.io(path: prefix.joined(separator: "/"), message: "the folder cannot be listed: \(String(cString: strerror(code)))")
        }
        defer { closedir(dir) }
        rewinddir(dir)
        var entries: [(String, Bool)] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name.hasPrefix(".") { continue }
            var info = stat()
            guard fstatat(dirfd(dir), name, &info, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
            switch info.st_mode & S_IFMT {
            case S_IFDIR: entries.append((name, true))
            case S_IFREG: entries.append((name, false))
            default: continue  // symbolic links, devices, sockets, fifos
            }
            if entries.count > limit { throw ScanError.tooLarge("more than \(limit) files") }
        }
        for (name, isDirectory) in entries.sorted(by: { $0.0 < $1.0 }) {
            if isDirectory { try walk(fd, prefix + [name], limit: limit, depth: depth + 1, body) } else { try body(prefix + [name]) }
        }
    }

    /// Opens `components` below the folder `fd` one at a time, never following a symbolic link.
    /// The returned descriptor is owned by the caller (registered with `Descriptors` when
    /// `register`); -1 with errno on failure.
    private static func openBelow(_ fd: Int32, _ components: [String], directory: Bool, register: Bool = true) -> Int32 {
        var current = fd
        for (i, c) in components.enumerated() {
            let last = i == components.count - 1
            var flags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY
            if !last || directory { flags |= O_DIRECTORY }
            let next = openat(current, c, flags)
            let code = errno
            if current != fd { Descriptors.close(current) }
            guard next >= 0 else { errno = code; return -1 }
            if !last || register { Descriptors.adopt(next) }
            current = next
        }
        return current
    }

    private func bytes(of ref: FileRef, name: String) throws -> [UInt8] {
        switch ref {
        case .path(let path):
            return try AtomicFile.read(path: path, limit: limits.maxFileBytes)
        case .descriptor(let fd):
            return try Self.readRegular(fd, name: name, limit: limits.maxFileBytes)
        case .relative(let dir, let components):
            let fd = Self.openBelow(dir, components, directory: false)
            guard fd >= 0 else { throw FileIOError.io(path: name, message: "cannot be opened: \(String(cString: strerror(errno)))") }
            defer { Descriptors.close(fd) }
            return try Self.readRegular(fd, name: name, limit: limits.maxFileBytes)
        }
    }

    /// A regular file's bytes from an open descriptor (pipes and devices are refused: a scan file is
    /// read twice, for its header and for its values).
    private static func readRegular(_ fd: Int32, name: String, limit: Int) throws -> [UInt8] {
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw FileIOError.io(path: name, message: "cannot be examined: \(String(cString: strerror(errno)))") }
        guard info.st_mode & S_IFMT == S_IFREG else { throw FileIOError.io(path: name, message: "not a regular file") }
        return try AtomicFile.read(fileDescriptor: fd, limit: limit, name: name)
    }

    private func read(_ file: String, _ ref: FileRef) {
        let lower = file.lowercased()
        if case .path = ref, lower.hasSuffix(".nii") || lower.hasSuffix(".nii.gz") {
            readNIfTI(file, ref, bytes: [], gzip: lower.hasSuffix(".gz"))
            return
        }
        let bytes: [UInt8]
        do { bytes = try self.bytes(of: ref, name: file) } catch {
            setAside.append(SetAside(what: file, reason: sentenceless(error)))
            return
        }
        let gzip = bytes.count >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b
        if lower.hasSuffix(".nii") || lower.hasSuffix(".nii.gz") || gzip || Self.isNIfTIHeader(bytes) {
            readNIfTI(file, ref, bytes: bytes, gzip: gzip)
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

    /// sizeof_hdr of NIfTI-1 (348) or NIfTI-2 (540), either byte order.
    static func isNIfTIHeader(_ b: [UInt8]) -> Bool {
        guard b.count >= 4 else { return false }
        let le = UInt32(b[0]) | UInt32(b[1]) << 8 | UInt32(b[2]) << 16 | UInt32(b[3]) << 24
        return [348, 540, 0x5C01_0000, 0x1C02_0000].contains(le)
    }

    /// A NIfTI volume: read by name, or (a descriptor, a file below a folder descriptor) from a
    /// private copy, since nifticlib opens files by name and tells .nii.gz by its ending.
    private func readNIfTI(_ file: String, _ ref: FileRef, bytes: [UInt8], gzip: Bool) {
        do {
            let v: NIfTIVolume
            if case .path(let path) = ref, path.lowercased().hasSuffix(".nii") || path.lowercased().hasSuffix(".nii.gz") {
                v = try NIfTIVolume(path: path, limits: limits.nifti)
            } else {
                var template = Array((limits.temporaryDirectory + "/affinity-scan-XXXXXX").utf8CString)
                guard let made = mkdtemp(&template) else {
                    throw FileIOError.io(path: limits.temporaryDirectory, message: "no private folder can be made for the volume: \(String(cString: strerror(errno)))")
                }
                let folder = String(cString: made)
                defer { try? FileManager.default.removeItem(atPath: folder) }
                let copy = folder + (gzip ? "/volume.nii.gz" : "/volume.nii")
                try AtomicFile.write(bytes, to: copy)
                v = try NIfTIVolume(path: copy, limits: limits.nifti)
            }
            volumes[file] = v
            headers += v.sliceHeaders(seriesUID: "nifti:" + (file as NSString).lastPathComponent).map {
                var h = $0
                h.source.file = file
                return h
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
        let (volume, ref) = lock.withLock { (volumes[slice.source.file], files[slice.source.file]) }
        if let volume { return volume.slice(slice.source.frame) }
        guard let decoder else { throw ScanError.badGeometry("no DICOM decoder plugin is loaded") }
        guard let ref else { throw ScanError.badGeometry("\(slice.source.file) is not one of the scan's files") }
        let bytes = try self.bytes(of: ref, name: slice.source.file)
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
