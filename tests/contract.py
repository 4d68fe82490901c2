"""The method contract, as a reusable mixin (in the style of LensKit's `lenskit.testing`).

Every registered entry of `bench.catalog.METHODS` must, on tiny synthetic data and one backbone it runs on:
1. round-trip its settings (`Settings.model_validate(settings.model_dump(mode="json")) == settings`), carry its
   preset's values, and reject an unknown setting;
2. fit, then `score(users)` -> [n_users, n_items] (catalogue order), `score(users, items)` -> the requested
   columns, every value finite;
3. ranking entries: no user's ranked list (`bench.eval.ranking.rank_users`, masking train + valid items as
   `bench.runner` does) holds one of the user's own training or validation items; pointwise entries: AUC by
   `bench.eval.pointwise` in [0, 1], scores that are not all equal, and P(Yes) in (0, 1) for the LLM (Yes/No) ones;
4. give identical scores when fitted twice with the same seed;
5. report non-negative int parameter counts, trainable > 0 unless the class `trains_nothing` (then 0).
What an entry is checked for comes from its class's capabilities (`bench.method.Method`): `protocol`
(ranking or pointwise checks), `needs_encoder` (gets the hashing encoder), `trains_nothing`; no list here
names an entry.

Usage: subclass `MethodContract` in a test module (`class TestMine(MethodContract): entries = ("mine",)`);
with `entries = None` (the default) every registered entry is covered, so a new method gets the tests by
being registered. `device = "cuda"` runs the same checks on a GPU. Each entry is fitted twice per class
(fits are shared by its checks); LLM artifacts (LoRA adapters, LLM2Rec stages, PtE profiles, embeddings)
are shared through one cache folder per class, as a suite's runs share `datasets/cache`.

Nothing is downloaded: LLM methods get a tiny random Llama (word-level tokenizer, chat template) saved to a
temporary folder as `base_model` / `generator`; text-encoder methods a deterministic hashing encoder.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
from pydantic import BaseModel

from bench.catalog import METHODS
from bench.errors import BenchError
from bench.method import Method
from bench.options import RunOptions
from bench.registry import Registry
from bench.types import Dataset, FitReport, ParamCounts, RunContext, ScoreQuery, TrainView
from tests.conftest import ctr_dataset, make_dataset

TEXT_DIM = 32  # the fake encoder's (and the fake item-text matrix's) width

# ----------------------------------------------------------------------------------- tiny settings
# field name -> value, wherever the field appears (nested settings models too)
TINY_FIELDS: dict[str, Any] = {
    "epochs": 1, "max_steps": 2, "grad_accum": 1, "warmup_steps": 0, "max_train_pairs": 16,
    "max_new_tokens": 6, "embedding_size": 8, "mapper_hidden_factor": 2, "answer_tokens": ["Yes", "No"],
}
# settings class name (anywhere in the MRO; the most derived wins) -> field -> value
TINY_BY_CLASS: dict[str, dict[str, Any]] = {
    "StageSettings": {"batch_size": 4, "max_length": 32},  # LLM2Rec CSFT / MNTP / IC
    "ICSettings": {"batch_size": 8},
    "LLMSettings": {"batch_size": 8, "learning_rate": 1e-3},  # TALLRec / CoLLM / ICL
    "CFSettings": {"epochs": 2},  # the pointwise CF models
    "LLM2RecSettings": {"max_length": 16},
    "PtESettings": {"batch_size": 64},
}
LM_FIELDS = ("base_model", "generator")  # path settings that name an LLM folder
# backbone settings (only the keys a backbone has are used)
TINY_BACKBONE: dict[str, Any] = {"epochs": 2, "embedding_size": 16, "train_batch_size": 64, "stopping_step": 1,
                                 "n_layers": 1, "inner_size": 32, "hidden_size": 16, "max_len": 8}
# cheapest first; an entry runs on the first of these it supports
BACKBONE_PREFERENCE = ("mf", "lightgcn", "sasrec", "gru4rec", "sgl", "sgcl")


def _settings_classes(cls: type) -> list[type]:
    return [k for k in reversed(cls.__mro__) if isinstance(k, type) and issubclass(k, BaseModel)]


def tiny_settings(settings_cls: type[BaseModel], lm_dir: Path | str, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Settings that make `settings_cls` fit in seconds on tiny data (keys in `skip` left to the preset)."""
    by_class: dict[str, Any] = {}
    for klass in _settings_classes(settings_cls):
        by_class.update(TINY_BY_CLASS.get(klass.__name__, {}))
    out: dict[str, Any] = {}
    for name, info in settings_cls.model_fields.items():
        if name in skip:
            continue
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested = tiny_settings(annotation, lm_dir)
            if nested:
                out[name] = nested
        elif name in LM_FIELDS:
            out[name] = str(lm_dir)
        elif name in by_class:
            out[name] = by_class[name]
        elif name in TINY_FIELDS:
            out[name] = TINY_FIELDS[name]
    return out


def uses_llm(settings_cls: type[BaseModel]) -> bool:
    """Whether the settings (or nested settings) name an LLM folder."""
    for name, info in settings_cls.model_fields.items():
        annotation = info.annotation
        if name in LM_FIELDS:
            return True
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and uses_llm(annotation):
            return True
    return False


def tiny_backbone_settings(backbone: str):
    """The backbone's settings, shrunk to fit tiny data (the `none` backbone: its defaults)."""
    from bench.backbones import BACKBONES, backbone_settings

    fields = BACKBONES[backbone].settings.model_fields
    return backbone_settings(backbone, {k: v for k, v in TINY_BACKBONE.items() if k in fields and backbone != "none"})


def choose_backbone(cls: type, override: str | None = None) -> str:
    backbones = tuple(cls.backbones)
    if override is not None:
        assert override in backbones, f"{cls.__name__} does not run on {override!r} (runs on {backbones})"
        return override
    if cls.protocol == "pointwise":  # runs on `none` only (Method.contract_problems)
        return "none"
    for name in BACKBONE_PREFERENCE:
        if name in backbones:
            return name
    return backbones[0]


@dataclass(frozen=True)
class Case:
    """One entry on one backbone and device."""

    name: str
    backbone: str
    device: str = "cpu"
    registry: Registry = field(default=METHODS, compare=False, repr=False)  # where `name` is an entry

    @property
    def id(self) -> str:
        return f"{self.name}-{self.backbone}" + ("" if self.device == "cpu" else f"-{self.device}")

    @property
    def cls(self) -> type:
        return self.registry.get(self.name)

    @property
    def protocol(self) -> str:
        return self.cls.protocol


# ------------------------------------------------------------------------------ tiny data and models
def _vocabulary() -> list[str]:
    from methods.collm import model as cm
    from methods.pte.generate import PROMPT_DIR

    text = " ".join([cm.COLLM_PROMPT, cm.TEXT_PROMPT, *(p.read_text() for p in sorted(Path(PROMPT_DIR).glob("*.txt")))])
    text += " system user assistant : Movie movies items Yes No _ , . ; ? ! \" ' ( ) - "
    text += " ".join(str(i) for i in range(100))
    return sorted(set(re.findall(r"\w+|[^\w\s]+", text)))


CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} ; {% endfor %}"
                 "{% if add_generation_prompt %}assistant : {% endif %}")


def make_tiny_lm(folder: Path) -> Path:
    """A random 2-layer Llama (d 32) with a word-level tokenizer that knows every prompt word, titles' words,
    "_" (LLM2Rec's MNTP mask) and a chat template (PtE's generator): base_model / generator of every LLM entry."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<pad>", "</s>", "<s>"]
    vocab = {t: i for i, t in enumerate([*specials, *_vocabulary()])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>",
                                        eos_token="</s>", bos_token="<s>")
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         pad_token_id=1, eos_token_id=2, bos_token_id=3, tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def hash_encode(texts: list[str]) -> np.ndarray:
    """Bag of hashed words -> TEXT_DIM-d unit vectors (a deterministic stand-in for a sentence encoder)."""
    out = np.full((len(texts), TEXT_DIM), 1e-3, dtype=np.float32)
    for row, text in enumerate(texts):
        for word in re.findall(r"\w+", text.lower()):
            out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % TEXT_DIM] += 1.0
    return out / np.linalg.norm(out, axis=1, keepdims=True)


class HashEncoder:
    """The run's text encoder, for entries with `needs_encoder` (LLMInit, seq-text, PtE's f_enc)."""

    name, dim = "hash", TEXT_DIM
    PARAMS = 99

    def fingerprint(self) -> str:
        return "contract-hash-encoder"

    def parameter_count(self) -> int:
        return self.PARAMS

    def encode(self, texts, batch_size=None, progress=False) -> np.ndarray:
        return hash_encode(list(texts))


@dataclass
class Artifacts:
    """What every fit of one contract class shares: data, splits, the tiny LLM, one cache folder."""

    root: Path
    lm_dir: Path
    cache_dir: Path
    ranking: Dataset
    pointwise: Dataset
    splits: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, root: Path) -> Artifacts:
        from bench.data.splits import make_split, resolve_split_params

        made = cls(root, make_tiny_lm(root / "tiny-llama"), root / "cache", make_dataset(), ctr_dataset())
        made.splits["ranking"] = make_split(made.ranking, "temporal_loo", resolve_split_params("temporal_loo", {}))
        params = resolve_split_params("ctr_temporal", {"train_months": 4, "valid_months": 2, "test_months": 2})
        made.splits["pointwise"] = make_split(made.pointwise, "ctr_temporal", params)
        return made

    def dataset(self, kind: str) -> Dataset:
        return self.ranking if kind == "ranking" else self.pointwise

    def item_text(self, kind: str) -> np.ndarray:
        """The run's item-text embeddings [n_items, TEXT_DIM] in item_ids order (random, fixed)."""
        n = len(self.dataset(kind).item_ids)
        return np.random.default_rng(7).normal(size=(n, TEXT_DIM)).astype(np.float32)


@dataclass
class Fit:
    method: Any
    ctx: RunContext
    report: FitReport


def fit(case: Case, art: Artifacts, settings: dict[str, Any], seed: int, run_dir: Path,
        cache_dir: Path | None = None) -> Fit:
    cls = case.cls
    kind = case.protocol
    text = art.item_text(kind)
    encoder = HashEncoder() if cls.needs_encoder else None
    ctx = RunContext(seed=seed, device=case.device, run_dir=run_dir, cache_dir=cache_dir or art.cache_dir, backbone=case.backbone,
                     backbone_settings=tiny_backbone_settings(case.backbone), encoder=encoder,
                     embed_items=(lambda: text.copy()) if encoder is not None else None,
                     options=RunOptions(device=case.device, progress=False, threads=1))
    method = case.registry.create(case.name, settings)
    report = method.fit(TrainView.of(art.dataset(kind), art.splits[kind]), ctx)
    return Fit(method, ctx, report)


def pair_scores(method, split) -> np.ndarray:
    """Scores of the split's labelled test pairs, as `bench.eval.pointwise.evaluate_method` gets them."""
    from bench.eval.pointwise import score_pairs

    return score_pairs(method, split)[1]


@dataclass
class Fitted:
    """Two fits of one case with the same seed, and what each scored."""

    case: Case
    settings: dict[str, Any]
    art: Artifacts
    a: Fit
    b: Fit
    users: np.ndarray
    scores_a: np.ndarray  # ranking: [test users, catalogue]; pointwise: [test pairs]
    scores_b: np.ndarray

    @property
    def split(self):
        return self.art.splits[self.case.protocol]

    @property
    def dataset(self) -> Dataset:
        return self.art.dataset(self.case.protocol)


def fit_twice(case: Case, art: Artifacts, root: Path, seed: int = 0) -> Fitted:
    skip = tuple(case.registry.preset(case.name))
    settings = tiny_settings(case.cls.Settings, art.lm_dir, skip)
    # the first fit uses the shared cache (LoRA adapters, LLM2Rec stages, PtE profiles, embeddings: trained by
    # whichever entry needed them first), the second an empty one, so it trains everything itself: equal
    # scores mean training is deterministic and a cached artifact reproduces a freshly trained one
    a = fit(case, art, settings, seed, root / "a")
    b = fit(case, art, settings, seed, root / "b", cache_dir=root / "cache-b")
    split = art.splits[case.protocol]
    users = np.sort(split.test["user"].unique())
    if case.protocol == "ranking":
        scores_a, scores_b = (np.asarray(fit.method.score(ScoreQuery.of(users))) for fit in (a, b))
    else:
        scores_a, scores_b = pair_scores(a.method, split), pair_scores(b.method, split)
    return Fitted(case, settings, art, a, b, users, scores_a, scores_b)


def _subset_equal(expected: Any, actual: Any) -> bool:
    """`expected` (a preset value, maybe a partial dict) appears in `actual` (a JSON dump)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and _subset_equal(v, actual[k])
                                                for k, v in expected.items())
    if isinstance(expected, (list, tuple)):
        return isinstance(actual, (list, tuple)) and len(expected) == len(actual) and all(
            _subset_equal(e, x) for e, x in zip(expected, actual))
    return expected == actual


# ---------------------------------------------------------------------------------------- the mixin
class MethodContract:
    """The contract's tests; subclass it. Class attributes choose what is covered."""

    device: ClassVar[str] = "cpu"
    entries: ClassVar[tuple[str, ...] | None] = None  # None: every registered entry
    backbone_overrides: ClassVar[dict[str, str]] = {}  # entry -> backbone (default: the cheapest it runs on)
    registry: ClassVar[Registry] = METHODS  # whose entries (a test may pass a registry of its own)

    @classmethod
    def cases(cls) -> list[Case]:
        names = cls.registry.names() if cls.entries is None else list(cls.entries)
        return [Case(n, choose_backbone(cls.registry.get(n), cls.backbone_overrides.get(n)), cls.device, cls.registry)
                for n in names]

    def pytest_generate_tests(self, metafunc):
        if "case" in metafunc.fixturenames:
            cases = self.cases()
            metafunc.parametrize("case", cases, ids=[c.id for c in cases], scope="class")

    # ---- fixtures -------------------------------------------------------------------------------------
    @pytest.fixture(scope="class", autouse=True)
    def _torch_runtime(self):
        """One torch thread (on two contended cores, two threads ran a tiny SASRec epoch several times slower),
        and autograd anomaly detection off: RecBole 1.2.1's sine.py switches it on for the whole process when
        its sequential models are imported, which made each tiny SASRec epoch ~4x slower (a debugging mode:
        results do not change). Both are restored afterwards."""
        torch = pytest.importorskip("torch")
        from bench import recbole_compat

        threads, anomaly = torch.get_num_threads(), torch.is_anomaly_enabled()
        recbole_compat.apply()
        import recbole.model.sequential_recommender  # noqa: F401  (switches anomaly detection on, once)

        torch.set_num_threads(1)
        torch.autograd.set_detect_anomaly(False)
        yield
        torch.set_num_threads(threads)
        torch.autograd.set_detect_anomaly(anomaly)

    @pytest.fixture(scope="class")
    def artifacts(self, tmp_path_factory) -> Artifacts:
        return Artifacts.build(tmp_path_factory.mktemp(f"contract-{self.device}"))

    @pytest.fixture(scope="class")
    def fitted(self, case: Case, artifacts: Artifacts, tmp_path_factory) -> Fitted:
        return fit_twice(case, artifacts, tmp_path_factory.mktemp(case.id))

    # ---- 1. settings ----------------------------------------------------------------------------------
    def test_settings_round_trip_and_preset(self, fitted: Fitted):
        settings = fitted.a.method.settings
        settings_cls = type(fitted.a.method).Settings
        assert isinstance(settings, settings_cls)
        assert fitted.a.method.name == fitted.case.name  # the entry's name (records, tables, logs)
        assert settings_cls.model_validate(settings.model_dump(mode="json")) == settings
        dumped = settings.model_dump(mode="json")
        for key, value in fitted.case.registry.preset(fitted.case.name).items():
            assert key in dumped, f"preset key {key!r} is not a setting"
            assert _subset_equal(value, dumped[key]), f"{key}: preset {value!r}, settings {dumped[key]!r}"
        for key, value in fitted.settings.items():  # what we asked for is what the method runs with
            assert _subset_equal(value, dumped[key]), f"{key}: asked {value!r}, settings {dumped[key]!r}"

    def test_class_declarations(self, case: Case):
        """What the harness reads off the class before any fit (run ids, suite expansion, Ray resources): the
        registry refuses a class that breaks it (`Method.contract_problems`), so resolving it is the check."""
        assert isinstance(case.cls, type) and issubclass(case.cls, Method) and case.cls.contract_problems() == []

    def test_unknown_setting_rejected(self, case: Case):
        with pytest.raises(BenchError, match="no_such_setting"):
            case.registry.create(case.name, {"no_such_setting": 1})

    # ---- 2. scores ------------------------------------------------------------------------------------
    def test_scores_shape_finite_and_columns(self, fitted: Fitted):
        method, items = fitted.a.method, fitted.dataset.item_ids
        users = fitted.users[:3]
        full = np.asarray(method.score(ScoreQuery.of(users)))
        assert full.shape == (len(users), len(items))
        assert np.isfinite(full).all(), f"{int((~np.isfinite(full)).sum())} non-finite scores"
        if fitted.case.protocol == "ranking":
            assert fitted.scores_a.shape == (len(fitted.users), len(items))
            assert np.isfinite(fitted.scores_a).all(), f"{int((~np.isfinite(fitted.scores_a)).sum())} non-finite"
        else:
            assert np.isfinite(fitted.scores_a).all()
        # requested items (out of catalogue order): the same values, in the order asked for
        pick = np.array([len(items) - 1, 0, len(items) // 2, 3])
        some = np.asarray(method.score(ScoreQuery.of(users, items[pick])))
        assert some.shape == (len(users), len(pick))
        np.testing.assert_allclose(some, full[:, pick], rtol=1e-4, atol=1e-5)

    # ---- 3. evaluation protocol ----------------------------------------------------------------------
    def test_evaluation_protocol(self, fitted: Fitted):
        if fitted.case.protocol == "ranking":
            self.check_ranking(fitted)
        else:
            self.check_pointwise(fitted)

    @staticmethod
    def check_ranking(fitted: Fitted):
        """Mask each user's train + valid items as bench.runner does; none may reach the ranked list."""
        from bench.eval.ranking import KS, rank_users

        split, item_ids, users = fitted.split, fitted.dataset.item_ids, fitted.users
        position = {item: i for i, item in enumerate(item_ids)}
        positives = {u: np.sort(g.map(position).to_numpy()) for u, g in split.test.groupby("user")["item"]}
        seen = pd.concat([split.train, split.valid])
        exclude = {u: g.map(position).to_numpy() for u, g in seen.groupby("user")["item"]}
        # the data leaves every user max(KS) unseen items, so a ranked list never needs a masked one
        assert len(item_ids) - max(len(v) for v in exclude.values()) >= max(KS)
        top = rank_users(lambda batch: fitted.a.method.score(ScoreQuery.of(batch)), users, item_ids, positives, exclude)
        assert top.shape == (len(users), max(KS))
        for row, user in enumerate(users):
            leaked = set(top[row]) & set(exclude.get(user, ()))
            assert not leaked, f"user {user}: own training/validation items {sorted(item_ids[list(leaked)])} ranked"
            assert len(set(top[row])) == max(KS)

    def check_pointwise(self, fitted: Fitted):
        from bench.eval.pointwise import evaluate_pairs

        test = fitted.split.test.reset_index(drop=True)
        assert test["label"].nunique() == 2, "tiny test pairs need both labels"
        scores = fitted.scores_a
        summary, _ = evaluate_pairs(test, scores)
        from sklearn.metrics import roc_auc_score

        assert summary["overall"]["auc"] == pytest.approx(roc_auc_score(test["label"], scores))
        assert np.unique(scores).size > 1, "every test pair got the same score"
        if uses_llm(fitted.case.cls.Settings):  # P(Yes) of a Yes/No LLM (or its mean with MF's sigmoid)
            assert ((scores > 0) & (scores < 1)).all(), f"P(Yes) outside (0, 1): {scores.min()}..{scores.max()}"

    # ---- 4. same seed, same scores -------------------------------------------------------------------
    def test_same_seed_same_scores(self, fitted: Fitted):
        assert fitted.scores_a.shape == fitted.scores_b.shape
        differ = fitted.scores_a != fitted.scores_b
        assert np.array_equal(fitted.scores_a, fitted.scores_b), (
            f"{int(differ.sum())} of {differ.size} scores differ between two fits with seed 0; max |diff| "
            f"{float(np.nanmax(np.abs(fitted.scores_a - fitted.scores_b)))}")

    # ---- 5. parameter counts -------------------------------------------------------------------------
    def test_parameter_counts(self, fitted: Fitted):
        counts = fitted.a.method.parameter_counts()
        assert isinstance(counts, ParamCounts)
        for key in ("trainable", "frozen_online", "frozen_offline"):
            value = getattr(counts, key)
            assert isinstance(value, (int, np.integer)) and not isinstance(value, bool), f"{key}: {value!r}"
            assert value >= 0, f"{key}: {value}"
        cls = fitted.case.cls
        if cls.trains_nothing:
            assert counts.trainable == 0, f"{fitted.case.name} trains nothing but reports {counts.trainable}"
        else:
            assert counts.trainable > 0, f"{fitted.case.name} trains nothing: declare trains_nothing = True"
        if cls.needs_encoder:  # the run's text encoder is a frozen offline part
            assert counts.frozen_offline >= HashEncoder.PARAMS
        if uses_llm(cls.Settings):  # the LLM is frozen (online: scoring; offline: item / profile encoding)
            assert counts.frozen_online + counts.frozen_offline > 0
        assert counts.as_dict() == {"trainable": int(counts.trainable), "frozen_online": int(counts.frozen_online),
                                    "frozen_offline": int(counts.frozen_offline)}
