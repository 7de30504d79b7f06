"""One-off conversion of musicnn's TF1 checkpoints to safetensors, without TensorFlow.

The ``musicnn`` wheel (PyPI, ISC licence, Jordi Pons / MTG-UPF) ships ``MTT_musicnn/`` and ``MSD_musicnn/``
as TensorFlow "V2" checkpoints: ``.index`` is a LevelDB-style sorted table mapping each variable name to a
``BundleEntryProto`` (dtype, shape, offset, size), ``.data-00000-of-00001`` holds the raw little-endian bytes.
This module reads both with the standard library and numpy, drops the optimiser slots (Adam moments), and
writes the model's float32 weights under their TF names. The result ships in ``avrec/encoders/weights/``;
regenerate it with::

    pip download musicnn==0.1.0 --no-deps -d /tmp/m
    python -m avrec.encoders.musicnn_convert /tmp/m/musicnn-0.1.0-py3-none-any.whl  # [OUT_DIR]
"""

from __future__ import annotations

import json
import struct
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = ["read_checkpoint", "convert_wheel", "MTT_LABELS", "MSD_LABELS"]

_MAGIC = 0xDB4775248B80FB57
_DT_FLOAT = 1
# musicnn/configuration.py (0.1.0)
MTT_LABELS = ["guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano",
              "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing",
              "vocals", "no vocals", "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal",
              "pop", "soft", "sitar", "solo", "man", "classic", "choir", "voice", "new age", "dance", "male voice",
              "female vocal", "beats", "harp", "cello", "no voice", "weird", "country", "metal", "female voice",
              "choral"]
MSD_LABELS = ["rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
              "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock", "soul",
              "indie rock", "Mellow", "electronica", "80s", "folk", "90s", "chill", "instrumental", "punk", "oldies",
              "blues", "hard rock", "ambient", "acoustic", "experimental", "female vocalist", "guitar", "Hip-Hop",
              "70s", "party", "country", "easy listening", "sexy", "catchy", "funk", "electro", "heavy metal",
              "Progressive rock", "60s", "rnb", "indie pop", "sad", "House", "happy"]


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        c = buf[i]
        i += 1
        result |= (c & 0x7F) << shift
        shift += 7
        if c < 0x80:
            return result, i


def _block(table: bytes, offset: int, size: int) -> bytes:
    if table[offset + size] != 0:
        raise ValueError("compressed checkpoint index blocks are not supported")
    return table[offset : offset + size]


def _entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Key/value pairs of one table block (prefix-compressed keys, restart array at the end)."""
    n_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end, i, key = len(block) - 4 - 4 * n_restarts, 0, b""
    while i < end:
        shared, i = _varint(block, i)
        unshared, i = _varint(block, i)
        length, i = _varint(block, i)
        key = key[:shared] + block[i : i + unshared]
        i += unshared
        yield key, block[i : i + length]
        i += length


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """A protobuf message as (field number, value) pairs (varint, length-delimited, fixed32/64)."""
    out: list[tuple[int, int | bytes]] = []
    i = 0
    while i < len(buf):
        tag, i = _varint(buf, i)
        number, wire = tag >> 3, tag & 7
        value: int | bytes
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            length, i = _varint(buf, i)
            value, i = buf[i : i + length], i + length
        elif wire in (1, 5):
            step = 8 if wire == 1 else 4
            value, i = buf[i : i + step], i + step
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((number, value))
    return out


def read_checkpoint(index: bytes, data: bytes) -> dict[str, np.ndarray]:
    """Every float32 variable of a TF checkpoint, from the bytes of its ``.index`` and single data shard."""
    if struct.unpack("<Q", index[-8:])[0] != _MAGIC:
        raise ValueError("not a TensorFlow checkpoint index (bad table magic)")
    footer, j = index[-48:], 0
    for _ in range(2):  # skip the metaindex handle
        _, j = _varint(footer, j)
    index_offset, j = _varint(footer, j)
    index_size, j = _varint(footer, j)
    tensors: dict[str, np.ndarray] = {}
    for _, handle in _entries(_block(index, index_offset, index_size)):
        offset, k = _varint(handle, 0)
        size, k = _varint(handle, k)
        for key, value in _entries(_block(index, offset, size)):
            if not key:  # the header entry
                continue
            entry = dict(_fields(value))
            if entry.get(1, 0) != _DT_FLOAT or entry.get(3, 0) != 0:
                raise ValueError(f"{key.decode()}: only float32 tensors in one shard are supported")
            shape_msg = entry.get(2, b"")
            assert isinstance(shape_msg, bytes)
            shape = [int(dict(_fields(dim)).get(1, 0)) for n, dim in _fields(shape_msg) if n == 2 and
                     isinstance(dim, bytes)]
            start, length = int(entry.get(4, 0)), int(entry.get(5, 0))
            tensors[key.decode()] = np.frombuffer(data[start : start + length], "<f4").reshape(shape).copy()
    return tensors


def convert_wheel(wheel: Path, out_dir: Path) -> list[Path]:
    """Write ``musicnn_mtt.safetensors`` and ``musicnn_msd.safetensors`` (model weights only) from the wheel."""
    from safetensors.numpy import save_file

    written = []
    with zipfile.ZipFile(wheel) as zf:
        licence = next((n for n in zf.namelist() if n.endswith("LICENSE.md")), None)
        for name, labels in (("MTT", MTT_LABELS), ("MSD", MSD_LABELS)):
            prefix = f"musicnn/{name}_musicnn/"
            tensors = read_checkpoint(zf.read(prefix + ".index"), zf.read(prefix + ".data-00000-of-00001"))
            weights = {k: v for k, v in tensors.items() if "Adam" not in k and not k.endswith("_power")}
            meta = {"labels": json.dumps(labels), "source": f"musicnn 0.1.0 {name}_musicnn (ISC licence)"}
            path = out_dir / f"musicnn_{name.lower()}.safetensors"
            save_file(dict(sorted(weights.items())), str(path), metadata=meta)
            written.append(path)
        if licence:
            (out_dir / "LICENSE-musicnn.md").write_bytes(zf.read(licence))
    return written


if __name__ == "__main__":
    target = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).parent / "weights"
    for p in convert_wheel(Path(sys.argv[1]), target):
        print(p, p.stat().st_size)
