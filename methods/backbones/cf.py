"""CF backbones through RecBole: its models, data pipeline and trainer, on the harness's split files.

`RecBoleCF` writes a split as RecBole benchmark atomic files (train / valid / test), builds RecBole's
Config -> Dataset -> dataloaders -> model -> Trainer, lets a method overwrite the initial embeddings,
trains with early stopping on validation NDCG@10, and scores users over the harness's catalogue.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from bench.errors import BenchError, UnknownChoiceError
from bench.progress import NO_PROGRESS
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
    search_space: ClassVar[dict] = {
        **RecBoleSettings.search_space,
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


COMMON_DEFAULTS: dict[str, Any] = CommonSettings().model_dump()


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


def resolve_backbone_config(name: str, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults + overrides, typed and range-checked; an unknown key or a bad value is a BenchError
    naming the backbone, the key, the value and what is valid (never silently ignored)."""
    from bench.settings import validate_settings

    if name not in BACKBONES:
        raise UnknownChoiceError("backbone", name, BACKBONES)
    return validate_settings(BACKBONES[name].settings, overrides or {}, f"backbone {name!r}").model_dump(
        mode="json")


def _model_class(spec: BackboneSpec):
    if ":" in spec.model:
        import importlib

        module, attr = spec.model.split(":")
        return getattr(importlib.import_module(module), attr)
    from recbole.utils import get_model

    return get_model(spec.model)


def write_atomic_split(data, folder: Path, name: str = "bench") -> Path:
    """Write a TrainView as RecBole atomic files under folder/name: `<name>.train.inter`, `<name>.valid.inter`,
    the catalogue as `<name>.user` / `<name>.item`, and `<name>.test.inter` as a copy of valid.

    RecBole's benchmark mode wants three parts; the harness evaluates test itself, so RecBole never gets the
    test interactions (a method cannot reach them). Ids follow first appearance in train, then valid, then
    the catalogue files for users / items seen in neither (RecBole remaps interactions before features)."""
    target = folder / name
    target.mkdir(parents=True, exist_ok=True)
    write_inter_files(target, name, "user_id:token\titem_id:token\ttimestamp:float\n",
                      {part: getattr(data, part)[["user", "item", "timestamp"]] for part in ("train", "valid")})
    write_catalogue_files(data, target, name)
    return folder


def write_inter_files(target: Path, name: str, header: str, parts: dict[str, pd.DataFrame | list[str]]) -> None:
    """`<name>.<part>.inter` for train and valid (frames or pre-formatted lines), and test = valid. A frame is
    written as `to_csv(sep="\t", header=False, index=False)` writes it, byte for byte (`csv_lines`)."""
    for part in ("train", "valid"):
        with open(target / f"{name}.{part}.inter", "w", encoding="utf-8") as fh:
            fh.write(header)
            rows = parts[part]
            lines = csv_lines(rows) if isinstance(rows, pd.DataFrame) else rows
            if lines is None:
                rows.to_csv(fh, sep="\t", header=False, index=False)
            else:
                fh.writelines(lines)
    shutil.copyfile(target / f"{name}.valid.inter", target / f"{name}.test.inter")


_QUOTED = ("\t", '"', "\r", "\n")  # what makes the csv writer quote a field (tab-separated, minimal quoting)


def csv_lines(rows: pd.DataFrame) -> list[str] | None:
    """The lines `rows.to_csv(sep="\t", header=False, index=False)` writes, by plain joins (a third of its CPU
    time: it rendered every split on every run), where the same bytes are certain: string columns without a
    missing value or a character the csv writer would quote, float columns of whole numbers below 2**53 (which
    numpy and Python both render "<n>.0"). None otherwise: the caller writes with to_csv."""
    import os

    if os.linesep != "\n":
        return None
    columns = []
    for name in rows.columns:
        column = rows[name]
        if column.dtype.kind == "f":
            values = column.to_numpy()
            if not (np.isfinite(values).all() and (values == np.round(values)).all() and (np.abs(values) < 2**53).all()):
                return None
            columns.append([repr(v) for v in values.tolist()])
        elif isinstance(column.dtype, pd.StringDtype) or column.dtype == object:
            values = column.tolist()
            if column.isna().any() or (column.dtype == object and not all(isinstance(v, str) for v in values)):
                return None
            text = "".join(values)
            if any(c in text for c in _QUOTED):
                return None
            columns.append(values)
        else:
            return None
    return ["\t".join(fields) + "\n" for fields in zip(*columns)]


def write_catalogue_files(data, target: Path, name: str) -> None:
    """`<name>.user` and `<name>.item`: every user and item of the catalogue (ids for those without training
    interactions: unseen users and items are scored from their initial or text-derived rows)."""
    for suffix, field, ids in (("user", "user_id", data.user_ids), ("item", "item_id", data.item_ids)):
        with open(target / f"{name}.{suffix}", "w", encoding="utf-8") as fh:
            fh.write(f"{field}:token\n")
            fh.writelines(f"{x}\n" for x in ids)


class RecBoleCF:
    """One RecBole general recommender trained on one split; scores users over the catalogue."""

    def __init__(self, backbone: str, config: dict[str, Any], seed: int, device: str, work_dir: Path):
        self.backbone, self.spec = backbone, BACKBONES[backbone]
        self.settings, self.seed, self.device = config, seed, device
        self.work_dir = Path(work_dir)
        self.model = None
        self.train_info: dict[str, Any] = {}
        self.progress = NO_PROGRESS  # the run's reporter (bench.progress), set by the method that trains this

    def recbole_config_dict(self) -> dict[str, Any]:
        """RecBole's config: the backbone's own settings (n_layers, learner, ...) pass through by name."""
        s = self.settings
        cfg = {k: v for k, v in s.items() if k not in COMMON_DEFAULTS and k != "eval_batch_size"}
        cfg.update({
            "data_path": str(self.work_dir / "data"),
            "checkpoint_dir": str(self.work_dir / "checkpoints"),
            "benchmark_filename": ["train", "valid", "test"],
            "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
            "load_col": {"inter": ["user_id", "item_id", "timestamp"], "user": ["user_id"], "item": ["item_id"]},
            "embedding_size": s["embedding_size"], "epochs": s["epochs"],
            "train_batch_size": s["train_batch_size"], "learning_rate": s["learning_rate"],
            "weight_decay": s["weight_decay"], "stopping_step": s["stopping_step"],
            "eval_step": s["eval_step"], "eval_batch_size": s.get("eval_batch_size", 1_000_000),
            "train_neg_sample_args": ({"distribution": "uniform", "sample_num": s["neg_samples"]}
                                      if self.spec.negative_sampling else None),
            "eval_args": {"group_by": "user", "order": "TO", "mode": "full"},
            "metrics": ["Recall", "NDCG", "Hit", "MRR"], "topk": [10, 20],
            "valid_metric": s.get("valid_metric", "NDCG@10"),
            "seed": self.seed, "reproducibility": True, "show_progress": False, "worker": 0,
            "use_gpu": self.device.startswith("cuda"), "log_wandb": False, "save_dataset": False,
            "save_dataloaders": False,
        })
        if self.device.startswith("cuda") and ":" in self.device:
            cfg["gpu_id"] = self.device.split(":")[1]
        return cfg

    def prepare(self, data) -> None:
        """Write the TrainView's files (train, valid, catalogue) and build RecBole's dataset and dataloaders."""
        from methods.backbones import recbole_compat

        recbole_compat.apply()
        from recbole.config import Config
        from recbole.data import create_dataset, data_preparation

        write_atomic_split(data, self.work_dir / "data")
        self._item_columns = None  # token ids of a new dataset
        model_cls = _model_class(self.spec)
        with self._log_to_run_dir():
            self.config = Config(model=model_cls, dataset="bench", config_dict=self.recbole_config_dict())
            self.dataset = create_dataset(self.config)
            self.train_data, self.valid_data, self.test_data = data_preparation(self.config, self.dataset)
        self.model_cls = model_cls

    def build_model(self):
        """Construct the model after re-seeding (as run_recbole does), so init is reproducible."""
        from recbole.utils import init_seed

        init_seed(self.seed, True)
        self.model = self.model_cls(self.config, self.train_data._dataset).to(self.config["device"])
        return self.model

    def token_index(self, field: str, ids) -> np.ndarray:
        """RecBole internal indices for raw ids (strings); -1 where RecBole never saw the id."""
        mapping = self.dataset.field2token_id[field]
        return np.array([mapping.get(str(x), -1) for x in ids], dtype=np.int64)

    def item_columns(self, item_ids) -> np.ndarray:
        """`token_index` of items, kept for the last list asked (every scoring call of a run asks the catalogue:
        one dict lookup per item per call cost ~20 ms a batch on ml-1m)."""
        ids = np.asarray(item_ids)
        last = self.__dict__.get("_item_columns")
        if last is None or last[0].shape != ids.shape or not np.array_equal(last[0], ids):
            last = self._item_columns = (ids.copy(), self.token_index("item_id", ids))
        return last[1]

    def set_embeddings(self, user_ids, user_matrix: np.ndarray | None, item_ids, item_matrix: np.ndarray | None):
        """Overwrite initial embedding rows for the given raw ids (before training)."""
        import torch

        for ids, matrix, id_field, table in (
            (user_ids, user_matrix, "user_id", "user_embedding"),
            (item_ids, item_matrix, "item_id", "item_embedding"),
        ):
            if matrix is None:
                continue
            index = self.token_index(id_field, ids)
            known = index >= 0
            weight = getattr(self.model, table).weight
            if matrix.shape[1] != weight.shape[1]:
                raise BenchError(f"initial {table} has {matrix.shape[1]} columns but the backbone's "
                                 f"embedding_size is {weight.shape[1]}")
            with torch.no_grad():
                weight[torch.as_tensor(index[known])] = torch.as_tensor(
                    matrix[known], dtype=weight.dtype, device=weight.device)
        for cached in ("restore_user_e", "restore_item_e"):  # LightGCN / SGL cache propagated vectors
            if hasattr(self.model, cached):
                setattr(self.model, cached, None)

    def train(self) -> dict[str, Any]:
        """RecBole's trainer with early stopping on validation NDCG@10; reloads the best checkpoint."""
        from recbole.utils import get_trainer

        with self._log_to_run_dir():
            trainer = get_trainer(self.config["MODEL_TYPE"], self.config["model"])(self.config, self.model)
            start = time.perf_counter()
            self.progress.begin("train")
            best_valid, best_valid_result = trainer.fit(self.train_data, self.valid_data, saved=True,
                                                        show_progress=False, callback_fn=self._epoch_done())
            seconds = time.perf_counter() - start
            import torch

            # tensors and plain data only (recbole_compat._weights_only_checkpoint): nothing is unpickled
            checkpoint = torch.load(trainer.saved_model_file, map_location=self.config["device"], weights_only=True)
            self.model.load_state_dict(checkpoint["state_dict"])
            self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.model.eval()
        for cached in ("restore_user_e", "restore_item_e"):
            if hasattr(self.model, cached):
                setattr(self.model, cached, None)
        self.train_info = {
            "valid_metric": self.config["valid_metric"], "best_valid_score": float(best_valid),
            "best_valid": {k: float(v) for k, v in best_valid_result.items()},
            "epochs_run": len(trainer.train_loss_dict),
            "best_epoch": int(checkpoint["epoch"]) + 1,
            "early_stopped": len(trainer.train_loss_dict) < self.settings["epochs"],
            "train_seconds": seconds,
        }
        return self.train_info

    def _epoch_done(self):
        """RecBole's `callback_fn` (after each validation): epoch k of the cap, the validation score and the
        best so far, to the run's progress reporter."""
        best = [-math.inf]
        metric = str(self.config["valid_metric"])

        def report(epoch_idx: int, valid_score: float) -> None:
            best[0] = max(best[0], float(valid_score))
            self.progress.update("train", epoch_idx + 1, self.settings["epochs"], unit="epoch",
                                 **{f"valid {metric}": float(valid_score), "best": best[0]})

        return report

    def score(self, user_ids, item_ids, histories: dict | None = None) -> np.ndarray:
        """Scores [len(user_ids), len(item_ids)] via the model's full_sort_predict (raw ids in, catalogue out).
        An ID table cannot fold in a user from `histories` (suites refuse such splits when they expand)."""
        import torch
        from recbole.data.interaction import Interaction

        users = self.token_index("user_id", user_ids)
        if (users < 0).any():
            raise BenchError(f"user {np.asarray(user_ids)[users < 0][0]!r} is unknown to the trained backbone")
        columns = self.item_columns(item_ids)
        with torch.no_grad():
            inter = Interaction({"user_id": torch.as_tensor(users, device=self.config["device"])})
            scores = self.model.full_sort_predict(inter).view(len(users), -1).float().cpu().numpy()
        known = columns >= 0
        if known.all():  # one gather (the catalogue is what RecBole knows)
            return np.take(scores, columns, axis=1)
        out = np.full((len(users), len(columns)), -np.inf, dtype=np.float32)
        out[:, known] = scores[:, columns[known]]
        return out

    def parameter_count(self) -> int:
        return int(sum(p.numel() for p in self.model.parameters() if p.requires_grad))

    class _RunLog:
        def __init__(self, path: Path):
            self.path = path

        def __enter__(self):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.handler = logging.FileHandler(self.path)
            self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            self.root = logging.getLogger()
            self.root.addHandler(self.handler)
            self.old_level = self.root.level
            self.root.setLevel(logging.INFO)
            return self

        def __exit__(self, *exc):
            self.root.removeHandler(self.handler)
            self.root.setLevel(self.old_level)
            self.handler.close()

    def _log_to_run_dir(self):
        """RecBole logs to the root logger; capture it into the run folder's recbole.log."""
        return self._RunLog(self.work_dir / "recbole.log")
