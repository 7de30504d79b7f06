"""Built-in public datasets, converted to the avrec folder format on the fly.

``ml-latest-small`` ships inside the package and is the offline default; the others come from
``AVREC_DATA`` (or ``--data-dir``) when it holds a copy, else they are downloaded once into the cache
and checked (:mod:`avrec.data.sources.download`).

Layout: :mod:`~avrec.data.sources.registry` (name -> dataset module, looked up lazily),
:mod:`~avrec.data.sources.download` (download, checksums, cache, local copies),
:mod:`~avrec.data.sources.base` (frames -> cleaned, enriched dataset),
:mod:`~avrec.data.sources.enrich` (``data.enrich=tmdb,hetrec``),
:mod:`~avrec.data.sources.movielens` (MovieLens parsing), and one module per dataset.
"""

from avrec.data.sources.download import MANIFEST, Source, cache_root, data_dirs, published_md5
from avrec.data.sources.registry import (
    BUILTIN,
    builtin_frames,
    dataset_module,
    dataset_names,
    download_source,
    download_sources,
    fetch,
    load_dataset,
)

__all__ = [
    "BUILTIN", "MANIFEST", "Source", "builtin_frames", "cache_root", "data_dirs", "dataset_module",
    "dataset_names", "download_source", "download_sources", "fetch", "load_dataset", "published_md5",
]
