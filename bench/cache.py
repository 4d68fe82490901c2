"""One way to build a cache folder: content key in the name, a lock, atomic publish, verification on load.

Every expensive artifact the harness keeps (converted models, LLM2Rec stages, LoRA adapters, pretrained CF
encoders, splits) is a folder whose name carries the hash of what it depends on. `cached_artifact` returns
that folder, building it first when it is absent or fails its check:

- a present folder is verified against its manifest (`bench.hashing.verify_manifest`; file hashes memoised
  by size and mtime, so an unchanged folder is not re-read) and by the caller's own `check`; a folder from
  before manifests that passes the light load check is adopted (`bench.hashing.verify_or_adopt`);
- a folder that fails is reported on one line (`bench: cache: <path>: <reason>; rebuilding`), moved away
  atomically and rebuilt;
- building happens under a file lock, so parallel runs that need the same artifact build it once: the
  others wait, then reuse it;
- `build(tmp)` fills a private temp folder beside the target (it may return a sub-folder of `tmp` to publish
  instead); a manifest is written and the folder renamed into place, so a reader never sees half an artifact
  and an interrupted build leaves only a temp folder, removed on the next attempt's cleanup.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.hashing import cache_warning, remember_manifest, verify_or_adopt, write_manifest
from bench.records import discard_folder


def artifact_problem(folder: Path, memo_dir: Path | str | None = None,
                     check: Callable[[Path], str | None] | None = None) -> str | None:
    """None when `folder` can be reused: the caller's `check` passes and its files match its manifest."""
    if not folder.is_dir():
        return "folder is missing"
    if check is not None:
        problem = check(folder)
        if problem is not None:
            return problem
    return verify_or_adopt(folder, memo_dir)


def cached_artifact(target: Path | str, build: Callable[[Path], Path | None], *,
                    memo_dir: Path | str | None = None, check: Callable[[Path], str | None] | None = None,
                    lock_dir: Path | str | None = None) -> tuple[Path, bool]:
    """(`target`, built_now): the verified cache folder, built with `build(tmp)` when absent or failing.

    `check(folder)` adds the caller's own test (None: fine, else the reason), e.g. "stage.json names this
    key". Locks live in `lock_dir` (default: `<memo_dir>/.locks`, the cache root's, else beside the target)."""
    target = Path(target)
    if target.is_dir() and artifact_problem(target, memo_dir, check) is None:
        return target, False
    target.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    locks = Path(lock_dir) if lock_dir is not None else (
        Path(memo_dir) / ".locks" if memo_dir is not None else target.parent)
    locks.mkdir(parents=True, exist_ok=True)
    with FileLock(str(locks / f".{target.name}.lock")):
        if target.exists():  # another process may have built (or rebuilt) it while we waited
            problem = artifact_problem(target, memo_dir, check)
            if problem is None:
                return target, False
            cache_warning(target, problem, "rebuilding")
            discard_folder(target)
        _publish(target, build, memo_dir)
    return target, True


def _publish(target: Path, build: Callable[[Path], Path | None], memo_dir: Path | str | None) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        source = Path(build(tmp) or tmp)
        if not source.is_dir():
            raise RuntimeError(f"cache build for {target} did not create {source}")
        write_manifest(source)  # no memo: the temp path is renamed away next
        source.chmod(0o755)  # mkdtemp makes it private; a cache may be shared
        os.rename(source, target)
        remember_manifest(target, memo_dir)  # its first verification reads nothing again
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
