"""CF backbones through RecBole: its models, data pipeline and trainer, on the harness's split files.

`RecBoleCF` writes a split as RecBole benchmark atomic files (train / valid / test), builds RecBole's
Config -> Dataset -> dataloaders -> model -> Trainer, lets a method overwrite the initial embeddings,
trains with early stopping on validation NDCG@10, and scores users over the harness's catalogue.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchError, UnknownChoiceError

# Settings every backbone takes; defaults are the LLMInit code's (PROTOCOLS.md), i.e. the `paper` profile.
COMMON_DEFAULTS: dict[str, Any] = {
    "embedding_size": 128,
    "epochs": 300,
    "train_batch_size": 256,
    "learning_rate": 1e-3,
    "weight_decay": 0.0,
    "neg_samples": 1,
    "stopping_step": 10,  # evaluations without validation NDCG@10 gain before stopping
    "eval_step": 1,
    "eval_batch_size": 1_000_000,  # RecBole's full-sort batch size in (users x items) cells
}


@dataclass(frozen=True)
class BackboneSpec:
    model: str  # RecBole model name, or "module:Class" for a harness model
    info: str
    defaults: dict[str, Any] = field(default_factory=dict)
    negative_sampling: bool = True
    sequential: bool = False
    recbole: bool = True  # False: no RecBole model; the method brings its own (the pointwise ctr suite)


# train_targets_per_user: None = every training position is a target (the papers); K = each user's
# last K training positions only (a CPU cap, recorded in the resolved settings of every run)
SEQUENTIAL_DEFAULTS = {"max_len": 10, "valid_metric": "Recall@20", "weight_decay": 1e-4,
                       "train_targets_per_user": None}


BACKBONES: dict[str, BackboneSpec] = {
    "mf": BackboneSpec("BPR", "BPR-MF (RecBole BPR)", {}),
    "lightgcn": BackboneSpec("LightGCN", "LightGCN (RecBole), 2 layers, BPR", {
        "n_layers": 2, "reg_weight": 1e-5, "require_pow": False}),
    "sgl": BackboneSpec("SGL", "SGL-ED (RecBole), edge dropout 0.1, ssl_tau 0.2, ssl_weight 0.05", {
        "type": "ED", "n_layers": 2, "reg_weight": 1e-5, "ssl_tau": 0.2, "drop_ratio": 0.1,
        "ssl_weight": 0.05}),
    "sgcl": BackboneSpec("bench.sgcl:SGCL", "SGCL: LightGCN encoder + supervised graph contrastive loss", {
        "n_layers": 2, "sgcl_tau": 0.2, "reg_weight": 1e-5, "require_pow": False},
        negative_sampling=False),
    # LLM2Rec code: 2 layers, 2 heads, dropout 0.3, max length 10, CE over all items, lr 1e-3 (GRU4Rec
    # 1e-4), wd 1e-4, model selection on validation Recall@20
    "sasrec": BackboneSpec("SASRec", "SASRec (RecBole), 2 layers, 2 heads, CE over all items", {
        **SEQUENTIAL_DEFAULTS, "loss_type": "CE", "n_layers": 2, "n_heads": 2, "inner_size": 256,
        "hidden_dropout_prob": 0.3, "attn_dropout_prob": 0.3, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
        "initializer_range": 0.02}, negative_sampling=False, sequential=True),
    "gru4rec": BackboneSpec("GRU4Rec", "GRU4Rec (RecBole), CE over all items, lr 1e-4", {
        **SEQUENTIAL_DEFAULTS, "loss_type": "CE", "num_layers": 1, "hidden_size": 128, "dropout_prob": 0.3,
        "learning_rate": 1e-4}, negative_sampling=False, sequential=True),
    # the ctr suite: methods train their own pointwise CF models / LLMs (methods/ctr_backbones.py, collm.py)
    "none": BackboneSpec("none", "no RecBole backbone: the method trains its own models (ctr suite)", {},
                         negative_sampling=False, recbole=False),
}
CF_BACKBONES = tuple(k for k, v in BACKBONES.items() if not v.sequential and v.recbole)
SEQUENTIAL_BACKBONES = tuple(k for k, v in BACKBONES.items() if v.sequential)


def resolve_backbone_config(name: str, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults + overrides; an unknown key is an error naming the valid keys (never silently ignored)."""
    if name not in BACKBONES:
        raise UnknownChoiceError("backbone", name, BACKBONES)
    spec = BACKBONES[name]
    config = {**COMMON_DEFAULTS, **spec.defaults}
    for key, value in (overrides or {}).items():
        if key not in config:
            raise BenchError(f"unknown setting {key!r} for backbone {name!r}; valid settings: "
                             f"{', '.join(sorted(config))}")
        config[key] = type(config[key])(value) if isinstance(config[key], float) else value
    return config


def _model_class(spec: BackboneSpec):
    if ":" in spec.model:
        import importlib

        module, attr = spec.model.split(":")
        return getattr(importlib.import_module(module), attr)
    from recbole.utils import get_model

    return get_model(spec.model)


def write_atomic_split(split, folder: Path, name: str = "bench") -> Path:
    """Write train/valid/test as RecBole atomic files `<name>.{train,valid,test}.inter` under folder/name."""
    target = folder / name
    target.mkdir(parents=True, exist_ok=True)
    header = "user_id:token\titem_id:token\ttimestamp:float\n"
    for part in ("train", "valid", "test"):
        frame = getattr(split, part)[["user", "item", "timestamp"]]
        with open(target / f"{name}.{part}.inter", "w", encoding="utf-8") as fh:
            fh.write(header)
            frame.to_csv(fh, sep="\t", header=False, index=False)
    return folder


class RecBoleCF:
    """One RecBole general recommender trained on one split; scores users over the catalogue."""

    def __init__(self, backbone: str, config: dict[str, Any], seed: int, device: str, work_dir: Path):
        self.backbone, self.spec = backbone, BACKBONES[backbone]
        self.settings, self.seed, self.device = config, seed, device
        self.work_dir = Path(work_dir)
        self.model = None
        self.train_info: dict[str, Any] = {}

    def recbole_config_dict(self) -> dict[str, Any]:
        s = self.settings
        cfg = {k: v for k, v in s.items() if k not in COMMON_DEFAULTS}
        cfg.update({
            "data_path": str(self.work_dir / "data"),
            "checkpoint_dir": str(self.work_dir / "checkpoints"),
            "benchmark_filename": ["train", "valid", "test"],
            "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            "embedding_size": s["embedding_size"], "epochs": s["epochs"],
            "train_batch_size": s["train_batch_size"], "learning_rate": s["learning_rate"],
            "weight_decay": s["weight_decay"], "stopping_step": s["stopping_step"],
            "eval_step": s["eval_step"], "eval_batch_size": s["eval_batch_size"],
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

    def prepare(self, split) -> None:
        """Write the split's files and build RecBole's dataset and dataloaders."""
        from bench import recbole_compat

        recbole_compat.apply()
        from recbole.config import Config
        from recbole.data import create_dataset, data_preparation

        write_atomic_split(split, self.work_dir / "data")
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
            best_valid, best_valid_result = trainer.fit(self.train_data, self.valid_data, saved=True,
                                                        show_progress=False)
            seconds = time.perf_counter() - start
            import torch

            checkpoint = torch.load(trainer.saved_model_file, map_location=self.config["device"],
                                    weights_only=False)  # the harness's own checkpoint, just written
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

    def score(self, user_ids, item_ids) -> np.ndarray:
        """Scores [len(user_ids), len(item_ids)] via the model's full_sort_predict (raw ids in, catalogue out)."""
        import torch
        from recbole.data.interaction import Interaction

        users = self.token_index("user_id", user_ids)
        if (users < 0).any():
            raise BenchError(f"user {np.asarray(user_ids)[users < 0][0]!r} is unknown to the trained backbone")
        columns = self.token_index("item_id", item_ids)
        with torch.no_grad():
            inter = Interaction({"user_id": torch.as_tensor(users, device=self.config["device"])})
            scores = self.model.full_sort_predict(inter).view(len(users), -1).float().cpu().numpy()
        out = np.full((len(users), len(columns)), -np.inf, dtype=np.float32)
        known = columns >= 0
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
