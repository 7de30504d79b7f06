"""Video and image descriptors that need no model download: frames through ffmpeg, statistics in numpy.

A clip is decoded once at a low frame rate and size (:data:`SAMPLE_FPS`, :data:`SIZE`); keyframes are a
uniform subset of those frames. Per frame: CIELAB histograms (lightness, green–red, blue–yellow), a hue
histogram weighted by chroma, brightness, saturation (chroma), contrast, colourfulness and edge density.
Per clip: their means over the keyframes, how much brightness and colour vary, motion energy between
frames, cuts per minute (frames whose colour histogram jumps) and duration. Images (posters, thumbnails)
get the per-frame set. ffmpeg comes from Debian (``apt-get install ffmpeg``) or ``imageio-ffmpeg``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from avrec.encoders.extract import ExtractionFailed
from avrec.errors import ConfigError

__all__ = ["ImageDescriptors", "VideoDescriptors", "IMAGE_NAMES", "VIDEO_NAMES", "ffmpeg_exe", "frame_descriptors"]

SIZE = 64
SAMPLE_FPS = 4
MAX_SECONDS = 120
KEYFRAMES = 8
CUT_THRESHOLD = 0.5  # total-variation distance between consecutive frames' colour histograms
IMAGE_NAMES: list[str] = (
    [f"L_hist_{i}" for i in range(8)] + [f"a_hist_{i}" for i in range(8)] + [f"b_hist_{i}" for i in range(8)]
    + [f"hue_hist_{i}" for i in range(12)]
    + ["brightness", "saturation", "contrast", "colourfulness", "edge_density", "log_aspect"]
)
VIDEO_NAMES: list[str] = IMAGE_NAMES + [
    "brightness_std", "saturation_std", "motion_energy_mean", "motion_energy_std", "cuts_per_minute", "log_duration",
]


def ffmpeg_exe() -> tuple[str, str | None]:
    """Paths of ffmpeg and ffprobe (None when only imageio-ffmpeg's ffmpeg is there)."""
    exe = shutil.which("ffmpeg")
    if exe:
        return exe, shutil.which("ffprobe")
    try:
        import imageio_ffmpeg  # type: ignore[import-not-found]
    except ImportError:
        raise ConfigError("video and image descriptors need ffmpeg: apt-get install ffmpeg "
                          "(or pip install imageio-ffmpeg)") from None
    return str(imageio_ffmpeg.get_ffmpeg_exe()), None


def _run(cmd: list[str], timeout: float = 300) -> bytes:
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ExtractionFailed(f"ffmpeg failed: {exc}") from None
    if done.returncode != 0:
        last = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ExtractionFailed(last[-1] if last else f"ffmpeg exited with {done.returncode}")
    return done.stdout


def probe(path: Path) -> tuple[float, int, int]:
    """Duration in seconds (0 for a still image), width and height of the first video stream."""
    _, ffprobe = ffmpeg_exe()
    if ffprobe is None:
        return 0.0, 1, 1
    out = _run([ffprobe, "-v", "error", "-select_streams", "v:0", "-show_entries",
                "stream=width,height:format=duration", "-of", "json", str(path)])
    info = json.loads(out or b"{}")
    streams = info.get("streams") or []
    if not streams:
        raise ExtractionFailed("no video stream")
    duration = float(info.get("format", {}).get("duration") or 0.0)
    return duration, int(streams[0].get("width") or 1), int(streams[0].get("height") or 1)


def decode_frames(path: Path, fps: float | None, max_seconds: float = MAX_SECONDS, size: int = SIZE) -> np.ndarray:
    """Frames as uint8 (n, size, size, 3): at ``fps`` for a clip (at most ``max_seconds``), or one for an image."""
    ffmpeg, _ = ffmpeg_exe()
    vf = f"scale={size}:{size}:flags=area" if fps is None else f"fps={fps},scale={size}:{size}:flags=area"
    cmd = [ffmpeg, "-v", "error", "-nostdin", "-i", str(path)]
    cmd += ["-frames:v", "1"] if fps is None else ["-t", str(max_seconds)]
    raw = _run(cmd + ["-vf", vf, "-an", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"])
    frame = size * size * 3
    if len(raw) < frame:
        raise ExtractionFailed("no frames decoded")
    return np.frombuffer(raw[: len(raw) // frame * frame], np.uint8).reshape(-1, size, size, 3)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB uint8 (..., 3) to CIELAB (D65): L in [0, 100], a and b roughly in [-100, 100]."""
    c = rgb.astype(np.float32) / 255.0
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]], np.float32)
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883], np.float32)
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def _hist(values: np.ndarray, lo: float, hi: float, bins: int, weights: np.ndarray | None = None) -> np.ndarray:
    h, _ = np.histogram(np.clip(values, lo, hi - 1e-6), bins=bins, range=(lo, hi), weights=weights)
    return h / max(float(h.sum()), 1e-9)


def frame_descriptors(frame: np.ndarray, aspect: float = 1.0) -> np.ndarray:
    """The :data:`IMAGE_NAMES` vector of one RGB uint8 frame."""
    lab = rgb_to_lab(frame)
    L, a, b = lab[..., 0].ravel(), lab[..., 1].ravel(), lab[..., 2].ravel()
    chroma = np.hypot(a, b)
    hue = (np.degrees(np.arctan2(b, a)) + 360) % 360
    rgb = frame.astype(np.float32)
    rg, yb = rgb[..., 0] - rgb[..., 1], 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    colourful = float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())) / 255
    gy, gx = np.gradient(lab[..., 0])
    edges = float((np.hypot(gx, gy) > 8.0).mean())
    return np.concatenate([
        _hist(L, 0, 100, 8), _hist(a, -80, 80, 8), _hist(b, -80, 80, 8), _hist(hue, 0, 360, 12, weights=chroma + 1e-3),
        [L.mean() / 100, chroma.mean() / 100, L.std() / 100, colourful, edges, np.log(max(aspect, 1e-3))],
    ]).astype(np.float32)


def _colour_hist(frames: np.ndarray) -> np.ndarray:
    """Per frame, a joint 4×4×4 RGB histogram (for cut detection)."""
    q = (frames // 64).reshape(len(frames), -1, 3).astype(np.int64)
    codes = q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]
    h = np.stack([np.bincount(c, minlength=64) for c in codes]).astype(np.float32)
    return h / h.sum(axis=1, keepdims=True)


def clip_descriptors(frames: np.ndarray, duration: float, aspect: float) -> np.ndarray:
    """The :data:`VIDEO_NAMES` vector of frames sampled at :data:`SAMPLE_FPS`."""
    keys = frames[np.unique(np.linspace(0, len(frames) - 1, KEYFRAMES).round().astype(int))]
    per = np.stack([frame_descriptors(f, aspect) for f in keys])
    if len(frames) > 1:
        grey = frames.astype(np.float32).mean(axis=-1) / 255
        motion = np.abs(np.diff(grey, axis=0)).mean(axis=(1, 2))
        jumps = 0.5 * np.abs(np.diff(_colour_hist(frames), axis=0)).sum(axis=1)
        cuts = float((jumps > CUT_THRESHOLD).sum())
    else:
        motion, cuts = np.zeros(1, np.float32), 0.0
    seconds = duration or len(frames) / SAMPLE_FPS
    covered = min(seconds, MAX_SECONDS)
    return np.concatenate([
        per.mean(axis=0),
        [per[:, 36].std(), per[:, 37].std(), motion.mean(), motion.std(), 60 * cuts / max(covered, 1.0),
         np.log1p(seconds)],
    ]).astype(np.float32)


class VideoDescriptors:
    """Descriptors of a clip (see :data:`VIDEO_NAMES`)."""

    modality = "video"
    version = 1

    def __init__(self) -> None:
        self.ffmpeg, _ = ffmpeg_exe()

    @property
    def extractor_id(self) -> str:
        return f"video-descriptors-v{self.version}/{SAMPLE_FPS}fps-{SIZE}px-{KEYFRAMES}k"

    @property
    def dim(self) -> int:
        return len(VIDEO_NAMES)

    def extract(self, paths: Sequence[Path]) -> np.ndarray:
        out = np.zeros((len(paths), self.dim), dtype=np.float32)
        for i, p in enumerate(paths):
            duration, w, h = probe(p)
            out[i] = clip_descriptors(decode_frames(p, SAMPLE_FPS), duration, w / max(h, 1))
        return out


class ImageDescriptors:
    """Descriptors of a still image: a poster or a thumbnail (see :data:`IMAGE_NAMES`)."""

    modality = "image"
    version = 1

    def __init__(self) -> None:
        self.ffmpeg, _ = ffmpeg_exe()

    @property
    def extractor_id(self) -> str:
        return f"image-descriptors-v{self.version}/{SIZE}px"

    @property
    def dim(self) -> int:
        return len(IMAGE_NAMES)

    def extract(self, paths: Sequence[Path]) -> np.ndarray:
        out = np.zeros((len(paths), self.dim), dtype=np.float32)
        for i, p in enumerate(paths):
            _, w, h = probe(p)
            out[i] = frame_descriptors(decode_frames(p, None)[0], w / max(h, 1))
        return out
