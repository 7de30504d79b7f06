"""Synthetic dataset folders at any size, with the structure real catalogues have.

``synthesize`` writes ``items.parquet`` and ``interactions.parquet`` in the dataset folder format:

- **tastes**: a few dozen latent tastes, each with its genres, moods, tags, media type, a decade and
  its own artists or directors; items belong to one taste and carry its metadata (plus some noise);
- **documents**: each item's ``description`` is a short sentence built from its taste's words, so the
  text carries the same signal as the interactions (and a word or two of noise);
- **popularity**: Zipf-like (weight ∝ rank^-0.9 over a random permutation of the catalogue), so a few
  items draw most events and a long tail has none (cold items);
- **users**: one to three tastes each and a log-normal activity level; an event picks one of the
  user's tastes, then an item of that taste by popularity (10% of events pick by global popularity);
- **timestamps** increase within each user's history; ``plays`` is a geometric play count.

Interactions are generated and written in chunks of users (pyarrow, ids built by Arrow compute): no
Python object per row, memory bounded by the chunk size whatever ``n_interactions`` is. The same seed
gives the same files.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from avrec.errors import ConfigError, DataError

GENRES = ("Rock", "Jazz", "Electronic", "Hip-Hop", "Classical", "Folk", "Metal", "Pop", "Soul", "Reggae",
          "Blues", "Ambient", "Drama", "Comedy", "Thriller", "Horror", "Documentary", "Animation", "Romance",
          "Sci-Fi", "Western", "Crime", "Fantasy", "Musical", "War", "Mystery", "Adventure", "Family",
          "History", "Sport")
MOODS = ("dark", "bright", "melancholic", "joyful", "tense", "calm", "angry", "tender", "dreamy", "gritty",
         "playful", "epic", "intimate", "eerie", "warm", "cold", "nostalgic", "hopeful", "brooding", "wild",
         "gentle", "raw", "lush", "sparse", "haunting", "uplifting", "bittersweet", "hypnotic", "frantic",
         "serene", "lonely", "romantic", "violent", "whimsical", "solemn", "sunny", "stormy", "smoky",
         "glossy", "lo-fi")
THEMES = ("love", "war", "city", "ocean", "desert", "night", "summer", "winter", "family", "revenge", "road",
          "space", "dance", "rain", "memory", "youth", "friendship", "betrayal", "faith", "money", "escape",
          "home", "machines", "forest", "river", "fire", "dreams", "ghosts", "heroes", "outlaws", "islands",
          "trains", "mountains", "parties", "prison", "school", "sea", "stars", "streets", "weddings",
          "wolves", "gardens", "kings", "rebels", "storms", "robots", "cowboys", "detectives", "spies",
          "monsters", "angels", "sailors", "farmers", "painters", "poets", "boxers", "chefs", "pilots",
          "thieves", "twins")
MEDIA = ("music", "movie", "episode", "clip")
_SYLLABLES = ("ka", "lo", "mi", "ra", "ven", "dor", "sil", "ta", "be", "no", "ar", "el", "quin", "zo", "fa",
              "ru", "gal", "mon", "ti", "sa", "ber", "lin", "os", "ke", "da", "mar", "vi", "pe", "ul", "ho")


@dataclass
class SynthConfig:
    """Sizes and shape of a synthetic dataset (see the module docstring)."""

    n_items: int
    n_users: int
    n_interactions: int
    seed: int = 0
    n_tastes: int = 0  # 0: about sqrt(n_items)/4, between 8 and 400
    zipf: float = 0.9
    explore: float = 0.1
    chunk_rows: int = 1_000_000

    def __post_init__(self) -> None:
        for name in ("n_items", "n_users", "n_interactions"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"synth: --{name[2:]} must be a whole number of at least 1, not {value!r}")
        if self.n_interactions < self.n_users:
            raise ConfigError(f"synth: --interactions ({self.n_interactions:,}) must be at least --users "
                              f"({self.n_users:,}): every user gets one interaction or more")
        if not 0 <= self.explore <= 1:
            raise ConfigError(f"synth: explore must be in [0, 1], not {self.explore}")
        if self.chunk_rows < 1:
            raise ConfigError(f"synth: chunk_rows must be at least 1, not {self.chunk_rows}")

    @property
    def tastes(self) -> int:
        return self.n_tastes or int(np.clip(np.sqrt(self.n_items) / 4, 8, 400))


def _words(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct pronounceable pseudo-words of 2 to 4 syllables (names of artists, directors, titles);
    past the 837,000 such words a number is appended."""
    s = len(_SYLLABLES)
    space = s**2 + s**3 + s**4
    codes = rng.choice(space, size=min(n, space), replace=False)
    syl = np.array(_SYLLABLES, dtype=object)
    out = []
    for c in codes.tolist():
        k = 2 if c < s**2 else 3 if c < s**2 + s**3 else 4
        c -= 0 if k == 2 else s**2 if k == 3 else s**2 + s**3
        out.append("".join(syl[(c // s ** np.arange(k)) % s]))
    out += [f"{out[i % len(out)]}{i // len(out) + 1}" for i in range(len(out), n)]
    return np.array(out, dtype=object)


@dataclass
class _Tastes:
    genres: np.ndarray  # (K, 2) genre indices
    moods: np.ndarray  # (K, 3) mood indices
    themes: np.ndarray  # (K, 8) theme indices
    media: np.ndarray  # (K,) media index
    decade: np.ndarray  # (K,) year
    weight: np.ndarray  # (K,) how many items and users a taste draws


def _make_tastes(k: int, rng: np.random.Generator) -> _Tastes:
    return _Tastes(
        genres=np.stack([rng.choice(len(GENRES), 2, replace=False) for _ in range(k)]),
        moods=np.stack([rng.choice(len(MOODS), 3, replace=False) for _ in range(k)]),
        themes=np.stack([rng.choice(len(THEMES), 8, replace=False) for _ in range(k)]),
        media=rng.integers(len(MEDIA), size=k),
        decade=rng.integers(196, 203, size=k) * 10,
        weight=(1.0 / np.arange(1, k + 1) ** 0.5)[rng.permutation(k)],
    )


def _items(cfg: SynthConfig, tastes: _Tastes, rng: np.random.Generator) -> tuple[dict[str, list[str]], np.ndarray]:
    """Item columns (strings) and each item's taste."""
    n, k = cfg.n_items, cfg.tastes
    taste = rng.choice(k, size=n, p=tastes.weight / tastes.weight.sum())
    n_people = max(k, n // 12)
    people = _words(n_people + 400, rng)
    names, title_words = people[:n_people], people[n_people:]
    # person p works in taste p % k: an item's artist/director is one of its taste's people
    per_taste = max(n_people // k, 1)
    person = taste + k * rng.integers(per_taste, size=n)
    person = np.where(person < n_people, person, taste)
    genre2 = np.where(rng.random(n) < 0.1, rng.integers(len(GENRES), size=n), tastes.genres[taste, 1])
    theme_pick = tastes.themes[taste[:, None], rng.integers(8, size=(n, 2))]
    noise_theme = rng.integers(len(THEMES), size=n)
    mood = tastes.moods[taste[:, None], rng.integers(3, size=(n, 2))]
    year = tastes.decade[taste] + rng.integers(0, 10, size=n)
    title = title_words[rng.integers(len(title_words), size=(n, 2))]
    media = tastes.media[taste]
    g = np.array(GENRES, dtype=object)
    mo, th, me = np.array(MOODS, dtype=object), np.array(THEMES, dtype=object), np.array(MEDIA, dtype=object)
    cols: dict[str, list[str]] = {
        "item_id": [f"i{i}" for i in range(n)],
        "title": [f"{a.capitalize()} {b}" for a, b in title],
        "media_type": list(me[media]),
        "genres": [f"{a}|{b}" if a != b else a for a, b in zip(g[tastes.genres[taste, 0]], g[genre2])],
        "tags": [f"{a}|{b}|{c}" for a, b, c in zip(th[theme_pick[:, 0]], th[theme_pick[:, 1]], th[noise_theme])],
        "artist": [str(p).capitalize() if m == 0 else "" for p, m in zip(names[person], media)],
        "director": [str(p).capitalize() if m != 0 else "" for p, m in zip(names[person], media)],
        "year": [str(y) for y in year],
        "description": [f"A {a} and {b} {gg.lower()} {m} about {t1} and {t2}."
                        for a, b, gg, m, t1, t2 in zip(mo[mood[:, 0]], mo[mood[:, 1]], g[tastes.genres[taste, 0]],
                                                       me[media], th[theme_pick[:, 0]], th[theme_pick[:, 1]])],
    }
    return cols, taste


class _Sampler:
    """Item sampling by taste and popularity with one ``searchsorted`` over a segmented CDF."""

    def __init__(self, taste: np.ndarray, popularity: np.ndarray, k: int) -> None:
        order = np.lexsort((-popularity, taste))  # by taste, popular first
        self.items = order
        t, w = taste[order], popularity[order]
        cum = np.cumsum(w)
        starts = np.searchsorted(t, np.arange(k))
        ends = np.searchsorted(t, np.arange(k), side="right")
        base = np.where(starts > 0, cum[np.maximum(starts - 1, 0)], 0.0)
        total = np.where(ends > starts, cum[np.maximum(ends - 1, 0)] - base, 1.0)
        # segment t spans (t, t + 1]: taste + within-taste CDF
        self.cdf = t + (cum - base[t]) / total[t]
        self.has_items = ends > starts
        self.global_cdf = np.cumsum(popularity) / popularity.sum()

    def sample(self, taste: np.ndarray, rng: np.random.Generator, explore: float) -> np.ndarray:
        u = rng.random(len(taste))
        pos = np.searchsorted(self.cdf, taste + np.maximum(u, 1e-12))
        out = self.items[np.minimum(pos, len(self.items) - 1)]
        wild = (rng.random(len(taste)) < explore) | ~self.has_items[taste]
        out[wild] = np.minimum(np.searchsorted(self.global_cdf, rng.random(int(wild.sum()))), len(self.global_cdf) - 1)
        return out


def synthesize(folder: str | Path, cfg: SynthConfig, *, force: bool = False) -> dict[str, object]:
    """Write a synthetic dataset folder; returns a summary (also written as ``synth.json``)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out = Path(folder)
    if out.exists() and any(out.iterdir()) and not force:
        raise DataError(f"{out}: folder exists and is not empty (use --force to overwrite)")
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("items.csv", "interactions.csv"):
        (out / stale).unlink(missing_ok=True)
    rng = np.random.default_rng(cfg.seed)
    k = cfg.tastes
    tastes = _make_tastes(k, rng)
    cols, item_taste = _items(cfg, tastes, rng)
    pq.write_table(pa.table(cols), out / "items.parquet", row_group_size=200_000)
    del cols
    popularity = (1.0 / np.arange(1, cfg.n_items + 1) ** cfg.zipf)[rng.permutation(cfg.n_items)]
    sampler = _Sampler(item_taste, popularity, k)

    n_u = cfg.n_users
    activity = rng.lognormal(0.0, 1.0, size=n_u)
    counts = 1 + rng.multinomial(cfg.n_interactions - n_u, activity / activity.sum())
    taste_p = tastes.weight / tastes.weight.sum()
    user_tastes = rng.choice(k, size=(n_u, 3), p=taste_p)
    n_tastes = rng.integers(1, 4, size=n_u)
    mix = rng.dirichlet(np.ones(3), size=n_u) * (np.arange(3)[None, :] < n_tastes[:, None])
    mix_cdf = np.cumsum(mix / mix.sum(axis=1, keepdims=True), axis=1)
    start = rng.integers(1_500_000_000, 1_560_000_000, size=n_u)
    gap = rng.integers(600, 86_400 * 3, size=n_u)  # each user's mean time between events

    schema = pa.schema([("user_id", pa.string()), ("item_id", pa.string()), ("timestamp", pa.int64()),
                        ("plays", pa.int32()), ("event", pa.string())])
    ends = np.cumsum(counts)
    written = 0
    with pq.ParquetWriter(out / "interactions.parquet", schema) as writer:
        lo = 0
        while lo < n_u:
            hi = int(np.searchsorted(ends, ends[lo] - counts[lo] + cfg.chunk_rows, side="right"))
            hi = max(hi, lo + 1)
            c = counts[lo:hi]
            users = np.repeat(np.arange(lo, hi), c)
            slot = (rng.random(len(users))[:, None] > mix_cdf[users]).sum(axis=1)
            taste = user_tastes[users, np.minimum(slot, 2)]
            items = sampler.sample(taste, rng, cfg.explore)
            # increasing timestamps within a user: exponential gaps, cumulated per user segment
            steps = rng.exponential(1.0, size=len(users)) * gap[users]
            cum = np.cumsum(steps)
            seg_start = np.repeat(np.r_[0, np.cumsum(c)[:-1]], c)
            ts = start[users] + (cum - cum[seg_start] + steps[seg_start]).astype(np.int64)
            plays = rng.geometric(0.4, size=len(users)).astype(np.int32)
            batch = pa.table({
                "user_id": pc.binary_join_element_wise("u", pc.cast(pa.array(users), pa.string()), ""),
                "item_id": pc.binary_join_element_wise("i", pc.cast(pa.array(items), pa.string()), ""),
                "timestamp": pa.array(ts, pa.int64()),
                "plays": pa.array(plays, pa.int32()),
                "event": pa.DictionaryArray.from_arrays(pa.array(np.zeros(len(users), np.int32)),
                                                        pa.array(["play"])).cast(pa.string()),
            }, schema=schema)
            writer.write_table(batch, row_group_size=cfg.chunk_rows)
            written += len(users)
            lo = hi
    summary: dict[str, object] = {**asdict(cfg), "tastes": k, "rows_written": written}
    (out / "synth.json").write_text(json.dumps(summary, indent=1))
    return summary


__all__ = ["SynthConfig", "synthesize"]
