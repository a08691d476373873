import Foundation
import Imaging
import Testing

@Suite("Lung-field segmentation")
struct LungFieldTests {
    /// IoU of the computed field with the phantom's lung + lesion pixels (labels 1, 2, 3).
    static func iou(_ slice: PhantomSlice) -> (iou: Double, field: Int, truth: Int) {
        let m = LungField.segment(slice.grayImage)
        var inter = 0, union = 0, truth = 0
        for i in 0..<(slice.width * slice.height) {
            let t = slice.labels[i] != 0, f = m.pixels[i] != 0
            if t { truth += 1 }
            if t && f { inter += 1 }
            if t || f { union += 1 }
        }
        return (union == 0 ? 0 : Double(inter) / Double(union), m.area, truth)
    }

    @Test("matches the phantom's lung field (lungs and lesions) with IoU ≥ 0.9 on normal and COVID-19 slices",
          arguments: [(UInt64(1), 512), (UInt64(7), 512), (UInt64(23), 256), (UInt64(101), 384), (UInt64(5), 128)])
    func phantoms(seed: UInt64, size: Int) {
        let generator = PhantomGenerator(seed: seed, size: size)
        for (index, cls) in [(0, PhantomClass.normal), (1, .covid), (2, .covid), (3, .normal), (4, .covid)] {
            let slice = generator.slice(index: index, class: cls)
            let r = Self.iou(slice)
            #expect(r.iou >= 0.9, "seed \(seed) size \(size) slice \(index) \(cls): IoU \(r.iou), field \(r.field) px, truth \(r.truth) px")
            // The reported area is the mask's pixel count.
            let m = LungField.segment(slice.grayImage)
            #expect(m.area == m.pixels.reduce(0) { $0 + Int($1) })
        }
    }

    @Test("a non-square phantom")
    func nonSquare() {
        let slice = PhantomGenerator(seed: 3, width: 384, height: 256).slice(index: 0, class: .normal)
        let r = Self.iou(slice)
        #expect(r.iou >= 0.9, "IoU \(r.iou)")
    }

    /// The known weak case: a consolidation against the chest wall is left out (see LungField), but
    /// the aerated lung is found and nothing outside the lungs is added.
    @Test("pneumonia slices: the aerated lung is found, nothing outside the lungs is added",
          arguments: [(UInt64(1), 512), (UInt64(23), 256), (UInt64(5), 128)])
    func pneumonia(seed: UInt64, size: Int) {
        for index in 0..<4 {
            let slice = PhantomGenerator(seed: seed, size: size).slice(index: index, class: .pneumonia)
            let m = LungField.segment(slice.grayImage)
            var lung = 0, lungFound = 0, outside = 0
            for i in 0..<(size * size) {
                if slice.labels[i] == 1 { lung += 1; if m.pixels[i] != 0 { lungFound += 1 } }
                if slice.labels[i] == 0 && m.pixels[i] != 0 { outside += 1 }
            }
            let r = Self.iou(slice)
            #expect(Double(lungFound) >= 0.93 * Double(lung), "seed \(seed) slice \(index): \(lungFound) of \(lung) lung pixels")
            #expect(Double(outside) <= 0.03 * Double(m.area), "seed \(seed) slice \(index): \(outside) pixels outside the lungs")
            #expect(r.iou >= 0.65, "seed \(seed) slice \(index): IoU \(r.iou)")
        }
    }

    @Test("ground-glass lesions inside the lungs count as lung field")
    func lesionsIncluded() {
        let slice = PhantomGenerator(seed: 11, size: 512).slice(index: 4, class: .covid)
        let m = LungField.segment(slice.grayImage)
        var lesion = 0, covered = 0
        for i in 0..<(512 * 512) where slice.labels[i] >= 2 {
            lesion += 1
            if m.pixels[i] != 0 { covered += 1 }
        }
        #expect(lesion > 0)
        #expect(Double(covered) >= 0.8 * Double(lesion), "\(covered) of \(lesion) lesion pixels in the field")
    }

    @Test("blank, uniform, tiny and noise images give no field and do not crash")
    func degenerate() {
        #expect(LungField.area(GrayImage(width: 512, height: 512)) == 0)
        #expect(LungField.area(GrayImage(width: 512, height: 512, pixels: [Float](repeating: 1, count: 512 * 512))) == 0)
        #expect(LungField.area(GrayImage(width: 64, height: 64, pixels: [Float](repeating: 0.5, count: 64 * 64))) == 0)
        #expect(LungField.area(GrayImage(width: 1, height: 1)) == 0)
        #expect(LungField.area(GrayImage(width: 2, height: 3, pixels: [0, 1, 0, 1, 0, 1])) == 0)
        #expect(LungField.otsuThreshold([Float](repeating: 0.3, count: 10)) == nil)
        // A bright frame around a black image: the black inside is one dark region enclosed by the
        // frame (a "body" of pure air); it is counted, and the call survives NaNs.
        var framed = [Float](repeating: 0, count: 100 * 100)
        for y in 0..<100 { for x in 0..<100 where x < 5 || y < 5 || x >= 95 || y >= 95 { framed[y * 100 + x] = 1 } }
        #expect(LungField.area(GrayImage(width: 100, height: 100, pixels: framed)) == 90 * 90)
        framed[5050] = .nan
        _ = LungField.area(GrayImage(width: 100, height: 100, pixels: framed))
        var rng = SystemRandomNumberGenerator()
        let noise = (0..<(200 * 200)).map { _ in Float.random(in: 0...1, using: &rng) }
        _ = LungField.area(GrayImage(width: 200, height: 200, pixels: noise))
    }

    @Test("a large slice is segmented at a reduced size; the area is scaled to the original size")
    func largeSlice() {
        let slice = PhantomGenerator(seed: 2, size: 512).slice(index: 1, class: .covid)
        let exact = LungField.segment(slice.grayImage).area
        // The same slice, upsampled ×3 by pixel repetition (1536², over the 1024² limit).
        let big = 1536
        var pixels = [Float](repeating: 0, count: big * big)
        let g = slice.grayImage.pixels
        for y in 0..<big { for x in 0..<big { pixels[y * big + x] = g[(y / 3) * 512 + x / 3] } }
        let area = LungField.area(GrayImage(width: big, height: big, pixels: pixels))
        let expected = Double(exact * 9)
        #expect(abs(Double(area) - expected) <= 0.03 * expected, "\(area) vs \(expected)")
    }
}
