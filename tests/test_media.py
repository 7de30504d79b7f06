"""Audio, video and bring-your-own item vectors: checks on the files, extraction, caching and the models."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from avrec.cli import main
from avrec.data.io import load_folder, write_folder
from avrec.data.vectors import attach_folder, load_item_vectors, media_paths, write_vector_file
from avrec.errors import DataError
from avrec.models.registry import create_model
from avrec.testing.media import debian_tracks

HAS_FFMPEG = shutil.which("ffmpeg") is not None
try:
    import librosa  # noqa: F401
    import soundfile

    HAS_LIBROSA = True
except ImportError:
    HAS_LIBROSA = False
needs_audio = pytest.mark.skipif(not HAS_LIBROSA, reason="needs the audio extra (librosa)")
needs_ffmpeg = pytest.mark.skipif(not HAS_FFMPEG, reason="needs ffmpeg")


def _folder(tmp_path: Path, n_items: int = 12, n_users: int = 30, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    items = pd.DataFrame({"item_id": [f"i{j}" for j in range(n_items)], "title": [f"t{j}" for j in range(n_items)]})
    rows = [{"user_id": f"u{u}", "item_id": f"i{j}", "weight": 1.0, "timestamp": -1}
            for u in range(n_users) for j in rng.choice(n_items, 4, replace=False)]
    return write_folder(items, pd.DataFrame(rows), tmp_path / "ds")


# ---- bring your own vectors ------------------------------------------------------------------------
def test_vector_file_is_read_and_aligned(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    write_vector_file(folder / "item_vectors" / "clip.parquet", ["i3", "i1"], np.array([[1, 2, 3], [4, 5, 6]]))
    ds = load_folder(folder)
    mv = load_item_vectors(ds.items)["clip"]
    assert mv.dim == 3 and mv.present.tolist() == [j in (1, 3) for j in range(12)]
    np.testing.assert_array_equal(mv.matrix[3], [1, 2, 3])
    # numeric columns v0..vN work as well as a list column
    pd.DataFrame({"item_id": ["i0"], "v0": [0.5], "v1": [1.5]}).to_parquet(folder / "item_vectors" / "clip.parquet")
    assert load_item_vectors(load_folder(folder).items)["clip"].matrix[0].tolist() == [0.5, 1.5]


@pytest.mark.parametrize("frame, message", [
    (pd.DataFrame({"item_id": ["i0", "i1"], "vector": [[1.0, 2.0], [1.0, 2.0, 3.0]]}), "row 1 (item_id 'i1'), field 'vector': 3 values, expected 2"),
    (pd.DataFrame({"item_id": ["i0", "i1"], "vector": [[1.0, 2.0], [np.nan, 2.0]]}), "row 1 (item_id 'i1'), field 'vector[0]': NaN"),
    (pd.DataFrame({"item_id": ["i0", "zz"], "vector": [[1.0], [2.0]]}), "row 1, field 'item_id': unknown item_id 'zz'"),
    (pd.DataFrame({"item_id": ["i0", "i0"], "vector": [[1.0], [2.0]]}), "row 1, field 'item_id': duplicate item_id 'i0'"),
    (pd.DataFrame({"item_id": ["i0"], "v0": [1.0], "v1": [np.inf]}), "row 0 (item_id 'i0'), field 'v1': inf"),
    (pd.DataFrame({"id": ["i0"], "vector": [[1.0]]}), "missing required column 'item_id'"),
])
def test_bad_vector_file_is_one_clear_error(tmp_path: Path, frame: pd.DataFrame, message: str, capsys) -> None:
    folder = _folder(tmp_path)
    (folder / "item_vectors").mkdir()
    frame.to_parquet(folder / "item_vectors" / "audio.parquet")
    with pytest.raises(DataError, match="audio.parquet") as err:
        load_folder(folder)
    assert message in str(err.value)
    assert main(["fit", str(folder), "--model", "pop", "--out", str(tmp_path / "m")]) == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert err_lines[-1].startswith("error: ") and message in err_lines[-1]


def test_content_model_uses_vector_file_for_cold_items(tmp_path: Path) -> None:
    """Items cluster by their vectors only (titles say nothing): a cold item scores highest for users of its
    cluster when the vectors are in, and not without them."""
    rng = np.random.default_rng(1)
    n = 40
    cluster = np.arange(n) % 2
    items = pd.DataFrame({"item_id": [f"i{j}" for j in range(n)], "title": ["x"] * n})
    rows = [{"user_id": f"u{u}", "item_id": f"i{j}", "weight": 1.0, "timestamp": -1}
            for u in range(40) for j in rng.choice(np.flatnonzero(cluster == u % 2)[:-2], 5, replace=False)]
    folder = write_folder(items, pd.DataFrame(rows), tmp_path / "ds")
    vecs = np.eye(2)[cluster] + 0.05 * rng.normal(size=(n, 2))
    write_vector_file(folder / "item_vectors" / "clip.parquet", items["item_id"], vecs)
    ds = load_folder(folder)
    fused = create_model("content", embedding_cache=str(tmp_path / "cache")).fit(ds)
    cold = ds.item_indices(["i36", "i37", "i38", "i39"])  # two of each cluster, never interacted with
    scores = fused.score_users(np.array([0, 1]), cold)
    assert scores[0, [0, 2]].min() > scores[0, [1, 3]].max()  # user 0 likes cluster 0 (even ids)
    assert scores[1, [1, 3]].min() > scores[1, [0, 2]].max()
    text_only = create_model("content", embedding_cache=str(tmp_path / "cache"), modalities=["none"]).fit(ds)
    assert np.ptp(text_only.score_users(np.array([0]), cold)) < 1e-6  # identical titles: no way to tell them apart


# ---- media paths ---------------------------------------------------------------------------------
def test_media_paths_resolve_against_the_folder(tmp_path: Path) -> None:
    items = pd.DataFrame({"item_id": ["a", "b", "c", "d"], "audio_path": ["x.ogg", "", "/abs/y.ogg", ""],
                          "media_path": ["", "m.mp3", "", "v.mp4"], "media_type": ["", "music", "", "video"]})
    attach_folder(items, tmp_path)
    assert media_paths(items, "audio") == [tmp_path / "x.ogg", tmp_path / "m.mp3", Path("/abs/y.ogg"), None]
    assert media_paths(items, "video") == [None, None, None, tmp_path / "v.mp4"]


# ---- audio ---------------------------------------------------------------------------------------
def _tone(path: Path, freq: float, seconds: float = 2.0, noise: float = 0.0, sr: int = 22050) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    y = 0.3 * np.sin(2 * np.pi * freq * t) + noise * np.random.default_rng(0).normal(size=t.size)
    soundfile.write(str(path), y.astype(np.float32), sr)
    return path


@needs_audio
def test_audio_descriptors_tell_tones_from_noise_and_are_cached(tmp_path: Path) -> None:
    from avrec.encoders.audio import DESCRIPTOR_NAMES, AudioDescriptors
    from avrec.encoders.extract import extract_cached

    paths = [_tone(tmp_path / "a.wav", 440), _tone(tmp_path / "b.wav", 440), _tone(tmp_path / "n.wav", 440, noise=1)]
    calls: list[int] = []

    class Counting(AudioDescriptors):
        def extract(self, paths):  # the real extractor, counting the files it reads
            calls.append(len(paths))
            return super().extract(paths)

    ext = Counting()
    m, present = extract_cached(ext, [*paths, None], str(tmp_path / "cache"))
    assert present.tolist() == [True, True, True, False] and m.shape == (4, len(DESCRIPTOR_NAMES))
    flat = DESCRIPTOR_NAMES.index("flatness_mean")
    assert m[2, flat] > 10 * m[0, flat]  # noise is flat, a tone is not
    assert DESCRIPTOR_NAMES[0] == "log_duration" and abs(m[0, 0] - np.log1p(2.0)) < 0.05
    assert sum(calls) == 2  # a.wav and b.wav have the same bytes: read once
    m2, _ = extract_cached(ext, paths, str(tmp_path / "cache"))  # from the cache: nothing read again
    assert sum(calls) == 2
    np.testing.assert_allclose(m2, m[:3], rtol=1e-5)
    _tone(paths[0], 880)  # new content, new hash: extracted again
    extract_cached(ext, paths, str(tmp_path / "cache"))
    assert sum(calls) == 3


@needs_audio
def test_unreadable_audio_is_a_warning_and_missing_file_an_error(tmp_path: Path) -> None:
    from avrec.encoders.audio import AudioDescriptors
    from avrec.encoders.extract import extract_cached

    bad = tmp_path / "bad.ogg"
    bad.write_bytes(b"not audio at all" * 100)
    good = _tone(tmp_path / "a.wav", 440)
    with pytest.warns(UserWarning, match="bad.ogg"):
        _, present = extract_cached(AudioDescriptors(), [good, bad], "none")
    assert present.tolist() == [True, False]
    with pytest.raises(DataError, match="item 'x': audio file .*nope.wav.* does not exist"):
        extract_cached(AudioDescriptors(), [tmp_path / "nope.wav"], "none", labels=["x"])


REAL = debian_tracks(per_source=4)
needs_real = pytest.mark.skipif(not (REAL and HAS_FFMPEG and HAS_LIBROSA),
                                reason="needs Debian game music (apt-get install wesnoth-music), ffmpeg and librosa")


@pytest.fixture(scope="module")
def real_catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from avrec.testing.media import build_audio_catalogue

    return build_audio_catalogue(tmp_path_factory.mktemp("music"), n_tracks=14, seconds=6, per_source=4)


@needs_real
def test_hybrid_on_real_clips_places_a_new_track_without_text(real_catalogue: Path, tmp_path: Path) -> None:
    """A dataset folder whose items name real clips fits a hybrid; a new track with only its audio file is
    added without a retrain and lands next to the track it was cut from, by its sound alone."""
    from avrec.models.base import Recommender
    from avrec.testing.media import taste_interactions

    items = pd.read_csv(real_catalogue / "items.csv").fillna("")
    from avrec.encoders.modalities import extract_modality

    cache = str(tmp_path / "cache")
    truth = extract_modality(attach_folder(items, real_catalogue), "audio", "auto", cache).matrix
    write_folder(items, taste_interactions(items["item_id"].tolist(), truth, n_users=60, per_user=5), real_catalogue)
    assert main(["embed", str(real_catalogue), "--modality", "audio", "--cache", cache, "--json"]) == 0
    ds = load_folder(real_catalogue)
    model = create_model("hybrid", use_lm=False, max_steps=40, eval_every=20, dim=16, hidden=16, batch_users=16,
                         embedding_cache=cache).fit(ds)
    assert model.featurizer.modalities.names == ["audio"] and model.features.groups
    model.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    copy = tmp_path / "copy.ogg"
    shutil.copy(real_catalogue / items["audio_path"].iloc[3], copy)
    loaded.add_items(pd.DataFrame({"item_id": ["new"], "title": [""], "audio_path": [str(copy)]}))
    vecs = loaded.featurizer.modalities.normalised("audio", loaded.featurizer.modalities.vectors_for(
        pd.DataFrame({"item_id": ["new"], "audio_path": [str(copy)]}), cache)["audio"])
    known = loaded.featurizer.modalities.normalised("audio", extract_modality(ds.items, "audio", "auto", cache))
    assert int(np.argmax(known @ vecs[0])) == 3  # same sound: nearest to its source track
    assert loaded.score_users(np.array([0]), np.r_[ds.item_indices(["t000"]), len(ds.items)]).shape == (1, 2)


# ---- video ---------------------------------------------------------------------------------------
@needs_ffmpeg
def test_video_descriptors_on_generated_clips(tmp_path: Path) -> None:
    from avrec.encoders.video import IMAGE_NAMES, VIDEO_NAMES, ImageDescriptors, VideoDescriptors
    from avrec.testing.media import make_video_clips

    clips = make_video_clips(tmp_path / "clips", n=2, seconds=2)
    cut = tmp_path / "cut.mp4"
    import subprocess

    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(clips[0]), "-i", str(clips[1]), "-filter_complex",
                    "[0][1]concat=n=2:v=1", str(cut)], check=True)
    v = VideoDescriptors().extract([clips[0], clips[1], cut])
    name = {n: i for i, n in enumerate(VIDEO_NAMES)}
    assert v[0, name["motion_energy_mean"]] < 0.01 < v[1, name["motion_energy_mean"]]  # still colour vs moving pattern
    assert v[0, name["edge_density"]] < v[1, name["edge_density"]]
    assert v[0, name["cuts_per_minute"]] == 0 and v[2, name["cuts_per_minute"]] > 0
    assert abs(v[2, name["log_duration"]] - np.log1p(4.0)) < 0.1
    poster = tmp_path / "p.png"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=white:size=40x60", "-frames:v", "1",
                    str(poster)], check=True)
    img = ImageDescriptors().extract([poster])[0]
    assert img[IMAGE_NAMES.index("brightness")] > 0.95 and img[IMAGE_NAMES.index("saturation")] < 0.05
    assert img[IMAGE_NAMES.index("log_aspect")] == pytest.approx(np.log(40 / 60), abs=1e-3)


@needs_ffmpeg
def test_embed_cli_on_a_clip_folder_and_plugin_extractor(tmp_path: Path, capsys) -> None:
    from avrec.testing.media import make_video_clips

    folder = tmp_path / "clips"
    clips = make_video_clips(folder / "media", n=2, seconds=1)
    pd.DataFrame({"item_id": ["c0", "c1"], "media_path": [f"media/{c.name}" for c in clips],
                  "media_type": ["video", "video"]}).to_csv(folder / "items.csv", index=False)
    out = folder / "item_vectors" / "video.parquet"
    assert main(["embed", str(folder), "--modality", "video", "--cache", "none", "--out", str(out), "--json"]) == 0
    assert '"vectors": 2' in capsys.readouterr().out
    assert pd.read_parquet(out)["vector"].map(len).tolist() == [48, 48]
    assert main(["embed", str(folder), "--modality", "audio"]) == 2
    assert "no item has a audio file" in capsys.readouterr().err
    assert main(["embed", str(folder), "--modality", "video", "--extractor", "nosuch.module:Thing"]) == 2
    assert "cannot import" in capsys.readouterr().err
