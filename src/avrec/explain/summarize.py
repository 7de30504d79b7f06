"""Short item summaries for display, extractive by default.

A summary is a metadata line (title, year, genres, people) followed by the most central sentences of the
item's overview (or description, lyrics, tagline), copied verbatim and kept in their original order. Every
copied sentence is listed in ``sources`` with its field, so a caller can show or check where it came from.
An optional generator (:class:`avrec.explain.generate.SmolLMGenerator`) may rewrite the summary; the rewrite
is kept only when :func:`avrec.explain.generate.verify_text` finds nothing in it beyond the item's own data
and :mod:`avrec.explain.guard` finds no disallowed term and no title of a blocked item in it. Disallowed
terms are masked in the summary and its source spans. Under content rules, a caller summarises only items
the rules allow (the server answers 404 for the others) and passes the blocked titles as ``forbidden_titles``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from avrec.errors import DataError
from avrec.explain.explainer import split_sentences
from avrec.explain.guard import TermFilter, guard_rewrite

#: Free-text fields summaries copy from, in order of preference.
SUMMARY_TEXT_FIELDS = ("overview", "description", "lyrics", "tagline")
_TOKEN = re.compile(r"[^\W\d_]{3,}")
_STOP = frozenset(
    "the and for that with this from his her their they them into over when while who whom whose what which "
    "are was were has have had its not but all any can will would one two out about after before than then "
    "him she he you your our there here been being also only just most more very such these those".split()
)


@dataclass
class SummaryConfig:
    """``max_sentences`` copied sentences within ``max_words`` words; ``max_values`` per metadata field."""

    max_sentences: int = 2
    max_words: int = 60
    max_values: int = 3


def _values(raw: str, n: int) -> list[str]:
    return [v.strip() for v in str(raw).split("|") if v.strip()][:n]


def metadata_line(row: pd.Series, config: SummaryConfig | None = None) -> str:
    """``Title (year) · genres · directed by X · by artist`` from the fields that are present."""
    config = config or SummaryConfig()
    get = lambda f: str(row.get(f, "") or "").strip()  # noqa: E731
    title = get("title") or get("item_id")
    head = f"{title} ({get('year')})" if get("year") else title
    parts = [head]
    if get("genres"):
        parts.append(", ".join(_values(get("genres"), config.max_values)))
    if get("director"):
        parts.append("directed by " + ", ".join(_values(get("director"), 2)))
    if get("artist") and get("artist") != title:
        parts.append("by " + ", ".join(_values(get("artist"), 2)))
    if get("cast"):
        parts.append("with " + ", ".join(_values(get("cast"), config.max_values)))
    return " · ".join(parts)


def central_sentences(text: str, k: int, max_words: int) -> list[str]:
    """Up to ``k`` sentences of ``text`` sharing the most content words with the rest of it, in text order.

    Each sentence scores the mean corpus frequency of its content words, plus a small bonus for coming
    early (openings usually set the scene); sentences are verbatim substrings of ``text``.
    """
    sentences = split_sentences(text)
    if len(sentences) <= 1:
        return sentences[:1] if sentences and len(sentences[0].split()) <= max_words else []
    tokens = [[t.casefold() for t in _TOKEN.findall(s) if t.casefold() not in _STOP] for s in sentences]
    freq = Counter(t for ts in tokens for t in set(ts))
    scores = []
    for pos, ts in enumerate(tokens):
        central = sum(freq[t] - 1 for t in set(ts)) / (len(set(ts)) ** 0.5 or 1.0)
        scores.append(central + 1.0 / (1 + pos))
    picked: list[int] = []
    words = 0
    for idx in sorted(range(len(sentences)), key=lambda j: (-scores[j], j)):
        n = len(sentences[idx].split())
        if len(picked) >= k or words + n > max_words:
            continue
        picked.append(idx)
        words += n
    return [sentences[j] for j in sorted(picked)]


def summarize_row(row: pd.Series, config: SummaryConfig | None = None, generator=None,
                  terms: TermFilter | None = None, forbidden_titles: Iterable[str] = ()) -> dict[str, Any]:
    """The summary of one item row: ``{"item_id", "title", "summary", "sources", "generated"}``.

    ``terms``: disallowed terms (None: the default list); ``forbidden_titles``: titles a generated rewrite
    must not name (the blocked items').
    """
    config = config or SummaryConfig()
    terms = TermFilter() if terms is None else terms
    sources: list[dict[str, str]] = []
    for f in SUMMARY_TEXT_FIELDS:
        text = str(row.get(f, "") or "").strip()
        if not text:
            continue
        for s in central_sentences(text, config.max_sentences, config.max_words):
            sources.append({"field": f, "span": s})
        if sources:
            break
    line = metadata_line(row, config)
    body = " ".join(s["span"] for s in sources)
    if not body and str(row.get("tags", "")).strip():
        body = "Tags: " + ", ".join(_values(row["tags"], 5)) + "."
        sources.append({"field": "tags", "span": str(row["tags"])})
    summary = f"{line}. {body}".strip() if body else line
    title = str(row.get("title", "") or row["item_id"])
    if terms:
        sources = [{"field": s["field"], "span": terms.clean(s["span"])} for s in sources]
    out = {"item_id": str(row["item_id"]), "title": title, "summary": terms.clean(summary), "sources": sources,
           "generated": False}
    if generator is not None and body:
        rewritten = generator.summarize(row, summary)
        if rewritten != summary:
            own = [str(v) for v in row.to_numpy() if str(v).strip()]
            text, problems = guard_rewrite(rewritten, summary, terms, forbidden_titles, own)
            out["summary"], out["generated"] = text, not problems
    return out


def summarize_item(
    items: pd.DataFrame, item_id: str, config: SummaryConfig | None = None, generator: Any = None,
    terms: TermFilter | None = None,
) -> dict[str, Any]:
    """Summary of ``item_id`` from an item frame (a dataset's or a model's ``items``)."""
    match = items.index[items["item_id"].astype(str) == str(item_id)]
    if len(match) == 0:
        raise DataError(f"item {item_id!r} is not in the catalogue")
    return summarize_row(items.loc[match[0]], config, generator, terms)


def summarize_items(items: pd.DataFrame, item_ids=None, config: SummaryConfig | None = None) -> list[dict[str, Any]]:
    """Extractive summaries of many items (all of them when ``item_ids`` is None)."""
    rows = items if item_ids is None else items[items["item_id"].astype(str).isin([str(i) for i in item_ids])]
    terms = TermFilter()
    return [summarize_row(r, config, terms=terms) for _, r in rows.iterrows()]
