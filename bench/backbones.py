"""The backbones the engine knows: each one's typed settings, its RecBole model (by name: the engine imports
no model code) and what it needs (negative sampling, sequences). `methods/backbones/` trains them.

A run's backbone settings are validated here once (`backbone_settings`) and reach the method as that typed
object (`RunContext.backbone_settings`); the run's spec and record keep them as JSON (`resolve_backbone_config`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from bench.errors import UnknownChoiceError
from bench.search import Choice, FloatRange, IntRange


class CommonSettings(BaseModel):
    """Settings every backbone takes; defaults are the LLMInit code's (PROTOCOLS.md), i.e. the `paper` profile.

    `version` is bumped whenever a default or the backbone's behaviour changes (it is part of run ids)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    version: ClassVar[int] = 1

    embedding_size: int = Field(128, ge=1)
    epochs: int = Field(300, ge=1)
    train_batch_size: int = Field(256, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    neg_samples: int = Field(1, ge=1)
    stopping_step: int = Field(10, ge=1)  # evaluations without validation gain before stopping
    eval_step: int = Field(1, ge=1)


# What RecBole 1.2.1's Trainer._build_optimizer accepts, less "sparse_adam": every backbone here has dense
# embeddings, which torch's SparseAdam rejects at the first step (and RecBole drops weight_decay for it).
# An unknown name would make RecBole log a warning and silently train with Adam: hence a closed list.
LEARNERS = ("adam", "adamw", "sgd", "adagrad", "rmsprop")


# weight decay 0 is the default of most backbones, and a log range has no 0: a few decades and 0 itself
WEIGHT_DECAYS = Choice(values=(0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2))


class RecBoleSettings(CommonSettings):
    """Settings of a backbone that RecBole's trainer trains (not the `none` backbone)."""

    # what `bench tune` searches (bench.search; the `none` backbone trains nothing, hence here, not on
    # CommonSettings); a ClassVar: no setting, no run id moves
    search_space: ClassVar[dict] = {
        "learning_rate": FloatRange(low=1e-4, high=1e-2, log=True),
        "weight_decay": WEIGHT_DECAYS,
    }

    # RecBole's optimizer; "adam" is RecBole's default, so the setting moves no id. LLM2Rec's code: AdamW.
    learner: Literal[LEARNERS] = "adam"


class GraphSettings(RecBoleSettings):
    # learning rate up to 5e-2: under the CPU epoch cap the first paradigms studies put LightGCN's best at the
    # 1e-2 end of the shared range (bench tune names a best value at a range's end)
    search_space: ClassVar[dict] = {
        **RecBoleSettings.search_space,
        "learning_rate": FloatRange(low=1e-4, high=5e-2, log=True),
        "reg_weight": FloatRange(low=1e-6, high=1e-2, log=True),
        "n_layers": IntRange(low=1, high=3),
    }

    n_layers: int = Field(2, ge=1)
    reg_weight: float = Field(1e-5, ge=0)


class LightGCNSettings(GraphSettings):
    require_pow: bool = False


class SGLSettings(GraphSettings):
    type: Literal["ED", "ND", "RW"] = "ED"
    ssl_tau: float = Field(0.2, gt=0)
    drop_ratio: float = Field(0.1, ge=0, lt=1)
    ssl_weight: float = Field(0.05, ge=0)


class SGCLSettings(GraphSettings):
    sgcl_tau: float = Field(0.2, gt=0)
    require_pow: bool = False


class SequentialSettings(RecBoleSettings):
    # LLM2Rec code: max length 10, wd 1e-4, model selection on validation Recall@20
    max_len: int = Field(10, ge=1)
    valid_metric: Literal["Recall@10", "Recall@20", "NDCG@10", "NDCG@20", "Hit@10", "Hit@20", "MRR@10",
                          "MRR@20"] = "Recall@20"
    weight_decay: float = Field(1e-4, ge=0)
    # None = every training position is a target (the papers); K = each user's last K training positions
    # only (a CPU cap, recorded in the resolved settings of every run)
    train_targets_per_user: int | None = Field(None, ge=1)
    loss_type: Literal["CE", "BPR"] = "CE"


class SASRecSettings(SequentialSettings):
    # 2: validation masks each user's training items, as the harness's test ranking does (RecBole's sequential
    # validation masked nothing, so checkpoints were selected on another protocol), and RecBole no longer
    # receives the test file, which changed the order of its item token ids
    version: ClassVar[int] = 2
    search_space: ClassVar[dict] = {
        **RecBoleSettings.search_space,
        "hidden_dropout_prob": FloatRange(low=0.0, high=0.5),
        "attn_dropout_prob": FloatRange(low=0.0, high=0.5),
    }

    n_layers: int = Field(2, ge=1)
    n_heads: int = Field(2, ge=1)
    inner_size: int = Field(256, ge=1)
    hidden_dropout_prob: float = Field(0.3, ge=0, lt=1)
    attn_dropout_prob: float = Field(0.3, ge=0, lt=1)
    hidden_act: Literal["gelu", "relu", "swish", "tanh", "sigmoid"] = "gelu"
    layer_norm_eps: float = Field(1e-12, gt=0)
    initializer_range: float = Field(0.02, gt=0)


class GRU4RecSettings(SequentialSettings):
    # 2: as SASRecSettings (masked validation; token ids without the test file)
    version: ClassVar[int] = 2
    search_space: ClassVar[dict] = {**RecBoleSettings.search_space, "dropout_prob": FloatRange(low=0.0, high=0.5)}

    num_layers: int = Field(1, ge=1)
    hidden_size: int = Field(128, ge=1)
    dropout_prob: float = Field(0.3, ge=0, lt=1)
    learning_rate: float = Field(1e-4, gt=0)


@dataclass(frozen=True)
class BackboneSpec:
    model: str  # RecBole model name, or "module:Class" for a harness model
    info: str
    settings: type[CommonSettings] = CommonSettings
    negative_sampling: bool = True
    sequential: bool = False
    recbole: bool = True  # False: no RecBole model; the method brings its own (the pointwise ctr suite)

    @property
    def defaults(self) -> dict[str, Any]:
        return self.settings().model_dump(mode="json")


BACKBONES: dict[str, BackboneSpec] = {
    "mf": BackboneSpec("BPR", "BPR-MF (RecBole BPR)", RecBoleSettings),
    "lightgcn": BackboneSpec("LightGCN", "LightGCN (RecBole), 2 layers, BPR", LightGCNSettings),
    "sgl": BackboneSpec("SGL", "SGL-ED (RecBole), edge dropout 0.1, ssl_tau 0.2, ssl_weight 0.05", SGLSettings),
    "sgcl": BackboneSpec("methods.backbones.sgcl:SGCL", "SGCL: LightGCN encoder + supervised graph contrastive loss",
                         SGCLSettings, negative_sampling=False),
    # LLM2Rec code: 2 layers, 2 heads, dropout 0.3, max length 10, CE over all items, lr 1e-3 (GRU4Rec
    # 1e-4), wd 1e-4, model selection on validation Recall@20
    "sasrec": BackboneSpec("SASRec", "SASRec (RecBole), 2 layers, 2 heads, CE over all items", SASRecSettings,
                           negative_sampling=False, sequential=True),
    "gru4rec": BackboneSpec("GRU4Rec", "GRU4Rec (RecBole), CE over all items, lr 1e-4", GRU4RecSettings,
                            negative_sampling=False, sequential=True),
    # the ctr suite: methods train their own pointwise CF models / LLMs (methods/backbones/pointwise.py, methods/collm/)
    "none": BackboneSpec("none", "no RecBole backbone: the method trains its own models (ctr suite)",
                         negative_sampling=False, recbole=False),
}
CF_BACKBONES = tuple(k for k, v in BACKBONES.items() if not v.sequential and v.recbole)
SEQUENTIAL_BACKBONES = tuple(k for k, v in BACKBONES.items() if v.sequential)


def backbone_settings(name: str, values: Mapping[str, Any] | None = None) -> CommonSettings:
    """The backbone's typed settings: defaults + `values`, range-checked; an unknown backbone, an unknown key
    or a bad value is a BenchError naming the backbone, the key, the value and what is valid."""
    from bench.settings import validate_settings

    if name not in BACKBONES:
        raise UnknownChoiceError("backbone", name, BACKBONES)
    return validate_settings(BACKBONES[name].settings, dict(values or {}), f"backbone {name!r}")


def resolve_backbone_config(name: str, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """`backbone_settings` as JSON values: what a RunSpec (and so a record) holds."""
    return backbone_settings(name, overrides).model_dump(mode="json")
