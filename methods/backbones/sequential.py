"""Sequential backbones through RecBole (SASRec, GRU4Rec) on the harness's split files.

RecBole's SequentialDataset takes pre-built sequences when `benchmark_filename` is set, so the split is
written as (user, item_id_list, item_id) rows: every training position with its previous `max_len`
training items; valid rows with the user's training history; test rows with train + valid history.
Any item-embedding matrix can replace the ID table through a trained linear adapter (frozen embeddings
-> hidden size, as LLM2Rec's code), or initialise it (LLMInit-style).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import BenchError
from bench.recbole_compat import apply as apply_recbole_compat
from methods.backbones.cf import RecBoleCF, write_catalogue_files, write_inter_files


def user_sequences(frames: list[pd.DataFrame]) -> dict[str, list[str]]:
    """Each user's items in time order over the given interaction frames."""
    inter = pd.concat(frames).sort_values(["user", "timestamp", "item"], kind="mergesort")
    return {u: g.tolist() for u, g in inter.groupby("user")["item"]}


def write_sequence_split(data, folder: Path, max_len: int, name: str = "bench",
                         train_targets_per_user: int | None = None) -> None:
    """(user, history, target) rows for train and valid, histories truncated to max_len; the catalogue files.

    train_targets_per_user=K keeps only each user's last K training positions as targets (histories
    still reach back max_len items); None keeps every position. Test is the harness's (see
    `write_atomic_split`): RecBole gets a copy of valid in its place."""
    if train_targets_per_user is not None and train_targets_per_user < 1:
        raise BenchError(f"backbone setting train_targets_per_user must be >= 1 or null, got "
                         f"{train_targets_per_user}")
    target = folder / name
    target.mkdir(parents=True, exist_ok=True)
    train_seq = user_sequences([data.train])
    # a held-out validation user (cold_users) is absent from training: its earlier sequence is its context
    valid_seq = {**user_sequences([data.split.valid_context]), **train_seq} if len(data.split.valid_context) \
        else train_seq
    rows: dict[str, list[str]] = {"train": [], "valid": []}
    for user, items in train_seq.items():
        first = 1 if train_targets_per_user is None else max(1, len(items) - train_targets_per_user)
        for t in range(first, len(items)):
            rows["train"].append(_row(user, items[max(0, t - max_len):t], items[t]))
    for user, item in zip(data.valid["user"], data.valid["item"]):
        past = valid_seq.get(user, [])
        if past:  # a sequence model needs at least one earlier item
            rows["valid"].append(_row(user, past[-max_len:], item))
    write_inter_files(target, name, "user_id:token\titem_id_list:token_seq\titem_id:token\n", rows)
    write_catalogue_files(data, target, name)


def _row(user: str, history: list[str], item: str) -> str:
    return f"{user}\t{' '.join(history)}\t{item}\n"


@cache
def _masked_loader_class():
    from recbole.data.dataloader import FullSortEvalDataLoader

    class MaskedSequentialFullSortEvalDataLoader(FullSortEvalDataLoader):
        """RecBole's sequential full-sort loader, with the history index its general models get.

        For general models RecBole masks, per user, the items of earlier phases less the row's positives
        (`FullSortEvalDataLoader._set_user_property`: used - positive); for sequential models it passes
        `history_index=None` and masks nothing. Here each row gets the general models' mask, built from
        `user_items` (user index -> item indices of earlier phases); the trainer applies it unchanged
        (`Trainer._full_sort_batch_eval`: scores[history_index] = -inf)."""

        def __init__(self, config, dataset, sampler, user_items: dict[int, np.ndarray]):
            self.user_items = user_items
            super().__init__(config, dataset, sampler, shuffle=False)

        def collate_fn(self, index):
            import torch

            interaction, _, positive_u, positive_i = super().collate_fn(index)
            users = interaction[self.uid_field].numpy()
            empty = np.zeros(0, dtype=np.int64)
            items = [self.user_items.get(int(u), empty) for u in users]
            rows = np.repeat(np.arange(len(users)), [len(x) for x in items])
            cols = np.concatenate(items) if items else empty
            # a positive stays rankable, as in RecBole's general mask (a no-op on the harness's splits, which
            # keep one interaction per user and item: a valid item is never a training item)
            keep = cols != positive_i.numpy()[rows]
            history_index = (torch.as_tensor(rows[keep], dtype=torch.int64),
                             torch.as_tensor(cols[keep], dtype=torch.int64))
            return interaction, history_index, positive_u, positive_i

    return MaskedSequentialFullSortEvalDataLoader


def masked_full_sort_loader(loader, user_items: dict[int, np.ndarray]):
    """The same evaluation rows as RecBole's sequential full-sort `loader`, each masking its user's
    `user_items` (RecBole indices) but the row's target: an extension, RecBole's trainer is unchanged."""
    return _masked_loader_class()(loader.config, loader._dataset, loader._sampler, user_items)


class AdaptedItemEmbedding:
    """Frozen item matrix -> trained Linear -> hidden size; row 0 (RecBole's padding) stays zero.

    Exposes `forward(ids)` and `.weight` like nn.Embedding, which is all SASRec / GRU4Rec use.
    """

    def __new__(cls, frozen, hidden: int):
        import torch
        from torch import nn

        class _Adapted(nn.Module):
            def __init__(self):
                super().__init__()
                self.register_buffer("frozen", torch.as_tensor(frozen, dtype=torch.float32))
                self.adapter = nn.Linear(self.frozen.shape[1], hidden)

            @property
            def weight(self):
                out = self.adapter(self.frozen)
                return torch.cat([torch.zeros_like(out[:1]), out[1:]], dim=0)

            def forward(self, ids):
                return nn.functional.embedding(ids, self.weight)

        return _Adapted()


class RecBoleSeq(RecBoleCF):
    """A RecBole sequential recommender; `score` builds each user's train+valid history."""

    def recbole_config_dict(self) -> dict[str, Any]:
        cfg = super().recbole_config_dict()
        s = self.settings
        cfg.pop("max_len", None)
        cfg.pop("train_targets_per_user", None)
        cfg.update({
            "MAX_ITEM_LIST_LENGTH": s.max_len, "ITEM_LIST_LENGTH_FIELD": "item_length",
            "LIST_SUFFIX": "_list", "load_col": {"inter": ["user_id", "item_id_list", "item_id"], "user": ["user_id"], "item": ["item_id"]},
            # one vocabulary for history lists and targets (RecBole remaps each field separately otherwise)
            "alias_of_item_id": ["item_id_list"],
            "TIME_FIELD": None, "valid_metric": s.valid_metric, "train_neg_sample_args": None,
            "hidden_size": cfg.get("hidden_size", s.embedding_size),
        })
        return cfg

    def prepare(self, data) -> None:
        apply_recbole_compat()
        from recbole.config import Config
        from recbole.data import create_dataset, data_preparation

        from methods.backbones.cf import _model_class

        write_sequence_split(data, self.work_dir / "data", self.settings.max_len,
                             train_targets_per_user=self.settings.train_targets_per_user)
        self.model_cls = _model_class(self.spec)
        with self._log_to_run_dir():
            self.config = Config(model=self.model_cls, dataset="bench", config_dict=self.recbole_config_dict())
            self.dataset = create_dataset(self.config)
            self.train_data, self.valid_data, self.test_data = data_preparation(self.config, self.dataset)
            # select checkpoints on the protocol the harness tests with: each user's training items masked
            self.valid_data = masked_full_sort_loader(self.valid_data, self.train_items(data))
        self.history = user_sequences([data.train, data.valid])

    def train_items(self, data) -> dict[int, np.ndarray]:
        """RecBole user index -> RecBole indices of the items the user is known to have before valid: training
        items, and a held-out valid user's context (cold_users). The harness masks the same one phase later
        when it ranks test (train + valid + context). Taken from the split, not from RecBole's training rows,
        which miss older items when `train_targets_per_user` caps the targets."""
        known = pd.concat([data.train[["user", "item"]], data.split.valid_context[["user", "item"]]])
        frame = pd.DataFrame({"user": self.token_index("user_id", known["user"]),
                              "item": self.token_index("item_id", known["item"])})
        frame = frame[(frame["user"] >= 0) & (frame["item"] >= 0)]
        return {int(u): np.unique(g.to_numpy()) for u, g in frame.groupby("user")["item"]}

    def replace_item_embeddings(self, item_ids, matrix: np.ndarray, mode: str) -> None:
        """mode 'adapter': frozen matrix + trained Linear; 'init': copy (same width) and train as usual."""
        index = self.token_index("item_id", item_ids)
        n_rows = self.model.item_embedding.weight.shape[0]
        full = np.zeros((n_rows, matrix.shape[1]), dtype=np.float32)
        known = index >= 0
        full[index[known]] = matrix[known]
        if mode == "adapter":
            hidden = self.model.item_embedding.weight.shape[1]
            self.model.item_embedding = AdaptedItemEmbedding(full, hidden).to(self.config["device"])
        elif mode == "init":
            if matrix.shape[1] != self.model.item_embedding.weight.shape[1]:
                raise BenchError(f"embedding init needs width {self.model.item_embedding.weight.shape[1]}, "
                                 f"got {matrix.shape[1]}: use mode 'adapter' or set embedding_size")
            import torch

            with torch.no_grad():
                self.model.item_embedding.weight[1:] = torch.as_tensor(full[1:])
        else:
            raise BenchError(f"unknown item embedding mode {mode!r}; valid choices: adapter, init")

    def score(self, user_ids, item_ids, histories: dict | None = None) -> np.ndarray:
        """Scores over `item_ids`, each user's sequence = `histories[user]` where given (a held-out user's
        earlier items, given at inference), else its train + valid items."""
        import torch
        from recbole.data.interaction import Interaction

        max_len = self.settings.max_len
        seqs = np.zeros((len(user_ids), max_len), dtype=np.int64)
        lengths = np.zeros(len(user_ids), dtype=np.int64)
        for row, user in enumerate(user_ids):
            known = (histories or {}).get(user)
            past = self.token_index("item_id", list(known if known is not None else self.history.get(user, []))
                                    [-max_len:])
            past = past[past >= 0]
            if len(past) == 0:
                raise BenchError(f"user {user!r} has no history for the sequential backbone")
            seqs[row, :len(past)], lengths[row] = past, len(past)
        device = self.config["device"]
        users = self.token_index("user_id", user_ids)
        users[users < 0] = 0  # a user RecBole never saw: the padding row, never another user's (-1)
        inter = Interaction({"item_id_list": torch.as_tensor(seqs, device=device),
                             "item_length": torch.as_tensor(lengths, device=device),
                             "user_id": torch.as_tensor(users, device=device)})
        with torch.no_grad():
            scores = self.model.full_sort_predict(inter).float().cpu().numpy()
        columns = self.token_index("item_id", item_ids)
        out = np.full((len(user_ids), len(columns)), -np.inf, dtype=np.float32)
        known = columns >= 0
        out[:, known] = scores[:, columns[known]]
        out[:, known & (columns == 0)] = -np.inf
        return out



def with_user_term(model_cls):
    """`model_cls` (a RecBole sequential model: SASRec, GRU4Rec) extended with a user term: the sequence
    representation becomes h(seq) + Linear(z_u), z_u a frozen per-user vector (PtE's user profiles).

    The subclass keeps its base's constructor (identical parameters and initialisation); the user table is
    added by `attach_user_term` once the model exists. Each entry point (`calculate_loss`, `predict`,
    `full_sort_predict`) notes the batch's user ids, which `forward` reads: RecBole's `forward` takes only
    the item sequence."""
    import torch
    from torch import nn

    class UserProfiles(nn.Module):
        def __init__(self, table: np.ndarray, hidden: int):
            super().__init__()
            self.register_buffer("frozen", torch.as_tensor(table))
            self.adapter = nn.Linear(table.shape[1], hidden)

        def forward(self, users):
            return self.adapter(self.frozen[users])

    class WithUserTerm(model_cls):
        def attach_user_term(self, table: np.ndarray) -> None:
            """Frozen [n_users, d] table over RecBole's user ids (row 0: padding, zero) + a trained Linear."""
            self.user_term = UserProfiles(table, int(self.item_embedding.weight.shape[1])).to(
                self.item_embedding.weight.device)

        def forward(self, item_seq, item_seq_len):
            output = super().forward(item_seq, item_seq_len)
            term = self._modules.get("user_term")  # a registered submodule once attached
            if term is None:
                return output
            if self._batch_users is None:
                raise BenchError(f"{model_cls.__name__} with a user term was called without user ids")
            return output + term(self._batch_users.to(output.device))

        def _with_users(self, interaction, call):
            self._batch_users = interaction[self.USER_ID] if self.USER_ID in interaction.interaction else None
            try:
                return call(interaction)
            finally:
                self._batch_users = None

        def calculate_loss(self, interaction):
            return self._with_users(interaction, super().calculate_loss)

        def predict(self, interaction):
            return self._with_users(interaction, super().predict)

        def full_sort_predict(self, interaction):
            return self._with_users(interaction, super().full_sort_predict)

    WithUserTerm.__name__ = WithUserTerm.__qualname__ = f"{model_cls.__name__}WithUserTerm"
    WithUserTerm._batch_users = None
    return WithUserTerm
