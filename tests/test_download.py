"""Downloads against a local HTTP server on 127.0.0.1, and the MovieLens 100K/1M/25M parsers on tiny files."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading
import warnings
import zipfile
from pathlib import Path

import pytest

from avrec.data.builtin import BUILTIN, load_dataset
from avrec.data.sources import MANIFEST, Source, download_sources, fetch, lastfm_2k, ml_100k
from avrec.data.sources.ml_1m import read_frames as ml1m_frames
from avrec.data.sources.ml_100k import read_frames as ml100k_frames
from avrec.data.sources.movielens import movielens_csv_frames
from avrec.errors import DataError, DataWarning

U_ITEM = (
    "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
    "2|GoldenEye (1995)|01-Jan-1995||http://x|0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0\n"
    "3|Caf\xe9 au lait (1994)|01-Jan-1994||http://x|1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
)
U_DATA = "1\t1\t5\t874965758\n1\t2\t3\t876893171\n2\t1\t4\t878542960\n2\t3\t2\t876893119\n3\t2\t1\t889751712\n"


def ml100k_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("ml-100k/u.item", U_ITEM.encode("latin-1"))
        z.writestr("ml-100k/u.data", U_DATA)
        z.writestr("ml-100k/README", "tiny test copy")
    return buf.getvalue()


class Server:
    """A static file server on 127.0.0.1 that counts requests per path."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.hits: dict[str, int] = {}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server naming
                outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def tiny_source(server, monkeypatch, tmp_path):
    """Point the ml-100k source at the local server and the cache at tmp_path."""
    body = ml100k_zip()
    server.files["/ml-100k.zip"] = body
    server.files["/ml-100k.zip.md5"] = f"MD5 (ml-100k.zip) = {hashlib.md5(body).hexdigest()}\n".encode()
    monkeypatch.setattr(ml_100k, "SOURCE", Source(f"{server.url}/ml-100k.zip", "u.data"))
    monkeypatch.setenv("AVREC_CACHE", str(tmp_path / "avrec-cache"))  # datasets go to its datasets/
    monkeypatch.delenv("AVREC_DATA", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    return body


def fetch_recording(name: str, **kw) -> tuple[Path, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        path = fetch(name, **kw)
    return path, [str(w.message) for w in caught if issubclass(w.category, DataWarning)]


def test_download_checks_md5_records_sha256_and_reuses_the_cache(server, tiny_source, tmp_path):
    path, warns = fetch_recording("ml-100k")
    assert path == tmp_path / "avrec-cache" / "datasets" / "ml-100k"
    assert (path / "u.data").read_text() == U_DATA  # the zip's top folder is flattened
    sha = hashlib.sha256(tiny_source).hexdigest()
    assert len(warns) == 1 and "pins no sha256" in warns[0] and "published MD5" in warns[0] and sha in warns[0]
    digests = json.loads((tmp_path / "avrec-cache" / "datasets" / "digests.json").read_text())
    assert digests == {f"{server.url}/ml-100k.zip": sha}
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["archive_sha256"] == sha and not manifest["archive_sha256_pinned"]
    assert set(manifest["files"]) == {"u.item", "u.data", "README"}
    assert server.hits == {"/ml-100k.zip": 1, "/ml-100k.zip.md5": 1}
    assert [p.name for p in (tmp_path / "avrec-cache" / "datasets").iterdir() if p.name.startswith(".")] == []  # no temp left

    again, warns = fetch_recording("ml-100k")
    assert again == path and warns == []
    assert server.hits == {"/ml-100k.zip": 1, "/ml-100k.zip.md5": 1}  # reused, no new request

    ds = load_dataset("ml-100k")  # the registered loader reads the cached copy
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (3, 3, 5)
    assert server.hits["/ml-100k.zip"] == 1


def test_md5_mismatch_is_a_clear_error_and_leaves_nothing(server, tiny_source, tmp_path):
    server.files["/ml-100k.zip.md5"] = b"MD5 (ml-100k.zip) = 0123456789abcdef0123456789abcdef\n"
    with pytest.raises(DataError, match=r"ml-100k\.zip: checksum mismatch: GroupLens publishes md5 0123456789abcdef"):
        fetch("ml-100k")
    assert not (tmp_path / "avrec-cache" / "datasets" / "ml-100k").exists()
    assert [p.name for p in (tmp_path / "avrec-cache" / "datasets").iterdir()] == []


def test_pinned_archive_sha256_mismatch(server, tiny_source, monkeypatch):
    monkeypatch.setattr(ml_100k, "SOURCE", Source(f"{server.url}/ml-100k.zip", "u.data", archive_sha256="0" * 64))
    with pytest.raises(DataError, match=r"checksum mismatch: expected sha256 0{64}, got [0-9a-f]{64}"):
        fetch("ml-100k")


def test_pinned_archive_sha256_match_needs_no_md5(server, tiny_source, monkeypatch):
    sha = hashlib.sha256(tiny_source).hexdigest()
    monkeypatch.setattr(ml_100k, "SOURCE", Source(f"{server.url}/ml-100k.zip", "u.data", archive_sha256=sha))
    path, warns = fetch_recording("ml-100k")
    assert (path / "u.item").exists() and warns == []
    assert "/ml-100k.zip.md5" not in server.hits


def test_pinned_member_sha256_mismatch(server, tiny_source, monkeypatch, tmp_path):
    src = Source(f"{server.url}/ml-100k.zip", "u.data", members_sha256={"u.data": "f" * 64})
    monkeypatch.setattr(ml_100k, "SOURCE", src)
    with pytest.raises(DataError, match=r"ml-100k: checksum mismatch for u\.data: expected sha256 f{64}"):
        fetch_recording("ml-100k")
    assert not (tmp_path / "avrec-cache" / "datasets" / "ml-100k").exists()


def test_recorded_sha256_guards_later_downloads(server, tiny_source, tmp_path):
    path, _ = fetch_recording("ml-100k")
    import shutil

    shutil.rmtree(path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("ml-100k/u.data", "changed\n")
    server.files["/ml-100k.zip"] = buf.getvalue()
    server.files.pop("/ml-100k.zip.md5")  # no companion: only the recorded digest can catch the change
    with pytest.raises(DataError, match=r"differs from [0-9a-f]{64} recorded in .*digests\.json"):
        fetch("ml-100k")


def test_missing_md5_companion_still_downloads_with_a_warning(server, tiny_source):
    server.files.pop("/ml-100k.zip.md5")
    path, warns = fetch_recording("ml-100k")
    assert (path / "u.data").exists()
    assert len(warns) == 1 and "no published digest" in warns[0]


def test_cached_file_changed_after_download(server, tiny_source):
    path, _ = fetch_recording("ml-100k")
    (path / "u.data").write_text("tampered\n")
    with pytest.raises(DataError, match=r"u\.data: cached file changed since download"):
        fetch("ml-100k")


def test_http_errors_and_bad_archives(server, tiny_source, monkeypatch):
    monkeypatch.setattr(ml_100k, "SOURCE", Source(f"{server.url}/missing.zip", "u.data"))
    with pytest.raises(DataError, match=r"missing\.zip: download failed with HTTP 404"):
        fetch("ml-100k")
    server.files["/junk.zip"] = b"this is not a zip"
    monkeypatch.setattr(ml_100k, "SOURCE", Source(f"{server.url}/junk.zip", "u.data"))
    with pytest.raises(DataError, match=r"junk\.zip: the download is not a valid zip archive"):
        fetch_recording("ml-100k")
    with pytest.raises(DataError, match=r"no download source"):
        fetch("ml-nope")


def test_unreachable_server_names_the_way_out(monkeypatch, tmp_path):
    monkeypatch.setenv("AVREC_CACHE", str(tmp_path))
    monkeypatch.setattr(ml_100k, "SOURCE", Source("http://127.0.0.1:9/ml-100k.zip", "u.data"))
    with pytest.raises(DataError, match=r"download failed .*AVREC_DATA"):
        fetch("ml-100k")


def test_zip_with_path_traversal_is_refused(server, tiny_source):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("../evil.txt", "x")
        z.writestr("u.data", U_DATA)
    server.files["/ml-100k.zip"] = buf.getvalue()
    server.files.pop("/ml-100k.zip.md5")
    with pytest.raises(DataError, match=r"would extract outside the cache"):
        fetch_recording("ml-100k")


# ---- parsers and local copies ---------------------------------------------------------------------
def test_ml100k_parser(tmp_path):
    (tmp_path / "u.item").write_bytes(U_ITEM.encode("latin-1"))
    (tmp_path / "u.data").write_text(U_DATA)
    items, ratings = ml100k_frames(tmp_path)
    assert items["item_id"].tolist() == ["1", "2", "3"]
    assert items["title"].tolist() == ["Toy Story", "GoldenEye", "Café au lait"]
    assert items["year"].tolist() == ["1995", "1995", "1994"]
    assert items["genres"].tolist() == ["Animation|Children's|Comedy", "Action|Adventure|Thriller", ""]
    assert ratings.columns.tolist() == ["user_id", "item_id", "rating", "timestamp", "event"]
    assert ratings["rating"].tolist() == ["5", "3", "4", "2", "1"]


def test_ml100k_bad_line(tmp_path):
    (tmp_path / "u.item").write_text("1|Toy Story (1995)|x\n")
    (tmp_path / "u.data").write_text(U_DATA)
    with pytest.raises(DataError, match=r"u\.item: line 1 has 3 fields, expected 24"):
        ml100k_frames(tmp_path)


def test_ml1m_parser(tmp_path):
    (tmp_path / "movies.dat").write_bytes(
        "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Am\xe9lie: A Tale (2001)::Comedy|Romance\n".encode("latin-1")
    )
    (tmp_path / "ratings.dat").write_text("1::1::5::978300760\n1::2::3::978302109\n2::2::4::978301968\n")
    items, ratings = ml1m_frames(tmp_path)
    assert items["title"].tolist() == ["Toy Story", "Amélie: A Tale"]
    assert items["genres"].tolist() == ["Animation|Children's|Comedy", "Comedy|Romance"]
    assert ratings[["user_id", "item_id", "rating", "timestamp"]].values.tolist() == [
        ["1", "1", "5", "978300760"], ["1", "2", "3", "978302109"], ["2", "2", "4", "978301968"],
    ]
    (tmp_path / "movies.dat").write_text("1::Broken\n")
    with pytest.raises(DataError, match=r"movies\.dat: line 1 does not have 3"):
        ml1m_frames(tmp_path)


def test_ml25m_csv_parser_and_local_copy_wins(tmp_path, monkeypatch):
    folder = tmp_path / "data" / "ml-25m"
    folder.mkdir(parents=True)
    (folder / "movies.csv").write_text('movieId,title,genres\n1,"Heat, The (1995)",Action|Crime\n2,Up (2009),(no genres listed)\n')
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n7,1,4.5,1\n7,2,2.0,2\n8,2,5.0,3\n")
    (folder / "tags.csv").write_text("userId,movieId,tag,timestamp\n7,1,Heist,1\n8,1,heist,2\n")
    items, ratings = movielens_csv_frames(folder)
    assert items["title"].tolist() == ["Heat, The", "Up"]
    assert items["genres"].tolist() == ["Action|Crime", ""]
    assert items["user_tags"].tolist() == ["heist", ""]  # MovieLens user tags are kept apart from item tags
    # AVREC_DATA holding ml-25m wins over downloading: no server exists and no cache is written.
    monkeypatch.setenv("AVREC_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("AVREC_CACHE", str(tmp_path / "avrec-cache"))  # datasets go to its datasets/
    ds = load_dataset("ml-25m")
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (2, 2, 3)
    assert set(ds.checksums) == {"movies.csv", "ratings.csv"}
    assert not (tmp_path / "avrec-cache" / "datasets").exists()
    ds = load_dataset("ml-25m", data_dir=tmp_path / "data")
    assert ds.name == "ml-25m"


def test_builtin_registry_lists_downloadable_datasets():
    assert {"ml-latest-small", "lastfm-2k", "ml-100k", "ml-1m", "ml-25m"} <= set(BUILTIN)
    for name, src in download_sources().items():
        assert src.url.startswith("https://files.grouplens.org/datasets/"), name


def test_pinned_lastfm_digests_match_the_shared_copy(shared_data):
    folder = shared_data / "hetrec2011-lastfm-2k"
    for member, expected in lastfm_2k.SOURCE.members_sha256.items():
        assert hashlib.sha256((folder / member).read_bytes()).hexdigest() == expected, member


# ---- the registry ---------------------------------------------------------------------------------
def test_registry_is_a_static_table_that_imports_no_dataset_module():
    import subprocess
    import sys

    code = (
        "import sys; import avrec.data.sources as s; "
        "assert 'ml-100k' in s.BUILTIN and 'ml-latest-small' in s.dataset_names(); "
        "loaded = sorted(m for m in sys.modules if m.startswith('avrec.data.sources.') "
        "and m.rsplit('.', 1)[1] in set(s.BUILTIN.values())); "
        "print(loaded)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # importing the registry loads, reads and registers nothing
    with pytest.raises(TypeError):
        BUILTIN["my-set"] = "my_set"  # type: ignore[index]  # a static table, not a runtime registry


def test_every_registered_module_provides_the_dataset_protocol():
    from avrec.data.sources import dataset_module

    for name in BUILTIN:
        module = dataset_module(name)
        assert module.NAME == name
        assert isinstance(module.SOURCE, Source) and module.SOURCE.marker
        assert callable(module.frames) and callable(module.load)
    with pytest.raises(DataError, match=r"ml-nope: not a built-in dataset; known: lastfm-2k, ml-100k"):
        dataset_module("ml-nope")
