"""Check the PyTorch musicnn port against the original TensorFlow musicnn on real clips.

Needs a throwaway virtual environment with the original (never the project's own venv)::

    python3 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu==2.15.1 librosa
    /tmp/tfvenv/bin/pip install --no-deps musicnn==0.1.0
    nice -n 19 .venv/bin/python benchmarks/musicnn_check.py --tf-python /tmp/tfvenv/bin/python CLIP ...

Per model (MTT, MSD) and clip: the largest absolute difference of the per-patch tag probabilities and of the
first patch's penultimate layer (musicnn 0.1.0's extractor() repeats patch 0's penultimate in later rows,
a stale variable in its loop, so only patch 0 is comparable), and whether the top-3 tags agree. Writes
benchmarks/results/musicnn_port.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
_TF_SCRIPT = """
import json, sys, warnings
import numpy as np
warnings.filterwarnings("ignore")
from musicnn.extractor import extractor
out = {}
for path in sys.argv[3:]:
    taggram, _, feats = extractor(path, model=sys.argv[1], extract_features=True)
    out[path] = {"taggram": taggram.tolist(), "penultimate": np.asarray(feats["penultimate"])[0].tolist()}
json.dump(out, open(sys.argv[2], "w"))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tf-python", required=True, help="python of a venv with tensorflow-cpu and musicnn 0.1.0")
    ap.add_argument("clips", nargs="+")
    args = ap.parse_args()
    import librosa

    from avrec.encoders.musicnn import MusicnnTagger, log_mel, patches_of

    report: dict = {"clips": args.clips, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("mtt", "msd"):
            ref_path = Path(tmp) / f"{name}.json"
            subprocess.run([args.tf_python, "-c", _TF_SCRIPT, f"{name.upper()}_musicnn", str(ref_path), *args.clips],
                           check=True, capture_output=True)
            ref = json.loads(ref_path.read_text())
            tagger = MusicnnTagger(name)
            rows = []
            for clip in args.clips:
                y, _ = librosa.load(clip, sr=16000)
                penultimate, probs = tagger.net.forward(patches_of(log_mel(y)))
                tf_probs = np.array(ref[clip]["taggram"])
                top = [tagger.labels[i] for i in np.argsort(-probs.mean(0))[:3]]
                tf_top = [tagger.labels[i] for i in np.argsort(-tf_probs.mean(0))[:3]]
                rows.append({"clip": clip, "patches": len(probs),
                             "max_abs_diff_probs": float(np.abs(probs - tf_probs).max()),
                             "max_abs_diff_penultimate": float(np.abs(penultimate[0] - ref[clip]["penultimate"]).max()),
                             "top3": top, "top3_tf": tf_top})
            report["models"][name] = {
                "rows": rows,
                "max_abs_diff_probs": max(r["max_abs_diff_probs"] for r in rows),
                "max_abs_diff_penultimate": max(r["max_abs_diff_penultimate"] for r in rows),
                "top3_agree": sum(r["top3"] == r["top3_tf"] for r in rows),
            }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "musicnn_port.json").write_text(json.dumps(report, indent=1))
    lines = ["# musicnn: PyTorch port vs the original (TensorFlow 2.15.1, musicnn 0.1.0)", "",
             f"{len(args.clips)} real clips (Debian game soundtracks, 20 s each).", "",
             "| model | max abs diff, tag probabilities | max abs diff, penultimate (patch 0) | top-3 tags agree |",
             "|---|---|---|---|"]
    for name, m in report["models"].items():
        lines.append(f"| {name} | {m['max_abs_diff_probs']:.2e} | {m['max_abs_diff_penultimate']:.2e} | "
                     f"{m['top3_agree']}/{len(args.clips)} |")
    (RESULTS / "musicnn_port.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
