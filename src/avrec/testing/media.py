"""Real media to test on: a small audio catalogue from Debian's game soundtracks, and generated video clips.

:func:`build_audio_catalogue` finds the music of installed Debian packages (``wesnoth-music``,
``hyperrogue-music``, ``drascula-music``, ``asc-music``, ...), cuts a short mono clip from the middle of each
track with ffmpeg and writes a dataset folder: ``items.csv`` (``item_id``, ``title``, ``artist`` = the
game, ``audio_path`` relative to the folder, ``licence``), ``audio/*.ogg`` and a README with the sources and
licences. :func:`make_video_clips` draws clips with ffmpeg's test sources and a text overlay.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["DEBIAN_MUSIC", "build_audio_catalogue", "debian_tracks", "make_video_clips", "taste_interactions"]

#: (package, folder, game, licence as the package's copyright file gives it)
DEBIAN_MUSIC = [
    ("wesnoth-music", "/usr/share/games/wesnoth", "Battle for Wesnoth", "GPL-2+"),
    ("hyperrogue-music", "/usr/share/hyperrogue/music", "HyperRogue", "GPL-2+ (music: see the package copyright)"),
    ("drascula-music", "/usr/share/scummvm/drascula/audio", "Drascula", "Drascula-License (free redistribution)"),
    ("asc-music", "/usr/share/games/asc/music", "Advanced Strategic Command", "GPL-2+"),
]
_AUDIO = (".ogg", ".mp3", ".flac")


def debian_tracks(per_source: int | None = None) -> list[tuple[Path, str, str, str]]:
    """Installed soundtrack files as (path, package, game, licence), in a stable order."""
    out = []
    for package, folder, game, licence in DEBIAN_MUSIC:
        root = Path(folder)
        if not root.is_dir():
            continue
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in _AUDIO and "sounds" not in p.parts
                       and p.stat().st_size > 100_000)
        out += [(p, package, game, licence) for p in files[:per_source]]
    return out


def _title(path: Path) -> str:
    return re.sub(r"[_\-]+", " ", path.stem).strip().title()


def build_audio_catalogue(out: str | Path, n_tracks: int = 120, seconds: float = 20.0,
                          per_source: int | None = None) -> Path:
    """Write a dataset folder of ``n_tracks`` real clips (``seconds`` long); raises when ffmpeg or music is missing."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError("needs ffmpeg (apt-get install ffmpeg)")
    tracks = debian_tracks(per_source)[:n_tracks]
    if not tracks:
        raise RuntimeError("no Debian game music installed (apt-get install wesnoth-music hyperrogue-music ...)")
    out = Path(out)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, str]] = []
    for path, package, game, licence in tracks:
        item_id = f"t{len(rows):03d}"
        clip = out / "audio" / f"{item_id}.ogg"
        if not clip.exists():
            probe = subprocess.run([ffmpeg, "-i", str(path)], capture_output=True, text=True, check=False).stderr
            m = re.search(r"Duration: (\d+):(\d+):([\d.]+)", probe)
            total = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3)) if m else seconds
            start = max(0.0, (total - seconds) / 2)
            subprocess.run([ffmpeg, "-v", "error", "-y", "-ss", f"{start:.2f}", "-t", str(seconds), "-i", str(path),
                            "-ac", "1", "-ar", "22050", "-c:a", "libvorbis", "-q:a", "2", str(clip)],
                           capture_output=True, check=False)
            if not clip.exists() or clip.stat().st_size < 1000:  # a track ffmpeg cannot decode: left out
                clip.unlink(missing_ok=True)
                continue
        rows.append({"item_id": item_id, "title": _title(path), "artist": game, "media_type": "music",
                     "audio_path": f"audio/{clip.name}", "source": f"{package}:{path}", "licence": licence})
    pd.DataFrame(rows).to_csv(out / "items.csv", index=False)
    lines = ["# Audio catalogue from Debian game soundtracks", "",
             f"{len(rows)} clips of {seconds:g} s (mono, 22.05 kHz, Vorbis) cut from the middle of each track by "
             "`avrec.testing.media.build_audio_catalogue`.", "",
             "| package | game | licence | tracks |", "|---|---|---|---|"]
    counts: dict[tuple[str, str, str], int] = {}
    for r in rows:
        key = (r["source"].split(":")[0], r["artist"], r["licence"])
        counts[key] = counts.get(key, 0) + 1
    lines += [f"| {p} | {g} | {lic} | {n} |" for (p, g, lic), n in counts.items()]
    lines += ["", "Each package's full terms are in /usr/share/doc/<package>/copyright."]
    (out / "README.md").write_text("\n".join(lines) + "\n")
    return out


def make_video_clips(out: str | Path, n: int = 6, seconds: float = 2.0) -> list[Path]:
    """``n`` small generated clips: alternating calm colour fields and busy test patterns with a text overlay."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError("needs ffmpeg (apt-get install ffmpeg)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    colours = ["navy", "darkgreen", "maroon", "orange", "purple", "teal"]
    paths = []
    for i in range(n):
        p = out / f"clip{i}.mp4"
        if i % 2 == 0:
            src = f"color=c={colours[i % len(colours)]}:size=128x72:rate=12:duration={seconds}"
        else:
            src = f"testsrc2=size=128x72:rate=12:duration={seconds}"
        vf = f"drawtext=text='clip {i}':x=4:y=4:fontcolor=white" if _has_drawtext(ffmpeg) else "null"
        subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", src, "-vf", vf, "-pix_fmt", "yuv420p",
                        str(p)], check=True)
        paths.append(p)
    return paths


def _has_drawtext(ffmpeg: str) -> bool:
    filters = subprocess.run([ffmpeg, "-hide_banner", "-filters"], capture_output=True, text=True, check=False).stdout
    return " drawtext " in filters


def taste_interactions(item_ids: list[str], truth: np.ndarray, n_users: int = 400, per_user: int = 12,
                       n_factors: int = 4, temperature: float = 0.5, seed: int = 0) -> pd.DataFrame:
    """Semi-synthetic listening: users' tastes are random directions in the top principal components of
    ``truth`` (what the audio contains, one row per item), and each user plays ``per_user`` items drawn
    without replacement from a softmax over their utility ``taste · components / temperature``."""
    rng = np.random.default_rng(seed)
    z = (truth - truth.mean(axis=0)) / np.maximum(truth.std(axis=0), 1e-6)
    u, s, _ = np.linalg.svd(z, full_matrices=False)
    comps = u[:, :n_factors] * s[:n_factors] / np.sqrt(len(z))
    comps /= np.maximum(comps.std(axis=0), 1e-9)
    rows = []
    for user in range(n_users):
        taste = rng.normal(size=n_factors)
        utility = comps @ (taste / np.linalg.norm(taste)) / temperature
        p = np.exp(utility - utility.max())
        chosen = rng.choice(len(item_ids), size=min(per_user, len(item_ids)), replace=False, p=p / p.sum())
        rows += [{"user_id": f"u{user}", "item_id": item_ids[i], "weight": 1.0, "timestamp": -1} for i in chosen]
    return pd.DataFrame(rows)
