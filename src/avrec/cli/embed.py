"""``avrec embed``: extract (and cache) the audio, video or image vectors of a catalogue's media files.

Reads only the folder's ``items`` table, so a folder of clips without interactions works too. Vectors go to
the embedding cache (content hash of each file + extractor version), which every later fit reuses;
``--out`` also writes them as an ``item_vectors`` Parquet file (``item_id`` + ``vector``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from avrec.cli.common import stderr_console, stdout_console

MODALITIES = ("audio", "video", "image")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``embed`` to the ``avrec`` parser."""
    p = sub.add_parser("embed", help="extract and cache the audio/video/image vectors of a dataset's media files")
    p.add_argument("dataset", metavar="DATASET_DIR", help="folder with items.csv (media paths relative to it)")
    p.add_argument("--modality", required=True, choices=MODALITIES)
    p.add_argument("--extractor", default="auto",
                   help="auto, musicnn-mtt, musicnn-msd, audio-descriptors, video-descriptors, image-descriptors, "
                        "or module:attribute")
    p.add_argument("--cache", metavar="DIR", help="embedding cache root (default: $AVREC_CACHE or ~/.cache/avrec)")
    p.add_argument("--batch-size", type=int, default=16, help="files per batch written to the cache (default 16)")
    p.add_argument("--out", metavar="FILE", help="also write the vectors as Parquet (e.g. item_vectors/audio.parquet)")
    p.add_argument("--heard-tags", action="store_true",
                   help="audio with a musicnn extractor: also write DATASET_DIR/heard_tags.csv (the top tags heard "
                        "per clip), which load_folder adds to the items' text as heard_tags")
    p.add_argument("--top-tags", type=int, default=3, help="tags per clip for --heard-tags (default 3)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_embed)


def cmd_embed(args: argparse.Namespace) -> int:
    from avrec.data.io import clean_items, find_table, read_table
    from avrec.data.vectors import attach_folder, media_paths, write_vector_file
    from avrec.encoders.modalities import extract_modality
    from avrec.errors import DataError

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
