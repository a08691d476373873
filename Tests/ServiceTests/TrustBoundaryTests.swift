// Issue 16 against the running daemon: every error a bad call gets is one of the API's names
// (org.lesionaffinity.Affinity1.Error.*), the size of a call is bounded before its values are
// built, one caller cannot fill the analyse queue for everyone, one user cannot fill the service
// with jobs, and a decompression bomb is refused before its pixels are allocated — and after each,
// the daemon goes on serving.
import AffinityAPI
import Bus
import Foundation
import Imaging
import Service
import TestSupport
import Testing

@Suite("Trust boundary (daemon)", .serialized)
struct TrustBoundaryTests {
    typealias D = DaemonProcess
    static let E = API.errorPrefix
    /// The bundled demo model, imported at start.
    static let bundled = ["AFFINITY_BUNDLED_MODELS": Paths.repository.appendingPathComponent("models").path]

    static func expectAPIError(_ kind: API.ErrorName, _ what: String, sourceLocation: SourceLocation = #_sourceLocation,
                               _ body: () throws -> Any) {
        let e = DaemonTests.error(body)
        #expect(e?.name == API.errorName(kind), "\(what): \(String(describing: e))", sourceLocation: sourceLocation)
        #expect((e?.message.count ?? 0) > 10 && e?.message.hasSuffix(".") == true, "\(what): \(String(describing: e))",
                sourceLocation: sourceLocation)
    }

    @Test
    func badCallsGetTheAPIsErrorNamesAndTheDaemonGoesOn() throws {
        let dir = try Paths.temporaryDirectory("trust")
        defer { try? FileManager.default.removeItem(at: dir) }
        let bus = try PrivateBus()
        defer { bus.stop() }
        let daemon = try DaemonProcess(bus: bus, stateDirectory: dir.appendingPathComponent("state"), environment: Self.bundled)
        defer { daemon.stop() }
        let client = try bus.connect()
        defer { client.close() }
        #expect(waitUntil(120) { (try? client.getProperty(destination: D.name, path: D.root, interface: D.manager, name: "State")) == .string("ready") })
        struct Session { let client: BusConnection; func call(_ m: String, _ a: [DBusValue]) throws -> [DBusValue] { try DaemonTests.call(client, m, a) } }
        let session = Session(client: client)

        // AnalyseBatch without images (used to answer org.freedesktop.DBus.Error.Failed).
        Self.expectAPIError(.invalidArgument, "AnalyseBatch of no images") {
            try session.call("AnalyseBatch", [.array(elementSignature: "h", []), .vardict([:])])
        }
        // A call of the wrong signature, to a method of each interface.
        Self.expectAPIError(.invalidArgument, "Analyse of the wrong signature") { try session.call("Analyse", [.string("/tmp/x.png"), .vardict([:])]) }
        let model = try client.getProperty(destination: D.name, path: D.root, interface: D.manager, name: "DefaultModel").asObjectPath()
        Self.expectAPIError(.invalidArgument, "ExportAffinityMatrix without arguments") {
            try client.call(destination: D.name, path: model, interface: D.model, method: "ExportAffinityMatrix", [])
        }
        // An option holding a million bytes: refused while the arguments are read.
        let big = DBusValue.bytes([UInt8](repeating: 7, count: 1 << 20))
        Self.expectAPIError(.invalidArgument, "Analyse with a megabyte option") {
            try session.call("Analyse", [try DaemonTests.memfd(try Fixtures.slicePNG()), .vardict(["colour": big])])
        }
        Self.expectAPIError(.invalidArgument, "Train with a megabyte option") { try session.call("Train", [.vardict(["dataset": big])]) }
        // A PNG naming 8192×8192 RGBA 16-bit pixels with a few bytes of data: refused from its
        // header (the data cannot hold it), before any pixel memory.
        Self.expectAPIError(.invalidImage, "a 300-byte PNG naming 512 MB of pixels") {
            try session.call("Analyse", [try DaemonTests.memfd(TrustBoundaryFixtures.forgedPNG()), .vardict([:])])
        }
        // Still serving.
        let r = try session.call("Analyse", [try DaemonTests.memfd(try Fixtures.slicePNG()), .vardict([:])])
        #expect(try r[0].asVardict()["class"] != nil)
    }

    @Test
    func oneCallerCannotFillTheAnalyseQueue() throws {
        let dir = try Paths.temporaryDirectory("queue")
        defer { try? FileManager.default.removeItem(at: dir) }
        let bus = try PrivateBus()
        defer { bus.stop() }
        // Four analyses may wait, two of them one caller's.
        let daemon = try DaemonProcess(bus: bus, stateDirectory: dir.appendingPathComponent("state"), configText: "analyse_queue_limit = 4\n",
                                       environment: Self.bundled)
        defer { daemon.stop() }
        let greedy = try bus.connect(), other = try bus.connect()
        defer { greedy.close(); other.close() }
        #expect(waitUntil(120) { (try? greedy.getProperty(destination: D.name, path: D.root, interface: D.manager, name: "State")) == .string("ready") })
        let png = try Fixtures.slicePNG()
        let results = Collected<Result<[DBusValue], BusError>>()
        let n = 8
        for _ in 0..<n {
            greedy.callAsync(destination: D.name, path: D.root, interface: D.manager, method: "Analyse",
                             [try DaemonTests.memfd(png), .vardict([:])], timeout: .seconds(300)) { results.append($0) }
        }
        // The other caller still gets in while the greedy one's share waits.
        let answer = try DaemonTests.call(other, "Analyse", [try DaemonTests.memfd(png), .vardict([:])])
        #expect(try answer[0].asVardict()["class"] != nil)
        #expect(waitUntil(300) { results.all.count == n })
        let refused = results.all.compactMap { r -> BusError? in if case .failure(let e) = r { return e }; return nil }
        #expect(!refused.isEmpty && refused.allSatisfy { $0.name == API.errorName(.queueFull) }, "\(refused)")
        #expect(results.all.count - refused.count >= 2, "the greedy caller's own share was served")
    }
}

/// A job manager on its own (no bus): the per-user limit of active jobs.
@Suite("Trust boundary (jobs)")
struct JobLimitTests {
    @Test func oneUserCannotFillTheServiceWithJobs() throws {
        let dir = try Paths.temporaryDirectory("jobs")
        defer { try? FileManager.default.removeItem(at: dir) }
        let engine = try ScanAnalysisTests.engine(in: dir)
        defer { engine.stop() }
        let jobs = JobManager(store: engine.store, engine: engine)
        jobs.maxActiveJobsPerUser = 2
        let png = try Fixtures.slicePNG()
        let many = [ImageSource](repeating: .bytes(png), count: 40)
        var started: [Job] = []
        for _ in 0..<2 { started.append(try jobs.startBatch(many, request: AnalyseRequest(), uid: 1000)) }
        #expect(throws: ServiceError.self) { try jobs.startBatch(many, request: AnalyseRequest(), uid: 1000) }
        do { _ = try jobs.startBatch(many, request: AnalyseRequest(), uid: 1000) } catch let e as ServiceError {
            #expect(e.kind == .queueFull && e.message.contains("at most 2"), "\(e)")
        }
        // Another user is not held back; the first gets a slot back when a job ends.
        let others = try jobs.startBatch([.bytes(png)], request: AnalyseRequest(), uid: 1001)
        _ = started[0].cancel()
        #expect(waitUntil(120) { started[0].isFinished })
        started.append(try jobs.startBatch([.bytes(png)], request: AnalyseRequest(), uid: 1000))
        for j in started + [others] { _ = j.cancel() }
        #expect(waitUntil(300) { (started + [others]).allSatisfy(\.isFinished) })
        jobs.shutdown(timeout: 60)
    }
}

enum TrustBoundaryFixtures {
    /// A PNG whose IHDR names 8192×8192 RGBA 16-bit pixels (512 MiB) and whose one IDAT chunk holds
    /// a few bytes of zlib data, then IEND: complete as a file, impossible as an image.
    static func forgedPNG() -> [UInt8] {
        func be(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)] }
        func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
            let body = Array(type.utf8) + data
            return be(UInt32(data.count)) + body + be(Fixtures.crc32(body))
        }
        let ihdr = be(8192) + be(8192) + [16, 6, 0, 0, 0]
        let zlib: [UInt8] = [0x78, 0x9C] + [UInt8](repeating: 0, count: 200)
        return PNG.signature + chunk("IHDR", ihdr) + chunk("IDAT", zlib) + chunk("IEND", [])
    }
}
