#!/usr/bin/env python3
"""Convert an Ultralytics YOLOv8 detection checkpoint (.pt) into DualFuse safetensors.

usage: python tools/convert_pt.py yolov8n.pt [-o yolov8n.safetensors] [--half]

Needs torch, ultralytics and safetensors (pip install torch ultralytics safetensors). The
checkpoint's EMA weights (or its model) are written under Ultralytics' state_dict names, which
are DualFuse's names for single-stream models; the metadata holds the model YAML, nc and the
class names. Load the result with `train_dual --weights FILE`: into a dual-stream model the
single-stream names fill both backbone branches and the head (see README, "Weights").
"""
import argparse
import json
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="Ultralytics .pt file (e.g. yolov8n.pt or runs/detect/train/weights/best.pt)")
    ap.add_argument("-o", "--output", help="output .safetensors path (default: next to the input)")
    ap.add_argument("--half", action="store_true", help="store weights as F16 (half the size)")
    args = ap.parse_args()

    import torch
    import yaml
    from safetensors.torch import save_file

    ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    model = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else ckpt
    if model is None:
        sys.exit(f"{args.checkpoint}: no 'ema' or 'model' entry; is this an Ultralytics checkpoint?")
    model = model.float()
    state = {}
    for name, t in model.state_dict().items():
        t = t.detach().contiguous()
        if t.is_floating_point() and args.half:
            t = t.half()
        state[name] = t
    cfg = getattr(model, "yaml", None) or {}
    names = getattr(model, "names", None) or {}
    meta = {
        "yaml": yaml.safe_dump(cfg, sort_keys=False) if cfg else "",
        "nc": str(cfg.get("nc", len(names))),
        "names": json.dumps({int(k): v for k, v in dict(names).items()} if isinstance(names, dict) else list(names)),
        "source": args.checkpoint,
        "format": "dualfuse-weights-v1",
    }
    out = args.output or args.checkpoint.rsplit(".", 1)[0] + ".safetensors"
    save_file(state, out, metadata=meta)
    print(f"wrote {out}: {len(state)} tensors, nc={meta['nc']}")


if __name__ == "__main__":
    main()
