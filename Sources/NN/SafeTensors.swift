import Foundation
import SystemIO
import Tensor

/// A problem reading, writing or applying a checkpoint, with a sentence that names the file part or
/// the keys at fault.
public enum CheckpointError: Error, CustomStringConvertible, Equatable {
    /// Reading or writing a file failed (the message names the path and the system error).
    case io(String)
    /// The data ends before the header or an entry's bytes do.
    case truncated(String)
    /// The header is malformed: an implausible length, JSON that does not parse, or an entry with bad
    /// fields, shape, offsets or byte count.
    case corrupt(String)
    /// An entry's dtype is not one of `DType`'s.
    case unsupportedDType(key: String, dtype: String)
    /// Keys that are needed but absent (a tensor asked for by name, or an optimizer moment).
    case missingKeys([String])
    /// Keys of the file that the model does not have (`Module.load` reports them in `stateMismatch`).
    case unexpectedKeys([String])
    /// Keys whose shapes differ between file and model (`Module.load` reports them in `stateMismatch`).
    case shapeMismatches([String])
    /// Several of the key problems at once (missing, unexpected, mis-shaped), each listed.
    case stateMismatch(missing: [String], unexpected: [String], misShaped: [String])

    /// A one-line message naming the problem; key lists stop after 20 keys.
    public var description: String {
        switch self {
        case .io(let s): return "checkpoint I/O failed: \(s)"
        case .truncated(let s): return "checkpoint is truncated: \(s)"
        case .corrupt(let s): return "checkpoint is corrupt: \(s)"
        case .unsupportedDType(let k, let d): return "checkpoint entry \(k) has unsupported dtype \(d)"
        case .missingKeys(let k): return "checkpoint lacks \(k.count) key(s): \(k.prefix(20).joined(separator: ", "))"
        case .unexpectedKeys(let k): return "checkpoint has \(k.count) unexpected key(s): \(k.prefix(20).joined(separator: ", "))"
        case .shapeMismatches(let k): return "checkpoint has \(k.count) mis-shaped key(s): \(k.prefix(20).joined(separator: "; "))"
        case .stateMismatch(let m, let u, let s):
            var parts: [String] = []
            if !m.isEmpty { parts.append("missing \(m.count): \(m.prefix(20).joined(separator: ", "))") }
            if !u.isEmpty { parts.append("unexpected \(u.count): \(u.prefix(20).joined(separator: ", "))") }
            if !s.isEmpty { parts.append("mis-shaped \(s.count): \(s.prefix(20).joined(separator: "; "))") }
            return "checkpoint does not fit the model: " + parts.joined(separator: " | ")
        }
    }
}

/// Element types of safetensors entries this project reads and writes.
public enum DType: String, Sendable, Codable {
    /// float32, float16, bfloat16, int64, int32, uint8; the raw values are the safetensors dtype strings.
    case f32 = "F32", f16 = "F16", bf16 = "BF16", i64 = "I64", i32 = "I32", u8 = "U8"

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .f32, .i32: return 4
        case .f16, .bf16: return 2
        case .i64: return 8
        case .u8: return 1
        }
    }
}

/// A safetensors file read into memory: the header's entries and metadata plus the raw bytes.
///
/// Layout: an 8-byte little-endian header length N, N bytes of JSON
/// (`{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`), then the data.
/// Every offset, size and shape is checked against the file before use.
public struct SafeTensorsFile: @unchecked Sendable {
    /// Where one tensor's bytes are and how to read them.
    public struct Entry: Sendable {
        /// The element type.
        public var dtype: DType
        /// The shape (empty for a scalar).
        public var shape: [Int]
        /// The byte range in the data section (the file after the header): `data_offsets`.
        public var range: Range<Int>
    }

    /// Every tensor entry by name (`__metadata__` excluded).
    public let entries: [String: Entry]
    /// Entry names in file (data offset) order.
    public let names: [String]
    /// The `__metadata__` object; a value that is not a string is kept as its description.
    public let metadata: [String: String]
    private let bytes: Data
    private let dataStart: Int

    /// Reads and validates a file.
    /// - Throws: `CheckpointError` naming what is wrong (I/O, truncated, corrupt header, bad offsets).
    public init(contentsOf url: URL) throws {
        let d: Data
        do { d = try Data(contentsOf: url, options: .alwaysMapped) } catch {
            throw CheckpointError.io("cannot read \(url.path): \(error.localizedDescription)")
        }
        try self.init(data: d)
    }

    /// Parses and validates safetensors bytes.
    public init(data: Data) throws {
        bytes = data
        guard data.count >= 8 else { throw CheckpointError.truncated("\(data.count) bytes, the 8-byte header length is missing") }
        var n: UInt64 = 0
        for i in 0..<8 { n |= UInt64(data[data.startIndex + i]) << (8 * UInt64(i)) }
        guard n >= 2, n <= 100_000_000 else { throw CheckpointError.corrupt("header length \(n) is implausible") }
        guard 8 + Int(n) <= data.count else { throw CheckpointError.truncated("header of \(n) bytes, but only \(data.count - 8) follow") }
        dataStart = 8 + Int(n)
        let headerData = data.subdata(in: (data.startIndex + 8)..<(data.startIndex + dataStart))
        let json: Any
        do { json = try JSONSerialization.jsonObject(with: headerData) } catch {
            throw CheckpointError.corrupt("the JSON header does not parse")
        }
        guard let dict = json as? [String: Any] else { throw CheckpointError.corrupt("the JSON header is not an object") }
        var entries: [String: Entry] = [:]
        var meta: [String: String] = [:]
        let dataLength = data.count - dataStart
        for (key, value) in dict {
            if key == "__metadata__" {
                guard let m = value as? [String: Any] else { throw CheckpointError.corrupt("__metadata__ is not an object") }
                for (k, v) in m { meta[k] = (v as? String) ?? "\(v)" }
                continue
            }
            guard let e = value as? [String: Any], let dt = e["dtype"] as? String, let shapeAny = e["shape"] as? [Any],
                  let offAny = e["data_offsets"] as? [Any], offAny.count == 2 else {
                throw CheckpointError.corrupt("entry \(key) lacks dtype, shape or data_offsets")
            }
            guard let dtype = DType(rawValue: dt) else { throw CheckpointError.unsupportedDType(key: key, dtype: dt) }
            var shape: [Int] = []
            var elements = 1
            for s in shapeAny {
                guard let v = (s as? NSNumber)?.intValue, v >= 0, v < 1 << 31 else { throw CheckpointError.corrupt("entry \(key) has a bad shape") }
                shape.append(v)
                let (m, o) = elements.multipliedReportingOverflow(by: v)
                guard !o else { throw CheckpointError.corrupt("entry \(key) has a bad shape") }
                elements = m
            }
            guard let b = (offAny[0] as? NSNumber)?.intValue, let en = (offAny[1] as? NSNumber)?.intValue, b >= 0, en >= b else {
                throw CheckpointError.corrupt("entry \(key) has bad data_offsets")
            }
            guard en <= dataLength else {
                throw CheckpointError.truncated("entry \(key) ends at byte \(en) of the data, but the data has \(dataLength) bytes")
            }
            guard en - b == elements * dtype.size else {
                throw CheckpointError.corrupt("entry \(key): \(en - b) bytes for shape \(shapeString(shape)) of \(dt)")
            }
            entries[key] = Entry(dtype: dtype, shape: shape, range: b..<en)
        }
        self.entries = entries
        self.names = entries.keys.sorted { entries[$0]!.range.lowerBound < entries[$1]!.range.lowerBound || (entries[$0]!.range.lowerBound == entries[$1]!.range.lowerBound && $0 < $1) }
        self.metadata = meta
    }

    /// The entry's values as a float32 tensor (F16 and BF16 are widened; integers converted).
    /// - Throws: `CheckpointError.missingKeys` if there is no such entry.
    public func tensor(_ name: String) throws -> Tensor {
        guard let e = entries[name] else { throw CheckpointError.missingKeys([name]) }
        let t = Tensor(shape: e.shape)
        let n = t.count
        bytes.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            let base = raw.baseAddress! + dataStart + e.range.lowerBound
            let out = t.data
            switch e.dtype {
            case .f32: for i in 0..<n { out[i] = Float(bitPattern: UInt32(littleEndian: base.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
            case .f16: for i in 0..<n { out[i] = Float(Float16(bitPattern: UInt16(littleEndian: base.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))) }
            case .bf16: for i in 0..<n { out[i] = Float(bitPattern: UInt32(UInt16(littleEndian: base.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) << 16) }
            case .i64: for i in 0..<n { out[i] = Float(Int64(littleEndian: base.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self))) }
            case .i32: for i in 0..<n { out[i] = Float(Int32(littleEndian: base.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self))) }
            case .u8: for i in 0..<n { out[i] = Float(base.load(fromByteOffset: i, as: UInt8.self)) }
            }
        }
        return t
    }

    /// The entry's values as int64 (for counters and integer tensors).
    public func int64Values(_ name: String) throws -> [Int64] {
        guard let e = entries[name] else { throw CheckpointError.missingKeys([name]) }
        let n = e.shape.reduce(1, *)
        return bytes.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> [Int64] in
            let base = raw.baseAddress! + dataStart + e.range.lowerBound
            switch e.dtype {
            case .i64: return (0..<n).map { Int64(littleEndian: base.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self)) }
            case .i32: return (0..<n).map { Int64(Int32(littleEndian: base.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self))) }
            default:
                let t = try? tensor(name)
                return (0..<n).map { Int64(t?.data[$0] ?? 0) }
            }
        }
    }
}

/// Collects named tensors and writes a safetensors file atomically.
public struct SafeTensorsWriter {
    private var items: [(name: String, dtype: DType, shape: [Int], bytes: Data)] = []
    /// Written as `__metadata__` (left out when empty).
    public var metadata: [String: String] = [:]

    /// An empty writer with the given metadata.
    public init(metadata: [String: String] = [:]) { self.metadata = metadata }

    /// Adds a float tensor, stored as F32 (default), F16 or BF16.
    public mutating func add(_ name: String, _ t: Tensor, as dtype: DType = .f32) {
        var d = Data(count: t.count * dtype.size)
        d.withUnsafeMutableBytes { (raw: UnsafeMutableRawBufferPointer) in
            let base = raw.baseAddress!
            for i in 0..<t.count {
                let v = t.data[i]
                switch dtype {
                case .f16: base.storeBytes(of: Float16(v).bitPattern.littleEndian, toByteOffset: 2 * i, as: UInt16.self)
                case .bf16:
                    // Round to nearest even.
                    let b = v.bitPattern
                    let r = (b &+ 0x7FFF &+ ((b >> 16) & 1)) >> 16
                    base.storeBytes(of: UInt16(truncatingIfNeeded: v.isNaN ? 0x7FC0 : r).littleEndian, toByteOffset: 2 * i, as: UInt16.self)
                default: base.storeBytes(of: v.bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self)
                }
            }
        }
        items.append((name, dtype == .f16 || dtype == .bf16 ? dtype : .f32, t.shape, d))
    }

    /// Adds an int64 tensor (a scalar when `shape` is empty).
    public mutating func addInt64(_ name: String, _ values: [Int64], shape: [Int] = []) {
        var d = Data(count: values.count * 8)
        d.withUnsafeMutableBytes { raw in
            for (i, v) in values.enumerated() { raw.baseAddress!.storeBytes(of: v.littleEndian, toByteOffset: 8 * i, as: Int64.self) }
        }
        items.append((name, .i64, shape, d))
    }

    /// The file's bytes.
    public func serialized() throws -> Data {
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        for it in items {
            header[it.name] = ["dtype": it.dtype.rawValue, "shape": it.shape, "data_offsets": [offset, offset + it.bytes.count]] as [String: Any]
            offset += it.bytes.count
        }
        var h = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while h.count % 8 != 0 { h.append(0x20) }
        var out = Data(capacity: 8 + h.count + offset)
        var n = UInt64(h.count).littleEndian
        withUnsafeBytes(of: &n) { out.append(contentsOf: $0) }
        out.append(h)
        for it in items { out.append(it.bytes) }
        return out
    }

    /// Writes the file atomically (temporary file, fsync, rename, fsync of the directory).
    public func write(to url: URL) throws {
        try AtomicFile.write(try serialized(), to: url)
    }
}

/// Writing files so that a crash never leaves a half-written one: a temporary name in the same
/// directory, fsync, rename over the target, fsync of the directory.
public enum AtomicFile {
    /// Writes `data` to `url` so that readers see either the old file or the complete new one.
    /// - Parameters:
    ///   - data: The complete file contents.
    ///   - url: The destination; an existing file there is replaced.
    /// - Throws: `CheckpointError.io` naming the step that failed (create, write, fsync, rename) and the
    ///   system error; the temporary file is removed then. A failed fsync of the directory is ignored.
    public static func write(_ data: Data, to url: URL) throws {
        let dir = url.deletingLastPathComponent()
        let tmp = dir.appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        let fd = Descriptors.open(tmp.path, O_WRONLY | O_CREAT | O_EXCL, 0o644)
        guard fd >= 0 else { throw CheckpointError.io("cannot create \(tmp.path): \(String(cString: strerror(errno)))") }
        var ok = false
        defer { if !ok { unlink(tmp.path) } }
        do {
            defer { Descriptors.close(fd) }
            try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
                var off = 0
                while off < raw.count {
                    let w = Foundation.write(fd, raw.baseAddress! + off, raw.count - off)
                    if w < 0 {
                        if errno == EINTR { continue }
                        throw CheckpointError.io("writing \(tmp.path): \(String(cString: strerror(errno)))")
                    }
                    off += w
                }
            }
            guard fsync(fd) == 0 else { throw CheckpointError.io("fsync \(tmp.path): \(String(cString: strerror(errno)))") }
        }
        guard rename(tmp.path, url.path) == 0 else { throw CheckpointError.io("rename to \(url.path): \(String(cString: strerror(errno)))") }
        ok = true
        let dfd = Descriptors.open(dir.path, O_RDONLY | O_DIRECTORY)
        if dfd >= 0 { fsync(dfd); Descriptors.close(dfd) }
    }
}

public extension Module {
    /// Copies a checkpoint's entries into this module's state by name, checking shapes.
    /// `aliases` maps a checkpoint key to the module key it duplicates (e.g. `affinity_layer.pars.0`
    /// → `affinity_layer.batch_to_feat_mat`); such keys are accepted and otherwise ignored.
    /// - Throws: `CheckpointError.stateMismatch` listing every missing, unexpected and mis-shaped key
    ///   (nothing is changed then), or a read error.
    func load(from file: SafeTensorsFile, aliases: [String: String] = [:], strict: Bool = true) throws {
        let entries = stateEntries
        var missing: [String] = [], misShaped: [String] = []
        let known = Set(entries.map(\.name))
        for e in entries {
            guard let fe = file.entries[e.name] else { missing.append(e.name); continue }
            switch e.value {
            case .float(let t):
                if fe.shape != t.shape { misShaped.append("\(e.name): file \(shapeString(fe.shape)), model \(shapeString(t.shape))") }
            case .int64:
                if fe.shape.reduce(1, *) != 1 { misShaped.append("\(e.name): file \(shapeString(fe.shape)), model []") }
            }
        }
        let unexpected = file.names.filter { !known.contains($0) && aliases[$0] == nil }.sorted()
        if !missing.isEmpty || !misShaped.isEmpty || (strict && !unexpected.isEmpty) {
            throw CheckpointError.stateMismatch(missing: missing, unexpected: strict ? unexpected : [], misShaped: misShaped)
        }
        for e in entries {
            switch e.value {
            case .float(let t): try t.copy(from: try file.tensor(e.name))
            case .int64(let c): c.value = try file.int64Values(e.name).first ?? 0
            }
        }
    }

    /// Adds this module's state (parameters and buffers, F32 or F16; counters as I64) to a writer.
    func addState(to writer: inout SafeTensorsWriter, dtype: DType = .f32, aliases: [(alias: String, of: String)] = []) {
        var byName: [String: StateValue] = [:]
        for e in stateEntries {
            switch e.value {
            case .float(let t): writer.add(e.name, t, as: dtype)
            case .int64(let c): writer.addInt64(e.name, [c.value])
            }
            byName[e.name] = e.value
        }
        for a in aliases {
            switch byName[a.of] {
            case .float(let t): writer.add(a.alias, t, as: dtype)
            case .int64(let c): writer.addInt64(a.alias, [c.value])
            case nil: break
            }
        }
    }
}
