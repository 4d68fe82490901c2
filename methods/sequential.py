"""Item-embedding matrices feeding SASRec / GRU4Rec: frozen text (or LLM) embeddings through a trained
linear adapter (LLM2Rec's downstream protocol), or used as the initial ID table (a setting)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from bench.backbones import SEQUENTIAL_BACKBONES
from bench.types import FitContext, ParamCounts
from methods.classic import RecBoleMethod


class SeqTextSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    item_embedding: Literal["adapter", "init"] = "adapter"


class SeqText(RecBoleMethod):
    """The suite's text encoder embeds item texts; the matrix replaces the sequential model's ID table."""

    name = "seq-text"
    Settings: ClassVar[type[BaseModel]] = SeqTextSettings
    backbones = SEQUENTIAL_BACKBONES
    needs_encoder: ClassVar[bool] = True

    def item_matrix(self, ctx: FitContext):
        """[n_items, d] in ctx.dataset.item_ids order; LLM2Rec variants override this."""
        self._frozen = int(ctx.encoder.parameter_count())
        return ctx.embed_items()

    def customise(self, ctx: FitContext, cf) -> None:
        matrix = self.item_matrix(ctx)
        cf.replace_item_embeddings(ctx.dataset.item_ids, matrix, self.settings.item_embedding)
        ctx.extra["item_embedding"] = {"mode": self.settings.item_embedding, "dim": int(matrix.shape[1])}

    def parameter_counts(self) -> ParamCounts:
        trainable = self.cf.parameter_count()  # the adapter and the sequence encoder; the matrix is a buffer
        return ParamCounts(trainable=trainable, frozen_online=0, frozen_offline=getattr(self, "_frozen", 0))
