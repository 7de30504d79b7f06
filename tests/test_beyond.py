"""Beyond-accuracy metrics (avrec.eval.beyond) on hand-computed cases, and through evaluate_model."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from avrec.errors import ConfigError
from avrec.eval.beyond import (
    BeyondConfig,
    average_popularity,
    beyond_accuracy,
    exposure_counts,
    gini_index,
    group_exposure,
    item_distributions,
    kl_miscalibration,
    long_tail_mask,
    long_tail_share,
    lorenz_curve,
    miscalibration,
    popularity_lift,
    value_matrix,
)

# 3 users, K = 2, 5 items; user 2's list has one entry
TOPK = np.array([[0, 1], [0, 2], [0, -1]])
POP = np.array([10.0, 5.0, 2.0, 1.0, 0.0])
HISTORY = sp.csr_matrix(np.array([[0, 0, 0, 1, 1], [0, 1, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=np.float32))
ITEMS = pd.DataFrame({"item_id": list("abcde"), "genres": ["A|B", "A", "B", "C", ""],
                      "artist": ["x", "x|y", "y", "z", "z"]})


def test_gini_by_hand():
    assert gini_index(np.array([0, 0, 1, 3])) == pytest.approx(10 / 16)  # Σ(2j−n−1)c / (nΣc)
    assert gini_index(np.array([2, 2, 2])) == 0.0
    assert gini_index(np.array([0, 0, 0, 5])) == pytest.approx(3 / 4)  # (n − 1)/n
    assert gini_index(np.zeros(3)) == 0.0


def test_pooled_exposure_and_gini():
    counts = exposure_counts(TOPK, 5)
    assert counts.tolist() == [3, 1, 1, 0, 0]
    assert gini_index(counts) == pytest.approx(14 / 25)
    # per list the Gini over the list's own items would be 0; pooled over the catalogue it is not
    assert all(gini_index(exposure_counts(row[None, :], 5)[row[row >= 0]]) == 0 for row in TOPK)
    x, y = lorenz_curve(counts)
    assert x.tolist() == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert y.tolist() == pytest.approx([0, 0, 0, 0.2, 0.4, 1.0])


def test_long_tail():
    tail = long_tail_mask(POP, 0.6)  # head: the ceil(0.4 · 5) = 2 most popular items
    assert tail.tolist() == [False, False, True, True, True]
    assert long_tail_share(TOPK, tail) == pytest.approx(1 / 5)  # slots 0,1,0,2,0: one tail slot
    ties = long_tail_mask(np.array([3.0, 3.0, 3.0, 3.0]), 0.5)  # ties: catalogue order decides
    assert ties.tolist() == [False, False, True, True]


def test_average_popularity_and_lift():
    assert average_popularity(TOPK, POP) == pytest.approx((7.5 + 6 + 10) / 3)
    # users 0 and 1 have a history: GAP(lists) = (7.5 + 6)/2, GAP(histories) = (0.5 + 5)/2
    assert popularity_lift(TOPK, HISTORY, POP) == pytest.approx((6.75 - 2.75) / 2.75)


def test_miscalibration_by_hand():
    values, names = value_matrix(ITEMS, "genres")
    assert names == ["A", "B", "C"]
    dist = item_distributions(values)
    mean, per_user = miscalibration(TOPK, HISTORY, dist, alpha=0.01)
    # user 0: p = {C: 1}, q = {A: .75, B: .25}; q̃(C) = .01 → log 100
    # user 1: p = {A: 1}, q = {A: .25, B: .75}; q̃(A) = .99·.25 + .01 → −log .2575; user 2 has no history
    assert per_user[0] == pytest.approx(math.log(100))
    assert per_user[1] == pytest.approx(-math.log(0.2575))
    assert math.isnan(per_user[2])
    assert mean == pytest.approx((math.log(100) - math.log(0.2575)) / 2)
    p = np.array([[0.5, 0.5, 0.0]])
    assert kl_miscalibration(p, p.copy())[0] == pytest.approx(0.0)


def test_group_exposure_splits_slots_among_values():
    values, names = value_matrix(ITEMS, "artist")
    g = group_exposure(TOPK, values, names, POP)
    shares = {row["group"]: row["share"] for row in g["top"]}
    assert shares == pytest.approx({"x": 0.7, "y": 0.3, "z": 0.0})  # x: 3 + ½, y: ½ + 1 of 5 slots
    assert g["gini"] == pytest.approx(7 / 15)
    train = {row["group"]: row["train_share"] for row in g["top"]}
    assert train["x"] == pytest.approx(12.5 / 18)
    assert g["groups"] == 3 and g["groups_shown"] == 2


def test_beyond_accuracy_keys_and_config():
    out, details = beyond_accuracy(TOPK, 2, items=ITEMS, history=HISTORY, popularity=POP,
                                   config=BeyondConfig(tail_share=0.6))
    assert out["gini@2"] == pytest.approx(14 / 25) and out["tail@2"] == pytest.approx(0.2)
    assert out["exposure_gini[artist]@2"] == pytest.approx(7 / 15) and "artist" in details
    with pytest.raises(ConfigError, match="tail_share"):
        BeyondConfig(tail_share=1.0)


def test_evaluate_model_with_beyond():
    from avrec.data.splits import make_split
    from avrec.eval.evaluate import evaluate_model
    from avrec.models.registry import create_model
    from avrec.testing.data import make_structured_dataset

    data = make_structured_dataset()
    split = make_split(data)
    pop, ease = create_model("pop").fit(split.train), create_model("ease").fit(split.train)
    details: dict = {}
    m_pop = evaluate_model(pop, split, k=5, beyond=BeyondConfig(), details=details)
    m_ease = evaluate_model(ease, split, k=5, beyond=BeyondConfig())
    for key in ("gini@5", "tail@5", "arp@5", "poplift@5", "miscal@5"):
        assert key in m_pop and np.isfinite(m_pop[key])
    # popularity concentrates exposure and favours the head more than a personalised model
    assert m_pop["gini@5"] > m_ease["gini@5"]
    assert m_pop["arp@5"] >= m_ease["arp@5"]
    assert "ndcg@5" in m_pop and isinstance(details.get("exposure_by_group@5"), dict)


def test_cli_evaluate_metrics_all(tmp_path, capsys):
    from avrec.cli import main
    from avrec.testing.data import make_structured_dataset

    data = make_structured_dataset()
    folder = tmp_path / "data"
    folder.mkdir()
    data.items.to_csv(folder / "items.csv", index=False)
    pd.DataFrame({"user_id": data.user_ids[data.user_idx], "item_id": data.items["item_id"].to_numpy()[data.item_idx],
                  "timestamp": data.timestamp}).to_csv(folder / "interactions.csv", index=False)
    code = main(["evaluate", str(folder), "--model", "pop", "--k", "5", "--metrics", "all", "--set",
                 "eval.beyond.tail_share=0.5", "--out", str(tmp_path / "out"), "--run-dir", str(tmp_path / "run")])
    out = capsys.readouterr()
    assert code == 0, out.err
    for header in ("Gini@5", "LongTail@5", "ARP@5", "PopLift@5", "MisCal(KL)@5", "bottom 50%"):
        assert header in out.out
    import json

    payload = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert "gini@5" in payload["models"]["pop"] and "exposure_by_group" in payload
    code = main(["evaluate", str(folder), "--model", "pop", "--set", "eval.beyond.tail_share=2",
                 "--run-dir", str(tmp_path / "run2")])
    assert code == 2 and "tail_share" in capsys.readouterr().err


def test_cli_report_writes_html_with_plots(tmp_path, capsys):
    from avrec.cli import main
    from avrec.testing.data import make_structured_dataset

    data = make_structured_dataset()
    folder = tmp_path / "data"
    folder.mkdir()
    items = data.items.copy()
    items["artist"] = [f"artist{i % 7}" for i in range(len(items))]
    items.to_csv(folder / "items.csv", index=False)
    pd.DataFrame({"user_id": data.user_ids[data.user_idx], "item_id": data.items["item_id"].to_numpy()[data.item_idx],
                  "timestamp": data.timestamp}).to_csv(folder / "interactions.csv", index=False)
    assert main(["fit", str(folder), "--model", "ease", "--out", str(tmp_path / "m"),
                 "--run-dir", str(tmp_path / "run")]) == 0
    assert main(["report", str(tmp_path / "m"), str(folder), "--out", str(tmp_path / "rep"), "--k", "5"]) == 0
    html = (tmp_path / "rep" / "report.html").read_text()
    assert html.count("<svg") == 4 and "Lorenz curve" in html and "Exposure per artist" in html
    import json

    payload = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert {"gini@5", "tail@5", "coverage@5"} <= set(payload["metrics"])
    capsys.readouterr()
    assert main(["report", str(tmp_path / "nothing"), str(folder), "--out", str(tmp_path / "rep2")]) == 2
    assert "not a model folder" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "m"), str(folder), "--out", str(tmp_path / "rep3"), "--k", "0"]) == 2
