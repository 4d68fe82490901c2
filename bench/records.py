"""Run records: one JSON per run, written once and atomically, plus the per-user metric sidecar.

Layout: <results>/runs/<run_id>/record.json, per_user.csv.gz, and work/ (RecBole logs and checkpoints,
git-ignored). A run is complete iff record.json exists; it is written last, so a crash or Ctrl-C leaves
no partial record and the next `run` redoes that run.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from bench import SCHEMA_VERSION

PACKAGES = ("llmrec-bench", "torch", "numpy", "pandas", "scipy", "scikit-learn", "recbole",
            "transformers", "sentence-transformers", "peft", "accelerate")


def atomic_write(path: Path, write) -> None:
    """Write through `write(binary_file)` to a temp file in the same folder, fsync, then rename it over
    `path`: readers see the old file or the whole new one, never a part; a failure leaves no temp file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def atomic_write_frame(path: Path, frame: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".csv.gz")
    os.close(fd)
    try:
        frame.to_csv(tmp, index=False, compression="gzip")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@lru_cache(maxsize=1)
def git_state() -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, check=True).stdout.strip())
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine(device: str) -> dict[str, Any]:
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


class ResultStore:
    """The results folder: one sub-folder per run id."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def record_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "record.json"

    def has(self, run_id: str) -> bool:
        return self.record_path(run_id).exists()

    def load(self, run_id: str) -> dict[str, Any]:
        return json.loads(self.record_path(run_id).read_text())

    def per_user(self, run_id: str) -> pd.DataFrame:
        return pd.read_csv(self.run_dir(run_id) / "per_user.csv.gz", dtype={"user": str})

    def lock(self, run_id: str, timeout: float = -1):
        """An inter-process lock for one run id (`filelock`): a second process executing the same run
        waits for the first, then finds its record and skips. Lock files live in <results>/.locks/."""
        from filelock import FileLock

        path = self.root / ".locks" / f"{run_id}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(path), timeout=timeout)

    def records(self) -> list[dict[str, Any]]:
        """Every complete record in the store (sorted by run id), for selection by spec fields."""
        out = []
        for path in sorted((self.root / "runs").glob("*/record.json")):
            try:
                out.append(json.loads(path.read_text()))
            except (OSError, json.JSONDecodeError):  # written atomically: only a foreign file gets here
                continue
        return out

    def write(self, run_id: str, record: dict[str, Any], per_user: pd.DataFrame) -> Path:
        """Sidecar first, record last: the record's presence means the run is complete."""
        record = {"schema_version": SCHEMA_VERSION, **record}
        atomic_write_frame(self.run_dir(run_id) / "per_user.csv.gz", per_user)
        atomic_write_text(self.record_path(run_id), json.dumps(record, indent=1, sort_keys=True, default=str))
        return self.record_path(run_id)
