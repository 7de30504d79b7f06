"""RecBole general recommenders on one warm split folder (runs in .venv-recbole).

The split's train/valid/test.csv become RecBole atomic files ``bench.{train,valid,test}.inter``
(``user_id:token item_id:token``) and ``benchmark_filename`` makes RecBole use exactly those three parts.
RecBole trains with its own trainer and early stopping on validation NDCG@10 (full ranking), on the CPU;
the best checkpoint then scores every item for the validation and test users (``full_sort_predict``) and
the lists are written in the common CSV format.

Search, on top of RecBole's documented defaults (one thread; epochs capped for two shared CPU cores at
100 for BPR and MultiVAE, 200 for LightGCN, validation every 5 epochs, early stop after 3 evaluations
without gain):
- BPR, MultiVAE: learning_rate in {0.001 (default), 0.005}.
- LightGCN: learning_rate=0.005 only (the default 0.001 converges too slowly for the epoch cap; at 0.005
  validation NDCG@10 was still rising at epoch 30 on ml-latest-small, hence the cap of 200).
- EASE: reg_weight in {250 (default), 1000}.
- SLIMElastic: defaults only (alpha=0.2, l1_ratio=0.02): one fit is an ElasticNet per item, too slow
  on two cores for a search.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import VariantWriter, load_split, params_label, runner_args  # noqa: E402

NON_SAMPLING = {"EASE", "MultiVAE", "SLIMElastic"}
EPOCHS = {"BPR": 100, "LightGCN": 200, "MultiVAE": 100}


def grid(model: str, quick: bool) -> list[dict]:
    if model == "LightGCN":
        return [{"learning_rate": 0.005}]
    if model in ("BPR", "MultiVAE"):
        lrs = (0.005,) if quick else (0.001, 0.005)
        return [{"learning_rate": lr} for lr in lrs]
    if model == "EASE":
        return [{"reg_weight": r} for r in ((250.0,) if quick else (250.0, 1000.0))]
    return [{}]


def write_atomic(split, folder: Path) -> None:
    """bench.{train,valid,test}.inter: tab-separated atomic files with typed headers."""
    folder.mkdir(parents=True, exist_ok=True)
    for part in ("train", "valid", "test"):
        f = split.frames[part][["user_id", "item_id"]]
        f.to_csv(folder / f"bench.{part}.inter", sep="\t", index=False, header=["user_id:token", "item_id:token"])


def main() -> int:
    args = runner_args(__doc__.splitlines()[0])
    import recbole
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.data.interaction import Interaction
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    torch.set_num_threads(args.threads)
    split = load_split(args.split)
    writer = VariantWriter(split, args.out, "recbole", recbole.__version__, k=args.k)
    work = Path(args.out) / "recbole_work"
    write_atomic(split, work / "data" / "bench")
    os.chdir(work)  # RecBole writes ./log and ./log_tensorboard relative to the working directory
    epochs = 5 if args.quick else EPOCHS.get(args.model, 1)
    if args.max_epochs:
        epochs = min(epochs, args.max_epochs)
    for params in grid(args.model, args.quick):
        config_dict = {
            "data_path": str(work / "data"),
            "benchmark_filename": ["train", "valid", "test"],
            "load_col": {"inter": ["user_id", "item_id"]},
            "USER_ID_FIELD": "user_id",
            "ITEM_ID_FIELD": "item_id",
            "use_gpu": False,
            "device": "cpu",
            "seed": 2026,
            "reproducibility": True,
            "checkpoint_dir": str(work / "saved"),
            "show_progress": False,
            "state": "INFO",
            "epochs": epochs,
            "eval_step": 5,
            "stopping_step": 3,
            "metrics": ["NDCG", "Recall"],
            "topk": [10],
            "valid_metric": "NDCG@10",
            "eval_args": {"group_by": "user", "order": "RO", "mode": "full"},
            "worker": 0,
            **params,
        }
        if args.model in NON_SAMPLING:
            config_dict["train_neg_sample_args"] = None
        config = Config(model=args.model, dataset="bench", config_dict=config_dict)
        init_logger(config)
        init_seed(config["seed"], config["reproducibility"])
        dataset = create_dataset(config)
        train_data, valid_data, _ = data_preparation(config, dataset)
        model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
        t = time.perf_counter()
        best_score, _ = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
        fit_s = time.perf_counter() - t
        if os.path.exists(trainer.saved_model_file):
            state = torch.load(trainer.saved_model_file, map_location="cpu", weights_only=False)
            model.load_state_dict(state["state_dict"])
            model.load_other_parameter(state.get("other_parameter"))
        model.eval()
        # our item index -> RecBole internal id (0 is padding; items RecBole never saw get -inf)
        token2id = dataset.field2token_id["item_id"]
        internal = np.array([token2id.get(str(i), -1) for i in split.item_ids], dtype=np.int64)
        known = internal > 0
        user_tok = dataset.field2token_id["user_id"]

        def score(users, model=model, internal=internal, known=known, user_tok=user_tok):
            out = np.full((len(users), split.n_items), -np.inf)
            uid = np.array([user_tok.get(str(split.user_ids[u]), 0) for u in users], dtype=np.int64)
            with torch.no_grad():
                s = model.full_sort_predict(Interaction({"user_id": torch.from_numpy(uid)}).to("cpu"))
            s = s.reshape(len(users), -1).cpu().numpy()
            out[:, known] = s[:, internal[known]]
            out[uid == 0] = -np.inf
            return out

        stopped = trainer.cur_epoch if hasattr(trainer, "cur_epoch") else None
        p = dict(params, max_epochs=epochs, best_valid_ndcg_recbole=round(float(best_score), 4))
        if stopped is not None and args.model not in ("EASE", "SLIMElastic"):
            p["epochs_run"] = int(stopped) + 1
        writer.add(params_label(params) or "defaults", p, fit_s, score)
        print(f"{args.model} {params} fit {fit_s:.1f}s recbole valid ndcg {best_score}", flush=True)
    writer.info["search_note"] = __doc__.split("Search, ")[1].strip()
    writer.save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
