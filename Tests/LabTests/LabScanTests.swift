// `affinity-lab scan` end to end (issue 15): a NIfTI phantom volume (written by an independent
// writer, HU with a scaling) analysed offline with the bundled demo model — the JSON keys of the
// issue, the slices in patient order, the label volume written with the scan's affine and labels
// matching the lesions — and bad inputs as named errors with their exit codes.
import Foundation
import Imaging
import NIfTI
import TestSupport
import Testing

@Suite("affinity-lab scan", .serialized)
struct LabScanTests {
    /// A NIfTI volume of 512×512 phantom slices (0.7 mm) between two blank ones (TestSupport's writePhantomNIfTI).
    static func phantomVolume(_ path: String, classes: [PhantomClass]) throws {
        try writePhantomNIfTI(path, classes: classes, side: 512, seed: 9, spacing: 0.7)
    }

    @Test func aNIfTIScan() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lab-scan-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let volume = dir.appendingPathComponent("chest.nii.gz").path
        try Self.phantomVolume(volume, classes: [.covid, .covid, .normal])
        let mask = dir.appendingPathComponent("lesions.nii.gz").path
        let run = try Lab.run(["scan", volume, "--mask-out", mask, "--json"])
        #expect(run.status == 0, "\(run.stderr)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any], "\(run.stdout)")
        for key in ["series_uid", "slice_count", "slices", "verdict", "lesion_volume_ml", "lung_volume_ml", "opacity_percent",
                    "opacity_percent_left", "opacity_percent_right", "max_involvement_slice", "spacing_mm", "warnings", "set_aside"] {
            #expect(json[key] != nil, "no \(key)")
        }
        #expect(json["slice_count"] as? Int == 5)
        let slices = try #require(json["slices"] as? [[String: Any]])
        #expect(slices.map { $0["position_mm"] as? Double } == [0, 5, 10, 15, 20])
        #expect(slices.map { $0["analysed"] as? Bool } == [false, true, true, true, false])
        let verdict = try #require(json["verdict"] as? [String: Any])
        #expect(verdict["class"] as? String == "COVID-19" && verdict["rule"] as? String == "lesion-weighted", "\(verdict)")
        let spacing = try #require(json["spacing_mm"] as? [Double])
        #expect(spacing.count == 3 && abs(spacing[0] - 0.7) < 1e-6 && abs(spacing[2] - 5) < 1e-6, "\(spacing)")
        // The lesion volume is the slices' lesion areas times 5 mm.
        let area = slices.reduce(0.0) { $0 + ($1["lesion_area_mm2"] as? Double ?? 0) }
        #expect(abs((json["lesion_volume_ml"] as? Double ?? -1) - area * 5 / 1000) < 1e-6)
        #expect((json["lesion_volume_ml"] as? Double ?? 0) > 0)

        // The label volume: the scan's grid and affine, labels matching each slice's lesions.
        let labels = try NIfTIVolume(path: mask)
        let scan = try NIfTIVolume(path: volume)
        #expect(labels.header.nx == 512 && labels.header.ny == 512 && labels.header.nz == 5 && labels.header.datatype == 2)
        for r in 0..<3 { for c in 0..<4 { #expect(abs(labels.header.affine[r][c] - scan.header.affine[r][c]) < 1e-4, "affine[\(r)][\(c)]") } }
        for (k, s) in slices.enumerated() {
            let lesions = s["lesions"] as? [[String: Any]] ?? []
            let pixels = lesions.reduce(0) { $0 + ($1["area_px"] as? Int ?? 0) }
            let slice = labels.slice(k)
            #expect(slice.filter { $0 != 0 }.count == pixels, "slice \(k)")
            #expect(Int(slice.max() ?? 0) <= lesions.count, "slice \(k)")
        }

        // The readable summary names the verdict and the volumes.
        let text = try Lab.run(["scan", volume])
        #expect(text.status == 0 && text.stdout.contains("verdict: COVID-19") && text.stdout.contains("mL"), "\(text.stdout)\n\(text.stderr)")
    }

    @Test func badInputsAreNamedErrors() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lab-scan-bad-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        // A folder with no DICOM and no NIfTI: nothing to analyse.
        try "not a scan".write(to: dir.appendingPathComponent("notes.txt"), atomically: true, encoding: .utf8)
        let empty = try Lab.run(["scan", dir.path])
        #expect(empty.status == 4 && empty.stderr.contains("affinity-lab: error [no-volume]") && empty.stderr.contains("notes.txt"), "\(empty.stderr)")
        // A .nii.gz that does not inflate.
        let junk = dir.appendingPathComponent("junk.nii.gz")
        try Data([0x1f, 0x8b, 8, 0, 9, 9, 9, 9]).write(to: junk)
        let broken = try Lab.run(["scan", junk.path])
        #expect(broken.status == 4 && broken.stderr.contains("cannot be read as NIfTI"), "\(broken.stderr)")
        // A missing path, a bad rule, a bad mask name.
        #expect(try Lab.run(["scan", dir.path + "/nope"]).status == 3)
        #expect(try Lab.run(["scan", junk.path, "--rule", "loudest"]).status == 64)
        #expect(try Lab.run(["scan", junk.path, "--mask-out", dir.path + "/m.png"]).status == 64)
    }
}
