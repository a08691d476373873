// The processes of one MPI job, for affinity-lab's data-parallel training and sharded analysis
// (issue 19). Open MPI through CMPI; nothing here knows the model.
//
// Outside an MPI launch (no mpirun, srun or other PMI launcher in the environment) the world is one
// process: MPI is never initialised, every collective returns at once with the single process's
// values, and nothing is allocated or timed. (This module's name shadows the toolchain's
// distributed-actors module inside this package; no target here uses distributed actors.)

import CMPI
import Foundation

/// Why a collective operation or the start of MPI failed. Each case's `description` is a sentence.
public enum DistributedError: Error, CustomStringConvertible, Equatable {
    /// An MPI call returned an error code (the call, the code and MPI's own text for it).
    case mpi(call: String, code: Int32, message: String)
    /// A launcher started several tasks without an MPI environment the library can join (e.g.
    /// `srun` without `--mpi=pmix`): each task would run alone and they would overwrite each other.
    case noMPIEnvironment(String)
    /// A rank number outside 0..<size.
    case badRank(Int, size: Int)
    /// A message larger than one MPI call can carry (counts are 32-bit).
    case tooLarge(String)
    /// The ranks disagree on something that must be the same everywhere (buffer sizes, a resumed
    /// checkpoint): the job cannot continue.
    case ranksDisagree(String)
    /// A gathered or broadcast payload could not be decoded.
    case badPayload(String)

    public var description: String {
        switch self {
        case .mpi(let call, let code, let message): return "\(call) failed with MPI error \(code): \(message)"
        case .noMPIEnvironment(let s): return s
        case .badRank(let r, let size): return "rank \(r) does not exist in a world of \(size) processes"
        case .tooLarge(let s): return "the message is too large for one MPI call: \(s)"
        case .ranksDisagree(let s): return "the ranks disagree: \(s)"
        case .badPayload(let s): return "a message between ranks cannot be read: \(s)"
        }
    }
}

/// Communication counters of a world (what the benchmark reports): the allreduce calls, the
/// payload they summed and the wall time spent in them.
public struct CommunicationStats: Sendable, Equatable {
    /// Allreduce calls (the float and the double ones).
    public var allreduceCalls = 0
    /// Payload bytes summed by those calls (each rank's buffer size; a ring allreduce sends and
    /// receives 2 (N − 1) / N times this per rank).
    public var allreduceBytes = 0
    /// Wall seconds inside the allreduce calls (including waiting for the slowest rank).
    public var allreduceSeconds = 0.0
    /// Broadcast calls, bytes and seconds.
    public var broadcastCalls = 0, broadcastBytes = 0
    public var broadcastSeconds = 0.0
    public init() {}
}

/// How this process was started: by an MPI launcher (with the rank and size it announces), or
/// alone.
public struct LaunchEnvironment: Equatable, Sendable {
    /// The launcher's variables that name a rank: Open MPI's mpirun, PMIx (srun --mpi=pmix, prterun),
    /// PMI-1/2 (srun --mpi=pmi2, MPICH's hydra).
    public static let rankVariables = ["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"]

    /// Whether an MPI launcher started this process.
    public var launchedByMPI: Bool
    /// The rank and size the launcher announces (nil where it does not say).
    public var rank: Int?, size: Int?
    /// Tasks of a Slurm job step started without an MPI environment (srun without a PMI plugin);
    /// nil when Slurm did not start this process or started it with one.
    public var slurmTasksWithoutMPI: Int?

    /// Reads the launcher's variables from `environment`.
    public init(_ environment: [String: String] = ProcessInfo.processInfo.environment) {
        launchedByMPI = Self.rankVariables.contains { environment[$0] != nil }
        rank = (environment["OMPI_COMM_WORLD_RANK"] ?? environment["PMIX_RANK"] ?? environment["PMI_RANK"]).flatMap { Int($0) }
        size = (environment["OMPI_COMM_WORLD_SIZE"] ?? environment["PMI_SIZE"]).flatMap { Int($0) }
        if !launchedByMPI, let n = environment["SLURM_STEP_NUM_TASKS"].flatMap({ Int($0) }), n > 1 {
            slurmTasksWithoutMPI = n
        }
    }
}

/// The processes of one MPI job (`MPI_COMM_WORLD`), or this process alone.
///
/// Every collective must be called by every rank, in the same order, with buffers of the same size
/// (MPI's rule); a rank that stops calling them leaves the others waiting until the launcher ends
/// the job, which is why a failing rank calls `abort(code:)`.
/// Only the thread that started the world may call its operations (MPI_THREAD_FUNNELED).
public final class World: @unchecked Sendable {
    /// This process's rank, 0..<size; 0 writes files and prints.
    public let rank: Int
    /// The number of processes.
    public let size: Int
    /// Whether MPI was initialised (false: a world of one that never touches MPI).
    public let usesMPI: Bool
    /// The host name MPI reports for this rank (the local host name in a world of one).
    public let processorName: String
    /// The counters of the collectives so far.
    public private(set) var stats = CommunicationStats()
    /// Largest element count of one MPI call; longer buffers are sent in pieces of this size.
    public var maximumElementsPerCall = 1 << 28

    /// Whether this rank writes the results (rank 0).
    public var isRoot: Bool { rank == 0 }

    private var finalized = false
    private static let lock = NSLock()
    nonisolated(unsafe) private static var started: World?

    /// A world of one process that never initialises MPI.
    public static func single() -> World { World(rank: 0, size: 1, usesMPI: false, processorName: ProcessInfo.processInfo.hostName) }

    private init(rank: Int, size: Int, usesMPI: Bool, processorName: String) {
        self.rank = rank; self.size = size; self.usesMPI = usesMPI; self.processorName = processorName
    }

    /// The world this process belongs to: under an MPI launcher MPI is initialised (once per
    /// process; later calls return the same world) and `MPI_COMM_WORLD` is used with errors returned
    /// as codes; otherwise a world of one, without any MPI call.
    /// - Parameter requireLauncher: refuse to run alone when a Slurm step has several tasks but no
    ///   MPI environment (`srun` without a PMI plugin would start independent copies).
    /// - Throws: `DistributedError.noMPIEnvironment`, or `.mpi` when MPI cannot start.
    public static func start(environment: [String: String] = ProcessInfo.processInfo.environment,
                             requireLauncher: Bool = false) throws -> World {
        lock.lock(); defer { lock.unlock() }
        let launch = LaunchEnvironment(environment)
        if requireLauncher, let n = launch.slurmTasksWithoutMPI {
            throw DistributedError.noMPIEnvironment(
                "Slurm started \(n) tasks without an MPI environment, so each would run alone over the same files; "
                + "start them with srun --mpi=pmix (or pmi2), or with mpirun")
        }
        if let w = started { return w }
        guard launch.launchedByMPI else {
            let w = World.single()
            started = w
            return w
        }
        var provided: Int32 = 0
        var rc = MPI_Init_thread(nil, nil, cmpi_thread_funneled(), &provided)
        guard rc == cmpi_success() else { throw DistributedError.mpi(call: "MPI_Init_thread", code: rc, message: errorString(rc)) }
        rc = MPI_Comm_set_errhandler(cmpi_comm_world(), cmpi_errors_return())
        guard rc == cmpi_success() else { throw DistributedError.mpi(call: "MPI_Comm_set_errhandler", code: rc, message: errorString(rc)) }
        var r: Int32 = 0, n: Int32 = 0
        rc = MPI_Comm_rank(cmpi_comm_world(), &r)
        guard rc == cmpi_success() else { throw DistributedError.mpi(call: "MPI_Comm_rank", code: rc, message: errorString(rc)) }
        rc = MPI_Comm_size(cmpi_comm_world(), &n)
        guard rc == cmpi_success() else { throw DistributedError.mpi(call: "MPI_Comm_size", code: rc, message: errorString(rc)) }
        var name = [CChar](repeating: 0, count: Int(cmpi_max_processor_name()) + 1)
        var length: Int32 = 0
        _ = MPI_Get_processor_name(&name, &length)
        let w = World(rank: Int(r), size: Int(n), usesMPI: true, processorName: String(cString: name))
        started = w
        return w
    }

    /// Whether MPI has been initialised in this process (MPI_Initialized, which may be called at
    /// any time): false for a world of one.
    public static var isMPIInitialized: Bool {
        var flag: Int32 = 0
        _ = MPI_Initialized(&flag)
        return flag != 0
    }

    /// The world `start` made, if it was called.
    public static var current: World? { lock.lock(); defer { lock.unlock() }; return started }

    /// MPI's text for an error code.
    static func errorString(_ code: Int32) -> String {
        var buffer = [CChar](repeating: 0, count: Int(cmpi_max_error_string()) + 1)
        var length: Int32 = 0
        guard MPI_Error_string(code, &buffer, &length) == cmpi_success() else { return "unknown error" }
        return String(cString: buffer)
    }

    private func check(_ rc: Int32, _ call: String) throws {
        if rc != cmpi_success() { throw DistributedError.mpi(call: call, code: rc, message: Self.errorString(rc)) }
    }

    private func checkRoot(_ root: Int) throws {
        guard root >= 0, root < size else { throw DistributedError.badRank(root, size: size) }
    }

    // MARK: - Collectives

    /// Sums `buffer` element-wise over all ranks, in place: every rank ends with the same sums.
    /// - Throws: `DistributedError.mpi`.
    public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws {
        guard usesMPI, size > 1, let base = buffer.baseAddress else { return }
        let t0 = DispatchTime.now().uptimeNanoseconds
        var offset = 0
        while offset < buffer.count {
            let n = min(maximumElementsPerCall, buffer.count - offset)
            try check(MPI_Allreduce(cmpi_in_place(), base + offset, Int32(n), cmpi_float(), cmpi_sum(), cmpi_comm_world()), "MPI_Allreduce")
            offset += n
        }
        stats.allreduceCalls += 1
        stats.allreduceBytes += buffer.count * MemoryLayout<Float>.size
        stats.allreduceSeconds += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
    }

    /// Sums `values` element-wise over all ranks, in place.
    /// - Throws: `DistributedError.mpi`.
    public func allreduceSum(_ values: inout [Double]) throws {
        guard usesMPI, size > 1, !values.isEmpty else { return }
        let t0 = DispatchTime.now().uptimeNanoseconds
        let n = values.count
        try values.withUnsafeMutableBufferPointer { b in
            try check(MPI_Allreduce(cmpi_in_place(), b.baseAddress!, Int32(n), cmpi_double(), cmpi_sum(), cmpi_comm_world()), "MPI_Allreduce")
        }
        stats.allreduceCalls += 1
        stats.allreduceBytes += n * MemoryLayout<Double>.size
        stats.allreduceSeconds += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
    }

    /// The element-wise minimum and maximum of `values` over all ranks (for checks that every rank
    /// holds the same numbers).
    /// - Throws: `DistributedError.mpi`.
    public func allreduceRange(_ values: [Double]) throws -> (min: [Double], max: [Double]) {
        guard usesMPI, size > 1, !values.isEmpty else { return (values, values) }
        var lo = values, hi = values
        let n = Int32(values.count)
        try lo.withUnsafeMutableBufferPointer { b in
            try check(MPI_Allreduce(cmpi_in_place(), b.baseAddress!, n, cmpi_double(), cmpi_min(), cmpi_comm_world()), "MPI_Allreduce")
        }
        try hi.withUnsafeMutableBufferPointer { b in
            try check(MPI_Allreduce(cmpi_in_place(), b.baseAddress!, n, cmpi_double(), cmpi_max(), cmpi_comm_world()), "MPI_Allreduce")
        }
        return (lo, hi)
    }

    /// Copies `root`'s `buffer` into every rank's (all buffers of the same size).
    /// - Throws: `DistributedError.badRank`, `.mpi`.
    public func broadcast(_ buffer: UnsafeMutableBufferPointer<Float>, from root: Int = 0) throws {
        try checkRoot(root)
        guard usesMPI, size > 1, let base = buffer.baseAddress else { return }
        let t0 = DispatchTime.now().uptimeNanoseconds
        var offset = 0
        while offset < buffer.count {
            let n = min(maximumElementsPerCall, buffer.count - offset)
            try check(MPI_Bcast(base + offset, Int32(n), cmpi_float(), Int32(root), cmpi_comm_world()), "MPI_Bcast")
            offset += n
        }
        stats.broadcastCalls += 1
        stats.broadcastBytes += buffer.count * MemoryLayout<Float>.size
        stats.broadcastSeconds += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
    }

    /// `root`'s bytes, on every rank (the other ranks' `bytes` are ignored).
    /// - Throws: `DistributedError.badRank`, `.mpi`.
    public func broadcast(bytes: [UInt8], from root: Int = 0) throws -> [UInt8] {
        try checkRoot(root)
        guard usesMPI, size > 1 else { return bytes }
        var count = [Int64(bytes.count)]
        try count.withUnsafeMutableBufferPointer { b in
            try check(MPI_Bcast(b.baseAddress!, 1, cmpi_long_long(), Int32(root), cmpi_comm_world()), "MPI_Bcast")
        }
        var out = rank == root ? bytes : [UInt8](repeating: 0, count: Int(count[0]))
        let chunk = maximumElementsPerCall
        try out.withUnsafeMutableBufferPointer { b in
            var offset = 0
            while offset < b.count {
                let n = min(chunk, b.count - offset)
                try check(MPI_Bcast(b.baseAddress! + offset, Int32(n), cmpi_byte(), Int32(root), cmpi_comm_world()), "MPI_Bcast")
                offset += n
            }
        }
        return out
    }

    /// Every rank's bytes, in rank order, on `root`; nil on the other ranks.
    /// - Throws: `DistributedError.tooLarge` (more than 2 GiB in all), `.badRank`, `.mpi`.
    public func gather(bytes: [UInt8], to root: Int = 0) throws -> [[UInt8]]? {
        try checkRoot(root)
        guard usesMPI, size > 1 else { return [bytes] }
        guard bytes.count < Int(Int32.max) else { throw DistributedError.tooLarge("rank \(rank) sends \(bytes.count) bytes") }
        var mine = [Int32(bytes.count)]
        var counts = [Int32](repeating: 0, count: rank == root ? size : 1)
        try mine.withUnsafeMutableBufferPointer { m in
            try counts.withUnsafeMutableBufferPointer { c in
                try check(MPI_Gather(m.baseAddress!, 1, cmpi_int(), c.baseAddress!, 1, cmpi_int(), Int32(root), cmpi_comm_world()), "MPI_Gather")
            }
        }
        var displacements = [Int32](repeating: 0, count: counts.count)
        var total = 0
        if rank == root {
            for i in counts.indices {
                guard total + Int(counts[i]) < Int(Int32.max) else { throw DistributedError.tooLarge("the ranks send more than 2 GiB in all") }
                displacements[i] = Int32(total)
                total += Int(counts[i])
            }
        }
        var received = [UInt8](repeating: 0, count: max(total, 1))
        var send = bytes.isEmpty ? [UInt8(0)] : bytes
        try send.withUnsafeMutableBufferPointer { s in
            try received.withUnsafeMutableBufferPointer { r in
                try counts.withUnsafeMutableBufferPointer { c in
                    try displacements.withUnsafeMutableBufferPointer { d in
                        try check(MPI_Gatherv(s.baseAddress!, Int32(bytes.count), cmpi_byte(), r.baseAddress!, c.baseAddress!, d.baseAddress!,
                                              cmpi_byte(), Int32(root), cmpi_comm_world()), "MPI_Gatherv")
                    }
                }
            }
        }
        guard rank == root else { return nil }
        return counts.indices.map { i in Array(received[Int(displacements[i])..<Int(displacements[i]) + Int(counts[i])]) }
    }

    /// Every rank's value, in rank order, on `root` (JSON between the ranks); nil on the others.
    /// - Throws: `DistributedError.badPayload` when a rank's JSON does not decode, and what
    ///   `gather(bytes:to:)` throws.
    public func gather<T: Codable>(_ value: T, to root: Int = 0) throws -> [T]? {
        let encoded: Data
        do { encoded = try JSONEncoder().encode(value) } catch { throw DistributedError.badPayload("rank \(rank) cannot encode its result: \(error)") }
        guard let parts = try gather(bytes: [UInt8](encoded), to: root) else { return nil }
        return try parts.enumerated().map { (r, bytes) in
            do { return try JSONDecoder().decode(T.self, from: Data(bytes)) } catch {
                throw DistributedError.badPayload("the result of rank \(r) is not the expected JSON (\(bytes.count) bytes)")
            }
        }
    }

    /// Waits until every rank has called it.
    /// - Throws: `DistributedError.mpi`.
    public func barrier() throws {
        guard usesMPI, size > 1 else { return }
        try check(MPI_Barrier(cmpi_comm_world()), "MPI_Barrier")
    }

    /// Ends the whole job now: the launcher stops every rank and exits with `code`. For a rank that
    /// fails while the others may be waiting in a collective.
    public func abort(code: Int32) -> Never {
        if usesMPI && !finalized { _ = MPI_Abort(cmpi_comm_world(), code) }
        exit(code)
    }

    /// Shuts MPI down (a rank must do this before it exits normally, or the launcher reports it
    /// as failed). Further collectives are not allowed; a second call does nothing.
    public func finalize() {
        guard usesMPI, !finalized else { return }
        finalized = true
        _ = MPI_Finalize()
    }
}
