"""Settings of the ``hybrid`` model (``--set models.hybrid.KEY=VALUE``); see :mod:`avrec.models.hybrid`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from avrec.data.dataset import TEXT_FIELDS
from avrec.errors import ConfigError
from avrec.models.als import ALSConfig
from avrec.models.ease import EASEConfig
from avrec.models.itemknn import ItemKNNConfig
from avrec.models.kgpath import KGPathConfig
from avrec.models.seqknn import SeqKNNConfig


@dataclass
class HybridConfig:
    # text and features
    encoder: str = "default"
    use_lm: bool = True
    embedding_cache: str | None = None
    max_length: int = 256
    doc_fields: list[str] = field(default_factory=lambda: list(TEXT_FIELDS))
    use_words: bool = True
    word_min_df: int = 3
    use_tokens: bool = True
    token_min_count: int = 2
    # media: modality vectors (audio, video, image, item_vectors/*.parquet; see avrec.encoders.modalities)
    modalities: list[str] = field(default_factory=lambda: ["auto"])
    extractors: dict[str, str] = field(default_factory=dict)
    modality_dropout: float = 0.2
    # towers
    dim: int = 64
    hidden: int = 128
    use_item_ids: bool = True
    use_user_ids: bool = True
    id_dropout: float = 0.5
    user_id_dropout: float = 0.5
    input_keep: float = 0.5
    history_len: int = 50
    # training
    max_steps: int = 400
    batch_users: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    eval_every: int = 20
    patience: int = 4
    seed: int = 2026
    # fusion
    blend: list[str] = field(default_factory=lambda: ["ease", "als", "seqknn"])
    cold_blend: list[str] = field(default_factory=lambda: ["tfidf", "kgpath", "content", "contentpop"])
    # the fused components ("towers" included) whose rows go on Gaussian rank scores instead of z-scores
    # (avrec.models.blend), in the warm and the cold fusion; and on how many random halvings of the cold
    # validation items a cold weight change must lose on no half (the warm fusion: the two user halves)
    warm_rank: list[str] = field(default_factory=list)
    cold_rank: list[str] = field(default_factory=lambda: ["towers"])
    cold_partitions: int = 5
    # component sections: ``ease.l2``, ``als.factors``, ... (the ALS seed follows ``seed``)
    ease: EASEConfig = field(default_factory=lambda: EASEConfig(max_items=20000))
    als: ALSConfig = field(default_factory=ALSConfig)
    itemknn: ItemKNNConfig = field(default_factory=ItemKNNConfig)
    kgpath: KGPathConfig = field(default_factory=KGPathConfig)
    internal_valid_share: float = 0.1
    refit: bool = True
    refit_towers: bool = False
    # retrieval
    ann_kind: str = "auto"
    ann_exact_below: int = 50000
    ann_candidates: int = 500
    # scale (avrec.models.hybrid_scale): -1 = chosen by catalogue size, above ``scale_items`` items
    scale_items: int = 200_000
    tower_negatives: int = -1
    valid_users: int = -1
    component_tuning: bool = True
    seqknn: SeqKNNConfig = field(default_factory=SeqKNNConfig)

    def __post_init__(self) -> None:
        for key, fused in (("warm_rank", self.blend), ("cold_rank", self.cold_blend)):
            unknown = [n for n in getattr(self, key) if n not in ("towers", *fused)]
            if unknown:
                raise ConfigError(f"models.hybrid.{key} names components the fusion does not have: "
                                  f"{', '.join(map(str, unknown))} (it has towers, {', '.join(fused)})")
        if int(self.cold_partitions) < 1:
            raise ConfigError(f"models.hybrid.cold_partitions must be at least 1, not {self.cold_partitions}")

    #: the flat keys these sections replaced, still accepted (``--set ease_l2=250``, old config.json files)
    aliases: ClassVar[dict[str, str]] = {
        "ease_l2": "ease.l2", "ease_max_items": "ease.max_items", "als_factors": "als.factors",
        "als_regularization": "als.regularization", "als_alpha": "als.alpha", "als_iterations": "als.iterations",
    }


__all__ = ["HybridConfig"]
