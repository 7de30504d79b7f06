"""``data.enrich``: join extra item metadata onto a dataset's items (``tmdb`` and ``hetrec``).

``tmdb[:path-to-csv]`` adds overview, keywords and tagline from a TMDB 5000 CSV (joined on ``tmdb_id``);
``hetrec[:path-to-folder]`` adds directors, countries and weighted tags from hetrec2011-movielens-2k
(joined on the MovieLens id). Without a path, the folder is looked up under ``AVREC_DATA``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from avrec.data.io import DataConfig
from avrec.data.sources.download import local_copy
from avrec.errors import DataError


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


def enrich_items(
    items: pd.DataFrame, config: DataConfig, data_dir: str | Path | None = None
) -> pd.DataFrame:
    """Apply ``config.enrich`` entries: ``tmdb[:path-to-csv]`` and ``hetrec[:path-to-folder]``."""
    for entry in config.enrich:
        kind, _, path = entry.partition(":")
        if kind == "tmdb":
            if not path:
                found = local_copy(("tmdb-5000-movies",), "tmdb_5000_movies.csv", data_dir)
                if found is None:
                    raise DataError("enrich tmdb: no tmdb-5000-movies folder in AVREC_DATA; "
                                    "give tmdb:/path/to/tmdb_5000_movies.csv")
                path = str(found / "tmdb_5000_movies.csv")
            items = enrich_from_tmdb(items, path)
        elif kind == "hetrec":
            if not path:
                folders = ("hetrec2011-movielens-2k-v2", "hetrec2011-movielens-2k")
                found = local_copy(folders, "movie_directors.dat", data_dir)
                if found is None:
                    raise DataError("enrich hetrec: no hetrec2011-movielens-2k-v2 folder in AVREC_DATA; "
                                    "give hetrec:/path/to/folder")
                path = str(found)
            items = enrich_from_hetrec(items, path)
        else:
            raise DataError(f"data.enrich: unknown source {kind!r} (use tmdb or hetrec)")
    return items


__all__ = ["enrich_from_hetrec", "enrich_from_tmdb", "enrich_items"]
