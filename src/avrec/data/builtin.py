"""Built-in public datasets, converted to the avrec folder format on the fly.

``ml-latest-small`` ships inside the package (with its README and licence) and is the offline default.
The others come from ``AVREC_DATA`` (or ``--data-dir``) when it holds a copy, else they are downloaded
once from the official URL into the cache and checked with sha256 (see :mod:`avrec.data.download`).
"""

from __future__ import annotations

import io
import json
import os
import re
import warnings
import zipfile
from importlib import resources
from pathlib import Path

import pandas as pd

from avrec.data.dataset import Dataset, build_dataset
from avrec.data.io import DataConfig, clean_interactions, clean_items, load_folder, sha256_file
from avrec.errors import DataError, DataWarning

EMBEDDED_ZIP = "ml-latest-small.zip"
_YEAR = re.compile(r"\s*\((\d{4})(?:[-–]\d{0,4})?\)\s*$")


def data_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """Folders searched for local dataset copies: ``data_dir``, then ``AVREC_DATA``."""
    out = []
    for d in (data_dir, os.environ.get("AVREC_DATA")):
        if d:
            out.extend(Path(p) for p in str(d).split(os.pathsep) if p)
    return out


def _local_copy(names: tuple[str, ...], marker: str, data_dir) -> Path | None:
    for root in data_dirs(data_dir):
        for name in names:
            if (root / name / marker).exists():
                return root / name
        if (root / marker).exists():
            return root
    return None


# ---- MovieLens --------------------------------------------------------------------------------
def movielens_items(movies: pd.DataFrame, tags: pd.DataFrame | None, links: pd.DataFrame | None) -> pd.DataFrame:
    """MovieLens movies.csv (+ tags.csv, links.csv) as avrec items."""
    titles = movies["title"].astype(str)
    year = titles.str.extract(_YEAR, expand=False).fillna("")
    items = pd.DataFrame(
        {
            "item_id": movies["movieId"].astype(str),
            "title": titles.str.replace(_YEAR, "", regex=True).str.strip(),
            "media_type": "movie",
            "year": year,
            "genres": movies["genres"].astype(str).replace("(no genres listed)", ""),
        }
    )
    if tags is not None and len(tags):
        # tags.csv records what the dataset's own users did (a user who tags a movie has usually rated it),
        # so these tags would reveal held-out interactions if models read them: they are kept as the
        # metadata column ``user_tags``, which no model or knowledge graph uses by default.
        t = tags.assign(tag=tags["tag"].astype(str).str.strip().str.lower())
        t = t[t["tag"] != ""]
        counts = t.groupby(["movieId", "tag"]).size().reset_index(name="n").sort_values(["movieId", "n"], ascending=[True, False])
        joined = counts.groupby("movieId")["tag"].agg(lambda s: "|".join(s.head(20)))
        items["user_tags"] = items["item_id"].map(joined.rename(index=str)).fillna("")
    if links is not None:
        lk = links.astype(str).set_index("movieId")
        items["imdb_id"] = items["item_id"].map(lk["imdbId"]).fillna("")
        items["tmdb_id"] = items["item_id"].map(lk["tmdbId"]).fillna("").str.replace(r"\.0$", "", regex=True)
    return items


def _read_embedded(member: str) -> pd.DataFrame:
    with resources.files("avrec.data.embedded").joinpath(EMBEDDED_ZIP).open("rb") as f:
        with zipfile.ZipFile(io.BytesIO(f.read())) as z:
            return pd.read_csv(z.open(member), dtype=str, keep_default_na=False)


def load_ml_latest_small(config: DataConfig, data_dir=None) -> Dataset:
    """MovieLens latest-small: 100,836 ratings, 610 users, 9,742 movies (embedded in the package)."""
    local = _local_copy(("ml-latest-small",), "ratings.csv", data_dir)
    if local is not None:
        read = lambda name: pd.read_csv(local / name, dtype=str, keep_default_na=False)  # noqa: E731
        checksums = {p: sha256_file(local / p) for p in ("movies.csv", "ratings.csv")}
    else:
        read = _read_embedded
        checksums = {"embedded:" + EMBEDDED_ZIP: sha256_file(Path(str(resources.files("avrec.data.embedded").joinpath(EMBEDDED_ZIP))))}
    items = movielens_items(read("movies.csv"), read("tags.csv"), read("links.csv"))
    ratings = read("ratings.csv").rename(columns={"userId": "user_id", "movieId": "item_id"})
    ratings["event"] = "rate"
    return _finish(items, ratings, config, "ml-latest-small", checksums, data_dir)


def _finish(items: pd.DataFrame, interactions: pd.DataFrame, config: DataConfig, name: str, checksums, data_dir=None) -> Dataset:
    items = clean_items(items, Path(f"{name}/items"))
    items = enrich_items(items, config, data_dir)
    inter = clean_interactions(interactions, set(items["item_id"]), config, Path(f"{name}/interactions"))
    return build_dataset(items, inter, name=name, checksums=checksums)


# ---- enrichment -------------------------------------------------------------------------------
def _names_from_json(value: str) -> str:
    if not value or value == "[]":
        return ""
    try:
        return "|".join(d["name"] for d in json.loads(value))
    except (ValueError, KeyError, TypeError):
        return ""


def enrich_from_tmdb(items: pd.DataFrame, tmdb_csv: str | Path) -> pd.DataFrame:
    """Add overview, keywords and tagline from a TMDB 5000 CSV, joined on ``tmdb_id``."""
    path = Path(tmdb_csv)
    if not path.exists():
        raise DataError(f"{path}: TMDB metadata file not found")
    if "tmdb_id" not in items.columns:
        raise DataError("items: TMDB enrichment needs a tmdb_id column (MovieLens links.csv provides it)")
    tmdb = pd.read_csv(path, dtype=str, keep_default_na=False)
    for col in ("id", "overview", "keywords", "tagline"):
        if col not in tmdb.columns:
            raise DataError(f"{path}: missing column {col!r}")
    tmdb = tmdb.drop_duplicates("id").set_index("id")
    items = items.copy()
    key = items["tmdb_id"].astype(str)
    items["overview"] = key.map(tmdb["overview"].str.replace("\r", " ").str.strip()).fillna("")
    items["tagline"] = key.map(tmdb["tagline"].str.strip()).fillna("")
    items["keywords"] = key.map(tmdb["keywords"].map(_names_from_json)).fillna("")
    return items


def enrich_from_hetrec(items: pd.DataFrame, folder: str | Path) -> pd.DataFrame:
    """Add directors, countries and weighted tags from hetrec2011-movielens-2k (keyed by MovieLens id)."""
    folder = Path(folder)

    def read(name: str) -> pd.DataFrame:
        p = folder / name
        if not p.exists():
            raise DataError(f"{p}: hetrec2011-movielens-2k file not found")
        return pd.read_csv(p, sep="\t", dtype=str, encoding="latin-1", keep_default_na=False, quoting=3)

    items = items.copy()
    directors = read("movie_directors.dat").groupby("movieID")["directorName"].agg(lambda s: "|".join(s.str.strip()))
    countries = read("movie_countries.dat").groupby("movieID")["country"].agg(lambda s: "|".join(v for v in s if v))
    items["director"] = items["item_id"].map(directors).fillna("")
    items["country"] = items["item_id"].map(countries).fillna("")
    tag_names = read("tags.dat").set_index("id")["value"]
    mt = read("movie_tags.dat")
    mt["w"] = pd.to_numeric(mt["tagWeight"], errors="coerce").fillna(0)
    mt["tag"] = mt["tagID"].map(tag_names).fillna("").str.strip().str.lower()
    mt = mt[mt["tag"] != ""].sort_values(["movieID", "w"], ascending=[True, False])
    hetrec_tags = mt.groupby("movieID")["tag"].agg(lambda s: "|".join(s.head(20)))
    items["tags"] = items["item_id"].map(hetrec_tags).fillna("")
    return items


def enrich_items(items: pd.DataFrame, config: DataConfig, data_dir=None) -> pd.DataFrame:
    """Apply ``config.enrich`` entries: ``tmdb[:path-to-csv]`` and ``hetrec[:path-to-folder]``."""
    for entry in config.enrich:
        kind, _, path = entry.partition(":")
        if kind == "tmdb":
            if not path:
                found = _local_copy(("tmdb-5000-movies",), "tmdb_5000_movies.csv", data_dir)
                if found is None:
                    raise DataError("enrich tmdb: no tmdb-5000-movies folder in AVREC_DATA; give tmdb:/path/to/tmdb_5000_movies.csv")
                path = str(found / "tmdb_5000_movies.csv")
            items = enrich_from_tmdb(items, path)
        elif kind == "hetrec":
            if not path:
                found = _local_copy(("hetrec2011-movielens-2k-v2", "hetrec2011-movielens-2k"), "movie_directors.dat", data_dir)
                if found is None:
                    raise DataError("enrich hetrec: no hetrec2011-movielens-2k-v2 folder in AVREC_DATA; give hetrec:/path/to/folder")
                path = str(found)
            items = enrich_from_hetrec(items, path)
        else:
            raise DataError(f"data.enrich: unknown source {kind!r} (use tmdb or hetrec)")
    return items


# ---- Last.fm ----------------------------------------------------------------------------------
def lastfm_frames(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """hetrec2011-lastfm-2k as avrec items (artists with their top tags) and play-count interactions."""

    def read(name: str, encoding: str = "utf-8") -> pd.DataFrame:
        p = folder / name
        if not p.exists():
            raise DataError(f"{p}: Last.fm file not found")
        return pd.read_csv(p, sep="\t", dtype=str, encoding=encoding, keep_default_na=False, quoting=3)

    artists = read("artists.dat")
    tags = read("tags.dat", encoding="latin-1").set_index("tagID")["tagValue"]
    assigned = read("user_taggedartists.dat")
    assigned["tag"] = assigned["tagID"].map(tags).fillna("").str.strip().str.lower()
    counts = assigned[assigned["tag"] != ""].groupby(["artistID", "tag"]).size().reset_index(name="n")
    counts = counts.sort_values(["artistID", "n"], ascending=[True, False])
    top_tags = counts.groupby("artistID")["tag"].agg(lambda s: "|".join(s.head(15)))
    items = pd.DataFrame(
        {
            "item_id": artists["id"].str.strip(),
            "title": artists["name"].str.strip(),
            "media_type": "music",
            "artist": artists["name"].str.strip(),
        }
    )
    items["tags"] = items["item_id"].map(top_tags).fillna("")
    plays = read("user_artists.dat").rename(columns={"userID": "user_id", "artistID": "item_id", "weight": "plays"})
    plays["event"] = "play"
    return items, plays


def load_lastfm(config: DataConfig, data_dir=None) -> Dataset:
    """hetrec2011-lastfm-2k: 92,834 user–artist play counts, 1,892 users, 17,632 artists."""
    folder = _local_copy(("hetrec2011-lastfm-2k", "lastfm-2k"), "user_artists.dat", data_dir)
    if folder is None:
        from avrec.data.download import fetch

        folder = fetch("lastfm-2k")
    items, plays = lastfm_frames(folder)
    checksums = {p: sha256_file(folder / p) for p in ("artists.dat", "user_artists.dat")}
    return _finish(items, plays, config, "lastfm-2k", checksums, data_dir)


BUILTIN: dict[str, object] = {
    "ml-latest-small": load_ml_latest_small,
    "lastfm-2k": load_lastfm,
}


def register_builtin(name: str, loader) -> None:
    BUILTIN[name] = loader


def load_dataset(source: str | Path, config: DataConfig | None = None, data_dir=None) -> Dataset:
    """A built-in dataset by name, or a dataset folder in the avrec format."""
    config = config or DataConfig()
    key = str(source)
    if key in BUILTIN:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)  # built-in sources are known-clean up to documented quirks
            return BUILTIN[key](config, data_dir)  # type: ignore[operator]
    path = Path(key)
    if path.is_dir():
        ds = load_folder(path, config)
        if config.enrich:
            ds.items = enrich_items(ds.items, config, data_dir)
        return ds
    raise DataError(f"{source}: neither a dataset folder nor a built-in dataset ({', '.join(sorted(BUILTIN))})")


from avrec.data.download import register_loaders as _register_downloads  # noqa: E402  (ml-100k, ml-1m, ml-25m)

_register_downloads()

__all__ = ["load_dataset", "BUILTIN", "data_dirs", "register_builtin"]
