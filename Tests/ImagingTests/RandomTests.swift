import Imaging
import Testing

@Suite("Seeded generators")
struct RandomTests {
    @Test("SplitMix64 matches the reference implementation")
    func splitMix() {
        // splitmix64.c (Vigna) with x = 0: first outputs.
        var g = SplitMix64(seed: 0)
        #expect(g.next() == 0xE220_A839_7B1D_CDAF)
        #expect(g.next() == 0x6E78_9E6A_A1B9_65F4)
    }

    @Test("xoshiro256** is reproducible and roughly uniform / normal")
    func xoshiro() {
        var a = SeededGenerator(seed: 123), b = SeededGenerator(seed: 123), c = SeededGenerator(seed: 124)
        let first = (0..<8).map { _ in a.next() }
        #expect(first == (0..<8).map { _ in b.next() })
        #expect(first != (0..<8).map { _ in c.next() })
        var sum = 0.0, normalSum = 0.0, normalSquares = 0.0, outside = 0
        let n = 100_000
        for _ in 0..<n {
            let u = a.unit()
            if !(u >= 0 && u < 1) { outside += 1 }
            sum += u
            let z = a.normal()
            normalSum += z
            normalSquares += z * z
        }
        #expect(outside == 0)
        #expect(abs(sum / Double(n) - 0.5) < 0.01)
        #expect(abs(normalSum / Double(n)) < 0.02)
        #expect(abs(normalSquares / Double(n) - 1) < 0.03)
        var counts = [0, 0, 0]
        for _ in 0..<30_000 { counts[a.int(0...2)] += 1 }
        #expect(counts.allSatisfy { abs($0 - 10_000) < 500 })
        #expect(SplitMix64.mix(1, 2) != SplitMix64.mix(2, 1))
    }
}
