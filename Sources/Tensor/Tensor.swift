import Foundation

/// A shape or argument problem found at a public entry point, named with the shapes involved.
public enum TensorError: Error, CustomStringConvertible, Equatable {
    /// Two or more tensors whose shapes do not fit the operation.
    case shapeMismatch(op: String, detail: String)
    /// An argument outside the operation's domain (negative size, zero stride, …).
    case invalidArgument(op: String, detail: String)

    public var description: String {
        switch self {
        case .shapeMismatch(let op, let detail): return "\(op): shape mismatch: \(detail)"
        case .invalidArgument(let op, let detail): return "\(op): invalid argument: \(detail)"
        }
    }
}

/// Formats a shape the way error messages print it: `[1, 256, 32, 32]`.
@inline(__always)
public func shapeString(_ s: [Int]) -> String { "[" + s.map(String.init).joined(separator: ", ") + "]" }

/// Float storage owned by one or more tensors (a reshaped tensor shares its source's storage).
public final class TensorStorage: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<Float>
    public let capacity: Int

    init(capacity: Int, zeroed: Bool = true) {
        self.capacity = capacity
        // 64-byte alignment keeps SIMD loads and OpenBLAS happy.
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(capacity, 1) * 4, alignment: 64)
        pointer = raw.bindMemory(to: Float.self, capacity: max(capacity, 1))
        if zeroed { pointer.initialize(repeating: 0, count: max(capacity, 1)) }
    }

    deinit { UnsafeMutableRawPointer(pointer).deallocate() }
}

/// A dense float32 tensor in row-major (NCHW for images) order, with storage it owns.
///
/// Tensors are reference types: layers keep the tensors their backward pass needs, and kernels
/// write into tensors the caller allocated. Element access in hot loops goes through `data`.
public final class Tensor: @unchecked Sendable, CustomStringConvertible {
    /// The dimensions, outermost first.
    public let shape: [Int]
    /// The number of elements (product of `shape`).
    public let count: Int
    public let storage: TensorStorage

    /// The first element; `count` contiguous floats follow.
    @inline(__always) public var data: UnsafeMutablePointer<Float> { storage.pointer }

    /// A zero-filled tensor of the given shape.
    /// - Precondition: every dimension is ≥ 0 (use `Tensor(checkedShape:)` for untrusted shapes).
    public init(shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        self.shape = shape
        self.count = shape.reduce(1, *)
        self.storage = TensorStorage(capacity: count)
    }

    /// A tensor whose contents are unspecified, for outputs a kernel overwrites completely
    /// (saves the zero-fill pass over large activations).
    /// - Precondition: every dimension is ≥ 0.
    public init(uninitializedShape shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        self.shape = shape
        self.count = shape.reduce(1, *)
        self.storage = TensorStorage(capacity: count, zeroed: false)
    }

    /// A zero-filled tensor whose shape comes from outside (a file, a caller).
    /// - Throws: `TensorError.invalidArgument` for a negative dimension or an overflowing size.
    public convenience init(checkedShape shape: [Int]) throws {
        var n = 1
        for d in shape {
            guard d >= 0 else { throw TensorError.invalidArgument(op: "Tensor", detail: "negative dimension in \(shapeString(shape))") }
            let (m, o) = n.multipliedReportingOverflow(by: d)
            guard !o, m <= 1 << 40 else { throw TensorError.invalidArgument(op: "Tensor", detail: "shape \(shapeString(shape)) is too large") }
            n = m
        }
        self.init(shape: shape)
    }

    /// A tensor filled with `value`.
    public convenience init(shape: [Int], repeating value: Float) {
        self.init(shape: shape)
        data.update(repeating: value, count: count)
    }

    /// A tensor holding `values` in row-major order.
    /// - Throws: `TensorError.shapeMismatch` if `values.count` differs from the shape's element count.
    public convenience init(shape: [Int], values: [Float]) throws {
        self.init(shape: shape)
        guard values.count == count else {
            throw TensorError.shapeMismatch(op: "Tensor(shape:values:)", detail: "\(values.count) values for shape \(shapeString(shape))")
        }
        values.withUnsafeBufferPointer { data.update(from: $0.baseAddress!, count: count) }
    }

    init(shape: [Int], count: Int, storage: TensorStorage) {
        self.shape = shape
        self.count = count
        self.storage = storage
    }

    /// The same storage seen with another shape of the same element count.
    /// - Throws: `TensorError.shapeMismatch` if the element counts differ.
    public func reshaped(_ newShape: [Int]) throws -> Tensor {
        let n = newShape.reduce(1, *)
        guard n == count, newShape.allSatisfy({ $0 >= 0 }) else {
            throw TensorError.shapeMismatch(op: "reshape", detail: "\(shapeString(shape)) cannot be viewed as \(shapeString(newShape))")
        }
        return Tensor(shape: newShape, count: n, storage: storage)
    }

    /// The elements as an array (copies).
    public var array: [Float] { Array(UnsafeBufferPointer(start: data, count: count)) }

    /// Sets every element to zero.
    public func zero() { data.update(repeating: 0, count: count) }

    /// Sets every element to `value`.
    public func fill(_ value: Float) { data.update(repeating: value, count: count) }

    /// A deep copy with its own storage.
    public func clone() -> Tensor {
        let t = Tensor(shape: shape)
        t.data.update(from: data, count: count)
        return t
    }

    /// Copies `other`'s elements into this tensor.
    /// - Throws: `TensorError.shapeMismatch` if the shapes differ.
    public func copy(from other: Tensor) throws {
        guard other.shape == shape else {
            throw TensorError.shapeMismatch(op: "copy", detail: "destination \(shapeString(shape)), source \(shapeString(other.shape))")
        }
        data.update(from: other.data, count: count)
    }

    /// The element at a multi-index (slow; for tests and diagnostics).
    public subscript(_ index: Int...) -> Float {
        get { data[flatIndex(index)] }
        set { data[flatIndex(index)] = newValue }
    }

    private func flatIndex(_ index: [Int]) -> Int {
        precondition(index.count == shape.count, "index \(index) for shape \(shape)")
        var f = 0
        for (i, d) in zip(index, shape) {
            precondition(i >= 0 && i < d, "index \(index) out of range for shape \(shape)")
            f = f * d + i
        }
        return f
    }

    public var description: String { "Tensor\(shapeString(shape))" }

    /// Throws unless the tensor has exactly `expected` as its shape.
    @inline(__always)
    public func expectShape(_ expected: [Int], _ op: String, _ name: String) throws {
        if shape != expected {
            throw TensorError.shapeMismatch(op: op, detail: "\(name) is \(shapeString(shape)), expected \(shapeString(expected))")
        }
    }

    /// Throws unless the tensor has `rank` dimensions.
    @inline(__always)
    public func expectRank(_ rank: Int, _ op: String, _ name: String) throws {
        if shape.count != rank {
            throw TensorError.shapeMismatch(op: op, detail: "\(name) is \(shapeString(shape)), expected rank \(rank)")
        }
    }
}

public extension Tensor {
    /// Largest absolute element (0 for an empty tensor).
    var maxAbs: Float {
        var m: Float = 0
        for i in 0..<count { m = max(m, abs(data[i])) }
        return m
    }

    /// Sum of all elements, accumulated in Double.
    var sum: Double {
        var s = 0.0
        for i in 0..<count { s += Double(data[i]) }
        return s
    }
}
