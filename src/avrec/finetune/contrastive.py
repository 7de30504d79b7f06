"""Contrastive fine-tuning of the bi-encoder on co-consumed item pairs.

Two items liked by the same people form a positive pair; every other item in the batch is a negative
(in-batch negatives, the MultipleNegativesRankingLoss / InfoNCE objective of sentence-transformers).
Text vectors of items with a shared audience move together, which is what a cold item needs: its
text alone must land near the warm items its future audience already likes. The result is a plain
transformers checkpoint that :class:`avrec.encoders.TextEncoder` (mean pooling) and the hybrid
model's ``encoder`` setting load.

Under ``torchrun`` each process uses the negatives of its own share of the batch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from avrec.errors import ConfigError, DataError
from avrec.finetune.mlm import save_encoder
from avrec.finetune.ranker import freeze_pooler, load_encoder, pool
from avrec.finetune.trainer import TrainConfig, Trainer, TrainResult
from avrec.seeding import seed_everything


def _contrastive_train_default() -> TrainConfig:
    return TrainConfig(lr=2e-5, batch_size=32, head_lr_scale=1.0, warmup_ratio=0.1, patience=3)


@dataclass
class ContrastiveConfig:
    """``scale``: inverse temperature of the cosine logits (20 as in sentence-transformers);
    ``max_pairs``/``per_item``/``min_count``: how co-consumed pairs are mined (see
    :func:`avrec.finetune.data.co_consumed_pairs`); ``valid_share`` of pairs drive early stopping."""

    model: str = "default"
    max_length: int = 128
    pooling: str = "mean"
    scale: float = 20.0
    symmetric: bool = True
    max_pairs: int = 4000
    per_item: int = 2
    min_count: int = 2
    valid_share: float = 0.05
    train: TrainConfig = field(default_factory=_contrastive_train_default)

    def __post_init__(self) -> None:
        if isinstance(self.train, dict):
            self.train = TrainConfig(**{**asdict(_contrastive_train_default()), **self.train})
        if self.pooling not in ("mean", "cls"):
            raise ConfigError("contrastive pooling must be 'mean' or 'cls'")
        if self.scale <= 0:
            raise ConfigError("contrastive scale must be positive")


class BiEncoder(nn.Module):
    """Encoder + pooling + L2 normalisation."""

    def __init__(self, encoder: nn.Module, pooling: str) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        freeze_pooler(encoder)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return F.normalize(pool(hidden, attention_mask, self.pooling).float(), dim=-1)


def info_nce(a: torch.Tensor, p: torch.Tensor, ids_a: torch.Tensor, ids_p: torch.Tensor, scale: float,
             symmetric: bool) -> torch.Tensor:
    """In-batch-negatives loss; off-diagonal entries that are the same item as the target are masked."""
    logits = scale * a @ p.T
    same = (ids_p.unsqueeze(0) == ids_p.unsqueeze(1)) | (ids_a.unsqueeze(1) == ids_p.unsqueeze(0))
    eye = torch.eye(len(a), dtype=torch.bool, device=a.device)
    logits = logits.masked_fill(same & ~eye, float("-inf"))
    target = torch.arange(len(a), device=a.device)
    loss = F.cross_entropy(logits, target)
    if symmetric:
        logits_t = (scale * p @ a.T).masked_fill(
            ((ids_a.unsqueeze(0) == ids_a.unsqueeze(1)) | (ids_p.unsqueeze(1) == ids_a.unsqueeze(0))) & ~eye,
            float("-inf"))
        loss = (loss + F.cross_entropy(logits_t, target)) / 2
    return loss


def train_contrastive(docs: list[str], pairs: np.ndarray, config: ContrastiveConfig, out_dir: str | Path, *,
                      resume: bool = False, log=None) -> tuple[Path, TrainResult]:
    """Fine-tune ``config.model`` so that paired item documents embed close; write it to ``out_dir``."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if len(pairs) < config.train.batch_size:
        raise DataError(f"only {len(pairs)} co-consumed item pairs: fewer than one batch "
                        f"({config.train.batch_size}); lower min_count or the batch size")
    out_dir = Path(out_dir)
    seed_everything(config.train.seed)
    encoder, tokenizer = load_encoder(config.model)
    model = BiEncoder(encoder, config.pooling)
    used = np.unique(pairs)
    enc = tokenizer([docs[i] for i in used], truncation=True, max_length=config.max_length)["input_ids"]
    tokens = {int(i): list(t) for i, t in zip(used, enc)}
    pad = int(tokenizer.pad_token_id or 0)
    rng = np.random.default_rng(config.train.seed)
    order = rng.permutation(len(pairs))
    n_valid = min(int(round(len(pairs) * config.valid_share)), 500)
    valid_pairs, train_pairs = pairs[order[:n_valid]], pairs[order[n_valid:]]

    def pad_batch(item_ids) -> dict[str, torch.Tensor]:
        rows = [tokens[int(i)] for i in item_ids]
        width = max(len(r) for r in rows)
        x = torch.full((len(rows), width), pad, dtype=torch.long)
        m = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            x[r, : len(row)], m[r, : len(row)] = torch.tensor(row), 1
        return {"input_ids": x, "attention_mask": m}

    def collate(batch):
        a = pad_batch([b[0] for b in batch])
        p = pad_batch([b[1] for b in batch])
        return {"a_ids": a["input_ids"], "a_mask": a["attention_mask"], "p_ids": p["input_ids"],
                "p_mask": p["attention_mask"], "a_item": torch.tensor([int(b[0]) for b in batch]),
                "p_item": torch.tensor([int(b[1]) for b in batch])}

    def loss_fn(m, batch):
        a = m(batch["a_ids"], batch["a_mask"])
        p = m(batch["p_ids"], batch["p_mask"])
        return info_nce(a, p, batch["a_item"], batch["p_item"], config.scale, config.symmetric)

    eval_fn = None
    if len(valid_pairs) >= 2:
        @torch.no_grad()
        def eval_fn(m):
            """Mean reciprocal rank of each held-out partner among all held-out partners."""
            m.eval()
            dev = next(m.parameters()).device
            embs = []
            for col in (0, 1):
                parts = []
                for s in range(0, len(valid_pairs), 64):
                    b = pad_batch(valid_pairs[s : s + 64, col])
                    parts.append(m(b["input_ids"].to(dev), b["attention_mask"].to(dev)).cpu())
                embs.append(torch.cat(parts))
            sims = embs[0] @ embs[1].T
            same = torch.from_numpy(valid_pairs[:, 1][None, :] == valid_pairs[:, 1][:, None])
            sims = sims.masked_fill(same & ~torch.eye(len(sims), dtype=torch.bool), float("-inf"))
            rank = (sims > sims.diag().unsqueeze(1)).sum(1) + 1
            m.train()
            return float((1.0 / rank.float()).mean())

    trainer = Trainer(model, [tuple(p) for p in train_pairs], collate, loss_fn, config.train,
                      out_dir=out_dir / ".training", eval_fn=eval_fn, log=log)
    result = trainer.train(resume=resume)
    if trainer.rank == 0:
        save_encoder(model.encoder, tokenizer, out_dir, {
            "method": "contrastive", "base_model": config.model, "pooling": config.pooling,
            "pairs": int(len(pairs)), "config": asdict(config), "result": result.to_dict()})
    trainer._barrier()
    return out_dir, result
