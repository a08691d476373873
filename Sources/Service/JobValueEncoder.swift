// An Encoder whose output is a JobValue: a job's result is the same data, key for key, as the
// JSON that `JSONEncoder` makes of the same Codable value (the scan result of AnalyseScan and of
// `affinity-lab scan --json`). Nil optionals are left out, as JSONEncoder leaves them out.

/// Encodes a Codable value as a `JobValue` tree.
public struct JobValueEncoder {
    public init() {}

    /// - Throws: `EncodingError.invalidValue` for a top-level value that is not a keyed container.
    public func encodeDictionary<T: Encodable>(_ value: T) throws -> [String: JobValue] {
        guard case .dictionary(let d) = try encode(value) else {
            throw EncodingError.invalidValue(value, .init(codingPath: [], debugDescription: "The value does not encode as a dictionary"))
        }
        return d
    }

    public func encode<T: Encodable>(_ value: T) throws -> JobValue {
        let box = JobValueBox()
        try Self.encode(value, into: box, path: [])
        return box.resolved
    }

    /// Typed arrays become typed lists (`ad`, `as`), not lists of variants.
    static func encode<T: Encodable>(_ value: T, into box: JobValueBox, path: [CodingKey]) throws {
        switch value {
        case let v as [Double]: box.value = .doubles(v)
        case let v as [Float]: box.value = .doubles(v.map(Double.init))
        case let v as [String]: box.value = .strings(v)
        case let v as [Int]: box.value = .values(v.map { .int(Int64($0)) })
        default: try value.encode(to: JobValueEncoding(box: box, codingPath: path))
        }
    }
}

/// Where one encoded value ends up (containers fill theirs in as their children are encoded).
final class JobValueBox {
    var value: JobValue?
    var keyed: [String: JobValueBox]?
    var unkeyed: [JobValueBox]?

    /// The value, with containers resolved.
    var resolved: JobValue {
        if let keyed { return .dictionary(keyed.compactMapValues { $0.resolvedOrNil }) }
        if let unkeyed {
            let items = unkeyed.compactMap { $0.resolvedOrNil }
            var dicts: [[String: JobValue]] = []
            for item in items { if case .dictionary(let d) = item { dicts.append(d) } }
            if !items.isEmpty && dicts.count == items.count { return .list(dicts) }
            return .values(items)
        }
        return value ?? .values([])
    }
    var resolvedOrNil: JobValue? { (keyed != nil || unkeyed != nil || value != nil) ? resolved : nil }
}

private struct JobValueEncoding: Encoder {
    let box: JobValueBox
    var codingPath: [CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        if box.keyed == nil { box.keyed = [:] }
        return KeyedEncodingContainer(Keyed<Key>(box: box, codingPath: codingPath))
    }
    func unkeyedContainer() -> UnkeyedEncodingContainer {
        if box.unkeyed == nil { box.unkeyed = [] }
        return Unkeyed(box: box, codingPath: codingPath)
    }
    func singleValueContainer() -> SingleValueEncodingContainer { Single(box: box, codingPath: codingPath) }

    private struct Keyed<Key: CodingKey>: KeyedEncodingContainerProtocol {
        let box: JobValueBox
        var codingPath: [CodingKey]
        private func child(_ key: Key) -> JobValueBox {
            let b = JobValueBox()
            box.keyed?[key.stringValue] = b
            return b
        }
        mutating func encodeNil(forKey key: Key) throws {}
        mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
            try JobValueEncoder.encode(value, into: child(key), path: codingPath + [key])
        }
        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
            JobValueEncoding(box: child(key), codingPath: codingPath + [key]).container(keyedBy: keyType)
        }
        mutating func nestedUnkeyedContainer(forKey key: Key) -> UnkeyedEncodingContainer {
            JobValueEncoding(box: child(key), codingPath: codingPath + [key]).unkeyedContainer()
        }
        mutating func superEncoder() -> Encoder { JobValueEncoding(box: box, codingPath: codingPath) }
        mutating func superEncoder(forKey key: Key) -> Encoder { JobValueEncoding(box: child(key), codingPath: codingPath + [key]) }
    }

    private struct Unkeyed: UnkeyedEncodingContainer {
        let box: JobValueBox
        var codingPath: [CodingKey]
        var count: Int { box.unkeyed?.count ?? 0 }
        private func next() -> JobValueBox {
            let b = JobValueBox()
            box.unkeyed?.append(b)
            return b
        }
        mutating func encodeNil() throws {}
        mutating func encode<T: Encodable>(_ value: T) throws {
            try JobValueEncoder.encode(value, into: next(), path: codingPath)
        }
        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
            JobValueEncoding(box: next(), codingPath: codingPath).container(keyedBy: keyType)
        }
        mutating func nestedUnkeyedContainer() -> UnkeyedEncodingContainer {
            JobValueEncoding(box: next(), codingPath: codingPath).unkeyedContainer()
        }
        mutating func superEncoder() -> Encoder { JobValueEncoding(box: next(), codingPath: codingPath) }
    }

    private struct Single: SingleValueEncodingContainer {
        let box: JobValueBox
        var codingPath: [CodingKey]
        mutating func encodeNil() throws {}
        mutating func encode(_ value: Bool) throws { box.value = .bool(value) }
        mutating func encode(_ value: String) throws { box.value = .string(value) }
        mutating func encode(_ value: Double) throws { box.value = .double(value) }
        mutating func encode(_ value: Float) throws { box.value = .double(Double(value)) }
        mutating func encode(_ value: Int) throws { box.value = .int(Int64(value)) }
        mutating func encode(_ value: Int8) throws { box.value = .int(Int64(value)) }
        mutating func encode(_ value: Int16) throws { box.value = .int(Int64(value)) }
        mutating func encode(_ value: Int32) throws { box.value = .int(Int64(value)) }
        mutating func encode(_ value: Int64) throws { box.value = .int(value) }
        mutating func encode(_ value: UInt) throws { box.value = .uint(UInt64(value)) }
        mutating func encode(_ value: UInt8) throws { box.value = .uint(UInt64(value)) }
        mutating func encode(_ value: UInt16) throws { box.value = .uint(UInt64(value)) }
        mutating func encode(_ value: UInt32) throws { box.value = .uint(UInt64(value)) }
        mutating func encode(_ value: UInt64) throws { box.value = .uint(value) }
        mutating func encode<T: Encodable>(_ value: T) throws { try JobValueEncoder.encode(value, into: box, path: codingPath) }
    }
}
