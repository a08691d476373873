// Test support: an exported test object exercising every handler kind, properties and fds.
import Bus
import Foundation
import TestSupport

/// The well-known name, path and interface of the test service.
enum TestService {
    static let name = "org.lesionaffinity.BusTest"
    static let root = "/org/lesionaffinity/BusTest"
    static let path = "/org/lesionaffinity/BusTest/thing"
    static let interface = "org.lesionaffinity.BusTest1"

    /// Introspection data as it would be kept in data/dbus: a whole document, with comments.
    static let xml = """
        <!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
         "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
        <!-- org.lesionaffinity.BusTest1: the interface the Bus tests export. -->
        <node>
          <interface name="org.lesionaffinity.BusTest1">
            <!-- Add: the sum of two integers. -->
            <method name="Add">
              <arg type="i" name="a" direction="in"/>
              <arg type="i" name="b" direction="in"/>
              <arg type="i" name="sum" direction="out"/>
            </method>
            <property name="Counter" type="u" access="readwrite"/>
          </interface>
        </node>
        """

    /// Mutable state behind the properties.
    final class State: @unchecked Sendable {
        private let lock = NSLock()
        private var counterValue: UInt32 = 7
        var counter: UInt32 {
            get { lock.lock(); defer { lock.unlock() }; return counterValue }
            set { lock.lock(); counterValue = newValue; lock.unlock() }
        }
        /// Deferred replies parked by `Never` (answered only when the test lets go); the handlers
        /// park them on the bus's worker threads while the test counts them (under the lock: a
        /// race ThreadSanitizer found, issue 16).
        private var parkedReplies: [PendingReply] = []
        func park(_ reply: PendingReply) { lock.lock(); parkedReplies.append(reply); lock.unlock() }
        var parkedCount: Int { lock.lock(); defer { lock.unlock() }; return parkedReplies.count }
        /// Drops every parked reply (outside the lock: dropping one answers its caller).
        func dropParked() {
            lock.lock()
            let dropped = parkedReplies
            parkedReplies.removeAll()
            lock.unlock()
            _ = dropped
        }
    }

    /// The test interface; `state` holds the property values.
    static func interface(state: State) -> BusInterface {
        var i = BusInterface(interface, introspectionXML: xml)
        i.method("Add", in: "ii", out: "i") { call in
            let a = try call.argument(0).asInt32(), b = try call.argument(1).asInt32()
            return [.int32(a &+ b)]
        }
        i.method("Echo", in: nil, out: nil) { call in call.arguments }
        i.method("Fail", in: "ss", out: "") { call in
            throw BusError(name: try call.argument(0).asString(), message: try call.argument(1).asString())
        }
        i.method("Options", in: "a{sv}", out: "s") { call in
            let options = try call.argument(0).asVardict()
            try options.rejectUnknownOptions(["name", "count"])
            let name = try options.option("name") { try $0.asString() } ?? "nobody"
            let count = try options.option("count") { try $0.asUInt32() } ?? 1
            return [.string(String(repeating: name, count: Int(count)))]
        }
        i.workerMethod("Slow", in: "u", out: "u") { call in
            let ms = try call.argument(0).asUInt32()
            usleep(ms * 1000)
            return [.uint32(ms)]
        }
        i.deferredMethod("SlowDeferred", in: "u", out: "u") { call, reply in
            guard case .uint32(let ms)? = call.arguments.first else { return reply.fail(BusError.invalidArgs("need u")) }
            DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(Int(ms))) { reply.reply([.uint32(ms)]) }
        }
        i.deferredMethod("Never", in: "", out: "") { _, reply in
            state.park(reply)
        }
        i.method("BadReply", in: "", out: "s") { _ in [.int32(1)] }
        i.workerMethod("ReadFD", in: "h", out: "ay") { call in
            let fd = try call.argument(0).asFileDescriptor()
            return [.bytes(try fd.readAll())]
        }
        i.method("MakeFD", in: "ay", out: "h") { call in
            [.unixFD(try FileDescriptor.sealedMemfd(name: "bus-test", contents: try call.argument(0).asBytes()))]
        }
        i.method("WritePipe", in: "hay", out: "") { call in
            let fd = try call.argument(0).asFileDescriptor()
            try fd.write(try call.argument(1).asBytes())
            return []
        }
        i.workerMethod("WhoAmI", in: "", out: "su") { call in
            [.string(call.sender), .uint32(try call.senderUnixUser())]
        }
        i.deferredMethod("WhoAmIAsync", in: "", out: "u") { call, reply in
            call.senderUnixUser { result in
                switch result {
                case .success(let uid): reply.reply([.uint32(uid)])
                case .failure(let e): reply.fail(e)
                }
            }
        }
        i.method("SyncCallOnBusThread", in: "", out: "u") { call in
            // A synchronous lookup on the bus thread would deadlock: the library must refuse it.
            [.uint32(try call.senderUnixUser())]
        }
        i.property("Counter", "u", get: { .uint32(state.counter) }, set: { v in state.counter = try v.asUInt32() })
        i.property("Name", "s", get: { .string("thing") })
        i.property("Scores", "a{sd}", get: { .doubleDict(["dice": 0.75, "iou": 0.5]) })
        return i
    }

    /// A second, generated-XML interface.
    static func extra() -> BusInterface {
        var i = BusInterface("org.lesionaffinity.BusTest1.Extra")
        i.method("Ping2", in: "", out: "s") { _ in [.string("pong")] }
        i.signal("Happened", "sa{sv}")
        i.property("Size", "t", get: { .uint64(42) })
        return i
    }

    /// A connection owning the test name, with the test object exported under an ObjectManager.
    static func start(on bus: PrivateBus, state: State = State()) throws -> BusConnection {
        let c = try bus.connect()
        try c.addObjectManager(at: root)
        try c.export(path: path, interfaces: [interface(state: state), extra()])
        try c.requestName(name)
        return c
    }
}
