"""musicnn in PyTorch: the pretrained MagnaTagATune / Million Song Dataset audio taggers, offline.

A port of ``musicnn`` 0.1.0 (Pons & Serra, ISC licence; weights converted once by
:mod:`avrec.encoders.musicnn_convert` and shipped in ``avrec/encoders/weights/``, ~3.2 MB each). Preprocessing
is musicnn's: mono at 16 kHz, a 512-point STFT with hop 256, 96 mel bands, ``log10(1 + 10000·mel)`` in
float16, non-overlapping 3 s patches (187 frames). A clip shorter than one patch is repeated to fill it (how
musicnn's training padded short clips). Per clip: the penultimate layer (200 numbers) and the 50 tag
probabilities, each averaged over the patches. The extractor's vector is those 250 numbers; :func:`top_tags`
turns its last 50 into the tags heard ("piano, ambient, slow"); :mod:`avrec.encoders.heard` does it per catalogue.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from avrec.encoders.audio import load_audio
from avrec.errors import ConfigError

__all__ = ["MusicnnTagger", "Musicnn", "top_tags", "WEIGHTS", "EMBED_DIM", "N_TAGS"]

WEIGHTS = {"mtt": Path(__file__).parent / "weights" / "musicnn_mtt.safetensors",
           "msd": Path(__file__).parent / "weights" / "musicnn_msd.safetensors"}
SR, N_FFT, HOP, N_MELS, N_FRAMES = 16000, 512, 256, 96, 187
EMBED_DIM, N_TAGS = 200, 50
_EPS = 1e-3  # tf.compat.v1.layers.batch_normalization's default


class Musicnn:
    """The network (inference only) over log-mel patches ``(batch, 187, 96)``."""

    def __init__(self, dataset: str = "mtt") -> None:
        import torch
        from safetensors import safe_open

        if dataset not in WEIGHTS:
            raise ConfigError(f"musicnn dataset {dataset!r}: use one of {', '.join(WEIGHTS)}")
        with safe_open(str(WEIGHTS[dataset]), framework="pt") as f:
            self.labels: list[str] = json.loads((f.metadata() or {})["labels"])
            self.w: dict[str, Any] = {k: f.get_tensor(k) for k in f.keys()}
        self.torch = torch

    def _bn(self, x: Any, i: int, dim: int) -> Any:
        """Frozen batch norm ``batch_normalization_{i}`` over axis ``dim`` of ``x``."""
        name = "batch_normalization" + (f"_{i}" if i else "")
        g, b, m, v = (self.w[f"{name}/{k}"] for k in ("gamma", "beta", "moving_mean", "moving_variance"))
        shape = [1] * x.dim()
        shape[dim] = -1
        return (x - m.view(shape)) * (g / self.torch.sqrt(v + _EPS)).view(shape) + b.view(shape)

    def _conv(self, x: Any, i: int, padding: tuple[int, int]) -> Any:
        """``conv2d_{i}`` (TF kernel h, w, in, out) over NCHW ``x`` with ``padding`` rows before/after, ReLU."""
        F = self.torch.nn.functional
        name = "conv2d" + (f"_{i}" if i else "")
        kernel = self.w[f"{name}/kernel"].permute(3, 2, 0, 1)
        return F.relu(F.conv2d(F.pad(x, (0, 0, *padding)), kernel, self.w[f"{name}/bias"]))

    def forward(self, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(penultimate ``(n, 200)``, tag probabilities ``(n, 50)``) of ``patches`` ``(n, 187, 96)``."""
        torch = self.torch
        with torch.inference_mode():
            x = self._bn(torch.from_numpy(np.ascontiguousarray(patches, np.float32))[:, None], 0, 1)
            front = []
            for conv, bn in ((0, 1), (1, 2)):  # timbral: 7×38 and 7×67 over the frequency axis
                front.append(self._bn(self._conv(x, conv, (3, 3)), bn, 1).amax(dim=3))
            for conv, bn, k in ((2, 3, 128), (3, 4, 64), (4, 5, 32)):  # temporal: k×1, TF "same" padding
                front.append(self._bn(self._conv(x, conv, ((k - 1) // 2, k // 2)), bn, 1).amax(dim=3))
            f = torch.cat(front, dim=1)  # (n, 561, T)
            mids = [f]
            h = f
            for conv, bn in ((5, 6), (6, 7), (7, 8)):  # mid-end: 7-frame convolutions, residual after the first
                out = self._bn(self._conv(h[:, None].transpose(2, 3), conv, (3, 3))[:, :, :, 0], bn, 1)
                h = out if conv == 5 else out + h
                mids.append(h)
            feats = torch.cat(mids, dim=1)  # (n, 753, T)
            pooled = torch.stack([feats.amax(dim=2), feats.mean(dim=2)], dim=2).flatten(1)  # TF order: max, mean
            pooled = self._bn(pooled, 9, 1)
            dense = torch.relu(pooled @ self.w["dense/kernel"] + self.w["dense/bias"])
            penultimate = self._bn(dense, 10, 1)
            logits = penultimate @ self.w["dense_1/kernel"] + self.w["dense_1/bias"]
            return penultimate.numpy(), torch.sigmoid(logits).numpy()


def log_mel(y: np.ndarray) -> np.ndarray:
    """musicnn's input representation of 16 kHz mono samples: ``(frames, 96)``."""
    import librosa

    mel = librosa.feature.melspectrogram(y=y, sr=SR, hop_length=HOP, n_fft=N_FFT, n_mels=N_MELS).T
    # musicnn stores the mel power in float16; under NumPy < 2 (its era) ``10000 * float16`` was float32, so
    # multiply in float32 (NumPy 2 would keep float16 and overflow loud bins to inf)
    return np.log10(10000 * mel.astype(np.float16).astype(np.float32) + 1)


def patches_of(rep: np.ndarray) -> np.ndarray:
    """Non-overlapping 187-frame patches (a shorter clip is repeated to one patch)."""
    if len(rep) < N_FRAMES:
        rep = np.tile(rep, (int(np.ceil(N_FRAMES / max(len(rep), 1))), 1))
    n = (len(rep) - N_FRAMES) // N_FRAMES + 1
    return np.stack([rep[i * N_FRAMES : (i + 1) * N_FRAMES] for i in range(n)])


def top_tags(vector: np.ndarray, labels: Sequence[str], k: int = 3, min_prob: float = 0.1) -> list[str]:
    """The ``k`` most probable tags of an extractor vector (its last 50 numbers), those above ``min_prob``."""
    probs = np.asarray(vector, dtype=np.float64)[-len(labels):]
    order = np.argsort(-probs, kind="stable")[:k]
    return [labels[i] for i in order if probs[i] >= min_prob]


class MusicnnTagger:
    """The ``musicnn-mtt`` / ``musicnn-msd`` audio extractor: penultimate layer + tag probabilities (250)."""

    modality = "audio"
    version = 1

    def __init__(self, dataset: str = "mtt", max_seconds: float = 30.0) -> None:
        try:
            import librosa
        except ImportError:
            raise ConfigError("musicnn needs librosa: pip install 'avrec[audio]'") from None
        self.librosa_version = str(getattr(librosa, "__version__", "?"))
        self.dataset, self.max_seconds = dataset, max_seconds
        self.net = Musicnn(dataset)
        self.labels = self.net.labels

    @property
    def extractor_id(self) -> str:
        return f"musicnn-{self.dataset}-v{self.version}/librosa-{self.librosa_version}/{self.max_seconds:g}s"

    @property
    def dim(self) -> int:
        return EMBED_DIM + N_TAGS

    def clip(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(clip embedding, clip tag probabilities, per-patch tag probabilities) of 16 kHz samples."""
        penultimate, probs = self.net.forward(patches_of(log_mel(y)))
        return penultimate.mean(axis=0), probs.mean(axis=0), probs

    def extract(self, paths: Sequence[Path]) -> np.ndarray:
        out = np.zeros((len(paths), self.dim), dtype=np.float32)
        for i, p in enumerate(paths):
            y, _ = load_audio(p, SR, self.max_seconds)
            emb, probs, _ = self.clip(y)
            out[i] = np.concatenate([emb, probs])
        return out

