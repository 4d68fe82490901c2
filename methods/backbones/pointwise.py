"""Pointwise CF models for the CTR table (CoLLM, paper 002): MF, LightGCN, SASRec, DIN trained with BCE on
the split's labelled pairs, early-stopped on validation AUC; scored alone and used as CoLLM's
collaborative encoders (user / item vectors).

Hand-written in torch rather than trained through RecBole: RecBole 1.2.1's general and sequential
trainers learn from positives with sampled negatives (they cannot take the split's observed negatives,
rating < 4, as BCE targets), and its context-aware DIN would need its own feature pipeline and ran
143 s/epoch here (RECBOLE-NOTES.md). CoLLM's own code likewise defines these four models itself and
trains them pointwise with BCE. Architectures follow RecBole's / CoLLM's: LightGCN 2 layers over the
training positives, SASRec 2 layers 2 heads (user = last position), DIN attention unit + MLP 200-80-1.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from bench.eval.pointwise import PairData, auc, histories
from bench.hashing import json_hash
from bench.types import RunContext, ScoreQuery, TrainView


class CFSettings(BaseModel):
    """Pre-training of a pointwise CF model (MF defaults: BCE, Adam lr 1e-3, wd 1e-4, d 256)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    embedding_size: int = Field(256, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    batch_size: int = Field(1024, ge=1)
    epochs: int = Field(100, ge=1)
    patience: int = Field(5, ge=1)  # epochs without validation AUC gain before stopping (best state restored)
    # epochs always run before patience may stop training (a flat start is not a plateau: a CF model whose
    # validation AUC has not moved yet is not converged); 0 = patience counts from the first epoch
    min_epochs: int = Field(0, ge=0)
    n_layers: int = Field(2, ge=1)  # LightGCN propagation layers / SASRec blocks
    n_heads: int = Field(2, ge=1)  # SASRec
    dropout: float = Field(0.2, ge=0, lt=1)  # SASRec and DIN


class Index:
    """Dense ids: 0 = padding / unknown, users and items 1..n in the dataset's order."""

    def __init__(self, user_ids, item_ids):
        self.user = {u: i + 1 for i, u in enumerate(user_ids)}
        self.item = {it: i + 1 for i, it in enumerate(item_ids)}

    def users(self, ids) -> np.ndarray:
        return np.array([self.user.get(u, 0) for u in ids], dtype=np.int64)

    def items(self, ids) -> np.ndarray:
        return np.array([self.item.get(i, 0) for i in ids], dtype=np.int64)

    def history(self, hists, length: int) -> np.ndarray:
        """Right-aligned [n, length] item indices (0 = padding on the left)."""
        out = np.zeros((len(hists), length), dtype=np.int64)
        for row, hist in enumerate(hists):
            idx = self.items(hist[-length:])
            if len(idx):
                out[row, -len(idx):] = idx
        return out


def build_model(kind: str, n_users: int, n_items: int, s: CFSettings, history_length: int, train_pos=None):
    """A torch module with forward(user, item, hist) -> logit, and user_vector / item_vector for CoLLM."""
    import torch
    from torch import nn

    d = s.embedding_size

    class MF(nn.Module):
        target_dependent_user = False

        def __init__(self):
            super().__init__()
            self.user_emb = nn.Embedding(n_users + 1, d)
            self.item_emb = nn.Embedding(n_items + 1, d)
            nn.init.normal_(self.user_emb.weight, std=0.1)
            nn.init.normal_(self.item_emb.weight, std=0.1)

        def user_vector(self, user, item, hist):
            return self.user_emb(user)

        def item_vector(self, item):
            return self.item_emb(item)

        def forward(self, user, item, hist):
            return (self.user_vector(user, item, hist) * self.item_vector(item)).sum(-1)

    class LightGCN(MF):
        def __init__(self):
            super().__init__()
            users, items = train_pos  # training positives only: the graph of the split's training window
            n = n_users + 1 + n_items + 1
            rows = np.concatenate([users, items + n_users + 1])
            cols = np.concatenate([items + n_users + 1, users])
            deg = np.bincount(rows, minlength=n).astype(np.float32)
            inv = np.where(deg > 0, np.maximum(deg, 1) ** -0.5, 0.0)
            vals = inv[rows] * inv[cols]
            self.register_buffer("adj", torch.sparse_coo_tensor(
                torch.as_tensor(np.stack([rows, cols])), torch.as_tensor(vals, dtype=torch.float32),
                (n, n)).coalesce(), persistent=False)

        def propagate(self):
            x = torch.cat([self.user_emb.weight, self.item_emb.weight])
            layers = [x]
            for _ in range(s.n_layers):
                x = torch.sparse.mm(self.adj, x)
                layers.append(x)
            out = torch.stack(layers).mean(0)
            return out[:n_users + 1], out[n_users + 1:]

        def user_vector(self, user, item, hist):
            return self.propagate()[0][user]

        def item_vector(self, item):
            return self.propagate()[1][item]

        def forward(self, user, item, hist):
            users, items = self.propagate()
            return (users[user] * items[item]).sum(-1)

    class SASRec(nn.Module):
        target_dependent_user = False

        def __init__(self):
            super().__init__()
            self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
            self.pos_emb = nn.Embedding(history_length + 1, d)
            layer = nn.TransformerEncoderLayer(d, s.n_heads, d, s.dropout, batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, s.n_layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(d)
            nn.init.normal_(self.item_emb.weight, std=0.02)
            with torch.no_grad():
                self.item_emb.weight[0].zero_()

        def user_vector(self, user, item, hist):
            # a learned "empty" first slot so users without history still get a defined last position
            seq = torch.cat([torch.zeros_like(hist[:, :1]), hist], 1)
            x = self.item_emb(seq) + self.pos_emb.weight[None]
            causal = torch.triu(torch.ones(seq.shape[1], seq.shape[1], dtype=torch.bool, device=seq.device), 1)
            pad = seq == 0
            pad[:, 0] = False
            h = self.encoder(x, mask=causal, src_key_padding_mask=pad)
            return self.norm(h[:, -1])  # user = the last position

        def item_vector(self, item):
            return self.item_emb(item)

        def forward(self, user, item, hist):
            return (self.user_vector(user, item, hist) * self.item_vector(item)).sum(-1)

    class DIN(nn.Module):
        target_dependent_user = True  # the user vector is the history pooled by attention on the target

        def __init__(self):
            super().__init__()
            self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
            nn.init.normal_(self.item_emb.weight, std=0.02)
            self.att = nn.Sequential(nn.Linear(4 * d, 80), nn.Sigmoid(), nn.Linear(80, 40), nn.Sigmoid(),
                                     nn.Linear(40, 1))
            self.mlp = nn.Sequential(nn.Linear(3 * d, 200), nn.ReLU(), nn.Dropout(s.dropout),
                                     nn.Linear(200, 80), nn.ReLU(), nn.Dropout(s.dropout), nn.Linear(80, 1))

        def user_vector(self, user, item, hist):
            q = self.item_emb(item)[:, None].expand(-1, hist.shape[1], -1)
            k = self.item_emb(hist)
            w = self.att(torch.cat([q, k, q - k, q * k], -1)).squeeze(-1) * (hist > 0)
            return (w[..., None] * k).sum(1)  # DIN: unnormalised attention weights

        def item_vector(self, item):
            return self.item_emb(item)

        def forward(self, user, item, hist):
            u, i = self.user_vector(user, item, hist), self.item_vector(item)
            return self.mlp(torch.cat([u, i, u * i], -1)).squeeze(-1)

    return {"mf": MF, "lightgcn": LightGCN, "sasrec": SASRec, "din": DIN}[kind]()


class PairTensors:
    """A split part as index tensors (user, item, history, label)."""

    def __init__(self, data, index: Index, length: int):
        self.frame = data.frame
        self.user = index.users(data.frame["user"])
        self.item = index.items(data.frame["item"])
        self.hist = index.history(data.histories, length)
        self.label = data.frame["label"].to_numpy().astype(np.float32)


def predict(model, user, item, hist, device: str, batch: int = 4096) -> np.ndarray:
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(user), batch):
            sl = slice(start, start + batch)
            args = [torch.as_tensor(a[sl], device=device) for a in (user, item, hist)]
            out.append(model(*args).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def convergence(curve: list[dict], epochs_cap: int, patience: int, min_epochs: int = 0) -> dict:
    """How a CF training ended, from its validation curve (one point per epoch): `best_epoch` (0-based, the
    first epoch of the best validation AUC: the state kept), `epochs_cap`, and `early_stopped` = the patience
    rule stopped it (`patience` epochs without a validation gain after the best one, once `min_epochs` epochs
    ran; True also when that happens at the cap's last epoch), False = it ran to the cap still improving. `train_cf`'s loop stops
    exactly when this says so; it also reads an info.json cached without these keys."""
    values = [point["valid_auc"] for point in curve]
    finite = [k for k, v in enumerate(values) if v == v]  # NaN: no gain
    best = max(finite, key=lambda k: (values[k], -k)) if finite else None
    since = len(curve) - 1 - best if best is not None else len(curve)
    return {"epochs_cap": int(epochs_cap), "best_epoch": None if best is None else int(curve[best]["epoch"]),
            "early_stopped": bool(since >= patience and len(curve) >= min_epochs)}


def train_cf(kind: str, s: CFSettings, data: TrainView, ctx: RunContext, index: Index, train: PairTensors,
             valid: PairTensors, seed: int, log=None):
    """BCE training with Adam; the epoch with the best validation AUC is kept. Info: epochs run, the cap,
    the best epoch and its validation AUC, whether patience stopped it (`early_stopped`), the curve."""
    import torch

    length = int(data.split.params["history_length"])
    pos = train.label == 1
    torch.manual_seed(seed)
    model = build_model(kind, len(index.user), len(index.item), s, length,
                        (train.user[pos], train.item[pos])).to(ctx.device)
    opt = torch.optim.Adam(model.parameters(), lr=s.learning_rate, weight_decay=s.weight_decay)
    rng = np.random.default_rng(seed)
    best, best_state, bad, history = -1.0, None, 0, []
    start = time.perf_counter()
    for epoch in range(s.epochs):
        model.train()
        order = rng.permutation(len(train.user))
        total = 0.0
        for b in range(0, len(order), s.batch_size):
            idx = order[b:b + s.batch_size]
            args = [torch.as_tensor(a[idx], device=ctx.device) for a in (train.user, train.item, train.hist)]
            logits = model(*args)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, torch.as_tensor(train.label[idx], device=ctx.device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        value = auc(valid.label, predict(model, valid.user, valid.item, valid.hist, ctx.device))
        history.append({"epoch": epoch, "loss": total / len(order), "valid_auc": value})
        if value > best:
            best, bad = value, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= s.patience and epoch + 1 >= s.min_epochs:
                break
    model.load_state_dict(best_state)
    model.eval()
    info = {"epochs_run": len(history), **convergence(history, s.epochs, s.patience, s.min_epochs),
            "best_valid_auc": best,
            "n_train_pairs": int(len(train.label)), "n_valid_pairs": int(len(valid.label)),
            "train_seconds": time.perf_counter() - start, "curve": history}
    return model, info


CF_PAIRS = ("train", "train_all")  # which training pairs of the view a CF model learns from
CACHE_VERSION = 2  # 2: keyed by the pairs trained on (was the split's content hash); info has early_stopped


def _pairs_hash(data: PairData) -> str:
    """The pairs a CF model learns from, in order (the epochs' shuffles index them): user, item, label,
    history."""
    digest = hashlib.sha256(data.frame[["user", "item", "label"]].to_csv(index=False).encode())
    digest.update(json.dumps([list(h) for h in data.histories], separators=(",", ":")).encode())
    return digest.hexdigest()


def _cache_key(kind: str, s: CFSettings, data: TrainView, ctx: RunContext, train: PairData,
               valid: PairData) -> str:
    """What the trained model depends on: model, settings, the catalogue (the index), the training pairs
    it learns from and the validation pairs it stops on (not the split's hash: a few-shot split's CoLLM
    encoder, trained on all training pairs, is the very model of the CF baseline on all of them), history
    length, seed."""
    return json_hash({"kind": kind, "settings": s.model_dump(), "catalogue": data.catalogue.content_hash,
                      "train": _pairs_hash(train), "valid": _pairs_hash(valid),
                      "history_length": int(data.split.params["history_length"]), "seed": ctx.seed,
                      "version": CACHE_VERSION}, 16, compact=False)


def pretrained_cf(kind: str, s: CFSettings, data: TrainView, ctx: RunContext,
                  pairs: Literal["train", "train_all"] = "train"):
    """(model, index, info): trained on `pairs` of the view (`train`: the split's train part, a few-shot
    split's N pairs; `train_all`: all training pairs of the split) with early stopping on valid, once per
    (model, settings, pairs, valid pairs, seed), and cached on disk: the CF baseline of a seed and CoLLM's
    frozen encoder of the same seed, trained on the same pairs, are one and the same model. `info`:
    `train_cf`'s (`early_stopped`, `epochs_cap`, `best_epoch`, ...) plus `pairs`, `cached` and `key`."""
    import torch

    from bench.cache import cached_artifact

    if pairs not in CF_PAIRS:
        raise ValueError(f"pairs must be one of {CF_PAIRS}, got {pairs!r}")
    index = Index(data.catalogue.user_ids, data.catalogue.item_ids)
    length = int(data.split.params["history_length"])
    train_data, valid_data = histories(data.split, pairs), histories(data.split, "valid")
    key = _cache_key(kind, s, data, ctx, train_data, valid_data)
    train = PairTensors(train_data, index, length)
    valid = PairTensors(valid_data, index, length)
    pos = train.label == 1
    model = build_model(kind, len(index.user), len(index.item), s, length, (train.user[pos], train.item[pos]))
    trained: dict = {}

    def build(tmp: Path) -> None:
        trained["model"], trained["info"] = train_cf(kind, s, data, ctx, index, train, valid, ctx.seed)
        torch.save({k: v.cpu() for k, v in trained["model"].state_dict().items()}, tmp / "model.pt")
        (tmp / "info.json").write_text(json.dumps(trained["info"]))

    folder, built = cached_artifact(Path(ctx.cache_dir) / "ctr_cf" / f"{kind}-{key}", build, memo_dir=ctx.cache_dir)
    run = {"pairs": pairs, "key": key}
    if built:
        return trained["model"], index, trained["info"] | run | {"cached": False}
    model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
    info = json.loads((folder / "info.json").read_text())
    # an info.json written before these keys were recorded: derived from its curve (what the loop decided)
    info = convergence(info.get("curve", []), s.epochs, s.patience, s.min_epochs) | {
        "n_train_pairs": len(train.label), "n_valid_pairs": len(valid.label)} | info
    return model.to(ctx.device).eval(), index, info | run | {"cached": True}


class PairHistories:
    """The history each (user, item) pair is scored with: the one the query's protocol names, else the
    user's latest `history_length` positives of train + valid (the split's window-start history)."""

    def __init__(self, data: TrainView):
        self.length = int(data.split.params["history_length"])
        pos = pd.concat([data.train, data.valid])
        pos = pos[pos["label"] == 1].sort_values(["user", "timestamp", "item"], kind="mergesort")
        self.known = {u: tuple(g.to_numpy()[-self.length:]) for u, g in pos.groupby("user")["item"]}

    def get(self, query: ScoreQuery, user, item) -> tuple:
        hist = query.pair_histories.get((user, item))
        return hist if hist is not None else self.known.get(user, ())
