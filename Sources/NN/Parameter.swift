import Tensor

/// A trainable tensor with its gradient, named by its PyTorch state-dict key
/// (e.g. `backbone.body.layer1.0.conv1.weight`).
public final class Parameter: @unchecked Sendable, CustomStringConvertible {
    /// The state-dict key, e.g. `backbone.fpn.layer_blocks.0.weight`.
    public let name: String
    /// The current values (shared with the layer that declares the parameter, not a copy).
    public let value: Tensor
    /// Accumulated gradient; backward passes add to it, `zeroGrad` clears it.
    public let grad: Tensor
    /// Whether any backward pass wrote into `grad` since the last `zeroGrad` (PyTorch's
    /// `grad is not None`): Adam skips a parameter that has none.
    public var hasGradient = false

    /// A parameter that trains `value` in place, with a zero gradient of the same shape.
    /// - Parameters:
    ///   - name: The state-dict key.
    ///   - value: The tensor to train; the parameter keeps this tensor, not a copy.
    public init(_ name: String, _ value: Tensor) {
        self.name = name
        self.value = value
        self.grad = Tensor(shape: value.shape)
    }

    /// A zero-filled parameter of the given shape, with a zero gradient.
    /// - Parameters:
    ///   - name: The state-dict key.
    ///   - shape: The tensor shape, e.g. `[out, in, kH, kW]` for a convolution weight.
    public convenience init(_ name: String, shape: [Int]) {
        self.init(name, Tensor(shape: shape))
    }

    /// Clears the gradient and the `hasGradient` flag.
    public func zeroGrad() {
        if hasGradient { grad.zero() }
        hasGradient = false
    }

    /// The shape of `value`.
    public var shape: [Int] { value.shape }
    /// The name and the shape, e.g. `rpn.head.conv.weight [256, 256, 3, 3]`.
    public var description: String { "\(name) \(shapeString(value.shape))" }
}

/// An integer buffer of a module's state (BatchNorm's `num_batches_tracked`).
public final class CounterBuffer: @unchecked Sendable {
    /// The count (for BatchNorm: the training-mode forward passes so far).
    public var value: Int64
    /// A counter starting at `value`.
    public init(_ value: Int64 = 0) { self.value = value }
}

/// One entry of a module's state dict: a float tensor (parameter or buffer) or an int64 scalar.
public enum StateValue {
    /// A float tensor: a parameter or a buffer such as `running_mean`, shared with the module.
    case float(Tensor)
    /// An integer scalar (stored as I64 in safetensors files), shared with the module.
    case int64(CounterBuffer)
}

/// A named state-dict entry.
public struct StateEntry {
    /// The state-dict key.
    public var name: String
    /// The tensor or counter the key names; loading a checkpoint writes into it.
    public var value: StateValue
    /// An entry for `value` under the key `name`.
    public init(_ name: String, _ value: StateValue) { self.name = name; self.value = value }
}

/// Anything that owns parameters and state: layers and the models composed of them.
public protocol Module: AnyObject {
    /// The trainable parameters, in state-dict order.
    var parameters: [Parameter] { get }
    /// Every state-dict entry (parameters, running statistics, counters), in state-dict order.
    var stateEntries: [StateEntry] { get }
}

public extension Module {
    /// Clears every parameter's gradient.
    func zeroGrad() { for p in parameters { p.zeroGrad() } }

    /// The number of trainable scalars.
    var parameterCount: Int { parameters.reduce(0) { $0 + $1.value.count } }

    /// Looks a parameter up by its full name.
    func parameter(named name: String) -> Parameter? { parameters.first { $0.name == name } }
}

/// Joins a module prefix and a leaf name with a dot (an empty prefix gives the leaf).
@inline(__always)
public func joinName(_ prefix: String, _ leaf: String) -> String { prefix.isEmpty ? leaf : prefix + "." + leaf }
