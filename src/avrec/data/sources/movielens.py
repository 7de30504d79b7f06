"""MovieLens parsing shared by the MovieLens dataset modules: movies as avrec items, the CSV releases."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pandas as pd

from avrec.errors import DataError

_YEAR = re.compile(r"\s*\((\d{4})(?:[-–]\d{0,4})?\)\s*$")


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
        counts = t.groupby(["movieId", "tag"]).size().reset_index(name="n")
        counts = counts.sort_values(["movieId", "n"], ascending=[True, False])
        joined = counts.groupby("movieId")["tag"].agg(lambda s: "|".join(s.head(20)))
        items["user_tags"] = items["item_id"].map(joined.rename(index=str)).fillna("")
    if links is not None:
        lk = links.astype(str).set_index("movieId")
        items["imdb_id"] = items["item_id"].map(lk["imdbId"]).fillna("")
        items["tmdb_id"] = items["item_id"].map(lk["tmdbId"]).fillna("").str.replace(r"\.0$", "", regex=True)
    return items


def csv_release_frames(read: Callable[[str, bool], pd.DataFrame | None]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Items and ratings of a CSV release, given ``read(name, required) -> DataFrame | None``."""
    # a required table is never None: read raises when it is missing
    movies = cast(pd.DataFrame, read("movies.csv", True))
    items = movielens_items(movies, read("tags.csv", False), read("links.csv", False))
    ratings = cast(pd.DataFrame, read("ratings.csv", True)).rename(columns={"userId": "user_id", "movieId": "item_id"})
    ratings["event"] = "rate"
    return items, ratings


def movielens_csv_frames(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A MovieLens CSV release (ml-latest-small, ml-25m: movies/ratings/tags/links.csv) as items and ratings."""
    folder = Path(folder)

    def read(name: str, required: bool = True) -> pd.DataFrame | None:
        p = folder / name
        if not p.exists():
            if required:
                raise DataError(f"{p}: file not found")
            return None
        return pd.read_csv(p, dtype=str, keep_default_na=False)

    return csv_release_frames(read)


__all__ = ["csv_release_frames", "movielens_csv_frames", "movielens_items"]
