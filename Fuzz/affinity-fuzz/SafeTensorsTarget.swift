// safetensors: what ImportModel does with the bytes of a weights file — SafeTensorsFile(data:),
// every entry read as the loaders read it, the head the file names, the torchvision naming, and
// ModelLoader.load (with a model made once per affinity count and checked with `checkLoad`, the
// check `load` makes before it copies anything, so an input costs no model allocation).
import Affinity
import Foundation
import NN

nonisolated(unsafe) var fuzzModels: [Int: AffinityModel] = [:]

func safeTensorsSetUp() {
    fuzzModels[128] = AffinityModel(head: AffinityHead(affinities: 128))
}

func fuzzSafeTensors(_ bytes: UnsafeRawBufferPointer) {
    guard bytes.count >= 8 else { return }  // ModelStore.importModel refuses shorter inputs first
    let file: SafeTensorsFile
    do { file = try SafeTensorsFile(data: Data(bytes)) } catch { return }
    fuzzCheck(file.names.count == file.entries.count, "names and entries differ")
    for name in file.names {
        guard let e = file.entries[name] else { fuzzCheck(false, "name \(name) without an entry"); return }
        fuzzCheck(e.range.count == e.shape.reduce(1, *) * e.dtype.size, "entry \(name): \(e.range) for \(e.shape) \(e.dtype)")
        if let t = try? file.tensor(name) { fuzzCheck(t.shape == e.shape, "tensor shape") }
        _ = try? file.int64Values(name)
    }
    _ = try? ModelLoader.torchvisionNaming(of: file)
    _ = try? ModelLoader.affinities(of: file)
    let head: any ClassificationHead
    do { head = try ModelLoader.head(for: file) } catch { return }
    guard let affinityHead = head as? AffinityHead else { return }
    let k = affinityHead.affinities
    let model: AffinityModel
    if let m = fuzzModels[k] { model = m } else {
        guard fuzzModels.count < 4 else { return }  // a few sizes, each made once
        model = AffinityModel(head: AffinityHead(affinities: k))
        fuzzModels[k] = model
    }
    var aliases = Dictionary(uniqueKeysWithValues: model.originalAliases.map { ($0.alias, $0.of) })
    for name in file.names where name.hasPrefix("optimizer.") { aliases[name] = name }
    _ = try? model.checkLoad(from: file, aliases: aliases)
}
