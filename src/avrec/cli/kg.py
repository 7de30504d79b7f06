"""``avrec kg build|stats``, ``avrec explain`` and ``avrec summarize``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from avrec.cli.common import add_data_dir, load_model


def _enrich_list(text: str | None) -> list[str]:
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def _load_items(source: str, args: argparse.Namespace):
    """Items of a saved model folder or of a dataset (built-in name or folder); returns (items, name)."""
    path = Path(source)
    if (path / "config.json").exists():
        from avrec.models.base import Recommender

        return Recommender.load(path).items, path.name
    from avrec.data.builtin import load_dataset
    from avrec.data.io import DataConfig

    config = DataConfig(enrich=_enrich_list(getattr(args, "enrich", None)))
    ds = load_dataset(source, config, getattr(args, "data_dir", None))
    return ds.items, ds.name


def _generator(args: argparse.Namespace):
    if not getattr(args, "generate", False):
        return None
    from avrec.explain.generate import SmolLMGenerator

    return SmolLMGenerator()


# ---- kg -------------------------------------------------------------------------------------------
def cmd_kg_build(args: argparse.Namespace) -> int:
    from avrec.kg.graph import build_kg

    items, name = _load_items(args.dataset, args)
    fields = [f.strip() for f in args.fields.split(",") if f.strip()] if args.fields else None
    kg = build_kg(items, fields=fields, min_items=args.min_items)
    kg.meta["dataset"] = name
    out = Path(args.out or f"{name}-kg")
    kg.save(out)
    if args.graphml:
        import networkx as nx

        nx.write_graphml(kg.to_networkx(), args.graphml)
    print(f"built knowledge graph of {name}: {kg.n_items:,} items, {kg.n_entities:,} entities, "
          f"{kg.n_edges:,} edges; saved to {out}" + (f" and {args.graphml}" if args.graphml else ""))
    return 0


def cmd_kg_stats(args: argparse.Namespace) -> int:
    from avrec.kg.graph import KnowledgeGraph, build_kg

    path = Path(args.source)
    if (path / "kg.json").exists():
        kg = KnowledgeGraph.load(path)
    else:
        items, name = _load_items(args.source, args)
        kg = build_kg(items)
        kg.meta["dataset"] = name
    stats = kg.stats(top=args.top)
    if args.json:
        print(json.dumps(stats, indent=2, ensure_ascii=False))
        return 0
    print(f"{kg.meta.get('dataset', path.name)}: {stats['items']:,} items, {stats['entities']:,} entities, "
          f"{stats['edges']:,} edges; {stats['mean_entities_per_item']} entities per item, "
          f"{stats['items_without_entities']:,} items without any")
    print(f"{'field':<14}{'type':<12}{'entities':>10}{'edges':>10}{'items':>9}  most linked")
    for f, s in stats["fields"].items():
        top = ", ".join(f"{e.split(':', 1)[1]} ({n})" for e, n in s["top"])
        print(f"{f:<14}{s['type']:<12}{s['entities']:>10,}{s['edges']:>10,}{s['items_with_any']:>9,}  {top}")
    return 0


# ---- explain / summarize --------------------------------------------------------------------------
def cmd_explain(args: argparse.Namespace) -> int:
    from avrec.explain.explainer import Explainer
    from avrec.kg.graph import KnowledgeGraph

    model = load_model(args.model_dir)
    kg = KnowledgeGraph.load(args.kg) if args.kg else None
    explanation = Explainer(model, kg, generator=_generator(args)).explain(args.user, args.item)
    if args.json:
        print(json.dumps(explanation, indent=2, ensure_ascii=False))
        return 0
    print(explanation["text"])
    for ev in explanation["evidence"]:
        if ev["kind"] == "history_item":
            print(f"  history  {ev['item_id']}  weight {ev['weight']}")
        elif ev["kind"] == "entity":
            print(f"  entity   {ev['entity']}  (field {ev['field']}; shared with {', '.join(ev['history_items'])})")
        else:
            print(f"  text     {ev['field']}: \"{ev['span']}\"")
    return 0


def cmd_summarize(args: argparse.Namespace) -> int:
    from avrec.explain.summarize import SummaryConfig, summarize_item

    items, _ = _load_items(args.source, args)
    config = SummaryConfig(max_sentences=args.sentences, max_words=args.max_words)
    summary = summarize_item(items, args.item, config, generator=_generator(args))
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        print(summary["summary"])
    return 0


# ---- registration ---------------------------------------------------------------------------------
def _add_dataset_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--enrich", metavar="SOURCES", help="comma-separated enrichment: tmdb, hetrec (MovieLens only)")
    add_data_dir(p)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``kg``, ``explain`` and ``summarize`` to the ``avrec`` parser."""
    kg = sub.add_parser("kg", help="knowledge graph of items and metadata entities")
    kg_sub = kg.add_subparsers(dest="kg_command", metavar="COMMAND")
    kg.set_defaults(func=lambda a: (kg.print_help(), 2)[1])

    p = kg_sub.add_parser("build", help="build the item-entity graph of a dataset and save it")
    p.add_argument("dataset", metavar="DATASET", help="built-in dataset name, dataset folder or model folder")
    p.add_argument("--out", metavar="DIR", help="folder to save the graph in (default: <dataset>-kg)")
    p.add_argument("--fields", metavar="F1,F2", help="item fields to read (default: every entity field)")
    p.add_argument("--min-items", type=int, default=1, help="drop entities linked to fewer items (default 1)")
    p.add_argument("--graphml", metavar="FILE", help="also write the graph as GraphML (via networkx)")
    _add_dataset_options(p)
    p.set_defaults(func=cmd_kg_build)

    p = kg_sub.add_parser("stats", help="entity and edge counts per field of a saved graph or a dataset")
    p.add_argument("source", metavar="DATASET|KG_DIR")
    p.add_argument("--top", type=int, default=5, help="most linked entities to show per field")
    p.add_argument("--json", action="store_true")
    _add_dataset_options(p)
    p.set_defaults(func=cmd_kg_stats)

    p = sub.add_parser("explain", help="why a saved model recommends an item to a user (grounded evidence)")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("--user", required=True, metavar="ID")
    p.add_argument("--item", required=True, metavar="ID")
    p.add_argument("--kg", metavar="KG_DIR",
                   help="a graph from `avrec kg build` (default: built from the model's items)")
    p.add_argument("--generate", action="store_true",
                   help="let SmolLM2 rewrite the sentence (needs the 'llm' extra; verified, template on failure)")
    p.add_argument("--json", action="store_true", help="print the explanation JSON")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("summarize", help="short extractive summary of an item")
    p.add_argument("source", metavar="MODEL_DIR|DATASET")
    p.add_argument("--item", required=True, metavar="ID")
    p.add_argument("--sentences", type=int, default=2, help="at most this many copied sentences (default 2)")
    p.add_argument("--max-words", type=int, default=60, help="word budget of the copied sentences (default 60)")
    p.add_argument("--generate", action="store_true", help="let SmolLM2 rewrite it (verified; needs the 'llm' extra)")
    p.add_argument("--json", action="store_true")
    _add_dataset_options(p)
    p.set_defaults(func=cmd_summarize)


if __name__ == "__main__":  # pragma: no cover
    from avrec.cli import main

    sys.exit(main())
