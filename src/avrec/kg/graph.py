"""A knowledge graph of items and the entities their metadata names.

Entities are people (director, cast, artist), genres, tags, keywords, countries, decades (from ``year``)
and the values of any other ``|``-separated column. Each entity has an id ``"<type>:<value>"`` such as
``"director:Christopher Nolan"`` (the first spelling seen is kept for display; matching ignores case and
repeated spaces) and records the item field it came from. The graph is a scipy sparse item × entity
adjacency matrix, which keeps path counting (``items → entity → items``) a sparse product; a networkx
view is available for people who want graph algorithms.

Stored as a folder: ``adjacency.safetensors`` (CSR arrays), ``entities.parquet``, ``items.parquet`` and
``kg.json`` (no pickle).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from safetensors.numpy import load_file, save_file

from avrec.errors import DataError

KG_FORMAT_VERSION = 1

#: Item column -> entity type (the id prefix). Other ``|``-separated columns use their own name.
ENTITY_TYPES: dict[str, str] = {
    "director": "director",
    "cast": "cast",
    "artist": "artist",
    "genres": "genre",
    "genre": "genre",
    "tags": "tag",
    "heard_tags": "heard",  # tags an audio tagger heard (musicnn), cited as heard, never as catalogue fact
    "keywords": "keyword",
    "country": "country",
    "countries": "country",
    "year": "decade",
}
#: Columns never read as entities: ids and free text.
# user_tags are what the dataset's own users did (see avrec.data.builtin): they would leak held-out interactions.
NON_ENTITY_COLUMNS = frozenset(
    {"item_id", "title", "overview", "description", "tagline", "lyrics", "imdb_id", "tmdb_id", "media_type", "url",
     "user_tags"}
)
_SPACES = re.compile(r"\s+")
_YEAR = re.compile(r"^\s*(\d{4})")


def normalize_value(value: str) -> str:
    """The matching key of an entity value: case-folded, spaces collapsed."""
    return _SPACES.sub(" ", str(value)).strip().casefold()


def decade_of(year: str) -> str:
    """``"1994"`` -> ``"1990s"``; "" when the value does not start with a four-digit year."""
    m = _YEAR.match(str(year))
    return f"{int(m.group(1)) // 10 * 10}s" if m else ""


def entity_fields(items: pd.DataFrame) -> list[str]:
    """The columns of ``items`` that yield entities: the known ones plus any other ``|``-separated column."""
    out = []
    for c in items.columns:
        if c in NON_ENTITY_COLUMNS:
            continue
        if c in ENTITY_TYPES:
            out.append(c)
        elif items[c].astype(str).str.contains("|", regex=False).any():
            out.append(c)
    return out


def field_values(field_name: str, raw: str) -> list[str]:
    """Display values an item field holds (the decade for ``year``; split on ``|`` otherwise)."""
    raw = str(raw)
    if field_name == "year":
        d = decade_of(raw)
        return [d] if d else []
    return [v.strip() for v in raw.split("|") if v.strip()]


@dataclass(eq=False)
class KnowledgeGraph:
    """Items, entities and the item × entity adjacency (1 where an item's field names the entity).

    ``entities`` has one row per entity column of ``adjacency``: ``entity`` (id), ``type``, ``field``
    (the item column it came from), ``value`` (display) and ``n_items``.
    """

    item_ids: np.ndarray
    entities: pd.DataFrame
    adjacency: sp.csr_matrix
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.item_ids = np.asarray(self.item_ids, dtype=object)
        self.adjacency = sp.csr_matrix(self.adjacency, dtype=np.float32)
        if self.adjacency.shape != (len(self.item_ids), len(self.entities)):
            raise DataError(
                f"knowledge graph: adjacency shape {self.adjacency.shape} does not match "
                f"{len(self.item_ids)} items × {len(self.entities)} entities"
            )
        self._key_index: dict[str, int] | None = None
        self._item_index: dict[str, int] | None = None

    # ---- sizes and lookups -------------------------------------------------------------------
    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_entities(self) -> int:
        return len(self.entities)

    @property
    def n_edges(self) -> int:
        return int(self.adjacency.nnz)

    @property
    def item_index(self) -> dict[str, int]:
        if self._item_index is None:
            self._item_index = {str(i): n for n, i in enumerate(self.item_ids)}
        return self._item_index

    @property
    def key_index(self) -> dict[str, int]:
        """``"<type>:<normalised value>"`` -> entity column."""
        if self._key_index is None:
            keys = (self.entities["type"] + ":" + self.entities["value"].map(normalize_value)).tolist()
            self._key_index = {k: n for n, k in enumerate(keys)}
        return self._key_index

    def entity_column(self, entity: str) -> int:
        """Column of an entity id such as ``"Director:christopher  nolan"`` (case and spacing ignored); -1 if absent."""
        etype, sep, value = str(entity).partition(":")
        if not sep:
            return -1
        return self.key_index.get(f"{etype.strip().casefold()}:{normalize_value(value)}", -1)

    def item_entities(self, item: int | str) -> np.ndarray:
        """Entity columns linked to one item (index or id)."""
        i = self.item_index[str(item)] if isinstance(item, str) else int(item)
        return self.adjacency.indices[self.adjacency.indptr[i] : self.adjacency.indptr[i + 1]]

    def entity_items(self) -> sp.csc_matrix:
        """The adjacency in column form: ``entity_items()[:, e].indices`` are the items of entity e."""
        return self.adjacency.tocsc()

    def idf(self, smooth: bool = True) -> np.ndarray:
        """Inverse document frequency of each entity over the catalogue (rare entities weigh more)."""
        df = np.asarray(self.adjacency.getnnz(axis=0), dtype=np.float64)
        n = float(self.n_items)
        if smooth:
            return (np.log((1.0 + n) / (1.0 + df)) + 1.0).astype(np.float32)
        return np.log(n / np.maximum(df, 1.0)).astype(np.float32)

    # ---- new items ---------------------------------------------------------------------------
    def link(self, items: pd.DataFrame) -> sp.csr_matrix:
        """Adjacency rows for (possibly new) items over this graph's existing entities; unknown values are dropped."""
        fields = [f for f in self.entities["field"].unique() if f in items.columns]
        type_of = dict(zip(self.entities["field"], self.entities["type"]))
        rows, cols = [], []
        index = self.key_index
        for f in fields:
            etype = type_of[f]
            for r, raw in enumerate(items[f].fillna("").astype(str)):
                for v in field_values(f, raw):
                    c = index.get(f"{etype}:{normalize_value(v)}")
                    if c is not None:
                        rows.append(r)
                        cols.append(c)
        m = sp.csr_matrix(
            (np.ones(len(rows), np.float32), (rows, cols)), shape=(len(items), self.n_entities), dtype=np.float32
        )
        m.sum_duplicates()
        m.data[:] = 1.0
        return m

    # ---- reporting ---------------------------------------------------------------------------
    def stats(self, top: int = 5) -> dict[str, Any]:
        """Counts per field, degree summaries and the most connected entities."""
        degree_items = np.diff(self.adjacency.indptr)
        n_items_of = np.asarray(self.adjacency.getnnz(axis=0))
        per_field = {}
        for f, group in self.entities.groupby("field", sort=True):
            cols = group.index.to_numpy()
            counts = n_items_of[cols]
            order = np.argsort(-counts, kind="stable")[:top]
            per_field[str(f)] = {
                "type": str(group["type"].iloc[0]),
                "entities": int(len(cols)),
                "edges": int(counts.sum()),
                "items_with_any": int((self.adjacency[:, cols].getnnz(axis=1) > 0).sum()),
                "top": [[str(group["entity"].iloc[o]), int(counts[o])] for o in order],
            }
        return {
            "items": self.n_items,
            "entities": self.n_entities,
            "edges": self.n_edges,
            "items_without_entities": int((degree_items == 0).sum()),
            "mean_entities_per_item": round(float(degree_items.mean()) if self.n_items else 0.0, 3),
            "entities_linking_2plus_items": int((n_items_of >= 2).sum()),
            "fields": per_field,
        }

    def to_networkx(self):
        """A bipartite ``networkx.Graph``: item nodes ``"item:<id>"`` and entity nodes, edges carry ``field``."""
        import networkx as nx

        g: nx.Graph[Any] = nx.Graph()
        g.add_nodes_from((f"item:{i}", {"kind": "item", "item_id": str(i)}) for i in self.item_ids)
        for row in self.entities.itertuples(index=False):
            g.add_node(row.entity, kind="entity", type=row.type, field=row.field, value=row.value)
        coo = self.adjacency.tocoo()
        ents = self.entities["entity"].to_numpy()
        fields = self.entities["field"].to_numpy()
        g.add_edges_from(
            (f"item:{self.item_ids[r]}", ents[c], {"field": fields[c]}) for r, c in zip(coo.row, coo.col)
        )
        return g

    # ---- persistence -------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write the graph as a folder of safetensors + Parquet + JSON."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        a = self.adjacency
        save_file(
            {
                "adjacency.indptr": a.indptr.astype(np.int64),
                "adjacency.indices": a.indices.astype(np.int32),
                "adjacency.data": a.data.astype(np.float32),
                "adjacency.shape": np.asarray(a.shape, dtype=np.int64),
            },
            str(folder / "adjacency.safetensors"),
        )
        self.entities.to_parquet(folder / "entities.parquet", index=False)
        pd.DataFrame({"item_id": self.item_ids.astype(str)}).to_parquet(folder / "items.parquet", index=False)
        meta = {"format_version": KG_FORMAT_VERSION, **self.meta, "items": self.n_items, "entities": self.n_entities,
                "edges": self.n_edges}
        (folder / "kg.json").write_text(json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> KnowledgeGraph:
        """Read a graph written by :meth:`save`."""
        folder = Path(folder)
        if not (folder / "kg.json").exists():
            raise DataError(f"{folder}: not a knowledge-graph folder (no kg.json); create one with `avrec kg build`")
        try:
            meta = json.loads((folder / "kg.json").read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"{folder / 'kg.json'}: not valid JSON ({e.msg} at line {e.lineno})") from None
        t = load_file(str(folder / "adjacency.safetensors"))
        shape = tuple(int(s) for s in t["adjacency.shape"])
        adjacency = sp.csr_matrix((t["adjacency.data"], t["adjacency.indices"], t["adjacency.indptr"]), shape=shape)
        entities = pd.read_parquet(folder / "entities.parquet")
        item_ids = pd.read_parquet(folder / "items.parquet")["item_id"].to_numpy(dtype=object)
        meta = {k: v for k, v in meta.items() if k not in ("format_version", "items", "entities", "edges")}
        return cls(item_ids, entities, adjacency, meta)

    def __repr__(self) -> str:
        return f"KnowledgeGraph(items={self.n_items}, entities={self.n_entities}, edges={self.n_edges})"


def build_kg(items: pd.DataFrame, fields: list[str] | None = None, min_items: int = 1) -> KnowledgeGraph:
    """Build the graph from an item frame (``Dataset.items`` or a model's ``items``).

    ``fields``: item columns to read (default: :func:`entity_fields`). ``min_items``: drop entities linked to
    fewer items (1 keeps all; 2 keeps only entities that can connect two items).
    """
    if "item_id" not in items.columns:
        raise DataError("items: missing required column 'item_id'")
    if fields is None:
        fields = entity_fields(items)
    else:
        missing = [f for f in fields if f not in items.columns]
        if missing:
            have = ", ".join(items.columns)
            raise DataError(f"knowledge graph: item field {missing[0]!r} does not exist (have: {have})")
    keys: dict[str, int] = {}
    ent_type: list[str] = []
    ent_field: list[str] = []
    ent_value: list[str] = []
    rows: list[int] = []
    cols: list[int] = []
    for f in fields:
        etype = ENTITY_TYPES.get(f, f)
        for r, raw in enumerate(items[f].fillna("").astype(str)):
            for v in field_values(f, raw):
                key = f"{etype}:{normalize_value(v)}"
                c = keys.get(key)
                if c is None:
                    c = keys[key] = len(ent_type)
                    ent_type.append(etype)
                    ent_field.append(f)
                    ent_value.append(_SPACES.sub(" ", v).strip())
                rows.append(r)
                cols.append(c)
    adjacency = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(len(items), len(ent_type)), dtype=np.float32
    )
    adjacency.sum_duplicates()
    adjacency.data[:] = 1.0
    entities = pd.DataFrame(
        {
            "entity": [f"{t}:{v}" for t, v in zip(ent_type, ent_value)],
            "type": ent_type,
            "field": ent_field,
            "value": ent_value,
        }
    )
    entities["n_items"] = np.asarray(adjacency.getnnz(axis=0), dtype=np.int64)
    if min_items > 1 and len(entities):
        keep = np.flatnonzero(entities["n_items"].to_numpy() >= min_items)
        adjacency = sp.csr_matrix(adjacency[:, keep])
        entities = entities.iloc[keep].reset_index(drop=True)
    return KnowledgeGraph(
        items["item_id"].astype(str).to_numpy(dtype=object),
        entities,
        adjacency,
        {"fields": list(fields), "min_items": int(min_items)},
    )


def kg_item_features(
    kg: KnowledgeGraph, *, field_weights: dict[str, float] | None = None, min_items: int = 2
) -> sp.csr_matrix:
    """TF-IDF weighted item × entity features with L2-normalised rows, for an item tower or a similarity.

    Entities linked to fewer than ``min_items`` items carry no signal between items and are zeroed;
    ``field_weights`` scales whole fields (for example ``{"tags": 0.5}``).
    """
    weights = kg.idf().astype(np.float32)
    counts = np.asarray(kg.adjacency.getnnz(axis=0))
    weights[counts < min_items] = 0.0
    if field_weights:
        fields = kg.entities["field"].to_numpy()
        for f, w in field_weights.items():
            weights[fields == f] *= np.float32(w)
    x = sp.csr_matrix(kg.adjacency @ sp.diags(weights), dtype=np.float32)
    x.eliminate_zeros()
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    return sp.csr_matrix(sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ x, dtype=np.float32)


def load_kg(source: str | Path) -> KnowledgeGraph:
    """A saved graph folder, or a graph built on the fly from a dataset (built-in name or folder)."""
    path = Path(str(source))
    if (path / "kg.json").exists():
        return KnowledgeGraph.load(path)
    from avrec.data.builtin import load_dataset

    ds = load_dataset(source)
    kg = build_kg(ds.items)
    kg.meta["dataset"] = ds.name
    return kg
