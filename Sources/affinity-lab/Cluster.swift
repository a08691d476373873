// affinity-lab over several processes (issue 19): the MPI world of the lab, the trainer's replicas,
// the split of inputs across ranks, and how a failing rank ends the job.

import Affinity
import ArgumentParser
import Distributed
import Foundation
import Service

/// The trainer's replicas are the MPI world.
extension World: TrainingReplicas {
    public var count: Int { size }
    public func sum(_ buffer: UnsafeMutableBufferPointer<Float>) throws { try allreduceSum(buffer) }
    public func sum(_ values: inout [Double]) throws { try allreduceSum(&values) }
}

/// The lab's world: started once by the first command that asks; a world of one without MPI.
enum LabCluster {
    /// The world, started (MPI_Init) when the process runs under an MPI launcher.
    /// - Parameter requireLauncher: refuse a Slurm step of several tasks without MPI (`--distributed`).
    /// - Throws: `LabError` named `mpi` (exit 1) when MPI cannot start.
    static func world(requireLauncher: Bool = false) throws -> World {
        do { return try World.start(requireLauncher: requireLauncher) } catch let e as DistributedError {
            throw LabError(name: "mpi", message: sentence(e.description), code: 1)
        }
    }

    /// A `DistributedError` of a collective as a `LabError`.
    static func labError(_ e: Error) -> Error {
        if let d = e as? DistributedError { return LabError(name: "mpi", message: sentence(d.description), code: 1) }
        return e
    }

    /// "rank r of n on host: " in a world of several processes, "" otherwise: the prefix of this
    /// rank's messages on stderr.
    static var messagePrefix: String {
        guard let w = World.current, w.size > 1 else { return "" }
        return "rank \(w.rank) of \(w.size) on \(w.processorName): "
    }

    /// The items this rank takes of `count`: every size-th, starting at its rank (interleaved, so
    /// that slow and fast inputs spread over the ranks).
    static func share(of count: Int, world: World) -> [Int] {
        Array(stride(from: world.rank, to: count, by: world.size))
    }

    /// Ends the process after `run`: MPI shut down normally; or, when a rank of several fails, the
    /// whole job ended through the launcher with this rank's exit code (the other ranks may be
    /// waiting for it in a collective and would otherwise wait forever).
    static func finish(exitCode: Int32?) {
        guard let w = World.current, w.usesMPI else { return }
        if let code = exitCode, code != 0, w.size > 1 {
            FileHandle.standardError.write(Data("affinity-lab: \(messagePrefix)ending the job (exit code \(code)); the launcher stops the other ranks.\n".utf8))
            w.abort(code: code)
        }
        w.finalize()
    }

    /// Gathers each rank's results on rank 0 and puts them back in input order: `results` are this
    /// rank's (index, value) pairs. Rank 0 gets every pair sorted by index; the others get nil.
    static func gatherInOrder<T: Codable>(_ results: [IndexedResult<T>], world: World) throws -> [T]? {
        do {
            guard let all = try world.gather(results) else { return nil }
            return all.joined().sorted { $0.index < $1.index }.map(\.value)
        } catch { throw labError(error) }
    }
}

/// One input's result with its place in the input order (for `LabCluster.gatherInOrder`).
struct IndexedResult<T: Codable>: Codable {
    var index: Int
    var value: T
}

/// One slice of a scan analysed by one rank: its result, the model's id and (with --mask-out) its
/// label slice.
struct ScanSliceShare: Codable {
    var result: ScanSliceResult
    var modelID: String?
    var labels: LabelRuns?
}

/// A label slice as runs of equal values (mostly zeros: a few bytes instead of one per voxel).
struct LabelRuns: Codable, Equatable {
    var values: [UInt8]
    var lengths: [Int]

    init(_ labels: [UInt8]) {
        values = []; lengths = []
        for v in labels {
            if let last = values.last, last == v { lengths[lengths.count - 1] += 1 } else { values.append(v); lengths.append(1) }
        }
    }

    /// The label slice again.
    func expanded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(lengths.reduce(0, +))
        for (v, n) in zip(values, lengths) { out.append(contentsOf: repeatElement(v, count: n)) }
        return out
    }
}
