"""What the exploration policies did, from the impression log: impressions, rewards and reward rate per
policy (in total and per time bucket), and the coverage of what was shown. ``/metrics`` renders the
totals as Prometheus counters and the dashboard (``/dashboard``) all of it.

Everything is computed from the store (SQLite, JSON1), so it survives restarts and counts what every
server process writing to the store logged. A slot's reward is the largest over the feedback events that
name its impression and position (:meth:`ImpressionLog.rewards`); the reward rate is the rewards over
the shown slots.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from avrec.policies.rewards import RewardConfig
from avrec.serve.impressions import ImpressionLog

#: the store's meta key under which ``avrec ope STORE`` keeps its latest estimates
OPE_META_KEY = "ope_latest"


def _where(since: float | None, alias: str = "") -> tuple[str, tuple]:
    col = f"{alias}ts" if alias else "ts"
    return (f" WHERE {col} >= ?", (float(since),)) if since is not None else ("", ())


def policy_totals(log: ImpressionLog, rewards: RewardConfig, since: float | None = None) -> dict[str, dict[str, Any]]:
    """Policy → ``{impressions, slots, explored_slots, rewarded_slots, reward, reward_rate}``."""
    where, args = _where(since, "i.")
    out: dict[str, dict[str, Any]] = {}
    rows = log.store.query(
        "SELECT i.policy, COUNT(DISTINCT i.seq), COUNT(j.key), "
        "COALESCE(SUM(CASE WHEN json_extract(j.value, '$.explored') THEN 1 ELSE 0 END), 0) "
        f"FROM impressions i LEFT JOIN json_each(i.items) j{where} GROUP BY i.policy", args)
    for policy, n, slots, explored in rows:
        out[str(policy)] = {"impressions": int(n), "slots": int(slots), "explored_slots": int(explored),
                            "rewarded_slots": 0, "reward": 0.0}
    for (policy, _bucket), (count, total) in _rewards(log, rewards, since, None).items():
        entry = out.setdefault(policy, {"impressions": 0, "slots": 0, "explored_slots": 0, "rewarded_slots": 0,
                                        "reward": 0.0})
        entry["rewarded_slots"] += count
        entry["reward"] += total
    for entry in out.values():
        entry["reward"] = round(entry["reward"], 6)
        entry["reward_rate"] = round(entry["reward"] / entry["slots"], 6) if entry["slots"] else 0.0
    return out


def _rewards(log: ImpressionLog, rewards: RewardConfig, since: float | None, bucket: float | None
             ) -> dict[tuple[str, int], tuple[int, float]]:
    """(policy, bucket) → (slots with a positive reward, sum of rewards); bucket 0 without ``bucket``."""
    where, args = _where(since, "i.")
    b = float(bucket) if bucket else 0.0
    best: dict[tuple[str, int], tuple[str, int, float]] = {}
    sql = ("SELECT e.impression_id, e.position, e.event, e.value, i.policy, i.ts FROM events e "
           f"JOIN impressions i ON i.impression_id = e.impression_id{where}")
    for imp, pos, event, value, policy, ts in log.store.query(sql, args):
        r = rewards.reward(event, None if value is None else float(value))
        key = (str(imp), int(pos))
        if key not in best or r > best[key][2]:
            best[key] = (str(policy), int(ts // b) if b else 0, r)
    out: dict[tuple[str, int], tuple[int, float]] = {}
    for policy, slot_bucket, r in best.values():
        n, s = out.get((policy, slot_bucket), (0, 0.0))
        out[(policy, slot_bucket)] = (n + (r > 0), s + r)
    return out


def policy_series(log: ImpressionLog, rewards: RewardConfig, bucket: float, since: float | None = None
                  ) -> list[dict[str, Any]]:
    """Per policy and time bucket (``bucket`` seconds; ``t`` its start, epoch seconds): impressions, slots,
    reward and reward rate, oldest first."""
    where, args = _where(since, "i.")
    rows = log.store.query(
        "SELECT i.policy, CAST(i.ts / ? AS INTEGER) AS b, COUNT(*), COALESCE(SUM(json_array_length(i.items)), 0) "
        f"FROM impressions i{where} GROUP BY i.policy, b ORDER BY b", (float(bucket), *args))
    got = _rewards(log, rewards, since, bucket)
    out = []
    for policy, b, n, slots in rows:
        count, total = got.get((str(policy), int(b)), (0, 0.0))
        out.append({"policy": str(policy), "t": int(b) * bucket, "impressions": int(n), "slots": int(slots),
                    "reward": round(total, 6), "reward_rate": round(total / slots, 6) if slots else 0.0})
    return out


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of exposure counts (0: every item shown equally often; 1: one item only)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    if len(x) == 0 or x.sum() == 0:
        return 0.0
    n = len(x)
    return float((2 * np.arange(1, n + 1) - n - 1) @ x / (n * x.sum()))


def coverage(log: ImpressionLog, n_catalog: int, since: float | None = None, top: int = 10) -> dict[str, Any]:
    """Catalogue coverage of what was shown: distinct items, their share of the catalogue and the Gini of
    exposure over the whole catalogue, overall and per policy, and the most shown items."""
    where, args = _where(since, "i.")
    rows = log.store.query(
        "SELECT i.policy, json_extract(j.value, '$.item_id') AS item, COUNT(*) "
        f"FROM impressions i, json_each(i.items) j{where} GROUP BY i.policy, item", args)
    per: dict[str, dict[str, int]] = {}
    overall: dict[str, int] = {}
    for policy, item, n in rows:
        per.setdefault(str(policy), {})[str(item)] = int(n)
        overall[str(item)] = overall.get(str(item), 0) + int(n)

    def describe(counts: dict[str, int]) -> dict[str, Any]:
        padded = np.zeros(max(n_catalog, len(counts)))
        padded[: len(counts)] = list(counts.values())
        return {"items_shown": len(counts), "coverage": round(len(counts) / n_catalog, 6) if n_catalog else 0.0,
                "gini": round(gini(padded), 6)}

    most = sorted(overall.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return {"catalog_items": n_catalog, **describe(overall), "by_policy": {p: describe(c) for p, c in per.items()},
            "most_shown": [{"item_id": i, "shown": n} for i, n in most]}


def latest_ope(log: ImpressionLog) -> dict[str, Any] | None:
    """The estimates ``avrec ope STORE`` last kept in the store (None before the first run)."""
    text = log.store.get_meta(OPE_META_KEY)
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def prometheus_lines(log: ImpressionLog, rewards: RewardConfig, label: Any) -> list[str]:
    """The per-policy counters of ``/metrics`` (``label`` escapes a label value)."""
    totals = policy_totals(log, rewards)
    specs = [("avrec_impressions_total", "counter", "Served lists logged as impressions, by policy.", "impressions"),
             ("avrec_impression_slots_total", "counter", "Slots shown in those lists, by policy.", "slots"),
             ("avrec_explored_slots_total", "counter", "Shown slots where the policy explored, by policy.",
              "explored_slots"),
             ("avrec_rewarded_slots_total", "counter", "Shown slots whose feedback earned a reward, by policy.",
              "rewarded_slots"),
             ("avrec_rewards_total", "counter", "Sum of the rewards of shown slots, by policy.", "reward"),
             ("avrec_reward_rate", "gauge", "Rewards per shown slot, by policy.", "reward_rate")]
    lines = []
    for name, kind, text, key in specs:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        lines += [f'{name}{{policy="{label(p)}"}} {t[key]}' for p, t in sorted(totals.items())]
    return lines
