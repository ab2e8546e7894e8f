"""Golden fixture for detection metrics as Ultralytics' DetectionValidator computes them (8.4.190).

Run from the repository root:
    /work/venv/bin/python tools/golden/make_metrics_fixtures.py

Writes Tests/Fixtures/metrics.json: six images with ground truths and (already NMS-ed, confidence-sorted)
predictions, 3 classes. Class 2 has predictions but no ground truth; image 2 has neither; image 3 has ground truth but
no predictions; image 4 has predictions but no ground truth; image 5 holds a pair where 8.4's greedy
confidence-order matching differs from the older IoU-sorted matching. For each image: the IoU matrix (box_iou) and
the true-positive matrix (DetectionValidator._process_batch -> match_predictions) at IoU 0.50:0.05:0.95; then
DetMetrics / ap_per_class results (p, r, f1 at the max mean-F1 confidence, AP per class x 10 thresholds, mAP50,
mAP50-95, fitness) and confusion matrices. Edge cases: no predictions at all, no ground truth at all.
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

import ultralytics  # noqa: E402
from ultralytics.models.yolo.detect.val import DetectionValidator  # noqa: E402
from ultralytics.utils.metrics import ConfusionMatrix, DetMetrics, ap_per_class, box_iou  # noqa: E402

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, ROOT  # noqa: E402

NAMES = {0: "person", 1: "car", 2: "bicycle"}

# Boxes in pixels xyxy. gt rows [x1, y1, x2, y2, cls]; pred rows [x1, y1, x2, y2, conf, cls] (sorted below).
IMAGES = [
    {  # image 0: three GTs; a duplicate; an IoU of exactly 0.75; a class-2 prediction on a car
        "gt": [[10, 10, 50, 50, 0], [60, 60, 90, 90, 1], [55, 10, 95, 40, 0]],
        "pred": [
            [12, 12, 50, 52, 0.90, 0],     # good match of GT 0
            [20, 15, 55, 50, 0.75, 0],     # duplicate on GT 0
            [60, 60, 90, 82.5, 0.60, 1],   # IoU exactly 0.75 with GT 1 (30 x 22.5 inside 30 x 30)
            [62, 58, 92, 88, 0.55, 2],     # class 2 (no GT anywhere) on the car
            [60, 14, 98, 46, 0.30, 0],     # moderate match of GT 2
        ],
    },
    {  # image 1: two cars; a wrong-class prediction; a very low-confidence good prediction
        "gt": [[5, 5, 45, 35, 1], [50, 50, 95, 90, 1]],
        "pred": [
            [6, 5, 45, 36, 0.85, 1],
            [48, 52, 95, 92, 0.40, 0],     # wrong class on car 2
            [51, 50, 95, 89, 0.05, 1],     # good box, low confidence
        ],
    },
    {"gt": [], "pred": []},  # image 2: empty
    {"gt": [[20, 20, 60, 70, 0], [65, 30, 90, 60, 1]], "pred": []},  # image 3: missed everything
    {"gt": [], "pred": [[10, 10, 40, 40, 0.70, 2], [50, 50, 80, 80, 0.20, 0]]},  # image 4: only false positives
    {  # image 5: greedy (confidence order) vs IoU-sorted matching; plus an exact 0.5 IoU
        "gt": [[0, 0, 40, 40, 1], [20, 0, 60, 40, 1], [0, 50, 40, 90, 0]],
        "pred": [
            [20, 0, 60, 42, 0.95, 1],      # takes GT 1 (IoU 0.952)
            [11, 0, 51, 40, 0.80, 1],      # IoU 0.633 with GT 1 (its best, already claimed), 0.569 with GT 0:
                                           # 8.4 greedy matching gives it GT 0 (TP at 0.50, 0.55); the pre-8.4
                                           # IoU-sorted matching let it compete only for GT 1 (FP)
            [0, 50, 40, 70, 0.65, 0],      # IoU exactly 0.5 with GT 2
        ],
    },
]


def validator() -> DetectionValidator:
    """Just enough of a DetectionValidator to run its own _process_batch / match_predictions."""
    v = DetectionValidator.__new__(DetectionValidator)
    v.iouv = torch.linspace(0.5, 0.95, 10)
    v.niou = v.iouv.numel()
    return v


def as_preds(rows):
    p = torch.tensor(rows, dtype=torch.float32).view(-1, 6)
    p = p[p[:, 4].argsort(descending=True, stable=True)]  # NMS output order
    return {"bboxes": p[:, :4], "conf": p[:, 4], "cls": p[:, 5]}


def as_gt(rows):
    g = torch.tensor(rows, dtype=torch.float32).view(-1, 5)
    return {"bboxes": g[:, :4], "cls": g[:, 4]}


def old_style_matches(pred_cls, gt_cls, iou, thresholds):
    """Pre-8.4 match_predictions (IoU-sorted unique matching), only to show where image 5 differs."""
    correct = np.zeros((len(pred_cls), len(thresholds)), dtype=bool)
    iou = (iou * (gt_cls[:, None] == pred_cls[None])).numpy()
    for i, t in enumerate(thresholds):
        m = np.array(np.nonzero(iou >= t)).T
        if m.shape[0]:
            if m.shape[0] > 1:
                m = m[iou[m[:, 0], m[:, 1]].argsort()[::-1]]
                m = m[np.unique(m[:, 1], return_index=True)[1]]
                m = m[np.unique(m[:, 0], return_index=True)[1]]
            correct[m[:, 1].astype(int), i] = True
    return correct


def summarise(metrics: DetMetrics, stats: dict) -> dict:
    box = metrics.box
    tp, fp, p, r, f1, ap, uc, p_curve, r_curve, f1_curve, x, prec = ap_per_class(
        stats["tp"], stats["conf"], stats["pred_cls"], stats["target_cls"], names=NAMES)
    assert np.array_equal(np.asarray(box.p), p) and np.array_equal(np.asarray(box.all_ap), ap)
    mean_f1 = f1_curve.mean(0) if len(uc) else np.zeros(1000)
    d = {
        "unique_classes": uc.tolist(),
        "nt_per_class": metrics.nt_per_class.tolist(),
        "nt_per_image": metrics.nt_per_image.tolist(),
        "max_f1_index": int(np.argmax(_smooth(mean_f1, 0.1))) if len(uc) else 0,
        "tp_at_max_f1": tp.tolist(),
        "fp_at_max_f1": fp.tolist(),
        "p": p.tolist(),
        "r": r.tolist(),
        "f1": f1.tolist(),
        "ap": ap.tolist(),
        "ap50": ap[:, 0].tolist() if len(uc) else [],
        "ap50_95": ap.mean(1).tolist() if len(uc) else [],
        "mp": float(box.mp),
        "mr": float(box.mr),
        "map50": float(box.map50),
        "map75": float(box.map75),
        "map": float(box.map),
        "maps_per_class": box.maps.tolist(),
        "fitness_ultralytics_8_4_190": float(metrics.fitness),
        "fitness_0.1_map50_0.9_map": 0.1 * float(box.map50) + 0.9 * float(box.map),
        "results_dict": {k: float(v) for k, v in metrics.results_dict.items()},
    }
    return d


def _smooth(y, f):
    from ultralytics.utils.metrics import smooth
    return smooth(y, f)


def evaluate(images: list[dict], with_details: bool) -> dict:
    v = validator()
    metrics = DetMetrics(names=NAMES)
    cms = {key: ConfusionMatrix(names=NAMES) for key in ("conf0.25_iou0.45", "conf0.001_iou0.45")}
    per_image = []
    for k, im in enumerate(images):
        pred, gt = as_preds(im["pred"]), as_gt(im["gt"])
        tp = v._process_batch(pred, gt)["tp"]
        cls = gt["cls"].numpy()
        no_pred = pred["cls"].shape[0] == 0
        metrics.update_stats({
            "tp": tp, "target_cls": cls, "target_img": np.unique(cls),
            "conf": np.zeros(0) if no_pred else pred["conf"].numpy(),
            "pred_cls": np.zeros(0) if no_pred else pred["cls"].numpy(),
            "im_name": f"img{k}.jpg",
        })
        cms["conf0.25_iou0.45"].process_batch(pred, gt)  # its defaults: conf 0.25, iou_thres 0.45
        cms["conf0.001_iou0.45"].process_batch(pred, gt, conf=0.001)  # as the validator calls it (args.conf)
        if with_details:
            iou = box_iou(gt["bboxes"], pred["bboxes"]) if len(cls) and not no_pred else torch.zeros(len(cls), 0)
            row = {
                "gt": im["gt"],
                "pred": [[*b, c, k_] for b, c, k_ in zip(pred["bboxes"].tolist(), pred["conf"].tolist(),
                                                         pred["cls"].tolist())],
                "iou": iou.tolist(),
                "tp": tp.astype(int).tolist(),
            }
            if len(cls) and not no_pred:
                old = old_style_matches(pred["cls"], gt["cls"], iou, v.iouv.numpy())
                if not np.array_equal(old, tp):
                    row["tp_pre_8_4_iou_sorted_matching"] = old.astype(int).tolist()
            per_image.append(row)
    stats = metrics.process()
    out = summarise(metrics, stats)
    out["confusion_matrix"] = {k: cm.matrix.astype(int).tolist() for k, cm in cms.items()}
    out["image_metrics"] = metrics.box.image_metrics
    if with_details:
        out = {"images": per_image, **out}
    return out


def main() -> None:
    v = validator()
    main_case = evaluate(IMAGES, True)
    no_preds = evaluate([{"gt": im["gt"], "pred": []} for im in IMAGES], False)
    no_gt = evaluate([{"gt": [], "pred": im["pred"]} for im in IMAGES], False)
    doc = {
        "generator": "tools/golden/make_metrics_fixtures.py",
        "ultralytics_version": ultralytics.__version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "names": {str(k): n for k, n in NAMES.items()},
        "iou_thresholds_float32": v.iouv.tolist(),
        "format": {
            "gt": "[x1, y1, x2, y2, cls] pixels",
            "pred": "[x1, y1, x2, y2, conf, cls] pixels, sorted by descending conf (stable), as NMS outputs them",
            "iou": "[n_gt][n_pred] box_iou, float32: inter / (area1 + area2 - inter + 1e-7). Compute it in Float32: "
            "the fixture has IoUs of exactly 0.5 and 0.75 (equal to thresholds) where the +1e-7 vanishes in float32 "
            "but would push a Double result just below the threshold",
            "tp": "[n_pred][10] 0/1, DetectionValidator.match_predictions: for each prediction in order, per "
            "threshold, the unclaimed same-class GT with the highest IoU; correct if IoU >= threshold (float32)",
            "ap": "[len(unique_classes)][10]; classes are those with ground truth (class 2 has none, so it has no AP)",
            "p/r/f1": "per class in unique_classes, at the confidence index maximising smooth(mean F1 over classes, "
            "0.1) on the 1000-point confidence grid",
            "confusion_matrix": "[pred class or background][true class or background] (nc + 1)^2, "
            "ConfusionMatrix.process_batch(conf, iou_thres)",
            "fitness": "8.4.190 DetMetrics.fitness = mAP50-95 (weights [0, 0, 0, 1]); the 0.1/0.9 mix is the "
            "pre-8.4 definition, given for comparison",
        },
        "main": main_case,
        "edge_no_predictions": no_preds,
        "edge_no_ground_truth": no_gt,
    }
    path = OUT / "metrics.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {path.relative_to(ROOT)}  {path.stat().st_size / 1e3:.1f} kB")
    for k in ("main", "edge_no_predictions", "edge_no_ground_truth"):
        d = doc[k]
        print(f"  {k}: mp {d['mp']:.6f} mr {d['mr']:.6f} map50 {d['map50']:.6f} map {d['map']:.6f} "
              f"fitness {d['fitness_ultralytics_8_4_190']:.6f} classes {d['unique_classes']}")


if __name__ == "__main__":
    sys.exit(main())
