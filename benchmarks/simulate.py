"""Interactive evaluation of the exploration policies with new releases, and the error of the off-policy
estimators against known true values (:mod:`avrec.policies.simulator`).

Part 1 (online): greedy, epsilon, softmax, linucb and thompson each run the same seeded simulation
(the same users arriving, the same release schedule) with an EASE learner refitted from the clicks every
few rounds; cumulative clicks, regret against the oracle (the best k of the same candidates under the
true click probabilities), clicks on new releases, catalogue coverage and the Gini of exposure.
Part 2 (off-policy): a softmax logging policy on a frozen learner logs impressions; each estimator's
estimate of each target policy is compared with the target's true value (relative error, as Open
Bandit Pipeline reports it).

The truth and the learner are EASE (not the hybrid: one hybrid fit takes minutes on these 2 cores, and
the simulation refits the learner 8 times per policy). Content vectors for the new-release retriever are
MovieLens genres and user tags (one-hot), not language-model vectors.

    AVREC_DATA=/work/shared/data nice -n 10 python benchmarks/simulate.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
POLICIES = [("greedy", {}), ("epsilon", {"epsilon": 0.1}), ("softmax", {"temperature": 0.3}),
            ("linucb", {"alpha": 0.3}), ("thompson", {"noise": 0.3})]


def world(args):
    from avrec.data.builtin import load_dataset
    from avrec.policies.simulator import SimConfig, World

    ds = load_dataset(args.dataset)
    items = ds.items
    text = (items.get("genres", "").astype(str) + "|" + items.get("user_tags", "").astype(str)).str.lower()
    dummies = text.str.get_dummies(sep="|")
    dummies = dummies.loc[:, dummies.sum() >= 3]
    config = SimConfig(rounds=args.rounds, users_per_round=args.users, seed=args.seed)
    return World(ds.matrix().tocsr(), dummies.to_numpy(np.float64), config)


def online(w, seed: int) -> dict:
    from avrec.policies import PolicyConfig, make_policy
    from avrec.policies.simulator import run_policy

    out = {}
    for name, kw in POLICIES:
        t0 = time.perf_counter()
        res = run_policy(w, make_policy(PolicyConfig(name=name, seed=seed, **kw)), seed=seed)
        res["seconds"] = round(time.perf_counter() - t0, 1)
        out[name] = res
        print(f"{name}: clicks {sum(res['reward']):.0f}, new {sum(res['new_reward']):.0f}, "
              f"coverage {res['coverage']:.3f} ({res['seconds']} s)", flush=True)
    return out


def offline(w, seed: int, n_boot: int) -> dict:
    from avrec.policies import PolicyConfig, make_policy
    from avrec.policies.ope import ESTIMATORS, contributions, summary
    from avrec.policies.simulator import run_policy, true_value

    logged: list = []
    run_policy(w, make_policy(PolicyConfig(name="softmax", temperature=1.0, seed=seed)), seed=seed + 1,
               log=logged, learn=False)
    logs = [imp for imp, _, _ in logged]
    out = {"logging": "softmax (temperature 1)", "impressions": len(logs), "targets": {}}
    for name, kw in [("greedy", {}), ("epsilon", {"epsilon": 0.2}), ("softmax", {"temperature": 0.5}),
                     ("linucb", {}), ("thompson", {})]:
        target = make_policy(PolicyConfig(name=name, seed=seed, **kw))
        truth = true_value(logged, target, seed=seed, samples=4 if name == "thompson" else 8)
        s = summary(contributions(logs, target, seed=seed, dm_samples=2), n_boot=n_boot, seed=seed)
        errors = {e: abs(s["estimates"][e]["value"] - truth) / truth for e in ESTIMATORS}
        out["targets"][f"{name} {kw or ''}".strip()] = {"true": truth, **s, "relative_error": errors}
        print(f"OPE {name}: true {truth:.4f}; " + ", ".join(f"{e} {errors[e]:.3f}" for e in ESTIMATORS), flush=True)
    return out


def ratio(x: float, base: float) -> str:
    return f"{x / base:.2f}x" if base else ("n/a (greedy 0)" if x else "0 = greedy")


def report(res: dict) -> str:
    on = res["online"]
    g = on["greedy"]
    lines = [f"# Exploration policies in simulation ({res['dataset']})", "",
             f"Seeded run (`{res['command']}`), {res['config']['rounds']} rounds x {res['config']['users_per_round']} "
             f"users, k={res['config']['k']} of {res['config']['n_candidates']} candidates, "
             f"{res['config']['new_share']:.0%} of {res['n_items']} items released over the first half. "
             "Truth and learner: EASE (see the script's docstring).", "",
             "| policy | clicks | vs greedy | expected | regret | clicks on new items | vs greedy | coverage | Gini |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in on.items():
        c, n = sum(r["reward"]), sum(r["new_reward"])
        regret = sum(r["oracle"]) - sum(r["expected"])
        lines.append(f"| {name} | {c:.0f} | {c / sum(g['reward']) - 1:+.1%} | {sum(r['expected']):.1f} | "
                     f"{regret:.1f} | {n:.0f} | {ratio(n, sum(g['new_reward']))} | {r['coverage']:.3f} | "
                     f"{r['gini']:.3f} |")
    best = max((n for n in on if n != "greedy"), key=lambda n: sum(on[n]["reward"]))
    gain = sum(on[best]["reward"]) / sum(g["reward"]) - 1
    g_new, b_new = sum(g["new_reward"]), sum(on[best]["new_reward"])
    met = gain >= 0.10 and (b_new >= 2 * g_new and b_new > 0)
    lines += ["", f"Target (best exploring policy >= +10% clicks and >= 2x clicks on new items vs greedy): "
              f"best is **{best}**, {gain:+.1%} clicks and {b_new:.0f} clicks on new items against greedy's "
              f"{g_new:.0f}: **{'met' if met else 'not met'}**.", ""]
    off = res["offline"]
    from avrec.policies.ope import ESTIMATORS

    lines += [f"## Off-policy estimators: relative error ({off['impressions']} impressions logged by "
              f"{off['logging']}, frozen learner)", "",
              "| target | true value | " + " | ".join(ESTIMATORS) + " | ESS slate | ESS slot 1 |",
              "|---" * (len(ESTIMATORS) + 4) + "|"]
    for name, t in off["targets"].items():
        lines.append(f"| {name} | {t['true']:.4f} | " + " | ".join(f"{t['relative_error'][e]:.3f}" for e in ESTIMATORS)
                     + f" | {t['ess_slate']:.1f} | {t['ess_first_slot']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, r in res["online"].items():
        axes[0].plot(np.cumsum(r["reward"]), label=name)
        axes[1].plot(np.cumsum(r["new_reward"]), label=name)
    axes[0].set(title="cumulative clicks", xlabel="round")
    axes[1].set(title="cumulative clicks on new releases", xlabel="round")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="ml-latest-small")
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--users", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bootstrap", type=int, default=100)
    p.add_argument("--out", default=str(RESULTS / "simulate"))
    p.add_argument("--report-only", action="store_true", help="rewrite the markdown from the JSON")
    args = p.parse_args()
    if args.report_only:
        out = Path(args.out)
        out.with_suffix(".md").write_text(report(json.loads(out.with_suffix(".json").read_text())), encoding="utf-8")
        return
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    t0 = time.perf_counter()
    w = world(args)
    res = {"dataset": args.dataset, "n_items": w.n_items, "n_users": w.n_users, "config": asdict(w.config),
           "command": "AVREC_DATA=/work/shared/data nice -n 10 python benchmarks/simulate.py",
           "machine": platform.platform(), "online": online(w, args.seed)}
    res["offline"] = offline(w, args.seed, args.bootstrap)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2), encoding="utf-8")
    out.with_suffix(".md").write_text(report(res), encoding="utf-8")
    plot(res, out.with_suffix(".png"))
    print(report(res))


if __name__ == "__main__":
    main()
