"""``avrec embed --engine ray``: encode item documents with Ray Data, one encoder per actor.

The driver writes the documents still missing from the embedding cache as Parquet, Ray Data reads them,
``map_batches`` runs them through a fixed pool of actors that each load the encoder once (CPU actors, or GPU
actors with ``gpus_per_actor``), and the vectors come back as Parquet shards that the driver commits to the
same cache the local engine fills (so a later fit finds them). Shards already written by an interrupted run
are committed first and their documents are not sent again.

Without an address Ray starts on this machine bound to 127.0.0.1, with the dashboard off and an object
store sized from the free memory; with ``address`` (``"auto"`` or ``"ray://head:10001"``) it joins a running
cluster, whose workers need avrec installed and ``work_dir`` on storage they all see.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from avrec.encoders.cache import EmbeddingCache
from avrec.encoders.text_embed import EmbedReport, length_sorted, missing_texts
from avrec.errors import ConfigError

__all__ = ["EncodeActor", "init_ray", "ray_embed_texts", "ray_init_kwargs", "ray_available"]

_MiB = 1 << 20


def ray_available() -> bool:
    """True when ``ray[data]`` is importable (the ``scale`` extra)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("ray")  # not find_spec("ray.data"): that imports ray, too early for init_ray
    except (ImportError, ValueError):
        return False
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return any((Path(p) / "data" / "__init__.py").is_file() for p in locations)


def ray_init_kwargs(address: str | None, num_cpus: int | None = None) -> dict[str, Any]:
    """``ray.init`` arguments: join ``address``, or start a local Ray on 127.0.0.1 sized for this machine.

    ``num_cpus`` (logical CPUs) defaults to the CPUs this process may use; pass more than the actors claim,
    or Ray Data's read and write tasks wait forever behind the actors.
    """
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address:
        return {**kwargs, "address": address}
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        free = 4096 * _MiB
    # a tenth of the free memory, between 256 MiB and 4 GiB: documents and vectors pass through it in blocks
    store = int(min(max(free // 10, 256 * _MiB), 4096 * _MiB))
    cpus = num_cpus or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    return {**kwargs, "num_cpus": int(cpus), "object_store_memory": store, "_node_ip_address": "127.0.0.1"}


def init_ray(address: str | None, num_cpus: int | None = None) -> bool:
    """Start (or join) Ray unless it is running; True when this call started it (the caller shuts it down).

    A local Ray binds 127.0.0.1 only: on Linux Ray swaps a loopback ``_node_ip_address`` for the machine's
    routable address unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is set before Ray is imported, which
    this sets (Ray's workers inherit it). Raises :class:`ConfigError` if Ray came up on another address.
    """
    if not address:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if ray.is_initialized():
        return False
    ray.init(**ray_init_kwargs(address, num_cpus))
    if not address:
        ip = ray.util.get_node_ip_address()
        if ip != "127.0.0.1":
            ray.shutdown()
            raise ConfigError(f"a local Ray came up on {ip}, not 127.0.0.1 (Ray was imported before avrec could "
                              "set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0; set it in the environment)")
    return True


class EncodeActor:
    """A Ray Data actor: loads the text encoder once and turns a batch of ``text`` into ``vector`` rows."""

    def __init__(self, settings: dict[str, Any]) -> None:
        from avrec.encoders.text import TextEncoder

        self.encoder = TextEncoder(**settings)
        self.encoder.dim  # load now, once per actor, not on the first batch  # noqa: B018

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        texts = [str(t) for t in batch.column("text").to_pylist()]
        vectors = np.ascontiguousarray(self.encoder.encode(texts, show_progress=False), dtype=np.float32)
        flat = pa.array(vectors.reshape(-1))
        return pa.table({"text": pa.array(texts, pa.string()),
                         "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])})


def _commit_shards(out_dir: Path, cache: EmbeddingCache, model_id: str) -> int:
    """Put every readable vector shard under ``out_dir`` into the cache and delete it; rows committed."""
    import pyarrow.parquet as pq

    rows = 0
    for path in sorted(out_dir.glob("*.parquet")):
        try:
            table = pq.read_table(path)
        except Exception:  # a shard cut off by an interruption: its documents get encoded again
            path.unlink(missing_ok=True)
            continue
        texts = [str(t) for t in table.column("text").to_pylist()]
        if texts:
            vec = table.column("vector").combine_chunks()
            matrix = np.asarray(vec.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
            cache.put(model_id, texts, matrix.reshape(len(texts), -1))
            rows += len(texts)
        path.unlink()
    return rows


def _write_documents(docs_dir: Path, texts: list[str], rows_per_file: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if docs_dir.exists():
        shutil.rmtree(docs_dir)
    docs_dir.mkdir(parents=True)
    for n, start in enumerate(range(0, len(texts), rows_per_file)):
        part = texts[start:start + rows_per_file]
        pq.write_table(pa.table({"text": pa.array(part, pa.string())}), docs_dir / f"docs-{n:06d}.parquet")


def ray_embed_texts(
    settings: dict[str, Any],
    model_id: str,
    texts: Sequence[str],
    cache: EmbeddingCache,
    *,
    actors: int = 2,
    batch_size: int = 64,
    gpus_per_actor: float = 0.0,
    cpus_per_actor: float = 1.0,
    address: str | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    chunk_size: int = 4096,
    progress: Callable[[int, int], None] | None = None,
) -> EmbedReport:
    """Encode the texts missing from ``cache`` on a Ray actor pool and commit them under ``model_id``.

    ``settings`` are the :class:`avrec.encoders.TextEncoder` arguments each actor builds its encoder from
    (``model_id`` must be that encoder's). ``chunk_size`` documents go in each input file (a Ray block).
    """
    if not ray_available():
        raise ConfigError("--engine ray needs Ray Data: pip install 'avrec[scale]' (or 'ray[data]>=2.9')")
    if actors < 1 or batch_size < 1 or chunk_size < 1:
        raise ConfigError("actors, batch size and chunk size must each be at least 1")
    started = time.perf_counter()
    tag = hashlib.sha256(model_id.encode()).hexdigest()[:16]
    work = Path(work_dir) if work_dir is not None else cache.root / "ray-embed" / tag
    out_dir, docs_dir = work / "vectors", work / "documents"
    out_dir.mkdir(parents=True, exist_ok=True)
    resumed = _commit_shards(out_dir, cache, model_id)  # an interrupted run's finished shards
    todo, n_unique = missing_texts(cache, model_id, list(texts))
    reused = n_unique - len(todo)
    if progress is not None:
        progress(reused, n_unique)
    if todo:
        _write_documents(docs_dir, length_sorted(todo), chunk_size)
        machine = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        started_ray = init_ray(address, max(machine, int(np.ceil(actors * cpus_per_actor)) + 1))
        import ray

        try:
            import ray.data

            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = progress is not None
            # one block per input file: Ray Data would otherwise merge small files into one block, which
            # only one actor of the pool could work on
            n_files = len(list(docs_dir.glob("*.parquet")))
            ds = ray.data.read_parquet(str(docs_dir), override_num_blocks=n_files)
            ds = ds.map_batches(EncodeActor, fn_constructor_kwargs={"settings": settings}, batch_size=batch_size,
                                batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors),
                                num_cpus=cpus_per_actor, num_gpus=gpus_per_actor or None)
            ds.write_parquet(str(out_dir))
        finally:
            if started_ray:
                ray.shutdown()
        _commit_shards(out_dir, cache, model_id)
        if progress is not None:
            progress(n_unique, n_unique)
    shutil.rmtree(work, ignore_errors=True)
    probe = todo[:1] or list(texts)[:1]
    dim = int(cache.get(model_id, probe)[0].shape[1]) if probe else 0
    return EmbedReport(documents=len(texts), unique=n_unique, reused=reused - resumed, encoded=len(todo) + resumed,
                       chunks=-(-len(todo) // chunk_size), seconds=time.perf_counter() - started, dim=dim)
