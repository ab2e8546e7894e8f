"""Golden fixture for Ultralytics' non_max_suppression (ultralytics.utils.nms, 8.4.190).

Run from the repository root:
    /work/venv/bin/python tools/golden/make_nms_fixtures.py

Writes Tests/Fixtures/nms.json. Each case holds the input prediction tensor [B, 4+nc, A] (rows 0-3: cx, cy, w, h in
pixels; rows 4..: class scores, already sigmoid-ed, as the Detect head outputs in eval mode), the arguments, and per
image the kept detections [x1, y1, x2, y2, conf, cls] in output order plus their anchor indices.

Which NMS kernel: non_max_suppression calls torchvision.ops.nms when `torchvision` is already in sys.modules and its
own TorchNMS.nms otherwise. Ultralytics' predictor, validator and AutoBackend import torchvision first, so real runs
use torchvision; this script does the same, and also runs every case through TorchNMS and records whether the results
agree (they differ only where equal scores make the sort order matter: TorchNMS uses an unstable argsort).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)
os.environ.setdefault("YOLO_VERBOSE", "False")

import torchvision  # noqa: E402,F401  (as Ultralytics' predictor/validator do: selects torchvision.ops.nms)
import ultralytics  # noqa: E402
from ultralytics.utils.nms import non_max_suppression  # noqa: E402

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, ROOT  # noqa: E402

F32 = np.float32


def iou_f32(a, b) -> np.float32:
    """IoU of two xyxy boxes computed exactly as torchvision's CPU kernel / TorchNMS do, in float32."""
    a, b = [F32(v) for v in a], [F32(v) for v in b]
    area_a, area_b = F32(a[2] - a[0]) * F32(a[3] - a[1]), F32(b[2] - b[0]) * F32(b[3] - b[1])
    w = max(F32(0), F32(min(a[2], b[2]) - max(a[0], b[0])))
    h = max(F32(0), F32(min(a[3], b[3]) - max(a[1], b[1])))
    inter = F32(w * h)
    return F32(inter / F32(F32(area_a + area_b) - inter))


def nested_pair(target: np.float32, lo: int = 2000, hi: int = 2800):
    """Integer W, H, w, h (boxes [0,0,W,H] and [0,0,w,h]) whose float32 IoU is exactly `target`; deterministic."""
    for W in range(lo, hi):
        for H in range(W, hi, 7):
            k0 = int(W * H * float(target))
            for k in range(k0 - 3, k0 + 4):
                for w in range(max(1, k // H), W + 1):
                    if k % w == 0 and k // w <= H:
                        h = k // w
                        if iou_f32((0, 0, W, H), (0, 0, w, h)) == target:
                            return W, H, w, h
                        break
    raise RuntimeError(f"no pair for {target!r}")


def to_pred(boxes_xyxy, scores) -> torch.Tensor:
    """[A, 4] xyxy + [A, nc] scores -> [4+nc, A] with xywh rows (values exact in float32 for the inputs used)."""
    b = torch.tensor(boxes_xyxy, dtype=torch.float64)
    xywh = torch.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)
    return torch.cat([xywh, torch.tensor(scores, dtype=torch.float64)], 1).T.to(torch.float32).contiguous()


def run(pred: torch.Tensor, **kw):
    out, keep = non_max_suppression(pred.clone(), return_idxs=True, **kw)
    return [o.tolist() for o in out], [k.view(-1).tolist() for k in keep]


def run_torchnms(pred: torch.Tensor, **kw):
    tv = sys.modules.pop("torchvision")
    try:
        return run(pred, **kw)
    finally:
        sys.modules["torchvision"] = tv


def min_iou_margin(pred: torch.Tensor, iou_thres: float, agnostic: bool) -> float:
    """Smallest |IoU - thres| over same-class (or any, if agnostic) candidate pairs: robustness of a random case."""
    m = 1.0
    for p in pred:
        b = p[:4].T
        xyxy = torch.cat([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], 1)
        cls = p[4:].argmax(0)
        for i in range(len(b)):
            for j in range(i + 1, len(b)):
                if agnostic or cls[i] == cls[j]:
                    m = min(m, abs(float(iou_f32(xyxy[i].tolist(), xyxy[j].tolist())) - iou_thres))
    return m


def clusters(g: torch.Generator, nimg: int, nc: int, per: int, ncl: int, spread: float):
    """Random boxes jittered around a few cluster centres in a 320x320 image. Each cluster has a class that is the
    best class of most of its boxes; scores are continuous (no ties)."""
    preds = []
    for _ in range(nimg):
        rows, scs = [], []
        for _ in range(ncl):
            c = torch.rand(2, generator=g) * 200 + 60
            wh = torch.rand(2, generator=g) * 60 + 30
            kc = int(torch.randint(nc, (1,), generator=g))
            for _ in range(per):
                cc = c + (torch.rand(2, generator=g) - 0.5) * spread
                ww = wh * (1 + (torch.rand(2, generator=g) - 0.5) * 0.3)
                rows.append(torch.cat([cc - ww / 2, cc + ww / 2]).tolist())
                s = torch.rand(nc, generator=g) * 0.45
                best = kc if float(torch.rand(1, generator=g)) < 0.7 else int(torch.randint(nc, (1,), generator=g))
                s[best] = 0.5 + float(torch.rand(1, generator=g)) * 0.49
                scs.append(s.tolist())
        preds.append(to_pred(rows, scs))
    return torch.stack(preds)


def main() -> None:
    g = torch.Generator().manual_seed(31)
    cases = []

    def add(name, desc, pred, **kw):
        args = dict(conf_thres=0.25, iou_thres=0.7, agnostic=False, multi_label=False, max_det=300, max_nms=30000,
                    max_wh=7680)
        args.update(kw)
        out, keep = run(pred, **args)
        out2, keep2 = run_torchnms(pred, **args)
        c = {"name": name, "description": desc, "args": args, "shape": list(pred.shape),
             "pred": pred.tolist(), "output": out, "keep_index": keep, "torchnms_agrees": out == out2}
        if out != out2:
            c["torchnms_output"], c["torchnms_keep_index"] = out2, keep2
        cases.append(c)
        n = [len(o) for o in out]
        print(f"  {name:28s} kept {n}  torchnms_agrees={out == out2}")

    # (a) class-aware, predict defaults. Image 1 has no score above conf (empty output). Random draws are repeated
    # (deterministically) until no same-class pair (any pair, for the agnostic case f) has an IoU within 1e-3 of 0.7.
    while True:
        a = clusters(g, 2, 3, per=5, ncl=4, spread=10.0)
        a[1, 4:] *= 0.2  # image 1: all scores < 0.25
        if min(min_iou_margin(a[:1], 0.7, False), min_iou_margin(a[:1], 0.7, True)) > 1e-3:
            break
    add("a_class_aware_default", "predict defaults conf 0.25 iou 0.7, class-aware; image 1 has no candidate", a)

    # (f) agnostic on the same input
    add("f_agnostic", "same input as a_class_aware_default, agnostic=True (classes suppress each other)", a,
        agnostic=True)

    # (b) exact score ties
    boxes = [
        [10, 10, 50, 50], [11, 10, 51, 50],      # 0, 1: same class, IoU 0.95, equal score 0.8 -> one survives
        [100, 100, 140, 140], [200, 200, 240, 240], [100, 200, 140, 240],  # 2-4: disjoint, equal score 0.6
        [10, 200, 50, 240],                       # 5: class scores tie 0.7 / 0.7 (class 0 vs 1) -> argmax
        [12, 12, 48, 48],                         # 6: inside box 0, same class, score 0.8 as well (IoU 0.81)
        [300, 10, 340, 50], [302, 10, 342, 50],   # 7, 8: different classes, equal score 0.5, overlapping
    ]
    scores = [[0.8, 0.1, 0.1], [0.8, 0.1, 0.1], [0.1, 0.6, 0.1], [0.1, 0.6, 0.1], [0.1, 0.6, 0.1],
              [0.7, 0.7, 0.1], [0.8, 0.1, 0.1], [0.5, 0.1, 0.1], [0.1, 0.5, 0.1]]
    for i in range(16):  # 9-24: sixteen disjoint class-2 boxes, all score 0.4 (a long run of equal scores)
        boxes.append([400 + (i % 4) * 50, (i // 4) * 50, 440 + (i % 4) * 50, (i // 4) * 50 + 40])
        scores.append([0.1, 0.1, 0.4])
    add("b_score_ties", "exact score ties: overlapping same-class boxes with equal score (the lower anchor index "
        "survives), disjoint boxes with equal score (output in anchor order), a box whose two best class scores are "
        "equal (lower class index), overlapping equal-score boxes of different classes, and a run of 16 equal "
        "scores. torchvision sorts stably (ties by ascending anchor index); TorchNMS's argsort is not stable, so "
        "its order differs on the long run (recorded as torchnms_output)", to_pred(boxes, scores)[None])

    # (c) more survivors than max_det
    boxes, scores = [], []
    for i in range(20):
        x, y = (i % 5) * 60 + 10, (i // 5) * 60 + 10
        boxes.append([x, y, x + 40, y + 40])
        s = [0.05, 0.05, 0.05]
        s[i % 3] = 0.3 + 0.03 * ((i * 7) % 20)  # distinct scores 0.30..0.87
        scores.append(s)
    add("c_max_det", "20 disjoint survivors, max_det=5: the 5 best by score", to_pred(boxes, scores)[None], max_det=5)

    # (d) IoU exactly at / one float32 ulp around the threshold (float32 IoU as the kernels compute it)
    t = F32(0.7)
    pairs = {"eq": nested_pair(t), "up": nested_pair(np.nextafter(t, F32(1))), "dn": nested_pair(np.nextafter(t, F32(0)))}
    boxes, scores, notes = [], [], {}
    for k, (name, (W, H, w, h)) in enumerate(pairs.items()):
        x0 = k * 3000
        boxes += [[x0, 0, x0 + W, H], [x0, 0, x0 + w, h]]
        scores += [[0.9 - 0.1 * k, 0.0, 0.0], [0.85 - 0.1 * k, 0.0, 0.0]]
        v = iou_f32(boxes[-2], boxes[-1])
        notes[name] = {"boxes_xyxy": boxes[-2:], "iou_float32": float(v), "iou_float32_hex": float(v).hex()}
    # A 7th, below-conf box: with exactly 6 anchors non_max_suppression would take [B, 4+nc, 6] for an end-to-end
    # output [B, N, 6] (it tests prediction.shape[-1] == 6) and skip NMS altogether.
    boxes.append([9000, 0, 9010, 10])
    scores.append([0.01, 0.0, 0.0])
    add("d_iou_at_threshold", "three same-class pairs (the 2nd box of each inside the 1st, lower score): float32 IoU "
        "== float32(0.7) (kept: suppression needs IoU > thres), one ulp above (suppressed), one ulp below (kept). "
        "Boxes are integers so xywh<->xyxy is exact", to_pred(boxes, scores)[None])
    cases[-1]["iou_pairs"] = notes
    boxes = [[0, 0, 10, 10], [0, 0, 10, 5], [20, 0, 30, 10], [20, 0, 30, 6]]
    scores = [[0.9, 0, 0], [0.8, 0, 0], [0.7, 0, 0], [0.6, 0, 0]]
    add("d2_iou_exactly_half", "iou_thres=0.5; pair 1 IoU exactly 0.5 (kept), pair 2 IoU 0.6 (suppressed)",
        to_pred(boxes, scores)[None], iou_thres=0.5)

    # (e) multi-label, validation settings
    while True:
        e = clusters(g, 1, 3, per=4, ncl=3, spread=14.0)
        e[0, 4:] = e[0, 4:] ** 3  # spread scores down towards 0.001 so some rows are below conf
        if min_iou_margin(e, 0.7, True) > 1e-3:
            break
    add("e_multi_label_val", "validation settings: conf 0.001, iou 0.7, multi_label=True (one row per class score "
        "above conf; class-aware NMS over all rows)", e, conf_thres=0.001, multi_label=True)

    # (g) max_nms truncation before NMS
    boxes = [[i * 50, 0, i * 50 + 40, 40] for i in range(8)]
    scores = [[0.3 + 0.07 * ((i * 3) % 8), 0, 0] for i in range(8)]
    add("g_max_nms", "8 disjoint candidates, max_nms=5: only the 5 most confident enter NMS",
        to_pred(boxes, scores)[None], max_nms=5)

    doc = {
        "generator": "tools/golden/make_nms_fixtures.py",
        "ultralytics_version": ultralytics.__version__,
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "function": "ultralytics.utils.nms.non_max_suppression(pred, conf_thres, iou_thres, agnostic=..., "
        "multi_label=..., max_det=..., max_nms=..., max_wh=..., return_idxs=True)",
        "nms_kernel": "torchvision.ops.nms (used by Ultralytics whenever torchvision is imported, which predictor, "
        "validator and AutoBackend do); see torchnms_agrees per case for its own TorchNMS.nms",
        "format": {
            "pred": "[B][4+nc][A]: rows cx, cy, w, h (pixels), then nc class scores (probabilities)",
            "output": "per image, rows [x1, y1, x2, y2, conf, cls] in output order (descending conf)",
            "keep_index": "per image, anchor index (column of pred) of each output row",
        },
        "algorithm": [
            "candidates: max class score > conf_thres (strict)",
            "xywh -> xyxy (x1 = cx - w/2, x2 = cx + w/2)",
            "single label: conf, cls = max over classes (first index on ties), keep conf > conf_thres; "
            "multi_label (only if nc > 1): one row per (anchor, class) with score > conf_thres, ordered by anchor "
            "then class",
            "if more than max_nms rows: keep the max_nms most confident (argsort descending)",
            "class-aware: boxes offset by cls * max_wh (7680) before NMS, in float32; agnostic: no offset",
            "greedy NMS by descending score: a box is suppressed by a kept box when IoU > iou_thres (strict); "
            "IoU = inter / (area_i + area_j - inter) in float32",
            "keep the first max_det survivors",
        ],
        "quirk": "a prediction whose last dimension is 6 (i.e. exactly 6 anchors) is taken for an end-to-end "
        "[B, N, 6] output and only confidence-filtered; no fixture case has A == 6",
        "cases": cases,
    }
    path = OUT / "nms.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {path.relative_to(ROOT)}  {path.stat().st_size / 1e3:.1f} kB  {len(cases)} cases")


if __name__ == "__main__":
    sys.exit(main())
