"""Seeded train/validation/test splits that share one catalogue.

- ``random``: per user, a random 8:1:1 split of that user's items (RecBole's RO/RS).
- ``temporal_loo``: per user, the last item is test and the one before it validation.
- ``global_temporal``: one time cut for everyone (the 80% and 90% timestamp quantiles).
- ``cold_item``: a share of items loses all its interactions to the test side (and another share to
  validation); those items are ranked among themselves, so a model must score items it never saw.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from avrec.data.dataset import Dataset
from avrec.errors import ConfigError, DataError

SPLIT_METHODS = ("random", "temporal_loo", "global_temporal", "cold_item")


@dataclass
class SplitConfig:
    method: str = "random"
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    cold_share: float = 0.2
    cold_valid_share: float = 0.1
    seed: int = 2026

    def __post_init__(self) -> None:
        if self.method not in SPLIT_METHODS:
            raise ConfigError(f"split.method must be one of {', '.join(SPLIT_METHODS)}, not {self.method!r}")
        # a tuple[float, ...] until the length check just below makes it a triple: hence the ignore
        self.ratios = tuple(float(r) for r in self.ratios)  # type: ignore[assignment]
        if len(self.ratios) != 3 or abs(sum(self.ratios) - 1) > 1e-6 or min(self.ratios) < 0:
            raise ConfigError(f"split.ratios must be three non-negative shares that sum to 1, not {self.ratios}")
        if not 0 < self.cold_share < 1 or not 0 <= self.cold_valid_share < 1 - self.cold_share:
            raise ConfigError("split.cold_share and split.cold_valid_share must be in (0, 1) and sum below 1")


@dataclass(eq=False)
class Split:
    """Train, validation and test interactions over one catalogue.

    ``valid_candidates`` / ``test_candidates`` are item indices to rank among (cold-item protocol),
    or None for full ranking over every item.
    """

    train: Dataset
    valid: Dataset
    test: Dataset
    method: str
    seed: int
    valid_candidates: np.ndarray | None = None
    test_candidates: np.ndarray | None = None

    @property
    def protocol(self) -> str:
        return "cold" if self.test_candidates is not None else "warm"

    def part(self, name: str) -> Dataset:
        if name not in ("valid", "test"):
            raise ConfigError(f"evaluation part must be 'valid' or 'test', not {name!r}")
        return self.valid if name == "valid" else self.test

    def candidates(self, name: str) -> np.ndarray | None:
        return self.valid_candidates if name == "valid" else self.test_candidates

    def save(self, folder: str | Path) -> Path:
        """Write the split as files any library can read: items.csv, {train,valid,test}.csv, meta.json."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.train.items.to_csv(folder / "items.csv", index=False)
        for name in ("train", "valid", "test"):
            getattr(self, name).interactions_frame().to_csv(folder / f"{name}.csv", index=False)
        ids = self.train.item_ids
        meta = {
            "method": self.method,
            "seed": self.seed,
            "protocol": self.protocol,
            "dataset": self.train.name,
            "checksums": self.train.checksums,
            "user_ids": [str(u) for u in self.train.user_ids],
            "valid_candidates": None if self.valid_candidates is None else [ids[i] for i in self.valid_candidates],
            "test_candidates": None if self.test_candidates is None else [ids[i] for i in self.test_candidates],
        }
        (folder / "meta.json").write_text(json.dumps(meta, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Split:
        """Read a split written by :meth:`save`."""
        from avrec.data.dataset import build_dataset
        from avrec.data.io import read_table

        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text())
        items = read_table(folder / "items.csv")
        frames = {n: pd.read_csv(folder / f"{n}.csv", dtype={"user_id": str, "item_id": str})
                  for n in ("train", "valid", "test")}
        everything = pd.concat(frames.values(), ignore_index=True)
        full = build_dataset(items, everything, name=meta["dataset"], checksums=meta.get("checksums"))
        if meta.get("user_ids") is not None:
            # keep the saved user order (and users without interactions) so indices match the original split
            user_ids = np.asarray(meta["user_ids"], dtype=object)
            user_idx = pd.Index(user_ids).get_indexer(everything["user_id"].astype(str))
            if (user_idx < 0).any():
                bad = everything["user_id"][user_idx < 0].iloc[0]
                raise DataError(f"{folder}: user_id {bad!r} is not listed in meta.json")
            full = Dataset(items=full.items, user_ids=user_ids, user_idx=user_idx, item_idx=full.item_idx,
                           weight=full.weight, timestamp=full.timestamp, name=full.name, checksums=full.checksums)
        sizes = np.cumsum([0] + [len(f) for f in frames.values()])
        train, valid, test = (full.subset(np.arange(full.n_interactions)[sizes[i] : sizes[i + 1]]) for i in range(3))

        def cands(key: str) -> np.ndarray | None:
            return None if meta[key] is None else full.item_indices(meta[key]).astype(np.int64)

        return cls(train, valid, test, method=meta["method"], seed=meta["seed"],
                   valid_candidates=cands("valid_candidates"), test_candidates=cands("test_candidates"))


def _dedupe(dataset: Dataset) -> Dataset:
    """Collapse repeated (user, item) pairs: weights summed, latest timestamp kept."""
    key = dataset.user_idx.astype(np.int64) * dataset.n_items + dataset.item_idx
    if len(np.unique(key)) == len(key):
        return dataset
    frame = pd.DataFrame({"key": key, "w": dataset.weight, "t": dataset.timestamp})
    agg = frame.groupby("key", sort=True).agg(w=("w", "sum"), t=("t", "max"))
    keys = agg.index.to_numpy()
    return Dataset(
        items=dataset.items,
        user_ids=dataset.user_ids,
        user_idx=(keys // dataset.n_items).astype(np.int32),
        item_idx=(keys % dataset.n_items).astype(np.int32),
        weight=agg["w"].to_numpy(np.float32),
        timestamp=agg["t"].to_numpy(np.int64),
        name=dataset.name,
        checksums=dataset.checksums,
    )


def _rank_within_user(user_idx: np.ndarray, order_key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position of each interaction within its user (by ``order_key``) and that user's count."""
    order = np.lexsort((order_key, user_idx))
    sorted_users = user_idx[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_users)) + 1]
    counts = np.diff(np.r_[starts, len(order)])
    pos_sorted = np.arange(len(order)) - np.repeat(starts, counts)
    position = np.empty(len(order), dtype=np.int64)
    position[order] = pos_sorted
    count = np.empty(len(order), dtype=np.int64)
    count[order] = np.repeat(counts, counts)
    return position, count


def _parts(dataset: Dataset, part: np.ndarray) -> tuple[Dataset, Dataset, Dataset]:
    return dataset.subset(part == 0), dataset.subset(part == 1), dataset.subset(part == 2)


def random_split(dataset: Dataset, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 2026) -> Split:
    """Per-user random split by ratio; users with fewer than 3 items keep everything in train."""
    ds = _dedupe(dataset)
    rng = np.random.default_rng(seed)
    position, count = _rank_within_user(ds.user_idx, rng.random(ds.n_interactions))
    n_test = np.floor(count * ratios[2] + 0.5).astype(np.int64)
    n_valid = np.floor(count * ratios[1] + 0.5).astype(np.int64)
    n_test[count < 3] = 0
    n_valid[count < 3] = 0
    part = np.zeros(ds.n_interactions, dtype=np.int8)
    part[position >= count - n_test - n_valid] = 1
    part[position >= count - n_test] = 2
    return Split(*_parts(ds, part), method="random", seed=seed)


def temporal_leave_one_out(dataset: Dataset, seed: int = 2026) -> Split:
    """Per user: last interaction is test, the one before is validation (ties broken by seed)."""
    ds = _dedupe(dataset)
    if not ds.has_timestamps:
        raise DataError("temporal_loo split needs a timestamp on every interaction")
    rng = np.random.default_rng(seed)
    key = ds.timestamp.astype(np.float64) + rng.random(ds.n_interactions) * 1e-3
    position, count = _rank_within_user(ds.user_idx, key)
    part = np.zeros(ds.n_interactions, dtype=np.int8)
    eligible = count >= 3
    part[eligible & (position == count - 2)] = 1
    part[eligible & (position == count - 1)] = 2
    return Split(*_parts(ds, part), method="temporal_loo", seed=seed)


def global_temporal_split(
    dataset: Dataset, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 2026
) -> Split:
    """One time cut for all users: the oldest 80% trains, the next 10% validates, the newest 10% tests.

    ``seed`` is recorded but unused: the split depends only on the timestamps.
    """
    ds = _dedupe(dataset)
    if not ds.has_timestamps:
        raise DataError("global_temporal split needs a timestamp on every interaction")
    # The cuts are timestamps, not row counts: interactions that share the cut second all land on the
    # older side, so every training interaction is strictly older than every validation one, and so on.
    ts = np.sort(ds.timestamp)
    n = ds.n_interactions
    cut1, cut2 = int(n * ratios[0]), int(n * (ratios[0] + ratios[1]))
    t1 = ts[cut1 - 1] if cut1 > 0 else ts[0] - 1
    t2 = ts[cut2 - 1] if cut2 > 0 else ts[0] - 1
    part = np.zeros(n, dtype=np.int8)
    part[ds.timestamp > t1] = 1
    part[ds.timestamp > t2] = 2
    if not (part == 2).any():
        raise DataError(
            f"global_temporal split: no interaction is newer than the test cut (t={int(t2)}); "
            "the timestamps have too few distinct values"
        )
    return Split(*_parts(ds, part), method="global_temporal", seed=seed)


def cold_item_split(dataset: Dataset, cold_share: float = 0.2, valid_share: float = 0.1, seed: int = 2026) -> Split:
    """Hold out whole items: ``cold_share`` of the interacted items go to test, ``valid_share`` to validation.

    Test (validation) users rank among the test (validation) cold items only.
    """
    ds = _dedupe(dataset)
    rng = np.random.default_rng(seed)
    interacted = np.flatnonzero(ds.item_counts() > 0)
    shuffled = rng.permutation(interacted)
    n_test = int(round(len(shuffled) * cold_share))
    n_valid = int(round(len(shuffled) * valid_share))
    test_items = np.sort(shuffled[:n_test])
    valid_items = np.sort(shuffled[n_test : n_test + n_valid])
    part = np.zeros(ds.n_interactions, dtype=np.int8)
    part[np.isin(ds.item_idx, valid_items)] = 1
    part[np.isin(ds.item_idx, test_items)] = 2
    train, valid, test = _parts(ds, part)
    return Split(train, valid, test, method="cold_item", seed=seed,
                 valid_candidates=valid_items.astype(np.int64), test_candidates=test_items.astype(np.int64))


def make_split(dataset: Dataset, config: SplitConfig | None = None) -> Split:
    """Split ``dataset`` as ``config`` says."""
    config = config or SplitConfig()
    if config.method == "random":
        return random_split(dataset, config.ratios, config.seed)
    if config.method == "temporal_loo":
        return temporal_leave_one_out(dataset, config.seed)
    if config.method == "global_temporal":
        return global_temporal_split(dataset, config.ratios, config.seed)
    return cold_item_split(dataset, config.cold_share, config.cold_valid_share, config.seed)


def holdout_warm_and_cold(
    dataset: Dataset, share: float, seed: int
) -> tuple[Dataset, Dataset, Dataset, np.ndarray | None]:
    """An internal validation split for a model fitted on everything (``avrec fit``).

    Holds out ``share`` of the items entirely (cold validation) and ``share`` of each user's remaining
    items (warm validation). Returns (train, warm_valid, cold_valid, cold_candidates).
    """
    cold = cold_item_split(dataset, cold_share=share, valid_share=0.0, seed=seed)
    warm = random_split(cold.train, ratios=(1 - share, share, 0.0), seed=seed)
    return warm.train, warm.valid, cold.test, cold.test_candidates
