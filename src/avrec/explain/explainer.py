"""Grounded explanations of a recommendation: why item I for user U, with evidence that is true of the data.

Output (other programs depend on this exact shape)::

    {"user_id": "...", "item_id": "...", "text": "...", "evidence": [
        {"kind": "history_item", "item_id": "...", "weight": 0.42},
        {"kind": "entity", "entity": "director:Christopher Nolan", "field": "director", "history_items": ["..."]},
        {"kind": "text", "field": "overview", "span": "..."}]}

- ``history_item``: items of the user's training history (``model.seen``) closest to the candidate in the
  model's own item space (``model.similarity_rows``: cosine of its item vectors, or co-occurrence for models
  without them; knowledge-graph features for the ``kgpath`` model and for cold candidates).
- ``entity``: knowledge-graph entities linked to the candidate and to the listed history items, ranked by
  (1 + log of the number of history items sharing it) × idf × (0.1 + the best history weight among them).
  Entities from ``heard_tags`` (what the musicnn tagger heard) carry ``"source": "heard in the audio"`` and
  the template says 'has the sound "piano" (heard in the audio)', never that the catalogue lists it.
- ``popularity`` (only from :meth:`Explainer.explain_history` with an empty history): how many users chose it.
- ``text``: one sentence of the candidate's overview (or tagline, description, lyrics) that occurs verbatim
  in its item document and overlaps most with the user's taste. Taste is read from the history items'
  structured metadata (tags, keywords, genres, people), never from their free text, so one item's prose
  cannot steer another item's explanation.

``text`` is rendered from the evidence alone by :mod:`avrec.explain.templates`; an optional generator may
rewrite it, and the rewrite is kept only when :func:`avrec.explain.generate.verify_text` accepts it and
:mod:`avrec.explain.guard` finds no disallowed term and no blocked title in it. Under content rules
(``allowed``: a mask over the model's items) the history is cut to allowed items, so the evidence and the
template only name allowed items, and a blocked candidate is refused. Disallowed terms are masked in
every text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from avrec.data.documents import DocumentConfig, build_documents
from avrec.errors import ConfigError, DataError
from avrec.explain.guard import TermFilter, guard_rewrite
from avrec.explain.templates import EntityFact, ExplanationFacts, render_template, verb_for
from avrec.kg.graph import KnowledgeGraph, build_kg, kg_item_features

#: Free-text item fields a text span may come from, in order of preference.
TEXT_SPAN_FIELDS = ("overview", "tagline", "description", "lyrics")
#: The ``source`` of entity evidence from ``heard_tags`` (an audio tagger's output, not catalogue metadata).
HEARD_SOURCE = "heard in the audio"
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


_ABBREVIATIONS = frozenset(
    "mr mrs ms dr lt st jr sr capt gen col sgt prof rev gov sen rep vs etc no vol ft mt co inc ltd dept fig".split()
)
_LAST_WORD = re.compile(r"([^\W\d_]+)\.[\"')\]]*$")


def split_sentences(text: str) -> list[str]:
    """Sentences of a text, each an exact substring of it (stripped of surrounding space).

    A full stop after a title or initial ("Lt. Jim Gordon", "J. R. R. Tolkien") does not end a sentence.
    """
    text = str(text)
    out, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        last = _LAST_WORD.search(text[start : m.start()])
        if last and (last.group(1).casefold() in _ABBREVIATIONS or len(last.group(1)) == 1):
            continue
        piece = text[start : m.start()].strip()
        if piece:
            out.append(piece)
        start = m.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return out


@dataclass
class ExplainerConfig:
    """How much evidence to show. ``max_entities_per_field`` keeps three tags from crowding out a director;
    entities on more than ``generic_share`` of the catalogue (genre Drama) are shown only after specific ones."""

    max_history: int = 3
    max_entities: int = 3
    max_entities_per_field: int = 2
    max_history_per_entity: int = 5
    max_span_words: int = 60
    generic_share: float = 0.15


class Explainer:
    """Explain a fitted model's recommendations with grounded evidence.

    ``kg``: a :class:`KnowledgeGraph` over (a superset of) the model's items; by default the model's own
    graph (``kgpath``) or one built from ``model.items``. ``generator``: an optional
    :class:`avrec.explain.generate.SmolLMGenerator` (or anything with ``rewrite(facts, template)``).
    ``disallowed_terms``: words masked in every text and refused in rewrites (None: the default list of
    :mod:`avrec.explain.guard`; empty: none).
    """

    def __init__(self, model, kg: KnowledgeGraph | None = None, *, config: ExplainerConfig | None = None,
                 generator=None, document_config: DocumentConfig | None = None,
                 disallowed_terms: Iterable[str] | None = None) -> None:
        if model.items is None:
            raise ConfigError(f"model {model.name!r} is not fitted: call fit() or load() first")
        self.model = model
        self.config = config or ExplainerConfig()
        self.generator = generator
        self.document_config = document_config
        self.terms = TermFilter(disallowed_terms)
        #: rewrites refused by the guard (a disallowed term or a blocked title), with the last reasons
        self.guard_stats = {"refused": 0}
        self.last_guard_problems: list[str] = []
        self._kg_given = kg
        self._kg_from_model = kg is None and model.capabilities.knowledge_graph  # kgpath: follow its graph
        self._n_items = -1
        self._refresh()

    # ---- cached structures (rebuilt when the catalogue grows) -----------------------------------
    def _refresh(self) -> None:
        model = self.model
        if self._n_items == model.n_items:
            return
        self._n_items = model.n_items
        kg = model.kg if self._kg_from_model else self._kg_given
        if kg is None:
            kg = build_kg(model.items)
        self.kg = kg
        ids = model.item_ids
        if len(kg.item_ids) == len(ids) and all(a == b for a, b in zip(kg.item_ids, ids)):
            adj = kg.adjacency
        else:  # align a graph built elsewhere to the model's item order; items it lacks get no entities
            rows = np.fromiter((kg.item_index.get(str(i), -1) for i in ids), dtype=np.int64, count=len(ids))
            present = np.flatnonzero(rows >= 0)
            pick = sp.csr_matrix((np.ones(len(present), np.float32), (present, rows[present])),
                                 shape=(len(ids), kg.n_items))
            adj = sp.csr_matrix(pick @ kg.adjacency)
            unknown = np.flatnonzero(rows < 0)
            if len(unknown):  # link new items to the graph's entities by their metadata
                linked = kg.link(model.items.iloc[unknown])
                adj = sp.csr_matrix(adj + sp.csr_matrix((linked.data, (unknown[linked.tocoo().row], linked.indices)),
                                                       shape=adj.shape))
        self.adjacency = sp.csr_matrix(adj, dtype=np.float32)
        self.idf = kg.idf()
        self._entity_share = np.asarray(kg.adjacency.getnnz(axis=0), dtype=np.float64) / max(kg.n_items, 1)
        self._ent_entity = kg.entities["entity"].to_numpy(dtype=object)
        self._ent_field = kg.entities["field"].to_numpy(dtype=object)
        self._ent_type = kg.entities["type"].to_numpy(dtype=object)
        self._ent_value = kg.entities["value"].to_numpy(dtype=object)
        self._kg_features: sp.csr_matrix | None = None
        self._taste_vectorizer = None
        self._taste_matrix: sp.csr_matrix | None = None
        titles = model.items["title"].astype(str) if "title" in model.items.columns else pd.Series([""] * len(ids))
        self._titles = [t if t.strip() else str(i) for t, i in zip(titles, ids)]

    # ---- public API --------------------------------------------------------------------------
    def explain(self, user_id: str, item_id: str, allowed: np.ndarray | None = None) -> dict[str, Any]:
        """The explanation of ``item_id`` for ``user_id`` in the documented JSON shape (``allowed``: see
        :meth:`explain_history`)."""
        if allowed is not None:
            u = self.model.user_index.get(str(user_id))
            if u is None:
                raise DataError(f"user {user_id!r} is not in the model's training data; explanations need a history")
            history = self.model.item_ids[self.model.seen[u].indices]
            return self.explain_history(history, item_id, user_id=str(user_id), allowed=allowed)
        facts, evidence = self._explain(str(user_id), str(item_id))
        return self._answer(str(user_id), str(item_id), facts, evidence)

    def explain_history(self, history_item_ids, item_id: str, user_id: str | None = None,
                        allowed: np.ndarray | None = None) -> dict[str, Any]:
        """The explanation of ``item_id`` for a user given as the item ids of their history.

        For users the model was not trained on (folded in from feedback, or anonymous) and for a known
        user's training history plus newer feedback; the evidence is found as in :meth:`explain`. History
        ids the model's catalogue lacks are ignored. With no other history item there is nothing personal
        to say: the evidence is the item's popularity, ``{"kind": "popularity", "users": n}``.

        ``allowed``: the content rules as a boolean mask over the model's items. Blocked history items are
        left out (nothing about them reaches the text), a blocked ``item_id`` is a DataError, and a
        generated rewrite naming a blocked title is refused.
        """
        self._refresh()
        item_id = str(item_id)
        i = self._item(item_id)
        if allowed is not None and not (i < len(allowed) and allowed[i]):
            raise DataError(f"item {item_id!r} is blocked by the content rules")
        index = self.model.item_index
        history = np.unique(np.fromiter((index.get(str(h), -1) for h in history_item_ids), dtype=np.int64))
        history = history[(history >= 0) & (history != i)]
        if allowed is not None:
            history = history[history < len(allowed)]
            history = history[np.asarray(allowed, dtype=bool)[history]]
        if len(history) == 0:
            users = int(self.model.popularity[i])
            text = (f'"{self._titles[i]}" is recommended for its popularity: {users} '
                    f'{"person" if users == 1 else "people"} chose it.' if users
                    else f'"{self._titles[i]}" is new in the catalogue.')
            return {"user_id": user_id, "item_id": item_id, "text": self.terms.clean(text),
                    "evidence": [{"kind": "popularity", "users": users}]}
        facts, evidence = self._evidence(i, history)
        return self._answer(user_id, item_id, facts, evidence, allowed)

    def explain_many(self, pairs) -> list[dict[str, Any]]:
        """Explanations for many ``(user_id, item_id)`` pairs, in order."""
        return [self.explain(u, i) for u, i in pairs]

    def facts(self, user_id: str, item_id: str) -> ExplanationFacts:
        """The resolved evidence a sentence is made of (what a generator is allowed to say)."""
        return self._explain(str(user_id), str(item_id))[0]

    def known_entity_values(self) -> set[str]:
        """Lower-cased values of every entity in the graph (the verifier's list of nameable things)."""
        if not hasattr(self, "_known_values"):
            self._known_values = {str(v).casefold() for v in self._ent_value}
        return self._known_values

    # ---- evidence ----------------------------------------------------------------------------
    def _answer(self, user_id: str | None, item_id: str, facts: ExplanationFacts,
                evidence: list[dict[str, Any]], allowed: np.ndarray | None = None) -> dict[str, Any]:
        template = render_template(facts)
        text = template
        if self.generator is not None:
            text = self.generator.rewrite(facts, template, known_entities=self.known_entity_values())
        blocked = [] if allowed is None or text == template else \
            [self._titles[j] for j in np.flatnonzero(~np.asarray(allowed, dtype=bool)) if j < len(self._titles)]
        text, problems = guard_rewrite(text, template, self.terms, blocked, facts.allowed_names())
        if problems:
            self.guard_stats["refused"] += 1
            self.last_guard_problems = problems
        return {"user_id": user_id, "item_id": item_id, "text": text, "evidence": evidence}

    def _item(self, item_id: str) -> int:
        i = self.model.item_index.get(item_id)
        if i is None:
            raise DataError(f"item {item_id!r} is not in the model's catalogue")
        return i

    def _explain(self, user_id: str, item_id: str) -> tuple[ExplanationFacts, list[dict[str, Any]]]:
        self._refresh()
        u = self.model.user_index.get(user_id)
        if u is None:
            raise DataError(f"user {user_id!r} is not in the model's training data; explanations need a history")
        i = self._item(item_id)
        history = self.model.seen[u].indices.astype(np.int64)
        return self._evidence(i, history[history != i])

    def _evidence(self, i: int, history: np.ndarray) -> tuple[ExplanationFacts, list[dict[str, Any]]]:
        """Facts and evidence for candidate row ``i`` and history rows ``history`` (the candidate not among them)."""
        model = self.model
        weights = self._history_weights(i, history)
        cfg = self.config

        evidence: list[dict[str, Any]] = []
        order = np.lexsort((history, -weights))
        top = [(int(history[o]), float(weights[o])) for o in order if weights[o] > 0][: cfg.max_history]
        top_hist = [h for h, _ in top]
        for h, w in top:
            evidence.append({"kind": "history_item", "item_id": str(model.item_ids[h]), "weight": round(w, 4)})

        entity_facts: list[EntityFact] = []
        for e, members in self._entity_evidence(i, history, weights):
            evidence.append({
                "kind": "entity",
                "entity": str(self._ent_entity[e]),
                "field": str(self._ent_field[e]),
                "history_items": [str(model.item_ids[h]) for h in members],
                **({"source": HEARD_SOURCE} if str(self._ent_type[e]) == "heard" else {}),
            })
            titles = [self._titles[h] for h in members]
            entity_facts.append(EntityFact(str(self._ent_type[e]), str(self._ent_value[e]), titles))

        span_field, span = self._text_evidence(i, history)
        if span:
            evidence.append({"kind": "text", "field": span_field, "span": span})

        has_media = "media_type" in model.items.columns and len(history)
        media = model.items["media_type"].iloc[history].tolist() if has_media else []
        facts = ExplanationFacts(
            candidate_title=self._titles[i],
            history_titles=[self._titles[h] for h in top_hist],
            entities=entity_facts,
            span_field=span_field,
            span=span,
            verb=verb_for(media),
        )
        return facts, evidence

    def _history_weights(self, i: int, history: np.ndarray) -> np.ndarray:
        """How close each history item is to the candidate in the model's own terms (``similarity_rows``)."""
        if len(history) == 0:
            return np.zeros(0, np.float32)
        if self.model.capabilities.knowledge_graph:  # kgpath: its item space is the graph
            return self._kg_cosine(i, history)
        w = np.asarray(self.model.similarity_rows(np.array([i]))[0, history], dtype=np.float32)
        if not (w > 0).any():  # a cold candidate has no interactions: fall back to shared metadata
            w = self._kg_cosine(i, history)
        return w

    def _kg_cosine(self, i: int, history: np.ndarray) -> np.ndarray:
        if self._kg_features is None:
            tmp = KnowledgeGraph(self.model.item_ids, self.kg.entities, self.adjacency)
            self._kg_features = kg_item_features(tmp, min_items=1)
        f = self._kg_features
        return np.asarray((f[history] @ f[i].T).toarray().ravel(), dtype=np.float32)

    def _entity_evidence(self, i: int, history: np.ndarray, weights: np.ndarray) -> list[tuple[int, list[int]]]:
        """Entities of the candidate shared with history items, best first, with those history items."""
        cand = self.adjacency.indices[self.adjacency.indptr[i] : self.adjacency.indptr[i + 1]]
        if len(cand) == 0 or len(history) == 0:
            return []
        sub = sp.csc_matrix(self.adjacency[history][:, cand])
        counts = np.diff(sub.indptr)
        # (#history items sharing it) × idf, with the count damped (1 + log) so that an entity on half the
        # catalogue (country USA) shared by 200 history items does not outrank a director shared by two,
        # times (0.1 + the best model weight among those history items) so that an entity shared with the
        # items the model finds closest comes first; entities on more than ``generic_share`` of the items
        # come after every specific one.
        best_w = np.zeros(len(cand), dtype=np.float64)
        pos_w = np.maximum(weights, 0.0)
        for o in np.flatnonzero(counts):
            best_w[o] = pos_w[sub.indices[sub.indptr[o] : sub.indptr[o + 1]]].max()
        score = np.where(counts > 0, 1.0 + np.log(np.maximum(counts, 1)), 0.0) * self.idf[cand] * (0.1 + best_w)
        generic = self._entity_share[cand] > self.config.generic_share
        order = np.lexsort((cand, -score, generic))
        cfg = self.config
        out: list[tuple[int, list[int]]] = []
        per_field: dict[str, int] = {}
        for o in order[counts[order] > 0]:
            if len(out) >= cfg.max_entities:
                break
            e = int(cand[o])
            f = str(self._ent_field[e])
            if per_field.get(f, 0) >= cfg.max_entities_per_field:
                continue
            rows = sub.indices[sub.indptr[o] : sub.indptr[o + 1]]
            rows = rows[np.lexsort((history[rows], -weights[rows]))][: cfg.max_history_per_entity]
            out.append((e, [int(history[r]) for r in rows]))
            per_field[f] = per_field.get(f, 0) + 1
        return out

    # ---- text span ---------------------------------------------------------------------------
    def _taste_documents(self) -> list[str]:
        """Per item, the values of its entities (structured metadata only, never free text)."""
        adj = self.adjacency
        values = self._ent_value
        return [" ".join(str(values[e]) for e in adj.indices[adj.indptr[r] : adj.indptr[r + 1]])
                for r in range(adj.shape[0])]

    def _taste(self):
        if self._taste_vectorizer is None:
            from sklearn.feature_extraction.text import TfidfVectorizer

            docs = self._taste_documents()
            vec = TfidfVectorizer(stop_words="english", sublinear_tf=True, min_df=1,
                                  token_pattern=r"(?u)\b[^\W\d_]{3,}\b")
            try:
                self._taste_matrix = sp.csr_matrix(vec.fit_transform(docs), dtype=np.float32)
            except ValueError:  # no usable words at all
                self._taste_matrix = sp.csr_matrix((len(docs), 0), dtype=np.float32)
            self._taste_vectorizer = vec
        return self._taste_vectorizer, self._taste_matrix

    def _text_evidence(self, i: int, history: np.ndarray) -> tuple[str, str]:
        items = self.model.items
        fields = [f for f in TEXT_SPAN_FIELDS if f in items.columns and str(items[f].iloc[i]).strip()]
        if not fields or len(history) == 0:
            return "", ""
        document = build_documents(items.iloc[[i]], self.document_config)[0]
        vec, matrix = self._taste()
        if matrix.shape[1] == 0:
            return "", ""
        taste = np.asarray(matrix[history].sum(axis=0)).ravel()
        best = ("", "", 0.0)
        for f in fields:
            for sentence in split_sentences(str(items[f].iloc[i])):
                if sentence not in document or len(sentence.split()) > self.config.max_span_words:
                    continue
                s = vec.transform([sentence])
                score = float(s.data @ taste[s.indices]) if s.nnz else 0.0
                if score > best[2]:
                    best = (f, sentence, score)
        return best[0], best[1]
