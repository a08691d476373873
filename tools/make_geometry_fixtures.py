#!/usr/bin/env python3
"""torchvision goldens for the Detection geometry (dev time only; CI reads the committed output).

Writes Tests/Fixtures/geometry/geometry.safetensors: inputs and torchvision's outputs for
roi_align (forward and backward), nms / batched_nms, box_iou, the Matcher, the BoxCoder, the anchor
generator, the Mask R-CNN mask targets (project_masks_on_boxes) and paste_masks_in_image, computed on
the CPU in float32; the header's metadata holds a JSON list of the cases ("cases").

    python3 -m venv /work/venv-tv && /work/venv-tv/bin/pip install torch==2.14.1 torchvision==0.29.1 safetensors
    /work/venv-tv/bin/python tools/make_geometry_fixtures.py

Read by Tests/DetectionTests/GeometryFixtureTests.swift.
"""
import json
import math
import os

import torch
import torchvision
from safetensors.torch import save_file
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import paste_masks_in_image, project_masks_on_boxes
from torchvision.ops import batched_nms, box_iou, nms, roi_align

torch.manual_seed(20261127)
torch.set_num_threads(1)
T = {}
cases = []


def put(prefix, **tensors):
    for k, v in tensors.items():
        v = v.detach().clone().contiguous()
        T[f"{prefix}.{k}"] = v.to(torch.int64) if not v.is_floating_point() else v.to(torch.float32)


def random_boxes(n, w, h, min_size=0.5, max_size=None):
    max_size = max_size or max(w, h) / 2
    x1 = torch.rand(n) * w
    y1 = torch.rand(n) * h
    bw = min_size + torch.rand(n) * (max_size - min_size)
    bh = min_size + torch.rand(n) * (max_size - min_size)
    return torch.stack([x1, y1, x1 + bw, y1 + bh], 1)


# ---------------------------------------------------------------- roi_align forward and backward
# (C, H, W, output size, spatial scale, sampling ratio (-1 = adaptive), boxes in image coordinates)
def edge_boxes(W, H, s):
    """Boxes (image coordinates, map = image * s) that hit every branch of the sampling rules."""
    iw, ih = W / s, H / s
    return torch.tensor([
        [0.0, 0.0, iw, ih],                        # the whole map
        [-3.0 / s, -2.5 / s, 2.0 / s, 1.5 / s],    # starts below -1
        [-0.8 / s, -0.3 / s, 0.4 / s, 0.6 / s],    # within [-1, 0): clamped to 0, smaller than 1 (rw = 1)
        [(W - 1.2) / s, (H - 0.7) / s, (W + 1.5) / s, (H + 2.0) / s],  # across the bottom-right border
        [(W + 0.5) / s, 1.0 / s, (W + 3.0) / s, 2.0 / s],  # right of the map (beyond W)
        [1.3 / s, 1.1 / s, 1.35 / s, 1.12 / s],   # tiny: smaller than a bin
        [2.0 / s, 1.0 / s, 2.0 / s, 1.0 / s],     # degenerate (zero size)
        [0.25 / s, (H - 1.0) / s, (W - 0.25) / s, H / s],  # along the last row (y0 >= H-1)
        [3.0 / s, 2.0 / s, 1.0 / s, 0.5 / s],     # inverted
    ], dtype=torch.float32)


roi_cases = [
    (3, 6, 7, 3, 1.0, 2),
    (4, 9, 8, 7, 0.5, 2),
    (5, 7, 9, 5, 1.0 / 16, 2),
    (2, 8, 6, 4, 1.0, -1),
    (3, 10, 12, 14, 0.25, -1),
    (2, 5, 5, 2, 1.0, 3),
    (16, 12, 11, 7, 1.0 / 16, 2),
]
for i, (C, H, W, P, s, sr) in enumerate(roi_cases):
    name = f"roi_align.{i}"
    x = torch.randn(1, C, H, W, requires_grad=True)
    iw, ih = W / s, H / s
    b = torch.cat([edge_boxes(W, H, s), random_boxes(7, iw, ih, 0.3 / s, max(W, H) / s)], 0)
    y = roi_align(x, [b], (P, P), spatial_scale=s, sampling_ratio=sr, aligned=False)
    dout = torch.randn_like(y)
    y.backward(dout)
    put(name, features=x, boxes=b, out=y, dout=dout, dfeatures=x.grad)
    cases.append(dict(op="roi_align", name=name, output_size=P, spatial_scale=s, sampling_ratio=sr))

# ---------------------------------------------------------------- mask targets (project_masks_on_boxes)
H, W = 41, 53
gm = torch.zeros(3, H, W)
yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
gm[0] = (((yy - 20) ** 2 / 150 + (xx - 25) ** 2 / 300) < 1).float()
gm[1] = ((torch.rand(H, W) > 0.6) & (yy > 5) & (xx < 40)).float()
gm[2] = (((yy - 10) ** 2 + (xx - 45) ** 2) < 40).float()
mb = torch.tensor([
    [3.0, 4.0, 48.0, 37.0],
    [0.0, 0.0, 53.0, 41.0],
    [30.5, 2.25, 52.75, 19.5],
    [10.0, 10.0, 10.5, 10.2],     # smaller than a pixel
    [-5.0, -3.0, 20.0, 15.0],     # partly outside
    [2.0, 30.0, 170.0, 40.0],     # wider than 2·28 px: adaptive grid > 2
], dtype=torch.float32)
midx = torch.tensor([0, 1, 2, 1, 0, 1])
mt = project_masks_on_boxes(gm, mb, midx, 28)
put("mask_target", masks=gm, boxes=mb, index=midx, out=mt)
cases.append(dict(op="mask_target", name="mask_target", size=28))

# ---------------------------------------------------------------- paste_masks_in_image (padding 1)
IH, IW = 45, 61
pm = torch.rand(7, 1, 28, 28)
pb = torch.tensor([
    [5.3, 4.7, 30.2, 25.9],
    [-6.0, -4.5, 12.0, 10.0],     # partly outside, top-left
    [50.5, 38.2, 70.0, 52.0],     # partly outside, bottom-right
    [20.0, 20.0, 20.4, 20.3],     # tiny
    [0.0, 0.0, 61.0, 45.0],       # the whole image
    [33.9, 1.1, 34.0, 40.0],      # one column wide
    [10.0, 12.0, 10.0, 12.0],     # degenerate
], dtype=torch.float32)
pasted = paste_masks_in_image(pm, pb, (IH, IW), padding=1)
put("paste", probs=pm, boxes=pb, out=pasted)
cases.append(dict(op="paste", name="paste", height=IH, width=IW))

# ---------------------------------------------------------------- box_iou, nms, batched_nms
for i, (n, thr, ties) in enumerate([(40, 0.5, True), (60, 0.75, True), (50, 0.3, False), (30, 0.0, True)]):
    name = f"nms.{i}"
    b = random_boxes(n, 60, 50, 1.0, 25.0)
    # exact duplicates and shifted copies, for IoU ties
    b[5] = b[3]
    b[7] = b[3] + torch.tensor([1.0, 0.0, 1.0, 0.0])
    b[9] = torch.tensor([0.0, 0.0, 3.0, 1.0])
    b[10] = torch.tensor([1.0, 0.0, 4.0, 1.0])  # IoU with b[9] exactly 0.5
    sc = torch.rand(n)
    if ties:
        sc = (sc * 6).floor() / 6  # many equal scores
        sc[9] = sc[10] = 0.9
    labels = torch.randint(0, 3, (n,))
    keep = nms(b, sc, thr)
    bkeep = batched_nms(b, sc, labels, thr)
    iou = box_iou(b[: n // 2], b[n // 2:])
    put(name, boxes=b, scores=sc, labels=labels, keep=keep, batched_keep=bkeep, iou=iou)
    cases.append(dict(op="nms", name=name, threshold=thr, ties=ties))

# ---------------------------------------------------------------- Matcher
for i, (high, low, lq) in enumerate([(0.7, 0.3, True), (0.75, 0.5, False), (0.7, 0.3, False)]):
    name = f"matcher.{i}"
    gt = random_boxes(4, 64, 64, 4.0, 30.0)
    preds = torch.cat([random_boxes(120, 64, 64, 2.0, 30.0), gt[1:2], gt[1:2], gt[2:3] * 1.02], 0)
    q = box_iou(gt, preds)
    if i == 0:
        q[3, 10] = q[3].max()  # a tie on gt 3's best IoU
    m = det_utils.Matcher(high, low, allow_low_quality_matches=lq)
    put(name, iou=q, matches=m(q))
    cases.append(dict(op="matcher", name=name, high=high, low=low, low_quality=lq))

# ---------------------------------------------------------------- BoxCoder
for i, weights in enumerate([(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]):
    name = f"coder.{i}"
    coder = det_utils.BoxCoder(weights, bbox_xform_clip=math.log(1000.0 / 16))
    ref = random_boxes(50, 512, 512, 1.0, 120.0)
    tgt = random_boxes(50, 512, 512, 1.0, 120.0)
    enc = coder.encode_single(tgt, ref)
    deltas = torch.randn(50, 4) * torch.tensor([0.5, 0.5, 1.0, 1.0]) * torch.tensor(weights) / 5
    deltas[:5, 2:] = torch.tensor([9.0, 12.0]) * torch.tensor(weights[2:])  # beyond the clamp
    dec = coder.decode_single(deltas, ref)
    put(name, reference=ref, target=tgt, encoded=enc, deltas=deltas, decoded=dec)
    cases.append(dict(op="coder", name=name, weights=list(weights)))

# ---------------------------------------------------------------- anchors
gen = AnchorGenerator(sizes=((2, 4, 8, 16, 32),), aspect_ratios=((0.1, 0.25, 0.5, 1.0, 1.5, 2.0),))
img = ImageList(torch.zeros(1, 3, 80, 96), [(80, 96)])
feat = [torch.zeros(1, 8, 5, 6)]
anchors = gen(img, feat)[0]
put("anchors", grid=anchors, base=gen.cell_anchors[0])
cases.append(dict(op="anchors", name="anchors", feature_height=5, feature_width=6, stride_y=16, stride_x=16))

out_dir = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "geometry"))
os.makedirs(out_dir, exist_ok=True)
path = os.path.join(out_dir, "geometry.safetensors")
save_file(T, path, metadata={"cases": json.dumps(cases), "generator": "tools/make_geometry_fixtures.py",
                             "torch": torch.__version__, "torchvision": torchvision.__version__})
print(path, os.path.getsize(path), "bytes,", len(T), "tensors")
