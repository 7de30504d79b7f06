"""Generated data with obvious structure for model tests: two user groups with disjoint tastes.

Two groups of users (space sci-fi vs. romance) with Zipf-like popularity inside each group, item text
that says which group an item belongs to, and two catalogue items ("a_cold", "b_cold") with matching
text but no interactions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from avrec.data.dataset import Dataset, build_dataset
from avrec.data.splits import Split
from avrec.eval.metrics import per_user_metrics

N_PER_GROUP = 24
USERS_PER_GROUP = 36
ITEMS_PER_USER = 10

GROUPS: dict[str, dict[str, Any]] = {
    "a": {
        "genres": ["Sci-Fi", "Action", "Adventure"],
        "words": ["space", "galaxy", "robot", "starship", "alien", "planet", "laser", "orbit", "android",
                  "asteroid", "rocket", "cyborg", "nebula", "astronaut", "spaceship", "martian"],
        "sentence": "A {0} crew fights a {1} {2} on a distant {3}, far out in deep space among the stars.",
    },
    "b": {
        "genres": ["Romance", "Comedy", "Drama"],
        "words": ["love", "wedding", "romance", "kiss", "heart", "date", "marriage", "couple", "valentine",
                  "bride", "sweetheart", "honeymoon", "engagement", "flirt", "boyfriend", "girlfriend"],
        "sentence": "Two {0} lovers plan a {1} {2} and fall in love again after a {3} romance and a kiss.",
    },
}


def group_of(item_id: str) -> str:
    """'a' or 'b': every generated item id starts with its group letter."""
    return str(item_id)[0]


def _item_row(group: str, name: str, rng: np.random.Generator) -> dict:
    spec = GROUPS[group]
    w = rng.choice(spec["words"], size=6, replace=False)
    return {
        "item_id": name,
        "title": f"{w[0].title()} {w[1].title()}",
        "media_type": "movie",
        "genres": "|".join(rng.choice(spec["genres"], size=2, replace=False)),
        "tags": "|".join(w[2:5]),
        "overview": spec["sentence"].format(*w[:4]),
        "year": str(1990 + int(rng.integers(0, 30))),
    }


def new_items_frame(seed: int = 99) -> pd.DataFrame:
    """Two items that are not in the generated catalogue: 'a_new' (group-A text) and 'b_new'."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame([_item_row("a", "a_new", rng), _item_row("b", "b_new", rng)])


def make_structured_dataset(seed: int = 0) -> Dataset:
    """Two groups of users with disjoint tastes, plus two catalogue items that nobody has seen."""
    rng = np.random.default_rng(seed)
    items = [_item_row(g, f"{g}{i:02d}", rng) for g in GROUPS for i in range(N_PER_GROUP)]
    items += [_item_row("a", "a_cold", rng), _item_row("b", "b_cold", rng)]
    p = 1.0 / np.arange(1, N_PER_GROUP + 1) ** 0.9
    p /= p.sum()
    rows, t = [], 1_600_000_000
    for g in GROUPS:
        for u in range(USERS_PER_GROUP):
            for i in rng.choice(N_PER_GROUP, size=ITEMS_PER_USER, replace=False, p=p):
                t += int(rng.integers(1, 100))
                rows.append((f"u{g}{u:02d}", f"{g}{i:02d}", 1.0, t))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "weight", "timestamp"])
    return build_dataset(pd.DataFrame(items), inter, name="two-groups")


def random_ndcg(split: Split, k: int = 10, repeats: int = 20, seed: int = 0) -> float:
    """Expected NDCG@k of a uniformly random ranking under the same exclusions as evaluate_model."""
    truth = split.test.matrix(binary=True)
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    exclude = (split.train.matrix(binary=True) + split.valid.matrix(binary=True)).tocsr()
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(repeats):
        scores = rng.random((len(users), split.train.n_items))
        for r, u in enumerate(users):
            scores[r, exclude[u].indices] = -np.inf
        top = np.argsort(-scores, axis=1)[:, :k]
        values.append(per_user_metrics(top, truth[users], k)["ndcg"].mean())
    return float(np.mean(values))
