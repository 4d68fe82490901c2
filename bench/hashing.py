"""Content hashes: of JSON-able objects, files and folders (a path is identified by what it holds).

`content_hash(path)` hashes a file's bytes, or every file of a folder (relative path + file hash, in path
order). Per-file hashes are memoised in `<memo_dir>/file_hashes.json`, keyed by absolute path, size and
modification time, so an unchanged model folder is read once, not at every run.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

MEMO_NAME = "file_hashes.json"


def json_hash(obj: Any, length: int | None = None) -> str:
    """sha256 of the canonical JSON of `obj` (sorted keys, compact separators)."""
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode())
    return digest.hexdigest()[:length] if length else digest.hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_memo(memo_path: Path | None) -> dict[str, dict]:
    if memo_path is None or not memo_path.exists():
        return {}
    try:
        memo = json.loads(memo_path.read_text())
        return memo if isinstance(memo, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_memo(memo_path: Path, memo: dict[str, dict]) -> None:
    memo_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=memo_path.parent, suffix=".tmp", delete=False) as tmp:
        json.dump(memo, tmp, indent=0, sort_keys=True)
    os.replace(tmp.name, memo_path)


def content_hash(path: Path | str, memo_dir: Path | str | None = None) -> str:
    """sha256 of a file's content, or of a folder's files (relative path + content hash, in path order).

    FileNotFoundError when `path` does not exist."""
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise FileNotFoundError(str(path))
    memo_path = Path(memo_dir) / MEMO_NAME if memo_dir is not None else None
    memo = _load_memo(memo_path)
    changed = False

    def file_digest(file: Path) -> str:
        nonlocal changed
        stat = file.stat()
        entry = memo.get(str(file))
        if not entry or entry.get("size") != stat.st_size or entry.get("mtime_ns") != stat.st_mtime_ns:
            entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256_file(file)}
            memo[str(file)] = entry
            changed = True
        return entry["sha256"]

    if path.is_file():
        result = file_digest(path)
    else:
        digest = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{file.relative_to(path).as_posix()}\0{file_digest(file)}\n".encode())
        result = digest.hexdigest()
    if changed and memo_path is not None:
        _save_memo(memo_path, memo)
    return result
