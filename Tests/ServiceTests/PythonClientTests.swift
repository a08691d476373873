// A client that is not ours: tools/python-client/affinity_client.py (Debian's dbus-python) calls the
// fd-passing methods of the real affinityd on a private bus.
import Bus
import Foundation
import Imaging
import TestSupport
import Tensor
import Testing

@Suite("A Python (dbus-python) client of affinityd", .serialized)
struct PythonClientTests {
    typealias D = DaemonProcess
    static let client = Paths.repository.appendingPathComponent("tools/python-client/affinity_client.py").path

    /// Runs the Python client (Debian's /usr/bin/python3, where python3-dbus installs) against `bus`;
    /// returns its exit status and its one JSON object.
    static func python(_ bus: PrivateBus, _ args: [String]) throws -> (status: Int32, json: [String: Any], raw: ToolResult) {
        let r = try runTool("python3", [client, "--bus", bus.address] + args)
        let object = (try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8))) as? [String: Any] ?? [:]
        return (r.status, object, r)
    }

    /// Whether dbus-python can be imported by /usr/bin/python3; a sentence when not.
    static func dbusPythonMissing() -> String? {
        guard let r = try? runTool("python3", ["-c", "import dbus, dbus.types; dbus.types.UnixFd"]) else {
            return "/usr/bin/python3 cannot be run; install python3 and python3-dbus (scripts/setup does)."
        }
        return r.status == 0 ? nil
            : "python3-dbus is not installed (/usr/bin/python3 cannot import dbus: \(r.stderr.split(separator: "\n").last ?? "")); run scripts/setup, which installs it."
    }

    @Test func fdPassingCallsFromPython() throws {
        if let missing = Self.dbusPythonMissing() {
            Issue.record("\(missing)")
            return
        }
        let dir = try Paths.temporaryDirectory("python")
        defer { try? FileManager.default.removeItem(at: dir) }
        let bus = try PrivateBus()
        defer { bus.stop() }
        let daemon = try DaemonProcess(bus: bus, stateDirectory: dir.appendingPathComponent("state"))
        defer { daemon.stop() }
        let ours = try bus.connect()
        defer { ours.close() }
        let E = "org.lesionaffinity.Affinity1.Error."

        // ImportModel (weights by fd) and SetDefaultModel from Python.
        let (_, modelURL) = try Fixtures.smallModel(in: dir, seed: 5)
        let imported = try Self.python(bus, ["import", modelURL.path, "--name", "from-python", "--set-default"])
        #expect(imported.status == 0, "\(imported.raw)")
        let modelPath = imported.json["model"] as? String ?? ""
        #expect(modelPath.hasPrefix(D.root + "/models/"), "\(imported.raw)")
        #expect(try ours.getProperty(destination: D.name, path: D.root, interface: D.manager, name: "DefaultModel") == .objectPath(modelPath))

        // ListModels and the model's properties from Python.
        let models = try Self.python(bus, ["models"])
        #expect(models.status == 0, "\(models.raw)")
        let listed = models.json["models"] as? [[String: Any]] ?? []
        #expect(listed.count == 1 && listed.first?["path"] as? String == modelPath, "\(models.raw)")
        #expect(listed.first?["Name"] as? String == "from-python" && listed.first?["Affinities"] as? Int == 8, "\(models.raw)")
        #expect(models.json["default"] as? String == modelPath)

        // Analyse (image by fd, label map back as an fd): the same result our client gets.
        let png = try Fixtures.slicePNG()
        let image = dir.appendingPathComponent("slice.png")
        try Data(png).write(to: image)
        let maskOut = dir.appendingPathComponent("mask.png")
        let py = try Self.python(bus, ["analyse", image.path, "--mask", maskOut.path])
        #expect(py.status == 0, "\(py.raw)")
        let reply = try DaemonTests.call(ours, "Analyse", [try DaemonTests.memfd(png), .vardict([:])])
        let r = try reply[0].asVardict()
        #expect(py.json["class_index"] as? Int == Int(try r["class_index"]?.asUInt32() ?? 99), "\(py.raw)")
        #expect(py.json["class"] as? String == (try r["class"]?.asString()))
        let pyScores = (py.json["scores"] as? [Double]) ?? []
        let ourScores = try r["scores"]?.asDoubles() ?? []
        #expect(pyScores.count == 3 && ourScores.count == 3, "\(py.raw)")
        for (a, b) in zip(pyScores, ourScores) {
            #expect(abs(a - b) <= 1e-5 * max(1, abs(b)), "logits \(pyScores) vs \(ourScores)")
        }
        #expect((py.json["lesions"] as? [Any])?.count == (try r["lesions"]?.asVardicts().count))
        #expect(py.json["model"] as? String == modelPath)
        // The lung field: reported, the same for both clients, and LungField's count for this image.
        let lung = py.json["lung_field_area"] as? Int ?? -1
        #expect(lung == Int(try r["lung_field_area"]?.asUInt32() ?? 0))
        #expect(lung == LungField.area(try PNG.decode(png).grayImage()) && lung > 10_000, "lung_field_area \(lung)")
        // The label map came back through the fd: a PNG of the image's size.
        let mask = try PNG.decode([UInt8](try Data(contentsOf: maskOut)))
        #expect(mask.width == 512 && mask.height == 512)
        #expect(py.json["mask_png_bytes"] as? Int == (try? Data(contentsOf: maskOut).count))

        // Bad descriptors: named errors with a sentence, and the daemon goes on serving.
        let empty = try Self.python(bus, ["analyse", "/dev/null"])
        #expect(empty.status == 1 && empty.json["error"] as? String == E + "InvalidImage", "\(empty.raw)")
        #expect((empty.json["message"] as? String)?.hasSuffix(".") == true, "\(empty.raw)")
        var g = SeededGenerator(seed: 3)
        let junk = dir.appendingPathComponent("junk.bin")
        try Data((0..<4096).map { _ in UInt8(truncatingIfNeeded: g.next()) }).write(to: junk)
        let random = try Self.python(bus, ["analyse", junk.path])
        #expect(random.status == 1 && random.json["error"] as? String == E + "UnsupportedFormat", "\(random.raw)")
        let badWeights = try Self.python(bus, ["import", junk.path])
        #expect(badWeights.status == 1 && badWeights.json["error"] as? String == E + "UnsupportedFormat", "\(badWeights.raw)")
        let again = try Self.python(bus, ["analyse", image.path])
        #expect(again.status == 0 && again.json["class_index"] as? Int == py.json["class_index"] as? Int, "\(again.raw)")
    }
}
