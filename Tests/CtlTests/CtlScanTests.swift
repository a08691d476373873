// `affinityctl analyse-scan` (issue 15) through a private --local daemon with the bundled demo
// model: a folder passed as one O_DIRECTORY descriptor, the JSON of the job's result with the label
// volume written where --mask-out says, the readable summary, and bad inputs with their exit codes.
import Foundation
import Imaging
import TestSupport
import Testing

@Suite("affinityctl analyse-scan", .serialized)
struct CtlScanTests {
    /// A NIfTI volume of 256×256 phantom slices between two blank ones (TestSupport's writePhantomNIfTI).
    static func volume(_ path: String, classes: [PhantomClass]) throws {
        try writePhantomNIfTI(path, classes: classes, side: 256, seed: 5, spacing: 1.4)
    }

    @Test func aFolderThroughALocalDaemon() throws {
        let dir = try CtlPaths.temporaryDirectory("scan")
        defer { try? FileManager.default.removeItem(at: dir) }
        let env = ["XDG_STATE_HOME": dir.appendingPathComponent("xdg").path, "AFFINITY_BUS_ADDRESS": "unix:path=\(dir.path)/no-bus-here"]
        let study = dir.appendingPathComponent("study")
        try FileManager.default.createDirectory(at: study, withIntermediateDirectories: true)
        try Self.volume(study.appendingPathComponent("chest.nii.gz").path, classes: [.covid, .covid])
        let mask = dir.appendingPathComponent("lesions.nii.gz").path

        let run = try ctl(["--local", "analyse-scan", study.path, "--mask-out", mask, "--json"], environment: env)
        #expect(run.status == 0, "\(run)")
        let json = run.json
        for key in ["series_uid", "slice_count", "slices", "verdict", "lesion_volume_ml", "lung_volume_ml", "opacity_percent",
                    "opacity_percent_left", "opacity_percent_right", "spacing_mm", "warnings", "set_aside", "model", "timings"] {
            #expect(json[key] != nil, "no \(key) in \(run.stdout)")
        }
        #expect(json["slice_count"] as? Int == 4 && json["series_uid"] as? String == "nifti:chest.nii.gz", "\(run.stdout)")
        let slices = json["slices"] as? [[String: Any]] ?? []
        #expect(slices.map { $0["analysed"] as? Bool } == [false, true, true, false], "\(slices)")
        #expect(json["label_volume"] as? String == mask)
        let written = try Data(contentsOf: URL(fileURLWithPath: mask))
        #expect(written.starts(with: [0x1f, 0x8b]) && written.count > 352)

        // The summary for people.
        let text = try ctl(["--local", "analyse-scan", study.appendingPathComponent("chest.nii.gz").path], environment: env)
        #expect(text.status == 0, "\(text)")
        #expect(text.stdout.contains("series nifti:chest.nii.gz: 4 slices (2 with a lung field)") && text.stdout.contains("verdict: ")
                && text.stdout.contains(" mL lung: "), "\(text)")

        // Bad inputs: a missing path (4), a folder without a scan (1, the daemon's InvalidImage), usage (64).
        let missing = try ctl(["--local", "analyse-scan", dir.appendingPathComponent("nope").path], environment: env)
        #expect(missing.status == 4, "\(missing)")
        let empty = dir.appendingPathComponent("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        let nothing = try ctl(["--local", "analyse-scan", empty.path, "--json"], environment: env)
        #expect(nothing.status == 1 && nothing.json["error"] as? String == "org.lesionaffinity.Affinity1.Error.InvalidImage", "\(nothing)")
        let usage = try ctl(["analyse-scan", study.path, "--mask-out", "x.nii"], environment: env)
        #expect(usage.status == 64 && usage.stderr.contains(".nii.gz"), "\(usage)")
    }
}
