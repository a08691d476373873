#!/usr/bin/env python3
"""Convert the author's published One Shot Affinity Model checkpoint (.pth) to safetensors.

The .pth (MODEL.md §8.5) is a pickled dict with
  model_weights     the state dict (original keys, the sieve.1/.2 and pars.0/.1 aliases included),
  anchor_generator  a pickled torchvision AnchorGenerator (fields `sizes`, `aspect_ratios`),
  affinity          the number of affinities C' (int),
and optionally optimizer_state, epoch, lrate, model_name.

The output keeps every state-dict key unchanged (tensors as float32 unless --keep-dtype; integer
buffers such as BatchNorm's num_batches_tracked as int64) and stores in the safetensors metadata:
  affinity, anchor_sizes ("2,4,8,16,32"), aspect_ratios ("0.1,0.25,..."), format, source,
  and epoch / lrate / model_name when present.
`affinity-lab predict --weights OUT.safetensors` and `ModelLoader.load` read it directly.

Usage: python tools/convert_pth.py affinity_model_128.pth affinity_model_128.safetensors
Needs torch (only this script does); torchvision is needed only to unpickle a real
AnchorGenerator object (a dict or any object with `sizes` / `aspect_ratios` works too).
"""
import argparse
import json
import os
import struct
import sys

import torch

DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def flatten(values):
    """Flattens nested tuples/lists of numbers (AnchorGenerator stores ((2,), (4,), ...))."""
    out = []
    for v in values:
        if isinstance(v, (list, tuple)):
            out.extend(flatten(v))
        else:
            out.append(float(v) if not isinstance(v, int) else v)
    return out


def anchor_fields(gen):
    """(sizes, aspect_ratios) of an AnchorGenerator, a dict, or None."""
    if gen is None:
        return None, None
    if isinstance(gen, dict):
        sizes, ratios = gen.get("sizes"), gen.get("aspect_ratios")
    else:
        sizes, ratios = getattr(gen, "sizes", None), getattr(gen, "aspect_ratios", None)
    sizes = flatten(sizes) if sizes is not None else None
    # One tuple of ratios per feature map; the model has a single level, and torchvision
    # repeats the same ratios per level, so the first level is the model's.
    if ratios is not None:
        if len(ratios) > 0 and isinstance(ratios[0], (list, tuple)):
            ratios = ratios[0]
        ratios = [float(r) for r in ratios]
    return sizes, ratios


def number_text(v):
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def save_safetensors(tensors, metadata, path):
    """Writes the safetensors format (8-byte header length, JSON header, raw little-endian data)."""
    header = {"__metadata__": metadata}
    offset = 0
    blobs = []
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype not in DTYPES:
            raise SystemExit(f"convert_pth: key {name} has unsupported dtype {t.dtype}")
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() > 0 else b""
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def convert(src, dst, keep_dtype=False):
    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or "model_weights" not in ckpt:
        raise SystemExit(f"convert_pth: {src} is not an affinity-model checkpoint (no 'model_weights' key)")
    state = ckpt["model_weights"]
    tensors = {}
    for k, v in state.items():
        if not torch.is_tensor(v):
            continue
        if v.is_floating_point() and not keep_dtype:
            v = v.to(torch.float32)
        elif not v.is_floating_point() and v.dtype != torch.bool:
            v = v.to(torch.int64)
        tensors[k] = v
    metadata = {"format": "pytorch-state-dict", "source": os.path.basename(src)}
    affinity = ckpt.get("affinity")
    if affinity is None and "affinity_layer.batch_to_feat_mat" in tensors:
        affinity = tensors["affinity_layer.batch_to_feat_mat"].shape[1]
    if affinity is not None:
        metadata["affinity"] = str(int(affinity))
    sizes, ratios = anchor_fields(ckpt.get("anchor_generator"))
    if sizes:
        metadata["anchor_sizes"] = ",".join(number_text(s) for s in sizes)
    if ratios:
        metadata["aspect_ratios"] = ",".join(number_text(r) for r in ratios)
    for key in ("epoch", "lrate", "model_name"):
        if key in ckpt and ckpt[key] is not None:
            metadata[key] = str(ckpt[key])
    save_safetensors(tensors, metadata, dst)
    return len(tensors), metadata


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("pth", help="the author's checkpoint (.pth)")
    p.add_argument("out", help="output .safetensors")
    p.add_argument("--keep-dtype", action="store_true", help="keep float16/64 tensors as they are (default: float32)")
    a = p.parse_args()
    if not os.path.exists(a.pth):
        print(f"convert_pth: {a.pth} does not exist", file=sys.stderr)
        return 3
    n, meta = convert(a.pth, a.out, a.keep_dtype)
    print(json.dumps({"tensors": n, "out": a.out, "metadata": meta}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
