// Who may call the privileged methods: the caller's uid, then polkit's CheckAuthorization.
import Affinity
import AffinityAPI
import Bus
import Foundation
import Imaging
import PluginHost
import Service

extension Daemon {
    // MARK: Authorization

    /// Looks up the caller's uid, checks `action` with polkit (unless authorization is off), then
    /// runs `body` on a worker queue and replies with its values or its error.
    func privileged(_ call: MethodCall, _ reply: PendingReply, action: String, _ body: @escaping @Sendable (UInt32) throws -> [DBusValue]) {
        let run: (UInt32) -> Void = { uid in
            DispatchQueue.global().async { reply.complete { do { return try body(uid) } catch { throw apiError(error) } } }
        }
        call.senderUnixUser { [self] result in
            switch result {
            case .failure(let e):
                reply.fail(BusError(name: API.errorName(.notAuthorized), message: "The caller's user cannot be determined: \(e.message)"))
            case .success(let uid):
                if !usePolkit { run(uid); return }
                checkAuthorization(sender: call.sender, action: action) { allowed, why in
                    if allowed { run(uid) } else {
                        Log.log(Log.notice, "uid \(uid) is not authorized for \(action): \(why)")
                        reply.fail(BusError(name: API.errorName(.notAuthorized), message: why))
                    }
                }
            }
        }
    }

    /// org.freedesktop.PolicyKit1.Authority.CheckAuthorization for the bus name `sender`.
    func checkAuthorization(sender: String, action: String, completion: @escaping (Bool, String) -> Void) {
        let subject = DBusValue.structure([.string("system-bus-name"), .vardict(["name": .string(sender)])])
        bus.callAsync(destination: "org.freedesktop.PolicyKit1", path: "/org/freedesktop/PolicyKit1/Authority",
                      interface: "org.freedesktop.PolicyKit1.Authority", method: "CheckAuthorization",
                      [subject, .string(action), .dictionary(keySignature: "s", valueSignature: "s", []), .uint32(1), .string("")],
                      timeout: .seconds(120)) { result in
            switch result {
            case .success(let values):
                if let s = try? values.first?.asStructure(), s.count >= 2, let ok = try? s[0].asBool() {
                    completion(ok, ok ? "" : "The caller is not authorized for \(action) (polkit said no).")
                } else {
                    completion(false, "polkit gave an unexpected answer for \(action).")
                }
            case .failure(let e):
                completion(false, "The authorization for \(action) could not be checked with polkit: \(e.message)")
            }
        }
    }
}
