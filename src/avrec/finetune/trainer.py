"""One training loop for every avrec fine-tuning job (ranker, MLM, contrastive).

AdamW with decoupled weight decay (none on biases and LayerNorm), linear warmup then linear decay,
gradient clipping and accumulation, early stopping on a validation metric (higher is better), seeded
and resumable checkpoints (safetensors + JSON, with every RNG state), mixed precision on CUDA, and
DistributedDataParallel when launched under ``torchrun`` (gloo on CPU, NCCL on GPU).

Batching is defined by the *global* batch: ``batch_size`` examples per optimizer step, split over
``world_size`` processes and ``grad_accum`` micro-steps. Every process draws the same seeded
permutation (``DistributedSampler``) and takes its share of each global batch, so N processes see
exactly the examples one process would see in each step and, with deterministic layers (dropout 0),
reach the same weights up to floating-point reduction order.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from avrec.errors import ConfigError, DataError
from avrec.finetune.checkpoints import (
    load_model_state,
    optimizer_from_files,
    optimizer_to_files,
    rng_state,
    set_rng_state,
    trainable_state,
)
from avrec.finetune.distributed import dist_info, init_distributed, peak_rss_mb, rank_zero
from avrec.seeding import seed_everything
from avrec.training import EarlyStopping

AMP_MODES = ("auto", "off", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Optimisation settings shared by the fine-tuning jobs.

    ``batch_size`` is the global batch (examples per optimizer step over all processes and
    accumulation micro-steps). ``eval_every``: optimizer steps between validations (0: once per
    epoch). ``patience``: validations without improvement before stopping. ``max_steps`` caps the
    run (0: ``epochs`` full passes). ``max_minutes`` stops cleanly after that wall time (0: no limit).
    ``head_lr_scale`` multiplies the learning rate of parameters named ``head.*`` (a freshly
    initialised head learns faster than the pretrained body).
    """

    lr: float = 2e-5
    head_lr_scale: float = 50.0
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    epochs: int = 1
    max_steps: int = 0
    batch_size: int = 32
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    seed: int = 2026
    amp: str = "auto"
    eval_every: int = 0
    patience: int = 2
    checkpoint_every: int = 0
    log_every: int = 20
    threads: int = 0
    max_minutes: float = 0.0

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:
            raise ConfigError(f"train.amp must be one of {', '.join(AMP_MODES)}, not {self.amp!r}")
        if self.batch_size < 1 or self.grad_accum < 1 or self.epochs < 1:
            raise ConfigError("train.batch_size, train.grad_accum and train.epochs must be at least 1")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError("train.warmup_ratio must be in [0, 1)")
        if self.lr <= 0:
            raise ConfigError("train.lr must be positive")


@dataclass
class TrainResult:
    """What a run did: optimizer steps, mean loss per step, validations, time and memory."""

    steps: int = 0
    losses: list[float] = field(default_factory=list)
    evals: list[tuple[int, float]] = field(default_factory=list)
    best_metric: float | None = None
    best_step: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    peak_gpu_mb: float = 0.0
    world_size: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return f


def _no_decay(name: str, p: torch.Tensor) -> bool:
    return p.ndim < 2 or "norm" in name.lower() or name.endswith(".bias")


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over trainable parameters, with no decay on biases/norms and a faster ``head.*``."""
    groups: dict[tuple[bool, bool], list[torch.Tensor]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = (name.startswith("head."), _no_decay(name, p))
        groups.setdefault(key, []).append(p)
    if not groups:
        raise ConfigError("the model has no trainable parameters")
    params = []
    for (is_head, no_decay), ps in sorted(groups.items()):
        params.append({
            "params": ps,
            "lr": config.lr * (config.head_lr_scale if is_head else 1.0),
            "weight_decay": 0.0 if no_decay else config.weight_decay,
        })
    return torch.optim.AdamW(params, lr=config.lr, betas=(0.9, 0.999), eps=1e-8)


class Trainer:
    """Runs optimisation for ``model`` on ``data`` with ``loss_fn(model, batch) -> scalar loss``.

    ``data`` is indexable; ``collate(list_of_examples) -> batch`` (a dict of tensors, moved to the
    device by the trainer). ``eval_fn(model) -> float`` (higher is better) drives early stopping and
    the best-weights restore; it runs on rank 0 only. ``out_dir`` receives ``checkpoint/`` (resume)
    and ``best.safetensors``.
    """

    def __init__(
        self,
        model: nn.Module,
        data: Sequence[Any],
        collate: Callable[[list[Any]], dict[str, Any]],
        loss_fn: Callable[[nn.Module, dict[str, Any]], torch.Tensor],
        config: TrainConfig | None = None,
        *,
        out_dir: str | Path | None = None,
        eval_fn: Callable[[nn.Module], float] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config or TrainConfig()
        self.model = model
        self.data = data
        self.collate = collate
        self.loss_fn = loss_fn
        self.eval_fn = eval_fn
        self.out_dir = Path(out_dir) if out_dir else None
        self.rank, self.world, self.device = init_distributed()
        self._log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        per_step = self.world * self.config.grad_accum
        if self.config.batch_size % per_step:
            raise ConfigError(
                f"train.batch_size ({self.config.batch_size}) must be divisible by processes × grad_accum ({per_step})"
            )
        self.micro = self.config.batch_size // per_step
        self._best_state: dict[str, torch.Tensor] | None = None
        if len(data) < self.config.batch_size:
            raise DataError(f"only {len(data)} training examples, fewer than one batch ({self.config.batch_size})")

    def log(self, msg: str) -> None:
        if self.rank == 0:
            self._log(msg)

    # ---- helpers ---------------------------------------------------------------------------------
    def _amp(self) -> tuple[contextlib.AbstractContextManager[Any], bool]:
        mode = self.config.amp
        if self.device.type != "cuda" or mode == "off":
            return contextlib.nullcontext(), False
        if mode == "auto":
            mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        dtype = torch.bfloat16 if mode == "bf16" else torch.float16
        return torch.autocast("cuda", dtype=dtype), mode == "fp16"

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def _broadcast(self, value: Any) -> Any:
        if self.world == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def _mean_across(self, value: float) -> float:
        if self.world == 1:
            return value
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item()) / self.world

    # ---- checkpointing ---------------------------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any], opt, sched, scaler) -> None:
        """Write model, optimizer, scheduler, RNG and loop state under ``out_dir/checkpoint``."""
        from safetensors.torch import save_file

        if self.out_dir is None:
            return
        folder = self.out_dir / "checkpoint"
        folder.mkdir(parents=True, exist_ok=True)
        rng_t, rng_meta = rng_state()
        save_file(rng_t, str(folder / f"rng_rank{self.rank}.safetensors"))
        (folder / f"rng_rank{self.rank}.json").write_text(json.dumps(rng_meta))
        if self.rank == 0:
            save_file(trainable_state(self._raw()), str(folder / "model.safetensors"))
            opt_t, opt_meta = optimizer_to_files(opt)
            save_file(opt_t or {"_empty": torch.zeros(0)}, str(folder / "optimizer.safetensors"))
            sched_state = {k: v for k, v in sched.state_dict().items() if k != "lr_lambdas"}
            meta = {
                "trainer": state,
                "optimizer": opt_meta,
                "scheduler": sched_state,
                "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "config": asdict(self.config),
                "world_size": self.world,
            }
            tmp = folder / "trainer_state.json.tmp"
            tmp.write_text(json.dumps(meta, indent=1, default=float))
            tmp.replace(folder / "trainer_state.json")
        self._barrier()

    def _barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def _raw(self) -> nn.Module:
        return self.model

    def load_checkpoint(self, opt, sched, scaler) -> dict[str, Any]:
        from safetensors.torch import load_file

        assert self.out_dir is not None
        folder = self.out_dir / "checkpoint"
        meta_path = folder / "trainer_state.json"
        if not meta_path.exists():
            raise DataError(f"{folder}: no checkpoint to resume from (trainer_state.json missing)")
        meta = json.loads(meta_path.read_text())
        if meta.get("world_size", 1) != self.world and not (folder / f"rng_rank{self.rank}.safetensors").exists():
            self.log(f"note: checkpoint was written by {meta['world_size']} process(es); RNG streams restart")
        load_model_state(self._raw(), load_file(str(folder / "model.safetensors")))
        opt_t = {k: v for k, v in load_file(str(folder / "optimizer.safetensors")).items() if k != "_empty"}
        opt.load_state_dict(optimizer_from_files(opt_t, meta["optimizer"]))
        sched.load_state_dict({**sched.state_dict(), **meta["scheduler"]})
        if meta.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(meta["scaler"])
        rng_file = folder / f"rng_rank{self.rank}.safetensors"
        if rng_file.exists():
            set_rng_state(load_file(str(rng_file)), json.loads((folder / f"rng_rank{self.rank}.json").read_text()))
        return meta["trainer"]

    def _save_best(self) -> None:
        from safetensors.torch import save_file

        self._best_state = trainable_state(self._raw())
        if self.out_dir is not None and self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            save_file(self._best_state, str(self.out_dir / "best.safetensors"))

    # ---- the loop ----------------------------------------------------------------------------------
    def train(self, resume: bool = False) -> TrainResult:
        """Optimise; with ``resume`` continue from ``out_dir/checkpoint`` exactly where it stopped."""
        from torch.utils.data import DistributedSampler

        cfg = self.config
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        if not resume:
            seed_everything(cfg.seed)
        self.model.to(self.device)
        raw = self.model
        train_model: nn.Module = raw
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            train_model = DDP(raw, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        # the sampler only takes len() of the data, which any Sequence has (its stub asks for a torch Dataset)
        sampler: DistributedSampler[int] = DistributedSampler(
            self.data, num_replicas=self.world, rank=self.rank, shuffle=True,  # type: ignore[arg-type]
            seed=cfg.seed, drop_last=True)
        micro_per_epoch = len(sampler) // self.micro
        steps_per_epoch = micro_per_epoch // cfg.grad_accum
        if steps_per_epoch == 0:
            raise DataError("not enough training examples for one optimizer step")
        total = cfg.max_steps if cfg.max_steps > 0 else cfg.epochs * steps_per_epoch
        epochs = math.ceil(total / steps_per_epoch)
        warmup = int(round(cfg.warmup_ratio * total))
        opt = build_optimizer(raw, cfg)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(warmup, total))
        amp_ctx, fp16 = self._amp()
        scaler = torch.amp.GradScaler("cuda", enabled=fp16)
        eval_every = cfg.eval_every or steps_per_epoch
        state: dict[str, Any] = {
            "epoch": 0, "step_in_epoch": 0, "global_step": 0, "best": None, "best_step": 0, "bad_evals": 0,
            "losses": [], "evals": [], "stopped_early": False, "seconds": 0.0,
        }
        self._best_state = None
        if resume:
            state = self.load_checkpoint(opt, sched, scaler)
            if self.out_dir is not None and (self.out_dir / "best.safetensors").exists():
                from safetensors.torch import load_file

                self._best_state = load_file(str(self.out_dir / "best.safetensors"))
        result = TrainResult(world_size=self.world)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats(self.device)
        stopper = EarlyStopping(patience=cfg.patience, min_delta=0.0, best_step=state["best_step"],
                                best_score=-math.inf if state["best"] is None else state["best"],
                                bad_checks=state["bad_evals"], stopped=state["stopped_early"])
        t0 = time.perf_counter() - float(state.get("seconds", 0.0))
        trainable = [p for p in raw.parameters() if p.requires_grad]
        done = state["stopped_early"] or state["global_step"] >= total
        self.log(f"training: {len(self.data)} examples, {total} steps of {cfg.batch_size} "
                 f"({self.world} process(es) × {cfg.grad_accum} accumulation × {self.micro}), device {self.device}")
        while not done and state["epoch"] < epochs:
            sampler.set_epoch(state["epoch"])
            order = list(iter(sampler))
            for step in range(state["step_in_epoch"], steps_per_epoch):
                train_model.train()
                step_loss = 0.0
                for a in range(cfg.grad_accum):
                    start = (step * cfg.grad_accum + a) * self.micro
                    batch = self._to_device(self.collate([self.data[i] for i in order[start : start + self.micro]]))
                    sync: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
                    if self.world > 1 and a < cfg.grad_accum - 1:
                        sync = cast(DDP, train_model).no_sync()
                    with sync:
                        with amp_ctx:
                            loss = self.loss_fn(train_model, batch) / cfg.grad_accum
                        scaler.scale(loss).backward()
                    step_loss += float(loss.detach())
                scaler.unscale_(opt)
                if cfg.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                sched.step()
                state["global_step"] += 1
                state["step_in_epoch"] = step + 1
                state["losses"].append(self._mean_across(step_loss))
                g = state["global_step"]
                if cfg.log_every and g % cfg.log_every == 0:
                    recent = state["losses"][-cfg.log_every:]
                    self.log(f"step {g}/{total} loss {np.mean(recent):.4f} lr {sched.get_last_lr()[0]:.2e} "
                             f"({time.perf_counter() - t0:.0f}s)")
                out_of_time = cfg.max_minutes > 0 and (time.perf_counter() - t0) > 60 * cfg.max_minutes
                out_of_time = bool(self._broadcast(out_of_time))
                last = g >= total or out_of_time
                if self.eval_fn is not None and (g % eval_every == 0 or last):
                    metric = self.eval_fn(raw) if self.rank == 0 else None
                    metric = float(self._broadcast(metric))
                    state["evals"].append([g, metric])
                    if stopper.update(metric, g):
                        self._save_best()
                    state.update(best=stopper.best_score, best_step=stopper.best_step, bad_evals=stopper.bad_checks,
                                 stopped_early=stopper.stopped)
                    self.log(f"step {g}: validation {metric:.4f} "
                             f"(best {state['best']:.4f} at step {state['best_step']})")
                    if stopper.stopped:
                        self.log(f"early stop: no improvement in {cfg.patience} validation(s)")
                state["seconds"] = time.perf_counter() - t0
                if (cfg.checkpoint_every and g % cfg.checkpoint_every == 0) or state["stopped_early"] or last:
                    self.save_checkpoint(state, opt, sched, scaler)
                if state["stopped_early"] or last:
                    done = True
                    break
            if not done:
                state["epoch"] += 1
                state["step_in_epoch"] = 0
        if self._best_state is not None:
            load_model_state(raw, {k: v.to(self.device) for k, v in self._best_state.items()})
        result.steps = state["global_step"]
        result.losses = [float(x) for x in state["losses"]]
        result.evals = [(int(s), float(m)) for s, m in state["evals"]]
        result.best_metric = state["best"]
        result.best_step = state["best_step"]
        result.stopped_early = bool(state["stopped_early"])
        result.seconds = time.perf_counter() - t0
        result.peak_rss_mb = peak_rss_mb()
        if torch.cuda.is_available():
            result.peak_gpu_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        return result


__all__ = ["TrainConfig", "TrainResult", "Trainer", "build_optimizer", "dist_info", "init_distributed",
           "load_model_state", "peak_rss_mb", "rank_zero", "seed_everything", "trainable_state"]
