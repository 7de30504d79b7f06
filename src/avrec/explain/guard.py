"""The last check of every generated text (explanations and summaries): disallowed terms and blocked titles.

Two guards run on text the library writes for a person to read:

- :class:`TermFilter` masks each disallowed term (whole words, case-insensitive, after Unicode NFKC
  folding and with zero-width characters removed, so ``F\u200buck`` and ``ＳＨＩＴ`` are caught) with
  :data:`MASK`. A small default list (:data:`DEFAULT_DISALLOWED_TERMS`, English profanity and slurs)
  applies unless a caller passes its own (an empty list turns the filter off).
- :func:`names_forbidden` finds titles of items the content rules block in a generated rewrite, so that
  the rewrite is refused and the template (built only from allowed items) is used instead.

A generated rewrite that contains a disallowed term is refused outright (:func:`guard_rewrite`); the
template it falls back to is masked, since a template quotes item text verbatim and item text may hold
such a word. This is a word list, not a classifier: spelled-out evasions (``f u c k``, ``f*ck``) pass.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

#: The default disallowed terms (whole words; a few inflections are matched too, see :class:`TermFilter`).
DEFAULT_DISALLOWED_TERMS: tuple[str, ...] = (
    "fuck", "motherfucker", "shit", "bullshit", "cunt", "bitch", "whore", "slut", "nigger", "faggot", "retard",
)
#: What a masked term becomes.
MASK = "[…]"
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))
_SUFFIXES = "(?:s|es|ed|er|ers|ing|ings|y)?"


def fold(text: str) -> str:
    """NFKC-normalised, zero-width characters removed (the form terms are matched on)."""
    return unicodedata.normalize("NFKC", str(text)).translate(_ZERO_WIDTH)


class TermFilter:
    """Finds and masks whole-word occurrences of ``terms`` (None: :data:`DEFAULT_DISALLOWED_TERMS`)."""

    def __init__(self, terms: Iterable[str] | None = None) -> None:
        given = DEFAULT_DISALLOWED_TERMS if terms is None else terms
        self.terms = tuple(dict.fromkeys(fold(t).strip().casefold() for t in given if str(t).strip()))
        alternatives = "|".join(re.escape(t) for t in sorted(self.terms, key=len, reverse=True))
        self._pattern = re.compile(rf"(?<!\w)(?:{alternatives}){_SUFFIXES}(?!\w)", re.I) if self.terms else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def found(self, text: str) -> list[str]:
        """The disallowed words in ``text`` as they appear (after folding), in order."""
        if self._pattern is None:
            return []
        return [m.group(0) for m in self._pattern.finditer(fold(text))]

    def clean(self, text: str) -> str:
        """``text`` with every disallowed word replaced by :data:`MASK` (unchanged when there is none).

        Text with a match is returned in its folded form (NFKC, zero-width characters removed).
        """
        if self._pattern is None:
            return text
        folded = fold(text)
        return self._pattern.sub(MASK, folded) if self._pattern.search(folded) else text


def names_forbidden(text: str, forbidden_titles: Iterable[str], allowed_names: Sequence[str] = ()) -> list[str]:
    """The titles of ``forbidden_titles`` (blocked items) that ``text`` names as whole words.

    Occurrences of ``allowed_names`` (the evidence) are taken out first, so a blocked "Heat" inside an
    allowed "In the Heat of the Night" does not count, while "Heat" on its own does. Words match whole
    (a blocked "Alien" is not found in "Aliens"); titles shorter than three characters are ignored.
    """
    low = fold(text).casefold()
    for name in sorted((fold(a).casefold() for a in allowed_names if str(a).strip()), key=len, reverse=True):
        low = low.replace(name, " ")
    out = []
    for title in forbidden_titles:
        t = fold(title).strip().casefold()
        if len(t) >= 3 and t in low and re.search(rf"(?<!\w){re.escape(t)}(?!\w)", low):
            out.append(str(title))
    return out


def guard_rewrite(generated: str, template: str, terms: TermFilter, forbidden_titles: Iterable[str] = (),
                  allowed_names: Sequence[str] = ()) -> tuple[str, list[str]]:
    """``(text, problems)``: ``generated`` when it has no disallowed term and names no blocked title,
    else ``template``; either way masked by ``terms``. ``generated == template`` skips the title check
    (a template only names allowed items)."""
    problems = [f"disallowed term {w!r}" for w in terms.found(generated)] if generated != template else []
    if generated != template:
        problems += [f"names the blocked title {t!r}"
                     for t in names_forbidden(generated, forbidden_titles, allowed_names)]
    return terms.clean(template if problems else generated), problems
