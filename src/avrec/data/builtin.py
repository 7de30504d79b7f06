"""Compatibility path for :func:`load_dataset`: the built-in datasets live in :mod:`avrec.data.sources`.

Kept because ``avrec.data.builtin.load_dataset`` is how the CLI, the knowledge graph, the benchmarks
and users load a dataset by name; nothing is defined here.
"""

from avrec.data.sources import BUILTIN, data_dirs, load_dataset

__all__ = ["load_dataset", "BUILTIN", "data_dirs"]
