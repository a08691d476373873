import Foundation
import Imaging
import Testing

@Suite("Procedural chest-CT phantoms")
struct PhantomTests {
    @Test("same seed, same bytes; another seed, other bytes")
    func determinism() {
        let a = PhantomGenerator(seed: 42).slice(index: 3, class: .covid)
        let b = PhantomGenerator(seed: 42).slice(index: 3, class: .covid)
        #expect(a.image == b.image && a.labels == b.labels && a.instances == b.instances && a.lesions == b.lesions)
        let c = PhantomGenerator(seed: 43).slice(index: 3, class: .covid)
        #expect(a.image != c.image)
        let d = PhantomGenerator(seed: 42).slice(index: 4, class: .covid)
        #expect(a.image != d.image)
    }

    @Test("random access: a slice does not depend on which slices were made before")
    func randomAccess() {
        let generator = PhantomGenerator(seed: 9, size: 256)
        _ = generator.slice(index: 0, class: .pneumonia)
        let later = generator.slice(index: 5, class: .normal)
        let fresh = PhantomGenerator(seed: 9, size: 256).slice(index: 5, class: .normal)
        #expect(later.image == fresh.image)
    }

    @Test("shapes and label values")
    func shapes() {
        let slice = PhantomGenerator(seed: 1).slice(index: 0, class: .pneumonia)
        #expect(slice.width == 512 && slice.height == 512)
        #expect(slice.image.count == 512 * 512 && slice.labels.count == 512 * 512 && slice.instances.count == 512 * 512)
        #expect(Set(slice.labels).isSubset(of: [0, 1, 2, 3]))
        #expect(slice.labels.contains(1))
        #expect(slice.phantomClass == .pneumonia)
        // Lungs are dark, body soft tissue mid-to-light gray, air black.
        let lung = mean(slice.image, where: slice.labels.map { $0 == 1 })
        #expect(lung < 40)
        #expect(slice.image[0] < 10)
        let center = slice.image[(slice.bodyBox.ymin + 6) * 512 + 256]
        #expect(center > 120)
    }

    @Test("the body box encloses everything that is not air")
    func bodyBox() {
        for index in 0..<3 {
            let slice = PhantomGenerator(seed: 11).slice(index: index, class: .normal)
            let box = slice.bodyBox
            #expect(box.xmin >= 0 && box.ymin >= 0 && box.xmax <= 512 && box.ymax <= 512 && box.width > 300 && box.height > 250)
            for y in 0..<512 {
                for x in 0..<512 where slice.image[y * 512 + x] > 60 {
                    if !(x >= box.xmin - 1 && x <= box.xmax && y >= box.ymin - 1 && y <= box.ymax) {
                        Issue.record("bright pixel (\(x), \(y)) outside the body box \(box)")
                        return
                    }
                }
            }
        }
    }

    @Test("lesions: > 100 px, one component each, inside the lungs, consistent with the label map")
    func lesionGeometry() {
        let generator = PhantomGenerator(seed: 2024)
        for index in 0..<12 {
            let normal = generator.slice(index: index, class: .normal)
            #expect(normal.lesions.isEmpty && !normal.labels.contains(2) && !normal.labels.contains(3))
            for phantomClass in [PhantomClass.pneumonia, .covid] {
                let slice = generator.slice(index: index, class: phantomClass)
                let masks = slice.instanceMasks
                #expect(masks.count == slice.lesions.count)
                for (i, lesion) in slice.lesions.enumerated() {
                    let mask = masks[i]
                    let area = mask.reduce(0) { $0 + Int($1) }
                    #expect(area == lesion.area && area > 100)
                    #expect(lesion.groundGlassPixels + lesion.consolidationPixels == area)
                    let sizes = componentSizes(mask.map { $0 != 0 }, width: 512, height: 512)
                    #expect(sizes == [area])
                    var box = PixelBox(xmin: 512, ymin: 512, xmax: 0, ymax: 0)
                    var outsideLung = 0, unlabelled = 0
                    for p in 0..<mask.count where mask[p] != 0 {
                        // Within the lungs: the same anatomy without lesions has lung there.
                        if normal.labels[p] != 1 { outsideLung += 1 }
                        if slice.labels[p] < 2 { unlabelled += 1 }
                        box.xmin = min(box.xmin, p % 512)
                        box.ymin = min(box.ymin, p / 512)
                        box.xmax = max(box.xmax, p % 512 + 1)
                        box.ymax = max(box.ymax, p / 512 + 1)
                    }
                    #expect(box == lesion.box)
                    #expect(outsideLung == 0 && unlabelled == 0)
                }
                // MODEL.md §1.2 target derivation finds exactly these lesions.
                let lesionPixels = slice.labels.map { $0 >= 2 }
                let components = componentSizes(lesionPixels, width: 512, height: 512).filter { $0 > 100 }
                #expect(components.sorted() == slice.lesions.map(\.area).sorted())
                #expect(lesionPixels == slice.instances.map { $0 != 0 })
                // Outside the lesions, the image is that of the normal slice (same anatomy and noise).
                for p in 0..<slice.image.count where slice.instances[p] == 0 {
                    if slice.image[p] != normal.image[p] {
                        Issue.record("pixel \(p) differs outside lesions")
                        break
                    }
                }
            }
        }
    }

    @Test("class statistics over 30 seeded slices (documented on PhantomGenerator)")
    func classStatistics() {
        let generator = PhantomGenerator(seed: 7)
        var pneumoniaCounts: [Int] = [], covidCounts: [Int] = []
        var pneumoniaBilateral = 0, covidBilateral = 0
        var pneumoniaGray: [Double] = [], covidGray: [Double] = []
        var pneumoniaAreas: [Int] = [], covidAreas: [Int] = []
        var pneumoniaDominant = 0, covidDominant = 0
        var covidSubpleural = 0, covidLesions = 0
        for index in 0..<10 {
            let normal = generator.slice(index: 100 + index, class: .normal)
            #expect(normal.lesions.isEmpty)

            let cp = generator.slice(index: 200 + index, class: .pneumonia)
            pneumoniaCounts.append(cp.lesions.count)
            if Set(cp.lesions.map(\.side)).count == 2 { pneumoniaBilateral += 1 }
            pneumoniaAreas += cp.lesions.map(\.area)
            pneumoniaGray.append(mean(cp.image, where: cp.instances.map { $0 != 0 }))
            pneumoniaDominant += cp.lesions.filter { $0.kind == .consolidation && $0.consolidationPixels > $0.groundGlassPixels }.count

            let covid = generator.slice(index: 300 + index, class: .covid)
            covidCounts.append(covid.lesions.count)
            if Set(covid.lesions.map(\.side)).count == 2 { covidBilateral += 1 }
            covidAreas += covid.lesions.map(\.area)
            covidGray.append(mean(covid.image, where: covid.instances.map { $0 != 0 }))
            covidDominant += covid.lesions.filter { $0.kind == .groundGlass && $0.groundGlassPixels > $0.consolidationPixels }.count
            for (i, _) in covid.lesions.enumerated() {
                covidLesions += 1
                if touchesPleura(covid, lesion: i, within: 3) { covidSubpleural += 1 }
            }
        }
        // Counts: CP 1–2, COVID 2–6; COVID has more lesions on average.
        #expect(pneumoniaCounts.allSatisfy { (1...2).contains($0) }, "\(pneumoniaCounts)")
        #expect(covidCounts.allSatisfy { (2...6).contains($0) }, "\(covidCounts)")
        #expect(average(covidCounts) > average(pneumoniaCounts) + 1)
        #expect(pneumoniaCounts.contains(1))
        // Sides: CP mostly unilateral, COVID mostly bilateral.
        #expect(pneumoniaBilateral <= 3, "CP bilateral \(pneumoniaBilateral)/10")
        #expect(covidBilateral >= 6, "COVID bilateral \(covidBilateral)/10")
        // Appearance: CP dense and large, COVID faint and smaller.
        #expect(pneumoniaDominant == pneumoniaAreas.count)
        #expect(covidDominant == covidAreas.count)
        #expect(average(pneumoniaGray) > average(covidGray) + 40, "CP \(average(pneumoniaGray)), COVID \(average(covidGray))")
        #expect(covidGray.allSatisfy { $0 > 40 }, "GGO must be brighter than lung: \(covidGray)")
        #expect(average(pneumoniaAreas) > 2 * average(covidAreas))
        // Position: every COVID lesion is subpleural.
        #expect(covidSubpleural == covidLesions, "\(covidSubpleural) of \(covidLesions) subpleural")
    }

    @Test("other sizes: 128×128 and 384×256 keep the guarantees")
    func otherSizes() {
        for (w, h) in [(128, 128), (384, 256)] {
            let generator = PhantomGenerator(seed: 5, width: w, height: h)
            for index in 0..<4 {
                let normal = generator.slice(index: index, class: .normal)
                for phantomClass in [PhantomClass.pneumonia, .covid] {
                    let slice = generator.slice(index: index, class: phantomClass)
                    #expect(slice.width == w && slice.height == h && slice.image.count == w * h)
                    #expect(!slice.lesions.isEmpty, "\(w)×\(h) \(phantomClass) index \(index)")
                    for lesion in slice.lesions { #expect(lesion.area > 100) }
                    let outsideLung = (0..<(w * h)).filter { slice.instances[$0] != 0 && normal.labels[$0] != 1 }.count
                    #expect(outsideLung == 0)
                }
            }
        }
    }

    @Test("a 512×512 slice takes milliseconds, not seconds")
    func speed() {
        let generator = PhantomGenerator(seed: 3)
        let start = Date()
        for index in 0..<6 { _ = generator.slice(index: index, class: PhantomClass(rawValue: index % 3)!) }
        let perSlice = Date().timeIntervalSince(start) / 6
        #expect(perSlice < 0.2, "\(perSlice * 1000) ms per slice")
    }

    // MARK: helpers

    func mean(_ image: [UInt8], where mask: [Bool]) -> Double {
        var sum = 0.0, n = 0
        for i in 0..<image.count where mask[i] {
            sum += Double(image[i])
            n += 1
        }
        return n > 0 ? sum / Double(n) : 0
    }

    func average(_ values: [Int]) -> Double { values.isEmpty ? 0 : Double(values.reduce(0, +)) / Double(values.count) }
    func average(_ values: [Double]) -> Double { values.isEmpty ? 0 : values.reduce(0, +) / Double(values.count) }

    /// Whether a lesion pixel lies within `distance` pixels (Chebyshev) of a non-lung pixel.
    func touchesPleura(_ slice: PhantomSlice, lesion: Int, within distance: Int) -> Bool {
        let id = UInt8(lesion + 1), w = slice.width, h = slice.height
        for p in 0..<slice.instances.count where slice.instances[p] == id {
            let x = p % w, y = p / w
            for ny in max(0, y - distance)...min(h - 1, y + distance) {
                for nx in max(0, x - distance)...min(w - 1, x + distance) where slice.labels[ny * w + nx] == 0 {
                    return true
                }
            }
        }
        return false
    }
}
