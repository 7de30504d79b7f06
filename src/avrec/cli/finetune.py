"""``avrec finetune ranker|mlm|contrastive DATASET --out DIR``: the language-model training jobs.

- ``ranker``: split DATASET (``split.*``, random by default), fit the retriever on train, train the
  cross-encoder on pairs with hard negatives, early-stop on validation NDCG@10, save it to DIR (load it
  into a pipeline with ``--set models.pipeline.ranker_path=DIR``).
- ``mlm``: domain-adaptive MLM on every item document; DIR is a transformers checkpoint.
- ``contrastive``: in-batch-negatives fine-tuning on item pairs co-consumed in DATASET; DIR is a
  transformers checkpoint. Use either with ``--set models.hybrid.encoder=DIR`` or ``TextEncoder(DIR)``.

Settings: ``--config FILE`` (TOML/YAML) then ``--set key=value``. Sections ``seed``, ``data``,
``split``; every other key belongs to the job (e.g. ``train.lr=3e-5``, ``ranker.max_length=96``,
``pairs.max_users=500``, ``max_length=64``). ``--resume`` continues from DIR/.training/checkpoint.
Multi-process: ``torchrun --nproc_per_node=2 -m avrec.cli finetune ranker ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from avrec.cli.common import add_data_dir
from avrec.cli.settings import Layout, add_settings_options, load_settings, own_fields, run_seed, section, with_run_seed
from avrec.finetune.ranker_training import RankerTrainingConfig

JOBS = ("ranker", "mlm", "contrastive")
#: ``seed``, ``data`` and ``split`` are sections; every other top-level key is a field of the job's config.
LAYOUT = Layout(("seed", "data", "split"), other_keys="own")


@dataclass
class RankerJobConfig(RankerTrainingConfig):
    """``RankerTrainingConfig`` plus the retriever that supplies hard negatives and validation lists."""

    retriever: str = "auto"
    retriever_config: dict = field(default_factory=dict)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return load_settings(args.config, args.set, LAYOUT)


def job_config(cls: type, raw: dict[str, Any], seed: int) -> Any:
    """The job's config from the top-level keys; ``train.seed`` gets the run seed unless set."""
    return with_run_seed(own_fields(raw, LAYOUT, cls()), raw, seed, "train.seed")


def _load(args, raw):
    from avrec.data.builtin import load_dataset
    from avrec.data.io import DataConfig

    return load_dataset(args.dataset, section(raw, "data", DataConfig()), args.data_dir)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_ranker(args: argparse.Namespace) -> int:
    from avrec.data.splits import SplitConfig, make_split
    from avrec.finetune.ranker import CrossEncoderRanker
    from avrec.finetune.ranker_training import fit_ranker
    from avrec.models.registry import create_model, default_retriever
    from avrec.seeding import seed_everything

    raw = _settings(args)
    seed = run_seed(raw)
    job = job_config(RankerJobConfig, raw, seed)
    ds = _load(args, raw)
    split = make_split(ds, section(raw, "split", SplitConfig(seed=seed)))
    name = default_retriever() if job.retriever == "auto" else job.retriever
    _log(f"{ds.name or args.dataset}: {split.train.n_interactions:,} training interactions; fitting retriever {name}")
    retriever = create_model(name, **job.retriever_config)
    retriever.fit(split.train, valid=split.valid, valid_candidates=split.valid_candidates)
    seed_everything(job.train.seed)
    ranker = CrossEncoderRanker(job.ranker)
    out = Path(args.out)
    result, counts = fit_ranker(ranker, split.train, retriever, job, valid=split.valid,
                                valid_candidates=split.valid_candidates, out_dir=out / ".training",
                                resume=args.resume, log=_log)
    from avrec.finetune.trainer import rank_zero

    if rank_zero():
        ranker.save(out)
        report = {"job": "ranker", "dataset": str(args.dataset), "retriever": name, "pairs": counts,
                  "result": result.to_dict(), "config": asdict(job)}
        (out / "training_report.json").write_text(json.dumps(report, indent=1, default=str))
        _summary("ranker", out, result, "validation NDCG@10")
    return 0


def cmd_mlm(args: argparse.Namespace) -> int:
    from avrec.data.documents import build_documents
    from avrec.finetune.mlm import MLMConfig, train_mlm

    raw = _settings(args)
    config = job_config(MLMConfig, raw, run_seed(raw))
    ds = _load(args, raw)
    out, result = train_mlm(build_documents(ds.items), config, args.out, resume=args.resume, log=_log)
    _summary("mlm", out, result, "validation -loss")
    return 0


def cmd_contrastive(args: argparse.Namespace) -> int:
    from avrec.data.documents import build_documents
    from avrec.finetune.contrastive import ContrastiveConfig, train_contrastive
    from avrec.finetune.data import co_consumed_pairs

    raw = _settings(args)
    config = job_config(ContrastiveConfig, raw, run_seed(raw))
    ds = _load(args, raw)
    pairs = co_consumed_pairs(ds, max_pairs=config.max_pairs, per_item=config.per_item,
                              min_count=config.min_count, seed=config.train.seed)
    _log(f"{len(pairs):,} co-consumed item pairs")
    out, result = train_contrastive(build_documents(ds.items), pairs, config, args.out, resume=args.resume, log=_log)
    _summary("contrastive", out, result, "validation MRR")
    return 0


def _summary(job: str, out, result, metric: str) -> None:
    from avrec.finetune.trainer import rank_zero

    if not rank_zero():
        return
    losses = result.losses
    first = sum(losses[:5]) / max(len(losses[:5]), 1)
    last = sum(losses[-5:]) / max(len(losses[-5:]), 1)
    best = (f", best {metric} {result.best_metric:.4f} at step {result.best_step}"
            if result.best_metric is not None else "")
    print(f"{job}: {result.steps} steps in {result.seconds:.0f}s, loss {first:.4f} -> {last:.4f}{best}; "
          f"peak memory {result.peak_rss_mb:.0f} MB; saved {out}")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``avrec finetune ranker|mlm|contrastive``."""
    p = sub.add_parser("finetune", help="train the cross-encoder ranker or adapt the text encoder",
                       description=__doc__.split("\n\n")[1] if __doc__ else None,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    jobs = p.add_subparsers(dest="job", metavar="JOB")
    handlers = {"ranker": cmd_ranker, "mlm": cmd_mlm, "contrastive": cmd_contrastive}
    helps = {
        "ranker": "fine-tune the cross-encoder ranker (BCE, hard + random negatives, early stopping)",
        "mlm": "domain-adaptive masked-LM pre-training on the item documents",
        "contrastive": "bi-encoder fine-tuning on co-consumed item pairs (in-batch negatives)",
    }
    for job in JOBS:
        q = jobs.add_parser(job, help=helps[job], description=helps[job])
        q.add_argument("dataset", metavar="DATASET", help="dataset folder or built-in name")
        q.add_argument("--out", required=True, metavar="DIR", help="folder to write the trained model to")
        add_settings_options(q, example="train.lr=3e-5")
        add_data_dir(q)
        q.add_argument("--resume", action="store_true", help="continue from DIR/.training/checkpoint")
        q.set_defaults(func=handlers[job])
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
