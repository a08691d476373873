// Tests against a private dbus-daemon: export, call (ours, busctl, gdbus), properties,
// introspection, ObjectManager, fd passing, errors, concurrency, credentials, shutdown.
import Bus
import Foundation
import TestSupport
import Testing

@Suite("Service on a private bus")
struct BusServiceTests {
    let T = TestService.self

    @Test func callsFromASeparateClient() throws {
        let bus = try PrivateBus()
        let service = try T.start(on: bus)
        let client = try bus.connect()
        defer { client.close(); service.close() }
        #expect(service.uniqueName?.hasPrefix(":") == true)
        #expect(try client.nameOwner(T.name) == service.uniqueName)
        let sum = try client.call(destination: T.name, path: T.path, interface: T.interface, method: "Add",
                                  [.int32(40), .int32(2)], expecting: "i")
        #expect(sum == [.int32(42)])
        // Without an interface the method is looked up on every interface of the object.
        let pong = try client.call(destination: T.name, path: T.path, interface: nil, method: "Ping2", expecting: "s")
        #expect(pong == [.string("pong")])
        let s = try client.call(destination: T.name, path: T.path, interface: T.interface, method: "Options",
                                [.vardict(["name": .string("ab"), "count": .uint32(3)])], expecting: "s")
        #expect(s == [.string("ababab")])
        // Peer, answered on the service's behalf.
        _ = try client.call(destination: T.name, path: T.path, interface: "org.freedesktop.DBus.Peer", method: "Ping", expecting: "")
        let id = try client.call(destination: T.name, path: "/", interface: "org.freedesktop.DBus.Peer", method: "GetMachineId", expecting: "s")
        #expect(((try? id[0].asString()) ?? "").count == 32)
    }

    @Test func everyValueTypeRoundTrips() throws {
        let bus = try PrivateBus()
        let service = try T.start(on: bus)
        let client = try bus.connect()
        defer { client.close(); service.close() }
        for v in everyValue {
            let back = try client.call(destination: T.name, path: T.path, interface: T.interface, method: "Echo",
                                       [v], expecting: v.signature)
            #expect(back == [v], "round trip of \(v.signature)")
        }
        let all = try client.call(destination: T.name, path: T.path, interface: T.interface, method: "Echo", everyValue)
        #expect(all == everyValue)
        let none = try client.call(destination: T.name, path: T.path, interface: T.interface, method: "Echo", expecting: "")
        #expect(none.isEmpty)
    }

    @Test func realToolsCallTheService() throws {
        let bus = try PrivateBus()
        let service = try T.start(on: bus)
        defer { service.close() }
        let addr = "--address=\(bus.address)"

        let add = try runTool("busctl", [addr, "call", T.name, T.path, T.interface, "Add", "ii", "40", "2"])
        #expect(add.status == 0, "\(add.stderr)")
        #expect(add.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "i 42")

        let echo = try runTool("busctl", [addr, "--json=short", "call", T.name, T.path, T.interface, "Echo",
                                          "a{sv}aa{sv}", "2", "name", "s", "lung", "n", "u", "3",
                                          "1", "1", "box", "ad", "2", "0.5", "1.5"])
        #expect(echo.status == 0, "\(echo.stderr)")
        #expect(echo.stdout.contains("\"type\":\"a{sv}aa{sv}\""), "\(echo.stdout)")
        #expect(echo.stdout.contains("\"lung\""))

        let gd = try runTool("gdbus", ["call", "--address", bus.address, "--dest", T.name, "--object-path", T.path,
                                       "--method", "\(T.interface).Options", "{'name': <'xy'>, 'count': <uint32 2>}"])
        #expect(gd.status == 0, "\(gd.stderr)")
        #expect(gd.stdout.contains("'xyxy'"), "\(gd.stdout)")

        let gdEcho = try runTool("gdbus", ["call", "--address", bus.address, "--dest", T.name, "--object-path", T.path,
                                           "--method", "\(T.interface).Echo", "(1, 'two', [3.5, 4.0], objectpath '/x')"])
        #expect(gdEcho.status == 0, "\(gdEcho.stderr)")
        #expect(gdEcho.stdout.contains("(1, 'two', [3.5, 4.0], objectpath '/x')"), "\(gdEcho.stdout)")

        let prop = try runTool("busctl", [addr, "get-property", T.name, T.path, T.interface, "Counter"])
        #expect(prop.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "u 7", "\(prop.stderr)")

        let err = try runTool("busctl", [addr, "call", T.name, T.path, T.interface, "Fail", "ss",
                                         "org.lesionaffinity.Affinity1.Error.InvalidImage", "Not a PNG image."])
        #expect(err.status != 0)
        #expect(err.stderr.contains("Not a PNG image."), "\(err.stderr)")

        let gdErr = try runTool("gdbus", ["call", "--address", bus.address, "--dest", T.name, "--object-path", T.path,
                                          "--method", "\(T.interface).Fail",
                                          "org.lesionaffinity.Affinity1.Error.Busy", "Queue is full."])
        #expect(gdErr.status != 0)
        #expect(gdErr.stderr.contains("org.lesionaffinity.Affinity1.Error.Busy"), "\(gdErr.stderr)")
    }

    @Test func propertiesGetGetAllSetAndChangedSignal() throws {
        let bus = try PrivateBus()
        let state = TestService.State()
        let service = try T.start(on: bus, state: state)
        let client = try bus.connect()
        defer { client.close(); service.close() }

        #expect(try client.getProperty(destination: T.name, path: T.path, interface: T.interface, name: "Counter") == .uint32(7))
        let all = try client.getAllProperties(destination: T.name, path: T.path, interface: T.interface)
        #expect(all["Name"] == .string("thing"))
        #expect(try all["Scores"]?.asDoubleDict() == ["dice": 0.75, "iou": 0.5])

        let changes = Collected<ReceivedSignal>()
        let sub = try client.subscribe(.propertiesChanged(sender: T.name, path: T.path, interface: T.interface)) {
            changes.append($0)
        }
        defer { sub.cancel() }

        try client.setProperty(destination: T.name, path: T.path, interface: T.interface, name: "Counter", value: .uint32(11))
        #expect(state.counter == 11)
        #expect(waitUntil { !changes.all.isEmpty })
        let first = try #require(changes.all.first)
        #expect(first.member == "PropertiesChanged" && first.path == T.path)
        #expect(first.arguments.count == 3)
        #expect(try first.arguments[1].asVardict() == ["Counter": .uint32(11)])

        // The exporter's own helper.
        try service.emitPropertiesChanged(path: T.path, interface: T.interface, changed: ["Name": .string("renamed")],
                                          invalidated: ["Scores"])
        #expect(waitUntil { changes.all.count >= 2 })
        let second = changes.all[1]
        #expect(try second.arguments[1].asVardict() == ["Name": .string("renamed")])
        #expect(try second.arguments[2].asStrings() == ["Scores"])

        let ro = #expect(throws: BusError.self) {
            try client.setProperty(destination: T.name, path: T.path, interface: T.interface, name: "Name", value: .string("x"))
        }
        #expect(ro?.name == "org.freedesktop.DBus.Error.PropertyReadOnly")
        let wrong = #expect(throws: BusError.self) {
            try client.setProperty(destination: T.name, path: T.path, interface: T.interface, name: "Counter", value: .string("x"))
        }
        #expect(wrong?.name == BusError.Name.invalidArgs)
        let unknown = #expect(throws: BusError.self) {
            try client.getProperty(destination: T.name, path: T.path, interface: T.interface, name: "Nope")
        }
        #expect(unknown?.name == "org.freedesktop.DBus.Error.UnknownProperty")
        let noIface = #expect(throws: BusError.self) {
            try client.getAllProperties(destination: T.name, path: T.path, interface: "org.x.Missing")
        }
        #expect(noIface?.name == BusError.Name.unknownInterface)
        // A subscription only sees its own signals: nothing else arrived.
        #expect(changes.all.count == 2)
    }

    @Test func introspectionServesTheSuppliedXML() throws {
        let bus = try PrivateBus()
        let service = try T.start(on: bus)
        let client = try bus.connect()
        defer { client.close(); service.close() }
        let xml = try client.call(destination: T.name, path: T.path, interface: "org.freedesktop.DBus.Introspectable",
                                  method: "Introspect", expecting: "s")[0].asString()
        let supplied = """
              <interface name="org.lesionaffinity.BusTest1">
                <!-- Add: the sum of two integers. -->
            """
        #expect(xml.contains(supplied), "\(xml)")
        #expect(xml.contains("<interface name=\"org.freedesktop.DBus.Properties\">"))
        #expect(xml.contains("<interface name=\"org.freedesktop.DBus.Peer\">"))
        #expect(xml.contains("<interface name=\"org.lesionaffinity.BusTest1.Extra\">"))
        #expect(xml.contains("<signal name=\"Happened\">"))
        #expect(!xml.contains("<interface name=\"org.freedesktop.DBus.ObjectManager\">"))
        #expect(xml.components(separatedBy: "<node>").count == 2, "one root node only")

        let root = try client.call(destination: T.name, path: T.root, interface: "org.freedesktop.DBus.Introspectable",
                                   method: "Introspect", expecting: "s")[0].asString()
        #expect(root.contains("<interface name=\"org.freedesktop.DBus.ObjectManager\">"))
        #expect(root.contains("<node name=\"thing\"/>"))
        let top = try client.call(destination: T.name, path: "/", interface: "org.freedesktop.DBus.Introspectable",
                                  method: "Introspect", expecting: "s")[0].asString()
        #expect(top.contains("<node name=\"org\"/>"))

        // A real parser accepts it.
        let tool = try runTool("busctl", ["--address=\(bus.address)", "introspect", T.name, T.path])
        #expect(tool.status == 0, "\(tool.stderr)")
        #expect(tool.stdout.contains(".Add") && tool.stdout.contains(".Counter"), "\(tool.stdout)")
        let tree = try runTool("busctl", ["--address=\(bus.address)", "tree", T.name])
        #expect(tree.stdout.contains(T.path), "\(tree.stdout) \(tree.stderr)")
    }

    @Test func objectManagerListsAndAnnouncesObjects() throws {
        let bus = try PrivateBus()
        let service = try T.start(on: bus)
        let client = try bus.connect()
        defer { client.close(); service.close() }

        let managed = try client.call(destination: T.name, path: T.root, interface: "org.freedesktop.DBus.ObjectManager",
                                      method: "GetManagedObjects", expecting: "a{oa{sa{sv}}}")[0].asDictionary()
        #expect(managed.count == 1)
        #expect(try managed[0].0.asObjectPath() == T.path)
        let ifaces = try managed[0].1.asDictionary()
        let names = try ifaces.map { try $0.0.asString() }
        #expect(names.contains(T.interface) && names.contains("org.lesionaffinity.BusTest1.Extra"))
        let props = try #require(try ifaces.first { try $0.0.asString() == T.interface }?.1.asVardict())
        #expect(props["Counter"] == .uint32(7))

        let added = Collected<ReceivedSignal>(), removed = Collected<ReceivedSignal>()
        let s1 = try client.subscribe(MatchRule(sender: T.name, interface: "org.freedesktop.DBus.ObjectManager",
                                                member: "InterfacesAdded", path: T.root)) { added.append($0) }
        let s2 = try client.subscribe(MatchRule(sender: T.name, interface: "org.freedesktop.DBus.ObjectManager",
                                                member: "InterfacesRemoved")) { removed.append($0) }
        defer { s1.cancel(); s2.cancel() }

        var job = BusInterface("org.lesionaffinity.BusTest1.Job")
        job.property("State", "s", get: { .string("running") })
        job.property("Progress", "d", get: { .double(0.25) })
        let jobPath = T.root + "/jobs/1"
        try service.export(path: jobPath, interfaces: [job])
        #expect(waitUntil { !added.all.isEmpty })
        let a = try #require(added.all.first)
        #expect(a.signature == "oa{sa{sv}}")
        #expect(try a.arguments[0].asObjectPath() == jobPath)
        let jobProps = try a.arguments[1].asDictionary()
        #expect(try jobProps.first?.0.asString() == "org.lesionaffinity.BusTest1.Job")
        #expect(try jobProps.first?.1.asVardict() == ["State": .string("running"), "Progress": .double(0.25)])

        let again = try client.call(destination: T.name, path: T.root, interface: "org.freedesktop.DBus.ObjectManager",
                                    method: "GetManagedObjects", expecting: "a{oa{sa{sv}}}")[0].asDictionary()
        #expect(try again.map { try $0.0.asObjectPath() } == [jobPath, T.path])

        #expect(throws: BusError.self) { try service.export(path: jobPath, interfaces: [job]) }

        service.unexport(path: jobPath)
        #expect(waitUntil { !removed.all.isEmpty })
        #expect(try removed.all[0].arguments[0].asObjectPath() == jobPath)
        #expect(try removed.all[0].arguments[1].asStrings() == ["org.lesionaffinity.BusTest1.Job"])
        let gone = #expect(throws: BusError.self) {
            try client.getProperty(destination: T.name, path: jobPath, interface: "org.lesionaffinity.BusTest1.Job", name: "State")
        }
        #expect(gone?.name == BusError.Name.unknownObject)
    }

    @Test func fileDescriptorsTravelBothWays() throws {
        let bus = try PrivateBus()
        let service = try T.start(on: bus)
        let client = try bus.connect()
        defer { client.close(); service.close() }
        #expect(client.canPassUnixFDs && service.canPassUnixFDs)

        // Client → service: a sealed memfd, read by the service.
        let image = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let memfd = try FileDescriptor.sealedMemfd(name: "image", contents: image)
        let read = try client.call(destination: T.name, path: T.path, interface: T.interface, method: "ReadFD",
                                   [.unixFD(memfd)], expecting: "ay")
        #expect(try read[0].asBytes() == image)
        #expect(memfd.isOpen, "the sender keeps its own descriptor")

        // Service → client: a memfd made by the service, read here.
        let made = try client.call(destination: T.name, path: T.path, interface: T.interface, method: "MakeFD",
                                   [.bytes(Array("mask png".utf8))], expecting: "h")
        let fd = try made[0].asFileDescriptor()
        #expect(fd.isSealed)
        #expect(try fd.readAll() == Array("mask png".utf8))

        // A pipe: the service writes into our write end; we read from the read end.
        let (r, w) = try FileDescriptor.pipe()
        _ = try client.call(destination: T.name, path: T.path, interface: T.interface, method: "WritePipe",
                            [.unixFD(w), .bytes([9, 8, 7])], expecting: "")
        w.close()
        #expect(try r.readAll() == [9, 8, 7])

        // gdbus passes its stdin as the `h` argument (busctl cannot send file descriptors).
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("bus-fd-\(UUID().uuidString)")
        try Data("from gdbus".utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let tool = try runTool("gdbus", ["call", "--address", bus.address, "--dest", T.name, "--object-path", T.path,
                                         "--method", "\(T.interface).ReadFD", "handle 0"],
                               stdin: try FileHandle(forReadingFrom: file))
        #expect(tool.status == 0, "\(tool.stderr)")
        let bytes = Array("from gdbus".utf8).map { "0x" + String($0, radix: 16) }.joined(separator: ", ")
        #expect(tool.stdout.contains("[byte \(bytes)]"), "\(tool.stdout)")
    }

    @Test func errorsAreNamedAndTheServiceKeepsServing() throws {
        let bus = try PrivateBus()
        let service = try T.start(on: bus)
        let client = try bus.connect()
        defer { client.close(); service.close() }
        func call(_ method: String, _ args: [DBusValue] = [], path: String = TestService.path,
                  iface: String? = TestService.interface) throws -> [DBusValue] {
            try client.call(destination: TestService.name, path: path, interface: iface, method: method, args)
        }
        let named = #expect(throws: BusError.self) {
            try call("Fail", [.string("org.lesionaffinity.Affinity1.Error.InvalidImage"), .string("The image is not a PNG.")])
        }
        #expect(named == BusError(name: "org.lesionaffinity.Affinity1.Error.InvalidImage", message: "The image is not a PNG."))

        let args = #expect(throws: BusError.self) { try call("Add", [.string("40"), .int32(2)]) }
        #expect(args?.name == "org.freedesktop.DBus.Error.InvalidArgs")
        #expect(args?.message.contains("'ii'") == true && args?.message.contains("'si'") == true, "\(String(describing: args))")

        let option = #expect(throws: BusError.self) { try call("Options", [.vardict(["colour": .string("red")])]) }
        #expect(option?.name == BusError.Name.invalidArgs)
        #expect(option?.message.contains("colour") == true)

        #expect((#expect(throws: BusError.self) { try call("Nope") })?.name == BusError.Name.unknownMethod)
        #expect((#expect(throws: BusError.self) { try call("Nope", iface: nil) })?.name == BusError.Name.unknownMethod)
        #expect((#expect(throws: BusError.self) { try call("Add", iface: "org.x.Other") })?.name == BusError.Name.unknownInterface)
        #expect((#expect(throws: BusError.self) { try call("Add", path: "/no/such/object") })?.name == BusError.Name.unknownObject)
        #expect((#expect(throws: BusError.self) { try call("Add", path: TestService.root + "/thin") })?.name == BusError.Name.unknownObject)

        // A handler whose reply does not match its declared signature gets Failed, not a crash.
        let bad = #expect(throws: BusError.self) { try call("BadReply") }
        #expect(bad?.name == BusError.Name.failed)
        // A synchronous lookup on the bus thread is refused instead of deadlocking.
        let sync = #expect(throws: BusError.self) { try call("SyncCallOnBusThread") }
        #expect(sync?.message.contains("deadlock") == true)

        // Still serving.
        #expect(try call("Add", [.int32(1), .int32(2)]) == [.int32(3)])

        // Calling a name nobody owns is the bus's error.
        let nobody = #expect(throws: BusError.self) {
            try client.call(destination: "org.nobody.Here", path: "/", interface: nil, method: "X")
        }
        #expect(nobody?.name == BusError.Name.serviceUnknown)
    }

    @Test func concurrentCallsAreAnsweredWhileSlowHandlersRun() throws {
        let bus = try PrivateBus()
        let service = try T.start(on: bus)
        let client = try bus.connect()
        defer { client.close(); service.close() }

        let slow = DispatchGroup()
        let slowResults = Collected<[DBusValue]>()
        for method in ["SlowDeferred", "Slow"] {
            slow.enter()
            Thread.detachNewThread {
                if let r = try? client.call(destination: TestService.name, path: TestService.path,
                                            interface: TestService.interface, method: method, [.uint32(2500)]) {
                    slowResults.append(r)
                }
                slow.leave()
            }
        }
        usleep(100_000)  // let both slow calls reach the service

        // 120 quick calls from 6 threads over two connections, while both slow calls are pending.
        let fast = DispatchGroup()
        let fastResults = Collected<Int32>()
        let fastClient = try bus.connect()
        defer { fastClient.close() }
        for t in 0..<6 {
            fast.enter()
            Thread.detachNewThread {
                for k in 0..<20 {
                    let conn = k % 2 == 0 ? client : fastClient
                    if let r = try? conn.call(destination: TestService.name, path: TestService.path, interface: TestService.interface,
                                              method: "Add", [.int32(Int32(t)), .int32(Int32(k))], expecting: "i"),
                       case .int32(let v)? = r.first, v == Int32(t + k) {
                        fastResults.append(v)
                    }
                }
                fast.leave()
            }
        }
        #expect(fast.wait(timeout: .now() + 10) == .success)
        #expect(fastResults.all.count == 120)
        #expect(slowResults.all.isEmpty, "the quick calls were answered while the slow ones were still running")
        #expect(slow.wait(timeout: .now() + 10) == .success)
        #expect(slowResults.all.count == 2)
        #expect(slowResults.all.allSatisfy { $0 == [.uint32(2500)] })
    }

    @Test func callerCredentials() throws {
        let bus = try PrivateBus()
        let service = try T.start(on: bus)
        let client = try bus.connect()
        defer { client.close(); service.close() }
        let who = try client.call(destination: T.name, path: T.path, interface: T.interface, method: "WhoAmI", expecting: "su")
        #expect(who[0] == .string(client.uniqueName ?? "?"))
        #expect(who[1] == .uint32(getuid()))
        let async = try client.call(destination: T.name, path: T.path, interface: T.interface, method: "WhoAmIAsync", expecting: "u")
        #expect(async == [.uint32(getuid())])
        #expect(try service.unixProcessID(of: client.uniqueName ?? "") == UInt32(getpid()))
        let tool = try runTool("busctl", ["--address=\(bus.address)", "call", T.name, T.path, T.interface, "WhoAmI"])
        #expect(tool.stdout.hasPrefix("su \":1."), "\(tool.stdout) \(tool.stderr)")
        #expect(tool.stdout.hasSuffix(" \(getuid())\n"))
    }

    @Test func requestingATakenNameFails() throws {
        let bus = try PrivateBus()
        let service = try T.start(on: bus)
        let other = try bus.connect()
        defer { other.close(); service.close() }
        let e = #expect(throws: BusError.self) { try other.requestName(TestService.name) }
        #expect(e?.name == BusError.Name.nameTaken)
        #expect(e?.message.contains(service.uniqueName ?? "?") == true)
        try service.requestName(TestService.name)  // already ours: fine
        try service.releaseName(TestService.name)
        try other.requestName(TestService.name)
        #expect(try other.nameOwner(TestService.name) == other.uniqueName)
        #expect(throws: BusError.self) { try other.requestName("not a name") }
    }

    @Test func timeoutsAndShutdown() throws {
        let bus = try PrivateBus()
        let state = TestService.State()
        let service = try T.start(on: bus, state: state)
        let client = try bus.connect()

        // libdbus's own timeout (driven by our timeout functions) ends a call nobody answers.
        let t0 = Date()
        let late = #expect(throws: BusError.self) {
            try client.call(destination: T.name, path: T.path, interface: T.interface, method: "Never", timeout: .milliseconds(300))
        }
        #expect(late?.name == BusError.Name.noReply)
        #expect(Date().timeIntervalSince(t0) < 3)

        // A call in flight when its connection closes fails with Disconnected.
        let inFlight = Collected<BusError>()
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            do { _ = try client.call(destination: TestService.name, path: TestService.path, interface: TestService.interface,
                                     method: "Never") } catch let e as BusError { inFlight.append(e) } catch {}
            done.signal()
        }
        #expect(waitUntil { state.parkedCount == 2 })
        client.close()
        #expect(done.wait(timeout: .now() + 5) == .success)
        #expect(inFlight.all.first?.name == BusError.Name.disconnected)
        #expect(!client.isThreadRunning && !client.isOpen)
        #expect(client.isFinalized, "the libdbus connection was released")
        #expect(throws: BusError.self) { try client.call(destination: T.name, path: T.path, interface: T.interface, method: "Add") }
        #expect(throws: BusError.self) { try client.emitSignal(path: "/", interface: "org.x.I", name: "S") }
        client.close()  // idempotent

        // Dropping parked replies answers with Failed rather than leaving callers waiting.
        state.dropParked()
        service.close()
        #expect(!service.isThreadRunning && service.isFinalized)
    }

    @Test func lostBusIsReported() throws {
        let bus = try PrivateBus()
        let client = try bus.connect()
        let lost = DispatchSemaphore(value: 0)
        client.onDisconnect = { lost.signal() }
        bus.stop()
        #expect(lost.wait(timeout: .now() + 5) == .success)
        #expect(waitUntil { !client.isThreadRunning })
        #expect(!client.isOpen && client.isFinalized)
        client.close()
    }

    @Test func signalsAndUnicastEmission() throws {
        let bus = try PrivateBus()
        let service = try T.start(on: bus)
        let client = try bus.connect()
        let bystander = try bus.connect()
        defer { client.close(); bystander.close(); service.close() }
        let got = Collected<ReceivedSignal>(), seen = Collected<ReceivedSignal>()
        let rule = MatchRule(sender: T.name, interface: "org.lesionaffinity.BusTest1.Extra", member: "Happened")
        let s1 = try client.subscribe(rule) { got.append($0) }
        let s2 = try bystander.subscribe(rule) { seen.append($0) }
        try service.emitSignal(path: T.path, interface: "org.lesionaffinity.BusTest1.Extra", name: "Happened",
                               [.string("all"), .vardict(["n": .uint32(1)])])
        #expect(waitUntil { got.all.count == 1 && seen.all.count == 1 })
        try service.emitSignal(path: T.path, interface: "org.lesionaffinity.BusTest1.Extra", name: "Happened",
                               [.string("one"), .vardict([:])], destination: client.uniqueName)
        #expect(waitUntil { got.all.count == 2 })
        #expect(try got.all[1].arguments[0].asString() == "one")
        s1.cancel()
        try service.emitSignal(path: T.path, interface: "org.lesionaffinity.BusTest1.Extra", name: "Happened",
                               [.string("after"), .vardict([:])])
        #expect(waitUntil { seen.all.count == 2 })
        usleep(100_000)
        #expect(got.all.count == 2, "a cancelled subscription receives nothing more")
        s2.cancel()
    }
}
