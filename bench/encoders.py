"""Text encoders behind one interface, and the on-disk cache of item text embeddings.

`ENCODER_NAMES` and `get_encoder` are importable without torch: models load lazily on first use.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bench.errors import BenchError, UnknownChoiceError
from bench.hashing import json_hash, sha256_hex
from bench.options import check_device
from bench.records import atomic_write

ENCODER_NAMES: dict[str, str] = {
    "minilm": "all-MiniLM-L6-v2 sentence-transformers, 384-d, unit norm (default)",
    "mpnet": "all-mpnet-base-v2 sentence-transformers, 768-d, unit norm (unpacked once into the cache)",
    "smollm2": "SmolLM2-135M-Instruct, mean of last hidden states, 576-d (GGUF converted once)",
    "st-path": "any local sentence-transformers folder (setting: path)",
    "hf-path": "any local transformers LM folder, mean of last hidden states (setting: path)",
}
DEFAULT_BATCH_SIZE = 64


def with_pad_token(tokenizer, where: str):
    """`tokenizer`, given a pad token where it has none: its eos, else its unk token (padded positions are
    masked everywhere, so any id will do); BenchError naming `where` when it has neither."""
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise BenchError(f"{where}: tokenizer has no pad, eos or unk token to pad with")
        tokenizer.pad_token = fallback
    return tokenizer


def no_hub_kernels() -> dict[str, Any]:
    """`from_pretrained` options that keep transformers from kernelizing the model with kernels fetched from
    the Hugging Face Hub. transformers >= 5 does that by default whenever the `kernels` package is installed:
    on a CUDA device the first `model.train()` / `.eval()` then asks the Hub for a kernel (e.g.
    kernels-community/rotary) even under `local_files_only`, and fails offline. Nothing is ever downloaded
    here, so the plain torch layers are used on every device (as they already are on the CPU). Older
    transformers have no kernel support and get no option."""
    from transformers import PreTrainedModel

    return {"use_kernels": False} if hasattr(PreTrainedModel, "set_use_kernels") else {}


def _model_folder(path: Path | str) -> Path:
    """A local model folder (never a hub id: nothing is downloaded at run time)."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise BenchError(f"model folder {str(folder)!r} does not exist (encoders load local folders only)")
    return folder


def check_encoder_path(name: str, path: str) -> None:
    """Pre-flight of an encoder's `path` setting (bench.runner.preflight, before any run; the model loads lazily
    only in the run): it exists, holds no dangling link, and is a model folder (config.json or modules.json)."""
    from bench.identity import check_path_setting

    check_path_setting(path, f"encoder {name!r} setting path", model=True)


class Encoder:
    """Maps texts to float32 vectors. Subclasses implement `_load`, `_encode`, `dim` and `settings`.

    `batch_size` is a speed setting only (not part of the fingerprint): 64 for sentence encoders, 16 for LMs.
    """

    def __init__(self, path: Path | str, device: str = "cpu", name: str | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, cache_dir: Path | None = None):
        self.path = _model_folder(path)
        self.device = device
        self.name = name or self.path.name
        self.batch_size = batch_size
        self.cache_dir = cache_dir  # memo for the model files' hashes (None: hash every time)
        self._model: Any = None
        self._fingerprint: str | None = None

    @property
    def model(self) -> Any:
        if self._model is None:
            check_device(self.device)
            self._load()
        return self._model

    @property
    def dim(self) -> int:
        raise NotImplementedError

    def _load(self) -> None:
        raise NotImplementedError

    def _encode(self, texts: list[str], batch_size: int, progress: bool) -> np.ndarray:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """Everything besides the model files that changes the vectors (part of the fingerprint)."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """sha256 of the model folder's files and the pooling settings."""
        if self._fingerprint is None:
            from bench.data.assets import files_fingerprint

            parts = {"files": files_fingerprint(self.path, self.cache_dir), "class": type(self).__name__,
                     "settings": self.settings()}
            self._fingerprint = json_hash(parts, compact=False)
        return self._fingerprint

    def encode(self, texts: list[str], batch_size: int | None = None, progress: bool = True) -> np.ndarray:
        """float32 [len(texts), dim]; `batch_size` defaults to the encoder's own setting."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self._encode(texts, batch_size or self.batch_size, progress)
        return np.ascontiguousarray(out, dtype=np.float32)

    def parameter_count(self) -> int:
        """Number of model parameters (frozen, offline)."""
        return int(sum(p.numel() for p in self.model.parameters()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, path={str(self.path)!r}, device={self.device!r})"


class SentenceTransformerEncoder(Encoder):
    """A local sentence-transformers folder, pooled as its modules say; optionally L2-normalised."""

    def __init__(self, path: Path | str, device: str = "cpu", normalize: bool = True,
                 max_length: int | None = None, **kwargs):
        super().__init__(path, device, **kwargs)
        self.normalize = normalize
        self.max_length = max_length

    def _load(self) -> None:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(self.path), device=self.device, local_files_only=True,
                                    model_kwargs=no_hub_kernels())
        if self.max_length is not None:
            model.max_seq_length = self.max_length
        model.eval()
        self._model = model

    @property
    def dim(self) -> int:
        model = self.model
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(get_dim())

    def settings(self) -> dict[str, Any]:
        return {"normalize": self.normalize, "max_length": self.max_length}

    def _encode(self, texts: list[str], batch_size: int, progress: bool) -> np.ndarray:
        return self.model.encode(texts, batch_size=batch_size, show_progress_bar=progress,
                                 convert_to_numpy=True, normalize_embeddings=self.normalize)


class TransformersEncoder(Encoder):
    """A transformers model folder with its tokenizer (`_load` sets both); dim is the hidden size."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._tokenizer: Any = None

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            _ = self.model  # loads both
        return self._tokenizer

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)


class DecoderMeanPoolEncoder(TransformersEncoder):
    """A local (causal) LM folder: mean of the last hidden states over non-padding tokens.

    Texts are truncated to `max_length` tokens, sorted by length and padded on the right to each batch's
    longest, so a text's vector does not depend on its batch.
    """

    def __init__(self, path: Path | str, device: str = "cpu", max_length: int = 64, normalize: bool = False,
                 batch_size: int = 16, **kwargs):
        super().__init__(path, device, batch_size=batch_size, **kwargs)
        self.max_length = max_length
        self.normalize = normalize

    def _load(self) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        tokenizer = with_pad_token(AutoTokenizer.from_pretrained(self.path, local_files_only=True),
                                   f"encoder {self.name!r}")
        tokenizer.padding_side = "right"  # keeps real tokens at positions 0..n-1
        model = AutoModel.from_pretrained(self.path, local_files_only=True, dtype=torch.float32, **no_hub_kernels())
        self._tokenizer, self._model = tokenizer, model.to(self.device).eval()

    def settings(self) -> dict[str, Any]:
        return {"pooling": "mean", "max_length": self.max_length, "normalize": self.normalize}

    def _encode(self, texts: list[str], batch_size: int, progress: bool) -> np.ndarray:
        import torch
        from tqdm.auto import tqdm

        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        order = np.argsort([-len(x) for x in ids], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        starts = range(0, len(texts), batch_size)
        with torch.inference_mode():
            for start in tqdm(starts, desc=f"encode {self.name}", unit="batch", disable=not progress):
                rows = order[start:start + batch_size]
                if not len(ids[rows[0]]):  # only texts with no tokens left (sorted longest first)
                    out[rows] = 0.0
                    continue
                batch = self.tokenizer.pad({"input_ids": [ids[i] for i in rows]}, return_tensors="pt")
                batch = {k: v.to(self.device) for k, v in batch.items()}
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                if self.normalize:
                    pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out[rows] = pooled.float().cpu().numpy()
        return out


def _default_path(name: str, cache_dir: Path) -> Path:
    from bench.data import assets

    if name == "minilm":
        return assets.minilm_dir()
    if name == "mpnet":
        return assets.mpnet_dir(cache_dir)
    if name == "smollm2":
        return assets.smollm2_dir(cache_dir)
    raise BenchError(f"encoder {name!r} needs a model folder: set encoder.path (e.g. --set encoder.path=/models/x)")


class EncoderSettings(BaseModel):
    """Encoder settings; None means the encoder's own default (so empty settings keep today's behaviour).

    batch_size is a speed setting only; max_length and normalize change the vectors (and the fingerprint).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    version: ClassVar[int] = 1

    path: str | None = None  # a local model folder; default: the encoder's embedded asset
    batch_size: int | None = Field(None, ge=1, strict=True)
    max_length: int | None = Field(None, ge=1, strict=True)
    normalize: bool | None = Field(None, strict=True)

    @field_validator("path", mode="before")
    @classmethod
    def _path(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value


ENCODER_SETTINGS = tuple(EncoderSettings.model_fields)  # ("path", "batch_size", "max_length", "normalize")


def resolve_encoder_settings(name: str, settings: dict[str, Any] | EncoderSettings | None) -> EncoderSettings:
    """`settings` validated as EncoderSettings; BenchError (one line) naming the setting, value and range."""
    from bench.settings import validate_settings

    return validate_settings(EncoderSettings, settings if isinstance(settings, EncoderSettings)
                             else dict(settings or {}), f"encoder {name!r}")


def get_encoder(name: str, settings: dict[str, Any] | EncoderSettings | None, device: str,
                cache_dir: Path) -> Encoder:
    """Build encoder `name` with `settings` (EncoderSettings or its dict: path, batch_size, max_length,
    normalize; None values mean the encoder's default); models load lazily."""
    if name not in ENCODER_NAMES:
        raise UnknownChoiceError("encoder", name, ENCODER_NAMES)
    resolved = resolve_encoder_settings(name, settings)
    options: dict[str, Any] = {"name": name, "cache_dir": Path(cache_dir)}
    for key in ("batch_size", "max_length", "normalize"):
        if getattr(resolved, key) is not None:
            options[key] = getattr(resolved, key)
    path = resolved.path or _default_path(name, Path(cache_dir))
    cls = DecoderMeanPoolEncoder if name in ("smollm2", "hf-path") else SentenceTransformerEncoder
    return cls(path, device, **options)


def embedding_key(encoder: Encoder, template: str, ids: list[str], texts: list[str]) -> tuple[str, dict]:
    """Cache key (sha256) of encoder fingerprint, text template and the item ids + texts; and its parts."""
    items = json_hash([ids, texts], compact=False, ensure_ascii=False)
    parts = {"encoder": encoder.fingerprint(), "template": template, "items": items}
    return json_hash(parts, compact=False), parts


def _load_cached(path: Path, meta_path: Path, ids: list[str], key: str) -> tuple[np.ndarray | None, dict, str]:
    """(matrix, metadata, "") for a cache entry that passes every check, else (None, {}, reason), with reason
    "" when there is simply no entry. Checks: the JSON parses and names this key and these item ids, the
    .npy's sha256, shape and dtype match the JSON, every value is finite. An entry written before the JSON
    held a sha256 passes on the other checks and gets the sha256 (and dtype) added."""
    if not path.exists() and not meta_path.exists():
        return None, {}, ""
    if not meta_path.exists():
        return None, {}, f"{meta_path.name} is missing"
    if not path.exists():
        return None, {}, f"{path.name} is missing"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return None, {}, f"{meta_path.name} does not parse ({err})"
    if not isinstance(meta, dict):
        return None, {}, f"{meta_path.name} is not a JSON object"
    if meta.get("key") != key:
        return None, {}, f"{meta_path.name} is for key {meta.get('key')!r}"
    if meta.get("item_ids") != ids:
        return None, {}, f"{meta_path.name} lists other item ids"
    try:
        data = path.read_bytes()
    except OSError as err:
        return None, {}, f"unreadable ({err})"
    digest = sha256_hex(data)
    if "sha256" in meta and meta["sha256"] != digest:
        return None, {}, "sha256 does not match its JSON"
    try:
        matrix = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        return None, {}, f"not a readable .npy ({type(err).__name__}: {str(err) or 'empty file'})"
    if matrix.ndim != 2 or matrix.shape[0] != len(ids) or list(matrix.shape) != meta.get("shape"):
        return None, {}, f"shape {list(matrix.shape)}, expected {meta.get('shape')} for {len(ids)} items"
    if str(matrix.dtype) != meta.get("dtype", "float32"):
        return None, {}, f"dtype {matrix.dtype}, expected {meta.get('dtype', 'float32')}"
    finite = np.isfinite(matrix)
    if not finite.all():
        rows = int((~finite.all(axis=1)).sum())
        return None, {}, f"{int((~finite).sum())} NaN/Inf values in {rows} rows"
    if "sha256" not in meta:  # written before the checksum existed: passes the other checks, now recorded
        meta = {**meta, "sha256": digest, "dtype": str(matrix.dtype)}
        try:
            atomic_write(meta_path, lambda f: f.write(json.dumps(meta).encode()))
        except OSError:
            pass  # a read-only shared cache: still usable, checked the same way next time
    return matrix, meta, ""


def encode_items(encoder: Encoder, item_text: pd.Series, template: str, cache_dir: Path,
                 progress: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """Embeddings [n_items, dim] of `item_text` (indexed by item id) in its order, cached on disk.

    Cached at `cache_dir/embeddings/<key>.npy` with a JSON beside it (key, item ids, key parts, the .npy's
    sha256, shape and dtype); a repeated call with the same encoder, template and texts encodes nothing.
    A cached entry is verified on load (see `_load_cached`); one that fails is reported on one stderr line
    (`bench: cache: <path>: <reason>; re-encoding`) and re-encoded. Raises BenchError on NaN/Inf vectors.
    Encoding happens under a file lock (`embeddings/.<key>.lock`): two processes needing the same embeddings
    encode them once, the second reads what the first wrote.
    info: cache_hit, seconds (this call), first_encode_seconds (the encode that filled the cache), key,
    path, encoder, dim.
    """
    start = time.perf_counter()
    ids = [str(i) for i in item_text.index]
    texts = item_text.tolist()
    for item, text in zip(ids, texts):
        if not isinstance(text, str):
            raise BenchError(f"item {item!r}: text is {text!r}, not a string (check the card's text_template)")
    key, parts = embedding_key(encoder, template, ids, texts)
    folder = Path(cache_dir) / "embeddings"
    path, meta_path = folder / f"{key}.npy", folder / f"{key}.json"
    matrix, meta, problem = _load_cached(path, meta_path, ids, key)
    if problem:
        from bench.hashing import cache_warning

        cache_warning(path, problem, "re-encoding")
    hit = matrix is not None
    if not hit:
        from filelock import FileLock

        folder.mkdir(parents=True, exist_ok=True)
        # two runs (processes) needing the same embeddings: the first encodes, the other waits and reads them
        with FileLock(str(folder / f".{key}.lock")):
            matrix, meta, _ = _load_cached(path, meta_path, ids, key)
            hit = matrix is not None
            if not hit:
                matrix, meta = _encode_and_store(encoder, texts, ids, key, parts, path, meta_path, start,
                                                 progress)
    info = {"cache_hit": hit, "seconds": time.perf_counter() - start,
            "first_encode_seconds": meta.get("encode_seconds"), "key": key, "path": str(path),
            "encoder": encoder.name, "dim": int(matrix.shape[1])}
    return matrix, info


def _encode_and_store(encoder: Encoder, texts: list[str], ids: list[str], key: str, parts: dict, path: Path,
                      meta_path: Path, start: float, progress: bool) -> tuple[np.ndarray, dict[str, Any]]:
    """Encode `texts` and write the .npy and its JSON atomically (under the caller's lock)."""
    matrix = encoder.encode(texts, progress=progress)
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        bad = ids[int(np.flatnonzero(~finite)[0])]
        raise BenchError(f"encoder {encoder.name!r} produced NaN/Inf for item {bad!r} "
                         f"({int((~finite).sum())} of {len(ids)} items)")
    buffer = io.BytesIO()
    np.save(buffer, matrix, allow_pickle=False)
    data = buffer.getvalue()
    meta = {"key": key, "parts": parts, "encoder": encoder.name, "shape": list(matrix.shape),
            "dtype": str(matrix.dtype), "sha256": sha256_hex(data),
            "encode_seconds": time.perf_counter() - start, "item_ids": ids}
    atomic_write(path, lambda f: f.write(data))
    atomic_write(meta_path, lambda f: f.write(json.dumps(meta).encode()))
    return matrix, meta
