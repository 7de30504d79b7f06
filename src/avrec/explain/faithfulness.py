"""Independent checks that an explanation is true of the data, and the faithfulness measurement.

The checks read the raw item metadata and the training matrix directly (not the knowledge graph or the
explainer's caches), so a bug in either shows up as an ungrounded explanation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from avrec.data.documents import DocumentConfig, build_documents
from avrec.kg.graph import ENTITY_TYPES, field_values, normalize_value

EXPLANATION_KEYS = {"user_id", "item_id", "text", "evidence"}
EVIDENCE_KEYS = {
    "history_item": {"kind", "item_id", "weight"},
    "entity": {"kind", "entity", "field", "history_items"},
    "text": {"kind", "field", "span"},
}


def _linked(items, row: int, field: str, entity: str) -> bool:
    """Does item ``row``'s raw ``field`` value name ``entity`` (``"<type>:<value>"``)?"""
    if field not in items.columns:
        return False
    etype, _, value = entity.partition(":")
    if etype != ENTITY_TYPES.get(field, field):
        return False
    want = normalize_value(value)
    return any(normalize_value(v) == want for v in field_values(field, items[field].iloc[row]))


def check_explanation(explanation: dict[str, Any], model, document_config: DocumentConfig | None = None) -> list[str]:
    """Problems with one explanation (empty when every piece of evidence is grounded and the shape is exact)."""
    problems: list[str] = []
    if set(explanation) != EXPLANATION_KEYS:
        problems.append(f"top-level keys {sorted(explanation)} differ from {sorted(EXPLANATION_KEYS)}")
        return problems
    items = model.items
    i = model.item_index.get(str(explanation["item_id"]))
    u = model.user_index.get(str(explanation["user_id"]))
    if i is None or u is None:
        return ["unknown user or item"]
    history = set(model.seen[u].indices.tolist())
    document = None
    if not isinstance(explanation["text"], str) or not explanation["text"].strip():
        problems.append("empty text")
    for ev in explanation["evidence"]:
        kind = ev.get("kind")
        if kind not in EVIDENCE_KEYS or set(ev) != EVIDENCE_KEYS[kind]:
            problems.append(f"evidence {ev} has the wrong shape")
            continue
        if kind == "history_item":
            h = model.item_index.get(ev["item_id"])
            if h is None or h not in history:
                problems.append(f"history item {ev['item_id']} is not in the user's training history")
            if not isinstance(ev["weight"], float):
                problems.append(f"history item {ev['item_id']} weight is not a float")
        elif kind == "entity":
            if not _linked(items, i, ev["field"], ev["entity"]):
                problems.append(f"entity {ev['entity']} is not linked to the candidate")
            if not ev["history_items"]:
                problems.append(f"entity {ev['entity']} lists no history items")
            for hid in ev["history_items"]:
                h = model.item_index.get(hid)
                if h is None or h not in history:
                    problems.append(f"entity {ev['entity']}: {hid} is not in the user's training history")
                elif not _linked(items, h, ev["field"], ev["entity"]):
                    problems.append(f"entity {ev['entity']} is not linked to history item {hid}")
        else:
            if document is None:
                document = build_documents(items.iloc[[i]], document_config)[0]
            if not ev["span"] or ev["span"] not in document:
                problems.append(f"span {ev['span'][:40]!r} does not occur verbatim in the item document")
            if ev["field"] not in items.columns or ev["span"] not in str(items[ev["field"]].iloc[i]):
                problems.append(f"span is not from the item's {ev['field']} field")
    return problems


def measure_faithfulness(explainer, pairs, document_config: DocumentConfig | None = None) -> dict[str, Any]:
    """Explain each (user, item) pair and report the grounded share, coverage and evidence counts."""
    grounded = covered = 0
    counts: dict[str, list[int]] = {"history_item": [], "entity": [], "text": []}
    failures: list[dict[str, Any]] = []
    for user, item in pairs:
        exp = explainer.explain(user, item)
        problems = check_explanation(exp, explainer.model, document_config)
        kinds = [e.get("kind") for e in exp["evidence"]]
        for k in counts:
            counts[k].append(kinds.count(k))
        if not problems:
            grounded += 1
        elif len(failures) < 10:
            failures.append({"user_id": user, "item_id": item, "problems": problems})
        if "entity" in kinds or "text" in kinds:
            covered += 1
    n = max(len(pairs), 1)
    return {
        "pairs": len(pairs),
        "grounded_share": grounded / n,
        "coverage": covered / n,
        "with_history_item": float(np.mean([c > 0 for c in counts["history_item"]])) if pairs else 0.0,
        "with_entity": float(np.mean([c > 0 for c in counts["entity"]])) if pairs else 0.0,
        "with_text": float(np.mean([c > 0 for c in counts["text"]])) if pairs else 0.0,
        "mean_evidence": float(np.mean([sum(c) for c in zip(*counts.values())])) if pairs else 0.0,
        "failures": failures,
    }


def sample_pairs(model, n: int, k: int = 10, seed: int = 2026) -> list[tuple[str, str]]:
    """``n`` random (user, recommended item) pairs: random users, one random item of each one's top-K."""
    rng = np.random.default_rng(seed)
    users = rng.choice(len(model.user_ids), size=min(n, len(model.user_ids)), replace=False)
    if n > len(users):
        users = np.r_[users, rng.choice(len(model.user_ids), size=n - len(users), replace=True)]
    ids = [str(model.user_ids[u]) for u in users]
    recs, _ = model.recommend(ids, k=k)
    pairs = []
    for uid, row in zip(ids, recs):
        valid = [r for r in row if r is not None]
        if valid:
            pairs.append((uid, str(valid[rng.integers(len(valid))])))
    return pairs
