import NN
import Tensor

/// ResNet's BasicBlock: conv3×3(s) → BN → ReLU → conv3×3 → BN → + identity (or downsample) → ReLU.
public final class BasicBlock: Module {
    /// The main path: `conv1` (3×3, the block's stride) → `bn1` → ReLU → `conv2` (3×3) → `bn2`; no conv biases.
    public let conv1: Conv2d, bn1: BatchNorm2d, conv2: Conv2d, bn2: BatchNorm2d
    /// The identity path's 1×1 strided conv and BatchNorm (`downsample.0`, `downsample.1`); present
    /// when the stride is not 1 or the channel count changes, nil otherwise.
    public let downsample: (conv: Conv2d, bn: BatchNorm2d)?

    /// What backward needs from one forward.
    public struct Saved {
        var x: Tensor, c1: Tensor, s1: BatchNormSaved, r1: Tensor, c2: Tensor, s2: BatchNormSaved, out: Tensor
        var dsConv: Tensor?, dsSaved: BatchNormSaved?
    }

    /// A block with torchvision's keys under `name` (e.g. `backbone.body.layer2.0`); its weights are
    /// zero (BatchNorm γ = 1) until initialised or loaded.
    /// - Parameters:
    ///   - name: The module prefix.
    ///   - inChannels: Input channels.
    ///   - channels: Output channels.
    ///   - stride: The stride of `conv1` and of the downsample conv (2 halves H and W).
    public init(_ name: String, inChannels: Int, channels: Int, stride: Int) {
        conv1 = Conv2d(joinName(name, "conv1"), ConvGeometry(inChannels, channels, kernel: 3, stride: stride, padding: 1), bias: false)
        bn1 = BatchNorm2d(joinName(name, "bn1"), channels)
        conv2 = Conv2d(joinName(name, "conv2"), ConvGeometry(channels, channels, kernel: 3, padding: 1), bias: false)
        bn2 = BatchNorm2d(joinName(name, "bn2"), channels)
        if stride != 1 || inChannels != channels {
            downsample = (Conv2d(joinName(name, "downsample.0"), ConvGeometry(inChannels, channels, kernel: 1, stride: stride), bias: false),
                          BatchNorm2d(joinName(name, "downsample.1"), channels))
        } else {
            downsample = nil
        }
    }

    /// `conv1`, `bn1`, `conv2`, `bn2`, then the downsample conv and BatchNorm, in state-dict order.
    public var parameters: [Parameter] {
        conv1.parameters + bn1.parameters + conv2.parameters + bn2.parameters + (downsample.map { $0.conv.parameters + $0.bn.parameters } ?? [])
    }
    /// Every state entry (parameters and BatchNorm buffers) in state-dict order.
    public var stateEntries: [StateEntry] {
        conv1.stateEntries + bn1.stateEntries + conv2.stateEntries + bn2.stateEntries
            + (downsample.map { $0.conv.stateEntries + $0.bn.stateEntries } ?? [])
    }

    /// `keep: false` (inference) normalises in place: the pre-BN activations are not kept.
    public func forward(_ x: Tensor, training: Bool, workspace ws: Workspace, keep: Bool = true) throws -> (Tensor, Saved) {
        let c1 = try conv1(x, workspace: ws)
        let (r1, s1) = try bn1(c1, training: training, inPlace: !keep, relu: true)
        let c2 = try conv2(r1, workspace: ws)
        let (out, s2) = try bn2(c2, training: training, inPlace: !keep)
        var dsConv: Tensor? = nil, dsSaved: BatchNormSaved? = nil
        if let ds = downsample {
            let d = try ds.conv(x, workspace: ws)
            let (id, s) = try ds.bn(d, training: training, inPlace: !keep)
            try addForward(out: out, out, id)
            dsConv = d; dsSaved = s
        } else {
            try addForward(out: out, out, x)
        }
        reluInPlace(out)
        return (out, Saved(x: x, c1: c1, s1: s1, r1: r1, c2: c2, s2: s2, out: out, dsConv: dsConv, dsSaved: dsSaved))
    }

    /// Accumulates parameter gradients and returns dL/dx.
    public func backward(_ dy: Tensor, saved s: Saved, workspace ws: Workspace) throws -> Tensor {
        let dsum = try reluGradient(dy, output: s.out)
        let dc2 = try bn2.backward(dsum, input: s.c2, saved: s.s2)!
        let dr1 = try conv2.backward(dc2, input: s.r1, workspace: ws)!
        let dc1 = try bn1.backward(dr1, input: s.c1, saved: s.s1, reluOutput: s.r1)!
        let dx = try conv1.backward(dc1, input: s.x, workspace: ws)!
        if let ds = downsample, let dConv = s.dsConv, let dSaved = s.dsSaved {
            let dd = try ds.bn.backward(dsum, input: dConv, saved: dSaved)!
            let dxd = try ds.conv.backward(dd, input: s.x, workspace: ws)!
            try addForward(out: dx, dx, dxd)
        } else {
            try addForward(out: dx, dx, dsum)
        }
        return dx
    }
}

/// ResNet18 cut after layer3 (`backbone.body`) + the single-level FPN (`backbone.fpn`):
/// a [1, 3, H, W] image gives a [1, 256, H/16, W/16] feature map (MODEL.md §3).
public final class Backbone: Module {
    /// The stem conv: 7×7, stride 2, padding 3, 3 → 64 channels, no bias (`backbone.body.conv1`).
    public let conv1: Conv2d
    /// The stem's BatchNorm (64 channels, `backbone.body.bn1`).
    public let bn1: BatchNorm2d
    /// The stem's 3×3 max pool, stride 2, padding 1.
    public let pool = MaxPool2d(kernel: 3, stride: 2, padding: 1)
    /// layer1, layer2, layer3: two `BasicBlock`s each, with 64, 128 and 256 channels; the first block of
    /// layer2 and of layer3 has stride 2.
    public let blocks: [BasicBlock]
    /// The FPN's lateral 1×1 conv, 256 → 256, with bias (`backbone.fpn.inner_blocks.0`).
    public let fpnInner: Conv2d
    /// The FPN's output 3×3 conv, 256 → 256, padding 1, with bias (`backbone.fpn.layer_blocks.0`).
    public let fpnLayer: Conv2d
    /// Channels of the feature map the backbone produces.
    public static let outChannels = 256

    /// What backward needs from one forward.
    public struct Saved {
        var x: Tensor, c1: Tensor, s1: BatchNormSaved, r1: Tensor, poolIndices: [Int32], blocks: [BasicBlock.Saved], c4: Tensor, inner: Tensor
    }

    /// The backbone with the original keys (`backbone.body.*`, `backbone.fpn.*`); its weights are zero
    /// (BatchNorm γ = 1) until `initialize(rng:)` or a checkpoint fills them.
    public init() {
        conv1 = Conv2d("backbone.body.conv1", ConvGeometry(3, 64, kernel: 7, stride: 2, padding: 3), bias: false)
        bn1 = BatchNorm2d("backbone.body.bn1", 64)
        var b: [BasicBlock] = []
        var cin = 64
        for (layer, (ch, stride)) in [(64, 1), (128, 2), (256, 2)].enumerated() {
            for i in 0..<2 {
                b.append(BasicBlock("backbone.body.layer\(layer + 1).\(i)", inChannels: cin, channels: ch, stride: i == 0 ? stride : 1))
                cin = ch
            }
        }
        blocks = b
        fpnInner = Conv2d("backbone.fpn.inner_blocks.0", ConvGeometry(256, 256, kernel: 1), bias: true)
        fpnLayer = Conv2d("backbone.fpn.layer_blocks.0", ConvGeometry(256, 256, kernel: 3, padding: 1), bias: true)
    }

    /// The body (ResNet) modules only.
    public var bodyParameters: [Parameter] { conv1.parameters + bn1.parameters + blocks.flatMap(\.parameters) }
    /// The body's parameters, then the FPN's.
    public var parameters: [Parameter] { bodyParameters + fpnInner.parameters + fpnLayer.parameters }
    /// Every state entry (stem, blocks, FPN) in state-dict order.
    public var stateEntries: [StateEntry] {
        conv1.stateEntries + bn1.stateEntries + blocks.flatMap(\.stateEntries) + fpnInner.stateEntries + fpnLayer.stateEntries
    }

    /// Initialisation of MODEL.md §13: Kaiming normal (fan_out) convs, BN γ = 1, β = 0, FPN Kaiming
    /// uniform (a = 1) with zero bias.
    public func initialize(rng: inout SeededGenerator) {
        for p in bodyParameters where p.name.hasSuffix(".weight") && p.shape.count == 4 { Init.kaimingNormalFanOut(p.value, rng: &rng) }
        for c in [fpnInner, fpnLayer] {
            Init.uniform(c.weight.value, bound: (3 / Float(Init.fanIn(c.weight.shape))).squareRoot(), rng: &rng)
            c.bias?.value.zero()
        }
    }

    /// Features [1, 256, H/16, W/16] and, if `keep`, what backward needs. `training` selects the BN mode.
    public func forward(_ x: Tensor, training: Bool, workspace ws: Workspace, keep: Bool = true) throws -> (Tensor, Saved?) {
        try x.expectRank(4, "backbone", "image")
        guard x.shape[1] == 3 else { throw TensorError.shapeMismatch(op: "backbone", detail: "image is \(shapeString(x.shape)), expected 3 channels") }
        let c1 = try conv1(x, workspace: ws)
        let (r1, s1) = try bn1(c1, training: training, inPlace: !keep, relu: true)
        var (h, idx) = try pool(r1, indices: keep)
        var saves: [BasicBlock.Saved] = []
        for b in blocks {
            let (o, s) = try b.forward(h, training: training, workspace: ws, keep: keep)
            if keep { saves.append(s) }
            h = o
        }
        let inner = try fpnInner(h, workspace: ws)
        let p = try fpnLayer(inner, workspace: ws)
        if !keep { idx = [] }
        return (p, keep ? Saved(x: x, c1: c1, s1: s1, r1: r1, poolIndices: idx, blocks: saves, c4: h, inner: inner) : nil)
    }

    /// The layer3 output of a forward (for parity checks).
    public func layer3Output(_ saved: Saved) -> Tensor { saved.c4 }

    /// Accumulates parameter gradients from dL/dP (the FPN output's gradient). The image gets no gradient.
    public func backward(_ dP: Tensor, saved s: Saved, workspace ws: Workspace) throws {
        let dInner = try fpnLayer.backward(dP, input: s.inner, workspace: ws)!
        var dh = try fpnInner.backward(dInner, input: s.c4, workspace: ws)!
        for (b, bs) in zip(blocks, s.blocks).reversed() {
            dh = try b.backward(dh, saved: bs, workspace: ws)
        }
        let dr1 = try pool.backward(dh, inputShape: s.r1.shape, indices: s.poolIndices)
        let dc1 = try bn1.backward(dr1, input: s.c1, saved: s.s1, reluOutput: s.r1)!
        _ = try conv1.backward(dc1, input: s.x, workspace: ws, inputGradient: false)
    }
}
