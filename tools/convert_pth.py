#!/usr/bin/env python3
"""Convert the author's published One Shot Affinity Model checkpoint (.pth) to safetensors.

The .pth (MODEL.md §8.5) is a pickled dict with
  model_weights     the state dict (original keys, the sieve.1/.2 and pars.0/.1 aliases included),
  anchor_generator  a pickled torchvision AnchorGenerator (fields `sizes`, `aspect_ratios`),
  affinity          the number of affinities C' (int),
and optionally optimizer_state, epoch, lrate, model_name.

The output keeps the state-dict keys (tensors as float32 unless --keep-dtype; integer buffers
such as BatchNorm's num_batches_tracked as int64), with one renaming: torchvision 0.13 and later
wrap the FPN's convolutions in Conv2dNormActivation and name them
`backbone.fpn.inner_blocks.0.0.weight` / `backbone.fpn.layer_blocks.0.0.bias`; these become the
pre-0.13 names of the author's checkpoints, `backbone.fpn.inner_blocks.0.weight` etc. (the names
ModelLoader and older torchvision expect; torchvision 0.13+ renames them back when it loads a
state dict without version metadata). A state dict that uses both namings is refused. The
safetensors metadata holds:
  affinity, anchor_sizes ("2,4,8,16,32"), aspect_ratios ("0.1,0.25,..."), format, source,
  torchvision_naming ("pre-0.13" or "0.13+": the FPN naming found in the .pth),
  and epoch / lrate / model_name when present.
`affinity-lab predict --weights OUT.safetensors` and `ModelLoader.load` read it directly.

Usage: python tools/convert_pth.py affinity_model_128.pth affinity_model_128.safetensors
Needs torch (only this script does, and only to convert: the key functions import without it);
torchvision is needed only to unpickle a real AnchorGenerator object (a dict or any object with
`sizes` / `aspect_ratios` works too).
"""
import argparse
import json
import os
import re
import struct
import sys

# The FPN's convolution keys in either torchvision naming: group 2 is "0." since 0.13.
FPN_KEY = re.compile(r"^(backbone\.fpn\.(?:inner|layer)_blocks\.\d+\.)(0\.)?(weight|bias)$")
PRE_0_13, SINCE_0_13 = "pre-0.13", "0.13+"


def fpn_naming(keys):
    """The torchvision FPN naming of a state dict's keys: PRE_0_13, SINCE_0_13, or None (no FPN keys).
    Raises ValueError naming the keys when both namings occur."""
    found = {PRE_0_13: [], SINCE_0_13: []}
    for k in keys:
        m = FPN_KEY.match(k)
        if m:
            found[SINCE_0_13 if m.group(2) else PRE_0_13].append(k)
    if found[PRE_0_13] and found[SINCE_0_13]:
        raise ValueError("the state dict mixes torchvision's two FPN key namings: %s (before 0.13) and %s (0.13 and later)"
                         % (", ".join(sorted(found[PRE_0_13])), ", ".join(sorted(found[SINCE_0_13]))))
    if found[SINCE_0_13]:
        return SINCE_0_13
    return PRE_0_13 if found[PRE_0_13] else None


def normalise_fpn_keys(state):
    """(state with the FPN keys in the pre-0.13 naming, the naming found), keeping the key order.
    Raises ValueError for a state dict that mixes the namings."""
    naming = fpn_naming(state.keys())
    if naming != SINCE_0_13:
        return dict(state), naming
    out = {}
    for k, v in state.items():
        m = FPN_KEY.match(k)
        out[m.group(1) + m.group(3) if m else k] = v
    return out, naming


def torch_dtypes():
    import torch
    return {
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
    import torch
    dtypes = torch_dtypes()
    header = {"__metadata__": metadata}
    offset = 0
    blobs = []
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype not in dtypes:
            raise SystemExit(f"convert_pth: key {name} has unsupported dtype {t.dtype}")
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() > 0 else b""
        header[name] = {"dtype": dtypes[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
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
    import torch
    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or "model_weights" not in ckpt:
        raise SystemExit(f"convert_pth: {src} is not an affinity-model checkpoint (no 'model_weights' key)")
    try:
        state, naming = normalise_fpn_keys(ckpt["model_weights"])
    except ValueError as e:
        raise SystemExit(f"convert_pth: {src}: {e}")
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
    if naming is not None:
        metadata["torchvision_naming"] = naming
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
