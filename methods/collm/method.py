"""CoLLM and TALLRec (paper 002): a LoRA-tuned LLM answering Yes / No, with collaborative (CF) vectors
mapped into the token space at ID placeholders. Also ICL (the untuned LLM), the "w/ UI-token" ablation
and ensembles with MF. Every class is a `bench.method.Method` scored on the pointwise `ctr_temporal` split.

Two-step tuning: step 1 is TALLRec's LoRA on the text-only prompt, cached on disk under a key of base
model hash + training data hash + settings + seed (so TALLRec and the CoLLM variants of one seed share
it, and each seed trains its own); step 2 trains the mapper g = Linear(d, 10d) -> ReLU -> Linear(10d,
d_llm) with LoRA and the pre-trained CF model frozen. `tuning`: t1 = also tune the CF model from its
pre-trained state, t2 = tune it from scratch, t3 = one step (LoRA and mapper together, no step 1).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bench.errors import BenchError
from bench.eval.pointwise import histories
from bench.hashing import json_hash
from bench.method import Method
from bench.options import RunOptions
from bench.types import FitReport, ParamCounts, RunContext, ScoreQuery, TrainView
from methods.backbones.pointwise import CFSettings, Index, PairHistories, build_model, pretrained_cf
from methods.classic import CTRModel, CTRSettings
from methods.collm import model as cm
from methods.collm.settings import CoLLMSettings, LLMSettings, TALLRecSettings, collm_components
from methods.collm.tuning import LoRATuning


class LLMMethod(LoRATuning, Method):
    """ICL: the untuned LLM. Subclasses tune it (`train`) and add ID vectors (`vectors`)."""

    @classmethod
    def training_components(cls, record: dict) -> list:
        """The run's model, CF encoder, retrieval stage and LLM steps (methods.collm.settings.collm_components)."""
        return collm_components(record)


    default_name = "icl"
    Settings: ClassVar[type[BaseModel]] = LLMSettings
    backbones: ClassVar[tuple[str, ...]] = ("none",)
    protocol = "pointwise"
    needs_item_text: ClassVar[bool] = True  # prompts carry item titles
    required: ClassVar[tuple[str, ...]] = (cm.HISTORY, cm.TITLE)
    target_dependent_user: bool = False

    def __init__(self, settings: BaseModel | None = None, name: str | None = None):
        super().__init__(settings, name)
        self.trainable_counts: dict[str, int] = {}
        self.peft = None
        self.options = RunOptions()  # the run's options once fit (batch size, prefix cache)

    # ------------------------------------------------------------------------------- setup and checks
    def base_dir(self, ctx: RunContext) -> Path:
        return self._base_dir(ctx.cache_dir)

    def _base_dir(self, cache_dir: Path, build: bool = True) -> Path | None:
        """The model folder (`bench.data.assets.model_folder`; `build` False: None while the builtin "smollm2"
        is not converted yet)."""
        from bench.data import assets

        return assets.model_folder(self.settings.base_model, cache_dir, "base_model", build)

    # ---------------------------------------------------------------------------------------- pre-flight
    def check_inputs(self, cache_dir: Path, build: bool = False) -> None:
        """Before any run (bench.method.Method.check_inputs): the base model's path, the prompt templates, the
        answer tokens (distinct single tokens of its tokenizer) and a fast tokenizer; from its tokenizer and
        config only, the model is not loaded. The builtin model is checked once converted (`build`)."""
        super().check_inputs(cache_dir, build)
        with self._named():
            for template, required in self.templates():
                cm.parse_template(template, required)
            self._preflight_tokenizer(cache_dir, build)

    @contextlib.contextmanager
    def _named(self):
        """A pre-flight error names the method (the run has not started: nothing else would say which)."""
        try:
            yield
        except BenchError as exc:
            message = f"method {self.name!r}: {exc}"
            try:
                named = type(exc)(message)
            except TypeError:  # an error class built from other arguments
                named = BenchError(message)
            raise named from None

    def _preflight_tokenizer(self, cache_dir: Path, build: bool):
        """(tokenizer, context limit) of the base model, answer tokens checked; None when not converted yet."""
        from methods.llm.load import load_tokenizer

        base = self._base_dir(cache_dir, build)
        if base is None:
            return None
        if getattr(self, "_checked", None) is not None and self._checked[0] == base:
            return self._checked[1]
        tokenizer = load_tokenizer(base)
        cm.answer_token_ids(tokenizer, self.settings.answer_tokens)
        if not getattr(tokenizer, "is_fast", False):
            raise BenchError(f"the prompt needs a fast tokenizer (character offsets); {type(tokenizer).__name__} "
                             "is not one: point base_model at a model folder with tokenizer.json")
        self._checked = (base, (tokenizer, self._context_limit(base)))
        return self._checked[1]

    def _context_limit(self, base: Path) -> int:
        """The longest prompt: `max_length`, at most the model's context (its config's max_position_embeddings)."""
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(base), local_files_only=True)
        return min(self.settings.max_length or 10**9, int(getattr(config, "max_position_embeddings", 10**9)))

    def check_data(self, data: TrainView, cache_dir: Path) -> None:
        """Before any run, with the prepared split: a pointwise split, and the longest prompt a scored pair can
        have fits the model's context."""
        if "label" not in data.split.train.columns:
            raise BenchError(f"method {self.name!r} needs a pointwise split with labels (ctr_temporal), "
                             f"got {data.split.name!r}")
        self.check_prompts_fit(data, cache_dir, int(data.split.params["history_length"]))

    def check_prompts_fit(self, data: TrainView, cache_dir: Path, history_length: int) -> None:
        """The longest prompt of each template with `history_length` history titles fits the context."""
        with self._named():
            tokenizer, limit = self._preflight_tokenizer(cache_dir, build=True)
            titles = self._titles(data)
            for template, required in self.templates():
                builder = cm.PromptBuilder(tokenizer, template, required, titles, self.target_dependent_user)
                cm.check_longest_prompt(tokenizer, builder, titles, history_length, limit)

    @staticmethod
    def _titles(data: TrainView) -> dict:
        items = data.catalogue.items
        titles = items["title"] if "title" in items.columns else data.catalogue.item_text
        return {k: str(v) for k, v in titles.items()}

    def templates(self) -> list[tuple[str, tuple[str, ...]]]:
        return [(self.settings.prompt, self.required)]

    def setup(self, ctx: RunContext) -> None:
        """Every input check (templates, answer tokens, context length) before any training."""
        from methods.llm.load import load_model, load_tokenizer

        if "label" not in self.data.split.train.columns:
            raise BenchError(f"method {self.name!r} needs a pointwise split with labels (ctr_temporal), "
                             f"got {self.data.split.name!r}")
        for template, required in self.templates():
            cm.parse_template(template, required)
        self.device, self.options = ctx.device, ctx.options
        base = self.base_dir(ctx)
        self.tokenizer = load_tokenizer(base)
        self.yes_no = cm.answer_token_ids(self.tokenizer, self.settings.answer_tokens)
        self.base_fingerprint = self._fingerprint(base, ctx)
        self.titles = self._titles(self.data)
        self.lm = load_model(base, ctx.device, self.settings.attn_implementation, use_cache=False)
        for p in self.lm.parameters():
            p.requires_grad_(False)
        self.head = cm.YesNoHead(self.lm, self.yes_no)
        self.limit = min(self.settings.max_length or 10**9, int(getattr(self.lm.config, "max_position_embeddings",
                                                                        10**9)))
        self.builder = self.make_builder(self.settings.prompt)
        self.histories = PairHistories(self.data)
        self.train_data = self.training_pairs(ctx)
        for template, required in self.templates():
            builder = self.make_builder(template, required)
            data = self.train_data
            encoded = [builder.encode(h, i) for h, i in zip(data.histories, data.frame["item"])]
            cm.check_lengths(encoded, data.frame["user"].to_numpy(), self.limit, "training pairs")
        self.check_longest_prompt()
        self.pad_id = self.tokenizer.pad_token_id
        self.report.facts["llm"] = {"base_model": str(base), "base_fingerprint": self.base_fingerprint,
                            "answer_token_ids": self.yes_no, "context_limit": self.limit,
                            "n_train_pairs_used": int(len(self.train_data.frame)),
                            "n_train_pairs_available": int(len(self.data.split.train))}

    def check_longest_prompt(self) -> None:
        """Before training, the longest prompt any scored pair can have (its `history_length` items the
        longest titles, the target the longest title) must fit the context; training pairs are checked
        exactly, scored pairs again in `score`."""
        cm.check_longest_prompt(self.tokenizer, self.builder, self.titles, int(self.data.split.params["history_length"]),
                                self.limit)

    def _fingerprint(self, base: Path, ctx: RunContext) -> str:
        from bench.data.assets import files_fingerprint

        return files_fingerprint(base, ctx.cache_dir)

    def make_builder(self, template: str, required: tuple[str, ...] | None = None) -> cm.PromptBuilder:
        return cm.PromptBuilder(self.tokenizer, template, required or self.required, self.titles,
                                self.target_dependent_user)

    def training_pairs(self, ctx: RunContext):
        """The training pairs used (a seeded random subset when `max_train_pairs` > 0)."""
        data = histories(self.data.split, "train")
        n = int(self.settings.max_train_pairs)
        if 0 < n < len(data.frame):
            rows = np.sort(np.random.default_rng(ctx.seed).choice(len(data.frame), size=n, replace=False))
            data = type(data)(data.frame.iloc[rows].reset_index(drop=True), [data.histories[r] for r in rows])
        return data

    # ------------------------------------------------------------------------------------ fit / score
    def fit(self, data: TrainView, ctx: RunContext) -> FitReport:
        self.start_fit(data)
        self.run_seed = ctx.seed  # validation samples (valid_pairs) are drawn with it
        self.setup(ctx)
        self.train(ctx)
        self.lm.eval()
        self.report.facts["offline_cost"] = self.offline_cost()
        return self.report

    def offline_cost(self) -> dict:
        """What the LLM training steps cost offline: prompt tokens the tuned steps processed (forward and
        backward: epochs x the training pairs' prompt lengths, per step) and their training seconds (a cached
        step reports what building it cost). ICL trains nothing: 0 and 0."""
        steps = {name: self.report.facts[name] for name in ("stage1", "stage2") if name in self.report.facts}
        return {"tokens": int(sum(info["tokens"] for info in steps.values())),
                "seconds": float(sum(info.get("train_seconds", 0.0) for info in steps.values())),
                "steps": sorted(steps)}

    def train(self, ctx: RunContext) -> None:
        self.report.timings["train"] = 0.0

    def vectors(self, users, items, hists):
        """(user vectors, item vectors) [n, d_llm] for the placeholders, or Nones."""
        return None, None

    def autocast(self):
        """The `precision` setting's context for the LLM's forward passes: bf16 autocast, or nothing (fp32)."""
        import contextlib

        import torch

        if self.settings.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16)

    def logits(self, users, items, hists, builder=None, cached: bool | None = None):
        """Yes/No logits [n, 2] of pairs (user, item, history), in float32 whatever the precision."""
        import torch

        builder = builder or self.builder
        encoded = [builder.encode(h, i) for h, i in zip(hists, items)]
        cached = self.options.prefix_cache if cached is None else cached
        with torch.no_grad(), self.autocast():
            user_vecs, item_vecs = self.vectors(users, items, hists)
            if cached:
                return cm.cached_logits(self.head, encoded, user_vecs, item_vecs, self.pad_id, self.device,
                                        self.options.llm_eval_batch_size).float()
            out = []
            bs = self.options.llm_eval_batch_size
            for b in range(0, len(encoded), bs):
                sl = slice(b, b + bs)
                out.append(cm.full_logits(self.head, encoded[sl], None if user_vecs is None else user_vecs[sl],
                                          None if item_vecs is None else item_vecs[sl], self.pad_id,
                                          self.device).float().cpu())
            return torch.cat(out)

    def score(self, query: ScoreQuery) -> np.ndarray:
        """P(Yes) for every (user, item) cell, each pair with the history the query's protocol gives it."""
        self.lm.eval()
        items = np.asarray(list(self.titles) if query.items is None else query.items)
        out = np.zeros((len(query.users), len(items)), dtype=np.float32)
        for row, user in enumerate(query.users):
            hists = [self.histories.get(query, user, it) for it in items]
            encoded = [self.builder.encode(h, it) for h, it in zip(hists, items)]
            cm.check_lengths(encoded, np.array([user] * len(items)), self.limit, "scored pairs")
            logits = self.logits([user] * len(items), list(items), hists)
            out[row] = cm.probabilities(logits, self.settings.scoring).numpy()
        return out

    def parameter_counts(self) -> ParamCounts:
        base = sum(p.numel() for n, p in self.lm.named_parameters() if "lora_" not in n)
        return ParamCounts(trainable=sum(self.trainable_counts.values()), frozen_online=base + self.frozen_cf())

    def frozen_cf(self) -> int:
        return 0

    # ------------------------------------------------------------------- step 1 (LoRA; tuning.LoRATuning)
    def stage1_loss(self) -> str:
        """The LoRA step's loss: the method's scoring loss unless `stage1_loss` names another."""
        s = self.settings
        return s.scoring if s.stage1_loss == "scoring" else s.stage1_loss

    def stage1(self, ctx: RunContext, template: str) -> dict:
        """The LoRA step (TALLRec's, CoLLM's step 1) on the text-only prompt, with the method's step-1 loss and
        (select_on_valid) the best state by validation AUC; from the disk cache if there."""
        s = self.settings
        lora_params = self.add_lora(ctx.seed)
        data = self.train_data
        loss = self.stage1_loss()
        # what the adapter depends on beyond version 2's key (absent when it is version 2's: its cache stays)
        selection = ({"select_on_valid": True, "eval_every": s.eval_every, "valid_pairs": s.valid_pairs,
                      "valid": self.data.split.content_hash} if s.select_on_valid else {})
        # ... and beyond the key of the constant rate with one evaluation schedule (each only when it is set)
        if s.warmup_steps or s.warmup_ratio or s.lr_schedule != "constant":
            selection["schedule"] = {"kind": s.lr_schedule, "warmup_steps": s.warmup_steps,
                                     "warmup_ratio": s.warmup_ratio}
        if s.select_on_valid and s.evaluations:
            selection["evaluations"] = s.evaluations
        if s.select_on_valid and s.patience:
            selection["patience"] = s.patience
        if s.select_on_valid and loss == "lm":  # validation scores with the method's scoring
            selection["valid_scoring"] = s.scoring
        if s.precision != "fp32":
            selection["precision"] = s.precision
        key = json_hash({"base": self.base_fingerprint, "template": template, "answers": s.answer_tokens,
                         "data": json_hash([data.frame[["user", "item", "label"]].to_csv(index=False),
                                            data.histories, self.data.split.content_hash], 16, compact=False),
                         "lora": s.lora.model_dump(), "lr": s.learning_rate, "wd": s.weight_decay,
                         "epochs": s.epochs, "batch": s.batch_size, "loss": loss,
                         "seed": ctx.seed, "version": 2, **selection}, 16, compact=False)  # 2: LoRA init seeded
        folder = Path(ctx.cache_dir) / "collm" / f"lora-{key}"
        self.trainable_counts["lora"] = sum(p.numel() for p in lora_params)

        def train() -> dict:
            builder = self.make_builder(template, (cm.HISTORY, cm.TITLE))
            return self.run_training(lora_params, [{"params": lora_params, "lr": s.learning_rate}], builder,
                                     loss, ctx.seed)

        info = self.cached_adapter(folder, train, ctx.cache_dir) | {"key": key}
        if "tokens" not in info:  # an adapter cached before token counts were recorded
            builder = self.make_builder(template, (cm.HISTORY, cm.TITLE))
            info["tokens"] = self.training_tokens([builder.encode(h, i) for h, i in zip(data.histories,
                                                                                       data.frame["item"])])
        if "schedule" not in info:  # cached before schedules were recorded: the constant rate, no warmup
            info["schedule"] = {"kind": "constant", "warmup_steps": 0, "total_steps": info["steps"],
                                "learning_rates": [s.learning_rate]}
            info["stopped_early"] = False
        return info


class ICL(LLMMethod):
    """The untuned LLM asked the text-only question (no training)."""

    default_name = "icl"
    version = 2  # 2: the prompt tokenised as one string, BOS first (was segment by segment)
    trains_nothing = True


class TALLRec(LLMMethod):
    """LoRA (r 8, alpha 16, dropout 0.05, q_proj / v_proj) on the text-only prompt, trained with the causal-LM
    loss on the answer (its code); P(Yes) by softmax over Yes / No."""

    default_name = "tallrec"
    # 2: stage-1 LoRA initialised from the run seed (was the process's global random state);
    # 3: the best state by validation AUC is kept (select_on_valid); the prompt tokenised as one string;
    # 4: the LoRA step trains the causal-LM loss on the answer token (stage1_loss "lm", TALLRec's code; was the
    # Yes / No softmax, "yes_no_softmax": version 3's computation)
    version = 4
    Settings: ClassVar[type[BaseModel]] = TALLRecSettings

    def train(self, ctx: RunContext) -> None:
        info = self.stage1(ctx, self.settings.prompt)
        self.report.timings["train"] = info["train_seconds"]
        self.report.facts["stage1"] = {k: v for k, v in info.items()}


class CoLLM(LLMMethod):
    """TALLRec's LoRA (step 1) + CF vectors mapped into the ID placeholders (step 2)."""

    default_name = "collm-mf"
    # 2: LoRA initialised from the run seed (was the process's global random state); 3: step 1 trained with the
    # scoring loss (BCE on the Yes logit, as the authors' code; was the Yes / No softmax), and both steps keep
    # their best state by validation AUC; the prompt tokenised as one string, BOS first; 4: the CF model is
    # pre-trained on all training pairs of the split (`cf_pretrain_pairs: all`; was the few-shot sample, "train")
    version = 4
    Settings: ClassVar[type[BaseModel]] = CoLLMSettings
    required: ClassVar[tuple[str, ...]] = (cm.HISTORY, cm.USER, cm.TITLE, cm.ITEM)

    @property
    def cf_kind(self) -> str:
        return self.settings.cf_model

    def templates(self):
        return [(self.settings.prompt, self.required), (self.settings.stage1_prompt, (cm.HISTORY, cm.TITLE))]

    def setup(self, ctx: RunContext) -> None:
        self.target_dependent_user = self.cf_kind == "din"
        super().setup(ctx)

    @property
    def cf_pairs(self) -> str:
        """The view's pairs the CF model learns from: all training pairs, or the train part (see the setting)."""
        return {"all": "train_all", "train": "train"}[self.settings.cf_pretrain_pairs]

    def make_id_encoder(self, ctx: RunContext):
        """The CF model (pre-trained on `cf_pairs`, cached per seed, or fresh for t2) and the mapper."""
        import torch
        from torch import nn

        s = self.settings
        cf, self.index, info = pretrained_cf(self.cf_kind, s.cf, self.data, ctx, self.cf_pairs)
        if s.tuning == "t2":  # from scratch; LightGCN's graph: the training positives of the same pairs
            torch.manual_seed(ctx.seed)
            train = histories(self.data.split, self.cf_pairs)
            pos = train.frame["label"].to_numpy() == 1
            cf = build_model(self.cf_kind, len(self.index.user), len(self.index.item), s.cf,
                             int(self.data.split.params["history_length"]),
                             (self.index.users(train.frame["user"][pos]), self.index.items(train.frame["item"][pos])))
            cf = cf.to(self.device)
        self.cf = cf.eval()
        d, hidden = s.cf.embedding_size, self.lm.get_input_embeddings().weight.shape[1]
        torch.manual_seed(ctx.seed)
        self.mapper = nn.Sequential(nn.Linear(d, s.mapper_hidden_factor * d), nn.ReLU(),
                                    nn.Linear(s.mapper_hidden_factor * d, hidden)).to(self.device)
        return info

    def vectors(self, users, items, hists):
        import torch

        length = self.cf_length
        u = torch.as_tensor(self.index.users(users), device=self.device)
        i = torch.as_tensor(self.index.items(items), device=self.device)
        h = torch.as_tensor(self.index.history(hists, length), device=self.device)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.cf_trainable):
            uv, iv = self.cf.user_vector(u, i, h), self.cf.item_vector(i)
        return self.mapper(uv), self.mapper(iv)

    def train(self, ctx: RunContext) -> None:
        s = self.settings
        self.cf_length = int(self.data.split.params["history_length"])
        self.cf_trainable = s.tuning in ("t1", "t2")
        cf_info = self.make_id_encoder(ctx)
        # the CF encoder's pre-training (bench/report/convergence.py reads its early_stopped): pairs it learnt from
        # (`pairs`, n_train_pairs; the LLM's: n_llm_train_pairs), best_valid_auc, best_epoch, epochs_run of
        # epochs_cap, early_stopped, cached, key
        self.report.facts["cf"] = {k: v for k, v in cf_info.items() if k != "curve"} | {
            "kind": self.cf_kind, "tuning": s.tuning, "pretrain_pairs": s.cf_pretrain_pairs,
            "n_llm_train_pairs": int(len(self.train_data.frame))}
        mapper = list(self.mapper.parameters())
        self.trainable_counts["mapper"] = sum(p.numel() for p in mapper)
        groups = [{"params": mapper, "lr": s.mapper_learning_rate}]
        params = list(mapper)
        total = 0.0
        if s.tuning == "t3":  # one step: fresh LoRA and the mapper together
            lora = self.add_lora(ctx.seed)
            self.trainable_counts["lora"] = sum(p.numel() for p in lora)
            groups.append({"params": lora, "lr": s.learning_rate})
            params += lora
        else:
            info = self.stage1(ctx, s.stage1_prompt)
            self.report.facts["stage1"] = dict(info)
            total += info["train_seconds"]
        if self.cf_trainable:
            cf_params = list(self.cf.parameters())
            self.trainable_counts["cf"] = sum(p.numel() for p in cf_params)
            groups.append({"params": cf_params, "lr": s.cf.learning_rate})
            params += cf_params
            self.cf.train()
        info = self.run_training(params, groups, self.builder, s.scoring, ctx.seed + 1, self.vectors)
        self.cf.eval()
        self.report.facts["stage2"] = info
        self.report.timings["train"] = total + info["train_seconds"]

    def frozen_cf(self) -> int:
        return 0 if self.cf_trainable else sum(p.numel() for p in self.cf.parameters())


class UITokenSettings(CoLLMSettings):
    tuning: Literal["two_step"] = "two_step"


class CoLLMUIToken(CoLLM):
    """Ablation "w/ UI-token": a new token embedding per user and per item instead of CF + mapper."""

    default_name = "collm-uitoken"
    version = 3  # no CF model: CoLLM's version 4 (CF pre-training pairs) changes nothing here
    Settings: ClassVar[type[BaseModel]] = UITokenSettings

    def make_id_encoder(self, ctx: RunContext):
        import torch
        from torch import nn

        self.index = Index(self.data.catalogue.user_ids, self.data.catalogue.item_ids)
        hidden = self.lm.get_input_embeddings().weight
        torch.manual_seed(ctx.seed)
        self.user_tokens = nn.Embedding(len(self.index.user) + 1, hidden.shape[1]).to(self.device)
        self.item_tokens = nn.Embedding(len(self.index.item) + 1, hidden.shape[1]).to(self.device)
        std = float(hidden.std())
        nn.init.normal_(self.user_tokens.weight, std=std)
        nn.init.normal_(self.item_tokens.weight, std=std)
        self.mapper = nn.ModuleList([self.user_tokens, self.item_tokens])  # the trainable "ID encoder"
        self.cf = nn.Identity()
        return {"ui_tokens": True}

    def vectors(self, users, items, hists):
        import torch

        u = torch.as_tensor(self.index.users(users), device=self.device)
        i = torch.as_tensor(self.index.items(items), device=self.device)
        return self.user_tokens(u), self.item_tokens(i)


class EnsembleSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mf: CFSettings = Field(default_factory=CFSettings)
    llm: CoLLMSettings = Field(default_factory=CoLLMSettings)


class EnsembleMFCoLLM(Method):
    """Ensemble averaging (paper Table III): mean of MF's and CoLLM-MF's probabilities."""

    @classmethod
    def training_components(cls, record: dict) -> list:
        """The run's model, CF encoder, retrieval stage and LLM steps (methods.collm.settings.collm_components)."""
        return collm_components(record)


    default_name = "ensemble-mf-collm"
    # 2: its LLM's LoRA initialised from the run seed; 3: its LLM's version 3 (see CoLLM / TALLRec); 4: CoLLM's
    # version 4 (its CF model pre-trained on all training pairs)
    version = 4
    Settings: ClassVar[type[BaseModel]] = EnsembleSettings
    backbones: ClassVar[tuple[str, ...]] = ("none",)
    protocol = "pointwise"
    needs_item_text: ClassVar[bool] = True  # its LLM half prompts with item titles
    llm_cls: ClassVar[type] = CoLLM

    def llm_settings(self):
        return self.settings.llm

    def check_inputs(self, cache_dir: Path, build: bool = False) -> None:
        """Before any run: its LLM's checks (base model, templates, answer tokens)."""
        super().check_inputs(cache_dir, build)
        self.llm_cls(self.llm_settings(), name=self.name).check_inputs(cache_dir, build)

    def check_data(self, data: TrainView, cache_dir: Path) -> None:
        self.llm_cls(self.llm_settings(), name=self.name).check_data(data, cache_dir)

    def fit(self, data: TrainView, ctx: RunContext) -> FitReport:
        report = self.start_fit(data)
        self.mf = CTRModel(CTRSettings(**self.settings.mf.model_dump(), model="mf"), name="mf-ctr")
        mf = self.mf.fit(data, ctx)
        self.llm = self.llm_cls(self.llm_settings())
        llm = self.llm.fit(data, ctx)
        report.facts.update({**mf.facts, **llm.facts})
        report.timings.update({**mf.timings, **llm.timings})
        report.timings["train"] = mf.timings.get("train", 0.0) + llm.timings.get("train", 0.0)
        return report

    def score(self, query: ScoreQuery) -> np.ndarray:
        mf = 1 / (1 + np.exp(-self.mf.score(query).astype(np.float64)))
        return ((mf + self.llm.score(query)) / 2).astype(np.float32)

    def parameter_counts(self) -> ParamCounts:
        a, b = self.mf.parameter_counts(), self.llm.parameter_counts()
        return ParamCounts(trainable=a.trainable + b.trainable, frozen_online=b.frozen_online)


class TALLRecEnsembleSettings(EnsembleSettings):
    llm: TALLRecSettings = Field(default_factory=TALLRecSettings)


class EnsembleMFTALLRec(EnsembleMFCoLLM):
    """Ensemble averaging of MF and TALLRec (paper Table III)."""

    default_name = "ensemble-mf-tallrec"
    # 3: TALLRec has no CF model: the CoLLM ensemble's version 4 changes nothing here; 4: TALLRec's version 4
    # (its LoRA step trains the causal-LM loss)
    version = 4
    Settings: ClassVar[type[BaseModel]] = TALLRecEnsembleSettings
    llm_cls: ClassVar[type] = TALLRec
