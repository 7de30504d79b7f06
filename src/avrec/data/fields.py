"""What each catalogue column is: an identifier, free text, categorical values, a year or date, or a number.

Models that use "every signal a catalogue has" (the field-weighted TF-IDF profile, the hybrid's item
features) read the columns through this one inference, so a catalogue with a ``runtime`` column or a
``release_date`` gets the same treatment everywhere. Inference looks at the values, not at a list of
known names, so a user's own columns count too; known names only settle ambiguous cases.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: Column kinds. ``id`` and ``behaviour`` are never features: an identifier has one value per item, and a
#: behaviour column (``user_tags``: what the dataset's own users did) would leak held-out interactions.
KINDS = ("text", "categorical", "year", "numeric", "id", "behaviour")
FEATURE_KINDS = ("text", "categorical", "year", "numeric")
#: Columns that record the dataset's users' own actions as metadata (see avrec.data.sources.movielens).
BEHAVIOUR_COLUMNS = {"user_tags"}
#: Columns that name an item elsewhere (never features: one value per item, no shared signal).
ID_COLUMNS = {"item_id", "imdb_id", "tmdb_id", "mbid", "isrc", "spotify_id", "url", "audio_path", "media_path",
              "video_path", "image_path", "poster_path"}
#: Columns that are free text whatever their values look like.
TEXT_COLUMNS = {"title", "original_title", "overview", "tagline", "description", "lyrics", "summary", "plot"}
#: Columns that hold a year or a date.
DATE_NAMES = re.compile(r"(^|_)(year|date|released?|published|premiered|aired)($|_)", re.I)
_YEAR_IN_TEXT = re.compile(r"\((1[89]\d\d|20\d\d)\)")
_HAS_YEAR_IN_TEXT = re.compile(r"\((?:1[89]\d\d|20\d\d)\)")
_YEAR_START = re.compile(r"^\s*(1[89]\d\d|20\d\d)")


@dataclass(frozen=True)
class FieldKind:
    column: str
    kind: str


def _nonempty(values: pd.Series) -> pd.Series:
    s = values.fillna("").astype(str).str.strip()
    return s[s != ""]


def column_kind(name: str, values: pd.Series) -> str:
    """The kind of one column (see :data:`KINDS`), from its name and a look at its values."""
    lowered = name.lower()
    if lowered in BEHAVIOUR_COLUMNS:
        return "behaviour"
    if lowered in ID_COLUMNS or lowered.endswith("_id") or lowered.endswith("_path") or lowered.endswith("_url"):
        return "id"
    if lowered in TEXT_COLUMNS:
        return "text"
    present = _nonempty(values)
    if present.empty:
        return "id"  # nothing in it: carries no signal
    if DATE_NAMES.search(lowered) and present.str.match(_YEAR_START).mean() > 0.9:
        return "year"
    numeric = pd.to_numeric(present, errors="coerce")
    if numeric.notna().mean() > 0.95 and numeric.nunique() > 10:
        return "numeric"
    if present.str.contains("|", regex=False).any():
        return "categorical"
    distinct = present.nunique() / len(present)
    words = present.map(lambda s: len(s.split())).mean()
    if distinct > 0.9 and words <= 1.5 and not present.str.contains(r"[a-z]{3}", case=False).mean() > 0.5:
        return "id"  # one code per item (a catalogue number, a hash)
    if distinct < 0.5 or words <= 3:
        return "categorical"
    return "text"


def infer_fields(items: pd.DataFrame, columns: list[str] | None = None) -> list[FieldKind]:
    """The kind of every column of ``items`` (or of ``columns``, in that order); the year inside a
    title (``"Heat (1995)"``) becomes a ``title_year`` field when no year column exists."""
    chosen = [c for c in (columns or list(items.columns)) if c in items.columns]
    out = [FieldKind(c, column_kind(c, items[c])) for c in chosen]
    if not any(f.kind == "year" for f in out) and "title" in items.columns:
        has_year = items["title"].fillna("").astype(str).str.contains(_HAS_YEAR_IN_TEXT)
        if has_year.mean() > 0.5:
            out.append(FieldKind("title_year", "year"))
    return out


def years_of(items: pd.DataFrame, column: str) -> np.ndarray:
    """Years as floats (NaN where unknown) from a year or date column, or from titles (``title_year``)."""
    if column == "title_year":
        found = items["title"].fillna("").astype(str).str.extract(_YEAR_IN_TEXT, expand=False)
    else:
        found = items[column].fillna("").astype(str).str.extract(_YEAR_START, expand=False)
    return pd.to_numeric(found, errors="coerce").to_numpy(np.float64)


def numbers_of(items: pd.DataFrame, column: str) -> np.ndarray:
    """A numeric column as floats (NaN where empty or not a number)."""
    return pd.to_numeric(items[column].fillna("").astype(str).str.strip(), errors="coerce").to_numpy(np.float64)


__all__ = ["BEHAVIOUR_COLUMNS", "FEATURE_KINDS", "FieldKind", "KINDS", "column_kind", "infer_fields", "numbers_of",
           "years_of"]
