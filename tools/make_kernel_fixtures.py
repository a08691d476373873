#!/usr/bin/env python3
"""PyTorch goldens for the engine's kernels (dev time only; CI reads the committed output).

Writes Tests/Fixtures/kernels.safetensors: for every case the inputs, a fixed random upstream
gradient `dout`, the forward output and every gradient, computed by torch on the CPU in float32
(float64 where noted), and a JSON description of the cases in the header's metadata ("cases").

    python3 -m venv /work/venv-torch && /work/venv-torch/bin/pip install torch==2.13.0 safetensors
    /work/venv-torch/bin/python tools/make_kernel_fixtures.py

The Swift tests (Tests/TensorTests/TorchParityTests.swift, Tests/NNTests/AdamParityTests.swift)
name this script as the source of their expected values.
"""
import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(20261127)
torch.set_num_threads(1)
T = {}
cases = []


def put(prefix, **tensors):
    for k, v in tensors.items():
        T[f"{prefix}.{k}"] = v.detach().clone().contiguous().to(torch.float32)


def rnd(*shape, scale=1.0):
    return (torch.randn(*shape) * scale).requires_grad_(True)


# conv2d: (cin, cout, k, stride, pad, dilation, bias, input shape)
conv_cases = [
    (3, 4, 3, 1, 1, 1, True, (1, 3, 9, 7)),
    (3, 5, 7, 2, 3, 1, False, (2, 3, 11, 10)),
    (4, 6, 1, 2, 0, 1, False, (1, 4, 9, 9)),
    (4, 3, 3, 2, 2, 2, True, (1, 4, 13, 11)),
    (2, 3, 2, 2, 0, 1, True, (2, 2, 8, 8)),
    (3, 4, 1, 1, 0, 1, True, (1, 3, 5, 6)),
    (2, 2, 7, 1, 0, 1, True, (3, 2, 7, 7)),
]
for i, (cin, cout, k, s, p, d, bias, shape) in enumerate(conv_cases):
    name = f"conv2d.{i}"
    x = rnd(*shape)
    w = rnd(cout, cin, k, k, scale=0.3)
    b = rnd(cout, scale=0.1) if bias else None
    y = F.conv2d(x, w, b, stride=s, padding=p, dilation=d)
    dout = torch.randn_like(y)
    y.backward(dout)
    put(name, input=x, weight=w, out=y, dout=dout, dinput=x.grad, dweight=w.grad)
    if bias:
        put(name, bias=b, dbias=b.grad)
    cases.append(dict(op="conv2d", name=name, cin=cin, cout=cout, k=k, stride=s, pad=p, dilation=d, bias=bias))

# conv_transpose2d: (cin, cout, k, stride, pad, output_padding, dilation, bias, input shape)
convt_cases = [
    (4, 3, 2, 2, 0, 0, 1, True, (2, 4, 5, 6)),
    (3, 2, 3, 2, 1, 1, 1, True, (1, 3, 4, 5)),
    (3, 4, 3, 1, 1, 0, 1, False, (1, 3, 6, 5)),
    (2, 3, 3, 2, 0, 0, 2, True, (1, 2, 4, 4)),
]
for i, (cin, cout, k, s, p, op, d, bias, shape) in enumerate(convt_cases):
    name = f"convt.{i}"
    x = rnd(*shape)
    w = rnd(cin, cout, k, k, scale=0.3)
    b = rnd(cout, scale=0.1) if bias else None
    y = F.conv_transpose2d(x, w, b, stride=s, padding=p, output_padding=op, dilation=d)
    dout = torch.randn_like(y)
    y.backward(dout)
    put(name, input=x, weight=w, out=y, dout=dout, dinput=x.grad, dweight=w.grad)
    if bias:
        put(name, bias=b, dbias=b.grad)
    cases.append(dict(op="conv_transpose2d", name=name, cin=cin, cout=cout, k=k, stride=s, pad=p, output_padding=op,
                      dilation=d, bias=bias))

# batch_norm2d, training and eval
for i, (training, shape) in enumerate([(True, (2, 3, 5, 4)), (False, (2, 3, 5, 4)), (True, (8, 4, 1, 1))]):
    name = f"bn.{i}"
    c = shape[1]
    x = (torch.randn(*shape) * 2 + 0.5).requires_grad_(True)
    g = (1 + 0.2 * torch.randn(c)).requires_grad_(True)
    b = (0.1 * torch.randn(c)).requires_grad_(True)
    rm = 0.1 * torch.randn(c)
    rv = 1 + 0.5 * torch.rand(c)
    rm0, rv0 = rm.clone(), rv.clone()
    y = F.batch_norm(x, rm, rv, g, b, training=training, momentum=0.1, eps=1e-5)
    dout = torch.randn_like(y)
    y.backward(dout)
    put(name, input=x, weight=g, bias=b, running_mean=rm0, running_var=rv0, out=y, dout=dout,
        dinput=x.grad, dweight=g.grad, dbias=b.grad, new_running_mean=rm, new_running_var=rv)
    cases.append(dict(op="batch_norm2d", name=name, training=training))

# max_pool2d
for i, (k, s, p, shape) in enumerate([(3, 2, 1, (2, 3, 9, 8)), (3, 2, 1, (1, 2, 8, 8)), (2, 2, 0, (1, 2, 6, 7))]):
    name = f"maxpool.{i}"
    x = rnd(*shape)
    y = F.max_pool2d(x, k, s, p)
    dout = torch.randn_like(y)
    y.backward(dout)
    put(name, input=x, out=y, dout=dout, dinput=x.grad)
    cases.append(dict(op="max_pool2d", name=name, k=k, stride=s, pad=p))

# bilinear resize, align_corners=False
for i, (shape, size) in enumerate([((1, 2, 5, 7), (9, 4)), ((1, 2, 5, 7), (10, 14)), ((1, 1, 30, 30), (37, 23)),
                                   ((2, 1, 28, 28), (28, 28))]):
    name = f"bilinear.{i}"
    x = rnd(*shape)
    y = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    dout = torch.randn_like(y)
    y.backward(dout)
    put(name, input=x, out=y, dout=dout, dinput=x.grad)
    cases.append(dict(op="bilinear", name=name, out_h=size[0], out_w=size[1]))

# linear
x = rnd(5, 7); w = rnd(3, 7, scale=0.3); b = rnd(3, scale=0.1)
y = F.linear(x, w, b); dout = torch.randn_like(y); y.backward(dout)
put("linear.0", input=x, weight=w, bias=b, out=y, dout=dout, dinput=x.grad, dweight=w.grad, dbias=b.grad)
cases.append(dict(op="linear", name="linear.0"))

# sigmoid, softmax, relu
for op, fn in [("sigmoid", torch.sigmoid), ("softmax", lambda t: torch.softmax(t, dim=-1)), ("relu", torch.relu)]:
    x = rnd(4, 6, scale=3.0)
    y = fn(x); dout = torch.randn_like(y); y.backward(dout)
    put(f"{op}.0", input=x, out=y, dout=dout, dinput=x.grad)
    cases.append(dict(op=op, name=f"{op}.0"))

# losses (value and gradient of the scalar loss)
x = rnd(5, 3, scale=3.0); t = torch.randint(0, 2, (5, 3)).float()
l = F.binary_cross_entropy_with_logits(x, t, reduction="mean"); l.backward()
put("bce.0", input=x, target=t, loss=l.reshape(1), dinput=x.grad)
cases.append(dict(op="bce_with_logits", name="bce.0"))

x = rnd(6, 4, scale=2.0); t = torch.tensor([0, 3, 1, 1, 2, 0])
l = F.cross_entropy(x, t, reduction="mean"); l.backward()
put("ce.0", input=x, target=t.float(), loss=l.reshape(1), dinput=x.grad)
cases.append(dict(op="cross_entropy", name="ce.0"))

x = rnd(7, 4, scale=1.5); t = torch.randn(7, 4)
l = F.smooth_l1_loss(x, t, beta=1.0, reduction="sum"); l.backward()
put("smoothl1.0", input=x, target=t, loss=l.reshape(1), dinput=x.grad)
cases.append(dict(op="smooth_l1", name="smoothl1.0"))

x = rnd(7, 4, scale=1.5); t = torch.randn(7, 4)
l = F.l1_loss(x, t, reduction="sum"); l.backward()
put("l1.0", input=x, target=t, loss=l.reshape(1), dinput=x.grad)
cases.append(dict(op="l1", name="l1.0"))

# Adam (torch.optim.Adam, L2 weight decay), three steps with fixed gradients; the second
# parameter gets no gradient in step 2 and must be left alone.
p1 = torch.randn(4, 3).requires_grad_(True)
p2 = torch.randn(5).requires_grad_(True)
put("adam", p1_init=p1, p2_init=p2)
opt = torch.optim.Adam([p1, p2], lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)
for step in range(3):
    g1 = torch.randn(4, 3); g2 = torch.randn(5)
    opt.zero_grad(set_to_none=True)
    p1.grad = g1.clone()
    if step != 1:
        p2.grad = g2.clone()
    opt.step()
    put("adam", **{f"g1_{step}": g1, f"g2_{step}": g2, f"p1_{step}": p1, f"p2_{step}": p2})
cases.append(dict(op="adam", name="adam", lr=1e-2, weight_decay=1e-2, p2_without_grad_in_step=1))

out = os.path.join(os.path.dirname(__file__), "..", "Tests", "Fixtures", "kernels.safetensors")
os.makedirs(os.path.dirname(out), exist_ok=True)
save_file(T, out, metadata={"cases": json.dumps(cases), "torch": torch.__version__,
                            "generator": "tools/make_kernel_fixtures.py"})
print("wrote", out, len(T), "tensors,", len(cases), "cases")
