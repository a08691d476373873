// State dicts in torchvision's two FPN namings, made from a file of ours (issue: checkpoints saved
// with torchvision 0.13+ name the FPN convolutions `…inner_blocks.0.0.weight`).
import Foundation
import NN

/// Rewrites safetensors state dicts key by key, as PyTorch would save the same weights under
/// other names.
public enum StateDictFixtures {
    /// The FPN convolution keys of our files (torchvision before 0.13) → torchvision 0.13+
    /// (`Conv2dNormActivation` adds a `.0`). Written out here, not taken from the loader.
    public static let torchvision013Names: [String: String] = [
        "backbone.fpn.inner_blocks.0.weight": "backbone.fpn.inner_blocks.0.0.weight",
        "backbone.fpn.inner_blocks.0.bias": "backbone.fpn.inner_blocks.0.0.bias",
        "backbone.fpn.layer_blocks.0.weight": "backbone.fpn.layer_blocks.0.0.weight",
        "backbone.fpn.layer_blocks.0.bias": "backbone.fpn.layer_blocks.0.0.bias",
    ]

    /// The file's entries under `rename(key)` (nil drops the entry), F32 floats and I64 integers,
    /// plus `extra` entries (new name → existing name whose values it repeats), with `metadata`
    /// (default: the file's), as safetensors bytes.
    public static func rewritten(_ file: SafeTensorsFile, metadata: [String: String]? = nil, extra: [String: String] = [:],
                                 rename: (String) -> String?) throws -> Data {
        var w = SafeTensorsWriter(metadata: metadata ?? file.metadata)
        func add(_ name: String, from source: String) throws {
            switch file.entries[source]!.dtype {
            case .i64, .i32: w.addInt64(name, try file.int64Values(source), shape: file.entries[source]!.shape)
            default: w.add(name, try file.tensor(source))
            }
        }
        for name in file.names {
            if let new = rename(name) { try add(new, from: name) }
        }
        for (new, source) in extra.sorted(by: { $0.key < $1.key }) { try add(new, from: source) }
        return try w.serialized()
    }

    /// The file with its FPN keys in torchvision 0.13+'s naming (`torchvision013Names`).
    public static func torchvision013(_ file: SafeTensorsFile, metadata: [String: String]? = nil) throws -> Data {
        try rewritten(file, metadata: metadata) { torchvision013Names[$0] ?? $0 }
    }
}
