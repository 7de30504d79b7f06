"""Item documents: the text an encoder reads for each item, built from its metadata.

A template renders each present field as ``"{label}: {value}"`` in a configurable order, multi-valued
fields joined with ", ", each field and the whole document truncated to a budget of words.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from avrec.data.dataset import TEXT_FIELDS

DEFAULT_LABELS = {
    "title": "",
    "media_type": "Type",
    "artist": "Artist",
    "genres": "Genres",
    "year": "Year",
    "director": "Director",
    "cast": "Cast",
    "tags": "Tags",
    "heard_tags": "Heard in the audio",
    "keywords": "Keywords",
    "tagline": "Tagline",
    "overview": "Overview",
    "description": "Description",
    "lyrics": "Lyrics",
}


@dataclass
class DocumentConfig:
    """How item metadata becomes text.

    ``fields``: the fields to use, in order (absent or empty fields are skipped).
    ``template``: a format string with ``{label}`` and ``{value}``; the title uses ``{value}`` alone.
    ``max_words_per_field`` / ``max_words``: truncation budgets in whitespace words.
    ``max_values``: at most this many values of a multi-valued field.
    """

    fields: list[str] = field(default_factory=lambda: list(TEXT_FIELDS))
    template: str = "{label}: {value}."
    separator: str = " "
    max_words_per_field: int = 80
    max_words: int = 220
    max_values: int = 12
    include_extra_columns: bool = False


def _truncate(text: str, n_words: int) -> str:
    words = text.split()
    return text if len(words) <= n_words else " ".join(words[:n_words]) + " …"


def render_value(value: str, max_values: int) -> str:
    parts = [p.strip() for p in str(value).split("|") if p.strip()]
    return ", ".join(parts[:max_values])


def build_documents(items: pd.DataFrame, config: DocumentConfig | None = None) -> list[str]:
    """One document per row of ``items``, in row order."""
    config = config or DocumentConfig()
    fields = [f for f in config.fields if f in items.columns]
    if config.include_extra_columns:
        skip = {"item_id", "tmdb_id", "imdb_id", *fields}
        fields += [c for c in items.columns if c not in skip]
    columns = {f: items[f].fillna("").astype(str).tolist() for f in fields}
    docs = []
    for i in range(len(items)):
        parts = []
        for f in fields:
            value = render_value(columns[f][i], config.max_values)
            if not value:
                continue
            value = _truncate(value, config.max_words_per_field)
            if f == "title":
                parts.append(value.rstrip(".") + ".")
            else:
                label = DEFAULT_LABELS.get(f, f.replace("_", " ").capitalize())
                parts.append(config.template.format(label=label, value=value.rstrip(".")))
        doc = config.separator.join(parts) or str(items["item_id"].iloc[i])
        docs.append(_truncate(doc, config.max_words))
    return docs
