"""Tiny generated catalogue + interactions for the serving tests: two taste clusters that a model can learn.

Items 0-19 are science fiction (robots, space), items 20-39 are romance; users 0-14 play sci-fi, users
15-29 play romance, so a fitted model recommends within the user's cluster. Fitting itemknn on it takes
milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from avrec.data.dataset import Dataset, build_dataset
from avrec.models.registry import create_model

SCIFI = [f"s{i}" for i in range(20)]
ROMANCE = [f"r{i}" for i in range(20)]


def tiny_items() -> pd.DataFrame:
    rows = []
    for n, item in enumerate(SCIFI):
        rows.append({"item_id": item, "title": f"Robot Star Voyage {n}", "media_type": "movie",
                     "genres": "Sci-Fi|Adventure", "year": str(1990 + n),
                     "tags": "robots|space|spaceship|aliens", "overview": "Robots and astronauts explore distant planets."})
    for n, item in enumerate(ROMANCE):
        rows.append({"item_id": item, "title": f"Paris Love Letters {n}", "media_type": "movie",
                     "genres": "Romance|Drama", "year": str(1990 + n),
                     "tags": "love|wedding|paris", "overview": "Two strangers fall in love in Paris."})
    return pd.DataFrame(rows)


def tiny_dataset(seed: int = 7, n_users: int = 30, per_user: int = 8) -> Dataset:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        pool = SCIFI if u < n_users // 2 else ROMANCE
        # a popularity skew inside each cluster, so the lists are not ties
        p = np.linspace(2.0, 1.0, len(pool))
        chosen = rng.choice(len(pool), size=per_user, replace=False, p=p / p.sum())
        for t, c in enumerate(chosen):
            rows.append({"user_id": f"u{u}", "item_id": pool[c], "weight": 1.0, "timestamp": 1_600_000_000 + t})
    return build_dataset(tiny_items(), pd.DataFrame(rows), name="tiny")


def fit_tiny(folder: Path, model: str = "itemknn", seed: int = 7) -> Path:
    """Fit ``model`` on the tiny data and save it to ``folder``."""
    create_model(model).fit(tiny_dataset(seed)).save(folder)
    return folder


def fit_tiny_pipeline(folder: Path, retriever: str = "ease") -> Path:
    """A retrieve → rank pipeline over ``retriever`` with a tiny cross-encoder (a few seconds on one thread)."""
    from finetune_helpers import tiny_bert_dir, torch_threads

    model = create_model(
        "pipeline", retriever=retriever, n_candidates=10, eval_users=10, tune_users=10,
        ranker={"model": tiny_bert_dir(), "max_length": 32, "user_max_tokens": 8, "finetune": "full"},
        pairs={"positives_per_user": 1, "hard_negatives": 1, "random_negatives": 1},
        train={"batch_size": 16, "lr": 1e-3, "max_steps": 2, "log_every": 0},
    )
    with torch_threads(1):
        model.fit(tiny_dataset()).save(folder)
    return folder


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_app(service) -> Iterator[str]:
    """``service``'s app in uvicorn on a free loopback port, in a thread; yields its base URL."""
    import threading
    import time

    import uvicorn

    from avrec.serve import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(service, watch=False), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
