// Interrupt: Ctrl-C (SIGINT) and SIGTERM handling, so that waiting on a job can detach or cancel
// and a private `--local` daemon is always stopped.
import Dispatch
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Routes SIGINT and SIGTERM: to a job waiter while one is waiting, else to the cleanup and exit(130).
// @unchecked Sendable: the handlers and counters are under `lock`; the signal itself arrives on a dispatch source, not in a signal handler.
final class Interrupt: @unchecked Sendable {
    static let shared = Interrupt()

    private let lock = NSLock()
    private var sources: [DispatchSourceSignal] = []
    private var cleanup: (() -> Void)?
    private var waiter: (() -> Void)?
    private var count = 0

    /// Starts handling SIGINT and SIGTERM (idempotent); `cleanup` runs before an exit on a signal.
    func install(cleanup: @escaping () -> Void) {
        lock.withLock {
            self.cleanup = cleanup
            guard sources.isEmpty else { return }
            for s in [SIGINT, SIGTERM] {
                signal(s, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: s, queue: .global())
                source.setEventHandler { [weak self] in self?.received() }
                source.resume()
                sources.append(source)
            }
        }
    }

    /// The number of interrupts received since the waiter began.
    var interrupts: Int { lock.withLock { count } }

    /// Hands interrupts to `wake` (a job waiter) until `endWaiting()`.
    func beginWaiting(_ wake: @escaping () -> Void) {
        lock.withLock {
            waiter = wake
            count = 0
        }
    }

    func endWaiting() { lock.withLock { waiter = nil } }

    private func received() {
        let (w, c): ((() -> Void)?, (() -> Void)?) = lock.withLock {
            count += 1
            return (waiter, cleanup)
        }
        if let w { w(); return }
        c?()
        exit(Exit.interrupted)
    }
}
