"""LLM2Rec (paper 003) as harness methods: a decoder LLM trained into an item-embedding model
(CSFT -> MNTP -> IC, see methods/llm2rec_stages.py), whose frozen item embeddings feed SASRec / GRU4Rec
through a trained linear adapter. The untrained LLM rows (causal last token; bidirectional mean) and each
stage alone are the paper's ablation rows.

The LLM is trained on the split's *training* interactions only (or, for cross-dataset transfer, on
another prepared data set's temporal-leave-one-out training part, named by `train_dataset`). A stage with
`evaluations` > 0 selects its state on the validation part of the same split (never test). Stage outputs
are cached by base-model hash, training-data hash, stage settings (and validation-data hash when a stage
evaluates), so backbones and seeds reuse them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bench.search import Nested
from bench.settings import path_field
from bench.types import ParamCounts, RunContext
from methods.classic import SeqText
from methods.llm.load import cuda_devices
from methods.llm2rec.train import STAGES, CSFTSettings, ICSettings, MNTPSettings


class LLM2RecSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # `bench tune`: each stage's own space (its lr), searched only where the entry runs that stage
    search_space: ClassVar[dict] = {stage: Nested(when={"stages": stage}) for stage in STAGES}

    base_model: str = path_field("smollm2")  # "smollm2" (embedded asset) or a local causal-LM folder
    # the training stages run, in order (a prefix of CSFT -> MNTP -> IC; empty = the untrained LLM)
    stages: tuple[Literal["csft", "mntp", "ic"], ...] = ("csft", "mntp", "ic")
    # "default": causal_last without MNTP (the LLM is still causal), bidirectional_mean after it
    pooling: Literal["default", "causal_last", "bidirectional_mean"] = "default"
    max_length: int = Field(64, ge=1)  # title tokens for embedding
    item_embedding: Literal["adapter", "init"] = "adapter"
    # None: the split's training data; else a dataset card name or card file (transfer)
    train_dataset: str | None = path_field(None)
    # the stage settings, typed (a changed stage default bumps this method's version)
    csft: CSFTSettings = Field(default_factory=CSFTSettings)
    mntp: MNTPSettings = Field(default_factory=MNTPSettings)
    ic: ICSettings = Field(default_factory=ICSettings)

    @field_validator("stages")
    @classmethod
    def _prefix(cls, stages: tuple[str, ...]) -> tuple[str, ...]:
        if tuple(stages) != STAGES[: len(stages)]:
            raise ValueError(f"must be a prefix of {list(STAGES)} (the stages build on each other)")
        return tuple(stages)

    def resolved_pooling(self) -> str:
        if self.pooling != "default":
            return self.pooling
        return "bidirectional_mean" if "mntp" in self.stages else "causal_last"


def training_sequences(train: pd.DataFrame, titles: pd.Series) -> list[list[str]]:
    """Each user's training items, in time order, as titles (the CSFT data; training split only)."""
    ordered = train.sort_values(["user", "timestamp", "item"], kind="mergesort")
    return [titles.reindex(g).fillna("").tolist() for _, g in ordered.groupby("user")["item"]]


def validation_sequences(train: pd.DataFrame, valid: pd.DataFrame, titles: pd.Series,
                         context: pd.DataFrame | None = None) -> list[tuple[list[str], list[str]]]:
    """Per user with validation interactions (in user order): (the titles the user's validation items follow,
    in time order: training interactions and, for a user held out of training, the split's validation
    context; the validation items' titles, in time order). The stages' validation data; never test."""
    frames = [f[["user", "item", "timestamp"]] for f in (train, context) if f is not None and len(f)]
    known = pd.concat(frames) if frames else pd.DataFrame(columns=["user", "item", "timestamp"])
    key = ["user", "timestamp", "item"]
    history = {user: titles.reindex(g).fillna("").tolist()
               for user, g in known.sort_values(key, kind="mergesort").groupby("user")["item"]}
    return [(history.get(user, []), titles.reindex(g).fillna("").tolist())
            for user, g in valid.sort_values(key, kind="mergesort").groupby("user")["item"]]


def item_titles(dataset) -> pd.Series:
    """Item id -> title (the LLM sees titles, as in the paper); falls back to the item text."""
    if "title" in dataset.items.columns:
        titles = dataset.items["title"].astype(str)
        return titles.where(titles.str.strip() != "", dataset.item_text)
    return dataset.item_text


class LLM2Rec(SeqText):
    """LLM2Rec's item encoder (the stages a setting; entries preset them) feeding SASRec / GRU4Rec."""

    @classmethod
    def recorded_offline_cost(cls, record: dict) -> tuple[float, float]:
        """The stages' training: tokens seen and seconds (what building them cost, also when read from the cache)."""
        stage = (record.get("method_info") or {}).get("llm2rec")
        if not isinstance(stage, dict):
            return super().recorded_offline_cost(record)
        return float(stage.get("llm_tokens_seen") or 0), float(stage.get("llm_train_seconds") or 0)

    @classmethod
    def training_components(cls, record: dict) -> list:
        """The run's backbone, and each LLM stage that kept its best validation state
        (`method_info.llm2rec.stage_outputs.<stage>.selection`)."""
        from bench.components import by_selection, model_training

        out = model_training(record)
        info = (record.get("method_info") or {}).get("llm2rec")
        stages = info.get("stage_outputs") if isinstance(info, dict) else None
        for stage in STAGES:
            output = stages.get(stage) if isinstance(stages, dict) else None
            part = by_selection(f"LLM {stage.upper()}", output.get("selection") if isinstance(output, dict) else None)
            if part:
                out.append(part)
        return out

    @classmethod
    def seed_shared(cls, settings: BaseModel) -> str | None:
        """The LLM stages seed themselves (`<stage>.seed`) and are cached for every run seed."""
        if not settings.stages:
            return None
        return "LLM stages " + ", ".join(f"{stage.upper()} (seed {getattr(settings, stage).seed})"
                                         for stage in settings.stages)

    default_name = "llm2rec"
    Settings: ClassVar[type[BaseModel]] = LLM2RecSettings
    needs_encoder: ClassVar[bool] = False  # the method builds its own encoder from the LLM
    text_encoder_rows: ClassVar[bool] = False
    # scheduling hint for `--executor ray`: LLM stages take a GPU where the cluster has one
    resources: ClassVar[dict[str, float]] = {"num_gpus": 1}

    def _base_dir(self, ctx: RunContext) -> Path:
        from bench.data import assets

        return assets.model_folder(self.settings.base_model, ctx.cache_dir, "base_model")

    def _training_data(self, ctx: RunContext) -> tuple[list[list[str]], list[str], dict, list]:
        """(training title sequences, item titles, the source's facts, validation sequences): the split's train
        part (valid part for the stages' validation), or with `train_dataset` that data set's temporal_loo
        train (and valid) part. The test part never enters."""
        if self.settings.train_dataset is None:
            titles = item_titles(self.data.catalogue)
            split = self.data.split
            return training_sequences(split.train, titles), titles.tolist(), {
                "source": "split training interactions", "dataset_hash": self.data.catalogue.content_hash,
                "split_hash": split.content_hash}, validation_sequences(split.train, split.valid, titles,
                                                                         split.valid_context)
        from bench.data.cards import load_card, load_dataset
        from bench.data.splits import load_or_make_split, resolve_split_params

        other = load_dataset(load_card(self.settings.train_dataset), ctx.cache_dir)
        split = load_or_make_split(other, "temporal_loo", resolve_split_params("temporal_loo", {}), ctx.cache_dir)
        titles = item_titles(other)
        context = split.context[split.context["part"] == "valid"] if len(split.context) else None
        return training_sequences(split.train, titles), titles.tolist(), {
            "source": f"{self.settings.train_dataset} temporal_loo training interactions (transfer)",
            "dataset_hash": other.content_hash, "split_hash": split.content_hash}, validation_sequences(
                split.train, split.valid, titles, context)

    def item_matrix(self, ctx: RunContext) -> np.ndarray:
        from bench.encoders import encode_items
        from methods.llm2rec.stages import LLMItemEncoder, pipeline, read_stage

        base = self._base_dir(ctx)
        folder, stage_info = base, {}
        start = time.perf_counter()
        if self.settings.stages:
            sequences, titles, source, valid = self._training_data(ctx)
            stages = self.settings.stages
            settings = {stage: getattr(self.settings, stage) for stage in stages}
            # stage training seeds itself; fork_rng keeps it from advancing the run's random state, so the
            # SASRec / GRU4Rec adapter built next is the same whether the stages came from the cache or not
            import torch

            with torch.random.fork_rng(devices=cuda_devices(ctx.device)):
                # on the run's device, with its progress option (runtime fields: no cache key)
                folders = pipeline(base, sequences, titles, settings, ctx.cache_dir, stages, valid_sequences=valid,
                                   device=ctx.device, progress=ctx.options.progress)
            folder = folders[self.settings.stages[-1]]
            stage_info = {stage: {k: v for k, v in read_stage(path).items() if k not in ("loss_curve", "key_parts",
                                                                                        "step_tokens", "step_seconds")}
                          | {"folder": str(path)} for stage, path in folders.items()}
            evaluated = [stage for stage in stages if settings[stage].evaluations]
            if evaluated:  # which stages selected their state on validation, and on what
                source = source | {"validation": {"stages": evaluated, "users": len(valid),
                                                  "source": "the valid part of the same split (never test)"}}
            stage_info["training_data"] = source
        self.report.timings["llm_stages"] = time.perf_counter() - start  # ~0 when every stage came from the cache
        pooling = self.settings.resolved_pooling()
        encoder = LLMItemEncoder(folder, ctx.device, mode=pooling, max_length=self.settings.max_length,
                                 name=f"{self.name}:{pooling}", cache_dir=ctx.cache_dir)
        titles = item_titles(self.data.catalogue)
        start = time.perf_counter()
        matrix, info = encode_items(encoder, titles, f"title|{pooling}", ctx.cache_dir, progress=False)
        self.report.timings["encode"] = time.perf_counter() - start
        self._frozen = encoder.parameter_count()
        llm_train_seconds = sum(v.get("seconds", 0.0) for k, v in stage_info.items()
                                if k in self.settings.stages)
        self.report.facts["llm2rec"] = {"stages": list(self.settings.stages), "pooling": pooling, "base_model": str(base),
                                "embeddings": info, "stage_outputs": json.loads(json.dumps(stage_info, default=str)),
                                "llm_train_seconds": llm_train_seconds,
                                "llm_tokens_seen": sum(v.get("tokens", 0) for k, v in stage_info.items()
                                                       if k in self.settings.stages)}
        return matrix

    def parameter_counts(self) -> ParamCounts:
        return ParamCounts(trainable=self.cf.parameter_count(), frozen_online=0,
                           frozen_offline=getattr(self, "_frozen", 0))
