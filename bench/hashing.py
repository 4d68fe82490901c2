"""Content hashes: of JSON-able objects, files and folders (a path is identified by what it holds), and the
manifests that let a cache folder be verified before it is used.

`content_hash(path)` hashes a file's bytes, or every file of a folder (relative path + file hash, in path
order; a folder's manifest file is left out, so writing one never changes the folder's hash). Per-file
hashes are memoised in `<memo_dir>/file_hashes.json`, keyed by absolute path, size and modification time,
so an unchanged model folder is read once, not at every run.

`write_manifest(folder)` records every file's sha256 and size in `folder/.bench-manifest.json`;
`verify_manifest(folder, memo_dir)` says what no longer matches (None when all does), through the same memo.
`cache_warning` prints the one-line report of a cache that failed its check (`bench: cache: <path>: ...`).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

MEMO_NAME = "file_hashes.json"
MANIFEST_NAME = ".bench-manifest.json"
MANIFEST_VERSION = 1
MANIFEST_MISSING = "no manifest"  # what verify_manifest says of a folder written before manifests existed
CACHE_PREFIX = "bench: cache: "


def sha256_hex(data: str | bytes, length: int | None = None) -> str:
    """sha256 of `data` (a str as UTF-8) in hex, its first `length` digits where given."""
    digest = hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()
    return digest[:length] if length else digest


def json_hash(obj: Any, length: int | None = None, compact: bool = True, ensure_ascii: bool = True) -> str:
    """sha256 of the JSON of `obj` with sorted keys: compact separators (False: json's default ", " and ": ",
    what some cache keys were first written with), non-ASCII escaped unless `ensure_ascii` is False."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":") if compact else None, ensure_ascii=ensure_ascii,
                      default=str)
    return sha256_hex(text, length)


def derive_seed(*parts: Any) -> int:
    """A 32-bit seed from names (LensKit `make_seed` style; stable across runs, batchings and processes): the
    first 8 hex digits of the sha256 of the parts joined by "|"."""
    return int(sha256_hex("|".join(str(p) for p in parts), 8), 16)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_warning(path: Path | str, reason: str, action: str) -> None:
    """The one stderr line reporting a cache file that failed its check: `bench: cache: <path>: <reason>; <action>`."""
    reason = " ".join(str(reason).split())  # always one line, whatever the exception text held
    print(f"{CACHE_PREFIX}{path}: {reason}; {action}", file=sys.stderr, flush=True)


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


class _FileHasher:
    """Per-file sha256, memoised by (absolute path, size, mtime) in `<memo_dir>/file_hashes.json`."""

    def __init__(self, memo_dir: Path | str | None, hash_file: Callable[[Path], str] | None = None):
        self.memo_path = Path(memo_dir) / MEMO_NAME if memo_dir is not None else None
        self.memo = _load_memo(self.memo_path)
        self.hash_file = hash_file or sha256_file
        self.changed = False

    def __call__(self, file: Path, stat: os.stat_result | None = None) -> str:
        stat = stat or file.stat()
        entry = self.memo.get(str(file))
        if not isinstance(entry, dict) or entry.get("size") != stat.st_size \
                or entry.get("mtime_ns") != stat.st_mtime_ns or "sha256" not in entry:
            entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": self.hash_file(file)}
            self.memo[str(file)] = entry
            self.changed = True
        return entry["sha256"]

    def save(self) -> None:
        if self.changed and self.memo_path is not None:
            _save_memo(self.memo_path, self.memo)
            self.changed = False


def folder_files(folder: Path, ignore: Iterable[str] = (MANIFEST_NAME,)) -> list[Path]:
    """Every file under `folder` in path order, minus the relative paths in `ignore` (the manifest)."""
    skip = set(ignore)
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() not in skip)


def content_hash(path: Path | str, memo_dir: Path | str | None = None, ignore: Iterable[str] = (MANIFEST_NAME,),
                 hash_file: Callable[[Path], str] | None = None) -> str:
    """sha256 of a file's content, or of a folder's files (relative path + content hash, in path order).

    A folder's files named in `ignore` (relative paths; default: its manifest) are left out.
    FileNotFoundError when `path` does not exist."""
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise FileNotFoundError(str(path))
    hasher = _FileHasher(memo_dir, hash_file)
    if path.is_file():
        result = hasher(path)
    else:
        digest = hashlib.sha256()
        for file in folder_files(path, ignore):
            digest.update(f"{file.relative_to(path).as_posix()}\0{hasher(file)}\n".encode())
        result = digest.hexdigest()
    hasher.save()
    return result


# ---------------------------------------------------------------- manifests of cache folders


def write_manifest(folder: Path | str, memo_dir: Path | str | None = None) -> dict[str, Any]:
    """Write `folder/.bench-manifest.json` (version, relative path -> sha256 and size of every other file)
    atomically (through a temp file beside the folder, so the folder never holds a partial one); returns it."""
    folder = Path(folder).expanduser().resolve()
    hasher = _FileHasher(memo_dir)
    files = {}
    for file in folder_files(folder):
        stat = file.stat()
        files[file.relative_to(folder).as_posix()] = {"sha256": hasher(file, stat), "size": stat.st_size}
    hasher.save()
    manifest = {"version": MANIFEST_VERSION, "files": files}
    fd, tmp = tempfile.mkstemp(prefix=f".{folder.name}.manifest.", suffix=".tmp", dir=folder.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache may be shared
        os.replace(tmp, folder / MANIFEST_NAME)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return manifest


def remember_manifest(folder: Path | str, memo_dir: Path | str | None) -> None:
    """Seed the hash memo with the manifest's sha256 of each file of `folder` whose size matches it: for a
    folder whose manifest was just written elsewhere (a temp folder renamed into place keeps sizes and
    modification times), so its first verification reads nothing again."""
    if memo_dir is None:
        return
    folder = Path(folder).expanduser().resolve()
    try:
        files = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    hasher = _FileHasher(memo_dir)
    for name, entry in files.items():
        try:
            stat = (folder / name).stat()
        except OSError:
            continue
        if isinstance(entry, dict) and stat.st_size == entry.get("size") and "sha256" in entry:
            hasher.memo[str(folder / name)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                                               "sha256": entry["sha256"]}
            hasher.changed = True
    hasher.save()


def verify_manifest(folder: Path | str, memo_dir: Path | str | None = None) -> str | None:
    """None when `folder`'s files are exactly those of its manifest (same sizes and sha256), else the first
    difference in words; `MANIFEST_MISSING` when the folder has no manifest. Sizes come from `stat`; hashes
    from the memo in `memo_dir` (an unchanged file is not read again)."""
    folder = Path(folder).expanduser().resolve()
    manifest_path = folder / MANIFEST_NAME
    if not folder.is_dir():
        return "folder is missing"
    if not manifest_path.is_file():
        return MANIFEST_MISSING
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return f"{MANIFEST_NAME} is unreadable ({err})"
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or manifest.get("version") != MANIFEST_VERSION \
            or not all(isinstance(v, dict) for v in files.values()):
        return f"{MANIFEST_NAME} is not a version-{MANIFEST_VERSION} manifest"
    present = {f.relative_to(folder).as_posix(): f for f in folder_files(folder)}
    missing, extra = sorted(set(files) - set(present)), sorted(set(present) - set(files))
    if missing:
        return f"{missing[0]} is missing" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
    if extra:
        return f"{extra[0]} is not in the manifest" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
    hasher = _FileHasher(memo_dir)
    try:
        for name in sorted(files):
            stat = present[name].stat()
            if stat.st_size != files[name].get("size"):
                return f"{name} has {stat.st_size} bytes, the manifest says {files[name].get('size')}"
            if hasher(present[name], stat) != files[name].get("sha256"):
                return f"{name} does not match its sha256 in the manifest"
    finally:
        hasher.save()
    return None


def _safetensors_problem(path: Path) -> str | None:
    """None when a .safetensors file's header parses and its tensors end exactly at the end of the file."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return "is too short for a safetensors header"
        (length,) = struct.unpack("<Q", head)
        if length > size - 8:
            return "is truncated (header longer than the file)"
        try:
            header = json.loads(handle.read(length))
        except ValueError:
            return "has an unreadable safetensors header"
    if not isinstance(header, dict):
        return "has an unreadable safetensors header"
    ends = [v["data_offsets"][1] for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and len(v.get("data_offsets", ())) == 2]
    if 8 + length + max(ends, default=0) != size:
        return f"has {size} bytes, its header describes {8 + length + max(ends, default=0)}"
    return None


def check_files(folder: Path | str) -> str | None:
    """A light load check of a model folder without a manifest: every .json file parses and every
    .safetensors file's header matches its size. None when all pass, else the first problem."""
    folder = Path(folder)
    for file in folder_files(folder):
        name = file.relative_to(folder).as_posix()
        try:
            if file.suffix == ".json":
                json.loads(file.read_text(encoding="utf-8"))
            elif file.suffix == ".safetensors":
                problem = _safetensors_problem(file)
                if problem:
                    return f"{name} {problem}"
        except (OSError, ValueError) as err:
            return f"{name} does not load ({err})"
    return None


def verify_or_adopt(folder: Path | str, memo_dir: Path | str | None = None) -> str | None:
    """None when `folder` matches its manifest. A folder from before manifests that passes the light load
    check (`check_files`) is adopted: a manifest of its files as they are is written (so its fingerprint,
    and every cache keyed by it, is kept) and it passes. Otherwise the reason it fails."""
    reason = verify_manifest(folder, memo_dir)
    if reason != MANIFEST_MISSING:
        return reason
    problem = check_files(folder)
    if problem is not None:
        return f"no manifest, and {problem}"
    try:
        write_manifest(folder, memo_dir)
    except OSError:
        pass  # a read-only shared cache: usable as it is, checked again next time
    return None
