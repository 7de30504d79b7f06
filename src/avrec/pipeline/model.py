"""The multi-stage ``pipeline``: retrieve → rank → re-rank.

1. **Retrieve** the top-N items with a retriever model (``hybrid`` when registered, else ``ease``).
2. **Rank** them with a fine-tuned cross-encoder (:mod:`avrec.finetune.ranker`) that reads the user's
   recent items and each candidate's document; its logit is blended with the retriever's score
   (both standardised per list) by ``blend_weight``, tuned on validation NDCG@10 when not fixed,
   so a ranker that does not help falls back to weight 0 (the retriever's order).
3. **Re-rank**: filters (media-type allow-list, blocked item ids) restrict the candidates before
   retrieval, duplicates (same normalised title and year) are dropped, and MMR trades relevance for
   diversity with ``mmr_lambda`` (1 = off; tuned on validation when None: the most diverse setting
   within ``mmr_tolerance`` of the best NDCG@10).

Everything lives in MODEL_DIR: the pipeline's arrays in ``model.safetensors``, the ranker in
``ranker/`` (safetensors weights) and the retriever in ``retriever/`` through its own save/load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from avrec.errors import ConfigError
from avrec.eval.topk import rank_scores
from avrec.models.base import Capabilities, Recommender, check_k


def default_retriever() -> str:
    """``hybrid`` when that model is registered, else ``ease``."""
    from avrec.models.registry import available_models

    return "hybrid" if "hybrid" in available_models() else "ease"


@dataclass
class PipelineConfig:
    """Settings of the three stages (``ranker``/``view``/``pairs``/``train`` are nested tables)."""

    retriever: str = "auto"
    retriever_config: dict = field(default_factory=dict)
    n_candidates: int = 50
    ranker_path: str = ""
    ranker: Any = None
    view: Any = None
    pairs: Any = None
    train: Any = None
    eval_users: int = 200
    blend_weight: float | None = None
    blend_grid: list[float] = field(default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    fallback_weight: float = 0.3
    mmr_lambda: float | None = None
    mmr_grid: list[float] = field(default_factory=lambda: [1.0, 0.95, 0.9, 0.8, 0.7])
    mmr_tolerance: float = 0.01
    mmr_vectors: str = "auto"
    dedupe: bool = True
    dedupe_fields: list[str] = field(default_factory=lambda: ["title", "year"])
    media_types: list[str] = field(default_factory=list)
    blocked_items: list[str] = field(default_factory=list)
    tune_users: int = 300
    internal_valid_share: float = 0.1
    threads: int = 0

    def __post_init__(self) -> None:
        from avrec.finetune.data import PairConfig, UserViewConfig
        from avrec.finetune.ranker import RankerConfig, _as
        from avrec.finetune.trainer import TrainConfig

        self.ranker = _as(RankerConfig, self.ranker)
        self.view = _as(UserViewConfig, self.view)
        self.pairs = _as(PairConfig, self.pairs)
        self.train = _as(TrainConfig, self.train)
        if self.n_candidates < 1:
            raise ConfigError("pipeline n_candidates must be at least 1")
        if self.blend_weight is not None and not 0 <= self.blend_weight <= 1:
            raise ConfigError("pipeline blend_weight must be in [0, 1]")
        if self.mmr_lambda is not None and not 0 <= self.mmr_lambda <= 1:
            raise ConfigError("pipeline mmr_lambda must be in [0, 1]")
        if self.mmr_vectors not in ("auto", "retriever", "metadata"):
            raise ConfigError("pipeline mmr_vectors must be auto, retriever or metadata")


def _standardise(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per-row z-scores over the valid entries (0 where invalid or constant)."""
    x = np.where(valid, x, 0.0).astype(np.float64)
    n = np.maximum(valid.sum(axis=1, keepdims=True), 1)
    mean = x.sum(axis=1, keepdims=True) / n
    var = (np.where(valid, (x - mean) ** 2, 0.0)).sum(axis=1, keepdims=True) / n
    std = np.sqrt(var)
    return np.where(valid & (std > 1e-12), (x - mean) / np.where(std > 1e-12, std, 1), 0.0)


def mmr_select(cands: np.ndarray, relevance: np.ndarray, vectors: np.ndarray | None, k: int, lam: float,
               dup_keys: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Greedy maximal marginal relevance over one candidate list.

    score(i) = lam * relevance(i) - (1 - lam) * max_{j selected} cos(v_i, v_j); relevance is
    standardised. Entries with an already-selected ``dup_keys`` value are dropped. Returns (items,
    relevance of each pick) for up to ``k`` picks, -1 / -inf padded.
    """
    ok = cands >= 0
    items, rel = cands[ok], relevance[ok].astype(np.float64)
    keys = dup_keys[items] if dup_keys is not None else None
    out_i = np.full(k, -1, dtype=np.int64)
    out_s = np.full(k, -np.inf, dtype=np.float32)
    if not len(items):
        return out_i, out_s
    use_mmr = lam < 1 and vectors is not None
    sims = None
    if use_mmr:
        v = vectors[items]
        v = np.asarray(v.toarray() if sp.issparse(v) else v, dtype=np.float32)
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        v = v / np.where(norms > 0, norms, 1)
        sims = v @ v.T
    max_sim = np.zeros(len(items))
    alive = np.ones(len(items), dtype=bool)
    used_keys: set = set()
    n = 0
    while n < k and alive.any():
        score = lam * rel - (1 - lam) * max_sim if use_mmr else rel.copy()
        score[~alive] = -np.inf
        j = int(np.argmax(score))
        alive[j] = False
        if keys is not None:
            if keys[j] in used_keys:
                continue
            used_keys.add(keys[j])
        out_i[n], out_s[n] = items[j], rel[j]
        n += 1
        if use_mmr:
            max_sim = np.maximum(max_sim, sims[j])
    return out_i, out_s


class Pipeline(Recommender):
    """Retrieve with a recommender, rank with a fine-tuned cross-encoder, re-rank for diversity."""

    name = "pipeline"
    Config = PipelineConfig

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        from avrec.models.registry import get_model_class

        if self.config.retriever == "auto":
            self.config.retriever = default_retriever()
        if self.config.retriever == "pipeline":
            raise ConfigError("the pipeline's retriever cannot be another pipeline")
        get_model_class(self.config.retriever)  # an unknown name fails here, listing the registered ones
        self.retriever: Recommender | None = None
        self.ranker = None
        self.blend_weight_ = float(self.config.blend_weight if self.config.blend_weight is not None
                                   else self.config.fallback_weight)
        self.mmr_lambda_ = float(self.config.mmr_lambda if self.config.mmr_lambda is not None else 1.0)
        self.recent: np.ndarray | None = None
        self.fit_report: dict[str, Any] = {}

    # ---- fitting ---------------------------------------------------------------------------------
    def use_retriever(self, retriever: Recommender) -> Pipeline:
        """Reuse an already fitted retriever (trained on the same data) in the next ``fit``."""
        if retriever.items is None:
            raise ConfigError(f"the retriever {retriever.name!r} given to the pipeline is not fitted")
        if retriever.name != self.config.retriever:
            raise ConfigError(f"pipeline retriever is {self.config.retriever!r}, not {retriever.name!r}")
        self._prefit_retriever = retriever
        return self

    def _fit(self, dataset, valid, valid_candidates) -> None:
        import time

        from avrec.finetune.data import recent_items
        from avrec.finetune.ranker import CrossEncoderRanker, RankerTrainingConfig, fit_ranker
        from avrec.models.registry import create_model

        cfg = self.config
        self._set_threads()
        if (valid is None or not valid.n_interactions) and cfg.internal_valid_share > 0:
            self._fit_with_internal_split(dataset)
            return
        t0 = time.perf_counter()
        prefit = getattr(self, "_prefit_retriever", None)
        if prefit is not None:
            self.retriever, self._prefit_retriever = prefit, None
        else:
            self.retriever = create_model(cfg.retriever, **cfg.retriever_config)
            self.retriever.fit(dataset, valid=valid, valid_candidates=valid_candidates)
        self.fit_report["retriever_seconds"] = time.perf_counter() - t0
        if self.retriever.n_items != dataset.n_items or len(self.retriever.user_ids) != dataset.n_users:
            raise ConfigError("the reused retriever was fitted on different data")
        self.recent = recent_items(dataset, cfg.view.max_items)
        if cfg.ranker_path:
            self.ranker = CrossEncoderRanker.load(cfg.ranker_path)
        else:
            from avrec.finetune.trainer import seed_everything

            seed_everything(cfg.train.seed)
            self.ranker = CrossEncoderRanker(cfg.ranker)
            job = RankerTrainingConfig(ranker=cfg.ranker, view=cfg.view, pairs=cfg.pairs, train=cfg.train,
                                       n_candidates=cfg.n_candidates, eval_users=cfg.eval_users)
            result, counts = fit_ranker(self.ranker, dataset, self.retriever, job, valid=valid,
                                        valid_candidates=valid_candidates)
            self.fit_report["ranker"] = {**result.to_dict(), **counts}
        self._reset_caches()
        if valid is not None and valid.n_interactions and (cfg.blend_weight is None or cfg.mmr_lambda is None):
            t1 = time.perf_counter()
            self.fit_report["tuning"] = self._tune(dataset, valid, valid_candidates)
            self.fit_report["tuning_seconds"] = time.perf_counter() - t1

    def _fit_with_internal_split(self, dataset) -> None:
        """No validation given (``avrec fit`` uses every interaction): hold out ``internal_valid_share`` of
        each user's items, train the ranker and tune the blend there, then refit the retriever on all data."""
        import time

        from avrec.data.splits import random_split
        from avrec.finetune.data import recent_items
        from avrec.models.registry import create_model

        cfg = self.config
        share = cfg.internal_valid_share
        inner = random_split(dataset, (1 - share, share, 0.0), seed=cfg.pairs.seed)
        prefit = getattr(self, "_prefit_retriever", None)
        self._prefit_retriever = None
        self._fit(inner.train, inner.valid, None)
        self.fit_report["internal_valid_share"] = share
        t0 = time.perf_counter()
        if prefit is not None:
            self.retriever = prefit
        else:
            self.retriever = create_model(cfg.retriever, **cfg.retriever_config)
            self.retriever.fit(dataset)
        self.fit_report["retriever_refit_seconds"] = time.perf_counter() - t0
        self.recent = recent_items(dataset, cfg.view.max_items)
        self._reset_caches()

    def _set_threads(self) -> None:
        if self.config.threads > 0:
            import torch

            torch.set_num_threads(self.config.threads)

    def _tune(self, train, valid, valid_candidates) -> dict[str, Any]:
        """Pick blend weight and MMR lambda that maximise validation NDCG@10 on cached scores."""
        from avrec.finetune.ranker import list_ndcg

        cfg = self.config
        truth_all = valid.matrix(binary=True)
        users = np.flatnonzero(np.diff(truth_all.indptr) > 0)
        if cfg.tune_users and len(users) > cfg.tune_users:
            users = np.sort(np.random.default_rng(cfg.pairs.seed).choice(users, cfg.tune_users, replace=False))
        truth = truth_all[users]
        allowed = self._allowed(valid_candidates)
        cands, rscores = self._retrieve(users, None, train.matrix(binary=True)[users], allowed)
        cscores = self._rank_scores(self._views_for_users(users), cands)
        weights = [cfg.blend_weight] if cfg.blend_weight is not None else list(cfg.blend_grid)
        lambdas = [cfg.mmr_lambda] if cfg.mmr_lambda is not None else list(cfg.mmr_grid)
        table = []
        for w in weights:
            rel = self._blend(cands, rscores, cscores, w)
            for lam in lambdas:
                order = self._select(cands, rel, 10, lam)
                table.append((float(w), float(lam), list_ndcg(order, truth, 10)))
        best = max(t[2] for t in table)
        # best weight at lambda = max; then the most diverse lambda within tolerance at that weight
        top_lam = max(lambdas)
        w_best = max((t for t in table if t[1] == top_lam), key=lambda t: (t[2], -t[0]))[0]
        at_w = [t for t in table if t[0] == w_best]
        ref = max(t[2] for t in at_w)
        ok = [t for t in at_w if t[2] >= ref * (1 - cfg.mmr_tolerance)]
        lam_best = min(t[1] for t in ok)
        self.blend_weight_, self.mmr_lambda_ = float(w_best), float(lam_best)
        retr = next((t[2] for t in table if t[0] == 0.0 and t[1] == top_lam), None)
        return {"users": int(len(users)), "blend_weight": self.blend_weight_, "mmr_lambda": self.mmr_lambda_,
                "valid_ndcg@10": float(next(t[2] for t in table if t[0] == w_best and t[1] == lam_best)),
                "valid_ndcg@10_retriever_order": retr, "best_grid_ndcg@10": best,
                "grid": [list(t) for t in table]}

    # ---- stages ----------------------------------------------------------------------------------
    def _reset_caches(self) -> None:
        self._docs_set = False
        self._views = None
        self._dup_keys = None
        self._mmr_vectors = None
        self._mmr_vectors_ready = False

    def _ensure_docs(self) -> None:
        from avrec.data.documents import build_documents
        from avrec.finetune.data import UserViews

        if not getattr(self, "_docs_set", False):
            import torch

            if torch.cuda.is_available() and self.ranker.device.type != "cuda":
                self.ranker.to("cuda")  # scoring runs under autocast there
            self.ranker.set_items(build_documents(self.items))
            self._docs_set = True
        if getattr(self, "_views", None) is None:
            self._views = UserViews(self.items, self.config.view)

    def _views_for_users(self, user_idx: np.ndarray) -> list[str]:
        self._ensure_docs()
        return [self._views.view(self.recent[u]) for u in user_idx]

    def _views_for_histories(self, histories: list[np.ndarray]) -> list[str]:
        self._ensure_docs()
        return [self._views.view(np.asarray(h, dtype=np.int64)[::-1]) for h in histories]

    def _allowed(self, candidates: np.ndarray | None) -> np.ndarray | None:
        """Candidate item indices after the media-type allow-list and blocked ids (None: all items)."""
        cfg = self.config
        if not cfg.media_types and not cfg.blocked_items:
            return candidates
        mask = np.ones(self.n_items, dtype=bool)
        if cfg.media_types:
            if "media_type" in self.items.columns:
                wanted = {m.strip().lower() for m in cfg.media_types}
                mask &= self.items["media_type"].astype(str).str.strip().str.lower().isin(wanted).to_numpy()
            else:
                mask[:] = False
        if cfg.blocked_items:
            blocked = set(map(str, cfg.blocked_items))
            mask &= ~self.items["item_id"].astype(str).isin(blocked).to_numpy()
        if candidates is not None:
            keep = np.zeros(self.n_items, dtype=bool)
            keep[np.asarray(candidates, dtype=np.int64)] = True
            mask &= keep
        return np.flatnonzero(mask).astype(np.int64)

    def _retrieve(self, user_idx, history, exclude, allowed, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Retriever top-n (indices, scores) for known users (``user_idx``) or for ``history`` rows."""
        n = n or self.config.n_candidates
        if allowed is not None and len(allowed) == 0:
            rows = len(user_idx) if user_idx is not None else history.shape[0]
            return np.full((rows, n), -1, np.int64), np.full((rows, n), -np.inf, np.float32)
        if user_idx is not None:
            return self.retriever.topk_indices(user_idx, n, exclude=exclude, candidates=allowed)
        scores = self.retriever.score_histories(history, allowed)
        return rank_scores(scores, n, exclude, allowed)

    def _rank_scores(self, views: list[str], cands: np.ndarray) -> np.ndarray:
        from avrec.finetune.ranker import score_lists

        self._ensure_docs()
        return score_lists(self.ranker, views, cands)

    @staticmethod
    def _blend(cands: np.ndarray, rscores: np.ndarray, cscores: np.ndarray, w: float) -> np.ndarray:
        valid = (cands >= 0) & np.isfinite(rscores)
        z = (1 - w) * _standardise(rscores, valid)
        if w > 0:
            z = z + w * _standardise(cscores, valid & np.isfinite(cscores))
        return np.where(cands >= 0, z, -np.inf)

    def _dup_key_array(self) -> np.ndarray | None:
        if not self.config.dedupe:
            return None
        if getattr(self, "_dup_keys", None) is None:
            fields = [f for f in self.config.dedupe_fields if f in self.items.columns]
            if not fields:
                self._dup_keys = self.items["item_id"].astype(str).to_numpy(dtype=object)
            else:
                norm = [self.items[f].astype(str).str.lower().map(lambda s: re.sub(r"\W+", " ", s).strip()) for f in fields]
                keys = norm[0]
                for extra in norm[1:]:
                    keys = keys + "\x1f" + extra
                # items without any text keep their own identity
                empty = (keys.str.replace("\x1f", "", regex=False).str.strip() == "").to_numpy()
                arr = keys.to_numpy(dtype=object)
                arr[empty] = self.items["item_id"].astype(str).to_numpy(dtype=object)[empty]
                self._dup_keys = arr
        return self._dup_keys

    def _vectors(self):
        """Item vectors for MMR: the retriever's when small enough, else metadata tokens."""
        if getattr(self, "_mmr_vectors_ready", False):
            return self._mmr_vectors
        mode = self.config.mmr_vectors
        vec = None
        if mode in ("auto", "retriever"):
            v = self.retriever.item_vectors()
            if v is not None and (mode == "retriever" or np.shape(v)[1] <= 2048):
                vec = np.asarray(v, dtype=np.float32)
        if vec is None:
            from avrec.data.dataset import Dataset
            from avrec.eval.evaluate import item_feature_matrix

            holder = Dataset(items=self.items, user_ids=np.zeros(0), user_idx=np.zeros(0), item_idx=np.zeros(0),
                             weight=np.zeros(0), timestamp=np.zeros(0))
            feats = item_feature_matrix(holder)
            vec = sp.csr_matrix(feats, dtype=np.float32) if feats.shape[0] == self.n_items else None
        self._mmr_vectors, self._mmr_vectors_ready = vec, True
        return vec

    def _select(self, cands: np.ndarray, rel: np.ndarray, k: int, lam: float) -> np.ndarray:
        order, _ = self._select_with_scores(cands, rel, None, k, lam)
        return order

    def _select_with_scores(self, cands, rel, rscores, k, lam) -> tuple[np.ndarray, np.ndarray]:
        """Final lists: MMR over the first N (ranked) entries, then the retriever's order beyond N;
        repeats of an already listed title/year are moved below every distinct item."""
        n_head = min(self.config.n_candidates, cands.shape[1])
        vectors = self._vectors() if lam < 1 else None
        keys = self._dup_key_array()
        out_i = np.full((len(cands), k), -1, dtype=np.int64)
        out_v = np.full((len(cands), k), -np.inf, dtype=np.float32)
        for r in range(len(cands)):
            head_i, head_v = mmr_select(cands[r, :n_head], rel[r, :n_head], vectors, n_head, lam)
            ok = head_i >= 0
            items = list(head_i[ok])
            values = list(np.minimum.accumulate(head_v[ok].astype(np.float64))) if ok.any() else []
            low = values[-1] if values else 0.0
            tail = cands[r, n_head:]
            tail_ok = tail >= 0
            if tail_ok.any():
                ts = rscores[r, n_head:][tail_ok].astype(np.float64) if rscores is not None else None
                head_r = rscores[r, :n_head] if rscores is not None else None
                if ts is not None and head_r is not None and np.isfinite(head_r).any():
                    spread = np.std(head_r[np.isfinite(head_r)]) or 1.0
                    ts = np.where(np.isfinite(ts), ts, np.nanmin(ts[np.isfinite(ts)]) if np.isfinite(ts).any() else 0.0)
                    drop = (ts[0] - ts) / spread
                else:
                    drop = np.arange(tail_ok.sum(), dtype=np.float64)
                items.extend(tail[tail_ok])
                values.extend(low - 1.0 - drop)
            if keys is not None and items:
                first, repeats = [], []
                used: set = set()
                for it, v in zip(items, values):
                    (repeats if keys[it] in used else first).append((it, v))
                    used.add(keys[it])
                low2 = first[-1][1] if first else 0.0
                items = [it for it, _ in first] + [it for it, _ in repeats]
                values = [v for _, v in first] + [low2 - 1.0 - j for j in range(len(repeats))]
            m = min(k, len(items))
            out_i[r, :m] = items[:m]
            out_v[r, :m] = np.minimum.accumulate(np.asarray(values[:m], dtype=np.float64))
        return out_i, out_v

    def _run(self, views, user_idx, history, k, exclude, candidates) -> tuple[np.ndarray, np.ndarray]:
        allowed = self._allowed(candidates)
        cands, rscores = self._retrieve(user_idx, history, exclude, allowed, max(k, self.config.n_candidates))
        n_head = min(self.config.n_candidates, cands.shape[1])
        w = self.blend_weight_
        head = cands[:, :n_head]
        cscores = self._rank_scores(views, head) if w > 0 else np.zeros(head.shape, np.float32)
        rel = np.full(cands.shape, -np.inf)
        rel[:, :n_head] = self._blend(head, rscores[:, :n_head], cscores, w)
        return self._select_with_scores(cands, rel, rscores, k, self.mmr_lambda_)

    # ---- the Recommender hooks -------------------------------------------------------------------
    def topk_indices(self, user_idx, k, *, exclude=None, candidates=None, batch_size=512):
        """Pipeline top-K for known users: retrieve top-N, rank, blend, de-duplicate, MMR."""
        self._check_fitted()
        self._set_threads()
        user_idx = np.asarray(user_idx, dtype=np.int64)
        out_i = np.full((len(user_idx), k), -1, dtype=np.int64)
        out_v = np.full((len(user_idx), k), -np.inf, dtype=np.float32)
        for start in range(0, len(user_idx), batch_size):
            sl = slice(start, start + batch_size)
            ex = exclude[sl] if exclude is not None else None
            views = self._views_for_users(user_idx[sl]) if self.blend_weight_ > 0 else [""] * len(user_idx[sl])
            out_i[sl], out_v[sl] = self._run(views, user_idx[sl], None, k, ex, candidates)
        return out_i, out_v

    def recommend_explained(self, users, k: int = 10, exclude_seen: bool = True, candidates=None):
        """The explain stage: ``recommend`` plus one grounded explanation per recommended item.

        Returns ``(ids, scores, explanations)``; ``explanations[r][j]`` is the
        ``{"user_id", "item_id", "text", "evidence"}`` dict of :class:`avrec.explain.Explainer`, or None
        for padding and for users the model has never seen (they have no history to cite).
        """
        from avrec.explain import Explainer

        users = [str(u) for u in users]
        ids, scores = self.recommend(users, k, exclude_seen=exclude_seen, candidates=candidates)
        if getattr(self, "_explainer", None) is None or self._explainer.model is not self:
            self._explainer = Explainer(self)
        known = self.known_users(users)
        explanations = [
            [self._explainer.explain(u, i) if (ok and i is not None) else None for i in row]
            for u, ok, row in zip(users, known, ids)
        ]
        return ids, scores, explanations

    def recommend_history(self, histories, k: int = 10, exclude_seen: bool = True, candidates=None):
        """Fold-in users given as item-id lists (oldest first): the whole pipeline, no retrain."""
        self._check_fitted()
        check_k(k)
        idx_lists = [self.items_to_index(list(h), what=f"history {r}") for r, h in enumerate(histories)]
        hist = self.history_matrix(histories)
        cand_idx = None if candidates is None else np.unique(self.items_to_index(list(candidates)))
        views = self._views_for_histories(idx_lists)
        out_i, out_v = self._run(views, None, hist, k, hist if exclude_seen else None, cand_idx)
        return self.ids_of(out_i), out_v

    def _score(self, user_idx, item_idx):
        """Full score rows: the pipeline's picks on top (in pipeline order), the retriever below."""
        base = self.retriever.score_users(user_idx, item_idx)
        cands, _ = self.topk_indices(user_idx, self.config.n_candidates, exclude=None, candidates=item_idx)
        return self._overlay(base, cands, item_idx)

    def _score_history(self, history, item_idx):
        base = self.retriever.score_histories(history, item_idx)
        histories = [history.indices[history.indptr[r]:history.indptr[r + 1]] for r in range(history.shape[0])]
        views = self._views_for_histories(histories)
        cands, _ = self._run(views, None, sp.csr_matrix(history), self.config.n_candidates, None, item_idx)
        return self._overlay(base, cands, item_idx)

    def _overlay(self, base: np.ndarray, picks: np.ndarray, item_idx) -> np.ndarray:
        out = np.array(base, dtype=np.float32, copy=True)
        finite = np.isfinite(out)
        top = np.max(np.where(finite, out, -np.inf), axis=1, keepdims=True) if out.size else out
        top = np.where(np.isfinite(top), top, 0.0)
        pos = None
        if item_idx is not None:
            pos = {int(i): p for p, i in enumerate(np.asarray(item_idx))}
        n = picks.shape[1]
        for r in range(len(picks)):
            for rank, i in enumerate(picks[r]):
                if i < 0:
                    continue
                c = int(i) if pos is None else pos.get(int(i))
                if c is not None:
                    out[r, c] = top[r, 0] + 1.0 + (n - rank)
        return out

    @property
    def capabilities(self) -> Capabilities:
        """The retriever's (it decides which items can be scored and added), less what the pipeline
        object itself does not offer: exact fold-in (the ranker reads text), text queries and a graph."""
        if self.retriever is not None:
            caps = self.retriever.capabilities
        else:
            from avrec.models.registry import get_model_class

            caps = get_model_class(self.config.retriever).CAPABILITIES
        return replace(caps, exact_fold_in=False, text_queries=False, knowledge_graph=False)

    def _item_vectors(self):
        return self.retriever.item_vectors()

    def _item_vector_dim(self):
        return self.retriever.item_vector_dim()

    def _similarity_rows(self, idx):
        return self.retriever.similarity_rows(idx)

    def _add_items(self, new_items: pd.DataFrame) -> None:
        self.retriever.add_items(new_items)
        self._reset_caches()

    def add_items(self, new_items: pd.DataFrame) -> int:
        n = super().add_items(new_items)
        self._reset_caches()
        return n

    # ---- persistence ---------------------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        return {
            "recent": self.recent.astype(np.int64),
            "blend_weight": np.asarray([self.blend_weight_], dtype=np.float32),
            "mmr_lambda": np.asarray([self.mmr_lambda_], dtype=np.float32),
        }

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self.recent = state["recent"]
        self.blend_weight_ = float(state["blend_weight"][0])
        self.mmr_lambda_ = float(state["mmr_lambda"][0])

    def _save_extra(self, folder: Path) -> None:
        import json

        self.retriever.save(folder / "retriever")
        self.ranker.save(folder / "ranker")
        (folder / "pipeline_report.json").write_text(json.dumps(self.fit_report, indent=1, default=float))

    def _load_extra(self, folder: Path) -> None:
        from avrec.finetune.ranker import CrossEncoderRanker

        self.retriever = Recommender.load(folder / "retriever")
        self.ranker = CrossEncoderRanker.load(folder / "ranker")
        self._reset_caches()
