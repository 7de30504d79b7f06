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
    "heard": 'the sound "{}" (heard in the audio)',
    "keyword": 'the keyword "{}"',
    "country": "the country {}",
    "decade": "the {}",
}
#: Entity type -> (verb, complement) saying that the recommended item has it: "is" + "from the 1980s".
_PREDICATES = {
    "director": ("is", "directed by {}"),
    "cast": ("features", "{}"),
    "artist": ("is", "by {}"),
    "genre": ("is", "in the {} genre"),
    "tag": ("is", 'tagged "{}"'),
    # what the audio tagger heard (musicnn): said as heard, never as a fact from the catalogue
    "heard": ("has", 'the sound "{}" (heard in the audio)'),
    "keyword": ("has", 'the keyword "{}"'),
    "country": ("is", "from {}"),
    "decade": ("is", "from the {}"),
}
#: History titles named per sentence.
MAX_TITLES_PER_SENTENCE = 2
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


def _and(parts: list[str]) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _predicate_parts(entities: list[EntityFact]) -> list[tuple[str, str]]:
    """(verb, complement) per entity: ("is", "from the 1990s")."""
    out = []
    for e in entities:
        verb, complement = _PREDICATES.get(e.type, ("has", e.type.replace("_", " ") + " {}"))
        out.append((verb, complement.format(e.value)))
    return out


def predicate(entities: list[EntityFact], also: bool = False, after: str | None = None) -> str:
    """``is in the Crime genre and from the 1990s``; with ``also``: ``is also ...`` / ``also features ...``.

    ``after``: the verb of the clause just before in the same sentence (a repeated "is" is left out).
    """
    out: list[str] = []
    previous = after
    for n, (verb, complement) in enumerate(_predicate_parts(entities)):
        if verb == previous:  # "is in the Crime genre and from the 1990s": one "is" for both
            out.append(complement)
            continue
        previous = verb
        if also and n == 0:
            verb = "is also" if verb == "is" else f"also {verb}"
        out.append(f"{verb} {complement}")
    return _and(out)


def reason_parts(facts: ExplanationFacts) -> list[str]:
    """The sentences of :func:`reason_sentences`, main reason first.

    Short sentences that name each history title once at most. The first says what the recommended item
    shares with up to two history items (``"X" is in the Crime genre, like "A" and "B", which you
    watched.``); one more sentence adds the other entities, each with one history item not named yet
    (``It is also from the 1990s, like "C", and directed by D, like "E".``); an entity true of exactly the
    items of the first sentence joins it instead. An entity that cannot be said without repeating a title,
    and history items beyond the named ones, stay in the evidence only.
    """
    cand = quote(facts.candidate_title)
    mentioned: set[str] = set()
    clauses: list[tuple[list[EntityFact], list[str]]] = []  # (entities, the history titles they are named with)
    for e in facts.entities:
        limit = MAX_TITLES_PER_SENTENCE if not clauses else 1
        fresh = [t for t in dict.fromkeys(e.history_titles) if t and t not in mentioned][:limit]
        if fresh:
            clauses.append(([e], fresh))
            mentioned.update(fresh)
            continue
        shared = set(e.history_titles)
        for entities, titles in clauses:
            if set(titles) <= shared:  # true of every title that clause names
                entities.append(e)
                break
    parts: list[str] = []
    if clauses:
        entities, titles = clauses[0]
        parts.append(f"{cand} {predicate(entities)}, like {join_titles(titles)}, which you {facts.verb}.")
    if len(clauses) > 1:
        pieces, verb = [], None
        for n, (entities, titles) in enumerate(clauses[1:]):
            pieces.append(f"{predicate(entities, also=n == 0, after=verb)}, like {join_titles(titles)}")
            verb = _predicate_parts(entities)[-1][0]
        parts.append(f"It {pieces[0]}" + "".join(f", and {p}" for p in pieces[1:]) + ".")
    others = [t for t in dict.fromkeys(facts.history_titles) if t and t not in mentioned][:MAX_TITLES_PER_SENTENCE]
    if others and parts:
        parts.append(f"The model also ranks it close to {join_titles(others)}.")
    elif others:
        parts.append(f"The model ranks {cand} close to {join_titles(others)}, which you {facts.verb}.")
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
