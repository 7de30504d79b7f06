"""ONNX Runtime text-encoder backends: ``onnx`` (fp32) and ``onnx-int8`` (dynamic int8 weights, per channel).

Only the transformer's forward pass moves to ONNX Runtime: tokenisation and pooling stay the
sentence-transformers model's own modules, so the same settings give the same vectors (``onnx`` matches
fp32 torch to float tolerance). The transformer (the model's first module) is exported once with
``torch.onnx.export`` and cached on disk, keyed on the weights' fingerprint and the torch/onnxruntime
versions: ``$AVREC_CACHE/onnx`` (or ``~/.cache/avrec/onnx``), written atomically. ``onnx-int8`` then
quantises the weight MatMuls (the projections and feed-forward layers; the attention products between two
activations stay fp32, which keeps the mean cosine to fp32 above 0.99 on ml-latest-small documents).
Needs the ``onnx`` extra: ``pip install 'avrec[onnx]'``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from avrec.config import cache_home
from avrec.errors import ConfigError

__all__ = ["ONNX_BACKENDS", "OnnxTransformer", "load_onnx_transformer"]

ONNX_BACKENDS = ("onnx", "onnx-int8")
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_SESSIONS: dict[tuple[str, int], OnnxTransformer] = {}
_LOCK = threading.Lock()


class OnnxTransformer:
    """The exported transformer in an ONNX Runtime session: token features in, token embeddings out."""

    def __init__(self, path: Path, input_names: list[str], threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        self.path = path
        self.input_names = input_names
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def embed(self, st: Any, texts: list[str]) -> Any:
        """Sentence embeddings (a float32 torch tensor, not normalised) of ``texts`` through ``st``'s own
        tokenizer and pooling, with the transformer run by ONNX Runtime."""
        import torch

        features = _tokenize(st, texts)
        feed = {name: features[name].numpy().astype(np.int64, copy=False) for name in self.input_names}
        (hidden,) = self.session.run(None, feed)
        out = {"token_embeddings": torch.from_numpy(hidden), "attention_mask": features["attention_mask"]}
        for module in list(st)[1:]:
            out = module(out)
        return out["sentence_embedding"]


def _tokenize(st: Any, texts: list[str]) -> Any:
    """``st.preprocess`` (sentence-transformers >= 6; ``tokenize`` before, now deprecated)."""
    return (getattr(st, "preprocess", None) or st.tokenize)(texts)


def _export(st: Any, target: Path, names: list[str]) -> None:
    import torch

    auto_model = getattr(st[0], "auto_model", None)
    if auto_model is None:
        raise ConfigError(f"the onnx encoder backends need a transformers model as the first module; "
                          f"this model's is {type(st[0]).__name__} (use the torch backend)")

    class _Hidden(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: Any) -> Any:
            return self.model(**dict(zip(names, inputs, strict=True))).last_hidden_state

    sample = _tokenize(st, ["an example document", "a second, longer example document to export with"])
    axes = {name: {0: "batch", 1: "tokens"} for name in [*names, "token_embeddings"]}
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python control flow in the model
        torch.onnx.export(_Hidden(auto_model).eval(), tuple(sample[n] for n in names), str(target),
                          input_names=names, output_names=["token_embeddings"], dynamic_axes=axes,
                          opset_version=17, dynamo=False)


def _quantize(source: Path, target: Path) -> None:
    import logging

    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))  # the quantiser logs "consider pre-processing" advice to root
    try:
        quantize_dynamic(str(source), str(target), per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul"],
                         extra_options={"MatMulConstBOnly": True, "DefaultTensorType": TensorProto.FLOAT})
    finally:
        root.setLevel(level)


def load_onnx_transformer(st: Any, source_key: str, quantized: bool, threads: int) -> OnnxTransformer:
    """The ONNX Runtime session for ``st``'s transformer, exporting (and quantising) it on first use.

    ``source_key`` identifies the weights (folder + fingerprint); the exported files are reused by every
    later process with the same weights and library versions.
    """
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
        import onnxruntime
    except ImportError as exc:
        raise ConfigError("the onnx encoder backends need onnxruntime and onnx: pip install 'avrec[onnx]'") from exc
    import torch

    names = [n for n in _INPUTS if n in _tokenize(st, ["x"])]
    digest = hashlib.sha256(f"{source_key}|{torch.__version__}|{onnxruntime.__version__}|{names}".encode())
    folder = cache_home("onnx") / digest.hexdigest()[:20]
    path = folder / ("model-int8.onnx" if quantized else "model.onnx")
    key = (str(path), threads)
    with _LOCK:
        if key in _SESSIONS:
            return _SESSIONS[key]
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=folder, prefix=".export-") as tmp:
                fp32 = folder / "model.onnx"
                if not fp32.is_file():
                    _export(st, Path(tmp) / "model.onnx", names)
                    os.replace(Path(tmp) / "model.onnx", fp32)  # atomic: a reader never sees half a file
                if quantized:
                    _quantize(fp32, Path(tmp) / "model-int8.onnx")
                    os.replace(Path(tmp) / "model-int8.onnx", path)
        _SESSIONS[key] = OnnxTransformer(path, names, threads)
        return _SESSIONS[key]
