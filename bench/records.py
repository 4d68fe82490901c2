"""Run records: one JSON per run, written once and atomically, plus the per-user metric sidecar.

Layout: <results>/runs/<run_id>/record.json, per_user.csv.gz, and work/ (RecBole logs and checkpoints,
git-ignored). The record is written last, so a crash or Ctrl-C leaves no partial record. A run counts as
complete only if its record parses, says `status: complete`, has the current schema version, its own run
id and the fields every reader needs (`spec`, `metrics` with `overall`), its sidecar is there, and its seal
holds; anything else is moved aside to <results>/.quarantine/ (kept, never deleted) and the run is redone.
Readers (tables, compare, claims) name a bad record in one line and skip it.

The seal: every record written here carries `seal` = {"algorithm": "sha256", "content": sha256 of the
record's canonical JSON without the seal (`bench.hashing.json_hash`: sorted keys, compact separators),
"files": {sidecar name: sha256 of its bytes}} (per_user.csv.gz, and pairs.csv.gz where a pointwise run
saved one). It is checked whenever the store reads a record (`has`, `problem`, `load`, `records`): an
edited record, a changed or missing sidecar, or a sidecar the seal does not name makes the record
incomplete. A record written before seals existed is *unsealed*: accepted as it is (one notice per process
and store) until `scripts/seal_records.py` checks and seals it in place.
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
from bench.hashing import json_hash, sha256_file, sha256_hex

PAIRS_FILE = "pairs.csv.gz"  # a pointwise run's scored test pairs, saved beside per_user.csv.gz
PER_USER_FILE = "per_user.csv.gz"  # every run's per-user metrics
SIDECARS = (PER_USER_FILE, PAIRS_FILE)  # the files a record's seal covers, where present
SEAL_FIELD = "seal"
SEAL_ALGORITHM = "sha256"
# the fields every reader of a complete record uses, and their types
REQUIRED_FIELDS = {"status": str, "schema_version": int, "run_id": str, "spec": dict, "metrics": dict}

PACKAGES = ("llmrec-bench", "torch", "numpy", "pandas", "scipy", "scikit-learn", "recbole",
            "transformers", "sentence-transformers", "peft", "accelerate")


def _umask() -> int:
    """The process's umask (read without changing it where Linux says it; else set and restored at once)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write, mode: int | None = None) -> None:
    """Write through `write(binary_file)` to a temp file in the same folder, fsync, then rename it over
    `path`: readers see the old file or the whole new one, never a part; a failure leaves no temp file.
    `mode`: the new file's permission bits (default: what `open` would give a new file, 0o666 less the umask;
    the temp file itself is created owner-only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fchmod(fh.fileno(), mode if mode is not None else 0o666 & ~_umask())
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


def atomic_write_text(path: Path, text: str, mode: int | None = None) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")), mode)


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
    """The installed versions of PACKAGES (a fresh dict: callers may change it)."""
    return dict(_package_versions())


@lru_cache(maxsize=1)
def _package_versions() -> dict[str, str | None]:
    # once per process (~17 ms of metadata parsing per run otherwise): the code a process runs is the code it
    # imported, whatever is installed while it runs
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


def record_digest(record: dict[str, Any]) -> str:
    """sha256 of the record's canonical JSON, its seal left out (what `seal.content` holds)."""
    return json_hash({k: v for k, v in record.items() if k != SEAL_FIELD})


def make_seal(record: dict[str, Any], folder: Path, files: list[str] | tuple[str, ...] | None = None) -> dict:
    """The seal of `record` (as parsed back from its JSON) and of the sidecars `files` in `folder`
    (default: those of SIDECARS present)."""
    folder = Path(folder)
    names = [n for n in SIDECARS if (folder / n).is_file()] if files is None else sorted(files)
    return {"algorithm": SEAL_ALGORITHM, "content": record_digest(record),
            "files": {name: sha256_file(folder / name) for name in names}}


def sidecar_digests(folder: Path) -> dict[str, str]:
    """sha256 of each sidecar present in `folder`."""
    folder = Path(folder)
    return {name: sha256_file(folder / name) for name in SIDECARS if (folder / name).is_file()}


def seal_problem(record: dict[str, Any], folder: Path, digests: dict[str, str] | None = None) -> str | None:
    """Why the record's seal does not hold (None: it does, or the record has none: see `is_sealed`).
    `digests`: the sidecars' sha256 (`sidecar_digests(folder)`), when known already."""
    if SEAL_FIELD not in record:
        return None
    seal = record[SEAL_FIELD]
    if not isinstance(seal, dict) or not isinstance(seal.get("content"), str) \
            or not isinstance(seal.get("files"), dict):
        return "seal is malformed (expected algorithm, content, files)"
    if seal.get("algorithm") != SEAL_ALGORITHM:
        return f"seal algorithm {seal.get('algorithm')!r}, expected {SEAL_ALGORITHM!r}"
    if record_digest(record) != seal["content"]:
        return "content does not match its seal (edited after it was written)"
    digests = sidecar_digests(folder) if digests is None else digests
    for name, digest in sorted(seal["files"].items()):
        if name not in SIDECARS:
            return f"seal names {name!r}, not a sidecar"
        if name not in digests:
            return f"{name} sidecar missing"
        if digests[name] != digest:
            return f"{name} does not match its seal"
    unnamed = sorted(set(digests) - set(seal["files"]))
    if unnamed:
        return f"{unnamed[0]} is not in the seal"
    if PER_USER_FILE not in seal["files"]:
        return f"{PER_USER_FILE} is not in the seal"
    return None


def is_sealed(record: Any) -> bool:
    return isinstance(record, dict) and SEAL_FIELD in record


def check_record(record: Any, folder: Path, run_id: str, digests: dict[str, str] | None = None) -> str | None:
    """Why the parsed record in `folder` is not a complete run `run_id` (None: it is). `digests`: as for
    `seal_problem`."""
    if not isinstance(record, dict):
        return "record is not a JSON object"
    if record.get("status") != "complete":
        return f"status {record.get('status')!r}, not 'complete'"
    if record.get("schema_version") != SCHEMA_VERSION:
        return f"schema version {record.get('schema_version')!r}, current is {SCHEMA_VERSION}"
    if record.get("run_id") != run_id:
        return f"record says run id {record.get('run_id')!r}"
    for name, kind in REQUIRED_FIELDS.items():
        if name not in record:
            return f"required field {name!r} missing"
        if not isinstance(record[name], kind) or (kind is int and isinstance(record[name], bool)):
            return f"field {name!r} is a {type(record[name]).__name__}, not a {kind.__name__}"
    if not isinstance(record["metrics"].get("overall"), dict):
        return "metrics.overall missing"
    digests = sidecar_digests(folder) if digests is None else digests
    if PER_USER_FILE not in digests:
        return f"{PER_USER_FILE} sidecar missing"
    return seal_problem(record, folder, digests)


# (record path, run id, sha256 of its bytes, its sidecars' sha256) -> (problem, sealed): what a check found is a
# function of these, so a record read again (tables ask `has` many times per run) is not checked again
_CHECKED: dict[tuple, tuple[str | None, bool]] = {}
_UNSEALED_NOTED: set[str] = set()  # store roots whose unsealed-records notice was printed


def inspect_record(path: Path, run_id: str) -> tuple[dict[str, Any] | None, str | None, bool]:
    """(record, problem, sealed) of the record file at `path` for run `run_id`: problem None when it is a
    complete run; the file is read once, and the record returned is the one checked (None when unreadable)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, "no record", False
    except OSError as exc:
        return None, f"unreadable record ({type(exc).__name__})", False
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"unreadable record ({type(exc).__name__})", False
    digests = sidecar_digests(path.parent)
    key = (str(path), run_id, sha256_hex(data), tuple(sorted(digests.items())))
    found = _CHECKED.get(key)
    if found is None:
        found = (check_record(record, path.parent, run_id, digests), is_sealed(record))
        if len(_CHECKED) > 100_000:
            _CHECKED.clear()
        _CHECKED[key] = found
    return record, *found


def read_record(path: Path, run_id: str) -> tuple[dict[str, Any] | None, str | None]:
    """(record, None) when the record at `path` is a complete run `run_id`, else (record or None, why not)."""
    record, problem, _ = inspect_record(path, run_id)
    return record, problem


def record_problem(path: Path, run_id: str) -> str | None:
    """Why the record at `path` is not a complete run `run_id` (None: it is)."""
    return read_record(path, run_id)[1]


def sealed_text(record: dict[str, Any], folder: Path) -> str:
    """The record file's text with a fresh seal over `record` (its seal left out) and the sidecars present in
    `folder`: the layout `ResultStore.write` gives (indent 1, sorted keys), so sealing a record written by it
    adds the seal and changes no other byte."""
    record = {k: v for k, v in record.items() if k != SEAL_FIELD}
    return json.dumps({**record, SEAL_FIELD: make_seal(record, folder)}, indent=1, sort_keys=True)


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
        """Why the stored run does not count as complete, or None if it does (its seal checked; an unsealed
        record from before seals is accepted, with one notice per process and store)."""
        _, problem, sealed = inspect_record(self.record_path(run_id), run_id)
        if problem is None and not sealed:
            self._note_unsealed()
        return problem

    def _note_unsealed(self) -> None:
        root = str(self.root.resolve())
        if root in _UNSEALED_NOTED:
            return
        _UNSEALED_NOTED.add(root)
        print(f"bench: {self.root / 'runs'} holds records without a seal (written before records were sealed); "
              f"they are read unchecked until sealed: python scripts/seal_records.py {self.root}",
              file=sys.stderr, flush=True)

    def load(self, run_id: str) -> dict[str, Any]:
        """The complete record of `run_id`, checked as read (BenchError naming it and the problem if not)."""
        record, problem, sealed = inspect_record(self.record_path(run_id), run_id)
        if problem is not None:
            from bench.errors import BenchError

            raise BenchError(f"{self.record_path(run_id)}: {problem}")
        if not sealed:
            self._note_unsealed()
        return record

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
        return pd.read_csv(self.run_dir(run_id) / PER_USER_FILE, dtype={"user": str})

    def lock(self, run_id: str, timeout: float = -1):
        """An inter-process lock for one run id (`filelock`): a second process executing the same run
        waits for the first, then finds its record and skips. Lock files live in <results>/.locks/."""
        from filelock import FileLock

        path = self.root / ".locks" / f"{run_id}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(path), timeout=timeout)

    def records(self) -> list[dict[str, Any]]:
        """Every complete record in the store (sorted by run id), for selection by spec fields; a record that
        fails its check is named on one stderr line and left out."""
        out = []
        for path in sorted((self.root / "runs").glob("*/record.json")):
            record, problem, sealed = inspect_record(path, path.parent.name)
            if problem is not None:
                print(f"bench: skipping {path}: {problem}", file=sys.stderr)
                continue
            if not sealed:
                self._note_unsealed()
            out.append(record)
        return out

    def write(self, run_id: str, record: dict[str, Any], per_user: pd.DataFrame,
              sidecars: dict[str, pd.DataFrame] | None = None) -> Path:
        """Sidecars first (per_user.csv.gz; a pointwise run's scored pairs, PAIRS_FILE), record last: the
        record's presence means the run is complete. The record is sealed (see the module's docstring) over
        what its file holds and the sidecars written here; a sidecar of an earlier attempt not written now
        is removed, so the folder holds exactly what the seal names."""
        folder = self.run_dir(run_id)
        record = {k: v for k, v in record.items() if k != SEAL_FIELD}  # a record written again: sealed anew
        record = {"schema_version": SCHEMA_VERSION, **record}
        written = [*(sidecars or {}), PER_USER_FILE]
        unknown = sorted(set(written) - set(SIDECARS))
        if unknown:
            raise ValueError(f"unknown sidecar {unknown[0]!r}; sidecars are {', '.join(SIDECARS)}")
        for name, frame in (sidecars or {}).items():
            atomic_write_frame(folder / name, frame)
        atomic_write_frame(folder / PER_USER_FILE, per_user)
        for name in set(SIDECARS) - set(written):
            (folder / name).unlink(missing_ok=True)
        record = json.loads(json.dumps(record, default=str))  # exactly what the file will hold
        record[SEAL_FIELD] = make_seal(record, folder, written)
        atomic_write_text(self.record_path(run_id), json.dumps(record, indent=1, sort_keys=True))
        return self.record_path(run_id)
