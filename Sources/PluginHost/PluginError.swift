import CAffinityPlugin

/// Why a plugin could not be loaded or a plugin call failed. `description` is a sentence that can be
/// shown to a person as it is (the registry's failure list and `ListPlugins` carry it).
public enum PluginError: Error, Equatable, CustomStringConvertible, Sendable {
    /// `dlopen` refused the file (not a shared library, missing dependency, unresolved symbol).
    case openFailed(path: String, reason: String)
    /// The library does not export the entry symbol.
    case missingEntry(path: String)
    /// The entry symbol returned NULL.
    case nullDescriptor(path: String)
    /// The plugin was built for another ABI version.
    case abiMismatch(path: String, found: UInt32, expected: UInt32)
    /// A struct announces a size smaller than version 1 of the ABI defines.
    case structTooSmall(path: String, structure: String, size: UInt32, minimum: Int)
    /// The descriptor is malformed (no id, bad id, unknown kind, missing function table or pointer).
    case badDescriptor(path: String, reason: String)
    /// Another loaded plugin already has this id.
    case duplicateId(id: String, path: String, loadedFrom: String)
    /// System mode: the file or a directory above it is not root-owned or is writable by others.
    case untrustedLocation(path: String, reason: String)
    /// No loaded plugin has this id (and kind).
    case notFound(id: String, kind: String)
    /// No decoder (the built-in PNG reader or a loaded plugin) recognises the image's bytes.
    case unknownImageFormat(firstBytes: String)
    /// A plugin call returned a failure status.
    case callFailed(plugin: String, operation: String, code: Int32, message: String)

    public var description: String {
        switch self {
        case .openFailed(let path, let reason):
            return "Could not load the plugin \(path): \(reason)."
        case .missingEntry(let path):
            return "The library \(path) is not an affinity plugin: it does not export the symbol \(AFFINITY_PLUGIN_ENTRY_SYMBOL)."
        case .nullDescriptor(let path):
            return "The plugin \(path) returned no descriptor from \(AFFINITY_PLUGIN_ENTRY_SYMBOL)."
        case .abiMismatch(let path, let found, let expected):
            return "The plugin \(path) was built for plugin ABI version \(found); this host speaks version \(expected)."
        case .structTooSmall(let path, let structure, let size, let minimum):
            return "The plugin \(path) announces a \(structure) of \(size) bytes; ABI version 1 needs at least \(minimum)."
        case .badDescriptor(let path, let reason):
            return "The plugin \(path) has a malformed descriptor: \(reason)."
        case .duplicateId(let id, let path, let loadedFrom):
            return "The plugin \(path) has the id \"\(id)\", already taken by the plugin loaded from \(loadedFrom)."
        case .untrustedLocation(let path, let reason):
            return "Refusing to load plugins from \(path): \(reason)."
        case .notFound(let id, let kind):
            return "No \(kind) plugin with the id \"\(id)\" is loaded."
        case .unknownImageFormat(let firstBytes):
            return "No image decoder recognises the data (it starts with \(firstBytes)); PNG is built in, other formats need a decoder plugin."
        case .callFailed(let plugin, let operation, let code, let message):
            let text = message.isEmpty ? "it gave no reason" : message
            return "The plugin \(plugin) failed in \(operation) (\(statusName(code))): \(text.hasSuffix(".") ? String(text.dropLast()) : text)."
        }
    }
}

/// The name of an `AFFINITY_E_*` status code.
public func statusName(_ code: Int32) -> String {
    switch code {
    case AFFINITY_OK: return "ok"
    case AFFINITY_E_FAILED: return "failed"
    case AFFINITY_E_INVALID_ARGUMENT: return "invalid argument"
    case AFFINITY_E_UNSUPPORTED: return "unsupported"
    case AFFINITY_E_CORRUPT: return "corrupt data"
    case AFFINITY_E_IO: return "I/O error"
    case AFFINITY_E_NO_MEMORY: return "out of memory"
    case AFFINITY_E_TOO_LARGE: return "too large"
    case AFFINITY_E_BROKEN_ENTRY: return "broken entry"
    default: return "status \(code)"
    }
}

/// A fresh, empty error buffer for one call.
@inline(__always)
func makeErrorBuffer() -> affinity_error { affinity_error() }

/// The sentence a plugin wrote into an error buffer.
func message(of error: inout affinity_error) -> String {
    withUnsafeBytes(of: &error.message) { raw in
        let bytes = raw.bindMemory(to: UInt8.self)
        let end = bytes.firstIndex(of: 0) ?? bytes.count
        return String(decoding: bytes[0..<end], as: UTF8.self)
    }
}

/// A C string from a fixed-size char array field (the plugin may have filled it to the brim).
func string<T>(fromCharArray tuple: inout T) -> String {
    withUnsafeBytes(of: &tuple) { raw in
        let bytes = raw.bindMemory(to: UInt8.self)
        let end = bytes.firstIndex(of: 0) ?? bytes.count
        return String(decoding: bytes[0..<end], as: UTF8.self)
    }
}
