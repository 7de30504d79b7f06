"""Sentences built only from explanation evidence: every name in them is a title or an entity value from it.

The template is the explanation text that is always available (and the fallback when a generated rewrite
fails verification).
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: media_type values and the verb that fits them.
_VERBS = {
    "movie": "watched", "film": "watched", "video": "watched", "tv": "watched", "series": "watched",
    "episode": "watched", "show": "watched", "music": "listened to", "track": "listened to",
    "song": "listened to", "album": "listened to", "audio": "listened to", "podcast": "listened to",
    "artist": "listened to",
}
#: Entity type -> how it reads in a sentence ("{}" is the value).
_PHRASES = {
    "director": "director {}",
    "cast": "cast member {}",
    "artist": "artist {}",
    "genre": "the genre {}",
    "tag": 'the tag "{}"',
    "keyword": 'the keyword "{}"',
    "country": "the country {}",
    "decade": "the {}",
}
#: Item fields a text span can come from, as the sentence names them.
FIELD_LABELS = {"overview": "overview", "tagline": "tagline", "description": "description", "lyrics": "lyrics"}


@dataclass
class EntityFact:
    """One entity shared by the candidate and some history items (titles already resolved)."""

    type: str
    value: str
    history_titles: list[str]


@dataclass
class ExplanationFacts:
    """Everything a sentence may say, resolved to display strings."""

    candidate_title: str
    history_titles: list[str] = field(default_factory=list)
    entities: list[EntityFact] = field(default_factory=list)
    span_field: str = ""
    span: str = ""
    verb: str = "liked"

    def allowed_names(self) -> list[str]:
        """Titles and entity values the text may mention (the verifier's whitelist)."""
        names = [self.candidate_title, *self.history_titles]
        for e in self.entities:
            names.append(e.value)
            names.extend(e.history_titles)
        return list(dict.fromkeys(n for n in names if n))


def verb_for(media_types: list[str]) -> str:
    """``watched`` / ``listened to`` from the history's media types; ``liked`` when mixed or unknown."""
    verbs = {_VERBS.get(str(m).strip().lower(), "liked") for m in media_types if str(m).strip()}
    return verbs.pop() if len(verbs) == 1 else "liked"


def quote(title: str) -> str:
    return f'"{title}"'


def join_titles(titles: list[str]) -> str:
    """``"A"``, ``"A" and "B"``, ``"A", "B" and "C"``."""
    q = [quote(t) for t in titles]
    if len(q) <= 1:
        return "".join(q)
    return ", ".join(q[:-1]) + " and " + q[-1]


def entity_phrase(etype: str, value: str) -> str:
    return _PHRASES.get(etype, etype.replace("_", " ") + " {}").format(value)


def span_sentence(span_field: str, span: str) -> str:
    """The sentence that quotes a text span verbatim (item text is quoted, never paraphrased)."""
    if not span:
        return ""
    return f"Its {FIELD_LABELS.get(span_field, span_field.replace('_', ' '))} says: {quote(span)}"


def reason_sentences(facts: ExplanationFacts) -> str:
    """The history and entity part of the explanation (no item text)."""
    return " ".join(reason_parts(facts))


def reason_parts(facts: ExplanationFacts) -> list[str]:
    """The sentences of :func:`reason_sentences`, main reason first."""
    cand = quote(facts.candidate_title)
    parts: list[str] = []
    mentioned: set[str] = set()
    if facts.entities:
        first, rest = facts.entities[0], facts.entities[1:]
        titles = first.history_titles[:2]
        mentioned.update(titles)
        verb_share = "shares" if len(titles) == 1 else "share"
        parts.append(
            f"Because you {facts.verb} {join_titles(titles)}, which {verb_share} "
            f"{entity_phrase(first.type, first.value)} with {cand}."
        )
        if rest:
            clauses = []
            for e in rest:
                titles = e.history_titles[:2]
                mentioned.update(titles)
                clauses.append(f"{entity_phrase(e.type, e.value)} with {join_titles(titles)}")
            joined = clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]
            parts.append(f"It also shares {joined}.")
        others = [t for t in facts.history_titles if t not in mentioned]
        if others:
            parts.append(f"The model also ranks it close to {join_titles(others)} from your history.")
    elif facts.history_titles:
        parts.append(
            f"Because you {facts.verb} {join_titles(facts.history_titles)}, which the model ranks closest to {cand}."
        )
    return parts


def render_template(facts: ExplanationFacts) -> str:
    """The full template explanation: reasons, then the quoted span."""
    reasons = reason_sentences(facts)
    quoted = span_sentence(facts.span_field, facts.span)
    if not reasons and not quoted:
        return (
            f"{quote(facts.candidate_title)} is recommended on the model's overall score; "
            "it shares no listed metadata with your history."
        )
    return " ".join(p for p in (reasons, quoted) if p)
