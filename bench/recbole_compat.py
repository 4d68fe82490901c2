"""Make RecBole 1.2.1 run on today's stack (torch 2.13, numpy 2, pandas 3, scipy 1.17), and undo the one
import-time side effect that slows every training step (anomaly detection, `_anomaly_detection_off`).

Every patch names the version that broke RecBole and what broke, so each can be dropped when RecBole
releases a fix. `apply()` is idempotent and must run before any RecBole Config / Dataset / model is built.
Each patch is tested in tests/test_recbole_compat.py.
"""

from __future__ import annotations

import inspect
import os
import textwrap

_APPLIED = False
_PATCHED_SOURCES: dict[tuple[type, str], str] = {}  # methods recompiled here have no file source


def _source(cls, method_name: str) -> str:
    return _PATCHED_SOURCES.get((cls, method_name)) or textwrap.dedent(
        inspect.getsource(getattr(cls, method_name)))


def _patch_source(cls, method_name: str, replacements: list[tuple[str, str]]) -> None:
    """Recompile one method of `cls` with literal text replacements; fail loudly if a target is absent."""
    module = inspect.getmodule(cls)
    src = _source(cls, method_name)
    for old, new in replacements:
        if old not in src:
            raise RuntimeError(f"recbole_compat: {cls.__name__}.{method_name} no longer contains {old!r}")
        src = src.replace(old, new)
    namespace: dict = {}
    exec(compile(src, f"<recbole_compat {cls.__name__}.{method_name}>", "exec"), module.__dict__, namespace)
    setattr(cls, method_name, namespace[method_name])
    _PATCHED_SOURCES[(cls, method_name)] = src


def _set_numpy_aliases() -> None:
    import numpy as np

    for alias, target in {
        "bool": np.bool_, "int": np.int_, "float": np.float64, "complex": np.complex128,
        "object": np.object_, "str": np.str_, "long": np.int_, "unicode": np.str_,
    }.items():
        setattr(np, alias, target)


def _numpy2_aliases(config_cls) -> None:
    # numpy 2.0 removed np.float_, np.complex_, np.unicode_: Config.compatibility_settings raises
    # AttributeError. RecBole code (MRR.metric_info, Dataset._fill_nan, ...) still uses np.float /
    # np.int / np.long, also outside Config, so the names are set at apply() time too.
    _set_numpy_aliases()
    config_cls.compatibility_settings = lambda self: _set_numpy_aliases()


def _no_argv(config_cls) -> None:
    # Config._load_cmd_line reads sys.argv and takes any --key=value as an override, so the harness's
    # own CLI flags would leak into RecBole. The library never reads argv: everything is passed explicitly.
    config_cls._load_cmd_line = lambda self: {}


def _pandas3_fillna(dataset_cls) -> None:
    # pandas 3 copy-on-write: chained `feat[field].fillna(..., inplace=True)` is a silent no-op, so NaNs
    # survive into the data (silent corruption in _fill_nan; a crash for token_seq fields in _load_feat).
    _patch_source(dataset_cls, "_fill_nan", [
        ("feat[field].fillna(value=0, inplace=True)", "feat[field] = feat[field].fillna(value=0)"),
        ("feat[field].fillna(value=feat[field].mean(), inplace=True)",
         "feat[field] = feat[field].fillna(value=feat[field].mean())"),
    ])
    _patch_source(dataset_cls, "_load_feat", [
        ('df[field].fillna(value="", inplace=True)', 'df[field] = df[field].fillna(value="")'),
    ])


def _pandas3_agg_len(*classes) -> None:
    # pandas 3: `Series.agg(len)` returns the length of the whole Series, not per element, so RecBole's
    # token_seq remapping (`np.cumsum(feat[field].agg(len))`) splits id lists wrongly (a crash, or wrong
    # sequences) and SequentialDataset's benchmark item_length becomes one scalar. Use `.map(len)`.
    for cls in classes:
        for name, member in list(vars(cls).items()):
            if inspect.isfunction(member) and ".agg(len)" in _source(cls, name):
                _patch_source(cls, name, [(".agg(len)", ".map(len)")])


def _scipy_dok_update() -> None:
    # scipy 1.15 removed the private dok_matrix._update that LightGCN / NGCF / NCL use to fill their
    # adjacency: AttributeError at model construction. Restore it as a bulk dict update.
    import scipy.sparse as sp

    for cls in (sp.dok_matrix, getattr(sp, "dok_array", None)):
        if cls is None or hasattr(cls, "_update"):
            continue

        def _update(self, data):
            store = getattr(self, "_dict", None)
            if store is not None:
                store.update(data)
            else:  # pragma: no cover - older layouts
                for key, value in data.items():
                    self[key] = value

        cls._update = _update


def _weights_only_checkpoint(trainer_cls) -> None:
    # torch 2.6 made torch.load default to weights_only=True; RecBole's Trainer._save_checkpoint pickles its whole
    # Config object into the checkpoint, so reloading the best model (Trainer.evaluate(load_best_model=True),
    # resume_checkpoint, the harness's reload in methods/backbones/cf.py) raises UnpicklingError. Rather than
    # unpickle (code a file could carry), the checkpoint keeps only what those loaders read, as tensors and plain
    # data: the model's name in place of the Config (resume_checkpoint compares it), the score as a float, the
    # state dicts, in torch.save's default pickle protocol. torch.load's default (weights_only) then reads it;
    # the weights saved are the same tensors.
    _patch_source(trainer_cls, "_save_checkpoint", [
        ('"config": self.config,', '"config": {"model": str(self.config["model"])},'),
        ('"best_valid_score": self.best_valid_score,', '"best_valid_score": float(self.best_valid_score),'),
        # protocol 4's FRAME opcode is one the weights-only unpickler does not read: torch.save's default protocol
        ("torch.save(state, saved_model_file, pickle_protocol=4)", "torch.save(state, saved_model_file)"),
    ])


def _tensorboard_in_run_dir(trainer_module) -> None:
    # RecBole writes ./log_tensorboard/ into the current directory; put it next to the run's log file
    # (the FileHandler the harness attaches on the root logger), i.e. inside the run folder.
    from torch.utils.tensorboard import SummaryWriter

    def get_tensorboard(logger):
        for handler in logger.handlers:
            if hasattr(handler, "baseFilename"):
                return SummaryWriter(os.path.join(os.path.dirname(handler.baseFilename), "tensorboard"))
        raise RuntimeError("RecBole trainer used without a run log file (methods.backbones.cf attaches one)")

    trainer_module.get_tensorboard = get_tensorboard


def _anomaly_detection_off() -> None:
    # Not a version break but a cost: recbole/model/sequential_recommender/sine.py (RecBole 1.2.1) calls
    # torch.autograd.set_detect_anomaly(True) at import time, and any model lookup (get_model, the package
    # import) imports it, so every later backward pass in the process runs in anomaly mode: a NaN check
    # (ne + any) on every gradient of every node and a forward trace kept per node. That is about half of a
    # SASRec step and 70% of a GRU4Rec step on CPU (benchmarks/test_recbole_epoch.py). Anomaly mode only
    # checks and records, it computes nothing (trained weights are bit-identical with it off,
    # tests/test_recbole_compat.py), so import the module here and restore torch's default.
    import recbole.model.sequential_recommender.sine  # noqa: F401  (the import that turns it on)
    import torch

    torch.autograd.set_detect_anomaly(False)


def apply() -> None:
    """Apply all patches once (safe to call many times)."""
    global _APPLIED
    if _APPLIED:
        return
    import recbole.config.configurator as configurator
    import recbole.data.dataset.dataset as dataset_module
    import recbole.data.dataset.sequential_dataset as sequential_module
    import recbole.trainer.trainer as trainer_module

    _numpy2_aliases(configurator.Config)
    _no_argv(configurator.Config)
    _pandas3_fillna(dataset_module.Dataset)
    _pandas3_agg_len(dataset_module.Dataset, sequential_module.SequentialDataset)
    _scipy_dok_update()
    _weights_only_checkpoint(trainer_module.Trainer)
    _tensorboard_in_run_dir(trainer_module)
    _anomaly_detection_off()
    _APPLIED = True
