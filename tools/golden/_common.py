"""Helpers shared by the golden-fixture scripts."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "Tests" / "Fixtures"

_DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write a safetensors file byte-for-byte deterministically.

    safetensors.torch.save_file emits `__metadata__` in hash-map order, so two runs give different bytes. Here the
    header is JSON with sorted keys (`__metadata__` first), tensors are laid out by descending element size then
    name (so every tensor starts at a multiple of its element size), and the header is space-padded to 8 bytes, as
    the format requires. Little-endian data (x86/ARM hosts).
    """
    for k, v in metadata.items():
        assert isinstance(k, str) and isinstance(v, str), f"metadata {k!r} must map str -> str"
    order = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    header: dict = {"__metadata__": dict(sorted(metadata.items()))}
    blobs, offset = [], 0
    for k in order:
        t = tensors[k].detach().cpu().contiguous()
        b = t.numpy().tobytes() if t.dtype != torch.bool else t.to(torch.uint8).numpy().tobytes()
        header[k] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode()
    h += b" " * (-len(h) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def tensor_list(t: torch.Tensor) -> list:
    """Nested Python lists of floats/ints for JSON (float32 values are exact in JSON as Python floats)."""
    return t.detach().cpu().tolist()
