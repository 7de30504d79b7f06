"""Download a public dataset once, check it, and keep it in the cache; find local copies.

This module knows no dataset by name: each dataset module (see :mod:`avrec.data.sources.registry`)
describes its archive with a :class:`Source`, and :func:`locate` / :func:`fetch_source` do the rest.

``fetch_source`` downloads the archive into the cache (``$AVREC_CACHE/datasets``, default
``~/.cache/avrec/datasets``), streaming it to a temporary file while hashing it, checks it, unzips it
into a temporary folder and renames that folder into place, so an interrupted download never leaves a
half-written dataset behind.

What is checked, honestly:

- **Pinned member digests.** For the files whose exact bytes we know (the ``sha256`` column of the
  READMEs under ``shared/data``: every Last.fm 2K data file, and ml-latest-small's ``README.txt``),
  each extracted member must match its pinned sha256.
- **Archive digests.** We could not download the official zips while writing this (no network), so
  no archive sha256 is pinned (``archive_sha256=None``). Instead the archive is checked against
  GroupLens's published ``<url>.md5`` companion file when the server has one, and its sha256 is
  recorded in ``<cache>/digests.json`` on first download (trust on first use); a later download of
  the same URL must match it. A warning says so every time an unpinned archive is used.
- **Cache integrity.** The sha256 of every extracted file is written to ``<dataset>/avrec-manifest.json``
  and re-checked each time the cached copy is used.

A local copy named by ``AVREC_DATA`` (or ``--data-dir``) always wins over downloading (:func:`locate`).
"""

from __future__ import annotations

import hashlib
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

from avrec.config import cache_home
from avrec.data.io import sha256_file
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


MANIFEST = "avrec-manifest.json"
DIGESTS = "digests.json"
_TIMEOUT = 60


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The download cache: ``cache_dir``, else ``datasets`` in avrec's cache (``$AVREC_CACHE/datasets``,
    default ``~/.cache/avrec/datasets``; the same root as the embedding cache)."""
    return Path(cache_dir) if cache_dir else cache_home("datasets")


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
        str(p.relative_to(folder)): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def _check_pinned(name: str, source: Source, folder: Path) -> None:
    for member, expected in source.members_sha256.items():
        path = folder / member
        if not path.exists():
            raise DataError(f"{name}: {member} is missing from {source.url}")
        got = sha256_file(path)
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
        if sha256_file(path) != expected:
            raise DataError(
                f"{folder / member}: cached file changed since download (sha256 mismatch); "
                "delete the folder to download again"
            )
    return True


def fetch_source(name: str, source: Source, cache_dir: str | Path | None = None) -> Path:
    """Download ``source`` (once) into ``<cache>/<name>`` and return the folder holding its files.

    Raises :class:`DataError` when the download fails or any checksum does not match.
    """
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


def data_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """Folders searched for local dataset copies: ``data_dir``, then ``AVREC_DATA`` (``os.pathsep`` lists)."""
    out: list[Path] = []
    for d in (data_dir, os.environ.get("AVREC_DATA")):
        if d:
            out.extend(Path(p) for p in str(d).split(os.pathsep) if p)
    return out


def local_copy(names: tuple[str, ...], marker: str, data_dir: str | Path | None = None) -> Path | None:
    """The first ``<root>/<name>`` (or ``<root>`` itself) holding ``marker`` under :func:`data_dirs`."""
    for root in data_dirs(data_dir):
        for name in names:
            if (root / name / marker).exists():
                return root / name
        if (root / marker).exists():
            return root
    return None


def locate(name: str, source: Source, data_dir: str | Path | None = None) -> Path:
    """A local copy under ``data_dir`` / ``AVREC_DATA`` if there is one, else the (downloaded) cached copy."""
    local = local_copy(source.local_names or (name,), source.marker, data_dir)
    return local if local is not None else fetch_source(name, source)


__all__ = [
    "GROUPLENS", "MANIFEST", "Source", "cache_root", "data_dirs", "fetch_source", "local_copy", "locate",
    "published_md5",
]
