// ConnectionCore: the bus thread. It owns the DBusConnection, runs a poll(2) loop over libdbus's
// watches and timeouts plus an eventfd, and runs jobs other threads enqueue (sends, calls).
import CDBus
import Dispatch
#if canImport(Glibc)
import Glibc
#endif

/// The slot under which each connection stores its finalization flag.
private let connectionDataSlot: Int32 = {
    var slot: Int32 = -1
    _ = dbus_connection_allocate_data_slot(&slot)
    return slot
}()

/// Set when libdbus finalizes a connection (its last reference is gone).
// @unchecked Sendable: its one Bool is read and written under `lock`.
final class FinalizedFlag: @unchecked Sendable {
    private let lock = Lock()
    private var value = false
    /// Whether the connection was finalized.
    var isSet: Bool { lock.withLock { value } }
    func set() { lock.withLock { value = true } }
}

/// One outstanding method call of ours, waiting for its reply.
final class PendingCallBox {
    private let lock = Lock()
    private var completion: ((Result<Message, BusError>) -> Void)?

    init(_ completion: @escaping (Result<Message, BusError>) -> Void) {
        self.completion = completion
    }

    /// Runs the completion once; later calls do nothing.
    func complete(_ result: Result<Message, BusError>) {
        let c: ((Result<Message, BusError>) -> Void)? = lock.withLock {
            let c = completion
            completion = nil
            return c
        }
        c?(result)
    }
}

/// One signal subscription.
final class SubscriptionEntry {
    let id: Int
    let rule: MatchRule
    let queue: DispatchQueue
    let handler: @Sendable (ReceivedSignal) -> Void
    /// The unique name a well-known `rule.sender` resolved to when subscribing.
    var owner: String?

    init(id: Int, rule: MatchRule, queue: DispatchQueue, handler: @escaping @Sendable (ReceivedSignal) -> Void) {
        self.id = id
        self.rule = rule
        self.queue = queue
        self.handler = handler
    }
}

// C callbacks. `data` is the ConnectionCore, unretained: the core outlives the connection's use
// of these callbacks (they are removed before the connection is released).

private func core(_ data: UnsafeMutableRawPointer?) -> ConnectionCore? {
    guard let data else { return nil }
    return Unmanaged<ConnectionCore>.fromOpaque(data).takeUnretainedValue()
}

private let addWatchCallback: DBusAddWatchFunction = { watch, data in
    guard let watch, let c = core(data) else { return 0 }
    c.addWatch(watch)
    return 1
}
private let removeWatchCallback: DBusRemoveWatchFunction = { watch, data in
    guard let watch, let c = core(data) else { return }
    c.removeWatch(watch)
}
private let toggleWatchCallback: DBusWatchToggledFunction = { _, _ in
    // Enabled flags are read afresh before every poll.
}
private let addTimeoutCallback: DBusAddTimeoutFunction = { timeout, data in
    guard let timeout, let c = core(data) else { return 0 }
    c.armTimeout(timeout)
    return 1
}
private let removeTimeoutCallback: DBusRemoveTimeoutFunction = { timeout, data in
    guard let timeout, let c = core(data) else { return }
    c.removeTimeout(timeout)
}
private let toggleTimeoutCallback: DBusTimeoutToggledFunction = { timeout, data in
    guard let timeout, let c = core(data) else { return }
    c.armTimeout(timeout)
}
private let wakeupCallback: DBusWakeupMainFunction = { data in
    core(data)?.wake()
}
private let filterCallback: DBusHandleMessageFunction = { _, message, data in
    guard let message, let c = core(data) else { return DBUS_HANDLER_RESULT_NOT_YET_HANDLED }
    return c.filter(message)
}
private let pendingNotifyCallback: DBusPendingCallNotifyFunction = { pending, data in
    guard let pending, let c = core(data) else { return }
    c.finishPendingCall(pending)
}
private let finalizedCallback: DBusFreeFunction = { data in
    guard let data else { return }
    Unmanaged<FinalizedFlag>.fromOpaque(data).takeRetainedValue().set()
}

/// The bus thread and everything it owns. All libdbus calls on the connection happen on this
/// thread, except setup before the thread starts.
// @unchecked Sendable: libdbus is called on the bus thread only (setup before it starts); the state other threads touch (queues, subscriptions, pending calls) is under `lock`.
final class ConnectionCore: @unchecked Sendable {
    /// The `DBusConnection *`; valid until the loop shuts down.
    private let conn: OpaquePointer
    private let wakeFD: Int32
    /// Our unique name on the bus (nil on a peer-to-peer connection).
    let uniqueName: String?
    /// Set when libdbus finalizes the connection.
    let finalized = FinalizedFlag()
    /// Where `.onWorker` handlers run.
    let workerQueue: DispatchQueue
    /// Object export: objects, their interfaces, ObjectManager roots.
    let registry = ObjectRegistry()

    // Shared state, under `lock`.
    private let lock = Lock()
    private var jobs: [() -> Void] = []
    private var accepting = true
    private var stopRequested = false
    private var loopRunning = false
    private var subscriptions: [Int: SubscriptionEntry] = [:]
    private var nextSubscriptionID = 1
    private var uidCache: [String: UInt32] = [:]
    private var onDisconnect: (@Sendable () -> Void)?
    private var loopThread: pthread_t?
    private var wakeClosed = false
    private let finished = DispatchGroup()

    // Bus-thread state.
    private var watches: [OpaquePointer] = []
    private var timeouts: [OpaquePointer: Int64] = [:]
    private var pendingCalls: [OpaquePointer: PendingCallBox] = [:]
    private var disconnected = false
    private var closedByUs = false

    /// Takes over an open (and, for a bus, registered) connection and starts the bus thread.
    /// - Throws: `BusError` if the eventfd or the thread cannot be created (the connection is
    ///   closed and released then).
    init(connection: OpaquePointer, workerQueue: DispatchQueue?) throws {
        conn = connection
        let fd = cdbus_eventfd_create()
        guard fd >= 0 else {
            dbus_connection_close(connection)
            dbus_connection_unref(connection)
            throw BusError.failed("Cannot create an eventfd: \(String(cString: strerror(errno))).")
        }
        Descriptors.adopt(fd)  // this core owns its eventfd and closes it in its loop's teardown
        wakeFD = fd
        uniqueName = optionalString(dbus_bus_get_unique_name(connection))
        self.workerQueue = workerQueue
            ?? DispatchQueue(label: "org.lesionaffinity.Bus.worker", qos: .userInitiated, attributes: .concurrent)

        dbus_connection_set_exit_on_disconnect(conn, 0)
        let me = Unmanaged.passUnretained(self).toOpaque()
        _ = dbus_connection_set_data(conn, connectionDataSlot, Unmanaged.passRetained(finalized).toOpaque(), finalizedCallback)
        _ = dbus_connection_add_filter(conn, filterCallback, me, nil)
        _ = dbus_connection_set_watch_functions(conn, addWatchCallback, removeWatchCallback, toggleWatchCallback, me, nil)
        _ = dbus_connection_set_timeout_functions(conn, addTimeoutCallback, removeTimeoutCallback, toggleTimeoutCallback, me, nil)
        dbus_connection_set_wakeup_main_function(conn, wakeupCallback, me, nil)

        loopRunning = true
        finished.enter()
        var tid = pthread_t()
        let arg = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(&tid, nil, { arg in
            guard let arg else { return nil }
            let c = Unmanaged<ConnectionCore>.fromOpaque(arg).takeRetainedValue()
            c.run()
            return nil
        }, arg)
        guard rc == 0 else {
            Unmanaged<ConnectionCore>.fromOpaque(arg).release()
            shutdown()
            throw BusError.failed("Cannot start the bus thread (pthread_create: \(rc)).")
        }
        pthread_detach(tid)
    }

    /// Sets the handler called when the connection is lost.
    func setDisconnectHandler(_ h: (@Sendable () -> Void)?) { lock.withLock { onDisconnect = h } }

    /// The handler called when the connection is lost.
    var disconnectHandler: (@Sendable () -> Void)? { lock.withLock { onDisconnect } }

    // MARK: Threads and jobs

    /// Whether the caller is the bus thread.
    var isBusThread: Bool {
        guard let t = lock.withLock({ loopThread }) else { return false }
        return pthread_equal(t, pthread_self()) != 0
    }

    /// Whether the bus thread is still running.
    var isRunning: Bool { lock.withLock { loopRunning } }

    /// Whether jobs are still accepted (the connection is open).
    var isOpen: Bool { lock.withLock { accepting } }

    /// Runs `job` on the bus thread: now if called there, else queued behind earlier jobs.
    /// - Returns: false if the connection is closed (the job will not run).
    @discardableResult
    func perform(_ job: @escaping () -> Void) -> Bool {
        if isBusThread {
            job()
            return true
        }
        let ok: Bool = lock.withLock {
            guard accepting else { return false }
            jobs.append(job)
            return true
        }
        if ok { wake() }
        return ok
    }

    /// Runs `body` on the bus thread and waits for its result; nil if the connection is closed.
    func performAndWait<T>(_ body: @escaping () -> T) -> T? {
        if isBusThread { return body() }
        let sem = DispatchSemaphore(value: 0)
        let box = ResultBox<T>()
        guard perform({ box.set(body()); sem.signal() }) else { return nil }
        sem.wait()
        return box.get()
    }

    /// Wakes the poll loop (does nothing once the loop has ended and closed its eventfd).
    func wake() {
        lock.withLock {
            if !wakeClosed { cdbus_eventfd_signal(wakeFD) }
        }
    }

    /// Asks the loop to finish: queued jobs run, outgoing messages are flushed, then the
    /// connection is closed and released. Waits for the bus thread unless called on it.
    func close() {
        lock.withLock { stopRequested = true }
        wake()
        if !isBusThread { finished.wait() }
    }

    // MARK: The loop

    private func run() {
        lock.withLock { loopThread = pthread_self() }
        while true {
            runJobs()
            while dbus_connection_dispatch(conn) == DBUS_DISPATCH_DATA_REMAINS {}
            let stop = lock.withLock { stopRequested }
            if stop || disconnected { break }
            pollOnce()
        }
        shutdown()
    }

    private func runJobs() {
        while true {
            let batch: [() -> Void] = lock.withLock {
                let b = jobs
                jobs = []
                return b
            }
            if batch.isEmpty { return }
            for job in batch { job() }
        }
    }

    private func pollOnce() {
        var fds = [pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
        var active: [OpaquePointer] = []
        for w in watches where dbus_watch_get_enabled(w) != 0 {
            let fd = dbus_watch_get_unix_fd(w)
            guard fd >= 0 else { continue }
            let flags = dbus_watch_get_flags(w)
            var events: Int16 = 0
            if flags & DBUS_WATCH_READABLE.rawValue != 0 { events |= Int16(POLLIN) }
            if flags & DBUS_WATCH_WRITABLE.rawValue != 0 { events |= Int16(POLLOUT) }
            fds.append(pollfd(fd: fd, events: events, revents: 0))
            active.append(w)
        }
        var waitMs: Int64 = -1
        let now = monotonicMilliseconds()
        for (t, deadline) in timeouts where dbus_timeout_get_enabled(t) != 0 {
            let d = max(0, deadline - now)
            waitMs = waitMs < 0 ? d : min(waitMs, d)
        }
        if dbus_connection_get_dispatch_status(conn) != DBUS_DISPATCH_COMPLETE { waitMs = 0 }
        // Never sleep longer than 200 ms: a watch or timeout that libdbus adds or re-arms from
        // another thread while this loop is in poll() (a pending call's timeout, a queued
        // outgoing message) is then seen within 200 ms even if its wake-up was missed. A CI run
        // hung here for 9 minutes on a method call's missing reply until a signal interrupted poll.
        if waitMs < 0 || waitMs > 200 { waitMs = 200 }
        let timeout = Int32(clamping: waitMs)
        let n = fds.withUnsafeMutableBufferPointer { poll($0.baseAddress, nfds_t($0.count), timeout) }
        if n < 0 {
            if errno != EINTR { usleep(1000) }  // never spin on an unexpected poll failure
            return
        }
        if fds[0].revents != 0 { cdbus_eventfd_drain(wakeFD) }
        for (i, w) in active.enumerated() {
            let re = Int32(fds[i + 1].revents)
            guard re != 0, watches.contains(w) else { continue }
            var flags: UInt32 = 0
            if re & Int32(POLLIN) != 0 { flags |= DBUS_WATCH_READABLE.rawValue }
            if re & Int32(POLLOUT) != 0 { flags |= DBUS_WATCH_WRITABLE.rawValue }
            if re & Int32(POLLERR | POLLNVAL) != 0 { flags |= DBUS_WATCH_ERROR.rawValue }
            if re & Int32(POLLHUP) != 0 { flags |= DBUS_WATCH_HANGUP.rawValue }
            _ = dbus_watch_handle(w, flags)
        }
        let later = monotonicMilliseconds()
        for (t, deadline) in timeouts where deadline <= later {
            guard timeouts[t] != nil, dbus_timeout_get_enabled(t) != 0 else { continue }
            timeouts[t] = later + Int64(dbus_timeout_get_interval(t))
            _ = dbus_timeout_handle(t)
        }
    }

    private func shutdown() {
        // Whatever was queued before the close still runs (replies, signals), then is flushed.
        let rest: [() -> Void] = lock.withLock {
            accepting = false
            let r = jobs
            jobs = []
            return r
        }
        for job in rest { job() }
        if dbus_connection_get_is_connected(conn) != 0 { dbus_connection_flush(conn) }
        let lostByDisconnect = disconnected && !lock.withLock { stopRequested }

        for (pc, box) in pendingCalls {
            dbus_pending_call_cancel(pc)
            dbus_pending_call_unref(pc)
            box.complete(.failure(.disconnected("The connection was closed before the reply arrived.")))
        }
        pendingCalls = [:]

        let me = Unmanaged.passUnretained(self).toOpaque()
        dbus_connection_remove_filter(conn, filterCallback, me)
        dbus_connection_close(conn)
        _ = dbus_connection_set_watch_functions(conn, nil, nil, nil, nil, nil)
        _ = dbus_connection_set_timeout_functions(conn, nil, nil, nil, nil, nil)
        dbus_connection_set_wakeup_main_function(conn, nil, nil, nil)
        watches = []
        timeouts = [:]
        dbus_connection_unref(conn)
        lock.withLock {
            wakeClosed = true
            Descriptors.close(wakeFD)
        }

        // Exported closures often capture the connection: dropping them breaks that cycle.
        registry.removeAll()
        let callback: (@Sendable () -> Void)? = lock.withLock {
            // pthread_t values are reused: forget ours so no later thread passes for the bus thread.
            loopThread = nil
            loopRunning = false
            subscriptions = [:]
            return lostByDisconnect ? onDisconnect : nil
        }
        if let callback { DispatchQueue.global().async(execute: callback) }
        finished.leave()
    }

    // MARK: Watch and timeout bookkeeping (bus thread, or setup before the thread starts)

    func addWatch(_ w: OpaquePointer) {
        if !watches.contains(w) { watches.append(w) }
    }

    func removeWatch(_ w: OpaquePointer) {
        watches.removeAll { $0 == w }
    }

    func armTimeout(_ t: OpaquePointer) {
        timeouts[t] = monotonicMilliseconds() + Int64(dbus_timeout_get_interval(t))
    }

    func removeTimeout(_ t: OpaquePointer) {
        timeouts[t] = nil
    }

    // MARK: Incoming messages (bus thread)

    func filter(_ raw: OpaquePointer) -> DBusHandlerResult {
        let message = Message(retaining: raw)
        switch message.kind {
        case .signal:
            if message.interface == "org.freedesktop.DBus.Local", message.member == "Disconnected" {
                disconnected = true
                return DBUS_HANDLER_RESULT_HANDLED
            }
            deliverSignal(message)
            return DBUS_HANDLER_RESULT_NOT_YET_HANDLED
        case .methodCall:
            handleMethodCall(message)
            return DBUS_HANDLER_RESULT_HANDLED
        default:
            return DBUS_HANDLER_RESULT_NOT_YET_HANDLED
        }
    }

    private func deliverSignal(_ message: Message) {
        let subs = lock.withLock { Array(subscriptions.values) }.sorted { $0.id < $1.id }
        guard !subs.isEmpty else { return }
        var parsed: [DBusValue]?
        var parseFailed = false
        func args() -> [DBusValue] {
            if parsed == nil && !parseFailed {
                do { parsed = try message.arguments() } catch { parseFailed = true }
            }
            return parsed ?? []
        }
        for sub in subs where sub.rule.matches(message, owner: sub.owner, arguments: args) {
            // Each subscriber gets its own copy (file descriptors are duplicated per read).
            guard let values = try? message.arguments() else { continue }
            let signal = ReceivedSignal(message: message, arguments: values)
            let handler = sub.handler
            sub.queue.async { handler(signal) }
        }
    }

    // MARK: Sending (bus thread)

    /// Sends `message` now; must run on the bus thread.
    @discardableResult
    func sendNow(_ message: Message) -> BusError? {
        if message.containsUnixFDs && dbus_connection_can_send_type(conn, Int32(CDBUS_TYPE_UNIX_FD)) == 0 {
            return BusError(name: BusError.Name.notSupported, message: "This connection cannot pass file descriptors.")
        }
        message.markLocked()
        guard dbus_connection_send(conn, message.raw, nil) != 0 else {
            return BusError(name: BusError.Name.noMemory, message: "Out of memory sending a message.")
        }
        return nil
    }

    /// Queues `message` for sending.
    /// - Throws: `BusError` (`Disconnected`) if the connection is closed.
    func send(_ message: Message) throws {
        message.markLocked()
        guard perform({ [self] in _ = sendNow(message) }) else { throw BusError.disconnected() }
    }

    /// Whether the connection can pass Unix file descriptors (asked on the bus thread).
    var canPassUnixFDs: Bool {
        performAndWait { [self] in dbus_connection_can_send_type(conn, Int32(CDBUS_TYPE_UNIX_FD)) != 0 } ?? false
    }

    /// Sends a method call and runs `completion` on the bus thread with the reply or the error.
    func callAsync(_ message: Message, timeoutMs: Int32, completion: @escaping (Result<Message, BusError>) -> Void) {
        let box = PendingCallBox(completion)
        message.markLocked()
        let queued = perform { [self] in
            if message.containsUnixFDs && dbus_connection_can_send_type(conn, Int32(CDBUS_TYPE_UNIX_FD)) == 0 {
                box.complete(.failure(BusError(name: BusError.Name.notSupported,
                                               message: "This connection cannot pass file descriptors.")))
                return
            }
            var pending: OpaquePointer? = nil
            message.markLocked()
            guard dbus_connection_send_with_reply(conn, message.raw, &pending, timeoutMs) != 0 else {
                box.complete(.failure(BusError(name: BusError.Name.noMemory, message: "Out of memory sending a call.")))
                return
            }
            guard let pending else {
                box.complete(.failure(.disconnected()))
                return
            }
            pendingCalls[pending] = box
            _ = dbus_pending_call_set_notify(pending, pendingNotifyCallback, Unmanaged.passUnretained(self).toOpaque(), nil)
            if dbus_pending_call_get_completed(pending) != 0 { finishPendingCall(pending) }
        }
        if !queued { box.complete(.failure(.disconnected())) }
    }

    /// Completes one of our pending calls (bus thread).
    func finishPendingCall(_ pending: OpaquePointer) {
        guard let box = pendingCalls.removeValue(forKey: pending) else { return }
        let reply = dbus_pending_call_steal_reply(pending)
        dbus_pending_call_unref(pending)
        guard let reply else {
            box.complete(.failure(BusError(name: BusError.Name.noReply, message: "No reply arrived.")))
            return
        }
        let message = Message(owning: reply)
        if message.kind == .error {
            box.complete(.failure(message.error ?? BusError.failed("An error reply without a name.")))
        } else {
            box.complete(.success(message))
        }
    }

    /// Sends a method call and waits for the reply (not on the bus thread).
    func call(_ message: Message, timeout: Duration) throws -> Message {
        guard !isBusThread else {
            throw BusError.failed("A synchronous D-Bus call on the bus thread would deadlock; use the asynchronous form.")
        }
        let ms = clampedMilliseconds(timeout)
        let sem = DispatchSemaphore(value: 0)
        let box = ResultBox<Result<Message, BusError>>()
        callAsync(message, timeoutMs: ms) { r in
            box.set(r)
            sem.signal()
        }
        // libdbus times the call out itself; the extra margin only guards against a stuck loop.
        let margin: DispatchTime = ms >= Int32(CDBUS_TIMEOUT_INFINITE) ? .distantFuture : .now() + .milliseconds(Int(ms) + 10_000)
        guard sem.wait(timeout: margin) == .success, let result = box.get() else {
            throw BusError(name: BusError.Name.noReply, message: "No reply within the timeout.")
        }
        return try result.get()
    }

    // MARK: Signals

    /// Adds a subscription locally and asks the bus to route matching signals to us.
    func subscribe(_ rule: MatchRule, queue: DispatchQueue, handler: @escaping @Sendable (ReceivedSignal) -> Void) throws -> Int {
        try rule.validate()
        let entry: SubscriptionEntry = lock.withLock {
            let e = SubscriptionEntry(id: nextSubscriptionID, rule: rule, queue: queue, handler: handler)
            nextSubscriptionID += 1
            return e
        }
        let onBusThread = isBusThread
        if let sender = rule.sender, !sender.hasPrefix(":"), sender != "org.freedesktop.DBus", !onBusThread, uniqueName != nil {
            entry.owner = try? busDriverCall("GetNameOwner", [.string(sender)], expecting: "s").first.flatMap { try? $0.asString() }
        }
        lock.withLock { subscriptions[entry.id] = entry }
        guard uniqueName != nil else { return entry.id }  // peer-to-peer: no bus to ask
        if onBusThread {
            if let m = try? busDriverMessage("AddMatch", [.string(rule.description)]) {
                callAsync(m, timeoutMs: -1) { _ in }
            }
        } else {
            do {
                _ = try busDriverCall("AddMatch", [.string(rule.description)], expecting: "")
            } catch {
                lock.withLock { subscriptions[entry.id] = nil }
                throw error
            }
        }
        return entry.id
    }

    /// Removes a subscription and its match rule (the latter without waiting).
    func unsubscribe(_ id: Int) {
        guard let entry = lock.withLock({ subscriptions.removeValue(forKey: id) }) else { return }
        guard uniqueName != nil, let m = try? busDriverMessage("RemoveMatch", [.string(entry.rule.description)]) else { return }
        callAsync(m, timeoutMs: -1) { _ in }
    }

    // MARK: The bus driver

    /// A call to the bus driver `org.freedesktop.DBus`.
    func busDriverMessage(_ member: String, _ args: [DBusValue]) throws -> Message {
        let m = try Message.methodCall(destination: "org.freedesktop.DBus", path: "/org/freedesktop/DBus",
                                       interface: "org.freedesktop.DBus", member: member)
        try m.append(args)
        return m
    }

    /// Calls the bus driver and waits (not on the bus thread).
    func busDriverCall(_ member: String, _ args: [DBusValue], expecting: String, timeout: Duration = .seconds(25)) throws -> [DBusValue] {
        let reply = try call(try busDriverMessage(member, args), timeout: timeout)
        return try reply.arguments(expecting: expecting)
    }

    /// The Unix user id of the connection `sender`, from the bus driver; cached per unique name.
    func unixUser(of sender: String, completion: @escaping (Result<UInt32, BusError>) -> Void) {
        if let uid = lock.withLock({ uidCache[sender] }) {
            completion(.success(uid))
            return
        }
        let m: Message
        do { m = try busDriverMessage("GetConnectionUnixUser", [.string(sender)]) } catch {
            completion(.failure(BusError(error)))
            return
        }
        callAsync(m, timeoutMs: 25_000) { [self] result in
            switch result {
            case .failure(let e): completion(.failure(e))
            case .success(let reply):
                do {
                    let uid = try reply.arguments(expecting: "u")[0].asUInt32()
                    if sender.hasPrefix(":") {
                        lock.withLock {
                            if uidCache.count > 1024 { uidCache = [:] }
                            uidCache[sender] = uid
                        }
                    }
                    completion(.success(uid))
                } catch {
                    completion(.failure(BusError(error)))
                }
            }
        }
    }

    /// The Unix user id of `sender`, waiting for the bus driver (not on the bus thread).
    func unixUser(of sender: String, timeout: Duration) throws -> UInt32 {
        guard !isBusThread else {
            throw BusError.failed("A synchronous credentials lookup on the bus thread would deadlock; use the asynchronous form.")
        }
        let sem = DispatchSemaphore(value: 0)
        let box = ResultBox<Result<UInt32, BusError>>()
        unixUser(of: sender) { r in
            box.set(r)
            sem.signal()
        }
        let ms = clampedMilliseconds(timeout)
        guard sem.wait(timeout: .now() + .milliseconds(Int(ms) + 10_000)) == .success, let r = box.get() else {
            throw BusError(name: BusError.Name.noReply, message: "No reply from the bus driver.")
        }
        return try r.get()
    }
}

/// A value written on one thread and read on another.
// @unchecked Sendable: the value is set and read under `lock` (one writer hands a result to one waiter).
final class ResultBox<T>: @unchecked Sendable {
    private let lock = Lock()
    private var value: T?
    func set(_ v: T) { lock.withLock { value = v } }
    func get() -> T? { lock.withLock { value } }
}

/// A signal delivered to a subscription.
// @unchecked Sendable: immutable; its Message is not mutated after delivery, and each subscriber gets its own parsed arguments (descriptors duplicated).
public struct ReceivedSignal: @unchecked Sendable {
    /// The whole message.
    public let message: Message
    /// The arguments (read once per subscriber; file descriptors are this subscriber's own).
    public let arguments: [DBusValue]
    /// The sender's unique name.
    public var sender: String { message.sender ?? "" }
    /// The emitting object's path.
    public var path: String { message.path ?? "" }
    /// The signal's interface.
    public var interface: String { message.interface ?? "" }
    /// The signal's name.
    public var member: String { message.member ?? "" }
    /// The arguments' signature.
    public var signature: String { message.signature }
}
