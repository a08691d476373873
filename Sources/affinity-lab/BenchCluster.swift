// `affinity-lab bench allreduce`: MPI's collectives between the ranks of a job, timed and checked
// (issue 19) — the check to run first on a new cluster, and the figure behind the README's network
// estimates.

import ArgumentParser
import Distributed
import Foundation

struct BenchAllreduce: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "allreduce",
        abstract: "Time and check the MPI collectives between the ranks of an MPI job (mpirun -np N / srun --mpi=pmix).",
        discussion: """
        Every rank fills a float buffer of --megabytes with values that depend on its rank; the \
        buffer is summed over the ranks (MPI_Allreduce, in place) --repeats times after a barrier and \
        every sum is checked, then a broadcast from rank 0 and a gather on rank 0 are checked. Rank 0 \
        prints the median time, the algorithm bandwidth (bytes / time) and the bus bandwidth \
        (2 (N − 1) / N × bytes / time: what each rank sends in a ring allreduce, per second). The \
        default size is the gradient buffer of one data-parallel train step at C' = 128 (about \
        56 MB). A wrong sum is the error mpi-check-failed (exit 1). Outside MPI it is a world of one \
        and times nothing.
        """)

    @Option(help: "Buffer size in megabytes (10⁶ bytes; default 56, one train step's gradients at C' = 128).")
    var megabytes: Double = 56

    @Option(help: "Timed allreduces (the median is reported).")
    var repeats = 5

    @Option(name: .customLong("bucket-megabytes"), help: "Sum the buffer in pieces of at most this many megabytes, one MPI call each (default: one call for the whole buffer, as the trainer does).")
    var bucketMegabytes: Double?

    @Flag(help: "Print one JSON object.")
    var json = false

    func validate() throws {
        guard megabytes > 0, megabytes <= 4096 else { throw ValidationError("--megabytes must be in (0, 4096], got \(megabytes)") }
        try requirePositive(repeats, "--repeats")
        if let b = bucketMegabytes, !(b > 0) { throw ValidationError("--bucket-megabytes must be positive, got \(b)") }
    }

    func run() throws {
        try labRun {
            let world = try LabCluster.world(requireLauncher: true)
            do { try measure(world) } catch let e as LabError { throw e } catch { throw LabCluster.labError(error) }
        }
    }

    private func measure(_ world: World) throws {
        let n = max(1, Int(megabytes * 1e6) / MemoryLayout<Float>.size)
        if let b = bucketMegabytes { world.maximumElementsPerCall = max(1, Int(b * 1e6) / MemoryLayout<Float>.size) }
        let p = world.size, r = world.rank
        // Small integers: every partial sum is exact in float, so the check is exact.
        func value(_ i: Int, _ rank: Int) -> Float { Float(i % 251 + 3 * rank) }
        let expectedOffset = Float(3 * p * (p - 1) / 2)
        let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: n)
        defer { buffer.deallocate() }
        var times: [Double] = []
        for k in 0..<repeats {
            for i in 0..<n { buffer[i] = value(i, r) }
            try world.barrier()
            let t0 = DispatchTime.now().uptimeNanoseconds
            try world.allreduceSum(buffer)
            times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
            for i in 0..<n where buffer[i] != Float(p) * Float(i % 251) + expectedOffset {
                throw LabError(name: "mpi-check-failed",
                               message: "Allreduce \(k + 1) on rank \(r) gave \(buffer[i]) at element \(i), expected \(Float(p) * Float(i % 251) + expectedOffset).",
                               code: 1)
            }
        }
        let greeting = try world.broadcast(bytes: Array("from rank 0 of \(p)".utf8), from: 0)
        guard greeting == Array("from rank 0 of \(p)".utf8) else {
            throw LabError(name: "mpi-check-failed", message: "Rank \(r) received another broadcast than rank 0 sent.", code: 1)
        }
        struct Hello: Codable { var rank: Int; var host: String }
        guard let hellos = try world.gather(Hello(rank: r, host: world.processorName)) else { return }
        guard hellos.map(\.rank) == Array(0..<p) else {
            throw LabError(name: "mpi-check-failed", message: "The gather on rank 0 returned ranks \(hellos.map(\.rank)), expected 0…\(p - 1).", code: 1)
        }
        let median = times.sorted()[times.count / 2]
        let bytes = n * MemoryLayout<Float>.size
        let bus = p > 1 ? 2 * Double(p - 1) / Double(p) * Double(bytes) : 0
        let report: [String: Any] = [
            "processes": p, "hosts": Array(Set(hellos.map(\.host))).sorted(), "bytes": bytes, "repeats": repeats,
            "median_s": median, "min_s": times.min() ?? 0,
            "algorithm_gb_per_s": median > 0 && p > 1 ? Double(bytes) / median / 1e9 : 0,
            "bus_gb_per_s": median > 0 ? bus / median / 1e9 : 0,
            "checked": true, "mpi": world.usesMPI, "elements_per_call": min(n, world.maximumElementsPerCall),
        ]
        if json {
            printJSON(report)
        } else {
            print("allreduce of \(String(format: "%.1f", Double(bytes) / 1e6)) MB over \(p) rank(s) on \(Set(hellos.map(\.host)).count) host(s): "
                  + "median \(String(format: "%.4f", median)) s, bus bandwidth \(String(format: "%.2f", (report["bus_gb_per_s"] as? Double) ?? 0)) GB/s; "
                  + "sums, broadcast and gather checked")
        }
    }
}
