import Foundation
import Imaging
import Testing

@Suite("Figures: overlays, heatmaps, confusion matrices")
struct FigureTests {
    func colour(_ image: PixelImage, _ x: Int, _ y: Int) -> [Int] {
        (0..<3).map { Int(image.sample(x: x, y: y, channel: $0)) }
    }

    @Test("overlay tints inside the mask only, outlines the box, colours by score")
    func overlay() throws {
        let w = 64, h = 48
        let gray = GrayImage(width: w, height: h, pixels: [Float](repeating: 0.5, count: w * h))
        var mask = [Float](repeating: 0, count: w * h)
        for y in 10..<20 { for x in 10..<30 { mask[y * w + x] = 0.9 } }
        mask[30 * w + 40] = 0.4  // below the threshold: not tinted
        let lesion = OverlayLesion(mask: mask, box: Box(x1: 8, y1: 8, x2: 32, y2: 22), score: 1)
        let image = try Overlay.render(slice: gray, lesions: [lesion], alpha: 0.5, showScores: false)
        #expect(image.format == .rgb && image.width == w && image.height == h)
        // Gray 0.5 → 128; red at alpha 0.5: (0.5·128 + 0.5·255, 0.5·128, 0.5·128).
        #expect(colour(image, 20, 15) == [192, 64, 64])
        // Mask edge in full colour.
        #expect(colour(image, 10, 15) == [255, 0, 0])
        // Outside the mask and the box: untouched gray.
        #expect(colour(image, 50, 40) == [128, 128, 128])
        #expect(colour(image, 40, 30) == [128, 128, 128])
        #expect(colour(image, 9, 15) == [128, 128, 128])
        // The box outline.
        #expect(colour(image, 8, 8) == [255, 0, 0])
        #expect(colour(image, 31, 21) == [255, 0, 0])
        #expect(colour(image, 20, 8) == [255, 0, 0])

        // A low score is yellow.
        let low = try Overlay.render(slice: gray, lesions: [OverlayLesion(mask: nil, box: Box(x1: 8, y1: 8, x2: 32, y2: 22), score: 0)],
                                     showScores: false)
        #expect(colour(low, 8, 8) == [255, 255, 0])
        #expect(colour(low, 20, 15) == [128, 128, 128])
        #expect(Overlay.color(forScore: 0.5) == RGBCanvas.Color(255, 128, 0))
    }

    @Test("overlay score labels are drawn, and wrong mask sizes are refused")
    func overlayLabelsAndErrors() throws {
        let gray = GrayImage(width: 64, height: 64)
        let boxOnly = OverlayLesion(mask: nil, box: Box(x1: 20, y1: 30, x2: 40, y2: 50), score: 0.75)
        let withLabel = try Overlay.render(slice: gray, lesions: [boxOnly])
        let without = try Overlay.render(slice: gray, lesions: [boxOnly], showScores: false)
        var differing = 0
        for y in 0..<30 { for x in 0..<64 where colour(withLabel, x, y) != colour(without, x, y) { differing += 1 } }
        #expect(differing > 10)  // "0.75" above the box
        #expect(throws: ImageError.self) {
            try Overlay.render(slice: gray, lesions: [OverlayLesion(mask: [1, 0], box: boxOnly.box, score: 1)])
        }
    }

    @Test("overlay of a phantom, written to a PNG and read back")
    func overlayFile() throws {
        let slice = PhantomGenerator(seed: 4).slice(index: 1, class: .covid)
        let lesions = slice.lesions.enumerated().map { i, l in
            OverlayLesion(mask: slice.mask(ofLesion: i).map(Float.init),
                          box: Box(x1: Float(l.box.xmin), y1: Float(l.box.ymin), x2: Float(l.box.xmax), y2: Float(l.box.ymax)),
                          score: 0.9)
        }
        let image = try Overlay.render(slice: slice.grayImage, lesions: lesions)
        let directory = try TemporaryDirectory()
        defer { directory.cleanup() }
        try PNG.write(image, to: directory.path + "/overlay.png")
        #expect(try PNG.read(path: directory.path + "/overlay.png") == image)
        // A pixel well inside the first lesion is tinted (red > green), a far corner is not.
        let first = slice.lesions[0]
        let interior = (0..<(512 * 512)).first { p in
            let x = p % 512, y = p / 512
            return x > 0 && y > 0 && x < 511 && y < 511 && [p, p - 1, p + 1, p - 512, p + 512].allSatisfy { slice.instances[$0] == 1 }
        }!
        let pixel = colour(image, interior % 512, interior / 512)
        #expect(pixel[0] > pixel[1] + 20 && pixel[1] >= pixel[2], "\(pixel) at \(interior), lesion box \(first.box)")
        #expect(colour(image, 2, 2)[0] == colour(image, 2, 2)[2])
    }

    @Test("heatmap: red positive, blue negative, white zero, symmetric scale")
    func heatmap() throws {
        let values: [Float] = [2, -1, 0, -2, 1, .nan]
        let image = try Heatmap.render(values, rows: 2, cols: 3, cellSize: 5)
        #expect(image.width == 15 && image.height == 10)
        let red = colour(image, 2, 2), lightBlue = colour(image, 7, 2), white = colour(image, 12, 2)
        let blue = colour(image, 2, 7), lightRed = colour(image, 7, 7), gray = colour(image, 12, 7)
        #expect(red == [178, 24, 43])           // +max saturates
        #expect(blue == [33, 102, 172])         // −max saturates: the scale is symmetric
        #expect(white == [255, 255, 255])
        #expect(gray == [128, 128, 128])
        #expect(lightRed[0] > lightRed[2] && lightRed[1] > red[1])
        #expect(lightBlue[2] > lightBlue[0] && lightBlue[0] > blue[0])
        // Every pixel of a cell has the cell's colour.
        #expect(colour(image, 14, 9) == gray && colour(image, 0, 0) == red)
        #expect(throws: ImageError.self) { try Heatmap.render([1, 2, 3], rows: 2, cols: 2) }
        // All-zero matrix: white.
        let zero = try Heatmap.render([0, 0], rows: 1, cols: 2, cellSize: 1)
        #expect(colour(zero, 1, 0) == [255, 255, 255])
    }

    @Test("CSV round-trips the values exactly")
    func csv() throws {
        var rng = SeededGenerator(seed: 8)
        let values = (0..<12).map { _ in Float(rng.normal()) * 1e-3 } + [0, -0, 1e30, .infinity]
        let text = try Heatmap.csv(values, rows: 4, cols: 4)
        let lines = text.split(separator: "\n")
        #expect(lines.count == 4)
        let parsed = lines.flatMap { $0.split(separator: ",").map { Float(String($0))! } }
        #expect(parsed == values)
        let directory = try TemporaryDirectory()
        defer { directory.cleanup() }
        try Heatmap.writeCSV(values, rows: 4, cols: 4, to: directory.path + "/m.csv")
        #expect(try String(contentsOfFile: directory.path + "/m.csv", encoding: .utf8) == text)
        #expect(throws: ImageError.self) { try Heatmap.csv(values, rows: 3, cols: 4) }
    }

    @Test("confusion matrix: cells shaded by row-normalised value, digits drawn")
    func confusionMatrix() throws {
        let counts = [[10, 0, 0], [5, 5, 0], [0, 2, 8]]
        let image = try ConfusionMatrixPlot.render(counts, cellSize: 96)
        let layout = ConfusionMatrixPlot.layout(classNames: ["NORMAL", "CP", "COVID"], cellSize: 96)
        #expect(image.width == layout.gridX + 3 * 96 + 12)
        // Sample a cell's background just inside its top-left corner (away from the text).
        func background(_ r: Int, _ c: Int) -> [Int] {
            colour(image, layout.gridX + c * 96 + 4, layout.gridY + r * 96 + 4)
        }
        let full = ConfusionMatrixPlot.fullColor
        #expect(background(0, 0) == [Int(full.r), Int(full.g), Int(full.b)])   // 100 %
        #expect(background(0, 1) == [255, 255, 255])                            // 0 %
        let half = RGBCanvas.Color.mix(.white, full, 0.5)
        #expect(background(1, 0) == [Int(half.r), Int(half.g), Int(half.b)])    // 50 %
        #expect(background(2, 2)[0] < background(2, 1)[0])                      // 80 % darker than 20 %
        // Text: white pixels on the dark diagonal cell, dark pixels on a white cell.
        func count(_ r: Int, _ c: Int, _ predicate: ([Int]) -> Bool) -> Int {
            var n = 0
            for y in (layout.gridY + r * 96 + 2)..<(layout.gridY + (r + 1) * 96 - 2) {
                for x in (layout.gridX + c * 96 + 2)..<(layout.gridX + (c + 1) * 96 - 2) where predicate(colour(image, x, y)) { n += 1 }
            }
            return n
        }
        #expect(count(0, 0) { $0 == [255, 255, 255] } > 50)
        #expect(count(0, 1) { $0[0] < 100 } > 30)
        // The count "10" at scale 3 draws exactly the glyph pixels of "1" and "0".
        let ones = BitmapFont.glyph(for: "1").map { $0.nonzeroBitCount }.reduce(0, +)
        let zeros = BitmapFont.glyph(for: "0").map { $0.nonzeroBitCount }.reduce(0, +)
        let percent = "100.0%".reduce(0) { $0 + BitmapFont.glyph(for: $1).map { $0.nonzeroBitCount }.reduce(0, +) }
        #expect(count(0, 0) { $0 == [255, 255, 255] } == 9 * (ones + zeros) + 4 * percent)
        #expect(throws: ImageError.self) { try ConfusionMatrixPlot.render([[1, 2], [3, 4]]) }
        #expect(throws: ImageError.self) { try ConfusionMatrixPlot.render([[1, 0, 0], [0, -1, 0], [0, 0, 1]]) }
    }

    @Test("bitmap font covers digits, letters and the punctuation the figures use")
    func font() {
        for character in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ.,:-+=_/%()? " {
            #expect(BitmapFont.hasGlyph(for: character), "\(character)")
            #expect(BitmapFont.glyph(for: character).count == 7)
        }
        #expect(BitmapFont.glyph(for: "a") == BitmapFont.glyph(for: "A"))
        #expect(BitmapFont.glyph(for: "€") == BitmapFont.glyph(for: "?"))
        #expect(BitmapFont.glyph(for: "8") != BitmapFont.glyph(for: "0"))
        // All glyphs differ from each other.
        let all = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ.,:-+=_/%()?".map { BitmapFont.glyph(for: $0) }
        #expect(Set(all.map { $0.map(String.init).joined(separator: ",") }).count == all.count)
        #expect(BitmapFont.width(of: "10", scale: 3) == 33)
    }
}
