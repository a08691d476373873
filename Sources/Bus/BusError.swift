// BusError: a named D-Bus error (name + human sentence), thrown by handlers and by client calls.

/// A named D-Bus error: an interface-style error name and a one-sentence message.
///
/// Method handlers throw it to answer a call with that error; client calls throw it when the
/// remote side (or the bus, or this library) answered with an error. Tests match on `name`.
public struct BusError: Error, Equatable, Hashable, CustomStringConvertible, Sendable {
    /// The error name, e.g. `org.lesionaffinity.Affinity1.Error.InvalidImage`.
    public var name: String
    /// A human-readable sentence saying what went wrong.
    public var message: String

    /// Creates a named error.
    public init(name: String, message: String) {
        self.name = name
        self.message = message
    }

    /// `name: message`.
    public var description: String { "\(name): \(message)" }
}

extension BusError {
    /// The error names the D-Bus specification and the bus driver use.
    public enum Name {
        /// Generic failure.
        public static let failed = "org.freedesktop.DBus.Error.Failed"
        /// Out of memory.
        public static let noMemory = "org.freedesktop.DBus.Error.NoMemory"
        /// The destination name is not owned by anyone and cannot be activated.
        public static let serviceUnknown = "org.freedesktop.DBus.Error.ServiceUnknown"
        /// A name has no owner.
        public static let nameHasNoOwner = "org.freedesktop.DBus.Error.NameHasNoOwner"
        /// No reply arrived within the timeout.
        public static let noReply = "org.freedesktop.DBus.Error.NoReply"
        /// The connection is closed or lost.
        public static let disconnected = "org.freedesktop.DBus.Error.Disconnected"
        /// Arguments of the wrong type or value.
        public static let invalidArgs = "org.freedesktop.DBus.Error.InvalidArgs"
        /// No such method on the object / interface.
        public static let unknownMethod = "org.freedesktop.DBus.Error.UnknownMethod"
        /// No object at that path.
        public static let unknownObject = "org.freedesktop.DBus.Error.UnknownObject"
        /// The object does not implement that interface.
        public static let unknownInterface = "org.freedesktop.DBus.Error.UnknownInterface"
        /// The interface has no such property.
        public static let unknownProperty = "org.freedesktop.DBus.Error.UnknownProperty"
        /// The property cannot be set.
        public static let propertyReadOnly = "org.freedesktop.DBus.Error.PropertyReadOnly"
        /// The operation is not supported (e.g. fd passing on a transport without it).
        public static let notSupported = "org.freedesktop.DBus.Error.NotSupported"
        /// Access denied by bus policy.
        public static let accessDenied = "org.freedesktop.DBus.Error.AccessDenied"
        /// The operation timed out.
        public static let timedOut = "org.freedesktop.DBus.Error.TimedOut"
        /// An object is already exported at that path.
        public static let objectPathInUse = "org.freedesktop.DBus.Error.ObjectPathInUse"
        /// A name could not be acquired because another connection owns it.
        public static let nameTaken = "org.lesionaffinity.Bus.Error.NameTaken"
        /// An I/O error on a file descriptor handled by this library.
        public static let ioError = "org.freedesktop.DBus.Error.IOError"
    }

    /// `org.freedesktop.DBus.Error.Failed` with a message.
    public static func failed(_ message: String) -> BusError { BusError(name: Name.failed, message: message) }
    /// `org.freedesktop.DBus.Error.InvalidArgs` with a message.
    public static func invalidArgs(_ message: String) -> BusError { BusError(name: Name.invalidArgs, message: message) }
    /// `org.freedesktop.DBus.Error.Disconnected` with a message.
    public static func disconnected(_ message: String = "The connection to the bus is closed.") -> BusError {
        BusError(name: Name.disconnected, message: message)
    }

    /// Wraps any error as a `BusError`: a `BusError` as itself, anything else as `Failed`.
    public init(_ error: Error) {
        if let e = error as? BusError { self = e } else { self = .failed(String(describing: error)) }
    }
}
