// nifti: a NIfTI-1/2 volume as AnalyseScan reads one — nifticlib reads by name, so the input is
// written to a file first: `.nii` as is, or (first byte odd) the rest gzip-compressed as a
// `.nii.gz`, so that mutations act on the header rather than on the deflate stream. Then the
// header, the volume under small limits, the slice headers, and their series assembly.
import CNifti
import Foundation
import NIfTI
import Scans

func fuzzNIfTI(_ bytes: UnsafeRawBufferPointer) {
    guard !bytes.isEmpty else { return }
    let compressed = bytes[0] & 1 == 1
    let body = UnsafeRawBufferPointer(rebasing: bytes[1...])
    let path = fuzzScratch + (compressed ? "/volume.nii.gz" : "/volume.nii")
    if compressed {
        unlink(path)
        let file = znzopen(path, "wb", 1)
        guard cnifti_is_null(file) == 0 else { fuzzCheck(false, "cannot write \(path)"); return }
        if body.count > 0 { _ = znzwrite(body.baseAddress, 1, body.count, file) }
        _ = cnifti_close(file)
    } else {
        guard FileManager.default.createFile(atPath: path, contents: Data(body)) else { fuzzCheck(false, "cannot write \(path)"); return }
    }
    _ = try? NIfTIVolume.readHeader(path: path)
    // Small limits: the fuzzer's inputs are small, and a volume past them must be refused
    // before its voxels are allocated.
    guard let volume = try? NIfTIVolume(path: path, limits: NIfTILimits(maxVoxels: 1 << 22, maxSlices: 512, maxSide: 2048)) else { return }
    let h = volume.header
    fuzzCheck(volume.values.count == h.nx * h.ny * h.nz, "\(volume.values.count) values for \(h.nx)×\(h.ny)×\(h.nz)")
    _ = volume.slice(h.nz - 1)
    let headers = volume.sliceHeaders()
    fuzzCheck(headers.count == h.nz, "slice headers")
    let assembly = SeriesAssembler.assemble(headers)
    if let series = try? assembly.choose(nil) { _ = try? series.affineRAS() }
}
