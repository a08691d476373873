import ArgumentParser
import Foundation
import Imaging

/// `affinity-lab phantoms`: writes the built-in phantom data set in the layouts of the real data.
struct Phantoms: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a seeded phantom chest-CT data set (COVIDx-CT-style classification + CNCB-style segmentation).",
        discussion: """
        Layout under --out: classification/images/*.png with {train,val,test}_COVIDx_CT.txt, \
        segmentation/imgs/*.png, segmentation/masks/*.png (labels 0 background, 1 lung, 2 GGO, \
        3 consolidation; only slices with lesions) with {train,test}_split_segmentation.txt, and \
        phantoms.json (settings and per-slice ground truth). Patient p has class p mod 3.
        """)

    @Option(help: "Root directory of the data set (created if needed).")
    var out: String

    @Option(help: "Number of slices.")
    var count: Int

    @Option(help: "Generator seed (same seed, same bytes).")
    var seed: UInt64

    @Option(help: "Slice side in pixels (at least 128).")
    var size = 512

    @Option(name: .customLong("slices-per-patient"), help: "Consecutive slices per patient.")
    var slicesPerPatient = 3

    @Flag(help: "Print a JSON summary.")
    var json = false

    func validate() throws {
        if count < 1 { throw ValidationError("--count must be at least 1, got \(count)") }
        if size < 128 { throw ValidationError("--size must be at least 128, got \(size)") }
        try requirePositive(slicesPerPatient, "--slices-per-patient")
    }

    func run() throws {
        try labRun {
            let t0 = DispatchTime.now().uptimeNanoseconds
            let summary: PhantomDataset.Summary
            do {
                summary = try PhantomDataset.write(to: out, count: count, seed: seed, size: size, slicesPerPatient: slicesPerPatient)
            } catch let e as ImageError {
                throw LabError(name: "io", message: e.description, code: 1)
            }
            var perClass = [0, 0, 0], perSplit: [String: Int] = [:]
            for e in summary.entries {
                perClass[e.phantomClass.rawValue] += 1
                perSplit[e.split.rawValue, default: 0] += 1
            }
            if json {
                print(jsonText([
                    "root": out, "count": count, "seed": seed, "size": size, "slices_per_patient": slicesPerPatient,
                    "per_class": perClass, "per_split": perSplit, "masks": summary.maskCount,
                    "lesions": summary.lesionCounts.reduce(0, +), "seconds": secondsSince(t0),
                ] as [String: Any]))
            } else {
                print("wrote \(count) phantom slices (\(size)×\(size), seed \(seed)) to \(out)")
                print("  classes: normal \(perClass[0]), common pneumonia \(perClass[1]), COVID-19 \(perClass[2])")
                print("  splits: " + DataSplit.allCases.filter { $0 != .all }.map { "\($0.rawValue) \(perSplit[$0.rawValue] ?? 0)" }.joined(separator: ", "))
                print("  \(summary.maskCount) masks, \(summary.lesionCounts.reduce(0, +)) lesions")
            }
        }
    }
}
