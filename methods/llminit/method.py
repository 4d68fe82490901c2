"""LLMInit (papers 000/001): text-embedding dimensions selected to initialise CF embeddings.

Item rows: the item's text embedding restricted to K selected dimensions (rand / uni / var), all N
(full) or projected by PCA (PtE's baseline). User rows: pooled from the user's *training* items
(mean by default, Eq. 1; max or LightGCN-style propagation as in the paper's appendix).
Every choice below is a setting recorded in the run record.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bench.backbones import SEQUENTIAL_BACKBONES
from bench.errors import BenchError
from bench.method import ColdItemSource
from bench.types import FitReport, ParamCounts, RunContext, TrainView
from methods.classic import RecBoleMethod


class LLMInitSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # how the K of N text-embedding dimensions are chosen (the paper's Rand / Uni / Var; all N; or PCA to K)
    selection: Literal["rand", "uni", "var", "full", "pca"] = "var"
    user_init: Literal["mean", "max", "propagation"] = "mean"
    # Var: variance over the top `popular_fraction` items by training degree (code) or all items (paper)
    variance_items: Literal["popular", "all"] = "popular"
    popular_fraction: float = Field(0.2, gt=0, le=1)
    # Rand: the paper draws a K-subset; the authors' code samples with replacement (duplicates possible)
    rand_replacement: bool = False


def uniform_selection(n: int, k: int) -> np.ndarray:
    """Indices 0, s, 2s, ... with s = N // K, first K."""
    return np.arange(0, n, n // k)[:k]


def random_selection(n: int, k: int, rng: np.random.Generator, replacement: bool) -> np.ndarray:
    return np.sort(rng.choice(n, size=k, replace=replacement))


def variance_selection(embeddings: np.ndarray, k: int, rows: np.ndarray | None = None) -> np.ndarray:
    """Top-K dimensions by variance over `rows` (all rows if None), returned in ascending index order."""
    sample = embeddings if rows is None else embeddings[rows]
    variance = sample.var(axis=0)
    top = np.argsort(-variance, kind="stable")[:k]
    return np.sort(top)


def pool_users(item_matrix: np.ndarray, user_items: list[np.ndarray], how: str,
               item_degree: np.ndarray | None = None) -> np.ndarray:
    """User rows from their training items' rows: mean, max, or symmetric-normalised propagation."""
    out = np.zeros((len(user_items), item_matrix.shape[1]), dtype=np.float32)
    for row, items in enumerate(user_items):
        if len(items) == 0:
            continue
        vectors = item_matrix[items]
        if how == "mean":
            out[row] = vectors.mean(axis=0)
        elif how == "max":
            out[row] = vectors.max(axis=0)
        else:  # one LightGCN hop: sum_i e_i / sqrt(|N_u| |N_i|)
            weights = 1.0 / np.sqrt(len(items) * np.maximum(item_degree[items], 1))
            out[row] = (vectors * weights[:, None]).sum(axis=0)
    return out


class LLMInit(RecBoleMethod):
    """LLMInit on CF backbones: the selected (or PCA-projected) text dimensions initialise the item
    embeddings, users pooled from their training items; the entries preset `selection`."""

    default_name = "llminit-var"
    Settings: ClassVar[type[BaseModel]] = LLMInitSettings
    needs_encoder: ClassVar[bool] = True
    needs_item_text: ClassVar[bool] = True  # its rows are text embeddings of the items
    item_cold_start: ClassVar[ColdItemSource] = "text-init"  # a cold item keeps its text-initialised row

    @property
    def selection(self) -> str:
        return self.settings.selection

    def embedding_size(self, ctx: RunContext) -> int:
        if self.selection == "full":
            return int(ctx.encoder.dim)
        return ctx.backbone_settings.embedding_size

    def initial_embeddings(self, ctx: RunContext, cf) -> tuple[np.ndarray, np.ndarray]:
        text = ctx.embed_items()  # [n_items, N] in self.data.catalogue.item_ids order, cached on disk
        n_dims, k = text.shape[1], self.embedding_size(ctx)
        if k > n_dims:
            raise BenchError(f"{self.name}: embedding_size {k} exceeds the encoder's {n_dims} dimensions")
        item_ids = self.data.catalogue.item_ids
        item_pos = {item: i for i, item in enumerate(item_ids)}
        train = self.data.split.train
        degree = np.bincount(train["item"].map(item_pos).to_numpy(), minlength=len(item_ids))
        rng = np.random.default_rng(ctx.seed)
        settings: LLMInitSettings = self.settings
        if self.selection == "pca":
            from sklearn.decomposition import PCA

            items = PCA(n_components=k, random_state=ctx.seed).fit_transform(text).astype(np.float32)
            chosen = None
        else:
            if self.selection == "uni":
                chosen = uniform_selection(n_dims, k)
            elif self.selection == "rand":
                chosen = random_selection(n_dims, k, rng, settings.rand_replacement)
            elif self.selection == "var":
                rows = None
                if settings.variance_items == "popular":
                    n_top = max(1, int(np.ceil(len(item_ids) * settings.popular_fraction)))
                    rows = np.argsort(-degree, kind="stable")[:n_top]
                chosen = variance_selection(text, k, rows)
            else:  # full
                chosen = np.arange(n_dims)
            items = text[:, chosen].astype(np.float32)
        user_ids = self.data.catalogue.user_ids
        by_user = train.groupby("user")["item"].agg(list)
        user_items = [np.array([item_pos[i] for i in by_user.get(u, [])], dtype=np.int64) for u in user_ids]
        users = pool_users(items, user_items, settings.user_init, degree)
        self.report.facts["llminit"] = {
            "selection": self.selection, "encoder_dim": int(n_dims), "k": int(k),
            "selected_dims": None if chosen is None else [int(i) for i in chosen],
            "unique_dims": None if chosen is None else int(len(np.unique(chosen))),
        }
        return users, items

    def parameter_counts(self) -> ParamCounts:
        base = super().parameter_counts()
        return ParamCounts(trainable=base.trainable, frozen_online=0,
                           frozen_offline=self._encoder_params)

    def fit(self, data: TrainView, ctx: RunContext) -> FitReport:
        self._encoder_params = int(ctx.encoder.parameter_count()) if ctx.encoder is not None else 0
        return super().fit(data, ctx)


class LLMInitSeq(LLMInit):
    """LLMInit on SASRec / GRU4Rec (PtE's 'LLMInit' baseline row): the selected or PCA-projected item text
    dimensions initialise the sequential model's item table (width = embedding_size), trained as usual."""

    default_name = "llminit-var-seq"
    backbones = SEQUENTIAL_BACKBONES

    def customise(self, ctx: RunContext, cf) -> None:
        _, items = self.initial_embeddings(ctx, cf)
        cf.replace_item_embeddings(self.data.catalogue.item_ids, items, "init")
