"""The multi-stage ``pipeline`` model: retrieve → rank → re-rank, composed of :mod:`avrec.pipeline.stages`.

1. :class:`~avrec.pipeline.stages.Retrieve` the top-N items with a retriever model (``hybrid`` when
   registered, else ``ease``), only among the items the :class:`~avrec.pipeline.stages.Filters`
   (media-type allow-list, blocked item ids) allow.
2. :class:`~avrec.pipeline.stages.CrossEncoderRank`: a fine-tuned cross-encoder
   (:mod:`avrec.finetune.ranker`) reads the user's recent items and each candidate's document; its
   logit is blended with the retriever's score (both standardised per list) by ``blend_weight``, tuned
   on validation NDCG@10 when not fixed (:mod:`avrec.pipeline.tuning`), so a ranker that does not help
   falls back to weight 0 (the retriever's order).
3. Re-rank: :class:`~avrec.pipeline.rerank.MMR` trades relevance for diversity with ``mmr_lambda``
   (1 = off; tuned when None), :class:`~avrec.pipeline.rerank.Dedupe` moves repeats (same normalised
   title and year) below every distinct item, and the filters are checked once more.

Everything lives in MODEL_DIR: the pipeline's arrays in ``model.safetensors``, the ranker in
``ranker/`` (safetensors weights) and the retriever in ``retriever/`` through its own save/load.
``Recommender.load`` finds this class through the ``avrec.models`` entry point ``pipeline``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from avrec.data.dataset import Dataset
from avrec.errors import ConfigError
from avrec.models.base import Capabilities, Recommender, check_k
from avrec.models.registry import create_model, default_retriever, get_model_class
from avrec.pipeline.config import PipelineConfig
from avrec.pipeline.rerank import MMR, Dedupe, dedupe_keys, mmr_vectors
from avrec.pipeline.stages import (
    Context,
    CrossEncoderRank,
    Filters,
    RankerInputs,
    Retrieve,
    Stage,
    run_stages,
)
from avrec.pipeline.tuning import tune

if TYPE_CHECKING:
    from avrec.finetune.ranker import CrossEncoderRanker


def raise_picks(base: np.ndarray, picks: np.ndarray, item_idx: np.ndarray | None) -> np.ndarray:
    """Score rows for a pipeline: ``base`` (the retriever's rows) with each row's ``picks`` (the pipeline's
    list, best first) raised above every other item in list order, so that ranking a row reproduces the
    pipeline's list and continues in the retriever's order. ``item_idx``: the columns of ``base``."""
    out = np.array(base, dtype=np.float32, copy=True)
    finite = np.isfinite(out)
    top = np.max(np.where(finite, out, -np.inf), axis=1, keepdims=True) if out.size else out
    top = np.where(np.isfinite(top), top, 0.0)
    column = None if item_idx is None else {int(i): p for p, i in enumerate(np.asarray(item_idx))}
    n = picks.shape[1]
    for r in range(len(picks)):
        for rank, i in enumerate(picks[r]):
            c = None if i < 0 else (int(i) if column is None else column.get(int(i)))
            if c is not None:
                out[r, c] = top[r, 0] + 1.0 + (n - rank)
    return out


class Pipeline(Recommender):
    """Retrieve with a recommender, rank with a fine-tuned cross-encoder, re-rank for diversity.

    Lists come from :meth:`stages` (``topk_indices``, ``topk_histories``, ``recommend``,
    ``recommend_history``). Score rows (``score_users``, ``score_histories``) have no meaning of their own
    for a pipeline: they are the retriever's rows with the pipeline's top ``n_candidates`` raised above
    everything else, in list order (:func:`raise_picks`).
    """

    name = "pipeline"
    Config = PipelineConfig

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        if self.config.retriever == "auto":
            self.config.retriever = default_retriever()
        if self.config.retriever == "pipeline":
            raise ConfigError("the pipeline's retriever cannot be another pipeline")
        get_model_class(self.config.retriever)  # an unknown name fails here, listing the registered ones
        self.retriever: Recommender | None = None
        self.ranker: CrossEncoderRanker | None = None
        self.blend_weight_ = float(self.config.blend_weight if self.config.blend_weight is not None
                                   else self.config.fallback_weight)
        self.mmr_lambda_ = float(self.config.mmr_lambda if self.config.mmr_lambda is not None else 1.0)
        self.recent: np.ndarray | None = None
        self.fit_report: dict[str, Any] = {}
        #: stages run after the re-rankers and before the final filter check (an exploration policy, say);
        #: not saved with the model
        self.extra_stages: list[Stage] = []
        self._prefit_retriever: Recommender | None = None
        self.reset_caches()

    # ---- fitting ---------------------------------------------------------------------------------
    def use_retriever(self, retriever: Recommender) -> Pipeline:
        """Reuse an already fitted retriever (trained on the same data) in the next ``fit``."""
        if retriever.items is None:
            raise ConfigError(f"the retriever {retriever.name!r} given to the pipeline is not fitted")
        if retriever.name != self.config.retriever:
            raise ConfigError(f"pipeline retriever is {self.config.retriever!r}, not {retriever.name!r}")
        self._prefit_retriever = retriever
        return self

    def _fit(self, dataset: Dataset, valid: Dataset | None, valid_candidates: np.ndarray | None) -> None:
        from avrec.finetune.data import recent_items
        from avrec.finetune.ranker import CrossEncoderRanker
        from avrec.finetune.ranker_training import RankerTrainingConfig, fit_ranker

        cfg = self.config
        self._set_threads()
        if (valid is None or not valid.n_interactions) and cfg.internal_valid_share > 0:
            self._fit_with_internal_split(dataset)
            return
        t0 = time.perf_counter()
        if self._prefit_retriever is not None:
            self.retriever, self._prefit_retriever = self._prefit_retriever, None
        else:
            self.retriever = create_model(cfg.retriever, **cfg.retriever_config)
            self.retriever.fit(dataset, valid=valid, valid_candidates=valid_candidates)
        self.fit_report["retriever_seconds"] = time.perf_counter() - t0
        if self.retriever.n_items != dataset.n_items or len(self._fitted(self.retriever.user_ids)) != dataset.n_users:
            raise ConfigError("the reused retriever was fitted on different data")
        self.recent = recent_items(dataset, cfg.view.max_items)
        if cfg.ranker_path:
            self.ranker = CrossEncoderRanker.load(cfg.ranker_path)
        else:
            from avrec.seeding import seed_everything

            seed_everything(cfg.train.seed)
            self.ranker = CrossEncoderRanker(cfg.ranker)
            job = RankerTrainingConfig(ranker=cfg.ranker, view=cfg.view, pairs=cfg.pairs, train=cfg.train,
                                       n_candidates=cfg.n_candidates, eval_users=cfg.eval_users)
            result, counts = fit_ranker(self.ranker, dataset, self.retriever, job, valid=valid,
                                        valid_candidates=valid_candidates)
            self.fit_report["ranker"] = {**result.to_dict(), **counts}
        self.reset_caches()
        if valid is not None and valid.n_interactions and (cfg.blend_weight is None or cfg.mmr_lambda is None):
            t1 = time.perf_counter()
            # the catalogue of ``dataset`` is the pipeline's (``fit`` set it); tuning reads it through the stages
            report = tune(cfg, self.retrieve_stage(), self.rank_stage(), self.rerank_stages, dataset, valid,
                          valid_candidates)
            self.blend_weight_, self.mmr_lambda_ = report["blend_weight"], report["mmr_lambda"]
            self.fit_report["tuning"] = report
            self.fit_report["tuning_seconds"] = time.perf_counter() - t1

    def _fit_with_internal_split(self, dataset: Dataset) -> None:
        """No validation given (``avrec fit`` uses every interaction): hold out ``internal_valid_share`` of
        each user's items, train the ranker and tune the blend there, then refit the retriever on all data."""
        from avrec.data.splits import random_split
        from avrec.finetune.data import recent_items

        cfg = self.config
        share = cfg.internal_valid_share
        inner = random_split(dataset, (1 - share, share, 0.0), seed=cfg.pairs.seed)
        prefit, self._prefit_retriever = self._prefit_retriever, None
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
        self.reset_caches()

    def _set_threads(self) -> None:
        if self.config.threads > 0:
            import torch

            torch.set_num_threads(self.config.threads)

    # ---- the stages ------------------------------------------------------------------------------
    def _clear_caches(self) -> None:
        super()._clear_caches()
        self.reset_caches()

    def reset_caches(self) -> None:
        """Forget what the stages derived from the catalogue (documents, user views, MMR vectors, dedupe
        keys); call it after editing ``items`` in place."""
        self._inputs: RankerInputs | None = None
        self._derived: dict[str, Any] = {}

    def _cached(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._derived:
            self._derived[key] = make()
        return self._derived[key]

    def filters(self) -> Filters:
        from avrec.pipeline.rules import parse_ruleset

        rules = parse_ruleset(self.config.rules, "pipeline.rules")
        return Filters(self._fitted(self.items), list(self.config.media_types), list(self.config.blocked_items),
                       rules)

    def retrieve_stage(self, filters: Filters | None = None) -> Retrieve:
        return Retrieve(self._fitted(self.retriever), self.config.n_candidates, filters or self.filters())

    def rank_stage(self, weight: float | None = None) -> CrossEncoderRank:
        if self._inputs is None or self._inputs.ranker is not self.ranker:
            self._inputs = RankerInputs(self.ranker, self._fitted(self.items), self.config.view, self.recent)
        w = self.blend_weight_ if weight is None else weight
        return CrossEncoderRank(self._inputs, float(w), self.config.n_candidates)

    def rerank_stages(self, lam: float | None = None, filters: Filters | None = None) -> list[Stage]:
        """MMR (λ: ``mmr_lambda_`` unless given), Dedupe (when ``dedupe``) and the filters again."""
        cfg = self.config
        lam = self.mmr_lambda_ if lam is None else lam

        def vectors() -> Any:
            return self._cached("mmr_vectors", lambda: mmr_vectors(self._fitted(self.retriever),
                                                                   self._fitted(self.items), cfg.mmr_vectors))

        out: list[Stage] = [MMR(float(lam), cfg.n_candidates, vectors)]
        if cfg.dedupe:
            keys = self._cached("dedupe_keys", lambda: dedupe_keys(self._fitted(self.items), list(cfg.dedupe_fields)))
            out.append(Dedupe(keys))
        out.append(filters or self.filters())
        return out

    def stages(self) -> list[Stage]:
        """The stages every list goes through, in order, with the current weights and settings:
        Retrieve, CrossEncoderRank, MMR, Dedupe, ``extra_stages``, Filters. With rules in force the filters
        also run after every stage, so no stage ever hands a blocked item to the next."""
        filters = self.filters()
        rerank = self.rerank_stages(filters=filters)
        stages: list[Stage] = [self.retrieve_stage(filters), self.rank_stage(), *rerank[:-1], *self.exposure_stages(),
                               *self.extra_stages]
        if filters.active:
            checked: list[Stage] = []
            for stage in stages:
                checked += [stage, filters]
            return checked
        return [*stages, rerank[-1]]

    def exposure_stages(self) -> list[Stage]:
        """The popularity penalty and Steck's calibration (:mod:`avrec.pipeline.calibration`), when set."""
        from avrec.pipeline.calibration import Calibrate, PopularityPenalty, genre_distributions

        cfg, out = self.config, list[Stage]()
        if cfg.popularity_penalty > 0:
            out.append(PopularityPenalty(cfg.popularity_penalty, self._fitted(self.popularity)))
        if cfg.calibration_lambda > 0:
            dist = self._cached("calibration", lambda: genre_distributions(self._fitted(self.items),
                                                                          cfg.calibration_field))
            seen = self._fitted(self.seen)

            def rows(ctx: Context) -> sp.csr_matrix:
                return ctx.history if ctx.history is not None else seen[ctx.user_idx]

            out.append(Calibrate(cfg.calibration_lambda, cfg.n_candidates, dist, rows))
        return out

    def _lists(self, contexts: Iterable[Context]) -> tuple[np.ndarray, np.ndarray]:
        self._set_threads()
        stages = self.stages()
        parts = [run_stages(stages, ctx) for ctx in contexts]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    # ---- the Recommender contract ----------------------------------------------------------------
    def topk_indices(
        self,
        user_idx: np.ndarray,
        k: int,
        *,
        exclude: sp.csr_matrix | None = None,
        candidates: np.ndarray | None = None,
        batch_size: int = 512,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Pipeline top-K for known users: retrieve top-N, rank, blend, MMR, de-duplicate."""
        self._check_fitted()
        user_idx = np.asarray(user_idx, dtype=np.int64)
        if not len(user_idx):
            return np.full((0, k), -1, dtype=np.int64), np.full((0, k), -np.inf, dtype=np.float32)
        return self._lists(
            Context(k, user_idx=user_idx[s:s + batch_size], candidates=candidates,
                    exclude=exclude[s:s + batch_size] if exclude is not None else None)
            for s in range(0, len(user_idx), batch_size)
        )

    def topk_histories(
        self,
        history: sp.spmatrix,
        k: int,
        *,
        exclude_seen: bool = True,
        candidates: np.ndarray | None = None,
        histories: list[np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Pipeline top-K for users given as history rows; ``histories``: their item indices oldest first
        (the ranker's user view reads the newest first), else the rows' own order."""
        self._check_fitted()
        history = sp.csr_matrix(history, dtype=np.float32)
        if not history.shape[0]:
            return np.full((0, k), -1, dtype=np.int64), np.full((0, k), -np.inf, dtype=np.float32)
        ctx = Context(k, history=history, histories=histories, exclude=history if exclude_seen else None,
                      candidates=candidates)
        return self._lists([ctx])

    def recommend_history(
        self,
        histories: Collection[Iterable[Any]],
        k: int = 10,
        exclude_seen: bool = True,
        candidates: Iterable[Any] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fold-in users given as item-id lists (oldest first): the whole pipeline, no retrain."""
        self._check_fitted()
        check_k(k)
        idx_lists = [self.items_to_index(list(h), what=f"history {r}") for r, h in enumerate(histories)]
        hist = self.history_matrix(histories)
        cand_idx = None if candidates is None else np.unique(self.items_to_index(list(candidates)))
        out_i, out_v = self.topk_histories(hist, k, exclude_seen=exclude_seen, candidates=cand_idx,
                                           histories=idx_lists)
        return self.ids_of(out_i), out_v

    def _score(self, user_idx: np.ndarray, item_idx: np.ndarray | None) -> np.ndarray:
        """The retriever's rows with the pipeline's top N (seen items not excluded) raised on top."""
        base = self._fitted(self.retriever).score_users(user_idx, item_idx)
        picks, _ = self.topk_indices(user_idx, self.config.n_candidates, exclude=None, candidates=item_idx)
        return raise_picks(base, picks, item_idx)

    def _score_history(self, history: sp.csr_matrix, item_idx: np.ndarray | None) -> np.ndarray:
        base = self._fitted(self.retriever).score_histories(history, item_idx)
        picks, _ = self.topk_histories(history, self.config.n_candidates, exclude_seen=False, candidates=item_idx)
        return raise_picks(base, picks, item_idx)

    @property
    def capabilities(self) -> Capabilities:
        """The retriever's (it decides which items can be scored and added), less what the pipeline
        object itself does not offer: exact fold-in (the ranker reads text), text queries and a graph."""
        if self.retriever is not None:
            caps = self.retriever.capabilities
        else:
            caps = get_model_class(self.config.retriever).CAPABILITIES
        return replace(caps, exact_fold_in=False, text_queries=False, knowledge_graph=False)

    def _item_vectors(self) -> np.ndarray | None:
        return self._fitted(self.retriever).item_vectors()

    def _item_vector_dim(self) -> int | None:
        return self._fitted(self.retriever).item_vector_dim()

    def _similarity_rows(self, idx: np.ndarray) -> np.ndarray:
        return self._fitted(self.retriever).similarity_rows(idx)

    def _add_items(self, new_items: pd.DataFrame) -> None:
        self._fitted(self.retriever).add_items(new_items)  # the base class then clears the stages' caches

    # ---- persistence ---------------------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        return {
            "recent": self._fitted(self.recent).astype(np.int64),
            "blend_weight": np.asarray([self.blend_weight_], dtype=np.float32),
            "mmr_lambda": np.asarray([self.mmr_lambda_], dtype=np.float32),
        }

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self.recent = state["recent"]
        self.blend_weight_ = float(state["blend_weight"][0])
        self.mmr_lambda_ = float(state["mmr_lambda"][0])

    def _save_extra(self, folder: Path) -> None:
        self._fitted(self.retriever).save(folder / "retriever")
        self._fitted(self.ranker).save(folder / "ranker")
        (folder / "pipeline_report.json").write_text(json.dumps(self.fit_report, indent=1, default=float))

    def _load_extra(self, folder: Path) -> None:
        from avrec.finetune.ranker import CrossEncoderRanker

        self.retriever = Recommender.load(folder / "retriever")
        self.ranker = CrossEncoderRanker.load(folder / "ranker")
        self.reset_caches()
