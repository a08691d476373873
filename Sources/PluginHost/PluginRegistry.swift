import CAffinityPlugin
import Foundation

/// The three kinds of plugin (`affinity_plugin_kind`).
public enum PluginKind: String, Sendable, CaseIterable {
    case imageDecoder = "image-decoder"
    case datasetReader = "dataset-reader"
    case head

    init?(raw: UInt32) {
        switch raw {
        case AFFINITY_KIND_IMAGE_DECODER.rawValue: self = .imageDecoder
        case AFFINITY_KIND_DATASET_READER.rawValue: self = .datasetReader
        case AFFINITY_KIND_HEAD.rawValue: self = .head
        default: return nil
        }
    }
}

/// A plugin that passed every check. It stays loaded for the life of the process.
// @unchecked Sendable: immutable after loading (the descriptor's tables live in the library, which stays loaded); every call brings its own error buffer, so concurrent calls share nothing (plugins/include/affinity_plugin.h), and reader and head handles, used from one thread at a time, live elsewhere.
public final class LoadedPlugin: @unchecked Sendable, CustomStringConvertible {
    /// The plugin's id (unique in a registry), e.g. `covidx-ct`.
    public let id: String
    /// The plugin's own version string.
    public let version: String
    /// Its one-sentence description.
    public let summary: String
    public let kind: PluginKind
    /// The file it was loaded from (as given to the loader).
    public let path: String
    /// The descriptor the entry symbol returned (static in the plugin, never freed).
    public let descriptor: UnsafePointer<affinity_plugin>

    init(id: String, version: String, summary: String, kind: PluginKind, path: String, descriptor: UnsafePointer<affinity_plugin>) {
        self.id = id; self.version = version; self.summary = summary; self.kind = kind; self.path = path
        self.descriptor = descriptor
    }

    /// `id version`: what results and model cards record.
    public var record: String { "\(id) \(version)" }
    public var description: String { "\(id) \(version) (\(kind.rawValue)) from \(path)" }
}

/// A file that did not load, and why.
public struct PluginLoadFailure: Sendable, Equatable {
    public let path: String
    public let error: PluginError
    /// The sentence.
    public var reason: String { error.description }
}

/// Loads plugins and keeps the list of what loaded and, for what failed, why.
///
/// Loading: `dlopen(RTLD_NOW | RTLD_LOCAL)` (every symbol resolved up front, none leaking into the
/// next plugin), the entry symbol `affinity_plugin_entry`, then checks: ABI version equal to the
/// host's, `struct_size` at least version 1's (a larger one is accepted — the struct only grows),
/// an id of `[a-z0-9._-]`, a version, a known kind whose function table is present, sized and
/// complete, and an id no other loaded plugin has. Nothing is ever unloaded: not a plugin that
/// loaded (its descriptors and function pointers are handed out freely), and not a library that
/// failed a check either (a Swift library cannot be unloaded safely once its metadata is
/// registered); a failed library costs its mapping and nothing else.
///
/// In system mode every directory from `/` down to the plugin's file, and the file itself, must be
/// owned by root and not writable by group or others (so only root could have put code there); in
/// development mode (the build folder, tests) any readable file loads.
// @unchecked Sendable: the loaded and failed lists are read and changed under `lock`.
public final class PluginRegistry: @unchecked Sendable {
    /// Where `affinityd` looks for plugins on an installed system.
    public static let systemDirectory = "/usr/lib/affinity/plugins"

    public enum TrustMode: Sendable { case system, development }

    public let mode: TrustMode
    private let lock = NSLock()
    private var loaded: [LoadedPlugin] = []
    private var failed: [PluginLoadFailure] = []

    public init(mode: TrustMode) { self.mode = mode }

    /// Every plugin that loaded, in load order.
    public var plugins: [LoadedPlugin] { lock.lock(); defer { lock.unlock() }; return loaded }
    /// Every file that did not load, with the reason.
    public var failures: [PluginLoadFailure] { lock.lock(); defer { lock.unlock() }; return failed }

    /// The loaded plugin with this id.
    public func plugin(id: String) -> LoadedPlugin? { plugins.first { $0.id == id } }

    /// Loads one library.
    /// - Throws: `PluginError` (also recorded in `failures`).
    @discardableResult
    public func load(path: String) throws -> LoadedPlugin {
        do {
            let plugin = try open(path: path)
            lock.lock()
            defer { lock.unlock() }
            if let other = loaded.first(where: { $0.id == plugin.id }) {
                throw PluginError.duplicateId(id: plugin.id, path: path, loadedFrom: other.path)
            }
            loaded.append(plugin)
            return plugin
        } catch let error as PluginError {
            lock.lock()
            failed.append(PluginLoadFailure(path: path, error: error))
            lock.unlock()
            throw error
        }
    }

    /// Loads every `*.so` file of a directory, in name order; a file that fails is recorded in
    /// `failures` and the rest still load.
    /// - Returns: the plugins loaded by this call.
    /// - Throws: `PluginError.untrustedLocation` (system mode) or `.openFailed` when the directory
    ///   cannot be listed; nothing is loaded then.
    @discardableResult
    public func loadDirectory(_ directory: String) throws -> [LoadedPlugin] {
        if mode == .system { try checkTrusted(directory, isDirectory: true) }
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            throw PluginError.openFailed(path: directory, reason: "the directory cannot be listed (\(error.localizedDescription))")
        }
        var result: [LoadedPlugin] = []
        for name in names.sorted() where name.hasSuffix(".so") {
            if let p = try? load(path: directory + "/" + name) { result.append(p) }
        }
        return result
    }

    /// One entry per plugin for `ListPlugins`: loaded ones (`state` "loaded", `id`, `version`,
    /// `kind`, `description`, `path`) then failed files (`state` "failed", `path`, `error`).
    public var listing: [[String: String]] {
        plugins.map { ["state": "loaded", "id": $0.id, "version": $0.version, "kind": $0.kind.rawValue,
                       "description": $0.summary, "path": $0.path] }
            + failures.map { ["state": "failed", "path": $0.path, "error": $0.reason] }
    }

    // MARK: - Loading

    private func open(path: String) throws -> LoadedPlugin {
        if mode == .system { try checkTrusted(path, isDirectory: false) }
        _ = dlerror()
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            let reason = dlerror().map { String(cString: $0) } ?? "unknown dlopen error"
            throw PluginError.openFailed(path: path, reason: reason)
        }
        guard let symbol = dlsym(handle, AFFINITY_PLUGIN_ENTRY_SYMBOL) else {
            throw PluginError.missingEntry(path: path)
        }
        let entry = unsafeBitCast(symbol, to: (@convention(c) (UInt32) -> UnsafePointer<affinity_plugin>?).self)
        guard let descriptor = entry(AFFINITY_PLUGIN_ABI_VERSION) else { throw PluginError.nullDescriptor(path: path) }
        // abi_version and struct_size are the first two fields of every version.
        let abi = descriptor.pointee.abi_version
        guard abi == AFFINITY_PLUGIN_ABI_VERSION else {
            throw PluginError.abiMismatch(path: path, found: abi, expected: AFFINITY_PLUGIN_ABI_VERSION)
        }
        let d = descriptor.pointee
        try requireSize(d.struct_size, MemoryLayout<affinity_plugin>.size, "plugin descriptor", path)
        guard let idPointer = d.id else { throw PluginError.badDescriptor(path: path, reason: "it has no id") }
        let id = String(cString: idPointer)
        let allowed = Set("abcdefghijklmnopqrstuvwxyz0123456789._-")
        guard !id.isEmpty, id.count <= 64, id.allSatisfy({ allowed.contains($0) }) else {
            throw PluginError.badDescriptor(path: path, reason: "the id \"\(id)\" is not 1–64 characters of a–z, 0–9, '.', '_', '-'")
        }
        guard let versionPointer = d.version else { throw PluginError.badDescriptor(path: path, reason: "it has no version") }
        let version = String(cString: versionPointer)
        let summary = d.description.map { String(cString: $0) } ?? ""
        guard let kind = PluginKind(raw: d.kind) else {
            throw PluginError.badDescriptor(path: path, reason: "its kind \(d.kind) is not one of 1 (image decoder), 2 (dataset reader), 3 (head)")
        }
        switch kind {
        case .imageDecoder:
            // Field by field through the pointer: a table of ABI 1.0 is shorter than this host's
            // (`values` came with 1.1), so only the 1.0 size is required and nothing past it is read.
            guard let t = d.decoder else { throw missingTable("decoder", path) }
            try requireSize(t.pointee.struct_size, MemoryLayout<affinity_image_decoder>.offset(of: \.values)!, "decoder table", path)
            guard t.pointee.probe != nil, t.pointee.info != nil, t.pointee.decode != nil else { throw missingFunction("decoder", path) }
        case .datasetReader:
            guard let t = d.reader?.pointee else { throw missingTable("reader", path) }
            try requireSize(t.struct_size, MemoryLayout<affinity_dataset_reader>.size, "reader table", path)
            guard t.open != nil, t.count != nil, t.read != nil, t.broken_count != nil, t.broken_entry != nil, t.close != nil else {
                throw missingFunction("reader", path)
            }
        case .head:
            guard let t = d.head?.pointee else { throw missingTable("head", path) }
            try requireSize(t.struct_size, MemoryLayout<affinity_head>.size, "head table", path)
            guard t.create != nil, t.parameter_count != nil, t.parameter != nil, t.forward != nil, t.backward != nil,
                  t.destroy != nil else { throw missingFunction("head", path) }
        }
        return LoadedPlugin(id: id, version: version, summary: summary, kind: kind, path: path, descriptor: descriptor)
    }

    private func requireSize(_ size: UInt32, _ minimum: Int, _ what: String, _ path: String) throws {
        guard Int(size) >= minimum else { throw PluginError.structTooSmall(path: path, structure: what, size: size, minimum: minimum) }
    }

    private func missingTable(_ kind: String, _ path: String) -> PluginError {
        .badDescriptor(path: path, reason: "it is a \(kind) plugin without a \(kind) function table")
    }

    private func missingFunction(_ kind: String, _ path: String) -> PluginError {
        .badDescriptor(path: path, reason: "its \(kind) table lacks a required function")
    }

    /// System mode: `path` and every directory above it must be root-owned and not writable by group
    /// or others; `path` must be a regular file (or a directory when `isDirectory`).
    private func checkTrusted(_ path: String, isDirectory: Bool) throws {
        guard let resolved = realpath(path, nil) else {
            throw PluginError.untrustedLocation(path: path, reason: "it does not exist or cannot be resolved")
        }
        let real = String(cString: resolved)
        free(resolved)
        var current = real
        var first = true
        while true {
            var info = stat()
            guard stat(current, &info) == 0 else {
                throw PluginError.untrustedLocation(path: path, reason: "\(current) cannot be examined")
            }
            let type = info.st_mode & S_IFMT
            if first {
                if isDirectory && type != S_IFDIR { throw PluginError.untrustedLocation(path: path, reason: "it is not a directory") }
                if !isDirectory && type != S_IFREG { throw PluginError.untrustedLocation(path: path, reason: "it is not a regular file") }
            }
            if info.st_uid != 0 {
                throw PluginError.untrustedLocation(path: path, reason: "\(current) is owned by uid \(info.st_uid), not root")
            }
            if info.st_mode & (S_IWGRP | S_IWOTH) != 0 {
                // The sticky /tmp-style directory is still unsafe: others can add files.
                throw PluginError.untrustedLocation(path: path, reason: "\(current) is writable by group or others")
            }
            if current == "/" { break }
            let parent = (current as NSString).deletingLastPathComponent
            current = parent.isEmpty ? "/" : parent
            first = false
        }
    }

    // MARK: - Typed access

    /// The image decoder with this id.
    public func decoder(id: String) throws -> ImageDecoderPlugin {
        guard let p = plugin(id: id), p.kind == .imageDecoder else { throw PluginError.notFound(id: id, kind: "image decoder") }
        return ImageDecoderPlugin(p)
    }

    /// The dataset reader with this id.
    public func reader(id: String) throws -> DatasetReaderPlugin {
        guard let p = plugin(id: id), p.kind == .datasetReader else { throw PluginError.notFound(id: id, kind: "dataset reader") }
        return DatasetReaderPlugin(p)
    }

    /// The head with this id.
    public func head(id: String) throws -> HeadPlugin {
        guard let p = plugin(id: id), p.kind == .head else { throw PluginError.notFound(id: id, kind: "head") }
        return HeadPlugin(p)
    }

    /// Every loaded image decoder, in load order.
    public var decoders: [ImageDecoderPlugin] { plugins.filter { $0.kind == .imageDecoder }.map(ImageDecoderPlugin.init) }
}
