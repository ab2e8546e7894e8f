"""Re-implement LOSS_NOTES.md in plain PyTorch (no Ultralytics code) and check it against loss_v8.safetensors.

Run from the repository root after make_loss_fixtures.py:
    /work/venv/bin/python tools/golden/loss_spec_check.py

If this passes, the notes describe Ultralytics 8.4.190's computation completely enough to reproduce assignment,
loss and gradients. It is also a compact reference for the Swift implementation (one image at a time, explicit loops
where Ultralytics vectorises).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
from safetensors import safe_open

torch.set_num_threads(1)
sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT  # noqa: E402

R, NC = 16, 3
TOPK, ALPHA, BETA, EPS = 10, 0.5, 6.0, 1e-9
STRIDE_VAL = 16.0
GAIN = (7.5, 0.5, 1.5)


def ciou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Section 7; a, b (..., 4) xyxy."""
    x1a, y1a, x2a, y2a = a.unbind(-1)
    x1b, y1b, x2b, y2b = b.unbind(-1)
    w1, h1 = x2a - x1a, y2a - y1a + eps
    w2, h2 = x2b - x1b, y2b - y1b + eps
    inter = (torch.minimum(x2a, x2b) - torch.maximum(x1a, x1b)).clamp(0) * (
        torch.minimum(y2a, y2b) - torch.maximum(y1a, y1b)).clamp(0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = torch.maximum(x2a, x2b) - torch.minimum(x1a, x1b)
    ch = torch.maximum(y2a, y2b) - torch.minimum(y1a, y1b)
    c2 = cw.pow(2) + ch.pow(2) + eps
    rho2 = ((x1b + x2b - x1a - x2a).pow(2) + (y1b + y2b - y1a - y2a).pow(2)) / 4
    v = (4 / math.pi**2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)).pow(2)
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return iou - (rho2 / c2 + v * alpha)


def anchors(sizes=((8, 8), (4, 4), (2, 2)), strides=(8.0, 16.0, 32.0)):
    pts, st = [], []
    for (h, w), s in zip(sizes, strides):
        for y in range(h):
            for x in range(w):
                pts.append((x + 0.5, y + 0.5))
                st.append(s)
    return torch.tensor(pts), torch.tensor(st)[:, None]


def preprocess(batch_idx, cls, bboxes, B, imgsz):
    per = [[(c, bb) for i, c, bb in zip(batch_idx.tolist(), cls[:, 0].tolist(), bboxes.tolist()) if int(i) == b]
           for b in range(B)]
    n = max(len(p) for p in per)
    gl, gb = torch.zeros(B, n, 1), torch.zeros(B, n, 4)
    for b, rows in enumerate(per):
        for j, (c, (cx, cy, w, h)) in enumerate(rows):
            cx, cy, w, h = (torch.tensor([cx, cy, w, h]) * imgsz).tolist()
            t = torch.tensor([cx, cy, w, h], dtype=torch.float32) * 1  # float32 like Ultralytics
            gl[b, j, 0] = c
            gb[b, j] = torch.stack([t[0] - t[2] / 2, t[1] - t[3] / 2, t[0] + t[2] / 2, t[1] + t[3] / 2])
    mask = (gb.sum(-1, keepdim=True) > 0).float()
    return gl, gb, mask


def decode(pred_distri, anc):
    p = pred_distri.view(*pred_distri.shape[:2], 4, R).softmax(-1) @ torch.arange(R, dtype=torch.float32)
    return torch.cat([anc - p[..., :2], anc + p[..., 2:]], -1)


def assign(pd_scores, pd_bboxes, anc, gl, gb, mask_gt):
    B, A, _ = pd_scores.shape
    n = gb.shape[1]
    # 1. candidates (enlarge short sides to STRIDE_VAL)
    cxcy, wh = (gb[..., :2] + gb[..., 2:]) / 2, gb[..., 2:] - gb[..., :2]
    wh = torch.where((wh < STRIDE_VAL) & mask_gt.bool(), torch.full_like(wh, STRIDE_VAL), wh)
    reg = torch.cat([cxcy - wh / 2, cxcy + wh / 2], -1)
    d = torch.stack([anc[None, None, :, 0] - reg[..., 0:1], anc[None, None, :, 1] - reg[..., 1:2],
                     reg[..., 2:3] - anc[None, None, :, 0], reg[..., 3:4] - anc[None, None, :, 1]], -1)
    in_gts = (d > 1e-9).all(-1)  # (B, n, A)
    cand = in_gts & mask_gt.bool()
    # 2. metrics
    overlaps = torch.zeros(B, n, A)
    align = torch.zeros(B, n, A)
    for b in range(B):
        for j in range(n):
            for a in range(A):
                if cand[b, j, a]:
                    o = ciou(gb[b, j], pd_bboxes[b, a]).clamp(0)
                    overlaps[b, j, a] = o
                    align[b, j, a] = pd_scores[b, a, int(gl[b, j, 0])].pow(ALPHA) * o.pow(BETA)
    # 3. top-k (only metric > 0 can be chosen: the fixture has no zero-metric inside candidates)
    mask_pos = torch.zeros(B, n, A)
    for b in range(B):
        for j in range(n):
            if not mask_gt[b, j, 0]:
                continue
            order = sorted(range(A), key=lambda a: (-float(align[b, j, a]), a))[:TOPK]
            for a in order:
                if in_gts[b, j, a]:
                    mask_pos[b, j, a] = 1
    # 4. one GT per anchor
    fg = mask_pos.sum(1)
    best = overlaps.argmax(1)  # first max on ties
    for b in range(B):
        for a in range(A):
            if fg[b, a] > 1:
                mask_pos[b, :, a] = 0
                mask_pos[b, best[b, a], a] = 1
    fg_mask, gt_idx = mask_pos.max(1)
    # 5. targets
    tl = torch.stack([gl[b, gt_idx[b], 0] for b in range(B)]).long().clamp(0)
    tb = torch.stack([gb[b, gt_idx[b]] for b in range(B)])
    ts = torch.nn.functional.one_hot(tl, NC).float() * fg_mask[..., None]
    # 6. normalisation
    align = align * mask_pos
    overlaps = overlaps * mask_pos
    pos_align = align.amax(-1, keepdim=True)
    pos_ov = overlaps.amax(-1, keepdim=True)
    norm = (align * pos_ov / (pos_align + EPS)).amax(1)
    ts = ts * norm[..., None]
    return tl, tb, ts, fg_mask.bool(), gt_idx, mask_pos


def loss_fn(boxes, scores, batch_idx, cls, bboxes):
    B = boxes.shape[0]
    anc, st = anchors()
    pred_distri, pred_scores = boxes.permute(0, 2, 1), scores.permute(0, 2, 1)
    gl, gb, mask_gt = preprocess(batch_idx, cls, bboxes, B, 64.0)
    pred_bboxes = decode(pred_distri, anc)
    with torch.no_grad():
        tl, tb, ts, fg, gt_idx, mask_pos = assign(pred_scores.sigmoid(), pred_bboxes * st, anc * st, gl, gb, mask_gt)
    tss = ts.sum().clamp(min=1)
    l_cls = torch.nn.functional.binary_cross_entropy_with_logits(pred_scores, ts, reduction="none").sum() / tss
    w = ts[fg].sum(-1)
    tgt = (tb / st)[fg]
    anc_fg = anc[None].expand(B, -1, -1)[fg]
    l_box = ((1 - ciou(pred_bboxes[fg], tgt)) * w).sum() / tss
    t = torch.cat([anc_fg - tgt[:, :2], tgt[:, 2:] - anc_fg], -1).clamp(0, R - 1 - 0.01)
    logp = pred_distri[fg].view(-1, 4, R).log_softmax(-1)
    lo = t.long()
    wl = (lo + 1) - t
    ce = -(logp.gather(-1, lo[..., None])[..., 0] * wl + logp.gather(-1, (lo + 1)[..., None])[..., 0] * (1 - wl))
    l_dfl = (ce.mean(-1) * w).sum() / tss
    loss = torch.stack([l_box * GAIN[0], l_cls * GAIN[1], l_dfl * GAIN[2]])
    return loss * B, loss.detach(), dict(target_labels=tl, target_bboxes=tb, target_scores=ts, fg_mask=fg,
                                         target_gt_idx=gt_idx, mask_pos=mask_pos, tss=tss)


def close(name, got, want, rtol, atol=1e-7):
    got, want = got.double(), want.double()
    err = (got - want).abs() / want.abs().clamp(min=atol)
    ok = torch.allclose(got, want, rtol=rtol, atol=atol)
    print(f"  {'ok ' if ok else 'BAD'} {name:28s} max rel err {float(err.max()) if err.numel() else 0:.2e}")
    return ok


def main() -> int:
    path = OUT / "loss_v8.safetensors"
    with safe_open(str(path), "pt") as f:
        t = {k: f.get_tensor(k) for k in f.keys()}
    good = True
    for p in ("", "aligned."):
        print(f"case {p or 'random'}")
        boxes = t[p + "boxes"].clone().requires_grad_(True)
        scores = t[p + "scores"].clone().requires_grad_(True)
        loss, items, asg = loss_fn(boxes, scores, t["batch_idx"], t["cls"], t["bboxes"])
        loss.sum().backward()
        good &= close("loss", loss.detach(), t[p + "loss"], 1e-5)
        good &= close("loss_items", items, t[p + "loss_items"], 1e-5)
        good &= close("grad.boxes", boxes.grad, t[p + "grad.boxes"], 1e-4, 1e-8)
        good &= close("grad.scores", scores.grad, t[p + "grad.scores"], 1e-4, 1e-8)
        good &= close("target_scores_sum", asg["tss"], t[p + "target_scores_sum"], 1e-5)
        for k in ("target_labels", "target_gt_idx", "fg_mask", "mask_pos"):
            ok = torch.equal(asg[k].to(t[p + "assign." + k].dtype), t[p + "assign." + k])
            print(f"  {'ok ' if ok else 'BAD'} assign.{k} (exact)")
            good &= ok
        good &= close("assign.target_bboxes", asg["target_bboxes"], t[p + "assign.target_bboxes"], 1e-6)
        good &= close("assign.target_scores", asg["target_scores"], t[p + "assign.target_scores"], 1e-5, 1e-9)
    print("ALL OK" if good else "MISMATCH")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
