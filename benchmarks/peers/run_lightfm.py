"""LightFM WARP, without and with item features, on one split folder (runs in .venv-lightfm).

Models:
- ``warp``: pure collaborative filtering (identity item features only). Cannot score items without
  training interactions, so peers.py runs it on the warm protocol only.
- ``warp-features``: identity features for items with training interactions plus content features for
  every item: genre, director, tag, keyword and decade tokens and TF-IDF words of the item text
  (title, overview, tagline, keywords, tags). Items without training interactions (all cold items) get
  their feature representation only. Whether the identity features help is part of the search.

Search (documented defaults: no_components=10, learning_rate=0.05, item_alpha=0, loss="warp", plus the
searched settings below): every variant trains with ``fit_partial`` one epoch at a time and writes lists at
epoch checkpoints (1, 2, 3, 5, 8, 12, 16, 20, 25, 30, 40, 50, 60 with features; 5, 10, 20, ... 100 without),
stopping after two checkpoints without a validation gain, so the epoch count is tuned on validation at no
extra training cost (with rich MovieLens features validation NDCG peaks within 3 epochs; Last.fm needs 15+).
- ``warp``: no_components in {10, 32, 64, 128} (identity features only, so it needs more epochs).
- ``warp-features``: the defaults, then (components, item_alpha, identity) in (32, 0, yes), (32, 0, no),
  (64, 0, no), (32, 1e-5, no) on the cold protocol; on the warm protocol the defaults and (32, 0, yes)
  only (warm fits keep improving up to 60 epochs, which is slow here, and identity features are needed).
- ``warp-features-notags``: the same without the crowd-sourced ``tags`` field (an ablation: a brand-new
  item has no user tags yet, and MovieLens tags come from the same users whose ratings are evaluated).
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import VariantWriter, load_split, params_label, runner_args  # noqa: E402

TOKEN_FIELDS = ("genres", "director", "tags", "keywords", "artist", "country")
TEXT_FIELDS = ("title", "overview", "tagline", "keywords", "tags", "genres")


def item_features(items, use_tokens: bool = True, use_words: bool = True, text_weight: float = 1.0,
                  drop: tuple[str, ...] = ()) -> tuple[sp.csr_matrix, list[str]]:
    """Content features per item: binary metadata tokens and L2-normalised TF-IDF words (``drop``: fields left out)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    items = items.drop(columns=[c for c in drop if c in items.columns])

    blocks, names = [], []
    n = len(items)
    if use_tokens:
        vocab: dict[str, int] = {}
        rows, cols = [], []
        for f in TOKEN_FIELDS:
            if f not in items.columns:
                continue
            for i, value in enumerate(items[f].astype(str)):
                for tok in value.split("|"):
                    tok = tok.strip().lower()
                    if tok:
                        rows.append(i)
                        cols.append(vocab.setdefault(f"{f}:{tok}", len(vocab)))
        if "year" in items.columns:
            for i, y in enumerate(items["year"].astype(str)):
                if y[:4].isdigit():
                    rows.append(i)
                    cols.append(vocab.setdefault(f"decade:{int(y[:4]) // 10 * 10}", len(vocab)))
        tok = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, len(vocab)))
        tok.sum_duplicates()
        tok.data[:] = 1.0
        # keep tokens shared by at least two items: a token of one item is an identity feature in disguise
        keep = np.flatnonzero(np.asarray((tok > 0).sum(0)).ravel() >= 2)
        inv = {v: k for k, v in vocab.items()}
        blocks.append(tok[:, keep])
        names += [inv[j] for j in keep]
    if use_words:
        fields = [f for f in TEXT_FIELDS if f in items.columns]
        docs = [" ".join(str(items[f].iat[i]).replace("|", " ") for f in fields) for i in range(n)]
        vec = TfidfVectorizer(min_df=2, max_df=0.5, max_features=20000, sublinear_tf=True, stop_words="english")
        words = vec.fit_transform(docs).astype(np.float32) * text_weight
        blocks.append(words)
        names += [f"word:{w}" for w in vec.get_feature_names_out()]
    return sp.hstack(blocks).tocsr(), names


def build_matrix(content: sp.csr_matrix | None, trained: np.ndarray, identity: bool) -> sp.csr_matrix:
    """[identity (trained items only) | content], each row scaled to sum 1 (LightFM's normalisation)."""
    n = len(trained)
    parts = []
    if identity:
        ident = sp.diags(trained.astype(np.float32)).tocsr()
        parts.append(ident)
    if content is not None:
        parts.append(content)
    m = sp.hstack(parts).tocsr().astype(np.float32)
    sums = np.asarray(m.sum(1)).ravel()
    sums[sums == 0] = 1.0
    return sp.diags(1.0 / sums).dot(m).tocsr().astype(np.float32)


def main() -> int:
    args = runner_args(__doc__.splitlines()[0])
    import lightfm
    from lightfm import LightFM

    split = load_split(args.split)
    writer = VariantWriter(split, args.out, "lightfm", lightfm.__version__, k=args.k)
    train = split.matrix("train", binary=True).tocoo()
    trained = np.asarray(split.matrix("train", binary=True).sum(0)).ravel() > 0
    checkpoints = [1, 3] if args.quick else [1, 2, 3, 5, 8, 12, 16, 20, 25, 30, 40, 50, 60]
    if args.model == "warp":
        checkpoints = [5, 10] if args.quick else [5, 10, 20, 30, 40, 60, 80, 100]
        grid = [{"no_components": c, "learning_rate": 0.05, "item_alpha": 0.0} for c in ((32,) if args.quick else (10, 32, 64, 128))]
        matrices = {True: None}
    elif args.model in ("warp-features", "warp-features-notags"):
        # the ablation leaves out the crowd tags (MovieLens users' tags.csv and hetrec tags)
        content, _ = item_features(split.items, drop=("tags",) if args.model.endswith("notags") else ())
        matrices = {ident: build_matrix(content, trained, ident) for ident in (True, False)}
        if args.quick:
            grid = [{"no_components": 32, "learning_rate": 0.05, "item_alpha": 0.0, "identity": False}]
        elif split.protocol == "warm":  # every item has interactions: identity features on; fits run 60 epochs here
            grid = [{"no_components": 32, "learning_rate": 0.05, "item_alpha": 0.0, "identity": True}]
        else:
            grid = [
                {"no_components": c, "learning_rate": 0.05, "item_alpha": a, "identity": ident}
                for c, a, ident in ((32, 0.0, True), (32, 0.0, False), (64, 0.0, False), (32, 1e-5, False))
            ]
        grid.insert(0, {"no_components": 10, "learning_rate": 0.05, "item_alpha": 0.0, "identity": True})  # defaults
        print(f"item features: {content.shape[1]} content features + identity for {int(trained.sum())} trained items", flush=True)
    else:
        print(f"unknown model {args.model!r}", file=sys.stderr)
        return 2
    for params in grid:
        feats = matrices.get(params.get("identity", True))
        model = LightFM(
            loss="warp", no_components=params["no_components"], learning_rate=params["learning_rate"],
            item_alpha=params["item_alpha"], random_state=2026,
        )
        fit_s, best, since_best = 0.0, -1.0, 0
        for epoch in range(1, max(checkpoints) + 1):
            t = time.perf_counter()
            model.fit_partial(train, item_features=feats, epochs=1, num_threads=args.threads)
            fit_s += time.perf_counter() - t
            if epoch in checkpoints:
                bias, emb = model.get_item_representations(feats)
                _, uemb = model.get_user_representations()

                def score(users, emb=emb, bias=bias, uemb=uemb):
                    return uemb[users] @ emb.T + bias[None, :]

                p = dict(params, epochs=epoch)
                ndcg = writer.add(params_label(p), p, fit_s, score)
                print(f"{params_label(p)} fit {fit_s:.1f}s quick valid ndcg {ndcg:.4f}", flush=True)
                best, since_best = (ndcg, 0) if ndcg > best else (best, since_best + 1)
                if since_best >= 2:  # early stop: two checkpoints without a validation gain
                    break
    writer.info["search_note"] = __doc__.split("Search ")[1].strip()
    writer.save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
