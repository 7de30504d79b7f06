"""A month of simulated traffic replayed in daily `avrec update`s, against a model that is never updated.

World (as in :mod:`avrec.policies.simulator`): ml-latest-small's 1,500 most played items; the truth is EASE
fitted on *all* interactions, its standardised scores calibrated to click probabilities; a shown item is
clicked with probability κ_j·p(u, i) (position-based, κ_j = 0.85^j). 20% of the items are new releases,
released evenly over the 30 days (added to the event store on their day, as `POST /items` would); the
start model is fitted on every interaction with the other items, less a frozen probe (200 users' latest
20%: `avrec fit --probe-users 200`), whose pairs the truth is not fitted on either.

Each day 100 users arrive; each gets k = 10 of 50 candidates (the served model's top 40 for their history,
fold-in of their clicks included, plus 10 released new items by genre/tag cosine to the history) chosen by
epsilon-greedy (ε = 0.1); clicks go to the store as `play` events. Arm "updated": after each day
`avrec update` (avrec.serve.continual.run_update, the forgetting guard at 5%) folds the day in and writes a
version, promoted unless the probe NDCG@10 fell more than 5%. Arm "frozen": the start model all month
(the server still folds each user's clicks into their own list, as it does without updates). Both arms
see the same users in the same order, with the same seeds.

Models: EASE (auto refit: the new items need one) and ALS (warm start every day). The hybrid is not run:
one hybrid fit takes minutes on these 2 cores and the month needs 30 updates per arm.

    AVREC_DATA=/work/shared/data nice -n 10 python benchmarks/continual.py
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

RESULTS = Path(__file__).resolve().parent / "results"


def build_world(args) -> dict:
    from avrec.data.builtin import load_dataset
    from avrec.data.dataset import build_dataset
    from avrec.policies.simulator import calibrate, ease
    from avrec.serve.probe import draw_probe

    rng = np.random.default_rng(args.seed)
    ds = load_dataset("ml-latest-small")
    X_all = ds.matrix(binary=True).tocsr()
    pop = np.asarray(X_all.sum(axis=0)).ravel()
    keep = np.sort(np.argsort(-pop, kind="stable")[: args.items])
    X = X_all[:, keep].tocsr()
    users = np.flatnonzero(np.asarray(X.sum(axis=1)).ravel() >= 4)
    X = X[users]
    items = ds.items.iloc[keep].reset_index(drop=True).fillna("").astype(str)
    user_ids = np.asarray(ds.user_ids, dtype=object)[users].astype(str)
    n = len(items)
    is_new = np.zeros(n, dtype=bool)
    is_new[rng.choice(n, int(0.2 * n), replace=False)] = True
    new = np.flatnonzero(is_new)
    rng.shuffle(new)
    release = np.zeros(n, dtype=np.int64)
    release[new] = 1 + np.arange(len(new)) * args.days // len(new)
    text = (items.get("genres", "") + "|" + items.get("user_tags", "")).str.lower().str.get_dummies(sep="|")
    content = np.array(text.loc[:, text.sum() >= 3].to_numpy(np.float64))
    content /= np.maximum(np.linalg.norm(content, axis=1, keepdims=True), 1e-12)
    coo = X.tocoo()
    old = ~is_new[coo.col]
    frame = pd.DataFrame({"user_id": user_ids[coo.row[old]], "item_id": items["item_id"].to_numpy()[coo.col[old]],
                          "weight": 1.0, "timestamp": np.arange(old.sum())})
    start = build_dataset(items[~is_new].reset_index(drop=True), frame, name="month-start")
    train, probe = draw_probe(start, args.probe_users, 0.2, seed=args.seed)
    # the truth never sees the probe's pairs, so the simulated traffic carries no information about the
    # held-out events beyond what other users' behaviour gives
    col = {i: c for c, i in enumerate(items["item_id"])}
    row = {u: r for r, u in enumerate(user_ids)}
    rows, cols = [row[u] for u in probe["user_id"]], [col[i] for i in probe["item_id"]]
    held = sp.csr_matrix((np.ones(len(probe)), (rows, cols)), shape=X.shape)
    X_truth = (X - X.multiply(held > 0)).tocsr()
    X_truth.eliminate_zeros()
    raw = X_truth @ ease(X_truth.astype(np.float64), 200.0)
    z = (raw - raw.mean(axis=1, keepdims=True)) / np.maximum(raw.std(axis=1, keepdims=True), 1e-12)
    step = max(1, z.size // 400_000)
    a, b = calibrate(z.ravel()[::step], X_truth.toarray().ravel()[::step])
    truth = 1 / (1 + np.exp(-(a + b * z)))
    arrivals = rng.integers(0, len(user_ids), (args.days, args.users))
    return {"items": items, "user_ids": user_ids, "truth": truth, "is_new": is_new, "release": release,
            "content": content, "train": train, "probe": probe, "arrivals": arrivals}


def fit_start(w: dict, model_name: str, folder: Path, seed: int) -> None:
    """The start model, as `avrec fit --probe-users 200` writes it."""
    from avrec.models.registry import create_model
    from avrec.serve.probe import save_probe

    create_model(model_name).fit(w["train"]).save(folder)
    save_probe(folder, w["probe"], items=w["train"].item_ids, seed=seed)


def run_arm(w: dict, folder: Path, store_path: Path, update: bool, args) -> dict:
    """One month; per-day clicks, expected clicks, clicks on new items and the served version's probe NDCG."""
    from avrec.models.base import Recommender
    from avrec.policies import PolicyConfig, make_policy
    from avrec.policies.clicks import geometric_examination
    from avrec.serve.config import ServeConfig
    from avrec.serve.continual import UpdateConfig, run_update
    from avrec.serve.probe import load_probe, probe_ndcg
    from avrec.serve.store import EventStore

    rng = np.random.default_rng(args.seed + 1)
    policy = make_policy(PolicyConfig(name="epsilon", epsilon=0.1, seed=args.seed))
    prng = np.random.default_rng(args.seed + 2)
    kappa = geometric_examination(10, 0.85)
    items, truth, is_new, release = w["items"], w["truth"], w["is_new"], w["release"]
    col = {i: n for n, i in enumerate(items["item_id"])}
    new_ids = items["item_id"].to_numpy()
    clicked: dict[int, list[str]] = {}
    probe = load_probe(folder)
    store = EventStore(store_path)
    model = Recommender.load(folder)
    out: dict[str, list] = {k: [] for k in ("clicks", "expected", "new_clicks", "new_expected", "probe_ndcg",
                                             "status", "version", "update_seconds")}
    base_probe = probe_ndcg(model, probe)["ndcg"]
    for day in range(1, args.days + 1):
        today = np.flatnonzero(release == day)
        if len(today):
            store.add_items(items.iloc[today].to_dict("records"))
        released_new = np.flatnonzero(is_new & (release <= day))
        known = model.item_index
        cand_ids = [i for i in items["item_id"][~is_new | (release <= day)] if i in known]
        clicks = expected = new_clicks = new_expected = 0.0
        events = []
        for u in w["arrivals"][day - 1]:
            uid = str(w["user_ids"][u])
            row = model.user_index.get(uid)
            hist = ([str(model.item_ids[i]) for i in model.seen[row].indices] if row is not None else [])
            hist = list(dict.fromkeys(hist + clicked.get(u, [])))
            usable = [h for h in hist if h in known]
            ids, sc = model.recommend_history([usable], k=40, candidates=cand_ids)
            top = [i for i in ids[0] if i is not None]
            scores = [float(s) for i, s in zip(ids[0], sc[0]) if i is not None]
            hist_cols = [col[h] for h in hist]
            profile = w["content"][hist_cols].mean(axis=0) if hist_cols else np.zeros(w["content"].shape[1])
            taken = set(top) | set(hist)
            fresh = [c for c in released_new if new_ids[c] not in taken]
            fresh = sorted(fresh, key=lambda c: -float(w["content"][c] @ profile))[:10]
            pool = top + [new_ids[c] for c in fresh]
            floor = min(scores) if scores else 0.0
            pool_scores = np.array(scores + [floor - 1e-3 * (n + 1) for n in range(len(fresh))])
            slate = policy.choose(pool_scores, np.zeros((len(pool), 6)), 10, prng)
            shown = [pool[int(c)] for c in slate.items]
            p = np.array([truth[u, col[i]] for i in shown]) * kappa[: len(shown)]
            hit = rng.random(len(shown)) < p
            fresh_mask = np.array([is_new[col[i]] for i in shown])
            clicks += hit.sum()
            expected += p.sum()
            new_clicks += (hit & fresh_mask).sum()
            new_expected += p[fresh_mask].sum()
            for i in np.array(shown)[hit]:
                clicked.setdefault(u, []).append(str(i))
                events.append({"user_id": uid, "item_id": str(i), "event": "play"})
        if events:
            store.add_events(events)
        status, version, secs = "frozen", None, 0.0
        ndcg = base_probe
        if update:
            t0 = time.perf_counter()
            summary = run_update(folder, store, UpdateConfig(tolerance=args.tolerance), ServeConfig())
            secs = time.perf_counter() - t0
            status, version = summary["status"], summary.get("version")
            model = Recommender.load(folder)
            ndcg = probe_ndcg(model, probe)["ndcg"]
        for key, value in zip(out, (clicks, expected, new_clicks, new_expected, ndcg, status, version, secs)):
            out[key].append(value if isinstance(value, str) or value is None else round(float(value), 6))
        print(f"  day {day:2d}: clicks {clicks:4.0f} (new {new_clicks:3.0f}), probe NDCG {ndcg:.4f} {status}",
              flush=True)
    store.close()
    out["probe_start"] = base_probe
    return out


def summarise(arms: dict, tolerance: float) -> dict:
    up, fr = arms["updated"], arms["frozen"]
    start = up["probe_start"]
    worst = min(up["probe_ndcg"])
    return {
        "clicks": {"updated": sum(up["clicks"]), "frozen": sum(fr["clicks"])},
        "expected_clicks": {"updated": round(sum(up["expected"]), 2), "frozen": round(sum(fr["expected"]), 2)},
        "new_clicks": {"updated": sum(up["new_clicks"]), "frozen": sum(fr["new_clicks"])},
        "new_expected": {"updated": round(sum(up["new_expected"]), 2), "frozen": round(sum(fr["new_expected"]), 2)},
        "new_lift": round(sum(up["new_expected"]) / max(sum(fr["new_expected"]), 1e-9) - 1, 4),
        "total_lift": round(sum(up["expected"]) / max(sum(fr["expected"]), 1e-9) - 1, 4),
        "probe_start": start, "probe_end": up["probe_ndcg"][-1], "probe_min": worst,
        "probe_worst_drop": round((start - worst) / start, 4) if start else None,
        "within_tolerance": bool(start is None or worst >= start * (1 - tolerance) - 1e-12),
        "promoted": up["status"].count("promoted"), "refused": up["status"].count("refused"),
        "mean_update_seconds": round(float(np.mean(up["update_seconds"])), 2),
    }


def write(results: dict, args) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "continual.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    lines = ["# Continual learning: a month of daily `avrec update` against a never-updated model", "",
             f"ml-latest-small, {args.items} items (20% released over {args.days} days), {args.users} users a day, "
             f"k = 10 of 50 candidates, epsilon 0.1, tolerance {args.tolerance:.0%}; seed {args.seed}. "
             "Expected clicks are Σ κ_j·p(u, i) over what was shown (less noisy than the sampled clicks).", "",
             "| model | arm | clicks | expected clicks | clicks on new items | expected on new | probe NDCG@10 "
             "start → end (min) | promoted / refused |", "|---|---|---|---|---|---|---|---|"]
    for name, r in results["models"].items():
        s = r["summary"]
        for arm, label in (("updated", "updated daily"), ("frozen", "never updated")):
            probe = (f"{s['probe_start']:.4f} → {s['probe_end']:.4f} ({s['probe_min']:.4f})" if arm == "updated"
                     else f"{s['probe_start']:.4f}")
            counts = f"{s['promoted']} / {s['refused']}" if arm == "updated" else ""
            lines.append(f"| {name} | {label} | {s['clicks'][arm]:.0f} | {s['expected_clicks'][arm]:.1f} | "
                         f"{s['new_clicks'][arm]:.0f} | {s['new_expected'][arm]:.1f} | {probe} | {counts} |")
    lines += ["", "| model | lift on new items (expected) | lift overall | worst probe drop | within tolerance | "
              "mean update (s) |", "|---|---|---|---|---|---|"]
    for name, r in results["models"].items():
        s = r["summary"]
        lines.append(f"| {name} | {s['new_lift']:+.1%} | {s['total_lift']:+.1%} | {s['probe_worst_drop']:.1%} | "
                     f"{'yes' if s['within_tolerance'] else 'NO'} | {s['mean_update_seconds']} |")
    lines += ["", f"Machine: {results['machine']}; {results['seconds']} s in all.", ""]
    (RESULTS / "continual.md").write_text("\n".join(lines), encoding="utf-8")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, r in results["models"].items():
        days = np.arange(1, len(r["updated"]["new_expected"]) + 1)
        for arm, style in (("updated", "-"), ("frozen", "--")):
            axes[0].plot(days, np.cumsum(r[arm]["new_expected"]), style, label=f"{name} {arm}")
        axes[1].plot(days, r["updated"]["probe_ndcg"], label=f"{name} updated")
        axes[1].axhline(r["summary"]["probe_start"] * (1 - args.tolerance), ls=":", lw=1, color="grey")
    axes[0].set(title="expected clicks on new releases (cumulative)", xlabel="day")
    axes[1].set(title="probe NDCG@10 of the served version (dotted: tolerance)", xlabel="day")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "continual.png", dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="ease,als")
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--users", type=int, default=100)
    p.add_argument("--items", type=int, default=1500)
    p.add_argument("--tolerance", type=float, default=0.05)
    p.add_argument("--probe-users", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    t0 = time.perf_counter()
    w = build_world(args)
    results: dict = {"config": vars(args), "machine": f"{platform.processor() or platform.machine()}, "
                     f"Python {platform.python_version()}", "models": {}}
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            arms = {}
            for arm in ("updated", "frozen"):
                folder = Path(tmp) / f"{name}-{arm}"
                fit_start(w, name, folder, args.seed)
                print(f"{name} {arm}:", flush=True)
                arms[arm] = run_arm(w, folder, Path(tmp) / f"{name}-{arm}.sqlite3", arm == "updated", args)
            results["models"][name] = {**arms, "summary": summarise(arms, args.tolerance)}
            print(json.dumps(results["models"][name]["summary"], indent=1), flush=True)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    write(results, args)


if __name__ == "__main__":
    main()
