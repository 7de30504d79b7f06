"""Download public datasets once, check them, and read them as avrec frames.

``fetch(name)`` downloads the official GroupLens archive into the cache (``AVREC_CACHE`` or
``~/.cache/avrec/datasets``), streaming it to a temporary file while hashing it, checks it, unzips
it into a temporary folder and renames that folder into place, so an interrupted download never
leaves a half-written dataset behind.

What is checked, honestly:

- **Pinned member digests.** For the files whose exact bytes we know (the ``sha256`` column of the
  READMEs under ``shared/data``: every Last.fm 2K data file, and ml-latest-small's ``README.txt``),
  each extracted member must match its pinned sha256.
- **Archive digests.** We could not download the official zips while writing this (no network), so
  no archive sha256 is pinned (:data:`SOURCES` has ``archive_sha256=None``). Instead the archive is
  checked against GroupLens's published ``<url>.md5`` companion file when the server has one, and its
  sha256 is recorded in ``<cache>/digests.json`` on first download (trust on first use); a later
  download of the same URL must match it. A warning says so every time an unpinned archive is used.
- **Cache integrity.** The sha256 of every extracted file is written to ``<dataset>/avrec-manifest.json``
  and re-checked each time the cached copy is used.

A local copy named by ``AVREC_DATA`` (or ``--data-dir``) always wins over downloading.
The loaders for ``ml-100k``, ``ml-1m`` and ``ml-25m`` registered here in :mod:`avrec.data.builtin`
reuse :func:`avrec.data.builtin.movielens_items`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from avrec.errors import DataError, DataWarning

GROUPLENS = "https://files.grouplens.org/datasets"


@dataclass(frozen=True)
class Source:
    """One downloadable dataset: where it comes from and what we know about its bytes."""

    url: str
    marker: str  # a file that must exist in the extracted folder
    archive_sha256: str | None = None  # pinned digest of the zip (None: unknown, see module docstring)
    members_sha256: dict[str, str] = field(default_factory=dict)  # pinned digests of extracted files
    local_names: tuple[str, ...] = ()  # folder names to look for under AVREC_DATA


SOURCES: dict[str, Source] = {
    "ml-latest-small": Source(
        f"{GROUPLENS}/movielens/ml-latest-small.zip",
        "ratings.csv",
        members_sha256={"README.txt": "63d22ac138e80fae37021797ed8e1b9424b5239dc576a137422adf783ae3f404"},
        local_names=("ml-latest-small",),
    ),
    "ml-100k": Source(f"{GROUPLENS}/movielens/ml-100k.zip", "u.data", local_names=("ml-100k",)),
    "ml-1m": Source(f"{GROUPLENS}/movielens/ml-1m.zip", "ratings.dat", local_names=("ml-1m",)),
    "ml-25m": Source(f"{GROUPLENS}/movielens/ml-25m.zip", "ratings.csv", local_names=("ml-25m",)),
    "lastfm-2k": Source(
        f"{GROUPLENS}/hetrec2011/hetrec2011-lastfm-2k.zip",
        "user_artists.dat",
        members_sha256={
            "artists.dat": "c173881362c6b28551368fecb3c0be5a6a30a6cd859e1f5775413dfe46d48648",
            "tags.dat": "e95175f259be4c0c47644ae23d66131cd6d5767142a1405000e79f5584691d70",
            "user_artists.dat": "001400dc3c7d2667fca6e4ea6dc6acc31a9dd28ad5cd0f74cea988c019934d3b",
            "user_friends.dat": "9a3a8f7fa5f5ec832335e5b58ed69a4cf27c6f6f6afcde62134810eea46445a7",
            "user_taggedartists.dat": "d31fe938fcfeed6f0059f37a36b156f63674d073fc2553e5cc9dc1595e365bc7",
        },
        local_names=("hetrec2011-lastfm-2k", "lastfm-2k"),
    ),
}

MANIFEST = "avrec-manifest.json"
DIGESTS = "digests.json"
_TIMEOUT = 60


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The download cache: ``cache_dir``, else ``AVREC_CACHE``, else ``~/.cache/avrec/datasets``."""
    if cache_dir:
        return Path(cache_dir)
    env = os.environ.get("AVREC_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "avrec" / "datasets"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _console():
    from rich.console import Console

    return Console(stderr=True)


def _stream(url: str, dest: Path) -> tuple[str, str]:
    """Download ``url`` to ``dest`` with a progress bar; returns (sha256, md5) of the bytes."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    sha, md5 = hashlib.sha256(), hashlib.md5()
    try:
        response = urllib.request.urlopen(url, timeout=_TIMEOUT)  # noqa: S310 - fixed https URLs (or a test server)
    except urllib.error.HTTPError as e:
        raise DataError(f"{url}: download failed with HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DataError(
            f"{url}: download failed ({reason}); without network, point AVREC_DATA or --data-dir at a local copy"
        ) from None
    total = int(response.headers.get("Content-Length") or 0) or None
    with response, open(dest, "wb") as out, Progress(
        TextColumn("downloading {task.fields[name]}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        console=_console(), transient=True,
    ) as progress:
        task = progress.add_task("download", total=total, name=url.rsplit("/", 1)[-1])
        while True:
            try:
                block = response.read(1 << 20)
            except OSError as e:
                raise DataError(f"{url}: download interrupted ({e})") from None
            if not block:
                break
            out.write(block)
            sha.update(block)
            md5.update(block)
            progress.advance(task, len(block))
    if total is not None and dest.stat().st_size != total:
        raise DataError(f"{url}: download truncated ({dest.stat().st_size} of {total} bytes)")
    return sha.hexdigest(), md5.hexdigest()


def published_md5(url: str) -> str | None:
    """The digest in GroupLens's ``<url>.md5`` companion file, or None when there is none."""
    try:
        with urllib.request.urlopen(url + ".md5", timeout=_TIMEOUT) as r:  # noqa: S310
            text = r.read(4096).decode("ascii", "replace")
    except (urllib.error.URLError, OSError):
        return None
    match = re.search(r"\b[0-9a-fA-F]{32}\b", text)
    return match.group(0).lower() if match else None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _safe_extract(archive: Path, dest: Path, url: str) -> None:
    try:
        with zipfile.ZipFile(archive) as z:
            for member in z.namelist():
                target = (dest / member).resolve()
                if not str(target).startswith(str(dest.resolve()) + os.sep) and target != dest.resolve():
                    raise DataError(f"{url}: archive member {member!r} would extract outside the cache; refusing")
            z.extractall(dest)
    except zipfile.BadZipFile:
        raise DataError(f"{url}: the download is not a valid zip archive") from None
    # GroupLens zips hold one top-level folder (ml-100k/...); flatten it so files sit in dest.
    entries = [p for p in dest.iterdir() if p.name != "__MACOSX"]
    if len(entries) == 1 and entries[0].is_dir():
        inner = entries[0]
        for p in inner.iterdir():
            os.replace(p, dest / p.name)
        inner.rmdir()
    macosx = dest / "__MACOSX"
    if macosx.exists():
        shutil.rmtree(macosx)


def _member_digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): _sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def _check_pinned(name: str, source: Source, folder: Path) -> None:
    for member, expected in source.members_sha256.items():
        path = folder / member
        if not path.exists():
            raise DataError(f"{name}: {member} is missing from {source.url}")
        got = _sha256(path)
        if got != expected:
            raise DataError(f"{name}: checksum mismatch for {member}: expected sha256 {expected}, got {got}")


def _verify_cached(name: str, folder: Path) -> bool:
    """True when ``folder`` is a complete download whose files still match its manifest."""
    manifest = _read_json(folder / MANIFEST)
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return False
    for member, expected in files.items():
        path = folder / member
        if not path.exists():
            raise DataError(f"{folder}: cached {name} is missing {member}; delete the folder to download again")
        if _sha256(path) != expected:
            raise DataError(
                f"{folder / member}: cached file changed since download (sha256 mismatch); "
                "delete the folder to download again"
            )
    return True


def fetch(name: str, cache_dir: str | Path | None = None) -> Path:
    """Download built-in dataset ``name`` (once) and return the folder holding its files.

    Raises :class:`DataError` when the name is unknown, the download fails, or any checksum does not match.
    """
    if name not in SOURCES:
        raise DataError(f"{name}: no download source; known: {', '.join(sorted(SOURCES))}")
    source = SOURCES[name]
    root = cache_root(cache_dir)
    final = root / name
    if final.exists() and (final / source.marker).exists():
        with _console().status(f"checking cached {name}"):
            if _verify_cached(name, final):
                return final
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        archive = work / "download.zip"
        sha, md5 = _stream(source.url, archive)
        digests_path = root / DIGESTS
        digests = _read_json(digests_path)
        if source.archive_sha256 is not None:
            if sha != source.archive_sha256:
                raise DataError(
                    f"{source.url}: checksum mismatch: expected sha256 {source.archive_sha256}, got {sha}"
                )
        else:
            expected_md5 = published_md5(source.url)
            if expected_md5 is not None and expected_md5 != md5:
                raise DataError(f"{source.url}: checksum mismatch: GroupLens publishes md5 {expected_md5}, got {md5}")
            recorded = digests.get(source.url)
            if recorded is not None and recorded != sha:
                raise DataError(
                    f"{source.url}: checksum mismatch: sha256 {sha} differs from {recorded} recorded in "
                    f"{digests_path} at the first download"
                )
            how = "the published MD5" if expected_md5 else "no published digest (none found)"
            warnings.warn(
                DataWarning(
                    f"{name}: avrec pins no sha256 for {source.url}; checked against {how}"
                    + (", and against the sha256 recorded at the first download" if recorded else "")
                    + f"; recorded sha256 {sha} in {digests_path}"
                ),
                stacklevel=2,
            )
        extracted = work / "files"
        extracted.mkdir()
        with _console().status(f"unpacking {name}"):
            _safe_extract(archive, extracted, source.url)
        if not (extracted / source.marker).exists():
            raise DataError(f"{source.url}: the archive has no {source.marker}; is the URL right?")
        _check_pinned(name, source, extracted)
        manifest = {
            "name": name,
            "url": source.url,
            "archive_sha256": sha,
            "archive_md5": md5,
            "archive_sha256_pinned": source.archive_sha256 is not None,
            "files": _member_digests(extracted),
        }
        (extracted / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        digests[source.url] = sha
        tmp_digests = digests_path.with_name(DIGESTS + f".{os.getpid()}.tmp")
        tmp_digests.write_text(json.dumps(digests, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp_digests, digests_path)
        if final.exists():  # a stale or incomplete copy: move it aside, then swap in the new one
            stale = work / "stale"
            os.replace(final, stale)
        os.replace(extracted, final)
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)


def locate(name: str, data_dir: str | Path | None = None) -> Path:
    """A local copy under ``data_dir`` / ``AVREC_DATA`` if there is one, else :func:`fetch`."""
    from avrec.data.builtin import _local_copy

    source = SOURCES[name]
    local = _local_copy(source.local_names or (name,), source.marker, data_dir)
    return local if local is not None else fetch(name)


# ---- parsers ------------------------------------------------------------------------------------
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)


def _need(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.exists():
        raise DataError(f"{path}: file not found")
    return path


def ml100k_frames(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """MovieLens 100K (``u.item`` ``|``-separated latin-1, ``u.data`` tab-separated) as items and ratings."""
    from avrec.data.builtin import movielens_items

    folder = Path(folder)
    genres = list(ML100K_GENRES)
    genre_file = folder / "u.genre"
    if genre_file.exists():
        pairs = [line.rsplit("|", 1) for line in genre_file.read_text(encoding="latin-1").splitlines() if "|" in line]
        genres = [g for g, _ in sorted(pairs, key=lambda p: int(p[1]))]
    path = _need(folder, "u.item")
    rows = []
    for n, line in enumerate(path.read_text(encoding="latin-1").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) < 5 + len(genres):
            raise DataError(f"{path}: line {n} has {len(parts)} fields, expected {5 + len(genres)}")
        flags = parts[5 : 5 + len(genres)]
        names = [g for g, f in zip(genres, flags) if f.strip() == "1" and g != "unknown"]
        rows.append((parts[0].strip(), parts[1].strip(), "|".join(names)))
    movies = pd.DataFrame(rows, columns=["movieId", "title", "genres"])
    items = movielens_items(movies, None, None)
    ratings = pd.read_csv(
        _need(folder, "u.data"), sep="\t", header=None, names=["user_id", "item_id", "rating", "timestamp"],
        dtype=str, keep_default_na=False,
    )
    ratings["event"] = "rate"
    return items, ratings


def _read_double_colon(path: Path, names: list[str]) -> pd.DataFrame:
    """Read a MovieLens 1M ``::``-separated latin-1 file (titles may contain single colons)."""
    text = path.read_bytes().decode("latin-1")
    rows = [line.split("::", len(names) - 1) for line in text.splitlines() if line.strip()]
    bad = next((n for n, r in enumerate(rows, start=1) if len(r) != len(names)), None)
    if bad is not None:
        raise DataError(f"{path}: line {bad} does not have {len(names)} '::'-separated fields")
    return pd.DataFrame(rows, columns=names)


def ml1m_frames(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """MovieLens 1M (``movies.dat``, ``ratings.dat``; ``::``-separated, latin-1) as items and ratings."""
    from avrec.data.builtin import movielens_items

    folder = Path(folder)
    movies = _read_double_colon(_need(folder, "movies.dat"), ["movieId", "title", "genres"])
    items = movielens_items(movies, None, None)
    raw = _need(folder, "ratings.dat").read_bytes().replace(b"::", b"\t")
    ratings = pd.read_csv(
        io.BytesIO(raw), sep="\t", header=None, names=["user_id", "item_id", "rating", "timestamp"],
        dtype=str, keep_default_na=False, encoding="latin-1",
    )
    ratings["event"] = "rate"
    return items, ratings


def movielens_csv_frames(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A MovieLens CSV release (ml-latest-small, ml-25m: movies/ratings/tags/links.csv) as items and ratings."""
    from avrec.data.builtin import movielens_items

    folder = Path(folder)

    def read(name: str, required: bool = True) -> pd.DataFrame | None:
        p = folder / name
        if not p.exists():
            if required:
                raise DataError(f"{p}: file not found")
            return None
        return pd.read_csv(p, dtype=str, keep_default_na=False)

    items = movielens_items(read("movies.csv"), read("tags.csv", False), read("links.csv", False))
    ratings = read("ratings.csv").rename(columns={"userId": "user_id", "movieId": "item_id"})
    ratings["event"] = "rate"
    return items, ratings


def embedded_ml_latest_small_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """ml-latest-small from the zip inside the package."""
    from avrec.data.builtin import _read_embedded, movielens_items

    items = movielens_items(_read_embedded("movies.csv"), _read_embedded("tags.csv"), _read_embedded("links.csv"))
    ratings = _read_embedded("ratings.csv").rename(columns={"userId": "user_id", "movieId": "item_id"})
    ratings["event"] = "rate"
    return items, ratings


def builtin_frames(name: str, data_dir: str | Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Raw (items, interactions) frames of a built-in dataset in the folder format's columns.

    Unlike a loaded :class:`Dataset`, these keep every source column (rating, timestamp, event, plays),
    so ``avrec data convert`` loses nothing and the converted folder loads to the same dataset.
    """
    from avrec.data.builtin import _local_copy, lastfm_frames

    if name == "ml-latest-small":
        local = _local_copy(("ml-latest-small",), "ratings.csv", data_dir)
        return movielens_csv_frames(local) if local is not None else embedded_ml_latest_small_frames()
    if name == "lastfm-2k":
        return lastfm_frames(locate(name, data_dir))
    if name in FRAME_READERS:
        return FRAME_READERS[name](locate(name, data_dir))
    raise DataError(f"{name}: not a built-in dataset; known: {', '.join(sorted(SOURCES))}")


FRAME_READERS = {"ml-100k": ml100k_frames, "ml-1m": ml1m_frames, "ml-25m": movielens_csv_frames}
_CHECKSUM_FILES = {"ml-100k": ("u.item", "u.data"), "ml-1m": ("movies.dat", "ratings.dat"), "ml-25m": ("movies.csv", "ratings.csv")}


def _make_loader(name: str):
    def load(config, data_dir=None):
        from avrec.data.builtin import _finish
        from avrec.data.io import sha256_file

        folder = locate(name, data_dir)
        items, interactions = FRAME_READERS[name](folder)
        checksums = {f: sha256_file(folder / f) for f in _CHECKSUM_FILES[name]}
        return _finish(items, interactions, config, name, checksums, data_dir)

    load.__name__ = f"load_{name.replace('-', '_')}"
    load.__doc__ = f"{name}: downloaded from {SOURCES[name].url} (or read from AVREC_DATA/{name})."
    return load


def register_loaders() -> None:
    """Add ml-100k, ml-1m and ml-25m to :data:`avrec.data.builtin.BUILTIN`."""
    from avrec.data.builtin import register_builtin

    for name in FRAME_READERS:
        register_builtin(name, _make_loader(name))


__all__ = [
    "SOURCES", "Source", "fetch", "locate", "cache_root", "published_md5", "builtin_frames",
    "ml100k_frames", "ml1m_frames", "movielens_csv_frames", "register_loaders",
]
