"""CF backbones trained through RecBole, and the hook LLM-initialised variants override."""

from __future__ import annotations

import time
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from bench.backbones import BACKBONES, CF_BACKBONES, RecBoleCF
from bench.errors import BenchError
from bench.types import FitContext, ParamCounts


class NoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RecBoleMethod:
    """A RecBole general recommender on the split; subclasses may supply initial embeddings."""

    name = "random"
    version: ClassVar[int] = 1  # bumped when a default or the behaviour changes (part of run ids)
    Settings: ClassVar[type[BaseModel]] = NoSettings
    backbones: ClassVar[tuple[str, ...]] = CF_BACKBONES
    needs_encoder: ClassVar[bool] = False

    def __init__(self, settings: BaseModel | None = None):
        self.settings = settings or self.Settings()
        self.cf: RecBoleCF | None = None
        self._item_ids: np.ndarray | None = None

    def embedding_size(self, ctx: FitContext) -> int:
        """CF embedding size; LLMInit-Full overrides it with the encoder's dimension."""
        return int(ctx.backbone_config["embedding_size"])

    def initial_embeddings(self, ctx: FitContext, cf: RecBoleCF) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(user matrix over ctx.dataset.user_ids, item matrix over ctx.dataset.item_ids) or Nones."""
        return None, None

    def customise(self, ctx: FitContext, cf: RecBoleCF) -> None:
        """After the model is built, before training: by default, apply `initial_embeddings`."""
        users, items = self.initial_embeddings(ctx, cf)
        if users is not None or items is not None:
            cf.set_embeddings(ctx.dataset.user_ids, users, ctx.dataset.item_ids, items)

    def fit(self, ctx: FitContext) -> None:
        if ctx.backbone not in self.backbones:
            raise BenchError(f"method {self.name!r} does not run on backbone {ctx.backbone!r}; valid "
                             f"backbones: {', '.join(self.backbones)}")
        config = dict(ctx.backbone_config, embedding_size=self.embedding_size(ctx),
                      eval_batch_size=ctx.options.eval_batch_size)
        ctx.extra["effective_embedding_size"] = config["embedding_size"]
        if BACKBONES[ctx.backbone].sequential:
            from bench.sequential import RecBoleSeq as backbone_cls
        else:
            backbone_cls = RecBoleCF
        self.cf = backbone_cls(ctx.backbone, config, ctx.seed, ctx.device, ctx.run_dir / "work")
        start = time.perf_counter()
        self.cf.prepare(ctx.split)
        self.cf.build_model()
        ctx.timings["recbole_prepare"] = time.perf_counter() - start
        self.customise(ctx, self.cf)
        info = self.cf.train()
        ctx.timings["train"] = info["train_seconds"]
        ctx.extra["training"] = info
        self._item_ids = ctx.dataset.item_ids

    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        return self.cf.score(users, self._item_ids if items is None else items)

    def parameter_counts(self) -> ParamCounts:
        return ParamCounts(trainable=self.cf.parameter_count())


class RandomInit(RecBoleMethod):
    """The backbone as RecBole builds it (random initialisation); CF and sequential backbones."""

    name = "random"
    backbones = tuple(k for k, v in BACKBONES.items() if v.recbole)
