// The Distributed API outside an MPI launch: a world of one that never initialises MPI, the
// launcher detection, and the split of inputs. The collectives over several ranks are tested under
// mpirun in LabTests (LabDistributedTests), through affinity-lab.

import Distributed
import Foundation
import Testing

@Suite("Distributed: a world of one without MPI")
struct WorldTests {
    @Test("the launcher's variables are read: Open MPI, PMIx, PMI-2, and a Slurm step without MPI")
    func launchEnvironment() {
        let alone = LaunchEnvironment([:])
        #expect(!alone.launchedByMPI && alone.rank == nil && alone.size == nil && alone.slurmTasksWithoutMPI == nil)
        let ompi = LaunchEnvironment(["OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "4"])
        #expect(ompi.launchedByMPI && ompi.rank == 1 && ompi.size == 4)
        let pmix = LaunchEnvironment(["PMIX_RANK": "3", "SLURM_STEP_NUM_TASKS": "8"])
        #expect(pmix.launchedByMPI && pmix.rank == 3 && pmix.slurmTasksWithoutMPI == nil)
        let pmi2 = LaunchEnvironment(["PMI_RANK": "0", "PMI_SIZE": "2"])
        #expect(pmi2.launchedByMPI && pmi2.rank == 0 && pmi2.size == 2)
        let srunAlone = LaunchEnvironment(["SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "2"])
        #expect(!srunAlone.launchedByMPI && srunAlone.slurmTasksWithoutMPI == 4)
        // One task of a Slurm step (or a batch script) is simply one process.
        #expect(LaunchEnvironment(["SLURM_STEP_NUM_TASKS": "1"]).slurmTasksWithoutMPI == nil)
    }

    @Test("without a launcher the world is one process, MPI is never initialised and the collectives return the input")
    func worldOfOne() throws {
        let w = try World.start(environment: [:])
        #expect(w.size == 1 && w.rank == 0 && w.isRoot && !w.usesMPI)
        #expect(!World.isMPIInitialized, "a world of one must not call MPI_Init")
        var floats: [Float] = [1, -2.5, 3e-8, .greatestFiniteMagnitude]
        try floats.withUnsafeMutableBufferPointer { try w.allreduceSum($0) }
        #expect(floats == [1, -2.5, 3e-8, .greatestFiniteMagnitude])
        try floats.withUnsafeMutableBufferPointer { try w.broadcast($0, from: 0) }
        #expect(floats == [1, -2.5, 3e-8, .greatestFiniteMagnitude])
        var doubles = [0.25, 7]
        try w.allreduceSum(&doubles)
        #expect(doubles == [0.25, 7])
        let range = try w.allreduceRange([4, 5])
        #expect(range.min == [4, 5] && range.max == [4, 5])
        #expect(try w.broadcast(bytes: [9, 8, 7], from: 0) == [9, 8, 7])
        #expect(try w.gather(bytes: [1, 2], to: 0) == [[1, 2]])
        struct Line: Codable, Equatable { var index: Int; var text: String }
        #expect(try w.gather(Line(index: 3, text: "é ✓"), to: 0) == [Line(index: 3, text: "é ✓")])
        try w.barrier()
        // Nothing was sent, so nothing was counted.
        #expect(w.stats == CommunicationStats())
        #expect(!World.isMPIInitialized)
        // The same world on every later call.
        #expect(try World.start(environment: [:]) === w)
        #expect(World.current === w)
    }

    @Test("a rank outside the world is a named error")
    func badRank() throws {
        let w = try World.start(environment: [:])
        #expect(throws: DistributedError.badRank(1, size: 1)) { _ = try w.broadcast(bytes: [1], from: 1) }
        #expect(throws: DistributedError.badRank(-1, size: 1)) { _ = try w.gather(bytes: [1], to: -1) }
    }

    @Test("a Slurm step of several tasks without MPI is refused when a launcher is required")
    func srunWithoutMPI() throws {
        let e = #expect(throws: DistributedError.self) {
            _ = try World.start(environment: ["SLURM_STEP_NUM_TASKS": "4"], requireLauncher: true)
        }
        #expect(e.map { String(describing: $0) }?.contains("srun --mpi=pmix") == true)
        // Without the requirement (commands that do not distribute) it is a world of one.
        #expect(try World.start(environment: ["SLURM_STEP_NUM_TASKS": "4"]).size == 1)
    }
}
