"""Audio descriptors from librosa: tempo, key and chroma, MFCC and spectral statistics, loudness, duration.

The cheap audio feature set, used where the pretrained tagger (:mod:`avrec.encoders.musicnn`) is not
wanted. One clip gives :data:`DESCRIPTOR_NAMES` (80 numbers); models standardise them per catalogue.
Needs the ``audio`` extra (``pip install 'avrec[audio]'``: librosa and soundfile).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from avrec.encoders.extract import ExtractionFailed
from avrec.errors import ConfigError

__all__ = ["AudioDescriptors", "DESCRIPTOR_NAMES", "load_audio"]

_PITCHES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
# Krumhansl–Kessler key profiles (major, minor), correlated with the mean chroma to estimate the key.
_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
_SPECTRAL = ["centroid", "bandwidth", "rolloff", "flatness", "zcr"]
DESCRIPTOR_NAMES: list[str] = (
    ["log_duration", "log_tempo", "key_strength", "major_minor"]
    + [f"chroma_mean_{p}" for p in _PITCHES] + [f"chroma_std_{p}" for p in _PITCHES]
    + [f"mfcc_mean_{i}" for i in range(20)] + [f"mfcc_std_{i}" for i in range(20)]
    + [f"{s}_{stat}" for s in _SPECTRAL for stat in ("mean", "std")]
    + ["loudness_db_mean", "loudness_db_std", "onset_strength_mean", "silence_share"]
)


def _librosa() -> Any:
    try:
        import librosa
    except ImportError:
        raise ConfigError("audio descriptors need librosa: pip install 'avrec[audio]'") from None
    return librosa


def load_audio(path: Path, sr: int, max_seconds: float) -> tuple[np.ndarray, float]:
    """Mono samples at ``sr`` (at most ``max_seconds`` from the middle of the track) and the full duration."""
    librosa = _librosa()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # audioread fallback notices
            duration = float(librosa.get_duration(path=str(path)))
            offset = max(0.0, (duration - max_seconds) / 2)
            y, _ = librosa.load(str(path), sr=sr, mono=True, offset=offset, duration=max_seconds)
    except Exception as exc:  # soundfile/audioread raise many types for an unreadable file
        raise ExtractionFailed(f"{type(exc).__name__}: {exc}") from None
    if y.size < sr // 4:
        raise ExtractionFailed("shorter than a quarter of a second")
    return y.astype(np.float32), duration


def _key(chroma_mean: np.ndarray) -> tuple[float, float]:
    """Key strength (best profile correlation) and major-minor (best major − best minor correlation)."""
    def best(profile: np.ndarray) -> float:
        return max(float(np.corrcoef(np.roll(profile, k), chroma_mean)[0, 1]) for k in range(12))

    if np.allclose(chroma_mean, chroma_mean[0]):
        return 0.0, 0.0
    major, minor = best(_MAJOR), best(_MINOR)
    return max(major, minor), major - minor


class AudioDescriptors:
    """librosa descriptors of a clip (see :data:`DESCRIPTOR_NAMES`)."""

    modality = "audio"
    version = 1

    def __init__(self, sr: int = 22050, max_seconds: float = 30.0) -> None:
        self.librosa = _librosa()
        self.sr, self.max_seconds = sr, max_seconds

    @property
    def extractor_id(self) -> str:
        return (f"audio-descriptors-v{self.version}/librosa-{self.librosa.__version__}/"
                f"sr{self.sr}-{self.max_seconds:g}s")

    @property
    def dim(self) -> int:
        return len(DESCRIPTOR_NAMES)

    def describe(self, y: np.ndarray, duration: float) -> np.ndarray:
        """The descriptor vector of mono samples ``y`` at ``self.sr``."""
        lr, sr = self.librosa, self.sr
        stft = np.abs(lr.stft(y, n_fft=2048, hop_length=512))
        power = stft**2
        chroma = lr.feature.chroma_stft(S=power, sr=sr)
        mel = lr.feature.melspectrogram(S=power, sr=sr, n_mels=64)
        mfcc = lr.feature.mfcc(S=lr.power_to_db(mel), n_mfcc=20)
        onset = lr.onset.onset_strength(S=lr.power_to_db(mel), sr=sr)
        tempo = float(np.atleast_1d(lr.feature.tempo(onset_envelope=onset, sr=sr))[0])
        spectral = [
            lr.feature.spectral_centroid(S=stft, sr=sr)[0] / (sr / 2),
            lr.feature.spectral_bandwidth(S=stft, sr=sr)[0] / (sr / 2),
            lr.feature.spectral_rolloff(S=stft, sr=sr)[0] / (sr / 2),
            lr.feature.spectral_flatness(S=stft)[0],
            lr.feature.zero_crossing_rate(y, hop_length=512)[0],
        ]
        rms_db = lr.amplitude_to_db(lr.feature.rms(S=stft)[0], ref=1.0)
        chroma_mean = chroma.mean(axis=1)
        strength, mode = _key(chroma_mean)
        vec = np.concatenate([
            [np.log1p(duration), np.log(max(tempo, 1.0)), strength, mode],
            chroma_mean, chroma.std(axis=1), mfcc.mean(axis=1), mfcc.std(axis=1),
            np.ravel([[s.mean(), s.std()] for s in spectral]),
            [rms_db.mean(), rms_db.std(), onset.mean(), float((rms_db < -50).mean())],
        ])
        return np.nan_to_num(vec.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)

    def extract(self, paths: Sequence[Path]) -> np.ndarray:
        out = np.zeros((len(paths), self.dim), dtype=np.float32)
        for i, p in enumerate(paths):
            y, duration = load_audio(p, self.sr, self.max_seconds)
            out[i] = self.describe(y, duration)
        return out
