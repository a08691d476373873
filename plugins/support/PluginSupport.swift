// Shared by the Swift plugins (linked statically into each plugin library): error reporting through
// the host's affinity_error, options JSON, C strings that live forever, and the dataset-reader
// plumbing (`openReader`, entries, broken entries, opening files) so a reader only reads its
// options and calls its layout (DataSetLayouts.swift). The host links this module for the layouts
// only (Service's built-in reader); the C-ABI parts here are called by plugins alone.
import CAffinityPlugin
import Foundation

/// Writes `text` into the host's error buffer (truncated at a UTF-8 boundary) and returns `code`.
@discardableResult
public func fail(_ error: UnsafeMutablePointer<affinity_error>?, _ code: Int32, _ text: String) -> Int32 {
    guard let error else { return code }
    withUnsafeMutableBytes(of: &error.pointee.message) { raw in
        var bytes = Array(text.utf8)
        if bytes.count > raw.count - 1 {
            bytes = Array(bytes.prefix(raw.count - 1))
            while let last = bytes.last, last & 0xC0 == 0x80 { bytes.removeLast() }   // continuation bytes
            if let last = bytes.last, last >= 0xC0 { bytes.removeLast() }              // a dangling lead byte
        }
        raw.copyBytes(from: bytes)
        raw[bytes.count] = 0
    }
    return code
}

/// Copies `text` into a fixed-size C char array field, NUL-terminated, truncated to fit.
public func copy<T>(_ text: String, into field: inout T) {
    withUnsafeMutableBytes(of: &field) { raw in
        let bytes = Array(text.utf8.prefix(raw.count - 1))
        raw.copyBytes(from: bytes)
        raw[bytes.count] = 0
    }
}

/// Copies `text` into a host buffer of `size` bytes, NUL-terminated, truncated to fit.
public func copy(_ text: String, to buffer: UnsafeMutablePointer<CChar>?, size: Int) {
    guard let buffer, size > 0 else { return }
    let bytes = Array(text.utf8.prefix(size - 1))
    for (i, b) in bytes.enumerated() { buffer[i] = CChar(bitPattern: b) }
    buffer[bytes.count] = 0
}

/// A C string that lives as long as the process (descriptor fields).
public func immortal(_ text: String) -> UnsafePointer<CChar> { UnsafePointer(strdup(text)!) }

/// Options JSON → a dictionary. NULL or empty means `{}`.
public struct OptionsError: Error {
    public let message: String
    public init(message: String) { self.message = message }
}

public func parseOptions(_ json: UnsafePointer<CChar>?) throws -> [String: Any] {
    guard let json else { return [:] }
    let text = String(cString: json)
    if text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { return [:] }
    guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) else {
        throw OptionsError(message: "The options are not valid JSON: \(text)")
    }
    guard let dictionary = object as? [String: Any] else {
        throw OptionsError(message: "The options must be a JSON object, got: \(text)")
    }
    return dictionary
}

/// A string option, or nil when absent.
public func stringOption(_ options: [String: Any], _ key: String) throws -> String? {
    guard let v = options[key] else { return nil }
    guard let s = v as? String else { throw OptionsError(message: "The option \"\(key)\" must be a string.") }
    return s
}

/// A number option, or `fallback` when absent.
public func numberOption(_ options: [String: Any], _ key: String, _ fallback: Double) throws -> Double {
    guard let v = options[key] else { return fallback }
    guard let n = v as? NSNumber, !(v is Bool) else { throw OptionsError(message: "The option \"\(key)\" must be a number.") }
    return n.doubleValue
}

/// Rejects keys the plugin does not know (a misspelt option must not be silently ignored).
public func checkKeys(_ options: [String: Any], allowed: [String], plugin: String) throws {
    for key in options.keys.sorted() where !allowed.contains(key) {
        throw OptionsError(message: "The \(plugin) plugin has no option \"\(key)\"; it knows \(allowed.map { "\"\($0)\"" }.joined(separator: ", ")).")
    }
}

/// One usable entry of a data set.
public struct ReaderEntry {
    /// Path relative to the root (reports, `affinity_sample.name`).
    public var name: String
    public var imagePath: String
    /// nil: no mask file.
    public var maskPath: String?
    /// -1: no class label.
    public var label: Int32
    public init(name: String, imagePath: String, maskPath: String?, label: Int32) {
        self.name = name; self.imagePath = imagePath; self.maskPath = maskPath; self.label = label
    }
}

/// A reader handle: what `open` found.
public final class ReaderState {
    public var entries: [ReaderEntry] = []
    public var broken: [(name: String, reason: String)] = []
    public init(_ listing: LayoutListing = LayoutListing()) { entries = listing.entries; broken = listing.broken }

    public var handle: UnsafeMutableRawPointer { Unmanaged.passRetained(self).toOpaque() }
    public static func from(_ handle: UnsafeMutableRawPointer?) -> ReaderState? {
        handle.map { Unmanaged<ReaderState>.fromOpaque($0).takeUnretainedValue() }
    }
    public static func release(_ handle: UnsafeMutableRawPointer?) {
        if let handle { Unmanaged<ReaderState>.fromOpaque(handle).release() }
    }
}

/// A dataset reader's `open` (the C table's).
public typealias ReaderOpen = @convention(c) (UnsafePointer<CChar>?, UnsafePointer<CChar>?, UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                                              UnsafeMutablePointer<affinity_error>?) -> Int32

/// The body of a reader's `open`: checks the root is a folder, parses the options JSON and refuses keys not in
/// `allowed`, then `read` lists the set (from the root and the options) and the handle holds what
/// it found. `OptionsError` (the options, thrown by `read` too) is `AFFINITY_E_INVALID_ARGUMENT`,
/// `LayoutError` (the root cannot be read in the layout) is `AFFINITY_E_IO`, each with its sentence.
public func openReader(_ rootPointer: UnsafePointer<CChar>?, _ optionsJSON: UnsafePointer<CChar>?,
                       _ out: UnsafeMutablePointer<UnsafeMutableRawPointer?>?, _ errorOut: UnsafeMutablePointer<affinity_error>?,
                       plugin: String, allowed: [String],
                       read: (_ root: String, _ options: [String: Any]) throws -> LayoutListing) -> Int32 {
    guard let rootPointer, let out else { return fail(errorOut, AFFINITY_E_INVALID_ARGUMENT, "open() needs a root and an output handle.") }
    out.pointee = nil
    let root = String(cString: rootPointer)
    do {
        guard isDirectory(root) else { throw LayoutError("The data-set root \(root) is not a folder.") }
        let options = try parseOptions(optionsJSON)
        try checkKeys(options, allowed: allowed, plugin: plugin)
        out.pointee = ReaderState(try read(root, options)).handle
        return AFFINITY_OK
    } catch let e as OptionsError {
        return fail(errorOut, AFFINITY_E_INVALID_ARGUMENT, e.message)
    } catch let e as LayoutError {
        return fail(errorOut, AFFINITY_E_IO, e.message)
    } catch {
        return fail(errorOut, AFFINITY_E_FAILED, "The \(plugin) reader failed: \(error)")
    }
}

// The reader functions every Swift reader plugin shares (count, read, broken entries, close).

public let readerCount: @convention(c) (UnsafeMutableRawPointer?) -> Int64 = { handle in
    Int64(ReaderState.from(handle)?.entries.count ?? 0)
}

public let readerRead: @convention(c) (UnsafeMutableRawPointer?, Int64, UnsafeMutablePointer<affinity_sample>?,
                                       UnsafeMutablePointer<affinity_error>?) -> Int32 = { handle, index, sample, error in
    guard let state = ReaderState.from(handle), let sample else {
        return fail(error, AFFINITY_E_INVALID_ARGUMENT, "read() needs a reader and a sample struct.")
    }
    guard index >= 0, index < state.entries.count else {
        return fail(error, AFFINITY_E_INVALID_ARGUMENT, "Sample \(index) is outside 0..<\(state.entries.count).")
    }
    let entry = state.entries[Int(index)]
    // Fill only the fields that fit inside the host's struct (the struct only grows).
    var s = affinity_sample()
    s.struct_size = UInt32(MemoryLayout<affinity_sample>.size)
    s.image_fd = -1
    s.mask_fd = -1
    s.label = entry.label
    copy(entry.name, into: &s.name)
    let imageFD = open(entry.imagePath, O_RDONLY | O_CLOEXEC)
    if imageFD < 0 {
        let reason = String(cString: strerror(errno))
        publish(s, to: sample)
        return fail(error, AFFINITY_E_BROKEN_ENTRY, "The image \(entry.name) cannot be opened: \(reason).")
    }
    var maskFD: Int32 = -1
    if let mask = entry.maskPath {
        maskFD = open(mask, O_RDONLY | O_CLOEXEC)
        if maskFD < 0 {
            let reason = String(cString: strerror(errno))
            close(imageFD)
            publish(s, to: sample)
            return fail(error, AFFINITY_E_BROKEN_ENTRY, "The mask of \(entry.name) cannot be opened: \(reason).")
        }
    }
    s.image_fd = imageFD
    s.mask_fd = maskFD
    publish(s, to: sample)
    return AFFINITY_OK
}

private func publish(_ s: affinity_sample, to out: UnsafeMutablePointer<affinity_sample>) {
    let hostSize = Int(out.pointee.struct_size)
    let n = hostSize > 0 && hostSize < MemoryLayout<affinity_sample>.size ? hostSize : MemoryLayout<affinity_sample>.size
    var copy = s
    copy.struct_size = UInt32(n)
    withUnsafeBytes(of: &copy) { src in UnsafeMutableRawPointer(out).copyMemory(from: src.baseAddress!, byteCount: n) }
}

public let readerBrokenCount: @convention(c) (UnsafeMutableRawPointer?) -> Int64 = { handle in
    Int64(ReaderState.from(handle)?.broken.count ?? 0)
}

public let readerBrokenEntry: @convention(c) (UnsafeMutableRawPointer?, Int64, UnsafeMutablePointer<CChar>?, Int,
                                              UnsafeMutablePointer<CChar>?, Int) -> Int32 = { handle, index, name, nameSize, reason, reasonSize in
    guard let state = ReaderState.from(handle), index >= 0, index < state.broken.count else { return AFFINITY_E_INVALID_ARGUMENT }
    let b = state.broken[Int(index)]
    copy(b.name, to: name, size: nameSize)
    copy(b.reason, to: reason, size: reasonSize)
    return AFFINITY_OK
}

public let readerClose: @convention(c) (UnsafeMutableRawPointer?) -> Void = { handle in ReaderState.release(handle) }

/// A reader table around an `open` function that fills a `ReaderState`.
public func makeReaderTable(open: ReaderOpen) -> UnsafePointer<affinity_dataset_reader> {
    let table = UnsafeMutablePointer<affinity_dataset_reader>.allocate(capacity: 1)
    table.initialize(to: affinity_dataset_reader(
        struct_size: UInt32(MemoryLayout<affinity_dataset_reader>.size), reserved: 0,
        open: open, count: readerCount, read: readerRead, broken_count: readerBrokenCount,
        broken_entry: readerBrokenEntry, close: readerClose))
    return UnsafePointer(table)
}

/// A descriptor that lives as long as the process.
public func makeDescriptor(id: String, version: String, description: String, kind: affinity_plugin_kind,
                           decoder: UnsafePointer<affinity_image_decoder>? = nil,
                           reader: UnsafePointer<affinity_dataset_reader>? = nil,
                           head: UnsafePointer<affinity_head>? = nil) -> UnsafePointer<affinity_plugin> {
    let d = UnsafeMutablePointer<affinity_plugin>.allocate(capacity: 1)
    d.initialize(to: affinity_plugin(
        abi_version: AFFINITY_PLUGIN_ABI_VERSION, struct_size: UInt32(MemoryLayout<affinity_plugin>.size),
        id: immortal(id), version: immortal(version), description: immortal(description),
        kind: kind.rawValue, reserved: 0, decoder: decoder, reader: reader, head: head))
    return UnsafePointer(d)
}

/// The descriptor of a dataset reader whose `open` fills a `ReaderState` (see `openReader`).
public func makeReaderDescriptor(id: String, version: String, open: ReaderOpen, description: String) -> UnsafePointer<affinity_plugin> {
    makeDescriptor(id: id, version: version, description: description, kind: AFFINITY_KIND_DATASET_READER, reader: makeReaderTable(open: open))
}
