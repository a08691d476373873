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

public extension CheckpointError {
    /// The checkpoint error for a failed whole-file read or atomic write (SystemIO's `AtomicFile`):
    /// `.io` naming the path and the failing call, the kind NN's file writes have always thrown.
    init(_ error: FileIOError) {
        switch error {
        case .io(let path, let message): self = .io("\(path): \(message)")
        case .fileTooLarge(let bytes, let limit): self = .io("the file is \(bytes) bytes, larger than the limit of \(limit) bytes")
        }
    }

    /// Runs `body`; a `FileIOError` it throws comes out as `CheckpointError.io` (other errors pass
    /// through). For callers of `AtomicFile` whose failures are reported as checkpoint errors.
    static func mappingFileErrors<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as FileIOError { throw CheckpointError(e) }
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

    /// The largest file `init(contentsOf:limit:)` reads by default (4 GiB; a model with its
    /// optimizer state is well under 1 GiB).
    public static let defaultByteLimit = 4 << 30

    /// Reads and validates a file. The file is read into memory, not mapped: another process that
    /// truncates or rewrites it afterwards cannot fault or change the bytes that were validated.
    /// - Parameter limit: the largest accepted file size in bytes.
    /// - Throws: `CheckpointError` naming what is wrong (I/O, too large, truncated, corrupt header,
    ///   bad offsets).
    public init(contentsOf url: URL, limit: Int = SafeTensorsFile.defaultByteLimit) throws {
        let d: Data
        do { d = try AtomicFile.read(contentsOf: url, limit: limit) } catch let e as FileIOError {
            switch e {
            case .io(_, let message): throw CheckpointError.io("cannot read \(url.path): \(message)")
            case .fileTooLarge(let bytes, let limit):
                throw CheckpointError.io("cannot read \(url.path): the file is \(bytes) bytes, larger than the limit of \(limit) bytes")
            }
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
            // Every number is checked as the integer it must be (a fraction, a boolean or a value
            // beyond Int is refused, not rounded), and the byte count is computed without overflow:
            // the readers below index the data with these numbers.
            var shape: [Int] = []
            var elements = 1
            for s in shapeAny {
                guard let v = jsonInteger(s), v >= 0, v < 1 << 31 else { throw CheckpointError.corrupt("entry \(key) has a bad shape") }
                shape.append(v)
                let (m, o) = elements.multipliedReportingOverflow(by: v)
                guard !o else { throw CheckpointError.corrupt("entry \(key) has a bad shape") }
                elements = m
            }
            let (byteCount, overflow) = elements.multipliedReportingOverflow(by: dtype.size)
            guard !overflow else { throw CheckpointError.corrupt("entry \(key) has a bad shape: \(shapeString(shape)) of \(dt) is too large") }
            guard let b = jsonInteger(offAny[0]), let en = jsonInteger(offAny[1]), b >= 0, en >= b else {
                throw CheckpointError.corrupt("entry \(key) has bad data_offsets")
            }
            guard en <= dataLength else {
                throw CheckpointError.truncated("entry \(key) ends at byte \(en) of the data, but the data has \(dataLength) bytes")
            }
            guard en - b == byteCount else {
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

    /// The entry's values as int64 (for counters and integer tensors). Float entries are truncated
    /// toward zero.
    /// - Throws: `CheckpointError.missingKeys` if there is no such entry; `.corrupt` for a float
    ///   value that is not finite or beyond Int64's range.
    public func int64Values(_ name: String) throws -> [Int64] {
        guard let e = entries[name] else { throw CheckpointError.missingKeys([name]) }
        let n = e.shape.reduce(1, *)
        switch e.dtype {
        case .i64, .i32:
            return bytes.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> [Int64] in
                let base = raw.baseAddress! + dataStart + e.range.lowerBound
                if e.dtype == .i64 { return (0..<n).map { Int64(littleEndian: base.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self)) } }
                return (0..<n).map { Int64(Int32(littleEndian: base.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self))) }
            }
        case .u8, .f32, .f16, .bf16:
            let t = try tensor(name)
            var out: [Int64] = []
            out.reserveCapacity(n)
            for i in 0..<n {
                // Float(Int64.max) rounds up to 2^63, which is out of range: hence `<`, not `<=`.
                let v = t.data[i].rounded(.towardZero)
                guard v.isFinite, v >= -0x1p63, v < 0x1p63 else {
                    throw CheckpointError.corrupt("entry \(name) holds \(t.data[i]), which is not an int64 value")
                }
                out.append(Int64(v))
            }
            return out
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

    /// Adds a float tensor, stored as `dtype`: F32 (default), F16 or BF16 (rounded to nearest even),
    /// or an integer type I64, I32 or U8, whose values are the floats truncated toward zero and
    /// clamped to the type's range (NaN is stored as 0).
    public mutating func add(_ name: String, _ t: Tensor, as dtype: DType = .f32) {
        let n = t.count, x = t.data
        var d = Data(count: n * dtype.size)
        d.withUnsafeMutableBytes { (raw: UnsafeMutableRawBufferPointer) in
            // Each case writes exactly `dtype.size` bytes per element: `d` holds n · dtype.size.
            let base = raw.baseAddress!
            switch dtype {
            case .f32:
                for i in 0..<n { base.storeBytes(of: x[i].bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
            case .f16:
                for i in 0..<n { base.storeBytes(of: Float16(x[i]).bitPattern.littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
            case .bf16:
                for i in 0..<n {
                    let v = x[i], b = v.bitPattern
                    let r = (b &+ 0x7FFF &+ ((b >> 16) & 1)) >> 16  // round to nearest even
                    base.storeBytes(of: UInt16(truncatingIfNeeded: v.isNaN ? 0x7FC0 : r).littleEndian, toByteOffset: 2 * i, as: UInt16.self)
                }
            case .i64:
                for i in 0..<n { base.storeBytes(of: Self.clamped(x[i], Int64.self).littleEndian, toByteOffset: 8 * i, as: Int64.self) }
            case .i32:
                for i in 0..<n { base.storeBytes(of: Self.clamped(x[i], Int32.self).littleEndian, toByteOffset: 4 * i, as: Int32.self) }
            case .u8:
                for i in 0..<n { base.storeBytes(of: Self.clamped(x[i], UInt8.self), toByteOffset: i, as: UInt8.self) }
            }
        }
        items.append((name, dtype, t.shape, d))
    }

    /// `v` truncated toward zero and clamped to `I`'s range; NaN gives 0.
    private static func clamped<I: FixedWidthInteger>(_ v: Float, _: I.Type) -> I {
        if v.isNaN { return 0 }
        let t = v.rounded(.towardZero)
        if t <= Float(I.min) { return I.min }
        // Float(I.max) may round up to 2^bits (out of range), so compare with `>=` and clamp.
        if t >= Float(I.max) { return I.max }
        return I(t)
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
    /// - Throws: `CheckpointError.corrupt` for an entry whose bytes do not fit its shape and dtype
    ///   (`addInt64` with more or fewer values than `shape` holds): the reader would refuse the file.
    public func serialized() throws -> Data {
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        for it in items {
            var elements = 1
            for d in it.shape {
                let (m, o) = elements.multipliedReportingOverflow(by: d)
                guard d >= 0, !o else { throw CheckpointError.corrupt("entry \(it.name) has a bad shape \(shapeString(it.shape))") }
                elements = m
            }
            let size = elements.multipliedReportingOverflow(by: it.dtype.size)
            guard !size.overflow, size.partialValue == it.bytes.count else {
                throw CheckpointError.corrupt("entry \(it.name): \(it.bytes.count / it.dtype.size) values for shape \(shapeString(it.shape))")
            }
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

    /// Writes the file atomically (SystemIO's `AtomicFile`: temporary file, fsync, rename, fsync of
    /// the directory).
    /// - Throws: `CheckpointError.io` naming the path and the failing call.
    public func write(to url: URL) throws {
        let data = try serialized()
        try CheckpointError.mappingFileErrors { try AtomicFile.write(data, to: url) }
    }
}

/// A JSON number that is an integer: not a boolean, not a fraction, within Int's range.
private func jsonInteger(_ value: Any) -> Int? {
    guard let n = value as? NSNumber, String(cString: n.objCType) != "c" else { return nil }  // "c": true/false
    return value as? Int  // nil for 1.5, 1e300, 2^64 − 1
}

public extension Module {
    /// Copies a checkpoint's entries into this module's state by name, checking shapes.
    /// `aliases` maps a checkpoint key to the module key it duplicates (e.g. `affinity_layer.pars.0`
    /// → `affinity_layer.batch_to_feat_mat`); such keys are accepted and otherwise ignored.
    /// Everything is checked before anything is copied: a load that throws changes nothing.
    /// - Throws: `CheckpointError.stateMismatch` listing every missing, unexpected and mis-shaped key,
    ///   `.corrupt` for a counter whose value is not an int64, or a read error.
    func load(from file: SafeTensorsFile, aliases: [String: String] = [:], strict: Bool = true) throws {
        let counters = try checkLoad(from: file, aliases: aliases, strict: strict)
        for e in stateEntries {
            switch e.value {
            case .float(let t): try t.copy(from: try file.tensor(e.name))
            case .int64(let c): c.value = counters[e.name] ?? 0
            }
        }
    }

    /// Checks that `load(from:aliases:strict:)` would succeed, changing nothing: every module key is
    /// in the file with the module's shape (a counter: one value that is an int64), and, when
    /// `strict`, every file key is a module key or an alias.
    /// - Returns: the counters' values by key, read and checked.
    /// - Throws: as `load(from:aliases:strict:)`.
    @discardableResult
    func checkLoad(from file: SafeTensorsFile, aliases: [String: String] = [:], strict: Bool = true) throws -> [String: Int64] {
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
        var counters: [String: Int64] = [:]
        for e in entries {
            if case .int64 = e.value { counters[e.name] = try file.int64Values(e.name).first ?? 0 }
        }
        return counters
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
