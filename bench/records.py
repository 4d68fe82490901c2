"""Run records: one JSON per run, written once and atomically, plus the per-user metric sidecar.

Layout: <results>/runs/<run_id>/record.json, per_user.csv.gz, and work/ (RecBole logs and checkpoints,
git-ignored). The record is written last, so a crash or Ctrl-C leaves no partial record. A run counts as
complete only if its record parses, says `status: complete`, has the current schema version and its own
run id, and its sidecar is there; anything else is moved aside to <results>/.quarantine/ (kept, never
deleted) and the run is redone. Readers (tables, compare, claims) name a bad record and skip it.
"""

from __future__ import annotations

import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from bench import SCHEMA_VERSION

PAIRS_FILE = "pairs.csv.gz"  # a pointwise run's scored test pairs, saved beside per_user.csv.gz

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


def discard_folder(folder: Path) -> None:
    """Move `folder` out of its path at once (a reader sees it whole or not at all), then delete it."""
    folder = Path(folder)
    trash = folder.parent / f".{folder.name}.bad-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        os.rename(folder, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def atomic_write_frame(path: Path, frame: pd.DataFrame) -> None:
    """The frame as gzip-compressed CSV, byte-reproducible: the gzip header holds no time and no file name."""
    data = frame.to_csv(index=False).encode("utf-8")

    def write(handle) -> None:
        with gzip.GzipFile(filename="", mode="wb", fileobj=handle, mtime=0) as zipped:
            zipped.write(data)

    atomic_write(path, write)


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


def record_problem(path: Path, run_id: str) -> str | None:
    """Why the record at `path` is not a complete run `run_id` (None: it is)."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"unreadable record ({type(exc).__name__})"
    if not isinstance(record, dict):
        return "record is not a JSON object"
    if record.get("status") != "complete":
        return f"status {record.get('status')!r}, not 'complete'"
    if record.get("schema_version") != SCHEMA_VERSION:
        return f"schema version {record.get('schema_version')!r}, current is {SCHEMA_VERSION}"
    if record.get("run_id") != run_id:
        return f"record says run id {record.get('run_id')!r}"
    if not (Path(path).parent / "per_user.csv.gz").is_file():
        return "per_user.csv.gz sidecar missing"
    return None


class ResultStore:
    """The results folder: one sub-folder per run id."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def record_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "record.json"

    def has(self, run_id: str) -> bool:
        """True iff the run is complete (see `problem`)."""
        return self.problem(run_id) is None

    def problem(self, run_id: str) -> str | None:
        """Why the stored run does not count as complete, or None if it does."""
        path = self.record_path(run_id)
        if not path.exists():
            return "no record"
        return record_problem(path, run_id)

    def load(self, run_id: str) -> dict[str, Any]:
        problem = self.problem(run_id)
        if problem is not None:
            from bench.errors import BenchError

            raise BenchError(f"{self.record_path(run_id)}: {problem}")
        return json.loads(self.record_path(run_id).read_text())

    def quarantine(self, run_id: str, reason: str) -> Path | None:
        """Move an incomplete run's files aside to <results>/.quarantine/<run_id>-<n>/ (with reason.txt);
        returns that folder (None when there was nothing to move)."""
        source = self.run_dir(run_id)
        files = [p for p in source.iterdir() if p.name != "work"] if source.is_dir() else []
        if not files:
            return None
        base = self.root / ".quarantine"
        n = 0
        while (base / f"{run_id}-{n}").exists():
            n += 1
        target = base / f"{run_id}-{n}"
        target.mkdir(parents=True)
        for path in files:
            shutil.move(str(path), target / path.name)
        (target / "reason.txt").write_text(reason + "\n")
        print(f"bench: record {run_id} does not count as complete ({reason}); moved to {target}; the next "
              "`bench run` of it redoes it", file=sys.stderr)
        return target

    def discard_unfinished(self, run_ids) -> list[str]:
        """After an interrupt: the run folders of `run_ids` that hold no record lose what the stopped attempt
        wrote (RecBole's work/, sidecars written before the record), keeping an earlier failure's error.txt,
        and go when that leaves them empty. A run whose lock another process holds (still running) is left
        alone. Returns the run ids cleaned."""
        from filelock import Timeout

        cleaned = []
        for run_id in run_ids:
            folder = self.run_dir(run_id)
            if not folder.is_dir() or self.record_path(run_id).exists():
                continue
            try:
                with self.lock(run_id, timeout=0):
                    if self.record_path(run_id).exists():
                        continue
                    for path in folder.iterdir():
                        if path.name == "error.txt":
                            continue
                        shutil.rmtree(path) if path.is_dir() else path.unlink()
                    if not any(folder.iterdir()):
                        folder.rmdir()
                    cleaned.append(run_id)
            except Timeout:
                continue
        return cleaned

    def pairs(self, run_id: str) -> pd.DataFrame | None:
        """A pointwise run's scored test pairs (user, item, label, segment, score); None when not saved."""
        path = self.run_dir(run_id) / PAIRS_FILE
        return pd.read_csv(path, dtype={"user": str, "item": str}) if path.is_file() else None

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
            problem = record_problem(path, path.parent.name)
            if problem is not None:
                print(f"bench: skipping {path}: {problem}", file=sys.stderr)
                continue
            out.append(json.loads(path.read_text()))
        return out

    def write(self, run_id: str, record: dict[str, Any], per_user: pd.DataFrame,
              sidecars: dict[str, pd.DataFrame] | None = None) -> Path:
        """Sidecars first (per_user.csv.gz; a pointwise run's scored pairs, PAIRS_FILE), record last: the
        record's presence means the run is complete."""
        record = {"schema_version": SCHEMA_VERSION, **record}
        for name, frame in (sidecars or {}).items():
            atomic_write_frame(self.run_dir(run_id) / name, frame)
        atomic_write_frame(self.run_dir(run_id) / "per_user.csv.gz", per_user)
        atomic_write_text(self.record_path(run_id), json.dumps(record, indent=1, sort_keys=True, default=str))
        return self.record_path(run_id)
