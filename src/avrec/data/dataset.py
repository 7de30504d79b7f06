"""The in-memory dataset: an item catalogue, a user list and interactions in index space.

Like LightFM's ``Dataset``, it owns the mapping between external string ids and the dense integer
indices that models use. Every split of one dataset shares the same catalogue and user list, so an
index means the same item in train, validation and test.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from avrec.errors import DataError

#: Item fields that hold several values separated by ``|``.
MULTI_VALUED_FIELDS = ("genres", "tags", "director", "cast", "artist", "keywords", "country", "heard_tags")
#: Item fields an item document may use, in the default order.
TEXT_FIELDS = (
    "title",
    "media_type",
    "artist",
    "genres",
    "year",
    "director",
    "cast",
    "tags",
    "heard_tags",  # what an audio tagger heard (heard_tags.csv; avrec embed --heard-tags), not catalogue metadata
    "keywords",
    "tagline",
    "overview",
    "description",
    "lyrics",
)


@dataclass(eq=False)
class Dataset:
    """Items, users and (user, item, weight, timestamp) interactions.

    ``items`` is a frame whose row ``i`` describes item index ``i``; its ``item_id`` column holds
    unique string ids and every other column is string metadata ("" when absent). Interactions are
    parallel arrays of user index, item index, weight (> 0) and unix timestamp (-1 when unknown).
    """

    items: pd.DataFrame
    user_ids: np.ndarray
    user_idx: np.ndarray
    item_idx: np.ndarray
    weight: np.ndarray
    timestamp: np.ndarray
    name: str = ""
    checksums: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.items = self.items.reset_index(drop=True)
        self.user_ids = np.asarray(self.user_ids, dtype=object)
        self.user_idx = np.asarray(self.user_idx, dtype=np.int32)
        self.item_idx = np.asarray(self.item_idx, dtype=np.int32)
        self.weight = np.asarray(self.weight, dtype=np.float32)
        self.timestamp = np.asarray(self.timestamp, dtype=np.int64)
        n = len(self.user_idx)
        if not (len(self.item_idx) == len(self.weight) == len(self.timestamp) == n):
            raise DataError("interaction arrays must all have the same length")
        if "item_id" not in self.items.columns:
            raise DataError("items: missing required column 'item_id'")

    # ---- sizes and id maps -------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_interactions(self) -> int:
        return len(self.user_idx)

    @property
    def has_timestamps(self) -> bool:
        return bool(self.n_interactions) and bool((self.timestamp >= 0).all())

    @cached_property
    def item_ids(self) -> np.ndarray:
        return self.items["item_id"].to_numpy(dtype=object)

    @cached_property
    def item_index(self) -> dict[str, int]:
        return {item_id: i for i, item_id in enumerate(self.item_ids)}

    @cached_property
    def user_index(self) -> dict[str, int]:
        return {user_id: u for u, user_id in enumerate(self.user_ids)}

    def item_indices(self, item_ids: Iterable[Any], *, strict: bool = True) -> np.ndarray:
        """Map external item ids to indices; unknown ids raise (strict) or map to -1."""
        index = self.item_index
        out = np.fromiter((index.get(str(i), -1) for i in item_ids), dtype=np.int64)
        if strict and (out < 0).any():
            missing = [str(i) for i, o in zip(item_ids, out) if o < 0][:5]
            raise DataError(f"unknown item id(s): {', '.join(missing)}")
        return out

    def user_indices(self, user_ids: Iterable[Any]) -> np.ndarray:
        """Map external user ids to indices, -1 for users the dataset does not know."""
        index = self.user_index
        return np.fromiter((index.get(str(u), -1) for u in user_ids), dtype=np.int64)

    # ---- matrices ----------------------------------------------------------------------------
    def matrix(self, binary: bool = False) -> sp.csr_matrix:
        """The user × item matrix; repeated (user, item) pairs have their weights summed."""
        data = np.ones_like(self.weight) if binary else self.weight
        m = sp.csr_matrix(
            (data, (self.user_idx, self.item_idx)), shape=(self.n_users, self.n_items), dtype=np.float32
        )
        m.sum_duplicates()
        if binary:
            m.data[:] = 1.0
        return m

    def timestamp_matrix(self) -> sp.csr_matrix | None:
        """User × item matrix of each pair's latest timestamp (None without timestamps), for recency."""
        if not self.has_timestamps:
            return None
        last = (pd.DataFrame({"u": self.user_idx, "i": self.item_idx, "t": self.timestamp.astype(np.float64)})
                .groupby(["u", "i"], sort=False, as_index=False)["t"].max())
        return sp.csr_matrix((last["t"].to_numpy(), (last["u"].to_numpy(), last["i"].to_numpy())),
                             shape=(self.n_users, self.n_items))

    def item_counts(self) -> np.ndarray:
        """Number of distinct users per item."""
        return np.asarray((self.matrix(binary=True)).sum(axis=0)).ravel()

    # ---- derived datasets --------------------------------------------------------------------
    def subset(self, mask: np.ndarray) -> Dataset:
        """The same catalogue and users with only the interactions where ``mask`` is true."""
        return Dataset(
            items=self.items,
            user_ids=self.user_ids,
            user_idx=self.user_idx[mask],
            item_idx=self.item_idx[mask],
            weight=self.weight[mask],
            timestamp=self.timestamp[mask],
            name=self.name,
            checksums=self.checksums,
        )

    def interactions_frame(self) -> pd.DataFrame:
        """Interactions with external ids, in the dataset folder's column names."""
        return pd.DataFrame(
            {
                "user_id": self.user_ids[self.user_idx],
                "item_id": self.item_ids[self.item_idx],
                "weight": self.weight,
                "timestamp": self.timestamp,
            }
        )

    def history(self, user_id: str) -> list[str]:
        """Item ids of one user's interactions, oldest first when timestamps exist."""
        u = self.user_index.get(str(user_id))
        if u is None:
            return []
        rows = np.flatnonzero(self.user_idx == u)
        rows = rows[np.argsort(self.timestamp[rows], kind="stable")]
        return [self.item_ids[i] for i in self.item_idx[rows]]

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, users={self.n_users}, items={self.n_items}, "
            f"interactions={self.n_interactions})"
        )


def build_dataset(
    items: pd.DataFrame,
    interactions: pd.DataFrame,
    *,
    name: str = "",
    checksums: dict[str, str] | None = None,
) -> Dataset:
    """Index a clean item frame and a clean interaction frame (user_id, item_id, weight, timestamp)."""
    items = items.reset_index(drop=True)
    index = pd.Index(items["item_id"])
    item_idx = index.get_indexer(interactions["item_id"])
    if (item_idx < 0).any():
        bad = interactions["item_id"][item_idx < 0].iloc[0]
        raise DataError(f"interactions: item_id {bad!r} is not in the item catalogue")
    user_codes, user_ids = pd.factorize(interactions["user_id"], sort=False)
    ts = interactions["timestamp"] if "timestamp" in interactions else np.full(len(interactions), -1)
    weight = interactions["weight"] if "weight" in interactions else np.ones(len(interactions))
    return Dataset(
        items=items,
        user_ids=np.asarray(user_ids, dtype=object),
        user_idx=user_codes,
        item_idx=item_idx,
        weight=np.asarray(weight, dtype=np.float32),
        timestamp=np.asarray(ts, dtype=np.int64),
        name=name,
        checksums=dict(checksums or {}),
    )
