"""musicnn in PyTorch: the port against the original TensorFlow outputs, the tags heard becoming item text,
knowledge-graph entities and "heard in the audio" evidence."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from avrec.cli import main
from avrec.data.io import load_folder, write_folder
from avrec.errors import DataError
from avrec.testing.media import debian_tracks

try:
    import soundfile

    HAS_LIBROSA = True
except ImportError:
    HAS_LIBROSA = False
needs_audio = pytest.mark.skipif(not HAS_LIBROSA, reason="needs the audio extra (librosa)")
REFERENCE = Path(__file__).parent / "data" / "musicnn_reference.json"


def _signal(sr: int = 16000, seconds: float = 9.0) -> np.ndarray:
    """A deterministic test signal: a swelling A-major triad, an 80 Hz beat every 0.5 s and a rising sweep."""
    t = np.arange(int(sr * seconds)) / sr
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.18, 329.63)) / 3
    beat = (np.mod(t, 0.5) < 0.03) * np.sin(2 * np.pi * 80 * t)
    sweep = 0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t)
    return (0.5 * chord * (0.6 + 0.4 * np.sin(2 * np.pi * 0.25 * t)) + 0.6 * beat + 0.2 * sweep).astype(np.float32)


@needs_audio
@pytest.mark.parametrize("dataset", ["mtt", "msd"])
def test_port_matches_the_original_tensorflow_musicnn(tmp_path: Path, dataset: str) -> None:
    """tests/data/musicnn_reference.json holds musicnn 0.1.0's own outputs (TensorFlow 2.15, its extractor())
    for this signal written as a float WAV; the PyTorch port reads the same file and must agree per patch."""
    from avrec.encoders.musicnn import MusicnnTagger, top_tags

    ref = json.loads(REFERENCE.read_text())[f"{dataset.upper()}_musicnn"]
    wav = tmp_path / "sig.wav"
    soundfile.write(wav, _signal(), 16000, subtype="FLOAT")
    tagger = MusicnnTagger(dataset)
    vec = tagger.extract([wav])[0]
    y, _ = __import__("librosa").load(str(wav), sr=16000)
    emb, probs, per_patch = tagger.clip(y)
    assert per_patch.shape == (3, 50) and vec.shape == (250,)
    assert np.abs(per_patch - np.array(ref["taggram"])).max() < 1e-5
    from avrec.encoders.musicnn import log_mel, patches_of

    penultimate, _ = tagger.net.forward(patches_of(log_mel(y)))
    assert np.abs(penultimate[0] - np.array(ref["penultimate_patch0"])).max() < 1e-4
    np.testing.assert_allclose(vec, np.concatenate([emb, probs]), atol=1e-6)
    tf_top = [tagger.labels[i] for i in np.argsort(-np.array(ref["taggram"]).mean(axis=0))[:3]]
    assert top_tags(vec, tagger.labels, k=3, min_prob=0.0) == tf_top


def test_short_clip_is_repeated_to_one_patch() -> None:
    from avrec.encoders.musicnn import N_FRAMES, patches_of

    rep = np.arange(50 * 96, dtype=np.float32).reshape(50, 96)
    out = patches_of(rep)
    assert out.shape == (1, N_FRAMES, 96) and np.array_equal(out[0, 50:100], rep)
    assert patches_of(np.zeros((2 * N_FRAMES + 10, 96))).shape == (2, N_FRAMES, 96)


@pytest.mark.skipif(not os.environ.get("AVREC_MUSICNN_WHEEL"), reason="set AVREC_MUSICNN_WHEEL to musicnn's wheel")
def test_converter_reproduces_the_shipped_weights(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    from avrec.encoders.musicnn import WEIGHTS
    from avrec.encoders.musicnn_convert import convert_wheel

    convert_wheel(Path(os.environ["AVREC_MUSICNN_WHEEL"]), tmp_path)
    for name, shipped in WEIGHTS.items():
        new, old = load_file(str(tmp_path / f"musicnn_{name}.safetensors")), load_file(str(shipped))
        assert new.keys() == old.keys() and all(np.array_equal(new[k], old[k]) for k in old)


REAL = debian_tracks(per_source=3)
needs_real = pytest.mark.skipif(not (REAL and HAS_LIBROSA and shutil.which("ffmpeg")),
                                reason="needs Debian game music, ffmpeg and librosa")


@needs_real
def test_heard_tags_become_text_entities_and_audio_evidence(tmp_path: Path, capsys) -> None:
    """Real clips: `avrec embed --heard-tags` writes heard_tags.csv, load_folder puts the tags in the items'
    text and knowledge graph, and an explanation cites a shared tag as heard in the audio."""
    from avrec.data.documents import build_documents
    from avrec.explain import Explainer
    from avrec.kg import build_kg
    from avrec.models.registry import create_model
    from avrec.testing.media import build_audio_catalogue

    folder = build_audio_catalogue(tmp_path / "music", n_tracks=8, seconds=6, per_source=3)
    cache = str(tmp_path / "cache")
    assert main(["embed", str(folder), "--modality", "audio", "--heard-tags", "--cache", cache, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["extractor"].startswith("musicnn-mtt") and summary["dim"] == 250
    heard = pd.read_csv(folder / "heard_tags.csv", keep_default_na=False)
    items = pd.read_csv(folder / "items.csv", keep_default_na=False)
    assert len(heard) == len(items) >= 4 and (heard["heard_tags"] != "").all()
    tags = {r.item_id: r.heard_tags.split("|") for r in heard.itertuples()}
    pair = next(((x, y) for x in tags for y in tags if x < y and set(tags[x]) & set(tags[y])), None)
    assert pair, f"no two clips share a heard tag: {tags}"
    a, b = pair
    shared = sorted(set(tags[a]) & set(tags[b]))
    others = [i for i in items["item_id"] if i not in (a, b)]
    rows = [(f"u{u}", i) for u in range(12) for i in ([a, b] if u % 2 else others[u % 3 :: 3])]
    write_folder(items, pd.DataFrame(rows, columns=["user_id", "item_id"]).assign(weight=1.0), folder)

    ds = load_folder(folder)
    assert ds.items["heard_tags"].tolist() == [heard.set_index("item_id")["heard_tags"][i] for i in ds.item_ids]
    doc = build_documents(ds.items)[list(ds.item_ids).index(a)]
    assert f"Heard in the audio: {', '.join(tags[a])}." in doc
    kg = build_kg(ds.items)
    assert set(kg.entities.loc[kg.entities["type"] == "heard", "value"]) >= set(shared)
    model = create_model("ease", l2=1.0).fit(ds)
    exp = Explainer(model).explain_history([a], b)
    heard_ev = [e for e in exp["evidence"] if e["kind"] == "entity" and e.get("source") == "heard in the audio"]
    assert heard_ev and heard_ev[0]["field"] == "heard_tags"
    said = re.search(r'has the sound "([^"]+)" \(heard in the audio\)', exp["text"])
    assert said and said.group(1) in shared and "tagged" not in exp["text"]


def test_heard_tags_file_errors_and_cli_misuse(tmp_path: Path, capsys) -> None:
    items = pd.DataFrame({"item_id": ["a", "b"], "title": ["A", "B"]})
    folder = write_folder(items, pd.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"]}), tmp_path / "ds")
    pd.DataFrame({"item_id": ["a", "zz"], "heard_tags": ["piano", "rock"]}).to_csv(folder / "heard_tags.csv",
                                                                                  index=False)
    with pytest.raises(DataError, match=r"heard_tags.csv: row 1, field 'item_id': unknown item_id 'zz'"):
        load_folder(folder)
    (folder / "heard_tags.csv").unlink()
    assert "heard_tags" not in load_folder(folder).items.columns  # no file: the catalogue is as before
    assert main(["embed", str(folder), "--modality", "video", "--heard-tags"]) == 2
    assert "--heard-tags needs --modality audio" in capsys.readouterr().err
