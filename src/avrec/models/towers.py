"""The two towers of ``hybrid`` and their trainer.

Item tower: LM vector and sparse lexical/categorical features → trainable projection → content vector;
plus an item-ID embedding that is dropped at random in training (DropoutNet), so the content part alone
must place an item well — which is all a cold item has.

User tower: attention over the vectors of items in the user's history (recency-aware when timestamps
exist), plus a user-ID embedding, also dropped at random so that a user folded in from a bare history
is scored by the same function.

Training is denoising and listwise: each step feeds a random part of each user's history to the user
tower and asks a softmax over the whole catalogue to put the held-back part on top.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the trainer is data-parallel: every process draws the same global
batch of users and the same dropout masks, runs the item tower, scores its own share of the users, and the
gradients are summed across processes before one identical optimiser step everywhere, so N processes
follow the trajectory of one process with the same global batch (up to float rounding). Rank 0 validates
and its early-stopping decision is broadcast.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from avrec.models.row_adam import RowAdamW
from avrec.training import EarlyStopping


@dataclass
class ItemFeatures:
    """Per-item inputs of the item tower: dense LM vectors (or None) and a sparse weighted feature matrix."""

    lm: np.ndarray | None
    sparse: sp.csr_matrix
    #: column ranges of ``sparse`` that are one modality each (audio, video, ...), and the chance that training
    #: drops one of them for an item in a step, so items that lack a modality are still placed well
    groups: tuple[tuple[int, int], ...] = ()
    group_dropout: float = 0.0

    def rows(self, idx: np.ndarray) -> ItemFeatures:
        return ItemFeatures(None if self.lm is None else self.lm[idx], self.sparse[idx], self.groups,
                            self.group_dropout)

    def entry_groups(self) -> np.ndarray:
        """Per stored entry of ``sparse`` (CSR order), the index of its group, -1 outside every group."""
        m = sp.csr_matrix(self.sparse)
        out = np.full(m.nnz, -1, dtype=np.int64)
        for g, (lo, hi) in enumerate(self.groups):
            out[(m.indices >= lo) & (m.indices < hi)] = g
        return out

    def tensors(self) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
        m = sp.csr_matrix(self.sparse, dtype=np.float32)
        lm = None if self.lm is None else torch.from_numpy(np.ascontiguousarray(self.lm, dtype=np.float32))
        return (
            lm,
            torch.from_numpy(m.indices.astype(np.int64)),
            torch.from_numpy(m.indptr[:-1].astype(np.int64)),
            torch.from_numpy(m.data.astype(np.float32)),
        )


class Towers(nn.Module):
    def __init__(self, n_items: int, n_users: int, lm_dim: int, n_features: int, dim: int, hidden: int,
                 use_item_ids: bool, use_user_ids: bool) -> None:
        super().__init__()
        self.dim = dim
        self.lm_proj = nn.Linear(lm_dim, dim) if lm_dim else None
        self.feature_bag = nn.EmbeddingBag(max(n_features, 1), dim, mode="sum")
        nn.init.normal_(self.feature_bag.weight, std=0.05)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.bias_head = nn.Linear(dim, 1)
        self.item_id = nn.Embedding(n_items, dim) if use_item_ids else None
        self.item_id_bias = nn.Embedding(n_items, 1) if use_item_ids else None
        self.user_id = nn.Embedding(n_users, dim) if use_user_ids else None
        for emb in (self.item_id, self.user_id):
            if emb is not None:
                nn.init.normal_(emb.weight, std=0.01)
        if self.item_id_bias is not None:
            nn.init.zeros_(self.item_id_bias.weight)
        self.query = nn.Parameter(torch.zeros(dim))
        self.recency = nn.Parameter(torch.zeros(1))
        self.user_scale = nn.Parameter(torch.ones(1))

    def content(
        self, lm: torch.Tensor | None, feat_idx: torch.Tensor, feat_offsets: torch.Tensor, feat_w: torch.Tensor
    ) -> torch.Tensor:
        h = self.feature_bag(feat_idx, feat_offsets, per_sample_weights=feat_w)
        if self.lm_proj is not None and lm is not None:
            h = h + self.lm_proj(lm)
        return h + self.mlp(h)

    def items(self, content: torch.Tensor, id_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Item vectors and biases; ``id_mask`` (n,) says which items may use their ID embedding."""
        bias = self.bias_head(content).squeeze(-1)
        if self.item_id is None or self.item_id_bias is None:  # both or neither (use_item_ids)
            return content, bias
        n = content.shape[0]
        m = id_mask[:n].unsqueeze(-1)
        vec = content + m * self.item_id.weight[:n]
        bias = bias + m.squeeze(-1) * self.item_id_bias.weight[:n, 0]
        return vec, bias

    def items_at(self, content: torch.Tensor, idx: torch.Tensor,
                 id_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`items` for the items ``idx`` only (``content`` and ``id_mask`` rows in that order): the
        sampled softmax of big catalogues."""
        bias = self.bias_head(content).squeeze(-1)
        if self.item_id is None or self.item_id_bias is None:
            return content, bias
        m = id_mask.unsqueeze(-1)
        return content + m * self.item_id(idx), bias + id_mask * self.item_id_bias(idx)[:, 0]

    def users(
        self,
        item_vecs: torch.Tensor,
        hist_idx: torch.Tensor,
        hist_recency: torch.Tensor,
        user_idx: torch.Tensor | None = None,
        user_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attention-pooled history (padded with -1) plus the (masked) user-ID embedding."""
        valid = hist_idx >= 0
        h = item_vecs[hist_idx.clamp(min=0)]
        logits = h @ self.query + self.recency * hist_recency
        logits = logits.masked_fill(~valid, -1e9)
        alpha = torch.softmax(logits, dim=1) * valid
        alpha = alpha / alpha.sum(dim=1, keepdim=True).clamp(min=1e-9)
        u = self.user_scale * (alpha.unsqueeze(-1) * h).sum(dim=1)
        if self.user_id is not None and user_idx is not None:
            e = self.user_id(user_idx)
            if user_mask is not None:
                e = e * user_mask.unsqueeze(-1)
            u = u + e
        return u


@torch.no_grad()
def item_outputs(towers: Towers, features: ItemFeatures, warm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Item vectors and biases of every item; only ``warm`` items use their ID embeddings."""
    towers.eval()
    content = towers.content(*features.tensors())
    vec, bias = towers.items(content, torch.from_numpy(warm.astype(np.float32)))
    return vec.numpy(), bias.numpy()


@torch.no_grad()
def user_outputs(towers: Towers, item_vecs: np.ndarray, history: sp.csr_matrix, timestamps: sp.csr_matrix | None,
                 user_idx: np.ndarray | None, history_len: int, batch: int = 1024) -> np.ndarray:
    """User vectors from history rows (aligned with ``user_idx`` when IDs are used; None: fold-in)."""
    towers.eval()
    history = sp.csr_matrix(history)
    out = np.zeros((history.shape[0], towers.dim), dtype=np.float32)
    iv = torch.from_numpy(item_vecs)
    for start in range(0, history.shape[0], batch):
        rows = range(start, min(start + batch, history.shape[0]))
        hists, recs = [], []
        for r in rows:
            s, e = history.indptr[r], history.indptr[r + 1]
            hists.append(history.indices[s:e])
            ts = timestamps.data[s:e] if timestamps is not None else np.full(e - s, -1)
            recs.append(recency_of(np.asarray(ts)))
        h_idx, h_rec = history_batch(hists, recs, max(history_len, 1))
        uid = None if user_idx is None else torch.from_numpy(np.asarray(user_idx[start:start + batch], dtype=np.int64))
        out[start : start + len(rows)] = towers.users(iv, h_idx, h_rec, uid).numpy()
    return out


def history_batch(
    histories: list[np.ndarray], recencies: list[np.ndarray], max_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad item-index lists (and their recency in [0, 1], 1 = newest) to a (B, L) tensor with -1."""
    length = max(1, min(max_len, max((len(h) for h in histories), default=1)))
    idx = np.full((len(histories), length), -1, dtype=np.int64)
    rec = np.zeros((len(histories), length), dtype=np.float32)
    for r, (h, t) in enumerate(zip(histories, recencies)):
        if len(h) > length:  # keep the newest
            order = np.argsort(-t, kind="stable")[:length]
            h, t = h[order], t[order]
        idx[r, : len(h)] = h
        rec[r, : len(h)] = t
    return torch.from_numpy(idx), torch.from_numpy(rec)


def recency_of(timestamps: np.ndarray) -> np.ndarray:
    """Rank-based recency in [0, 1] within one history (1 = newest); 0.5 everywhere without timestamps."""
    if len(timestamps) == 0 or (timestamps < 0).all():
        return np.full(len(timestamps), 0.5, np.float32)
    ranks = np.argsort(np.argsort(timestamps, kind="stable"), kind="stable")
    return (ranks / max(len(timestamps) - 1, 1)).astype(np.float32)


@dataclass
class TowerTrainConfig:
    max_steps: int
    batch_users: int
    lr: float
    weight_decay: float
    id_dropout: float
    user_id_dropout: float
    input_keep: float
    history_len: int
    eval_every: int
    patience: int
    seed: int
    #: 0: softmax over the whole catalogue each step; N: over the batch's items and N sampled warm items
    #: (uniform, so the softmax needs no correction), which keeps a step's cost independent of the catalogue
    negatives: int = 0


class TowerTrainer:
    """Trains :class:`Towers` with a catalogue-wide softmax and early stopping on a validation callback."""

    def __init__(self, model: Towers, features: ItemFeatures, seen: sp.csr_matrix, timestamps: sp.csr_matrix | None,
                 warm_items: np.ndarray, config: TowerTrainConfig) -> None:
        self.model = model
        self.features = features.tensors()
        # modality dropout: per step, each (item, modality) pair is dropped with ``group_dropout``
        self.entry_group = torch.from_numpy(features.entry_groups()) if features.groups else None
        self.entry_row = torch.from_numpy(np.repeat(np.arange(features.sparse.shape[0]),
                                                    np.diff(sp.csr_matrix(features.sparse).indptr)))
        self.group_dropout, self.n_groups = features.group_dropout, len(features.groups)
        self.seen = sp.csr_matrix(seen)
        self.timestamps = timestamps
        self.warm = torch.from_numpy(warm_items.astype(np.float32))
        # Items without training interactions stay out of the softmax: pushing them down as negatives
        # would teach the towers that "looks like a new item" means "bad", the opposite of cold start.
        self.never_seen = torch.from_numpy(~warm_items.astype(bool))
        self.config = config
        self.rng = np.random.default_rng(config.seed)
        self.train_users = np.flatnonzero(np.diff(self.seen.indptr) >= 2)
        self.item_features = features
        self.warm_idx = np.flatnonzero(warm_items)
        self.sampled = 0 < config.negatives < int(warm_items.sum())

    def item_tower(self, id_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lm, idx, off, w = self.features
        if self.model.training and self.entry_group is not None and self.group_dropout > 0:
            keep = torch.rand(len(off), self.n_groups) >= self.group_dropout
            grouped = self.entry_group >= 0
            drop = grouped & ~keep[self.entry_row, self.entry_group.clamp(min=0)]
            w = w * (~drop).float()
        content = self.model.content(lm, idx, off, w)
        return self.model.items(content, id_mask)

    def user_history(self, u: int) -> tuple[np.ndarray, np.ndarray]:
        s, e = self.seen.indptr[u], self.seen.indptr[u + 1]
        items = self.seen.indices[s:e]
        ts = self.timestamps.data[s:e] if self.timestamps is not None else np.full(len(items), -1)
        return items, recency_of(np.asarray(ts))

    def _step_batch(self) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        c = self.config
        users = self.rng.choice(self.train_users, size=min(c.batch_users, len(self.train_users)), replace=False)
        inputs: list[np.ndarray] = []
        recs: list[np.ndarray] = []
        targets: list[np.ndarray] = []
        for u in users:
            items, rec = self.user_history(u)
            keep = self.rng.random(len(items)) < c.input_keep
            if keep.all() or not keep.any():
                flip = self.rng.integers(len(items))
                keep[flip] = not keep[flip]
            inputs.append(items[keep])
            recs.append(rec[keep])
            targets.append(items[~keep])
        return users, inputs, recs, targets

    def _sampled_logits(self, users: np.ndarray, inputs: list[np.ndarray], recs: list[np.ndarray],
                        targets: list[np.ndarray], negatives: np.ndarray,
                        user_mask: torch.Tensor) -> tuple[torch.Tensor, list[np.ndarray], list[np.ndarray]]:
        """Logits over the batch's items plus the sampled ``negatives``, and the batch in pool positions."""
        c = self.config
        pool = np.unique(np.concatenate([*inputs, *targets, negatives]))
        self._last_pool = pool
        sub = self.item_features.rows(pool)
        lm, idx, off, w = sub.tensors()
        if sub.groups and sub.group_dropout > 0:  # modality dropout, as in item_tower
            groups = torch.from_numpy(sub.entry_groups())
            rows = torch.from_numpy(np.repeat(np.arange(len(pool)), np.diff(sp.csr_matrix(sub.sparse).indptr)))
            keep = torch.rand(len(pool), len(sub.groups)) >= sub.group_dropout
            w = w * (~((groups >= 0) & ~keep[rows, groups.clamp(min=0)])).float()
        pool_t = torch.from_numpy(pool.astype(np.int64))
        id_mask = self.warm[pool_t] * (torch.rand(len(pool)) >= c.id_dropout).float()
        vecs, bias = self.model.items_at(self.model.content(lm, idx, off, w), pool_t, id_mask)
        local_inputs = [np.searchsorted(pool, h) for h in inputs]
        hist_idx, hist_rec = history_batch(local_inputs, recs, c.history_len)
        u = self.model.users(vecs, hist_idx, hist_rec, torch.from_numpy(users.astype(np.int64)), user_mask)
        return u @ vecs.T + bias, local_inputs, [np.searchsorted(pool, t) for t in targets]

    def train(self, validate: Callable[[Towers], float]) -> tuple[int, float, list[tuple[int, float]]]:
        """Run until ``max_steps`` or patience runs out; keeps the best state (data-parallel under torchrun).

        Returns (best step, best score, curve).
        """
        c = self.config
        if len(self.train_users) == 0:  # every step holds part of a history back: needs 2+ items
            return 0, -np.inf, []
        rank, world = _join_group(self.model)
        torch.manual_seed(c.seed)
        # sampled softmax, one process: the ID tables update only the rows a step touched (RowAdamW)
        rows_opt = RowAdamW(self.model, c.lr, c.weight_decay) if self.sampled and world == 1 else None
        skip = {id(p) for p in rows_opt.params()} if rows_opt is not None else set()
        opt = torch.optim.AdamW([p for p in self.model.parameters() if id(p) not in skip], lr=c.lr,
                                weight_decay=c.weight_decay)
        n_items = self.seen.shape[1]
        stopper, best_state, curve = EarlyStopping(patience=c.patience), None, []
        for step in range(1, c.max_steps + 1):
            self.model.train()
            users, inputs, recs, targets = self._step_batch()
            # sampled softmax (big catalogues): negatives drawn before the split, the same on every process
            negatives = self.warm_idx[self.rng.integers(len(self.warm_idx), size=c.negatives)] if self.sampled else None
            if negatives is None:
                id_mask = self.warm * (torch.rand(n_items) >= c.id_dropout).float()
                item_vecs, item_bias = self.item_tower(id_mask)
            user_mask = (torch.rand(len(users)) >= c.user_id_dropout).float()
            n_global = len(users)
            if world > 1:  # this process's share of the global batch (every draw above is the same everywhere)
                mine = np.arange(rank, n_global, world)
                users, user_mask = users[mine], user_mask[torch.from_numpy(mine)]
                inputs, recs, targets = ([part[i] for i in mine] for part in (inputs, recs, targets))
            if negatives is not None:  # the same loss over a pool of items: pool positions from here on
                logits, inputs, targets = self._sampled_logits(users, inputs, recs, targets, negatives, user_mask)
            else:
                hist_idx, hist_rec = history_batch(inputs, recs, c.history_len)
                u = self.model.users(item_vecs, hist_idx, hist_rec, torch.from_numpy(users.astype(np.int64)),
                                     user_mask)
                logits = (u @ item_vecs.T + item_bias).masked_fill(self.never_seen, -1e9)
            rows = np.repeat(np.arange(len(users)), [len(h) for h in inputs])
            logits[torch.from_numpy(rows), torch.from_numpy(np.concatenate(inputs).astype(np.int64))] = -1e9
            logp = torch.log_softmax(logits, dim=1)
            t_rows = np.repeat(np.arange(len(users)), [len(t) for t in targets])
            t_cols = np.concatenate(targets).astype(np.int64)
            sizes = [len(t) for t in targets]
            weights = torch.from_numpy((1.0 / np.repeat(sizes, sizes)).astype(np.float32))
            loss = -(logp[torch.from_numpy(t_rows), torch.from_numpy(t_cols)] * weights).sum() / n_global
            opt.zero_grad()
            loss.backward()
            if world > 1:
                _sum_gradients(self.model)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
            opt.step()
            if rows_opt is not None:
                rows_opt.step(self._last_pool, users)
            if step % c.eval_every == 0 or step == c.max_steps:
                score = float(validate(self.model)) if rank == 0 else 0.0
                if world > 1:
                    score = _broadcast_score(score)
                curve.append((step, score))
                if stopper.update(score, step):
                    best_state = copy.deepcopy(self.model.state_dict())
                elif stopper.stopped:
                    break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        return stopper.best_step, stopper.best_score, curve


def _join_group(model: nn.Module) -> tuple[int, int]:
    """(rank, world size); under torchrun joins the process group and copies rank 0's initial weights."""
    from avrec.finetune.distributed import dist_info, init_distributed

    if dist_info()[1] <= 1:
        return 0, 1
    import torch.distributed as dist

    rank, world, _ = init_distributed()
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor.data, src=0)
    return rank, world


def _sum_gradients(model: nn.Module) -> None:
    """All-reduce (sum) every parameter's gradient in one flat buffer; a missing gradient counts as zeros."""
    import torch.distributed as dist

    params = list(model.parameters())
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def _broadcast_score(score: float) -> float:
    """Rank 0's validation score on every process, so all of them stop (and keep the best state) together."""
    import torch.distributed as dist

    t = torch.tensor([score], dtype=torch.float64)
    dist.broadcast(t, src=0)
    return float(t.item())
