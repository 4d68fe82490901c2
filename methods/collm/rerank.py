"""TALLRec, CoLLM and ICL as rankers on every ranking split (issue 15, item 1): a two-stage protocol.

1. Retrieval: the run's backbone (`--backbone lightgcn`, `sasrec`, ...) trained exactly as the `random` method
   trains it (same class, settings and seed: `random` on the same backbone is the row to beat) proposes each
   user's top-N unseen items (`candidates`, default 50). The candidate file is cached (split, backbone, seed, N),
   hashed and copied into the run folder, so every reranker of one split / backbone / seed sees the same one.
2. The Yes / No model (TALLRec / CoLLM / ICL, their own classes and training code, composed) learns from
   pointwise pairs built from the split's train part only (observed items positive, `negatives_per_positive`
   sampled unobserved items negative, seeded) with selection on pairs of the valid part (`select_on_valid`).
   `max_train_pairs` caps the LLM's pairs only: CoLLM's CF model pre-trains on every training positive's pairs.
3. Scoring: a user's N candidates are ordered by the LLM's P(Yes) (ties: retrieval order) and put first; every
   other item follows in retrieval order. The score matrix encodes that full-catalogue ranking (the item at
   position p scores n_items - p; items the backbone cannot score stay -inf), so Recall / NDCG / Hit / MRR come
   from the engine's full ranking like every other row. The N candidates of a user are scored against one cached
   prompt prefix (the history; run option `prefix_cache`), in batches of `llm_eval_batch_size`; the default
   prompts (`llm.prompt`, CoLLM's `llm.stage1_prompt`: model.TEXT_RERANK_PROMPT / COLLM_RERANK_PROMPT) ask
   TALLRec's / CoLLM's question with the target title last, so each candidate costs only its title and
   "? #Answer:" (TALLRec's own prompt, a setting, has 12 more tokens after the title).

The sampled protocol (1 positive among 99 sampled negatives, RecBole 3.0 / LLM-ESR) is the labelled
`eval_negatives` setting of every ranking split (`--set split.eval_negatives=99`), never the default: the
engine masks all but the sampled items, and the reranker's full ranking restricted to them is what is scored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bench.backbones import BACKBONES
from bench.errors import BenchError
from bench.method import Method
from bench.search import Nested
from bench.types import FitReport, ParamCounts, RunContext, ScoreQuery, TrainView
from methods.collm import model as cm
from methods.collm import rerank_data as rd
from methods.collm.method import ICL, CoLLM, TALLRec
from methods.collm.settings import CoLLMSettings, LLMSettings, TALLRecSettings, collm_components

RERANK_BACKBONES = tuple(k for k, v in BACKBONES.items() if v.recbole)  # as `random`: CF and sequential


class RerankLLMSettings(LLMSettings):
    """TALLRec's / ICL's settings with the target-last prompt: a user's candidates share one cached prefix."""

    prompt: str = cm.TEXT_RERANK_PROMPT


class RerankTALLRecSettings(TALLRecSettings):
    """TALLRec's settings (the causal-LM loss on the answer) with the target-last prompt."""

    prompt: str = cm.TEXT_RERANK_PROMPT


class RerankCoLLMSettings(CoLLMSettings):
    """CoLLM's settings with the target-last prompts (step 2 and the step-1 LoRA)."""

    prompt: str = cm.COLLM_RERANK_PROMPT
    stage1_prompt: str = cm.TEXT_RERANK_PROMPT


class RerankSettings(BaseModel):
    """The two-stage protocol around a Yes / No LLM (`llm`: its own settings, as for the ctr rows)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # `bench tune` (bench.search): the LLM's own space (none for ICL's: it tunes nothing)
    search_space: ClassVar[dict] = {"llm": Nested()}

    candidates: int = Field(50, ge=1)  # N: the retrieval backbone's top-N unseen items the LLM reorders
    negatives_per_positive: int = Field(1, ge=1)  # sampled unobserved items per observed one (train and valid)
    # CPU caps (recorded): training / validation pairs, as sampled positives each with its negatives; 0 = all
    max_train_pairs: int = Field(1024, ge=0)
    max_valid_pairs: int = Field(256, ge=0)
    history_length: int = Field(10, ge=1)  # history titles in the prompt (CoLLM's code: 10)
    # test users the engine scores (Method.test_user_sample): 0 = all; N = a seeded sample of N, the same users
    # for every method asking N on the split (a CPU cap, stated in the record's evaluation protocol)
    test_users: int = Field(0, ge=0)
    # the Yes / No model's own settings (as the ctr rows'), with the target-last prompt by default (subclasses, so
    # a partial `llm: {...}` keeps it)
    llm: RerankLLMSettings = Field(default_factory=RerankLLMSettings)


class TALLRecRerankSettings(RerankSettings):
    llm: RerankTALLRecSettings = Field(default_factory=RerankTALLRecSettings)


class CoLLMRerankSettings(RerankSettings):
    llm: RerankCoLLMSettings = Field(default_factory=RerankCoLLMSettings)


@dataclass
class RankedUser:
    """One user's reranking: candidates (catalogue positions, retrieval order), their P(Yes), the full ranking
    (catalogue positions, best first) and the score row that encodes it."""

    candidates: np.ndarray
    p_yes: np.ndarray
    ranking: np.ndarray
    scores: np.ndarray


class LLMReranker(Method):
    """Retrieval backbone -> top-N candidates -> reordered by a Yes / No LLM's P(Yes) (see the module doc)."""

    @classmethod
    def training_components(cls, record: dict) -> list:
        """The run's model, CF encoder, retrieval stage and LLM steps (methods.collm.settings.collm_components)."""
        return collm_components(record)


    default_name = "tallrec-rerank"
    version = 1
    Settings: ClassVar[type[BaseModel]] = RerankSettings
    backbones: ClassVar[tuple[str, ...]] = RERANK_BACKBONES
    protocol = "ranking"
    needs_item_text: ClassVar[bool] = True  # the LLM's prompts carry item titles
    llm_cls: ClassVar[type] = ICL  # a subclass names its Yes / No model (its `llm` settings are that model's)

    # ----------------------------------------------------------------------------------- pre-flight
    def check_inputs(self, cache_dir, build: bool = False) -> None:
        """Before any run: the Yes / No model's checks (base model, templates, answer tokens; see ICL's)."""
        super().check_inputs(cache_dir, build)
        self.llm_cls(self.settings.llm, name=self.name).check_inputs(cache_dir, build)

    def check_data(self, data: TrainView, cache_dir) -> None:
        """Before any run, with the prepared split: a ranking split, and the longest prompt (`history_length`
        titles) fits the model's context."""
        if "label" in data.train.columns:
            raise BenchError(f"method {self.name!r} reranks on a ranking split; {data.split.name!r} is pointwise "
                             f"(use {self.llm_cls.default_name!r} there)")
        llm = self.llm_cls(self.settings.llm, name=self.name)
        llm.check_prompts_fit(data, cache_dir, int(self.settings.history_length))

    # ------------------------------------------------------------------------------------------ fit
    def fit(self, data: TrainView, ctx: RunContext) -> FitReport:
        report = self.start_fit(data)
        s = self.settings
        if "label" in data.train.columns:
            raise BenchError(f"method {self.name!r} reranks on a ranking split; {data.split.name!r} is pointwise "
                             f"(use {self.llm_cls.default_name!r} there)")
        if ctx.backbone not in self.backbones:
            raise BenchError(f"method {self.name!r} does not run on backbone {ctx.backbone!r}; valid backbones: "
                             f"{', '.join(self.backbones)}")
        self.item_ids = data.item_ids
        self.position = {item: k for k, item in enumerate(self.item_ids)}
        self.seen = rd.seen_positions(data)
        self.barred = rd.barred_positions(data)  # never candidates: items the split's `candidates` excludes
        self.sequences = rd.user_sequences([data.train, data.valid])

        start = time.perf_counter()
        self.retrieval = rd.retrieval_stage(data, ctx)
        self.candidates, candidate_facts = rd.candidate_file(data, ctx, self.retrieval, s.candidates, self.seen,
                                                             self.barred)
        report.timings["retrieval"] = time.perf_counter() - start

        start = time.perf_counter()
        view, pair_facts = rd.pointwise_view(data, rd.PairSpec(s.history_length, s.negatives_per_positive,
                                                               s.max_train_pairs, s.max_valid_pairs, ctx.seed,
                                                               all_train_pairs=self.cf_needs_all_pairs()))
        report.timings["pairs"] = time.perf_counter() - start
        self.llm = self.llm_cls(s.llm, name=self.name)
        llm_report = self.llm.fit(view, ctx)
        self.options = ctx.options
        self.scoring_stats = {"users": 0, "llm_pairs": 0, "seconds": 0.0}
        report.facts.update(llm_report.facts)
        report.timings.update({k: v for k, v in llm_report.timings.items() if k != "train"})
        report.timings["train"] = self.retrieval.info.get("seconds", 0.0) * (not self.retrieval.info["cached"]) \
            + llm_report.timings.get("train", 0.0)
        report.curve, report.converged = llm_report.curve, llm_report.converged
        report.facts["rerank"] = {
            "protocol": "two-stage: the backbone's top-N unseen items reordered by P(Yes), first; the rest in "
                        "retrieval order; full-catalogue ranking",
            "retrieval": self.retrieval.info, "candidates": candidate_facts, "pairs": pair_facts,
            "selection": self.selection(llm_report.facts),
            "scoring": {"order": "P(Yes) (ties: retrieval order)", "score": s.llm.scoring,
                        "prefix_cache": bool(ctx.options.prefix_cache),
                        "batch_size": int(ctx.options.llm_eval_batch_size), **self.scoring_stats},
            "heldout_candidates": {},
        }
        return report

    def cf_needs_all_pairs(self) -> bool:
        """Whether the LLM stage pre-trains a CF model on all training pairs (CoLLM): then the Yes / No view
        also holds every training positive's pairs (`train_all`), beyond the `max_train_pairs` cap."""
        return False

    @staticmethod
    def selection(facts: dict) -> dict:
        """The validation-based selection of each trained step (best step, best valid AUC), if any."""
        out = {}
        for step in ("stage1", "stage2"):
            chosen = facts.get(step, {}).get("selection")
            if chosen:
                out[step] = {k: chosen[k] for k in ("metric", "n_pairs", "best_step", "best_valid_auc")} | {
                    k: chosen[k] for k in ("evaluations", "stopped_early") if k in chosen}
        return out

    # ------------------------------------------------------------------------------------------ score
    def score(self, query: ScoreQuery) -> np.ndarray:
        items = self.query_items(query)
        columns = np.array([self.position.get(item, -1) for item in items], dtype=np.int64)
        known = columns >= 0
        out = np.full((len(query.users), len(items)), -np.inf, dtype=np.float32)
        for row, user in enumerate(query.users):
            ranked = self.rank_user(user, query.user_histories.get(user))
            out[row, known] = ranked.scores[columns[known]]
        return out

    def rank_user(self, user, history: tuple | None = None) -> RankedUser:
        """The user's full-catalogue ranking: its N candidates in P(Yes) order, then the rest in retrieval order.
        `history`: a held-out user's sequence given at inference (its candidates are drawn here, from the live
        backbone, masking that history; recorded in the facts)."""
        retrieval = self.retrieval.user_scores(user, history, self.item_ids)
        if history is not None:
            seen = np.array([self.position[i] for i in history if i in self.position], dtype=np.int64)
            seen = np.union1d(seen, self.barred)
            candidates = rd.top_candidates(retrieval, seen, self.settings.candidates)
            prompt_history = tuple(history)[-self.settings.history_length:]
            self.report.facts["rerank"]["heldout_candidates"][str(user)] = [str(self.item_ids[k]) for k in candidates]
        else:
            if str(user) not in self.candidates:
                raise BenchError(f"user {user!r} has no candidates (no training data)")
            candidates = self.candidates[str(user)]
            prompt_history = tuple(self.sequences.get(user, ()))[-self.settings.history_length:]
        margin, p_yes = self.yes_scores(user, candidates, prompt_history)
        # P(Yes) order; ties (equal margins) keep retrieval order (lexsort: last key is the primary one)
        ordered = candidates[np.lexsort((np.arange(len(candidates)), -margin))]
        rest = rd.retrieval_order(retrieval)
        rest = rest[~np.isin(rest, candidates)]
        ranking = np.concatenate([ordered, rest])
        n = len(self.item_ids)
        scores = np.empty(n, dtype=np.float32)
        scores[ranking] = n - np.arange(n, dtype=np.float32)
        scores[~np.isfinite(retrieval) & ~np.isin(np.arange(n), candidates)] = -np.inf
        return RankedUser(candidates, p_yes, ranking, scores)

    def yes_scores(self, user, candidates: np.ndarray, history: tuple) -> tuple[np.ndarray, np.ndarray]:
        """(order key, P(Yes)) of the user's candidates: one prompt per candidate, history first, scored against
        one cached prefix (run option `prefix_cache`). The key is a monotone function of P(Yes) that does not
        saturate (Yes - No logit for the softmax, the Yes logit for the sigmoid)."""
        if not len(candidates):
            return np.zeros(0), np.zeros(0)
        start = time.perf_counter()
        items = [self.item_ids[k] for k in candidates]
        logits = self.llm.logits([user] * len(items), items, [history] * len(items)).float()
        scoring = self.llm.settings.scoring
        margin = (logits[:, 0] - logits[:, 1]) if scoring == "yes_no_softmax" else logits[:, 0]
        p_yes = cm.probabilities(logits, scoring)
        stats = self.scoring_stats
        stats["users"] += 1
        stats["llm_pairs"] += len(items)
        stats["seconds"] += time.perf_counter() - start
        stats["ms_per_user"] = 1000 * stats["seconds"] / stats["users"]
        stats["ms_per_pair"] = 1000 * stats["seconds"] / stats["llm_pairs"]
        self.report.facts["rerank"]["scoring"].update(stats)
        return margin.double().numpy(), p_yes.double().numpy()

    def test_user_sample(self) -> int:
        return int(self.settings.test_users)

    def parameter_counts(self) -> ParamCounts:
        llm = self.llm.parameter_counts()
        return ParamCounts(trainable=llm.trainable + int(self.retrieval.info["params"]),
                           frozen_online=llm.frozen_online, frozen_offline=llm.frozen_offline)


class TALLRecRerank(LLMReranker):
    """TALLRec (LoRA on the text-only Yes / No prompt) reordering the retrieval backbone's top-N."""

    default_name = "tallrec-rerank"
    version = 2  # 2: TALLRec's version 4 (its LoRA step trains the causal-LM loss on the answer token)
    Settings: ClassVar[type[BaseModel]] = TALLRecRerankSettings
    llm_cls = TALLRec


class ICLRerank(LLMReranker):
    """The untuned LLM (in-context Yes / No question) reordering the retrieval backbone's top-N."""

    default_name = "icl-rerank"
    llm_cls = ICL


class CoLLMRerank(LLMReranker):
    """CoLLM (TALLRec's LoRA + CF vectors in the prompt; `llm.cf_model`) reordering the backbone's top-N."""

    default_name = "collm-mf-rerank"
    # 2: its CF model pre-trained on every training positive's pairs (CoLLM's `cf_pretrain_pairs: all`; was the
    # LLM's `max_train_pairs` sample)
    version = 2
    Settings: ClassVar[type[BaseModel]] = CoLLMRerankSettings
    llm_cls = CoLLM

    def cf_needs_all_pairs(self) -> bool:
        return self.settings.llm.cf_pretrain_pairs == "all"
