import Foundation
import Imaging
import Testing

@Suite("Model input preprocessing")
struct PreprocessingTests {
    struct ReferenceStats {
        var image: String
        var mean: Double, std: Double, min: Double, max: Double
        var first: [Double]
    }

    /// `results[i].input.stats` of the reference PyTorch run (fixtures/reference/README.md).
    func referenceStats() throws -> [ReferenceStats] {
        let path = sharedDirectory() + "/fixtures/reference/run_K128_seed7.json"
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let root = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let results = try #require(root["results"] as? [[String: Any]])
        return try results.map { result in
            let input = try #require(result["input"] as? [String: Any])
            let stats = try #require(input["stats"] as? [String: Any])
            return ReferenceStats(image: try #require(result["image"] as? String),
                                  mean: try #require(stats["mean"] as? Double), std: try #require(stats["std"] as? Double),
                                  min: try #require(stats["min"] as? Double), max: try #require(stats["max"] as? Double),
                                  first: try #require(stats["first"] as? [Double]))
        }
    }

    @Test("matches the reference run's input statistics for every fixture image")
    func referenceInput() throws {
        let all = try referenceStats()
        #expect(all.count == 6)
        #expect(all[0].image == "phantoms/imgs/0_normal_004.png")
        // The brief's numbers for results[0], so a changed fixture cannot silently pass.
        #expect(abs(all[0].min - -0.6060841) < 1e-6 && abs(all[0].max - 3.0316572) < 1e-6)
        for reference in all {
            let png = try PNG.read(path: sharedDirectory() + "/fixtures/reference/" + reference.image)
            let input = Preprocessing.modelInput(png.rgbImage())
            #expect(input.count == 3 * 512 * 512)
            var sum = 0.0, squares = 0.0
            for v in input { sum += Double(v) }
            let mean = sum / Double(input.count)
            for v in input { squares += (Double(v) - mean) * (Double(v) - mean) }
            let std = (squares / Double(input.count - 1)).squareRoot()
            #expect(abs(mean - reference.mean) < 1e-5, "\(reference.image) mean \(mean)")
            #expect(abs(std - reference.std) < 1e-5, "\(reference.image) std \(std)")
            #expect(abs(Double(input.min()!) - reference.min) < 1e-5, "\(reference.image)")
            #expect(abs(Double(input.max()!) - reference.max) < 1e-5, "\(reference.image)")
            for (k, expected) in reference.first.enumerated() {
                #expect(abs(Double(input[k]) - expected) < 1e-5, "\(reference.image) value \(k)")
            }
            // The gray fast path gives the same array.
            #expect(Preprocessing.modelInput(png) == input)
            #expect(Preprocessing.modelInput(png.grayImage()) == input)
        }
    }

    @Test("every channel has mean 0 and unbiased std 1")
    func standardization() {
        var rng = SeededGenerator(seed: 5)
        let planes = (0..<(3 * 40 * 30)).map { i in Float(rng.unit()) * Float(1 + i / 1200) }
        let input = Preprocessing.modelInput(RGBImage(width: 40, height: 30, planes: planes))
        let n = 512 * 512
        for c in 0..<3 {
            let channel = input[c * n..<(c + 1) * n].map(Double.init)
            let mean = channel.reduce(0, +) / Double(n)
            let variance = channel.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(n - 1)
            #expect(abs(mean) < 1e-6)
            #expect(abs(variance.squareRoot() - 1) < 1e-5)
        }
    }

    @Test("standardize divides by the unbiased (N − 1) standard deviation")
    func unbiased() {
        var values: [Float] = [0, 1, 2, 3]
        values.withUnsafeMutableBufferPointer { Preprocessing.standardize($0.baseAddress!, count: 4) }
        // mean 1.5, Σ(x − mean)² = 5, unbiased std √(5/3) (the biased √(5/4) would give ±1.342).
        let std = (5.0 / 3.0).squareRoot()
        let expected = [-1.5, -0.5, 0.5, 1.5].map { Float($0 / std) }
        for (v, e) in zip(values, expected) { #expect(abs(v - e) < 1e-6) }
    }

    @Test("a blank image becomes zeros, not NaN")
    func blank() {
        let input = Preprocessing.modelInput(GrayImage(width: 512, height: 512, pixels: [Float](repeating: 0.3, count: 512 * 512)))
        #expect(input.allSatisfy { $0 == 0 })
    }

    @Test("bilinear upsampling matches torch interpolate(align_corners=False)")
    func upsample() {
        // torch.nn.functional.interpolate(torch.tensor([[[[0., 1.], [2., 3.]]]]), size=(4, 4), mode="bilinear")
        let expected: [Float] = [0, 0.25, 0.75, 1, 0.5, 0.75, 1.25, 1.5, 1.5, 1.75, 2.25, 2.5, 2, 2.25, 2.75, 3]
        let out = Preprocessing.resized(GrayImage(width: 2, height: 2, pixels: [0, 1, 2, 3]), height: 4, width: 4)
        #expect(out.pixels == expected)
    }

    @Test("bilinear downsampling by 2 averages pixel pairs (no antialias)")
    func downsample() {
        let pixels = (0..<16).map(Float.init)
        let out = Preprocessing.resized(GrayImage(width: 4, height: 4, pixels: pixels), height: 2, width: 2)
        // src = (dst + 0.5)·2 − 0.5 = 0.5, 2.5: the mean of a 2×2 block.
        #expect(out.pixels == [2.5, 4.5, 10.5, 12.5])
        // Non-integer ratio, 3 → 2: src = 0.25, 1.75.
        let row = Preprocessing.resized(GrayImage(width: 3, height: 1, pixels: [0, 10, 20]), height: 1, width: 2)
        #expect(row.pixels == [2.5, 17.5])
    }

    @Test("512×512 is copied unchanged; other sizes are resized to 512×512")
    func identityAndResize() {
        var rng = SeededGenerator(seed: 1)
        let pixels = (0..<(512 * 512)).map { _ in Float(rng.unit()) }
        let same = Preprocessing.resized(GrayImage(width: 512, height: 512, pixels: pixels), height: 512, width: 512)
        #expect(same.pixels == pixels)
        // A 256×256 checkerboard of 2×2 blocks, upsampled: size and range.
        let checker: [Float] = (0..<(256 * 128)).map { (i: Int) -> Float in Float((i / 2 + i / 512) % 2) }
        let input = Preprocessing.modelInput(GrayImage(width: 256, height: 128, pixels: checker))
        let plane = 512 * 512
        #expect(input.count == 3 * plane)
        #expect(Array(input[0..<plane]) == Array(input[plane..<(2 * plane)]))
    }

    @Test("transformSize follows torchvision's float32 scale rule")
    func transformSize() {
        #expect(Preprocessing.transformSize(height: 512, width: 512) == (512, 512))
        #expect(Preprocessing.transformSize(height: 256, width: 256) == (512, 512))
        #expect(Preprocessing.transformSize(height: 1024, width: 768) == (512, 384))
        // float32(512/300) = 1.2799999714 → 383.99 and 511.99 round down, as in the original.
        #expect(Preprocessing.transformSize(height: 300, width: 400) == (383, 511))
        #expect(Preprocessing.transformSize(height: 513, width: 512) == (512, 511))
        #expect(Preprocessing.transformSize(height: 100, width: 1000) == (51, 512))
        for (h, w) in [(1, 1), (7, 900), (2000, 3), (511, 512)] {
            let size = Preprocessing.transformSize(height: h, width: w)
            #expect(max(size.height, size.width) <= 512)
        }
    }
}
