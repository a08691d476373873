// NIfTI headers checked before nifticlib reads a file (issue 16): a .nii.gz naming gigabytes of
// voxels that its few bytes cannot hold, a .nii shorter than its voxels, a 4-D file past the voxel
// limit (nifticlib reads every volume), a NIfTI-2 dim[0] of two billion (which overflowed
// nifticlib's stack: found by fuzzing, Fuzz/regressions/nifti/) — each a named NIfTIError, quickly.
import Foundation
import NIfTI
import Testing

@Suite("NIfTI headers before nifticlib")
struct NIfTIBombTests {
    /// A NIfTI-1 single-file header (n+1, vox_offset 352) of `dims` int16 voxels, then `data`.
    static func nifti1(_ dims: [Int16], datatype: Int16 = 4, bitpix: Int16 = 16, data: [UInt8]) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: 352)
        func put<T: FixedWidthInteger>(_ v: T, at: Int) { withUnsafeBytes(of: v.littleEndian) { for (i, b) in $0.enumerated() { h[at + i] = b } } }
        put(Int32(348), at: 0)
        put(Int16(dims.count), at: 40)
        for (i, d) in dims.enumerated() { put(d, at: 42 + 2 * i) }
        put(datatype, at: 70)
        put(bitpix, at: 72)
        for i in 0..<4 { put(Float(1).bitPattern, at: 76 + 4 * i) }
        put(Float(352).bitPattern, at: 108)
        h.replaceSubrange(344..<348, with: Array("n+1\0".utf8))
        return h + data
    }

    static func write(_ bytes: [UInt8], _ name: String, gzip: Bool = false) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("nifti-bomb-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent(name).path
        try Data(bytes).write(to: URL(fileURLWithPath: gzip ? String(path.dropLast(3)) : path))
        if gzip {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/gzip")
            p.arguments = ["-9", String(path.dropLast(3))]
            try p.run()
            p.waitUntilExit()
            #expect(p.terminationStatus == 0)
        }
        return path
    }

    static func reason(_ body: () throws -> Any) -> NIfTIError? {
        do { _ = try body(); return nil } catch let e as NIfTIError { return e } catch { return nil }
    }

    @Test func aSmallGzipNamingGigabytesIsRefusedBeforeAllocation() throws {
        // 512 × 512 × 2000 int16 = 1 GB of voxels, from a few hundred bytes of .nii.gz.
        let path = try Self.write(Self.nifti1([512, 512, 2000], data: [UInt8](repeating: 0, count: 4096)), "bomb.nii.gz", gzip: true)
        let start = Date()
        let e = Self.reason { try NIfTIVolume(path: path) }
        guard case .unreadable(_, let why)? = e else { Issue.record("expected .unreadable, got \(String(describing: e))"); return }
        #expect(why.contains("more than a") && why.contains("1032:1"), "\(why)")
        #expect(Date().timeIntervalSince(start) < 2)
        #expect(e?.description.hasSuffix(".") == true)
    }

    @Test func aNiiShorterThanItsVoxelsIsRefused() throws {
        let path = try Self.write(Self.nifti1([64, 64, 64], data: [UInt8](repeating: 1, count: 100)), "short.nii")
        let e = Self.reason { try NIfTIVolume(path: path) }
        guard case .unreadable(_, let why)? = e else { Issue.record("expected .unreadable, got \(String(describing: e))"); return }
        #expect(why.contains("truncated"), "\(why)")
    }

    @Test func everyVolumeOfA4DFileCountsAgainstTheLimit() throws {
        let voxels = 4 * 4 * 2 * 50
        let path = try Self.write(Self.nifti1([4, 4, 2, 50], data: [UInt8](repeating: 0, count: voxels * 2)), "4d.nii")
        #expect(throws: NIfTIError.self) { try NIfTIVolume(path: path, limits: NIfTILimits(maxVoxels: 1000)) }
        if case .tooLarge(let why)? = Self.reason({ try NIfTIVolume(path: path, limits: NIfTILimits(maxVoxels: 1000)) }) {
            #expect(why.contains("4×4×2×50"), "\(why)")
        } else { Issue.record("expected .tooLarge") }
        let v = try NIfTIVolume(path: path)  // within the default limits: the first volume
        #expect(v.header.nx == 4 && v.header.nz == 2 && v.values.count == 32)
    }

    @Test func badHeadersAreNamedErrorsNotCrashes() throws {
        // dim[0] 0 and 9; a negative dimension; a complex datatype; an ANALYZE header (no magic).
        var cases: [(String, [UInt8])] = [
            ("rank0.nii", Self.nifti1([], data: [0, 0])),
            ("negative.nii", Self.nifti1([4, -3, 2], data: [UInt8](repeating: 0, count: 64))),
            ("complex.nii", Self.nifti1([2, 2, 1], datatype: 32, bitpix: 64, data: [UInt8](repeating: 0, count: 32))),
        ]
        var rank9 = Self.nifti1([2, 2, 1], data: [UInt8](repeating: 0, count: 8))
        rank9[40] = 9
        cases.append(("rank9.nii", rank9))
        var analyze = Self.nifti1([2, 2, 1], data: [UInt8](repeating: 0, count: 8))
        analyze.replaceSubrange(344..<348, with: [0, 0, 0, 0])
        cases.append(("analyze.nii", analyze))
        for (name, bytes) in cases {
            let path = try Self.write(bytes, name)
            let e = Self.reason { try NIfTIVolume(path: path) }
            #expect(e != nil && e!.description.hasSuffix("."), "\(name): \(String(describing: e))")
        }
        // The fuzzer's NIfTI-2 header with dim[0] = 2053646851 (its first byte is the fuzz
        // target's mode byte): it made nifticlib overflow its stack.
        let regression = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fuzz/regressions/nifti/nifti2-dim0-stack-overflow")
        let bytes = Array(try Data(contentsOf: regression).dropFirst())
        let path = try Self.write(bytes, "dim0.nii")
        if case .unreadable(_, let why)? = Self.reason({ try NIfTIVolume(path: path) }) {
            #expect(why.contains("dim[0]"), "\(why)")
        } else { Issue.record("expected .unreadable for dim[0]") }
    }
}
