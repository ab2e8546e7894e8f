"""Checks an exported ONNX model in ONNX Runtime against DualFuse's own forward pass.

usage: python tools/onnx_check.py MODEL.onnx CASE.safetensors [--save OUT.bin] [--box-tol 1e-3] [--score-tol 1e-4]

CASE holds the inputs (tensors named `input.<onnx input name>`) and DualFuse's decoded output for
them (`expected.output0`, [N, 4 + nc, A]). The script runs onnx.checker (full check), reads the
metadata, runs the model on CPU and compares: boxes (rows 0-3) within --box-tol pixels, class
scores within --score-tol. When CASE also holds a third implementation's output for the same
inputs (`reference.output0`, e.g. PyTorch's), the box tolerance is at least 1.5x the difference
between ONNX Runtime and that reference: two Float32 implementations of a deep network differ by
their summation orders, which the DFL's expectation multiplies by the stride (boxes of hundreds of
pixels differ by a few thousandths). Prints one JSON line; exits 1 when a check fails. --save
writes ONNX Runtime's output0 as raw little-endian float32 (for a caller's NMS).
"""
import argparse
import json
import struct
import sys

import numpy as np
import onnx
import onnxruntime as ort

DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "F64": np.float64, "I32": np.int32, "U8": np.uint8}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        arr = np.frombuffer(data[base + b:base + e], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
        out[name] = arr.astype(np.float32)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("case")
    p.add_argument("--save")
    p.add_argument("--box-tol", type=float, default=1e-3)
    p.add_argument("--score-tol", type=float, default=1e-4)
    a = p.parse_args()

    result = {"model": a.model}
    m = onnx.load(a.model)
    onnx.checker.check_model(m, full_check=True)
    result["checker"] = "ok"
    result["ir_version"] = m.ir_version
    result["opset"] = [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")]
    result["metadata"] = {p.key: p.value for p in m.metadata_props}

    tensors = read_safetensors(a.case)
    sess = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
    feeds = {}
    for i in sess.get_inputs():
        key = "input." + i.name
        if key not in tensors:
            print(json.dumps({**result, "ok": False, "error": f"case has no {key}"}))
            sys.exit(1)
        feeds[i.name] = tensors[key]
    result["inputs"] = {i.name: list(feeds[i.name].shape) for i in sess.get_inputs()}
    out = sess.run(["output0"], feeds)[0]
    expected = tensors["expected.output0"]
    result["output_shape"] = list(out.shape)
    if out.shape != expected.shape:
        print(json.dumps({**result, "ok": False, "error": f"output0 shape {list(out.shape)} != expected {list(expected.shape)}"}))
        sys.exit(1)
    box = float(np.max(np.abs(out[:, :4, :] - expected[:, :4, :])))
    score = float(np.max(np.abs(out[:, 4:, :] - expected[:, 4:, :])))
    box_tol = a.box_tol
    if "reference.output0" in tensors:
        ref = tensors["reference.output0"]
        floor = float(np.max(np.abs(out[:, :4, :] - ref[:, :4, :])))
        result["ort_vs_reference_box_diff"] = floor
        box_tol = max(box_tol, 1.5 * floor)
    result.update(max_box_diff=box, max_score_diff=score, box_tol=box_tol, score_tol=a.score_tol)
    result["ok"] = box <= box_tol and score <= a.score_tol
    if a.save:
        out.astype("<f4").tofile(a.save)
    print(json.dumps(result))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
