import CAffinityPlugin
import Detection
import Glibc
import Imaging
import SystemIO

/// An entry of a data set that cannot be used, and why (a sentence).
public struct BrokenEntry: Sendable, Equatable, CustomStringConvertible {
    public var name: String
    public var reason: String
    public init(name: String, reason: String) { self.name = name; self.reason = reason }
    public var description: String { "\(name): \(reason)" }
}

/// One usable sample: the decoded slice, its class label and its lesion instances.
public struct DatasetSample: Sendable {
    /// The image's path relative to the data-set root.
    public var name: String
    /// 0 Normal, 1 CP, 2 COVID-19; nil when the layout has no class labels.
    public var label: Int?
    public var image: GrayImage
    /// The label map (0 bg, 1 lung, 2 GGO, 3 consolidation), height × width; nil without a mask file.
    public var labelMap: [UInt8]?
    /// MODEL.md §1.2 instances (values ≥ 2, 8-connected, area > 100), from `lesionInstances`.
    public var instances: [LesionInstance]
    /// Which decoder read the image.
    public var decoder: String
}

/// A loaded dataset-reader plugin.
public struct DatasetReaderPlugin: Sendable {
    public let plugin: LoadedPlugin
    var table: affinity_dataset_reader { plugin.descriptor.pointee.reader!.pointee }

    init(_ plugin: LoadedPlugin) { self.plugin = plugin }

    /// Opens a data-set root.
    /// - Parameter options: a JSON object (reader-specific keys, e.g. `{"split": "train"}`).
    /// - Throws: `PluginError.callFailed` when the root itself is unusable.
    public func open(root: String, options: String = "{}") throws -> PluginDataset {
        var handle: UnsafeMutableRawPointer?
        var error = makeErrorBuffer()
        let status = table.open!(root, options, &handle, &error)
        guard status == AFFINITY_OK, let handle else {
            throw PluginError.callFailed(plugin: plugin.record, operation: "open", code: status == AFFINITY_OK ? AFFINITY_E_FAILED : status,
                                         message: message(of: &error))
        }
        return PluginDataset(reader: self, handle: handle, root: root)
    }
}

/// An open data set. Not thread-safe (one reader handle, one thread at a time).
public final class PluginDataset {
    public let reader: DatasetReaderPlugin
    public let root: String
    private let handle: UnsafeMutableRawPointer

    init(reader: DatasetReaderPlugin, handle: UnsafeMutableRawPointer, root: String) {
        self.reader = reader; self.handle = handle; self.root = root
    }

    deinit { reader.table.close!(handle) }

    /// Usable samples.
    public var count: Int { Int(reader.table.count!(handle)) }

    /// The entries the reader set aside while opening the root.
    public var brokenEntries: [BrokenEntry] {
        let n = Int(reader.table.broken_count!(handle))
        var out: [BrokenEntry] = []
        var name = [CChar](repeating: 0, count: 1024), reason = [CChar](repeating: 0, count: 1024)
        for i in 0..<n {
            name[0] = 0; reason[0] = 0
            let status = reader.table.broken_entry!(handle, Int64(i), &name, name.count, &reason, reason.count)
            guard status == AFFINITY_OK else { continue }
            out.append(BrokenEntry(name: String(cString: name), reason: String(cString: reason)))
        }
        return out
    }

    /// The name and label of sample `index`, with its files opened (the caller closes the fds).
    func openSample(_ index: Int) throws -> (name: String, label: Int?, imageFD: Int32, maskFD: Int32) {
        var sample = affinity_sample()
        sample.struct_size = UInt32(MemoryLayout<affinity_sample>.size)
        sample.image_fd = -1
        sample.mask_fd = -1
        var error = makeErrorBuffer()
        let status = reader.table.read!(handle, Int64(index), &sample, &error)
        let name = string(fromCharArray: &sample.name)
        // The plugin hands the descriptors over: from here this scope owns them.
        Descriptors.adopt(sample.image_fd)
        Descriptors.adopt(sample.mask_fd)
        guard status == AFFINITY_OK else {
            if sample.image_fd >= 0 { Descriptors.close(sample.image_fd) }
            if sample.mask_fd >= 0 { Descriptors.close(sample.mask_fd) }
            throw BrokenSampleError(entry: BrokenEntry(name: name.isEmpty ? "sample \(index)" : name,
                                                       reason: message(of: &error).isEmpty ? statusName(status) : message(of: &error)))
        }
        return (name, sample.label >= 0 ? Int(sample.label) : nil, sample.image_fd, sample.mask_fd)
    }

    /// Reads and decodes sample `index`: the image through `registry` (PNG built in, other formats
    /// through decoder plugins), the mask as a PNG label map of the image's size, and the §1.2 lesion
    /// instances from it.
    /// - Throws: `BrokenSampleError` naming the entry and the reason (vanished file, undecodable image,
    ///   mask of the wrong size or kind).
    public func sample(_ index: Int, registry: PluginRegistry, decoderOptions: String = "{}") throws -> DatasetSample {
        precondition(index >= 0 && index < count, "sample \(index) outside 0..<\(count)")
        let (name, label, imageFD, maskFD) = try openSample(index)
        defer {
            if imageFD >= 0 { Descriptors.close(imageFD) }
            if maskFD >= 0 { Descriptors.close(maskFD) }
        }
        func broken(_ reason: String) -> BrokenSampleError { BrokenSampleError(entry: BrokenEntry(name: name, reason: reason)) }
        guard imageFD >= 0 else { throw broken("the reader gave no image file.") }
        let decoded: DecodedImage
        do {
            let bytes = try AtomicFile.read(fileDescriptor: imageFD, limit: 512 << 20, name: name)
            decoded = try registry.decodeImage(bytes, options: decoderOptions)
        } catch {
            throw broken("the image cannot be read: \(error)")
        }
        var labelMap: [UInt8]?
        var instances: [LesionInstance] = []
        if maskFD >= 0 {
            let mask: PixelImage
            do {
                mask = try PNG.decode(try AtomicFile.read(fileDescriptor: maskFD, limit: 512 << 20, name: name + " (mask)"))
            } catch {
                throw broken("the mask cannot be read: \(error)")
            }
            guard mask.width == decoded.image.width, mask.height == decoded.image.height else {
                throw broken("the mask is \(mask.width)×\(mask.height) but the image is \(decoded.image.width)×\(decoded.image.height).")
            }
            guard mask.format == .gray, mask.bitDepth == 8 else {
                throw broken("the mask is not an 8-bit single-channel label map.")
            }
            let map = mask.bytes
            if let bad = map.first(where: { $0 > 3 }) {
                throw broken("the mask holds the value \(bad); label maps use 0 (background), 1 (lung), 2 (GGO), 3 (consolidation).")
            }
            instances = map.withUnsafeBufferPointer {
                lesionInstances(labelMap: $0.baseAddress!, width: mask.width, height: mask.height, minArea: 100)
            }
            labelMap = map
        }
        return DatasetSample(name: name, label: label, image: decoded.image, labelMap: labelMap, instances: instances,
                             decoder: decoded.decoder)
    }

    /// Reads every sample; the ones that fail are skipped and reported with the reader's own broken
    /// entries.
    public func loadAll(registry: PluginRegistry, decoderOptions: String = "{}") -> (samples: [DatasetSample], broken: [BrokenEntry]) {
        var samples: [DatasetSample] = []
        var broken = brokenEntries
        for i in 0..<count {
            do {
                samples.append(try sample(i, registry: registry, decoderOptions: decoderOptions))
            } catch let e as BrokenSampleError {
                broken.append(e.entry)
            } catch {
                broken.append(BrokenEntry(name: "sample \(i)", reason: "\(error)"))
            }
        }
        return (samples, broken)
    }
}

/// A sample that could not be read.
public struct BrokenSampleError: Error, CustomStringConvertible, Sendable {
    public let entry: BrokenEntry
    public var description: String { "The data-set entry \(entry.name) is broken: \(entry.reason)" }
}
