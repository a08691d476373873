#!/usr/bin/env python3
"""Goldens for Tests/EvaluationTests from pycocotools (dev time only; CI never runs this).

Setup (outside the repository):
    python3 -m venv /work/venv-coco && /work/venv-coco/bin/pip install pycocotools numpy
Run from the repository root:
    /work/venv-coco/bin/python tools/coco_fixtures.py

Writes Tests/EvaluationTests/Fixtures/:
  coco/<case>.gt.json, coco/<case>.dt.json  COCO ground truth and results of each evaluation case
  coco/expected.json                        COCOeval's 12 stats per case for iouType segm and bbox,
                                            plus the parameter arrays (iouThrs, recThrs) as NumPy has them
  rle.json                                  masks with their RLE counts, compressed strings, area, toBbox;
                                            mask and box IoU matrices (with iscrowd); merges
  polygons.json                             frPyObjects rasterisations of test polygons (and their union)

Everything is drawn from numpy.random.RandomState(SEED); re-running gives identical files.
"""
import contextlib
import copy
import importlib.metadata
import io
import json
import os
import sys

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

SEED = 20201229
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "EvaluationTests", "Fixtures")


# ----------------------------------------------------------------------------------------------
# helpers

def encode(mask):
    """pycocotools RLE (compressed string) of an H×W uint8 mask."""
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode("ascii")
    return r


def string_to_counts(s):
    """Decode COCO's compressed count string (reference reading, used only to show counts in the fixture)."""
    counts, p = [], 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def uncompressed(mask):
    r = encode(mask)
    return {"size": r["size"], "counts": string_to_counts(r["counts"])}


def ellipse(h, w, cx, cy, rx, ry):
    yy, xx = np.mgrid[0:h, 0:w]
    return (((xx - cx) / max(rx, 0.5)) ** 2 + ((yy - cy) / max(ry, 0.5)) ** 2 <= 1.0).astype(np.uint8)


def rect(h, w, x0, y0, x1, y1):
    m = np.zeros((h, w), np.uint8)
    m[max(0, y0):max(0, min(h, y1)), max(0, x0):max(0, min(w, x1))] = 1
    return m


def shape_mask(h, w, s):
    if s[0] == "e":
        return ellipse(h, w, *s[1:])
    return rect(h, w, *s[1:])


def random_shape(rng, h, w, small=False):
    if small:
        return ("e", float(rng.uniform(0, w)), float(rng.uniform(0, h)), float(rng.uniform(0.8, 3)), float(rng.uniform(0.8, 3)))
    if rng.rand() < 0.5:
        return ("e", float(rng.uniform(0, w)), float(rng.uniform(0, h)), float(rng.uniform(2, w / 3)), float(rng.uniform(2, h / 3)))
    x0, y0 = int(rng.randint(-3, w - 2)), int(rng.randint(-3, h - 2))
    return ("r", x0, y0, x0 + int(rng.randint(2, w // 2)), y0 + int(rng.randint(2, h // 2)))


def jitter(rng, s, amount=2.0):
    if s[0] == "e":
        return ("e", s[1] + float(rng.uniform(-amount, amount)), s[2] + float(rng.uniform(-amount, amount)),
                max(1.0, s[3] + float(rng.uniform(-amount, amount))), max(1.0, s[4] + float(rng.uniform(-amount, amount))))
    d = [int(round(rng.uniform(-amount, amount))) for _ in range(4)]
    return ("r", s[1] + d[0], s[2] + d[1], max(s[1] + d[0] + 1, s[3] + d[2]), max(s[2] + d[1] + 1, s[4] + d[3]))


def ellipse_polygon(rng, cx, cy, rx, ry, n=10):
    a = np.sort(rng.uniform(0, 2 * np.pi, n))
    return [round(float(v), 2) for t in a for v in (cx + rx * np.cos(t), cy + ry * np.sin(t))]


def shoelace(poly):
    x, y = np.array(poly[0::2]), np.array(poly[1::2])
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def box_of(mask_rle):
    return [float(v) for v in mask_utils.toBbox(mask_rle)]


class Builder:
    """Accumulates a COCO ground truth and a results list."""

    def __init__(self, images, categories):
        self.images = [{"id": i, "width": w, "height": h, "file_name": "img_%d.png" % i} for (i, w, h) in images]
        self.size = {i: (h, w) for (i, w, h) in images}
        self.categories = [{"id": c, "name": "class_%d" % c, "supercategory": "lesion"} for c in categories]
        self.annotations = []
        self.results = []
        self.next_id = 1

    def gt_mask(self, image, cat, mask, fmt="rle", crowd=0, ann_id=None):
        h, w = self.size[image]
        if mask.sum() == 0 and not crowd:
            return None
        if fmt == "rle":
            seg = encode(mask)
        else:
            seg = uncompressed(mask)
        rle = encode(mask)
        ann = {"id": self._id(ann_id), "image_id": image, "category_id": cat, "segmentation": seg,
               "area": float(mask.sum()), "bbox": box_of(rle), "iscrowd": crowd}
        self.annotations.append(ann)
        return ann

    def gt_polygon(self, image, cat, polygons, ann_id=None):
        h, w = self.size[image]
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, h, w))
        xs = [v for p in polygons for v in p[0::2]]
        ys = [v for p in polygons for v in p[1::2]]
        ann = {"id": self._id(ann_id), "image_id": image, "category_id": cat, "segmentation": polygons,
               "area": round(sum(shoelace(p) for p in polygons), 3),
               "bbox": [min(xs), min(ys), round(max(xs) - min(xs), 2), round(max(ys) - min(ys), 2)], "iscrowd": 0}
        self.annotations.append(ann)
        return mask_utils.decode(rle)

    def gt_box_only(self, image, cat, box, crowd=0):
        """A ground truth given as a rectangle mask with its exact box (for the bbox tie tests)."""
        h, w = self.size[image]
        x, y, bw, bh = box
        m = rect(h, w, x, y, x + bw, y + bh)
        ann = {"id": self._id(None), "image_id": image, "category_id": cat, "segmentation": encode(m),
               "area": float(bw * bh), "bbox": [float(v) for v in box], "iscrowd": crowd}
        self.annotations.append(ann)

    def result(self, image, cat, score, mask=None, bbox=None):
        r = {"image_id": image, "category_id": cat, "score": score}
        if mask is not None:
            r["segmentation"] = encode(mask)
        if bbox is not None:
            r["bbox"] = bbox
        self.results.append(r)

    def _id(self, ann_id):
        if ann_id is not None:
            return ann_id
        i = self.next_id
        self.next_id += 1
        return i

    def gt(self):
        return {"images": self.images, "annotations": self.annotations, "categories": self.categories}


def coco_stats(gt, results, iou_type):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        if results:
            coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        else:
            # loadRes cannot read an empty list; an empty results object is what it would build.
            coco_dt = COCO()
            coco_dt.dataset = {"images": copy.deepcopy(gt["images"]), "categories": copy.deepcopy(gt["categories"]),
                               "annotations": []}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


# ----------------------------------------------------------------------------------------------
# evaluation cases

def case_random(rng, with_boxes):
    """Random masks and boxes over 8 images and 3 categories, unsorted non-contiguous ids,
    compressed / uncompressed / polygon ground truth, jittered and false detections, rounded
    (tied) scores, a detection of a category absent from the ground truth."""
    W, H = 64, 48
    image_ids = [3, 1, 7, 10, 2, 5, 8, 4]
    b = Builder([(i, W, H) for i in image_ids], [2, 1, 5])
    cats = [2, 1, 5]
    for image in image_ids:
        for _ in range(rng.randint(0, 6)):
            cat = cats[rng.randint(0, 3)]
            s = random_shape(rng, H, W)
            u = rng.rand()
            if u < 0.2:
                poly = ellipse_polygon(rng, float(rng.uniform(8, W - 8)), float(rng.uniform(8, H - 8)),
                                       float(rng.uniform(3, 15)), float(rng.uniform(3, 12)))
                m = b.gt_polygon(image, cat, [poly])
            else:
                m = shape_mask(H, W, s)
                if b.gt_mask(image, cat, m, fmt="rle" if u < 0.8 else "uncompressed") is None:
                    continue
            if rng.rand() < 0.85:
                if u >= 0.2:
                    dm = shape_mask(H, W, jitter(rng, s, 2.5))
                else:
                    dm = np.roll(m, (int(rng.randint(-2, 3)), int(rng.randint(-2, 3))), axis=(0, 1))
                dcat = cat if rng.rand() < 0.9 else cats[rng.randint(0, 3)]
                if dm.sum() > 0:
                    box = None
                    if with_boxes:
                        bb = box_of(encode(dm))
                        box = [round(bb[0] + float(rng.uniform(-1, 1)), 2), round(bb[1] + float(rng.uniform(-1, 1)), 2),
                               round(bb[2] + float(rng.uniform(-1.5, 1.5)), 2), round(bb[3] + float(rng.uniform(-1.5, 1.5)), 2)]
                    b.result(image, dcat, round(float(rng.rand()), 2), dm, box)
        for _ in range(rng.randint(0, 4)):
            fm = shape_mask(H, W, random_shape(rng, H, W))
            if fm.sum() == 0:
                continue
            box = box_of(encode(fm)) if with_boxes else None
            b.result(image, cats[rng.randint(0, 3)], round(float(rng.rand()), 2), fm, box)
    fm = shape_mask(H, W, random_shape(rng, H, W))
    b.result(image_ids[0], 9, 0.99, fm, box_of(encode(fm)) if with_boxes else None)
    return b


def case_empty_images(rng):
    """Images without ground truth or detections, with detections only, with ground truth only."""
    W, H = 64, 48
    b = Builder([(i, W, H) for i in range(1, 7)], [1, 2])
    # image 1: nothing at all. image 2: detections only. image 3: ground truth only.
    for _ in range(3):
        b.result(2, 1, round(float(rng.rand()), 3), shape_mask(H, W, ("e", 30.0, 20.0, 6.0, 5.0)))
    b.gt_mask(3, 1, shape_mask(H, W, ("r", 5, 5, 20, 25)))
    b.gt_mask(3, 2, shape_mask(H, W, ("e", 40.0, 30.0, 8.0, 6.0)))
    # images 4-6: ordinary matches, one category each.
    for image, cat in ((4, 1), (5, 2), (6, 1)):
        s = random_shape(rng, H, W)
        m = shape_mask(H, W, s)
        if b.gt_mask(image, cat, m) is not None:
            b.result(image, cat, 0.9, shape_mask(H, W, jitter(rng, s, 1.5)))
    return b


def case_crowd(rng):
    """Crowd (iscrowd) regions in uncompressed RLE over clusters of small masks; detections on the
    crowd (ignored), on the small masks, and straddling."""
    W, H = 64, 48
    b = Builder([(1, W, H), (2, W, H), (3, W, H)], [1])
    for image in (1, 2, 3):
        crowd = shape_mask(H, W, ("r", 30, 4, 62, 30))
        b.gt_mask(image, 1, crowd, fmt="uncompressed", crowd=1)
        for _ in range(8):
            s = random_shape(rng, H, W, small=True)
            m = shape_mask(H, W, s)
            if b.gt_mask(image, 1, m, fmt="rle") is None:
                continue
            if rng.rand() < 0.7:
                dm = shape_mask(H, W, jitter(rng, s, 0.8))
                if dm.sum():
                    b.result(image, 1, round(float(rng.rand()), 2), dm)
        for _ in range(5):  # detections inside the crowd region
            x, y = int(rng.randint(31, 58)), int(rng.randint(5, 26))
            b.result(image, 1, round(float(rng.rand()), 2), rect(H, W, x, y, x + int(rng.randint(2, 5)), y + int(rng.randint(2, 5))))
        b.result(image, 1, 0.5, rect(H, W, 20, 10, 40, 20))  # half on the crowd
    return b


def case_perfect(rng):
    """Every ground truth detected exactly once with its own mask and box."""
    W, H = 64, 48
    b = Builder([(i, W, H) for i in (1, 2, 3)], [1, 2])
    for image in (1, 2, 3):
        for _ in range(3):
            cat = int(rng.randint(1, 3))
            m = shape_mask(H, W, random_shape(rng, H, W))
            ann = b.gt_mask(image, cat, m)
            if ann is not None:
                b.result(image, cat, round(float(rng.uniform(0.5, 1)), 3), m, ann["bbox"])
    return b


def case_missed(rng):
    """Detections that never overlap their category's ground truth."""
    W, H = 64, 48
    b = Builder([(1, W, H), (2, W, H)], [1])
    for image in (1, 2):
        b.gt_mask(image, 1, rect(H, W, 2, 2, 20, 20))
        b.result(image, 1, 0.8, rect(H, W, 40, 25, 60, 45))
        b.result(image, 1, 0.3, rect(H, W, 25, 2, 35, 12))
    return b


def case_sizes(rng):
    """Objects on both sides of 32² and 96², exactly 32×32 and 96×96, on a 200×150 image;
    unmatched detections of each size class."""
    W, H = 200, 150
    b = Builder([(1, W, H), (2, W, H)], [1])
    specs = [(5, 5, 37, 37), (50, 5, 60, 10), (70, 5, 103, 38), (5, 45, 101, 141), (110, 45, 198, 148),
             (105, 5, 135, 35), (140, 5, 190, 40)]
    for image in (1, 2):
        for (x0, y0, x1, y1) in specs:
            m = rect(H, W, x0, y0, x1, y1)
            b.gt_mask(image, 1, m)
            j = [int(rng.randint(-2, 3)) for _ in range(4)]
            if rng.rand() < 0.8:
                b.result(image, 1, round(float(rng.rand()), 2), rect(H, W, x0 + j[0], y0 + j[1], x1 + j[2], y1 + j[3]))
        b.result(image, 1, 0.55, rect(H, W, 150, 100, 160, 110))   # small FP
        b.result(image, 1, 0.45, rect(H, W, 60, 100, 100, 140))    # medium FP (overlaps the large gt)
        b.result(image, 1, 0.35, rect(H, W, 0, 0, 120, 90))        # large FP
    return b


def case_many_dets(rng):
    """30 small objects, 150 detections in one image (above maxDets 100), many tied scores."""
    W, H = 64, 48
    b = Builder([(1, W, H), (2, W, H)], [1])
    shapes = []
    for _ in range(30):
        s = random_shape(rng, H, W, small=True)
        if b.gt_mask(1, 1, shape_mask(H, W, s)) is not None:
            shapes.append(s)
    for k in range(150):
        if k < 60:
            s = jitter(rng, shapes[k % len(shapes)], 1.0)
        else:
            s = random_shape(rng, H, W, small=True)
        m = shape_mask(H, W, s)
        if m.sum():
            b.result(1, 1, round(float(rng.rand()), 1), m)
    s = random_shape(rng, H, W)
    m = shape_mask(H, W, s)
    b.gt_mask(2, 1, m)
    b.result(2, 1, 0.5, m)
    return b


def case_ties(rng):
    """Integer boxes whose IoUs land exactly on thresholds (0.5, 0.6, 0.75, 0.8, 0.9) and on
    NumPy's 0.8999999999999999; equal scores across images."""
    W, H = 64, 48
    b = Builder([(1, W, H), (2, W, H), (3, W, H)], [1])
    # gt 20×10 box at (10, 10): area 200
    for image in (1, 2, 3):
        b.gt_box_only(image, 1, [10, 10, 20, 10])
        b.gt_box_only(image, 1, [40, 20, 10, 10])
    # IoU 0.5 exactly: dt 20×10 shifted by 20/3? use dt (10,10,10,10): I=100, U=200 → 0.5
    b.result(1, 1, 0.7, rect(H, W, 10, 10, 20, 20), [10, 10, 10, 10])
    # IoU 0.75: dt (10,10,15,10): I=150, U=200
    b.result(2, 1, 0.7, rect(H, W, 10, 10, 25, 20), [10, 10, 15, 10])
    # IoU 0.9: dt (10,10,18,10): I=180, U=200
    b.result(3, 1, 0.7, rect(H, W, 10, 10, 28, 20), [10, 10, 18, 10])
    # second gt 10×10 at (40,20): dt (40,20,8,10) IoU 0.8; dt (40,20,6,10) IoU 0.6
    b.result(1, 1, 0.7, rect(H, W, 40, 20, 48, 30), [40, 20, 8, 10])
    b.result(2, 1, 0.7, rect(H, W, 40, 20, 46, 30), [40, 20, 6, 10])
    b.result(3, 1, 0.4, rect(H, W, 40, 20, 50, 30), [40, 20, 10, 10])
    # duplicates with the same score: the later one is a false positive
    b.result(3, 1, 0.4, rect(H, W, 40, 20, 50, 30), [40, 20, 10, 10])
    return b


def case_id_zero(rng):
    """A ground truth with annotation id 0: COCOeval records matches by id, so its match counts as a miss."""
    W, H = 64, 48
    b = Builder([(1, W, H)], [1])
    m0 = rect(H, W, 5, 5, 25, 25)
    m1 = rect(H, W, 35, 10, 60, 40)
    b.gt_mask(1, 1, m0, ann_id=0)
    b.gt_mask(1, 1, m1, ann_id=7)
    b.result(1, 1, 0.9, m0)
    b.result(1, 1, 0.8, m1)
    return b


def case_no_results(rng):
    """No detections at all (pycocotools' loadRes cannot read [], so the empty results object is built directly)."""
    W, H = 64, 48
    b = Builder([(1, W, H), (2, W, H)], [1, 2])
    b.gt_mask(1, 1, rect(H, W, 5, 5, 25, 25))
    b.gt_mask(2, 1, rect(H, W, 10, 5, 30, 40))
    return b


# ----------------------------------------------------------------------------------------------
# RLE and polygon goldens

def rle_fixture(rng):
    H, W = 48, 64
    masks = []

    def add(name, m, rects=None):
        r = encode(m)
        entry = {"name": name, "height": int(m.shape[0]), "width": int(m.shape[1]),
                 "counts": string_to_counts(r["counts"]), "string": r["counts"],
                 "area": int(mask_utils.area(r)), "bbox": box_of(r)}
        if rects is None:
            entry["pixels"] = "".join("1" if v else "0" for v in m.reshape(-1))  # row-major
        else:
            entry["rects"] = rects
        masks.append(entry)

    add("zeros", np.zeros((H, W), np.uint8))
    add("ones", np.ones((H, W), np.uint8))
    m = np.zeros((H, W), np.uint8); m[0, 0] = 1; add("first_pixel", m)
    m = np.zeros((H, W), np.uint8); m[H - 1, W - 1] = 1; add("last_pixel", m)
    m = np.zeros((H, W), np.uint8); m[:, 0] = 1; add("first_column", m)
    m = np.zeros((H, W), np.uint8); m[0, :] = 1; add("first_row", m)
    m = np.zeros((H, W), np.uint8); m[40:, 10] = 1; m[:5, 11] = 1; add("column_wrap", m)
    add("noise", (rng.rand(H, W) < 0.5).astype(np.uint8))
    add("sparse_noise", (rng.rand(H, W) < 0.03).astype(np.uint8))
    for k in range(4):
        add("shapes_%d" % k, np.maximum(shape_mask(H, W, random_shape(rng, H, W)), shape_mask(H, W, random_shape(rng, H, W))))
    add("one_by_one_0", np.zeros((1, 1), np.uint8))
    add("one_by_one_1", np.ones((1, 1), np.uint8))
    add("row_vector", (rng.rand(1, 37) < 0.5).astype(np.uint8))
    add("column_vector", (rng.rand(29, 1) < 0.5).astype(np.uint8))
    # 512×512 from rectangles: long runs (multi-character counts) and negative deltas.
    rects = [[0, 0, 512, 3], [100, 50, 400, 460], [7, 480, 9, 512], [500, 0, 512, 512], [256, 256, 257, 257]]
    big = np.zeros((512, 512), np.uint8)
    for (x0, y0, x1, y1) in rects:
        big[y0:y1, x0:x1] = 1
    add("big_rects", big, rects=rects)

    # Mask IoU: 6 detections × 5 ground truths of one size, crowd flags on two ground truths.
    dts = [shape_mask(H, W, random_shape(rng, H, W)) for _ in range(6)]
    gts = [shape_mask(H, W, random_shape(rng, H, W)) for _ in range(5)]
    dts[0] = gts[0].copy()
    dts[1] = np.maximum(gts[1], shape_mask(H, W, ("r", 0, 0, 10, 10)))
    dts[2] = np.zeros((H, W), np.uint8)
    crowd = [0, 1, 0, 0, 1]
    dr = [encode(m) for m in dts]
    gr = [encode(m) for m in gts]
    iou = mask_utils.iou(dr, gr, crowd)
    mask_iou = {
        "height": H, "width": W,
        "detections": ["".join("1" if v else "0" for v in m.reshape(-1)) for m in dts],
        "groundTruths": ["".join("1" if v else "0" for v in m.reshape(-1)) for m in gts],
        "iscrowd": crowd,
        "iou": [[float(v) for v in row] for row in iou],
    }

    # Box IoU with crowd flags, float and integer boxes.
    dboxes = [[float(round(v, 2)) for v in (rng.uniform(0, 40), rng.uniform(0, 30), rng.uniform(1, 30), rng.uniform(1, 20))] for _ in range(5)]
    gboxes = [[float(round(v, 2)) for v in (rng.uniform(0, 40), rng.uniform(0, 30), rng.uniform(1, 30), rng.uniform(1, 20))] for _ in range(4)]
    dboxes += [[10.0, 10.0, 20.0, 10.0], [0.0, 0.0, 0.0, 5.0]]
    gboxes += [[15.0, 10.0, 20.0, 10.0]]
    bcrowd = [0, 1, 0, 0, 1]
    biou = mask_utils.iou(dboxes, gboxes, bcrowd)
    box_iou = {"detections": dboxes, "groundTruths": gboxes, "iscrowd": bcrowd,
               "iou": [[float(v) for v in row] for row in biou]}

    # Merges of three masks.
    parts = [shape_mask(H, W, random_shape(rng, H, W)) for _ in range(3)]
    pr = [encode(m) for m in parts]
    union = mask_utils.merge(pr, intersect=0)
    inter = mask_utils.merge(pr, intersect=1)
    merge = {"height": H, "width": W,
             "masks": ["".join("1" if v else "0" for v in m.reshape(-1)) for m in parts],
             "union": string_to_counts(union["counts"].decode("ascii")),
             "intersection": string_to_counts(inter["counts"].decode("ascii"))}
    return {"masks": masks, "maskIoU": mask_iou, "boxIoU": box_iou, "merge": merge}


def polygon_fixture(rng):
    cases = []

    def add(name, polygons, h, w, boxes=False):
        # Boxes go through frBbox, which takes an N×4 array (a JSON list of 4-number lists makes
        # pycocotools 2.0.11 raise TypeError).
        rles = mask_utils.frPyObjects(np.array(polygons, dtype=np.double) if boxes else polygons, h, w)
        merged = mask_utils.merge(rles)
        cases.append({
            "name": name, "height": h, "width": w, "polygons": polygons, "boxes": boxes,
            "each": [string_to_counts(r["counts"].decode("ascii")) for r in rles],
            "merged": string_to_counts(merged["counts"].decode("ascii")),
            "mergedString": merged["counts"].decode("ascii"),
            "area": int(mask_utils.area(merged)),
        })

    H, W = 48, 64
    add("triangle", [[10, 10, 50, 12, 30, 40]], H, W)
    add("fractional", [[10.3, 5.7, 40.25, 8.5, 33.1, 30.9, 12.2, 25.5]], H, W)
    add("pentagram", [[32, 2, 44, 40, 12, 16, 52, 16, 20, 40]], H, W)
    add("outside", [[-10, -5, 70, 10, 30, 60]], H, W)
    add("negative_small", [[-0.3, -0.05, 20.4, -0.2, 10.6, 12.45]], H, W)
    add("tiny", [[5.1, 5.1, 5.3, 5.1, 5.2, 5.4]], H, W)
    add("repeated_points", [[10, 10, 10, 10, 30, 10, 30, 30, 30, 30, 10, 30]], H, W)
    add("collinear", [[0, 0, 20, 20, 40, 40]], H, W)
    add("edges", [[0, 0, 64, 0, 64, 48, 0, 48]], H, W)
    add("half_pixels", [[0.5, 0.5, 10.5, 0.5, 10.5, 7.5, 0.5, 7.5]], H, W)
    add("odd_length", [[1, 1, 20, 1, 20, 20, 5]], H, W)
    add("boxes", [[5, 6, 20, 10], [30.5, 20.25, 10, 12], [-3.2, 40.7, 9.9, 20]], H, W, boxes=True)
    add("box_polygon", [[12.3, 4.6, 12.3, 30.1, 40.9, 30.1, 40.9, 4.6]], H, W)
    add("multipart", [[2, 2, 15, 3, 8, 14], [20, 20, 35, 22, 30, 40, 18, 33], [25, 25, 50, 25, 50, 45]], H, W)
    add("steep", [[30, 0, 31, 47, 29, 47]], H, W)
    add("shallow", [[0, 20, 63, 21, 63, 23]], H, W)
    for k in range(6):
        n = int(rng.randint(3, 25))
        poly = [round(float(v), 2) for _ in range(n) for v in (rng.uniform(-5, W + 5), rng.uniform(-5, H + 5))]
        add("random_%d" % k, [poly], H, W)
    add("ellipse_512", [ellipse_polygon(rng, 256.0, 240.0, 180.0, 120.0, n=40)], 512, 512)
    add("small_image", [[0, 0, 3, 0, 3, 2]], 3, 4)
    return {"polygons": cases}


# ----------------------------------------------------------------------------------------------

def main():
    rng = np.random.RandomState(SEED)
    os.makedirs(os.path.join(ROOT, "coco"), exist_ok=True)
    builders = [
        ("random_segm_only", case_random(rng, with_boxes=False)),
        ("random_with_boxes", case_random(rng, with_boxes=True)),
        ("empty_images", case_empty_images(rng)),
        ("crowd", case_crowd(rng)),
        ("perfect", case_perfect(rng)),
        ("missed", case_missed(rng)),
        ("sizes", case_sizes(rng)),
        ("many_dets", case_many_dets(rng)),
        ("ties", case_ties(rng)),
        ("id_zero", case_id_zero(rng)),
        ("no_results", case_no_results(rng)),
    ]
    expected = {
        "generator": "tools/coco_fixtures.py",
        "pycocotools": importlib.metadata.version("pycocotools"),
        "numpy": np.__version__,
        "seed": SEED,
        "iouThrs": [float(v) for v in COCOeval(iouType="segm").params.iouThrs],
        "recThrs": [float(v) for v in COCOeval(iouType="segm").params.recThrs],
        "cases": {},
    }
    for name, b in builders:
        gt = b.gt()
        with open(os.path.join(ROOT, "coco", name + ".gt.json"), "w") as f:
            json.dump(gt, f, separators=(",", ":"))
        with open(os.path.join(ROOT, "coco", name + ".dt.json"), "w") as f:
            json.dump(b.results, f, separators=(",", ":"))
        expected["cases"][name] = {"segm": coco_stats(gt, b.results, "segm"), "bbox": coco_stats(gt, b.results, "bbox")}
        print("%-18s segm %s" % (name, " ".join("%.3f" % v for v in expected["cases"][name]["segm"])))
        print("%-18s bbox %s" % ("", " ".join("%.3f" % v for v in expected["cases"][name]["bbox"])))
    with open(os.path.join(ROOT, "coco", "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
    with open(os.path.join(ROOT, "rle.json"), "w") as f:
        json.dump(rle_fixture(rng), f, separators=(",", ":"))
    with open(os.path.join(ROOT, "polygons.json"), "w") as f:
        json.dump(polygon_fixture(rng), f, separators=(",", ":"))


if __name__ == "__main__":
    sys.exit(main())
