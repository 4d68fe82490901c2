"""The classic rows: RecBole backbones as they are (`random`), frozen text-encoder item tables for SASRec /
GRU4Rec (`seq-text`), and the pointwise CF models of the CTR table (`mf-ctr`, `lightgcn-ctr`, `sasrec-ctr`,
`din`); plus `RecBoleMethod`, the hook LLM-initialised variants override."""

from __future__ import annotations

import time
from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from bench.backbones import BACKBONES, CF_BACKBONES, SEQUENTIAL_BACKBONES
from bench.errors import BenchError
from bench.method import ColdItemSource, Method
from bench.search import Choice, FloatRange
from bench.types import FitReport, ParamCounts, RunContext, ScoreQuery, TrainView
from methods.backbones.cf import RecBoleCF
from methods.backbones.pointwise import CFSettings, PairHistories, predict, pretrained_cf


class RecBoleMethod(Method):
    """A RecBole general recommender on the split; subclasses may supply initial embeddings."""

    backbones: ClassVar[tuple[str, ...]] = CF_BACKBONES
    cf: RecBoleCF | None = None

    def embedding_size(self, ctx: RunContext) -> int:
        """CF embedding size; LLMInit-Full overrides it with the encoder's dimension."""
        return ctx.backbone_settings.embedding_size

    def initial_embeddings(self, ctx: RunContext, cf: RecBoleCF) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(user matrix over self.data.catalogue.user_ids, item matrix over self.data.catalogue.item_ids) or Nones."""
        return None, None

    def model_class(self, ctx: RunContext, cls):
        """The RecBole model class to build (a method may extend the backbone's); by default the backbone's."""
        return cls

    def customise(self, ctx: RunContext, cf: RecBoleCF) -> None:
        """After the model is built, before training: by default, apply `initial_embeddings`."""
        users, items = self.initial_embeddings(ctx, cf)
        if users is not None or items is not None:
            cf.set_embeddings(self.data.catalogue.user_ids, users, self.data.catalogue.item_ids, items)

    def fit(self, data: TrainView, ctx: RunContext) -> FitReport:
        self.start_fit(data)
        if ctx.backbone not in self.backbones:
            raise BenchError(f"method {self.name!r} does not run on backbone {ctx.backbone!r}; valid "
                             f"backbones: {', '.join(self.backbones)}")
        settings = ctx.backbone_settings.model_copy(update={"embedding_size": self.embedding_size(ctx)})
        self.report.facts["effective_embedding_size"] = settings.embedding_size
        if BACKBONES[ctx.backbone].sequential:
            from methods.backbones.sequential import RecBoleSeq as backbone_cls
        else:
            backbone_cls = RecBoleCF
        self.cf = backbone_cls(ctx.backbone, settings, ctx.seed, ctx.device, ctx.run_dir / "work",
                               eval_batch_size=ctx.options.eval_batch_size)
        self.cf.progress = ctx.progress
        start = time.perf_counter()
        self.cf.prepare(data)
        self.cf.model_cls = self.model_class(ctx, self.cf.model_cls)
        self.cf.build_model()
        self.report.timings["recbole_prepare"] = time.perf_counter() - start
        self.customise(ctx, self.cf)
        self.report.training(self.cf.train())
        return self.report

    def score(self, query: ScoreQuery) -> np.ndarray:
        return self.cf.score(query.users, self.query_items(query), query.user_histories)

    def parameter_counts(self) -> ParamCounts:
        return ParamCounts(trainable=self.cf.parameter_count())


class RandomInit(RecBoleMethod):
    """The backbone as RecBole builds it (random initialisation); CF and sequential backbones."""

    default_name = "random"
    backbones = tuple(k for k, v in BACKBONES.items() if v.recbole)


# ---------------------------------------------------------------- text item tables (SASRec / GRU4Rec)


class SeqTextSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    item_embedding: Literal["adapter", "init"] = "adapter"


class SeqText(RecBoleMethod):
    """The suite's text encoder embeds item texts; the matrix replaces the sequential model's ID table."""

    default_name = "seq-text"
    Settings: ClassVar[type[BaseModel]] = SeqTextSettings
    backbones = SEQUENTIAL_BACKBONES
    needs_encoder: ClassVar[bool] = True
    needs_item_text: ClassVar[bool] = True  # frozen text embeddings of the items (LLM2Rec: item titles)
    text_encoder_rows: ClassVar[bool] = True  # its item table is the suite's encoder: tables name the encoder
    item_cold_start: ClassVar[ColdItemSource] = "text"  # frozen text rows + adapter; "init" mode: text-init

    def cold_item_source(self, backbone: str | None = None) -> ColdItemSource:
        return "text" if self.settings.item_embedding == "adapter" else "text-init"

    def item_matrix(self, ctx: RunContext):
        """[n_items, d] in self.data.catalogue.item_ids order; LLM2Rec variants override this."""
        self._frozen = int(ctx.encoder.parameter_count())
        return ctx.embed_items()

    def customise(self, ctx: RunContext, cf) -> None:
        matrix = self.item_matrix(ctx)
        cf.replace_item_embeddings(self.data.catalogue.item_ids, matrix, self.settings.item_embedding)
        self.report.facts["item_embedding"] = {"mode": self.settings.item_embedding, "dim": int(matrix.shape[1])}

    def parameter_counts(self) -> ParamCounts:
        trainable = self.cf.parameter_count()  # the adapter and the sequence encoder; the matrix is a buffer
        return ParamCounts(trainable=trainable, frozen_online=0, frozen_offline=getattr(self, "_frozen", 0))


# ---------------------------------------------------------------- pointwise CF rows of the CTR table


class CTRSettings(CFSettings):
    # what `bench tune` searches (bench.search); dropout only where the model has one
    search_space: ClassVar[dict] = {
        "learning_rate": FloatRange(low=1e-4, high=1e-2, log=True),
        "weight_decay": Choice(values=(0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)),
        "dropout": FloatRange(low=0.0, high=0.5, when={"model": ["sasrec", "din"]}),
    }

    model: Literal["mf", "lightgcn", "sasrec", "din"] = "mf"  # which pointwise CF model (entries preset it)


class CTRModel(Method):
    """A pointwise CF model scored alone (AUC / UAUC baseline rows of the CTR table)."""

    default_name = "mf-ctr"
    Settings: ClassVar[type[BaseModel]] = CTRSettings
    backbones: ClassVar[tuple[str, ...]] = ("none",)
    protocol = "pointwise"

    def fit(self, data: TrainView, ctx: RunContext) -> FitReport:
        self.start_fit(data)
        if "label" not in data.train.columns:
            raise BenchError(f"method {self.name!r} needs a pointwise split with labels (ctr_temporal), "
                             f"got {data.split.name!r}")
        self.model, self.index, info = pretrained_cf(self.settings.model, self.cf_settings(), data, ctx)
        self.device, self.length = ctx.device, int(data.split.params["history_length"])
        self.histories = PairHistories(data)
        self.report.training(info)
        return self.report

    def score(self, query: ScoreQuery) -> np.ndarray:
        items = self.query_items(query)
        out = np.zeros((len(query.users), len(items)), dtype=np.float32)
        for row, user in enumerate(query.users):
            hists = [self.histories.get(query, user, it) for it in items]
            out[row] = predict(self.model, self.index.users([user] * len(items)), self.index.items(items),
                               self.index.history(hists, self.length), self.device)
        return out

    def cf_settings(self) -> CFSettings:
        """The pretraining settings without the model choice: what `pretrained_cf` caches its model by."""
        return CFSettings.model_validate(self.settings.model_dump(exclude={"model"}))

    def parameter_counts(self) -> ParamCounts:
        return ParamCounts(trainable=sum(p.numel() for p in self.model.parameters()))
