"""Training the cross-encoder ranker on a dataset: pairs with hard negatives from a fitted retriever,
early stopping on NDCG@10 of the ranker re-ranking the retriever's lists for validation users.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from avrec.config import apply_overrides
from avrec.errors import ConfigError, DataError
from avrec.eval.metrics import per_user_metrics
from avrec.eval.validation import sample_users
from avrec.finetune.ranker import CrossEncoderRanker, RankerConfig


@dataclass
class RankerTrainingConfig:
    """Everything ``fit_ranker`` needs besides the data.

    ``n_candidates``: retriever list length (hard negatives come from it, validation re-ranks it);
    ``eval_users``: validation users used for early stopping (0: all).
    """

    ranker: RankerConfig = field(default_factory=RankerConfig)
    view: Any = None
    pairs: Any = None
    train: Any = None
    n_candidates: int = 50
    eval_users: int = 200

    def __post_init__(self) -> None:
        type_ranker_sections(self)
        if self.n_candidates < 1:
            raise ConfigError("n_candidates must be at least 1")


def type_ranker_sections(cfg: Any) -> None:
    """Turn ``cfg``'s ``ranker``, ``view``, ``pairs`` and ``train`` sections (None, a table or a config) into
    their config types, in place; shared by this job's config and the pipeline's."""
    from avrec.finetune.data import PairConfig, UserViewConfig
    from avrec.finetune.trainer import TrainConfig

    cfg.ranker = as_config(RankerConfig, cfg.ranker)
    cfg.view = as_config(UserViewConfig, cfg.view)
    cfg.pairs = as_config(PairConfig, cfg.pairs)
    cfg.train = as_config(TrainConfig, cfg.train)


def as_config(cls, value):
    """``value`` as a ``cls`` config: None gives the defaults, a dict its fields (a nested settings table)."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):  # typed and checked like --set values
        return apply_overrides(cls(), value)
    raise ConfigError(f"expected a {cls.__name__} table, got {type(value).__name__}")


def candidate_lists(retriever, dataset, users: np.ndarray, n: int, candidates: np.ndarray | None = None,
                    exclude=None) -> np.ndarray:
    """(len(users), n) retriever top-N item indices (-1 padded), seen items of ``dataset`` excluded."""
    if exclude is None:
        exclude = dataset.matrix(binary=True)[users]
    idx, _ = retriever.topk_indices(np.asarray(users, dtype=np.int64), n, exclude=exclude, candidates=candidates)
    return idx


def list_ndcg(order: np.ndarray, truth, k: int = 10) -> float:
    """Mean NDCG@k of ranked item-index lists (rows, -1 padded) against a binary truth matrix."""
    return float(per_user_metrics(order[:, :k], truth, k)["ndcg"].mean()) if len(order) else 0.0


def rerank_by_scores(cands: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Reorder each row of ``cands`` by ``scores`` (descending); padding (-1) stays last."""
    s = np.where(cands >= 0, scores, -np.inf)
    order = np.argsort(-s, axis=1, kind="stable")
    return np.take_along_axis(cands, order, axis=1)


def score_lists(ranker: CrossEncoderRanker, views: list[str], cands: np.ndarray) -> np.ndarray:
    """Ranker logits for every valid entry of ``cands`` (row r pairs with views[r]); -inf for padding."""
    rows, cols = np.nonzero(cands >= 0)
    out = np.full(cands.shape, -np.inf, dtype=np.float32)
    if len(rows):
        out[rows, cols] = ranker.score(views, rows, cands[rows, cols])
    return out


def fit_ranker(
    ranker: CrossEncoderRanker,
    train,
    retriever,
    job: RankerTrainingConfig,
    *,
    valid=None,
    valid_candidates: np.ndarray | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    log=None,
):
    """Train ``ranker`` on pairs drawn from ``train`` with hard negatives from a fitted ``retriever``.

    With ``valid``, early stopping tracks NDCG@10 of the ranker re-ranking the retriever's top-N for
    up to ``job.eval_users`` validation users (restricted to ``valid_candidates`` when given).
    Returns the trainer's :class:`TrainResult` plus the pair counts.
    """
    from avrec.data.documents import build_documents
    from avrec.finetune.data import UserViews, recent_items, sample_pairs
    from avrec.finetune.trainer import Trainer

    views = UserViews(train.items, job.view)
    ranker.set_items(build_documents(train.items))
    seen = train.matrix(binary=True)
    users = np.flatnonzero(np.diff(seen.indptr) >= job.pairs.min_history)
    hard = np.full((train.n_users, job.n_candidates), -1, dtype=np.int64)
    if job.pairs.hard_negatives and len(users):
        hard[users] = candidate_lists(retriever, train, users, job.n_candidates)
    pairs = sample_pairs(train, views, job.pairs, hard_candidates=hard)
    if len(pairs) == 0:
        raise DataError("no training pairs: every user has fewer than pairs.min_history interactions")
    user_tokens = ranker.pairs.users(pairs.views)
    examples = [(user_tokens[v], int(i), float(y)) for v, i, y in zip(pairs.view_idx, pairs.item_idx, pairs.label)]

    def collate(batch):
        inputs = ranker.pairs.batch([b[0] for b in batch], [b[1] for b in batch])
        inputs["labels"] = torch.tensor([b[2] for b in batch], dtype=torch.float32)
        return inputs

    loss_f = nn.BCEWithLogitsLoss()

    def loss_fn(model, batch):
        labels = batch["labels"]
        logits = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        return loss_f(logits.float(), labels)

    eval_fn = None
    if valid is not None and valid.n_interactions:
        truth_all = valid.matrix(binary=True)
        vusers = sample_users(np.flatnonzero(np.diff(truth_all.indptr) > 0), job.eval_users, job.pairs.seed)
        cands = candidate_lists(retriever, train, vusers, job.n_candidates, valid_candidates)
        recent = recent_items(train, job.view.max_items)
        vviews = [views.view(recent[u]) for u in vusers]
        truth = truth_all[vusers]

        def eval_fn(model):
            return list_ndcg(rerank_by_scores(cands, score_lists(model, vviews, cands)), truth, 10)

        base = list_ndcg(cands, truth, 10)
        (log or (lambda m: None))(f"retriever NDCG@10 on the {len(vusers)} validation users: {base:.4f}")
    trainer = Trainer(ranker, examples, collate, loss_fn, job.train, out_dir=out_dir, eval_fn=eval_fn, log=log)
    result = trainer.train(resume=resume)
    return result, pairs.counts()
