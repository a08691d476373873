import ArgumentParser
import Foundation
import Tensor

/// `affinity-lab bench kernels`: forward and backward GFLOP/s of the model's convolution shapes at a
/// 512×512 input, each beside the raw `cblas_sgemm` GFLOP/s of a GEMM of the same size measured in
/// the same run.
struct BenchKernels: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "kernels", abstract: "Convolution GFLOP/s beside same-sized sgemm.")

    @OptionGroup var options: BenchOptions

    struct Case {
        var name: String
        var g: ConvGeometry
        var n: Int, h: Int, w: Int
        var transposed: Bool
    }

    static let cases: [Case] = [
        Case(name: "conv1 7x7/2 3->64 @512", g: ConvGeometry(3, 64, kernel: 7, stride: 2, padding: 3), n: 1, h: 512, w: 512, transposed: false),
        Case(name: "3x3 64->64 @128", g: ConvGeometry(64, 64, kernel: 3, padding: 1), n: 1, h: 128, w: 128, transposed: false),
        Case(name: "3x3 128->128 @64", g: ConvGeometry(128, 128, kernel: 3, padding: 1), n: 1, h: 64, w: 64, transposed: false),
        Case(name: "3x3 256->256 @32", g: ConvGeometry(256, 256, kernel: 3, padding: 1), n: 1, h: 32, w: 32, transposed: false),
        Case(name: "3x3 256->256 8x28x28", g: ConvGeometry(256, 256, kernel: 3, padding: 1), n: 8, h: 28, w: 28, transposed: false),
        Case(name: "convT 2x2/2 256->256 100x14x14", g: ConvGeometry(256, 256, kernel: 2, stride: 2), n: 100, h: 14, w: 14, transposed: true),
    ]

    func run() throws {
        if let t = options.threads { Engine.threads = t }
        var rows: [[String: Any]] = []
        let ws = Workspace()
        for c in Self.cases {
            let g = c.g
            let x = Tensor(shape: [c.n, g.inChannels, c.h, c.w])
            var rng = SeededGenerator(seed: 1)
            Init.normal(x, std: 1, rng: &rng)
            let out: Tensor, w: Tensor
            // The GEMM each image needs: M × N × K.
            let m: Int, nn: Int, k: Int
            if c.transposed {
                let (oh, ow) = g.transposedOutputSize(h: c.h, w: c.w)
                w = Tensor(shape: [g.inChannels, g.outChannels, g.kernelH, g.kernelW])
                out = Tensor(shape: [c.n, g.outChannels, oh, ow])
                m = g.outChannels * g.kernelH * g.kernelW; nn = c.h * c.w; k = g.inChannels
            } else {
                let (oh, ow) = g.outputSize(h: c.h, w: c.w)
                w = Tensor(shape: [g.outChannels, g.inChannels, g.kernelH, g.kernelW])
                out = Tensor(shape: [c.n, g.outChannels, oh, ow])
                m = g.outChannels; nn = oh * ow; k = g.patchSize
            }
            Init.normal(w, std: 0.05, rng: &rng)
            let dOut = out.clone()
            Init.normal(dOut, std: 1, rng: &rng)
            let dx = Tensor(shape: x.shape), dw = Tensor(shape: w.shape)
            let flops = 2.0 * Double(c.n) * Double(m) * Double(nn) * Double(k)
            let fwd = try medianSeconds(repeats: options.repeats) {
                if c.transposed {
                    try convTranspose2dForward(out: out, input: x, weight: w, bias: nil, geometry: g, workspace: ws)
                } else {
                    try conv2dForward(out: out, input: x, weight: w, bias: nil, geometry: g, workspace: ws)
                }
            }
            let bwd = try medianSeconds(repeats: options.repeats) {
                if c.transposed {
                    try convTranspose2dBackward(dInput: dx, dWeight: dw, dBias: nil, dOut: dOut, input: x, weight: w, geometry: g, workspace: ws)
                } else {
                    try conv2dBackward(dInput: dx, dWeight: dw, dBias: nil, dOut: dOut, input: x, weight: w, geometry: g, workspace: ws)
                }
            }
            // The same-sized raw GEMM (per image, repeated n times), in the same run.
            let a = Tensor(shape: [m, k]), b = Tensor(shape: [k, nn]), cc = Tensor(shape: [m, nn])
            Init.normal(a, std: 1, rng: &rng); Init.normal(b, std: 1, rng: &rng)
            let gemm = medianSeconds(repeats: options.repeats) {
                for _ in 0..<c.n { sgemm(m: m, n: nn, k: k, a: a.data, lda: k, b: b.data, ldb: nn, c: cc.data, ldc: nn) }
            }
            let gf = flops / 1e9
            rows.append([
                "name": c.name, "gflop_forward": gf,
                "forward_s": fwd, "backward_s": bwd, "sgemm_s": gemm,
                "forward_gflops": gf / fwd, "backward_gflops": 2 * gf / bwd, "sgemm_gflops": gf / gemm,
                "forward_vs_sgemm": (gf / fwd) / (gf / gemm), "backward_vs_sgemm": (2 * gf / bwd) / (gf / gemm),
            ])
        }
        if options.json {
            printJSON(["threads": Engine.threads, "repeats": options.repeats, "kernels": rows])
        } else {
            print("threads \(Engine.threads), median of \(options.repeats)")
            print(String(repeating: " ", count: 1) + pad("shape", 32) + pad("fwd GF/s", 10) + pad("bwd GF/s", 10) + pad("sgemm GF/s", 11) + pad("fwd/sgemm", 10) + "bwd/sgemm")
            for r in rows {
                print(" " + pad(r["name"] as! String, 32) + pad(f(r["forward_gflops"]), 10) + pad(f(r["backward_gflops"]), 10)
                      + pad(f(r["sgemm_gflops"]), 11) + pad(f(r["forward_vs_sgemm"], 2), 10) + f(r["backward_vs_sgemm"], 2))
            }
        }
    }

    private func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }
    private func f(_ v: Any?, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", (v as? Double) ?? 0) }
}
