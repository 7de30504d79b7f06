"""Cornac BPR and CTR (collaborative topic regression, text-aware) on one split folder (.venv-cornac).

The Cornac train set is built from train.csv with a global item map that holds every catalogue item, so
items without training interactions are part of the model. CTR (Wang & Blei 2011) reads the item text
(title, genres, tags, keywords, tagline, overview) as a bag of words; an item's vector is its topic
proportions θ plus a collaborative offset, and an item without interactions keeps v = θ, which is how CTR
scores cold items (out-of-matrix prediction). CTR is pure NumPy, so it runs on the CPU; CDL and ConvMF
need TensorFlow and were not used.

Search (documented defaults first, iterations capped for two CPU cores):
- BPR: defaults (k=10, max_iter=100, learning_rate=0.001, lambda_reg=0.01), then k=64 with
  learning_rate in {0.01, 0.05} and max_iter=200.
- CTR: k=50 (default 200 is too slow here), max_iter=50 (default 100; 10 left cold items near random),
  lambda_v in {0.01 (default), 10}; lambda_u=0.01, a=1, b=0.01 as documented.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import VariantWriter, load_split, params_label, runner_args  # noqa: E402

TEXT_FIELDS = ("title", "artist", "genres", "tags", "keywords", "tagline", "overview")


def grid(model: str, quick: bool) -> list[dict]:
    if model == "BPR":
        if quick:
            return [{"k": 10, "max_iter": 20, "learning_rate": 0.001, "lambda_reg": 0.01}]
        return [{"k": 10, "max_iter": 100, "learning_rate": 0.001, "lambda_reg": 0.01}] + [
            {"k": 64, "max_iter": 200, "learning_rate": lr, "lambda_reg": 0.01} for lr in (0.01, 0.05)
        ]
    if quick:
        return [{"k": 20, "max_iter": 3, "lambda_u": 0.01, "lambda_v": 0.01}]
    return [{"k": 50, "max_iter": 50, "lambda_u": 0.01, "lambda_v": lv} for lv in (0.01, 10.0)]


def main() -> int:
    args = runner_args(__doc__.splitlines()[0])
    import cornac
    from cornac.data import Dataset, TextModality
    from cornac.data.text import BaseTokenizer

    split = load_split(args.split)
    writer = VariantWriter(split, args.out, "cornac", cornac.__version__, k=args.k)
    if args.model not in ("BPR", "CTR"):
        print(f"unknown model {args.model!r}", file=sys.stderr)
        return 2
    tr = split.frames["train"]
    triplets = list(zip(tr["user_id"].astype(str), tr["item_id"].astype(str), np.ones(len(tr))))
    uid_map = OrderedDict((str(u), i) for i, u in enumerate(split.user_ids))
    iid_map = OrderedDict((str(v), i) for i, v in enumerate(split.item_ids))
    train_set = Dataset.build(triplets, fmt="UIR", global_uid_map=uid_map, global_iid_map=iid_map, seed=2026)
    if args.model == "CTR":
        fields = [f for f in TEXT_FIELDS if f in split.items.columns]
        docs = [" ".join(str(split.items[f].iat[i]).replace("|", " ") for f in fields) for i in range(split.n_items)]
        text = TextModality(corpus=docs, ids=[str(i) for i in split.item_ids],
                            tokenizer=BaseTokenizer(stop_words="english"), max_vocab=8000, max_doc_freq=0.5)
        text.build(id_map=train_set.iid_map)
        train_set.add_modalities(item_text=text)
    # Cornac's indices follow our global maps, so its score rows line up with our user/item indices
    assert train_set.num_items == split.n_items and train_set.num_users == split.n_users
    for params in grid(args.model, args.quick):
        if args.model == "BPR":
            model = cornac.models.BPR(**params, num_threads=args.threads, seed=2026, verbose=False)
        else:
            model = cornac.models.CTR(**params, seed=2026, verbose=False)
        t = time.perf_counter()
        model.fit(train_set)
        fit_s = time.perf_counter() - t

        def score(users, model=model):
            if args.model == "BPR":
                return model.u_factors[users] @ model.i_factors.T + model.i_biases[None, :]
            return model.U[users] @ model.V.T

        writer.add(params_label(params), params, fit_s, score)
        print(f"{args.model} {params} fit {fit_s:.1f}s", flush=True)
    writer.info["search_note"] = __doc__.split("Search ")[1].strip()
    writer.save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
