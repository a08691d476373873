// The 3-D chest-CT phantom (issue 15, item 5): its truth is its labels counted (voxel counts times
// the voxel volume, per lung and per slice), the anatomy is a chest in HU, lesions continue across
// neighbouring slices and stay inside their lung, a slice depends only on the settings and its
// index, and bad settings are named errors.
import Imaging
import Testing

@Suite("3-D phantom volume")
struct PhantomVolumeTests {
    /// Every slice's truth recounted from its labels and instances, and the totals from the slices.
    @Test(arguments: [PhantomClass.covid, .pneumonia, .normal])
    func truthIsTheLabelsCounted(_ phantomClass: PhantomClass) throws {
        let v = try PhantomVolume(seed: 7, width: 128, height: 112, slices: 16, class: phantomClass, spacing: [0.8, 0.7, 2.5])
        #expect(abs(v.voxelML - 0.8 * 0.7 * 2.5 / 1000) < 1e-15 && abs(v.pixelMM2 - 0.56) < 1e-12)
        var truth = PhantomVolumeTruth(volume: v)
        var lung = 0, lesion = 0, right = 0, left = 0, lesionRight = 0, lesionLeft = 0
        var perLesion = [Int](repeating: 0, count: v.lesions.count)
        for k in 0..<v.slices {
            let s = v.slice(k)
            #expect(s.hu.count == 128 * 112 && s.labels.count == s.hu.count && s.instances.count == s.hu.count)
            let t = s.truth
            #expect(t.index == k)
            #expect(t.lung == s.labels.filter { $0 != 0 }.count, "slice \(k)")
            #expect(t.lesion == s.labels.filter { $0 >= 2 }.count, "slice \(k)")
            #expect(t.groundGlass == s.labels.filter { $0 == 2 }.count && t.consolidation == s.labels.filter { $0 == 3 }.count)
            #expect(s.labels.allSatisfy { $0 <= 3 })
            // Instances mark exactly the lesion voxels.
            #expect(zip(s.labels, s.instances).allSatisfy { ($0 >= 2) == ($1 != 0) }, "slice \(k)")
            for i in perLesion.indices {
                let n = s.instances.filter { Int($0) == i + 1 }.count
                #expect(t.perLesion[i] == n, "slice \(k), lesion \(i)")
                perLesion[i] += n
            }
            // The right lung is the one on the image's left: its voxels lie left of the body's middle.
            #expect(t.lungRight + t.lungLeft == t.lung && t.lesionRight + t.lesionLeft == t.lesion)
            var r = 0, l = 0
            for y in 0..<112 { for x in 0..<128 where s.labels[y * 128 + x] != 0 { if x < 64 { r += 1 } else { l += 1 } } }
            #expect(r == t.lungRight && l == t.lungLeft, "slice \(k): \(r)/\(l) by columns, \(t.lungRight)/\(t.lungLeft) in the truth")
            lung += t.lung; lesion += t.lesion; right += t.lungRight; left += t.lungLeft
            lesionRight += t.lesionRight; lesionLeft += t.lesionLeft
            truth.add(t)
        }
        #expect(truth.slices.count == 16 && truth.lungVoxels == lung && truth.lesionVoxels == lesion)
        let ml = 0.8 * 0.7 * 2.5 / 1000
        #expect(abs(truth.lungVolumeML - Double(lung) * ml) < 1e-9 && abs(truth.lesionVolumeML - Double(lesion) * ml) < 1e-9)
        #expect(abs(truth.lungVolumeRightML - Double(right) * ml) < 1e-9 && abs(truth.lungVolumeLeftML - Double(left) * ml) < 1e-9)
        #expect(abs(truth.lesionVolumeRightML - Double(lesionRight) * ml) < 1e-9 && abs(truth.lesionVolumeLeftML - Double(lesionLeft) * ml) < 1e-9)
        #expect(abs(truth.groundGlassVolumeML + truth.consolidationVolumeML - truth.lesionVolumeML) < 1e-9)
        #expect(zip(truth.lesionVolumesML, perLesion).allSatisfy { abs($0 - Double($1) * ml) < 1e-9 })
        #expect(abs(truth.opacityPercent - 100 * Double(lesion) / Double(lung)) < 1e-9)
        if right > 0 { #expect(abs(truth.opacityPercentRight - 100 * Double(lesionRight) / Double(right)) < 1e-9) }
        if left > 0 { #expect(abs(truth.opacityPercentLeft - 100 * Double(lesionLeft) / Double(left)) < 1e-9) }
        let a = truth.areasMM2(5)
        #expect(abs(a.lung - Double(truth.slices[5].lung) * 0.56) < 1e-9 && abs(a.lesionRight + a.lesionLeft - a.lesion) < 1e-9)
        // The generator's own whole-volume truth is the same.
        let again = v.truth()
        #expect(again.slices == truth.slices)
        // Both lungs on every slice; lesions by class.
        #expect(truth.slices.allSatisfy { $0.lungRight > 0 && $0.lungLeft > 0 })
        switch phantomClass {
        case .normal: #expect(v.lesions.isEmpty && lesion == 0)
        case .covid:
            #expect((2...6).contains(v.lesions.count) && v.lesions.allSatisfy { $0.kind == "ground-glass" }, "\(v.lesions)")
            #expect(truth.groundGlassVolumeML > truth.consolidationVolumeML)
        case .pneumonia:
            #expect((1...2).contains(v.lesions.count) && v.lesions.allSatisfy { $0.kind == "consolidation" }, "\(v.lesions)")
            #expect(truth.consolidationVolumeML > 0)
        }
        // Each lesion has voxels, in its own lung.
        for i in v.lesions.indices { #expect(truth.lesionVolumesML[i] > 0, "lesion \(i) has no voxel") }
    }

    /// Lesions continue across at least three consecutive slices, without gaps, and lie in the lung
    /// the plan names; consolidations keep a rim of lung between them and the lung's edge.
    @Test func lesionsContinueAcrossSlices() throws {
        for (seed, phantomClass) in [(UInt64(3), PhantomClass.covid), (4, .covid), (5, .pneumonia), (6, .pneumonia)] {
            let v = try PhantomVolume(seed: seed, width: 128, height: 128, slices: 12, class: phantomClass)
            let slices = (0..<v.slices).map { v.slice($0) }
            for (i, l) in v.lesions.enumerated() {
                let present = slices.filter { $0.truth.perLesion[i] > 0 }.map(\.index)
                #expect(present.count >= 3, "seed \(seed) lesion \(i) on slices \(present)")
                #expect(present == Array((present.first ?? 0)...(present.last ?? 0)), "seed \(seed) lesion \(i) skips slices: \(present)")
                #expect(present.allSatisfy { l.sliceRange[0] <= $0 && $0 <= l.sliceRange[1] }, "\(present) outside \(l.sliceRange)")
                // Its voxels lie in the lung it names (the right lung on the image's left).
                for s in slices where s.truth.perLesion[i] > 0 {
                    for y in 0..<128 {
                        for x in 0..<128 where Int(s.instances[y * 128 + x]) == i + 1 {
                            #expect((x < 64) == (l.lung == "right"), "seed \(seed) lesion \(i) (\(l.lung)) at column \(x)")
                        }
                    }
                }
            }
            if phantomClass == .pneumonia {
                let margin = Int(PhantomVolume.consolidationMargin.rounded(.up))
                for s in slices {
                    for y in 0..<128 {
                        for x in 0..<128 where s.labels[y * 128 + x] >= 2 {
                            for yy in (y - margin)...(y + margin) {
                                for xx in (x - margin)...(x + margin) where s.labels[yy * 128 + xx] == 0 {
                                    Issue.record("seed \(seed) slice \(s.index): lesion voxel (\(x), \(y)) within \(margin) px of non-lung (\(xx), \(yy))")
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The voxels are a chest in Hounsfield units: air outside, lung near −850, soft tissue near 40,
    /// bone above 300; ground glass between lung and soft tissue.
    @Test func huLookLikeAChestCT() throws {
        let v = try PhantomVolume(seed: 8, width: 128, height: 128, slices: 10, class: .covid)
        let s = v.slice(5)
        func median(_ xs: [Int16]) -> Int { Int(xs.sorted()[xs.count / 2]) }
        let lung = zip(s.hu, s.labels).filter { $0.1 == 1 }.map(\.0)
        #expect((-880 ... -800).contains(median(lung)), "lung median \(median(lung))")
        // Air: the image's corners.
        #expect(abs(median([s.hu[0], s.hu[127], s.hu[127 * 128], s.hu[128 * 128 - 1], s.hu[130], s.hu[250]]) + 1000) < 40)
        // Soft tissue: the mediastinum (the body's middle column, between the lungs).
        var mediastinum: [Int16] = []
        for y in 40..<60 { mediastinum.append(s.hu[y * 128 + 64]) }
        #expect((0...80).contains(median(mediastinum)), "mediastinum \(median(mediastinum))")
        #expect(Int(s.hu.max()!) > 300, "no bone")
        #expect(s.hu.allSatisfy { PhantomVolume.huRange.contains(Int($0)) })
        let allSlices = (0..<10).map { v.slice($0) }
        var ggo: [Int16] = []
        for sl in allSlices { for (h, l) in zip(sl.hu, sl.labels) where l == 2 { ggo.append(h) } }
        #expect(!ggo.isEmpty)
        #expect((-800 ... -400).contains(median(ggo)), "ground glass median \(median(ggo))")
    }

    /// A slice depends on the settings and its index only: the same again, in any order; another
    /// seed or class differs; the plan of a large volume holds no voxels (one slice of a 512×512×300
    /// volume is made alone).
    @Test func slicesAreDeterministicAndIndependent() throws {
        let a = try PhantomVolume(seed: 9, width: 96, height: 96, slices: 8, class: .covid)
        let b = try PhantomVolume(seed: 9, width: 96, height: 96, slices: 8, class: .covid)
        let late = b.slice(6).hu
        #expect(a.slice(6).hu == late && a.slice(2).labels == b.slice(2).labels && a.lesions == b.lesions)
        let other = try PhantomVolume(seed: 10, width: 96, height: 96, slices: 8, class: .covid)
        #expect(other.slice(6).hu != late)
        // The same anatomy with another class: the same lungs (outside the lesions), other lesions.
        let normal = try PhantomVolume(seed: 9, width: 96, height: 96, slices: 8, class: .normal)
        let n6 = normal.slice(6), a6 = a.slice(6)
        #expect(zip(n6.labels, a6.labels).allSatisfy { ($0 != 0) == ($1 != 0) })
        let big = try PhantomVolume(seed: 1, width: 512, height: 512, slices: 300)
        let s = big.slice(150)
        #expect(s.hu.count == 512 * 512 && s.truth.lung > 10_000)
        #expect(abs(big.spacing[0] - 350.0 / 512) < 1e-12 && abs(big.spacing[2] - 0.8) < 1e-12)
    }

    @Test func badSettingsAreNamedErrors() {
        #expect(throws: ImageError.self) { try PhantomVolume(seed: 1, width: 32, height: 128, slices: 4) }
        #expect(throws: ImageError.self) { try PhantomVolume(seed: 1, width: 128, height: 128, slices: 0) }
        #expect(throws: ImageError.self) { try PhantomVolume(seed: 1, width: 128, height: 128, slices: 4, spacing: [1, -1, 1]) }
        #expect(throws: ImageError.self) { try PhantomVolume(seed: 1, width: 128, height: 128, slices: 4, spacing: [1, 1]) }
        #expect(throws: ImageError.self) { try PhantomVolume(seed: 1, width: 128, height: 128, slices: 4, spacing: [1, .nan, 1]) }
        do {
            _ = try PhantomVolume(seed: 1, width: 128, height: 128, slices: 5000)
            Issue.record("5000 slices accepted")
        } catch let e as ImageError {
            #expect(e.description.contains("5000"), "\(e)")
        } catch {
            Issue.record("\(error)")
        }
    }
}
