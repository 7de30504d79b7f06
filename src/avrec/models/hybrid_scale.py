"""How ``hybrid`` adapts to the size of what it fits: components, towers, validation and retrieval.

:func:`plan_for_size` turns the settings left on ``auto`` (-1) into concrete ones for this catalogue and
returns the reasons; the hybrid stores both (its saved ``config.json`` and ``report["scale_plan"]``), so a
model says what it chose and why. The plan is decided by what the full path would cost (:func:`plan_costs`),
not by the item count alone: a mid-size catalogue with many users (100k items × 250k users) costs more to
validate than the sampled plan does at 1M items. Within both budgets (:data:`SCORE_BUDGET` full-catalogue
scores, :data:`SOFTMAX_BUDGET` softmax logits) and up to ``scale_items`` items nothing changes: at the
defaults that covers every catalogue up to ~39k items with up to ~20k users (ml-latest-small: 2.9e8 scores,
5.0e8 logits; lastfm-2k: 1.6e9, 9.0e8). Past the softmax budget or ``scale_items``:

- the towers train with a sampled softmax (``tower_negatives`` uniform warm items plus the batch's own)
  instead of one over the whole catalogue, so a step costs the same at 10k or 10M items;
Past the score budget or ``scale_items`` (the bounded validation plan):

- validation during training and the fusion's weight tuning sample their users (``valid_users``), and
  the tuning keeps (users × items × components) under :data:`TUNE_BYTES`;
- components keep their default settings instead of tuning themselves on validation (each of those
  searches re-scores its validation users over the whole catalogue per setting);
- seqknn keeps the windows that fit the memory budget; retrieval uses a FAISS IVF index;
- above :data:`LM_MAX_UNCACHED` items (whatever ``scale_items``) the LM vectors are used only when the
  embedding cache already holds them (checked on a sample of the documents): encoding a million documents
  on 2 CPU cores takes about 2.4 h, so run ``avrec embed`` beforehand. Without them ``content`` (which
  ranks by those vectors) leaves the cold blend.

Components that refuse the size (:meth:`~avrec.models.base.Recommender.check_size`, e.g. EASE above its
item cap) are left out by :func:`~avrec.models.hybrid_components.fit_components` with their one-line reason.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from avrec.models.scale import Size, memory_budget

#: full-catalogue (user, item) scores the validation passes may cost before they sample their users: the
#: hybrid's 10k items × 50k users cell costs 2.5e10 (fitted in 278 s), its 100k × 250k cell 1.2e12 (past 1,200 s)
SCORE_BUDGET = 5 * 10**10
#: softmax logits (training rows × items) the towers may cost before they sample their negatives
SOFTMAX_BUDGET = 2 * 10**9
#: validation passes one component's own settings search costs (it re-scores the users per setting)
COMPONENT_PASSES = 4
#: the fusion's tuning keeps its (users × items × components) float32 blocks under this many bytes
TUNE_BYTES = 2 * 10**9
#: validation users sampled on big catalogues (each check scores them over the whole catalogue)
VALID_USERS = 1000
#: seqknn may plan to use this share of the memory budget inside the hybrid (which holds much else)
SEQKNN_SHARE = 0.25
#: sampled negatives per tower training step on big catalogues
NEGATIVES = 8192
#: above this many items the LM vectors must come from the embedding cache (as content.max_uncached)
LM_MAX_UNCACHED = 50_000
#: documents checked against the embedding cache before a big fit decides to use the LM vectors
CACHE_SAMPLE = 500


def plan_costs(config: Any, size: Size) -> dict[str, float]:
    """What the full path would cost on ``size``: full-catalogue (user, item) scores of validation and tuning,
    and the full softmax's logits.

    Validation (``max_steps / eval_every`` checks), the fusion's weight tuning (one pass) and each
    component's own settings search (:data:`COMPONENT_PASSES` passes, when ``component_tuning`` is on) score
    every validation user over the whole catalogue; the internal split holds out a share of each user's
    items, so nearly every user is a validation user. The full softmax scores ``batch_users`` rows over the
    whole catalogue at each of ``max_steps`` steps (and runs the item tower over all of it).
    """
    components = len(set(config.blend) | set(config.cold_blend))
    passes = max(1, config.max_steps // max(config.eval_every, 1)) + 1
    if config.component_tuning:
        passes += COMPONENT_PASSES * components
    return {"scores": float(size.n_users) * size.n_items * passes,
            "logits": float(config.max_steps) * config.batch_users * size.n_items}


def plan_for_size(config: Any, size: Size, items: Any = None, featurizer: Any = None) -> tuple[Any, dict[str, str]]:
    """``config`` with its ``auto`` scale settings resolved for ``size``, and why each choice was made."""
    cost = plan_costs(config, size)
    over_items = size.n_items > config.scale_items
    sampled = over_items or cost["logits"] > SOFTMAX_BUDGET
    bounded = over_items or cost["scores"] > SCORE_BUDGET
    because = (f"{size.n_items:,} items > scale_items={config.scale_items:,}" if over_items else
               f"the full path would compute {cost['scores']:.1e} catalogue scores (budget {SCORE_BUDGET:.0e}) "
               f"and {cost['logits']:.1e} softmax logits (budget {SOFTMAX_BUDGET:.0e})")
    why: dict[str, str] = {}
    changes: dict[str, Any] = {}
    if config.tower_negatives < 0:
        changes["tower_negatives"] = NEGATIVES if sampled else 0
        if sampled:
            why["towers"] = (f"sampled softmax over {NEGATIVES:,} uniform warm items plus the batch's own per step "
                             f"(a softmax over {size.n_items:,} items costs a full item-tower pass per step; "
                             f"{because})")
    if config.valid_users < 0:
        changes["valid_users"] = VALID_USERS if bounded else 0
        if bounded:
            why["validation"] = (f"{VALID_USERS:,} sampled validation users for early stopping and the fusion "
                                 f"weights ({because})")
    if bounded:
        changes["component_tuning"] = False
        why["component_tuning"] = ("components keep their default settings (their own validation searches "
                                   "re-score every validation user over the whole catalogue per setting)")
        if config.ann_kind == "auto":
            changes["ann_kind"] = "ivf"
            why["retrieval"] = f"FAISS IVF over {size.n_items:,} items (one k-means pass to build)"
        changes["seqknn"] = _seqknn_that_fits(config.seqknn, size, why)
    if config.use_lm and size.n_items > LM_MAX_UNCACHED and not _lm_cached(items, featurizer):
        changes["use_lm"] = False
        why["lm"] = (f"the embedding cache does not hold these {size.n_items:,} documents' vectors (encoding them "
                     f"here runs at ~115 documents/s: {size.n_items / 115 / 3600:.1f} h): run `avrec embed` first; "
                     "the item tower uses words and metadata tokens")
        if "content" in config.cold_blend:
            changes["cold_blend"] = [n for n in config.cold_blend if n != "content"]
            why["content"] = "left out of the cold blend: it ranks by the LM vectors"
    return replace(config, **changes), why


def tune_users(n_users: int, n_items: int, n_components: int, cap: int) -> int:
    """How many validation users the fusion's tuning may score at once (at least 50)."""
    bound = TUNE_BYTES // max(4 * n_items * (1 + n_components), 1)
    limit = max(50, int(bound))
    return min(n_users, limit if not cap else min(cap, limit))


def _seqknn_that_fits(cfg: Any, size: Size, why: dict[str, str]) -> Any:
    from avrec.models.seqknn import SeqKNN

    fitting = [w for w in sorted(set([cfg.window, *cfg.window_grid]))
               if SEQKNN_SHARE * memory_budget() >= SeqKNN(replace(cfg, window=w, window_grid=[w])).fit_bytes(size)]
    if not fitting:
        return cfg  # the component refuses the size itself and is left out with its reason
    window = min(cfg.window, max(fitting))
    if window != cfg.window or sorted(cfg.window_grid) != [w for w in fitting if w in cfg.window_grid]:
        why["seqknn"] = (f"window {window} (windows within {SEQKNN_SHARE:.0%} of the memory budget: {fitting}); "
                         "the windows tried on validation are the same")
    return replace(cfg, window=window, window_grid=[w for w in fitting if w in cfg.window_grid] or [window])


def _lm_cached(items: Any, featurizer: Any) -> bool:
    """Whether a sample of the item documents is all in the embedding cache (the encoder loads, no text is encoded)."""
    if items is None or featurizer is None or featurizer.config.embedding_cache == "none":
        return False
    from avrec.encoders import EmbeddingCache

    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(len(items), min(CACHE_SAMPLE, len(items)), replace=False))
    docs = featurizer.documents(items.iloc[rows])
    _, found = EmbeddingCache(featurizer.config.embedding_cache).get(featurizer.encoder().model_id, docs)
    return bool(found.all())


__all__ = ["COMPONENT_PASSES", "SCORE_BUDGET", "SOFTMAX_BUDGET", "TUNE_BYTES", "plan_costs", "plan_for_size",
           "tune_users"]
