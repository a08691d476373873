import Foundation
import Tensor

/// A 2-D convolution with named `weight` [out, in, kH, kW] and optional `bias` [out].
///
/// Stateless in use: `callAsFunction` computes the output, `backward` takes the forward's input
/// back from the caller, so one layer can be applied several times in a step (the model keeps
/// the activations its backward needs).
public final class Conv2d: Module {
    /// Input and output channels, kernel, stride, padding and dilation.
    public let geometry: ConvGeometry
    /// The kernel [out, in, kH, kW], named `<name>.weight`.
    public let weight: Parameter
    /// The bias [out], named `<name>.bias`; nil for a layer made with `bias: false`.
    public let bias: Parameter?

    /// A convolution with zero parameters (fill them with `Init` or a checkpoint).
    /// - Parameters:
    ///   - name: The module prefix of the state-dict keys (`<name>.weight`, `<name>.bias`).
    ///   - geometry: Channels, kernel, stride, padding and dilation.
    ///   - bias: Whether the layer has a bias.
    public init(_ name: String, _ geometry: ConvGeometry, bias: Bool) {
        self.geometry = geometry
        weight = Parameter(joinName(name, "weight"), shape: [geometry.outChannels, geometry.inChannels, geometry.kernelH, geometry.kernelW])
        self.bias = bias ? Parameter(joinName(name, "bias"), shape: [geometry.outChannels]) : nil
    }

    /// `weight`, then `bias` when there is one.
    public var parameters: [Parameter] { [weight] + (bias.map { [$0] } ?? []) }
    /// The parameters as float entries (the layer has no buffers).
    public var stateEntries: [StateEntry] { parameters.map { StateEntry($0.name, .float($0.value)) } }

    /// The output shape for an input shape (throws if the input is too small).
    public func outputShape(_ input: [Int]) throws -> [Int] {
        guard input.count == 4 else { throw TensorError.shapeMismatch(op: "conv2d", detail: "input is \(shapeString(input)), expected rank 4") }
        let (oh, ow) = geometry.outputSize(h: input[2], w: input[3])
        guard oh > 0, ow > 0 else { throw TensorError.invalidArgument(op: "conv2d", detail: "input \(shapeString(input)) too small for \(geometry)") }
        return [input[0], geometry.outChannels, oh, ow]
    }

    /// out = conv(x)
    /// `relu`: ReLU(conv(x)), fused into the convolution's last pass where it can be.
    /// `transformed`: this layer's `winogradWeights(images:h:w:)`, taken instead of transforming the
    /// weights again when they fit the input.
    public func callAsFunction(_ x: Tensor, workspace: Workspace, relu: Bool = false, transformed: WinogradWeights? = nil) throws -> Tensor {
        let out = Tensor(uninitializedShape: try outputShape(x.shape))
        try conv2dForward(out: out, input: x, weight: weight.value, bias: bias?.value, geometry: geometry, workspace: workspace, relu: relu,
                          transformed: transformed)
        return out
    }

    /// The weights transformed for Winograd on n planes of h × w in `workspace` (nil when this
    /// convolution does not run by Winograd there), for several forward passes with the same weights
    /// and workspace.
    public func winogradWeights(images n: Int, h: Int, w: Int, workspace: Workspace) -> WinogradWeights? {
        transformForWinograd(weight: weight.value, geometry: geometry, images: n, h: h, w: w, workspace: workspace)
    }

    /// Accumulates the parameter gradients for (x → dy) and returns dx (nil unless `inputGradient`).
    /// With `parameterGradients: false` the layer is treated as frozen: only dx is computed.
    public func backward(_ dy: Tensor, input x: Tensor, workspace: Workspace, inputGradient: Bool = true,
                         parameterGradients: Bool = true) throws -> Tensor? {
        let dx = inputGradient ? Tensor(shape: x.shape) : nil
        try conv2dBackward(dInput: dx, dWeight: parameterGradients ? weight.grad : nil, dBias: parameterGradients ? bias?.grad : nil,
                           dOut: dy, input: x, weight: weight.value, geometry: geometry, workspace: workspace)
        if parameterGradients { weight.hasGradient = true; bias?.hasGradient = true }
        return dx
    }
}

/// A 2-D transposed convolution with named `weight` [in, out, kH, kW] (PyTorch layout) and optional `bias` [out].
public final class ConvTranspose2d: Module {
    /// Input and output channels, kernel, stride, padding and dilation; the output side is
    /// `(in − 1)·stride − 2·padding + dilation·(kernel − 1) + outputPadding + 1`.
    public let geometry: ConvGeometry
    /// Rows and columns added to the output size (PyTorch's `output_padding`), as (h, w).
    public let outputPadding: (Int, Int)
    /// The kernel [in, out, kH, kW] (PyTorch's transposed layout), named `<name>.weight`.
    public let weight: Parameter
    /// The bias [out], named `<name>.bias`; nil for a layer made with `bias: false`.
    public let bias: Parameter?

    /// A transposed convolution with zero parameters.
    /// - Parameters:
    ///   - name: The module prefix of the state-dict keys.
    ///   - geometry: Channels, kernel, stride, padding and dilation (as of the forward convolution it transposes).
    ///   - outputPadding: Rows and columns added to the output size, (h, w).
    ///   - bias: Whether the layer has a bias.
    public init(_ name: String, _ geometry: ConvGeometry, outputPadding: (Int, Int) = (0, 0), bias: Bool) {
        self.geometry = geometry
        self.outputPadding = outputPadding
        weight = Parameter(joinName(name, "weight"), shape: [geometry.inChannels, geometry.outChannels, geometry.kernelH, geometry.kernelW])
        self.bias = bias ? Parameter(joinName(name, "bias"), shape: [geometry.outChannels]) : nil
    }

    /// `weight`, then `bias` when there is one.
    public var parameters: [Parameter] { [weight] + (bias.map { [$0] } ?? []) }
    /// The parameters as float entries (the layer has no buffers).
    public var stateEntries: [StateEntry] { parameters.map { StateEntry($0.name, .float($0.value)) } }

    /// `relu`: the output passed through a ReLU in the same pass.
    public func callAsFunction(_ x: Tensor, workspace: Workspace, relu: Bool = false) throws -> Tensor {
        try x.expectRank(4, "conv_transpose2d", "input")
        let (oh, ow) = geometry.transposedOutputSize(h: x.shape[2], w: x.shape[3], outputPadding: outputPadding)
        guard oh > 0, ow > 0 else { throw TensorError.invalidArgument(op: "conv_transpose2d", detail: "input \(shapeString(x.shape)) gives an empty output") }
        let out = Tensor(uninitializedShape: [x.shape[0], geometry.outChannels, oh, ow])
        try convTranspose2dForward(out: out, input: x, weight: weight.value, bias: bias?.value, geometry: geometry,
                                   outputPadding: outputPadding, workspace: workspace, relu: relu)
        return out
    }

    /// Accumulates the parameter gradients and returns dx; `parameterGradients: false` treats the layer as frozen.
    public func backward(_ dy: Tensor, input x: Tensor, workspace: Workspace, inputGradient: Bool = true,
                         parameterGradients: Bool = true) throws -> Tensor? {
        let dx = inputGradient ? Tensor(shape: x.shape) : nil
        try convTranspose2dBackward(dInput: dx, dWeight: parameterGradients ? weight.grad : nil, dBias: parameterGradients ? bias?.grad : nil,
                                    dOut: dy, input: x, weight: weight.value, geometry: geometry, outputPadding: outputPadding, workspace: workspace)
        if parameterGradients { weight.hasGradient = true; bias?.hasGradient = true }
        return dx
    }
}

/// A fully connected layer with named `weight` [out, in] and optional `bias` [out].
public final class Linear: Module {
    /// The input and output widths.
    public let inFeatures: Int, outFeatures: Int
    /// The matrix [out, in], named `<name>.weight`.
    public let weight: Parameter
    /// The bias [out], named `<name>.bias`; nil for a layer made with `bias: false`.
    public let bias: Parameter?

    /// A fully connected layer with zero parameters.
    /// - Parameters:
    ///   - name: The module prefix of the state-dict keys.
    ///   - inFeatures: The input width.
    ///   - outFeatures: The output width.
    ///   - bias: Whether the layer has a bias (default true).
    public init(_ name: String, _ inFeatures: Int, _ outFeatures: Int, bias: Bool = true) {
        self.inFeatures = inFeatures; self.outFeatures = outFeatures
        weight = Parameter(joinName(name, "weight"), shape: [outFeatures, inFeatures])
        self.bias = bias ? Parameter(joinName(name, "bias"), shape: [outFeatures]) : nil
    }

    /// `weight`, then `bias` when there is one.
    public var parameters: [Parameter] { [weight] + (bias.map { [$0] } ?? []) }
    /// The parameters as float entries (the layer has no buffers).
    public var stateEntries: [StateEntry] { parameters.map { StateEntry($0.name, .float($0.value)) } }

    /// out [n, out] = x [n, in] · Wᵀ + b. A 4-D input [n, c, h, w] is flattened to [n, c·h·w].
    public func callAsFunction(_ x: Tensor) throws -> Tensor {
        let flat = x.shape.count == 2 ? x : try x.reshaped([x.shape.first ?? 0, x.count / max(x.shape.first ?? 1, 1)])
        let out = Tensor(uninitializedShape: [flat.shape[0], outFeatures])
        try linearForward(out: out, input: flat, weight: weight.value, bias: bias?.value)
        return out
    }

    /// Accumulates the parameter gradients; returns dx in the input's own shape.
    public func backward(_ dy: Tensor, input x: Tensor, inputGradient: Bool = true) throws -> Tensor? {
        let flat = x.shape.count == 2 ? x : try x.reshaped([x.shape.first ?? 0, x.count / max(x.shape.first ?? 1, 1)])
        let dx = inputGradient ? Tensor(shape: flat.shape) : nil
        try linearBackward(dInput: dx, dWeight: weight.grad, dBias: bias?.grad, dOut: dy, input: flat, weight: weight.value)
        weight.hasGradient = true; bias?.hasGradient = true
        return try dx?.reshaped(x.shape)
    }
}

/// BatchNorm2d with named `weight` (γ), `bias` (β), `running_mean`, `running_var`,
/// `num_batches_tracked`; momentum 0.1, eps 1e-5 as PyTorch's defaults.
public final class BatchNorm2d: Module {
    /// C, the channel count of the [N, C, H, W] input.
    public let channels: Int
    /// γ [C], named `<name>.weight`, initially 1.
    public let weight: Parameter
    /// β [C], named `<name>.bias`, initially 0.
    public let bias: Parameter
    /// The running mean [C] (`running_mean`, initially 0): updated in training mode, used in eval mode.
    public let runningMean: Tensor
    /// The running unbiased variance [C] (`running_var`, initially 1): updated in training mode, used
    /// in eval mode.
    public let runningVar: Tensor
    /// Training-mode forward passes so far (`num_batches_tracked`); saved and loaded, not used in the
    /// arithmetic (the momentum is fixed).
    public let numBatchesTracked = CounterBuffer()
    /// The weight of the new batch statistic in the running-statistics update.
    public var momentum: Float = 0.1
    /// Added to the variance before the square root.
    public var eps: Float = 1e-5
    /// The module prefix of the state-dict keys.
    public let name: String

    /// A BatchNorm with γ = 1, β = 0, running mean 0 and running variance 1.
    /// - Parameters:
    ///   - name: The module prefix of the state-dict keys.
    ///   - channels: C.
    public init(_ name: String, _ channels: Int) {
        self.name = name
        self.channels = channels
        weight = Parameter(joinName(name, "weight"), Tensor(shape: [channels], repeating: 1))
        bias = Parameter(joinName(name, "bias"), shape: [channels])
        runningMean = Tensor(shape: [channels])
        runningVar = Tensor(shape: [channels], repeating: 1)
    }

    /// γ and β (the running statistics are buffers, not parameters).
    public var parameters: [Parameter] { [weight, bias] }
    /// `weight`, `bias`, `running_mean`, `running_var`, `num_batches_tracked`, in PyTorch's order.
    public var stateEntries: [StateEntry] {
        [StateEntry(weight.name, .float(weight.value)), StateEntry(bias.name, .float(bias.value)),
         StateEntry(joinName(name, "running_mean"), .float(runningMean)), StateEntry(joinName(name, "running_var"), .float(runningVar)),
         StateEntry(joinName(name, "num_batches_tracked"), .int64(numBatchesTracked))]
    }

    /// Normalises x with the batch statistics (training; updates the running ones) or the running
    /// statistics (eval); with `relu`, the ReLU that follows in the same pass (backward then takes
    /// the ReLU's gradient from this output first, as after a separate ReLU). Returns the output and
    /// what backward needs.
    /// `channelsFirst`: x is [C, N, H, W] (backward then reads the layout from the saved statistics).
    public func callAsFunction(_ x: Tensor, training: Bool, inPlace: Bool = false, relu: Bool = false,
                               channelsFirst: Bool = false) throws -> (Tensor, BatchNormSaved) {
        let out = inPlace ? x : Tensor(uninitializedShape: x.shape)
        let saved = try batchNorm2dForward(out: out, input: x, gamma: weight.value, beta: bias.value, runningMean: runningMean,
                                           runningVar: runningVar, training: training, momentum: momentum, eps: eps, relu: relu,
                                           channelsFirst: channelsFirst)
        if training { numBatchesTracked.value += 1 }
        return (out, saved)
    }

    /// Accumulates dγ and dβ and returns dx, for the statistics the forward used (batch or running).
    /// - Parameters:
    ///   - dy: The gradient of the output, shaped as `x`.
    ///   - x: The forward's input (so that input must not have been normalised in place).
    ///   - saved: What the forward returned with its output.
    ///   - inputGradient: Whether to compute dx.
    ///   - reluOutput: The output of a forward with `relu: true`: dy is then the gradient of the ReLU's
    ///     output, passed where that was positive (as `reluGradient` first, in the same pass).
    /// - Returns: dx in the shape of `x`, or nil when `inputGradient` is false.
    /// - Throws: `TensorError` for mismatched shapes.
    public func backward(_ dy: Tensor, input x: Tensor, saved: BatchNormSaved, inputGradient: Bool = true,
                         reluOutput: Tensor? = nil) throws -> Tensor? {
        let dx = inputGradient ? Tensor(shape: x.shape) : nil
        try batchNorm2dBackward(dInput: dx, dGamma: weight.grad, dBeta: bias.grad, dOut: dy, input: x, gamma: weight.value, saved: saved,
                                reluOutput: reluOutput)
        weight.hasGradient = true; bias.hasGradient = true
        return dx
    }
}

/// Max pooling (PyTorch's MaxPool2d with floor mode); returns the argmax indices for backward.
public struct MaxPool2d {
    /// The square window's side, its step, and the padding on each side (padded cells never win), in pixels.
    public var kernel: Int, stride: Int, padding: Int
    /// A `kernel`×`kernel` window moved by `stride`, with `padding` on each side.
    public init(kernel: Int, stride: Int, padding: Int) { self.kernel = kernel; self.stride = stride; self.padding = padding }

    /// The pooled tensor and, when `indices` (for backward), each output's argmax in its plane.
    public func callAsFunction(_ x: Tensor, indices: Bool = true) throws -> (Tensor, [Int32]) {
        try x.expectRank(4, "max_pool2d", "input")
        let oh = (x.shape[2] + 2 * padding - kernel) / stride + 1, ow = (x.shape[3] + 2 * padding - kernel) / stride + 1
        guard oh > 0, ow > 0 else { throw TensorError.invalidArgument(op: "max_pool2d", detail: "input \(shapeString(x.shape)) too small") }
        let out = Tensor(uninitializedShape: [x.shape[0], x.shape[1], oh, ow])
        if !indices {
            try maxPool2dForward(out: out, input: x, kernel: kernel, stride: stride, padding: padding)
            return (out, [])
        }
        var idx = [Int32](repeating: 0, count: out.count)
        try idx.withUnsafeMutableBufferPointer {
            try maxPool2dForward(out: out, indices: $0.baseAddress!, input: x, kernel: kernel, stride: stride, padding: padding)
        }
        return (out, idx)
    }

    /// Routes each output gradient to the input position its window took the maximum from.
    /// - Parameters:
    ///   - dy: The gradient of the output [N, C, oh, ow].
    ///   - inputShape: The forward's input shape [N, C, H, W].
    ///   - indices: The argmax indices the forward returned.
    /// - Returns: dx [N, C, H, W]: zero except at argmax positions, where overlapping windows add up.
    /// - Throws: `TensorError.shapeMismatch` when `indices` and `dy` differ in count or the shapes disagree.
    public func backward(_ dy: Tensor, inputShape: [Int], indices: [Int32]) throws -> Tensor {
        let dx = Tensor(shape: inputShape)
        guard indices.count == dy.count else { throw TensorError.shapeMismatch(op: "max_pool2d backward", detail: "\(indices.count) indices for dOut \(shapeString(dy.shape))") }
        try indices.withUnsafeBufferPointer { try maxPool2dBackward(dInput: dx, dOut: dy, indices: $0.baseAddress!) }
        return dx
    }
}

/// y = max(x, 0) as a new tensor.
public func relu(_ x: Tensor) -> Tensor {
    let y = Tensor(shape: x.shape)
    try! reluForward(out: y, input: x)
    return y
}

/// In-place ReLU.
public func reluInPlace(_ x: Tensor) {
    try! reluForward(out: x, input: x)
}

/// dx = dy where y > 0 (a new tensor).
public func reluGradient(_ dy: Tensor, output y: Tensor) throws -> Tensor {
    let dx = Tensor(uninitializedShape: y.shape)
    try reluBackward(dInput: dx, dOut: dy, output: y, accumulate: false)
    return dx
}
