"""Memory-mapped reading of safetensors files: arrays backed by the page cache, shared between processes.

``avrec serve --workers N`` runs N processes over one model folder. Reading ``model.safetensors`` with
:func:`safetensors.numpy.load_file` gives each process a private copy (EASE's item × item matrix is
380 MB on ml-latest-small); mapping the file gives every process views of the same pages. The mapping
is copy-on-write (``ACCESS_COPY``): a model that changes an array in place changes its own copy of
those pages, never the file or another process. Model folders are replaced by an atomic swap
(:mod:`avrec.models.artifacts`), never rewritten in place, so a mapped file never changes under a reader.
"""

from __future__ import annotations

import json
import mmap
import struct
from pathlib import Path

import numpy as np

#: safetensors dtype names → numpy (BF16 has no numpy type: such files are read by safetensors itself)
DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
          "I16": np.int16, "I8": np.int8, "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8,
          "BOOL": np.bool_}


def map_tensors(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a safetensors file as copy-on-write views of one mapping of it; None when the file
    has a dtype numpy lacks. A ValueError names what is wrong with a damaged file."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        if size < 8:
            raise ValueError(f"{size} bytes: shorter than a safetensors header")
        f.seek(0)
        (n,) = struct.unpack("<Q", f.read(8))
        if n > size - 8:
            raise ValueError(f"header of {n} bytes in a file of {size}")
        header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        header.pop("__metadata__", None)
        if any(not isinstance(v, dict) or v.get("dtype") not in DTYPES for v in header.values()):
            return None
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    start, out = 8 + n, {}
    for name, info in header.items():
        dtype = np.dtype(DTYPES[info["dtype"]])
        shape = tuple(int(d) for d in info["shape"])
        lo, hi = (int(x) for x in info["data_offsets"])
        count = int(np.prod(shape, dtype=np.int64))
        if not 0 <= lo <= hi <= size - start or hi - lo != count * dtype.itemsize:
            raise ValueError(f"tensor {name!r}: offsets {lo}..{hi} do not fit its shape {shape} or the file")
        out[name] = np.frombuffer(buf, dtype=dtype, count=count, offset=start + lo).reshape(shape)
    return out
