"""``hybrid``, avrec's default model: LM item vectors learned into collaborative space, fused with CF.

1. Item features: the item document's LM vector (frozen encoder, cached), its TF-IDF words and its
   categorical metadata tokens (genres, decade, director, cast, artist, tags, …).
2. Two towers (see :mod:`avrec.models.towers`) trained with a catalogue softmax; ID embeddings are
   dropped at random so items and users without interactions are still placed well.
3. Fusion: per-user standardised scores of the towers and of EASE, ALS and seqknn for warm items, and
   of the towers, the field-weighted TF-IDF profile, KG paths, the LM content profile and contentpop for
   items without interactions (:mod:`avrec.models.hybrid_components`); the weights are tuned on
   validation NDCG@10 (the split's validation part, or an internal hold-out followed by a refit), never
   ending below the best single component there.
4. Retrieval through FAISS above a catalogue size; new items and new users without a retrain.
"""

from __future__ import annotations

import copy
import json
import time
import warnings
from collections.abc import Collection
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from avrec.data.dataset import Dataset
from avrec.data.splits import holdout_warm_and_cold
from avrec.errors import DataWarning
from avrec.eval.topk import rank_scores, topk_from_scores
from avrec.eval.validation import ValidationSet
from avrec.models.ann import ANNConfig, ANNIndex
from avrec.models.artifacts import csr_from_tensors, csr_to_tensors
from avrec.models.base import Capabilities, Recommender
from avrec.models.blend import fuse, standardise, tune_weights
from avrec.models.hybrid_components import ComponentSet, TuningParts, fit_components
from avrec.models.hybrid_config import HybridConfig
from avrec.models.hybrid_features import ItemFeaturizer
from avrec.models.hybrid_scale import plan_for_size, tune_users
from avrec.models.scale import Size, batched_ndcg, subsample
from avrec.models.towers import ItemFeatures, Towers, TowerTrainConfig, TowerTrainer, item_outputs, user_outputs


class Hybrid(Recommender):
    name = "hybrid"
    CAPABILITIES = Capabilities(cold_items=True, add_items=True, item_vectors=True, text_queries=True)
    Config = HybridConfig

    # ---- towers ------------------------------------------------------------------------------
    def _new_towers(self, n_users: int) -> Towers:
        c = self.config
        torch.manual_seed(c.seed)
        lm_dim = 0 if self.features.lm is None else self.features.lm.shape[1]
        return Towers(self.features.sparse.shape[0], n_users, lm_dim, self.features.sparse.shape[1],
                      c.dim, c.hidden, c.use_item_ids, c.use_user_ids)

    def _train_config(self, max_steps: int | None = None, patience: int | None = None) -> TowerTrainConfig:
        c = self.config
        return TowerTrainConfig(max_steps=max_steps or c.max_steps, batch_users=c.batch_users, lr=c.lr,
                           weight_decay=c.weight_decay, id_dropout=c.id_dropout, user_id_dropout=c.user_id_dropout,
                           input_keep=c.input_keep, history_len=c.history_len, eval_every=c.eval_every,
                           patience=patience if patience is not None else c.patience, seed=c.seed,
                           negatives=max(0, c.tower_negatives))

    def _tower_scores(self, user_vecs: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        """Tower scores over ``items`` (None: the whole catalogue, without copying the item vectors)."""
        if items is None:
            return user_vecs @ self.item_vecs.T + self.item_bias
        return user_vecs @ self.item_vecs[items].T + self.item_bias[items]

    # ---- fitting -----------------------------------------------------------------------------
    def _fit(self, dataset: Dataset, valid: Dataset | None, valid_candidates: np.ndarray | None) -> None:
        started = time.perf_counter()
        # settings left on auto are chosen by size (sampled softmax, sampled validation, IVF, ...): see hybrid_scale
        self.config, plan = plan_for_size(self.config, Size.of(dataset), dataset.items, ItemFeaturizer(self.config))
        c = self.config
        self.featurizer = ItemFeaturizer(self.config)
        self.features = self.featurizer.fit(dataset.items)
        self.report: dict = {"feature_dim": int(self.features.sparse.shape[1]),
                             "lm_dim": 0 if self.features.lm is None else int(self.features.lm.shape[1]),
                             "scale_plan": plan}
        self.warm_weights: list[float] = []
        self.cold_weights: list[float] = []
        # the components on rank scores when the weights were tuned (saved with them: a model fuses as tuned)
        self.warm_rank, self.cold_rank = list(c.warm_rank), list(c.cold_rank)
        self.component_set: ComponentSet | None = None  # components of an earlier fit are not reused
        internal = valid is None and c.refit and c.internal_valid_share > 0
        if not internal:
            train = dataset
            warm_valid = valid if (valid is not None and valid_candidates is None) else None
            cold_valid = valid if valid_candidates is not None else None
            cold_cands = valid_candidates
        else:
            train, warm_valid, cold_valid, cold_cands = holdout_warm_and_cold(dataset, c.internal_valid_share, c.seed)
        best_step = self._train_and_tune(train, warm_valid, cold_valid, cold_cands)
        if internal and c.refit_towers:
            self._train_and_tune(dataset, None, None, None, fixed_steps=max(best_step, c.eval_every))
        elif internal:
            # The user tower reads histories, so the trained towers serve the full data as they are:
            # only the item/user vectors and the fused components are recomputed on every interaction.
            seen = dataset.matrix(binary=True)
            self.fit_seen, self.fit_timestamps = seen, dataset.timestamp_matrix()
            self._finalize(dataset, np.asarray(seen.sum(axis=0)).ravel() > 0)
        self.report["fit_seconds"] = round(time.perf_counter() - started, 2)

    def _train_and_tune(self, train: Dataset, warm_valid: Dataset | None, cold_valid: Dataset | None,
                        cold_cands: np.ndarray | None, fixed_steps: int | None = None) -> int:
        seen = train.matrix(binary=True)
        timestamps = train.timestamp_matrix()
        self.fit_seen, self.fit_timestamps = seen, timestamps
        warm_items = np.asarray(seen.sum(axis=0)).ravel() > 0
        towers = self._new_towers(train.n_users)
        trainer = TowerTrainer(towers, self.features, seen, timestamps, warm_items,
                               self._train_config(fixed_steps, patience=10**9 if fixed_steps else None))

        checks = [ValidationSet.from_matrices(part.matrix(binary=True), seen, cands,
                                              max(0, self.config.valid_users), self.config.seed)
                  for part, cands in ((warm_valid, None), (cold_valid, cold_cands)) if part is not None]

        def validate(model: Towers) -> float:
            item_vecs, item_bias = item_outputs(model, self.features, warm_items)
            total = 0.0
            for check in checks:
                u = user_outputs(model, item_vecs, seen[check.users], None if timestamps is None
                                 else timestamps[check.users], check.users, self.config.history_len)
                items = np.arange(train.n_items) if check.candidates is None else check.candidates
                vecs, bias = item_vecs[items], item_bias[items]

                def scores(rows: np.ndarray, u: np.ndarray = u, v: np.ndarray = vecs,
                           b: np.ndarray = bias) -> np.ndarray:
                    return u[rows] @ v.T + b

                total += batched_ndcg(check, scores, len(items))
            return total

        if warm_valid is None and cold_valid is None:
            validate = lambda model: 0.0  # noqa: E731  (fixed-length refit: nothing to validate on)
        best_step, best, curve = trainer.train(validate)
        self.towers_trained = len(trainer.train_users) > 0
        if not self.towers_trained:
            warnings.warn(DataWarning("hybrid: no user has two or more interactions, so the towers are not "
                                      "trained; the other components rank alone"), stacklevel=2)
        self.report["refit_steps" if fixed_steps else "validation_curve"] = curve
        if not fixed_steps:
            self.report["best_step"] = best_step
        self.towers = towers
        self.tuning_parts = None if fixed_steps else TuningParts(warm_valid, cold_valid, cold_cands)
        self._finalize(train, warm_items)
        self.tuning_parts = None
        if warm_valid is not None:
            self.warm_weights, ndcg = self._tune(train, warm_valid, None, self.warm_components)
            self.report["valid_warm_ndcg@10"] = ndcg
        if cold_valid is not None:
            self.cold_weights, ndcg = self._tune(train, cold_valid, np.asarray(cold_cands), self.cold_components)
            self.report["valid_cold_ndcg@10"] = ndcg
        if not self.towers_trained:  # untrained towers are noise: weight 0 wherever a component can rank
            self.warm_weights = [0.0] + [1.0] * len(self.warm_components) if self.warm_components else []
            self.cold_weights = [0.0] + [1.0] * len(self.cold_components) if self.cold_components else []
        for key, names, weights in (("warm_weights", self.warm_components, self.warm_weights),
                                    ("cold_weights", self.cold_components, self.cold_weights)):
            self.report[key] = dict(zip(["towers", *names], weights or [1.0] * (1 + len(names))))
        return best_step

    def _finalize(self, train: Dataset, warm_items: np.ndarray) -> None:
        """Item and user vectors from the trained towers, the fused components and the ANN index, on ``train``."""
        self.item_vecs, self.item_bias = item_outputs(self.towers, self.features, warm_items)
        self.user_vecs = user_outputs(self.towers, self.item_vecs, self.fit_seen, self.fit_timestamps,
                                      np.arange(train.n_users), self.config.history_len)
        self.cold_mask = ~warm_items
        self._fit_components(train, warm_items)
        self._build_ann()

    def _fit_components(self, train: Dataset, warm_items: np.ndarray) -> None:
        previous = getattr(self, "component_set", None)
        self.component_set = fit_components(self.config, train, warm_items, getattr(self, "tuning_parts", None),
                                            previous)
        self.components: dict[str, Recommender] = self.component_set.models
        self.report["skipped_components"] = self.component_set.skipped
        self.warm_components = [n for n in self.config.blend if n in self.components]
        self.cold_components = [n for n in self.config.cold_blend if n in self.components]

    def _tune(self, train: Dataset, part: Dataset, cands: np.ndarray | None,
              names: list[str]) -> tuple[list[float], float]:
        check = ValidationSet.from_matrices(part.matrix(binary=True), self.fit_seen, cands,
                                            max(0, self.config.valid_users), self.config.seed)
        items = np.arange(train.n_items) if cands is None else np.asarray(cands)
        # bounded on big catalogues: (users × items × components) stays under hybrid_scale.TUNE_BYTES
        # (components score the whole catalogue, then select the candidates)
        check = subsample(check, tune_users(len(check), self.fit_seen.shape[1], len(names),
                                            max(0, self.config.valid_users)), self.config.seed)
        z = self._components_z(check.users, None, items, names, self._ranked(cands is not None))
        return tune_weights(z, check, partitions=self._partitions(cands is not None))

    def _ranked(self, cold: bool) -> list[str]:
        return self.cold_rank if cold else self.warm_rank

    def _partitions(self, cold: bool) -> int:
        """Random halvings a weight change must hold on: several for the noisy cold list, one warm."""
        return self.config.cold_partitions if cold else 1

    def ablated(self, drop: list[str], valid: Dataset, valid_candidates: np.ndarray | None = None) -> Hybrid:
        """This fitted hybrid with the components in ``drop`` (``"towers"`` included) left out of the warm
        fusion (or of the cold one, when ``valid_candidates`` is given), the remaining weights re-tuned on
        ``valid``: an ablation that needs no refit, since every component is fitted on its own."""
        clone = copy.copy(self)
        cold = valid_candidates is not None
        names = [n for n in (self.cold_components if cold else self.warm_components) if n not in drop]
        check = ValidationSet.from_matrices(valid.matrix(binary=True), self.fit_seen, valid_candidates)
        items = np.arange(self.n_items) if valid_candidates is None else np.asarray(valid_candidates)
        z = self._components_z(check.users, None, items, names, self._ranked(cold))
        if "towers" in drop:
            z[0] = np.zeros_like(z[0])
        weights, _ = tune_weights(z, check, partitions=self._partitions(cold))
        weights[0] = 0.0 if "towers" in drop else weights[0]
        if cold:
            clone.cold_components, clone.cold_weights = names, weights
        else:
            clone.warm_components, clone.warm_weights = names, weights
        return clone

    # ---- scoring -----------------------------------------------------------------------------
    def _components_z(self, user_idx: np.ndarray | None, history: sp.csr_matrix | None, items: np.ndarray,
                      names: list[str], ranked: Collection[str] = ()) -> list[np.ndarray]:
        """Standardised score matrices, the towers first, then each named component: z-scores, or Gaussian
        rank scores for those in ``ranked`` (see :mod:`avrec.models.blend`)."""
        full = len(items) == self.n_items and bool(items[0] == 0 and (np.diff(items) == 1).all())
        if history is None:
            tower = self._tower_scores(self.user_vecs[user_idx], None if full else items)
        else:
            u = user_outputs(self.towers, self.item_vecs, history, None, None, self.config.history_len)
            tower = self._tower_scores(u, None if full else items)
        out = [standardise(tower, "rank" if "towers" in ranked else "z")]
        for name in names:
            comp = self.components[name]
            scaling = "rank" if name in ranked else "z"
            known = items < comp.n_items
            if not comp.capabilities.cold_items:  # its scores for items without interactions mean nothing
                known &= ~self.cold_mask[items]
            z = np.zeros((len(tower), len(items)), dtype=np.float32)  # 0 = "no evidence either way"
            if known.any():
                # the whole catalogue in order goes as None (no column selection in the component); the
                # few items it cannot score are then left out of the standardisation
                sub = None if (full and comp.n_items == len(items)) else items[known]
                if history is None:
                    assert user_idx is not None  # exactly one of user_idx and history is given
                    scores = comp.score_users(user_idx, sub)
                else:
                    scores = comp.score_histories(history[:, : comp.n_items], sub)
                if sub is None and known.all():
                    z = standardise(scores, scaling)
                elif sub is None:
                    z[:, known] = standardise(scores[:, known], scaling)
                else:
                    z[:, known] = standardise(scores, scaling)
            out.append(z)
        return out

    def _fused(self, user_idx: np.ndarray | None, history: sp.csr_matrix | None, items: np.ndarray) -> np.ndarray:
        all_cold = bool(self.cold_mask[items].all())
        names = self.cold_components if all_cold else self.warm_components
        weights = self.cold_weights if all_cold else self.warm_weights
        weights = weights or [1.0] * (1 + len(names))
        used = [n for n, w in zip(names, weights[1:]) if w]  # a weight-0 component is not even scored
        return fuse(self._components_z(user_idx, history, items, used, self._ranked(all_cold)),
                    [weights[0], *[w for w in weights[1:] if w]])

    def _score(self, user_idx: np.ndarray, item_idx: np.ndarray | None) -> np.ndarray:
        items = np.arange(self.n_items) if item_idx is None else np.asarray(item_idx)
        return self._fused(np.asarray(user_idx), None, items)

    def _score_history(self, history: sp.csr_matrix, item_idx: np.ndarray | None) -> np.ndarray:
        items = np.arange(self.n_items) if item_idx is None else np.asarray(item_idx)
        return self._fused(None, sp.csr_matrix(history, dtype=np.float32), items)

    def topk_indices(self, user_idx: np.ndarray, k: int, *, exclude: sp.csr_matrix | None = None,
                     candidates: np.ndarray | None = None, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """Exact fused ranking, or FAISS retrieval of ``ann_candidates`` per user before fusion on big catalogues."""
        if self.ann is None or candidates is not None:
            return super().topk_indices(user_idx, k, exclude=exclude, candidates=candidates, batch_size=batch_size)
        user_idx = np.asarray(user_idx, dtype=np.int64)
        q = np.hstack([self.user_vecs[user_idx], np.ones((len(user_idx), 1), np.float32)])
        retrieved, _ = self.ann.search(q, min(self.config.ann_candidates, self.n_items))
        out_idx = np.full((len(user_idx), k), -1, dtype=np.int64)
        out_val = np.full((len(user_idx), k), -np.inf, dtype=np.float32)
        for r, u in enumerate(user_idx):
            cands = np.unique(retrieved[r][retrieved[r] >= 0])
            scores = self._fused(np.array([u]), None, cands)
            out_idx[r:r + 1], out_val[r:r + 1] = rank_scores(scores, k, None if exclude is None else exclude[r], cands)
        return out_idx, out_val

    def _build_ann(self) -> None:
        cfg = ANNConfig(kind=self.config.ann_kind, exact_below=self.config.ann_exact_below)
        index = ANNIndex(cfg)
        if index.resolved_kind(len(self.item_vecs)) == "flat":
            self.ann = None
            return
        self.ann = index.build(np.hstack([self.item_vecs, self.item_bias[:, None]]))

    def _item_vectors(self) -> np.ndarray | None:
        return self.item_vecs

    # ---- search and catalogue updates --------------------------------------------------------
    @torch.no_grad()
    def encode_query(self, text: str) -> np.ndarray:
        """A natural-language request as a vector in the item space (cosine with ``_item_vectors``)."""
        feats = self.featurizer.transform(pd.DataFrame({"item_id": ["query"]}), docs=[str(text)])
        self.towers.eval()
        lm, idx, off, w = feats.tensors()
        return self.towers.content(lm, idx, off, w).numpy()[0]

    def search(self, text: str, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Items whose vectors best match a natural-language request."""
        q = self.encode_query(text)
        v = self.item_vecs / np.maximum(np.linalg.norm(self.item_vecs, axis=1, keepdims=True), 1e-9)
        scores = (v @ (q / max(np.linalg.norm(q), 1e-9)))[None, :]
        top, val = topk_from_scores(scores.astype(np.float32), k)
        return self.ids_of(top)[0], val[0]

    def _add_items(self, new_items: pd.DataFrame) -> None:
        feats = self.featurizer.transform(new_items)
        self.features = ItemFeatures(
            # one featurizer: LM vectors for the old and the new items, or for neither
            None if self.features.lm is None else np.vstack([self.features.lm, cast(np.ndarray, feats.lm)]),
            sp.csr_matrix(sp.vstack([self.features.sparse, feats.sparse]), dtype=np.float32),
        )
        with torch.no_grad():
            self.towers.eval()
            vec = self.towers.content(*feats.tensors())  # new items have no ID embedding: content alone
            bias = self.towers.bias_head(vec).squeeze(-1)
        self.item_vecs = np.vstack([self.item_vecs, vec.numpy()])
        self.item_bias = np.r_[self.item_bias, bias.numpy()]
        self.cold_mask = np.r_[self.cold_mask, np.ones(len(new_items), bool)]
        for comp in self.components.values():
            if comp.capabilities.add_items:
                comp.add_items(new_items)
        if self.ann is not None:
            self.ann.add(np.hstack([vec.numpy(), bias.numpy()[:, None]]))

    # ---- persistence -------------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        state = {f"towers.{k}": v.detach().cpu().numpy() for k, v in self.towers.state_dict().items()}
        state |= {"item_vecs": self.item_vecs, "item_bias": self.item_bias, "user_vecs": self.user_vecs,
                  "cold_mask": self.cold_mask.astype(np.uint8)}
        state |= csr_to_tensors("features.sparse", self.features.sparse)
        if self.features.lm is not None:
            state["features.lm"] = self.features.lm
        return state | self.featurizer.state()

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self._loaded: dict[str, np.ndarray] | None = state  # read by _load_extra, then dropped

    def _save_extra(self, folder: Path) -> None:
        meta = {
            "warm_components": self.warm_components, "cold_components": self.cold_components,
            "warm_weights": self.warm_weights, "cold_weights": self.cold_weights,
            "warm_rank": self.warm_rank, "cold_rank": self.cold_rank,
            **self.featurizer.meta(),
            "n_tower_users": (int(self.towers.user_id.num_embeddings) if self.towers.user_id is not None
                              else len(self.user_vecs)),
            "report": self.report,
        }
        (folder / "hybrid.json").write_text(json.dumps(meta, default=float))
        for name, comp in self.components.items():
            comp.save(folder / "components" / name)
        if self.ann is not None:
            self.ann.save(folder / "ann.faiss")

    def _load_extra(self, folder: Path) -> None:
        meta = json.loads((folder / "hybrid.json").read_text())
        s = self._fitted(self._loaded)
        self.warm_components, self.cold_components = meta["warm_components"], meta["cold_components"]
        self.warm_weights, self.cold_weights = meta["warm_weights"], meta["cold_weights"]
        # folders saved before rank scores existed were tuned on z-scores only
        self.warm_rank, self.cold_rank = meta.get("warm_rank", []), meta.get("cold_rank", [])
        self.report = meta["report"]
        self.featurizer = ItemFeaturizer(self.config)
        self.featurizer.restore(meta, s)
        self.features = ItemFeatures(s.get("features.lm"), csr_from_tensors("features.sparse", s))
        self.item_vecs, self.item_bias, self.user_vecs = s["item_vecs"], s["item_bias"], s["user_vecs"]
        self.cold_mask = s["cold_mask"].astype(bool)
        n_fit_items = (s["towers.item_id.weight"].shape[0] if "towers.item_id.weight" in s
                       else self.features.sparse.shape[0])
        lm_dim = 0 if self.features.lm is None else self.features.lm.shape[1]
        c = self.config
        self.towers = Towers(n_fit_items, meta["n_tower_users"], lm_dim, self.features.sparse.shape[1], c.dim, c.hidden,
                             c.use_item_ids, c.use_user_ids)
        self.towers.load_state_dict({k[len("towers."):]: torch.from_numpy(np.array(v))
                                     for k, v in s.items() if k.startswith("towers.")})
        self.components = {name: Recommender.load(folder / "components" / name)
                           for name in dict.fromkeys([*self.warm_components, *self.cold_components])}
        ann_path = folder / "ann.faiss"
        ann_config = ANNConfig(kind=c.ann_kind, exact_below=c.ann_exact_below)
        self.ann = ANNIndex.load(ann_path, ann_config) if ann_path.exists() else None
        self._loaded = None


__all__ = ["Hybrid", "HybridConfig"]
