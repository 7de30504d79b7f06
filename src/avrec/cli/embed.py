"""``avrec embed``: encode a catalogue's item documents (text, the default) or extract its audio, video or
image vectors, into the embedding cache every later fit reads.

Text: the documents are built exactly as the ``--for-model`` model (hybrid by default, or content) builds
them under the same ``--config``/``--set``, and encoded by its encoder (``--model``/``--backend`` override
it), locally or on a Ray actor pool (``--engine ray``, :mod:`avrec.encoders.ray_embed`), in chunks
committed one by one, so an interrupted run continues where it stopped. A fit with the same settings then
reads every vector from the cache and never loads the encoder.

Media: reads only the folder's ``items`` table, so a folder of clips without interactions works too;
vectors are keyed by each file's content hash + extractor version.
``--out`` also writes the vectors as an ``item_vectors``-style Parquet file (``item_id`` + ``vector``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from avrec.cli.common import add_data_dir, load_data, stderr_console, stdout_console
from avrec.cli.settings import add_settings_options
from avrec.encoders.resolve import ENCODER_BACKENDS

MODALITIES = ("audio", "video", "image")
ENGINES = ("local", "ray")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``embed`` to the ``avrec`` parser."""
    p = sub.add_parser("embed", help="encode and cache a dataset's item documents (text) or media vectors")
    p.add_argument("dataset", metavar="DATASET",
                   help="text: a dataset folder or built-in name; media: a folder with items.csv")
    p.add_argument("--modality", default="text", choices=("text", *MODALITIES), help="default: text")
    p.add_argument("--engine", default="local", choices=ENGINES,
                   help="text: encode in this process (local) or on a Ray actor pool (ray; needs avrec[scale])")
    p.add_argument("--for-model", default="hybrid", metavar="NAME",
                   help="text: build documents and pick the encoder as this model does (hybrid or content)")
    p.add_argument("--model", metavar="ENCODER",
                   help="text: encoder (default: the model's encoder setting, 'default' = all-MiniLM-L6-v2)")
    p.add_argument("--backend", choices=ENCODER_BACKENDS,
                   help="text: torch (fp32), bf16 (bfloat16 autocast), int8 (torch-quantised, CPU), onnx or "
                        "onnx-int8 (ONNX Runtime, CPU: pip install 'avrec[onnx]'); the same as naming the "
                        "encoder ENCODER@BACKEND (default: torch)")
    p.add_argument("--max-length", type=int, metavar="N", help="text: tokens per document (default: the model's)")
    p.add_argument("--chunk-size", type=int, default=4096, metavar="N",
                   help="text: documents per committed chunk (default 4096); a rerun skips committed chunks")
    p.add_argument("--actors", type=int, default=2, help="--engine ray: encoder actors (default 2)")
    p.add_argument("--gpus-per-actor", type=float, default=0.0, help="--engine ray: GPUs per actor (default 0: CPU)")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="--engine ray: join this cluster ('auto', 'ray://head:10001'); default: a local Ray on "
                        "127.0.0.1")
    p.add_argument("--work-dir", metavar="DIR",
                   help="--engine ray: documents and vector shards in transit (default under the cache; on a "
                        "cluster use storage every node sees)")
    p.add_argument("--extractor", default="auto",
                   help="auto, musicnn-mtt, musicnn-msd, audio-descriptors, video-descriptors, image-descriptors, "
                        "or module:attribute")
    p.add_argument("--cache", metavar="DIR", help="embedding cache root (default: $AVREC_CACHE or ~/.cache/avrec)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="documents per encoder batch (default 64), or media files per cache batch (default 16)")
    p.add_argument("--out", metavar="FILE", help="also write the vectors as Parquet (item_id + vector)")
    p.add_argument("--heard-tags", action="store_true",
                   help="audio with a musicnn extractor: also write DATASET_DIR/heard_tags.csv (the top tags heard "
                        "per clip), which load_folder adds to the items' text as heard_tags")
    p.add_argument("--top-tags", type=int, default=3, help="tags per clip for --heard-tags (default 3)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_settings_options(p, example="data.enrich=tmdb, models.hybrid.encoder=default@int8")
    add_data_dir(p)
    p.set_defaults(func=cmd_embed)


def cmd_embed(args: argparse.Namespace) -> int:
    from avrec.data.io import clean_items, find_table, read_table
    from avrec.data.vectors import attach_folder, media_paths, write_vector_file
    from avrec.encoders.modalities import extract_modality
    from avrec.errors import DataError

    if args.modality == "text":
        return _embed_text(args)
    if args.batch_size is None:
        args.batch_size = 16
    folder = Path(args.dataset)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a dataset folder (no such directory)")
    if args.batch_size < 1:
        raise DataError("--batch-size must be at least 1")
    if args.heard_tags and (args.modality != "audio" or args.top_tags < 1):
        raise DataError("--heard-tags needs --modality audio and --top-tags of at least 1")
    items_path = find_table(folder, "items")
    items = attach_folder(clean_items(read_table(items_path), items_path), folder)
    named = sum(p is not None for p in media_paths(items, args.modality))
    if named == 0:
        raise DataError(f"{items_path}: no item has a {args.modality} file "
                        f"(columns: {args.modality}_path, or media_path with media_type)")
    started = time.perf_counter()
    mv = extract_modality(items, args.modality, args.extractor, args.cache, show_progress=True,
                          batch_size=args.batch_size)
    seconds = time.perf_counter() - started
    summary = {"modality": args.modality, "extractor": mv.source, "items": len(items), "with_file": named,
               "vectors": int(mv.present.sum()), "dim": mv.dim, "seconds": round(seconds, 2),
               "files_per_second": round(named / seconds, 2) if seconds > 0 else None}
    if args.out:
        ids = items["item_id"].to_numpy()[mv.present]
        summary["out"] = str(write_vector_file(args.out, ids, mv.matrix[mv.present]))
    if args.heard_tags:
        summary["heard_tags"] = _write_heard_tags(items, folder, args)
    if args.json:
        print(json.dumps(summary))
    else:
        stdout_console().print(
            f"{summary['vectors']}/{named} {args.modality} files embedded with {mv.source} (dim {mv.dim}) "
            f"in {seconds:.1f} s" + (f"; wrote {summary['out']}" if args.out else ""))
        if summary["vectors"] < named:
            stderr_console().print(f"{named - summary['vectors']} file(s) could not be read (see warnings above)")
    return 0


def _write_heard_tags(items, folder: Path, args: argparse.Namespace) -> str:
    """Write ``heard_tags.csv`` (item_id, heard_tags) from the cached tagger vectors; its path."""
    import pandas as pd

    from avrec.data.vectors import HEARD_COLUMN, HEARD_FILE
    from avrec.encoders.heard import heard_tags

    name = "musicnn-mtt" if args.extractor in ("auto", "") else args.extractor
    tags = heard_tags(items, name, k=args.top_tags, cache_root=args.cache)
    path = folder / HEARD_FILE
    pd.DataFrame({"item_id": items["item_id"].astype(str), HEARD_COLUMN: tags}).to_csv(path, index=False)
    return str(path)


def _text_setup(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
    """(settings, encoder, encoder kwargs) for text: the ``--for-model`` model's settings, flags applied."""
    from avrec.cli.settings import load_settings, resolve_settings
    from avrec.encoders import TextEncoder
    from avrec.errors import ConfigError

    for name, value in (("--batch-size", args.batch_size), ("--chunk-size", args.chunk_size),
                        ("--actors", args.actors), ("--max-length", args.max_length)):
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be at least 1, not {value}")
    if args.gpus_per_actor < 0:
        raise ConfigError(f"--gpus-per-actor must be 0 or more, not {args.gpus_per_actor}")
    settings = resolve_settings(load_settings(args.config, args.set), [args.for_model])
    config = settings.models[args.for_model]
    if not hasattr(config, "encoder") or not hasattr(config, "doc_fields"):
        raise ConfigError(f"--for-model {args.for_model}: this model has no text encoder (use hybrid or content)")
    kwargs = {"model": args.model or config.encoder, "max_length": args.max_length or config.max_length,
              "batch_size": args.batch_size or 64, "backend": args.backend}
    try:
        encoder = TextEncoder(**kwargs)
    except ValueError as exc:
        raise ConfigError(f"--backend: {exc}") from exc
    kwargs.update(model=encoder.model, backend=encoder.backend)
    return settings, encoder, kwargs


def _embed_text(args: argparse.Namespace) -> int:
    """Encode the documents of ``args.dataset`` into the embedding cache (local or Ray), with a progress bar."""
    from avrec.data.documents import DocumentConfig, build_documents
    from avrec.encoders import EmbeddingCache
    from avrec.errors import ConfigError

    settings, encoder, kwargs = _text_setup(args)
    config = settings.models[args.for_model]
    cache_root = args.cache or config.embedding_cache
    if cache_root == "none":
        raise ConfigError(f"models.{args.for_model}.embedding_cache is 'none': there is no cache to fill "
                          "(pass --cache DIR)")
    err = stderr_console()
    dataset = load_data(args, settings.data, err)
    docs = build_documents(dataset.items, DocumentConfig(fields=list(config.doc_fields)))
    cache = EmbeddingCache(cache_root)
    with _progress_bar(err, f"Encoding {dataset.name}" + (" (Ray)" if args.engine == "ray" else "")) as progress:
        if args.engine == "ray":
            from avrec.encoders.ray_embed import ray_embed_texts

            if args.gpus_per_actor > 0:
                kwargs["device"] = "cuda"
            report = ray_embed_texts(kwargs, encoder.model_id, docs, cache, actors=args.actors,
                                     batch_size=kwargs["batch_size"], gpus_per_actor=args.gpus_per_actor,
                                     address=args.ray_address, work_dir=args.work_dir, chunk_size=args.chunk_size,
                                     progress=progress)
        else:
            from avrec.encoders.text_embed import embed_texts

            report = embed_texts(encoder, docs, cache, chunk_size=args.chunk_size, progress=progress)
    summary: dict[str, Any] = {"modality": "text", "engine": args.engine, "encoder": encoder.model_id,
                               "backend": encoder.backend, "items": dataset.n_items, **report.as_dict(),
                               "cache": str(cache.model_dir(encoder.model_id))}
    if args.out:
        from avrec.data.vectors import write_vector_file

        vectors, found = cache.get(encoder.model_id, docs)
        if not found.all():
            raise ConfigError(f"{int((~found).sum())} document vectors are missing from the cache after encoding")
        summary["out"] = str(write_vector_file(args.out, dataset.item_ids, vectors))
    if args.json:
        print(json.dumps(summary))
    else:
        stdout_console().print(
            f"{report.unique} documents of {dataset.name}: {report.encoded} encoded ({args.engine}, "
            f"{encoder.backend}), {report.reused} already cached, dim {report.dim}, in {report.seconds:.1f} s; "
            f"cache {summary['cache']}" + (f"; wrote {summary['out']}" if args.out else ""))
    return 0


class _progress_bar:
    """A Rich bar over distinct documents, driven by the ``progress(done, total)`` callback of the engines."""

    def __init__(self, console: Any, label: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), console=console)
        self.label = label
        self.task: Any = None

    def __enter__(self) -> _progress_bar:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(None, None, None)

    def __call__(self, done: int, total: int) -> None:
        if self.task is None:
            self.task = self.bar.add_task(self.label, total=total)
        self.bar.update(self.task, completed=done, total=total)
