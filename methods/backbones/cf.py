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
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.backbones import (
    BACKBONES,
    BackboneSpec,
    CommonSettings,
)
from bench.errors import BenchError
from bench.progress import NO_PROGRESS
from bench.recbole_compat import apply as apply_recbole_compat


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

    def __init__(self, backbone: str, settings: CommonSettings, seed: int, device: str, work_dir: Path,
                 eval_batch_size: int = 1_000_000):
        if not isinstance(settings, BACKBONES[backbone].settings):
            raise TypeError(f"RecBoleCF({backbone!r}): settings must be {BACKBONES[backbone].settings.__name__} "
                            f"(bench.backbones.backbone_settings), not {type(settings).__name__}")
        self.backbone, self.spec = backbone, BACKBONES[backbone]
        self.settings, self.seed, self.device = settings, seed, device
        self.eval_batch_size = eval_batch_size  # RecBole's full-sort batch (a run option: no result changes)
        self.work_dir = Path(work_dir)
        self.model = None
        self.train_info: dict[str, Any] = {}
        self.progress = NO_PROGRESS  # the run's reporter (bench.progress), set by the method that trains this

    def recbole_config_dict(self) -> dict[str, Any]:
        """RecBole's config: the backbone's own settings (n_layers, learner, ...) pass through by name."""
        s = self.settings
        cfg = {k: v for k, v in s.model_dump(mode="json").items() if k not in CommonSettings.model_fields}
        cfg.update({
            "data_path": str(self.work_dir / "data"),
            "checkpoint_dir": str(self.work_dir / "checkpoints"),
            "benchmark_filename": ["train", "valid", "test"],
            "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
            "load_col": {"inter": ["user_id", "item_id", "timestamp"], "user": ["user_id"], "item": ["item_id"]},
            "embedding_size": s.embedding_size, "epochs": s.epochs,
            "train_batch_size": s.train_batch_size, "learning_rate": s.learning_rate,
            "weight_decay": s.weight_decay, "stopping_step": s.stopping_step,
            "eval_step": s.eval_step, "eval_batch_size": self.eval_batch_size,
            "train_neg_sample_args": ({"distribution": "uniform", "sample_num": s.neg_samples}
                                      if self.spec.negative_sampling else None),
            "eval_args": {"group_by": "user", "order": "TO", "mode": "full"},
            "metrics": ["Recall", "NDCG", "Hit", "MRR"], "topk": [10, 20],
            "valid_metric": getattr(s, "valid_metric", "NDCG@10"),
            "seed": self.seed, "reproducibility": True, "show_progress": False, "worker": 0,
            "use_gpu": self.device.startswith("cuda"), "log_wandb": False, "save_dataset": False,
            "save_dataloaders": False,
        })
        if self.device.startswith("cuda") and ":" in self.device:
            cfg["gpu_id"] = self.device.split(":")[1]
        return cfg

    def prepare(self, data) -> None:
        """Write the TrainView's files (train, valid, catalogue) and build RecBole's dataset and dataloaders."""
        apply_recbole_compat()
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
            "early_stopped": len(trainer.train_loss_dict) < self.settings.epochs,
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
            self.progress.update("train", epoch_idx + 1, self.settings.epochs, unit="epoch",
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
