"""PtE, Profile-then-Embedding (paper 004), as harness methods.

An instruct LLM writes user and item profiles from the split's *training* interactions, refined both ways
(methods/pte_stage.py); K candidates per entity are scored by R = lc R_collab + ld R_dist with the run's
text encoder as f_enc and the best is encoded. Downstream, SASRec (the paper's backbone) gets the item
profile embeddings as its item table (through a trained linear adapter) and the user profile embedding
added, through its own adapter, to the sequence representation; LightGCN / MF / SGL are initialised from
the PCA-projected profile embeddings, LLMInit-style. The Table 5 ablations are settings (and aliases).

Profiles are cached under cache_dir/pte/<dataset>/store, keyed by model hash, prompt hash, rendered prompt,
sampling and per-profile seed, never by the run seed or backbone: every seed and backbone reuses them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from bench.backbones import BACKBONES, CF_BACKBONES, SEQUENTIAL_BACKBONES
from bench.errors import BenchError
from bench.method import ColdItemSource
from bench.settings import path_field
from bench.types import ParamCounts, RunContext
from methods.classic import RecBoleMethod


class PtESettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    generator: str = path_field("smollm2")  # "smollm2" (embedded asset) or a local chat-model folder
    prompt_dir: str | None = path_field(None)  # None: methods/prompts/pte
    item_noun: str = "items"  # fills {noun} in the prompts ("movies" for MovieLens)
    profile_users: bool = True  # False: users are the mean of their items' embeddings
    profile_items: bool = True  # False: items are the encoded raw item text
    max_rounds: int = Field(1, ge=0)  # refinement rounds after U0/I0 (0 = single pass)
    convergence_threshold: float = Field(0.05, ge=0)  # stop when mean 1 - cos between rounds is below
    neighbours: int = Field(3, ge=0)  # k of N(u): the k users of highest overlap (Eq. 5; the paper gives no k)
    neighbour_items: int = Field(5, ge=0)
    user_items: int = Field(10, ge=1)  # most recent training items listed in a user prompt
    item_users: int = Field(2, ge=1)  # user profiles shown in an item prompt
    refine_items: int = Field(2, ge=0)  # item profiles shown in a refinement prompt
    candidates: int = Field(2, ge=1)  # K (users)
    # CPU defaults that cut generation (each a recorded deviation; the `paper` profiles set them back):
    item_candidates: int = Field(1, ge=1)  # K for items; 1 = items keep their profile-stage output
    last_round_items: bool = False  # False: the loop ends on the user pass (U0 -> I0 -> U1)
    selection: Literal["reward", "none"] = "reward"
    lambda_collab: float = Field(1.0, ge=0)
    lambda_dist: float = Field(1.0, ge=0)
    max_new_tokens: int = Field(32, ge=1)
    repetition_penalty: float = Field(1.2, gt=0)
    temperature: float = Field(0.8, gt=0)
    top_p: float = Field(0.95, gt=0, le=1)
    batch_size: int = Field(32, ge=1)
    profile_seed: int = 0  # generation seed; the run seed only drives the downstream model
    grpo_steps: int = Field(0, ge=0)  # > 0: GRPO LoRA fine-tuning of the generator (Eq. 12) before sampling
    grpo_users_per_step: int = Field(4, ge=1)
    grpo_learning_rate: float = Field(1e-4, gt=0)
    grpo_items: bool = False  # GRPO on item groups too (the paper's "analogous formulation"); paper profiles: on
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    user_embedding: Literal["add", "none"] = "add"  # sequential backbones: user profile added to the state
    # users absent from training (cold_users): "profile" = written from the history the protocol gives at
    # inference, as training users' are (version 2); "none" = no user term (zero), as version 1 did
    heldout_users: Literal["profile", "none"] = "profile"
    # sequential item table: "adapter" = frozen profile embeddings behind a trained Linear (the paper's);
    # "init" = PCA of the profile embeddings to embedding_size initialises the trainable ID table (pte-init)
    seq_items: Literal["adapter", "init"] = "adapter"
    cf_projection: Literal["pca"] = "pca"  # CF backbones: profile embeddings -> embedding_size


def user_table(cf, user_ids, matrix: np.ndarray) -> np.ndarray:
    """`matrix` (rows over `user_ids`) laid out over RecBole's user ids; row 0 (padding) and users RecBole
    does not know stay zero."""
    index = cf.token_index("user_id", user_ids)
    full = np.zeros((int(cf.dataset.user_num), matrix.shape[1]), dtype=np.float32)
    known = index >= 0
    full[index[known]] = matrix[known]
    return full


class PtE(RecBoleMethod):
    """PtE on SASRec / GRU4Rec (profile embeddings replace the ID tables) and CF backbones (init)."""

    @classmethod
    def recorded_offline_cost(cls, record: dict) -> tuple[float, float]:
        """The profile stage: tokens generated and seconds, the first time each profile was written."""
        cost = ((record.get("method_info") or {}).get("pte") or {}).get("offline_cost")
        if not cost:
            return super().recorded_offline_cost(record)
        tokens = cost.get("first_tokens") or cost.get("tokens") or 0
        seconds = cost.get("first_seconds") or cost.get("seconds") or 0
        return float(tokens), float(seconds)

    @classmethod
    def seed_shared(cls, settings: BaseModel) -> str | None:
        """Profiles (and the GRPO adapter) come from `profile_seed`, the same for every run seed."""
        parts = [name for name, on in (("user profiles", settings.profile_users),
                                       ("item profiles", settings.profile_items)) if on]
        if not parts:
            return None
        if settings.grpo_steps:
            parts.append("GRPO adapter")
        return f"{', '.join(parts)} (profile_seed {settings.profile_seed})"

    default_name = "pte"
    # 2: users absent from training (cold_users' held-out users) are profiled from the history the protocol
    # gives at inference (valid users' context at fit, test users' at score) instead of a zero user term
    # (`heldout_users: none` is version 1's computation)
    version: ClassVar[int] = 2
    Settings: ClassVar[type[BaseModel]] = PtESettings
    backbones = CF_BACKBONES + SEQUENTIAL_BACKBONES
    needs_encoder: ClassVar[bool] = True
    needs_item_text: ClassVar[bool] = True  # profiles are written from item titles and text
    # sequential backbones with seq_items "adapter" (the paper's): a cold item is its raw text embedding
    # through the trained adapter; CF backbones and seq_items "init": its text-derived initial row
    item_cold_start: ClassVar[ColdItemSource] = "text"
    # users that have a user term (set when the term is attached; None: no user term, nothing to profile)
    _heldout_done: set[str] | None = None

    def cold_item_source(self, backbone: str | None = None) -> ColdItemSource:
        backbone = backbone or getattr(self.cf, "backbone", None)
        if backbone is None:
            return self.item_cold_start
        if BACKBONES[backbone].sequential and self.settings.seq_items == "adapter":
            return "text"
        return "text-init"

    # ---- profile embeddings ---------------------------------------------------------------------------
    def _generator(self, ctx: RunContext):
        from bench.data import assets
        from methods.llm.generate import ChatGenerator

        return ChatGenerator(assets.model_folder(self.settings.generator, ctx.cache_dir, "generator"), ctx.device,
                             ctx.cache_dir)

    def profile_embeddings(self, ctx: RunContext) -> tuple[np.ndarray, np.ndarray]:
        """(users [n_users, d] over self.data.catalogue.user_ids, items [n_items, d] over self.data.catalogue.item_ids)."""
        from bench.encoders import encode_items
        from methods.pte.generate import PROMPT_DIR, ProfileStore, PromptSet
        from methods.pte.stage import ProfileStage

        s: PtESettings = self.settings
        raw = ctx.embed_items()
        raw = raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)
        item_ids = [str(i) for i in self.data.catalogue.item_ids]
        raw_of = dict(zip(item_ids, raw))
        encoder = ctx.encoder
        self._encoder_params = int(encoder.parameter_count())

        def encode(texts: list[str], tag: str) -> np.ndarray:
            if not texts:
                return np.zeros((0, raw.shape[1]), dtype=np.float32)
            series = pd.Series(texts, index=[f"{tag}:{i}" for i in range(len(texts))])
            matrix, _ = encode_items(encoder, series, tag, ctx.cache_dir, progress=False)
            return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)

        train = self.data.split.train.astype({"user": str, "item": str})
        result, self._stage = None, None
        start = time.perf_counter()
        if s.profile_users or s.profile_items:
            from methods.llm2rec.method import item_titles

            grpo = None
            if s.grpo_steps > 0:
                from methods.pte.grpo import GRPOFineTune

                grpo = GRPOFineTune(s.grpo_steps, s.grpo_users_per_step, s.candidates, s.grpo_learning_rate,
                                    s.lora_r, s.lora_alpha, s.profile_seed)
            generator = self._generator(ctx)
            prompts = PromptSet(s.prompt_dir or PROMPT_DIR, s.item_noun)
            store = ProfileStore(Path(ctx.cache_dir) / "pte" / "store")
            stage = ProfileStage(train, item_titles(self.data.catalogue), self.data.catalogue.item_text, generator, prompts, store,
                                 encode, s, progress=ctx.options.progress, grpo=grpo)
            result = stage.run(raw_of)
            self._stage = stage
            self._generator_params = int(sum(p.numel() for p in generator.load()[0].parameters()))
            self.report.facts["pte"] = {
                **result.info, "generator": str(generator.model_dir), "generator_hash": generator.fingerprint(),
                "prompt_hashes": prompts.hashes, "grpo": grpo.info if grpo is not None else None,
                "offline_cost": {**result.stats.as_dict(), "rounds": result.info["rounds"]},
                "examples": {u: result.user_text[u] for u in sorted(result.user_text)[:3]},
            }
            self.report.timings["profile_stage"] = time.perf_counter() - start
        else:
            self.report.facts["pte"] = {"profiles": "none (direct embedding of raw item text)"}
        self._encode, self._raw_of = encode, raw_of
        user_ids = [str(u) for u in self.data.catalogue.user_ids]
        by_user = train.groupby("user")["item"].agg(list)
        if result is not None and s.profile_items:
            texts = [result.item_text.get(i) for i in item_ids]
            have = [i for i, t in enumerate(texts) if t is not None]
            items = raw.copy()  # items without training users keep their raw text embedding
            items[have] = encode([texts[i] for i in have], "pte-item-final")
            self.report.facts["pte"]["items_without_profile"] = len(item_ids) - len(have)
        else:
            items = raw
        self._item_pos, self._items = {i: k for k, i in enumerate(item_ids)}, items
        users = np.zeros((len(user_ids), raw.shape[1]), dtype=np.float32)
        if result is not None and s.profile_users:
            have = [k for k, u in enumerate(user_ids) if u in result.user_text]
            users[have] = encode([result.user_text[user_ids[k]] for k in have], "pte-user-final")
        else:
            for k, u in enumerate(user_ids):  # mean of the user's (profile or raw) item embeddings
                users[k] = self._mean_item_vector(by_user.get(u, []))
        self.report.timings["pte_embed"] = time.perf_counter() - start - self.report.timings.get("profile_stage", 0.0)
        # held-out validation users (cold_users): profiled from their context, as test users are at scoring
        context = self.data.split.valid_context.astype({"user": str, "item": str})
        if len(context) and s.heldout_users == "profile" and s.user_embedding == "add":  # else no user term
            from methods.backbones.sequential import user_sequences

            vectors = self.heldout_user_vectors(user_sequences([context]))
            row = {u: k for k, u in enumerate(user_ids)}
            for u, vector in vectors.items():
                users[row[u]] = vector
        return users.astype(np.float32), items.astype(np.float32)

    def _mean_item_vector(self, items) -> np.ndarray:
        """Mean of the (profile or raw) embeddings of `items` (zeros when none is in the catalogue)."""
        rows = [self._item_pos[i] for i in items if i in self._item_pos]
        return self._items[rows].mean(axis=0) if rows else np.zeros(self._items.shape[1], dtype=np.float32)

    def heldout_user_vectors(self, histories: dict[str, list[str]]) -> dict[str, np.ndarray]:
        """User vectors of users absent from training, from the histories the protocol gives (item ids, oldest
        first): their profiles, written as the training users' are (`ProfileStage.profile_heldout`) and encoded;
        without user profiles, the mean of their items' embeddings, as for training users. The cost and the
        count go into `method_info.pte` (`heldout`; `n_users` counts every profiled user)."""
        start = time.perf_counter()
        if self._stage is None or not self.settings.profile_users:
            return {u: self._mean_item_vector(items) for u, items in histories.items()}
        texts, stats, passes = self._stage.profile_heldout(histories, self._raw_of)
        users = sorted(texts)
        vectors = dict(zip(users, self._encode([texts[u] for u in users], "pte-user-final")))
        facts = self.report.facts["pte"]
        held = facts.setdefault("heldout", {"users": 0, "seconds": 0.0, "tokens": 0, "passes": []})
        held["users"] += len(users)
        held["seconds"] += time.perf_counter() - start
        held["tokens"] += int(stats.first_tokens)  # every profile used, when first generated (cached or not)
        held["passes"] += passes
        facts["n_users"] = int(facts.get("n_users", 0)) + len(users)
        facts.setdefault("heldout_examples", {}).update({u: texts[u] for u in users[:2]})
        return vectors

    def score(self, query):
        """Held-out users of the query (their earlier sequence given at inference) get their user term first."""
        new = {} if self._heldout_done is None or self.settings.heldout_users == "none" else {
            str(u): list(map(str, h)) for u, h in query.user_histories.items() if str(u) not in self._heldout_done}
        if new:
            import torch

            term = self.cf.model.user_term
            vectors = self.heldout_user_vectors(new)
            users = sorted(vectors)
            index = self.cf.token_index("user_id", users)
            with torch.no_grad():
                for row, u in zip(index, users):
                    if row > 0:
                        term.frozen[row] = torch.as_tensor(vectors[u], device=term.frozen.device)
            self._heldout_done.update(new)
        return super().score(query)

    # ---- downstream -----------------------------------------------------------------------------------
    def model_class(self, ctx: RunContext, cls):
        """Sequential backbones with `user_embedding: add`: the backbone extended with the user term."""
        if BACKBONES[ctx.backbone].sequential and self.settings.user_embedding == "add":
            from methods.backbones.sequential import with_user_term

            return with_user_term(cls)
        return cls

    def initial_embeddings(self, ctx: RunContext, cf) -> tuple[np.ndarray, np.ndarray]:
        """CF backbones: profile embeddings of users and items projected together by PCA (LLMInit-style)."""
        from sklearn.decomposition import PCA

        users, items = self.profile_embeddings(ctx)
        k = ctx.backbone_settings.embedding_size
        stacked = np.vstack([users, items])
        if k > stacked.shape[1]:
            raise BenchError(f"{self.name}: embedding_size {k} exceeds the encoder's {stacked.shape[1]} dims")
        projected = PCA(n_components=k, random_state=ctx.seed).fit_transform(stacked).astype(np.float32)
        self.report.facts["pte_downstream"] = {"mode": "init", "projection": "pca", "dim": k}
        return projected[:len(users)], projected[len(users):]

    def customise(self, ctx: RunContext, cf) -> None:
        if not BACKBONES[ctx.backbone].sequential:
            return super().customise(ctx, cf)
        users, items = self.profile_embeddings(ctx)
        mode = self.settings.seq_items
        if mode == "init":
            from sklearn.decomposition import PCA

            k = ctx.backbone_settings.embedding_size
            if k > items.shape[1]:
                raise BenchError(f"{self.name}: seq_items 'init' needs embedding_size <= the encoder's "
                                 f"{items.shape[1]} dims, got {k}; use seq_items 'adapter'")
            table = PCA(n_components=k, random_state=ctx.seed).fit_transform(items).astype(np.float32)
        else:
            table = items
        cf.replace_item_embeddings(self.data.catalogue.item_ids, table, mode)
        if self.settings.user_embedding == "add":
            cf.model.attach_user_term(user_table(cf, self.data.catalogue.user_ids, users))
            # users with a profile already: the training users and the held-out validation users
            self._heldout_done = set(map(str, self.data.split.train["user"])) | set(
                map(str, self.data.split.valid_context["user"]))
        self.report.facts["pte_downstream"] = {"mode": mode, "user_embedding": self.settings.user_embedding,
                                       "dim": int(items.shape[1])}

    def parameter_counts(self) -> ParamCounts:
        offline = getattr(self, "_encoder_params", 0) + getattr(self, "_generator_params", 0)
        return ParamCounts(trainable=self.cf.parameter_count(), frozen_online=0, frozen_offline=offline)
