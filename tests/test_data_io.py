"""Bad input (issue 2 §6): each case through ``load_folder`` and through ``avrec data validate``.

Every error must be one line naming the file and row or field, with exit code 2 and no traceback;
every warning must carry a count of skipped rows.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from avrec.cli import main
from avrec.data.io import DataConfig, load_folder, read_table
from avrec.errors import DataError, DataWarning

ITEMS = "item_id,title,genres\ni1,Alpha,Drama|Comedy\ni2,Beta,Drama\ni3,Gamma,\ni4,Delta,Horror\n"
INTERACTIONS = (
    "user_id,item_id,rating,timestamp\n"
    "u1,i1,5,100\nu1,i2,3,110\nu1,i3,4,120\n"
    "u2,i2,2,100\nu2,i4,5,130\n"
    "u3,i1,4,90\nu3,i3,1,95\nu3,i4,3,99\n"
)


def make_folder(tmp_path: Path, items: str | bytes = ITEMS, interactions: str | bytes = INTERACTIONS) -> Path:
    folder = tmp_path / "ds"
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in (("items.csv", items), ("interactions.csv", interactions)):
        data = content.encode("utf-8") if isinstance(content, str) else content
        (folder / name).write_bytes(data)
    return folder


def validate(folder: Path, capsys, *extra: str) -> tuple[int, str, str]:
    code = main(["data", "validate", str(folder), *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_error_line(err: str, *needles: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def load_quiet(folder: Path, config: DataConfig | None = None):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        ds = load_folder(folder, config)
    return ds, [str(w.message) for w in caught if issubclass(w.category, DataWarning)]


def test_clean_folder_loads_and_validates(tmp_path, capsys):
    folder = make_folder(tmp_path)
    ds, warns = load_quiet(folder)
    assert warns == []
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (3, 4, 8)
    assert ds.items["genres"].tolist() == ["Drama|Comedy", "Drama", "", "Horror"]
    assert set(ds.checksums) == {"items.csv", "interactions.csv"}
    code, out, err = validate(folder, capsys)
    assert code == 0 and err == ""
    assert out.startswith("OK: ds: 3 users, 4 items, 8 interactions; 0 warnings")


def test_dataset_named_after_the_folder_even_when_given_as_dot(tmp_path, monkeypatch):
    folder = make_folder(tmp_path)
    monkeypatch.chdir(folder)
    ds, _ = load_quiet(Path("."))
    assert ds.name == "ds"


def test_missing_required_column(tmp_path, capsys):
    folder = make_folder(tmp_path, interactions="user,item_id\nu1,i1\n")
    with pytest.raises(DataError, match=r"interactions\.csv: missing required column 'user_id'"):
        load_folder(folder)
    code, out, err = validate(folder, capsys)
    assert code == 2 and out == ""
    assert_one_error_line(err, "interactions.csv", "'user_id'")

    folder = make_folder(tmp_path / "b", items="id,title\ni1,A\n")
    code, _, err = validate(folder, capsys)
    assert code == 2
    assert_one_error_line(err, "items.csv", "'item_id'")


def test_non_utf8_text(tmp_path, capsys):
    folder = make_folder(tmp_path, items=b"item_id,title\ni1,Alpha\ni2,Caf\xe9\n")
    with pytest.raises(DataError, match=r"items\.csv: line 3 is not valid UTF-8 \(byte 0xe9\)"):
        load_folder(folder)
    code, _, err = validate(folder, capsys)
    assert code == 2
    assert_one_error_line(err, "items.csv", "line 3", "UTF-8")


def test_utf8_bom_is_accepted(tmp_path):
    folder = make_folder(tmp_path, items="\ufeff" + ITEMS)
    ds, _ = load_quiet(folder)
    assert ds.items.columns[0] == "item_id"


def test_duplicate_item_ids(tmp_path, capsys):
    folder = make_folder(tmp_path, items="item_id,title\ni1,A\ni2,B\ni1,C\ni3,D\n")
    with pytest.raises(DataError, match=r"items\.csv: duplicate item_id 'i1' \(data rows at lines 2, 4\)"):
        load_folder(folder)
    code, _, err = validate(folder, capsys)
    assert code == 2
    assert_one_error_line(err, "items.csv", "duplicate item_id 'i1'", "lines 2, 4")


def test_duplicate_line_numbers_survive_skipped_rows(tmp_path):
    folder = make_folder(tmp_path, items="item_id,title\n,skipped\ni1,A\ni1,B\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.raises(DataError, match=r"lines 3, 4"):
            load_folder(folder)


def test_interactions_naming_unknown_items_are_skipped_with_a_count(tmp_path, capsys):
    folder = make_folder(tmp_path, interactions=INTERACTIONS + "u4,nope,5,1\nu1,zzz,4,2\n")
    ds, warns = load_quiet(folder)
    assert ds.n_interactions == 8
    assert "u4" not in set(ds.user_ids)
    assert len(warns) == 1
    assert "interactions.csv: skipped 2 row(s) that name an item missing from items (first at line 10)" in warns[0]
    code, out, err = validate(folder, capsys)
    assert code == 0
    assert out.startswith("OK: ds: 3 users, 4 items, 8 interactions; 1 warning")
    assert err.strip().splitlines() == [f"warning: {warns[0]}"]
    code, _, err = validate(folder, capsys, "--strict")
    assert code == 2 and "--strict" in err


def test_empty_files(tmp_path, capsys):
    folder = make_folder(tmp_path, items="")
    with pytest.raises(DataError, match=r"items\.csv: the file is empty"):
        load_folder(folder)
    code, _, err = validate(folder, capsys)
    assert code == 2
    assert_one_error_line(err, "items.csv", "empty")

    folder = make_folder(tmp_path / "b", interactions="user_id,item_id,rating\n")
    with pytest.raises(DataError, match=r"interactions\.csv: the file has a header but no interactions"):
        load_folder(folder)
    code, _, err = validate(folder, capsys)
    assert code == 2
    assert_one_error_line(err, "interactions.csv", "no interactions")

    folder = make_folder(tmp_path / "c", items="item_id,title\n")
    code, _, err = validate(folder, capsys)
    assert code == 2
    assert_one_error_line(err, "items.csv", "no items")

    folder = make_folder(tmp_path / "d", interactions="\n\n")
    code, _, err = validate(folder, capsys)
    assert code == 2
    assert_one_error_line(err, "interactions.csv", "empty")


def test_nan_and_non_numeric_ratings_are_skipped_with_a_count(tmp_path, capsys):
    bad = INTERACTIONS + "u1,i4,NaN,1\nu2,i1,abc,2\nu2,i3,,3\nu3,i2,inf,4\n"
    folder = make_folder(tmp_path, interactions=bad)
    ds, warns = load_quiet(folder)
    # NaN, "abc" and inf are skipped; an empty rating means "no rating" and is kept.
    assert ds.n_interactions == 9
    assert len(warns) == 1 and "skipped 3 row(s) with a non-numeric or NaN rating (first at line 10)" in warns[0]
    code, out, err = validate(folder, capsys)
    assert code == 0 and "1 warning" in out and "skipped 3 row(s)" in err
    # a rating threshold keeps rows >= threshold and rows without a rating
    ds, _ = load_quiet(folder, DataConfig(rating_threshold=4))
    assert ds.n_interactions == 5  # 4 rated >= 4, plus the unrated row


def test_non_numeric_plays_are_skipped(tmp_path):
    folder = make_folder(tmp_path, interactions="user_id,item_id,plays\nu1,i1,3\nu1,i2,x\nu2,i3,0\nu2,i4,10\n")
    ds, warns = load_quiet(folder, DataConfig(weighting="value"))
    assert ds.n_interactions == 2
    assert sorted(ds.weight.tolist()) == [3.0, 10.0]
    assert any("non-numeric or NaN plays" in w for w in warns) and any("plays <= 0" in w for w in warns)


@pytest.mark.parametrize(
    "interactions, needles",
    [
        ("user_id,item_id,rating\nu1,i1,5,EXTRA\nu1,i2,3\n", ("line 2 has more fields than the header's 3",)),
        ("user_id,item_id,rating\nu1,i1,5\nu1,i2,3,EXTRA\n", ("line 3 has 4 fields, more than the header's 3",)),
        ("user_id,item_id,rating\nu1,i1,5\nu1,i2\nu2,i3,4\n", ("line 3 has fewer fields than the header's 3",)),
        ("user_id,item_id,rating\nu1\nu1,i2\nu2,i3,4\n", ("line 2 has fewer fields", "(2 such lines)")),
    ],
    ids=["too-many-first-row", "too-many-later-row", "too-few", "too-few-twice"],
)
def test_ragged_rows(tmp_path, capsys, interactions, needles):
    folder = make_folder(tmp_path, interactions=interactions)
    with pytest.raises(DataError) as info:
        load_folder(folder)
    assert "interactions.csv" in str(info.value)
    for needle in needles:
        assert needle in str(info.value)
    code, _, err = validate(folder, capsys)
    assert code == 2
    assert_one_error_line(err, "interactions.csv", *needles)


def test_trailing_empty_field_is_not_ragged(tmp_path):
    folder = make_folder(tmp_path, items="item_id,title,tags\ni1,A,\ni2,B,x|y\n",
                         interactions="user_id,item_id\nu1,i1\nu1,i2\n")
    ds, warns = load_quiet(folder)
    assert ds.items["tags"].tolist() == ["", "x|y"] and warns == []


def test_quoted_fields_with_commas_and_newlines(tmp_path):
    items = 'item_id,title,overview\ni1,"Hello, World","line one\nline two"\ni2,B,\n'
    ds, _ = load_quiet(make_folder(tmp_path, items=items, interactions="user_id,item_id\nu1,i1\n"))
    assert ds.items["title"].tolist() == ["Hello, World", "B"]
    assert ds.items["overview"][0] == "line one\nline two"


def test_parquet_input_works(tmp_path, capsys):
    csv_folder = make_folder(tmp_path / "csv")
    pq = tmp_path / "pq"
    pq.mkdir()
    items = pd.read_csv(csv_folder / "items.csv", keep_default_na=False)
    items.to_parquet(pq / "items.parquet", index=False)
    inter = pd.read_csv(csv_folder / "interactions.csv")
    inter["rating"] = inter["rating"].astype(float)
    inter["timestamp"] = pd.to_datetime(inter["timestamp"], unit="s")  # parquet timestamps become unix seconds
    inter.to_parquet(pq / "interactions.parquet", index=False)
    a, _ = load_quiet(csv_folder)
    b, _ = load_quiet(pq)
    assert (b.n_users, b.n_items, b.n_interactions) == (a.n_users, a.n_items, a.n_interactions)
    assert np.array_equal(np.sort(a.timestamp), np.sort(b.timestamp))
    assert b.items["genres"].tolist() == a.items["genres"].tolist()
    assert set(b.checksums) == {"items.parquet", "interactions.parquet"}
    code, out, _ = validate(pq, capsys)
    assert code == 0 and out.startswith("OK: pq: 3 users, 4 items, 8 interactions")


def test_broken_parquet_is_a_data_error(tmp_path, capsys):
    folder = tmp_path / "pq"
    folder.mkdir()
    (folder / "items.parquet").write_bytes(b"not parquet at all")
    (folder / "interactions.csv").write_text("user_id,item_id\nu1,i1\n")
    code, _, err = validate(folder, capsys)
    assert code == 2
    assert_one_error_line(err, "items.parquet", "not a readable Parquet file")


def test_missing_files_and_folders(tmp_path, capsys):
    code, _, err = validate(tmp_path / "nowhere", capsys)
    assert code == 2
    assert_one_error_line(err, "nowhere")
    folder = tmp_path / "half"
    folder.mkdir()
    (folder / "items.csv").write_text(ITEMS)
    code, _, err = validate(folder, capsys)
    assert code == 2
    assert_one_error_line(err, "no interactions.csv or interactions.parquet")


def test_read_table_fast_path_does_not_flag_clean_big_files(tmp_path):
    n = 20000
    path = tmp_path / "big.csv"
    frame = pd.DataFrame({"user_id": np.arange(n) % 97, "item_id": np.arange(n) % 31, "rating": 4})
    frame.to_csv(path, index=False)
    df = read_table(path)
    assert len(df) == n and list(df.columns) == ["user_id", "item_id", "rating"]


# ---- issue 11: bare carriage returns and duplicate header columns ----------------------------------
@pytest.mark.parametrize(
    "name, items, interactions, line",
    [
        ("items.csv", "item_id,title,genres\ni1,Alpha,Drama\ni2,Be\rta,Drama\ni3,Gamma,\n", INTERACTIONS, 3),
        ("items.csv", "item_id,title\ni1,Alpha\ni2,Beta\ni3,Gam\rma\n", INTERACTIONS, 4),
        ("interactions.csv", ITEMS, "user_id,item_id,rating\nu1,i1,5\nu1,i2,3\nu2,i\r3,4\n", 4),
        ("interactions.csv", ITEMS, "user_id,item_id,rating\nu1,i1,5,x\ry\nu1,i2,3\n", 2),
    ],
    ids=["items-too-few", "items-last-row", "interactions-too-few", "interactions-too-many"],
)
def test_bare_carriage_return_in_an_unquoted_field(tmp_path, capsys, name, items, interactions, line):
    folder = make_folder(tmp_path, items=items, interactions=interactions)
    needles = (name, f"line {line} has a bare carriage return", "unquoted field")
    with pytest.raises(DataError) as info:
        load_folder(folder)
    for needle in needles:
        assert needle in str(info.value)
    code, out, err = validate(folder, capsys)
    assert code == 2 and out == ""
    assert_one_error_line(err, *needles)


def test_crlf_and_cr_only_files_still_load(tmp_path, capsys):
    crlf = make_folder(tmp_path / "crlf", items=ITEMS.replace("\n", "\r\n"), interactions=INTERACTIONS.replace("\n", "\r\n"))
    ds, warns = load_quiet(crlf)
    assert warns == [] and (ds.n_users, ds.n_items, ds.n_interactions) == (3, 4, 8)
    assert ds.items["genres"].tolist() == ["Drama|Comedy", "Drama", "", "Horror"]
    code, out, _ = validate(crlf, capsys)
    assert code == 0 and out.startswith("OK: ds: 3 users, 4 items, 8 interactions")
    # a quoted carriage return is data, not a line break
    quoted = make_folder(tmp_path / "quoted", items='item_id,title\ni1,"A\rB"\ni2,C\n',
                         interactions="user_id,item_id\nu1,i1\nu1,i2\n")
    ds, _ = load_quiet(quoted)
    assert ds.items["title"].tolist() == ["A\rB", "C"]
    # old Mac line endings (CR only) load, and a ragged row there is still named by its line
    cr = make_folder(tmp_path / "cr", items=ITEMS.replace("\n", "\r"), interactions=INTERACTIONS.replace("\n", "\r"))
    ds, _ = load_quiet(cr)
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (3, 4, 8)
    ragged = make_folder(tmp_path / "cr-ragged", items=ITEMS.replace("\n", "\r"),
                         interactions="user_id,item_id,rating\ru1,i1,5\ru1,i2\ru2,i3,4\r")
    with pytest.raises(DataError, match=r"interactions\.csv: line 3 has fewer fields than the header's 3"):
        load_folder(ragged)
    # CRLF with a ragged row keeps the ragged-row message
    ragged = make_folder(tmp_path / "crlf-ragged", interactions="user_id,item_id,rating\r\nu1,i1,5\r\nu1,i2\r\n")
    with pytest.raises(DataError, match=r"interactions\.csv: line 3 has fewer fields than the header's 3"):
        load_folder(ragged)


@pytest.mark.parametrize(
    "items, interactions, name, needles",
    [
        ("item_id,title,year,title\ni1,A,1999,B\ni2,C,2000,D\n", INTERACTIONS, "items.csv",
         ("column 'title' appears twice in the header (columns 2 and 4)",)),
        ("item_id,title, title\ni1,A,B\ni2,C,D\n", INTERACTIONS, "items.csv",
         ("column 'title' appears twice in the header (columns 2 and 3)",)),
        ("item_id,x,x,x\ni1,a,b,c\n", INTERACTIONS, "items.csv",
         ("column 'x' appears 3 times in the header (columns 2, 3 and 4)",)),
        (ITEMS, "user_id,item_id,user_id\nu1,i1,u2\n", "interactions.csv",
         ("column 'user_id' appears twice in the header (columns 1 and 3)",)),
    ],
    ids=["items", "whitespace", "three-times", "interactions"],
)
def test_duplicate_header_columns(tmp_path, capsys, items, interactions, name, needles):
    folder = make_folder(tmp_path, items=items, interactions=interactions)
    with pytest.raises(DataError) as info:
        load_folder(folder)
    assert name in str(info.value)
    for needle in needles:
        assert needle in str(info.value)
    code, _, err = validate(folder, capsys)
    assert code == 2
    assert_one_error_line(err, name, *needles)


def test_header_names_that_only_look_mangled_are_fine(tmp_path):
    folder = make_folder(tmp_path, items="item_id,title,title.1,v.2\ni1,A,B,C\ni2,D,E,F\n",
                         interactions="user_id,item_id\nu1,i1\n")
    ds, _ = load_quiet(folder)
    assert ds.items.columns.tolist()[:4] == ["item_id", "title", "title.1", "v.2"]


@pytest.mark.parametrize("names", [["item_id", "title", "title"], ["item_id", "title ", "title"]])
def test_duplicate_parquet_columns(tmp_path, capsys, names):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "pq"
    folder.mkdir()
    table = pa.table([pa.array(["i1", "i2"]), pa.array(["A", "B"]), pa.array(["C", "D"])], names=names)
    pq.write_table(table, folder / "items.parquet")
    (folder / "interactions.csv").write_text("user_id,item_id\nu1,i1\n")
    with pytest.raises(DataError, match=r"items\.parquet: column 'title' appears twice in the header \(columns 2 and 3\)"):
        load_folder(folder)
    code, _, err = validate(folder, capsys)
    assert code == 2
    assert_one_error_line(err, "items.parquet", "column 'title' appears twice")
