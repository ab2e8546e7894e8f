"""Reads a TensorBoard event file with TensorBoard's own EventAccumulator and prints its scalars.

usage: python tools/tb_check.py EVENTS_FILE
Prints one JSON object: {tag: [[step, value], ...], ...}.
"""
import json
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
acc.Reload()
print(json.dumps({tag: [[e.step, e.value] for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}))
