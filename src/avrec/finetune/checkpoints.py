"""Checkpoint files of the fine-tuning trainer: model, optimizer and every RNG state as safetensors + JSON."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import nn

from avrec.errors import DataError


def optimizer_to_files(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, state in sd["state"].items():
        for k, v in state.items():
            if torch.is_tensor(v):
                tensors[f"state.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    groups = [{k: v for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_files(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = v
    for key, v in meta.get("scalars", {}).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    name, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy.keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    py = random.getstate()
    meta = {"numpy": [name, int(pos), int(has_gauss), float(cached)], "python": [py[0], list(py[1]), py[2]]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
        if states:
            torch.cuda.set_rng_state_all(states)
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, tensors["numpy.keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, state, gauss = meta["python"]
    random.setstate((version, tuple(state), gauss))


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer (a full state dict) as contiguous CPU tensors, shared storage deduplicated."""
    out, seen = {}, set()
    for k, v in model.state_dict().items():
        ptr = (v.data_ptr(), tuple(v.shape)) if v.numel() else None
        if ptr is not None and ptr in seen:
            continue
        if ptr is not None:
            seen.add(ptr)
        out[k] = v.detach().cpu().clone().contiguous()
    return out


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    # tied weights (saved once) show up as missing; anything unexpected is a real mismatch
    if unexpected:
        raise DataError(f"checkpoint does not match the model (unexpected keys {unexpected[:3]})")
