// The engine's spinning worker threads (Sources/CKernels/pool.c, `runConcurrently`): every chunk
// runs exactly once, chunks run at the same time on different threads, a loop that finds the
// workers taken by another thread's loop returns without running anything (its caller then uses
// Dispatch), and many threads' loops at once all give their results.
import CKernels
import Dispatch
import Foundation
import Synchronization
@testable import Tensor
import Testing

/// affinity_pool_run until it gets the workers (another test's loop may have them for a moment).
private func runOnPool(_ chunks: Int, threads: Int, _ body: (Int) -> Void) -> Bool {
    for _ in 0..<20_000 {
        let ran = withoutActuallyEscaping(body) { body in
            withUnsafePointer(to: body) { p in
                affinity_pool_run(chunks, Int32(threads), { raw, c in raw!.assumingMemoryBound(to: ((Int) -> Void).self).pointee(c) },
                                  UnsafeMutableRawPointer(mutating: p))
            }
        }
        if ran != 0 { return true }
        usleep(100)
    }
    return false
}

@Suite struct WorkerPoolTests {
    @Test(arguments: [1, 2, 3, 7, 100, 1000])
    func everyChunkRunsExactlyOnce(chunks: Int) {
        let counts = UnsafeMutablePointer<Int>.allocate(capacity: chunks)
        counts.initialize(repeating: 0, count: chunks)
        defer { counts.deallocate() }
        #expect(runOnPool(chunks, threads: 2) { c in counts[c] += 1 })
        #expect((0..<chunks).allSatisfy { counts[$0] == 1 }, "a chunk ran twice or not at all")
        #expect(affinity_pool_workers() >= 1)
    }

    @Test func chunksRunAtTheSameTimeOnDifferentThreads() {
        // Chunk 0 waits (up to 10 s) for chunk 1 to start: only a second thread can start it.
        let started = Atomic<Int>(0)
        let threadOf = UnsafeMutablePointer<pthread_t>.allocate(capacity: 2)
        defer { threadOf.deallocate() }
        var sawOther = false
        #expect(runOnPool(2, threads: 2) { c in
            threadOf[c] = pthread_self()
            if c == 1 { started.store(1, ordering: .releasing) }
            if c == 0 {
                let end = Date().addingTimeInterval(10)
                while Date() < end {
                    if started.load(ordering: .acquiring) != 0 { sawOther = true; break }
                    usleep(50)
                }
            }
        })
        #expect(sawOther, "chunk 1 did not start while chunk 0 ran")
        #expect(pthread_equal(threadOf[0], threadOf[1]) == 0)
    }

    @Test func aLoopThatFindsTheWorkersTakenRunsNothing() {
        // While a loop holds the workers (its chunk 0 waits for the second try below), a second
        // call returns 0 at once without running its chunks.
        var secondRan = 0, secondResult: Int32 = -1
        #expect(runOnPool(2, threads: 2) { c in
            guard c == 0 else { return }
            secondResult = affinity_pool_run(3, 2, { raw, _ in raw!.assumingMemoryBound(to: Int.self).pointee += 1 }, &secondRan)
        })
        #expect(secondResult == 0 && secondRan == 0)
    }

    @Test func manyThreadsLoopsAtOnceAllGiveTheirResults() {
        // Four threads, each 200 parallel loops (the pool for whichever gets it, Dispatch for the others).
        let loops = 200, n = 64
        let results = UnsafeMutablePointer<Int>.allocate(capacity: 4 * loops * n)
        results.initialize(repeating: 0, count: 4 * loops * n)
        defer { results.deallocate() }
        DispatchQueue.concurrentPerform(iterations: 4) { t in
            for l in 0..<loops {
                let base = (t * loops + l) * n
                parallelFor(n) { i in results[base + i] = base + i + 1 }
            }
        }
        #expect((0..<(4 * loops * n)).allSatisfy { results[$0] == $0 + 1 })
    }
}
