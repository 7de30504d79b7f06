"""Domain-adaptive masked-language-model pre-training on the catalogue's item documents.

Continues the encoder's MLM objective on the text avrec actually reads (titles, genres, tags,
overviews), then writes a plain transformers checkpoint (``save_pretrained`` of the encoder body
plus its tokenizer) that :class:`avrec.encoders.TextEncoder` and the hybrid model's ``encoder``
setting load like any other model folder. Masks are drawn from a generator seeded by the example's
index, so a run is reproducible and identical under any number of processes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from avrec.encoders import resolve_encoder_path
from avrec.errors import ConfigError, DataError
from avrec.finetune.trainer import TrainConfig, Trainer, TrainResult
from avrec.seeding import seed_everything


def _mlm_train_default() -> TrainConfig:
    return TrainConfig(lr=5e-5, batch_size=16, head_lr_scale=1.0, warmup_ratio=0.06, patience=3)


@dataclass
class MLMConfig:
    """``mlm_probability`` of tokens are selected; of those 80% become [MASK], 10% random, 10% kept.
    ``valid_share`` of the documents are held out; their masked-token loss drives early stopping."""

    model: str = "default"
    max_length: int = 128
    mlm_probability: float = 0.15
    max_docs: int = 0
    valid_share: float = 0.05
    train: TrainConfig = field(default_factory=_mlm_train_default)

    def __post_init__(self) -> None:
        if isinstance(self.train, dict):
            self.train = TrainConfig(**{**asdict(_mlm_train_default()), **self.train})
        if not 0 < self.mlm_probability < 1:
            raise ConfigError("mlm_probability must be in (0, 1)")
        if not 0 <= self.valid_share < 0.5:
            raise ConfigError("valid_share must be in [0, 0.5)")


def mask_tokens(ids: list[int], special: set[int], mask_id: int, vocab: int, prob: float, seed: int):
    """(input_ids, labels) for one example with BERT-style masking from a per-example generator."""
    g = torch.Generator().manual_seed(int(seed))
    x = torch.tensor(ids, dtype=torch.long)
    labels = x.clone()
    candidates = torch.tensor([i not in special for i in ids])
    chosen = (torch.rand(len(ids), generator=g) < prob) & candidates
    if candidates.any() and not chosen.any():  # at least one target per example
        pos = torch.nonzero(candidates).flatten()
        chosen[pos[torch.randint(len(pos), (1,), generator=g)]] = True
    labels[~chosen] = -100
    roll = torch.rand(len(ids), generator=g)
    x[chosen & (roll < 0.8)] = mask_id
    rand_pos = chosen & (roll >= 0.8) & (roll < 0.9)
    x[rand_pos] = torch.randint(vocab, (int(rand_pos.sum()),), generator=g)
    return x, labels


def train_mlm(docs: list[str], config: MLMConfig, out_dir: str | Path, *, resume: bool = False, log=None
              ) -> tuple[Path, TrainResult]:
    """Adapt ``config.model`` to ``docs`` with MLM and write the encoder to ``out_dir``."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    docs = [d for d in docs if d and d.strip()]
    if len(docs) < 4:
        raise DataError("MLM needs at least 4 non-empty item documents")
    out_dir = Path(out_dir)
    rng = np.random.default_rng(config.train.seed)
    order = rng.permutation(len(docs))
    if config.max_docs and len(order) > config.max_docs:
        order = order[: config.max_docs]
    n_valid = int(round(len(order) * config.valid_share))
    valid_docs = [docs[i] for i in order[:n_valid]]
    train_docs = [docs[i] for i in order[n_valid:]]
    path = resolve_encoder_path(config.model)
    seed_everything(config.train.seed)
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = AutoModelForMaskedLM.from_pretrained(path, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except OSError as e:
        raise ConfigError(f"cannot load {config.model!r} for MLM: {str(e).splitlines()[0]}") from None
    finally:
        hf_logging.set_verbosity(level)
    if tokenizer.mask_token_id is None:
        raise ConfigError(f"{config.model!r} has no [MASK] token: it cannot be MLM-trained")
    special = set(tokenizer.all_special_ids)
    vocab = int(model.config.vocab_size)
    pad = int(tokenizer.pad_token_id or 0)

    def encode(texts: list[str], offset: int) -> list[tuple[list[int], int]]:
        enc = tokenizer(texts, truncation=True, max_length=config.max_length)["input_ids"]
        return [(list(ids), offset + i) for i, ids in enumerate(enc)]

    train_ex = encode(train_docs, 0)
    valid_ex = encode(valid_docs, len(train_ex))

    def collate(batch):
        pairs = [mask_tokens(ids, special, tokenizer.mask_token_id, vocab, config.mlm_probability,
                             config.train.seed * 1_000_003 + idx) for ids, idx in batch]
        width = max(len(p[0]) for p in pairs)
        x = torch.full((len(pairs), width), pad, dtype=torch.long)
        y = torch.full((len(pairs), width), -100, dtype=torch.long)
        m = torch.zeros((len(pairs), width), dtype=torch.long)
        for r, (xi, yi) in enumerate(pairs):
            x[r, : len(xi)], y[r, : len(yi)], m[r, : len(xi)] = xi, yi, 1
        return {"input_ids": x, "attention_mask": m, "labels": y}

    def loss_fn(m, batch):
        return m(**batch).loss

    eval_fn = None
    if valid_ex:
        valid_batches = [collate(valid_ex[i : i + 32]) for i in range(0, len(valid_ex), 32)]

        @torch.no_grad()
        def eval_fn(m):
            m.eval()
            dev = next(m.parameters()).device
            total, count = 0.0, 0
            for b in valid_batches:
                n = int((b["labels"] != -100).sum())
                total += float(m(**{k: v.to(dev) for k, v in b.items()}).loss) * n
                count += n
            m.train()
            return -total / max(count, 1)  # higher is better

    trainer = Trainer(model, train_ex, collate, loss_fn, config.train, out_dir=out_dir / ".training",
                      eval_fn=eval_fn, log=log)
    result = trainer.train(resume=resume)
    if trainer.rank == 0:
        from transformers import AutoModel

        hf_logging.set_verbosity_error()
        try:  # the pretrained body (with its pooler) carrying the adapted weights
            body = AutoModel.from_pretrained(path, local_files_only=True)
            body.load_state_dict(model.base_model.state_dict(), strict=False)
        finally:
            hf_logging.set_verbosity(level)
        save_encoder(body, tokenizer, out_dir, {"method": "mlm", "base_model": config.model,
                                                            "config": asdict(config), "result": result.to_dict()})
    trainer._barrier()
    return out_dir, result


def save_encoder(encoder: torch.nn.Module, tokenizer, out_dir: Path, meta: dict) -> Path:
    """save_pretrained the encoder body and tokenizer, plus avrec_finetune.json describing the run."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cast(Any, encoder).save_pretrained(out_dir)  # a transformers model: nn.Module's stubs lack save_pretrained
    tokenizer.save_pretrained(out_dir)
    (out_dir / "avrec_finetune.json").write_text(json.dumps(meta, indent=1, default=str))
    return out_dir
