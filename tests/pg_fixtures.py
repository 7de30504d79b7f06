"""A throwaway PostgreSQL server for the store tests.

``AVREC_TEST_POSTGRES=postgresql://…`` uses that server (its user must be allowed to CREATE DATABASE).
Otherwise the session starts its own: ``initdb`` into a temporary folder, ``pg_ctl start`` listening on
127.0.0.1 on a free port (its socket in the same folder), stopped and deleted at the end. As root the
cluster runs as ``nobody`` (PostgreSQL refuses to run as root). When neither works the PostgreSQL tests
skip with the reason, loudly: ``pytest -ra`` lists it.

Each test gets its own database (``pg_url``), so tests never see each other's rows.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """A PostgreSQL server: ``url`` of its ``postgres`` database; ``stop()``/``start()`` for recovery tests
    (only for a cluster this session started)."""

    def __init__(self, url: str, folder: Path | None = None, pg_ctl: str | None = None, user: str | None = None):
        self.url = url
        self.folder = folder
        self.pg_ctl = pg_ctl
        self.user = user

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        assert self.pg_ctl is not None and self.folder is not None, "not a cluster this session started"
        cmd = [self.pg_ctl, *args]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    def start(self) -> None:
        assert self.folder is not None
        port = self.url.rsplit(":", 1)[1].split("/")[0]
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {self.folder} -c fsync=on"
        done = self._run("-D", str(self.folder / "data"), "-l", str(self.folder / "log"), "-w", "-o", options,
                         "start")
        if done.returncode != 0:
            log = (self.folder / "log").read_text(errors="replace")[-2000:] if (self.folder / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {done.stderr.strip()} {log}")

    def stop(self) -> None:
        assert self.folder is not None
        self._run("-D", str(self.folder / "data"), "-m", "fast", "-w", "stop")

    def new_database(self) -> str:
        """A fresh empty database on this server; its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url.rsplit("/", 1)[0] + "/" + name


def _start_own() -> tuple[Cluster | None, str]:
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if not initdb or not pg_ctl:
        return None, "PostgreSQL is not installed (no initdb/pg_ctl; Debian: apt-get install postgresql)"
    folder = Path(tempfile.mkdtemp(prefix="avrec-pg-"))
    user = None
    if os.geteuid() == 0:
        user = "nobody"
        shutil.chown(folder, user)
        folder.chmod(0o700)
    cmd = [initdb, "-D", str(folder / "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        shutil.rmtree(folder, ignore_errors=True)
        return None, f"initdb could not run: {e}"
    if done.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        return None, f"initdb failed: {done.stderr.strip()[-500:]}"
    cluster = Cluster(f"postgresql://postgres@127.0.0.1:{_free_port()}/postgres", folder, pg_ctl, user)
    try:
        cluster.start()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        shutil.rmtree(folder, ignore_errors=True)
        return None, f"PostgreSQL did not start: {e}"
    return cluster, ""


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """The session's PostgreSQL server (``AVREC_TEST_POSTGRES`` or a throwaway one); skips when none starts."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("PostgreSQL tests skipped: psycopg is not installed (pip install 'psycopg[binary]')")
    given = os.environ.get("AVREC_TEST_POSTGRES")
    if given:
        yield Cluster(given)
        return
    cluster, why = _start_own()
    if cluster is None:
        pytest.skip(f"PostgreSQL tests skipped: {why}")
    try:
        yield cluster
    finally:
        cluster.stop()
        assert cluster.folder is not None
        shutil.rmtree(cluster.folder, ignore_errors=True)


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> str:
    """A fresh database's URL on the session's PostgreSQL server."""
    return pg_cluster.new_database()
