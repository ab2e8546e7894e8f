"""Times an ONNX model in ONNX Runtime (CPU): median latency of batch-1 inference on random inputs.

usage: python tools/onnx_bench.py MODEL.onnx [--runs 20] [--threads 2]
Prints one JSON line: {"ms_median": ..., "ms_min": ..., "threads": ..., "onnxruntime": version}.
"""
import argparse
import json
import statistics
import time

import numpy as np
import onnxruntime as ort

p = argparse.ArgumentParser()
p.add_argument("model")
p.add_argument("--runs", type=int, default=20)
p.add_argument("--threads", type=int, default=2)
a = p.parse_args()
so = ort.SessionOptions()
so.intra_op_num_threads = a.threads
so.inter_op_num_threads = 1
sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
rng = np.random.default_rng(0)
feeds = {i.name: rng.random([d if isinstance(d, int) else 1 for d in i.shape], dtype=np.float32) for i in sess.get_inputs()}
for _ in range(3):
    sess.run(None, feeds)
times = []
for _ in range(a.runs):
    t = time.perf_counter()
    sess.run(None, feeds)
    times.append((time.perf_counter() - t) * 1e3)
print(json.dumps({"ms_median": statistics.median(times), "ms_min": min(times), "threads": a.threads, "onnxruntime": ort.__version__}))
