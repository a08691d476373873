#!/usr/bin/env python3
"""The same network in PyTorch, for timing beside `affinity-lab bench` (dev time only).

Builds the One Shot Affinity Model from torchvision parts and ../shared/spec/MODEL.md (no code from
the original repository), loads the safetensors weights with the original state-dict keys, checks
that it reproduces the reference fixture outputs for 2_covid_000.png, then times the stages with
torch.set_num_threads(2) and prints one JSON object.

    python3 -m venv /work/venv-tv && /work/venv-tv/bin/pip install torch==2.14.1 torchvision==0.29.1 safetensors numpy
    /work/venv-tv/bin/python bench/torch_reference.py --weights W.safetensors --tensors ../shared/fixtures/reference/tensors_2_covid_000.safetensors
"""
import argparse
import json
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from safetensors.torch import load_file
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.roi_heads import RoIHeads, paste_masks_in_image
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops import boxes as box_ops
from torchvision.models.detection import _utils as det_utils


class RPNHead(nn.Module):
    def __init__(self, c=256, a=30):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.cls_logits = nn.Conv2d(c, a, 1)
        self.bbox_pred = nn.Conv2d(c, 4 * a, 1)

    def forward(self, xs):
        t = [F.relu(self.conv(x)) for x in xs]
        return [self.cls_logits(u) for u in t], [self.bbox_pred(u) for u in t]


class TwoMLPHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc6 = nn.Linear(256 * 49, 128)
        self.fc7 = nn.Linear(128, 128)

    def forward(self, x):
        return F.relu(self.fc7(F.relu(self.fc6(x.flatten(1)))))


class BoxPredictor(nn.Module):
    def __init__(self):
        super().__init__()
        self.cls_score = nn.Linear(128, 2)
        self.bbox_pred = nn.Linear(128, 8)

    def forward(self, x):
        return self.cls_score(x), self.bbox_pred(x)


class MaskHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.mask_fcn1 = nn.Conv2d(256, 256, 3, padding=1)

    def forward(self, x):
        return F.relu(self.mask_fcn1(x))


class MaskPredictor(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_mask = nn.ConvTranspose2d(256, 256, 2, 2)
        self.mask_fcn_logits = nn.Conv2d(256, 2, 1)

    def forward(self, x):
        return self.mask_fcn_logits(F.relu(self.conv_mask(x)))


class MaskFeaturePredictor(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_mask = nn.ConvTranspose2d(256, 256, 2, 2)
        self.conv_reduce = nn.Conv2d(256, 256, 3, padding=1)

    def forward(self, x):
        return F.relu(self.conv_reduce(self.conv_mask(x)))


class Sieve(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_down = nn.Conv2d(256, 128, 2, 2)
        self.bn = nn.BatchNorm2d(128)
        self.conv_up = nn.ConvTranspose2d(128, 256, 2, 2)

    def forward(self, x):
        return self.conv_up(F.relu(self.bn(self.conv_down(x))))


class AffinityLayer(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.batch_to_feat_mat = nn.Parameter(torch.randn(8, k))
        self.batch_to_feat_vec = nn.Parameter(torch.randn(k, 1))
        self.sieve = Sieve()
        self.conv_d1 = nn.Conv2d(256, 256, 2, 2); self.bn1 = nn.BatchNorm2d(256)
        self.conv_d2 = nn.Conv2d(256, 256, 2, 2); self.bn2 = nn.BatchNorm2d(256)
        self.conv_d_final = nn.Conv2d(256, 256, 7); self.bn3 = nn.BatchNorm2d(256)

    def forward(self, x):
        for _ in range(9):
            x = self.sieve(x)
        x = self.bn1(F.relu(self.conv_d1(x)))
        x = self.bn2(F.relu(self.conv_d2(x)))
        x1 = self.bn3(F.relu(self.conv_d_final(x))).flatten(1)
        x2 = self.batch_to_feat_mat.t() @ x1
        return (x2.t() @ self.batch_to_feat_vec).t()


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc_l1 = nn.Linear(256, 128); self.fc_l2 = nn.Linear(128, 128); self.class_predict_logits = nn.Linear(128, 3)

    def forward(self, x):
        return self.class_predict_logits(F.relu(self.fc_l2(F.relu(self.fc_l1(x)))))


class Model(nn.Module):
    def __init__(self, k=128):
        super().__init__()
        r = torchvision.models.resnet18(weights=None)
        self.body = nn.Sequential()
        for n in ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3"]:
            self.body.add_module(n, getattr(r, n))
        self.fpn = FeaturePyramidNetwork([256], 256)
        anchors = AnchorGenerator(((2, 4, 8, 16, 32),), ((0.1, 0.25, 0.5, 1.0, 1.5, 2.0),))
        self.rpn = RegionProposalNetwork(anchors, RPNHead(), 0.7, 0.3, 256, 0.75, dict(training=400, testing=400),
                                         dict(training=200, testing=200), 0.75)
        self.roi_heads = RoIHeads(MultiScaleRoIAlign(["0"], 7, 2), TwoMLPHead(), BoxPredictor(), 0.75, 0.5, 256, 0.75,
                                  (10.0, 10.0, 5.0, 5.0), 0.05, 0.5, 100,
                                  mask_roi_pool=MultiScaleRoIAlign(["0"], 14, 2), mask_head=MaskHead(), mask_predictor=MaskPredictor())
        self.box_head_s2 = TwoMLPHead(); self.box_predictor_s2 = BoxPredictor()
        self.mask_head_s2 = MaskHead(); self.mask_predictor_s2 = MaskFeaturePredictor()
        self.affinity_layer = AffinityLayer(k)
        self.s2new = Classifier()
        self.coder = det_utils.BoxCoder((10.0, 10.0, 5.0, 5.0))

    def features(self, x):
        return self.fpn({"0": self.body(x)})

    def classify(self, feats, proposals, size):
        box_feats = torchvision.ops.roi_align(feats["0"], [proposals], 7, 1 / 16, 2, False)
        logits, deltas = self.box_predictor_s2(self.box_head_s2(box_feats))
        boxes = box_ops.clip_boxes_to_image(self.coder.decode(deltas, [proposals])[:, 1], size)
        scores = F.softmax(logits, -1)[:, 1]
        keep = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])) > 1e-5
        boxes, scores = boxes[keep], scores[keep]
        keep = box_ops.nms(boxes, scores, 0.25)[:8]
        idx = keep
        if len(keep) < 8:
            idx = torch.cat([keep, keep[-1:].repeat(8 - len(keep))])
        rois = boxes[idx]
        m = torchvision.ops.roi_align(feats["0"], [rois], 14, 1 / 16, 2, False)
        lmf = self.mask_predictor_s2(self.mask_head_s2(m))
        return self.s2new(self.affinity_layer(lmf)), rois


def load(model, path):
    sd = load_file(path)
    out = {}
    for k, v in sd.items():
        if k.startswith("affinity_layer.pars.") or ".sieve.1." in k or ".sieve.2." in k:
            continue
        n = k.replace("backbone.body.", "body.").replace("backbone.fpn.inner_blocks.0.", "fpn.inner_blocks.0.0.")
        n = n.replace("backbone.fpn.layer_blocks.0.", "fpn.layer_blocks.0.0.").replace("rpn.head.", "rpn.head.")
        n = n.replace("affinity_layer.sieve.0.", "affinity_layer.sieve.")
        n = n.replace("roi_heads.box_head_s2.", "box_head_s2.").replace("roi_heads.box_predictor_s2.", "box_predictor_s2.")
        n = n.replace("roi_heads.mask_head_s2.", "mask_head_s2.").replace("roi_heads.mask_predictor_s2.", "mask_predictor_s2.")
        out[n] = v
    missing, unexpected = model.load_state_dict(out, strict=False)
    assert not unexpected, unexpected
    assert not [m for m in missing if "num_batches" not in m], missing


def median_time(fn, repeats):
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return statistics.median(ts), min(ts)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--weights", required=True)
    p.add_argument("--tensors", required=True, help="the reference tensors of 2_covid_000.png")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    ref = load_file(a.tensors)
    model = Model()
    load(model, a.weights)
    # The original removes no small boxes (MODEL.md §4.4, §5.2.3); stock torchvision does (1e-3, 1e-2).
    model.rpn.min_size = 0.0
    import torchvision.models.detection.roi_heads as rh
    class _NoSmallBoxRemoval:
        def __getattr__(self, name):
            if name == "remove_small_boxes":
                return lambda boxes, min_size: torch.arange(boxes.shape[0])
            return getattr(box_ops, name)
    rh.box_ops = _NoSmallBoxRemoval()
    x = ref["input_normalized"].unsqueeze(0)
    size = (512, 512)
    from torchvision.models.detection.image_list import ImageList
    images = ImageList(x, [size])

    # Check: the reference outputs.
    model.eval(); model.affinity_layer.train()
    checks = {}
    with torch.no_grad():
        feats = model.features(x)
        checks["fpn_out_max_abs_err"] = float((feats["0"] - ref["fpn_out"]).abs().max())
        props, _ = model.rpn(images, feats)
        checks["proposals_max_abs_err"] = float((props[0] - ref["rpn_proposals"]).abs().max())
        dets, _ = model.roi_heads(feats, props, [size])
        checks["detections"] = int(len(dets[0]["boxes"]))
        logits, rois = model.classify(feats, props[0], size)
        checks["final_scores"] = logits[0].tolist()
        checks["final_scores_max_abs_err"] = float((logits - ref["final_scores"]).abs().max())

    # Timings (inference: eval mode, affinity BNs on batch statistics).
    t = {}
    with torch.no_grad():
        t["backbone"] = median_time(lambda: model.features(x), a.repeats)[0]
        t["rpn"] = median_time(lambda: model.rpn(images, feats), a.repeats)[0]
        def box_branch():
            bf = model.roi_heads.box_roi_pool(feats, props, [size])
            cl, br = model.roi_heads.box_predictor(model.roi_heads.box_head(bf))
            return model.roi_heads.postprocess_detections(cl, br, props, [size])
        t["roi_box_branch"] = median_time(box_branch, a.repeats)[0]
        boxes = dets[0]["boxes"]
        def mask_branch():
            mf = model.roi_heads.mask_roi_pool(feats, [boxes], [size])
            return model.roi_heads.mask_predictor(model.roi_heads.mask_head(mf)).sigmoid()[:, 1:2]
        t["mask_head_100"] = median_time(mask_branch, a.repeats)[0]
        probs = mask_branch()
        t["paste_masks"] = median_time(lambda: paste_masks_in_image(probs, boxes, size), a.repeats)[0]
        t["classification_path"] = median_time(lambda: model.classify(feats, props[0], size), a.repeats)[0]
        def full():
            f = model.features(x); pr, _ = model.rpn(images, f)
            d, _ = model.roi_heads(f, pr, [size])
            return model.classify(f, pr[0], size)
        predict_med, predict_min = median_time(full, a.repeats)

    # One segmentation training step (train mode) and one classification step.
    gt_boxes = ref["det_boxes"][:3].clone()
    gt_boxes[:, 2:] = torch.maximum(gt_boxes[:, 2:], gt_boxes[:, :2] + 4)
    masks = torch.zeros(3, 512, 512, dtype=torch.uint8)
    for i, b in enumerate(gt_boxes.round().int().tolist()):
        masks[i, b[1]:b[3], b[0]:b[2]] = 1
    targets = [dict(boxes=gt_boxes, labels=torch.ones(3, dtype=torch.int64), masks=masks)]
    opt = torch.optim.Adam(model.parameters(), lr=1e-5, weight_decay=1e-3)
    seg_fw, seg_bw = [], []
    def seg_step():
        model.train()
        opt.zero_grad()
        t0 = time.perf_counter()
        f = model.features(x)
        pr, rpn_losses = model.rpn(images, f, targets)
        _, roi_losses = model.roi_heads(f, pr, [size], targets)
        loss = sum(rpn_losses.values()) + sum(roi_losses.values())
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        seg_fw.append(t1 - t0); seg_bw.append(t2 - t1)
        opt.step()
    def cls_step():
        model.eval(); model.affinity_layer.train()
        opt.zero_grad()
        f = model.features(x)
        with torch.no_grad():
            pr, _ = model.rpn(images, f)
            model.roi_heads(f, pr, [size])
        logits, _ = model.classify(f, pr[0], size)
        F.binary_cross_entropy_with_logits(logits, torch.tensor([[0.0, 0.0, 1.0]])).backward()
        opt.step()
    for _ in range(a.repeats + 1):
        seg_step()
    seg_fw, seg_bw = seg_fw[1:], seg_bw[1:]
    iteration_med, iteration_min = median_time(lambda: (seg_step(), cls_step()), a.repeats)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(dict(implementation="pytorch", torch=torch.__version__, threads=a.threads, checks=checks,
                          stages=dict(t, segmentation_step_forward=statistics.median(seg_fw),
                                      segmentation_step_backward=statistics.median(seg_bw)),
                          predict=dict(median_s=predict_med, min_s=predict_min),
                          train_iteration=dict(median_s=iteration_med, min_s=iteration_min),
                          peak_rss_mb=peak), sort_keys=True))


if __name__ == "__main__":
    main()
