"""A faster CPU text encoder: torch dynamic int8 quantisation of a sentence-transformers model.

Every ``nn.Linear`` (the attention projections and feed-forward layers, nearly all of a BERT's compute) gets
int8 weights (one scale per output channel) and activations quantised on the fly per batch (one scale per
tensor); embeddings, layer norms and pooling stay fp32. The vectors are close to, not equal to, fp32 ones:
on ml-latest-small documents with all-MiniLM-L6-v2 the mean cosine to fp32 is about 0.97 (per-tensor
activation scales are what costs accuracy; benchmarks/encoder_scale.py measures it with the speed-up), so
:class:`avrec.encoders.TextEncoder` keys its cache entries on the backend, and the ``bf16`` backend is the
more accurate fast choice on CPUs with bfloat16 instructions.
"""

from __future__ import annotations

import warnings
from typing import Any

from avrec.errors import ConfigError

__all__ = ["quantize_int8"]


def quantize_int8(model: Any) -> Any:
    """Quantise the Linear layers of ``model`` (a SentenceTransformer or any ``nn.Module``) to int8, in place.

    CPU only: dynamic quantisation has no CUDA kernels, so a model on another device is a :class:`ConfigError`.
    """
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    device = next(model.parameters()).device
    if device.type != "cpu":
        raise ConfigError(f"the int8 encoder backend runs on CPU only; the model is on {device} "
                          "(use the torch backend on a GPU)")
    engines = torch.backends.quantized.supported_engines
    for engine in ("x86", "fbgemm", "qnnpack"):
        if engine in engines:
            torch.backends.quantized.engine = engine
            break
    with warnings.catch_warnings():
        # torch >= 2.10 marks torch.ao.quantization as deprecated in favour of torchao; it still works
        warnings.simplefilter("ignore")
        quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)
    model.eval()
    return model
